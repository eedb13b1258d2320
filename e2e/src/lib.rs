//! The end-to-end harness: real coordinator and client processes on loopback.
//!
//! The binaries are found through `E2E_COORDINATOR_BIN` / `E2E_TASK_SHARDING_BIN` (Bazel sets
//! them), else next to the test executable in Cargo's target directory (`cargo test --workspace`
//! builds them first).
#![warn(missing_docs, unreachable_pub)]

pub mod bazel;
pub mod bench;
pub mod compiled;

use std::io::{BufRead as _, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// The path of one of the workspace's binaries.
pub fn binary(name: &str) -> PathBuf {
    let var = match name {
        "coordinator" => "E2E_COORDINATOR_BIN",
        "task-sharding" => "E2E_TASK_SHARDING_BIN",
        other => panic!("no such binary: {other}"),
    };
    if let Some(path) = std::env::var_os(var) {
        return PathBuf::from(path);
    }
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let exe = std::env::current_exe().expect("the test's own path");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .expect("a target directory")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first, or set {var}",
        path.display()
    );
    path
}

/// A coordinator process, stopped when dropped.
#[derive(Debug)]
pub struct Coordinator {
    /// The running process.
    child: Child,
    /// Its state directory (certificate) and log.
    dir: tempfile::TempDir,
    /// The address it listens on.
    pub addr: String,
    /// Its certificate, for `TASK_SHARDING_CA`.
    pub cert: PathBuf,
    /// Its certificate's SHA-256, for `TASK_SHARDING_FINGERPRINT`.
    pub fingerprint: String,
    /// The dashboard's URL (`http://127.0.0.1:PORT/`), unless started with `--no-http`.
    pub dashboard: Option<String>,
}

impl Coordinator {
    /// Starts a coordinator on a free loopback port with a 3 s idle timeout (unless `args` set
    /// one), plus `args`, with a fresh state directory.
    pub fn start(args: &[&str]) -> Result<Coordinator> {
        Self::start_in(tempfile::tempdir()?, args)
    }

    /// Like [`Coordinator::start`], keeping its state (certificate, timing history) in `dir`.
    pub fn start_in(dir: tempfile::TempDir, args: &[&str]) -> Result<Coordinator> {
        Self::start_program(&binary("coordinator"), dir, args)
    }

    /// Like [`Coordinator::start_in`], running `program` (another build of the coordinator,
    /// e.g. an earlier version a benchmark compares against).
    pub fn start_program(
        program: &Path,
        dir: tempfile::TempDir,
        args: &[&str],
    ) -> Result<Coordinator> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("coordinator.log"))?;
        let idle: &[&str] = if args.contains(&"--idle-timeout") {
            &[]
        } else {
            &["--idle-timeout", "3s"]
        };
        let listen: &[&str] = if args.contains(&"--listen") {
            &[]
        } else {
            &["--listen", "127.0.0.1:0"]
        };
        // A free port for the dashboard, not the default one another coordinator may hold.
        let with_http = !args.contains(&"--no-http");
        let http: &[&str] = if args.contains(&"--http") || !with_http {
            &[]
        } else {
            &["--http", "127.0.0.1:0"]
        };
        let mut child = Command::new(program)
            .args(listen)
            .args(http)
            .args(idle)
            .arg("--state-dir")
            .arg(dir.path())
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("cannot start the coordinator")?;
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let mut next = || -> Result<String> {
            Ok(lines
                .next()
                .context("the coordinator exited before it was ready")??)
        };
        let first = next()?;
        let addr = first
            .strip_prefix("coordinator listening on ")
            .with_context(|| format!("unexpected first line {first:?}"))?
            .to_string();
        let second = next()?;
        let (cert, fingerprint) = second
            .strip_prefix("certificate ")
            .and_then(|rest| rest.split_once(" sha256 "))
            .with_context(|| format!("unexpected second line {second:?}"))?;
        let dashboard = if with_http {
            let third = next()?;
            let url = third
                .strip_prefix("dashboard ")
                .with_context(|| format!("unexpected third line {third:?}"))?;
            Some(url.to_string())
        } else {
            None
        };
        Ok(Coordinator {
            dashboard,
            cert: PathBuf::from(cert),
            fingerprint: fingerprint.to_string(),
            addr,
            child,
            dir,
        })
    }

    /// The coordinator's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("coordinator.log")).unwrap_or_default()
    }

    /// Its state directory.
    pub fn state_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the coordinator gracefully (SIGTERM, as a service manager would) and returns its
    /// state directory, for a restart with [`Coordinator::start_in`].
    pub fn stop(mut self) -> Result<tempfile::TempDir> {
        nix::sys::signal::kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM)?;
        let status = self.child.wait()?;
        if !status.success() {
            bail!(
                "the coordinator exited with {status} after SIGTERM:\n{}",
                self.log()
            );
        }
        // Nothing is left to kill; keep the directory from being deleted with `self`.
        let dir = tempfile::tempdir()?;
        Ok(std::mem::replace(&mut self.dir, dir))
    }

    /// Kills the coordinator outright (SIGKILL: no chance to write anything more) and returns
    /// its state directory, for a restart with [`Coordinator::start_in`].
    pub fn kill(mut self) -> Result<tempfile::TempDir> {
        self.child.kill()?;
        self.child.wait()?;
        let dir = tempfile::tempdir()?;
        Ok(std::mem::replace(&mut self.dir, dir))
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// A `task-sharding` command set up to use this coordinator, in run `run_id`, as `client_id`.
    pub fn client(&self, run_id: &str, client_id: &str) -> Command {
        let mut command = Command::new(binary("task-sharding"));
        for (name, _) in std::env::vars() {
            if name.starts_with("TASK_SHARDING_") {
                command.env_remove(name);
            }
        }
        command
            .env("TASK_SHARDING_COORDINATOR", &self.addr)
            .env("TASK_SHARDING_CA", &self.cert)
            .env("TASK_SHARDING_RUN_ID", run_id)
            .env("TASK_SHARDING_CLIENT_ID", client_id)
            .stdin(Stdio::null());
        command
    }
}

impl Coordinator {
    /// `task-sharding run --schema SCHEMA -- COMMAND...`, set up like [`Coordinator::client`].
    pub fn run_command<S: AsRef<std::ffi::OsStr>>(
        &self,
        run_id: &str,
        client_id: &str,
        schema: &Path,
        command: &[S],
    ) -> Command {
        let mut run = self.client(run_id, client_id);
        run.args(["run", "--schema"])
            .arg(schema)
            .arg("--")
            .args(command);
        run
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process started in its own process group, so the test can kill it with everything it
/// started, as a CI machine going away would.
#[derive(Debug)]
pub struct Job {
    /// The process.
    pub child: Child,
    /// A name for messages.
    pub name: String,
    /// Where its stdout and stderr go.
    dir: tempfile::TempDir,
}

impl Job {
    /// Spawns `command` with its output captured to files.
    pub fn spawn(name: &str, mut command: Command) -> Result<Job> {
        let dir = tempfile::tempdir()?;
        let stdout = std::fs::File::create(dir.path().join("stdout"))?;
        let stderr = std::fs::File::create(dir.path().join("stderr"))?;
        let child = command
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        Ok(Job {
            child,
            name: name.into(),
            dir,
        })
    }

    /// SIGKILLs the job's whole process group.
    pub fn kill_group(&mut self) -> Result<()> {
        killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL)?;
        self.child.wait()?;
        Ok(())
    }

    /// Sends `signal` to the job's process only.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        nix::sys::signal::kill(Pid::from_raw(self.child.id() as i32), signal)?;
        Ok(())
    }

    /// Waits for the job to exit; fails (after killing it) if it takes longer than `limit`, since
    /// a client that does not end is the hang this tool exists to prevent.
    pub fn wait(mut self, limit: Duration) -> Result<Output> {
        let deadline = Instant::now() + limit;
        let status: ExitStatus = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
                let _ = self.child.wait();
                bail!(
                    "{} did not finish within {limit:?}; stderr:\n{}",
                    self.name,
                    self.read("stderr")
                );
            }
            thread::sleep(Duration::from_millis(50));
        };
        Ok(Output {
            status,
            stdout: self.read("stdout").into_bytes(),
            stderr: self.read("stderr").into_bytes(),
        })
    }

    /// What the job wrote to `stdout` or `stderr` so far.
    pub fn read(&self, stream: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(stream)).unwrap_or_default()
    }
}

/// Polls `condition` every 20 ms until it holds; fails after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + limit;
    while !condition() {
        if Instant::now() > deadline {
            bail!("timed out after {limit:?} waiting until {what}");
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The lines of a file, or none if it does not exist yet.
pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|text| text.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// The session summary in a client's stdout: from its first line to its totals line.
pub fn summary(stdout: &str) -> String {
    match stdout.find("task-sharding: session ") {
        Some(start) => stdout[start..].to_string(),
        None => String::new(),
    }
}

/// Writes a schema file of `tasks` named `name` into `dir`.
pub fn write_schema(dir: &Path, name: &str, tasks: &[String]) -> Result<PathBuf> {
    let mut yaml = format!("name: {name}\ntasks:\n");
    for task in tasks {
        yaml.push_str(&format!("  - task: {task:?}\n"));
    }
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml)?;
    Ok(path)
}
