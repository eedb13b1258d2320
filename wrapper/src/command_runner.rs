//! The generic runner: each task is one process, made from a command template.

use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use schemas::{Outcome, TaskReport, TaskResult};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::output_tail::OutputTail;
use crate::runner::{AssignedTask, Batch, TaskRunner};

/// How long an aborted task's process gets to exit after SIGTERM before it is killed.
const TERMINATE_GRACE: Duration = Duration::from_secs(5);

/// Runs `COMMAND ARGS...` per task, with `{task}` replaced by the task's text and `{id}` by its
/// index, one task after another. Exit status 0 is `Passed`, anything else `Failed`.
#[derive(Debug, Clone)]
pub struct CommandRunner {
    /// The command and its arguments, with placeholders.
    template: Vec<String>,
}

impl CommandRunner {
    /// A runner for this command template; it must name at least the program.
    pub fn new(template: Vec<String>) -> Self {
        assert!(!template.is_empty(), "a command template needs a program");
        CommandRunner { template }
    }

    /// The command line for one task.
    pub fn command_line(&self, task: &AssignedTask) -> Vec<String> {
        self.template
            .iter()
            .map(|arg| {
                arg.replace("{task}", &task.text)
                    .replace("{id}", &task.id.to_string())
            })
            .collect()
    }

    async fn run_one(&self, task: &AssignedTask, abort: &CancellationToken) -> Option<TaskResult> {
        let argv = self.command_line(task);
        let started = Instant::now();
        let spawned = Command::new(&argv[0])
            .args(&argv[1..])
            .env("TASK_SHARDING_TASK", &task.text)
            .env("TASK_SHARDING_TASK_ID", task.id.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                eprintln!("task-sharding: cannot start {:?}: {e}", argv[0]);
                // A command that cannot start is the task's failure, reported like any other.
                let mut failed = result(Outcome::Failed, Some(127), started);
                failed.log_tail = Some(format!("cannot start {:?}: {e}", argv[0]));
                return Some(failed);
            }
        };
        let output = OutputTail::default();
        let copies = output.capture(&mut child);
        tokio::select! {
            status = child.wait() => {
                let status = match status {
                    Ok(status) => status,
                    Err(e) => {
                        eprintln!("task-sharding: lost track of {:?}: {e}", argv[0]);
                        return Some(result(Outcome::Failed, None, started));
                    }
                };
                let tail = output.finish(copies).await;
                let outcome = if status.success() { Outcome::Passed } else { Outcome::Failed };
                let mut result = result(outcome, status.code(), started);
                // Only a failure's output is worth sending to every job.
                result.log_tail = (!status.success()).then_some(tail);
                Some(result)
            }
            () = abort.cancelled() => {
                terminate(&mut child, Signal::SIGTERM, TERMINATE_GRACE).await;
                None
            }
        }
    }
}

impl TaskRunner for CommandRunner {
    async fn run(&mut self, tasks: &[AssignedTask], batch: Batch) -> Vec<TaskReport> {
        for task in tasks {
            if batch.abort.is_cancelled() {
                break;
            }
            match self.run_one(task, &batch.abort).await {
                // Reported the moment it ends: every job sees it at once.
                Some(result) => batch.finished(TaskReport {
                    task: task.id,
                    result,
                }),
                None => break,
            }
        }
        Vec::new()
    }

    fn batch_overhead(&self) -> Duration {
        // Starting a process: a few milliseconds.
        Duration::from_millis(5)
    }
}

fn result(outcome: Outcome, exit_code: Option<i32>, started: Instant) -> TaskResult {
    TaskResult {
        outcome,
        exit_code,
        duration_ms: started.elapsed().as_millis() as u64,
        executed: true,
        log_tail: None,
        build_ms: 0,
    }
}

/// Asks a child to stop with `signal`, and kills it if it has not within `grace`.
pub(crate) async fn terminate(child: &mut Child, signal: Signal, grace: Duration) {
    if let Some(pid) = child.id() {
        let _ = kill(Pid::from_raw(pid as i32), signal);
        if tokio::time::timeout(grace, child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = child.kill().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::run_collecting;

    fn task(id: u32, text: &str) -> AssignedTask {
        AssignedTask {
            id,
            text: text.into(),
        }
    }

    #[test]
    fn placeholders_are_replaced() {
        let runner = CommandRunner::new(vec!["echo".into(), "{task}-{id}".into(), "x".into()]);
        assert_eq!(runner.command_line(&task(3, "a b")), ["echo", "a b-3", "x"]);
    }

    #[tokio::test]
    async fn exit_codes_become_outcomes() {
        let script = "echo said {task} >&2; exit {task}";
        let mut runner = CommandRunner::new(vec!["sh".into(), "-c".into(), script.into()]);
        let reports = run_collecting(
            &mut runner,
            &[task(0, "0"), task(1, "3")],
            CancellationToken::new(),
        )
        .await;
        assert_eq!(reports[0].result.log_tail, None);
        assert_eq!(reports[1].result.log_tail.as_deref(), Some("said 3"));
        let outcomes: Vec<_> = reports
            .iter()
            .map(|r| (r.task, r.result.outcome, r.result.exit_code))
            .collect();
        assert_eq!(
            outcomes,
            [(0, Outcome::Passed, Some(0)), (1, Outcome::Failed, Some(3))]
        );
    }

    #[tokio::test]
    async fn a_missing_program_is_a_failed_task() {
        let mut runner = CommandRunner::new(vec!["/nonexistent/program".into()]);
        let reports = run_collecting(&mut runner, &[task(0, "x")], CancellationToken::new()).await;
        assert_eq!(reports[0].result.outcome, Outcome::Failed);
        assert_eq!(reports[0].result.exit_code, Some(127));
    }

    #[tokio::test]
    async fn abort_stops_the_running_task_and_skips_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("finished");
        let script = format!("sleep 30; touch {}", marker.display());
        let mut runner = CommandRunner::new(vec!["sh".into(), "-c".into(), script]);
        let abort = CancellationToken::new();
        let trigger = abort.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            trigger.cancel();
        });
        let reports = run_collecting(&mut runner, &[task(0, "a"), task(1, "b")], abort).await;
        assert!(
            reports.is_empty(),
            "an aborted task has no verdict: {reports:?}"
        );
        // Had the child not been stopped, `run` would have waited for it to touch the marker.
        assert!(!marker.exists());
    }
}
