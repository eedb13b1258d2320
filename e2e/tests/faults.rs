//! Faults with real processes: the coordinator killed or stopped mid-session and started again
//! on the same state directory and port, while a job is SIGKILLed. Every session still
//! completes with every result, and what finished stays finished.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use e2e::{lines, summary, wait_until, write_schema, Coordinator, Job};

/// Longest any client may take in these tests before it counts as hung.
const LIMIT: Duration = Duration::from_secs(120);
const TASKS: usize = 24;
const JOBS: usize = 3;

/// One session's jobs and the files their tasks write.
struct Run {
    name: &'static str,
    dir: PathBuf,
    tasks: Vec<String>,
    jobs: Vec<Job>,
}

impl Run {
    fn start(coordinator: &Coordinator, name: &'static str) -> Run {
        Self::start_with(coordinator, name, "60s", JOBS)
    }

    /// Like [`Run::start`], with `jobs` jobs reconnecting for `grace` before they finish alone.
    fn start_with(coordinator: &Coordinator, name: &'static str, grace: &str, jobs: usize) -> Run {
        let dir = tempfile::tempdir().unwrap().keep();
        let tasks: Vec<String> = (0..TASKS).map(|i| format!("{name}-{i:02}")).collect();
        let schema = write_schema(&dir, name, &tasks).unwrap();
        // Each task appends `<task> <job>` to `started`, works a little, then to `done`.
        let script = format!(
            "echo \"$0 $TASK_SHARDING_CLIENT_ID\" >> {started}; sleep 0.4; \
             echo \"$0 $TASK_SHARDING_CLIENT_ID\" >> {done}",
            started = dir.join("started").display(),
            done = dir.join("done").display(),
        );
        let command = ["sh", "-c", &script, "{task}"];
        let jobs = (1..=jobs)
            .map(|i| {
                let job = format!("job-{i}");
                let mut run = coordinator.run_command(name, &job, &schema, &command);
                run.env("TASK_SHARDING_GRACE", grace);
                Job::spawn(&format!("{name}/{job}"), run).unwrap()
            })
            .collect();
        Run {
            name,
            dir,
            tasks,
            jobs,
        }
    }

    fn file(&self, name: &str) -> Vec<String> {
        lines(&self.dir.join(name))
    }

    /// Waits for every job to exit.
    fn wait_all(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.jobs)
            .into_iter()
            .map(|job| job.wait(LIMIT).unwrap())
            .collect()
    }

    /// Waits for every job; each must exit 0 with the same report, which is returned.
    fn finish_together(&mut self) -> (Vec<Output>, String) {
        let outputs = self.wait_all();
        let first = summary(&String::from_utf8_lossy(&outputs[0].stdout));
        for output in &outputs {
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(0), "{}: {stderr}", self.name);
            // One report for the whole session, the same for every job.
            assert_eq!(summary(&String::from_utf8_lossy(&output.stdout)), first);
        }
        (outputs, first)
    }

    /// How often each task finished, and by whom.
    fn finishes(&self) -> HashMap<String, Vec<String>> {
        let mut by_task: HashMap<String, Vec<String>> = HashMap::new();
        for line in self.file("done") {
            let (task, job) = line.split_once(' ').unwrap();
            by_task.entry(task.into()).or_default().push(job.into());
        }
        by_task
    }
}

fn restart_mid_session(graceful: bool) {
    // A resume grace long enough for the jobs to notice the restart and come back, short
    // enough for the killed job's leases to go to the others soon after. No backup copies: a
    // task finishing twice must mean it was handed out twice.
    let args = [
        "--resume-grace",
        "10s",
        "--no-backups",
        "--idle-timeout",
        "60s",
    ];
    let coordinator = Coordinator::start(&args).unwrap();
    let addr = coordinator.addr.clone();
    let mut runs = [
        Run::start(&coordinator, "alpha"),
        Run::start(&coordinator, "beta"),
    ];

    // Mid-session: a few tasks done in both sessions, and the victim (alpha's job-3) running one.
    wait_until("both sessions are under way", LIMIT, || {
        runs.iter().all(|run| run.file("done").len() >= 4)
            && runs[0]
                .file("started")
                .iter()
                .any(|l| l.ends_with(" job-3"))
    })
    .unwrap();
    let state = if graceful {
        coordinator.stop().unwrap()
    } else {
        coordinator.kill().unwrap()
    };
    let mut victim = runs[0].jobs.pop().unwrap();
    victim.kill_group().unwrap();
    let victim_done: Vec<String> = runs[0]
        .file("done")
        .into_iter()
        .filter(|l| l.ends_with(" job-3"))
        .map(|l| l.split_once(' ').unwrap().0.to_string())
        .collect();
    let done_before = runs
        .iter()
        .map(|r| r.file("done").len())
        .collect::<Vec<_>>();
    // The jobs keep running their tasks and retry while the coordinator is away.
    std::thread::sleep(Duration::from_secs(1));
    let coordinator =
        Coordinator::start_in(state, &[&args[..], &["--listen", &addr]].concat()).unwrap();

    for run in &mut runs {
        let (outputs, first) = run.finish_together();
        for output in &outputs {
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                stderr.contains("reconnected and resumed"),
                "{}: came back as the same member: {stderr}",
                run.name
            );
            assert!(!stderr.contains("alone"), "{stderr}");
            // They noticed at once, not after an idle timeout: told so by the coordinator
            // stopping, or, killed, by the reset the restarted one sends for connections it
            // no longer knows (it keeps its reset key in the state directory).
            let told = if graceful {
                "the coordinator is shutting down"
            } else {
                "reset by peer"
            };
            assert!(stderr.contains(told), "{}: {stderr}", run.name);
        }
        assert!(
            first.contains(&format!("{TASKS} passed")),
            "{}: every task has its result: {first}",
            run.name
        );
        // What finished stays finished: a task ran to the end once, except one whose result
        // died with the killed job before it reached the coordinator's store.
        let finishes = run.finishes();
        for task in &run.tasks {
            let by = finishes.get(task).map(Vec::as_slice).unwrap_or_default();
            let allowed = if victim_done.contains(task) { 2 } else { 1 };
            assert!(
                !by.is_empty() && by.len() <= allowed,
                "{task} finished {by:?} (the victim finished {victim_done:?})\nstarted: {:?}\ndone: {:?}\n{}",
                run.file("started"),
                run.file("done"),
                outputs
                    .iter()
                    .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                    .collect::<Vec<_>>()
                    .join("\n---\n")
            );
        }
    }
    let log = coordinator.log();
    assert!(log.contains("resumed stored sessions"), "{log}");
    assert!(
        done_before.iter().all(|&n| n >= 4),
        "the restart happened mid-session"
    );
    for run in &runs {
        let _ = std::fs::remove_dir_all(&run.dir);
    }
}

#[test]
fn a_coordinator_killed_mid_session_resumes_every_session() {
    restart_mid_session(false);
}

#[test]
fn a_coordinator_restarted_gracefully_resumes_every_session() {
    restart_mid_session(true);
}

/// The coordinator gone for good mid-session: every job still finishes, alone, and says so.
#[test]
fn a_coordinator_gone_for_good_leaves_every_job_to_finish_alone() {
    let coordinator = Coordinator::start(&[]).unwrap();
    // Not the 60 s of the restart tests: give up soon.
    let mut run = Run::start_with(&coordinator, "gone", "3s", JOBS);
    wait_until("the session is under way", LIMIT, || {
        run.file("done").len() >= 3
    })
    .unwrap();
    drop(coordinator.kill().unwrap());
    let outputs = run.wait_all();
    for output in &outputs {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let text = summary(&String::from_utf8_lossy(&output.stdout));
        assert_eq!(output.status.code(), Some(0), "{stderr}");
        assert!(
            stderr.contains("could not reconnect within")
                && stderr.contains("the coordinator is unavailable; running the"),
            "it says why it finished alone: {stderr}"
        );
        // Each job reports on every task: its own results and those it ran alone.
        assert!(text.contains(&format!("{TASKS} passed")), "{text}");
        assert!(text.contains("(alone)"), "{text}");
    }
    let finishes = run.finishes();
    assert!(run.tasks.iter().all(|t| finishes.contains_key(t)));
    let _ = std::fs::remove_dir_all(&run.dir);
}

/// A job cut off but alive (its whole process group stopped with SIGSTOP past the idle timeout,
/// as a network partition looks to the coordinator): its task goes to the other job, and when
/// it is continued it comes back as the same member, and the session completes with one result
/// per task.
#[test]
fn a_job_cut_off_past_the_idle_timeout_comes_back_as_the_same_member() {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;

    let coordinator = Coordinator::start(&["--idle-timeout", "2s", "--no-backups"]).unwrap();
    let mut run = Run::start_with(&coordinator, "cut", "60s", 2);
    wait_until("job-2 runs a task", LIMIT, || {
        run.file("started").iter().any(|l| l.ends_with(" job-2"))
    })
    .unwrap();
    let group = Pid::from_raw(run.jobs[1].child.id() as i32);
    killpg(group, Signal::SIGSTOP).unwrap();
    wait_until("the coordinator took job-2's task back", LIMIT, || {
        coordinator
            .log()
            .lines()
            .any(|l| l.contains("a client left holding leases") && l.contains("client=job-2"))
    })
    .unwrap();
    killpg(group, Signal::SIGCONT).unwrap();

    let (outputs, first) = run.finish_together();
    assert!(first.contains(&format!("{TASKS} passed")), "{first}");
    let cut_off = String::from_utf8_lossy(&outputs[1].stderr);
    assert!(
        cut_off.contains("reconnected and resumed"),
        "job-2 came back as itself: {cut_off}"
    );
    assert!(
        coordinator.log().contains("a client came back"),
        "{}",
        coordinator.log()
    );
    let _ = std::fs::remove_dir_all(&run.dir);
}

/// Bug: finishing alone, the job handed its runner a token nothing cancelled, so SIGINT and
/// SIGTERM were swallowed and the job ran every remaining task to the end. Now the signal stops
/// the runner (and its processes) and the job exits 130 at once.
fn a_signal_while_finishing_alone_is_honoured(signal: nix::sys::signal::Signal) {
    let coordinator = Coordinator::start(&[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tasks: Vec<String> = (0..3).map(|i| format!("alone-{i}")).collect();
    let schema = write_schema(dir.path(), "alone", &tasks).unwrap();
    // The first task holds until `release`; once the coordinator is `gone`, a task takes a minute.
    let script = format!(
        "echo \"$0\" >> {dir}/started; if [ -e {dir}/gone ]; then exec sleep 60; fi; \
         while [ ! -e {dir}/release ]; do sleep 0.05; done",
        dir = dir.path().display()
    );
    let mut command =
        coordinator.run_command("alone", "job", &schema, &["sh", "-c", &script, "{task}"]);
    command.env("TASK_SHARDING_GRACE", "1s");
    let job = Job::spawn("alone/job", command).unwrap();
    let started = || lines(&dir.path().join("started"));
    wait_until("the first task runs", LIMIT, || started().len() == 1).unwrap();
    drop(coordinator.kill().unwrap());
    std::fs::write(dir.path().join("gone"), "").unwrap();
    std::fs::write(dir.path().join("release"), "").unwrap();
    wait_until("the job finishes alone", LIMIT, || {
        job.read("stderr").contains("not known to be finished here") && started().len() == 2
    })
    .unwrap();

    job.signal(signal).unwrap();
    // Well before the minute the task would take: the signal stopped it.
    let output = job.wait(Duration::from_secs(20)).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("interrupted; this job's unfinished tasks were not run"),
        "{stderr}"
    );
    assert_eq!(started().len(), 2, "the last task never started");
}

#[test]
fn sigint_while_finishing_alone_is_honoured() {
    a_signal_while_finishing_alone_is_honoured(nix::sys::signal::Signal::SIGINT);
}

#[test]
fn sigterm_while_finishing_alone_is_honoured() {
    a_signal_while_finishing_alone_is_honoured(nix::sys::signal::Signal::SIGTERM);
}
