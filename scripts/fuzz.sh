#!/usr/bin/env bash
# Fuzzes what a peer or a file can feed task-sharding, for a fixed time per target, then prints a
# table of what each run did (README, Fuzzing):
#   frame_decode  bytes through the coordinator's frame decoder (in chunks, then at end of
#                 stream), decode_payload of client and server messages, peek_protocol_version
#   schema_parse  text through the YAML schema parser, validation, digest and round trips
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# SECONDS per target: the argument, else $FUZZ_SECONDS, else 60. With no TARGET, every target.
# FUZZ_SANITIZER=none turns AddressSanitizer off (faster, catches less; the default is address).
#
# cargo-fuzz needs nightly `-Z` flags: on a stable toolchain they are allowed with
# RUSTC_BOOTSTRAP=1, set here for cargo-fuzz only. Each target's corpus grows in
# fuzz/corpus/<target> (not committed), starting from the committed fuzz/seeds/<target>; the
# libFuzzer log is fuzz/logs/<target>.log. On a crash the input is saved in
# fuzz/artifacts/<target>/, the command to reproduce it is printed, and the script exits 1 after
# the remaining targets have run. A fixed crash's input belongs in fuzz/regressions/<target>/,
# which `cargo test -p schemas --test fuzz_regressions` replays.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh

fuzz_say() { echo "fuzz: $*" >&2; }

seconds="${FUZZ_SECONDS:-60}"
if [ $# -gt 0 ] && [[ "$1" =~ ^[0-9]+$ ]]; then
    seconds="$1"
    shift
fi
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || { fuzz_say "SECONDS must be a positive number, not '$seconds'"; exit 2; }
sanitizer="${FUZZ_SANITIZER:-address}"

# libfuzzer-sys compiles libFuzzer, which is C++.
if ! command -v c++ >/dev/null 2>&1; then
    fuzz_say "installing g++ with apt (libFuzzer is C++)"
    fuzz_sudo=()
    [ "$(id -u)" -eq 0 ] || fuzz_sudo=(sudo -n)
    "${fuzz_sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -qq update
    "${fuzz_sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -qq -y \
        install --no-install-recommends g++ >/dev/null
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    fuzz_say "installing cargo-fuzz (cargo install cargo-fuzz --locked)"
    cargo install --quiet cargo-fuzz --locked
fi

cargo_fuzz() { RUSTC_BOOTSTRAP=1 cargo fuzz "$@"; }

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo_fuzz list)
fi

mkdir -p fuzz/logs
fuzz_say "building ${targets[*]} (sanitizer: $sanitizer)"
for target in "${targets[@]}"; do
    if ! cargo_fuzz build --sanitizer "$sanitizer" "$target" >fuzz/logs/build.log 2>&1; then
        cat fuzz/logs/build.log >&2
        fuzz_say "building $target failed"
        exit 1
    fi
done

rows=()
reproduce=()
for target in "${targets[@]}"; do
    corpus="fuzz/corpus/$target"
    seeds="fuzz/seeds/$target"
    log="fuzz/logs/$target.log"
    mkdir -p "$corpus" "$seeds" "fuzz/artifacts/$target"
    fuzz_say "$target: ${seconds}s (log: $log)"
    status=0
    # -timeout: an input that takes 10 s is a hang, reported like a crash.
    cargo_fuzz run --sanitizer "$sanitizer" "$target" "$PWD/$corpus" "$PWD/$seeds" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$log" 2>&1 || status=$?

    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)"
    # The last status line: "#<n> DONE cov: <edges> ft: <features> corp: <units>/<bytes> ...".
    status_line="$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1 || true)"
    cov="$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$status_line")"
    ft="$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$status_line")"
    corp="$(sed -n 's/.* corp: \([0-9]*\/[0-9]*[a-zA-Z]*\).*/\1/p' <<<"$status_line")"
    crash="none"
    if [ "$status" -ne 0 ]; then
        artifact="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)"
        if [ -n "$artifact" ]; then
            crash="$artifact"
            reproduce+=("RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer $sanitizer $target $artifact")
        else
            crash="exit $status, no artifact (see $log)"
        fi
        fuzz_say "$target: CRASH ($crash); from $log:"
        grep -m 2 -A 4 -E 'fuzz_checks:|panicked at|ERROR: (AddressSanitizer|libFuzzer)' "$log" >&2 || tail -n 20 "$log" >&2
    fi
    rows+=("$target|${execs:-?}|${rate:-?}|${cov:-?}|${ft:-?}|${corp:-?}|$crash")
done

echo
echo "fuzz: ${seconds}s per target, sanitizer $sanitizer"
table_row() { printf '%-14s %12s %9s %12s %9s %22s  %s\n' "$@"; }
table_row target execs execs/s "cov (edges)" features "corpus (units/bytes)" crashes
for row in "${rows[@]}"; do
    IFS='|' read -r -a cells <<<"$row"
    table_row "${cells[@]}"
done

if [ ${#reproduce[@]} -gt 0 ]; then
    echo
    echo "Reproduce (then add the input to fuzz/regressions/<target>/ once fixed):"
    printf '  %s\n' "${reproduce[@]}"
    exit 1
fi
