//! The Bazel runner: one `bazel test` (or `bazel build`) per batch of targets, results read from
//! its build events.

mod batch_stderr;
mod build_time;
mod event_tail;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use schemas::{Outcome, TaskReport, TaskResult};
use tokio::process::Command;

use super::bep::BatchEvents;
use super::verdict::code;
use super::WRAPPED_MARKER;
use crate::command_runner::terminate;
use crate::runner::{AssignedTask, Batch, TaskRunner};
use build_time::BuildTime;
use event_tail::EventTail;

/// How long an aborted Bazel gets to stop after SIGINT (which it handles by cancelling the build
/// cleanly) before it is killed.
const INTERRUPT_GRACE: Duration = Duration::from_secs(30);

/// Runs batches of targets with the user's Bazel, startup options, command and options.
#[derive(Debug)]
pub struct BazelRunner {
    /// `$BAZEL_REAL`.
    pub bazel: PathBuf,
    /// The user's startup options.
    pub startup: Vec<String>,
    /// The user's command: `test` or `build`.
    pub command: String,
    /// The user's command options (remote cache flags included, as they are).
    pub options: Vec<String>,
    /// The user's negative target patterns (`-//a:suite`), given to every batch after its
    /// targets: Bazel then leaves untested what the user's command would (the tests of a
    /// subtracted `test_suite` are still built, as other targets its patterns match, but not
    /// run), and reports them as such.
    pub negatives: Vec<String>,
    /// The targets that are built, not tested (every target of a `bazel build`): their result
    /// is "built" or "failed to build".
    pub builds: BTreeSet<String>,
    /// The user's own `--build_event_json_file`: each batch's events are appended to it.
    pub user_events: Option<PathBuf>,
    /// Where each batch's build event file goes.
    pub events_dir: PathBuf,
    /// Batches run so far, to name their event files.
    pub batches: u32,
    /// What one Bazel invocation costs beyond its tests and what it builds: the least
    /// measured on earlier batches (see [`build_time`]).
    pub overhead: Duration,
    /// Whether `overhead` was measured yet (else it is [`INITIAL_OVERHEAD`]).
    pub measured: bool,
    /// How many tests one batch runs at once (see [`super::plan::Plan::parallelism`]).
    pub parallelism: u32,
    /// The targets whose own sources Bazel compiles apart from linking them (C++ rules: their
    /// `compilation_outputs` output group), which a batch told to compile first compiles
    /// before the rest (see [`BazelRunner::compile_first_line`]).
    pub compiled: BTreeSet<String>,
}

/// The test tag a compile-first pass filters on: no test has it, so the pass runs none and
/// builds its targets as plain targets, only the output groups it asks for.
const COMPILE_ONLY_TAG: &str = "task-sharding-compile-first-runs-no-test";

/// How often a running batch's event file is read for results to report.
const STREAM_EVERY: Duration = Duration::from_millis(200);

/// The overhead assumed before the first batch has been measured.
pub const INITIAL_OVERHEAD: Duration = Duration::from_secs(1);

impl BazelRunner {
    /// The argv (after the program) for one batch.
    pub fn command_line(&self, targets: &[&str], events_file: &std::path::Path) -> Vec<String> {
        let mut argv = self.startup.clone();
        argv.push(self.command.clone());
        argv.extend(self.options.iter().cloned());
        // Every completed action, with its target: what each target costs to build (see
        // `build_time`). The user's own event file gets only what they asked for.
        argv.push("--build_event_publish_all_actions".into());
        argv.push(format!("--build_event_json_file={}", events_file.display()));
        argv.push("--".into());
        argv.extend(targets.iter().map(|t| t.to_string()));
        argv.extend(self.negatives.iter().cloned());
        argv
    }

    /// The argv for compiling `targets`' own sources only, before their batch, while a
    /// prerequisite they link is being built by another job: the user's own command
    /// (`bazel test`, so that the same bazelrc sections and options apply and the analysis
    /// stays cached for the batch), building only the `compilation_outputs` output group —
    /// object files, which need the prerequisite's headers, not the prerequisite built — and
    /// running no test: the tag filter matches none, and `--nobuild_tests_only` has the
    /// filtered tests built all the same. Bazel exits 4 (no test ran); the batch after it
    /// gives the verdicts, a compile error included.
    pub fn compile_first_line(
        &self,
        targets: &[&str],
        events_file: &std::path::Path,
    ) -> Vec<String> {
        let mut argv = self.startup.clone();
        argv.push(self.command.clone());
        argv.extend(self.options.iter().cloned());
        argv.extend([
            "--nobuild_tests_only".to_string(),
            format!("--test_tag_filters={COMPILE_ONLY_TAG}"),
            "--output_groups=compilation_outputs".into(),
            "--build_event_publish_all_actions".into(),
            format!("--build_event_json_file={}", events_file.display()),
            "--".into(),
        ]);
        argv.extend(targets.iter().map(|t| t.to_string()));
        argv.extend(self.negatives.iter().cloned());
        argv
    }

    /// Compiles the batch's compiled targets first (see [`BazelRunner::compile_first_line`])
    /// and gives what each compile took to `stream`. Of its output only Bazel's summary of the
    /// actions it ran (`INFO: N processes: ...`) is shown: the batch after it builds the same
    /// targets and reports what went wrong, once. `false` if aborted.
    async fn compile_first(
        &self,
        tasks: &[AssignedTask],
        batch: &Batch,
        stream: &mut Stream,
    ) -> bool {
        let targets: Vec<&str> = tasks
            .iter()
            .map(|t| t.text.as_str())
            .filter(|t| self.compiled.contains(*t))
            .collect();
        if targets.is_empty() || self.command != "test" {
            return true;
        }
        eprintln!(
            "task-sharding: compiling {} targets first: a library they link is being built by \
             another job",
            targets.len()
        );
        let events_file = self
            .events_dir
            .join(format!("batch-{}-compile.json", self.batches));
        let mut command = Command::new(&self.bazel);
        command
            .args(self.compile_first_line(&targets, &events_file))
            .env(WRAPPED_MARKER, "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let Ok(mut child) = command.spawn() else {
            return true;
        };
        let summary = tokio::spawn(processes_lines(child.stderr.take()));
        tokio::select! {
            _ = child.wait() => {}
            () = batch.abort.cancelled() => {
                terminate(&mut child, Signal::SIGINT, INTERRUPT_GRACE).await;
                return false;
            }
        }
        for line in summary.await.unwrap_or_default() {
            eprintln!("{line}");
        }
        let mut events =
            BatchEvents::parse(&std::fs::read_to_string(&events_file).unwrap_or_default());
        let commands = finished_commands(&mut events);
        stream.build.commands_finished(stream.start_ms, &commands);
        let now = epoch_ms(std::time::SystemTime::now()).unwrap_or(0);
        stream.build.invocation_started(now);
        true
    }
}

/// The commands `events` report completed since the last call, as [`BuildTime`] takes them:
/// each one's target, when its output was written, whether it was a test.
fn finished_commands(events: &mut BatchEvents) -> Vec<(String, Option<u64>, bool)> {
    events
        .take_commands()
        .into_iter()
        .map(|c| {
            let finished = c.output.as_deref().and_then(written_ms);
            (c.label, finished, c.test)
        })
        .collect()
}

/// Reads `stderr` to its end and keeps Bazel's summaries of the actions it ran (`INFO: 24
/// processes: 3 remote cache hit, 21 linux-sandbox.`).
async fn processes_lines(stderr: Option<tokio::process::ChildStderr>) -> Vec<String> {
    use tokio::io::AsyncBufReadExt as _;
    let Some(stderr) = stderr else {
        return Vec::new();
    };
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let mut kept = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.contains(" processes: ") {
            kept.push(line);
        }
    }
    kept
}
impl BazelRunner {
    /// What of a batch's events goes to the user's own event file: all of them if they asked
    /// for every action (`--build_event_publish_all_actions`), else without the successful
    /// actions we asked for — what their Bazel would have written.
    fn users_copy<'a>(&self, events: &'a str) -> std::borrow::Cow<'a, str> {
        let asked = self.options.iter().rev().find_map(|o| match o.as_str() {
            "--build_event_publish_all_actions" => Some(true),
            "--nobuild_event_publish_all_actions" => Some(false),
            _ => o
                .strip_prefix("--build_event_publish_all_actions=")
                .map(|v| matches!(v, "true" | "yes" | "1")),
        });
        if asked == Some(true) {
            return events.into();
        }
        events
            .lines()
            .filter(|line| !is_successful_action(line))
            .flat_map(|line| [line, "\n"])
            .collect::<String>()
            .into()
    }
}

/// Whether a build event line is a successful action's (`actionCompleted` with success):
/// Bazel reports those only with `--build_event_publish_all_actions`; failed ones always.
fn is_successful_action(line: &str) -> bool {
    line.contains("\"actionCompleted\"")
        && serde_json::from_str::<serde_json::Value>(line).is_ok_and(|event| {
            event["id"].get("actionCompleted").is_some()
                && event["action"]["success"].as_bool() == Some(true)
        })
}

impl TaskRunner for BazelRunner {
    async fn run(&mut self, tasks: &[AssignedTask], batch: Batch) -> Vec<TaskReport> {
        self.batches += 1;
        let events_file = self.events_dir.join(format!("batch-{}.json", self.batches));
        let labels: Vec<&str> = tasks.iter().map(|t| t.text.as_str()).collect();
        let started = Instant::now();
        let mut stream = Stream::new(&events_file, started, self.overhead);
        if batch.compile_first && !self.compile_first(tasks, &batch, &mut stream).await {
            return Vec::new();
        }
        let mut command = Command::new(&self.bazel);
        command
            .args(self.command_line(&labels, &events_file))
            .env(WRAPPED_MARKER, "1")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        batch_stderr::pipe_unless_terminal(&mut command);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                eprintln!("task-sharding: cannot start {}: {e}", self.bazel.display());
                return no_verdict(tasks, code::BUILD_FAILURE, started);
            }
        };
        let stderr = batch_stderr::Forwarder::start(&mut child);
        let mut tick = tokio::time::interval(STREAM_EVERY);
        let status = loop {
            tokio::select! {
                status = child.wait() => break status,
                () = batch.abort.cancelled() => {
                    terminate(&mut child, Signal::SIGINT, INTERRUPT_GRACE).await;
                    stderr.finish().await;
                    // What it did before it was stopped is the user's too: results streamed
                    // from it count, and their tests ran nowhere else.
                    if let Some(user) = &self.user_events {
                        let text = std::fs::read_to_string(&events_file).unwrap_or_default();
                        append(user, &self.users_copy(&text));
                    }
                    return Vec::new();
                }
                _ = tick.tick() => stream.report_settled(tasks, &self.builds, &batch),
            }
        };
        // The results of the last moments, before the rest, which needs the exit code.
        stream.report_settled(tasks, &self.builds, &batch);
        stderr.finish().await;
        let exit = match status {
            Ok(status) => status.code().unwrap_or(code::INTERRUPTED),
            Err(e) => {
                eprintln!("task-sharding: lost track of Bazel: {e}");
                code::BUILD_FAILURE
            }
        };
        let events_text = std::fs::read_to_string(&events_file).unwrap_or_default();
        if let Some(user) = &self.user_events {
            append(user, &self.users_copy(&events_text));
        }
        let events = BatchEvents::parse(&events_text);
        let mut reports: Vec<TaskReport> = tasks
            .iter()
            .filter(|task| !stream.reported.contains(&task.id))
            .map(|task| {
                let build_task = self.builds.contains(&task.text);
                let result = match events.result(&task.text) {
                    Some(result) => {
                        let outcome = if build_task {
                            built(result.outcome)
                        } else {
                            after_exit(result.outcome, exit)
                        };
                        with_batch_exit(TaskResult { outcome, ..result }, exit)
                    }
                    // Every target of the batch was filtered out: not a failure.
                    None if exit == code::NO_TESTS => TaskResult {
                        outcome: Outcome::Skipped,
                        exit_code: None,
                        duration_ms: 0,
                        executed: false,
                        log_tail: None,
                        build_ms: 0,
                    },
                    None => return no_verdict_for(task, exit, started),
                };
                TaskReport {
                    task: task.id,
                    result,
                }
            })
            .collect();
        let labels: HashMap<u32, &str> = tasks.iter().map(|t| (t.id, t.text.as_str())).collect();
        super::test_log::attach_failing_logs(&mut reports, &labels, &events_text);
        // What the targets that reached a verdict at the end cost to build, and what was left:
        // the invocation's own cost (see `BuildTime::next_overhead_ms`: a compile-heavy
        // batch's building is its targets' cost, not overhead).
        let idle = stream.idle_ms(&events);
        let built: Vec<&mut TaskReport> = reports
            .iter_mut()
            .filter(|r| had_verdict(r.result.outcome))
            .collect();
        let built_labels: Vec<&str> = built.iter().map(|r| labels[&r.task]).collect();
        let costs = stream.build.verdicts(idle, &built_labels);
        for (report, cost) in built.into_iter().zip(costs) {
            report.result.build_ms = cost;
        }
        self.overhead = Duration::from_millis(stream.build.next_overhead_ms(idle, !self.measured));
        self.measured = true;
        reports
    }

    fn batch_overhead(&self) -> Duration {
        self.overhead
    }

    fn parallelism(&self) -> u32 {
        self.parallelism
    }
}

/// A running batch's results, reported one by one as the build events settle them, each with
/// what it cost to build.
struct Stream {
    tail: EventTail,
    events: BatchEvents,
    reported: BTreeSet<u32>,
    started: Instant,
    /// `started`, in milliseconds since the epoch (what file times are compared with).
    start_ms: u64,
    build: BuildTime,
}

impl Stream {
    fn new(events_file: &std::path::Path, started: Instant, overhead: Duration) -> Stream {
        Stream {
            tail: EventTail::new(events_file),
            events: BatchEvents::default(),
            reported: BTreeSet::new(),
            started,
            start_ms: epoch_ms(std::time::SystemTime::now()).unwrap_or(0)
                - started.elapsed().as_millis() as u64,
            build: BuildTime::new(overhead.as_millis() as u64),
        }
    }

    /// How long the batch has gone without a test running, as far as `events` say.
    fn idle_ms(&self, events: &BatchEvents) -> u64 {
        (self.started.elapsed().as_millis() as u64).saturating_sub(events.testing_ms().unwrap_or(0))
    }

    /// Reads what Bazel has written since the last call and reports each task whose result it
    /// settles (see [`BatchEvents::settled`]): the same result the batch's end would give it.
    fn report_settled(&mut self, tasks: &[AssignedTask], builds: &BTreeSet<String>, batch: &Batch) {
        let lines = self.tail.read();
        if lines.is_empty() {
            return;
        }
        for line in &lines {
            self.events.add_line(line);
        }
        let commands = finished_commands(&mut self.events);
        self.build.commands_finished(self.start_ms, &commands);
        let mut settled: Vec<TaskReport> = tasks
            .iter()
            .filter(|task| !self.reported.contains(&task.id))
            .filter_map(|task| {
                let result = self
                    .events
                    .settled(&task.text, builds.contains(&task.text))?;
                Some(TaskReport {
                    task: task.id,
                    result,
                })
            })
            .collect();
        if settled.is_empty() {
            return;
        }
        let labels: HashMap<u32, &str> = tasks.iter().map(|t| (t.id, t.text.as_str())).collect();
        let settled_labels: Vec<&str> = settled.iter().map(|r| labels[&r.task]).collect();
        let costs = self
            .build
            .verdicts(self.idle_ms(&self.events), &settled_labels);
        super::test_log::attach_failing_logs(&mut settled, &labels, self.tail.text());
        for (mut report, cost) in settled.into_iter().zip(costs) {
            report.result.build_ms = cost;
            self.reported.insert(report.task);
            batch.finished(report);
        }
    }
}

/// When the file at `path` was last written, in milliseconds since the epoch.
fn written_ms(path: &std::path::Path) -> Option<u64> {
    epoch_ms(std::fs::metadata(path).ok()?.modified().ok()?)
}

fn epoch_ms(time: std::time::SystemTime) -> Option<u64> {
    let since = time.duration_since(std::time::UNIX_EPOCH).ok()?;
    Some(since.as_millis() as u64)
}

/// Whether a target's outcome means Bazel got as far as building it (its cost is known).
fn had_verdict(outcome: Outcome) -> bool {
    !matches!(outcome, Outcome::NoStatus | Outcome::Skipped)
}

/// A test that built but has no test result was left out by a filter only when the build
/// succeeded; after a build failure (or `--check_tests_up_to_date` finding it stale) it never
/// got to run, which Bazel calls NO STATUS.
fn after_exit(outcome: Outcome, exit: i32) -> Outcome {
    match (outcome, exit) {
        (Outcome::Skipped, code::SUCCESS | code::TESTS_FAILED | code::NO_TESTS) => outcome,
        (Outcome::Skipped, _) => Outcome::NoStatus,
        _ => outcome,
    }
}

/// `result` with the batch's exit code where it is the only word on the target: one Bazel ran
/// the whole batch, so its code is no test's own (a passing test's batch exits 3 when another
/// test fails). Only a target left without a verdict of its own (NO STATUS, FAILED TO BUILD)
/// carries it, to say why and to give the session's exit code (see [`super::verdict`]).
fn with_batch_exit(result: TaskResult, exit: i32) -> TaskResult {
    let without_verdict = matches!(result.outcome, Outcome::NoStatus | Outcome::FailedToBuild);
    TaskResult {
        exit_code: without_verdict.then_some(exit),
        ..result
    }
}

/// A build task's outcome: one that completed successfully was built (there is nothing to test,
/// whatever the batch's exit code says of the others).
fn built(outcome: Outcome) -> Outcome {
    match outcome {
        Outcome::Skipped | Outcome::Passed => Outcome::Built,
        other => other,
    }
}

/// Appends a batch's events to the user's event file (created empty by the planning run).
fn append(path: &std::path::Path, text: &str) {
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut file| std::io::Write::write_all(&mut file, text.as_bytes()));
    if let Err(e) = written {
        eprintln!(
            "task-sharding: warning: cannot append to {}: {e}",
            path.display()
        );
    }
}

fn no_verdict(tasks: &[AssignedTask], exit: i32, started: Instant) -> Vec<TaskReport> {
    tasks
        .iter()
        .map(|task| no_verdict_for(task, exit, started))
        .collect()
}

/// A target Bazel said nothing about: the build stopped before it (or never started).
fn no_verdict_for(task: &AssignedTask, exit: i32, started: Instant) -> TaskReport {
    TaskReport {
        task: task.id,
        result: TaskResult {
            outcome: Outcome::NoStatus,
            exit_code: Some(exit),
            duration_ms: started.elapsed().as_millis() as u64,
            executed: false,
            log_tail: None,
            build_ms: 0,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_that_never_ran_after_a_build_failure_has_no_status() {
        assert_eq!(
            after_exit(Outcome::Skipped, code::NO_TESTS),
            Outcome::Skipped
        );
        assert_eq!(
            after_exit(Outcome::Skipped, code::SUCCESS),
            Outcome::Skipped
        );
        assert_eq!(
            after_exit(Outcome::Skipped, code::BUILD_FAILURE),
            Outcome::NoStatus
        );
        assert_eq!(
            after_exit(Outcome::Passed, code::BUILD_FAILURE),
            Outcome::Passed
        );
    }

    /// Regression (issue 10): every failing test's row said `FAILED in 0.1s, exit 3`, the
    /// batch's exit code, and a passing test's result carried a 3 it never returned.
    #[test]
    fn a_test_with_a_verdict_does_not_carry_its_batchs_exit_code() {
        let result = |outcome| TaskResult {
            outcome,
            exit_code: None,
            duration_ms: 100,
            executed: true,
            log_tail: None,
            build_ms: 0,
        };
        let codes = [
            (Outcome::Failed, code::TESTS_FAILED, None),
            (Outcome::Passed, code::TESTS_FAILED, None),
            (Outcome::TimedOut, code::TESTS_FAILED, None),
            (Outcome::Built, code::BUILD_FAILURE, None),
            (Outcome::NoStatus, code::COMMAND_LINE, Some(2)),
            (Outcome::FailedToBuild, code::BUILD_FAILURE, Some(1)),
        ];
        for (outcome, exit, want) in codes {
            assert_eq!(
                with_batch_exit(result(outcome), exit).exit_code,
                want,
                "{outcome:?}"
            );
        }
    }

    #[test]
    fn a_build_task_that_completed_was_built_whatever_the_batch_exit() {
        assert_eq!(built(Outcome::Skipped), Outcome::Built);
        assert_eq!(built(Outcome::FailedToBuild), Outcome::FailedToBuild);
        assert_eq!(built(Outcome::NoStatus), Outcome::NoStatus);
    }

    /// A runner of `bazel test` with the user's `options`, nothing run yet.
    fn runner(options: &[&str]) -> BazelRunner {
        BazelRunner {
            bazel: "/usr/bin/bazel-real".into(),
            startup: Vec::new(),
            command: "test".into(),
            options: options.iter().map(|o| o.to_string()).collect(),
            negatives: Vec::new(),
            builds: BTreeSet::new(),
            user_events: None,
            events_dir: "/tmp/e".into(),
            batches: 0,
            overhead: INITIAL_OVERHEAD,
            measured: false,
            parallelism: 1,
            compiled: BTreeSet::new(),
        }
    }

    #[test]
    fn a_batch_is_the_users_command_with_our_targets_and_event_file() {
        let runner = BazelRunner {
            startup: vec!["--output_user_root=/r".into()],
            negatives: vec!["-//a:suite".into()],
            ..runner(&["-c", "opt", "--remote_cache=http://c"])
        };
        assert_eq!(
            runner.command_line(
                &["//a:t", "//b:t"],
                std::path::Path::new("/tmp/e/batch-1.json")
            ),
            [
                "--output_user_root=/r",
                "test",
                "-c",
                "opt",
                "--remote_cache=http://c",
                "--build_event_publish_all_actions",
                "--build_event_json_file=/tmp/e/batch-1.json",
                "--",
                "//a:t",
                "//b:t",
                "-//a:suite"
            ]
        );
    }

    /// Issue 11: compiling first is the user's own `bazel test` (their options, bazelrc and
    /// negative patterns), building the object files only and running no test; the user's
    /// `--build_tests_only` (which would build nothing when no test is selected) is undone.
    #[test]
    fn a_compile_first_pass_is_the_users_test_command_building_objects_only() {
        let runner = BazelRunner {
            startup: vec!["--output_user_root=/r".into()],
            negatives: vec!["-//a:suite".into()],
            ..runner(&["--build_tests_only", "--remote_cache=http://c"])
        };
        assert_eq!(
            runner.compile_first_line(&["//a:t"], std::path::Path::new("/tmp/e/c.json")),
            [
                "--output_user_root=/r",
                "test",
                "--build_tests_only",
                "--remote_cache=http://c",
                "--nobuild_tests_only",
                "--test_tag_filters=task-sharding-compile-first-runs-no-test",
                "--output_groups=compilation_outputs",
                "--build_event_publish_all_actions",
                "--build_event_json_file=/tmp/e/c.json",
                "--",
                "//a:t",
                "-//a:suite"
            ]
        );
    }

    /// We ask Bazel for every action (what building costs); the user's own event file gets
    /// what their command asked for: failed actions always, successful ones only on request.
    #[test]
    fn the_users_event_file_gets_successful_actions_only_if_they_asked() {
        let events = concat!(
            r#"{"id":{"started":{}},"started":{}}"#,
            "\n",
            r#"{"id":{"actionCompleted":{"label":"//a:t"}},"action":{"success":true}}"#,
            "\n",
            r#"{"id":{"actionCompleted":{"label":"//a:u"}},"action":{"exitCode":1}}"#,
            "\n",
        );
        let without = concat!(
            r#"{"id":{"started":{}},"started":{}}"#,
            "\n",
            r#"{"id":{"actionCompleted":{"label":"//a:u"}},"action":{"exitCode":1}}"#,
            "\n",
        );
        assert_eq!(runner(&[]).users_copy(events), without);
        assert_eq!(
            runner(&["--build_event_publish_all_actions"]).users_copy(events),
            events
        );
        assert_eq!(
            runner(&[
                "--build_event_publish_all_actions=true",
                "--nobuild_event_publish_all_actions"
            ])
            .users_copy(events),
            without
        );
        assert_eq!(
            runner(&["--build_event_publish_all_actions=yes"]).users_copy(events),
            events
        );
    }
}
