#!/usr/bin/env bash
# Runs every check and test of task-sharding, as CI does. Installs what it needs first.
#
#   formatting (cargo fmt), lints (clippy -D warnings), the Bazel files (buildifier),
#   then every unit, integration and end-to-end test (cargo test --workspace).
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

step "cargo test --workspace"
cargo test --workspace
