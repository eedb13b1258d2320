//! What building a target costs, as the Bazel runner measures it from a real Bazel's build
//! events: a batch of the compiled benchmark's C++ workspace (Debian's Bazel 4.2.3 and the host
//! compiler, no downloads), its targets' build costs against what their sources nominally take
//! to compile.
//!
//! Always Debian's 4.2.3, whatever `E2E_BAZEL_REAL` says: the C++ rules of the Bazel 7.7.1 kit
//! need modules (`platforms`, `rules_cc`) that are not in it, so no C++ builds there offline.
//! The events it relies on are checked for both versions in the wrapper's unit tests
//! (`completed_commands_name_their_targets_in_order`).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use e2e::bazel::{begin, Checkout, BAZEL_REAL};
use e2e::compiled::CompiledWorkspace;
use tokio_util::sync::CancellationToken;
use wrapper::bazel::runner::{BazelRunner, INITIAL_OVERHEAD};
use wrapper::{AssignedTask, Batch, TaskRunner};

/// A `bazel test` runner of `checkout` on one core, as the compiled benchmark's jobs run,
/// writing its event files into `events`.
fn one_core_runner(checkout: &Checkout, events: &std::path::Path) -> BazelRunner {
    BazelRunner {
        bazel: BAZEL_REAL.into(),
        startup: vec![checkout.startup_option()],
        command: "test".into(),
        options: vec![
            "--local_cpu_resources=1".into(),
            "--local_test_jobs=1".into(),
        ],
        negatives: Vec::new(),
        builds: BTreeSet::new(),
        user_events: None,
        events_dir: events.into(),
        batches: 0,
        overhead: INITIAL_OVERHEAD,
        measured: false,
        parallelism: 1,
        compiled: BTreeSet::new(),
    }
}

/// `labels` as a batch's tasks, numbered in order.
fn assigned(labels: &[&str]) -> Vec<AssignedTask> {
    labels
        .iter()
        .zip(0..)
        .map(|(text, id)| AssignedTask {
            id,
            text: text.to_string(),
        })
        .collect()
}

/// Regression (the compiled benchmark: in a warm run the test with the longest compile was
/// handed out last and kept one job busy 8 s after the others had finished): each target
/// reaching its verdict was given the building done since the previous verdict, but Bazel
/// interleaves a batch's targets — `//core` and one test's compile before another's link —
/// so a test got `//core`'s or its neighbour's compiling and the history ranked them wrongly.
/// Each target's cost is now its own actions'.
#[test]
fn regression_a_targets_build_cost_is_its_own_compiling() {
    let _serial = begin("regression_a_targets_build_cost_is_its_own_compiling");
    // One test per package; compiling the tests' sources costs 6 s in all, heavy-tailed.
    let workspace = CompiledWorkspace::generate(7, 6, 6_000, 600);
    let heavy = workspace.tests.iter().max_by_key(|t| t.compile_ms).unwrap();
    let light = workspace.tests.iter().min_by_key(|t| t.compile_ms).unwrap();
    let core_ms: u64 = workspace.core_ms.iter().sum();
    assert!(
        heavy.compile_ms >= 6 * light.compile_ms && core_ms >= 2 * heavy.compile_ms,
        "the workload no longer tells them apart: core {core_ms} ms, {} {} ms, {} {} ms",
        heavy.label,
        heavy.compile_ms,
        light.label,
        light.compile_ms
    );
    let source = tempfile::tempdir().unwrap();
    workspace.write(source.path()).unwrap();
    let checkout = Checkout::of("build-costs", source.path()).unwrap();
    let events = tempfile::tempdir().unwrap();
    // A batch runs where the wrapper does: in the workspace (the only test of this binary).
    std::env::set_current_dir(&checkout.workspace).unwrap();
    let mut runner = BazelRunner {
        builds: BTreeSet::from(["//core:core".to_string()]),
        ..one_core_runner(&checkout, events.path())
    };
    // The light test first: its verdict comes first, after `//core` and (Bazel's order)
    // perhaps the heavy test's compile.
    let tasks = assigned(&[&light.label, &heavy.label, "//core:core"]);
    let (sender, mut streamed) = tokio::sync::mpsc::unbounded_channel();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let reports = runtime.block_on(async {
        let batch = Batch::new(CancellationToken::new(), sender);
        tokio::time::timeout(Duration::from_secs(600), runner.run(&tasks, batch))
            .await
            .expect("the batch did not finish in 10 minutes")
    });
    let mut cost: HashMap<String, u64> = HashMap::new();
    let mut outcomes = Vec::new();
    while let Ok(report) = streamed.try_recv() {
        outcomes.push(report.result.outcome);
        cost.insert(
            tasks[report.task as usize].text.clone(),
            report.result.build_ms,
        );
    }
    for report in reports {
        outcomes.push(report.result.outcome);
        cost.entry(tasks[report.task as usize].text.clone())
            .or_insert(report.result.build_ms);
    }
    let why = format!(
        "measured (ms): {cost:?}; outcomes {outcomes:?}; nominal: core {core_ms}, {} {}, {} {}",
        heavy.label, heavy.compile_ms, light.label, light.compile_ms
    );
    eprintln!("{why}");
    assert_eq!(cost.len(), 3, "every target reported: {why}");
    assert!(
        outcomes.iter().all(|o| o.is_success()),
        "the batch passed: {why}"
    );
    let (core, heavy_cost, light_cost) =
        (cost["//core:core"], cost[&heavy.label], cost[&light.label]);
    // What each compiles, in the order of what it nominally costs: core (four sources) above
    // the heavy test, the heavy test well above the light one — whichever reached its verdict
    // first.
    assert!(core > heavy_cost, "core costs more than any test: {why}");
    assert!(
        heavy_cost > 2 * light_cost,
        "the heavy test costs more than twice the light one: {why}"
    );
    // And the light test was not given core's compiling (nor its package library's).
    assert!(
        2 * light_cost < core,
        "the light test did not get core's compiling: {why}"
    );
}

/// Issue 11: a batch told to compile first (a library its tests link is being built by another
/// job) compiles the tests' own sources in a pass of its own — only theirs, not the library's —
/// and then runs them, the objects not compiled again; what the pass compiled is still each
/// test's build cost, and the verdicts are the batch's as ever.
#[test]
fn a_batch_told_to_compile_first_compiles_its_own_sources_then_runs() {
    let _serial = begin("a_batch_told_to_compile_first_compiles_its_own_sources_then_runs");
    let workspace = CompiledWorkspace::generate(7, 6, 6_000, 600);
    let heavy = workspace.tests.iter().max_by_key(|t| t.compile_ms).unwrap();
    let light = workspace.tests.iter().min_by_key(|t| t.compile_ms).unwrap();
    let source = tempfile::tempdir().unwrap();
    workspace.write(source.path()).unwrap();
    let checkout = Checkout::of("compile-first", source.path()).unwrap();
    let events = tempfile::tempdir().unwrap();
    let mut runner = BazelRunner {
        compiled: [&heavy.label, &light.label, "//core:core"]
            .iter()
            .map(|l| l.to_string())
            .collect(),
        ..one_core_runner(&checkout, events.path())
    };
    let tasks = assigned(&[&heavy.label, &light.label]);
    // As a job that has run a batch before: its Bazel server up and the invocation's fixed cost
    // measured. Against a fresh server with the initial estimate, whichever source Bazel
    // compiled first was given the server's start-up as building (a flaky ranking).
    std::env::set_current_dir(&checkout.workspace).unwrap();
    let analyse = || {
        let started = std::time::Instant::now();
        let status = std::process::Command::new(BAZEL_REAL)
            .arg(checkout.startup_option())
            .args(["build", "--nobuild", "--local_cpu_resources=1", "--"])
            .args([&heavy.label, &light.label])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "loading and analysis failed: {status}");
        started.elapsed()
    };
    let warm_up = analyse();
    runner.overhead = analyse();
    runner.measured = true;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (sender, mut streamed) = tokio::sync::mpsc::unbounded_channel();
    let reports = runtime.block_on(async {
        let mut batch = Batch::new(CancellationToken::new(), sender);
        batch.compile_first = true;
        tokio::time::timeout(Duration::from_secs(600), runner.run(&tasks, batch))
            .await
            .expect("the batch did not finish in 10 minutes")
    });
    let mut results = HashMap::new();
    while let Ok(report) = streamed.try_recv() {
        results.insert(tasks[report.task as usize].text.clone(), report.result);
    }
    for report in reports {
        results
            .entry(tasks[report.task as usize].text.clone())
            .or_insert(report.result);
    }
    let commands = |file: &str| -> Vec<(String, String)> {
        let text = std::fs::read_to_string(events.path().join(file)).unwrap_or_default();
        wrapper::bazel::bep::BatchEvents::parse(&text)
            .take_commands()
            .into_iter()
            .map(|c| {
                let output = c
                    .output
                    .map(|o| o.display().to_string())
                    .unwrap_or_default();
                (c.label, output)
            })
            .collect()
    };
    let (compiled, ran) = (commands("batch-1-compile.json"), commands("batch-1.json"));
    let why = format!(
        "server start {warm_up:?}, fixed cost {:?}; nominal compiles {} {} ms, {} {} ms; \
         compile pass {compiled:?}; batch {ran:?}; results {results:?}",
        runner.overhead, heavy.label, heavy.compile_ms, light.label, light.compile_ms
    );
    assert_eq!(results.len(), 2, "both reported: {why}");
    assert!(
        results
            .values()
            .all(|r| r.outcome.is_success() && r.executed),
        "both passed: {why}"
    );
    // The pass compiled each test's sources and nothing of `//core`.
    for label in [&heavy.label, &light.label] {
        assert!(
            compiled
                .iter()
                .any(|(l, o)| l == label && o.ends_with(".o")),
            "{label} compiled first: {why}"
        );
    }
    assert!(
        compiled
            .iter()
            .all(|(l, o)| l != "//core:core" && o.ends_with(".o")),
        "only the tests' object files: {why}"
    );
    // The batch built `//core` and linked, and compiled no test source again.
    assert!(ran.iter().any(|(l, _)| l == "//core:core"), "{why}");
    assert!(
        !ran.iter()
            .any(|(l, o)| (l == &heavy.label || l == &light.label) && o.ends_with(".o")),
        "no test source compiled twice: {why}"
    );
    // What the pass compiled is each test's cost: the heavy one's compile is its own.
    assert!(
        results[&heavy.label].build_ms > 2 * results[&light.label].build_ms,
        "the heavy test's compiling counted: {why}"
    );
}
