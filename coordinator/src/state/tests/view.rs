//! What the dashboard is given: timelines from the times the state machine was handed, and
//! counts that only grow.

use super::*;

#[test]
fn the_timeline_has_a_lane_per_member_and_a_bar_per_task_at_the_times_given() {
    let mut world = World::new(Policy {
        batching: scheduler::Batching::Single,
        ..Policy::default()
    });
    let schema = schema("s", 3);
    world.join(1, "gh/run/1/sealed-0123", &schema);
    world.join(2, "gh/run/1/sealed-0123", &schema);
    let start = world.now;
    let first = assignment(&world.request(1, 1), 1).unwrap();
    let second = assignment(&world.request(2, 1), 2).unwrap();
    world.now += Duration::from_millis(300);
    world.report(1, passed(&first));
    let third = assignment(&world.request(1, 1), 1).unwrap();
    world.now += Duration::from_millis(200);
    let failing = TaskReport {
        task: second[0],
        result: TaskResult {
            log_tail: Some("boom".into()),
            ..result(Outcome::Failed)
        },
    };
    world.report(2, vec![failing]);
    let overview = world.coordinator.overview(world.now, 10);
    assert_eq!(overview.len(), 1);
    let summary = &overview[0];
    assert_eq!(
        summary.label, "gh/run/1/sealed-…",
        "the seal is never shown"
    );
    assert_eq!((summary.tasks, summary.finished, summary.failed), (3, 2, 1));
    assert_eq!(summary.passed, None, "not complete yet");
    let detail = world.coordinator.detail(&summary.id, world.now).unwrap();
    let jobs: Vec<&str> = detail.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(jobs, ["job-1", "job-2"]);
    let bars: Vec<(usize, u64, u64, bool, usize)> = detail
        .batches
        .iter()
        .map(|b| (b.job, b.start_ms, b.end_ms, b.running, b.tasks.len()))
        .collect();
    assert_eq!(
        bars,
        [
            (0, 0, 300, false, 1),
            (1, 0, 500, false, 1),
            (0, 300, 500, true, 1)
        ]
    );
    assert_eq!(
        detail.batches[2].tasks[0].task,
        format!("task-{}", third[0])
    );
    assert_eq!(detail.failing.len(), 1);
    assert_eq!(detail.failing[0].job, "job-2");
    assert_eq!(detail.failing[0].log_tail.as_deref(), Some("boom"));
    assert!(start <= world.now);
    world.report(1, passed(&third));
    let counts = world.coordinator.counts();
    assert_eq!((counts.sessions_created, counts.tasks_handed), (1, 3));
    assert_eq!(counts.results.get("PASSED"), Some(&2));
    assert_eq!(counts.results.get("FAILED"), Some(&1));
    let done = world.coordinator.overview(world.now, 10);
    assert_eq!(done[0].passed, Some(false));
    assert_eq!(done[0].duration_ms, Some(500));
    // Forgotten sessions still count.
    world.disconnect(1);
    world.disconnect(2);
    world.now += Duration::from_secs(3600);
    world.coordinator.tick(world.now);
    assert!(world.coordinator.overview(world.now, 10).is_empty());
    assert_eq!(world.coordinator.counts(), counts);
    assert_eq!(world.coordinator.detail("nope", world.now), None);
}
