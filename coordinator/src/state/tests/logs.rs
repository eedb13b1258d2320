//! Failing tasks' log tails: bounded per result and per session, dropped from successes.

use super::*;
use schemas::log_tail::MAX_LOG_TAIL_BYTES;

use crate::state::session::MAX_SESSION_LOG_BYTES;

fn with_log(task: TaskId, outcome: Outcome, log: &str) -> TaskReport {
    TaskReport {
        task,
        result: TaskResult {
            log_tail: Some(log.into()),
            ..result(outcome)
        },
    }
}

#[test]
fn every_member_gets_the_failing_logs_bounded_and_only_of_failures() {
    let tasks = 70;
    let mut world = World::new(Policy {
        batching: scheduler::Batching::Single,
        ..Policy::default()
    });
    let schema = schema("s", tasks);
    world.join(1, "k", &schema);
    world.join(2, "k", &schema);
    // Each log is too long to keep whole, and together they are far past the session's budget.
    let long_log = "x".repeat(400) + "\n";
    let long_log = long_log.repeat(2 * MAX_LOG_TAIL_BYTES / 401);
    let mut actions = Vec::new();
    for _ in 0..tasks {
        let batch = assignment(&world.request(1, 1), 1).expect("work for the only asker");
        let reports = batch
            .iter()
            .map(|&t| match t {
                0 => with_log(t, Outcome::Passed, "passing output"),
                _ => with_log(t, Outcome::Failed, &long_log),
            })
            .collect();
        actions = world.report(1, reports);
    }
    let report = complete_report(&actions, 2).expect("the other member gets the report");
    assert_eq!(
        report.records[0].result.log_tail, None,
        "a success carries no log"
    );
    let kept: Vec<usize> = report.records[1..]
        .iter()
        .map(|r| {
            r.result
                .log_tail
                .as_ref()
                .expect("every failure says something")
                .len()
        })
        .collect();
    assert!(kept.iter().all(|&len| len <= MAX_LOG_TAIL_BYTES));
    let total: usize = kept.iter().sum();
    assert!(total <= MAX_SESSION_LOG_BYTES + 69 * 200, "{total}");
    let last = report.records[tasks - 1]
        .result
        .log_tail
        .as_deref()
        .unwrap();
    assert!(last.starts_with("(log not kept"), "{last}");
    let first = report.records[1].result.log_tail.as_deref().unwrap();
    assert!(first.ends_with(&"x".repeat(400)) && first.lines().count() <= 200);
}
