//! The coordinator's state machine: every decision, no I/O.
//!
//! The server feeds it events — a connection opened, a message arrived, a frame was bad, a
//! connection ended, time passed — each with the current `Instant`, and carries out the
//! [`Action`]s it returns. Because nothing here touches a socket or a clock, lease returns,
//! disconnects and races are tested deterministically (see `tests` below).

pub mod history;
mod joining;
pub mod persist;
pub mod scheduler;
mod session;
pub mod view;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{rngs::StdRng, RngCore as _, SeedableRng as _};
use schemas::{
    ClientMessage, ErrorCode, ErrorMessage, FrameError, Hello, Join, ServerMessage, Ticket,
    Welcome, PROTOCOL_VERSION,
};
use subtle::ConstantTimeEq;

use history::{Estimates, HistoryChanges};
use persist::{Journal, MemberIdx, Snapshot};
use scheduler::{Batching, Order};
use session::{Scheduling, Session, UnknownTask};

/// Identifies one client connection for the lifetime of the coordinator process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What the server must do as a result of an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send this message on this connection. Shared, because a session's final report goes to
    /// every member.
    Send(ConnId, Arc<ServerMessage>),
    /// Close this connection once what was sent before has been delivered.
    Close(ConnId),
}

impl Action {
    fn send(conn: ConnId, message: ServerMessage) -> Action {
        Action::Send(conn, Arc::new(message))
    }
}

/// The rules the coordinator enforces.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The shared secret clients must present; `None` lets anyone in.
    pub token: Option<String>,
    /// The most tasks handed out in one assignment.
    pub max_batch: u32,
    /// How long a completed or abandoned session is remembered.
    pub session_ttl: Duration,
    /// The most sessions held at once.
    pub max_sessions: usize,
    /// Queue order.
    pub order: Order,
    /// Batch sizing.
    pub batching: Batching,
    /// Whether idle clients get backup copies of long tasks still running elsewhere.
    pub backups: bool,
    /// After a restart, how long a member keeps its leases waiting for it to come back before
    /// they go to others.
    pub resume_grace: Duration,
    /// Seeds the generator of tickets, so that tests are deterministic; `None` seeds it from the
    /// operating system (what a real coordinator does: tickets must not be guessable).
    pub rng_seed: Option<u64>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            token: None,
            max_batch: 50,
            session_ttl: Duration::from_secs(600),
            max_sessions: 1000,
            order: Order::LongestFirst,
            batching: Batching::Guided,
            backups: true,
            resume_grace: Duration::from_secs(30),
            rng_seed: None,
        }
    }
}

/// The longest client id accepted; it is echoed into every report.
const MAX_CLIENT_ID_LEN: usize = 256;

/// The refusal for a missing or wrong token.
const UNAUTHORIZED: &str = "this coordinator requires a token and was not given the right one; \
    set TASK_SHARDING_TOKEN to the contents of the coordinator's --token-file";
/// The longest session key accepted.
const MAX_SESSION_KEY_LEN: usize = 1024;
/// The most members one session takes: far more than any CI matrix, few enough that a client
/// joining in a loop cannot grow a session without bound.
const MAX_MEMBERS: usize = 10_000;

/// How long a client asked for a new session's schema has to send it before another is asked.
const SCHEMA_TIMEOUT: Duration = Duration::from_secs(10);

/// After a restart, the longest queued work is held back for clients to come back and claim the
/// tasks they were running.
const MAX_SETTLE: Duration = Duration::from_secs(5);

/// A connected client.
#[derive(Debug, Default)]
struct Client {
    /// The client's id, once its hello was accepted.
    client_id: Option<String>,
    /// The key of the session it joined, and which member of it it is.
    session: Option<(String, MemberIdx)>,
}

/// Every session and every connection, and the rules.
#[derive(Debug)]
pub struct Coordinator {
    /// The rules.
    policy: Policy,
    /// Open connections.
    clients: HashMap<ConnId, Client>,
    /// Sessions by key.
    sessions: HashMap<String, Session>,
    /// Keys whose session is about to be created: one client was asked for the schema, and
    /// the others joining meanwhile wait here rather than all being asked to upload it too.
    pending: HashMap<String, PendingSession>,
    /// How long tasks took before: every estimate, in memory (see [`history`]).
    history: Estimates,
    /// Keys of sessions forgotten since the last journal, whose stored rows must go. Kept only
    /// once something takes journals (see `journaled`).
    forgotten: Vec<String>,
    /// Whether a store takes this coordinator's journals: set by the first [`Coordinator::journal`]
    /// or by [`Coordinator::restore`]. A coordinator kept in memory only never collects them.
    journaled: bool,
    /// Set while shutting down: connections closing then are not clients leaving, and their
    /// leases stay stored for when the coordinator is back.
    frozen: bool,
    /// Where tickets come from.
    rng: StdRng,
    /// What the sessions already forgotten did, for the metrics.
    retired: view::Counts,
}

/// A session key waiting for its schema.
#[derive(Debug)]
struct PendingSession {
    /// The client asked to send the schema.
    asked: ConnId,
    /// When it was asked: one that does not send it in time is not waited for.
    asked_at: Instant,
    /// Digest-only joins that arrived meanwhile, to be answered once the session exists.
    parked: Vec<(ConnId, Join)>,
}

impl Coordinator {
    /// A coordinator with no sessions and no timing history.
    pub fn new(policy: Policy) -> Self {
        Self::with_history(policy, Estimates::default())
    }

    /// A coordinator with no sessions, starting from the timing history `history` (what the
    /// store holds); what it learns is in [`Coordinator::take_history_changes`].
    pub fn with_history(policy: Policy, history: Estimates) -> Self {
        let rng = match policy.rng_seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_entropy(),
        };
        Coordinator {
            policy,
            clients: HashMap::new(),
            sessions: HashMap::new(),
            pending: HashMap::new(),
            history,
            forgotten: Vec::new(),
            journaled: false,
            frozen: false,
            rng,
            retired: view::Counts::default(),
        }
    }

    /// A coordinator resuming the sessions of `snapshot` (what a previous run stored), with every
    /// member away until it comes back.
    pub fn restore(policy: Policy, history: Estimates, snapshot: Snapshot, now: Instant) -> Self {
        let mut coordinator = Self::with_history(policy, history);
        coordinator.journaled = true;
        for stored in snapshot.sessions {
            if stored.row.schema.validate().is_err()
                || stored.row.schema.digest() != stored.row.digest
            {
                tracing::warn!(session = %stored.key, "dropped a stored session that does not match its digest");
                coordinator.forgotten.push(stored.key);
                continue;
            }
            let known = coordinator
                .history
                .lookup(&stored.row.history_scope, &stored.row.schema.tasks);
            let key = stored.key.clone();
            // Hold queued work back briefly while clients come back (see `Session::restore`).
            let settle = coordinator.policy.resume_grace.min(MAX_SETTLE);
            let session = Session::restore(
                key.clone(),
                stored,
                &known,
                coordinator.scheduling(),
                settle,
                now,
            );
            coordinator.sessions.insert(key, session);
        }
        if !coordinator.sessions.is_empty() {
            tracing::info!(
                sessions = coordinator.sessions.len(),
                "resumed stored sessions"
            );
        }
        coordinator
    }

    /// What changed since the last call, for the store.
    pub fn journal(&mut self) -> Journal {
        let mut journal = Journal::default();
        self.journaled = true;
        journal.cleared.extend(self.forgotten.drain(..));
        for session in self.sessions.values_mut() {
            session.journal(&mut journal);
        }
        journal
    }

    /// From now on connections closing are the coordinator shutting down, not clients leaving:
    /// leases stay where they are (and stored) for the clients to resume after a restart.
    pub fn freeze(&mut self) {
        self.frozen = true;
    }

    fn scheduling(&self) -> Scheduling {
        Scheduling {
            order: self.policy.order,
            batching: self.policy.batching,
            backups: self.policy.backups,
            max_batch: self.policy.max_batch,
        }
    }

    /// The timing history learnt since the last call, for the store.
    pub fn take_history_changes(&mut self) -> HistoryChanges {
        self.history.take_changes()
    }

    /// The timing history, e.g. to seed it in tests.
    pub fn history_mut(&mut self) -> &mut Estimates {
        &mut self.history
    }

    /// A connection opened.
    pub fn connect(&mut self, conn: ConnId) {
        self.clients.insert(conn, Client::default());
    }

    /// A message arrived on `conn`.
    pub fn handle(&mut self, conn: ConnId, message: ClientMessage, now: Instant) -> Vec<Action> {
        let Some(client) = self.clients.get(&conn) else {
            return Vec::new();
        };
        match (client.client_id.is_some(), message) {
            (false, ClientMessage::Hello(hello)) => self.hello(conn, hello),
            (false, _) => refuse(
                conn,
                ErrorCode::ProtocolViolation,
                "the first message must be a hello".into(),
            ),
            (true, ClientMessage::Hello(_)) => refuse(
                conn,
                ErrorCode::ProtocolViolation,
                "hello was sent twice".into(),
            ),
            (true, ClientMessage::Join(join)) => self.join(conn, join, now),
            (true, ClientMessage::Request(request)) => match self.session_of(conn) {
                Some((session, idx)) => {
                    session.request(idx, request.max_tasks, request.overhead_ms, now)
                }
                None => refuse(
                    conn,
                    ErrorCode::ProtocolViolation,
                    "asked for work before joining a session".into(),
                ),
            },
            (true, ClientMessage::Results(reports)) => match self
                .clients
                .get(&conn)
                .and_then(|c| c.session.as_ref())
                .map(|(key, idx)| (self.run_sessions(key, now), key, *idx))
                .and_then(|(run_sessions, key, idx)| {
                    Some((self.sessions.get_mut(key)?, idx, run_sessions))
                }) {
                Some((session, idx, run_sessions)) => {
                    match session.report(idx, reports, &mut self.history, run_sessions, now) {
                        Ok(actions) => actions,
                        Err(UnknownTask(task)) => refuse(
                            conn,
                            ErrorCode::ProtocolViolation,
                            format!("reported task {task}, which the session does not have"),
                        ),
                    }
                }
                None => refuse(
                    conn,
                    ErrorCode::ProtocolViolation,
                    "reported results before joining a session".into(),
                ),
            },
        }
    }

    /// A frame on `conn` could not be read: it was too large or did not decode.
    pub fn bad_frame(&mut self, conn: ConnId, error: &FrameError) -> Vec<Action> {
        let greeted = self
            .clients
            .get(&conn)
            .is_some_and(|c| c.client_id.is_some());
        if let FrameError::Decode {
            hello_version: Some(version),
            ..
        } = error
        {
            if !greeted && *version != PROTOCOL_VERSION {
                return refuse(conn, ErrorCode::VersionMismatch, version_mismatch(*version));
            }
        }
        refuse(conn, ErrorCode::BadFrame, format!("bad frame: {error}"))
    }

    /// `conn` ended, whether it closed cleanly, timed out or was refused.
    pub fn disconnect(&mut self, conn: ConnId, now: Instant) -> Vec<Action> {
        let Some(client) = self.clients.remove(&conn) else {
            return Vec::new();
        };
        if self.frozen {
            return Vec::new();
        }
        match client
            .session
            .and_then(|(key, idx)| Some((self.sessions.get_mut(&key)?, idx)))
        {
            Some((session, idx)) => session.leave(idx, now),
            None => self.forget_pending(conn, now),
        }
    }

    /// `conn` left before joining: if it was parked, forget it; if it was asked for a schema,
    /// ask the next parked client instead.
    fn forget_pending(&mut self, conn: ConnId, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        self.pending.retain(|_, pending| {
            pending.parked.retain(|(c, _)| *c != conn);
            if pending.asked != conn {
                return true;
            }
            if pending.parked.is_empty() {
                return false;
            }
            let (next, _) = pending.parked.remove(0);
            pending.asked = next;
            pending.asked_at = now;
            actions.push(Action::send(next, ServerMessage::NeedSchema));
            true
        });
        actions
    }

    /// A client asked for a new session's schema that has not sent it in time is not waited
    /// for: the next client waiting for that session is asked too. Whichever schema arrives
    /// first creates the session; the slow client's join, if it ever comes, then joins it.
    fn ask_again(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        for pending in self.pending.values_mut() {
            if now.saturating_duration_since(pending.asked_at) < SCHEMA_TIMEOUT
                || pending.parked.is_empty()
            {
                continue;
            }
            let (next, _) = pending.parked.remove(0);
            tracing::warn!(%next, slow = %pending.asked,
                "a client asked for a schema did not send it in time; asking another");
            pending.asked = next;
            pending.asked_at = now;
            actions.push(Action::send(next, ServerMessage::NeedSchema));
        }
        actions
    }

    /// Time passed: hands the leases of members that did not come back after a restart to
    /// others, and forgets sessions that completed, or lost their last client, at least the
    /// session ttl ago. Returns what to send, and the keys it forgot.
    pub fn tick(&mut self, now: Instant) -> (Vec<Action>, Vec<String>) {
        if self.frozen {
            return (Vec::new(), Vec::new());
        }
        let grace = self.policy.resume_grace;
        let mut actions = self.ask_again(now);
        for session in self.sessions.values_mut() {
            actions.extend(session.release_away(now, grace));
        }
        let ttl = self.policy.session_ttl;
        let expired: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, session)| session.is_expired(now, ttl))
            .map(|(key, _)| key.clone())
            .collect();
        for key in &expired {
            if let Some(session) = self.sessions.remove(key) {
                self.retired.add(session.counts());
            }
        }
        if self.journaled {
            self.forgotten.extend(expired.iter().cloned());
        }
        (actions, expired)
    }

    /// The held sessions, newest first, at most `limit` of them: the dashboard's list.
    pub fn overview(&self, now: Instant, limit: usize) -> Vec<view::SessionSummary> {
        let mut newest: Vec<&Session> = self.sessions.values().collect();
        newest.sort_by_key(|s| s.created_at());
        newest
            .iter()
            .rev()
            .take(limit)
            .map(|s| s.summary(now))
            .collect()
    }

    /// The session whose id (see [`view::id_of`]) is `id`, in detail.
    pub fn detail(&self, id: &str, now: Instant) -> Option<view::SessionDetail> {
        self.sessions
            .iter()
            .find(|(key, _)| view::id_of(key) == id)
            .map(|(_, session)| session.detail(now))
    }

    /// The timing history of the `limit` most recently used scopes.
    pub fn history_view(&self, limit: usize) -> Vec<view::ScopeHistory> {
        self.history.view(limit)
    }

    /// What the coordinator has done since it started.
    pub fn counts(&self) -> view::Counts {
        let mut counts = self.retired.clone();
        for session in self.sessions.values() {
            counts.add(session.counts());
        }
        counts
    }

    /// How many sessions are held.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// How many connections are open.
    pub fn connection_count(&self) -> usize {
        self.clients.len()
    }

    fn hello(&mut self, conn: ConnId, hello: Hello) -> Vec<Action> {
        if hello.protocol_version != PROTOCOL_VERSION {
            return refuse(
                conn,
                ErrorCode::VersionMismatch,
                version_mismatch(hello.protocol_version),
            );
        }
        if let Some(expected) = &self.policy.token {
            // Digests of equal length, compared in constant time: neither the token's bytes nor
            // its length show in how long a refusal takes.
            let presented = token_digest(hello.token.as_deref().unwrap_or_default());
            if !bool::from(presented.ct_eq(&token_digest(expected))) {
                // One wording for a missing and a wrong token: a prober learns nothing from it.
                tracing::warn!(%conn, "refused a client: no token or a wrong token");
                return refuse(conn, ErrorCode::Unauthorized, UNAUTHORIZED.into());
            }
        }
        // Checked before anything of it is logged: it comes from the peer.
        if let Err(why) = check_client_id(&hello.client_id) {
            return refuse(conn, ErrorCode::ProtocolViolation, why);
        }
        // Logged in their escaped (Debug) form, so no byte of theirs can forge a log line.
        let info = &hello.info;
        tracing::info!(%conn, client = ?hello.client_id, host = ?bounded(&info.host),
            ci_job = ?info.ci_job.as_deref().map(bounded),
            version = ?bounded(&info.version), "hello");
        if let Some(client) = self.clients.get_mut(&conn) {
            client.client_id = Some(hello.client_id);
        }
        vec![Action::send(
            conn,
            ServerMessage::Welcome(Welcome {
                protocol_version: PROTOCOL_VERSION,
                coordinator_version: env!("CARGO_PKG_VERSION").into(),
            }),
        )]
    }

    /// How many held sessions of `key`'s run overlap it in time, itself included (see
    /// [`schemas::Joined::run_sessions`]); 0 when it names no run. Counted from the sessions
    /// themselves, so it takes no memory of its own: a peer can only grow it by creating
    /// sessions, which `max_sessions` bounds.
    fn run_sessions(&self, key: &str, now: Instant) -> u32 {
        let Some(session) = self.sessions.get(key) else {
            return 0;
        };
        let Some(run) = session.run() else {
            return 0;
        };
        let (start, end) = session.lifetime(now);
        let overlapping = self
            .sessions
            .values()
            .filter(|other| other.run() == Some(run))
            .filter(|other| {
                let (other_start, other_end) = other.lifetime(now);
                other_start <= end && start <= other_end
            })
            .count();
        u32::try_from(overlapping).unwrap_or(u32::MAX)
    }

    fn session_of(&mut self, conn: ConnId) -> Option<(&mut Session, MemberIdx)> {
        let (key, idx) = self.clients.get(&conn)?.session.as_ref()?;
        Some((self.sessions.get_mut(key)?, *idx))
    }
}

/// The SHA-256 of a token, which is what is compared.
fn token_digest(token: &str) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// A client id is shown in every member's summary and in the logs: bounded, and without control
/// characters (which could move a terminal's cursor or forge lines).
fn check_client_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_CLIENT_ID_LEN {
        return Err(format!(
            "the client id must have 1 to {MAX_CLIENT_ID_LEN} bytes"
        ));
    }
    if id.chars().any(schemas::schema::is_unprintable) {
        return Err(format!(
            "the client id {id:?} holds control characters; use printable text \
             (TASK_SHARDING_CLIENT_ID)"
        ));
    }
    Ok(())
}

/// At most the first 256 bytes of a peer's text, for a log line.
fn bounded(text: &str) -> &str {
    let mut end = text.len().min(256);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A fresh member's ticket.
fn new_ticket(rng: &mut StdRng) -> Ticket {
    let mut bytes = [0; 16];
    rng.fill_bytes(&mut bytes);
    Ticket(bytes)
}

fn version_mismatch(theirs: u16) -> String {
    format!(
        "the client speaks protocol version {theirs}, this coordinator speaks version \
         {PROTOCOL_VERSION}; use the same task-sharding release for the coordinator and clients"
    )
}

/// Sends an error and closes the connection.
fn refuse(conn: ConnId, code: ErrorCode, message: String) -> Vec<Action> {
    vec![
        Action::send(conn, ServerMessage::Error(ErrorMessage { code, message })),
        Action::Close(conn),
    ]
}

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
