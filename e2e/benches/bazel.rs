//! Real-Bazel benchmark: `bazel test` through the wrapper, 1 job against 4 jobs.
//!
//! The e2e setup with a generated workspace: 40 `sh_test` targets in 4 packages whose sleeps,
//! drawn from a seeded log-normal distribution with a few long ones, add up to 80 s (the longest
//! 7 s). Every job runs Debian's Bazel 4.2.3 through its launcher and `tools/bazel`, in its own
//! checkout with its own output root, with `--local_test_jobs=1` (one test at a time, like a
//! 1-CPU CI machine, so the ideal for N jobs is `max(total / N, longest)` and every per-batch
//! cost shows). Runs, each with a fresh nginx remote cache and a new run id:
//!
//! 1. 1 job, coordinator A (cold: no timing history);
//! 2. 4 jobs, coordinator B (cold);
//! 3. 4 jobs, coordinator A again, which has the history of run 1 (warm);
//! 4. plain `bazel-4 test` of the same workspace, 1 job, no wrapper: the wrapper's own cost.
//!
//! Before timing, the four checkouts' Bazel servers are started and `bazel build //...` run in
//! each (the tests are built, none runs). Before each run a file every test depends on is
//! rewritten, so that every test is out of date locally and in the (fresh) remote cache, as after
//! a commit touching a shared dependency: the tests really execute, each run.
//!
//! Measured: the wall time of each run (start of the jobs to the last job's exit), and from the
//! build events each batch keeps (`TASK_SHARDING_BEP_DIR`) the per-batch overhead (a batch's wall
//! time minus its tests' durations, the tests running one at a time) and the time between a
//! job's batches (Bazel exiting, the wrapper's round trip to the coordinator, the next Bazel
//! client starting).
//!
//! Run: `cargo build --release --workspace --bins && cargo bench -p e2e --bench bazel`.
//! Needs Bazel and nginx (`scripts/e2e-env.sh install` is run first); takes about 4 minutes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use e2e::bazel::{
    begin, clean_env, copy_tree, parse_summary, repo_root, tail, unique_run_id, Checkout, Finished,
    Nginx, Running, BAZEL_REAL, LAUNCHER,
};
use e2e::bench::{epoch_ms, read_batches, wait_jobs, Batch, Rng};
use e2e::{binary, Coordinator};

/// The number of test targets.
const TESTS: usize = 40;
/// What their sleeps add up to.
const TOTAL_MS: u64 = 80_000;
/// The longest sleep.
const LONGEST_MS: u64 = 7_000;
/// The distribution: log-normal with this sigma, and this many drawn three times longer.
const SIGMA: f64 = 0.75;
const OUTLIERS: usize = 3;
const SEED: u64 = 20_261_128;
/// The packages the tests are spread over, ten each.
const PACKAGES: [&str; 4] = ["alpha", "beta", "gamma", "delta"];
/// The jobs of the sharded runs.
const JOBS: usize = 4;
/// Longest a run may take before it counts as hung.
const LIMIT: Duration = Duration::from_secs(300);
/// Every job's history scope, so that run 3 finds run 1's history whatever the checkout is called.
const HISTORY_SCOPE: &str = "bazel-benchmark";

// ---------------------------------------------------------------------------------------------
// The workload and its workspace
// ---------------------------------------------------------------------------------------------

/// The tests: labels in label order, and their sleeps.
struct Workload {
    tests: Vec<(String, Duration)>,
}

impl Workload {
    /// Log-normal sleeps, a few three times longer, scaled to add up to `TOTAL_MS` with none
    /// above `LONGEST_MS`, in steps of 100 ms (at least 200 ms).
    fn generate() -> Workload {
        let mut rng = Rng(SEED);
        let mut sleeps: Vec<f64> = (0..TESTS).map(|_| (SIGMA * rng.normal()).exp()).collect();
        for _ in 0..OUTLIERS {
            let i = (rng.next_u64() % TESTS as u64) as usize;
            sleeps[i] *= 3.0;
        }
        // Scale to the total and cap at the longest, until both hold.
        for _ in 0..50 {
            let sum: f64 = sleeps.iter().sum();
            for s in &mut sleeps {
                *s = (*s * TOTAL_MS as f64 / sum).min(LONGEST_MS as f64);
            }
        }
        let mut ms: Vec<u64> = sleeps
            .iter()
            .map(|s| ((s / 100.0).round() as u64 * 100).max(200))
            .collect();
        // Rounding leaves the sum a few hundred ms off: take it from (or give it to) the
        // shortest ones, so the total is exact.
        let mut order: Vec<usize> = (0..TESTS).collect();
        order.sort_by_key(|&i| ms[i]);
        let mut k = 0;
        while ms.iter().sum::<u64>() != TOTAL_MS {
            let i = order[k % (TESTS / 2)];
            if ms.iter().sum::<u64>() > TOTAL_MS {
                if ms[i] > 200 {
                    ms[i] -= 100;
                }
            } else {
                ms[i] += 100;
            }
            k += 1;
        }
        let tests = ms
            .iter()
            .enumerate()
            .map(|(i, &ms)| {
                let label = format!("//{}:t{i:02}", PACKAGES[i / (TESTS / PACKAGES.len())]);
                (label, Duration::from_millis(ms))
            })
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .collect();
        Workload { tests }
    }

    fn total(&self) -> Duration {
        self.tests.iter().map(|(_, d)| *d).sum()
    }

    fn longest(&self) -> Duration {
        self.tests.iter().map(|(_, d)| *d).max().unwrap_or_default()
    }

    fn labels(&self) -> BTreeSet<String> {
        self.tests.iter().map(|(l, _)| l.clone()).collect()
    }

    /// `max(total / jobs, longest)`.
    fn ideal(&self, jobs: usize) -> Duration {
        (self.total() / jobs as u32).max(self.longest())
    }

    /// Writes the workspace: `e2e/workspace`'s WORKSPACE, .bazelignore and third_party (the
    /// offline repository overrides), `//common:stamp.txt`, and the test packages.
    fn write_workspace(&self, dir: &Path) -> Result<()> {
        let source = repo_root().join("e2e/workspace");
        std::fs::create_dir_all(dir)?;
        for file in ["WORKSPACE", ".bazelignore"] {
            std::fs::copy(source.join(file), dir.join(file))
                .with_context(|| format!("cannot copy e2e/workspace/{file}"))?;
        }
        copy_tree(&source.join("third_party"), &dir.join("third_party"))?;
        std::fs::create_dir_all(dir.join("common"))?;
        std::fs::write(dir.join("common/stamp.txt"), "initial\n")?;
        // Run once before timing, so that no run pays for the server's first test command.
        let warm = dir.join("common/warm_test.sh");
        std::fs::write(&warm, "#!/bin/sh\nexit 0\n")?;
        let mut permissions = std::fs::metadata(&warm)?.permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
        std::fs::set_permissions(&warm, permissions)?;
        std::fs::write(
            dir.join("common/BUILD"),
            "# Every benchmark test depends on stamp.txt: rewriting it makes them all out of date.\n\
             exports_files([\"stamp.txt\"])\n\n\
             # Not part of //...: run by the warm-up only.\n\
             sh_test(\n    name = \"warm_test\",\n    size = \"small\",\n    \
             srcs = [\"warm_test.sh\"],\n    tags = [\"manual\"],\n)\n",
        )?;
        for package in PACKAGES {
            let pkg = dir.join(package);
            std::fs::create_dir_all(&pkg)?;
            let script = pkg.join("sleep_test.sh");
            std::fs::write(
                &script,
                "#!/bin/sh\n# A benchmark test: sleeps $1 seconds.\nexec sleep \"$1\"\n",
            )?;
            let mut permissions = std::fs::metadata(&script)?.permissions();
            std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
            std::fs::set_permissions(&script, permissions)?;
            let mut build =
                String::from("# Generated by e2e/benches/bazel.rs: tests that sleep.\n");
            for (label, sleep) in &self.tests {
                let Some(name) = label.strip_prefix(&format!("//{package}:")) else {
                    continue;
                };
                build.push_str(&format!(
                    "\nsh_test(\n    name = \"{name}\",\n    size = \"medium\",\n    srcs = [\"sleep_test.sh\"],\n    \
                     args = [\"{:.1}\"],\n    data = [\"//common:stamp.txt\"],\n)\n",
                    sleep.as_secs_f64()
                ));
            }
            std::fs::write(pkg.join("BUILD"), build)?;
        }
        Ok(())
    }
}

/// Rewrites the file every test depends on, in each checkout (the same content in all).
fn touch_stamp(checkouts: &[Checkout], run: &str) -> Result<()> {
    for checkout in checkouts {
        std::fs::write(
            checkout.workspace.join("common/stamp.txt"),
            format!("{run} {}\n", epoch_ms()),
        )?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Build events
// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// Runs
// ---------------------------------------------------------------------------------------------

/// What one run measured.
struct RunStats {
    name: String,
    jobs: usize,
    wall: Duration,
    batches: Vec<Batch>,
    /// When the jobs were started (Unix ms).
    start_ms: u64,
    /// When the last job exited (Unix ms).
    end_ms: u64,
    /// Lines of analysis-cache trouble seen in the jobs' output.
    notes: Vec<String>,
}

impl RunStats {
    /// The measured per-batch overhead of each batch that ran to its end, in milliseconds.
    fn overheads_ms(&self) -> Vec<u64> {
        self.batches
            .iter()
            .filter(|b| !b.aborted())
            .filter_map(Batch::overhead_ms)
            .collect()
    }
}

/// The same for every job and run: the flags of `bazel test`.
fn test_args(cache: &Nginx) -> Vec<String> {
    vec![
        "test".into(),
        "//...".into(),
        format!("--remote_cache={}", cache.url),
        "--local_test_jobs=1".into(),
    ]
}

/// A job through the launcher: `bazel --output_user_root=... ARGS` in its checkout, with the
/// wrapper configured (as `e2e::bazel::BazelEnv::job_command` does).
fn job_command(
    checkout: &Checkout,
    coordinator: &Coordinator,
    run_id: &str,
    client_id: &str,
    bep_dir: &Path,
    args: &[String],
) -> Command {
    let mut command = Command::new(LAUNCHER);
    clean_env(&mut command);
    command
        .current_dir(&checkout.workspace)
        .env("TASK_SHARDING_COORDINATOR", &coordinator.addr)
        .env("TASK_SHARDING_CA", &coordinator.cert)
        .env("TASK_SHARDING_RUN_ID", run_id)
        .env("TASK_SHARDING_BIN", binary("task-sharding"))
        .env("TASK_SHARDING_CLIENT_ID", client_id)
        .env("TASK_SHARDING_BEP_DIR", bep_dir)
        .env("TASK_SHARDING_HISTORY_SCOPE", HISTORY_SCOPE)
        .arg(checkout.startup_option())
        .args(args)
        .stdin(Stdio::null());
    command
}

fn describe(jobs: &[Finished]) -> String {
    let mut text = String::new();
    for job in jobs {
        text.push_str(&format!(
            "\n===== {}: {} =====\n--- stdout (last 50 lines) ---\n{}\n--- stderr (last 40 lines) ---\n{}\n",
            job.name,
            job.output.status,
            tail(&job.stdout(), 50),
            tail(&job.stderr(), 40)
        ));
    }
    text
}

/// Bazel lines saying the analysis cache was thrown away (the warm-up would then not be fair).
fn analysis_notes(jobs: &[Finished]) -> Vec<String> {
    jobs.iter()
        .flat_map(|job| {
            job.stderr()
                .lines()
                .filter(|l| l.contains("discarding analysis cache"))
                .map(|l| format!("{}: {l}", job.name))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Every test executed (none came from a cache), each at least once; returns how many extra
/// executions there were (backup copies).
fn check_executions(batches: &[Batch], workload: &Workload, why: &str) -> Result<usize> {
    let mut executed: BTreeMap<&str, usize> = BTreeMap::new();
    for batch in batches {
        for (label, _, really) in &batch.attempts {
            ensure!(
                *really,
                "{label} came from a cache instead of executing{why}"
            );
            *executed.entry(label).or_default() += 1;
        }
    }
    let labels: BTreeSet<String> = executed.keys().map(|l| l.to_string()).collect();
    ensure!(
        labels == workload.labels(),
        "the build events show executions of {labels:?}, not every target{why}"
    );
    Ok(executed.values().sum::<usize>() - TESTS)
}

/// `jobs` jobs (`checkouts[..jobs]`) run `bazel test //...` through the wrapper against
/// `coordinator`, with a fresh remote cache and run id.
fn sharded_run(
    name: &str,
    coordinator: &Coordinator,
    checkouts: &[Checkout],
    workload: &Workload,
) -> Result<RunStats> {
    let cache = Nginx::start()?;
    let bep = tempfile::Builder::new()
        .prefix("bench-bazel-bep-")
        .tempdir()?;
    let run_id = unique_run_id("bench-bazel");
    touch_stamp(checkouts, &run_id)?;
    let args = test_args(&cache);

    let start_ms = epoch_ms();
    let started = Instant::now();
    let mut running = Running::default();
    for (i, checkout) in checkouts.iter().enumerate() {
        let client = format!("job-{}", i + 1);
        let command = job_command(checkout, coordinator, &run_id, &client, bep.path(), &args);
        running.spawn(&client, command)?;
    }
    let (jobs, _, last) = wait_jobs(running, started, LIMIT)?;
    let wall = last - started;
    let end_ms = start_ms + wall.as_millis() as u64;
    let why = format!(
        "\n(run {name}){}\n===== coordinator log (last 40 lines) =====\n{}",
        describe(&jobs),
        tail(&coordinator.log(), 40)
    );

    for job in &jobs {
        ensure!(
            job.code() == Some(0),
            "{} exited with {}{why}",
            job.name,
            job.output.status
        );
        ensure!(
            job.stderr()
                .contains(&format!("task-sharding: sharding {TESTS} test targets")),
            "{} did not shard{why}",
            job.name
        );
    }
    let first = jobs[0].summary();
    for job in &jobs {
        ensure!(
            job.summary() == first,
            "{} and job-1 printed different summaries{why}",
            job.name
        );
    }
    let summary = parse_summary(&first).with_context(|| format!("job-1's summary{why}"))?;
    ensure!(
        summary.tasks == TESTS,
        "the summary has {} tasks{why}",
        summary.tasks
    );
    let listed: BTreeSet<String> = summary.labels().into_iter().collect();
    ensure!(
        summary.rows.len() == TESTS && listed == workload.labels(),
        "the summary does not list every target exactly once{why}"
    );
    for row in &summary.rows {
        ensure!(row.outcome == "PASSED" && !row.cached, "{row:?}{why}");
    }

    let batches = read_batches(bep.path(), checkouts)?;
    check_executions(&batches, workload, &why)?;
    Ok(RunStats {
        name: name.to_string(),
        jobs: checkouts.len(),
        wall,
        batches,
        start_ms,
        end_ms,
        notes: analysis_notes(&jobs),
    })
}

/// Plain `bazel-4 test //...` in `checkout`: no launcher, no wrapper, one invocation.
fn plain_run(name: &str, checkout: &Checkout, workload: &Workload) -> Result<RunStats> {
    let cache = Nginx::start()?;
    let bep = tempfile::Builder::new()
        .prefix("bench-bazel-bep-")
        .tempdir()?;
    std::fs::create_dir_all(bep.path().join("plain"))?;
    let events = bep.path().join("plain/batch-1.json");
    touch_stamp(std::slice::from_ref(checkout), name)?;
    let mut command = Command::new(BAZEL_REAL);
    clean_env(&mut command);
    command
        .current_dir(&checkout.workspace)
        .arg(checkout.startup_option())
        .args(test_args(&cache))
        .arg(format!("--build_event_json_file={}", events.display()))
        .stdin(Stdio::null());

    let start_ms = epoch_ms();
    let started = Instant::now();
    let mut running = Running::default();
    running.spawn("plain", command)?;
    let (jobs, _, last) = wait_jobs(running, started, LIMIT)?;
    let wall = last - started;
    let why = format!("\n(run {name}){}", describe(&jobs));
    ensure!(
        jobs[0].code() == Some(0),
        "plain bazel-4 exited with {}{why}",
        jobs[0].output.status
    );
    let batches = read_batches(bep.path(), std::slice::from_ref(checkout))?;
    check_executions(&batches, workload, &why)?;
    Ok(RunStats {
        name: name.to_string(),
        jobs: 1,
        wall,
        batches,
        start_ms,
        end_ms: start_ms + wall.as_millis() as u64,
        notes: analysis_notes(&jobs),
    })
}

/// Starts each checkout's Bazel server, builds everything (no test runs), then runs the one
/// manual test `//common:warm_test` with a remote cache; the checkouts all at once.
fn warm_up(checkouts: &[Checkout]) -> Result<Duration> {
    let started = Instant::now();
    let cache = Nginx::start()?;
    let build = ["build", "//...", "--local_test_jobs=1"]
        .map(String::from)
        .to_vec();
    let mut test = test_args(&cache);
    test[1] = "//common:warm_test".into();
    for args in [build, test] {
        let mut running = Running::default();
        for (i, checkout) in checkouts.iter().enumerate() {
            let mut command = Command::new(BAZEL_REAL);
            clean_env(&mut command);
            command
                .current_dir(&checkout.workspace)
                .arg(checkout.startup_option())
                .args(&args)
                .stdin(Stdio::null());
            running.spawn(&format!("warm-up-{}", i + 1), command)?;
        }
        let (jobs, _, _) = wait_jobs(running, Instant::now(), LIMIT)?;
        for job in &jobs {
            ensure!(
                job.code() == Some(0),
                "`bazel {}` failed in {}: {}\n{}",
                args.join(" "),
                job.name,
                job.output.status,
                tail(&job.stderr(), 40)
            );
        }
    }
    Ok(started.elapsed())
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

fn ms_secs(ms: f64) -> String {
    format!("{:.2}s", ms / 1000.0)
}

fn mean(values: &[u64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<u64>() as f64 / values.len() as f64)
}

/// Per run: the time between consecutive batches of a job, and from the start of the jobs to
/// each job's first batch.
fn gaps(run: &RunStats) -> (Vec<u64>, Vec<u64>) {
    let mut per_job: BTreeMap<&str, Vec<&Batch>> = BTreeMap::new();
    for batch in &run.batches {
        per_job.entry(&batch.job).or_default().push(batch);
    }
    let mut between = Vec::new();
    let mut first = Vec::new();
    for batches in per_job.values() {
        first.push(batches[0].start_ms.saturating_sub(run.start_ms));
        for pair in batches.windows(2) {
            if let Some(finish) = pair[0].finish_ms {
                between.push(pair[1].start_ms.saturating_sub(finish));
            }
        }
    }
    (between, first)
}

fn print_report(workload: &Workload, warm_up: Duration, runs: &[RunStats]) {
    let one_job = runs[0].wall;
    println!();
    println!(
        "{:<34} {:>4} {:>7} {:>7} {:>10} {:>8} {:>7} {:>15}",
        "run", "jobs", "wall", "ideal", "efficiency", "speedup", "batches", "overhead/batch"
    );
    for run in runs {
        let ideal = workload.ideal(run.jobs);
        let overheads = run.overheads_ms();
        let aborted = run.batches.iter().filter(|b| b.aborted()).count();
        let batches = if aborted > 0 {
            format!("{}+{aborted}ab", run.batches.len() - aborted)
        } else {
            run.batches.len().to_string()
        };
        println!(
            "{:<34} {:>4} {:>7} {:>7} {:>10.2} {:>7.2}x {:>7} {:>15}",
            run.name,
            run.jobs,
            secs(run.wall),
            secs(ideal),
            ideal.as_secs_f64() / run.wall.as_secs_f64(),
            one_job.as_secs_f64() / run.wall.as_secs_f64(),
            batches,
            mean(&overheads).map_or("-".into(), ms_secs),
        );
    }
    println!();
    println!("where the time went (per run):");
    println!(
        "{:<34} {:>14} {:>14} {:>13} {:>11} {:>11} {:>7}",
        "run", "overhead max", "between batch", "to 1st batch", "after last", "tests ran", "extra"
    );
    for run in runs {
        let overheads = run.overheads_ms();
        let (between, first) = gaps(run);
        let last_finish = run
            .batches
            .iter()
            .filter_map(|b| b.finish_ms)
            .max()
            .unwrap_or(run.end_ms);
        let tests_ms: u64 = run
            .batches
            .iter()
            .flat_map(|b| &b.attempts)
            .map(|a| a.1)
            .sum();
        let executions: usize = run.batches.iter().map(|b| b.attempts.len()).sum();
        println!(
            "{:<34} {:>14} {:>14} {:>13} {:>11} {:>11} {:>7}",
            run.name,
            overheads
                .iter()
                .max()
                .map_or("-".into(), |&m| ms_secs(m as f64)),
            match mean(&between) {
                Some(m) => format!("{} ({})", ms_secs(m), between.len()),
                None => "-".into(),
            },
            mean(&first).map_or("-".into(), ms_secs),
            ms_secs(run.end_ms.saturating_sub(last_finish) as f64),
            ms_secs(tests_ms as f64),
            executions - TESTS,
        );
    }
    println!();
    println!("batches per job (tests in the batch / its wall time), and the job's busy time:");
    for run in runs {
        println!("{}:", run.name);
        let mut per_job: BTreeMap<&str, Vec<&Batch>> = BTreeMap::new();
        for batch in &run.batches {
            per_job.entry(&batch.job).or_default().push(batch);
        }
        for (job, batches) in per_job {
            let cells: Vec<String> = batches
                .iter()
                .map(|b| {
                    let wall = b
                        .wall_ms()
                        .map_or("unfinished".into(), |w| ms_secs(w as f64));
                    let aborted = if b.aborted() { " aborted" } else { "" };
                    format!("{}/{wall}{aborted}", b.attempts.len())
                })
                .collect();
            let busy: u64 = batches.iter().filter_map(|b| b.wall_ms()).sum();
            println!(
                "  {job}: {}  busy {} from {} to {}",
                cells.join(" "),
                ms_secs(busy as f64),
                ms_secs(batches[0].start_ms.saturating_sub(run.start_ms) as f64),
                ms_secs(
                    batches
                        .iter()
                        .filter_map(|b| b.finish_ms)
                        .max()
                        .unwrap_or(run.end_ms)
                        .saturating_sub(run.start_ms) as f64
                ),
            );
        }
    }
    println!();
    println!(
        "ideal = max(total sleep / jobs, longest sleep); efficiency = ideal / wall; speedup = wall of \
         the first run / wall."
    );
    println!(
        "overhead/batch = a batch's wall time (BEP started -> buildFinished) minus its tests' \
         testAttemptDurationMillis (mean; max in the second table); ab = aborted batches."
    );
    println!(
        "between batch = from one batch's buildFinished to the job's next batch's start (mean, and \
         how many): Bazel exiting, the wrapper's round trip to the coordinator, the next Bazel \
         client starting."
    );
    println!(
        "to 1st batch = start of the jobs to each job's first batch (mean): launcher, tools/bazel, \
         `bazel query`, connecting; after last = last batch finished to the last job's exit."
    );
    println!(
        "tests ran = sum of the tests' attempt durations (the sleeps plus sh/sandbox start); \
         extra = executions beyond one per target (backup copies)."
    );
    println!(
        "warmed before timing (once, {}): the 4 checkouts' Bazel servers started, `bazel build \
         //...` and a trivial manual test (//common:warm_test) run in each; every run rewrote \
         //common:stamp.txt (a data dependency of every test) and used a fresh nginx remote \
         cache, so all {TESTS} tests really executed each time.",
        secs(warm_up)
    );
    for run in runs {
        for note in &run.notes {
            println!("note ({}): {note}", run.name);
        }
    }
}

fn run() -> Result<()> {
    let workload = Workload::generate();
    let mut sorted: Vec<Duration> = workload.tests.iter().map(|t| t.1).collect();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    let top: Vec<String> = sorted.iter().take(5).map(|d| secs(*d)).collect();
    println!(
        "bazel benchmark: {TESTS} sh_test targets in {} packages, sleeps log-normal (sigma {SIGMA}, \
         {OUTLIERS} drawn 3x longer, seed {SEED}): total {}, longest {}, median {}, shortest {}; \
         the five longest {}",
        PACKAGES.len(),
        secs(workload.total()),
        secs(workload.longest()),
        secs(sorted[TESTS / 2]),
        secs(sorted[TESTS - 1]),
        top.join(" ")
    );
    println!(
        "each job: its own checkout and Bazel server, `bazel test //... --remote_cache=<fresh nginx> \
         --local_test_jobs=1` through /usr/bin/bazel -> tools/bazel -> task-sharding ({}).",
        binary("task-sharding").display()
    );

    let source = tempfile::Builder::new()
        .prefix("bench-bazel-ws-")
        .tempdir()?;
    workload.write_workspace(source.path())?;
    let checkouts: Vec<Checkout> = (1..=JOBS)
        .map(|i| Checkout::of(&format!("bench-job-{i}"), source.path()))
        .collect::<Result<_>>()?;
    eprintln!("warming up {JOBS} Bazel servers ...");
    let warm = warm_up(&checkouts)?;

    let coordinator_a = Coordinator::start(&[])?;
    let coordinator_b = Coordinator::start(&[])?;
    let mut runs = Vec::new();
    let plan: [(&str, usize); 3] = [
        ("1 job, cold (coordinator A)", 1),
        ("4 jobs, cold (coordinator B)", JOBS),
        ("4 jobs, warm (A, history of 1 job)", JOBS),
    ];
    for (i, (name, jobs)) in plan.into_iter().enumerate() {
        let coordinator = if i == 1 {
            &coordinator_b
        } else {
            &coordinator_a
        };
        eprintln!("run {}: {name} ...", i + 1);
        let run = sharded_run(name, coordinator, &checkouts[..jobs], &workload)?;
        eprintln!("  {}", secs(run.wall));
        runs.push(run);
    }
    eprintln!("run 4: plain bazel-4 test, 1 job ...");
    runs.push(plain_run(
        "plain bazel-4 test, no wrapper",
        &checkouts[0],
        &workload,
    )?);
    print_report(&workload, warm, &runs);
    Ok(())
}

fn main() {
    let _serial = begin("bazel benchmark");
    // Everything started is stopped by the guards inside `run` (Bazel servers, nginx,
    // coordinators, jobs), on error and on panic alike, before the exit below.
    if let Err(e) = run() {
        eprintln!("bazel benchmark failed: {e:#}");
        std::process::exit(1);
    }
}
