//! The state machine behind a lock, and every connection's outbox: where events from
//! connections turn into messages for connections.
//!
//! Each connection task calls in with what it read; the state machine decides; the resulting
//! messages are queued on the outboxes of the connections they are for, which each connection's
//! task writes out. The lock is held only while the state machine decides, never across I/O.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use schemas::{ClientMessage, ErrorCode, ErrorMessage, FrameError, ServerMessage};
use tokio::sync::mpsc;

use crate::history_store::HistoryStore;
use crate::session_store::SessionStore;
use crate::state::{Action, ConnId, Coordinator};

/// What a connection's task must do next.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// Write this frame. A message for many connections (a session's final report) is encoded
    /// once and the same bytes are queued on each, without copies.
    Frame {
        /// The encoded frame.
        bytes: Bytes,
        /// The message's text, when it is an error: the close reason that follows it.
        error: Option<String>,
        /// What the message says about the connection's standing, which its task's limits
        /// follow.
        milestone: Option<Milestone>,
    },
    /// Deliver what was written, then close.
    Close,
}

/// A step a connection passed, as its task must know to relax its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Milestone {
    /// Its hello was accepted (the token checked): it may send full-size frames now.
    Welcomed,
    /// It is a member of a session.
    Joined,
}

/// The shared state.
#[derive(Debug)]
pub(crate) struct Hub {
    inner: Mutex<Inner>,
    /// Where sessions are stored, if anywhere: written outside the state's lock, one journal at
    /// a time and in the order they were taken (the lock).
    store: Option<Mutex<SessionStore>>,
    /// Where timing history is stored, if anywhere: written the same way.
    history_store: Option<Mutex<HistoryStore>>,
}

#[derive(Debug)]
struct Inner {
    /// Every decision is made here.
    state: Coordinator,
    /// Where to queue messages for each open connection.
    outboxes: HashMap<ConnId, mpsc::UnboundedSender<Outgoing>>,
    /// The next connection's id.
    next_id: u64,
    /// The largest frame sent.
    max_frame_len: usize,
    /// Where each open connection comes from.
    addresses: HashMap<ConnId, IpAddr>,
    /// The address whose connection created each session, and its schema's bytes, by key,
    /// while the session is held.
    created_by: HashMap<String, (IpAddr, usize)>,
    /// What the sessions created from one address, and from all, may hold.
    shares: SessionShares,
    /// Refusals sent, by their code, for the metrics.
    refusals: HashMap<ErrorCode, u64>,
    /// Connections refused before they were served (the admission limits).
    refused_connections: u64,
}

/// The coordinator's counts at one moment, for `/metrics`.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    /// What the state machine counted.
    pub(crate) counts: crate::state::view::Counts,
    /// Sessions held.
    pub(crate) sessions: usize,
    /// Connections open.
    pub(crate) connections: usize,
    /// Refusals by reason.
    pub(crate) refusals: Vec<(String, u64)>,
}

/// What sessions may hold: so many per address of the client that created them, and schema
/// text in all and per address (a schema is held in memory and on disk for the session's life).
#[derive(Debug, Clone, Copy)]
pub struct SessionShares {
    /// The most sessions created from one address and held.
    pub sessions_per_address: usize,
    /// The most bytes of schema text (task texts and names) held in all.
    pub schema_bytes: usize,
    /// The same, for the sessions created from one address.
    pub schema_bytes_per_address: usize,
}

impl Default for SessionShares {
    fn default() -> Self {
        SessionShares {
            sessions_per_address: 100,
            schema_bytes: 1 << 30,
            schema_bytes_per_address: 256 << 20,
        }
    }
}

/// The bytes of schema text a schema makes the coordinator hold.
fn schema_bytes(schema: &schemas::Schema) -> usize {
    schema.name.len()
        + schema
            .tasks
            .iter()
            .map(|t| t.task.len() + t.group.as_ref().map_or(0, String::len))
            .sum::<usize>()
}

impl Hub {
    pub(crate) fn new(
        state: Coordinator,
        store: Option<SessionStore>,
        history_store: Option<HistoryStore>,
        max_frame_len: usize,
        shares: SessionShares,
    ) -> Self {
        Hub {
            inner: Mutex::new(Inner {
                state,
                outboxes: HashMap::new(),
                next_id: 1,
                max_frame_len,
                addresses: HashMap::new(),
                created_by: HashMap::new(),
                shares,
                refusals: HashMap::new(),
                refused_connections: 0,
            }),
            store: store.map(Mutex::new),
            history_store: history_store.map(Mutex::new),
        }
    }

    /// A new connection from `address`: its id and the outbox its task must drain.
    pub(crate) fn register(&self, address: IpAddr) -> (ConnId, mpsc::UnboundedReceiver<Outgoing>) {
        let mut inner = self.lock();
        let conn = ConnId(inner.next_id);
        inner.next_id += 1;
        let (sender, receiver) = mpsc::unbounded_channel();
        inner.outboxes.insert(conn, sender);
        inner.addresses.insert(conn, address);
        inner.state.connect(conn);
        (conn, receiver)
    }

    pub(crate) fn handle(&self, conn: ConnId, message: ClientMessage) {
        let mut inner = self.lock();
        // A join bringing a schema creates a session: one address may hold only so many.
        let creating = match &message {
            ClientMessage::Join(join) => join
                .schema
                .as_ref()
                .map(|schema| (join.session_key.clone(), schema_bytes(schema))),
            _ => None,
        };
        if let Some((key, bytes)) = &creating {
            if let Some(refusal) = inner.over_session_share(conn, key, *bytes) {
                return inner.apply(refusal);
            }
        }
        let actions = inner.state.handle(conn, message, Instant::now());
        if let Some((key, bytes)) = creating {
            let created = actions.iter().any(|action| {
                matches!(action, Action::Send(to, message)
                    if *to == conn && matches!(&**message, ServerMessage::Joined(j) if j.created))
            });
            if let (true, Some(&address)) = (created, inner.addresses.get(&conn)) {
                inner.created_by.insert(key, (address, bytes));
            }
        }
        if self.store.is_some() && actions.iter().any(completes) {
            // A session's final report is stored before any job sees it: a coordinator killed
            // just after could otherwise make another one from the results re-sent to it (in
            // another order: a session that stops at its first failure would keep other
            // results), and later jobs would be told another verdict than the first ones.
            drop(inner);
            self.persist();
            inner = self.lock();
        }
        inner.apply(actions);
    }

    pub(crate) fn bad_frame(&self, conn: ConnId, error: &FrameError) {
        let mut inner = self.lock();
        let actions = match error {
            // Not the client's fault: the coordinator is buffering all it may right now.
            FrameError::OverBudget { .. } => busy(conn, format!("{error}")),
            _ => inner.state.bad_frame(conn, error),
        };
        inner.apply(actions);
    }

    pub(crate) fn disconnect(&self, conn: ConnId) {
        let mut inner = self.lock();
        inner.outboxes.remove(&conn);
        inner.addresses.remove(&conn);
        let actions = inner.state.disconnect(conn, Instant::now());
        inner.apply(actions);
    }

    /// Hands on the leases of clients that did not come back, forgets expired sessions and
    /// writes the timing history recorded since the last time.
    pub(crate) fn housekeeping(&self) {
        let mut inner = self.lock();
        let (actions, expired) = inner.state.tick(Instant::now());
        inner.apply(actions);
        let forgot = !expired.is_empty();
        for key in expired {
            tracing::info!(session = ?key, "forgot an expired session");
            inner.created_by.remove(&key);
        }
        if forgot {
            release_freed_memory();
        }
        if self.history_store.is_none() {
            // Nothing writes them: the estimates stay in memory only.
            inner.state.take_history_changes();
        }
    }

    /// Writes what changed in the sessions since the last time to the store. The state is
    /// locked only to collect the changes, not while they are written.
    pub(crate) fn persist(&self) {
        if let Some(store) = &self.history_store {
            let store = store
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let changes = self.lock().state.take_history_changes();
            if let Err(e) = store.write(&changes) {
                // Lost from the store, not from memory: the next run starts from older estimates.
                tracing::warn!(estimates = changes.len(), "{e:#}");
            }
        }
        let Some(store) = &self.store else { return };
        let store = store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let journal = self.lock().state.journal();
        if let Err(e) = store.apply(&journal) {
            // The changes are lost from the store (not from memory); a restart now would resume
            // from the previous write. Clients re-send their results when they resume.
            tracing::error!(
                rows = journal.len(),
                "cannot write the session store: {e:#}"
            );
        }
    }

    /// Stops treating closing connections as clients leaving, and stores the sessions as they
    /// are: what a restart resumes from.
    pub(crate) fn freeze(&self) {
        self.lock().state.freeze();
        self.persist();
    }

    /// Open connections and held sessions, for logs and tests.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.state.connection_count(), inner.state.session_count())
    }

    /// Calls `read` with the state machine and the time, under the lock: `read` must only copy
    /// out what it needs (bounded work), never render or do I/O.
    pub(crate) fn read<T>(&self, read: impl FnOnce(&Coordinator, Instant) -> T) -> T {
        let inner = self.lock();
        read(&inner.state, Instant::now())
    }

    /// The counts, for `/metrics`.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let inner = self.lock();
        let mut refusals: Vec<(String, u64)> = inner
            .refusals
            .iter()
            .map(|(code, n)| (format!("{code:?}"), *n))
            .collect();
        if inner.refused_connections > 0 {
            refusals.push(("ConnectionLimit".into(), inner.refused_connections));
        }
        refusals.sort();
        Snapshot {
            counts: inner.state.counts(),
            sessions: inner.state.session_count(),
            connections: inner.state.connection_count(),
            refusals,
        }
    }

    /// A connection was refused at the door (see [`crate::admission`]).
    pub(crate) fn note_refused_connection(&self) {
        self.lock().refused_connections += 1;
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the state machine mid-decision; carrying on with it
        // could hand out a task twice, so every later caller panics too.
        self.inner
            .lock()
            .expect("the coordinator's state is poisoned")
    }
}

impl Inner {
    /// The refusal for `conn` creating session `key` with `bytes` of schema text when that
    /// would take its address, or everyone, past their share; `None` when it may.
    fn over_session_share(&self, conn: ConnId, key: &str, bytes: usize) -> Option<Vec<Action>> {
        let address = self.addresses.get(&conn)?;
        let others = self.created_by.iter().filter(|(k, _)| k.as_str() != key);
        let (mut held, mut ours, mut all) = (0, bytes, bytes);
        for (_, (creator, schema)) in others {
            all += schema;
            if creator == address {
                held += 1;
                ours += schema;
            }
        }
        let shares = self.shares;
        let message = if held >= shares.sessions_per_address {
            format!(
                "connections from {address} created {held} sessions the coordinator still \
                 holds, its maximum per address (--max-sessions-per-address); retry later"
            )
        } else if ours > shares.schema_bytes_per_address {
            format!(
                "the sessions created from {address} would hold {ours} bytes of schemas, more \
                 than its share of {} (--max-schema-bytes-per-address); retry later",
                shares.schema_bytes_per_address
            )
        } else if all > shares.schema_bytes {
            format!(
                "the sessions held would hold {all} bytes of schemas, more than the \
                 coordinator's maximum of {} (--max-schema-bytes); retry later",
                shares.schema_bytes
            )
        } else {
            return None;
        };
        tracing::warn!(%conn, %address, "refused a session: {message}");
        Some(busy(conn, message))
    }

    fn apply(&mut self, actions: Vec<Action>) {
        // Frames already encoded in this batch of actions, by message: a broadcast is encoded once.
        let mut encoded: Vec<(Arc<ServerMessage>, Bytes)> = Vec::new();
        for action in actions {
            let (conn, outgoing) = match action {
                Action::Send(conn, message) => {
                    let bytes = match encoded.iter().find(|(m, _)| Arc::ptr_eq(m, &message)) {
                        Some((_, bytes)) => bytes.clone(),
                        None => match schemas::encode_frame(&*message, self.max_frame_len) {
                            Ok(bytes) => {
                                encoded.push((message.clone(), bytes.clone()));
                                bytes
                            }
                            Err(e) => {
                                tracing::error!(%conn, "cannot encode a message: {e}");
                                continue;
                            }
                        },
                    };
                    let error = match &*message {
                        ServerMessage::Error(e) => {
                            *self.refusals.entry(e.code).or_default() += 1;
                            Some(e.message.clone())
                        }
                        _ => None,
                    };
                    let milestone = match &*message {
                        ServerMessage::Welcome(_) => Some(Milestone::Welcomed),
                        ServerMessage::Joined(_) => Some(Milestone::Joined),
                        _ => None,
                    };
                    (
                        conn,
                        Outgoing::Frame {
                            bytes,
                            error,
                            milestone,
                        },
                    )
                }
                Action::Close(conn) => (conn, Outgoing::Close),
            };
            if let Some(outbox) = self.outboxes.get(&conn) {
                // A closed outbox means the connection's task is ending; its disconnect follows.
                let _ = outbox.send(outgoing);
            }
        }
    }
}

/// Refuses `conn` for load: `Busy`, then close.
/// Whether `action` tells a client its session is complete.
fn completes(action: &Action) -> bool {
    matches!(action, Action::Send(_, message) if matches!(&**message, ServerMessage::Complete { .. }))
}

fn busy(conn: ConnId, message: String) -> Vec<Action> {
    vec![
        Action::Send(
            conn,
            Arc::new(ServerMessage::Error(ErrorMessage {
                code: ErrorCode::Busy,
                message,
            })),
        ),
        Action::Close(conn),
    ]
}

/// Hands memory freed by forgotten sessions back to the system. glibc's allocator keeps freed
/// pages for reuse; a coordinator that served a burst of sessions would otherwise stay at its
/// high-water mark for good.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::persist::SlotState;
    use crate::state::Policy;
    use schemas::{
        ClientInfo, Hello, Join, Outcome, Schema, TaskReport, TaskResult, WorkRequest,
        PROTOCOL_VERSION,
    };

    /// Regression (issue 11, found by the property test): a session that stops at its first
    /// failure completed and told its jobs so, the coordinator was killed before its periodic
    /// write, and from the results re-sent in another order it made a different final report
    /// for the jobs that came later. A final report is now stored before it is sent.
    #[test]
    fn regression_a_final_report_is_stored_before_any_job_sees_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.redb");
        let hub = Hub::new(
            Coordinator::new(Policy::default()),
            Some(SessionStore::open(&path).unwrap()),
            None,
            1 << 20,
            SessionShares::default(),
        );
        let (conn, mut outbox) = hub.register("127.0.0.1".parse().unwrap());
        let send = |message| hub.handle(conn, message);
        send(ClientMessage::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            client_id: "job-1".into(),
            token: None,
            info: ClientInfo::default(),
        }));
        let schema = Schema::new("s", ["a", "b", "c"]).unwrap();
        send(ClientMessage::Join(Join {
            fail_fast: true,
            ..Join::new("k".into(), &schema, "scope".into(), true)
        }));
        send(ClientMessage::Request(WorkRequest {
            max_tasks: 1,
            overhead_ms: 0,
        }));
        send(ClientMessage::Results(vec![TaskReport {
            task: 0,
            result: TaskResult {
                outcome: Outcome::Failed,
                exit_code: Some(1),
                duration_ms: 1,
                executed: true,
                log_tail: None,
                build_ms: 0,
            },
        }]));
        // The final report went out...
        let mut frames = 0;
        while let Ok(Outgoing::Frame { .. }) = outbox.try_recv() {
            frames += 1;
        }
        assert_eq!(
            frames, 4,
            "welcome, joined, assignment and the final report"
        );
        // ...and is on disk, with no periodic write having run: every task has its result.
        drop(hub);
        let stored = SessionStore::open(&path).unwrap().load().unwrap();
        let slots = &stored.sessions[0].slots;
        assert_eq!(slots.len(), 3);
        assert!(slots
            .values()
            .all(|row| matches!(row.state, SlotState::Done(_))));
    }
}
