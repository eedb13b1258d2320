#!/usr/bin/env bash
# The soak test (README, Reliability): 200 real clients in 20 concurrent sessions, round after
# round for SECONDS (default 180), with random SIGKILLs; checks every session completes with every
# result and the coordinator's memory comes back once sessions expire, then prints its figures.
#   scripts/soak.sh [SECONDS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh

export SOAK_SECONDS="${1:-${SOAK_SECONDS:-180}}"
echo "soak: building (release)" >&2
cargo build --release --workspace --bins --quiet
cargo bench --quiet -p e2e --bench soak
