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
//! Run: `cargo build --release --bins && cargo bench -p e2e --bench load` (or `scripts/bench.sh`).

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

async fn client(
    mut connection: Connection,
    schema: Arc<Schema>,
    max_tasks: u32,
    start: Arc<Barrier>,
) -> ClientStats {
    // With batches, tasks "execute" for 1 ms after a 5 ms batch overhead; one at a time, they
    // are cache hits.
    let (overhead_ms, executed) = if max_tasks > 1 { (5, true) } else { (0, false) };
    let mut stats = ClientStats::default();
    let key = format!("load-{max_tasks}");
    let join = |with_schema| {
        ClientMessage::Join(Join::new(key.clone(), &schema, "load".into(), with_schema))
    };
    connection.send(&join(false)).await.unwrap();
    let mut answer = connection.recv().await.unwrap();
    if answer == ServerMessage::NeedSchema {
        connection.send(&join(true)).await.unwrap();
        answer = connection.recv().await.unwrap();
    }
    assert!(matches!(answer, ServerMessage::Joined(_)), "{answer:?}");
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
                let reports = assignment
                    .tasks
                    .iter()
                    .map(|&task| TaskReport {
                        task,
                        result: TaskResult {
                            outcome: Outcome::Passed,
                            exit_code: Some(0),
                            duration_ms: u64::from(executed),
                            executed,
                        },
                    })
                    .collect();
                connection
                    .send(&ClientMessage::Results(reports))
                    .await
                    .unwrap();
            }
            // A backup copy's loser: nothing runs here, so nothing to stop.
            ServerMessage::Abort(_) => {}
            ServerMessage::Complete(report) => {
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

async fn run(max_tasks: u32, schema: &Arc<Schema>) {
    let coordinator = Coordinator::start(&[
        "--idle-timeout",
        "60s",
        "--max-connections",
        "2000",
        "--max-connections-per-address",
        "2000",
        "--max-unwelcomed-per-address",
        "64",
    ])
    .unwrap();
    let (idle_mib, _) = memory_mib(coordinator.pid());
    let connect_started = Instant::now();
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
        connections.push(tokio::spawn(async move {
            let _permit = connecting.acquire().await.unwrap();
            match Connection::connect(&options).await {
                Ok((connection, _)) => connection,
                Err(e) => panic!("client {i} cannot connect: {e}"),
            }
        }));
    }
    let start = Arc::new(Barrier::new(CLIENTS + 1));
    let mut clients = Vec::new();
    for connection in connections {
        let connection = match connection.await {
            Ok(connection) => connection,
            Err(e) => {
                let log = coordinator.log();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                panic!(
                    "{e}\ncoordinator log (last lines, newest first):\n{}",
                    tail.join("\n")
                );
            }
        };
        clients.push(tokio::spawn(client(
            connection,
            schema.clone(),
            max_tasks,
            start.clone(),
        )));
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
}
