//! `task-sharding run`: the generic runner driven by a schema file.

use std::collections::BTreeMap;

use schemas::{Schema, SessionReport};
use tokio_util::sync::CancellationToken;

use crate::cli::RunArgs;
use crate::client::{run_alone, run_session, Event, SessionOptions};
use crate::command_runner::CommandRunner;
use crate::connection::{ClientError, Connection};
use crate::{exit, summary};

/// Runs the subcommand; returns the exit code.
pub async fn run(args: RunArgs) -> u8 {
    let schema = match read_schema(&args) {
        Ok(schema) => schema,
        Err(message) => {
            eprintln!("task-sharding: error: {message}");
            return exit::USAGE;
        }
    };
    let (options, run_id) = match args
        .connect
        .connect_options()
        .and_then(|options| Ok((options, args.connect.run_id()?)))
    {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("task-sharding: error: {e}");
            return exit::USAGE;
        }
    };
    let interrupt = CancellationToken::new();
    tokio::spawn(cancel_on_signal(interrupt.clone()));
    let session = SessionOptions {
        session_key: args.connect.seal(format!("run/{run_id}/{}", schema.name)),
        history_scope: format!("run:{}", schema.name),
        max_batch: args.max_batch,
        interrupt,
        reconnect_for: args.connect.reconnect_for,
    };
    let (connection, _) = match Connection::connect(&options).await {
        Ok(connected) => connected,
        Err(e) => {
            eprintln!("task-sharding: error: {e}");
            return exit::COORDINATOR;
        }
    };
    let mut runner = CommandRunner::new(args.command);
    let total = schema.tasks.len();
    let mut mine = BTreeMap::new();
    let outcome = run_session(
        connection,
        &options,
        &schema,
        &mut runner,
        &session,
        |event| {
            if let Event::Reported(reports) = &event {
                mine.extend(reports.iter().map(|r| (r.task, r.result.clone())));
            }
            progress(&event, total)
        },
    )
    .await;
    match outcome {
        Ok(report) => verdict(&schema, &report),
        // Lost for good in the middle of the session: this job still finishes, alone.
        Err(e @ ClientError::Lost(_)) => {
            eprintln!("task-sharding: error: {e}");
            eprintln!(
                "task-sharding: warning: the coordinator is unavailable; running the {} tasks not \
                 known to be finished here",
                total - mine.len()
            );
            let report = run_alone(&schema, &mut runner, &mine, &options.client_id).await;
            verdict(&schema, &report)
        }
        Err(ClientError::Interrupted) => {
            eprintln!(
                "task-sharding: interrupted; this job's unfinished tasks go to the other jobs"
            );
            exit::INTERRUPTED
        }
        Err(e) => {
            eprintln!("task-sharding: error: {e}");
            exit::COORDINATOR
        }
    }
}

/// Prints the summary; the exit code says whether every task succeeded.
fn verdict(schema: &Schema, report: &SessionReport) -> u8 {
    print!("{}", summary::render(schema, report));
    if report.all_succeeded() {
        exit::SUCCESS
    } else {
        exit::FAILED
    }
}

fn read_schema(args: &RunArgs) -> Result<Schema, String> {
    let path = args.schema.display();
    let text =
        std::fs::read_to_string(&args.schema).map_err(|e| format!("cannot read {path}: {e}"))?;
    Schema::from_yaml(&text).map_err(|e| format!("{path}: {e}"))
}

fn progress(event: &Event, total: usize) {
    match event {
        Event::Joined(joined) => eprintln!(
            "task-sharding: {} session: {} tasks, {} already finished, {} client(s)",
            if joined.created {
                "started the"
            } else {
                "joined the"
            },
            joined.tasks,
            joined.finished,
            joined.clients
        ),
        Event::Assigned(tasks, _) => {
            for task in tasks {
                eprintln!(
                    "task-sharding: running task {}/{total}: {}",
                    task.id + 1,
                    task.text
                );
            }
        }
        Event::Aborted(ids) => eprintln!(
            "task-sharding: stopped {} task(s) finished elsewhere",
            ids.len()
        ),
        Event::Reported(_) => {}
        Event::Reconnecting(_) | Event::Rejoined(_) => {
            eprintln!(
                "{}",
                event.connection_line("tasks", "client").unwrap_or_default()
            )
        }
    }
}

/// Fires `interrupt` on SIGINT or SIGTERM.
pub(crate) async fn cancel_on_signal(interrupt: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    interrupt.cancel();
}
