# Sourced by scripts/demo.sh and scripts/test.sh: makes sure what building and testing
# task-sharding needs is installed on a Debian machine. Idempotent; quiet when all is there.
#
#   - a Rust toolchain (cargo >= 1.88) with rustfmt and clippy,
#   - a C compiler (ring builds a little C),
#   - npm (for buildifier, which lints the Bazel files),
#   - Bazel 4 (Debian's bazel-bootstrap) and nginx, for the end-to-end tests and the demo,
#   - Debian's chromium, which the dashboard's end-to-end test looks through.

setup_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

setup_say() { echo "setup: $*" >&2; }

if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
    setup_say "no cargo found. Install Rust with rustup (https://rustup.rs), then run this again."
    setup_say "(Debian's own cargo package is too old for this workspace's dependencies.)"
    exit 1
fi

setup_missing=()
command -v cc >/dev/null 2>&1 || setup_missing+=(gcc libc6-dev)
command -v npm >/dev/null 2>&1 || setup_missing+=(npm)
command -v curl >/dev/null 2>&1 || setup_missing+=(curl)
# Headless Chromium reads the dashboard in e2e/tests/dashboard.rs.
command -v chromium >/dev/null 2>&1 || setup_missing+=(chromium)
if [ "${#setup_missing[@]}" -gt 0 ]; then
    setup_say "installing ${setup_missing[*]} with apt"
    setup_sudo=()
    [ "$(id -u)" -eq 0 ] || setup_sudo=(sudo -n)
    "${setup_sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -qq update
    "${setup_sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -qq -y \
        install --no-install-recommends "${setup_missing[@]}" >/dev/null
fi

"$setup_repo/scripts/e2e-env.sh" install

if command -v rustup >/dev/null 2>&1; then
    for setup_component in rustfmt clippy; do
        if ! rustup component list --installed 2>/dev/null | grep -q "^$setup_component"; then
            setup_say "adding the $setup_component component"
            rustup component add "$setup_component" >/dev/null
        fi
    done
fi
