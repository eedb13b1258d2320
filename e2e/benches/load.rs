//! Load benchmark: 1,000 concurrent clients, each with its own QUIC connection (and UDP socket),
//! in one session of 100,000 tiny tasks, against the real coordinator process.
//!
//! Prints task assignments per second, the round trip of a request (p50, p99), how long the
//! final report took to reach every client, and the coordinator's peak RSS (VmHWM). Two runs:
//! one task per request (every assignment a round trip: the hardest case, and results reported
//! as cache hits, so nothing is learned), then up to 50 per request with results that executed
//! for 1 ms and a 5 ms per-batch overhead (so the coordinator sizes batches, and records timing
//! history for 100,000 tasks).
//!
//! A third run is open-loop: the 1,000 clients each ask for one task about once a second
//! (Poisson arrivals), as a real fleet of jobs would, and it prints that round trip's p50/p99.
//!
//! Run: `cargo build --release --bins && cargo bench -p e2e --bench load` (or `scripts/bench.sh`);
//! `... --bench load -- open-loop` runs only the open-loop run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::Coordinator;
use schemas::{
    ClientInfo, ClientMessage, Join, Outcome, Schema, ServerMessage, TaskReport, TaskResult,
    WorkRequest,
};
use tokio::sync::{Barrier, Semaphore};
use wrapper::connection::{ConnectOptions, Connection};
use wrapper::trust::Trust;

const CLIENTS: usize = 1000;
const TASKS: usize = 100_000;
/// Requests per second per client in the open-loop run.
const OPEN_LOOP_RATE: f64 = 1.0;
/// How long the open-loop run measures, in seconds.
const OPEN_LOOP_SECONDS: u64 = 30;

/// What one client saw.
#[derive(Default)]
struct ClientStats {
    /// Request-to-assignment round trips.
    round_trips: Vec<Duration>,
    /// Tasks it was assigned.
    tasks: usize,
    /// When it received its last assignment.
    last_assignment: Option<Instant>,
    /// When it received the final report.
    completed: Option<Instant>,
}

async fn client(mut connection: Connection, max_tasks: u32, start: Arc<Barrier>) -> ClientStats {
    // With batches, tasks "execute" for 1 ms after a 5 ms batch overhead; one at a time, they
    // are cache hits.
    let (overhead_ms, executed) = if max_tasks > 1 { (5, true) } else { (0, false) };
    let mut stats = ClientStats::default();
    start.wait().await;
    loop {
        let asked = Instant::now();
        connection
            .send(&ClientMessage::Request(WorkRequest {
                max_tasks,
                overhead_ms,
            }))
            .await
            .unwrap();
        match connection.recv().await.unwrap() {
            ServerMessage::Assignment(assignment) => {
                let now = Instant::now();
                stats.round_trips.push(now - asked);
                stats.last_assignment = Some(now);
                stats.tasks += assignment.tasks.len();
                let reports = passed(&assignment.tasks, u64::from(executed), executed);
                connection
                    .send(&ClientMessage::Results(reports))
                    .await
                    .unwrap();
            }
            // A backup copy's loser: nothing runs here, so nothing to stop.
            ServerMessage::Abort(_) => {}
            ServerMessage::Complete { report, .. } => {
                assert_eq!(report.records.len(), TASKS);
                stats.completed = Some(Instant::now());
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    connection.close().await;
    stats
}

/// Joins session `key` by digest, sending the schema only if the coordinator asks for it.
async fn join(connection: &mut Connection, key: &str, schema: &Schema) {
    let join = |with_schema| {
        ClientMessage::Join(Join::new(key.into(), schema, "load".into(), with_schema))
    };
    connection.send(&join(false)).await.unwrap();
    let mut answer = connection.recv().await.unwrap();
    if answer == ServerMessage::NeedSchema {
        connection.send(&join(true)).await.unwrap();
        answer = connection.recv().await.unwrap();
    }
    assert!(matches!(answer, ServerMessage::Joined(_)), "{answer:?}");
}

/// A pass for each task, that took `duration_ms` if it `executed`; a cache hit (not executed)
/// teaches nothing and is stored in no history.
fn passed(tasks: &[schemas::TaskId], duration_ms: u64, executed: bool) -> Vec<TaskReport> {
    tasks
        .iter()
        .map(|&task| TaskReport {
            task,
            result: TaskResult {
                outcome: Outcome::Passed,
                exit_code: Some(0),
                duration_ms,
                executed,
                log_tail: None,
                build_ms: 0,
            },
        })
        .collect()
}

/// One client of the open-loop run: requests of one task arriving as a Poisson process of
/// [`OPEN_LOOP_RATE`] per second (exponential gaps, drawn from `seed`), whatever the answers
/// take, for `length` from the common start. Returns each request's round trip.
async fn paced_client(
    mut connection: Connection,
    seed: u64,
    start: Arc<Barrier>,
    length: Duration,
) -> Vec<Duration> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    start.wait().await;
    let until = Instant::now() + length;
    let mut round_trips = Vec::new();
    let mut next = Instant::now();
    loop {
        let gap: f64 = -(1.0 - rng.gen::<f64>()).ln() / OPEN_LOOP_RATE;
        next += Duration::from_secs_f64(gap);
        if next >= until {
            break;
        }
        tokio::time::sleep_until(next.into()).await;
        let asked = Instant::now();
        connection
            .send(&ClientMessage::Request(WorkRequest {
                max_tasks: 1,
                overhead_ms: 0,
            }))
            .await
            .unwrap();
        match connection.recv().await.unwrap() {
            ServerMessage::Assignment(assignment) => {
                round_trips.push(asked.elapsed());
                let reports = passed(&assignment.tasks, 0, false);
                connection
                    .send(&ClientMessage::Results(reports))
                    .await
                    .unwrap();
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    connection.close().await;
    round_trips
}

/// The open-loop run: [`CLIENTS`] clients, each asking about once a second for
/// [`OPEN_LOOP_SECONDS`], as jobs of a real fleet would (they spend their time running tasks,
/// not asking). Prints the round trip's p50, p99 and maximum.
async fn run_open_loop(schema: &Arc<Schema>) {
    let coordinator = start_coordinator();
    let connections = connect_all(&coordinator, "open-loop", schema).await;
    let start = Arc::new(Barrier::new(CLIENTS + 1));
    let length = Duration::from_secs(OPEN_LOOP_SECONDS);
    let clients: Vec<_> = connections
        .into_iter()
        .enumerate()
        .map(|(i, connection)| {
            tokio::spawn(paced_client(connection, i as u64, start.clone(), length))
        })
        .collect();
    start.wait().await;
    let mut round_trips = Vec::new();
    for client in clients {
        round_trips.extend(client.await.unwrap());
    }
    round_trips.sort();
    let seconds = length.as_secs_f64();
    println!(
        "open loop: {CLIENTS} clients × ~{OPEN_LOOP_RATE}/s for {seconds:.0}s: {} requests \
         ({:.0}/s), round trip p50 {:.2}ms, p99 {:.2}ms, max {:.2}ms",
        round_trips.len(),
        round_trips.len() as f64 / seconds,
        percentile(&round_trips, 0.50).as_secs_f64() * 1000.0,
        percentile(&round_trips, 0.99).as_secs_f64() * 1000.0,
        round_trips.last().unwrap().as_secs_f64() * 1000.0,
    );
}

/// The coordinator's peak and current resident memory, in MiB, from /proc.
fn memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The coordinator process of one run, with load-sized limits.
fn start_coordinator() -> Coordinator {
    Coordinator::start(&[
        "--idle-timeout",
        "60s",
        "--max-connections",
        "2000",
        "--max-connections-per-address",
        "2000",
        "--max-unwelcomed-per-address",
        "64",
    ])
    .unwrap()
}

/// Opens [`CLIENTS`] connections, 64 handshakes at a time, each joining session `key` at once
/// (the coordinator drops a connection that does not join soon after its hello).
async fn connect_all(
    coordinator: &Coordinator,
    key: &str,
    schema: &Arc<Schema>,
) -> Vec<Connection> {
    let connecting = Arc::new(Semaphore::new(64));
    let mut connections = Vec::new();
    for i in 0..CLIENTS {
        let options = ConnectOptions {
            coordinator: coordinator.addr.clone(),
            trust: Trust::CaFile(coordinator.cert.clone()),
            token: None,
            client_identity: None,
            client_id: format!("load-{i}"),
            info: ClientInfo::default(),
            connect_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            busy_retry_for: Duration::from_secs(60),
        };
        let connecting = connecting.clone();
        let (key, schema) = (key.to_string(), schema.clone());
        connections.push(tokio::spawn(async move {
            let _permit = connecting.acquire().await.unwrap();
            match Connection::connect(&options).await {
                Ok((mut connection, _)) => {
                    join(&mut connection, &key, &schema).await;
                    connection
                }
                Err(e) => panic!("client {i} cannot connect: {e}"),
            }
        }));
    }
    let mut connected = Vec::new();
    for connection in connections {
        match connection.await {
            Ok(connection) => connected.push(connection),
            Err(e) => {
                let log = coordinator.log();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                panic!(
                    "{e}\ncoordinator log (last lines, newest first):\n{}",
                    tail.join("\n")
                );
            }
        }
    }
    connected
}

async fn run(max_tasks: u32, schema: &Arc<Schema>) {
    let coordinator = start_coordinator();
    let (idle_mib, _) = memory_mib(coordinator.pid());
    let connect_started = Instant::now();
    let connections = connect_all(&coordinator, &format!("load-{max_tasks}"), schema).await;
    let start = Arc::new(Barrier::new(CLIENTS + 1));
    let mut clients = Vec::new();
    for connection in connections {
        clients.push(tokio::spawn(client(connection, max_tasks, start.clone())));
    }
    start.wait().await;
    let connected = connect_started.elapsed();
    let started = Instant::now();
    let mut stats = Vec::new();
    for client in clients {
        stats.push(client.await.unwrap());
    }
    let tasks: usize = stats.iter().map(|s| s.tasks).sum();
    let last_assignment = stats
        .iter()
        .filter_map(|s| s.last_assignment)
        .max()
        .unwrap();
    let last_complete = stats.iter().filter_map(|s| s.completed).max().unwrap();
    let mut round_trips: Vec<Duration> = stats.iter().flat_map(|s| s.round_trips.clone()).collect();
    round_trips.sort();
    let (peak_mib, now_mib) = memory_mib(coordinator.pid());
    let assigning = last_assignment - started;
    println!(
        "{:>15}  {:>9}  {:>12}  {:>14}  {:>10}  {:>10}  {:>14}  {:>12}",
        max_tasks,
        format!("{:.1}s", connected.as_secs_f64()),
        format!("{:.0}", tasks as f64 / assigning.as_secs_f64()),
        format!("{:.0}", round_trips.len() as f64 / assigning.as_secs_f64()),
        format!(
            "{:.2}ms",
            percentile(&round_trips, 0.50).as_secs_f64() * 1000.0
        ),
        format!(
            "{:.2}ms",
            percentile(&round_trips, 0.99).as_secs_f64() * 1000.0
        ),
        format!("{:.1}s", (last_complete - last_assignment).as_secs_f64()),
        format!("{peak_mib:.0} MiB"),
    );
    assert_eq!(tasks, TASKS, "every task assigned exactly once");
    eprintln!(
        "  (max tasks {max_tasks}: {} round trips over {:.2}s; coordinator RSS idle {idle_mib:.0} MiB, \
         at the end {now_mib:.0} MiB)",
        round_trips.len(),
        assigning.as_secs_f64()
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    // One UDP socket per client: lift the open-file limit to what the system allows.
    if let Ok((_, hard)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    {
        let _ =
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
    }
    let schema = Arc::new(
        Schema::new(
            "load",
            (0..TASKS).map(|i| format!("//load/pkg{}:t{i:06}", i % 100)),
        )
        .unwrap(),
    );
    println!(
        "load benchmark: {CLIENTS} clients, each its own QUIC connection, one session of {TASKS} tiny tasks \
         (the clients run in this process, on the same 2 cores as the coordinator)"
    );
    println!();
    // `cargo bench --bench load -- open-loop` runs only that run (cargo adds `--bench`).
    let only_open_loop = std::env::args().any(|a| a == "open-loop");
    if !only_open_loop {
        println!(
            "{:>15}  {:>9}  {:>12}  {:>14}  {:>10}  {:>10}  {:>14}  {:>12}",
            "max per request",
            "connect",
            "tasks/s",
            "assignments/s",
            "p50 rtt",
            "p99 rtt",
            "final report",
            "peak RSS"
        );
        for max_tasks in [1, 50] {
            run(max_tasks, &schema).await;
        }
        println!();
    }
    run_open_loop(&schema).await;
}
