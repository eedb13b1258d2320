//! The sessions of one CI run: jobs of a run that split into several sessions (their commits,
//! options or targets differed) are told, at their join and in the final report (issue 10).

use super::*;

impl World {
    /// Connects, greets and joins `key`, naming `run`; returns what the join answered.
    fn join_run(
        &mut self,
        conn: u64,
        key: &str,
        run: Option<&str>,
        schema: &Schema,
    ) -> Vec<Action> {
        self.hello_with(conn, None, PROTOCOL_VERSION);
        let join = Join {
            run: run.map(str::to_string),
            ..Join::new(key.into(), schema, format!("scope:{}", schema.name), true)
        };
        self.send(conn, ClientMessage::Join(join))
    }
}

/// What `Joined` to `conn` says of its run's sessions.
fn joined_run_sessions(actions: &[Action], conn: u64) -> u32 {
    actions
        .iter()
        .find_map(|action| match action {
            Action::Send(c, message) if *c == ConnId(conn) => match &**message {
                ServerMessage::Joined(joined) => Some(joined.run_sessions),
                _ => None,
            },
            _ => None,
        })
        .expect("joined")
}

/// What `Complete` to `conn` says of its run's sessions, if it was sent.
fn complete_run_sessions(actions: &[Action], conn: u64) -> Option<u32> {
    actions.iter().find_map(|action| match action {
        Action::Send(c, message) if *c == ConnId(conn) => match &**message {
            ServerMessage::Complete { run_sessions, .. } => Some(*run_sessions),
            _ => None,
        },
        _ => None,
    })
}

/// Regression (issue 10): jobs of one run whose options differed split into two sessions, and
/// neither was told.
#[test]
fn jobs_of_one_run_that_split_are_told_at_their_join_and_in_the_report() {
    let mut world = World::new(Policy::default());
    let run = Some("bazel/r1/test");
    // The first job joins alone: nothing to tell yet.
    assert_eq!(
        joined_run_sessions(&world.join_run(1, "bazel/r1/aaa", run, &schema("s", 1)), 1),
        1
    );
    // A second job of the run, with other options: another session, and it is told.
    assert_eq!(
        joined_run_sessions(&world.join_run(2, "bazel/r1/bbb", run, &schema("s", 2)), 2),
        2
    );
    // A third job in the first session sees both too.
    assert_eq!(
        joined_run_sessions(&world.join_run(3, "bazel/r1/aaa", run, &schema("s", 1)), 3),
        2
    );
    // Another run, and a join naming none, are not counted.
    assert_eq!(
        joined_run_sessions(
            &world.join_run(4, "bazel/r2/aaa", Some("bazel/r2/test"), &schema("s", 1)),
            4
        ),
        1
    );
    assert_eq!(
        joined_run_sessions(&world.join_run(5, "plain", None, &schema("s", 1)), 5),
        0
    );
    // The first job, which joined before the split, learns of it from the report.
    assert_eq!(assignment(&world.request(1, 1), 1), Some(vec![0]));
    let done = world.report(1, passed(&[0]));
    assert_eq!(complete_run_sessions(&done, 1), Some(2));
    assert_eq!(complete_run_sessions(&done, 3), Some(2));
}

/// One job's successive commands (e.g. `bazel test //a/...` then `bazel test //b/...`) are
/// sessions of one run too, but one after the other: not a split.
#[test]
fn a_run_s_sessions_one_after_the_other_are_not_a_split() {
    let mut world = World::new(Policy::default());
    let run = Some("bazel/r1/test");
    world.join_run(1, "bazel/r1/aaa", run, &schema("s", 1));
    world.request(1, 1);
    let done = world.report(1, passed(&[0]));
    assert_eq!(complete_run_sessions(&done, 1), Some(1));
    world.now += Duration::from_secs(1);
    assert_eq!(
        joined_run_sessions(&world.join_run(2, "bazel/r1/bbb", run, &schema("t", 1)), 2),
        1
    );
    // A job joining the finished session (a reused run id) is not told of a split either.
    let late = world.join_run(3, "bazel/r1/aaa", run, &schema("s", 1));
    assert_eq!(joined_run_sessions(&late, 3), 1);
    assert_eq!(complete_run_sessions(&late, 3), Some(1));
}

#[test]
fn a_run_that_is_too_long_or_unprintable_is_refused() {
    let too_long = "r".repeat(MAX_SESSION_KEY_LEN + 1);
    for (conn, run) in [
        (1, ""),
        (2, too_long.as_str()),
        (3, "r\n1"),
        (4, "r\u{202e}1"),
    ] {
        let mut world = World::new(Policy::default());
        let actions = world.join_run(conn, "k", Some(run), &schema("s", 1));
        assert_eq!(
            refusal(&actions, conn).0,
            ErrorCode::ProtocolViolation,
            "{run:?}"
        );
    }
}

/// The count takes no memory of its own: it is bounded by the sessions held, which the
/// coordinator bounds for every peer.
#[test]
fn a_run_counts_no_more_sessions_than_the_coordinator_holds() {
    let mut world = World::new(Policy {
        max_sessions: 3,
        ..Policy::default()
    });
    let run = Some("bazel/r1/test");
    for conn in 1..=3 {
        world.join_run(conn, &format!("bazel/r1/{conn}"), run, &schema("s", 1));
    }
    let refused = world.join_run(4, "bazel/r1/4", run, &schema("s", 1));
    assert_eq!(refusal(&refused, 4).0, ErrorCode::Busy);
    assert_eq!(
        joined_run_sessions(&world.join_run(5, "bazel/r1/1", run, &schema("s", 1)), 5),
        3
    );
}

#[test]
fn a_restarted_coordinator_remembers_each_session_s_run() {
    let mut world = World::new(Policy::default());
    let run = Some("bazel/r1/test");
    world.join_run(1, "bazel/r1/aaa", run, &schema("s", 1));
    world.join_run(2, "bazel/r1/bbb", run, &schema("s", 2));
    world.restart(Policy::default());
    assert_eq!(
        joined_run_sessions(&world.join_run(3, "bazel/r1/aaa", run, &schema("s", 1)), 3),
        2
    );
}
