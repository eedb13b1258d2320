#!/usr/bin/env bash
# Runs every check and test of task-sharding, as CI does. Installs what it needs first.
#
#   formatting (cargo fmt), lints (clippy -D warnings), the Bazel files (buildifier),
#   every unit, integration and end-to-end test (cargo test --workspace, whose Bazel wrapper
#   tests run Debian's Bazel 4.2.3), then the Bazel 7.7.1 build of the project (build, test,
#   run //coordinator) and the Bazel wrapper's end-to-end tests again against Bazel 7.7.1 (those
#   whose outcome depends on Bazel's version).
#
# Bazel 7.7.1 comes from the kit next to the clone (../shared/bazel7), installed once into
# BAZEL7_KIT_PREFIX (default ~/.cache/bazel7-kit, outside the clone, so later runs reuse it).
# The kit's bin/bazel passes the kit's bazelrc itself: the project's .bazelrc stays as a user
# with access to the public registry needs it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh

step() { printf '\n=== %s\n' "$*" >&2; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "buildifier: MODULE.bazel and every BUILD file"
scripts/lint-bazel.sh

step "build the binaries the end-to-end tests start"
cargo build --workspace --bins --examples --quiet

step "cargo test --workspace (the coordinator's property test with 1,000 cases)"
PROPTEST_CASES=1000 cargo test --workspace

step "Bazel 7.7.1 kit: ../shared/bazel7/setup.sh"
kit="$PWD/../shared/bazel7"
kit_prefix="${BAZEL7_KIT_PREFIX:-$HOME/.cache/bazel7-kit}"
if [ ! -x "$kit/setup.sh" ]; then
    echo "test.sh: no Bazel 7 kit at $kit (CI puts shared/ next to the clone)" >&2
    exit 1
fi
"$kit/setup.sh" "$kit_prefix"
bazel7="$kit_prefix/bin/bazel"

step "bazel build //... (Bazel 7.7.1)"
"$bazel7" build //...

step "bazel test //... (Bazel 7.7.1)"
"$bazel7" test //...

step "bazel run //coordinator -- --help (Bazel 7.7.1)"
help="$("$bazel7" run //coordinator -- --help)"
printf '%s\n' "$help"
case "$help" in
    *"Usage: coordinator"*) ;;
    *)
        echo "test.sh: \`bazel run //coordinator -- --help\` did not print the coordinator's usage" >&2
        exit 1
        ;;
esac

# Against 7.7.1, the wrapper tests whose outcome depends on Bazel (its parse, build events,
# launcher, signal handling, cache hits), and the whole differential harness. The others
# exercise task-sharding's own handling of a lost coordinator or job, the same whatever the
# Bazel, and run once above (with 4.2.3): running them again cost ~4 of the suite's minutes.
step "the Bazel wrapper's end-to-end and differential tests against Bazel 7.7.1"
E2E_BAZEL_REAL="$bazel7" cargo test -p e2e --test bazel_wrapper --test differential -- \
    --skip a_lost_coordinator_leaves_each_job_to_finish_alone \
    --skip a_killed_job_does_not_stop_the_others \
    --skip coordinator_down_means_plain_bazel
