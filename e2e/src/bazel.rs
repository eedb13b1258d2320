//! The harness for the Bazel wrapper's end-to-end tests: a real Bazel (Debian's 4.2.3 through its
//! launcher, or the Bazel `E2E_BAZEL_REAL` names, e.g. 7.7.1; see [`bazel_under_test`]), the
//! workspace's `tools/bazel`, a real nginx remote cache and real coordinator processes.
//!
//! Each job works in its own copy of `e2e/workspace` with its own `--output_user_root`, as CI jobs
//! on different machines would; everything else on their command lines is identical. What ran is
//! counted twice, independently of the wrapper's own summary: from the side file every test
//! target appends to when it really executes, and from the build event files the wrapper keeps
//! in `TASK_SHARDING_BEP_DIR`.
//!
//! Every external thing a test starts is stopped by a `Drop` guard: Bazel servers
//! ([`Checkout`]), nginx ([`Nginx`]), the coordinator, and job process groups ([`Running`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context as _, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::{binary, lines, summary, Coordinator, Job};

/// Debian's Bazel launcher: runs `<workspace>/tools/bazel` with `BAZEL_REAL` set.
pub const LAUNCHER: &str = "/usr/bin/bazel";

/// The real Bazel client the launcher finds (Debian's 4.2.3).
pub const BAZEL_REAL: &str = "/usr/bin/bazel-4";

/// Names the real Bazel client the tests run instead of Debian's 4.2.3 (e.g. the 7.7.1 kit's
/// `bin/bazel`), so that CI runs the same suite against each Bazel version users run.
pub const BAZEL_REAL_VAR: &str = "E2E_BAZEL_REAL";

/// The Bazel the tests run, and how a user's CI job reaches it.
#[derive(Debug)]
pub struct BazelUnderTest {
    /// The real Bazel client (`BAZEL_REAL` for `tools/bazel`).
    pub real: PathBuf,
    /// The launcher that finds `tools/bazel` and sets `BAZEL_REAL` itself (Debian's, for its
    /// own Bazel). `None`: jobs run `tools/bazel` with `BAZEL_REAL` set, as bazelisk does and
    /// as the Bazel 7 kit's users do (it has no launcher).
    pub launcher: Option<PathBuf>,
}

/// `$E2E_BAZEL_REAL` through `tools/bazel`, else Debian's Bazel 4.2.3 through its launcher.
pub fn bazel_under_test() -> &'static BazelUnderTest {
    static BAZEL: OnceLock<BazelUnderTest> = OnceLock::new();
    BAZEL.get_or_init(|| match std::env::var_os(BAZEL_REAL_VAR) {
        Some(real) if !real.is_empty() => BazelUnderTest {
            real: PathBuf::from(real),
            launcher: None,
        },
        _ => BazelUnderTest {
            real: PathBuf::from(BAZEL_REAL),
            launcher: Some(PathBuf::from(LAUNCHER)),
        },
    })
}

/// The test targets `bazel test //...` runs in `e2e/workspace`, in label order.
pub const TEST_TARGETS: [&str; 26] = [
    "//data:checksum_test",
    "//data:csv_test",
    "//data:json_test",
    "//data:sort_test",
    "//data:uniq_test",
    "//math:add_test",
    "//math:div_test",
    "//math:mod_test",
    "//math:mul_test",
    "//math:pow_test",
    "//math:sub_test",
    "//net:cidr_test",
    "//net:ipv4_parse_test",
    "//net:port_range_test",
    "//net:url_split_test",
    "//slow:sleep2_test",
    "//slow:sleep3_test",
    "//slow:sleep4_test",
    "//strings:broken_test",
    "//strings:concat_test",
    "//strings:length_test",
    "//strings:lower_test",
    "//strings:reverse_test",
    "//strings:upper_test",
    "//util/fs:runfiles_test",
    "//util/fs:tmpdir_test",
];

/// The other rules `bazel test //...` builds in `e2e/workspace`: the wrapper shards them as
/// build tasks (listed `BUILT` in the summary).
pub const BUILT_TARGETS: [&str; 1] = ["//testlib:testlib"];

/// Every target of the summary of `bazel test //...` in `e2e/workspace`, in the session's
/// order: the tests, then the other targets, each in label order.
pub fn summary_targets() -> Vec<String> {
    TEST_TARGETS
        .iter()
        .chain(&BUILT_TARGETS)
        .map(|l| l.to_string())
        .collect()
}

/// The workspace's one failing test (tagged `failing`).
pub const FAILING_TEST: &str = "//strings:broken_test";

/// The workspace's `manual` test: never part of `//...`.
pub const MANUAL_TEST: &str = "//net:live_ping_test";

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ has a parent")
        .to_path_buf()
}

fn env_script() -> PathBuf {
    repo_root().join("scripts/e2e-env.sh")
}

/// Call first in every Bazel test. Makes sure Bazel and nginx are installed
/// (`scripts/e2e-env.sh install`, and the Bazel `E2E_BAZEL_REAL` names exists; panics if not)
/// and returns a guard that keeps these tests from running concurrently, whatever
/// `--test-threads` says: each starts several Bazel servers. They run under Cargo only
/// (e2e/BUILD.bazel makes their Bazel target incompatible): under Bazel (`TEST_SRCDIR` set) a
/// nested Bazel and nginx are out of reach, and a test that did nothing must not pass.
pub fn begin(test: &str) -> MutexGuard<'static, ()> {
    assert!(
        std::env::var_os("TEST_SRCDIR").is_none(),
        "{test} runs Bazel itself and cannot run under Bazel: run it with cargo test"
    );
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    let installed = INSTALLED.get_or_init(|| {
        let output = Command::new(env_script())
            .arg("install")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", env_script().display()))?;
        if !output.status.success() {
            return Err(format!(
                "`scripts/e2e-env.sh install` failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        for tool in [LAUNCHER, BAZEL_REAL] {
            if !Path::new(tool).exists() {
                return Err(format!("{tool} is missing after `e2e-env.sh install`"));
            }
        }
        let real = &bazel_under_test().real;
        if !real.exists() {
            return Err(format!(
                "{BAZEL_REAL_VAR}={} does not exist (the Bazel 7 kit installs it: \
                 ../shared/bazel7/setup.sh PREFIX, then PREFIX/bin/bazel)",
                real.display()
            ));
        }
        Ok(())
    });
    if let Err(e) = installed {
        panic!("{test}: the Bazel test environment is not available: {e}");
    }
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A loopback TCP port nothing listens on right now.
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free TCP port")
        .port()
}

/// A loopback UDP port nothing is bound to right now (the coordinator speaks QUIC over UDP).
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
        .port()
}

/// A run id no other test (or earlier run of this one) uses.
pub fn unique_run_id(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{test}-{}-{nanos}", std::process::id())
}

// ---------------------------------------------------------------------------------------------
// nginx
// ---------------------------------------------------------------------------------------------

/// An nginx WebDAV remote cache with an empty cache directory, stopped when dropped.
#[derive(Debug)]
pub struct Nginx {
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`, for `--remote_cache`.
    pub url: String,
}

impl Nginx {
    /// Starts nginx on a free port with `scripts/e2e-env.sh nginx-start`.
    pub fn start() -> Result<Nginx> {
        let dir = tempfile::Builder::new().prefix("e2e-nginx-").tempdir()?;
        let mut last_error = String::new();
        // The port is free when picked but could be taken before nginx binds it: retry.
        for _ in 0..3 {
            let port = free_tcp_port();
            let output = Command::new(env_script())
                .arg("nginx-start")
                .arg(dir.path())
                .arg(port.to_string())
                .stdin(Stdio::null())
                .output()
                .context("cannot run scripts/e2e-env.sh nginx-start")?;
            if output.status.success() {
                let url = String::from_utf8_lossy(&output.stdout).trim().to_string();
                ensure!(url.starts_with("http://"), "nginx-start printed {url:?}");
                return Ok(Nginx { dir, url });
            }
            last_error = String::from_utf8_lossy(&output.stderr).into_owned();
        }
        bail!("nginx did not start: {last_error}")
    }

    /// nginx's access log so far (one line per cache request).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new(env_script())
            .arg("nginx-stop")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .output();
    }
}

// ---------------------------------------------------------------------------------------------
// Workspace copies and their Bazel servers
// ---------------------------------------------------------------------------------------------

/// One job's machine: a copy of `e2e/workspace` with `tools/bazel` installed, and its own
/// `--output_user_root`. Dropping it shuts its Bazel server down (killing it if it will not go)
/// and removes both.
#[derive(Debug)]
pub struct Checkout {
    dir: tempfile::TempDir,
    /// The workspace copy (the jobs' working directory).
    pub workspace: PathBuf,
    /// Its output user root.
    pub output_root: PathBuf,
}

impl Checkout {
    /// Copies the workspace (without `bazel-*` symlinks) and adds `tools/bazel`.
    pub fn new(name: &str) -> Result<Checkout> {
        Checkout::of(name, &repo_root().join("e2e/workspace"))
    }

    /// Like [`Checkout::new`], but copies the workspace at `source` instead of `e2e/workspace`.
    pub fn of(name: &str, source: &Path) -> Result<Checkout> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("e2e-{name}-"))
            .tempdir()?;
        let workspace = dir.path().join("workspace");
        let output_root = dir.path().join("output_root");
        copy_tree(source, &workspace)?;
        std::fs::create_dir_all(workspace.join("tools"))?;
        // std::fs::copy keeps the permission bits: the hook stays executable.
        std::fs::copy(
            repo_root().join("tools/bazel"),
            workspace.join("tools/bazel"),
        )
        .context("cannot copy tools/bazel")?;
        std::fs::create_dir_all(&output_root)?;
        Ok(Checkout {
            dir,
            workspace,
            output_root,
        })
    }

    /// `--output_user_root=...`, the startup option every command in this checkout gets.
    pub fn startup_option(&self) -> String {
        format!("--output_user_root={}", self.output_root.display())
    }

    /// The pid of this checkout's Bazel server, if one is running.
    pub fn server_pid(&self) -> Option<i32> {
        let entries = std::fs::read_dir(&self.output_root).ok()?;
        for entry in entries.flatten() {
            let file = entry.path().join("server/server.pid.txt");
            let Ok(text) = std::fs::read_to_string(&file) else {
                continue;
            };
            let Ok(pid) = text.trim().parse::<i32>() else {
                continue;
            };
            // Make sure the pid is still this server's and not reused by another process.
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let root = self.output_root.to_string_lossy();
            if String::from_utf8_lossy(&cmdline).contains(root.as_ref()) {
                return Some(pid);
            }
        }
        None
    }

    /// Stops this checkout's Bazel server: `bazel shutdown`, then SIGKILL if it is still there
    /// (e.g. a server whose client was killed mid-command and that is still busy).
    pub fn shutdown(&self) {
        if self.server_pid().is_none() {
            return;
        }
        let shutdown = Command::new(&bazel_under_test().real)
            .arg(self.startup_option())
            .arg("shutdown")
            .current_dir(&self.workspace)
            .env_remove("TASK_SHARDING_COORDINATOR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        if let Ok(mut child) = shutdown {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => thread::sleep(Duration::from_millis(100)),
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Some(pid) = self.server_pid() {
            if Instant::now() > deadline {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        self.shutdown();
        // Bazel leaves read-only directories behind; make them removable for TempDir.
        let _ = Command::new("chmod")
            .arg("-R")
            .arg("u+w")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Copies a directory tree, regular files and directories only (symlinks such as Bazel's
/// `bazel-*` convenience links are left out), keeping permission bits.
pub fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("cannot read {from:?}"))? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with("bazel-") {
            continue;
        }
        let kind = entry.file_type()?;
        let target = to.join(&name);
        if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The shared environment of one test: cache, coordinator, side file, build events
// ---------------------------------------------------------------------------------------------

/// What the jobs of one test share: an empty remote cache, a coordinator (running, or an
/// address where none is), a fresh side file, a build events directory and a run id.
#[derive(Debug)]
pub struct BazelEnv {
    /// The remote cache.
    pub nginx: Nginx,
    /// The coordinator, when it is up.
    pub coordinator: Option<Coordinator>,
    /// `TASK_SHARDING_COORDINATOR` for the jobs.
    pub coordinator_addr: String,
    /// `TASK_SHARDING_CA` for the jobs.
    pub ca: PathBuf,
    /// `TASK_SHARDING_RUN_ID` for the jobs.
    pub run_id: String,
    scratch: tempfile::TempDir,
}

impl BazelEnv {
    /// nginx and a running coordinator.
    pub fn start(test: &str) -> Result<BazelEnv> {
        let coordinator = Coordinator::start(&[])?;
        let scratch = Self::scratch()?;
        Ok(BazelEnv {
            nginx: Nginx::start()?,
            coordinator_addr: coordinator.addr.clone(),
            ca: coordinator.cert.clone(),
            coordinator: Some(coordinator),
            run_id: unique_run_id(test),
            scratch,
        })
    }

    /// nginx, and the address and certificate of a coordinator that has stopped: a coordinator
    /// is started (for a genuine certificate), its certificate kept, and it is stopped, so
    /// nothing listens at its address any more.
    pub fn with_coordinator_down(test: &str) -> Result<BazelEnv> {
        let scratch = Self::scratch()?;
        let ca = scratch.path().join("gone-coordinator-cert.pem");
        let coordinator = Coordinator::start(&[])?;
        std::fs::copy(&coordinator.cert, &ca)?;
        let coordinator_addr = coordinator.addr.clone();
        drop(coordinator);
        Ok(BazelEnv {
            nginx: Nginx::start()?,
            coordinator: None,
            coordinator_addr,
            ca,
            run_id: unique_run_id(test),
            scratch,
        })
    }

    /// Not under `/tmp`: Bazel 7's sandbox gives every test a private `/tmp`
    /// (`--incompatible_sandbox_hermetic_tmp`), where the side file's lines would vanish.
    fn scratch() -> Result<tempfile::TempDir> {
        // target/debug/task-sharding -> target/e2e-bazel
        let parent = binary("task-sharding")
            .parent()
            .and_then(Path::parent)
            .context("no target directory")?
            .join("e2e-bazel");
        std::fs::create_dir_all(&parent)?;
        let scratch = tempfile::Builder::new()
            .prefix("e2e-bazel-")
            .tempdir_in(&parent)?;
        std::fs::create_dir_all(scratch.path().join("side"))?;
        std::fs::create_dir_all(scratch.path().join("bep"))?;
        Ok(scratch)
    }

    /// The directory the tests may write to from their sandbox.
    pub fn side_dir(&self) -> PathBuf {
        self.scratch.path().join("side")
    }

    /// The side file: one line `<label> <pid> <time>` per test that really executed.
    pub fn side_file(&self) -> PathBuf {
        self.side_dir().join("exec.log")
    }

    /// `TASK_SHARDING_BEP_DIR`: each job keeps its batches' build events in a `job-*` directory.
    pub fn bep_dir(&self) -> PathBuf {
        self.scratch.path().join("bep")
    }

    /// A scratch directory for the test's own files.
    pub fn scratch_dir(&self) -> &Path {
        self.scratch.path()
    }

    /// The `bazel test //...` arguments (after the startup options) every job of a test uses:
    /// the remote cache, the side file, then `extra`.
    pub fn test_args(&self, extra: &[&str]) -> Vec<String> {
        let mut args = vec![
            "test".to_string(),
            "//...".to_string(),
            format!("--remote_cache={}", self.nginx.url),
            format!("--test_env=E2E_SIDE_FILE={}", self.side_file().display()),
            format!("--sandbox_writable_path={}", self.side_dir().display()),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    }

    /// `program --output_user_root=<checkout's> ARGS` in the checkout, as job `client_id` of
    /// this test's run: inherited `TASK_SHARDING_*` (and Bazel wrapper) variables removed, the
    /// coordinator, its certificate, the run id, the `task-sharding` binary, the client id and
    /// the build events directory set.
    pub fn job_command(
        &self,
        program: &Path,
        checkout: &Checkout,
        client_id: &str,
        args: &[String],
    ) -> Command {
        let mut command = Command::new(program);
        clean_env(&mut command);
        command
            .current_dir(&checkout.workspace)
            .env("TASK_SHARDING_COORDINATOR", &self.coordinator_addr)
            .env("TASK_SHARDING_CA", &self.ca)
            .env("TASK_SHARDING_RUN_ID", &self.run_id)
            .env("TASK_SHARDING_BIN", binary("task-sharding"))
            .env("TASK_SHARDING_CLIENT_ID", client_id)
            .env("TASK_SHARDING_BEP_DIR", self.bep_dir())
            .arg(checkout.startup_option())
            .args(args)
            .stdin(Stdio::null());
        command
    }

    /// [`BazelEnv::job_command`] for a `bazel` command run the way a user's CI job runs it: the
    /// launcher (which finds `tools/bazel`), or `tools/bazel` with `BAZEL_REAL` set.
    pub fn bazel_job(&self, checkout: &Checkout, client_id: &str, args: &[String]) -> Command {
        let bazel = bazel_under_test();
        match &bazel.launcher {
            Some(launcher) => self.job_command(launcher, checkout, client_id, args),
            None => {
                let hook = checkout.workspace.join("tools/bazel");
                let mut command = self.job_command(&hook, checkout, client_id, args);
                command.env("BAZEL_REAL", &bazel.real);
                command
            }
        }
    }

    /// How many times each target really executed, from the side file.
    pub fn executions_from_side_file(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for line in lines(&self.side_file()) {
            if let Some(label) = line.split_whitespace().next() {
                *counts.entry(label.to_string()).or_default() += 1;
            }
        }
        counts
    }

    /// Per job (its `job-*` directory under [`BazelEnv::bep_dir`]), the text of each of its
    /// batches' build event files (JSON, one event per line), in batch order.
    pub fn build_events_per_job(&self) -> BTreeMap<String, Vec<String>> {
        let mut per_job = BTreeMap::new();
        let Ok(jobs) = std::fs::read_dir(self.bep_dir()) else {
            return per_job;
        };
        for job in jobs.flatten() {
            let Ok(batches) = std::fs::read_dir(job.path()) else {
                continue;
            };
            let mut files: Vec<PathBuf> = batches.flatten().map(|b| b.path()).collect();
            // batch-1.json, batch-2.json, ..., batch-10.json
            files.sort_by_key(|f| {
                f.file_stem()
                    .and_then(|s| s.to_str())
                    .and_then(|s| s.strip_prefix("batch-"))
                    .and_then(|n| n.parse::<u32>().ok())
                    .unwrap_or(u32::MAX)
            });
            let texts = files
                .iter()
                .map(|f| std::fs::read_to_string(f).unwrap_or_default())
                .collect();
            per_job.insert(job.file_name().to_string_lossy().into_owned(), texts);
        }
        per_job
    }

    /// A description of everything the jobs and services did, for assertion messages.
    pub fn report(&self, jobs: &[Finished]) -> String {
        let mut text = String::new();
        for job in jobs {
            text.push_str(&format!(
                "\n===== {}: {} =====\n--- summary ---\n{}--- stderr (last 40 lines) ---\n{}\n",
                job.name,
                job.output.status,
                job.summary(),
                tail(&job.stderr(), 40)
            ));
        }
        if let Some(coordinator) = &self.coordinator {
            text.push_str(&format!(
                "\n===== coordinator log (last 60 lines) =====\n{}\n",
                tail(&coordinator.log(), 60)
            ));
        }
        let mut side = lines(&self.side_file());
        side.sort();
        text.push_str(&format!(
            "\n===== side file ({} lines) =====\n{}\n",
            side.len(),
            side.join("\n")
        ));
        let batches: BTreeMap<String, usize> = self
            .build_events_per_job()
            .into_iter()
            .map(|(job, files)| (job, files.len()))
            .collect();
        text.push_str(&format!(
            "\n===== build event files per job directory =====\n{batches:?}\n"
        ));
        text
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// Jobs
// ---------------------------------------------------------------------------------------------

/// Jobs running concurrently; any still running when this is dropped (a test failing halfway)
/// is killed with its process group.
#[derive(Debug, Default)]
pub struct Running {
    /// The jobs, in the order they were started.
    pub jobs: Vec<Job>,
}

impl Running {
    /// Starts `command` as job `name`.
    pub fn spawn(&mut self, name: &str, command: Command) -> Result<()> {
        self.jobs.push(Job::spawn(name, command)?);
        Ok(())
    }

    /// The job named `name`.
    pub fn get(&self, name: &str) -> &Job {
        self.jobs
            .iter()
            .find(|j| j.name == name)
            .unwrap_or_else(|| panic!("no job {name}"))
    }

    /// Whether the job named `name` has exited.
    pub fn has_exited(&mut self, name: &str) -> bool {
        self.jobs
            .iter_mut()
            .find(|j| j.name == name)
            .is_none_or(|j| !matches!(j.child.try_wait(), Ok(None)))
    }

    /// Removes the job named `name` and SIGKILLs its process group (if it is still running).
    pub fn kill(&mut self, name: &str) -> Result<Finished> {
        let index = self
            .jobs
            .iter()
            .position(|j| j.name == name)
            .with_context(|| format!("no job {name}"))?;
        let mut job = self.jobs.remove(index);
        if matches!(job.child.try_wait(), Ok(None)) {
            job.kill_group()?;
        }
        job.wait(Duration::from_secs(10)).map(|output| Finished {
            name: name.to_string(),
            output,
        })
    }

    /// Waits for every job, each within `limit` of now; a job still running then is a hang and
    /// fails the wait (after every job has been killed).
    pub fn wait_all(mut self, limit: Duration) -> Result<Vec<Finished>> {
        let deadline = Instant::now() + limit;
        let mut finished = Vec::new();
        for job in std::mem::take(&mut self.jobs) {
            let name = job.name.clone();
            let left = deadline.saturating_duration_since(Instant::now());
            let output = job.wait(left.max(Duration::from_secs(1)))?;
            finished.push(Finished { name, output });
        }
        Ok(finished)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for job in &mut self.jobs {
            if matches!(job.child.try_wait(), Ok(None)) {
                let _ = job.kill_group();
            }
        }
    }
}

/// A job that has exited.
#[derive(Debug)]
pub struct Finished {
    /// Its name (the client id).
    pub name: String,
    /// Its exit status and output.
    pub output: Output,
}

impl Finished {
    /// The exit code (`None` if a signal ended it).
    pub fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    /// Its stdout.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    /// Its stderr.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// The session summary at the end of its stdout (empty if there is none).
    pub fn summary(&self) -> String {
        summary(&self.stdout())
    }
}

// ---------------------------------------------------------------------------------------------
// The session summary
// ---------------------------------------------------------------------------------------------

/// One target's line in the session summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryRow {
    /// The target.
    pub label: String,
    /// Shown as `(cached)`: the result did not come from an execution.
    pub cached: bool,
    /// `PASSED`, `FAILED`, `SKIPPED`, ...
    pub outcome: String,
    /// A task's own exit code (`FAILED in 0.3s, exit 3`), which a Bazel target never has: its
    /// batch's code belongs to the whole batch.
    pub exit: Option<i32>,
    /// The exit code of the Bazel that ran the batch of a target left without a verdict of
    /// its own (`NO STATUS (bazel exited 2)`).
    pub bazel_exit: Option<i32>,
    /// The job that produced the result.
    pub client: String,
}

/// A parsed session summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The task count in the header line.
    pub tasks: usize,
    /// One row per target, in the order printed.
    pub rows: Vec<SummaryRow>,
    /// The totals line, without the `task-sharding: ` prefix.
    pub totals: String,
}

impl Summary {
    /// The row of `label`.
    pub fn row(&self, label: &str) -> Option<&SummaryRow> {
        self.rows.iter().find(|r| r.label == label)
    }

    /// The labels, in order.
    pub fn labels(&self) -> Vec<String> {
        self.rows.iter().map(|r| r.label.clone()).collect()
    }

    /// The distinct clients named.
    pub fn clients(&self) -> BTreeSet<String> {
        self.rows.iter().map(|r| r.client.clone()).collect()
    }
}

/// Parses the summary `task-sharding bazel` prints: the header
/// `task-sharding: session "bazel test" complete: N tasks` (or `"bazel build"`), one row per target
/// (`<label>  [(cached) ]<OUTCOME>[ in <secs>s][, exit N][ (bazel exited N)]  [<client>]`), and
/// the totals line.
pub fn parse_summary(text: &str) -> Result<Summary> {
    let mut lines = text.lines();
    let header = lines.next().context("the summary is empty")?;
    let tasks = ["test", "build"]
        .iter()
        .find_map(|command| {
            header.strip_prefix(&format!(
                "task-sharding: session \"bazel {command}\" complete: "
            ))
        })
        .and_then(|rest| rest.strip_suffix(" tasks"))
        .with_context(|| format!("unexpected summary header {header:?}"))?
        .parse()
        .with_context(|| format!("unexpected summary header {header:?}"))?;
    let mut rows = Vec::new();
    for line in lines.by_ref() {
        if let Some(totals) = line.strip_prefix("task-sharding: ") {
            return Ok(Summary {
                tasks,
                rows,
                totals: totals.to_string(),
            });
        }
        rows.push(parse_row(line).with_context(|| format!("unexpected summary row {line:?}"))?);
    }
    bail!("the summary has no totals line")
}

fn parse_row(line: &str) -> Option<SummaryRow> {
    // A task nobody ran (the session stopped at its first failure) names no client.
    let (left, client) = match line.rsplit_once("  [") {
        Some((left, client)) => (left, client.strip_suffix(']')?.to_string()),
        None => (line.trim_end(), String::new()),
    };
    let (label, detail) = left.split_once(' ')?;
    let detail = detail.trim_start();
    let (cached, detail) = match detail.strip_prefix("(cached) ") {
        Some(rest) => (true, rest),
        None => (false, detail),
    };
    let (detail, bazel_exit) = match detail.strip_suffix(')') {
        Some(rest) => {
            let (rest, code) = rest.rsplit_once(" (bazel exited ")?;
            (rest, Some(code.parse().ok()?))
        }
        None => (detail, None),
    };
    let (detail, exit) = match detail.rsplit_once(", exit ") {
        Some((rest, code)) => (rest, Some(code.parse().ok()?)),
        None => (detail, None),
    };
    // The time, when there is one, is `<digits>.<digit>s`.
    let outcome = match detail.rsplit_once(" in ") {
        Some((outcome, time))
            if time
                .strip_suffix('s')
                .is_some_and(|t| t.parse::<f64>().is_ok()) =>
        {
            outcome
        }
        _ => detail,
    };
    Some(SummaryRow {
        label: label.to_string(),
        cached,
        outcome: outcome.to_string(),
        exit,
        bazel_exit,
        client,
    })
}

/// Removes the task-sharding and Bazel wrapper settings `command` would inherit from whoever
/// runs the tests, so that each job sees only what the test gives it.
pub fn clean_env(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("TASK_SHARDING_")
            || name.starts_with("BAZELISK_")
            || name == "BAZEL_REAL"
            || name == "USE_BAZEL_VERSION"
        {
            command.env_remove(name.as_ref());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_parse() {
        let text = "task-sharding: session \"bazel test\" complete: 4 tasks\n\
                    //a:b_test           PASSED in 0.4s  [job-1]\n\
                    //strings:broken_test  FAILED in 0.3s, exit 3  [job-2]\n\
                    //c:d                (cached) SKIPPED in 0.0s  [job-1 (alone)]\n\
                    //e:f                NO STATUS (bazel exited 2)  [job-3]\n\
                    task-sharding: 1 passed, 1 failed, 1 skipped, 1 no status; run by 3 clients\n";
        let summary = parse_summary(text).unwrap();
        assert_eq!(summary.tasks, 4);
        assert_eq!(
            summary.totals,
            "1 passed, 1 failed, 1 skipped, 1 no status; run by 3 clients"
        );
        assert_eq!(
            summary.rows,
            [
                SummaryRow {
                    label: "//a:b_test".into(),
                    cached: false,
                    outcome: "PASSED".into(),
                    exit: None,
                    bazel_exit: None,
                    client: "job-1".into()
                },
                SummaryRow {
                    label: "//strings:broken_test".into(),
                    cached: false,
                    outcome: "FAILED".into(),
                    exit: Some(3),
                    bazel_exit: None,
                    client: "job-2".into()
                },
                SummaryRow {
                    label: "//c:d".into(),
                    cached: true,
                    outcome: "SKIPPED".into(),
                    exit: None,
                    bazel_exit: None,
                    client: "job-1 (alone)".into()
                },
                SummaryRow {
                    label: "//e:f".into(),
                    cached: false,
                    outcome: "NO STATUS".into(),
                    exit: None,
                    bazel_exit: Some(2),
                    client: "job-3".into()
                },
            ]
        );
        assert!(parse_summary("").is_err());
        assert!(
            parse_summary("task-sharding: session \"bazel test\" complete: 1 tasks\n").is_err()
        );
    }
}
