//! Binding and serving: plain HTTP on loopback, TLS (the coordinator's certificate) elsewhere,
//! with a cap on connections and timeouts, so that the dashboard cannot be made to hold more
//! than a little.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use super::{auth, metrics, pages, AppState, HttpConfig, HttpMetrics};
use crate::hub::Hub;

/// The most dashboard connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 64;
/// How long a client has for its TLS handshake and for each request's headers.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest one connection is kept, however busy.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);

/// A bound dashboard, not yet serving.
pub(crate) struct Dashboard {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    state: AppState,
}

/// Why the dashboard could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The address could not be bound.
    #[error("cannot listen for the dashboard on {address}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Off loopback without a token.
    #[error(
        "the dashboard on {0} could be reached from other machines; it needs the coordinator's \
         token (--token-file), or listen on a loopback address (--http 127.0.0.1:7401), or --no-http"
    )]
    NoToken(SocketAddr),
    /// The TLS configuration could not be made.
    #[error("the certificate cannot serve the dashboard over TLS")]
    Tls(#[source] rustls::Error),
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard")
            .field("listener", &self.listener)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl HttpError {
    /// The underlying cause, for a warning.
    pub(crate) fn source_text(&self) -> String {
        std::error::Error::source(self).map_or_else(String::new, ToString::to_string)
    }
}

impl Dashboard {
    /// Binds `config.listen`. Off loopback, `token` is required and the dashboard is served
    /// over TLS with `certs` and `key`.
    pub(crate) fn bind(
        config: &HttpConfig,
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        token: Option<&str>,
        hub: Arc<Hub>,
    ) -> Result<Dashboard, HttpError> {
        let exposed = !super::is_loopback_only(&config.listen);
        let (auth, tls) = if exposed {
            let token = token.ok_or(HttpError::NoToken(config.listen))?;
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut tls = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(HttpError::Tls)?
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .map_err(HttpError::Tls)?;
            tls.alpn_protocols = vec![b"http/1.1".to_vec()];
            (
                Some(auth::Credentials::new(token)),
                Some(TlsAcceptor::from(Arc::new(tls))),
            )
        } else {
            (None, None)
        };
        let listen_error = |source| HttpError::Listen {
            address: config.listen,
            source,
        };
        let listener = std::net::TcpListener::bind(config.listen).map_err(listen_error)?;
        listener.set_nonblocking(true).map_err(listen_error)?;
        let listener = TcpListener::from_std(listener).map_err(listen_error)?;
        Ok(Dashboard {
            listener,
            tls,
            state: AppState {
                hub,
                auth,
                metrics: Arc::new(HttpMetrics::default()),
            },
        })
    }

    /// The address bound, and whether it is served over TLS.
    pub(crate) fn url(&self) -> std::io::Result<String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        Ok(format!("{scheme}://{}/", self.listener.local_addr()?))
    }
}

/// The routes.
fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(pages::overview))
        .route("/sessions/{id}", get(pages::session))
        .route("/history", get(pages::history))
        .route("/api/sessions", get(pages::api_sessions))
        .route("/api/sessions/{id}", get(pages::api_session))
        .route("/api/history", get(pages::api_history))
        .route("/metrics", get(pages::metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/login", get(pages::login_form).post(pages::log_in))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::time_requests,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        // The only body accepted is the login form's.
        .layer(DefaultBodyLimit::max(4096))
        .with_state(state)
}

/// Serves until the task is dropped (the coordinator aborts it when it stops).
pub(crate) async fn serve(dashboard: Dashboard) {
    let Dashboard {
        listener,
        tls,
        state,
    } = dashboard;
    let router = router(state);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("dashboard: cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let router = router.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_connection(tcp, router).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => serve_connection(stream, router).await,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, "dashboard: TLS handshake failed: {e}")
                        }
                        Err(_) => tracing::debug!(%peer, "dashboard: TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

async fn serve_connection<I>(io: I, router: Router)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT);
    let connection = http.serve_connection(TokioIo::new(io), TowerToHyperService::new(router));
    let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
}
