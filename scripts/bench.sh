#!/usr/bin/env bash
# Runs the benchmarks and prints their tables (README, Performance):
#   scheduling  makespan and efficiency of four strategies for 2..32 simulated jobs (~1 min)
#   load        1,000 QUIC clients, one session of 100,000 tiny tasks (~2 min)
#   bazel       real Bazel: 40 sh_tests, 1 job vs 4 jobs through the wrapper (~4 min)
# With no argument, all three; otherwise the ones named.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh

benches=("$@")
[ ${#benches[@]} -gt 0 ] || benches=(scheduling load bazel)
echo "bench: building (release)" >&2
cargo build --release --workspace --bins --quiet
for bench in "${benches[@]}"; do
    echo >&2
    echo "=== cargo bench -p e2e --bench $bench" >&2
    cargo bench --quiet -p e2e --bench "$bench"
done
