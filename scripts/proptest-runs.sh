#!/usr/bin/env bash
# Runs the coordinator's property test RUNS times in a row (default 100), each with fresh random
# cases: the saved regressions file is set aside for the runs (so they are not all the same
# replay) and put back afterwards. Stops at the first failure and prints it; the failing seed is
# then in coordinator/proptest-regressions/state/properties.txt, next to the saved ones.
#
#   scripts/proptest-runs.sh [RUNS]        PROPTEST_CASES=1000 scripts/proptest-runs.sh 10
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runs="${1:-100}"
saved=coordinator/proptest-regressions/state/properties.txt
backup="$(mktemp)"
cp "$saved" "$backup"
restore() {
    # Keep any new failing seed next to the saved ones.
    new="$(grep -h '^cc' "$saved" 2>/dev/null | grep -vxFf "$backup" || true)"
    cp "$backup" "$saved"
    [ -z "$new" ] || printf '%s\n' "$new" >>"$saved"
    rm -f "$backup"
}
trap restore EXIT
cargo test -q -p coordinator --lib --no-run 2>/dev/null
for i in $(seq 1 "$runs"); do
    sed -i '/^cc /d' "$saved"
    if ! out="$(cargo test -q -p coordinator --lib properties 2>&1)"; then
        echo "$out" | grep -vE '^ +[0-9]+: |^ +at ' | tail -40
        echo "proptest-runs: run $i of $runs FAILED" >&2
        exit 1
    fi
    printf '.'
done
echo
echo "proptest-runs: $runs runs passed"
