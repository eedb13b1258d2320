//! The plan comes from Bazel: the user's exact command line, run once with `--nobuild` and a
//! build event file, says which targets `bazel test` would build and test (or `bazel build`
//! would build). Bazel expands the
//! patterns itself (negative patterns, test suites and their manual tests, `--target_pattern_file`,
//! `--deleted_packages`, options from every bazelrc and `--config`), for the user's Bazel
//! version; its analysis stays cached for the first batch. A command line Bazel rejects is left
//! for Bazel to report, with its own error and exit code.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::WRAPPED_MARKER;

/// What `bazel test --nobuild` (or `bazel build --nobuild`) said it would do.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The test rules it would run, in label order (test suites expanded by Bazel); none for
    /// `bazel build`.
    pub tests: Vec<String>,
    /// The other rules it would build, in label order: for `bazel test` none under
    /// `--build_tests_only`; for `bazel build` every rule, test rules included (only those
    /// under `--build_tests_only`).
    pub builds: Vec<String>,
    /// Each test's weight, from its `size` (small 1, medium 2, large 4, enormous 8): the prior
    /// that orders a cold queue, heaviest first, before any timing history exists.
    pub weights: std::collections::BTreeMap<String, u32>,
    /// Errors Bazel printed while loading or analysing, with `-k` (without `-k` it stops, and
    /// the plan is empty): the session cannot pass, as the plain run would not.
    pub errors: Vec<String>,
}

/// Runs the planning invocation; `Err` carries the reason the plan could not be made (the
/// caller lets Bazel report it by running the original command).
pub async fn plan(bazel: &Path, args: &[String], command_at: usize) -> Result<Plan, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("no directory for the plan: {e}"))?;
    let events = dir.path().join("plan.json");
    let argv = planning_command_line(args, command_at, &events);
    let output = tokio::process::Command::new(bazel)
        .args(&argv)
        .env(WRAPPED_MARKER, "1")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", bazel.display()))?;
    // The user's own event file, when given later on the command line, is the one Bazel wrote.
    let events = user_events_file(&argv).unwrap_or(events);
    let text = std::fs::read_to_string(&events).unwrap_or_default();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let command = &args[command_at];
    let plan = parse(&text, &stderr, command == "test");
    if plan.tests.is_empty() && plan.builds.is_empty() {
        return Err(format!(
            "`bazel {command} --nobuild` found no targets (exit {})",
            output.status.code().unwrap_or(-1)
        ));
    }
    Ok(plan)
}

/// The user's argv with `--nobuild` and our event file right after the command, so that every
/// option and pattern stays where the user put it.
pub fn planning_command_line(args: &[String], command_at: usize, events: &Path) -> Vec<String> {
    let mut argv = args[..=command_at].to_vec();
    argv.push("--nobuild".into());
    argv.push(format!("--build_event_json_file={}", events.display()));
    argv.extend(args[command_at + 1..].iter().cloned());
    argv
}

/// The last `--build_event_json_file` before `--`, if there are several.
pub fn user_events_file(argv: &[String]) -> Option<PathBuf> {
    argv.iter()
        .take_while(|a| *a != "--")
        .filter_map(|a| a.strip_prefix("--build_event_json_file="))
        .last()
        .map(PathBuf::from)
}

/// The plan in a `--nobuild` run's build events and its stderr; `testing` for `bazel test`
/// (whose test rules are run), not for `bazel build` (whose test rules are only built).
pub fn parse(events: &str, stderr: &str, testing: bool) -> Plan {
    let mut plan = Plan::default();
    let mut build_tests_only = false;
    for line in events.lines() {
        let Ok(event) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let id = &event["id"];
        if id.get("optionsParsed").is_some() {
            build_tests_only = event["optionsParsed"]["cmdLine"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .rfind(|o| o.ends_with("build_tests_only"))
                == Some("--build_tests_only");
        }
        let Some(label) = id["targetConfigured"]["label"].as_str() else {
            continue;
        };
        let kind = event["configured"]["targetKind"].as_str().unwrap_or("");
        let test_rule = kind.ends_with("_test rule");
        if test_rule && testing {
            plan.tests.push(label.to_string());
            if let Some(weight) = size_weight(event["configured"]["testSize"].as_str()) {
                plan.weights.insert(label.to_string(), weight);
            }
        } else if kind.ends_with(" rule")
            && !kind.starts_with("test_suite")
            && (test_rule || !build_tests_only)
        {
            plan.builds.push(label.to_string());
        }
    }
    for list in [&mut plan.tests, &mut plan.builds] {
        list.sort();
        list.dedup();
    }
    plan.errors = stderr
        .lines()
        .filter(|l| l.starts_with("ERROR: "))
        // What `--nobuild` itself says, not an error of the user's.
        .filter(|l| !l.contains("Unable to run tests"))
        .map(str::to_string)
        .collect();
    plan
}

/// A test size's weight: roughly the square root of the ratio of its default timeouts (60 s,
/// 300 s, 900 s, 3600 s) — larger tests do take longer, but far less than their timeouts say.
fn size_weight(size: Option<&str>) -> Option<u32> {
    match size? {
        "SMALL" => Some(1),
        "MEDIUM" => Some(2),
        "LARGE" => Some(4),
        "ENORMOUS" => Some(8),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_sizes_become_weights() {
        let events = concat!(
            r#"{"id":{"targetConfigured":{"label":"//a:small"}},"configured":{"targetKind":"sh_test rule","testSize":"SMALL"}}"#,
            "\n",
            r#"{"id":{"targetConfigured":{"label":"//a:large"}},"configured":{"targetKind":"sh_test rule","testSize":"LARGE"}}"#,
            "\n",
            r#"{"id":{"targetConfigured":{"label":"//a:lib"}},"configured":{"targetKind":"cc_library rule"}}"#,
        );
        let plan = parse(events, "", true);
        assert_eq!(plan.weights.get("//a:small"), Some(&1));
        assert_eq!(plan.weights.get("//a:large"), Some(&4));
        assert_eq!(plan.weights.get("//a:lib"), None);
    }

    #[test]
    fn tests_and_other_rules_come_from_the_configured_targets() {
        let events = r#"{"id":{"optionsParsed":{}},"optionsParsed":{"cmdLine":["--nobuild"]}}
{"id":{"targetConfigured":{"label":"//a:t"}},"configured":{"targetKind":"sh_test rule","testSize":"SMALL"}}
{"id":{"targetConfigured":{"label":"//a:gen"}},"configured":{"targetKind":"genrule rule"}}
{"id":{"targetConfigured":{"label":"//a:suite"}},"configured":{"targetKind":"test_suite rule"}}
{"id":{"targetConfigured":{"label":"//a:f.txt"}},"configured":{"targetKind":"source file"}}
{"id":{"targetConfigured":{"label":"//a:t"}},"configured":{"targetKind":"sh_test rule"}}"#;
        let plan = parse(
            events,
            "INFO: x\nERROR: /w/b/BUILD:1:1: syntax error\n\
             ERROR: Couldn't start the build. Unable to run tests\n",
            true,
        );
        assert_eq!(plan.tests, ["//a:t"]);
        assert_eq!(plan.builds, ["//a:gen"]);
        assert_eq!(plan.errors, ["ERROR: /w/b/BUILD:1:1: syntax error"]);
        let only_tests = events.replace(
            r#""cmdLine":["--nobuild"]"#,
            r#""cmdLine":["--nobuild_tests_only","--build_tests_only"]"#,
        );
        assert!(parse(&only_tests, "", true).builds.is_empty());
        // `bazel build` builds every rule, test rules too, and runs nothing.
        let build = parse(events, "", false);
        assert!(build.tests.is_empty());
        assert_eq!(build.builds, ["//a:gen", "//a:t"]);
        assert_eq!(parse(&only_tests, "", false).builds, ["//a:t"]);
    }

    #[test]
    fn the_planning_run_keeps_the_users_arguments_in_place() {
        let args: Vec<String> = ["--bazelrc=x", "test", "//a/...", "-//a/b/..."]
            .map(String::from)
            .to_vec();
        assert_eq!(
            planning_command_line(&args, 1, Path::new("/e.json")),
            [
                "--bazelrc=x",
                "test",
                "--nobuild",
                "--build_event_json_file=/e.json",
                "//a/...",
                "-//a/b/..."
            ]
        );
        let with_own: Vec<String> = [
            "test",
            "--build_event_json_file=/e.json",
            "--build_event_json_file=mine.json",
            "--",
            "--build_event_json_file=x",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            user_events_file(&with_own),
            Some(PathBuf::from("mine.json"))
        );
    }
}
