//! Per-target test results from Bazel's Build Event Protocol, as written by
//! `--build_event_json_file` (one JSON object per line). Pure: text in, results out.
//!
//! The events used: `testResult` (one per run/shard/attempt: whether it executed or came from a
//! cache, and how long it took), `testSummary` (the target's overall status), and
//! `targetCompleted` (whether the target built, for targets that never got a summary), and
//! `actionCompleted` (which target a completed command belonged to: what building costs).

use std::collections::HashMap;

use schemas::{Outcome, TaskResult};
use serde_json::Value;

/// What the build events say about one target.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct TargetEvents {
    /// `testSummary.overallStatus`.
    summary_status: Option<String>,
    /// `testSummary.totalRunDurationMillis`: the sum of every run's time, all shards and
    /// `--runs_per_test` runs together. Used only when no attempt says how long it took.
    summary_duration_ms: Option<u64>,
    /// Whether any attempt actually executed (rather than being a cache hit).
    executed: bool,
    /// The longest attempt (of any shard, run or retry, executed or fetched from a cache), in
    /// milliseconds: the time Bazel's own summary line shows (`PASSED in 1.2s`).
    longest_attempt_ms: Option<u64>,
    /// `Some(success)` from `targetCompleted`; `Some(false)` also when it was aborted.
    built: Option<bool>,
    /// The target's completion was aborted (e.g. the build stopped before it).
    aborted: bool,
}

/// The results a batch's build events give its targets.
#[derive(Debug, Default)]
pub struct BatchEvents {
    targets: HashMap<String, TargetEvents>,
    /// `buildFinished.exitCode.code`, when the build got that far.
    pub exit_code: Option<i32>,
    /// When each test attempt ran: start and end, in milliseconds since the epoch.
    attempts: Vec<(u64, u64)>,
    /// The actions that ran a command and completed (`actionCompleted` with a command line:
    /// compiling, linking, testing; reported for every action with
    /// `--build_event_publish_all_actions`), since [`Self::take_commands`] last took them.
    commands: Vec<CompletedCommand>,
}

/// An action that ran a command, as its `actionCompleted` event says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedCommand {
    /// The target it belongs to.
    pub label: String,
    /// It ran a test (`TestRunner`): its time is the test's, not building.
    pub test: bool,
    /// Its primary output's local path, if it has one (`file://` URI): when the file was last
    /// written is when the action finished (events reach the file in bunches, later).
    pub output: Option<std::path::PathBuf>,
}

impl BatchEvents {
    /// Reads the events; lines that are not JSON (a file cut short) are skipped.
    pub fn parse(jsonl: &str) -> BatchEvents {
        let mut events = BatchEvents::default();
        for line in jsonl.lines() {
            events.add_line(line);
        }
        events
    }

    /// Reads one more event (a line of the file as Bazel writes it); a line that is not JSON
    /// is skipped.
    pub fn add_line(&mut self, line: &str) {
        if let Ok(event) = serde_json::from_str::<Value>(line) {
            self.add(&event);
        }
    }

    fn add(&mut self, event: &Value) {
        let id = &event["id"];
        if let Some(label) = id["testResult"]["label"].as_str() {
            let result = &event["testResult"];
            let duration = result
                .get("testAttemptDurationMillis")
                .map(millis)
                .or_else(|| duration_ms(&result["testAttemptDuration"]));
            let cached = result["cachedLocally"].as_bool() == Some(true)
                || result["executionInfo"]["cachedRemotely"].as_bool() == Some(true)
                || result["executionInfo"]["strategy"].as_str() == Some("remote cache hit");
            // A cached attempt did not run now: its start and duration are those of the run
            // that cached it, and counting them as testing made a batch of cached tests look
            // busy for longer than it lasted (no idle time, so no overhead measured).
            let start = millis(&result["testAttemptStartMillisEpoch"]);
            if start > 0 && !cached {
                self.attempts.push((start, start + duration.unwrap_or(0)));
            }
            let target = self.target(label);
            target.longest_attempt_ms = target.longest_attempt_ms.max(duration);
            if !cached && !result.is_null() {
                target.executed = true;
            }
        } else if let Some(label) = id["testSummary"]["label"].as_str() {
            let summary = &event["testSummary"];
            let target = self.target(label);
            target.summary_status = summary["overallStatus"].as_str().map(str::to_string);
            target.summary_duration_ms = summary
                .get("totalRunDurationMillis")
                .map(millis)
                .or_else(|| duration_ms(&summary["totalRunDuration"]))
                .filter(|ms| *ms > 0);
        } else if let Some(label) = id["targetCompleted"]["label"].as_str() {
            let aborted = event.get("aborted").is_some();
            let success = event["completed"]["success"].as_bool() == Some(true);
            let target = self.target(label);
            target.built = Some(success && !aborted);
            target.aborted = aborted;
        } else if let Some(label) = id["actionCompleted"]["label"].as_str() {
            let action = &event["action"];
            if action.get("commandLine").is_some() {
                self.commands.push(CompletedCommand {
                    label: label.to_string(),
                    test: action["type"].as_str() == Some("TestRunner"),
                    output: action["primaryOutput"]["uri"]
                        .as_str()
                        .and_then(|uri| uri.strip_prefix("file://"))
                        .map(std::path::PathBuf::from),
                });
            }
        } else if id.get("buildFinished").is_some() {
            self.exit_code = event["finished"]["exitCode"]["code"]
                .as_i64()
                .map(|c| c as i32)
                .or(Some(0));
        }
    }

    /// The commands completed since the last call, in the order reported.
    pub fn take_commands(&mut self) -> Vec<CompletedCommand> {
        std::mem::take(&mut self.commands)
    }

    /// How long tests were running in this batch: the union of the attempts' time spans (tests
    /// may run one at a time or in parallel). `None` when the events carry no timing.
    pub fn testing_ms(&self) -> Option<u64> {
        let mut spans = self.attempts.clone();
        if spans.is_empty() {
            return None;
        }
        spans.sort_unstable();
        let (mut total, mut current) = (0, spans[0]);
        for &(start, end) in &spans[1..] {
            if start <= current.1 {
                current.1 = current.1.max(end);
            } else {
                total += current.1 - current.0;
                current = (start, end);
            }
        }
        Some(total + current.1 - current.0)
    }

    fn target(&mut self, label: &str) -> &mut TargetEvents {
        self.targets.entry(label.to_string()).or_default()
    }

    /// The result for `label` if it is already final while the build goes on: a test whose
    /// summary gave it a verdict of its own (passed, flaky, failed, timed out), or a build task
    /// (`build_task`) that was built. Whatever else a target may end with (never run, failed to
    /// build) needs the batch's exit code to tell, so it waits for the end (see [`Self::result`]).
    pub fn settled(&self, label: &str, build_task: bool) -> Option<TaskResult> {
        let target = self.targets.get(label)?;
        let settled = match (&target.summary_status, target.built) {
            (Some(status), _) => matches!(
                outcome_of(status),
                Outcome::Passed | Outcome::Flaky | Outcome::Failed | Outcome::TimedOut
            ),
            (None, Some(true)) => build_task,
            _ => false,
        };
        if !settled {
            return None;
        }
        let result = self.result(label)?;
        Some(if build_task {
            TaskResult {
                outcome: Outcome::Built,
                ..result
            }
        } else {
            result
        })
    }

    /// The result for `label`, or `None` when the events say nothing about it.
    pub fn result(&self, label: &str) -> Option<TaskResult> {
        let target = self.targets.get(label)?;
        let outcome = match (&target.summary_status, target.built) {
            (Some(status), _) => outcome_of(status),
            (None, Some(false)) if target.aborted => Outcome::NoStatus,
            (None, Some(false)) => Outcome::FailedToBuild,
            // Built, but no test ran: a filter (--test_tag_filters, size, ...) excluded it.
            (None, Some(true)) => Outcome::Skipped,
            (None, None) => return None,
        };
        // Bazel's summary line gives a sharded (or `--runs_per_test`, or retried) test the
        // longest of its attempts' times, not their sum: `TestSummaryPrinter.getTimeSummary`
        // prints the max of `TestSummary.getTestTimes()` (with "Stats over N runs" below it),
        // the same in Bazel 4.2.3 and 7. The shards run side by side, so the longest is also
        // about how long the test held up its batch.
        let duration_ms = target
            .longest_attempt_ms
            .or(target.summary_duration_ms)
            .unwrap_or(0);
        Some(TaskResult {
            outcome,
            exit_code: None,
            duration_ms,
            executed: target.executed,
            log_tail: None,
            build_ms: 0,
        })
    }
}

fn outcome_of(status: &str) -> Outcome {
    match status {
        "PASSED" => Outcome::Passed,
        "FLAKY" => Outcome::Flaky,
        "TIMEOUT" => Outcome::TimedOut,
        "FAILED" | "REMOTE_FAILURE" => Outcome::Failed,
        "FAILED_TO_BUILD" => Outcome::FailedToBuild,
        // NO_STATUS, INCOMPLETE, TOOL_HALTED_BEFORE_TESTING and anything newer.
        _ => Outcome::NoStatus,
    }
}

/// A protobuf `Duration` as JSON writes it (`"1.500s"`), in milliseconds: newer Bazels write
/// these beside (and may one day write them instead of) the `...Millis` fields.
fn duration_ms(value: &Value) -> Option<u64> {
    let seconds: f64 = value.as_str()?.strip_suffix('s')?.parse().ok()?;
    (seconds >= 0.0).then(|| (seconds * 1000.0).round() as u64)
}

/// BEP writes 64-bit integers as strings.
fn millis(value: &Value) -> u64 {
    value
        .as_u64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines shaped like Bazel 4.2.3's, trimmed to the fields that matter.
    const EVENTS: &str = r#"{"id":{"pattern":{"pattern":["//..."]}},"children":[]}
{"id":{"targetCompleted":{"label":"//a:pass","configuration":{"id":"x"}}},"completed":{"success":true}}
{"id":{"testResult":{"label":"//a:pass","run":1,"shard":1,"attempt":1,"configuration":{"id":"x"}}},"testResult":{"status":"PASSED","testAttemptDurationMillis":"412","executionInfo":{"strategy":"linux-sandbox"}}}
{"id":{"testSummary":{"label":"//a:pass","configuration":{"id":"x"}}},"testSummary":{"totalRunCount":1,"overallStatus":"PASSED","totalRunDurationMillis":"412"}}
{"id":{"targetCompleted":{"label":"//a:cached","configuration":{"id":"x"}}},"completed":{"success":true}}
{"id":{"testResult":{"label":"//a:cached","run":1,"shard":1,"attempt":1,"configuration":{"id":"x"}}},"testResult":{"status":"PASSED","testAttemptDurationMillis":"9","executionInfo":{"strategy":"remote cache hit","cachedRemotely":true}}}
{"id":{"testSummary":{"label":"//a:cached","configuration":{"id":"x"}}},"testSummary":{"overallStatus":"PASSED","totalNumCached":1}}
{"id":{"testResult":{"label":"//a:local","run":1,"shard":1,"attempt":1}},"testResult":{"status":"PASSED","cachedLocally":true,"testAttemptDurationMillis":"3"}}
{"id":{"testSummary":{"label":"//a:local"}},"testSummary":{"overallStatus":"PASSED"}}
{"id":{"testResult":{"label":"//a:flaky","run":1,"shard":1,"attempt":1}},"testResult":{"status":"FAILED","testAttemptDurationMillis":"100","executionInfo":{"strategy":"linux-sandbox"}}}
{"id":{"testResult":{"label":"//a:flaky","run":1,"shard":1,"attempt":2}},"testResult":{"status":"PASSED","testAttemptDurationMillis":"150","executionInfo":{"strategy":"linux-sandbox"}}}
{"id":{"testSummary":{"label":"//a:flaky"}},"testSummary":{"overallStatus":"FLAKY"}}
{"id":{"testSummary":{"label":"//a:fail"}},"testSummary":{"overallStatus":"FAILED"}}
{"id":{"testSummary":{"label":"//a:slow"}},"testSummary":{"overallStatus":"TIMEOUT"}}
{"id":{"targetCompleted":{"label":"//a:broken"}},"completed":{}}
{"id":{"targetCompleted":{"label":"//a:filtered"}},"completed":{"success":true}}
{"id":{"targetCompleted":{"label":"//a:never"}},"aborted":{"reason":"SKIPPED","description":""}}
{"id":{"buildFinished":{}},"finished":{"exitCode":{"name":"TESTS_FAILED","code":3}}}
{"id":{"buildMetrics":{}},"trunc"#;

    fn outcome(events: &BatchEvents, label: &str) -> Option<(Outcome, bool, u64)> {
        events
            .result(label)
            .map(|r| (r.outcome, r.executed, r.duration_ms))
    }

    #[test]
    fn outcomes_caching_and_durations_come_from_the_events() {
        let events = BatchEvents::parse(EVENTS);
        let cases = [
            ("//a:pass", Some((Outcome::Passed, true, 412))),
            ("//a:cached", Some((Outcome::Passed, false, 9))),
            ("//a:local", Some((Outcome::Passed, false, 3))),
            // Its longest attempt, as Bazel's summary shows it.
            ("//a:flaky", Some((Outcome::Flaky, true, 150))),
            ("//a:fail", Some((Outcome::Failed, false, 0))),
            ("//a:slow", Some((Outcome::TimedOut, false, 0))),
            ("//a:broken", Some((Outcome::FailedToBuild, false, 0))),
            ("//a:filtered", Some((Outcome::Skipped, false, 0))),
            ("//a:never", Some((Outcome::NoStatus, false, 0))),
            ("//a:unknown", None),
        ];
        for (label, want) in cases {
            assert_eq!(outcome(&events, label), want, "{label}");
        }
        assert_eq!(events.exit_code, Some(3));
    }

    /// Regression (issue 10): a sharded test's time was the sum of its shards (2.6s here),
    /// where Bazel 4.2.3's own summary of the same events reads
    /// `//:sharded  PASSED in 1.3s` / `Stats over 3 runs: max = 1.3s, min = 0.5s, ...`: the
    /// longest shard. The same for `--runs_per_test=3` (`PASSED in 0.4s`) and for a retried
    /// flaky test. The lines are Bazel 4.2.3's, trimmed.
    /// Issue 11: a verdict is streamed while the batch runs only when nothing that comes later
    /// (the batch's exit code) can change it.
    #[test]
    fn only_verdicts_the_exit_code_cannot_change_are_settled_before_the_end() {
        let events = BatchEvents::parse(EVENTS);
        let settled = |label, build_task| {
            events
                .settled(label, build_task)
                .map(|r| (r.outcome, r.executed))
        };
        assert_eq!(settled("//a:pass", false), Some((Outcome::Passed, true)));
        assert_eq!(settled("//a:cached", false), Some((Outcome::Passed, false)));
        assert_eq!(settled("//a:flaky", false), Some((Outcome::Flaky, true)));
        assert_eq!(
            settled("//a:fail", false).map(|s| s.0),
            Some(Outcome::Failed)
        );
        assert_eq!(
            settled("//a:slow", false).map(|s| s.0),
            Some(Outcome::TimedOut)
        );
        // Built and untested: filtered out, or never run after a failure elsewhere: the exit
        // code tells which, at the end.
        assert_eq!(settled("//a:filtered", false), None);
        assert_eq!(settled("//a:broken", false), None);
        assert_eq!(settled("//a:never", false), None);
        assert_eq!(settled("//a:unknown", false), None);
        // A build task that was built is done, whatever else fails.
        assert_eq!(
            settled("//a:filtered", true).map(|s| s.0),
            Some(Outcome::Built)
        );
        assert_eq!(settled("//a:broken", true), None);
        // Line by line, as the file grows: nothing before the summary.
        let mut growing = BatchEvents::default();
        let mut lines = EVENTS.lines();
        for line in lines.by_ref().take(3) {
            growing.add_line(line);
        }
        assert_eq!(growing.settled("//a:pass", false), None, "no summary yet");
        growing.add_line(lines.next().unwrap());
        assert_eq!(
            growing.settled("//a:pass", false).map(|r| r.outcome),
            Some(Outcome::Passed)
        );
    }

    #[test]
    fn a_sharded_test_takes_as_long_as_its_longest_shard_as_bazel_says() {
        let events = r#"{"id":{"targetCompleted":{"label":"//:sharded"}},"completed":{"success":true}}
{"id":{"testResult":{"label":"//:sharded","run":1,"shard":1,"attempt":1}},"testResult":{"testAttemptDurationMillis":"502","status":"PASSED","testAttemptStartMillisEpoch":"1796185314995","executionInfo":{"strategy":"linux-sandbox"}}}
{"id":{"testResult":{"label":"//:sharded","run":1,"shard":3,"attempt":1}},"testResult":{"testAttemptDurationMillis":"798","status":"PASSED","testAttemptStartMillisEpoch":"1796185314987","executionInfo":{"strategy":"linux-sandbox"}}}
{"id":{"testResult":{"label":"//:sharded","run":1,"shard":2,"attempt":1}},"testResult":{"testAttemptDurationMillis":"1316","status":"PASSED","testAttemptStartMillisEpoch":"1796185315721","executionInfo":{"strategy":"linux-sandbox"}}}
{"id":{"testSummary":{"label":"//:sharded"}},"testSummary":{"totalRunCount":3,"overallStatus":"PASSED","firstStartTimeMillis":"1796185314987","lastStopTimeMillis":"1796185317037","totalRunDurationMillis":"2616","runCount":1,"shardCount":3}}
{"id":{"testResult":{"label":"//:runs","run":3,"shard":1,"attempt":1}},"testResult":{"testAttemptDurationMillis":"437","status":"PASSED","testAttemptStartMillisEpoch":"1796185319503","executionInfo":{"strategy":"linux-sandbox"}}}
{"id":{"testResult":{"label":"//:runs","run":1,"shard":1,"attempt":1}},"testResult":{"testAttemptDurationMillis":"416","status":"PASSED","testAttemptStartMillisEpoch":"1796185319501","executionInfo":{"strategy":"linux-sandbox"}}}
{"id":{"testResult":{"label":"//:runs","run":2,"shard":1,"attempt":1}},"testResult":{"testAttemptDurationMillis":"422","status":"PASSED","testAttemptStartMillisEpoch":"1796185320107","executionInfo":{"strategy":"linux-sandbox"}}}
{"id":{"testSummary":{"label":"//:runs"}},"testSummary":{"totalRunCount":3,"overallStatus":"PASSED","totalRunDurationMillis":"1275","runCount":3}}"#;
        let events = BatchEvents::parse(events);
        assert_eq!(
            outcome(&events, "//:sharded"),
            Some((Outcome::Passed, true, 1316))
        );
        assert_eq!(
            outcome(&events, "//:runs"),
            Some((Outcome::Passed, true, 437))
        );
    }

    #[test]
    fn durations_written_as_protobuf_durations_are_read_too() {
        let events = BatchEvents::parse(
            r#"{"id":{"testResult":{"label":"//a","run":1,"shard":1,"attempt":1}},"testResult":{"status":"PASSED","testAttemptDuration":"1.250s"}}
{"id":{"testSummary":{"label":"//a"}},"testSummary":{"overallStatus":"PASSED","totalRunDuration":"1.250s"}}
{"id":{"testSummary":{"label":"//b"}},"testSummary":{"overallStatus":"PASSED","totalRunDuration":"0.400s"}}"#,
        );
        assert_eq!(outcome(&events, "//a"), Some((Outcome::Passed, true, 1250)));
        assert_eq!(outcome(&events, "//b"), Some((Outcome::Passed, false, 400)));
    }

    #[test]
    fn testing_time_is_the_union_of_the_attempts() {
        let attempt = |label: &str, start: u64, ms: u64| {
            format!(
                r#"{{"id":{{"testResult":{{"label":"{label}","run":1,"shard":1,"attempt":1}}}},"testResult":{{"status":"PASSED","testAttemptDurationMillis":"{ms}","testAttemptStartMillisEpoch":"{start}"}}}}"#
            )
        };
        // Two overlapping (in parallel), then one after a gap: 1000..1500 and 2000..2100.
        let events = [
            attempt("//a", 1000, 400),
            attempt("//b", 1100, 400),
            attempt("//c", 2000, 100),
        ];
        assert_eq!(
            BatchEvents::parse(&events.join("\n")).testing_ms(),
            Some(600)
        );
        assert_eq!(BatchEvents::parse(EVENTS).testing_ms(), None);
    }

    /// Issue 11: which target each completed command was, as real Bazels report them (their
    /// own event files, command lines cut short): 4.2.3 compiling `//core` and a package
    /// library as the dependencies of two tests, then the tests' own compiles and links in
    /// turns; 7.7.1 running sh_tests, whose one command each is the test.
    #[test]
    fn completed_commands_name_their_targets_in_order() {
        let mut bazel_4 = BatchEvents::parse(include_str!("testdata/actions-4.2.3.json"));
        let core = ["//core:core"; 4].map(str::to_string);
        let mut want: Vec<String> = core.to_vec();
        want.extend(
            [
                "//alpha:lib",
                "//core:core",
                "//alpha:lib",
                "//alpha:t00",
                "//alpha:t06",
                "//alpha:t00",
                "//alpha:t06",
                "//alpha:t00",
                "//alpha:t06",
            ]
            .map(str::to_string),
        );
        let commands = bazel_4.take_commands();
        let labels: Vec<&str> = commands.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(labels, want);
        assert!(bazel_4.take_commands().is_empty(), "taken once");
        // The tests' commands are the last two, and each names its output.
        let tests: Vec<bool> = commands.iter().map(|c| c.test).collect();
        assert_eq!(tests.iter().filter(|t| **t).count(), 2);
        assert!(tests[tests.len() - 2..].iter().all(|t| *t));
        assert!(commands[0]
            .output
            .as_ref()
            .is_some_and(|o| o.is_absolute() && o.ends_with("core/_objs/core/core_0.pic.o")));
        let mut bazel_7 = BatchEvents::parse(include_str!("testdata/actions-7.7.1.json"));
        let tests = ["lower", "broken", "concat", "length", "reverse", "upper"]
            .map(|t| format!("//strings:{t}_test"));
        let commands = bazel_7.take_commands();
        assert_eq!(
            commands.iter().map(|c| &c.label).collect::<Vec<_>>(),
            tests.iter().collect::<Vec<_>>()
        );
        assert!(commands.iter().all(|c| c.test && c.output.is_some()));
    }

    /// Regression: a batch of cached tests (Bazel's local action cache, or the remote cache)
    /// counted the cached attempts' times — of the run that cached them, minutes earlier — as
    /// this batch's testing, more than the batch's whole wall time. The batch seemed never
    /// idle, its invocation cost 0 ms, and every later batch of that job was sized for no
    /// overhead: one target per Bazel invocation.
    #[test]
    fn regression_cached_attempts_are_not_testing_time() {
        let attempt = |label: &str, start: u64, ms: u64, cache: &str| {
            format!(
                r#"{{"id":{{"testResult":{{"label":"{label}","run":1,"shard":1,"attempt":1}}}},"testResult":{{"status":"PASSED","testAttemptDurationMillis":"{ms}","testAttemptStartMillisEpoch":"{start}"{cache}}}}}"#
            )
        };
        let events = [
            attempt("//a", 1000, 400, r#","cachedLocally":true"#),
            attempt(
                "//b",
                1000,
                900,
                r#","executionInfo":{"strategy":"remote cache hit","cachedRemotely":true}"#,
            ),
        ];
        assert_eq!(BatchEvents::parse(&events.join("\n")).testing_ms(), None);
        let with_a_run = [events[0].clone(), attempt("//c", 5000, 250, "")];
        assert_eq!(
            BatchEvents::parse(&with_a_run.join("\n")).testing_ms(),
            Some(250)
        );
    }

    #[test]
    fn a_successful_build_has_exit_code_zero() {
        let events = BatchEvents::parse(
            r#"{"id":{"buildFinished":{}},"finished":{"exitCode":{"name":"SUCCESS"}}}"#,
        );
        assert_eq!(events.exit_code, Some(0));
        assert_eq!(BatchEvents::parse("").exit_code, None);
    }
}
