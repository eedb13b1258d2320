//! Scheduling with real processes: timing history across a coordinator restart, longest-first
//! order, and a backup copy racing a straggler.

use std::path::Path;
use std::time::Duration;

use e2e::{lines, summary, wait_until, write_schema, Coordinator, Job};

const LIMIT: Duration = Duration::from_secs(90);

/// `task-sharding run` whose task sleeps `$SLEEP_<task>` seconds (or the task's text as a number),
/// appending `<task> <client>` to `started` and, once done, to `done`.
fn job(
    coordinator: &Coordinator,
    run: &str,
    name: &str,
    schema: &Path,
    dir: &Path,
    script: &str,
) -> Job {
    let script = format!(
        "echo \"$0 $TASK_SHARDING_CLIENT_ID\" >> {started}; {script}; echo \"$0 $TASK_SHARDING_CLIENT_ID\" >> {done}",
        started = dir.join("started").display(),
        done = dir.join("done").display(),
    );
    let command = coordinator.run_command(run, name, schema, &["sh", "-c", &script, "{task}"]);
    Job::spawn(name, command).unwrap()
}

fn tasks_in_order(path: &Path) -> Vec<String> {
    lines(path)
        .iter()
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect()
}

#[test]
fn history_survives_a_restart_and_puts_the_longest_task_first() {
    let coordinator = Coordinator::start(&[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Each task sleeps as many seconds as its text says.
    let tasks: Vec<String> = ["0.3", "0.05", "0.6", "0.1"].map(String::from).to_vec();
    let schema = write_schema(dir.path(), "timed", &tasks).unwrap();
    let first = job(
        &coordinator,
        "run-1",
        "solo",
        &schema,
        dir.path(),
        "sleep \"$0\"",
    );
    assert_eq!(first.wait(LIMIT).unwrap().status.code(), Some(0));
    // Nothing was known: the listed order.
    assert_eq!(tasks_in_order(&dir.path().join("started")), tasks);

    // Restart the coordinator on the same state directory.
    let state = coordinator.stop().unwrap();
    let coordinator = Coordinator::start_in(state, &[]).unwrap();
    std::fs::remove_file(dir.path().join("started")).unwrap();
    let second = job(
        &coordinator,
        "run-2",
        "solo",
        &schema,
        dir.path(),
        "sleep \"$0\"",
    );
    assert_eq!(second.wait(LIMIT).unwrap().status.code(), Some(0));
    // The restarted coordinator remembered how long each took: longest first.
    assert_eq!(
        tasks_in_order(&dir.path().join("started")),
        ["0.6", "0.3", "0.1", "0.05"],
        "coordinator log:\n{}",
        coordinator.log()
    );
}

#[test]
fn a_backup_copy_beats_a_straggler_which_is_aborted() {
    let coordinator = Coordinator::start(&[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tasks: Vec<String> = ["slow", "a", "b"].map(String::from).to_vec();
    let schema = write_schema(dir.path(), "race", &tasks).unwrap();
    // `slow` must be expected to run on for more than a copy's minimum gain (1 s) when the
    // healthy job comes asking, however long that job took to start: 4 s leaves it 3.
    let normal = "case \"$0\" in slow) sleep 4;; *) sleep 0.05;; esac";
    // A first run teaches the coordinator that `slow` takes about four seconds.
    let learn = job(
        &coordinator,
        "run-1",
        "teacher",
        &schema,
        dir.path(),
        normal,
    );
    assert_eq!(learn.wait(LIMIT).unwrap().status.code(), Some(0));
    std::fs::remove_file(dir.path().join("started")).unwrap();
    std::fs::remove_file(dir.path().join("done")).unwrap();

    // The straggler takes `slow` (longest first) and would need a minute for it...
    let straggler_script = "case \"$0\" in slow) sleep 60;; *) sleep 0.05;; esac";
    let straggler = job(
        &coordinator,
        "run-2",
        "straggler",
        &schema,
        dir.path(),
        straggler_script,
    );
    let started = dir.path().join("started");
    wait_until("the straggler starts `slow`", LIMIT, || {
        lines(&started).iter().any(|l| l == "slow straggler")
    })
    .unwrap();
    // ...while a healthy job does the rest, then gets a backup copy of `slow` and wins.
    let healthy = job(
        &coordinator,
        "run-2",
        "healthy",
        &schema,
        dir.path(),
        normal,
    );
    let healthy = healthy.wait(LIMIT).unwrap();
    let straggler = straggler.wait(LIMIT).unwrap();
    let healthy_out = String::from_utf8_lossy(&healthy.stdout).into_owned();
    let straggler_err = String::from_utf8_lossy(&straggler.stderr).into_owned();
    assert_eq!(
        healthy.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&healthy.stderr)
    );
    assert_eq!(straggler.status.code(), Some(0), "{straggler_err}");
    assert_eq!(
        summary(&healthy_out),
        summary(&String::from_utf8_lossy(&straggler.stdout))
    );
    let slow_row = summary(&healthy_out)
        .lines()
        .find(|l| l.starts_with("slow"))
        .unwrap()
        .to_string();
    assert!(
        slow_row.ends_with("[healthy]"),
        "the copy's result counts: {slow_row}"
    );
    assert!(
        straggler_err.contains("stopped 1 task(s) finished elsewhere"),
        "{straggler_err}"
    );
    // `slow` finished once: the straggler's copy was stopped before it could finish.
    let done = lines(&dir.path().join("done"));
    assert_eq!(
        done.iter().filter(|l| l.starts_with("slow ")).count(),
        1,
        "{done:?}"
    );
    assert!(done.contains(&"slow healthy".to_string()), "{done:?}");
    assert!(coordinator.log().contains("handing out a backup copy"));
}
