//! The `task-sharding` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::connection::ConnectOptions;
use crate::exit;
use crate::trust::{ClientIdentity, Trust, TrustError};

/// Make identical CI jobs share their work.
///
/// Every job of a CI run starts the same command; task-sharding connects each to a coordinator,
/// which hands out the tasks among them, so each task runs once, and every job ends with the
/// results of all of them.
#[derive(Debug, Parser)]
#[command(name = "task-sharding", version, max_term_width = 100)]
pub(crate) struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the tasks of a schema file as processes, shared with the other jobs of this run.
    ///
    /// Each task this job is assigned runs COMMAND ARGS..., with `{task}` replaced by the task's
    /// text and `{id}` by its index (also in the environment as TASK_SHARDING_TASK and
    /// TASK_SHARDING_TASK_ID). Prints the session's summary (task, outcome, duration, client).
    ///
    /// Exit codes: 0 every task of the session succeeded; 1 some task failed; 2 bad command line
    /// or schema; 3 the coordinator could not be used (unreachable, refused, lost);
    /// 130 interrupted.
    ///
    /// Example: task-sharding run --schema schemas/examples/sleep.yaml -- sleep '{task}'
    Run(Box<RunArgs>),

    /// Run Bazel, sharding `bazel test` and `bazel build` across the jobs of this CI run (what
    /// tools/bazel runs).
    ///
    /// Every command but `test` and `build` is handed to $BAZEL_REAL untouched (`coverage` too:
    /// it is not sharded). For `bazel test PATTERNS` Bazel itself plans the work (the same
    /// command line with --nobuild): its test targets and the other targets it would build are
    /// shared by the jobs of this run through the coordinator; `bazel build PATTERNS` shares
    /// out the targets it would build (TASK_SHARDING_SHARD_BUILD=0 runs it unsharded). A
    /// command line Bazel rejects is left for Bazel to report. Each job runs its batches with
    /// the same options (remote cache flags included), and every job ends with the summary of
    /// all targets and Bazel's exit code for the whole run: 0 all passed (or built), 1 build
    /// failure, 2 bad command line, 3 a test failed, 4 no tests, 8 interrupted, 36 the
    /// coordinator was required (TASK_SHARDING_REQUIRED=1) but unusable. Without a usable
    /// coordinator the command runs unsharded (fail-open).
    ///
    /// Configuration comes from the environment only (TASK_SHARDING_COORDINATOR, _CA,
    /// _FINGERPRINT, _TOKEN, _CLIENT_CERT, _CLIENT_KEY, _RUN_ID, _RUN_SECRET, _CLIENT_ID,
    /// _CONNECT_TIMEOUT, _GRACE, _REQUIRED, _HISTORY_SCOPE, _BEP_DIR, _JUNIT, _SHARD_BUILD),
    /// since the arguments are Bazel's. `task-sharding bazel --help` (without $BAZEL_REAL)
    /// prints this.
    #[command(disable_help_flag = true)]
    Bazel {
        /// Bazel's arguments, exactly as given to `bazel`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// `task-sharding run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The schema: a YAML file with `name:` and `tasks:` (a list of `- task: "..."`).
    #[arg(long, value_name = "FILE")]
    pub(crate) schema: PathBuf,

    /// The most tasks to take from the coordinator at a time.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_batch: u32,

    /// Also write the whole session's results (every job's, not only this one's) to FILE as
    /// JUnit XML, for CI systems that read test reports.
    #[arg(long, value_name = "FILE", env = "TASK_SHARDING_JUNIT")]
    pub(crate) junit: Option<PathBuf>,

    /// How to reach the coordinator.
    #[command(flatten)]
    pub(crate) connect: ConnectArgs,

    /// The command to run per task, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub(crate) command: Vec<String>,
}

/// How to reach, trust and identify to the coordinator; shared by every subcommand.
#[derive(Debug, Clone, Args)]
pub(crate) struct ConnectArgs {
    /// The coordinator's address, host:port.
    #[arg(long, env = "TASK_SHARDING_COORDINATOR", value_name = "HOST:PORT")]
    pub(crate) coordinator: Option<String>,

    /// A PEM file of the certificate(s) to trust for the coordinator: its generated cert.pem, or
    /// the CA that signed its certificate.
    #[arg(long, env = "TASK_SHARDING_CA", value_name = "PEM")]
    pub(crate) ca: Option<PathBuf>,

    /// Trust exactly the coordinator certificate with this SHA-256 fingerprint (hex, as the
    /// coordinator prints it) instead of a CA file.
    #[arg(long, env = "TASK_SHARDING_FINGERPRINT", value_name = "SHA256")]
    pub(crate) fingerprint: Option<String>,

    /// The token the coordinator requires, if any.
    #[arg(long, env = "TASK_SHARDING_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,

    /// A PEM certificate (chain, leaf first) to present when the coordinator requires client
    /// certificates (its --client-ca). Needs --client-key.
    #[arg(long, env = "TASK_SHARDING_CLIENT_CERT", value_name = "PEM")]
    pub(crate) client_cert: Option<PathBuf>,

    /// The PEM private key of --client-cert.
    #[arg(long, env = "TASK_SHARDING_CLIENT_KEY", value_name = "PEM")]
    pub(crate) client_key: Option<PathBuf>,

    /// Identifies this run of the CI pipeline: jobs with the same run id share a session, and a
    /// re-run needs a new one. Default: told from the CI system's variables (GitHub Actions,
    /// GitLab CI, Buildkite, CircleCI, Jenkins).
    #[arg(long, env = "TASK_SHARDING_RUN_ID")]
    pub(crate) run_id: Option<String>,

    /// A secret shared by the jobs of this run only (e.g. generated by the pipeline's first
    /// step), mixed into the session key so that nobody else, even with the token, can join
    /// this run's session and report results for it. See SECURITY.md for each CI system.
    #[arg(long, env = "TASK_SHARDING_RUN_SECRET", hide_env_values = true)]
    pub run_secret: Option<String>,

    /// This job's name in summaries. Default: the CI job's name, else HOSTNAME-PID.
    #[arg(long, env = "TASK_SHARDING_CLIENT_ID")]
    pub(crate) client_id: Option<String>,

    /// How long to try reaching the coordinator.
    #[arg(long, env = "TASK_SHARDING_CONNECT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub(crate) connect_timeout: Duration,

    /// How long the coordinator may stay silent before the connection counts as lost.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub(crate) idle_timeout: Duration,

    /// After losing the coordinator, how long to keep reconnecting (with backoff) to resume the
    /// session, while running tasks carry on. Then the job finishes alone.
    #[arg(long, env = "TASK_SHARDING_GRACE", default_value = "60s", value_parser = humantime::parse_duration)]
    pub(crate) reconnect_for: Duration,
}

/// A configuration problem the user must fix.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    /// No coordinator address.
    #[error("no coordinator: set TASK_SHARDING_COORDINATOR=host:port (or --coordinator)")]
    NoCoordinator,
    /// No way to verify the coordinator.
    #[error(
        "no way to verify the coordinator: set TASK_SHARDING_CA to its cert.pem, or \
         TASK_SHARDING_FINGERPRINT to the fingerprint it prints"
    )]
    NoTrust,
    /// No run id.
    #[error(
        "cannot tell which CI run this is: set TASK_SHARDING_RUN_ID to an id shared by every job \
         of this run and new for each re-run (e.g. your CI's pipeline id and attempt)"
    )]
    NoRunId,
    /// Only one of the client certificate and its key.
    #[error(
        "{given} is set but {missing} is not: a client certificate needs both \
         TASK_SHARDING_CLIENT_CERT and TASK_SHARDING_CLIENT_KEY (or --client-cert and \
         --client-key), or neither"
    )]
    HalfClientIdentity {
        /// The one that was given.
        given: &'static str,
        /// The one that is missing.
        missing: &'static str,
    },
    /// A trust setting was malformed.
    #[error(transparent)]
    Trust(#[from] TrustError),
}

impl ConnectArgs {
    /// The connection options these arguments describe.
    pub(crate) fn connect_options(&self) -> Result<ConnectOptions, ConfigError> {
        let coordinator = self.coordinator.clone().ok_or(ConfigError::NoCoordinator)?;
        let trust = match (&self.ca, &self.fingerprint) {
            (Some(path), _) => Trust::CaFile(path.clone()),
            (None, Some(fingerprint)) => Trust::fingerprint(fingerprint)?,
            (None, None) => return Err(ConfigError::NoTrust),
        };
        let client_identity =
            client_identity(self.client_cert.as_deref(), self.client_key.as_deref())?;
        let mut builder = ConnectOptions::builder(coordinator, trust)
            .token(self.token.clone())
            .client_identity(client_identity)
            .connect_timeout(self.connect_timeout)
            .idle_timeout(self.idle_timeout)
            // A coordinator at a limit is waited for as long as a lost one would be.
            .busy_retry_for(self.reconnect_for);
        if let Some(id) = &self.client_id {
            builder = builder.client_id(id);
        }
        Ok(builder.build())
    }

    /// `key` sealed with the run secret, if one is set (see [`crate::ci::sealed_session_key`]).
    pub(crate) fn seal(&self, key: String) -> String {
        crate::ci::sealed_session_key(key, self.run_secret.as_deref())
    }

    /// The run id: the flag or TASK_SHARDING_RUN_ID, else the CI system's.
    pub(crate) fn run_id(&self) -> Result<String, ConfigError> {
        if let Some(id) = &self.run_id {
            return Ok(id.clone());
        }
        crate::ci::run_id(|name| std::env::var(name).ok())
            .map(|run| run.id)
            .ok_or(ConfigError::NoRunId)
    }
}

/// The client certificate and key, when both are given; an error when only one is.
fn client_identity(
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<Option<ClientIdentity>, ConfigError> {
    const CERT: &str = "TASK_SHARDING_CLIENT_CERT (--client-cert)";
    const KEY: &str = "TASK_SHARDING_CLIENT_KEY (--client-key)";
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(ClientIdentity::load(cert, key)?)),
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError::HalfClientIdentity {
            given: CERT,
            missing: KEY,
        }),
        (None, Some(_)) => Err(ConfigError::HalfClientIdentity {
            given: KEY,
            missing: CERT,
        }),
    }
}

/// Treats a `TASK_SHARDING_*` variable set to the empty string as not set. CI systems turn a
/// secret or variable that is not defined into an empty string (`${{ secrets.TOKEN }}`), which
/// means "none", not "an empty path". Must run before any thread starts.
pub(crate) fn forget_empty_settings() {
    let empty: Vec<std::ffi::OsString> = std::env::vars_os()
        .filter(|(name, value)| {
            value.is_empty() && name.to_string_lossy().starts_with("TASK_SHARDING_")
        })
        .map(|(name, _)| name)
        .collect();
    for name in empty {
        std::env::remove_var(name);
    }
}

/// Parses the command line and runs it; the binary's whole `main`.
pub(crate) fn main() -> ExitCode {
    // `task-sharding bazel ...`: every argument after `bazel` is Bazel's, `--help` included.
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("bazel") {
        let asks_help = matches!(argv.get(2).map(String::as_str), Some("--help" | "-h"));
        if asks_help && std::env::var_os("BAZEL_REAL").is_none() {
            return print_bazel_help();
        }
        process_setup::init_logging(process_setup::CLIENT_LOG);
        let code = crate::bazel::main(argv[2..].to_vec());
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    forget_empty_settings();
    let cli = Cli::parse();
    process_setup::init_logging(process_setup::CLIENT_LOG);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("task-sharding: error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    let code = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => crate::run_command::run(*args).await,
            Command::Bazel { .. } => unreachable!("handled before parsing"),
        }
    });
    ExitCode::from(code)
}

/// `task-sharding bazel --help` outside `tools/bazel`: this command's own help (under
/// `tools/bazel`, `--help` is Bazel's).
fn print_bazel_help() -> ExitCode {
    use clap::CommandFactory as _;
    let mut cli = Cli::command();
    match cli.find_subcommand_mut("bazel") {
        Some(bazel) => {
            let _ = bazel.print_long_help();
            ExitCode::SUCCESS
        }
        None => ExitCode::from(exit::FAILED),
    }
}

/// A clap error about a setting, in the words of the environment variable the user set:
/// `--reconnect-for <RECONNECT_FOR>` becomes `TASK_SHARDING_GRACE`.
pub(crate) fn in_variable_terms<P: clap::CommandFactory>(error: &clap::Error) -> String {
    let mut text = error.to_string();
    let command = P::command();
    for arg in command.get_arguments() {
        let (Some(long), Some(env)) = (arg.get_long(), arg.get_env()) else {
            continue;
        };
        let flag = format!("--{long}");
        while let Some(at) = text.find(&flag) {
            let end = text[at..].find('\'').map_or(text.len(), |e| at + e);
            text.replace_range(at..end, &env.to_string_lossy());
        }
    }
    text.trim_end()
        .trim_start_matches("error: ")
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_certificate_needs_its_key_and_the_other_way_round() {
        let only_cert = client_identity(Some(Path::new("client.pem")), None)
            .unwrap_err()
            .to_string();
        assert!(
            only_cert.starts_with(
                "TASK_SHARDING_CLIENT_CERT (--client-cert) is set but \
                 TASK_SHARDING_CLIENT_KEY (--client-key) is not"
            ),
            "{only_cert}"
        );
        let only_key = client_identity(None, Some(Path::new("client.key")))
            .unwrap_err()
            .to_string();
        assert!(
            only_key.starts_with("TASK_SHARDING_CLIENT_KEY (--client-key) is set"),
            "{only_key}"
        );
    }

    #[test]
    fn no_client_certificate_is_the_default() {
        assert!(client_identity(None, None).unwrap().is_none());
    }

    #[test]
    fn an_unreadable_client_certificate_is_a_configuration_error() {
        let error = client_identity(
            Some(Path::new("/nonexistent/client.pem")),
            Some(Path::new("/nonexistent/key.pem")),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("/nonexistent/client.pem"), "{error}");
    }
}
