//! Serves one client connection: moves frames between its QUIC stream and the [`Hub`].

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use schemas::{ClientMessage, FrameError, MessageCodec, ServerMessage};
use tokio::time::timeout;
use tokio_util::codec::FramedRead;
use tracing::Instrument as _;

use crate::admission::Pass;
use crate::hub::{Hub, Milestone, Outgoing};

/// What bounds one connection, so a slow or silent peer cannot hold resources.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Time allowed for the TLS handshake.
    pub(crate) handshake: Duration,
    /// Time allowed between the handshake and the client's hello.
    pub(crate) hello: Duration,
    /// Time allowed between the hello and becoming a member of a session: a client that said
    /// hello and then only sends keep-alives would otherwise hold its place for good.
    pub(crate) join: Duration,
    /// The largest frame accepted once the client is welcomed.
    pub(crate) max_frame_len: usize,
    /// The largest frame accepted before that.
    pub(crate) pre_hello_frame_len: usize,
}

/// The application close codes: 0 after a normal end, 1 after an error message.
const CLOSE_DONE: u32 = 0;
const CLOSE_ERROR: u32 = 1;

/// The codec the coordinator reads client messages and writes server messages with.
type Codec = MessageCodec<ClientMessage, ServerMessage>;

/// Accepts one incoming connection and serves it until it ends.
pub(crate) async fn serve(incoming: quinn::Incoming, hub: Arc<Hub>, limits: Limits, pass: Pass) {
    let remote = incoming.remote_address();
    let span = tracing::info_span!("connection", %remote);
    async move {
        let connecting = match incoming.accept() {
            Ok(connecting) => connecting,
            Err(e) => return tracing::debug!("refused before the handshake: {e}"),
        };
        let connection = match timeout(limits.handshake, connecting).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(e)) => return tracing::info!("handshake failed: {e}"),
            Err(_) => return tracing::info!("handshake timed out"),
        };
        let (send, recv) = match timeout(limits.hello, connection.accept_bi()).await {
            Ok(Ok(streams)) => streams,
            Ok(Err(e)) => return tracing::debug!("closed before opening a stream: {e}"),
            Err(_) => {
                connection.close(CLOSE_ERROR.into(), b"no stream opened in time");
                return tracing::info!("no stream opened in time");
            }
        };
        let (conn, outbox) = hub.register(remote.ip());
        tracing::debug!(%conn, "connected");
        let mut pass = pass;
        let ending = pump(
            &connection,
            send,
            recv,
            &hub,
            conn,
            outbox,
            limits,
            &mut pass,
        )
        .await;
        hub.disconnect(conn);
        tracing::info!(%conn, "{ending}");
    }
    .instrument(span)
    .await
}

/// Moves frames until the connection ends; returns how it ended, for the log.
#[allow(clippy::too_many_arguments)]
async fn pump(
    connection: &quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    hub: &Hub,
    conn: crate::state::ConnId,
    mut outbox: tokio::sync::mpsc::UnboundedReceiver<Outgoing>,
    limits: Limits,
    pass: &mut Pass,
) -> String {
    // Small frames only until the token is checked: see `Limits::pre_hello_frame_len`.
    // Large frames take their length from what all connections, and those of this address, may
    // buffer together, until they are complete.
    let codec = Codec::new(limits.pre_hello_frame_len).with_budgets(pass.budgets());
    let mut reader = FramedRead::new(recv, codec);
    let mut send = send;
    // The hello must come promptly, and the join after it; once a member, QUIC's idle timeout
    // is the only clock.
    let hello_deadline = tokio::time::sleep(limits.hello);
    tokio::pin!(hello_deadline);
    let join_deadline = tokio::time::sleep(limits.hello + limits.join);
    tokio::pin!(join_deadline);
    let mut greeted = false;
    let mut joined = false;
    // Cleared after a bad frame: the reader cannot resync, and only the outbox matters then.
    let mut reading = true;
    let mut last_error: Option<String> = None;
    loop {
        tokio::select! {
            frame = reader.next(), if reading => match frame {
                Some(Ok(message)) => {
                    greeted = true;
                    hub.handle(conn, message);
                }
                Some(Err(FrameError::Io(e))) => {
                    return match connection.close_reason() {
                        Some(reason) => format!("connection ended: {reason}"),
                        None => format!("stream failed: {e}"),
                    }
                }
                Some(Err(error)) => {
                    tracing::warn!(%conn, "{error}");
                    hub.bad_frame(conn, &error);
                    reading = false;
                }
                None => return "the client finished its stream".into(),
            },
            outgoing = outbox.recv() => match outgoing {
                Some(Outgoing::Frame { bytes, error, milestone }) => {
                    if error.is_some() {
                        last_error = error;
                    }
                    match milestone {
                        // Before the welcome is written: the client sends nothing large before
                        // it has read it.
                        Some(Milestone::Welcomed) => {
                            reader.decoder_mut().set_max_frame_len(limits.max_frame_len);
                            pass.welcomed();
                            join_deadline
                                .as_mut()
                                .reset(tokio::time::Instant::now() + limits.join);
                        }
                        Some(Milestone::Joined) => joined = true,
                        None => {}
                    }
                    // `write_chunk` queues the shared bytes without copying them.
                    if let Err(e) = send.write_chunk(bytes).await {
                        return format!("write failed: {e}");
                    }
                }
                Some(Outgoing::Close) | None => {
                    close_gracefully(connection, send, last_error.as_deref()).await;
                    return match last_error {
                        Some(e) => format!("refused: {e}"),
                        None => "closed".into(),
                    };
                }
            },
            _ = &mut hello_deadline, if !greeted => {
                connection.close(CLOSE_ERROR.into(), b"no hello in time");
                return "no hello in time".into();
            }
            _ = &mut join_deadline, if !joined => {
                connection.close(CLOSE_ERROR.into(), b"did not join a session in time");
                return "did not join a session in time".into();
            }
            reason = connection.closed() => return format!("connection ended: {reason}"),
        }
    }
}

/// Finishes the stream, gives the peer a moment to read what was sent, then closes.
async fn close_gracefully(
    connection: &quinn::Connection,
    mut send: quinn::SendStream,
    error: Option<&str>,
) {
    let _ = send.finish();
    // `stopped` resolves once the peer has read everything (or gave up): only then is it safe
    // to close, since closing discards undelivered stream data.
    let _ = timeout(Duration::from_secs(2), send.stopped()).await;
    match error {
        Some(message) => {
            let mut reason = message.as_bytes();
            reason = &reason[..reason.len().min(512)];
            connection.close(CLOSE_ERROR.into(), reason);
        }
        None => connection.close(CLOSE_DONE.into(), b"done"),
    }
}
