//! The QUIC endpoint: binds, accepts connections, and shuts down gracefully.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::path::PathBuf;

use crate::admission::{Admission, AdmissionLimits};
use crate::connection::{self, Limits};
use crate::history_store::StoreError;
use crate::http::{Dashboard, HttpConfig, HttpError};
use crate::hub::Hub;
pub use crate::hub::SessionShares;
use crate::session_store::SessionStore;
use crate::state::{Coordinator, Policy};
use crate::tls::{ClientCa, TlsIdentity};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The TLS configuration could not be made.
    #[error("{0}")]
    Tls(&'static str, #[source] rustls::Error),
    /// rustls' configuration does not suit QUIC.
    #[error("the TLS configuration is unusable for QUIC")]
    Quic(#[source] quinn::crypto::rustls::NoInitialCipherSuite),
    /// The idle timeout does not fit QUIC's.
    #[error("the idle timeout is too long")]
    IdleTimeout(#[source] quinn::VarIntBoundsExceeded),
    /// The timing history or the session store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored sessions could not be read.
    #[error("cannot read the session store {}", path.display())]
    LoadSessions {
        /// The store.
        path: PathBuf,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// The dashboard could not start.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// Not inside a Tokio runtime.
    #[error("no async runtime")]
    NoRuntime,
    /// The UDP socket could not be bound, or its address told.
    #[error("cannot listen on {address}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Everything the server needs to start.
#[derive(Debug)]
pub struct ServerConfig {
    /// The UDP address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// The certificate presented to clients.
    pub identity: TlsIdentity,
    /// The rules the state machine enforces.
    pub policy: Policy,
    /// How long a connection may be silent before it counts as lost and its leases go back.
    /// Clients send keep-alives well within it, so a long task never looks silent.
    pub idle_timeout: Duration,
    /// The most connections served at once, in all and per address; more are refused.
    pub admission: AdmissionLimits,
    /// How long a welcomed client has to become a member of a session.
    pub join_timeout: Duration,
    /// What the sessions created from one address, and from all, may hold.
    pub shares: SessionShares,
    /// The largest frame accepted from a welcomed client.
    pub max_frame_len: usize,
    /// Where timing history is kept across restarts; `None` keeps it in memory only.
    pub history_path: Option<std::path::PathBuf>,
    /// Where sessions are kept across restarts; `None` keeps them in memory only.
    pub sessions_path: Option<std::path::PathBuf>,
    /// The stateless-reset key, kept across restarts (see [`crate::tls::load_or_generate_reset_key`]);
    /// `None` draws a new one.
    pub reset_key: Option<[u8; crate::tls::RESET_KEY_LEN]>,
    /// When set, every client must present a certificate issued by one of these CAs (mutual
    /// TLS), on top of the token; `None` asks clients for no certificate.
    pub client_ca: Option<ClientCa>,
    /// Where to serve the dashboard; `None` serves none.
    pub http: Option<HttpConfig>,
}

impl ServerConfig {
    /// A configuration with defaults for everything but the address and certificate.
    pub fn new(listen: SocketAddr, identity: TlsIdentity) -> Self {
        ServerConfig {
            listen,
            identity,
            policy: Policy::default(),
            idle_timeout: Duration::from_secs(15),
            admission: AdmissionLimits::default(),
            join_timeout: Duration::from_secs(30),
            shares: SessionShares::default(),
            max_frame_len: schemas::DEFAULT_MAX_FRAME_LEN,
            history_path: None,
            sessions_path: None,
            reset_key: None,
            client_ca: None,
            http: None,
        }
    }
}

/// A bound, not yet running, coordinator.
#[derive(Debug)]
pub struct Server {
    endpoint: quinn::Endpoint,
    hub: Arc<Hub>,
    limits: Limits,
    admission: Arc<Admission>,
    fingerprint: String,
    dashboard: Option<Dashboard>,
}

impl Server {
    /// Binds the endpoint. Nothing is served until [`Server::run`].
    pub fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        let fingerprint = config.identity.fingerprint();
        // The dashboard presents the same certificate, over TCP.
        let http_identity = config.http.as_ref().map(|_| {
            (
                config.identity.certs.clone(),
                config.identity.key.clone_key(),
            )
        });
        let token = config.policy.token.clone();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| ServerError::Tls("TLS 1.3 is unavailable", e))?;
        let tls = match &config.client_ca {
            Some(client_ca) => tls.with_client_cert_verifier(client_ca.verifier()),
            None => tls.with_no_client_auth(),
        };
        let mut tls = tls
            .with_single_cert(config.identity.certs, config.identity.key)
            .map_err(|e| {
                ServerError::Tls("the certificate and key do not form a usable identity", e)
            })?;
        tls.alpn_protocols = vec![schemas::ALPN.to_vec()];
        let crypto =
            quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(ServerError::Quic)?;
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let transport = Arc::get_mut(&mut server_config.transport).expect("not shared yet");
        transport
            .max_idle_timeout(Some(
                config
                    .idle_timeout
                    .try_into()
                    .map_err(ServerError::IdleTimeout)?,
            ))
            .keep_alive_interval(Some(config.idle_timeout / 3))
            // One stream per client carries the whole conversation.
            .max_concurrent_bidi_streams(1u32.into())
            .max_concurrent_uni_streams(0u32.into())
            // What a peer may make the coordinator buffer for it before the application reads
            // it (out of order data included): quinn's default is 1.25 MB per stream and no
            // limit per connection. Enough for a schema upload at full speed on a CI network.
            .stream_receive_window(RECEIVE_WINDOW.into())
            .receive_window(RECEIVE_WINDOW.into());
        let history_store = match &config.history_path {
            Some(path) => Some(crate::history_store::HistoryStore::open(path)?),
            None => None,
        };
        let history = match &history_store {
            Some(store) => store.load()?,
            None => Default::default(),
        };
        let (state, store) = match &config.sessions_path {
            Some(path) => {
                let store = SessionStore::open(path)?;
                let snapshot = store.load().map_err(|source| ServerError::LoadSessions {
                    path: path.clone(),
                    source,
                })?;
                let state = Coordinator::restore(config.policy, history, snapshot, Instant::now());
                (state, Some(store))
            }
            None => (Coordinator::with_history(config.policy, history), None),
        };
        let endpoint = match &config.reset_key {
            Some(key) => {
                let runtime = quinn::default_runtime().ok_or(ServerError::NoRuntime)?;
                std::net::UdpSocket::bind(config.listen).and_then(|socket| {
                    quinn::Endpoint::new(endpoint_config(key), Some(server_config), socket, runtime)
                })
            }
            None => quinn::Endpoint::server(server_config, config.listen),
        }
        .map_err(|source| ServerError::Listen {
            address: config.listen,
            source,
        })?;
        let hub = Arc::new(Hub::new(
            state,
            store,
            history_store,
            config.max_frame_len,
            config.shares,
        ));
        let dashboard = match (&config.http, http_identity) {
            (Some(http), Some((certs, key))) => {
                match Dashboard::bind(http, certs, key, token.as_deref(), hub.clone()) {
                    Ok(dashboard) => Some(dashboard),
                    Err(e @ HttpError::Listen { .. }) if !http.required => {
                        tracing::warn!("no dashboard: {e}: {}", e.source_text());
                        None
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            _ => None,
        };
        Ok(Server {
            endpoint,
            hub,
            dashboard,
            limits: Limits {
                handshake: Duration::from_secs(10),
                hello: Duration::from_secs(10),
                join: config.join_timeout,
                max_frame_len: config.max_frame_len,
                pre_hello_frame_len: schemas::PRE_HELLO_MAX_FRAME_LEN.min(config.max_frame_len),
            },
            admission: Admission::new(config.admission),
            fingerprint,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// The dashboard's URL (`http://ADDR/`, or `https://` off loopback), when it is served.
    pub fn dashboard_url(&self) -> Option<String> {
        self.dashboard.as_ref().and_then(|d| d.url().ok())
    }

    /// The SHA-256 fingerprint of the certificate, in lowercase hex.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Serves until `shutdown` resolves, then closes every connection and waits briefly for
    /// clients to be told.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let mut refusals = Throttle::default();
        let dashboard = self
            .dashboard
            .take()
            .map(|d| tokio::spawn(crate::http::serve(d)));
        let housekeeping = tokio::spawn(housekeeping(self.hub.clone()));
        let persisting = tokio::spawn(persisting(self.hub.clone()));
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                incoming = self.endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    match self.admission.admit(incoming.remote_address().ip()) {
                        Ok(pass) => {
                            let hub = self.hub.clone();
                            let limits = self.limits;
                            tokio::spawn(connection::serve(incoming, hub, limits, pass));
                        }
                        Err(refusal) => {
                            self.hub.note_refused_connection();
                            // Refused at the QUIC level, before any TLS work: clients retry.
                            // A flood must not become a flood of log lines: one a second.
                            if refusals.note() {
                                tracing::warn!(remote = %incoming.remote_address(),
                                    suppressed = refusals.suppressed,
                                    "refused a connection: {refusal}");
                                refusals.suppressed = 0;
                            }
                            incoming.refuse();
                        }
                    }
                }
                () = &mut shutdown => break,
            }
        }
        housekeeping.abort();
        persisting.abort();
        if let Some(dashboard) = dashboard {
            dashboard.abort();
        }
        let _ = persisting.await;
        // Store the sessions as they are before the connections close, and keep the closing
        // from returning leases: the clients resume them when the coordinator is back.
        self.hub.freeze();
        let (connections, sessions) = self.hub.counts();
        tracing::info!(connections, sessions, "shutting down");
        self.endpoint
            .close(0u32.into(), b"the coordinator is shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(3), self.endpoint.wait_idle()).await;
        self.hub.housekeeping();
        Ok(())
    }
}

/// An endpoint whose stateless resets and connection ids stay valid across restarts: a
/// restarted coordinator recognizes the connection ids it handed out before (the same key signs
/// them) and answers their packets with a reset the client recognizes (the same key derives the
/// reset tokens), so clients reconnect at once instead of waiting out their idle timeout.
fn endpoint_config(key: &[u8; crate::tls::RESET_KEY_LEN]) -> quinn::EndpointConfig {
    let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let cid_tag = ring::hmac::sign(&reset_key, b"task-sharding connection ids");
    let cid_key = u64::from_le_bytes(cid_tag.as_ref()[..8].try_into().expect("8 bytes"));
    let mut config = quinn::EndpointConfig::new(Arc::new(reset_key));
    config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    config
}

/// Several times a second: writes what changed in the sessions to the store. A coordinator killed
/// outright loses at most the last interval, which clients re-send when they resume.
async fn persisting(hub: Arc<Hub>) {
    let mut tick = tokio::time::interval(PERSIST_INTERVAL);
    loop {
        tick.tick().await;
        let hub = hub.clone();
        // The write blocks (it waits for the disk); keep it off the runtime's workers.
        let _ = tokio::task::spawn_blocking(move || hub.persist()).await;
    }
}

/// Lets one log line through a second, counting the others.
#[derive(Debug, Default)]
struct Throttle {
    /// When a line was last let through.
    last: Option<Instant>,
    /// Lines held back since.
    suppressed: u64,
}

impl Throttle {
    /// Whether to log this one.
    fn note(&mut self) -> bool {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return false;
        }
        self.last = Some(now);
        true
    }
}

/// The most bytes a client may have in flight to the coordinator (see `stream_receive_window`).
const RECEIVE_WINDOW: u32 = 512 * 1024;

/// How often changed sessions are written.
const PERSIST_INTERVAL: Duration = Duration::from_millis(200);

/// Every couple of seconds: forgets expired sessions and writes the timing history.
async fn housekeeping(hub: Arc<Hub>) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        hub.housekeeping();
    }
}
