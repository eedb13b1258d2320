//! The session's summary, printed the same by every client.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use schemas::{Outcome, Schema, SessionReport, TaskRecord};

use crate::driver::job_of;

/// Renders every task's result, in schema order, with the client that produced it, then a line
/// of totals, then the end of each failing task's log. Depends only on the report, so every
/// client of a session prints the same text.
pub fn render(schema: &Schema, report: &SessionReport) -> String {
    let width = schema
        .tasks
        .iter()
        .map(|t| printable(&t.task).chars().count())
        .max()
        .unwrap_or(0)
        .min(80);
    let mut out = String::new();
    let mut counts: BTreeMap<Outcome, usize> = BTreeMap::new();
    let mut jobs = BTreeSet::new();
    let _ = writeln!(
        out,
        "task-sharding: session {:?} complete: {} tasks",
        report.schema_name,
        report.records.len()
    );
    for record in &report.records {
        let text = printable(task_text(schema, record));
        let result = &record.result;
        *counts.entry(result.outcome).or_default() += 1;
        if !record.client.is_empty() {
            jobs.insert(job_of(&record.client));
        }
        // Bazel's style: `//a:b  (cached) PASSED in 0.4s`, then who ran it.
        let cached = if from_cache(result) { "(cached) " } else { "" };
        let mut detail = format!("{cached}{}", result.outcome.label());
        if let Some(time) = shown_time(result) {
            let _ = write!(detail, " in {time}");
        }
        match exit_note(result) {
            Some(note @ ExitNote::Own(_)) => {
                let _ = write!(detail, ", {note}");
            }
            Some(note @ ExitNote::Batch(_)) => {
                let _ = write!(detail, " ({note})");
            }
            None => {}
        }
        // A task nobody ran (the session stopped at its first failure) names no job.
        let by = if record.client.is_empty() {
            String::new()
        } else {
            format!("  [{}]", printable(&record.client))
        };
        let _ = writeln!(out, "{text:<width$}  {detail}{by}");
    }
    let totals: Vec<String> = counts
        .iter()
        .map(|(outcome, n)| format!("{n} {}", outcome.label().to_lowercase()))
        .collect();
    let _ = writeln!(
        out,
        "task-sharding: {}; run by {} client{}",
        if totals.is_empty() {
            "no tasks".to_string()
        } else {
            totals.join(", ")
        },
        jobs.len(),
        if jobs.len() == 1 { "" } else { "s" }
    );
    out.push_str(&crate::failing_logs::text(schema, report));
    out
}

/// The same as a Markdown table, for `GITHUB_STEP_SUMMARY`, then the failing tasks' logs.
pub fn markdown(schema: &Schema, report: &SessionReport) -> String {
    let mut out = format!(
        "### task-sharding: {} ({} tasks)\n\n| task | result | time | job |\n|---|---|---|---|\n",
        markdown_cell(&report.schema_name),
        report.records.len()
    );
    for record in &report.records {
        let text = markdown_cell(task_text(schema, record)).replace('`', "'");
        let result = &record.result;
        let cached = if from_cache(result) { " (cached)" } else { "" };
        let note = exit_note(result).map_or_else(String::new, |note| format!(" ({note})"));
        let _ = writeln!(
            out,
            "| `{text}` | {}{cached}{note} | {} | {} |",
            result.outcome.label(),
            shown_time(result).unwrap_or_default(),
            markdown_cell(&record.client)
        );
    }
    out.push_str(&crate::failing_logs::markdown(schema, report));
    out
}

/// What a result's exit code explains, if anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitNote {
    /// The task's own process's code: the generic runner runs one process per task.
    Own(i32),
    /// The code of the Bazel invocation that ran the target's batch, for a target Bazel gave no
    /// verdict of its own (NO STATUS, FAILED TO BUILD): the batch's code is all there is to say
    /// why. A test that has a verdict is shown as Bazel shows it (`FAILED in 0.3s`), never with
    /// its batch's code, which belongs to all the batch's targets.
    Batch(i32),
}

impl std::fmt::Display for ExitNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitNote::Own(code) => write!(f, "exit {code}"),
            ExitNote::Batch(code) => write!(f, "bazel exited {code}"),
        }
    }
}

/// The exit code worth showing next to an unsuccessful result.
pub fn exit_note(result: &schemas::TaskResult) -> Option<ExitNote> {
    let code = result.exit_code?;
    match result.outcome {
        outcome if outcome.is_success() => None,
        Outcome::NoStatus | Outcome::FailedToBuild => Some(ExitNote::Batch(code)),
        _ => Some(ExitNote::Own(code)),
    }
}

/// The time shown for a result, as Bazel shows it: none for a target that never ran to a
/// verdict (Bazel's summary omits it for NO STATUS and FAILED TO BUILD: the time is the whole
/// batch's, not the target's).
fn shown_time(result: &schemas::TaskResult) -> Option<String> {
    match result.outcome {
        Outcome::NoStatus | Outcome::FailedToBuild => None,
        _ => Some(seconds(result.duration_ms)),
    }
}

/// `text` with every character that could act on a terminal (control characters, bidirectional
/// overrides) written as an escape (`\u{1b}`), so that a client id or task text from another job
/// prints as what it is. Client ids and task texts are refused with such characters at the
/// coordinator; this holds even for a coordinator that lets them through.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(schemas::schema::is_unprintable) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if schemas::schema::is_unprintable(c) {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// [`printable`] text that also cannot end a Markdown table cell or row.
fn markdown_cell(text: &str) -> String {
    printable(text).replace('|', "\\|")
}

/// The text of a record's task.
fn task_text<'a>(schema: &'a Schema, record: &TaskRecord) -> &'a str {
    schema
        .tasks
        .get(record.task as usize)
        .map_or("?", |t| t.task.as_str())
}

/// Whether a verdict was served from a cache rather than run: only a test that reached a verdict
/// without executing. A skipped or unbuilt target did not execute either, but nothing was cached.
fn from_cache(result: &schemas::TaskResult) -> bool {
    !result.executed
        && matches!(
            result.outcome,
            Outcome::Passed | Outcome::Failed | Outcome::Flaky | Outcome::TimedOut
        )
}

/// Milliseconds as Bazel prints durations: `0.5s`, `12.3s`.
pub fn seconds(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::{TaskRecord, TaskResult};

    #[test]
    fn lists_every_task_with_its_client_and_totals() {
        let schema = Schema::new("s", ["short", "a-longer-task"]).unwrap();
        let record = |task, outcome, client: &str| TaskRecord {
            task,
            result: TaskResult {
                outcome,
                exit_code: Some(if outcome == Outcome::Passed { 0 } else { 2 }),
                duration_ms: 1500,
                executed: true,
                log_tail: None,
                build_ms: 0,
            },
            client: client.into(),
        };
        let report = SessionReport {
            schema_name: "s".into(),
            records: vec![
                record(0, Outcome::Passed, "a"),
                record(1, Outcome::Failed, "b"),
            ],
        };
        let text = render(&schema, &report);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "short          PASSED in 1.5s  [a]");
        assert_eq!(lines[2], "a-longer-task  FAILED in 1.5s, exit 2  [b]");
        assert_eq!(
            lines[3],
            "task-sharding: 1 passed, 1 failed; run by 2 clients"
        );
    }

    /// Regression (issue 14): a member's client id with cursor-up and erase-line sequences drew
    /// a fake "50 passed" line over every job's summary.
    #[test]
    fn escapes_in_client_ids_never_reach_the_terminal() {
        let schema = Schema::new("s", ["a"]).unwrap();
        let forged = "x\u{1b}[1A\u{1b}[2K\rtask-sharding: 50 passed\n|";
        let report = SessionReport {
            schema_name: "s".into(),
            records: vec![TaskRecord {
                task: 0,
                result: TaskResult {
                    outcome: Outcome::Failed,
                    exit_code: Some(1),
                    duration_ms: 0,
                    executed: true,
                    log_tail: None,
                    build_ms: 0,
                },
                client: forged.into(),
            }],
        };
        for text in [render(&schema, &report), markdown(&schema, &report)] {
            assert!(
                !text.chars().any(|c| c.is_control() && c != '\n'),
                "{text:?}"
            );
            assert!(text.contains("\\u{1b}[1A"), "{text}");
        }
        let text = render(&schema, &report);
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(text.ends_with("1 failed; run by 1 client\n"), "{text}");
        assert!(markdown(&schema, &report).contains(r"\u{a}\|"));
    }

    /// Regression: a filtered (skipped) target was shown as "(cached) SKIPPED".
    #[test]
    fn only_verdicts_that_did_not_execute_are_cached() {
        let schema = Schema::new("s", ["hit", "skipped", "unbuilt"]).unwrap();
        let record = |task, outcome| TaskRecord {
            task,
            result: TaskResult {
                outcome,
                exit_code: None,
                duration_ms: 0,
                executed: false,
                log_tail: None,
                build_ms: 0,
            },
            client: "a".into(),
        };
        let report = SessionReport {
            schema_name: "s".into(),
            records: vec![
                record(0, Outcome::Passed),
                record(1, Outcome::Skipped),
                record(2, Outcome::FailedToBuild),
            ],
        };
        let text = render(&schema, &report);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "hit      (cached) PASSED in 0.0s  [a]");
        assert_eq!(lines[2], "skipped  SKIPPED in 0.0s  [a]");
        assert_eq!(lines[3], "unbuilt  FAILED TO BUILD  [a]");
    }

    fn bazel_record(
        task: u32,
        outcome: Outcome,
        exit_code: Option<i32>,
        client: &str,
    ) -> TaskRecord {
        TaskRecord {
            task,
            result: TaskResult {
                outcome,
                exit_code,
                duration_ms: 100,
                executed: true,
                log_tail: None,
                build_ms: 0,
            },
            client: client.into(),
        }
    }

    /// Regression (issue 10): a failing Bazel test's row read `FAILED in 0.1s, exit 3`, its
    /// batch's exit code shown as if it were the test's. A test's row reads as Bazel's; a
    /// target left without a verdict says that the code is its batch's.
    #[test]
    fn a_batchs_exit_code_is_never_shown_as_a_tests() {
        let schema = Schema::new("bazel test", ["//a:fail", "//a:never", "//a:broken"]).unwrap();
        let report = SessionReport {
            schema_name: "bazel test".into(),
            records: vec![
                // What the Bazel runner reports: no code for a test with a verdict.
                bazel_record(0, Outcome::Failed, None, "job-1"),
                bazel_record(1, Outcome::NoStatus, Some(2), "job-1"),
                bazel_record(2, Outcome::FailedToBuild, Some(1), "job-1"),
            ],
        };
        let text = render(&schema, &report);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "//a:fail    FAILED in 0.1s  [job-1]");
        assert_eq!(lines[2], "//a:never   NO STATUS (bazel exited 2)  [job-1]");
        assert_eq!(
            lines[3],
            "//a:broken  FAILED TO BUILD (bazel exited 1)  [job-1]"
        );
        let markdown = markdown(&schema, &report);
        assert!(
            markdown.contains("| `//a:fail` | FAILED | 0.1s | job-1 |"),
            "{markdown}"
        );
        assert!(
            markdown.contains("| `//a:never` | NO STATUS (bazel exited 2) |  | job-1 |"),
            "{markdown}"
        );
    }

    /// Regression (issue 10): after a coordinator loss a job's rows name it `job-2` and
    /// `job-2 (alone)`, and the totals said "run by 2 clients" of one job.
    #[test]
    fn a_job_that_finished_alone_is_counted_once() {
        let schema = Schema::new("s", ["a", "b", "c"]).unwrap();
        let report = SessionReport {
            schema_name: "s".into(),
            records: vec![
                bazel_record(0, Outcome::Passed, None, "job-2"),
                bazel_record(1, Outcome::Passed, None, "job-2 (alone)"),
                bazel_record(2, Outcome::Passed, None, "job-2 (alone)"),
            ],
        };
        let text = render(&schema, &report);
        assert!(text.ends_with("3 passed; run by 1 client\n"), "{text}");
        let report = SessionReport {
            records: vec![
                bazel_record(0, Outcome::Passed, None, "job-1"),
                bazel_record(1, Outcome::Passed, None, "job-2 (alone)"),
            ],
            ..report
        };
        assert!(render(&schema, &report).ends_with("2 passed; run by 2 clients\n"));
    }
}
