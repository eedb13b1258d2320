#!/usr/bin/env bash
# Runs a property test RUNS times in a row (default 100), each with fresh random cases: the saved
# regressions file is set aside for the runs (so they are not all the same replay) and put back
# afterwards. Stops at the first failure and prints it; the failing seed is then in the
# regressions file, next to the saved ones.
#
#   coordinator (default): the coordinator's state machine, coordinator/src/state/properties.rs
#   protocol: real client state machines against it, e2e/tests/protocol_model.rs
#
#   scripts/proptest-runs.sh [RUNS] [coordinator|protocol]
#   PROPTEST_CASES=1000 scripts/proptest-runs.sh 10 protocol
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runs="${1:-100}"
case "${2:-coordinator}" in
coordinator)
    saved=coordinator/proptest-regressions/state/properties.txt
    test=(-p coordinator --lib properties)
    ;;
protocol)
    saved=e2e/tests/protocol_model.proptest-regressions
    test=(-p e2e --test protocol_model)
    ;;
*)
    echo "proptest-runs: unknown test ${2}; expected coordinator or protocol" >&2
    exit 2
    ;;
esac
backup="$(mktemp)"
had_saved=false
if [ -e "$saved" ]; then
    cp "$saved" "$backup"
    had_saved=true
fi
restore() {
    # Keep any new failing seed next to the saved ones.
    new="$(grep -h '^cc' "$saved" 2>/dev/null | grep -vxFf "$backup" || true)"
    if $had_saved; then cp "$backup" "$saved"; else rm -f "$saved"; fi
    [ -z "$new" ] || printf '%s\n' "$new" >>"$saved"
    rm -f "$backup"
}
trap restore EXIT
cargo test -q "${test[@]}" --no-run 2>/dev/null
for i in $(seq 1 "$runs"); do
    [ ! -e "$saved" ] || sed -i '/^cc /d' "$saved"
    if ! out="$(cargo test -q "${test[@]}" 2>&1)"; then
        echo "$out" | grep -vE '^ +[0-9]+: |^ +at ' | tail -40
        echo "proptest-runs: run $i of $runs FAILED" >&2
        exit 1
    fi
    printf '.'
done
echo
echo "proptest-runs: $runs runs passed"
