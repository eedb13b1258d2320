//! The plan comes from Bazel: the user's exact command line, run once with `--nobuild` and a
//! build event file, says which targets `bazel test` would build and test (or `bazel build`
//! would build). Bazel expands the patterns itself (negative patterns, test suites and their
//! manual tests, `--target_pattern_file`, `--deleted_packages`, options from every bazelrc and
//! `--config`), for the user's Bazel version; its analysis stays cached for the first batch. A command line Bazel rejects is left
//! for Bazel to report, with its own error and exit code.
//!
//! The same events carry Bazel's own parse of the command line, so the wrapper needs no table of
//! which options take a value: `optionsParsed.explicitCmdLine` lists the options the user gave
//! (not those from a bazelrc), each as `--name=value` (`-c opt` is `--compilation_mode=opt`),
//! and the `pattern` event lists the target patterns (from before and after `--`, or read from
//! `--target_pattern_file`). Both are the same in Bazel 4.2.3 and 7.7.1 (see `testdata/`). The
//! `structuredCommandLine` labelled `original` splits the command line too, but its options mix
//! the client's own (`--rc_source`, `--default_override`, `--client_env`) with the user's and
//! keep separate values (`-c opt`), so it is not used.

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
    /// The C++ rules among them (`cc_library`, `cc_test`, `cc_binary`): compiling their own
    /// sources needs only their dependencies' headers (their `compilation_outputs` output
    /// group), linking needs the dependencies built.
    pub compiled: std::collections::BTreeSet<String>,
    /// Errors Bazel printed while loading or analysing, with `-k` (without `-k` it stops, and
    /// the plan is empty): the session cannot pass, as the plain run would not.
    pub errors: Vec<String>,
    /// The user's command options as Bazel parsed them, in order, each `--name=value` or a
    /// bare boolean (no separate values), without bazelrc options (each batch reads the
    /// bazelrc itself) and without the planning run's own `--nobuild` and event file.
    pub options: Vec<String>,
    /// The target patterns Bazel expanded, in order, negative ones starting with `-`.
    pub patterns: Vec<String>,
    /// `--notest_keep_going` is in effect (from the command line or a bazelrc) for a
    /// `bazel test`: the first failing test stops the whole session.
    pub fail_fast: bool,
    /// How many tests a batch runs at once: `--local_test_jobs`, else
    /// `--local_cpu_resources`, else this machine's CPUs (Bazel's own defaults). `None` before
    /// the options are read.
    pub parallelism: Option<u32>,
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
    let written = user_events_file(&argv).unwrap_or_else(|| events.clone());
    let text = std::fs::read_to_string(&written).unwrap_or_default();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let command = &args[command_at];
    let failed = |why: String| {
        format!(
            "`bazel {command} --nobuild` {why} (exit {})",
            output.status.code().unwrap_or(-1)
        )
    };
    let plan = parse(&text, &stderr, command, &planning_options(&events)).map_err(failed)?;
    if plan.tests.is_empty() && plan.builds.is_empty() {
        return Err(failed("found no targets".into()));
    }
    Ok(plan)
}

/// What the planning run adds right after the command: `--nobuild` and its event file.
fn planning_options(events: &Path) -> [String; 2] {
    [
        "--nobuild".into(),
        format!("--build_event_json_file={}", events.display()),
    ]
}

/// The user's argv with `--nobuild` and our event file right after the command, so that every
/// option and pattern stays where the user put it.
pub fn planning_command_line(args: &[String], command_at: usize, events: &Path) -> Vec<String> {
    let mut argv = args[..=command_at].to_vec();
    argv.extend(planning_options(events));
    argv.extend(args[command_at + 1..].iter().cloned());
    argv
}

/// The last `--build_event_json_file` before `--`, if there are several. Read from the raw
/// argv for the planning run, before Bazel's parse exists: the option always takes a value, so
/// its separate form (`--build_event_json_file F`) is as sure as `--build_event_json_file=F`.
pub fn user_events_file(argv: &[String]) -> Option<PathBuf> {
    let mut last = None;
    let mut args = argv.iter().take_while(|a| *a != "--");
    while let Some(arg) = args.next() {
        if let Some(file) = arg.strip_prefix("--build_event_json_file=") {
            last = Some(file);
        } else if arg == "--build_event_json_file" {
            last = args.next().map(String::as_str);
        }
    }
    last.map(PathBuf::from)
}

/// The plan in a `--nobuild` run's build events and its stderr, for `command` (`test`, whose
/// test rules are run, or `build`, whose test rules are only built), run with `planning` (the
/// options [`planning_command_line`] added). `Err` when the events do not hold Bazel's parse
/// of the command line as the wrapper ran it.
pub fn parse(
    events: &str,
    stderr: &str,
    command: &str,
    planning: &[String],
) -> Result<Plan, String> {
    let testing = command == "test";
    let mut plan = Plan::default();
    let mut build_tests_only = false;
    let mut started = None;
    let mut explicit = None;
    for line in events.lines() {
        let Ok(event) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let id = &event["id"];
        if id.get("started").is_some() {
            started = event["started"]["command"].as_str().map(str::to_string);
        }
        if id.get("optionsParsed").is_some() {
            let strings = |key: &str| -> Vec<String> {
                event["optionsParsed"][key]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            };
            // The options in effect, bazelrc's included.
            let effective = strings("cmdLine");
            build_tests_only = boolean_option(&effective, "build_tests_only").unwrap_or(false);
            plan.fail_fast =
                testing && boolean_option(&effective, "test_keep_going") == Some(false);
            plan.parallelism = Some(parallelism(&effective, host_cpus()));
            explicit = Some(strings("explicitCmdLine"));
        }
        if let Some(patterns) = id["pattern"]["pattern"].as_array() {
            plan.patterns = patterns
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect();
        }
        let Some(label) = id["targetConfigured"]["label"].as_str() else {
            continue;
        };
        let kind = event["configured"]["targetKind"].as_str().unwrap_or("");
        let test_rule = kind.ends_with("_test rule");
        if kind.starts_with("cc_") && kind.ends_with(" rule") {
            plan.compiled.insert(label.to_string());
        }
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
    match started.as_deref() {
        None => return Err("wrote no build events".into()),
        Some(ran) if ran != command => return Err(format!("ran the command `{ran}`")),
        Some(_) => {}
    }
    let explicit = explicit.ok_or("reported no options")?;
    plan.options = explicit
        .strip_prefix(planning)
        .ok_or_else(|| format!("did not start its options with {planning:?}: {explicit:?}"))?
        .to_vec();
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
    Ok(plan)
}

/// The last value given to the boolean option `name` in `options` (`--name`, `--noname`,
/// `--name=false`, ...), if any.
fn boolean_option(options: &[String], name: &str) -> Option<bool> {
    options.iter().rev().find_map(|option| {
        let option = option.strip_prefix("--")?;
        if option == name {
            return Some(true);
        }
        if option.strip_prefix("no") == Some(name) {
            return Some(false);
        }
        match option.strip_prefix(name)?.strip_prefix('=')? {
            "true" | "1" | "yes" => Some(true),
            "false" | "0" | "no" => Some(false),
            _ => None,
        }
    })
}

/// How many tests Bazel runs at once on a machine with `cpus` CPUs under `options`: a
/// positive `--local_test_jobs`, else `--local_cpu_resources` (each test asks for one CPU by
/// default), else `cpus`. Values may be Bazel's keywords with an operation (`HOST_CPUS*.5`);
/// `auto`, `0` or what cannot be read fall through to the next.
fn parallelism(options: &[String], cpus: u32) -> u32 {
    let value = |name: &str| {
        let prefix = format!("--{name}=");
        options
            .iter()
            .rev()
            .find_map(|o| o.strip_prefix(&prefix))
            .and_then(|v| resource_value(v, cpus))
            .filter(|&n| n > 0)
    };
    value("local_test_jobs")
        .or_else(|| value("local_cpu_resources"))
        .unwrap_or(cpus)
        .max(1)
}

/// A resource value as Bazel writes it: an integer, or `HOST_CPUS` (`auto` for CPUs) with an
/// optional `*factor` or `-amount`.
fn resource_value(value: &str, cpus: u32) -> Option<u32> {
    if let Ok(n) = value.parse::<u32>() {
        return Some(n);
    }
    let (base, rest) = match value.split_at(value.find(['*', '-']).unwrap_or(value.len())) {
        ("HOST_CPUS" | "auto", rest) => (f64::from(cpus), rest),
        _ => return None,
    };
    let result = if let Some(factor) = rest.strip_prefix('*') {
        base * factor.parse::<f64>().ok()?
    } else if let Some(amount) = rest.strip_prefix('-') {
        base - amount.parse::<f64>().ok()?
    } else {
        base
    };
    Some(result.max(1.0) as u32)
}

/// This machine's CPUs, as Bazel counts them (1 if unknown).
fn host_cpus() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
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

    /// Real `--nobuild` events (trimmed to the events the plan reads) of
    /// `bazel test --nobuild --build_event_json_file=/tmp/wtc/bN.json -c opt --config x
    /// --test_env A=1 [--remote_download_regex '.*\.log' -k] --test_output errors //math/...
    /// //strings:upper_test -- //data/... -//data:csv_test`, in a copy of `e2e/workspace` whose
    /// `.bazelrc` adds `test --test_env=FROM_RC=1` and `build:x --test_env=FROM_CONFIG=1`. Bazel
    /// 7.7.1 is the only one of the two that knows `--remote_download_regex`.
    const BAZEL_4: &str = include_str!("testdata/plan-4.2.3.json");
    const BAZEL_7: &str = include_str!("testdata/plan-7.7.1.json");
    /// `bazel test --nobuild --build_event_json_file=/tmp/wtc/fN.json --target_pattern_file
    /// /tmp/wtc/patterns.txt`, the file holding `//math:add_test //net/... -//net:cidr_test`.
    const PATTERN_FILE_4: &str = include_str!("testdata/plan-pattern-file-4.2.3.json");
    const PATTERN_FILE_7: &str = include_str!("testdata/plan-pattern-file-7.7.1.json");

    fn planning(file: &str) -> [String; 2] {
        planning_options(Path::new(file))
    }

    /// A started event and the options Bazel parsed, with the planning options of `/e.json`.
    fn header(cmd_line: &str) -> String {
        format!(
            "{}\n{}\n",
            r#"{"id":{"started":{}},"started":{"command":"test"}}"#,
            r#"{"id":{"optionsParsed":{}},"optionsParsed":{"cmdLine":[CMD],"explicitCmdLine":["--nobuild","--build_event_json_file=/e.json"]}}"#
                .replace("CMD", cmd_line)
        )
    }

    fn synthetic(events: &str, stderr: &str, command: &str) -> Plan {
        let events = events.replace(r#""command":"test""#, &format!(r#""command":"{command}""#));
        parse(&events, stderr, command, &planning("/e.json")).unwrap()
    }

    /// Issue 11: a job says how many tests it runs at once, as Bazel would decide it.
    #[test]
    fn parallelism_is_what_bazel_runs_at_once() {
        let of = |options: &[&str]| {
            let options: Vec<String> = options.iter().map(|o| o.to_string()).collect();
            parallelism(&options, 8)
        };
        assert_eq!(of(&[]), 8, "the machine's CPUs");
        assert_eq!(of(&["--local_test_jobs=3"]), 3);
        assert_eq!(of(&["--local_test_jobs=0", "--local_cpu_resources=2"]), 2);
        assert_eq!(of(&["--local_cpu_resources=HOST_CPUS*.5"]), 4);
        assert_eq!(of(&["--local_cpu_resources=HOST_CPUS-1"]), 7);
        assert_eq!(of(&["--local_test_jobs=auto"]), 8);
        assert_eq!(
            of(&["--local_test_jobs=5", "--local_test_jobs=2"]),
            2,
            "the last wins"
        );
        assert_eq!(
            of(&["--local_cpu_resources=HOST_CPUS*.01"]),
            1,
            "at least one"
        );
        let plan = synthetic(&(header(r#""--local_test_jobs=3""#)), "", "test");
        assert_eq!(plan.parallelism, Some(3));
    }

    #[test]
    fn test_sizes_become_weights() {
        let events = header("")
            + concat!(
                r#"{"id":{"targetConfigured":{"label":"//a:small"}},"configured":{"targetKind":"sh_test rule","testSize":"SMALL"}}"#,
                "\n",
                r#"{"id":{"targetConfigured":{"label":"//a:large"}},"configured":{"targetKind":"sh_test rule","testSize":"LARGE"}}"#,
                "\n",
                r#"{"id":{"targetConfigured":{"label":"//a:lib"}},"configured":{"targetKind":"cc_library rule"}}"#,
            );
        let plan = synthetic(&events, "", "test");
        assert_eq!(plan.weights.get("//a:small"), Some(&1));
        assert_eq!(plan.weights.get("//a:large"), Some(&4));
        assert_eq!(plan.weights.get("//a:lib"), None);
        // The C++ rule is one whose own sources compile apart from linking.
        assert_eq!(
            plan.compiled.iter().collect::<Vec<_>>(),
            ["//a:lib"],
            "only C++ rules"
        );
    }

    #[test]
    fn tests_and_other_rules_come_from_the_configured_targets() {
        let targets = r#"{"id":{"targetConfigured":{"label":"//a:t"}},"configured":{"targetKind":"sh_test rule","testSize":"SMALL"}}
{"id":{"targetConfigured":{"label":"//a:gen"}},"configured":{"targetKind":"genrule rule"}}
{"id":{"targetConfigured":{"label":"//a:suite"}},"configured":{"targetKind":"test_suite rule"}}
{"id":{"targetConfigured":{"label":"//a:f.txt"}},"configured":{"targetKind":"source file"}}
{"id":{"targetConfigured":{"label":"//a:t"}},"configured":{"targetKind":"sh_test rule"}}"#;
        let events = header(r#""--nobuild""#) + targets;
        let plan = synthetic(
            &events,
            "INFO: x\nERROR: /w/b/BUILD:1:1: syntax error\n\
             ERROR: Couldn't start the build. Unable to run tests\n",
            "test",
        );
        assert_eq!(plan.tests, ["//a:t"]);
        assert_eq!(plan.builds, ["//a:gen"]);
        assert_eq!(plan.errors, ["ERROR: /w/b/BUILD:1:1: syntax error"]);
        // `--build_tests_only` from any bazelrc counts: the effective command line says.
        let only_tests = header(r#""--nobuild_tests_only","--build_tests_only""#) + targets;
        assert!(synthetic(&only_tests, "", "test").builds.is_empty());
        // Likewise `--notest_keep_going`, the last word winning; only `bazel test` runs tests.
        assert!(!synthetic(&events, "", "test").fail_fast);
        let fail_fast = header(r#""--test_keep_going","--notest_keep_going""#) + targets;
        assert!(synthetic(&fail_fast, "", "test").fail_fast);
        assert!(!synthetic(&fail_fast, "", "build").fail_fast);
        let keep_going = header(r#""--notest_keep_going","--test_keep_going=1""#) + targets;
        assert!(!synthetic(&keep_going, "", "test").fail_fast);
        let spelled = header(r#""--test_keep_going=false""#) + targets;
        assert!(synthetic(&spelled, "", "test").fail_fast);
        // `bazel build` builds every rule, test rules too, and runs nothing.
        let build = synthetic(&events, "", "build");
        assert!(build.tests.is_empty());
        assert_eq!(build.builds, ["//a:gen", "//a:t"]);
        assert_eq!(synthetic(&only_tests, "", "build").builds, ["//a:t"]);
    }

    /// Issue #10: an option only Bazel 7 knows, given a separate value, is an option (a table
    /// frozen at 4.2.3 took its value for a target pattern); `-c opt` and `--config x` come as
    /// `--name=value`; bazelrc options are left for the batches to read again.
    #[test]
    fn bazel_4_and_7_parse_the_users_command_line_alike() {
        let tests: Vec<String> = [
            "//data:checksum_test",
            "//data:json_test",
            "//data:sort_test",
            "//data:uniq_test",
            "//math:add_test",
            "//math:div_test",
            "//math:mod_test",
            "//math:mul_test",
            "//math:pow_test",
            "//math:sub_test",
            "//strings:upper_test",
        ]
        .map(String::from)
        .to_vec();
        let patterns = [
            "//math/...",
            "//strings:upper_test",
            "//data/...",
            "-//data:csv_test",
        ];
        let cases: &[(&str, &str, &[&str])] = &[
            (
                BAZEL_4,
                "/tmp/wtc/b4.json",
                &[
                    "--compilation_mode=opt",
                    "--config=x",
                    "--test_env=A=1",
                    "--test_output=errors",
                ],
            ),
            (
                BAZEL_7,
                "/tmp/wtc/b7.json",
                &[
                    "--compilation_mode=opt",
                    "--config=x",
                    "--test_env=A=1",
                    r"--remote_download_regex=.*\.log",
                    "--keep_going",
                    "--test_output=errors",
                ],
            ),
        ];
        for (events, file, options) in cases {
            let plan = parse(events, "", "test", &planning(file)).unwrap();
            assert_eq!(plan.options, *options, "{file}");
            assert_eq!(plan.patterns, patterns, "{file}");
            assert_eq!(plan.tests, tests, "{file}");
            assert!(plan.builds.is_empty(), "{file}: {:?}", plan.builds);
            assert_eq!(plan.weights.len(), tests.len(), "{file}");
        }
    }

    #[test]
    fn patterns_read_from_a_file_are_the_plans_patterns() {
        for (events, file) in [
            (PATTERN_FILE_4, "/tmp/wtc/f4.json"),
            (PATTERN_FILE_7, "/tmp/wtc/f7.json"),
        ] {
            let plan = parse(events, "", "test", &planning(file)).unwrap();
            assert_eq!(
                plan.options,
                ["--target_pattern_file=/tmp/wtc/patterns.txt"],
                "{file}"
            );
            assert_eq!(
                plan.patterns,
                ["//math:add_test", "//net/...", "-//net:cidr_test"],
                "{file}"
            );
            assert_eq!(
                plan.tests,
                [
                    "//math:add_test",
                    "//net:ipv4_parse_test",
                    "//net:port_range_test",
                    "//net:url_split_test"
                ],
                "{file}"
            );
        }
    }

    /// Events that do not show the command line as the wrapper ran it make no plan: the
    /// original command runs as given instead.
    #[test]
    fn a_parse_other_than_the_planning_runs_makes_no_plan() {
        let planned = planning("/tmp/wtc/b7.json");
        let err = parse(BAZEL_7, "", "build", &planned).unwrap_err();
        assert!(err.contains("ran the command `test`"), "{err}");
        let err = parse(BAZEL_7, "", "test", &planning("/elsewhere.json")).unwrap_err();
        assert!(err.contains("did not start its options"), "{err}");
        let err = parse("", "", "test", &planned).unwrap_err();
        assert!(err.contains("no build events"), "{err}");
        let no_options: String = BAZEL_7
            .lines()
            .filter(|l| !l.starts_with(r#"{"id":{"optionsParsed""#))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(no_options.lines().count() < BAZEL_7.lines().count());
        let err = parse(&no_options, "", "test", &planned).unwrap_err();
        assert!(err.contains("no options"), "{err}");
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

    /// The bug this pins: `--build_event_json_file mine.json` (a separate value) sends the
    /// plan's events to mine.json, but only `--build_event_json_file=` was looked for, so the
    /// wrapper read its own, empty, file and found no targets.
    #[test]
    fn regression_a_users_event_file_given_as_a_separate_value_holds_the_plan() {
        let argv: Vec<String> = [
            "test",
            "--build_event_json_file=/e.json",
            "--build_event_json_file",
            "mine.json",
            "//x",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(user_events_file(&argv), Some(PathBuf::from("mine.json")));
        assert_eq!(user_events_file(&argv[..2]), Some(PathBuf::from("/e.json")));
    }
}
