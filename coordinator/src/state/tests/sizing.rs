//! How batches are sized across sessions: the next session of a scope expects as many jobs as
//! the last one had (issue 11).

use std::collections::BTreeMap;

use super::*;

/// Issue 11: on compile-heavy work every Bazel invocation costs, and keeping each batch within
/// the longest task (so that the first job to ask, not knowing how many will come, does not
/// take half the queue) made most batches a few seconds long. A scope's history now says how
/// many slots its last session had, and the next one sizes for all of them from the first
/// request.
///
/// 61 tasks of 1 s each known from history, a 1 s overhead. The first session's first job,
/// alone, is held to the longest task (1 s), raised to three overheads: 3 tasks. Four one-core
/// jobs then finish the session, which records 4 slots. The next session's first job, alone
/// again, is sized for four: half a slot's share, 61 s / 8 = 7.6 s (below
/// 4 × sqrt(61 s × 1 s / 4) ≈ 15.6 s and the fair 15.3 s): 7 tasks.
#[test]
fn the_next_session_is_sized_for_every_job_the_last_one_had() {
    let schema = schema("s", 61);
    let mut world = World::new(Policy::default());
    for task in 0..61 {
        world
            .coordinator
            .history
            .record("scope:s", &format!("task-{task}"), 1000);
    }
    assert_eq!(world.coordinator.history.slots("scope:s"), 0);
    world.join_running(1, "run-1", &schema, 1);
    let first = assignment(&world.request_with_overhead(1, 100, 1000), 1).unwrap();
    assert_eq!(first.len(), 3, "nobody known to be coming: {first:?}");
    let mut held: BTreeMap<u64, Vec<TaskId>> = BTreeMap::from([(1, first)]);
    for conn in 2..=4 {
        world.join_running(conn, "run-1", &schema, 1);
        held.insert(conn, Vec::new());
    }
    let mut reported = 0;
    while reported < 61 {
        for conn in 1..=4 {
            let batch = std::mem::take(held.get_mut(&conn).unwrap());
            reported += batch.len();
            world.report(
                conn,
                batch.iter().map(|&t| report_of(t, 1000, true)).collect(),
            );
            if let Some(next) = assignment(&world.request_with_overhead(conn, 100, 1000), conn) {
                held.insert(conn, next);
            }
        }
    }
    assert!(world.coordinator.sessions["run-1"].is_complete());
    assert_eq!(world.coordinator.history.slots("scope:s"), 4);

    world.join_running(5, "run-2", &schema, 1);
    let first = assignment(&world.request_with_overhead(5, 100, 1000), 5).unwrap();
    assert_eq!(first.len(), 7, "sized for the four expected: {first:?}");
}
