//! What the Bazel benchmarks share: a seeded random source, the build events each batch keeps
//! (`TASK_SHARDING_BEP_DIR`), and waiting for a run's jobs with each one's exit time.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context as _, Result};

use crate::bazel::{Checkout, Finished, Running};

/// xorshift64*: enough randomness for a seeded workload, without a crate.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in (0, 1].
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// A standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.unit(), self.unit());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// One Bazel invocation, from its build event file.
#[derive(Debug)]
pub struct Batch {
    /// The job it belongs to.
    pub job: String,
    /// Its number in the job (1, 2, ...).
    pub number: u32,
    /// `started.startTimeMillis`.
    pub start_ms: u64,
    /// `finished.finishTimeMillis`; `None` if the build never finished.
    pub finish_ms: Option<u64>,
    /// `finished.exitCode.code` (0 when absent, i.e. SUCCESS).
    pub exit: Option<i64>,
    /// Its test attempts: label, `testAttemptDurationMillis`, really executed (no cache hit).
    pub attempts: Vec<(String, u64, bool)>,
    /// The targets it completed (`targetCompleted`), tests and built-only ones alike.
    pub targets: Vec<String>,
    /// A compile-first pass before batch `number` (`batch-N-compile.json`), not the batch.
    pub compile: bool,
}

impl Batch {
    /// `finished` minus `started`; `None` if it never finished.
    pub fn wall_ms(&self) -> Option<u64> {
        self.finish_ms.map(|f| f.saturating_sub(self.start_ms))
    }

    /// Wall time beyond its tests (which ran one at a time).
    pub fn overhead_ms(&self) -> Option<u64> {
        let tests: u64 = self.attempts.iter().map(|a| a.1).sum();
        self.wall_ms().map(|w| w.saturating_sub(tests))
    }

    /// Stopped because another job finished its targets first (a backup lost the race).
    pub fn aborted(&self) -> bool {
        self.finish_ms.is_none() || self.exit == Some(8)
    }
}

/// A millisecond count, which build events write as a string or a number.
pub fn millis(value: &serde_json::Value) -> Option<u64> {
    match value {
        serde_json::Value::String(s) => s.parse().ok(),
        other => other.as_u64(),
    }
}

/// One batch's build event file (`text`), as job `job`'s batch `number`.
pub fn parse_batch(job: &str, number: u32, text: &str) -> Result<Batch> {
    let mut batch = Batch {
        job: job.to_string(),
        number,
        start_ms: 0,
        finish_ms: None,
        exit: None,
        attempts: Vec::new(),
        targets: Vec::new(),
        compile: false,
    };
    for line in text.lines() {
        let event: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("a build event of {job} batch {number} is not JSON"))?;
        let id = &event["id"];
        if id.get("started").is_some() {
            batch.start_ms = millis(&event["started"]["startTimeMillis"])
                .context("`started` without startTimeMillis")?;
        } else if id.get("buildFinished").is_some() {
            batch.finish_ms = millis(&event["finished"]["finishTimeMillis"]);
            batch.exit = Some(event["finished"]["exitCode"]["code"].as_i64().unwrap_or(0));
        } else if let Some(label) = id["targetCompleted"]["label"].as_str() {
            batch.targets.push(label.to_string());
        } else if let Some(label) = id["testResult"]["label"].as_str() {
            let result = &event["testResult"];
            if result.is_null() {
                continue;
            }
            let remote_hit =
                result["executionInfo"]["strategy"].as_str() == Some("remote cache hit");
            let local_hit = result["cachedLocally"].as_bool() == Some(true);
            let duration = millis(&result["testAttemptDurationMillis"]).unwrap_or(0);
            batch
                .attempts
                .push((label.to_string(), duration, !remote_hit && !local_hit));
        }
    }
    ensure!(
        batch.start_ms > 0,
        "{job} batch {number} has no `started` event"
    );
    Ok(batch)
}

/// Every batch file under `dir` (`job-*/batch-N.json`, and `batch-N-compile.json` for a
/// batch's compile-first pass, which comes before it), named by the checkout that ran it
/// (`started.workspaceDirectory`, as `job-K`).
pub fn read_batches<'a>(
    dir: &Path,
    checkouts: impl IntoIterator<Item = &'a Checkout>,
) -> Result<Vec<Batch>> {
    let checkouts: Vec<&Checkout> = checkouts.into_iter().collect();
    let mut batches = Vec::new();
    for job_dir in std::fs::read_dir(dir)? {
        let job_dir = job_dir?.path();
        for file in std::fs::read_dir(&job_dir)? {
            let file = file?.path();
            let Some(stem) = file
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.strip_prefix("batch-"))
            else {
                continue;
            };
            let (stem, compile) = match stem.strip_suffix("-compile") {
                Some(number) => (number, true),
                None => (stem, false),
            };
            let Ok(number) = stem.parse::<u32>() else {
                continue;
            };
            let text = std::fs::read_to_string(&file)?;
            let workspace = text.lines().find_map(|line| {
                let event: serde_json::Value = serde_json::from_str(line).ok()?;
                event["started"]["workspaceDirectory"]
                    .as_str()
                    .map(PathBuf::from)
            });
            let job = checkouts
                .iter()
                .position(|c| Some(&c.workspace) == workspace.as_ref())
                .map_or_else(
                    || job_dir.file_name().unwrap().to_string_lossy().into_owned(),
                    |i| format!("job-{}", i + 1),
                );
            batches.push(Batch {
                compile,
                ..parse_batch(&job, number, &text)?
            });
        }
    }
    batches.sort_by_key(|b| (b.job.clone(), b.number, !b.compile));
    Ok(batches)
}

/// Now, in milliseconds since the Unix epoch (what build events' timestamps count).
pub fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Waits for every job of `running`; returns them with each one's exit time (Unix ms), the last
/// exit's `Instant`, and fails (killing them) if they take longer than `limit`.
pub fn wait_jobs(
    mut running: Running,
    started: Instant,
    limit: Duration,
) -> Result<(Vec<Finished>, Vec<u64>, Instant)> {
    let mut exits: Vec<Option<(Instant, u64)>> = vec![None; running.jobs.len()];
    while exits.iter().any(Option::is_none) {
        for (job, exit) in running.jobs.iter_mut().zip(&mut exits) {
            if exit.is_none() && !matches!(job.child.try_wait(), Ok(None)) {
                *exit = Some((Instant::now(), epoch_ms()));
            }
        }
        if started.elapsed() > limit {
            bail!("the jobs did not finish within {limit:?}"); // dropping `running` kills them
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let exits: Vec<(Instant, u64)> = exits.into_iter().flatten().collect();
    let last = exits.iter().map(|e| e.0).max().unwrap_or(started);
    let finished = running.wait_all(Duration::from_secs(10))?;
    Ok((finished, exits.iter().map(|e| e.1).collect(), last))
}
