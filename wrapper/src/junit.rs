//! The whole session's results as JUnit XML, for CI systems that ingest it (GitLab
//! `artifacts:reports:junit`, Jenkins, CircleCI `store_test_results`, Buildkite Test Engine).
//!
//! Every job writes the same file: the results of every task of the session, not only its own,
//! so whichever job's artifact the CI system reads shows the whole run. One `testsuite` per
//! Bazel package (or, for tasks that are not Bazel labels, one named after the schema), one
//! `testcase` per task; each case names the job that produced its result in a `job` property,
//! each suite the jobs that ran its cases in `hostname`, and a failure's text is its log's tail.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};
use schemas::{Outcome, Schema, SessionReport};

/// Why a JUnit file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum JunitError {
    /// The XML could not be produced.
    #[error("cannot produce the JUnit report")]
    Serialize(#[from] quick_junit::SerializeError),
    /// The file could not be written.
    #[error("cannot write the JUnit report {path}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The package a Bazel label belongs to (`//pkg/sub:t` → `//pkg/sub`, `@r//p:t` → `@r//p`), or
/// `None` for a task that is not a label.
fn package_of(task: &str) -> Option<&str> {
    if !(task.starts_with("//") || task.starts_with('@')) {
        return None;
    }
    match task.rsplit_once(':') {
        Some((package, _)) => Some(package),
        // `//pkg/t` is short for `//pkg/t:t`.
        None => Some(task),
    }
}

/// The report of `session` (whose tasks are `schema`'s) as JUnit, under the name `name`.
pub fn report(name: &str, schema: &Schema, session: &SessionReport) -> Report {
    let mut suites: BTreeMap<String, (TestSuite, BTreeSet<&str>)> = BTreeMap::new();
    for record in &session.records {
        let text = schema
            .tasks
            .get(record.task as usize)
            .map_or_else(|| format!("task {}", record.task), |t| t.task.clone());
        let suite_name = package_of(&text).unwrap_or(&schema.name).to_string();
        // A task nobody ran (the session stopped at its first failure) names no job.
        let job = Some(record.client.as_str()).filter(|client| !client.is_empty());
        let status = match record.result.outcome {
            Outcome::Passed | Outcome::Flaky | Outcome::Built => TestCaseStatus::success(),
            Outcome::Skipped => TestCaseStatus::skipped(),
            outcome => {
                let kind = match outcome {
                    Outcome::Failed | Outcome::TimedOut => NonSuccessKind::Failure,
                    _ => NonSuccessKind::Error,
                };
                let mut status = TestCaseStatus::non_success(kind);
                // Worded as the terminal summary words it: `FAILED [job-2]` for a Bazel test,
                // `NO STATUS (bazel exited 2) [job-2]` for a target whose batch's code is all
                // there is to say.
                let by = job.map(|job| format!(" [{job}]")).unwrap_or_default();
                let message = match crate::summary::exit_note(&record.result) {
                    Some(note) => format!("{} ({note}){by}", outcome.label()),
                    None => format!("{}{by}", outcome.label()),
                };
                status.set_message(message).set_type(outcome.label());
                // The failure's text is the end of its log, from whichever job ran it.
                if let Some(log) = &record.result.log_tail {
                    status.set_description(log.as_str());
                }
                status
            }
        };
        let mut case = TestCase::new(text.clone(), status);
        case.set_classname(suite_name.clone())
            .set_time(Duration::from_millis(record.result.duration_ms));
        if let Some(job) = job {
            case.add_property(Property::new("job", job));
        }
        case.add_property(Property::new(
            "executed",
            if record.result.executed {
                "true"
            } else {
                "false (cached)"
            },
        ));
        if record.result.outcome == Outcome::Flaky {
            case.add_property(Property::new("flaky", "true"));
        }
        let (suite, jobs) = suites
            .entry(suite_name.clone())
            .or_insert_with(|| (TestSuite::new(suite_name), BTreeSet::new()));
        suite.add_test_case(case);
        // A job that finished alone after losing the coordinator is still one job.
        if let Some(job) = job {
            jobs.insert(crate::driver::job_of(job));
        }
    }
    let mut report = Report::new(name.to_string());
    report.add_test_suites(suites.into_values().map(|(mut suite, jobs)| {
        // JUnit's `hostname` is where a suite ran: here the jobs that ran its cases.
        let jobs: Vec<&str> = jobs.into_iter().collect();
        suite
            .extra
            .insert("hostname".into(), jobs.join(",").as_str().into());
        suite
    }));
    report
}

/// Writes the report of `session` to `path` (the whole file, replaced).
pub fn write(
    path: &Path,
    name: &str,
    schema: &Schema,
    session: &SessionReport,
) -> Result<(), JunitError> {
    let xml = report(name, schema, session).to_string()?;
    std::fs::write(path, xml).map_err(|source| JunitError::Write {
        path: path.display().to_string(),
        source,
    })
}

/// Writes the report to `path` when one is given (`TASK_SHARDING_JUNIT`); a failure to write
/// is a warning, never a change of verdict.
pub fn write_if_asked(path: Option<&Path>, schema: &Schema, session: &SessionReport) {
    let Some(path) = path else { return };
    if let Err(e) = write(path, &schema.name, schema, session) {
        let causes: Vec<String> =
            std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source())
                .map(ToString::to_string)
                .collect();
        eprintln!("task-sharding: warning: {}", causes.join(": "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::{TaskRecord, TaskResult};

    fn record(task: u32, outcome: Outcome, client: &str) -> TaskRecord {
        TaskRecord {
            task,
            result: TaskResult {
                outcome,
                exit_code: Some(if outcome == Outcome::Passed { 0 } else { 1 }),
                duration_ms: 1500,
                executed: true,
                log_tail: None,
                build_ms: 0,
            },
            client: client.to_string(),
        }
    }

    #[test]
    fn every_task_once_grouped_by_package_with_its_outcome_and_job() {
        let schema = Schema::new(
            "bazel test //...",
            ["//a:one", "//a:two", "//b/c:three", "//b/c:four", "@r//d"],
        )
        .unwrap();
        let session = SessionReport {
            schema_name: schema.name.clone(),
            records: vec![
                record(0, Outcome::Passed, "job-1"),
                TaskRecord {
                    result: TaskResult {
                        log_tail: Some("assertion failed: 1 == 2".into()),
                        ..record(1, Outcome::Failed, "job-2").result
                    },
                    ..record(1, Outcome::Failed, "job-2")
                },
                record(2, Outcome::Skipped, "job-1"),
                record(3, Outcome::FailedToBuild, "job-3"),
                record(4, Outcome::Flaky, "job-2"),
            ],
        };
        let xml = report("run", &schema, &session).to_string().unwrap();
        // It reads back as JUnit, with the counts CI systems show.
        let parsed = Report::deserialize_from_str(&xml).unwrap();
        assert_eq!(
            (parsed.tests, parsed.failures, parsed.errors, parsed.skipped),
            (5, 1, 1, 1)
        );
        let names: Vec<&str> = parsed.test_suites.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["//a", "//b/c", "@r//d"]);
        let cases: Vec<(&str, &TestCaseStatus, &str)> = parsed
            .test_suites
            .iter()
            .flat_map(|s| &s.test_cases)
            .map(|c| {
                let job = c.properties.iter().find(|p| p.name.as_str() == "job");
                (c.name.as_str(), &c.status, job.unwrap().value.as_str())
            })
            .collect();
        assert_eq!(cases.len(), 5, "each task once");
        assert!(matches!(
            cases[1],
            (
                "//a:two",
                TestCaseStatus::NonSuccess {
                    kind: NonSuccessKind::Failure,
                    ..
                },
                "job-2"
            )
        ));
        assert!(matches!(
            cases[3],
            (
                "//b/c:four",
                TestCaseStatus::NonSuccess {
                    kind: NonSuccessKind::Error,
                    ..
                },
                "job-3"
            )
        ));
        match cases[1].1 {
            TestCaseStatus::NonSuccess { description, .. } => assert_eq!(
                description.as_ref().map(|d| d.as_str()),
                Some("assertion failed: 1 == 2")
            ),
            other => panic!("{other:?}"),
        }
        let hosts: Vec<&str> = parsed
            .test_suites
            .iter()
            .map(|s| s.extra["hostname"].as_str())
            .collect();
        assert_eq!(hosts, ["job-1,job-2", "job-1,job-3", "job-2"]);
        assert!(matches!(cases[2].1, TestCaseStatus::Skipped { .. }));
        assert!(matches!(cases[4].1, TestCaseStatus::Success { .. }));
    }

    /// Regression (issue 10): the suite of a job that finished alone after losing the
    /// coordinator named it twice (`job-1,job-1 (alone)`), and a target's message gave its
    /// batch's exit code as its own.
    #[test]
    fn a_job_that_finished_alone_is_one_host_and_a_batch_code_is_the_batchs() {
        let schema = Schema::new("bazel test", ["//a:one", "//a:two"]).unwrap();
        let never = TaskRecord {
            result: TaskResult {
                exit_code: Some(2),
                ..record(1, Outcome::NoStatus, "job-1 (alone)").result
            },
            ..record(1, Outcome::NoStatus, "job-1 (alone)")
        };
        let session = SessionReport {
            schema_name: schema.name.clone(),
            records: vec![record(0, Outcome::Passed, "job-1"), never],
        };
        let parsed =
            Report::deserialize_from_str(&report("r", &schema, &session).to_string().unwrap())
                .unwrap();
        assert_eq!(parsed.test_suites[0].extra["hostname"].as_str(), "job-1");
        match &parsed.test_suites[0].test_cases[1].status {
            TestCaseStatus::NonSuccess { message, .. } => assert_eq!(
                message.as_ref().map(|m| m.as_str()),
                Some("NO STATUS (bazel exited 2) [job-1 (alone)]")
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tasks_that_are_not_labels_go_under_the_schema_name() {
        let schema = Schema::new("sleep", ["sleep 1", "sleep 2"]).unwrap();
        let session = SessionReport {
            schema_name: "sleep".into(),
            records: vec![
                record(0, Outcome::Passed, "a"),
                record(1, Outcome::TimedOut, "b"),
            ],
        };
        let parsed =
            Report::deserialize_from_str(&report("r", &schema, &session).to_string().unwrap())
                .unwrap();
        assert_eq!(parsed.test_suites.len(), 1);
        assert_eq!(parsed.test_suites[0].name.as_str(), "sleep");
        assert_eq!(parsed.failures, 1);
    }

    /// Regression: a session that stopped at its first failure records the tasks nobody ran
    /// with no job; their JUnit cases said `NO STATUS []`, carried an empty `job` property and
    /// put an empty name in their suite's `hostname`.
    #[test]
    fn regression_a_task_nobody_ran_names_no_job() {
        let schema = Schema::new("bazel test //...", ["//a:one", "//a:two"]).unwrap();
        let unrun = TaskRecord {
            result: TaskResult {
                exit_code: None,
                executed: false,
                duration_ms: 0,
                ..record(1, Outcome::NoStatus, "").result
            },
            ..record(1, Outcome::NoStatus, "")
        };
        let session = SessionReport {
            schema_name: schema.name.clone(),
            records: vec![record(0, Outcome::Failed, "job-1"), unrun],
        };
        let xml = report("run", &schema, &session).to_string().unwrap();
        let parsed = Report::deserialize_from_str(&xml).unwrap();
        let suite = &parsed.test_suites[0];
        assert_eq!(
            suite.extra.get("hostname").map(|h| h.as_str()),
            Some("job-1")
        );
        let two = &suite.test_cases[1];
        assert!(two.properties.iter().all(|p| p.name.as_str() != "job"));
        match &two.status {
            TestCaseStatus::NonSuccess { message, .. } => {
                assert_eq!(message.as_ref().map(|m| m.as_str()), Some("NO STATUS"));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            xml.contains("[job-1]"),
            "the job that ran one is still named: {xml}"
        );
    }
}
