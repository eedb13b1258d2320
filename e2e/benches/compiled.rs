//! Compile-heavy benchmark: `bazel test //...` of a generated C++ workspace, N simulated
//! machines on this one, through the wrapper against plain Bazel.
//!
//! The workspace (`e2e::compiled`): a shared `//core` library, a library per package and 60
//! `cc_test`s whose compile and run costs are CPU work, heavy-tailed and seeded. Before every run
//! `core/stamp.h` (included by every source) is rewritten and a fresh nginx remote cache started,
//! so everything is compiled and every test executed, each run, as after a commit to a shared
//! header.
//!
//! **N machines, honestly**: job k runs in its own cgroup (v1 `cpu` + `cpuacct`,
//! `ts-bench-job-k`) whose CPU quota is the share one machine gets, `min(1, CPUs / N)` cores,
//! and its Bazel is told so (`--local_cpu_resources=1 --local_test_jobs=1`). Each job has its
//! own checkout and Bazel server, started inside its cgroup, so the server's actions are
//! confined too. The baseline for N is *one* job with the same share running plain
//! `bazel-4 test //...`.
//!
//! For N = 1, 2, 4, in one run of the benchmark:
//!
//! - `plain`: the baseline (one per share; N = 1 and 2 share theirs);
//! - `ours, cold`: N jobs through the wrapper, a coordinator with no history;
//! - `ours, warm`: the same again on that coordinator, which now has the cold run's history;
//! - `static split`: N plain Bazels, job k given every N-th label (what a CI matrix without a
//!   coordinator does);
//! - `previous, cold` and `previous, warm`: the same two runs with the coordinator and wrapper
//!   of commit [`PREVIOUS`], the scheduler before issue 11 (results only at a batch's end, a
//!   batch's compiling counted as overhead, no remainder backups, no affinity), when
//!   `BENCH_PREVIOUS_BINS` names a directory holding its `coordinator` and `task-sharding`
//!   (`scripts/bench.sh compiled` builds them); left out, and said so, otherwise.
//!
//! Measured: wall time (the jobs' start to the last exit); bound = max(baseline wall / N,
//! baseline critical path) and efficiency = bound / wall; speedup = baseline wall / wall; CPU
//! time of each job's cgroup (`cpuacct.usage`: Bazel server, compilers, tests, wrapper) and
//! what all jobs spent beyond the baseline; actions executed (not cache hits), from Bazel's
//! `processes:` lines, beyond the baseline's (built more than once); per job, its busy time
//! (its Bazel invocations, from their build events) and idle time; the largest job's share of
//! the CPU work relative to a fair 1/N. Beside the bound, the core-first bound `bound*`: every
//! test links `//core`, and jobs that start together against an empty cache each compile all
//! of it before anything else, so scheduling whole targets cannot beat `core + (baseline −
//! core) / N`, `core` being `bazel build //core` alone at the share (measured with each
//! share's baseline and after each N's runs, which also shows how far the machine's speed
//! drifted; N = 1 and 2 share a baseline).
//!
//! Ours and the previous scheduler run in mirrored turns (ours cold, previous cold, previous
//! warm, ours warm), so that neither gets all of a slow stretch of this machine, nor always
//! goes first while it speeds up or slows down.
//!
//! Run: `scripts/bench.sh compiled` (as root, for the cgroups; about 25 minutes);
//! `BENCH_MACHINES=2,4` runs only those N; `BENCH_TIMELINE=1` adds every invocation of every run.
//! `cargo bench -p e2e --bench compiled -- --write DIR` only writes the workspace into DIR.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use e2e::bazel::{
    begin, clean_env, parse_summary, tail, unique_run_id, Checkout, Finished, Nginx, Running,
    BAZEL_REAL, LAUNCHER,
};
use e2e::bench::{read_batches, wait_jobs, Batch};
use e2e::compiled::CompiledWorkspace;
use e2e::{binary, Coordinator};

const SEED: u64 = 20_261_202;
/// The tests, and what compiling their sources and running them costs in all (CPU ms).
const TESTS: usize = 60;
const TEST_COMPILE_MS: u64 = 24_000;
const TEST_RUN_MS: u64 = 20_000;
/// The simulated machine counts.
const MACHINES: [usize; 3] = [1, 2, 4];
/// Names some of [`MACHINES`] (`BENCH_MACHINES=4`, or `2,4`) to run only those: a quicker
/// comparison of two builds (`BENCH_PREVIOUS_BINS` may name any build's binaries).
const MACHINES_VAR: &str = "BENCH_MACHINES";
/// Set (`BENCH_TIMELINE=1`), the report ends with every invocation of every run: when it
/// started, how long it took, what it completed and executed.
const TIMELINE_VAR: &str = "BENCH_TIMELINE";
/// Longest a run may take before it counts as hung.
const LIMIT: Duration = Duration::from_secs(900);
/// The commit whose scheduler the `previous` runs use (see the module's documentation).
const PREVIOUS: &str = "662209b";
/// Every job's history scope, so that a warm run finds the cold run's history.
const HISTORY_SCOPE: &str = "compiled-benchmark";

// ---------------------------------------------------------------------------------------------
// CPU shares
// ---------------------------------------------------------------------------------------------

/// One simulated machine's CPU: a cgroup v1 group in the `cpu` (quota) and `cpuacct` (usage)
/// hierarchies. Removed when dropped (after the Bazel server in it has been shut down).
struct Machine {
    cpu: PathBuf,
    acct: PathBuf,
}

impl Machine {
    fn create(name: &str) -> Result<Machine> {
        let machine = Machine {
            cpu: Path::new("/sys/fs/cgroup/cpu").join(name),
            acct: Path::new("/sys/fs/cgroup/cpuacct").join(name),
        };
        for dir in [&machine.cpu, &machine.acct] {
            std::fs::create_dir_all(dir).with_context(|| {
                format!(
                    "cannot create the cgroup {dir:?} (the benchmark confines each job to its CPU \
                     share with cgroup v1, as ../shared/BENCHMARKING.md describes; run it as root)"
                )
            })?;
        }
        Ok(machine)
    }

    /// Confines the group to `cores` cores' worth of CPU time.
    fn set_share(&self, cores: f64) -> Result<()> {
        std::fs::write(self.cpu.join("cpu.cfs_period_us"), "100000")?;
        std::fs::write(
            self.cpu.join("cpu.cfs_quota_us"),
            format!("{}", (cores * 100_000.0).round() as u64),
        )
        .context("cannot set the cgroup's CPU quota")
    }

    /// CPU time used by everything that ever ran in the group.
    fn usage(&self) -> Result<Duration> {
        let text = std::fs::read_to_string(self.acct.join("cpuacct.usage"))?;
        Ok(Duration::from_nanos(text.trim().parse()?))
    }

    /// How long the quota held the group back (`throttled_time`).
    fn throttled(&self) -> Result<Duration> {
        let text = std::fs::read_to_string(self.cpu.join("cpu.stat"))?;
        let ns = text
            .lines()
            .find_map(|l| l.strip_prefix("throttled_time "))
            .context("cpu.stat has no throttled_time")?;
        Ok(Duration::from_nanos(ns.trim().parse()?))
    }

    /// `program`, started inside the group (it and everything it starts, a Bazel server too).
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new("/bin/sh");
        clean_env(&mut command);
        command
            .arg("-c")
            .arg(r#"echo $$ > "$0/cgroup.procs" && echo $$ > "$1/cgroup.procs" && shift && exec "$@""#)
            .arg(&self.cpu)
            .arg(&self.acct)
            .arg(program)
            .stdin(Stdio::null());
        command
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        for dir in [&self.cpu, &self.acct] {
            // A process that has just exited can keep the group busy for a moment.
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// A job's checkout with its machine.
struct Job {
    machine: Machine,
    checkout: Checkout,
}

// ---------------------------------------------------------------------------------------------
// Runs
// ---------------------------------------------------------------------------------------------

/// What one run measured.
struct RunStats {
    name: String,
    jobs: usize,
    wall: Duration,
    /// Per job: CPU time, throttled time, actions executed, busy time (its invocations).
    per_job: Vec<JobStats>,
    /// `Critical Path: ...` of the (first) job's last invocation.
    critical_path: Option<Duration>,
    /// Test executions beyond one per target (backup copies).
    extra_executions: usize,
}

struct JobStats {
    cpu: Duration,
    throttled: Duration,
    actions: u64,
    busy: Duration,
    invocations: usize,
    /// Per invocation: whether it is a compile-first pass, when it started (ms after the run's
    /// first), its wall time, how many targets it completed, its tests' attempt time, actions
    /// executed (see [`TIMELINE_VAR`]).
    timeline: Vec<(bool, u64, u64, usize, u64, u64)>,
}

impl RunStats {
    fn cpu(&self) -> Duration {
        self.per_job.iter().map(|j| j.cpu).sum()
    }

    fn actions(&self) -> u64 {
        self.per_job.iter().map(|j| j.actions).sum()
    }

    /// The largest job's CPU work over a fair share (1.0 = perfectly even).
    fn max_share(&self) -> f64 {
        let fair = self.cpu().as_secs_f64() / self.jobs as f64;
        self.per_job
            .iter()
            .map(|j| j.cpu.as_secs_f64() / fair)
            .fold(0.0, f64::max)
    }
}

/// Actions Bazel executed (not cache hits) as its `INFO: N processes: 4 remote cache hit, 18
/// linux-sandbox.` lines say, per invocation in `stderr` (in order).
fn executed_actions(stderr: &str) -> Vec<u64> {
    let mut each = Vec::new();
    for line in stderr.lines() {
        let Some((_, kinds)) = line.split_once(" processes: ") else {
            continue;
        };
        let mut executed = 0;
        for kind in kinds.trim_end_matches('.').split(", ") {
            let Some((count, what)) = kind.split_once(' ') else {
                continue;
            };
            if !what.contains("cache hit") && what != "internal" {
                executed += count.parse::<u64>().unwrap_or(0);
            }
        }
        each.push(executed);
    }
    each
}

/// `INFO: Elapsed time: ..., Critical Path: 12.34s` (the last one in `stderr`).
fn critical_path(stderr: &str) -> Option<Duration> {
    let last = stderr.lines().rev().find_map(|l| {
        l.split_once("Critical Path: ")
            .map(|(_, rest)| rest.trim_end_matches('s').to_string())
    })?;
    last.parse::<f64>().ok().map(Duration::from_secs_f64)
}

/// The flags every run gives `bazel test`: one machine's share.
fn test_flags(cache: &Nginx) -> Vec<String> {
    vec![
        format!("--remote_cache={}", cache.url),
        "--local_cpu_resources=1".into(),
        "--local_test_jobs=1".into(),
    ]
}

fn describe(jobs: &[Finished]) -> String {
    jobs.iter()
        .map(|job| {
            format!(
                "\n===== {}: {} =====\n--- stdout (last 20 lines) ---\n{}\n\
                 --- stderr (last 40 lines) ---\n{}\n",
                job.name,
                job.output.status,
                tail(&job.stdout(), 20),
                tail(&job.stderr(), 40)
            )
        })
        .collect()
}

/// Runs `commands` (one per job, `jobs[i]`), one run: a fresh stamp is written first, then
/// the jobs start together. Checks every job exited 0 and every target ran.
fn run(
    name: &str,
    jobs: &[&Job],
    bep: &Path,
    commands: Vec<Command>,
    workspace: &CompiledWorkspace,
) -> Result<(RunStats, Vec<Finished>)> {
    let stamp = unique_run_id(name);
    for job in jobs {
        CompiledWorkspace::stamp(&job.checkout.workspace, &stamp)?;
    }
    let before: Vec<(Duration, Duration)> = jobs
        .iter()
        .map(|j| Ok((j.machine.usage()?, j.machine.throttled()?)))
        .collect::<Result<_>>()?;
    let started = Instant::now();
    let mut running = Running::default();
    for (i, command) in commands.into_iter().enumerate() {
        running.spawn(&format!("job-{}", i + 1), command)?;
    }
    let (finished, _, last) = wait_jobs(running, started, LIMIT)?;
    let wall = last - started;
    let why = format!("\n(run {name}){}", describe(&finished));
    for job in &finished {
        ensure!(
            job.code() == Some(0),
            "{} exited with {}{why}",
            job.name,
            job.output.status
        );
    }
    let batches = read_batches(bep, jobs.iter().map(|j| &j.checkout))?;
    let mut executed: BTreeMap<&str, usize> = BTreeMap::new();
    for batch in &batches {
        for (label, _, really) in &batch.attempts {
            ensure!(*really, "{label} came from a cache{why}");
            *executed.entry(label).or_default() += 1;
        }
    }
    let labels: Vec<String> = executed.keys().map(|l| l.to_string()).collect();
    ensure!(
        labels == workspace.labels(),
        "the build events show executions of {} targets, not all {TESTS}{why}",
        labels.len()
    );
    let first_start = batches.iter().map(|b| b.start_ms).min().unwrap_or(0);
    let mut per_job = Vec::new();
    for (i, (job, finished)) in jobs.iter().zip(&finished).enumerate() {
        let mine: Vec<&Batch> = batches
            .iter()
            .filter(|b| b.job == format!("job-{}", i + 1))
            .collect();
        let actions = executed_actions(&finished.stderr());
        let timeline = mine
            .iter()
            .enumerate()
            .map(|(k, b)| {
                (
                    b.compile,
                    b.start_ms - first_start,
                    b.wall_ms().unwrap_or(0),
                    b.targets.len(),
                    b.attempts.iter().map(|a| a.1).sum(),
                    actions.get(k).copied().unwrap_or(0),
                )
            })
            .collect();
        per_job.push(JobStats {
            timeline,
            cpu: job.machine.usage()? - before[i].0,
            throttled: job.machine.throttled()? - before[i].1,
            actions: actions.iter().sum(),
            busy: mine
                .iter()
                .filter_map(|b| b.wall_ms())
                .map(Duration::from_millis)
                .sum(),
            invocations: mine.len(),
        });
    }
    let stats = RunStats {
        name: name.to_string(),
        jobs: jobs.len(),
        wall,
        per_job,
        critical_path: critical_path(&finished[0].stderr()),
        extra_executions: executed.values().sum::<usize>() - TESTS,
    };
    Ok((stats, finished))
}

/// What every run starts with: a fresh, empty remote cache, and a directory for the jobs'
/// build event files.
fn fresh_run() -> Result<(Nginx, tempfile::TempDir)> {
    let cache = Nginx::start()?;
    let bep = tempfile::Builder::new()
        .prefix("bench-compiled-bep-")
        .tempdir()?;
    Ok((cache, bep))
}

/// Plain `bazel-4 test` of `targets` in each of `jobs` (the baseline with one job and `//...`,
/// a static split with several).
fn plain(
    name: &str,
    jobs: &[&Job],
    targets: &[Vec<String>],
    workspace: &CompiledWorkspace,
) -> Result<RunStats> {
    let (cache, bep) = fresh_run()?;
    let mut commands = Vec::new();
    for (i, (job, targets)) in jobs.iter().zip(targets).enumerate() {
        let dir = bep.path().join(format!("job-{}", i + 1));
        std::fs::create_dir_all(&dir)?;
        let mut command = job.machine.command(BAZEL_REAL);
        command
            .current_dir(&job.checkout.workspace)
            .arg(job.checkout.startup_option())
            .arg("test")
            .args(test_flags(&cache))
            .arg(format!(
                "--build_event_json_file={}",
                dir.join("batch-1.json").display()
            ))
            .arg("--")
            .args(targets);
        commands.push(command);
    }
    Ok(run(name, jobs, bep.path(), commands, workspace)?.0)
}

/// `bazel test //...` through the launcher, `tools/bazel` and the wrapper in each of `jobs`,
/// against `coordinator`.
fn ours(
    name: &str,
    jobs: &[&Job],
    coordinator: &Coordinator,
    wrapper: &Path,
    workspace: &CompiledWorkspace,
) -> Result<RunStats> {
    let (cache, bep) = fresh_run()?;
    let run_id = unique_run_id("bench-compiled");
    let mut commands = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        let mut command = job.machine.command(LAUNCHER);
        command
            .current_dir(&job.checkout.workspace)
            .env("TASK_SHARDING_COORDINATOR", &coordinator.addr)
            .env("TASK_SHARDING_CA", &coordinator.cert)
            .env("TASK_SHARDING_RUN_ID", &run_id)
            .env("TASK_SHARDING_BIN", wrapper)
            .env("TASK_SHARDING_CLIENT_ID", format!("job-{}", i + 1))
            .env("TASK_SHARDING_BEP_DIR", bep.path())
            .env("TASK_SHARDING_HISTORY_SCOPE", HISTORY_SCOPE)
            .arg(job.checkout.startup_option())
            .args(["test", "//..."])
            .args(test_flags(&cache));
        commands.push(command);
    }
    let (stats, finished) = run(name, jobs, bep.path(), commands, workspace)?;
    // Every job gives the verdict of the whole run: the same summary, every target passed.
    let why = format!("\n(run {name}){}", describe(&finished));
    let first = finished[0].summary();
    let summary = parse_summary(&first).with_context(|| format!("job-1's summary{why}"))?;
    let tests: BTreeSet<String> = workspace.labels().into_iter().collect();
    let expected: BTreeSet<String> = tests
        .iter()
        .cloned()
        .chain(workspace.built_labels())
        .collect();
    ensure!(
        summary.labels().into_iter().collect::<BTreeSet<_>>() == expected
            && summary.rows.iter().all(|r| r.outcome
                == if tests.contains(&r.label) {
                    "PASSED"
                } else {
                    "BUILT"
                }),
        "job-1's summary does not show every test passed and every other target built{why}"
    );
    for job in &finished {
        ensure!(
            job.summary() == first,
            "{} and job-1 printed different summaries{why}",
            job.name
        );
    }
    Ok(stats)
}

/// How long `//core` alone takes to build on `job` at its share: a fresh stamp, no remote
/// cache, plain `bazel-4 build //core`. Every test links `//core`, so no job tests anything
/// before all of core's objects exist; jobs that start together against an empty cache each
/// compile all of them (Bazel looks each action up in the cache as it starts it, and they
/// all start it at once), so a scheduler of whole targets cannot make that phase shorter than
/// this (see [`print_rows`]' core-first bound).
fn core_alone(job: &Job) -> Result<Duration> {
    CompiledWorkspace::stamp(&job.checkout.workspace, &unique_run_id("core-alone"))?;
    let mut command = job.machine.command(BAZEL_REAL);
    command
        .current_dir(&job.checkout.workspace)
        .arg(job.checkout.startup_option())
        .args(["build", "--local_cpu_resources=1", "//core"]);
    let mut running = Running::default();
    let started = Instant::now();
    running.spawn("core-alone", command)?;
    let (finished, _, last) = wait_jobs(running, started, LIMIT)?;
    ensure!(
        finished[0].code() == Some(0),
        "`bazel build //core` failed: {}\n{}",
        finished[0].output.status,
        tail(&finished[0].stderr(), 40)
    );
    Ok(last - started)
}

/// Starts each job's Bazel server inside its machine and has it build `//...` once, all jobs at
/// once, untimed (no remote cache, so nothing is shared). A fresh Bazel server is slow at first
/// (its JVM compiles Bazel's own code as it goes, in the job's CPU share): warming only some
/// servers — as loading and analysing alone did — charged that to whichever run a server
/// first built in: the baseline and job 1 in the first runs, jobs 3 and 4 in the first run
/// with four. Every run here starts from servers that have built it all; each run rewrites
/// the stamp header, so none of that work is reused.
fn start_servers(jobs: &[Job]) -> Result<()> {
    let mut running = Running::default();
    for (i, job) in jobs.iter().enumerate() {
        job.machine.set_share(1.0)?;
        let mut command = job.machine.command(BAZEL_REAL);
        command
            .current_dir(&job.checkout.workspace)
            .arg(job.checkout.startup_option())
            .args(["build", "//..."]);
        running.spawn(&format!("warm-up-{}", i + 1), command)?;
    }
    let (finished, _, _) = wait_jobs(running, Instant::now(), LIMIT)?;
    for job in &finished {
        ensure!(
            job.code() == Some(0),
            "`bazel build //...` failed in {}: {}\n{}",
            job.name,
            job.output.status,
            tail(&job.stderr(), 40)
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// One table row per run of `n` machines, against `baseline` (one job, the same share).
///
/// Beside the bound (the issue's: the baseline's work spread evenly, or its critical path),
/// the core-first bound: `core + (baseline − core) / N`, `core` being [`core_alone`] at this
/// share — what scheduling whole targets reaches at best when every job compiles `//core`
/// first, as Bazel does in jobs that start together. `eff*` is efficiency against it.
fn print_rows(n: usize, share: f64, baseline: &RunStats, core: Duration, runs: &[&RunStats]) {
    let bound = (baseline.wall / n as u32).max(baseline.critical_path.unwrap_or_default());
    let core_first = bound.max(core + baseline.wall.saturating_sub(core) / n as u32);
    for run in runs {
        let extra_cpu = run.cpu().as_secs_f64() - baseline.cpu().as_secs_f64();
        let extra_actions = run.actions() as i64 - baseline.actions() as i64;
        println!(
            "{:>2} {:>5.2} {:<20} {:>7} {:>7} {:>5.2} {:>7} {:>5.2} {:>7.2}x {:>7} {:>+8.1}s {:>5} {:>+6} {:>6.2} {:>6}",
            n,
            share,
            run.name,
            secs(run.wall),
            secs(bound),
            bound.as_secs_f64() / run.wall.as_secs_f64(),
            secs(core_first),
            core_first.as_secs_f64() / run.wall.as_secs_f64(),
            baseline.wall.as_secs_f64() / run.wall.as_secs_f64(),
            secs(run.cpu()),
            extra_cpu,
            run.actions(),
            extra_actions,
            run.max_share(),
            run.extra_executions,
        );
    }
}

fn print_jobs(runs: &[(usize, &RunStats)]) {
    println!();
    println!(
        "per job: invocations, busy (its Bazel invocations) / idle (the rest of the run's wall \
         time), CPU, time the quota held it back"
    );
    for (n, run) in runs {
        let cells: Vec<String> = run
            .per_job
            .iter()
            .enumerate()
            .map(|(i, j)| {
                format!(
                    "job-{}: {}x {}/{} cpu {} thr {}",
                    i + 1,
                    j.invocations,
                    secs(j.busy),
                    secs(run.wall.saturating_sub(j.busy)),
                    secs(j.cpu),
                    secs(j.throttled)
                )
            })
            .collect();
        println!("  N={n} {:<20} {}", run.name, cells.join("  "));
    }
    if std::env::var_os(TIMELINE_VAR).is_none() {
        return;
    }
    println!();
    println!(
        "per invocation: start (s after the run's first) +wall, targets completed, \
         test attempts (s), actions executed; `compile` marks a batch's compile-first pass"
    );
    for (n, run) in runs {
        println!("  N={n} {}", run.name);
        for (i, job) in run.per_job.iter().enumerate() {
            let cells: Vec<String> = job
                .timeline
                .iter()
                .map(|&(compile, start, wall, targets, tests, actions)| {
                    format!(
                        "{}{:.1}+{:.1} {targets}t {:.1}s {actions}a",
                        if compile { "compile " } else { "" },
                        start as f64 / 1e3,
                        wall as f64 / 1e3,
                        tests as f64 / 1e3
                    )
                })
                .collect();
            println!("    job-{}: {}", i + 1, cells.join(" | "));
        }
    }
}

fn benchmark() -> Result<()> {
    let workspace = CompiledWorkspace::generate(SEED, TESTS, TEST_COMPILE_MS, TEST_RUN_MS);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut runs_ms: Vec<u64> = workspace.tests.iter().map(|t| t.run_ms).collect();
    runs_ms.sort_unstable();
    let mut compiles: Vec<u64> = workspace.tests.iter().map(|t| t.compile_ms).collect();
    compiles.sort_unstable();
    println!(
        "compiled benchmark: {TESTS} cc_tests in {} packages (seed {SEED}); nominal CPU: compiling \
         {:.1}s (core {:.1}s, package libraries {:.1}s, tests {:.1}s: median {:.2}s, longest \
         {:.2}s), testing {:.1}s (median {:.2}s, longest {:.2}s); {cpus} CPUs here",
        e2e::compiled::PACKAGES.len(),
        workspace.compile_ms() as f64 / 1e3,
        workspace.core_ms.iter().sum::<u64>() as f64 / 1e3,
        workspace.lib_ms.values().sum::<u64>() as f64 / 1e3,
        TEST_COMPILE_MS as f64 / 1e3,
        compiles[TESTS / 2] as f64 / 1e3,
        compiles[TESTS - 1] as f64 / 1e3,
        workspace.run_ms() as f64 / 1e3,
        runs_ms[TESTS / 2] as f64 / 1e3,
        runs_ms[TESTS - 1] as f64 / 1e3,
    );

    let previous = std::env::var_os("BENCH_PREVIOUS_BINS").map(PathBuf::from);
    match &previous {
        Some(dir) => {
            for bin in ["coordinator", "task-sharding"] {
                ensure!(
                    dir.join(bin).is_file(),
                    "BENCH_PREVIOUS_BINS={}: no {bin} there",
                    dir.display()
                );
            }
        }
        None => eprintln!(
            "BENCH_PREVIOUS_BINS is not set: the previous scheduler ({PREVIOUS}) is left out"
        ),
    }

    let source = tempfile::Builder::new()
        .prefix("bench-compiled-ws-")
        .tempdir()?;
    workspace.write(source.path())?;
    let machines: Vec<usize> = match std::env::var(MACHINES_VAR) {
        Ok(list) => list
            .split(',')
            .map(|n| match n.trim().parse() {
                Ok(n) if MACHINES.contains(&n) => Ok(n),
                _ => anyhow::bail!("{MACHINES_VAR}={list}: each must be one of {MACHINES:?}"),
            })
            .collect::<Result<_>>()?,
        Err(_) => MACHINES.to_vec(),
    };
    let jobs_needed = *machines.iter().max().context("no machine counts")?;
    let mut jobs = Vec::new();
    for i in 1..=jobs_needed {
        jobs.push(Job {
            machine: Machine::create(&format!("ts-bench-job-{i}"))?,
            checkout: Checkout::of(&format!("bench-compiled-{i}"), source.path())?,
        });
    }
    eprintln!("starting {jobs_needed} Bazel servers in their cgroups; each builds //... once ...");
    start_servers(&jobs)?;

    // One baseline per share (N = 1 and 2 have the same), and per N its runs.
    let mut baselines: Vec<(f64, RunStats, Duration)> = Vec::new();
    // Per N: its share, its baseline, its runs, and `//core` alone again after them (how far
    // the machine's speed drifted meanwhile).
    let mut table: Vec<(usize, f64, usize, Vec<RunStats>, Duration)> = Vec::new();
    for n in machines {
        let share = (cpus as f64 / n as f64).min(1.0);
        for job in &jobs {
            job.machine.set_share(share)?;
        }
        let mine: Vec<&Job> = jobs[..n].iter().collect();
        let base = match baselines.iter().position(|(s, _, _)| *s == share) {
            Some(index) => index,
            None => {
                eprintln!("baseline: plain bazel-4 test //..., one job, {share} core(s) ...");
                let all = [vec!["//...".to_string()]];
                let stats = plain("plain, 1 job", &mine[..1], &all, &workspace)?;
                eprintln!("  {}", secs(stats.wall));
                eprintln!("`bazel-4 build //core` alone, one job, {share} core(s) ...");
                let core = core_alone(mine[0])?;
                eprintln!("  {}", secs(core));
                baselines.push((share, stats, core));
                baselines.len() - 1
            }
        };
        let mut runs = Vec::new();
        let ours_bins = (binary("coordinator"), binary("task-sharding"));
        let previous_bins = previous
            .as_ref()
            .filter(|_| n > 1)
            .map(|dir| (dir.join("coordinator"), dir.join("task-sharding")));
        // Both coordinators up front, their runs in turns and mirrored (ours cold, previous
        // cold, previous warm, ours warm): this machine's speed drifts within a benchmark run
        // (the same baseline took 54.6 s in one run and 63.6 s in another), and in mirrored
        // turns neither scheduler gets all of a slow stretch, nor always goes first while the
        // machine speeds up or slows down.
        let mut contenders = Vec::new();
        for (which, bins) in [("ours", Some(ours_bins)), ("previous", previous_bins)] {
            let Some((coordinator, wrapper)) = bins else {
                continue;
            };
            let coordinator = Coordinator::start_program(&coordinator, tempfile::tempdir()?, &[])?;
            contenders.push((which, coordinator, wrapper));
        }
        let mut scheduled = Vec::new();
        for temperature in ["cold", "warm"] {
            if temperature == "warm" {
                contenders.reverse();
            }
            for (which, coordinator, wrapper) in &contenders {
                let name = format!("{which}, {temperature}");
                eprintln!("N={n}: {name} ...");
                let stats = ours(&name, &mine, coordinator, wrapper, &workspace)?;
                eprintln!("  {}", secs(stats.wall));
                scheduled.push(stats);
            }
        }
        // Shown by scheduler: ours cold and warm, then the previous one's (a stable sort).
        scheduled.sort_by_key(|stats| !stats.name.starts_with("ours"));
        runs.extend(scheduled);
        if n > 1 {
            eprintln!("N={n}: static split ...");
            let labels = workspace.labels();
            let split: Vec<Vec<String>> = (0..n)
                .map(|k| labels.iter().skip(k).step_by(n).cloned().collect())
                .collect();
            let stats = plain("static split", &mine, &split, &workspace)?;
            eprintln!("  {}", secs(stats.wall));
            runs.push(stats);
        }
        eprintln!("`bazel-4 build //core` alone again ...");
        let core_after = core_alone(mine[0])?;
        eprintln!("  {}", secs(core_after));
        table.push((n, share, base, runs, core_after));
    }

    println!();
    println!(
        "{:>2} {:>5} {:<20} {:>7} {:>7} {:>5} {:>7} {:>5} {:>8} {:>7} {:>9} {:>5} {:>6} {:>6} {:>6}",
        "N",
        "share",
        "run",
        "wall",
        "bound",
        "eff",
        "bound*",
        "eff*",
        "speedup",
        "cpu",
        "extra cpu",
        "acts",
        "extra",
        "max/fair",
        "copies"
    );
    for (n, share, base, runs, core_after) in &table {
        let (_, base, core) = &baselines[*base];
        let mut all: Vec<&RunStats> = vec![base];
        all.extend(runs.iter());
        // The quicker of the two: a bound is not to be raised by a slow moment.
        print_rows(*n, *share, base, (*core).min(*core_after), &all);
    }
    let mut per_job: Vec<(usize, &RunStats)> = Vec::new();
    for (n, _, base, runs, _) in &table {
        per_job.push((*n, &baselines[*base].1));
        per_job.extend(runs.iter().map(|r| (*n, r)));
    }
    print_jobs(&per_job);
    println!();
    println!(
        "share = each job's CPU quota in cores (cgroup v1 cpu.cfs_quota_us), the baseline's too; \
         every Bazel got --local_cpu_resources=1 --local_test_jobs=1 and a fresh remote cache."
    );
    println!(
        "bound = max(baseline wall / N, baseline critical path); eff = bound / wall; speedup = \
         baseline wall / wall."
    );
    let cores: Vec<String> = table
        .iter()
        .map(|(n, share, base, _, after)| {
            format!(
                "N={n}, {share} core(s): {} with its baseline, {} after its runs",
                secs(baselines[*base].2),
                secs(*after)
            )
        })
        .collect();
    println!(
        "bound* = max(bound, core + (baseline wall - core) / N), core = `bazel-4 build //core` \
         alone, the quicker of two measurements ({}): every test links //core, and jobs that \
         start together against an empty cache each compile all of it first; eff* = bound* / \
         wall.",
        cores.join(", ")
    );
    println!(
        "cpu = CPU time of the jobs' cgroups (Bazel servers, compilers, linkers, tests, wrapper); \
         extra cpu = beyond the baseline's (building things more than once, more invocations)."
    );
    println!(
        "acts = actions executed (Bazel's `processes:` lines, cache hits excluded); extra = beyond \
         the baseline's: actions executed by more than one job."
    );
    println!(
        "max/fair = the busiest job's CPU over an even 1/N of the run's CPU; copies = test \
         executions beyond one per target (backup copies)."
    );
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(at) = args.iter().position(|a| a == "--write") {
        let Some(dir) = args.get(at + 1) else {
            eprintln!("usage: compiled --write DIR");
            std::process::exit(2);
        };
        let workspace = CompiledWorkspace::generate(SEED, TESTS, TEST_COMPILE_MS, TEST_RUN_MS);
        if let Err(e) = workspace.write(Path::new(dir)) {
            eprintln!("compiled benchmark: cannot write the workspace: {e:#}");
            std::process::exit(1);
        }
        println!("wrote the benchmark's workspace into {dir}");
        return;
    }
    let _serial = begin("compiled benchmark");
    // Everything started is stopped by the guards inside `benchmark` (Bazel servers, nginx,
    // coordinators, jobs, cgroups), on error and on panic alike, before the exit below.
    if let Err(e) = benchmark() {
        eprintln!("compiled benchmark failed: {e:#}");
        std::process::exit(1);
    }
}
