//! The logs of a session's failing tasks, shown under the summary in every job: the tail each
//! failing task's job sent with its result (see [`schemas::log_tail`]), so that a developer sees
//! why the run failed in whichever job's log they open.

use std::fmt::Write as _;

use schemas::{Schema, SessionReport, TaskRecord};

use crate::summary::printable;

/// The failing tasks that carry a log, in task order.
fn with_logs(report: &SessionReport) -> impl Iterator<Item = (&TaskRecord, &str)> {
    report.records.iter().filter_map(|record| {
        let log = record.result.log_tail.as_deref()?;
        (!record.result.outcome.is_success()).then_some((record, log))
    })
}

/// Each failing task's log tail for the terminal: a heading naming the task and the job that ran
/// it, then the lines, indented. Every line goes through [`printable`]: the text comes from
/// another job (and a test's output is full of colour codes), and must not act on this terminal.
pub fn text(schema: &Schema, report: &SessionReport) -> String {
    let mut out = String::new();
    for (record, log) in with_logs(report) {
        let _ = writeln!(
            out,
            "task-sharding: {} {} [{}]; the end of its log ({} lines):",
            printable(task_text(schema, record)),
            record.result.outcome.label(),
            printable(&record.client),
            log.lines().count()
        );
        for line in log.lines() {
            let _ = writeln!(out, "    {}", printable(line));
        }
    }
    out
}

/// The same for GitHub's step summary: one collapsed `<details>` section per failing task.
pub fn markdown(schema: &Schema, report: &SessionReport) -> String {
    let mut out = String::new();
    for (record, log) in with_logs(report) {
        let name = html_escape(&printable(task_text(schema, record)));
        let client = html_escape(&printable(&record.client));
        let label = record.result.outcome.label();
        let body: String = log.lines().map(|l| printable(l) + "\n").collect();
        // A fence longer than any run of backticks in the log, so that none can close it.
        let fence = "`".repeat(longest_backtick_run(&body).max(2) + 1);
        let _ = write!(
            out,
            "\n<details><summary><code>{name}</code> {label} on {client}: the end of its log</summary>\n\n{fence}text\n{body}{fence}\n\n</details>\n"
        );
    }
    out
}

fn task_text<'a>(schema: &'a Schema, record: &TaskRecord) -> &'a str {
    schema
        .tasks
        .get(record.task as usize)
        .map_or("?", |t| t.task.as_str())
}

fn longest_backtick_run(text: &str) -> usize {
    text.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}

/// `text` safe inside HTML (the `<summary>` line is HTML, not Markdown).
pub(crate) fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::{Outcome, TaskResult};

    fn report(log: &str) -> (Schema, SessionReport) {
        let schema = Schema::new("s", ["//a:ok", "//a:<bad>"]).unwrap();
        let record = |task, outcome, log_tail: Option<&str>| TaskRecord {
            task,
            result: TaskResult {
                outcome,
                exit_code: None,
                duration_ms: 0,
                executed: true,
                log_tail: log_tail.map(str::to_string),
                build_ms: 0,
            },
            client: "job-2".into(),
        };
        let report = SessionReport {
            schema_name: "s".into(),
            records: vec![
                record(0, Outcome::Passed, Some("ignored")),
                record(1, Outcome::Failed, Some(log)),
            ],
        };
        (schema, report)
    }

    #[test]
    fn every_failing_log_is_shown_with_its_task_and_job() {
        let (schema, report) = report("expected 1\n\u{1b}[31mgot 2\u{1b}[0m");
        let text = text(&schema, &report);
        assert_eq!(
            text,
            "task-sharding: //a:<bad> FAILED [job-2]; the end of its log (2 lines):\n    \
             expected 1\n    \\u{1b}[31mgot 2\\u{1b}[0m\n"
        );
    }

    #[test]
    fn the_step_summary_folds_each_log_and_no_log_can_break_out() {
        let (schema, report) = report("```\n</details><script>");
        let md = markdown(&schema, &report);
        assert!(
            md.contains("<code>//a:&lt;bad&gt;</code> FAILED on job-2"),
            "{md}"
        );
        assert!(
            md.contains("````text\n```\n</details><script>\n````\n"),
            "{md}"
        );
        assert_eq!(md.matches("<details>").count(), 1);
        assert!(!md.contains("ignored"));
    }
}
