//! `task-sharding run` with real processes: a coordinator and several clients on loopback.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use e2e::{lines, summary, wait_until, write_schema, Coordinator, Job};

/// Longest any client may take in these tests before it counts as hung.
const LIMIT: Duration = Duration::from_secs(90);

/// A task command that appends `<task> <client>` to `done` once it has finished its work, and
/// fails for tasks whose text starts with `fail`.
fn task_command(dir: &Path, seconds: &str) -> Vec<String> {
    let script = format!(
        "echo \"$0 $TASK_SHARDING_CLIENT_ID\" >> {started}; sleep {seconds}; \
         case \"$0\" in fail*) echo \"$0 FAILED\" >> {started}; exit 1;; esac; echo \"$0 $TASK_SHARDING_CLIENT_ID\" >> {done}",
        started = dir.join("started").display(),
        done = dir.join("done").display(),
    );
    vec!["sh".into(), "-c".into(), script, "{task}".into()]
}

fn run_clients(
    coordinator: &Coordinator,
    run_id: &str,
    schema: &Path,
    command: &[String],
    clients: usize,
) -> Vec<Job> {
    (1..=clients)
        .map(|i| {
            let name = format!("job-{i}");
            let cmd = coordinator.run_command(run_id, &name, schema, command);
            Job::spawn(&name, cmd).unwrap()
        })
        .collect()
}

/// How many times each task finished, from the side file.
fn finishes(dir: &Path) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for line in lines(&dir.join("done")) {
        let task = line.split_whitespace().next().unwrap().to_string();
        *counts.entry(task).or_default() += 1;
    }
    counts
}

#[test]
fn three_clients_run_thirty_tasks_each_exactly_once() {
    let coordinator = Coordinator::start(&[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tasks: Vec<String> = (0..30).map(|i| format!("t{i:02}")).collect();
    let schema = write_schema(dir.path(), "thirty", &tasks).unwrap();
    let jobs = run_clients(
        &coordinator,
        "run-1",
        &schema,
        &task_command(dir.path(), "0.1"),
        3,
    );
    let outputs: Vec<_> = jobs
        .into_iter()
        .map(|job| job.wait(LIMIT).unwrap())
        .collect();

    // Each task ran to its end once, except where the coordinator handed an idle job a backup
    // copy of it (by design, with backups on as by default: on a loaded machine a 0.1 s task
    // can outlast its expected time, and a copy may finish before the abort reaches it). Its
    // result is still recorded once: the summaries below say so.
    let counts = finishes(dir.path());
    let log = coordinator.log();
    let backups = |task: usize| {
        log.lines()
            .filter(|l| l.contains("handing out a backup copy"))
            .filter(|l| l.contains(&format!(" task={task}")))
            .count()
    };
    for (id, task) in tasks.iter().enumerate() {
        let finished = counts.get(task).copied().unwrap_or(0);
        assert!(
            (1..=1 + backups(id)).contains(&finished),
            "task {task} finished {finished} times, with {} backup copies",
            backups(id)
        );
    }
    assert_eq!(counts.len(), 30);
    let summaries: Vec<String> = outputs
        .iter()
        .map(|o| summary(&String::from_utf8_lossy(&o.stdout)))
        .collect();
    for (output, text) in outputs.iter().zip(&summaries) {
        assert_eq!(
            output.status.code(),
            Some(0),
            "stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(text, &summaries[0], "every client prints the same summary");
    }
    assert!(summaries[0].contains("30 passed"), "{}", summaries[0]);
    // The work really was shared: every task line names the client that ran it, and the side
    // file agrees with the summary about who that was. Regression: a task with a backup copy
    // finishes once per copy that got to its end, and the summary names the one whose result
    // arrived first, so it must be one of those, not necessarily the first line's.
    let mut finishers: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for line in lines(&dir.path().join("done")) {
        let (task, client) = line.split_once(' ').unwrap();
        finishers
            .entry(task.to_string())
            .or_default()
            .push(client.to_string());
    }
    for (task, clients) in &finishers {
        let row = summaries[0]
            .lines()
            .find(|l| l.starts_with(task.as_str()))
            .unwrap();
        assert!(
            clients.iter().any(|c| row.ends_with(&format!("[{c}]"))),
            "{row} vs the clients that finished it: {clients:?}"
        );
    }
    let clients_used = lines(&dir.path().join("done"))
        .iter()
        .map(|l| l.split_once(' ').unwrap().1.to_string())
        .collect::<std::collections::HashSet<_>>();
    assert!(
        clients_used.len() >= 2,
        "the work was spread: {clients_used:?}"
    );
}

#[test]
fn one_failing_task_makes_every_client_exit_1() {
    let coordinator = Coordinator::start(&[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut tasks: Vec<String> = (0..11).map(|i| format!("t{i:02}")).collect();
    tasks.push("fail-me".into());
    let schema = write_schema(dir.path(), "one-fails", &tasks).unwrap();
    let jobs = run_clients(
        &coordinator,
        "run-1",
        &schema,
        &task_command(dir.path(), "0.05"),
        3,
    );
    let outputs: Vec<_> = jobs
        .into_iter()
        .map(|job| job.wait(LIMIT).unwrap())
        .collect();
    let first = summary(&String::from_utf8_lossy(&outputs[0].stdout));
    for output in &outputs {
        assert_eq!(output.status.code(), Some(1));
        assert_eq!(summary(&String::from_utf8_lossy(&output.stdout)), first);
    }
    assert!(first.contains("11 passed, 1 failed"), "{first}");
    let failed_row = first.lines().find(|l| l.starts_with("fail-me")).unwrap();
    assert!(
        failed_row.contains("FAILED") && failed_row.contains("exit 1"),
        "{failed_row}"
    );
    // A failure is a result, not a reason to run the task again: nothing starts it after it
    // failed. (A backup copy may have started while it still ran.)
    let log = lines(&dir.path().join("started"));
    let failed_at = log.iter().position(|l| l == "fail-me FAILED").unwrap();
    assert!(
        !log[failed_at..]
            .iter()
            .any(|l| l.starts_with("fail-me job-")),
        "{log:?}"
    );
}

#[test]
fn a_client_killed_mid_task_loses_nothing() {
    let coordinator = Coordinator::start(&[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tasks: Vec<String> = (0..12).map(|i| format!("t{i:02}")).collect();
    let schema = write_schema(dir.path(), "kill", &tasks).unwrap();
    let mut jobs = run_clients(
        &coordinator,
        "run-1",
        &schema,
        &task_command(dir.path(), "1"),
        3,
    );

    // Wait until the victim is in the middle of a task, then kill it and everything it started.
    let started = dir.path().join("started");
    wait_until("job-3 has started a task", LIMIT, || {
        lines(&started).iter().any(|l| l.ends_with(" job-3"))
    })
    .unwrap();
    let mut victim = jobs.pop().unwrap();
    victim.kill_group().unwrap();
    let killed_task = lines(&started)
        .into_iter()
        .rfind(|l| l.ends_with(" job-3"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();

    let outputs: Vec<_> = jobs
        .into_iter()
        .map(|job| job.wait(LIMIT).unwrap())
        .collect();
    for output in &outputs {
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let counts = finishes(dir.path());
    for task in &tasks {
        assert_eq!(counts.get(task), Some(&1), "task {task}: {counts:?}");
    }
    let text = summary(&String::from_utf8_lossy(&outputs[0].stdout));
    assert_eq!(text, summary(&String::from_utf8_lossy(&outputs[1].stdout)));
    let row = text.lines().find(|l| l.starts_with(&killed_task)).unwrap();
    assert!(
        row.contains("PASSED") && !row.ends_with("[job-3]"),
        "the killed client's task {killed_task} was run by another client: {row}"
    );
    assert!(
        coordinator.log().contains("tasks go back to the queue"),
        "the coordinator took the lease back"
    );
}

#[test]
fn a_late_job_gets_the_finished_sessions_results_without_running_anything() {
    let coordinator = Coordinator::start(&[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tasks: Vec<String> = (0..4).map(|i| format!("t{i}")).collect();
    let schema = write_schema(dir.path(), "late", &tasks).unwrap();
    let command = task_command(dir.path(), "0");
    let first = run_clients(&coordinator, "run-1", &schema, &command, 1)
        .remove(0)
        .wait(LIMIT)
        .unwrap();
    let late = run_clients(&coordinator, "run-1", &schema, &command, 1)
        .remove(0)
        .wait(LIMIT)
        .unwrap();
    assert_eq!(late.status.code(), Some(0));
    assert_eq!(
        summary(&String::from_utf8_lossy(&late.stdout)),
        summary(&String::from_utf8_lossy(&first.stdout))
    );
    assert_eq!(
        lines(&dir.path().join("done")).len(),
        4,
        "nothing ran twice"
    );
    // A new run id is a new session: everything runs again.
    run_clients(&coordinator, "run-2", &schema, &command, 1)
        .remove(0)
        .wait(LIMIT)
        .unwrap();
    assert_eq!(lines(&dir.path().join("done")).len(), 8);
}

#[test]
fn a_malformed_schema_is_refused_with_its_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "name: bad\ntasks:\n  - task: a\n  - task: a\n").unwrap();
    // No coordinator is needed to refuse a bad schema: it is checked first.
    let output = Command::new(e2e::binary("task-sharding"))
        .args(["run", "--schema"])
        .arg(&path)
        .args(["--", "true"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("bad.yaml")
            && stderr.contains("line 4")
            && stderr.contains("duplicate task"),
        "{stderr}"
    );
}

#[test]
fn an_unreachable_coordinator_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let schema = write_schema(dir.path(), "s", &["a".to_string()]).unwrap();
    let cert = dir.path().join("cert.pem");
    // Any certificate will do: nothing answers on this port.
    let coordinator = Coordinator::start(&[]).unwrap();
    std::fs::copy(&coordinator.cert, &cert).unwrap();
    let output = Command::new(e2e::binary("task-sharding"))
        .args(["run", "--connect-timeout", "1s", "--schema"])
        .arg(&schema)
        .args(["--", "true"])
        .env("TASK_SHARDING_COORDINATOR", "127.0.0.1:9")
        .env("TASK_SHARDING_CA", &cert)
        .env("TASK_SHARDING_RUN_ID", "x")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("cannot reach the coordinator at 127.0.0.1:9"),
        "{stderr}"
    );
}

#[test]
fn missing_configuration_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let schema = write_schema(dir.path(), "s", &["a".to_string()]).unwrap();
    let mut command = Command::new(e2e::binary("task-sharding"));
    for (name, _) in std::env::vars() {
        if name.starts_with("TASK_SHARDING_") {
            command.env_remove(name);
        }
    }
    let output = command
        .args(["run", "--schema"])
        .arg(&schema)
        .args(["--", "true"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("TASK_SHARDING_COORDINATOR"), "{stderr}");
}

/// CI systems turn undefined secrets into empty strings: an empty `TASK_SHARDING_*` setting
/// means "not set", not an empty path or token.
#[test]
fn empty_settings_count_as_unset() {
    let coordinator = Coordinator::start(&[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let schema = write_schema(dir.path(), "empty", &["a".to_string()]).unwrap();
    let output = coordinator
        .run_command("run-1", "job-1", &schema, &["true"])
        .env("TASK_SHARDING_TOKEN", "")
        .env("TASK_SHARDING_CLIENT_CERT", "")
        .env("TASK_SHARDING_CLIENT_KEY", "")
        .env("TASK_SHARDING_FINGERPRINT", "")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
}

/// Issue 12: every job writes the whole session's results as JUnit XML — every task once,
/// with its outcome and the job that ran it, whichever job's file the CI system reads.
#[test]
fn every_job_writes_the_whole_session_as_junit() {
    use quick_junit::{NonSuccessKind, Report, TestCaseStatus};

    let coordinator = Coordinator::start(&[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut tasks: Vec<String> = (0..8).map(|i| format!("t{i:02}")).collect();
    tasks.push("fail-me".into());
    let schema = write_schema(dir.path(), "junit", &tasks).unwrap();
    let command = task_command(dir.path(), "0.05");
    let jobs: Vec<Job> = (1..=3)
        .map(|i| {
            let name = format!("job-{i}");
            let mut cmd = coordinator.run_command("run-1", &name, &schema, &command);
            cmd.env(
                "TASK_SHARDING_JUNIT",
                dir.path().join(format!("{name}.xml")),
            );
            Job::spawn(&name, cmd).unwrap()
        })
        .collect();
    for job in jobs {
        assert_eq!(job.wait(LIMIT).unwrap().status.code(), Some(1));
    }
    let ran_by: HashMap<String, String> = lines(&dir.path().join("done"))
        .iter()
        .map(|l| {
            let (task, client) = l.split_once(' ').unwrap();
            (task.to_string(), client.to_string())
        })
        .collect();
    for i in 1..=3 {
        let xml = std::fs::read_to_string(dir.path().join(format!("job-{i}.xml"))).unwrap();
        let report = Report::deserialize_from_str(&xml).unwrap();
        assert_eq!((report.tests, report.failures), (9, 1), "job-{i}: {xml}");
        let cases: Vec<_> = report
            .test_suites
            .iter()
            .flat_map(|s| &s.test_cases)
            .collect();
        let mut names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
        names.sort_unstable();
        let mut expected: Vec<&str> = tasks.iter().map(String::as_str).collect();
        expected.sort_unstable();
        assert_eq!(names, expected, "every task once");
        for case in cases {
            let job = case
                .properties
                .iter()
                .find(|p| p.name.as_str() == "job")
                .map(|p| p.value.as_str());
            if case.name.as_str() == "fail-me" {
                assert!(matches!(
                    case.status,
                    TestCaseStatus::NonSuccess {
                        kind: NonSuccessKind::Failure,
                        ..
                    }
                ));
            } else {
                assert!(matches!(case.status, TestCaseStatus::Success { .. }));
                assert_eq!(job, ran_by.get(case.name.as_str()).map(String::as_str));
            }
        }
    }
}
