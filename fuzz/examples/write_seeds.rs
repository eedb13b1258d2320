//! Writes the seed corpus, fuzz/seeds/<target>/, from real encoded messages and schemas, so the
//! fuzzer starts from valid frames rather than from nothing:
//!
//!     cargo run --manifest-path fuzz/Cargo.toml --example write_seeds
//!
//! Seeds only need to be close to real traffic: stale ones (after a protocol change) still work,
//! so run this again when the messages change, not on every build. It names message fields, so
//! it may need a touch then; the fuzz targets themselves do not.

use std::path::Path;

use schemas::{
    encode_frame, Assignment, ClientInfo, ClientMessage, ErrorCode, ErrorMessage, Hello, Join,
    Outcome, Progress, Schema, ServerMessage, SessionReport, TaskRecord, TaskReport, TaskResult,
    Welcome, WorkRequest, DEFAULT_MAX_FRAME_LEN, PROTOCOL_VERSION,
};

fn frame<T: serde::Serialize>(message: &T) -> Vec<u8> {
    encode_frame(message, DEFAULT_MAX_FRAME_LEN)
        .expect("a sample message encodes")
        .to_vec()
}

fn main() -> std::io::Result<()> {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let schema = Schema::new("bazel //...", ["//a:test", "//b:test", "//c:long_test"]).unwrap();
    let result = TaskResult {
        outcome: Outcome::Flaky,
        exit_code: Some(0),
        duration_ms: 1234,
        executed: true,
        log_tail: None,
        build_ms: 0,
    };
    let hello = ClientMessage::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        client_id: "ci-job-1".into(),
        token: Some("secret".into()),
        info: ClientInfo {
            host: "runner-7".into(),
            ci_job: Some("test 1/4".into()),
            pid: 4242,
            version: "0.1.0".into(),
        },
    });
    let join = |with_schema| {
        ClientMessage::Join(Join::new(
            "main@abc123".into(),
            &schema,
            "bazel:repo".into(),
            with_schema,
        ))
    };
    let request = ClientMessage::Request(WorkRequest {
        max_tasks: 8,
        overhead_ms: 1500,
    });
    let results = ClientMessage::Results(vec![
        TaskReport {
            task: 0,
            result: result.clone(),
        },
        TaskReport {
            task: 2,
            result: TaskResult {
                outcome: Outcome::TimedOut,
                exit_code: None,
                duration_ms: 300_000,
                executed: false,
                log_tail: None,
                build_ms: 0,
            },
        },
    ]);
    let client = [
        ("hello", hello),
        ("join", join(false)),
        ("join_with_schema", join(true)),
        ("request", request),
        ("results", results),
    ];
    let server = [
        (
            "error",
            ServerMessage::Error(ErrorMessage {
                code: ErrorCode::VersionMismatch,
                message: "the coordinator speaks version 1".into(),
            }),
        ),
        (
            "welcome",
            ServerMessage::Welcome(Welcome {
                protocol_version: PROTOCOL_VERSION,
                coordinator_version: "0.1.0".into(),
            }),
        ),
        ("need_schema", ServerMessage::NeedSchema),
        (
            "assignment",
            ServerMessage::Assignment(Assignment {
                tasks: vec![1, 2],
                progress: Progress {
                    finished: 1,
                    total: 3,
                    clients: 2,
                },
            }),
        ),
        ("abort", ServerMessage::Abort(vec![2])),
        (
            "complete",
            ServerMessage::Complete {
                report: SessionReport {
                    schema_name: schema.name.clone(),
                    records: vec![TaskRecord {
                        task: 0,
                        result,
                        client: "ci-job-1".into(),
                    }],
                },
                run_sessions: 1,
            },
        ),
    ];

    // frame_decode's input: a control byte (chunk size - 1), then the stream.
    let dir = seeds.join("frame_decode");
    std::fs::create_dir_all(&dir)?;
    let mut conversation = vec![0];
    for (name, message) in &client {
        conversation.extend(frame(message));
        for control in [0u8, 255] {
            let mut seed = vec![control];
            seed.extend(frame(message));
            std::fs::write(dir.join(format!("client_{name}_{control}")), seed)?;
        }
    }
    std::fs::write(dir.join("client_conversation_0"), conversation)?;
    for (name, message) in &server {
        let mut seed = vec![255];
        seed.extend(frame(message));
        std::fs::write(dir.join(format!("server_{name}")), seed)?;
    }

    let dir = seeds.join("schema_parse");
    std::fs::create_dir_all(&dir)?;
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/examples");
    for entry in std::fs::read_dir(examples)? {
        let path = entry?.path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap()))?;
    }
    std::fs::write(dir.join("to_yaml.yaml"), schema.to_yaml())?;
    std::fs::write(
        dir.join("quoted.yaml"),
        "# a comment\nname: 'quoted: name'\ntasks:\n  - task: \"//a:b\"\n  - {task: \"- dash\"}\n  - task: |\n      multi\n      line\n",
    )?;
    println!("seeds written to {}", seeds.display());
    Ok(())
}
