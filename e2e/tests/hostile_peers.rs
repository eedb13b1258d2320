//! Issue 14, probed as an attacker on the CI network would: floods without the token, idle
//! connections and sessions with it, a token holder forging a run's verdict, and escapes in
//! client ids — each beside an honest session that must complete with the right results.
//! Attackers connect from 127.0.0.2 and up, the honest jobs from 127.0.0.1.

mod hostile;

use std::os::unix::fs::PermissionsExt as _;

use e2e::{summary, wait_until, write_schema, Coordinator, Job};
use futures_util::StreamExt as _;
use hostile::{
    all_passed, assert_busy, assert_completed, framed, hello_as, honest_session,
    honest_session_running, loopback, memory_mib, outputs, ran_by, Raw, LIMIT,
};
use schemas::{ClientMessage, ErrorCode, Schema, ServerMessage, WorkRequest, PROTOCOL_VERSION};

const TOKEN: &str = "open-sesame";

/// A coordinator requiring [`TOKEN`], plus `args`, and the directory its token file is in.
fn guarded(args: &[&str]) -> (Coordinator, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let mut all = vec!["--token-file", token_file.to_str().unwrap()];
    all.extend_from_slice(args);
    (Coordinator::start(&all).unwrap(), dir)
}

/// Regression (issue 14, 1): before its hello a peer could make the coordinator buffer a
/// 32 MiB frame and hold it for the hello timeout; 40 such connections took it to 1.2 GiB.
/// Now a frame before the hello is refused past 64 KiB, and what the allowed ones hold is
/// bounded by the limits on connections not yet welcomed.
#[tokio::test(flavor = "multi_thread")]
async fn a_flood_without_the_token_leaves_memory_bounded() {
    let (coordinator, dir) = guarded(&["--max-unwelcomed-per-address", "12"]);
    let honest = honest_session(&coordinator, dir.path(), &[("TASK_SHARDING_TOKEN", TOKEN)]);
    let before = memory_mib(coordinator.pid(), "VmRSS:");

    // The old attack: announce a 32 MiB frame and push into it. Refused on the length.
    let mut big = Raw::connected_from(&coordinator, loopback(2))
        .await
        .unwrap();
    let mut header = (32u32 << 20).to_be_bytes().to_vec();
    header.extend(std::iter::repeat_n(0u8, 16 * 1024));
    let _ = big.writer.get_mut().write_all(&header).await;
    match tokio::time::timeout(LIMIT, big.reader.next())
        .await
        .unwrap()
    {
        Some(Ok(ServerMessage::Error(e))) => {
            assert_eq!(e.code, ErrorCode::BadFrame);
            assert!(e.message.contains("maximum of 65536"), "{}", e.message);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    // The most it can do now: from several addresses at once, as many connections as are let
    // in, each filling a 64 KiB frame it never finishes. 8 addresses x 16 tries, all at once (so
    // that every one is admitted or refused before the first hello timeout frees a place),
    // against 12 let in per address.
    let attempts = (2..=9)
        .flat_map(|last| (0..16).map(move |_| last))
        .map(|last| {
            let coordinator = &coordinator;
            async move {
                let mut raw = Raw::connected_from(coordinator, loopback(last)).await?;
                let mut frame = (64u32 * 1024).to_be_bytes().to_vec();
                frame.extend(std::iter::repeat_n(0xa5u8, 64 * 1024 - 1));
                let _ = raw.writer.get_mut().write_all(&frame).await;
                Ok::<_, quinn::ConnectionError>(raw)
            }
        });
    let mut held = Vec::new();
    let mut refused = 0;
    for attempt in futures_util::future::join_all(attempts).await {
        match attempt {
            Ok(raw) => held.push(raw),
            Err(quinn::ConnectionError::ConnectionClosed(close))
                if close.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED =>
            {
                refused += 1
            }
            Err(e) => println!("a flood connection failed otherwise: {e}"),
        }
    }
    // Every one is dropped at the hello timeout, having held its bytes until then: only then is
    // the coordinator's peak taken.
    for raw in &held {
        let closed = tokio::time::timeout(LIMIT, raw.connection.closed()).await;
        assert!(closed.is_ok(), "a connection without a hello was kept");
    }
    let peak = memory_mib(coordinator.pid(), "VmHWM:");
    println!(
        "token-less flood: {} connections held 64 KiB frames, {refused} refused; coordinator RSS \
         {before:.0} MiB before, peak {peak:.0} MiB",
        held.len()
    );
    assert!(held.len() >= 8, "the flood never got in: {}", held.len());
    assert_eq!(refused, 8 * 4, "12 of 16 let in per address");
    assert!(peak < 400.0, "peak RSS {peak:.0} MiB");
    tokio::task::spawn_blocking(move || assert_completed(honest))
        .await
        .unwrap();
}

/// Regression (issue 14, 2): 400 idle welcomed connections against `--max-connections 300`
/// refused every honest job, which did not retry. Now one address gets its share, a welcomed
/// connection that does not join is dropped, and a job refused for load retries.
#[tokio::test(flavor = "multi_thread")]
async fn idle_connections_with_the_token_do_not_lock_other_addresses_out() {
    let (coordinator, dir) = guarded(&[
        "--max-connections",
        "300",
        "--max-connections-per-address",
        "100",
        "--max-unwelcomed-per-address",
        "400",
        "--join-timeout",
        "600s",
    ]);
    let mut idle = Vec::new();
    let mut refused = 0;
    for _ in 0..200 {
        for last in [2, 3] {
            match Raw::connected_from(&coordinator, loopback(last)).await {
                Ok(mut raw) => match tokio::time::timeout(
                    LIMIT,
                    raw.ask(hello_as("idle", PROTOCOL_VERSION, Some(TOKEN))),
                )
                .await
                {
                    Ok(ServerMessage::Welcome(_)) => idle.push(raw),
                    other => panic!("{other:?}"),
                },
                Err(_) => refused += 1,
            }
        }
    }
    println!(
        "idle flood: {} welcomed and held, {refused} refused",
        idle.len()
    );
    assert_eq!(idle.len(), 200, "each address gets its share of 100");
    assert_eq!(refused, 200);
    // The honest jobs, from 127.0.0.1, get in beside them and finish.
    let honest = honest_session(&coordinator, dir.path(), &[("TASK_SHARDING_TOKEN", TOKEN)]);
    tokio::task::spawn_blocking(move || assert_completed(honest))
        .await
        .unwrap();
    assert!(idle
        .iter()
        .all(|raw| raw.connection.close_reason().is_none()));
}

/// Issue 14, 1: after its hello a token holder may send frames of up to 32 MiB, and could hold
/// many incomplete ones. Large incomplete frames share a budget, in all and per address: past
/// it a frame is refused as Busy before its body is buffered, and other addresses still upload.
#[tokio::test(flavor = "multi_thread")]
async fn incomplete_large_frames_share_a_budget_per_address() {
    let (coordinator, dir) = guarded(&["--max-buffered-bytes-per-address", "1000000"]);
    let mut holder = Raw::greeted_from(&coordinator, loopback(2), Some(TOKEN)).await;
    announce_900_kb(&mut holder).await.unwrap();
    let mut second = Raw::greeted_from(&coordinator, loopback(2), Some(TOKEN)).await;
    let _ = announce_900_kb(&mut second).await;
    match tokio::time::timeout(LIMIT, second.reader.next())
        .await
        .unwrap()
    {
        Some(Ok(ServerMessage::Error(e))) => {
            assert_eq!(e.code, ErrorCode::Busy, "{e:?}");
            assert!(e.message.contains("retry later"), "{}", e.message);
        }
        other => panic!("a second 900 kB frame from one address fit: {other:?}"),
    }
    // Another address is not affected: its 900 kB frame is read (and, being garbage, refused
    // as undecodable rather than for load).
    let mut other = Raw::greeted_from(&coordinator, loopback(3), Some(TOKEN)).await;
    let mut frame = 900_000u32.to_be_bytes().to_vec();
    frame.extend(std::iter::repeat_n(0xffu8, 900_000));
    let _ = other.writer.get_mut().write_all(&frame).await;
    match tokio::time::timeout(LIMIT, other.reader.next())
        .await
        .unwrap()
    {
        Some(Ok(ServerMessage::Error(e))) => assert_eq!(e.code, ErrorCode::BadFrame, "{e:?}"),
        other => panic!("{other:?}"),
    }
    let honest = honest_session(&coordinator, dir.path(), &[("TASK_SHARDING_TOKEN", TOKEN)]);
    tokio::task::spawn_blocking(move || assert_completed(honest))
        .await
        .unwrap();
    assert!(
        holder.connection.close_reason().is_none(),
        "the holder was not refused"
    );
}

/// Announces a 900 kB frame and sends the first 100 kB of it.
async fn announce_900_kb(raw: &mut Raw) -> Result<(), quinn::WriteError> {
    let mut bytes = 900_000u32.to_be_bytes().to_vec();
    bytes.extend(std::iter::repeat_n(0u8, 100_000));
    raw.writer.get_mut().write_all(&bytes).await
}

/// A job with the token running a schema `name` of two tasks that pass.
fn spawn_two_task_job(coordinator: &Coordinator, dir: &std::path::Path, name: &str) -> Job {
    let schema = write_schema(dir, name, &["a".to_string(), "b".to_string()]).unwrap();
    let mut command = coordinator.run_command("run-1", name, &schema, &["true"]);
    command.env("TASK_SHARDING_TOKEN", TOKEN);
    Job::spawn(name, command).unwrap()
}

/// Waits for a job of [`spawn_two_task_job`] and checks it passed both tasks.
async fn assert_passes_two(job: Job) {
    let output = tokio::task::spawn_blocking(move || job.wait(LIMIT).unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(summary(&stdout).contains("2 passed"), "{stdout}");
}

/// Issue 14, 2: a job refused for load failed at once. Now it backs off and retries for its
/// grace period, and gets in once there is room.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_refused_for_load_retries_until_there_is_room() {
    let (coordinator, dir) = guarded(&["--max-connections-per-address", "2"]);
    let mut holders = Vec::new();
    for _ in 0..2 {
        holders.push(Raw::greeted_from(&coordinator, loopback(1), Some(TOKEN)).await);
    }
    let job = spawn_two_task_job(&coordinator, dir.path(), "patient");
    wait_until("the job is refused", LIMIT, || {
        coordinator
            .log()
            .contains("refused a connection: at the limit of 2 connections from one address")
    })
    .unwrap();
    for holder in &holders {
        holder.connection.close(0u32.into(), b"making room");
    }
    assert_passes_two(job).await;
}

/// Regression: a join refused for load (the coordinator at `--max-sessions`) ended the job at
/// once, though a refused connection was retried. The join is now retried the same way.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_whose_join_is_refused_for_load_retries_until_there_is_room() {
    let (coordinator, dir) = guarded(&["--max-sessions", "1", "--session-ttl", "1s"]);
    let mut holder = Raw::greeted_from(&coordinator, loopback(4), Some(TOKEN)).await;
    let tiny = Schema::new("tiny", ["x"]).unwrap();
    assert!(matches!(
        holder.join("occupied", &tiny, None).await,
        ServerMessage::Joined(_)
    ));
    let job = spawn_two_task_job(&coordinator, dir.path(), "waiting");
    wait_until("the job's join is refused", LIMIT, || {
        coordinator
            .log()
            .contains("refused a new session: the coordinator holds its maximum of sessions")
    })
    .unwrap();
    // The occupying session completes; once forgotten there is room.
    let assignment = holder
        .ask(ClientMessage::Request(WorkRequest {
            max_tasks: 1,
            overhead_ms: 0,
        }))
        .await;
    assert!(
        matches!(assignment, ServerMessage::Assignment(_)),
        "{assignment:?}"
    );
    let complete = holder.ask(ClientMessage::Results(all_passed([0]))).await;
    assert!(
        matches!(complete, ServerMessage::Complete { .. }),
        "{complete:?}"
    );
    holder.connection.close(0u32.into(), b"done");
    assert_passes_two(job).await;
}

/// A welcomed client that never joins is dropped after `--join-timeout`, freeing its place.
#[tokio::test(flavor = "multi_thread")]
async fn a_welcomed_client_that_does_not_join_is_dropped() {
    let (coordinator, _dir) = guarded(&["--join-timeout", "1s"]);
    let raw = Raw::greeted_from(&coordinator, loopback(2), Some(TOKEN)).await;
    let reason = tokio::time::timeout(LIMIT, raw.connection.closed())
        .await
        .expect("dropped");
    assert!(
        reason
            .to_string()
            .contains("did not join a session in time"),
        "{reason}"
    );
}

/// Regression (issue 14, 2): three tiny sessions against `--max-sessions 3` refused the next
/// real run. One address may now hold only its share of the sessions.
#[tokio::test(flavor = "multi_thread")]
async fn a_session_flood_from_one_address_leaves_room_for_others() {
    let (coordinator, dir) = guarded(&[
        "--max-sessions",
        "3",
        "--max-sessions-per-address",
        "2",
        "--max-schema-bytes-per-address",
        "100",
    ]);
    let tiny = Schema::new("tiny", ["x"]).unwrap();
    let mut floods = Vec::new();
    for i in 0..3 {
        let mut raw = Raw::greeted_from(&coordinator, loopback(2), Some(TOKEN)).await;
        let answer = raw.join(&format!("flood-{i}"), &tiny, None).await;
        floods.push((raw, answer));
    }
    assert!(
        matches!(floods[0].1, ServerMessage::Joined(_)),
        "{:?}",
        floods[0].1
    );
    assert!(
        matches!(floods[1].1, ServerMessage::Joined(_)),
        "{:?}",
        floods[1].1
    );
    assert_busy(&floods[2].1, "--max-sessions-per-address");
    // Nor may one address make the coordinator hold more than its share of schema text.
    let mut wide = Raw::greeted_from(&coordinator, loopback(3), Some(TOKEN)).await;
    let large = Schema::new("large", (0..20).map(|i| format!("task-number-{i}"))).unwrap();
    assert_busy(
        &wide.join("large", &large, None).await,
        "--max-schema-bytes-per-address",
    );
    let honest = honest_session(&coordinator, dir.path(), &[("TASK_SHARDING_TOKEN", TOKEN)]);
    tokio::task::spawn_blocking(move || assert_completed(honest))
        .await
        .unwrap();
}

/// Regression (issue 14, 3): a fourth client with the token joined a live run under its
/// guessable key (`run/<RUN_ID>/<schema name>`), was leased tasks and reported them PASSED;
/// every job printed the forged records. With `TASK_SHARDING_RUN_SECRET` the key is sealed:
/// the intruder's join makes a session of its own, and the honest verdict (one failure) stands.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_holder_without_the_run_secret_cannot_forge_a_verdict() {
    let (coordinator, dir) = guarded(&[]);
    let env = [
        ("TASK_SHARDING_TOKEN", TOKEN),
        ("TASK_SHARDING_RUN_SECRET", "known-to-this-run-only"),
    ];
    // t4 fails: the right verdict is a failure, which forged PASSED results would hide.
    let honest = honest_session_running(
        &coordinator,
        dir.path(),
        &env,
        &["sh", "-c", "sleep 0.4; test {task} != t4"],
    );
    wait_until("the honest session exists", LIMIT, || {
        honest
            .iter()
            .any(|job| job.read("stderr").contains("the session:"))
    })
    .unwrap();
    let mut intruder = Raw::greeted_from(&coordinator, loopback(2), Some(TOKEN)).await;
    let schema = Schema::new("honest", (0..9).map(|i| format!("t{i}"))).unwrap();
    match intruder.join("run/run-1/honest", &schema, None).await {
        // Without the secret, the guessable key names no session of the run's: it starts one.
        ServerMessage::Joined(joined) => assert!(joined.created, "joined the run's session"),
        other => panic!("{other:?}"),
    }
    let assigned = intruder
        .ask(ClientMessage::Request(WorkRequest {
            max_tasks: 9,
            overhead_ms: 0,
        }))
        .await;
    let ServerMessage::Assignment(assignment) = assigned else {
        panic!("{assigned:?}")
    };
    let forged = all_passed(assignment.tasks);
    intruder.send(ClientMessage::Results(forged)).await;

    let outputs = outputs(honest).await;
    for output in &outputs {
        let text = summary(&String::from_utf8_lossy(&output.stdout));
        assert_eq!(output.status.code(), Some(1), "{text}");
        assert!(text.contains("8 passed, 1 failed"), "{text}");
        assert!(!ran_by(&text, "hostile"), "a forged result counted: {text}");
    }
}

/// Regression (issue 14, 4 and 5): a client id's newline forged coordinator log lines and a
/// 30 MB id wrote a 30 MB log line, both before the token was checked; cursor movements in a
/// member's id drew a fake "50 passed" in every job's summary.
#[tokio::test(flavor = "multi_thread")]
async fn escapes_and_huge_ids_reach_neither_the_log_nor_a_terminal() {
    let (coordinator, dir) = guarded(&[]);
    let honest = honest_session(&coordinator, dir.path(), &[("TASK_SHARDING_TOKEN", TOKEN)]);
    let forged_line = "\nERROR forged: the coordinator is compromised";
    let escapes = "x\u{1b}[1A\u{1b}[2K\rtask-sharding: 50 passed";
    // Without the token: the id is never logged raw.
    for id in [forged_line.to_string(), "y".repeat(60_000)] {
        let mut raw = Raw::connected_from(&coordinator, loopback(2))
            .await
            .unwrap();
        let answer = raw
            .ask(hello_as(&id, PROTOCOL_VERSION, Some("guess")))
            .await;
        assert!(
            matches!(&answer, ServerMessage::Error(e) if e.code == ErrorCode::Unauthorized),
            "{answer:?}"
        );
    }
    // An id larger than a frame before the hello may be is not even read.
    let mut raw = Raw::connected_from(&coordinator, loopback(2))
        .await
        .unwrap();
    let huge = framed(&hello_as(
        &"z".repeat(100_000),
        PROTOCOL_VERSION,
        Some(TOKEN),
    ));
    let _ = raw.writer.get_mut().write_all(&huge).await;
    let answer = tokio::time::timeout(LIMIT, raw.reader.next())
        .await
        .unwrap();
    assert!(
        matches!(&answer, Some(Ok(ServerMessage::Error(e))) if e.code == ErrorCode::BadFrame),
        "{answer:?}"
    );
    // With the token, an id with escapes is refused, by hand and through the real client.
    let mut raw = Raw::connected_from(&coordinator, loopback(2))
        .await
        .unwrap();
    let answer = raw
        .ask(hello_as(escapes, PROTOCOL_VERSION, Some(TOKEN)))
        .await;
    assert!(
        matches!(&answer, ServerMessage::Error(e) if e.code == ErrorCode::ProtocolViolation
            && e.message.contains("control characters")),
        "{answer:?}"
    );
    let schema = write_schema(dir.path(), "other", &["x".to_string()]).unwrap();
    let output = coordinator
        .run_command("run-1", escapes, &schema, &["true"])
        .env("TASK_SHARDING_TOKEN", TOKEN)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("control characters"), "{stderr}");

    let outputs = outputs(honest).await;
    for output in &outputs {
        assert_eq!(output.status.code(), Some(0));
        assert!(
            !output.stdout.contains(&0x1b),
            "an escape reached a job's terminal"
        );
        assert!(summary(&String::from_utf8_lossy(&output.stdout)).contains("9 passed"));
    }
    let log = coordinator.log();
    assert!(
        !log.lines().any(|line| line.starts_with("ERROR forged")),
        "a forged log line: {log}"
    );
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 4096, "a log line of {longest} bytes");
    assert!(!log.contains('\u{1b}'), "an escape reached the log");
}

/// Regression (issue 14, 7): sessions.redb (every live session's tickets) and history.redb were
/// left to the umask (0644).
#[test]
fn the_state_files_are_private() {
    let coordinator = Coordinator::start(&[]).unwrap();
    let mode = |name: &str| {
        std::fs::metadata(coordinator.state_dir().join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    wait_until("the stores exist", LIMIT, || {
        coordinator.state_dir().join("sessions.redb").exists()
            && coordinator.state_dir().join("history.redb").exists()
    })
    .unwrap();
    assert_eq!(mode("sessions.redb"), 0o600);
    assert_eq!(mode("history.redb"), 0o600);
    assert_eq!(mode("reset.key"), 0o600);
    assert_eq!(mode("tls"), 0o700);
    assert_eq!(mode("tls/key.pem"), 0o600);
}
