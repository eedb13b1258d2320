//! Bad peers are refused in words, and a session running beside them completes.

mod hostile;

use std::time::Duration;

use bytes::{BufMut as _, BytesMut};
use e2e::{summary, write_schema, Coordinator};
use futures_util::StreamExt as _;
use hostile::{
    all_passed, assert_completed, framed, hello, honest_session, outputs, raw_connect, Raw, LIMIT,
};
use schemas::{
    ClientMessage, ErrorCode, MessageCodec, Schema, ServerMessage, WorkRequest, PROTOCOL_VERSION,
};
use tokio_util::codec::FramedRead;

/// Sends `bytes` on a fresh stream and returns the coordinator's error, which must come before
/// it closes the connection.
async fn refusal_for(coordinator: &Coordinator, bytes: &[u8]) -> (ErrorCode, String) {
    let connection = raw_connect(coordinator, schemas::ALPN).await.unwrap();
    let (mut send, recv) = connection.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    let mut reader = FramedRead::new(
        recv,
        MessageCodec::<ServerMessage, ClientMessage>::default(),
    );
    let reply = tokio::time::timeout(LIMIT, reader.next())
        .await
        .expect("an answer");
    match reply {
        Some(Ok(ServerMessage::Error(e))) => {
            // ...and then the coordinator closes the connection.
            let closed = tokio::time::timeout(LIMIT, connection.closed())
                .await
                .expect("closed");
            assert!(
                matches!(closed, quinn::ConnectionError::ApplicationClosed(_)),
                "{closed}"
            );
            (e.code, e.message)
        }
        other => panic!("expected an error message, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_frames_and_versions_are_refused_while_a_session_completes() {
    let coordinator = Coordinator::start(&[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let honest = honest_session(&coordinator, dir.path(), &[]);

    // A hello from another protocol version.
    let (code, message) =
        refusal_for(&coordinator, &framed(&hello(PROTOCOL_VERSION + 1, None))).await;
    assert_eq!(code, ErrorCode::VersionMismatch);
    assert!(
        message.contains(&format!("protocol version {}", PROTOCOL_VERSION + 1)),
        "{message}"
    );

    // A frame announcing more than the maximum.
    let (code, message) = refusal_for(&coordinator, &u32::MAX.to_be_bytes()).await;
    assert_eq!(code, ErrorCode::BadFrame);
    assert!(message.contains("exceeds the maximum"), "{message}");

    // A well-sized frame of random bytes.
    let mut garbage = BytesMut::new();
    garbage.put_u32(64);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..64 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        garbage.put_u8((seed >> 24) as u8 | 0x80);
    }
    let (code, message) = refusal_for(&coordinator, &garbage).await;
    assert_eq!(code, ErrorCode::BadFrame);
    assert!(message.contains("undecodable"), "{message}");

    // A message before the hello.
    let (code, message) = refusal_for(
        &coordinator,
        &framed(&ClientMessage::Request(schemas::WorkRequest {
            overhead_ms: 0,
            max_tasks: 1,
        })),
    )
    .await;
    assert_eq!(code, ErrorCode::ProtocolViolation);
    assert!(
        message.contains("first message must be a hello"),
        "{message}"
    );

    // Another protocol's ALPN does not even complete the handshake.
    let refused = raw_connect(&coordinator, b"task-sharding/999").await;
    assert!(refused.is_err(), "a foreign ALPN was accepted");

    // A peer that connects and says nothing is dropped after the hello timeout; meanwhile it
    // holds nothing the session needs.
    let silent = raw_connect(&coordinator, schemas::ALPN).await.unwrap();
    let (mut send, _recv) = silent.open_bi().await.unwrap();
    send.write_all(&[0, 0]).await.unwrap();

    tokio::task::spawn_blocking(move || assert_completed(honest))
        .await
        .unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(30), silent.closed()).await;
    assert!(closed.is_ok(), "the silent peer was disconnected");
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "open-sesame\n").unwrap();
    let coordinator = Coordinator::start(&["--token-file", token_file.to_str().unwrap()]).unwrap();
    let honest = honest_session(
        &coordinator,
        dir.path(),
        &[("TASK_SHARDING_TOKEN", "open-sesame")],
    );

    let (code, message) = refusal_for(
        &coordinator,
        &framed(&hello(PROTOCOL_VERSION, Some("guess"))),
    )
    .await;
    assert_eq!(code, ErrorCode::Unauthorized);
    assert!(message.contains("requires a token"), "{message}");

    // Through the real client, the user sees the coordinator's words and exit code 3.
    let schema = write_schema(dir.path(), "other", &["x".to_string()]).unwrap();
    for (token, expected) in [
        (None, "requires a token"),
        (Some("guess"), "requires a token"),
    ] {
        let mut cmd = coordinator.run_command("run-1", "intruder", &schema, &["true"]);
        if let Some(token) = token {
            cmd.env("TASK_SHARDING_TOKEN", token);
        }
        let output = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(3), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
    }
    assert!(
        !coordinator.log().contains("guess"),
        "tokens are never logged"
    );
    tokio::task::spawn_blocking(move || assert_completed(honest))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conflicting_schema_under_the_same_run_is_refused() {
    let coordinator = Coordinator::start(&[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let honest = honest_session(&coordinator, dir.path(), &[]);
    // Once the honest session exists (else the confused client would create it and the honest
    // ones be refused instead)...
    e2e::wait_until("the honest session exists", LIMIT, || {
        honest
            .iter()
            .any(|job| job.read("stderr").contains("the session:"))
    })
    .unwrap();
    // ...a job with the same run id and schema name but different tasks disagrees about the work.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let schema = write_schema(
        &other,
        "honest",
        &["something".to_string(), "else".to_string()],
    )
    .unwrap();
    let output = coordinator
        .run_command("run-1", "confused", &schema, &["true"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("already runs schema") && stderr.contains("2 tasks"),
        "{stderr}"
    );
    tokio::task::spawn_blocking(move || assert_completed(honest))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pinned_fingerprint_is_checked() {
    let coordinator = Coordinator::start(&[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let schema = write_schema(dir.path(), "pinned", &["a".to_string()]).unwrap();
    let run = |fingerprint: &str| {
        coordinator
            .run_command("run-1", "pinned", &schema, &["true"])
            .env_remove("TASK_SHARDING_CA")
            .env("TASK_SHARDING_FINGERPRINT", fingerprint)
            .output()
            .unwrap()
    };
    let wrong = run(&"00".repeat(32));
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert_eq!(wrong.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("not the pinned"), "{stderr}");
    let right = run(&coordinator.fingerprint);
    assert_eq!(
        right.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&right.stderr)
    );
}

/// Messages lifted from one session and replayed into another are refused: a member's ticket
/// is good for its own session only, and results count only for tasks leased to the reporter.
#[tokio::test(flavor = "multi_thread")]
async fn messages_replayed_from_another_session_are_refused() {
    let coordinator = Coordinator::start(&[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let honest = honest_session(&coordinator, dir.path(), &[]);
    let honest_key = "run/run-1/honest";
    let honest_schema = Schema::new("honest", (0..9).map(|i| format!("t{i}"))).unwrap();

    // In a session of its own, the replayer is a member, is leased a task and reports it.
    let mut own = Raw::greeted(&coordinator).await;
    let mine = Schema::new("mine", (0..9).map(|i| format!("m{i}"))).unwrap();
    let ticket = match own.join("run/evil/mine", &mine, None).await {
        ServerMessage::Joined(joined) => joined.ticket,
        other => panic!("{other:?}"),
    };
    let assigned = own
        .ask(ClientMessage::Request(WorkRequest {
            max_tasks: 9,
            overhead_ms: 0,
        }))
        .await;
    assert!(
        matches!(assigned, ServerMessage::Assignment(_)),
        "{assigned:?}"
    );
    let results = all_passed(0..9);
    own.send(ClientMessage::Results(results.clone())).await;

    // Its ticket does not make it a member of the honest session...
    e2e::wait_until("the honest session exists", LIMIT, || {
        honest
            .iter()
            .any(|job| job.read("stderr").contains("the session:"))
    })
    .unwrap();
    let mut intruder = Raw::greeted(&coordinator).await;
    match intruder
        .join(honest_key, &honest_schema, Some(ticket))
        .await
    {
        ServerMessage::Error(e) => assert_eq!(e.code, ErrorCode::UnknownTicket, "{e:?}"),
        other => panic!("a foreign ticket was accepted: {other:?}"),
    }
    // ...and its results, replayed there as a member of its own, count for nothing.
    let mut replayer = Raw::greeted(&coordinator).await;
    let joined = replayer.join(honest_key, &honest_schema, None).await;
    assert!(matches!(joined, ServerMessage::Joined(_)), "{joined:?}");
    replayer.send(ClientMessage::Results(results)).await;

    let outputs = outputs(honest).await;
    for output in &outputs {
        let text = summary(&String::from_utf8_lossy(&output.stdout));
        assert_eq!(output.status.code(), Some(0), "{text}");
        assert!(text.contains("9 passed"), "{text}");
        assert!(
            !text.contains("hostile"),
            "a replayed result counted: {text}"
        );
    }
    let log = coordinator.log();
    assert!(
        log.contains("refused a ticket that is not of this session"),
        "{log}"
    );
    assert!(
        log.contains("ignored a result for a task not leased to this client"),
        "{log}"
    );
}
