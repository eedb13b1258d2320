//! A client joining a session: the join is checked, the session found (or its schema asked
//! for, or created), and the client admitted as a new member or as the member its ticket names.

use schemas::Schema;

use super::persist::SessionRow;
use super::*;

/// What to send instead of going on: a refusal, or a request for the schema.
type Stop = Vec<Action>;

impl Coordinator {
    pub(super) fn join(&mut self, conn: ConnId, mut join: Join, now: Instant) -> Vec<Action> {
        let client = self.clients.get(&conn).expect("checked by handle");
        if client.session.is_some() {
            return refuse(
                conn,
                ErrorCode::ProtocolViolation,
                "joined a second session on one connection".into(),
            );
        }
        let client_id = client.client_id.clone().expect("greeted");
        // Taken out, so that the (possibly large) schema moves into its session uncopied.
        let schema = join.schema.take();
        let admitted = check_join(conn, &join)
            .and_then(|()| self.session_for(conn, &client_id, &join, schema, now))
            .and_then(|created| self.admit(conn, client_id, &join, created, now));
        let (idx, mut actions) = match admitted {
            Ok(admitted) => admitted,
            Err(stop) => return stop,
        };
        if let Some(session) = self.sessions.get_mut(&join.session_key) {
            session.set_parallelism(idx, join.parallelism);
        }
        // The clients that waited for this session can join it now.
        let parked = self
            .pending
            .remove(&join.session_key)
            .map(|p| p.parked)
            .unwrap_or_default();
        self.clients.get_mut(&conn).expect("present").session =
            Some((join.session_key.clone(), idx));
        for (waiting, their_join) in parked {
            actions.extend(self.join(waiting, their_join, now));
        }
        actions
    }

    /// The session `join` names: `Ok(false)` when it exists, `Ok(true)` when this join created
    /// it. A new session needs its schema: one client is asked for it (its connection stays
    /// open) and others joining meanwhile wait for it.
    fn session_for(
        &mut self,
        conn: ConnId,
        client_id: &str,
        join: &Join,
        schema: Option<Schema>,
        now: Instant,
    ) -> Result<bool, Stop> {
        match (self.sessions.get(&join.session_key), schema) {
            (Some(session), _) if session.digest() != join.digest => {
                let theirs = session.schema();
                let message = format!(
                    "session {:?} already runs schema {:?} ({} tasks, digest {}), but this client \
                     brought schema {:?} ({} tasks, digest {}); every job of a session must run \
                     the same tasks — give different runs different TASK_SHARDING_RUN_IDs",
                    join.session_key,
                    theirs.name,
                    theirs.tasks.len(),
                    session.digest().short(),
                    join.schema_name,
                    join.task_count,
                    join.digest.short(),
                );
                tracing::warn!(session = ?join.session_key, client = ?client_id, "schema mismatch");
                Err(refuse(conn, ErrorCode::SchemaMismatch, message))
            }
            (Some(_), _) => Ok(false),
            // A new session needs its schema: ask one client for it (the connection stays
            // open); others joining meanwhile wait for it.
            (None, None) => Err(match self.pending.get_mut(&join.session_key) {
                Some(pending) => {
                    pending.parked.push((
                        conn,
                        Join {
                            schema: None,
                            ..join.clone()
                        },
                    ));
                    Vec::new()
                }
                None => {
                    let pending = PendingSession {
                        asked: conn,
                        asked_at: now,
                        parked: Vec::new(),
                    };
                    self.pending.insert(join.session_key.clone(), pending);
                    vec![Action::send(conn, ServerMessage::NeedSchema)]
                }
            }),
            (None, Some(_)) if self.sessions.len() >= self.policy.max_sessions => {
                tracing::warn!(
                    max_sessions = self.policy.max_sessions,
                    "refused a new session: the coordinator holds its maximum of sessions"
                );
                Err(refuse(
                    conn,
                    ErrorCode::Busy,
                    format!(
                        "the coordinator holds its maximum of {} sessions; retry later",
                        self.policy.max_sessions
                    ),
                ))
            }
            (None, Some(schema)) => {
                if let Err(e) = schema.validate() {
                    return Err(refuse(
                        conn,
                        ErrorCode::InvalidSchema,
                        format!("invalid schema: {e}"),
                    ));
                }
                let digest = schema.digest();
                if digest != join.digest {
                    return Err(refuse(
                        conn,
                        ErrorCode::InvalidSchema,
                        format!(
                            "the schema's digest is {}, not the {} the client sent",
                            digest.short(),
                            join.digest.short()
                        ),
                    ));
                }
                tracing::info!(session = ?join.session_key, schema = ?schema.name,
                    tasks = schema.tasks.len(), digest = %digest.short(), "new session");
                let known = self.history.lookup(&join.history_scope, &schema.tasks);
                let row = SessionRow {
                    schema,
                    digest,
                    history_scope: join.history_scope.clone(),
                    run: join.run.clone(),
                    fail_fast: join.fail_fast,
                };
                let session = Session::new(
                    join.session_key.clone(),
                    row,
                    &known,
                    self.scheduling(),
                    now,
                );
                self.sessions.insert(join.session_key.clone(), session);
                Ok(true)
            }
        }
    }

    /// Admits the client to the session: as the member its ticket names, or as a new one.
    fn admit(
        &mut self,
        conn: ConnId,
        client_id: String,
        join: &Join,
        created: bool,
        now: Instant,
    ) -> Result<(MemberIdx, Vec<Action>), Stop> {
        let run_sessions = self.run_sessions(&join.session_key, now);
        let session = self.sessions.get_mut(&join.session_key).expect("present");
        Ok(match join.resume {
            // A client coming back to a session that still exists must be the member it says.
            Some(presented) if !created => {
                match session.resume(conn, presented, &join.running, run_sessions, now) {
                    Some((idx, old, mut actions)) => {
                        tracing::info!(%conn, session = ?join.session_key, client = ?client_id,
                        "a client came back");
                        if let Some(old) = old {
                            // The client gave up on its old connection; so does the coordinator.
                            if let Some(client) = self.clients.get_mut(&old) {
                                client.session = None;
                            }
                            actions.push(Action::Close(old));
                        }
                        (idx, actions)
                    }
                    None => {
                        tracing::warn!(session = ?join.session_key, client = ?client_id,
                        "refused a ticket that is not of this session");
                        return Err(refuse(
                            conn,
                            ErrorCode::UnknownTicket,
                            format!(
                                "session {:?} has no member with this ticket (it may have been \
                             forgotten and started again); join again without one",
                                join.session_key
                            ),
                        ));
                    }
                }
            }
            _ => {
                if session.member_count() >= MAX_MEMBERS {
                    return Err(refuse(
                        conn,
                        ErrorCode::Busy,
                        format!("the session has its maximum of {MAX_MEMBERS} members"),
                    ));
                }
                tracing::info!(%conn, session = ?join.session_key, client = ?client_id, "joined");
                let ticket = new_ticket(&mut self.rng);
                session.join(conn, client_id, ticket, created, run_sessions)
            }
        })
    }
}

/// Refuses a join whose key, scope or run is out of bounds.
fn check_join(conn: ConnId, join: &Join) -> Result<(), Stop> {
    let run = join.run.as_deref();
    if run.is_some_and(|run| run.is_empty() || run.len() > MAX_SESSION_KEY_LEN) {
        return Err(refuse(
            conn,
            ErrorCode::ProtocolViolation,
            format!("the run must have 1 to {MAX_SESSION_KEY_LEN} bytes"),
        ));
    }
    if join.session_key.is_empty() || join.session_key.len() > MAX_SESSION_KEY_LEN {
        return Err(refuse(
            conn,
            ErrorCode::ProtocolViolation,
            format!("the session key must have 1 to {MAX_SESSION_KEY_LEN} bytes"),
        ));
    }
    if join.history_scope.len() > MAX_SESSION_KEY_LEN {
        return Err(refuse(
            conn,
            ErrorCode::ProtocolViolation,
            format!("the history scope must have at most {MAX_SESSION_KEY_LEN} bytes"),
        ));
    }
    if join
        .session_key
        .chars()
        .chain(join.history_scope.chars())
        .chain(run.unwrap_or_default().chars())
        .any(schemas::schema::is_unprintable)
    {
        return Err(refuse(
            conn,
            ErrorCode::ProtocolViolation,
            "the session key, history scope and run must not hold control characters".into(),
        ));
    }
    Ok(())
}
