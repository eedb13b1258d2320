#!/usr/bin/env bash
# Lint every Bazel file of the repository with buildifier:
#   MODULE.bazel, BUILD / BUILD.bazel, *.bzl, WORKSPACE / WORKSPACE.bazel
# (including the e2e/workspace test-data workspace; not target/, node_modules/
# nor bazel-* output trees).
#
# buildifier comes from npm (@bazel/buildifier ships the binaries in the
# package), installed once under node_modules/ (git-ignored). Set BUILDIFIER
# to use another binary.
#
# Usage: scripts/lint-bazel.sh         check; exit 1 and print on any finding
#        scripts/lint-bazel.sh --fix   rewrite formatting and auto-fixable lints
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

BUILDIFIER_VERSION="8.2.1"
prefix="$repo/node_modules/.buildifier"

mode=check
case "${1:-}" in
    "") ;;
    --fix) mode=fix ;;
    *)
        echo "usage: $0 [--fix]" >&2
        exit 2
        ;;
esac

if [[ -z "${BUILDIFIER:-}" ]]; then
    BUILDIFIER="$prefix/node_modules/.bin/buildifier"
    installed="$(cat "$prefix/node_modules/@bazel/buildifier/package.json" 2>/dev/null |
        sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' | head -n1 || true)"
    if [[ ! -x "$BUILDIFIER" || "$installed" != "$BUILDIFIER_VERSION" ]]; then
        echo "lint-bazel: installing @bazel/buildifier@$BUILDIFIER_VERSION into $prefix" >&2
        mkdir -p "$prefix"
        npm install --prefix "$prefix" --no-audit --no-fund --no-save --loglevel=error \
            "@bazel/buildifier@$BUILDIFIER_VERSION" >&2
    fi
fi

files=()
while IFS= read -r -d '' f; do
    files+=("${f#./}")
done < <(find . \
    \( -path ./target -o -path ./node_modules -o -path ./.git -o -name 'bazel-*' \) -prune -o \
    -type f \( -name MODULE.bazel -o -name BUILD -o -name BUILD.bazel -o -name '*.bzl' \
    -o -name WORKSPACE -o -name WORKSPACE.bazel -o -name WORKSPACE.bzlmod \) -print0 | sort -z)

if [[ ${#files[@]} -eq 0 ]]; then
    echo "lint-bazel: no Bazel files found" >&2
    exit 1
fi

if [[ "$mode" == fix ]]; then
    own=()
    bazel4=()
    for f in "${files[@]}"; do
        case "$f" in
            e2e/workspace/*) bazel4+=("$f") ;;
            *) own+=("$f") ;;
        esac
    done
    if [[ ${#own[@]} -gt 0 ]]; then
        "$BUILDIFIER" -mode=fix -lint=fix "${own[@]}"
    fi
    # Formatting only: lint fixes would add rules_shell/rules_cc loads that
    # Bazel 4 cannot resolve.
    if [[ ${#bazel4[@]} -gt 0 ]]; then
        "$BUILDIFIER" -mode=fix -lint=off "${bazel4[@]}"
    fi
fi

# e2e/workspace is a Bazel 4 workspace (test data): there sh_test, cc_library,
# ... are native rules and rules_shell / a real rules_cc cannot be loaded, so
# buildifier's "native-*" warnings (load them from rules_*) do not apply to it.
# Everything else (formatting included) is checked there too.
native_in_bazel4_workspace='^e2e/workspace/[^:]*:[0-9]+: native-[a-z0-9-]+: '

status=0
raw="$("$BUILDIFIER" -mode=check -lint=warn "${files[@]}" 2>&1)" || status=$?
output="$(printf '%s\n' "$raw" | grep -Ev "$native_in_bazel4_workspace" | sed '/^$/d' || true)"
# Exit codes 1-3 are syntax, usage or I/O errors; 4 is "findings", judged on
# the filtered output.
if [[ ( $status -ne 0 && $status -ne 4 ) || -n "$output" ]]; then
    printf '%s\n' "$output"
    echo "lint-bazel: buildifier found problems in the files above (exit $status);" \
        "scripts/lint-bazel.sh --fix rewrites formatting and auto-fixable lints" >&2
    exit 1
fi
echo "lint-bazel: ${#files[@]} files clean: ${files[*]}"
