//! Differential tests of the Bazel wrapper: each scenario (a workspace state and a command line)
//! runs once as plain Bazel and once as 2 sharded jobs (through `tools/bazel`, the real wrapper,
//! a real coordinator and a real nginx remote cache), and the two must agree on
//!
//! - the exit code (every sharded job exits as plain Bazel does),
//! - every target's outcome (plain Bazel's from its build events, the jobs' from their
//!   summaries, which must also agree with each other): each test's status, and every target
//!   that failed to build,
//! - which tests executed, and how many times (from the side file each test appends to): each
//!   exactly as often across the jobs as in the plain run — except that a test the coordinator
//!   logged a backup copy of (an idle job racing a straggling one, by design) may also have run
//!   on the copy: up to as often again per copy, and no more,
//! - for a scenario passing `--build_event_json_file`, the tests that file reports.
//!
//! A mismatch prints both sides. Speed: one workspace copy and one Bazel server per role (plain,
//! job-1, job-2), reused by every scenario; a scenario changes a few files and the next puts them
//! back. A unique `--test_env=DIFF_SALT` per scenario and role keeps results from being cached
//! across scenarios or between plain and sharded runs, while the two jobs share theirs.
//!
//! A scenario the wrapper cannot yet match is marked `known: Some(reason)` (none is today); it
//! is run and printed like the others, and must still disagree (so that a fix shows up as a
//! failure that asks to remove the mark).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use e2e::bazel::{
    bazel_under_test, begin, clean_env, copy_tree, parse_summary, repo_root, tail, BazelEnv,
    Checkout, Finished, Running,
};
use e2e::{lines, Job};

/// Longest a scenario's run may take before it counts as hung (a cold Bazel 7 server on a
/// busy 2-core machine can take minutes to start).
const LIMIT: Duration = Duration::from_secs(600);

/// One row of the table.
struct Scenario {
    /// Names it in the output.
    name: &'static str,
    /// Files written over the base workspace for this scenario only.
    files: &'static [(&'static str, &'static str)],
    /// Startup options (before the command); `{role}` becomes a directory of the role's own.
    startup: &'static [&'static str],
    /// The command and its arguments, as the user types them.
    args: &'static [&'static str],
    /// Why the wrapper does not match Bazel here yet, for a scenario that still disagrees.
    known: Option<&'static str>,
    /// Why only the exit code can be compared (what else happens depends on timing, in plain
    /// Bazel too).
    exit_only: Option<&'static str>,
}

const fn s(name: &'static str, args: &'static [&'static str]) -> Scenario {
    Scenario {
        name,
        files: &[],
        startup: &[],
        args,
        known: None,
        exit_only: None,
    }
}

const fn with_files(
    name: &'static str,
    files: &'static [(&'static str, &'static str)],
    args: &'static [&'static str],
) -> Scenario {
    Scenario {
        name,
        files,
        startup: &[],
        args,
        known: None,
        exit_only: None,
    }
}

const fn exit_only(scenario: Scenario, why: &'static str) -> Scenario {
    Scenario {
        exit_only: Some(why),
        ..scenario
    }
}

/// A genrule that fails to build.
const BAD_GENRULE: (&str, &str) = (
    "nontest/BUILD",
    "genrule(name = \"bad\", outs = [\"bad.txt\"], cmd = \"exit 1\")\n\
     genrule(name = \"good\", outs = [\"good.txt\"], cmd = \"echo ok > $@\")\n",
);

/// A BUILD file Bazel cannot load.
const BROKEN_BUILD: (&str, &str) = ("broken/BUILD", "sh_test(name = \"x\",, srcs = )\n");

/// The scenarios. The numbers are those of the discrepancies listed in issue #10.
fn scenarios() -> Vec<Scenario> {
    vec![
        s("all tests, one failing", &["test", "//..."]),
        s("one package", &["test", "//pkg:all"]),
        s("recursive package", &["test", "//pkg/..."]),
        s(
            "explicit targets",
            &["test", "//pkg:pass_a", "//pkg/sub:sub_test"],
        ),
        s(
            "same target twice",
            &["test", "//pkg:pass_a", "//pkg:pass_a"],
        ),
        s("one failing test", &["test", "//bad:fail_test"]),
        s(
            "manual test named explicitly",
            &["test", "//pkg:manual_test"],
        ),
        s(
            "negative pattern after --",
            &["test", "--", "//...", "-//bad/..."],
        ),
        // 5
        s(
            "5: negative pattern without -- is rejected",
            &["test", "//pkg/...", "-//pkg/sub/..."],
        ),
        s(
            "5: unknown option is rejected",
            &["test", "--no_such_option", "//pkg:all"],
        ),
        s("no such package", &["test", "//nosuch:t"]),
        s("no such target", &["test", "//pkg:nosuch"]),
        // 6
        s("6: test suite", &["test", "//pkg:smoke"]),
        s(
            "6: suite subtracted",
            &["test", "--", "//pkg:all", "-//pkg:smoke"],
        ),
        s("6: suite's manual test under :*", &["test", "//pkg:*"]),
        // filters
        s(
            "--test_tag_filters=unit",
            &["test", "--test_tag_filters=unit", "//..."],
        ),
        s(
            "--test_tag_filters=-unit",
            &["test", "--test_tag_filters=-unit", "//..."],
        ),
        s(
            "--test_size_filters=small",
            &["test", "--test_size_filters=small", "//pkg/..."],
        ),
        s(
            "--test_timeout_filters=moderate",
            &["test", "--test_timeout_filters=moderate", "//pkg/..."],
        ),
        s(
            "--test_lang_filters=sh",
            &["test", "--test_lang_filters=sh", "//pkg/..."],
        ),
        s(
            "filters match nothing",
            &["test", "--test_tag_filters=nomatch", "//pkg/..."],
        ),
        s(
            "--build_tests_only with a filter",
            &[
                "test",
                "--build_tests_only",
                "--test_tag_filters=unit",
                "//pkg/...",
            ],
        ),
        // runs, attempts, shards, timeouts
        s("-k with a failing test", &["test", "-k", "//..."]),
        exit_only(
            s(
                "--notest_keep_going stops at the first failing test",
                &["test", "--notest_keep_going", "//..."],
            ),
            "which tests run before the failing one stops them depends on timing, in plain \
             Bazel too: the exit codes (3) agree, the executions cannot",
        ),
        s(
            "--runs_per_test=2",
            &["test", "--runs_per_test=2", "//pkg:pass_a"],
        ),
        s("shard_count = 2", &["test", "//timing:sharded_test"]),
        s(
            "flaky test without retries",
            &["test", "--test_env=DIFF_FLAKY=1", "//timing:flaky_test"],
        ),
        s(
            "--flaky_test_attempts=2",
            &[
                "test",
                "--test_env=DIFF_FLAKY=1",
                "--flaky_test_attempts=2",
                "//timing:flaky_test",
            ],
        ),
        s(
            "a test times out",
            &[
                "test",
                "--test_env=DIFF_SLEEP=6",
                "--test_timeout=2",
                "//timing:sleepy_test",
                "//pkg:pass_a",
            ],
        ),
        // configs and startup options
        with_files(
            "--config from the workspace .bazelrc",
            &[(".bazelrc", "test:ci --test_tag_filters=unit\n")],
            &["test", "--config=ci", "//..."],
        ),
        Scenario {
            startup: &["--bazelrc=extra.rc"],
            ..with_files(
                "startup --bazelrc",
                &[("extra.rc", "test --test_tag_filters=integration\n")],
                &["test", "//..."],
            )
        },
        Scenario {
            startup: &["--output_base={role}/output_base"],
            ..s("startup --output_base", &["test", "//pkg:all"])
        },
        // 1: non-test targets
        exit_only(
            with_files(
                "1: a failing genrule named with a test",
                &[BAD_GENRULE],
                &["test", "//nontest:bad", "//pkg:pass_a"],
            ),
            "without -k plain Bazel stops at the genrule and leaves the test NO STATUS; sharded, \
             another job may run the test first (the exit code, 1, agrees)",
        ),
        with_files(
            "1: a failing genrule with -k",
            &[BAD_GENRULE],
            &["test", "-k", "//nontest:bad", "//pkg:pass_a"],
        ),
        exit_only(
            with_files(
                "1: a failing genrule under //...",
                &[BAD_GENRULE],
                &["test", "//..."],
            ),
            "without -k, which tests run before Bazel stops depends on timing, in plain Bazel \
             too: the exit codes agree, the executions cannot",
        ),
        with_files(
            "1: --build_tests_only ignores the failing genrule",
            &[BAD_GENRULE],
            &[
                "test",
                "--build_tests_only",
                "//nontest:all",
                "//pkg:pass_a",
            ],
        ),
        s("only non-test targets", &["test", "//pkg:gen"]),
        // 2
        with_files(
            "2: --target_pattern_file",
            &[(
                "targets.txt",
                "//pkg:pass_a\n//pkg/sub:sub_test\n//bad:fail_test\n",
            )],
            &["test", "--target_pattern_file=targets.txt"],
        ),
        // 3
        s(
            "3: --deleted_packages",
            &["test", "--deleted_packages=pkg/sub", "//pkg/..."],
        ),
        with_files(
            "3: --deleted_packages from the .bazelrc",
            &[(".bazelrc", "build --deleted_packages=pkg/sub\n")],
            &["test", "//pkg/..."],
        ),
        // 4
        with_files(
            "4: a broken BUILD file",
            &[BROKEN_BUILD],
            &["test", "//..."],
        ),
        with_files(
            "4: a broken BUILD file with -k",
            &[BROKEN_BUILD],
            &["test", "-k", "//..."],
        ),
        // 7
        s(
            "7: the user's --build_event_json_file",
            &[
                "test",
                "--build_event_json_file=user-events.json",
                "//pkg/...",
            ],
        ),
        // 8
        s(
            "8: --check_tests_up_to_date",
            &["test", "--check_tests_up_to_date", "//pkg:pass_a"],
        ),
        // `bazel build`, sharded too
        s("build a package", &["build", "//pkg:all"]),
        s("build everything", &["build", "//..."]),
        s(
            "build with a negative pattern",
            &["build", "--", "//...", "-//bad/..."],
        ),
        exit_only(
            with_files(
                "build, failing",
                &[BAD_GENRULE],
                &["build", "//nontest:all"],
            ),
            "without -k plain Bazel stops at the first failure and leaves the rest unbuilt; \
             sharded, another job may build them first (the exit code, 1, agrees)",
        ),
        with_files(
            "build -k, failing",
            &[BAD_GENRULE],
            &["build", "-k", "//nontest:all", "//pkg:all"],
        ),
        s(
            "build --build_tests_only",
            &["build", "--build_tests_only", "//pkg:all"],
        ),
        with_files(
            "build, a broken BUILD file with -k",
            &[BROKEN_BUILD],
            &["build", "-k", "//..."],
        ),
        s("build --nobuild", &["build", "--nobuild", "//pkg:all"]),
        s("build, no such target", &["build", "//pkg:nosuch"]),
        with_files(
            "build --config from the workspace .bazelrc",
            &[(".bazelrc", "build:ci --build_tests_only\n")],
            &["build", "--config=ci", "//pkg:all"],
        ),
    ]
}

/// A role's workspace, Bazel server and files: `plain`, `job-1` or `job-2`.
struct Role {
    name: &'static str,
    checkout: Checkout,
    /// Its side file's directory, emptied before each scenario.
    side: PathBuf,
}

impl Role {
    fn new(name: &'static str, template: &Path, scratch: &Path) -> Result<Role> {
        Ok(Role {
            name,
            checkout: Checkout::of(name, template)?,
            side: scratch.join(name),
        })
    }

    fn workspace(&self) -> &Path {
        &self.checkout.workspace
    }
}

/// The argv after the program: startup options, the command, the harness's options (remote
/// cache, side file, salt, `extra`), then the scenario's own arguments.
fn command_line(
    scenario: &Scenario,
    role: &Role,
    env: &BazelEnv,
    side_file: &Path,
    salt: &str,
    extra: &[String],
) -> Vec<String> {
    let mut argv: Vec<String> = scenario
        .startup
        .iter()
        .map(|o| {
            o.replace(
                "{role}",
                &role
                    .side
                    .parent()
                    .unwrap()
                    .join(format!("{}-base", role.name))
                    .display()
                    .to_string(),
            )
        })
        .collect();
    let (command, rest) = scenario.args.split_first().expect("a command");
    argv.push(command.to_string());
    if matches!(*command, "test" | "build") {
        argv.push(format!("--remote_cache={}", env.nginx.url));
        argv.push(format!("--test_env=E2E_SIDE_FILE={}", side_file.display()));
        argv.push(format!(
            "--sandbox_writable_path={}",
            side_file.parent().unwrap().display()
        ));
        argv.push(format!("--test_env=DIFF_SALT={salt}"));
        argv.extend(extra.iter().cloned());
    }
    argv.extend(rest.iter().map(|a| a.to_string()));
    argv
}

/// The user's `--build_event_json_file`, if the scenario passes one.
fn user_events_file(scenario: &Scenario) -> Option<&'static str> {
    scenario
        .args
        .iter()
        .find_map(|a| a.strip_prefix("--build_event_json_file="))
}

/// One side of a comparison, with what is needed to show it.
struct Side {
    observed: Observed,
    /// How it is shown when the sides disagree.
    shown: String,
}

fn run_plain(scenario: &Scenario, role: &Role, env: &BazelEnv, salt: &str) -> Result<Side> {
    let side_file = role.side.join("exec.log");
    let events = role.side.join("plain-events.json");
    let argv = command_line(
        scenario,
        role,
        env,
        &side_file,
        salt,
        &[format!("--build_event_json_file={}", events.display())],
    );
    let mut command = Command::new(&bazel_under_test().real);
    clean_env(&mut command);
    command
        .current_dir(role.workspace())
        .arg(role.checkout.startup_option())
        .args(&argv)
        .stdin(std::process::Stdio::null());
    let output = Job::spawn("plain", command)?.wait(LIMIT)?;
    // The user's own event file, when given, is the one Bazel writes (the last flag wins).
    let events = match user_events_file(scenario) {
        Some(file) => role.workspace().join(file),
        None => events,
    };
    let outcomes = outcomes_from_events(
        &std::fs::read_to_string(&events).unwrap_or_default(),
        scenario.args[0] == "test",
    );
    let observed = Observed {
        exit: output.status.code(),
        outcomes,
        executions: executions(&side_file),
    };
    let shown = format!(
        "plain Bazel: {}\n  outcomes: {:?}\n  executions: {:?}\n  stderr (last 15 lines):\n{}\n",
        output.status,
        observed.outcomes,
        observed.executions,
        indent(&tail(&String::from_utf8_lossy(&output.stderr), 15))
    );
    Ok(Side { observed, shown })
}

fn run_sharded(
    scenario: &Scenario,
    jobs: &[&Role],
    env: &BazelEnv,
    salt: &str,
) -> Result<(Side, Vec<Finished>)> {
    let side_file = jobs[0].side.join("exec.log");
    let mut running = Running::default();
    for role in jobs {
        let argv = command_line(scenario, role, env, &side_file, salt, &[]);
        // bazel_job adds --output_user_root itself.
        running.spawn(role.name, env.bazel_job(&role.checkout, role.name, &argv))?;
    }
    let finished = running.wait_all(LIMIT)?;
    let per_job: Vec<BTreeMap<String, String>> = finished
        .iter()
        .map(|job| outcomes_from_summary(&job.summary()))
        .collect();
    let exits: Vec<Option<i32>> = finished.iter().map(Finished::code).collect();
    // The jobs must agree with each other first: report the first job's view, or a marker.
    let agree = per_job.windows(2).all(|w| w[0] == w[1]) && exits.windows(2).all(|w| w[0] == w[1]);
    let observed = Observed {
        exit: if agree { exits[0] } else { Some(-1000) },
        outcomes: per_job[0].clone(),
        executions: executions(&side_file),
    };
    let mut shown = format!(
        "sharded ({}):\n  executions: {:?}\n",
        if agree { "jobs agree" } else { "JOBS DISAGREE" },
        observed.executions
    );
    for (job, outcomes) in finished.iter().zip(&per_job) {
        shown.push_str(&format!(
            "  {}: {}\n    outcomes: {outcomes:?}\n    stderr (last 15 lines):\n{}\n",
            job.name,
            job.output.status,
            indent(&tail(&job.stderr(), 15))
        ));
    }
    Ok((Side { observed, shown }, finished))
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("      {l}\n")).collect()
}

#[test]
fn sharded_jobs_give_plain_bazels_verdict() {
    let _serial = begin("sharded_jobs_give_plain_bazels_verdict");
    let started = Instant::now();
    let env = BazelEnv::start("differential").unwrap();
    let template = env.scratch_dir().join("template");
    std::fs::create_dir_all(&template).unwrap();
    write_base(&template).unwrap();
    let scratch = env.scratch_dir().join("roles");
    let plain = Role::new("plain", &template, &scratch).unwrap();
    let job1 = Role::new("job-1", &template, &scratch).unwrap();
    let job2 = Role::new("job-2", &template, &scratch).unwrap();
    let roles = [&plain, &job1, &job2];

    let table = scenarios();
    let mut failures = Vec::new();
    let mut lines_out = Vec::new();
    let mut env = env;
    let base_run_id = env.run_id.clone();
    // `DIFFERENTIAL_ONLY=text` runs only the scenarios whose names contain it (while working
    // on one); CI runs them all.
    let only = std::env::var("DIFFERENTIAL_ONLY").unwrap_or_default();
    for (index, scenario) in table.iter().enumerate() {
        if !scenario.name.contains(&only) {
            continue;
        }
        let scenario_started = Instant::now();
        for role in roles {
            fresh_dir(&role.side).unwrap();
            remove_convenience_symlinks(role.workspace()).unwrap();
            for (path, text) in scenario.files {
                write_file(role.workspace(), path, text).unwrap();
            }
        }
        env.run_id = format!("{base_run_id}-{index}");
        let (plain_side, sharded_side) = std::thread::scope(|scope| {
            let plain_run =
                scope.spawn(|| run_plain(scenario, &plain, &env, &format!("{index}-plain")));
            let sharded = run_sharded(scenario, &[&job1, &job2], &env, &format!("{index}-sharded"));
            (plain_run.join().unwrap(), sharded)
        });
        let plain_side = plain_side.unwrap();
        let (sharded_side, finished) = sharded_side.unwrap();
        let mut differences = Vec::new();
        if plain_side.observed.exit != sharded_side.observed.exit {
            differences.push("exit code");
        }
        let plain_outcomes = &plain_side.observed.outcomes;
        if scenario.exit_only.is_none() && *plain_outcomes != sharded_side.observed.outcomes {
            differences.push("outcomes");
        }
        let copies = backup_copies(&env, &env.run_id);
        if scenario.exit_only.is_none()
            && !same_executions(
                &plain_side.observed.executions,
                &sharded_side.observed.executions,
                &copies,
            )
        {
            differences.push("executions");
        }
        if let Some(file) = user_events_file(scenario) {
            let plain_tests = summarized_tests(
                &std::fs::read_to_string(plain.workspace().join(file)).unwrap_or_default(),
            );
            let mut sharded_tests: Vec<String> = [&job1, &job2]
                .iter()
                .flat_map(|r| {
                    summarized_tests(
                        &std::fs::read_to_string(r.workspace().join(file)).unwrap_or_default(),
                    )
                })
                .collect();
            sharded_tests.sort();
            sharded_tests.dedup();
            if plain_tests != sharded_tests {
                differences.push("the user's build event file");
            }
        }
        let elapsed = scenario_started.elapsed();
        let verdict = match (differences.is_empty(), scenario.known) {
            (true, None) => match scenario.exit_only {
                Some(why) => format!("agree on the exit code (compared alone: {why})"),
                None => "agree".to_string(),
            },
            (false, Some(why)) => format!("KNOWN MISMATCH ({why}): {}", differences.join(", ")),
            (false, None) => format!("MISMATCH: {}", differences.join(", ")),
            (true, Some(_)) => "AGREES NOW: remove its `known` mark".to_string(),
        };
        let copied = if copies.is_empty() {
            String::new()
        } else {
            format!(" (backup copies: {copies:?})")
        };
        let line = format!(
            "[{:>2}] {:<55} {:>5.1}s  {verdict}{copied}",
            index + 1,
            scenario.name,
            elapsed.as_secs_f64()
        );
        eprintln!("{line}");
        lines_out.push(line.clone());
        if !differences.is_empty() || scenario.known.is_some() {
            let detail = format!(
                "{line}\n  command: bazel {} {}\n{}{}",
                scenario.startup.join(" "),
                scenario.args.join(" "),
                plain_side.shown,
                sharded_side.shown
            );
            eprintln!("{detail}");
            if differences.is_empty() != scenario.known.is_none() {
                failures.push(detail);
            }
        }
        drop(finished);
        for role in roles {
            for (path, _) in scenario.files {
                restore_file(role.workspace(), path).unwrap();
            }
        }
    }
    eprintln!(
        "differential: {} scenarios in {:.0}s with {}",
        table.len(),
        started.elapsed().as_secs_f64(),
        bazel_under_test().real.display()
    );
    assert!(
        failures.is_empty(),
        "{} of {} scenarios disagree:\n{}\n\nall scenarios:\n{}",
        failures.len(),
        table.len(),
        failures.join("\n"),
        lines_out.join("\n")
    );
}

/// The test script every `sh_test` runs, its behaviour chosen by its first argument.
const TEST_SCRIPT: &str = r#"#!/bin/sh
# Records that it executed, then behaves as its first argument says.
if [ -n "${E2E_SIDE_FILE:-}" ]; then
  echo "${TEST_TARGET} ${TEST_SHARD_INDEX:-0}" >> "${E2E_SIDE_FILE}" || exit 1
fi
if [ -n "${TEST_SHARD_STATUS_FILE:-}" ]; then
  touch "${TEST_SHARD_STATUS_FILE}"
fi
case "${1:-pass}" in
  fail)
    echo "failing on purpose"
    exit 1
    ;;
  sleep)
    if [ -n "${DIFF_SLEEP:-}" ]; then sleep "${DIFF_SLEEP}"; fi
    ;;
  flaky)
    if [ -n "${DIFF_FLAKY:-}" ]; then
      marker="$(dirname "${E2E_SIDE_FILE}")/flaky-$(echo "${TEST_TARGET}" | tr '/:' '__')"
      if [ ! -e "${marker}" ]; then
        : > "${marker}"
        echo "failing the first time"
        exit 1
      fi
    fi
    ;;
esac
exit 0
"#;

/// The scenario workspace's files, before any scenario changes it.
const BASE_FILES: &[(&str, &str)] = &[
    ("lib/test.sh", TEST_SCRIPT),
    ("lib/BUILD", "exports_files([\"test.sh\"])\n"),
    (
        "pkg/BUILD",
        r#"sh_test(name = "pass_a", size = "small", srcs = ["//lib:test.sh"], tags = ["unit"])
sh_test(name = "pass_b", size = "medium", srcs = ["//lib:test.sh"], tags = ["integration"])
sh_test(name = "manual_test", size = "small", srcs = ["//lib:test.sh"], tags = ["manual"])
test_suite(name = "smoke", tests = [":pass_a", ":manual_test"])
genrule(name = "gen", outs = ["gen.txt"], cmd = "echo generated > $@")
"#,
    ),
    (
        "pkg/sub/BUILD",
        "sh_test(name = \"sub_test\", size = \"small\", srcs = [\"//lib:test.sh\"], tags = [\"unit\"])\n",
    ),
    (
        "bad/BUILD",
        "sh_test(name = \"fail_test\", size = \"small\", srcs = [\"//lib:test.sh\"], args = [\"fail\"])\n",
    ),
    (
        "timing/BUILD",
        r#"sh_test(name = "sleepy_test", size = "small", srcs = ["//lib:test.sh"], args = ["sleep"])
sh_test(name = "flaky_test", size = "small", srcs = ["//lib:test.sh"], args = ["flaky"])
sh_test(name = "sharded_test", size = "small", srcs = ["//lib:test.sh"], shard_count = 2)
"#,
    ),
];

/// Writes a fresh scenario workspace into `dir`.
fn write_base(dir: &Path) -> Result<()> {
    let source = repo_root().join("e2e/workspace");
    for file in ["WORKSPACE", "WORKSPACE.bzlmod", "MODULE.bazel"] {
        std::fs::copy(source.join(file), dir.join(file))
            .with_context(|| format!("cannot copy e2e/workspace/{file}"))?;
    }
    copy_tree(&source.join("third_party"), &dir.join("third_party"))?;
    for (path, text) in BASE_FILES {
        write_file(dir, path, text)?;
    }
    Ok(())
}

/// Writes `text` to `dir/path` (a script stays executable), creating directories.
fn write_file(dir: &Path, path: &str, text: &str) -> Result<()> {
    let file = dir.join(path);
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&file, text).with_context(|| format!("cannot write {}", file.display()))?;
    if path.ends_with(".sh") {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// Puts `dir/path` back as the base workspace has it (or removes it if the base has none).
fn restore_file(dir: &Path, path: &str) -> Result<()> {
    match BASE_FILES.iter().find(|(p, _)| *p == path) {
        Some((_, text)) => write_file(dir, path, text),
        None => match std::fs::remove_file(dir.join(path)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        },
    }
}

/// What one side of a comparison did.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Observed {
    /// The exit code (`None`: killed by a signal).
    exit: Option<i32>,
    /// Each target's outcome in the summary's words (`PASSED`, `FAILED TO BUILD`, ...).
    outcomes: BTreeMap<String, String>,
    /// How many times each test (shard) executed, from the side file.
    executions: BTreeMap<String, usize>,
}

/// Every target's outcome from a plain Bazel run's build events, in the words the sharded
/// summary uses: a test's `testSummary` status; a test that was built but not run (a filter
/// excluded it) `SKIPPED`; one whose build was aborted, or never completed, `NO STATUS`; a
/// target that failed to build `FAILED TO BUILD`, one that built `BUILT` (every rule of a
/// `bazel build`). Test suites are left out (Bazel reports their tests).
fn outcomes_from_events(jsonl: &str, testing: bool) -> BTreeMap<String, String> {
    let mut kinds = BTreeMap::new();
    let mut statuses = BTreeMap::new();
    let mut completed: BTreeMap<String, &str> = BTreeMap::new();
    let events: Vec<serde_json::Value> = jsonl
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    for event in &events {
        let id = &event["id"];
        if let Some(label) = id["targetConfigured"]["label"].as_str() {
            let kind = event["configured"]["targetKind"].as_str().unwrap_or("");
            kinds.insert(label.to_string(), kind.to_string());
        } else if let Some(label) = id["testSummary"]["label"].as_str() {
            let status = event["testSummary"]["overallStatus"]
                .as_str()
                .unwrap_or("NO_STATUS");
            statuses.insert(label.to_string(), status.replace('_', " "));
        } else if let Some(label) = id["targetCompleted"]["label"].as_str() {
            let state = if event.get("aborted").is_some() {
                "aborted"
            } else if event["completed"]["success"].as_bool() == Some(true) {
                "built"
            } else {
                "failed"
            };
            completed.insert(label.to_string(), state);
        }
    }
    let mut outcomes = BTreeMap::new();
    for (label, kind) in &kinds {
        let state = completed.get(label).copied();
        let outcome = if kind.starts_with("test_suite") {
            continue;
        } else if testing && kind.ends_with("_test rule") {
            match (statuses.get(label), state) {
                (Some(status), _) => status.replace("INCOMPLETE", "NO STATUS"),
                (None, Some("built")) => "SKIPPED".into(),
                (None, Some("failed")) => "FAILED TO BUILD".into(),
                (None, _) => "NO STATUS".into(),
            }
        } else if state == Some("failed") {
            "FAILED TO BUILD".into()
        } else if kind.ends_with(" rule") && state == Some("built") {
            // The wrapper lists it as a build task that was built.
            "BUILT".into()
        } else {
            continue;
        };
        outcomes.insert(label.clone(), outcome);
    }
    outcomes
}

/// Every target's outcome from a sharded job's summary (empty when it printed none).
fn outcomes_from_summary(summary: &str) -> BTreeMap<String, String> {
    let Ok(parsed) = parse_summary(summary) else {
        return BTreeMap::new();
    };
    parsed
        .rows
        .into_iter()
        .map(|row| (row.label, row.outcome))
        .collect()
}

/// How many times each label executed, from a side file (`<label> <shard>` per execution).
fn executions(side_file: &Path) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for line in lines(side_file) {
        if let Some(label) = line.split_whitespace().next() {
            *counts.entry(label.to_string()).or_default() += 1;
        }
    }
    counts
}

/// The backup copies the coordinator handed out in run `run_id`'s sessions, per label (it logs
/// one line per copy, naming it).
fn backup_copies(env: &BazelEnv, run_id: &str) -> BTreeMap<String, usize> {
    let log = env
        .coordinator
        .as_ref()
        .map(|c| c.log())
        .unwrap_or_default();
    copies_in_log(&log, run_id)
}

/// See [`backup_copies`]: the counting, on the log's text.
fn copies_in_log(log: &str, run_id: &str) -> BTreeMap<String, usize> {
    let session = format!("session=bazel/{run_id}/");
    let mut copies = BTreeMap::new();
    for line in log.lines() {
        if !(line.contains("handing out a backup copy") && line.contains(&session)) {
            continue;
        }
        let label = line
            .split_whitespace()
            .find_map(|field| field.strip_prefix("label="));
        if let Some(label) = label {
            *copies.entry(label.to_string()).or_default() += 1;
        }
    }
    copies
}

/// Whether the sharded run executed each test as often as plain Bazel did, allowing a test
/// with `n` backup copies up to `n` more runs of each of its executions (shards, attempts).
fn same_executions(
    plain: &BTreeMap<String, usize>,
    sharded: &BTreeMap<String, usize>,
    copies: &BTreeMap<String, usize>,
) -> bool {
    let labels: std::collections::BTreeSet<&String> = plain.keys().chain(sharded.keys()).collect();
    labels.into_iter().all(|label| {
        let once = plain.get(label).copied().unwrap_or(0);
        let ran = sharded.get(label).copied().unwrap_or(0);
        let extra = copies.get(label).copied().unwrap_or(0);
        (once..=once * (1 + extra)).contains(&ran)
    })
}

#[test]
fn executions_may_exceed_plain_bazels_only_by_the_logged_backup_copies() {
    let log = "\
2026-12-02T19:00:00Z  INFO coordinator::state::session::dispatch: handing out a backup copy of what a straggling batch has not finished session=bazel/run-3/abc task=2 label=//pkg:pass_a
2026-12-02T19:00:00Z  INFO coordinator::state::session::dispatch: handing out a backup copy of what a straggling batch has not finished session=bazel/run-30/abc task=1 label=//pkg:pass_b
";
    let copies = copies_in_log(log, "run-3");
    assert_eq!(copies, BTreeMap::from([("//pkg:pass_a".to_string(), 1)]));
    let counts = |pairs: &[(&str, usize)]| -> BTreeMap<String, usize> {
        pairs.iter().map(|(l, n)| (l.to_string(), *n)).collect()
    };
    let plain = counts(&[("//pkg:pass_a", 2), ("//pkg:pass_b", 1)]);
    assert!(same_executions(&plain, &plain, &copies));
    assert!(same_executions(
        &plain,
        &counts(&[("//pkg:pass_a", 4), ("//pkg:pass_b", 1)]),
        &copies
    ));
    // Not copied: once more is a mismatch; nor may a copied test run more or less than allowed.
    assert!(!same_executions(
        &plain,
        &counts(&[("//pkg:pass_a", 2), ("//pkg:pass_b", 2)]),
        &copies
    ));
    assert!(!same_executions(
        &plain,
        &counts(&[("//pkg:pass_a", 5), ("//pkg:pass_b", 1)]),
        &copies
    ));
    assert!(!same_executions(
        &plain,
        &counts(&[("//pkg:pass_a", 1), ("//pkg:pass_b", 1)]),
        &copies
    ));
    assert!(!same_executions(
        &plain,
        &counts(&[("//pkg:pass_a", 2), ("//pkg:pass_b", 1), ("//x:y", 1)]),
        &copies
    ));
}

/// The labels with a `testSummary` in a build event file.
fn summarized_tests(jsonl: &str) -> Vec<String> {
    let mut labels: Vec<String> = jsonl
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|e| e["id"]["testSummary"]["label"].as_str().map(str::to_string))
        .collect();
    labels.sort();
    labels.dedup();
    labels
}

/// Removes the `bazel-*` symlinks Bazel leaves at the workspace root. Regression: after the
/// `--output_base` scenario they point into that other output base, which Bazel then no longer
/// recognises as its own, so `//...` descends into them (`bazel-workspace/external/...`) and
/// fails to load — in whichever role had not run a build since to put them back, so the roles
/// disagreed by chance. Every build makes them again.
fn remove_convenience_symlinks(workspace: &Path) -> Result<()> {
    for entry in std::fs::read_dir(workspace)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with("bazel-")
            && entry.file_type()?.is_symlink()
        {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// A directory for one role's files (side file, events), emptied before each scenario.
fn fresh_dir(dir: &PathBuf) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    Ok(())
}

#[test]
fn plain_outcomes_come_from_the_build_events() {
    let events = r#"{"id":{"targetConfigured":{"label":"//a:t"}},"configured":{"targetKind":"sh_test rule"}}
{"id":{"targetConfigured":{"label":"//a:filtered"}},"configured":{"targetKind":"sh_test rule"}}
{"id":{"targetConfigured":{"label":"//a:never"}},"configured":{"targetKind":"sh_test rule"}}
{"id":{"targetConfigured":{"label":"//a:suite"}},"configured":{"targetKind":"test_suite rule"}}
{"id":{"targetConfigured":{"label":"//a:gen"}},"configured":{"targetKind":"genrule rule"}}
{"id":{"targetConfigured":{"label":"//a:bad"}},"configured":{"targetKind":"genrule rule"}}
{"id":{"targetCompleted":{"label":"//a:t"}},"completed":{"success":true}}
{"id":{"targetCompleted":{"label":"//a:filtered"}},"completed":{"success":true}}
{"id":{"targetCompleted":{"label":"//a:never"}},"aborted":{"reason":"SKIPPED"}}
{"id":{"targetCompleted":{"label":"//a:gen"}},"completed":{"success":true}}
{"id":{"targetCompleted":{"label":"//a:bad"}},"completed":{}}
{"id":{"testSummary":{"label":"//a:t"}},"testSummary":{"overallStatus":"NO_STATUS"}}"#;
    let outcomes = outcomes_from_events(events, true);
    let want: BTreeMap<String, String> = [
        ("//a:bad", "FAILED TO BUILD"),
        ("//a:gen", "BUILT"),
        ("//a:filtered", "SKIPPED"),
        ("//a:never", "NO STATUS"),
        ("//a:t", "NO STATUS"),
    ]
    .into_iter()
    .map(|(l, o)| (l.to_string(), o.to_string()))
    .collect();
    assert_eq!(outcomes, want);
}
