//! The Bazel wrapper end to end: a real Bazel (4.2.3 through Debian's launcher, or the one
//! `E2E_BAZEL_REAL` names, e.g. 7.7.1, through `tools/bazel` with `BAZEL_REAL` set), the
//! workspace's `tools/bazel`, a real nginx remote cache, a real coordinator, and several
//! concurrent jobs, each with its own copy of `e2e/workspace` and its own output root.
//!
//! What ran is counted independently of the wrapper's summary: from the side file every test
//! appends to when it executes, and from the build events the wrapper keeps per batch.
//!
//! Needs Bazel and nginx (`scripts/e2e-env.sh install` is run first). Each test starts several
//! Bazel servers, so the tests take a lock and run one at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::bazel::{
    bazel_under_test, begin, parse_summary, summary_targets, BazelEnv, Checkout, Finished, Running,
    Summary, BUILT_TARGETS, FAILING_TEST, MANUAL_TEST, TEST_TARGETS,
};
use e2e::{binary, lines, wait_until, Coordinator};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// Longest a job may take before it counts as hung (not a performance bound).
const LIMIT: Duration = Duration::from_secs(240);

/// Starts `n` jobs, `job-1`..`job-n`, each in its own checkout, all with `args`.
fn start_jobs(env: &BazelEnv, checkouts: &[Checkout], args: &[String]) -> Running {
    let mut running = Running::default();
    for (i, checkout) in checkouts.iter().enumerate() {
        let name = format!("job-{}", i + 1);
        let command = env.bazel_job(checkout, &name, args);
        running.spawn(&name, command).unwrap();
    }
    running
}

fn checkouts(n: usize) -> Vec<Checkout> {
    (1..=n)
        .map(|i| Checkout::new(&format!("job-{i}")).unwrap())
        .collect()
}

/// The labels of a build event file's `testResult`s that really executed: neither a remote
/// cache hit nor cached locally.
fn executed_test_results(jsonl: &str) -> Vec<String> {
    let mut executed = Vec::new();
    for line in jsonl.lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let Some(label) = event["id"]["testResult"]["label"].as_str() else {
            continue;
        };
        let result = &event["testResult"];
        if result.is_null() {
            continue; // aborted: nothing ran
        }
        let remote_hit = result["executionInfo"]["strategy"].as_str() == Some("remote cache hit");
        let local_hit = result["cachedLocally"].as_bool() == Some(true);
        if !remote_hit && !local_hit {
            executed.push(label.to_string());
        }
    }
    executed
}

/// Per job directory, the labels that executed according to its build events.
fn executed_per_job_from_bep(env: &BazelEnv) -> BTreeMap<String, Vec<String>> {
    env.build_events_per_job()
        .into_iter()
        .map(|(job, files)| {
            let executed = files
                .iter()
                .flat_map(|f| executed_test_results(f))
                .collect();
            (job, executed)
        })
        .collect()
}

/// How many times each label executed according to all the build events.
fn executions_from_bep(env: &BazelEnv) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for label in executed_per_job_from_bep(env).into_values().flatten() {
        *counts.entry(label).or_default() += 1;
    }
    counts
}

/// What Bazel says of a batch none of whose targets is a test that runs.
const NO_TEST_TARGETS: &str = "No test targets were found, yet testing was requested";

/// How many batches, of every job, Bazel ended with "no test targets" (exit code 4).
fn batches_without_tests(env: &BazelEnv) -> usize {
    env.build_events_per_job()
        .into_values()
        .flatten()
        .filter(|events| {
            events
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .any(|e| e["finished"]["exitCode"]["code"] == 4)
        })
        .count()
}

/// Everything about a test's jobs, for failure messages.
fn report(env: &BazelEnv, jobs: &[Finished]) -> String {
    format!(
        "{}\n===== executed per job, from build events =====\n{:#?}\n",
        env.report(jobs),
        executed_per_job_from_bep(env)
    )
}

/// Each of `labels` exactly once, nothing else.
fn exactly_once(labels: &[&str]) -> BTreeMap<String, usize> {
    labels.iter().map(|l| (l.to_string(), 1)).collect()
}

/// Every job printed the same, well-formed summary; returns it parsed.
fn common_summary(jobs: &[Finished], why: &str) -> Summary {
    let first = jobs[0].summary();
    assert!(
        !first.is_empty(),
        "{} printed no summary{why}",
        jobs[0].name
    );
    for job in jobs {
        assert_eq!(
            job.summary(),
            first,
            "{} and {} printed different summaries{why}",
            job.name,
            jobs[0].name
        );
    }
    let summary = parse_summary(&first).unwrap_or_else(|e| panic!("{e:#}{why}"));
    let all = summary_targets();
    assert_eq!(summary.tasks, all.len(), "{why}");
    assert_eq!(summary.labels(), all, "the summary lists every target{why}");
    summary
}

fn assert_codes(jobs: &[Finished], code: i32, why: &str) {
    for job in jobs {
        assert_eq!(
            job.code(),
            Some(code),
            "{} exited with {}{why}",
            job.name,
            job.output.status
        );
    }
}

/// Every job got to shard (did not fall back to plain Bazel).
fn assert_sharded(jobs: &[Finished], why: &str) {
    for job in jobs {
        assert!(
            job.stderr()
                .contains("task-sharding: sharding 26 test targets with the other jobs of run"),
            "{} did not shard{why}",
            job.name
        );
    }
}

#[test]
fn three_jobs_share_bazel_test_and_agree() {
    let _serial = begin("three_jobs_share_bazel_test_and_agree");
    let started = Instant::now();
    let env = BazelEnv::start("three-jobs").unwrap();
    let checkouts = checkouts(3);
    let args = env.test_args(&[]);
    let mut running = Running::default();
    // job-1 runs as on GitHub Actions, with a step summary file to append a Markdown table to.
    let step_summary = env.scratch_dir().join("step-summary.md");
    for (i, checkout) in checkouts.iter().enumerate() {
        let name = format!("job-{}", i + 1);
        let mut command = env.bazel_job(checkout, &name, &args);
        if i == 0 {
            command.env("GITHUB_STEP_SUMMARY", &step_summary);
        }
        running.spawn(&name, command).unwrap();
    }
    let jobs = running.wait_all(LIMIT).unwrap();
    let why = format!("\n{}", report(&env, &jobs));

    assert_codes(&jobs, 3, &why);
    assert_sharded(&jobs, &why);

    // Each target executed exactly once across the three jobs, and the manual one not at all:
    // counted by the tests themselves and by Bazel's build events.
    let side = env.executions_from_side_file();
    assert_eq!(side, exactly_once(&TEST_TARGETS), "side file counts{why}");
    assert!(!side.contains_key(MANUAL_TEST), "{why}");
    let bep = executions_from_bep(&env);
    assert_eq!(bep, exactly_once(&TEST_TARGETS), "build event counts{why}");

    let summary = common_summary(&jobs, &why);
    for row in &summary.rows {
        let want = if row.label == FAILING_TEST {
            "FAILED"
        } else if BUILT_TARGETS.contains(&row.label.as_str()) {
            "BUILT"
        } else {
            "PASSED"
        };
        assert_eq!(row.outcome, want, "{row:?}{why}");
        // Every result came from the execution counted above, not from a cache.
        assert!(!row.cached, "{row:?}{why}");
    }
    // Regression (issue 10): the row said `FAILED in 0.3s, exit 3`, its batch's code.
    let failing = summary.row(FAILING_TEST).unwrap();
    assert_eq!((failing.exit, failing.bazel_exit), (None, None), "{why}");
    assert!(
        summary
            .totals
            .starts_with("25 passed, 1 failed, 1 built; run by "),
        "{}{why}",
        summary.totals
    );
    let clients = summary.clients();
    let jobs_named: BTreeSet<String> = ["job-1", "job-2", "job-3"].map(String::from).into();
    assert!(clients.is_subset(&jobs_named), "{clients:?}{why}");
    assert!(clients.len() >= 2, "the work was spread: {clients:?}{why}");

    // Who ran what agrees between the summary and the build events: each job's executions
    // (one events directory per job) are exactly the rows the summary credits one client with.
    let from_bep: BTreeSet<BTreeSet<String>> = executed_per_job_from_bep(&env)
        .into_values()
        .filter(|labels| !labels.is_empty())
        .map(|labels| labels.into_iter().collect())
        .collect();
    let from_summary: BTreeSet<BTreeSet<String>> = clients
        .iter()
        .map(|client| {
            summary
                .rows
                .iter()
                .filter(|r| &r.client == client && !BUILT_TARGETS.contains(&r.label.as_str()))
                .map(|r| r.label.clone())
                .collect::<BTreeSet<String>>()
        })
        .filter(|labels| !labels.is_empty())
        .collect();
    assert_eq!(from_bep, from_summary, "who ran what{why}");
    // The jobs used the shared remote cache (test results were uploaded).
    assert!(env.nginx.access_log().contains("PUT /ac/"), "{why}");
    // The GitHub step summary got a table row per target.
    let markdown = std::fs::read_to_string(&step_summary).unwrap_or_default();
    let rows: Vec<&str> = markdown
        .lines()
        .filter(|l| l.starts_with("| `//"))
        .collect();
    assert_eq!(rows.len(), summary_targets().len(), "{markdown}{why}");
    assert!(
        rows.iter()
            .any(|r| r.starts_with(&format!("| `{FAILING_TEST}` | FAILED |"))),
        "{markdown}"
    );
    eprintln!(
        "three_jobs_share_bazel_test_and_agree: {:?}, clients {clients:?}",
        started.elapsed()
    );
}

/// A sharded run of `//...` that filtered the failing test out: every job exits 0, every other
/// test executed exactly once (side file and build events), and the totals say so.
fn assert_failing_test_filtered_out(env: &BazelEnv, jobs: &[Finished], why: &str) -> Summary {
    assert_codes(jobs, 0, why);
    assert_sharded(jobs, why);
    let passing: Vec<&str> = TEST_TARGETS
        .iter()
        .copied()
        .filter(|l| *l != FAILING_TEST)
        .collect();
    assert_eq!(
        env.executions_from_side_file(),
        exactly_once(&passing),
        "side file counts{why}"
    );
    assert_eq!(
        executions_from_bep(env),
        exactly_once(&passing),
        "build event counts{why}"
    );
    let summary = common_summary(jobs, why);
    assert!(
        summary
            .totals
            .starts_with("25 passed, 1 skipped, 1 built; run by "),
        "{}{why}",
        summary.totals
    );
    summary
}

#[test]
fn filtered_failing_test_means_exit_0() {
    let _serial = begin("filtered_failing_test_means_exit_0");
    let env = BazelEnv::start("filtered").unwrap();
    let checkouts = checkouts(3);
    let args = env.test_args(&["--test_tag_filters=-failing"]);
    let jobs = start_jobs(&env, &checkouts, &args).wait_all(LIMIT).unwrap();
    let why = format!("\n{}", report(&env, &jobs));

    let summary = assert_failing_test_filtered_out(&env, &jobs, &why);
    for row in &summary.rows {
        let want = if row.label == FAILING_TEST {
            "SKIPPED"
        } else if BUILT_TARGETS.contains(&row.label.as_str()) {
            "BUILT"
        } else {
            "PASSED"
        };
        assert_eq!(row.outcome, want, "{row:?}{why}");
        assert_eq!((row.exit, row.bazel_exit), (None, None), "{row:?}{why}");
    }
    // Regression (issue 10): a batch of only the filtered test (or only the library) said
    // "No test targets were found" into a session that has 25 of them.
    for job in &jobs {
        assert!(
            !job.stderr().contains(NO_TEST_TARGETS),
            "{} printed {NO_TEST_TARGETS:?}{why}",
            job.name
        );
    }
    eprintln!(
        "filtered_failing_test_means_exit_0: {} batches found no test targets\n{}",
        batches_without_tests(&env),
        jobs[0].summary()
    );
}

/// The major version `bazel --version` reports (Debian's 4.2.3 says `bazel no_version`: none).
fn bazel_major_version() -> Option<u32> {
    let output = Command::new(&bazel_under_test().real)
        .arg("--version")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .trim()
        .strip_prefix("bazel ")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// Issue #10: the wrapper read Bazel's argv with a table of the options of 4.2.3 that take a
/// value, so a newer Bazel's option with a separate value (`--remote_download_regex .*\.log`)
/// was a boolean to it and its value a target pattern, and each batch ran with
/// `--remote_download_regex --build_event_json_file=F`. Options now come from Bazel's own parse
/// of the planning run: separate values of every Bazel version reach the batches as
/// `--name=value`, and the tag filter given with a separate value keeps the failing test out.
#[test]
fn regression_options_with_separate_values_reach_the_batches_on_every_bazel() {
    let _serial = begin("regression_options_with_separate_values_reach_the_batches_on_every_bazel");
    let env = BazelEnv::start("separate-values").unwrap();
    let checkouts = checkouts(2);
    let mut extra = vec!["--test_tag_filters", "-failing", "--test_output", "errors"];
    let major = bazel_major_version();
    if major.is_some_and(|major| major >= 7) {
        extra.extend(["--remote_download_regex", r".*\.log"]);
    }
    let args = env.test_args(&extra);
    let jobs = start_jobs(&env, &checkouts, &args).wait_all(LIMIT).unwrap();
    let why = format!("\nBazel {major:?}, {args:?}\n{}", report(&env, &jobs));

    let summary = assert_failing_test_filtered_out(&env, &jobs, &why);
    assert_eq!(
        summary.row(FAILING_TEST).unwrap().outcome,
        "SKIPPED",
        "{why}"
    );
}

#[test]
fn a_killed_job_does_not_stop_the_others() {
    let _serial = begin("a_killed_job_does_not_stop_the_others");
    let env = BazelEnv::start("killed").unwrap();
    let checkouts = checkouts(3);
    let args = env.test_args(&[]);
    let mut running = Running::default();
    // The victim starts first, so that it creates the session and is handed the first batch.
    running
        .spawn("job-3", env.bazel_job(&checkouts[2], "job-3", &args))
        .unwrap();
    let assigned = wait_until("job-3 is assigned targets", LIMIT, || {
        running
            .get("job-3")
            .read("stderr")
            .contains("this job runs")
    });
    if let Err(e) = assigned {
        let stderr = running.get("job-3").read("stderr");
        panic!("{e:#}; job-3's stderr:\n{stderr}");
    }
    for (i, checkout) in checkouts[..2].iter().enumerate() {
        let name = format!("job-{}", i + 1);
        running
            .spawn(&name, env.bazel_job(checkout, &name, &args))
            .unwrap();
    }
    // Kill job-3 and everything in its process group as soon as its tests run, mid-batch.
    let side_file = env.side_file();
    wait_until("a test has executed", LIMIT, || {
        !lines(&side_file).is_empty()
    })
    .unwrap();
    assert!(
        !running.has_exited("job-3"),
        "job-3 exited before it could be killed:\n{}",
        running.get("job-3").read("stderr")
    );
    let victim = running.kill("job-3").unwrap();
    let executed_when_killed = lines(&side_file).len();

    let jobs = running.wait_all(LIMIT).unwrap();
    let why = format!(
        "\n(job-3 killed after {executed_when_killed} executions)\n{}\n===== job-3 (killed) stderr =====\n{}",
        report(&env, &jobs),
        e2e::bazel::tail(&victim.stderr(), 30)
    );
    assert_eq!(jobs.len(), 2);
    assert_codes(&jobs, 3, &why);
    assert_sharded(&jobs, &why);
    let summary = common_summary(&jobs, &why);
    for row in &summary.rows {
        let want = if row.label == FAILING_TEST {
            "FAILED"
        } else if BUILT_TARGETS.contains(&row.label.as_str()) {
            "BUILT"
        } else {
            "PASSED"
        };
        assert_eq!(row.outcome, want, "{row:?}{why}");
        // job-3 was killed in its first batch of tests, before it could report any (a batch of
        // only the library, built in no time, may have come first).
        assert!(
            row.client == "job-1"
                || row.client == "job-2"
                || BUILT_TARGETS.contains(&row.label.as_str()),
            "{row:?}{why}"
        );
    }
    // Every target ran at least once (the killed job's in-flight ones may have run twice).
    let side = env.executions_from_side_file();
    for label in TEST_TARGETS {
        assert!(side.get(label).is_some_and(|&n| n >= 1), "{label}{why}");
    }
    assert!(!side.contains_key(MANUAL_TEST), "{why}");
    // The coordinator took the killed job's targets back.
    let log = env.coordinator.as_ref().unwrap().log();
    assert!(
        log.contains("a client left holding leases"),
        "the coordinator did not take job-3's targets back{why}"
    );
    let twice: Vec<&String> = side
        .iter()
        .filter(|(_, &n)| n > 1)
        .map(|(l, _)| l)
        .collect();
    eprintln!(
        "a_killed_job_does_not_stop_the_others: job-3 killed after {executed_when_killed} \
         executions; executed more than once: {twice:?}; clients {:?}",
        summary.clients()
    );
}

#[test]
fn coordinator_down_means_plain_bazel() {
    let _serial = begin("coordinator_down_means_plain_bazel");
    let env = BazelEnv::with_coordinator_down("down").unwrap();
    let checkout = Checkout::new("alone").unwrap();
    let args = env.test_args(&[]);
    let command = |required: bool| {
        let mut command = env.bazel_job(&checkout, "job-1", &args);
        command.env("TASK_SHARDING_CONNECT_TIMEOUT", "1s");
        if required {
            command.env("TASK_SHARDING_REQUIRED", "1");
        }
        command
    };

    // Required: Bazel's "local environment" error, and no test runs. (First, so that the
    // second run's executions cannot be local cache hits of this one.)
    let mut running = Running::default();
    running.spawn("required", command(true)).unwrap();
    let jobs = running.wait_all(LIMIT).unwrap();
    let why = format!("\n{}", report(&env, &jobs));
    assert_codes(&jobs, 36, &why);
    let stderr = jobs[0].stderr();
    assert!(
        stderr.contains("task-sharding: error:") && stderr.contains("TASK_SHARDING_REQUIRED=1"),
        "{why}"
    );
    assert!(jobs[0].summary().is_empty(), "{why}");
    assert!(lines(&env.side_file()).is_empty(), "no test ran{why}");

    // Fail-open: a warning, then plain `bazel test`, with Bazel's own exit code and output.
    let mut running = Running::default();
    running.spawn("fail-open", command(false)).unwrap();
    let jobs = running.wait_all(LIMIT).unwrap();
    let why = format!("\n{}", report(&env, &jobs));
    assert_codes(&jobs, 3, &why);
    let stderr = jobs[0].stderr();
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("task-sharding: warning:")
                && l.contains("running `bazel test` alone")),
        "{why}"
    );
    assert!(!stderr.contains("task-sharding: sharding"), "{why}");
    assert!(jobs[0].summary().is_empty(), "Bazel's output only{why}");
    // Bazel's own summary, not the wrapper's.
    assert!(
        jobs[0].stdout().contains("//strings:broken_test") && stderr.contains("FAILED"),
        "{why}"
    );
    let side = env.executions_from_side_file();
    assert_eq!(side, exactly_once(&TEST_TARGETS), "side file counts{why}");
    // The wrapper ran no batch of its own: it handed the command to Bazel untouched. (It does
    // create its empty events directory before it tries the coordinator.)
    let batches: usize = env.build_events_per_job().values().map(Vec::len).sum();
    assert_eq!(batches, 0, "{why}");
}

/// A `TASK_SHARDING_BIN` that logs its arguments, then runs the real `task-sharding`: proof
/// that a command went through the wrapper.
fn logging_shim(dir: &Path) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt as _;
    let log = dir.join("shim.log");
    let shim = dir.join("task-sharding-shim");
    std::fs::write(
        &shim,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
            log.display(),
            binary("task-sharding").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
    (shim, log)
}

#[test]
fn other_commands_pass_through_untouched() {
    let _serial = begin("other_commands_pass_through_untouched");
    let env = BazelEnv::start("passthrough").unwrap();
    let checkout = Checkout::new("passthrough").unwrap();
    let (shim, shim_log) = logging_shim(env.scratch_dir());
    // Through tools/bazel (and the wrapper), or straight to the real Bazel.
    let run = |wrapped: bool, args: &[&str]| {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let mut command = if wrapped {
            env.bazel_job(&checkout, "job-1", &args)
        } else {
            env.job_command(&bazel_under_test().real, &checkout, "job-1", &args)
        };
        command.env("TASK_SHARDING_BIN", &shim);
        // `bazel build` is sharded unless opted out: with the opt-out it is Bazel's alone.
        command.env("TASK_SHARDING_SHARD_BUILD", "0");
        let output = command.output().unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let cases: &[(&[&str], Option<i32>)] = &[
        (&["info", "workspace"], Some(0)),
        (&["query", "//..."], Some(0)),
        (&["build", "//math:all"], Some(0)),
        (&["--help"], Some(0)),
        (&["query", "deps(("], None),
    ];
    for (args, want) in cases {
        let (wrapped_code, wrapped_out, wrapped_err) = run(true, args);
        let (direct_code, direct_out, direct_err) = run(false, args);
        let why = format!(
            "\n`bazel {}`\n--- through tools/bazel: {wrapped_code:?}\n{wrapped_out}\n{}\n--- \
             direct: {direct_code:?}\n{direct_out}\n{}",
            args.join(" "),
            e2e::bazel::tail(&wrapped_err, 20),
            e2e::bazel::tail(&direct_err, 20)
        );
        assert_eq!(wrapped_code, direct_code, "exit codes{why}");
        assert_eq!(wrapped_out, direct_out, "stdout{why}");
        match want {
            Some(code) => assert_eq!(wrapped_code, Some(*code), "{why}"),
            None => assert!(matches!(wrapped_code, Some(2) | Some(7)), "{why}"),
        }
        assert!(!wrapped_err.contains("task-sharding:"), "{why}");
        // It really went through tools/bazel and task-sharding.
        let logged = lines(&shim_log);
        assert_eq!(
            logged.last().map(String::as_str),
            Some(format!("bazel {} {}", checkout.startup_option(), args.join(" ")).as_str()),
            "{why}"
        );
    }
    assert_eq!(lines(&shim_log).len(), cases.len());
    // Sanity: the outputs compared were real.
    let (_, workspace, _) = run(true, &["info", "workspace"]);
    assert_eq!(Path::new(workspace.trim()), checkout.workspace);
    let (_, targets, _) = run(true, &["query", "//..."]);
    assert!(targets.lines().any(|l| l == MANUAL_TEST), "{targets}");
    // Nothing but `test` (and a `build` not opted out) talks to the coordinator.
    let coordinator: &Coordinator = env.coordinator.as_ref().unwrap();
    assert!(
        !coordinator.log().contains("job-1"),
        "{}",
        coordinator.log()
    );
}

/// The bazelisk binary, installed with npm into a cache under Cargo's target directory, or why
/// it is not available.
fn bazelisk() -> Result<PathBuf, String> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => return Err(format!("no bazelisk binary for {other}")),
    };
    // target/debug/task-sharding -> target/e2e-npm
    let prefix = binary("task-sharding")
        .parent()
        .and_then(Path::parent)
        .ok_or("no target directory")?
        .join("e2e-npm");
    let bin = prefix.join(format!(
        "node_modules/@bazel/bazelisk/bazelisk-linux_{arch}"
    ));
    if !bin.exists() {
        let output = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&prefix)
            .arg("@bazel/bazelisk")
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("cannot run npm: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "`npm install @bazel/bazelisk` failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }
    if bin.exists() {
        Ok(bin)
    } else {
        Err(format!("{} missing after npm install", bin.display()))
    }
}

#[test]
fn bazelisk_and_launcher_jobs_share_a_session() {
    let _serial = begin("bazelisk_and_launcher_jobs_share_a_session");
    // No bazelisk is a failure: a test that did nothing must not pass.
    let bazelisk = bazelisk().unwrap_or_else(|why| panic!("bazelisk is not available: {why}"));
    let env = BazelEnv::start("bazelisk").unwrap();
    let checkouts = checkouts(2);
    let args = env.test_args(&[]);
    let bazelisk_home = env.scratch_dir().join("bazelisk-home");
    let mut running = Running::default();
    let mut via_bazelisk = env.job_command(&bazelisk, &checkouts[0], "job-1", &args);
    via_bazelisk
        .env("USE_BAZEL_VERSION", &bazel_under_test().real)
        .env("BAZELISK_HOME", &bazelisk_home);
    running.spawn("job-1", via_bazelisk).unwrap();
    running
        .spawn("job-2", env.bazel_job(&checkouts[1], "job-2", &args))
        .unwrap();
    let jobs = running.wait_all(LIMIT).unwrap();
    let why = format!("\n{}", report(&env, &jobs));

    assert_codes(&jobs, 3, &why);
    assert_sharded(&jobs, &why);
    let summary = common_summary(&jobs, &why);
    for row in &summary.rows {
        let want = if row.label == FAILING_TEST {
            "FAILED"
        } else if BUILT_TARGETS.contains(&row.label.as_str()) {
            "BUILT"
        } else {
            "PASSED"
        };
        assert_eq!(row.outcome, want, "{row:?}{why}");
    }
    assert_eq!(
        env.executions_from_side_file(),
        exactly_once(&TEST_TARGETS),
        "side file counts{why}"
    );
    eprintln!(
        "bazelisk_and_launcher_jobs_share_a_session: clients {:?}",
        summary.clients()
    );
}

#[test]
fn build_event_counting_ignores_cache_hits() {
    let events = r#"{"id":{"testResult":{"label":"//a:run"}},"testResult":{"executionInfo":{"strategy":"linux-sandbox"}}}
{"id":{"testResult":{"label":"//a:remote"}},"testResult":{"executionInfo":{"strategy":"remote cache hit","cachedRemotely":true}}}
{"id":{"testResult":{"label":"//a:local"}},"testResult":{"cachedLocally":true}}
{"id":{"testResult":{"label":"//a:aborted"}},"aborted":{"reason":"INCOMPLETE"}}
{"id":{"testSummary":{"label":"//a:run"}},"testSummary":{"overallStatus":"PASSED"}}
{"id":{"testResult":{"label":"//a:cut"#;
    assert_eq!(executed_test_results(events), ["//a:run"]);
}

#[test]
fn an_interrupted_job_exits_8_and_hands_its_targets_back() {
    let _serial = begin("an_interrupted_job_exits_8_and_hands_its_targets_back");
    let env = BazelEnv::start("interrupted").unwrap();
    let checkouts = checkouts(2);
    let args = env.test_args(&[]);
    // job-2's Bazel server is started (and the workspace built) first, so that job-2 joins while
    // job-1 still has work: a cold Bazel 7 server takes longer to start than job-1's whole run.
    let warm = ["build".to_string(), "//...".to_string()];
    let warmed = env
        .job_command(&bazel_under_test().real, &checkouts[1], "warm-up", &warm)
        .output()
        .unwrap();
    assert!(
        warmed.status.success(),
        "warming job-2's Bazel up: {}",
        String::from_utf8_lossy(&warmed.stderr)
    );
    let mut running = Running::default();
    // job-1 starts alone, so it creates the session and takes the first batch.
    running
        .spawn("job-1", env.bazel_job(&checkouts[0], "job-1", &args))
        .unwrap();
    let side_file = env.side_file();
    wait_until("job-1 runs its first tests", LIMIT, || {
        !lines(&side_file).is_empty()
    })
    .unwrap();
    running
        .spawn("job-2", env.bazel_job(&checkouts[1], "job-2", &args))
        .unwrap();
    wait_until("job-2 has joined", LIMIT, || {
        running.get("job-2").read("stderr").contains("the session")
    })
    .unwrap();
    assert!(
        !running.has_exited("job-1"),
        "job-1 finished before it could be interrupted:\n{}",
        running.get("job-1").read("stderr")
    );
    // The launcher and tools/bazel exec, so the job's pid is task-sharding's: SIGTERM it as CI
    // does when a job is cancelled.
    let group = running.get("job-1").child.id() as i32;
    running.get("job-1").signal(Signal::SIGTERM).unwrap();
    let jobs = running.wait_all(LIMIT).unwrap();
    let why = report(&env, &jobs);
    let (interrupted, survivor) = (&jobs[0], &jobs[1]);
    assert_eq!(interrupted.code(), Some(8), "{why}");
    assert!(
        interrupted.stderr().contains("task-sharding: interrupted"),
        "{why}"
    );
    // Its Bazel was stopped too: nothing of job-1's process group is left.
    wait_until(
        "job-1's Bazel client has exited",
        Duration::from_secs(60),
        || killpg(Pid::from_raw(group), None).is_err(),
    )
    .unwrap();
    // The other job got job-1's targets back and finished the session.
    assert_eq!(survivor.code(), Some(3), "{why}");
    let summary = parse_summary(&survivor.summary()).unwrap_or_else(|e| panic!("{e:#}{why}"));
    assert_eq!(summary.rows.len(), summary_targets().len(), "{why}");
    assert!(
        env.coordinator
            .as_ref()
            .unwrap()
            .log()
            .contains("a client left holding leases"),
        "{why}"
    );
}

#[test]
fn a_lost_coordinator_leaves_each_job_to_finish_alone() {
    let _serial = begin("a_lost_coordinator_leaves_each_job_to_finish_alone");
    let mut env = BazelEnv::start("lost").unwrap();
    let checkouts = checkouts(2);
    let args = env.test_args(&[]);
    let mut running = Running::default();
    for (i, checkout) in checkouts.iter().enumerate() {
        let name = format!("job-{}", i + 1);
        let mut command = env.bazel_job(checkout, &name, &args);
        command.env("TASK_SHARDING_GRACE", "2s");
        running.spawn(&name, command).unwrap();
    }
    // Both jobs must be in the session before it goes: a job that starts after the coordinator
    // died never shards at all, which is another test (`coordinator_down_means_plain_bazel`).
    for name in ["job-1", "job-2"] {
        wait_until(&format!("{name} has joined"), LIMIT, || {
            running.get(name).read("stderr").contains("the session")
        })
        .unwrap();
    }
    let side_file = env.side_file();
    wait_until("tests run", LIMIT, || !lines(&side_file).is_empty()).unwrap();
    // The coordinator dies for good (SIGKILL: it says nothing to anyone).
    env.coordinator = None;
    let jobs = running.wait_all(LIMIT).unwrap();
    let why = report(&env, &jobs);
    for job in &jobs {
        assert_eq!(job.code(), Some(3), "{} {why}", job.name);
        assert!(
            job.stderr()
                .contains("the coordinator is unavailable; running the"),
            "{} did not say it ran alone{why}",
            job.name
        );
        // Each job still reports on every target: its own results and those it ran alone.
        let summary = parse_summary(&job.summary()).unwrap_or_else(|e| panic!("{e:#}{why}"));
        assert_eq!(summary.labels().len(), summary_targets().len(), "{why}");
        assert_eq!(
            summary.row(FAILING_TEST).unwrap().outcome,
            "FAILED",
            "{why}"
        );
    }
    let side = env.executions_from_side_file();
    for label in TEST_TARGETS {
        assert!(side.contains_key(label), "{label} never ran{why}");
    }
}

/// Regression (issue 10): two jobs of one run whose options differed split into two sessions,
/// each saying it shards "with the other jobs" and running everything; and a job started with
/// the run id of a finished session printed its verdict without saying nothing ran. Now both
/// split jobs warn of the split, and the late job warns that its session was already complete.
#[test]
fn jobs_of_one_run_that_split_or_come_late_are_warned() {
    let _serial = begin("jobs_of_one_run_that_split_or_come_late_are_warned");
    let env = BazelEnv::start("split-run").unwrap();
    let checkouts = checkouts(2);
    // //slow:sleep4_test waits for the gate, so that neither session can complete before both
    // jobs have joined theirs (a job whose Bazel starts late would otherwise find the other
    // session over, which is not a split).
    let gate = env.side_dir().join("gate");
    let gate_env = format!("--test_env=E2E_GATE={}", gate.display());
    let args = env.test_args(&[&gate_env]);
    let other_args = env.test_args(&[&gate_env, "--test_env=E2E_SPLIT=1"]);
    let mut running = Running::default();
    for (name, checkout, args) in [
        ("job-1", &checkouts[0], &args),
        ("job-2", &checkouts[1], &other_args),
    ] {
        running
            .spawn(name, env.bazel_job(checkout, name, args))
            .unwrap();
    }
    for name in ["job-1", "job-2"] {
        wait_until(&format!("{name} has joined"), LIMIT, || {
            running.get(name).read("stderr").contains("the session")
        })
        .unwrap();
    }
    std::fs::write(&gate, "open").unwrap();
    let jobs = running.wait_all(LIMIT).unwrap();
    let why = format!("\n{}", report(&env, &jobs));
    assert_sharded(&jobs, &why);
    let split = "has 2 sessions of `bazel test`: jobs whose commit, options or targets differ";
    for job in &jobs {
        assert!(
            job.stderr().contains(split),
            "{} was not warned{why}",
            job.name
        );
    }
    // The split is real: each session ran every test.
    let twice: BTreeMap<String, usize> = TEST_TARGETS.iter().map(|l| (l.to_string(), 2)).collect();
    assert_eq!(env.executions_from_side_file(), twice, "{why}");

    // The same run id again, with job-1's options: its session is complete, nothing runs.
    let mut late = Running::default();
    late.spawn("job-3", env.bazel_job(&checkouts[0], "job-3", &args))
        .unwrap();
    let late = late.wait_all(LIMIT).unwrap();
    let why = format!("\n{}", report(&env, &late));
    let stderr = late[0].stderr();
    assert!(
        stderr.contains(&format!(
            "run {}'s session was already complete when this job joined: nothing ran here",
            env.run_id
        )),
        "{why}"
    );
    assert_eq!(
        late[0].code(),
        jobs[0].code(),
        "the earlier jobs' verdict{why}"
    );
    assert_eq!(late[0].summary(), jobs[0].summary(), "{why}");
    assert_eq!(
        env.executions_from_side_file(),
        twice,
        "nothing ran again{why}"
    );
}

/// Issue 11: a target's result reaches the coordinator when Bazel reports it, not when its
/// batch ends. One job runs one batch of two tests; `//math:sub_test` waits for a gate, so the
/// batch cannot end before the coordinator is seen holding `//math:add_test`'s result.
#[test]
fn per_target_results_arrive_before_their_batch_ends() {
    let _serial = begin("per_target_results_arrive_before_their_batch_ends");
    let env = BazelEnv::start("streamed").unwrap();
    let checkouts = checkouts(1);
    let gate = env.side_dir().join("gate");
    let gate_env = format!("--test_env=E2E_GATE={}", gate.display());
    let mut args = env.test_args(&[&gate_env, "--test_env=E2E_GATE_TARGET=//math:sub_test"]);
    args.splice(1..2, ["//math:add_test".into(), "//math:sub_test".into()]);
    let mut running = Running::default();
    running
        .spawn("job-1", env.bazel_job(&checkouts[0], "job-1", &args))
        .unwrap();
    let dashboard = env
        .coordinator
        .as_ref()
        .and_then(|c| c.dashboard.clone())
        .expect("the coordinator serves its API");
    let finished = || -> Option<u64> {
        let output = Command::new("curl")
            .args(["-s", "--max-time", "10"])
            .arg(format!("{dashboard}api/sessions"))
            .output()
            .ok()?;
        let sessions: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
        sessions.as_array()?.first()?["finished"].as_u64()
    };
    wait_until("add_test's result reached the coordinator", LIMIT, || {
        finished() == Some(1)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", running.get("job-1").read("stderr")));
    // sub_test has started (its side-file line comes before the gate) and is held at the gate:
    // the batch is still running.
    wait_until("sub_test started", LIMIT, || {
        env.executions_from_side_file()
            .contains_key("//math:sub_test")
    })
    .unwrap();
    assert!(!running.has_exited("job-1"), "the batch ended early");
    std::fs::write(&gate, "open").unwrap();
    let jobs = running.wait_all(LIMIT).unwrap();
    let why = format!("\n{}", report(&env, &jobs));
    assert_eq!(jobs[0].code(), Some(0), "{why}");
    let summary = parse_summary(&jobs[0].summary()).unwrap_or_else(|e| panic!("{e:#}{why}"));
    for label in ["//math:add_test", "//math:sub_test"] {
        assert_eq!(
            summary.row(label).unwrap().outcome,
            "PASSED",
            "{label}{why}"
        );
    }
    // Both tests were one batch: the result came out of a batch still running.
    let batches = env.build_events_per_job();
    assert_eq!(
        batches.values().map(Vec::len).collect::<Vec<_>>(),
        [1],
        "one job, one batch{why}"
    );
}

/// Issue 11: with Bazel's own `--notest_keep_going`, the first failing test stops every job of
/// the session. `//slow:sleep4_test` waits for a gate that never opens (for 5 minutes, longer
/// than the jobs may take): only being stopped ends its batch. Every job then reports the same
/// verdict, the exit code plain Bazel gives (3), with the tests nobody got to NO STATUS.
#[test]
fn notest_keep_going_stops_every_job_with_one_verdict() {
    let _serial = begin("notest_keep_going_stops_every_job_with_one_verdict");
    let env = BazelEnv::start("fail-fast").unwrap();
    let checkouts = checkouts(2);
    let gate = env.side_dir().join("gate-never-opened");
    let gate_env = format!("--test_env=E2E_GATE={}", gate.display());
    let args = env.test_args(&["--notest_keep_going", &gate_env]);
    let jobs = start_jobs(&env, &checkouts, &args).wait_all(LIMIT).unwrap();
    let why = format!("\n{}", report(&env, &jobs));
    for job in &jobs {
        assert_eq!(job.code(), Some(3), "{} {why}", job.name);
    }
    assert_eq!(jobs[0].summary(), jobs[1].summary(), "one verdict{why}");
    let summary = parse_summary(&jobs[0].summary()).unwrap_or_else(|e| panic!("{e:#}{why}"));
    assert_eq!(
        summary.row(FAILING_TEST).unwrap().outcome,
        "FAILED",
        "{why}"
    );
    let held = summary.row("//slow:sleep4_test").unwrap();
    assert_eq!(held.outcome, "NO STATUS", "{why}");
    // Both jobs took part: the stop reached a job that was not the one that failed.
    assert_sharded(&jobs, &why);
}

/// Regression (a flaky differential scenario, "the user's `--build_event_json_file`"): a batch
/// stopped by the coordinator — its remainder finished first by a backup copy, or the session
/// stopped at its first failure — left nothing in the user's event file, though results
/// streamed from it counted and their tests ran nowhere else: those tests had no summary in any
/// job's file. Here `//slow:sleep4_test` waits for a gate that never opens, so the batch holding
/// it is always stopped; every batch each job ran, stopped or not, must be in that job's file.
#[test]
fn regression_a_stopped_batchs_events_reach_the_users_event_file() {
    let _serial = begin("regression_a_stopped_batchs_events_reach_the_users_event_file");
    let env = BazelEnv::start("stopped-batch-events").unwrap();
    let checkouts = checkouts(2);
    let gate = env.side_dir().join("gate-never-opened");
    let gate_env = format!("--test_env=E2E_GATE={}", gate.display());
    let args = env.test_args(&[
        "--notest_keep_going",
        &gate_env,
        "--build_event_json_file=user-events.json",
    ]);
    let jobs = start_jobs(&env, &checkouts, &args).wait_all(LIMIT).unwrap();
    let why = format!("\n{}", report(&env, &jobs));
    assert_codes(&jobs, 3, &why);
    let field = |text: &str, pick: fn(&serde_json::Value) -> Option<String>| -> Vec<String> {
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|e| pick(&e))
            .collect()
    };
    let uuid = |e: &serde_json::Value| e["started"]["uuid"].as_str().map(str::to_string);
    let workspace = |e: &serde_json::Value| {
        e["started"]["workspaceDirectory"]
            .as_str()
            .map(str::to_string)
    };
    let mut stopped = 0;
    for batches in env.build_events_per_job().values() {
        for batch in batches {
            let (Some(id), Some(dir)) = (field(batch, uuid).pop(), field(batch, workspace).pop())
            else {
                panic!("a batch without its started event: {batch}{why}");
            };
            let user = std::fs::read_to_string(Path::new(&dir).join("user-events.json"))
                .unwrap_or_default();
            assert!(
                field(&user, uuid).contains(&id),
                "batch {id} of {dir} is not in its user-events.json{why}"
            );
            stopped +=
                usize::from(!batch.contains("\"buildFinished\"") || batch.contains("INTERRUPTED"));
        }
    }
    assert!(stopped > 0, "no batch was stopped: nothing was tested{why}");
}
