#!/usr/bin/env bash
# The live demo: a coordinator, an nginx remote cache, and three CI-like jobs that each run the
# identical `bazel test //... --remote_cache=...` on their own copy of the bundled example
# workspace (e2e/workspace), through Bazel's real launcher: /usr/bin/bazel -> tools/bazel ->
# task-sharding -> the real Bazel. The jobs share the 26 test targets (and build the library
# they use once); each target runs once, on
# one job; every job prints the same summary of all of them (with the job that ran each) and
# exits with the same Bazel exit code (3: the workspace has one failing test, on purpose).
#
# `scripts/demo.sh run` does the same with `task-sharding run` on schemas/examples/sleep.yaml.
# The coordinator's timing history is kept in target/demo-coordinator-state, so a second demo
# hands out the slow tests first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$PWD"
source scripts/setup.sh

echo "demo: building task-sharding" >&2
cargo build --workspace --bins --quiet
bin="$repo/target/debug"

work="$(mktemp -d "${TMPDIR:-/tmp}/task-sharding-demo.XXXXXX")"
coordinator_pid=""
cleanup() {
    # Bazel servers outlive their clients; stop each (shutdown must run inside its workspace).
    for job in job-1 job-2 job-3; do
        [ -d "$work/root-$job" ] || continue
        (cd "$work/$job" && /usr/bin/bazel-4 --output_user_root="$work/root-$job" shutdown) >/dev/null 2>&1 || true
    done
    "$repo/scripts/e2e-env.sh" nginx-stop "$work/nginx" >/dev/null 2>&1 || true
    [ -n "$coordinator_pid" ] && kill "$coordinator_pid" 2>/dev/null && wait "$coordinator_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The coordinator keeps its state (certificate, timing history) across demos: the first run is
# cold, later runs schedule the longest tests first from what earlier runs measured.
state="$repo/target/demo-coordinator-state"
"$bin/coordinator" --listen 127.0.0.1:0 --state-dir "$state" \
    >"$work/coordinator.out" 2>"$work/coordinator.log" &
coordinator_pid=$!
for _ in $(seq 100); do
    grep -q '^certificate ' "$work/coordinator.out" 2>/dev/null && break
    sleep 0.1
done
sed 's/^/demo: /' "$work/coordinator.out"
addr="$(sed -n 's/^coordinator listening on //p' "$work/coordinator.out")"
[ -n "$addr" ] || { cat "$work/coordinator.log" >&2; echo "demo: the coordinator did not start" >&2; exit 1; }

# What every CI job of one run has in its environment.
export TASK_SHARDING_COORDINATOR="$addr"
export TASK_SHARDING_CA="$state/tls/cert.pem"
export TASK_SHARDING_RUN_ID="demo-$(date +%s)"

if [ "${1:-bazel}" = run ]; then
    echo "demo: three jobs run: task-sharding run --schema schemas/examples/sleep.yaml -- sleep '{task}'" >&2
    pids=()
    for job in job-1 job-2 job-3; do
        ( status=0
          TASK_SHARDING_CLIENT_ID=$job "$bin/task-sharding" run \
            --schema schemas/examples/sleep.yaml -- sleep '{task}' >"$work/$job.summary" || status=$?
          echo "$status" >"$work/$job.status" ) 2>&1 | sed -u "s/^/[$job] /" &
        pids+=($!)
    done
    wait "${pids[@]}"
else
    cache="$("$repo/scripts/e2e-env.sh" nginx-start "$work/nginx" "$(free_port)")"
    mkdir -p "$work/side"
    command=(test //... --remote_cache="$cache"
        --test_env=E2E_SIDE_FILE="$work/side/executions" --sandbox_writable_path="$work/side")
    echo "demo: remote cache $cache" >&2
    echo "demo: three jobs run: bazel ${command[*]}" >&2
    echo "demo: (Bazel's own output goes to $work/job-N.log; task-sharding's lines are shown here)" >&2
    pids=()
    for job in job-1 job-2 job-3; do
        copy="$work/$job"
        cp -r e2e/workspace "$copy"
        mkdir -p "$copy/tools"
        cp tools/bazel "$copy/tools/bazel"
        : >"$work/$job.log"
        ( status=0
          cd "$copy"
          TASK_SHARDING_CLIENT_ID=$job TASK_SHARDING_BIN="$bin/task-sharding" \
            /usr/bin/bazel --output_user_root="$work/root-$job" "${command[@]}" \
            >"$work/$job.stdout" 2>"$work/$job.log" || status=$?
          echo "$status" >"$work/$job.status" ) &
        pids+=($!)
        # Show task-sharding's lines from the job's log as they come, until the job ends.
        ( tail --pid=$! -F -n +1 "$work/$job.log" 2>/dev/null | grep --line-buffered '^task-sharding:' |
            sed -u "s/^/[$job] /" ) &
        pids+=($!)
    done
    wait "${pids[@]}"
    for job in job-1 job-2 job-3; do
        sed -n '/^task-sharding: session /,$p' "$work/$job.stdout" >"$work/$job.summary"
    done
fi

echo
echo "demo: job-1's summary (each target, its outcome, and in brackets the job that ran it):"
cat "$work/job-1.summary"
ok=1
for job in job-2 job-3; do
    if cmp -s "$work/job-1.summary" "$work/$job.summary"; then
        echo "demo: $job printed the identical summary"
    else
        ok=0
        echo "demo: $job printed a different summary:" && cat "$work/$job.summary"
    fi
done
echo "demo: exit codes: job-1 $(cat "$work/job-1.status"), job-2 $(cat "$work/job-2.status"), job-3 $(cat "$work/job-3.status")"
if [ -f "$work/side/executions" ]; then
    total="$(wc -l <"$work/side/executions")"
    distinct="$(awk '{print $1}' "$work/side/executions" | sort -u | wc -l)"
    echo "demo: tests actually executed across the three jobs: $total runs of $distinct distinct targets"
    [ "$total" = "$distinct" ] || ok=0
fi
[ "$ok" = 1 ] && [ "$(sort -u "$work"/job-*.status | wc -l)" = 1 ]
