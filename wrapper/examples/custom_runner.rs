//! A complete runner: each task is a word, and running it counts its letters; a word with an
//! `x` in it fails. Every job started with the same `TASK_SHARDING_RUN_ID` shares the words.
//!
//! ```sh
//! TASK_SHARDING_COORDINATOR=127.0.0.1:7400 TASK_SHARDING_CA=cert.pem TASK_SHARDING_RUN_ID=demo \
//!     cargo run -p wrapper --example custom_runner -- alpha beta gamma
//! ```
//!
//! Exits 0 when every word of the session passed, 1 when one failed, 3 without a coordinator,
//! 130 when interrupted.

use std::process::ExitCode;
use std::time::Instant;

use wrapper::{
    drive, interrupt_on_signals, AssignedTask, Batch, ConnectOptions, Outcome, Progress, Schema,
    SessionOptions, TaskOutcome, TaskReport, TaskResult, TaskRunner, Trust,
};

/// The runner: what this project knows how to do with one task.
struct LetterCounter;

impl TaskRunner for LetterCounter {
    async fn run(&mut self, tasks: &[AssignedTask], batch: Batch) -> Vec<TaskReport> {
        let mut reports = Vec::new();
        for task in tasks {
            // Stop between tasks when told to; the tasks left out go to another job.
            if batch.abort.is_cancelled() {
                break;
            }
            let started = Instant::now();
            let passed = !task.text.contains('x');
            println!("{}: {} letters", task.text, task.text.chars().count());
            reports.push(TaskReport {
                task: task.id,
                result: TaskResult {
                    outcome: if passed {
                        TaskOutcome::Passed
                    } else {
                        TaskOutcome::Failed
                    },
                    exit_code: None,
                    duration_ms: started.elapsed().as_millis() as u64,
                    executed: true,
                    log_tail: None,
                    build_ms: 0,
                },
            });
        }
        reports
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let env = |name: &str| std::env::var(name).unwrap_or_default();
    let words: Vec<String> = std::env::args().skip(1).collect();
    let schema = match Schema::new("letters", words) {
        Ok(schema) => schema,
        Err(e) => {
            eprintln!("custom_runner: {e}");
            return ExitCode::from(2);
        }
    };
    let connect = ConnectOptions::builder(
        env("TASK_SHARDING_COORDINATOR"),
        Trust::CaFile(env("TASK_SHARDING_CA").into()),
    )
    .client_id(format!("letters-{}", std::process::id()))
    .build();
    // Jobs with the same key share one session; the history scope files the tasks' timings.
    let session = SessionOptions {
        interrupt: interrupt_on_signals(),
        ..SessionOptions::new(
            format!("letters/{}", env("TASK_SHARDING_RUN_ID")),
            "letters",
        )
    };
    let outcome = drive(
        &connect,
        &schema,
        &mut LetterCounter,
        &session,
        |progress| {
            if let Progress::FinishingAlone { cause, rest } = progress {
                eprintln!("custom_runner: {cause}; running the {rest} words left alone");
            }
        },
    )
    .await;
    match outcome {
        Outcome::Complete(report) | Outcome::Alone { report, .. } => {
            for record in &report.records {
                let word = &schema.tasks[record.task as usize].task;
                println!("{word}: {:?} by {}", record.result.outcome, record.client);
            }
            ExitCode::from(if report.all_succeeded() { 0 } else { 1 })
        }
        Outcome::Unavailable(e) => {
            eprintln!("custom_runner: {e}");
            ExitCode::from(3)
        }
        Outcome::Interrupted { .. } => ExitCode::from(130),
    }
}
