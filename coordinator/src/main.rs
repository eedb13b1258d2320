//! `coordinator`: the QUIC server that lets identical CI jobs share their tasks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use coordinator::admission::AdmissionLimits;
use coordinator::http::HttpConfig;
use coordinator::server::{Server, ServerConfig, SessionShares};
use coordinator::state::Policy;
use coordinator::tls::{self, ClientCa, TlsIdentity};

/// Where the dashboard listens unless told otherwise: this machine only.
const DEFAULT_HTTP: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7401);

/// The task-sharding coordinator.
///
/// Clients that join with the same session key share one session: the coordinator hands out
/// their tasks in batches, takes a task back the moment the client holding it is lost, and
/// sends every client the results of the whole session.
///
/// Prints `coordinator listening on ADDR` and the certificate's SHA-256 fingerprint on stdout
/// once it is ready; logs go to stderr (RUST_LOG sets the level, default `info`).
/// Stops gracefully on SIGINT or SIGTERM. Exit codes: 0 after a graceful stop, 1 on a fatal
/// error, 2 on a bad command line.
#[derive(Debug, Parser)]
#[command(version, max_term_width = 100)]
struct Opt {
    /// The UDP address to listen on.
    #[arg(long, env = "TASK_SHARDING_LISTEN", default_value = "127.0.0.1:7400")]
    listen: SocketAddr,

    /// Where the coordinator keeps its state: the timing history (history.redb), the sessions
    /// (sessions.redb, so that a restarted coordinator resumes them), and the
    /// generated certificate in STATE_DIR/tls unless --tls-dir or --cert say otherwise.
    /// [default: $XDG_STATE_HOME/task-sharding, else ~/.local/state/task-sharding]
    #[arg(long, env = "TASK_SHARDING_STATE_DIR")]
    state_dir: Option<PathBuf>,

    /// Directory holding cert.pem and key.pem. When they do not exist, a self-signed certificate
    /// is generated there; hand its cert.pem to clients as TASK_SHARDING_CA.
    #[arg(long, conflicts_with_all = ["cert", "key"])]
    tls_dir: Option<PathBuf>,

    /// A PEM certificate chain to present instead of a generated one (needs --key).
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,

    /// The PEM private key of --cert.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,

    /// Extra DNS names or IP addresses for the generated certificate, besides localhost,
    /// 127.0.0.1, ::1 and this host's name. Repeatable.
    #[arg(long = "san", value_name = "NAME")]
    sans: Vec<String>,

    /// A file holding the token clients must present (TASK_SHARDING_TOKEN). Required when
    /// listening on a non-loopback address.
    #[arg(long, env = "TASK_SHARDING_TOKEN_FILE")]
    token_file: Option<PathBuf>,

    /// Listen on a non-loopback address without a token, letting anyone who can reach the port
    /// join sessions and report results.
    #[arg(long)]
    insecure_no_token: bool,

    /// Require mutual TLS: a PEM bundle of CA certificates; every client must present a
    /// certificate issued by one of them (clients set TASK_SHARDING_CLIENT_CERT and
    /// TASK_SHARDING_CLIENT_KEY), or its handshake fails. Independent of the token: with both,
    /// a client needs both. Without it, clients are not asked for a certificate.
    #[arg(long, env = "TASK_SHARDING_CLIENT_CA", value_name = "PEM")]
    client_ca: Option<PathBuf>,

    /// How long a client may stay silent before it counts as lost and its tasks go to others.
    /// Clients send keep-alives, so long tasks are never mistaken for silence.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,

    /// How long a finished (or abandoned) session is remembered, so late jobs still get its
    /// results.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    session_ttl: Duration,

    /// After a restart, how long a client keeps the tasks it was running before they go to
    /// others: the time it has to reconnect and resume.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    resume_grace: Duration,

    /// Never give idle clients backup copies of long tasks still running elsewhere (by default
    /// they do, and the first copy to finish wins). For tasks that must not run twice at once.
    #[arg(long)]
    no_backups: bool,

    /// The most tasks handed to a client at once.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    max_batch: u32,

    /// The most sessions held at once.
    #[arg(long, default_value_t = 1000)]
    max_sessions: usize,

    /// The most client connections served at once.
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,

    /// The most connections from one IP address at once, so that one address cannot take every
    /// place. Raise it when many jobs reach the coordinator through one NAT address.
    #[arg(long, default_value_t = 1_000)]
    max_connections_per_address: usize,

    /// The most connections at once that have not yet been welcomed (handshake and hello not
    /// done): what peers without the token can make the coordinator hold.
    #[arg(long, default_value_t = 512)]
    max_unwelcomed: usize,

    /// The same, per IP address.
    #[arg(long, default_value_t = 32)]
    max_unwelcomed_per_address: usize,

    /// The most sessions that connections from one IP address may have created and the
    /// coordinator still holds, so that one address cannot take every session place.
    #[arg(long, default_value_t = 100)]
    max_sessions_per_address: usize,

    /// The most bytes that all connections' incomplete large frames (schema uploads) may hold
    /// at once; a frame that does not fit is refused as Busy, before its body is buffered.
    #[arg(long, default_value_t = 1 << 30)]
    max_buffered_bytes: usize,

    /// The same, for the connections from one IP address.
    #[arg(long, default_value_t = 256 << 20)]
    max_buffered_bytes_per_address: usize,

    /// The most bytes of schema text (task texts) all held sessions may hold: each is kept in
    /// memory and in sessions.redb for the session's life.
    #[arg(long, default_value_t = 1 << 30)]
    max_schema_bytes: usize,

    /// The same, for the sessions created from one IP address.
    #[arg(long, default_value_t = 256 << 20)]
    max_schema_bytes_per_address: usize,

    /// The TCP address of the dashboard (sessions, timelines, history, /metrics) [default:
    /// 127.0.0.1:7401, skipped with a warning when taken]. On a non-loopback address it
    /// requires the token (--token-file) and is served over TLS with the coordinator's
    /// certificate.
    #[arg(long, env = "TASK_SHARDING_HTTP", value_name = "ADDR")]
    http: Option<SocketAddr>,

    /// Serve no dashboard.
    #[arg(long, conflicts_with = "http")]
    no_http: bool,

    /// How long a client that said hello has to join a session before it is disconnected.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    join_timeout: Duration,
}

fn main() -> ExitCode {
    let opt = Opt::parse();
    process_setup::init_logging(process_setup::COORDINATOR_LOG);
    match run(opt) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ERROR: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn run(opt: Opt) -> Result<()> {
    // Under `bazel run`, relative paths mean the directory the user ran Bazel from.
    if let Some(dir) = std::env::var_os("BUILD_WORKING_DIRECTORY") {
        std::env::set_current_dir(&dir).context("cannot enter BUILD_WORKING_DIRECTORY")?;
    }
    let token = read_token(&opt)?;
    let state_dir = state_dir(&opt)?;
    coordinator::private_dir::create(&state_dir)?;
    let client_ca = opt
        .client_ca
        .as_deref()
        .map(ClientCa::load)
        .transpose()
        .context("--client-ca")?;
    let identity = match (&opt.cert, &opt.key, &opt.tls_dir) {
        (Some(cert), Some(key), _) => TlsIdentity::load(cert, key)?,
        (_, _, Some(dir)) => TlsIdentity::load_or_generate(dir, &tls::default_names(&opt.sans))?,
        _ => TlsIdentity::load_or_generate(&state_dir.join("tls"), &tls::default_names(&opt.sans))?,
    };
    let cert_path = identity.cert_path.clone();
    let mut config = ServerConfig::new(opt.listen, identity);
    config.policy = Policy {
        token,
        max_batch: opt.max_batch,
        session_ttl: opt.session_ttl,
        max_sessions: opt.max_sessions,
        resume_grace: opt.resume_grace,
        backups: !opt.no_backups,
        ..Policy::default()
    };
    config.idle_timeout = opt.idle_timeout;
    config.admission = AdmissionLimits {
        max_connections: opt.max_connections,
        max_per_address: opt.max_connections_per_address,
        max_unwelcomed: opt.max_unwelcomed,
        max_unwelcomed_per_address: opt.max_unwelcomed_per_address,
        max_buffered: opt.max_buffered_bytes,
        max_buffered_per_address: opt.max_buffered_bytes_per_address,
    };
    config.shares = SessionShares {
        sessions_per_address: opt.max_sessions_per_address,
        schema_bytes: opt.max_schema_bytes,
        schema_bytes_per_address: opt.max_schema_bytes_per_address,
    };
    config.join_timeout = opt.join_timeout;
    config.history_path = Some(state_dir.join("history.redb"));
    config.sessions_path = Some(state_dir.join("sessions.redb"));
    config.reset_key = Some(tls::load_or_generate_reset_key(&state_dir)?);
    if let Some(client_ca) = &client_ca {
        tracing::info!(
            client_ca = %client_ca.path.display(),
            cas = client_ca.count,
            "client certificates required: every client must present one issued by a CA in {}",
            client_ca.path.display()
        );
    }
    config.client_ca = client_ca;
    config.http = (!opt.no_http).then(|| HttpConfig {
        listen: opt.http.unwrap_or(DEFAULT_HTTP),
        required: opt.http.is_some(),
    });
    let server = Server::bind(config)?;
    let addr = server.local_addr()?;
    println!("coordinator listening on {addr}");
    println!(
        "certificate {} sha256 {}",
        cert_path.display(),
        server.fingerprint()
    );
    if let Some(url) = server.dashboard_url() {
        println!("dashboard {url}");
    }
    tracing::info!(%addr, cert = %cert_path.display(), fingerprint = %server.fingerprint(), "ready");
    server.run(shutdown_signal()).await?;
    Ok(())
}

/// The token from --token-file, trimmed; refuses to run open on a non-loopback address.
fn read_token(opt: &Opt) -> Result<Option<String>> {
    let Some(path) = &opt.token_file else {
        if !opt.listen.ip().is_loopback() && !opt.insecure_no_token {
            bail!(
                "listening on {} without a token would let anyone who reaches the port join \
                 sessions; pass --token-file FILE (clients set TASK_SHARDING_TOKEN), or \
                 --insecure-no-token to accept that",
                opt.listen
            );
        }
        return Ok(None);
    };
    let token = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the token file {}", path.display()))?;
    let token = token.trim();
    if token.is_empty() {
        bail!("the token file {} is empty", path.display());
    }
    Ok(Some(token.to_string()))
}

fn state_dir(opt: &Opt) -> Result<PathBuf> {
    if let Some(dir) = &opt.state_dir {
        return Ok(dir.clone());
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("task-sharding"));
    }
    let home = std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .context("no --state-dir, XDG_STATE_HOME or HOME to keep the certificate in")?;
    Ok(PathBuf::from(home).join(".local/state/task-sharding"))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = terminate.recv() => tracing::info!("SIGTERM received"),
    }
}
