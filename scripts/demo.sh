#!/usr/bin/env bash
# A live demo: one coordinator and three jobs running the same command, sharing the tasks of
# schemas/examples/sleep.yaml. Each job's output is prefixed with its name; every job ends by
# printing the same summary of the whole session, showing which job ran which task.
# Exits with the jobs' exit code (0: every task passed).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh

echo "demo: building task-sharding" >&2
cargo build --workspace --bins --quiet
bin="$PWD/target/debug"

work="$(mktemp -d "${TMPDIR:-/tmp}/task-sharding-demo.XXXXXX")"
coordinator_pid=""
cleanup() {
    [ -n "$coordinator_pid" ] && kill "$coordinator_pid" 2>/dev/null && wait "$coordinator_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

"$bin/coordinator" --listen 127.0.0.1:0 --state-dir "$work/state" \
    >"$work/coordinator.out" 2>"$work/coordinator.log" &
coordinator_pid=$!
for _ in $(seq 100); do
    grep -q '^certificate ' "$work/coordinator.out" 2>/dev/null && break
    sleep 0.1
done
cat "$work/coordinator.out"
addr="$(sed -n 's/^coordinator listening on //p' "$work/coordinator.out")"
[ -n "$addr" ] || { cat "$work/coordinator.log" >&2; echo "demo: the coordinator did not start" >&2; exit 1; }

# What every CI job of one run would have in its environment.
export TASK_SHARDING_COORDINATOR="$addr"
export TASK_SHARDING_CA="$work/state/tls/cert.pem"
export TASK_SHARDING_RUN_ID="demo-$(date +%s)"

echo "demo: three jobs run: task-sharding run --schema schemas/examples/sleep.yaml -- sleep '{task}'" >&2
pids=()
for job in job-1 job-2 job-3; do
    # Progress (stderr) streams live, prefixed; the summary (stdout) is kept to compare.
    ( TASK_SHARDING_CLIENT_ID=$job "$bin/task-sharding" run \
        --schema schemas/examples/sleep.yaml -- sleep '{task}' >"$work/$job.summary"
      echo $? >"$work/$job.status" ) 2>&1 | sed -u "s/^/[$job] /" &
    pids+=($!)
done
wait "${pids[@]}"

echo
echo "demo: job-1's summary (the task, its outcome, and in brackets the job that ran it):"
cat "$work/job-1.summary"
for job in job-2 job-3; do
    if cmp -s "$work/job-1.summary" "$work/$job.summary"; then
        echo "demo: $job printed the identical summary and exited $(cat "$work/$job.status")"
    else
        echo "demo: $job printed a different summary:" && cat "$work/$job.summary"
    fi
done
exit "$(cat "$work/job-1.status")"
