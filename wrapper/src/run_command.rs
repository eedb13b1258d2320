//! `task-sharding run`: the generic runner driven by a schema file.

use schemas::{Schema, SessionReport};

use crate::cli::RunArgs;
use crate::client::{Event, SessionOptions};
use crate::command_runner::CommandRunner;
use crate::driver::{drive, interrupt_on_signals, Outcome, Progress};
use crate::run_warnings::RunWarnings;
use crate::{exit, summary};

/// Runs the subcommand; returns the exit code.
pub(crate) async fn run(args: RunArgs) -> u8 {
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
    let session = SessionOptions {
        max_batch: args.max_batch,
        interrupt: interrupt_on_signals(),
        reconnect_for: args.connect.reconnect_for,
        ..SessionOptions::new(
            args.connect.seal(format!("run/{run_id}/{}", schema.name)),
            format!("run:{}", schema.name),
        )
    };
    let mut runner = CommandRunner::new(args.command);
    let total = schema.tasks.len();
    // The session key is the run id and the schema's name only, so the jobs of a run cannot
    // split into sessions (a different schema under the same name is refused): the join names
    // no run, and only a session found already complete is warned of.
    let mut warnings = RunWarnings::new(&run_id, format!("task-sharding run {}", schema.name));
    let outcome = drive(&options, &schema, &mut runner, &session, |p| {
        progress(p, total, &mut warnings)
    })
    .await;
    match outcome {
        Outcome::Complete(report) | Outcome::Alone { report, .. } => {
            crate::junit::write_if_asked(args.junit.as_deref(), &schema, &report);
            verdict(&schema, &report)
        }
        Outcome::Interrupted { alone } => {
            eprintln!(
                "task-sharding: interrupted; {}",
                if alone {
                    "this job's unfinished tasks were not run"
                } else {
                    "this job's unfinished tasks go to the other jobs"
                }
            );
            exit::INTERRUPTED
        }
        Outcome::Unavailable(e) => {
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

fn progress(progress: Progress<'_>, total: usize, warnings: &mut RunWarnings) {
    if let Some(line) = progress.common_line("tasks", "client") {
        eprintln!("{line}");
        return;
    }
    let Progress::Session(event) = progress else {
        return;
    };
    let warnings = warnings.on_event(event);
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
        Event::Reported(_)
        | Event::Reconnecting(_)
        | Event::Rejoined(_)
        | Event::Completed { .. } => {}
    }
    for warning in warnings {
        eprintln!("{warning}");
    }
}
