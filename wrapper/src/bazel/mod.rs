//! `task-sharding bazel ARGS...`: what `tools/bazel` runs instead of Bazel.
//!
//! Every command but `test` and `build` goes to `$BAZEL_REAL` untouched (the process is
//! replaced, so output, exit code, stdin and signals are Bazel's own). `bazel test PATTERNS` is
//! sharded: Bazel itself plans the command (the user's exact command line with `--nobuild`, see
//! [`plan`]), and the test targets and other targets it would build become the session's tasks;
//! this job runs the batches it is assigned with the user's own options, reports their results
//! from the build events, and exits with the whole session's verdict in Bazel's exit codes.
//! `bazel build PATTERNS` is sharded the same way, every target a build task
//! (`TASK_SHARDING_SHARD_BUILD=0` leaves it to Bazel alone).
//!
//! Fail-open: when the coordinator cannot be used, the original command runs unchanged
//! (`TASK_SHARDING_REQUIRED=1` makes that an error instead); when it is lost mid-run, the job
//! retries for a grace period, then runs the targets it does not know to be finished itself.

pub mod args;
pub mod bep;
pub mod plan;
pub mod runner;
pub mod session_key;
pub mod test_log;
pub mod verdict;

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};

use clap::Parser;
use schemas::{Schema, SessionReport};

use crate::cli::ConnectArgs;
use crate::client::{Event, SessionOptions};
use crate::driver::{drive, interrupt_on_signals, Outcome, Progress};
use crate::run_warnings::RunWarnings;
use crate::summary;
use args::Invocation;
use runner::BazelRunner;
use verdict::code;

/// Set in the environment of the Bazel processes the wrapper starts; `tools/bazel` passes
/// straight to Bazel when it sees it, so the wrapper never wraps itself.
pub const WRAPPED_MARKER: &str = "TASK_SHARDING_WRAPPED";

/// Bazel's exit code for a local environment problem: used when `TASK_SHARDING_REQUIRED=1` and
/// the coordinator cannot be used.
pub const LOCAL_ENVIRONMENT_ERROR: i32 = 36;

/// The most targets given to one Bazel invocation.
const MAX_BATCH: u32 = 200;

/// Reads the connection settings from the environment only (no flags: argv belongs to Bazel).
#[derive(Debug, Parser)]
struct FromEnvironment {
    #[command(flatten)]
    connect: ConnectArgs,
}

/// Runs `task-sharding bazel ARGS...`; returns the exit code.
pub fn main(args: Vec<String>) -> i32 {
    let Some(bazel) = std::env::var_os("BAZEL_REAL").map(PathBuf::from) else {
        eprintln!(
            "task-sharding: error: BAZEL_REAL is not set; `task-sharding bazel` is meant to be run \
             by tools/bazel, which Bazel's launcher and bazelisk call with BAZEL_REAL set"
        );
        return code::COMMAND_LINE;
    };
    let invocation = args::parse(&args);
    let wrapped = std::env::var_os(WRAPPED_MARKER).is_some();
    if !wrapped && invocation.command.as_deref() == Some("coverage") {
        eprintln!("task-sharding: bazel coverage is not sharded: this job runs all of it");
    }
    if wrapped
        || !invocation.is_shardable()
        || (invocation.command.as_deref() == Some("build") && !shard_build())
    {
        return passthrough(&bazel, &args);
    }
    crate::cli::forget_empty_settings();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("task-sharding: cannot start the async runtime ({e}); running Bazel alone");
            return passthrough(&bazel, &args);
        }
    };
    runtime.block_on(shard(&bazel, &args, &invocation))
}

/// Whether the command names targets: patterns Bazel expanded, given or from a
/// `--target_pattern_file`.
fn names_targets(plan: &plan::Plan) -> bool {
    !plan.patterns.is_empty()
}

/// Whether the user asked for analysis only (`--nobuild`, the last of `--[no]build` winning;
/// Bazel's parse writes `--build=false` as `--nobuild`): there is nothing to share out, and
/// Bazel alone reports it as it does.
fn builds_nothing(options: &[String]) -> bool {
    options
        .iter()
        .rfind(|o| *o == "--build" || *o == "--nobuild")
        .is_some_and(|o| o == "--nobuild")
}

/// `TASK_SHARDING_SHARD_BUILD`: `0` or `false` runs `bazel build` unsharded (default: sharded).
fn shard_build() -> bool {
    !std::env::var("TASK_SHARDING_SHARD_BUILD").is_ok_and(|v| v == "0" || v == "false")
}

/// The user's options (as Bazel parsed them: `--name=value`, no separate values) without those
/// that name targets or the event file: each batch names its own targets after `--`, and writes
/// its own events (appended to the user's file after).
fn batch_options(options: &[String]) -> Vec<String> {
    options
        .iter()
        .filter(|o| {
            !o.starts_with("--target_pattern_file=") && !o.starts_with("--build_event_json_file=")
        })
        .cloned()
        .collect()
}

/// Replaces this process with Bazel, argv and environment untouched.
fn passthrough(bazel: &Path, args: &[String]) -> i32 {
    let error = std::process::Command::new(bazel).args(args).exec();
    eprintln!(
        "task-sharding: error: cannot run {}: {error}",
        bazel.display()
    );
    LOCAL_ENVIRONMENT_ERROR
}

/// Fail-open: warns and runs the original command, unless the coordinator is required.
fn fall_back(bazel: &Path, args: &[String], command: &str, why: &str) -> i32 {
    if required() {
        eprintln!("task-sharding: error: {why} (TASK_SHARDING_REQUIRED=1, so not running alone)");
        return LOCAL_ENVIRONMENT_ERROR;
    }
    eprintln!("task-sharding: warning: {why}; running `bazel {command}` alone, without sharding");
    passthrough(bazel, args)
}

fn required() -> bool {
    std::env::var("TASK_SHARDING_REQUIRED").is_ok_and(|v| v == "1" || v == "true")
}

async fn shard(bazel: &Path, args: &[String], invocation: &Invocation) -> i32 {
    let command = invocation.command.as_deref().unwrap_or("test");
    let fall_back = |why: &str| fall_back(bazel, args, command, why);
    // Planned first: whether there is anything to shard is Bazel's to say, coordinator or not.
    let plan = match plan::plan(bazel, args, invocation.command_at()).await {
        Ok(plan) if !names_targets(&plan) || builds_nothing(&plan.options) => {
            return passthrough(bazel, args)
        }
        Ok(plan) => plan,
        // Patterns or options Bazel rejects: it reports them, with its own error and code.
        Err(e) => {
            eprintln!("task-sharding: {e}; letting Bazel report it");
            return passthrough(bazel, args);
        }
    };
    let connect = match FromEnvironment::try_parse_from(["task-sharding"]) {
        Ok(parsed) => parsed.connect,
        Err(e) => {
            let why = crate::cli::in_variable_terms::<FromEnvironment>(&e);
            return fall_back(&format!("bad setting: {why}"));
        }
    };
    let options = match connect.connect_options() {
        Ok(options) => options,
        Err(e) => return fall_back(&e.to_string()),
    };
    let run_id = match connect.run_id() {
        Ok(id) => id,
        Err(e) => return fall_back(&e.to_string()),
    };
    let targets: Vec<String> = plan.tests.iter().chain(&plan.builds).cloned().collect();
    let mut schema = match Schema::new(format!("bazel {command}"), targets) {
        Ok(schema) => schema,
        Err(e) => return fall_back(&format!("cannot shard these targets: {e}")),
    };
    let tested: std::collections::BTreeSet<&String> = plan.tests.iter().collect();
    for task in &mut schema.tasks {
        task.weight = plan.weights.get(&task.task).copied();
        // A C++ library `bazel test` builds is likely linked by its tests: built first, by one
        // job, while the others compile their own sources (see `BazelRunner::compile_first`).
        task.prerequisite = command == "test"
            && !tested.contains(&task.task)
            && plan.compiled.contains(&task.task)
            && !plan.tests.is_empty();
        // A package's targets share its libraries: jobs are preferably kept to packages.
        task.group = package_of(&task.task).map(str::to_string);
    }
    // Negative patterns change what is tested (a subtracted suite's tests are built, not run)
    // without changing the targets: they are part of what the jobs must agree on.
    let negatives: Vec<String> = plan
        .patterns
        .iter()
        .filter(|p| p.starts_with('-'))
        .cloned()
        .collect();
    let key = session_key::session_key(
        &run_id,
        &head_commit(),
        command,
        &[plan.options.clone(), negatives.clone()].concat(),
        &labels(&schema),
    );
    let events = match EventsDir::new() {
        Ok(dir) => dir,
        Err(e) => return fall_back(&format!("no directory for build events: {e}")),
    };
    let mut runner = BazelRunner {
        bazel: bazel.to_path_buf(),
        startup: invocation.startup.clone(),
        command: command.to_string(),
        options: batch_options(&plan.options),
        negatives: negatives.clone(),
        builds: plan.builds.iter().cloned().collect(),
        user_events: plan::user_events_file(&plan.options),
        events_dir: events.path().to_path_buf(),
        batches: 0,
        overhead: runner::INITIAL_OVERHEAD,
        measured: false,
        parallelism: plan.parallelism.unwrap_or(1),
        compiled: plan.compiled.clone(),
    };
    let session = SessionOptions {
        max_batch: MAX_BATCH,
        // `--notest_keep_going`: the first failing test stops every job, as it stops Bazel.
        fail_fast: plan.fail_fast,
        interrupt: interrupt_on_signals(),
        reconnect_for: connect.reconnect_for,
        // The jobs of this run meant to share this command's work, however their keys differ.
        run: Some(connect.seal(format!("bazel/{run_id}/{command}"))),
        ..SessionOptions::new(
            connect.seal(key),
            format!("bazel:{}", repository_identity()),
        )
    };
    // Said once connected, so that a job falling back to plain Bazel never claims to shard.
    let sharding = match command {
        "build" => format!(
            "task-sharding: sharding the build of {} targets with the other jobs of run {run_id} \
             (coordinator {})",
            plan.builds.len(),
            options.coordinator,
        ),
        _ => format!(
            "task-sharding: sharding {} test targets with the other jobs of run {run_id} \
             (coordinator {}){}",
            plan.tests.len(),
            options.coordinator,
            match plan.builds.len() {
                0 => String::new(),
                n => format!("; {n} other targets are built with them"),
            }
        ),
    };
    let mut warnings = RunWarnings::new(&run_id, format!("bazel {command}"));
    let on_progress = |p: Progress<'_>| match p {
        Progress::Connected => eprintln!("{sharding}"),
        other => progress(other, &mut warnings),
    };
    let outcome = drive(&options, &schema, &mut runner, &session, on_progress).await;
    match outcome {
        Outcome::Complete(report) | Outcome::Alone { report, .. } => with_loading_errors(
            finish(&schema, &report, command == "test", &warnings),
            &plan.errors,
        ),
        Outcome::Unavailable(e) => fall_back(&e.to_string()),
        Outcome::Interrupted { alone } => {
            eprintln!(
                "task-sharding: interrupted; {}",
                if alone {
                    "this job's unfinished targets were not run"
                } else {
                    "this job's unfinished targets go to the other jobs"
                }
            );
            code::INTERRUPTED
        }
    }
}

/// A session whose plan had loading or analysis errors (under `-k`) fails as plain Bazel does:
/// a build failure, whatever the tests did.
fn with_loading_errors(verdict: i32, errors: &[String]) -> i32 {
    if errors.is_empty() || !matches!(verdict, code::SUCCESS | code::TESTS_FAILED | code::NO_TESTS)
    {
        return verdict;
    }
    for error in errors {
        eprintln!("{error}");
    }
    eprintln!("task-sharding: Bazel reported the errors above while planning; the build failed");
    code::BUILD_FAILURE
}

/// The repository's HEAD commit, so that jobs on different commits never share a session.
fn head_commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "no-git".into())
}

/// What names this repository across runs, for the timing history: `TASK_SHARDING_HISTORY_SCOPE`,
/// else the `origin` remote's URL, else the CI's repository name, else the name the Bazel
/// workspace gives itself, else the current directory's name. Jobs whose checkouts live at
/// different paths still agree on it.
fn repository_identity() -> String {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    env("TASK_SHARDING_HISTORY_SCOPE")
        .or_else(|| {
            std::process::Command::new("git")
                .args(["config", "--get", "remote.origin.url"])
                .stderr(std::process::Stdio::null())
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .filter(|url| !url.is_empty())
        })
        .or_else(|| env("GITHUB_REPOSITORY"))
        .or_else(|| env("CI_PROJECT_PATH"))
        .or_else(|| env("BUILDKITE_REPO"))
        .or_else(|| {
            std::env::current_dir()
                .ok()
                .and_then(|d| workspace_name(&d))
        })
        .or_else(|| {
            std::env::current_dir()
                .ok()
                .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The name in the nearest `MODULE.bazel` (`module(name = "...")`) or `WORKSPACE` file
/// (`workspace(name = "...")`) at or above `dir`.
fn workspace_name(dir: &Path) -> Option<String> {
    let files = [
        ("MODULE.bazel", "module("),
        ("WORKSPACE.bazel", "workspace("),
        ("WORKSPACE", "workspace("),
    ];
    for ancestor in dir.ancestors() {
        for (file, call) in files {
            let Ok(text) = std::fs::read_to_string(ancestor.join(file)) else {
                continue;
            };
            let name = text.find(call).and_then(|at| {
                let args = &text[at + call.len()..];
                let args = &args[..args.find(')')?];
                let value = args.split_once("name")?.1.trim_start().strip_prefix('=')?;
                let value = value.trim_start().strip_prefix('"')?;
                Some(value[..value.find('"')?].to_string())
            });
            if name.is_some() {
                return name;
            }
        }
    }
    None
}

fn labels(schema: &Schema) -> Vec<String> {
    schema.tasks.iter().map(|t| t.task.clone()).collect()
}

/// Prints a progress line per event, and the warnings about the run it calls for.
fn progress(progress: Progress<'_>, warnings: &mut RunWarnings) {
    if let Some(line) = progress.common_line("targets", "job") {
        eprintln!("{line}");
        if let Progress::FinishingAlone { .. } = progress {
            eprintln!("task-sharding: the remote cache spares what the other jobs already ran");
        }
        return;
    }
    let Progress::Session(event) = progress else {
        return;
    };
    let warnings = warnings.on_event(event);
    match event {
        Event::Joined(joined) => eprintln!(
            "task-sharding: {} the session: {} targets, {} done, {} job(s)",
            if joined.created { "started" } else { "joined" },
            joined.tasks,
            joined.finished,
            joined.clients
        ),
        Event::Assigned(tasks, progress) => {
            let names: Vec<&str> = tasks.iter().take(3).map(|t| t.text.as_str()).collect();
            let more = tasks.len().saturating_sub(names.len());
            eprintln!(
                "task-sharding: {}/{} targets done, {} jobs; this job runs {} next: {}{}",
                progress.finished,
                progress.total,
                progress.clients,
                tasks.len(),
                names.join(" "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            );
        }
        Event::Aborted(ids) => eprintln!(
            "task-sharding: stopped {} target(s) another job finished first",
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

/// Prints the session's summary (and a Markdown table for GitHub) and the warnings about the
/// run, returns its exit code (`testing` for `bazel test`).
fn finish(schema: &Schema, report: &SessionReport, testing: bool, warnings: &RunWarnings) -> i32 {
    print!("{}", summary::render(schema, report));
    for warning in warnings.at_end() {
        eprintln!("{warning}");
    }
    let not_run = report
        .records
        .iter()
        .filter(|r| r.client.is_empty())
        .count();
    if not_run > 0 {
        eprintln!(
            "task-sharding: a test failed and --notest_keep_going is in effect: every job \
             stopped, and {not_run} target(s) were not run"
        );
    }
    let junit = std::env::var_os("TASK_SHARDING_JUNIT").filter(|v| !v.is_empty());
    crate::junit::write_if_asked(junit.as_deref().map(std::path::Path::new), schema, report);
    if let Some(path) = std::env::var_os("GITHUB_STEP_SUMMARY") {
        let markdown = summary::markdown(schema, report);
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut file| std::io::Write::write_all(&mut file, markdown.as_bytes()));
        if let Err(e) = written {
            eprintln!("task-sharding: warning: cannot write GITHUB_STEP_SUMMARY: {e}");
        }
    }
    verdict::exit_code(report, testing)
}

/// The package of a label (`//a/b` of `//a/b:c`, `@r//a` of `@r//a:c`), if it names one.
fn package_of(label: &str) -> Option<&str> {
    let (package, _) = label.rsplit_once(':')?;
    package.contains("//").then_some(package)
}

/// Where batches write their build events: `TASK_SHARDING_BEP_DIR` when set (kept, for
/// inspection), else a temporary directory removed at the end.
enum EventsDir {
    Kept(PathBuf),
    Temporary(tempfile::TempDir),
}

impl EventsDir {
    fn new() -> std::io::Result<EventsDir> {
        match std::env::var_os("TASK_SHARDING_BEP_DIR") {
            Some(dir) => {
                std::fs::create_dir_all(&dir)?;
                let dir = tempfile::Builder::new().prefix("job-").tempdir_in(dir)?;
                Ok(EventsDir::Kept(dir.keep()))
            }
            None => Ok(EventsDir::Temporary(tempfile::tempdir()?)),
        }
    }

    fn path(&self) -> &Path {
        match self {
            EventsDir::Kept(path) => path,
            EventsDir::Temporary(dir) => dir.path(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{batch_options, builds_nothing, package_of, workspace_name};

    #[test]
    fn a_labels_package_is_its_group() {
        assert_eq!(package_of("//a/b:c"), Some("//a/b"));
        assert_eq!(package_of("//:c"), Some("//"));
        assert_eq!(package_of("@r//a:c"), Some("@r//a"));
        assert_eq!(package_of("not-a-label"), None);
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    /// On options as Bazel's parse gives them: the last of `--[no]build` wins.
    #[test]
    fn analysis_only_and_the_batches_options_come_from_bazels_parse() {
        assert!(builds_nothing(&strings(&["--keep_going", "--nobuild"])));
        assert!(!builds_nothing(&strings(&["--nobuild", "--build"])));
        assert!(!builds_nothing(&strings(&["--compilation_mode=opt"])));
        assert_eq!(
            batch_options(&strings(&[
                "--compilation_mode=opt",
                "--target_pattern_file=targets.txt",
                "--build_event_json_file=mine.json",
                "--config=x",
            ])),
            ["--compilation_mode=opt", "--config=x"]
        );
    }

    #[test]
    fn the_workspace_names_itself_from_any_subdirectory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("WORKSPACE"),
            "# comment\nworkspace(\n    name = \"example\",\n)\nlocal_repository(name = \"x\", path = \"y\")\n",
        )
        .unwrap();
        let sub = dir.path().join("a/b");
        std::fs::create_dir_all(&sub).unwrap();
        assert_eq!(workspace_name(&sub).as_deref(), Some("example"));
        std::fs::write(
            dir.path().join("MODULE.bazel"),
            "module(name = \"modern\", version = \"1\")\n",
        )
        .unwrap();
        assert_eq!(workspace_name(&sub).as_deref(), Some("modern"));
        let bare = tempfile::tempdir().unwrap();
        assert_eq!(workspace_name(bare.path()), None);
    }
}
