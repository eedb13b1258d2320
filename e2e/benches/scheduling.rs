//! Scheduling benchmark: how close each strategy comes to the ideal makespan.
//!
//! A simulation over real QUIC on loopback: an in-process coordinator and N client tasks whose
//! runner sleeps scaled durations drawn from a seeded heavy-tailed distribution (400 tasks,
//! log-normal, a few 10x outliers), plus a fixed overhead per batch. For each N it measures, in
//! one run, the makespan of:
//!
//! 1. a static split `sorted(tasks)[i::N]` (what most CI setups do), one batch per job;
//! 2. one task at a time, pulled in list order (what the original project did);
//! 3. ours without history (cold);
//! 4. ours without history but with priors: each task weighted by a coarse size class of its
//!    duration (1, 2, 4, 8, like Bazel's `small` … `enormous`), one in ten misclassified by a
//!    class — what a cold start of `bazel test` knows from the tests' `size`;
//! 5. ours with the history of the cold run (warm);
//!
//! and the efficiency `lower bound / makespan`, the bound being
//! `max(total work / N, longest task) + one batch overhead`.
//!
//! Run: `cargo bench -p e2e --bench scheduling` (or `scripts/bench.sh`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use coordinator::server::{Server, ServerConfig};
use coordinator::state::scheduler::{Batching, Order};
use coordinator::state::Policy;
use coordinator::tls::{self, TlsIdentity};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use schemas::{Outcome, Schema, TaskReport, TaskResult};
use tokio::time::sleep_until;
use tokio_util::sync::CancellationToken;
use wrapper::client::{run_session, SessionOptions};
use wrapper::connection::{ConnectOptions, Connection};
use wrapper::runner::{AssignedTask, Batch, TaskRunner};
use wrapper::trust::Trust;

const TASKS: usize = 400;
const OUTLIERS: usize = 4;
/// The median task: log-normal around it, mean about 20 ms.
const MEDIAN_MS: f64 = 15.0;
const SIGMA: f64 = 0.8;
/// What starting one batch costs (a Bazel invocation, scaled like the tasks).
const OVERHEAD: Duration = Duration::from_millis(3);
const CLIENTS: [usize; 5] = [2, 4, 8, 16, 32];

/// Sleeps each task's duration, after one overhead per batch; deadlines are cumulative so timer
/// slack does not add up.
struct SleepRunner {
    durations: Arc<Vec<Duration>>,
}

impl TaskRunner for SleepRunner {
    async fn run(&mut self, tasks: &[AssignedTask], batch: Batch) -> Vec<TaskReport> {
        let mut deadline = tokio::time::Instant::now() + OVERHEAD;
        if sleep_or_abort(deadline, &batch.abort).await {
            return Vec::new();
        }
        for task in tasks {
            let duration = self.durations[task.id as usize];
            deadline += duration;
            if sleep_or_abort(deadline, &batch.abort).await {
                break;
            }
            // Each task as it finishes, as the Bazel runner does from the build events.
            batch.finished(TaskReport {
                task: task.id,
                result: TaskResult {
                    outcome: Outcome::Passed,
                    exit_code: Some(0),
                    duration_ms: duration.as_millis() as u64,
                    executed: true,
                    log_tail: None,
                    build_ms: 0,
                },
            });
        }
        Vec::new()
    }

    fn batch_overhead(&self) -> Duration {
        OVERHEAD
    }
}

/// Sleeps until `deadline`; true if aborted first.
async fn sleep_or_abort(deadline: tokio::time::Instant, abort: &CancellationToken) -> bool {
    tokio::select! {
        () = sleep_until(deadline) => false,
        () = abort.cancelled() => true,
    }
}

/// The seeded workload: 400 log-normal durations, a few of them ten times longer.
fn workload() -> Vec<Duration> {
    let mut rng = StdRng::seed_from_u64(20261128);
    let mut durations: Vec<f64> = (0..TASKS)
        .map(|_| {
            // Box-Muller: a standard normal from two uniforms.
            let (u1, u2): (f64, f64) = (rng.gen_range(f64::EPSILON..1.0), rng.gen());
            let normal = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            MEDIAN_MS * (SIGMA * normal).exp()
        })
        .collect();
    for _ in 0..OUTLIERS {
        let i = rng.gen_range(0..TASKS);
        durations[i] *= 10.0;
    }
    durations
        .into_iter()
        .map(|ms| Duration::from_micros((ms * 1000.0) as u64))
        .collect()
}

/// Weights as a developer's size classes would give them: a coarse class of each duration,
/// one task in ten put in a neighbouring class.
fn priors(durations: &[Duration]) -> Vec<u32> {
    let mut rng = StdRng::seed_from_u64(20261202);
    durations
        .iter()
        .map(|d| {
            let ms = d.as_secs_f64() * 1000.0;
            let class: i32 = match ms {
                ms if ms < 2.0 * MEDIAN_MS => 0,
                ms if ms < 5.0 * MEDIAN_MS => 1,
                ms if ms < 20.0 * MEDIAN_MS => 2,
                _ => 3,
            };
            let class = match rng.gen_range(0..20) {
                0 => (class - 1).max(0),
                1 => (class + 1).min(3),
                _ => class,
            };
            1 << class
        })
        .collect()
}

/// A coordinator in this process, with `policy`; returns its address, certificate and a handle
/// that stops it.
async fn start_coordinator(
    policy: Policy,
    dir: &std::path::Path,
) -> (String, std::path::PathBuf, CancellationToken) {
    let identity =
        TlsIdentity::load_or_generate(&dir.join("tls"), &tls::default_names(&[])).unwrap();
    let cert = identity.cert_path.clone();
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), identity);
    config.policy = policy;
    let server = Server::bind(config).unwrap();
    let addr = server.local_addr().unwrap().to_string();
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(async move { server.run(stopped.cancelled_owned()).await });
    (addr, cert, stop)
}

/// N clients run one session to completion; returns the makespan, from the moment every client
/// is connected (connecting is a per-job constant, like starting Bazel) to the last client's
/// `Complete`.
#[allow(clippy::too_many_arguments)]
async fn shared_run(
    addr: &str,
    cert: &std::path::Path,
    clients: usize,
    session_key: &str,
    history_scope: &str,
    max_batch: u32,
    durations: &Arc<Vec<Duration>>,
    schema: &Schema,
) -> Duration {
    let mut connections = Vec::new();
    for i in 0..clients {
        let options = ConnectOptions {
            coordinator: addr.to_string(),
            trust: Trust::CaFile(cert.to_path_buf()),
            token: None,
            client_identity: None,
            client_id: format!("sim-{i}"),
            info: Default::default(),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(15),
            busy_retry_for: Duration::from_secs(60),
        };
        connections.push(tokio::spawn(async move {
            (Connection::connect(&options).await.unwrap().0, options)
        }));
    }
    let mut connected = Vec::new();
    for connection in connections {
        connected.push(connection.await.unwrap());
    }
    let started = Instant::now();
    let mut handles = Vec::new();
    for (connection, options) in connected {
        let session = SessionOptions {
            max_batch,
            ..SessionOptions::new(session_key, history_scope)
        };
        let schema = schema.clone();
        let mut runner = SleepRunner {
            durations: durations.clone(),
        };
        handles.push(tokio::spawn(async move {
            run_session(connection, &options, &schema, &mut runner, &session, |_| {})
                .await
                .unwrap();
            Instant::now()
        }));
    }
    let mut last = started;
    for handle in handles {
        last = last.max(handle.await.unwrap());
    }
    last - started
}

/// `sorted(tasks)[i::N]`, each job one batch: no coordinator at all.
async fn static_split(clients: usize, durations: &[Duration]) -> Duration {
    let started = tokio::time::Instant::now();
    let mut handles = Vec::new();
    for i in 0..clients {
        let mine: Vec<Duration> = durations.iter().skip(i).step_by(clients).copied().collect();
        handles.push(tokio::spawn(async move {
            let mut deadline = started + OVERHEAD;
            for d in mine {
                deadline += d;
            }
            sleep_until(deadline).await;
            tokio::time::Instant::now()
        }));
    }
    let mut last = started;
    for handle in handles {
        last = last.max(handle.await.unwrap());
    }
    last - started
}

fn secs(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let durations = Arc::new(workload());
    let total: Duration = durations.iter().sum();
    let longest = *durations.iter().max().unwrap();
    // Task names sort in list order, so `sorted(tasks)` is the list.
    let schema = Schema::new("simulation", (0..TASKS).map(|i| format!("task-{i:03}"))).unwrap();
    let mut weighted = schema.clone();
    for (task, weight) in weighted.tasks.iter_mut().zip(priors(&durations)) {
        task.weight = Some(weight);
    }
    let dir = tempfile::tempdir().unwrap();
    println!(
        "scheduling benchmark: {TASKS} tasks, log-normal (median {MEDIAN_MS} ms, sigma {SIGMA}) with \
         {OUTLIERS} 10x outliers; total work {}, longest task {}, batch overhead {}",
        secs(total),
        secs(longest),
        secs(OVERHEAD)
    );
    println!();
    println!(
        "{:>3}  {:>8}  {:>16}  {:>16}  {:>16}  {:>16}  {:>16}",
        "N", "bound", "static split", "one at a time", "ours, cold", "cold + priors", "ours, warm"
    );
    let mut worst = [f64::MAX; 5];
    for clients in CLIENTS {
        let bound = (total / clients as u32).max(longest) + OVERHEAD;
        let original = Policy {
            order: Order::Listed,
            batching: Batching::Single,
            backups: false,
            ..Policy::default()
        };
        let (addr, cert, stop_original) =
            start_coordinator(original, &dir.path().join(format!("a{clients}"))).await;
        let one_at_a_time = shared_run(
            &addr,
            &cert,
            clients,
            &format!("single-{clients}"),
            "single",
            1,
            &durations,
            &schema,
        )
        .await;
        stop_original.cancel();

        let (addr, cert, stop_ours) =
            start_coordinator(Policy::default(), &dir.path().join(format!("b{clients}"))).await;
        let scope = format!("bench-{clients}");
        let cold = shared_run(
            &addr,
            &cert,
            clients,
            &format!("cold-{clients}"),
            &scope,
            200,
            &durations,
            &schema,
        )
        .await;
        let warm = shared_run(
            &addr,
            &cert,
            clients,
            &format!("warm-{clients}"),
            &scope,
            200,
            &durations,
            &schema,
        )
        .await;
        let with_priors = shared_run(
            &addr,
            &cert,
            clients,
            &format!("priors-{clients}"),
            &format!("bench-priors-{clients}"),
            200,
            &durations,
            &weighted,
        )
        .await;
        stop_ours.cancel();

        let split = static_split(clients, &durations).await;
        let cells: Vec<String> = [split, one_at_a_time, cold, with_priors, warm]
            .iter()
            .enumerate()
            .map(|(i, makespan)| {
                let efficiency = bound.as_secs_f64() / makespan.as_secs_f64();
                worst[i] = worst[i].min(efficiency);
                format!("{} ({:.2})", secs(*makespan), efficiency)
            })
            .collect();
        println!(
            "{clients:>3}  {:>8}  {:>16}  {:>16}  {:>16}  {:>16}  {:>16}",
            secs(bound),
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4]
        );
    }
    println!();
    println!("makespan (efficiency = bound / makespan); lowest efficiency over N:");
    println!(
        "  static split {:.2}, one at a time {:.2}, ours cold {:.2}, cold + priors {:.2} (target 0.85), \
         ours warm {:.2} (target 0.95)",
        worst[0], worst[1], worst[2], worst[3], worst[4]
    );
}
