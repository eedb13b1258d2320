//! What the hostile-peer tests share: a client speaking the protocol by hand (to send what a
//! real client never would, from any loopback address), and an honest session to run beside.

#![allow(dead_code)] // Each test binary uses its own part.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use e2e::{summary, write_schema, Coordinator, Job};
use futures_util::{SinkExt as _, StreamExt as _};
use schemas::{
    ClientInfo, ClientMessage, Hello, Join, MessageCodec, Schema, ServerMessage, Ticket,
    PROTOCOL_VERSION,
};
use tokio_util::codec::{FramedRead, FramedWrite};
use wrapper::trust::Trust;

/// How long anything in these tests may take.
pub const LIMIT: Duration = Duration::from_secs(90);

/// 127.0.0.`last`: every 127/8 address is loopback, so one machine can play many peers.
pub fn loopback(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// A raw QUIC connection to the coordinator from `source`, verifying it by its CA file,
/// offering `alpn`.
pub async fn connect_from(
    coordinator: &Coordinator,
    source: IpAddr,
    alpn: &[u8],
) -> Result<quinn::Connection, quinn::ConnectionError> {
    let mut tls = Trust::CaFile(coordinator.cert.clone())
        .client_config()
        .unwrap();
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client(SocketAddr::new(source, 0)).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let addr: SocketAddr = coordinator.addr.parse().unwrap();
    endpoint.connect(addr, "localhost").unwrap().await
}

/// A raw QUIC connection from 127.0.0.1.
pub async fn raw_connect(
    coordinator: &Coordinator,
    alpn: &[u8],
) -> Result<quinn::Connection, quinn::ConnectionError> {
    connect_from(coordinator, loopback(1), alpn).await
}

/// A hello from "hostile".
pub fn hello(version: u16, token: Option<&str>) -> ClientMessage {
    hello_as("hostile", version, token)
}

/// A hello from `client_id`.
pub fn hello_as(client_id: &str, version: u16, token: Option<&str>) -> ClientMessage {
    ClientMessage::Hello(Hello {
        protocol_version: version,
        client_id: client_id.into(),
        token: token.map(str::to_string),
        info: ClientInfo::default(),
    })
}

/// `message` as a frame on the wire.
pub fn framed(message: &ClientMessage) -> Vec<u8> {
    let mut buf = BytesMut::new();
    tokio_util::codec::Encoder::encode(
        &mut MessageCodec::<ServerMessage, ClientMessage>::default(),
        message,
        &mut buf,
    )
    .unwrap();
    buf.to_vec()
}

/// Starts three honest clients in a session of nine slow-ish tasks, in run `run-1`, with
/// `env` set on each.
pub fn honest_session(coordinator: &Coordinator, dir: &Path, env: &[(&str, &str)]) -> Vec<Job> {
    honest_session_running(coordinator, dir, env, &["sleep", "0.4"])
}

/// Like [`honest_session`], each task running `command`.
pub fn honest_session_running(
    coordinator: &Coordinator,
    dir: &Path,
    env: &[(&str, &str)],
    command: &[&str],
) -> Vec<Job> {
    let tasks: Vec<String> = (0..9).map(|i| format!("t{i}")).collect();
    let schema = write_schema(dir, "honest", &tasks).unwrap();
    (1..=3)
        .map(|i| {
            let name = format!("honest-{i}");
            let mut cmd = coordinator.run_command("run-1", &name, &schema, command);
            cmd.envs(env.iter().copied());
            Job::spawn(&name, cmd).unwrap()
        })
        .collect()
}

/// Waits for every job (off the async runtime's workers), for its output.
pub async fn outputs(jobs: Vec<Job>) -> Vec<std::process::Output> {
    tokio::task::spawn_blocking(move || {
        jobs.into_iter()
            .map(|j| j.wait(LIMIT).unwrap())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap()
}

/// Reports of `tasks`, all PASSED: what a forger sends.
pub fn all_passed(tasks: impl IntoIterator<Item = schemas::TaskId>) -> Vec<schemas::TaskReport> {
    tasks
        .into_iter()
        .map(|task| schemas::TaskReport {
            task,
            result: schemas::TaskResult {
                outcome: schemas::Outcome::Passed,
                exit_code: Some(0),
                duration_ms: 1,
                executed: true,
                log_tail: None,
                build_ms: 0,
            },
        })
        .collect()
}

/// Asserts that `answer` is a `Busy` refusal naming `flag`.
pub fn assert_busy(answer: &ServerMessage, flag: &str) {
    match answer {
        ServerMessage::Error(e) => {
            assert_eq!(e.code, schemas::ErrorCode::Busy, "{e:?}");
            assert!(e.message.contains(flag), "{}", e.message);
        }
        other => panic!("expected a Busy refusal naming {flag}, got {other:?}"),
    }
}

/// Waits for every job; each must exit 0 with all nine tasks passed.
pub fn assert_completed(jobs: Vec<Job>) {
    let outputs: Vec<_> = jobs.into_iter().map(|j| j.wait(LIMIT).unwrap()).collect();
    for output in &outputs {
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(summary(&String::from_utf8_lossy(&output.stdout)).contains("9 passed"));
    }
}

/// A field of /proc/PID/status in MiB (`VmHWM:` the peak resident memory, `VmRSS:` the current).
pub fn memory_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .expect("a memory figure")
        / 1024.0
}

/// A client speaking the protocol by hand.
pub struct Raw {
    pub connection: quinn::Connection,
    pub reader: FramedRead<quinn::RecvStream, MessageCodec<ServerMessage, ClientMessage>>,
    pub writer: FramedWrite<quinn::SendStream, MessageCodec<ServerMessage, ClientMessage>>,
}

impl Raw {
    /// Connected from 127.0.0.1 and welcomed, without a token.
    pub async fn greeted(coordinator: &Coordinator) -> Raw {
        Raw::greeted_from(coordinator, loopback(1), None).await
    }

    /// Connected from `source` and welcomed, presenting `token`.
    pub async fn greeted_from(
        coordinator: &Coordinator,
        source: IpAddr,
        token: Option<&str>,
    ) -> Raw {
        let mut raw = Raw::connected_from(coordinator, source).await.unwrap();
        let welcome = raw.ask(hello(PROTOCOL_VERSION, token)).await;
        assert!(matches!(welcome, ServerMessage::Welcome(_)), "{welcome:?}");
        raw
    }

    /// Connected from `source`, its stream open, nothing said yet.
    pub async fn connected_from(
        coordinator: &Coordinator,
        source: IpAddr,
    ) -> Result<Raw, quinn::ConnectionError> {
        let connection = connect_from(coordinator, source, schemas::ALPN).await?;
        let (send, recv) = connection.open_bi().await?;
        Ok(Raw {
            connection,
            reader: FramedRead::new(recv, MessageCodec::default()),
            writer: FramedWrite::new(send, MessageCodec::default()),
        })
    }

    pub async fn send(&mut self, message: ClientMessage) {
        self.writer.send(&message).await.unwrap();
    }

    pub async fn ask(&mut self, message: ClientMessage) -> ServerMessage {
        self.send(message).await;
        tokio::time::timeout(LIMIT, self.reader.next())
            .await
            .expect("an answer")
            .expect("not closed")
            .unwrap()
    }

    /// Joins `key` with `schema`, uploading it if asked, presenting `resume`.
    pub async fn join(
        &mut self,
        key: &str,
        schema: &Schema,
        resume: Option<Ticket>,
    ) -> ServerMessage {
        let join = |with_schema| {
            ClientMessage::Join(Join {
                resume,
                ..Join::new(key.into(), schema, "run:replay".into(), with_schema)
            })
        };
        match self.ask(join(false)).await {
            ServerMessage::NeedSchema => self.ask(join(true)).await,
            other => other,
        }
    }
}

/// Whether `summary` holds one of `job`'s records.
pub fn ran_by(summary: &str, job: &str) -> bool {
    summary.contains(&format!("[{job}]"))
}
