//! Soak: 200 real `task-sharding run` clients in 20 concurrent sessions, round after round for
//! `SOAK_SECONDS` (default 180), while random clients are SIGKILLed with everything they started
//! and some are replaced by a new job (a CI retry). Every session must complete with every task's
//! result, every surviving client must print the same report, and once the sessions expire the
//! coordinator must hold none and its memory must be back near where it started.
//!
//! Loopback only; run with `scripts/soak.sh` (or `cargo bench -p e2e --bench soak`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use e2e::{lines, summary, write_schema, Coordinator, Job};

const SESSIONS: usize = 20;
const CLIENTS: usize = 10;
const TASKS: usize = 40;
/// The longest one round may take before it counts as hung.
const ROUND_LIMIT: Duration = Duration::from_secs(300);
/// How long the coordinator keeps finished sessions in this run.
const TTL: Duration = Duration::from_secs(10);

/// A tiny deterministic random source, so a run can be repeated.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

struct Session {
    dir: PathBuf,
    schema: PathBuf,
    tasks: Vec<String>,
    /// Running jobs.
    jobs: Vec<Job>,
    /// Outputs of jobs that exited.
    finished: Vec<std::process::Output>,
    spawned: usize,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(180);
    let ttl = format!("{}s", TTL.as_secs());
    let coordinator = Coordinator::start(&["--session-ttl", &ttl, "--idle-timeout", "3s"]).unwrap();
    let pid = coordinator.pid();
    std::thread::sleep(Duration::from_millis(500));
    let baseline = rss_kib(pid);
    let mut peak = baseline;
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let started = Instant::now();
    let (mut rounds, mut clients, mut kills, mut reruns, mut tasks_total) = (0, 0, 0, 0, 0);
    let mut after_round = Vec::new();
    let mut warm = 0;

    while rounds == 0 || started.elapsed() < Duration::from_secs(seconds) {
        rounds += 1;
        let round_started = Instant::now();
        let mut sessions: Vec<Session> = (0..SESSIONS)
            .map(|s| {
                let dir = tempfile::tempdir().unwrap().keep();
                let tasks: Vec<String> = (0..TASKS)
                    .map(|t| format!("r{rounds}s{s}t{t:02}"))
                    .collect();
                let schema = write_schema(&dir, &format!("soak-{s}"), &tasks).unwrap();
                Session {
                    dir,
                    schema,
                    tasks,
                    jobs: Vec::new(),
                    finished: Vec::new(),
                    spawned: 0,
                }
            })
            .collect();
        let run_id = format!("soak-{rounds}");
        let spawn = |session: &mut Session, coordinator: &Coordinator| {
            session.spawned += 1;
            let name = format!("job-{}", session.spawned);
            // 0.1..0.9 s per task, told by the task's name.
            let script = format!(
                "echo \"$0\" >> {dir}/started; sleep 0.$(( $(printf %s \"$0\" | cksum | cut -d' ' -f1) % 9 + 1 )); \
                 echo \"$0 $TASK_SHARDING_CLIENT_ID\" >> {dir}/done",
                dir = session.dir.display()
            );
            let command = coordinator.run_command(
                &run_id,
                &name,
                &session.schema,
                &["sh", "-c", &script, "{task}"],
            );
            session.jobs.push(Job::spawn(&name, command).unwrap());
        };
        for session in &mut sessions {
            for _ in 0..CLIENTS {
                spawn(session, &coordinator);
                clients += 1;
            }
        }
        // Until every job has exited: now and then SIGKILL a random job (never a session's last
        // one), and sometimes start a new job in its place, as a CI retry would.
        loop {
            for session in &mut sessions {
                let mut i = 0;
                while i < session.jobs.len() {
                    if session.jobs[i].child.try_wait().unwrap().is_some() {
                        let job = session.jobs.remove(i);
                        session.finished.push(job.wait(ROUND_LIMIT).unwrap());
                    } else {
                        i += 1;
                    }
                }
            }
            if sessions.iter().all(|s| s.jobs.is_empty()) {
                break;
            }
            assert!(
                round_started.elapsed() < ROUND_LIMIT,
                "round {rounds} hung:\n{}",
                coordinator.log()
            );
            peak = peak.max(rss_kib(pid));
            let s = rng.below(SESSIONS);
            if rng.below(3) == 0 && sessions[s].jobs.len() > 1 {
                let victim = rng.below(sessions[s].jobs.len());
                let mut job = sessions[s].jobs.remove(victim);
                job.kill_group().unwrap();
                kills += 1;
                if rng.below(2) == 0 {
                    spawn(&mut sessions[s], &coordinator);
                    clients += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Every session complete, every task with its result, the same report for everyone.
        for (s, session) in sessions.iter().enumerate() {
            let reports: BTreeSet<String> = session
                .finished
                .iter()
                .map(|output| {
                    assert_eq!(
                        output.status.code(),
                        Some(0),
                        "round {rounds} session {s}: {}",
                        String::from_utf8_lossy(&output.stderr)
                    );
                    summary(&String::from_utf8_lossy(&output.stdout))
                })
                .collect();
            assert_eq!(reports.len(), 1, "round {rounds} session {s}: {reports:?}");
            let report = reports.first().unwrap();
            assert!(report.contains(&format!("{TASKS} passed")), "{report}");
            let mut finishes: BTreeMap<String, usize> = BTreeMap::new();
            for line in lines(&session.dir.join("done")) {
                *finishes
                    .entry(line.split(' ').next().unwrap().to_string())
                    .or_default() += 1;
            }
            for task in &session.tasks {
                let n = finishes.get(task).copied().unwrap_or(0);
                assert!(n >= 1, "round {rounds}: {task} never ran to the end");
                reruns += n - 1;
            }
            tasks_total += session.tasks.len();
            let _ = std::fs::remove_dir_all(&session.dir);
        }
        after_round.push(rss_kib(pid));
        if rounds == 1 {
            // The first round warms the allocator, QUIC and the stores' caches; what the
            // coordinator holds once its sessions have expired is the baseline to come back to.
            std::thread::sleep(TTL + Duration::from_secs(3));
            warm = rss_kib(pid);
        }
        eprintln!(
            "soak: round {rounds}: {SESSIONS} sessions complete in {:.1}s, {kills} kills so far",
            round_started.elapsed().as_secs_f64()
        );
    }
    let elapsed = started.elapsed();

    // Once every session has expired, the coordinator holds nothing.
    std::thread::sleep(TTL + Duration::from_secs(5));
    let expired = coordinator
        .log()
        .matches("forgot an expired session")
        .count();
    let after = rss_kib(pid);
    println!();
    println!(
        "soak: {rounds} rounds in {:.0} s; {clients} clients ({CLIENTS} per session at start), \
         {} sessions of {TASKS} tasks, {kills} clients SIGKILLed",
        elapsed.as_secs_f64(),
        rounds * SESSIONS,
    );
    println!("| | value |");
    println!("|---|---|");
    println!(
        "| sessions completed, every task with its result | {} of {} |",
        rounds * SESSIONS,
        rounds * SESSIONS
    );
    println!("| task results | {tasks_total} |");
    println!("| tasks run again after their job was killed | {reruns} |");
    println!("| sessions forgotten after their ttl | {expired} |");
    println!(
        "| coordinator RSS at start | {:.1} MiB |",
        baseline as f64 / 1024.0
    );
    println!("| coordinator RSS peak | {:.1} MiB |", peak as f64 / 1024.0);
    println!(
        "| coordinator RSS after each round | {} |",
        after_round
            .iter()
            .map(|k| format!("{:.1}", *k as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join(", ")
            + " MiB"
    );
    println!(
        "| coordinator RSS once round 1's sessions expired (baseline) | {:.1} MiB |",
        warm as f64 / 1024.0
    );
    println!(
        "| coordinator RSS once every session expired | {:.1} MiB ({:+.1} MiB from the baseline) |",
        after as f64 / 1024.0,
        (after as f64 - warm as f64) / 1024.0
    );
    for store in ["sessions.redb", "history.redb"] {
        let size = std::fs::metadata(coordinator.state_dir().join(store)).map_or(0, |m| m.len());
        println!(
            "| {store} on disk | {:.1} MiB |",
            size as f64 / (1024.0 * 1024.0)
        );
    }
    assert_eq!(expired, rounds * SESSIONS, "every session was forgotten");
    // Back to the baseline after any number of rounds: nothing kept per session or client.
    assert!(
        after <= warm + 4 * 1024,
        "coordinator memory did not come back: {warm} KiB after round 1 -> {after} KiB"
    );
}
