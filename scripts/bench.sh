#!/usr/bin/env bash
# Runs the benchmarks and prints their tables (README, Performance):
#   scheduling  makespan and efficiency of four strategies for 2..32 simulated jobs (~1 min)
#   load        1,000 QUIC clients, one session of 100,000 tiny tasks (~2 min)
#   bazel       real Bazel: 40 sh_tests, 1 job vs 4 jobs through the wrapper (~4 min)
#   compiled    real Bazel, compile-heavy: 60 generated cc_tests, N = 1, 2, 4 machines simulated
#               with cgroup CPU quotas, against plain Bazel, a static split and the previous
#               scheduler (commit 662209b, built once into target/previous) (~25 min, as root)
# With no argument, all four; otherwise the ones named.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh

benches=("$@")
[ ${#benches[@]} -gt 0 ] || benches=(scheduling load bazel compiled)
echo "bench: building (release)" >&2
cargo build --release --workspace --bins --quiet
# The compiled benchmark's reference: the coordinator and wrapper before issue 11's scheduler.
previous=662209b
if [[ " ${benches[*]} " == *" compiled "* ]]; then
    out=target/previous
    if [ "$(cat "$out/rev" 2>/dev/null)" != "$previous" ]; then
        echo "bench: building the previous scheduler ($previous) into $out" >&2
        rm -rf "$out"
        mkdir -p "$out/src"
        git archive "$previous" | tar -x -C "$out/src"
        cargo build --release --bins --quiet --manifest-path "$out/src/Cargo.toml" \
            --target-dir "$out/target"
        echo "$previous" > "$out/rev"
    fi
    export BENCH_PREVIOUS_BINS="$PWD/$out/target/release"
fi
for bench in "${benches[@]}"; do
    echo >&2
    echo "=== cargo bench -p e2e --bench $bench" >&2
    cargo bench --quiet -p e2e --bench "$bench"
done
