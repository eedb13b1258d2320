//! A client's connection to the coordinator: QUIC + TLS, one stream, framed messages.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use schemas::{
    ClientInfo, ClientMessage, ErrorCode, FrameError, Hello, MessageCodec, ServerMessage, Welcome,
    PROTOCOL_VERSION,
};
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::trust::{ClientIdentity, Trust, TrustError};

/// How to reach and trust the coordinator, and who this client is.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// `host:port` of the coordinator.
    pub coordinator: String,
    /// How its certificate is verified.
    pub trust: Trust,
    /// The shared secret, when the coordinator requires one.
    pub token: Option<String>,
    /// The certificate to present, when the coordinator requires client certificates.
    pub client_identity: Option<ClientIdentity>,
    /// The name shown next to the tasks this client runs.
    pub client_id: String,
    /// Facts for the coordinator's logs.
    pub info: ClientInfo,
    /// How long to try before giving up on reaching the coordinator.
    pub connect_timeout: Duration,
    /// How long the coordinator may stay silent before the connection counts as lost. Keep-alives
    /// are sent at a third of it, so a long task never looks silent to the coordinator either.
    pub idle_timeout: Duration,
    /// How long to keep retrying, with backoff, while the coordinator refuses this client for
    /// load (a connection limit, [`ErrorCode::Busy`]); then the refusal is returned.
    pub busy_retry_for: Duration,
}

/// What went wrong talking to the coordinator.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The address did not resolve.
    #[error("cannot resolve the coordinator address {address:?}: {reason}")]
    Resolve {
        /// What was given.
        address: String,
        /// Why it failed.
        reason: String,
    },
    /// The trust setting was unusable.
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// No connection could be made in time.
    #[error("cannot reach the coordinator at {address}: {reason}")]
    Unreachable {
        /// Where it was tried.
        address: String,
        /// What happened.
        reason: String,
    },
    /// The coordinator refused a request; the message says why.
    #[error("the coordinator refused: {message}")]
    Refused {
        /// The kind of refusal.
        code: ErrorCode,
        /// The coordinator's explanation.
        message: String,
    },
    /// The connection broke after it was made.
    #[error("lost the connection to the coordinator: {0}")]
    Lost(#[source] LostReason),
    /// The connection broke and could not be made again within the time allowed.
    #[error(
        "lost the connection to the coordinator: could not reconnect within {}: {last}",
        humantime::format_duration(*.after)
    )]
    GaveUp {
        /// How long reconnecting was tried.
        after: Duration,
        /// Why the last attempt failed.
        #[source]
        last: Box<ClientError>,
    },
    /// The coordinator sent something this client does not expect.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The run was interrupted by a signal.
    #[error("interrupted")]
    Interrupted,
}

/// Why a connection broke.
#[derive(Debug, thiserror::Error)]
pub enum LostReason {
    /// QUIC says why.
    #[error(transparent)]
    Connection(#[from] quinn::ConnectionError),
    /// The coordinator ended its stream without closing the connection.
    #[error("the coordinator ended the stream")]
    StreamEnded,
}

/// The codec a client reads server messages and writes client messages with.
type Codec = MessageCodec<ServerMessage, ClientMessage>;

/// An open, greeted connection.
#[derive(Debug)]
pub struct Connection {
    endpoint: quinn::Endpoint,
    connection: quinn::Connection,
    reader: FramedRead<quinn::RecvStream, Codec>,
    writer: FramedWrite<quinn::SendStream, Codec>,
}

/// Whether a refusal is for load, and so worth retrying after a while.
pub fn is_busy(error: &ClientError) -> bool {
    matches!(
        error,
        ClientError::Refused {
            code: ErrorCode::Busy,
            ..
        }
    )
}

impl Connection {
    /// Connects, verifies the coordinator, and exchanges hello/welcome. While the coordinator
    /// refuses for load, tries again with backoff (0.1 s doubling to 2 s, with jitter) for
    /// [`ConnectOptions::busy_retry_for`].
    pub async fn connect(options: &ConnectOptions) -> Result<(Connection, Welcome), ClientError> {
        let deadline = tokio::time::Instant::now() + options.busy_retry_for;
        let mut delay = Duration::from_millis(100);
        loop {
            match Self::connect_once(options).await {
                Err(e) if is_busy(&e) => {
                    // Jitter, so that jobs refused together do not all come back together.
                    let jittered = delay.mul_f64(0.5 + f64::from(std::process::id() % 100) / 100.0);
                    if tokio::time::Instant::now() + jittered >= deadline {
                        return Err(e);
                    }
                    tracing::info!("{e}; retrying in {jittered:?}");
                    tokio::time::sleep(jittered).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                other => return other,
            }
        }
    }

    /// One attempt of [`Connection::connect`].
    async fn connect_once(options: &ConnectOptions) -> Result<(Connection, Welcome), ClientError> {
        let (addr, server_name) = resolve(&options.coordinator).await?;
        let tls = options
            .trust
            .client_config_presenting(options.client_identity.as_ref())?;
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| ClientError::Protocol(format!("TLS configuration unusable: {e}")))?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_idle_timeout(Some(
                options
                    .idle_timeout
                    .try_into()
                    .map_err(|_| ClientError::Protocol("idle timeout too long".into()))?,
            ))
            // The coordinator's idle timeout may be shorter than ours; keep-alives every two
            // seconds at most keep a long task from looking like silence either way.
            .keep_alive_interval(Some((options.idle_timeout / 3).min(Duration::from_secs(2))));
        config.transport_config(Arc::new(transport));
        let bind: SocketAddr = if addr.is_ipv6() {
            "[::]:0".parse().expect("valid")
        } else {
            "0.0.0.0:0".parse().expect("valid")
        };
        let unreachable = |reason: String| ClientError::Unreachable {
            address: options.coordinator.clone(),
            reason,
        };
        let mut endpoint = quinn::Endpoint::client(bind)
            .map_err(|e| unreachable(format!("no UDP socket: {e}")))?;
        endpoint.set_default_client_config(config);
        let connecting = endpoint
            .connect(addr, &server_name)
            .map_err(|e| unreachable(e.to_string()))?;
        let connection = match tokio::time::timeout(options.connect_timeout, connecting).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(quinn::ConnectionError::ConnectionClosed(close)))
                if close.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED =>
            {
                return Err(ClientError::Refused {
                    code: ErrorCode::Busy,
                    message: "the coordinator refused the connection: it is at a limit on \
                              connections (in all, or from this address)"
                        .into(),
                })
            }
            Ok(Err(e)) => {
                return Err(certificate_refused(&e)
                    .unwrap_or_else(|| unreachable(explain_connect_error(&e))))
            }
            Err(_) => {
                return Err(unreachable(format!(
                    "no answer within {:?} (is the coordinator running, and is UDP to it allowed?)",
                    options.connect_timeout
                )))
            }
        };
        let (send, recv) = connection
            .open_bi()
            .await
            .map_err(|e| certificate_refused(&e).unwrap_or_else(|| ClientError::Lost(e.into())))?;
        let mut this = Connection {
            endpoint,
            connection,
            reader: FramedRead::new(recv, Codec::default()),
            writer: FramedWrite::new(send, Codec::default()),
        };
        this.send(&ClientMessage::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            client_id: options.client_id.clone(),
            token: options.token.clone(),
            info: options.info.clone(),
        }))
        .await?;
        let welcome = match tokio::time::timeout(options.connect_timeout, this.recv()).await {
            Ok(Ok(ServerMessage::Welcome(welcome))) => welcome,
            Ok(Ok(other)) => return Err(unexpected(&other)),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(unreachable("no answer to hello in time".into())),
        };
        Ok((this, welcome))
    }

    /// Sends one message.
    pub async fn send(&mut self, message: &ClientMessage) -> Result<(), ClientError> {
        self.writer.send(message).await.map_err(|e| self.lost(e))
    }

    /// Receives the next message; an error message from the coordinator becomes
    /// [`ClientError::Refused`]. Cancel-safe, so it can sit in a `select!`.
    pub async fn recv(&mut self) -> Result<ServerMessage, ClientError> {
        match self.reader.next().await {
            Some(Ok(ServerMessage::Error(e))) => Err(ClientError::Refused {
                code: e.code,
                message: e.message,
            }),
            Some(Ok(message)) => Ok(message),
            Some(Err(e)) => Err(self.lost(e)),
            None => Err(self.lost_without_frame()),
        }
    }

    /// Closes politely, so the coordinator learns at once that this client is gone (rather than
    /// after the idle timeout), then waits briefly for the close to be delivered.
    pub async fn close(self) {
        let Connection {
            endpoint,
            connection,
            mut writer,
            ..
        } = self;
        let _ = writer.get_mut().finish();
        connection.close(0u32.into(), b"done");
        let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    }

    fn lost(&self, error: FrameError) -> ClientError {
        match error {
            FrameError::Io(_) => self.lost_without_frame(),
            other => ClientError::Protocol(other.to_string()),
        }
    }

    /// Turns the connection's close reason into an error, preferring the coordinator's words.
    fn lost_without_frame(&self) -> ClientError {
        match self.connection.close_reason() {
            Some(quinn::ConnectionError::ApplicationClosed(close))
                if close.error_code != 0u32.into() =>
            {
                ClientError::Refused {
                    code: ErrorCode::ProtocolViolation,
                    message: String::from_utf8_lossy(&close.reason).into_owned(),
                }
            }
            Some(reason) => {
                certificate_refused(&reason).unwrap_or_else(|| ClientError::Lost(reason.into()))
            }
            None => ClientError::Lost(LostReason::StreamEnded),
        }
    }
}

/// The error for a message that has no place where it arrived.
pub(crate) fn unexpected(message: &ServerMessage) -> ClientError {
    ClientError::Protocol(format!(
        "unexpected message from the coordinator: {message:?}"
    ))
}

/// Resolves `host:port`, returning the address and the name to verify the certificate against.
async fn resolve(address: &str) -> Result<(SocketAddr, String), ClientError> {
    let resolve_error = |reason: String| ClientError::Resolve {
        address: address.into(),
        reason,
    };
    let (host, _port) = address
        .rsplit_once(':')
        .ok_or_else(|| resolve_error("expected host:port".into()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addr = tokio::net::lookup_host(address)
        .await
        .map_err(|e| resolve_error(e.to_string()))?
        .next()
        .ok_or_else(|| resolve_error("no address found".into()))?;
    Ok((addr, host.to_string()))
}

/// Words for a failed handshake that point at the likely cause.
fn explain_connect_error(error: &quinn::ConnectionError) -> String {
    let text = error.to_string();
    if text.contains("no_application_protocol") || text.contains("no application protocol") {
        format!(
            "{text}: the coordinator does not speak {} (different task-sharding versions?)",
            String::from_utf8_lossy(schemas::ALPN)
        )
    } else if text.contains("certificate") || text.contains("fingerprint") {
        format!("{text}: check TASK_SHARDING_CA / TASK_SHARDING_FINGERPRINT")
    } else {
        text
    }
}

/// The refusal for a handshake the coordinator ended over this client's certificate (it was
/// started with `--client-ca`), or `None` for any other ending. With TLS 1.3 the client finishes
/// its side of the handshake before the coordinator has judged its certificate, so the alert
/// can arrive as the close of a connection that looked established.
fn certificate_refused(error: &quinn::ConnectionError) -> Option<ClientError> {
    use rustls::AlertDescription as Alert;
    let quinn::ConnectionError::ConnectionClosed(close) = error else {
        return None;
    };
    let code = u64::from(close.error_code);
    // QUIC carries a TLS alert as the transport error 0x100 + alert.
    let alert = Alert::from(u8::try_from(code.checked_sub(0x100)?).ok()?);
    let message = match alert {
        Alert::CertificateRequired => "this client presented no certificate, and the coordinator \
            requires one: set TASK_SHARDING_CLIENT_CERT and TASK_SHARDING_CLIENT_KEY (or \
            --client-cert and --client-key) to a certificate issued by the CA the coordinator \
            was given with --client-ca"
            .to_string(),
        Alert::BadCertificate
        | Alert::UnsupportedCertificate
        | Alert::CertificateRevoked
        | Alert::CertificateExpired
        | Alert::CertificateUnknown
        | Alert::UnknownCA
        | Alert::AccessDenied => format!(
            "this client's certificate (TASK_SHARDING_CLIENT_CERT) was rejected (TLS alert \
             {alert:?}): it must be a current certificate issued by a CA in the coordinator's \
             --client-ca bundle"
        ),
        _ => return None,
    };
    Some(ClientError::Refused {
        code: ErrorCode::Unauthorized,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed_with_alert(alert: rustls::AlertDescription) -> quinn::ConnectionError {
        quinn::ConnectionError::ConnectionClosed(quinn::ConnectionClose {
            error_code: quinn::TransportErrorCode::crypto(u8::from(alert)),
            frame_type: None,
            reason: Default::default(),
        })
    }

    #[test]
    fn a_missing_client_certificate_is_explained() {
        let error = certificate_refused(&closed_with_alert(
            rustls::AlertDescription::CertificateRequired,
        ))
        .unwrap();
        let text = error.to_string();
        assert!(text.contains("presented no certificate"), "{text}");
        assert!(text.contains("TASK_SHARDING_CLIENT_CERT"), "{text}");
        assert!(matches!(
            error,
            ClientError::Refused {
                code: ErrorCode::Unauthorized,
                ..
            }
        ));
    }

    #[test]
    fn a_rejected_client_certificate_is_explained() {
        let error =
            certificate_refused(&closed_with_alert(rustls::AlertDescription::UnknownCA)).unwrap();
        let text = error.to_string();
        assert!(
            text.contains("this client's certificate (TASK_SHARDING_CLIENT_CERT) was rejected"),
            "{text}"
        );
        assert!(text.contains("UnknownCA"), "{text}");
    }

    #[test]
    fn other_endings_are_not_about_client_certificates() {
        assert!(certificate_refused(&closed_with_alert(
            rustls::AlertDescription::NoApplicationProtocol
        ))
        .is_none());
        assert!(certificate_refused(&quinn::ConnectionError::TimedOut).is_none());
        assert!(
            certificate_refused(&quinn::ConnectionError::ConnectionClosed(
                quinn::ConnectionClose {
                    error_code: quinn::TransportErrorCode::PROTOCOL_VIOLATION,
                    frame_type: None,
                    reason: Default::default(),
                }
            ))
            .is_none()
        );
    }
}
