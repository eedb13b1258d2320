//! The client's rules, one test each, driven with inputs and a hand-moved clock.

use super::*;
use schemas::{ErrorMessage, Outcome, Progress, TaskRecord, TaskResult};

const RECONNECT_FOR: Duration = Duration::from_secs(60);
const BUSY_FOR: Duration = Duration::from_secs(10);

/// A machine, its clock and what it has asked for so far.
struct Test {
    machine: Machine,
    now: Instant,
}

fn config() -> Config {
    Config {
        session_key: "key".into(),
        history_scope: "scope".into(),
        run: Some("bazel/r/test".into()),
        fail_fast: false,
        parallelism: 2,
        schema: Schema::new("s", ["a", "b", "c"]).unwrap(),
        max_batch: 2,
        reconnect_for: RECONNECT_FOR,
        busy_retry_for: BUSY_FOR,
    }
}

fn joined(ticket: u8, resumed: bool) -> ServerMessage {
    ServerMessage::Joined(Joined {
        created: false,
        resumed,
        ticket: Ticket([ticket; 16]),
        tasks: 3,
        finished: 0,
        clients: 1,
        run_sessions: 1,
    })
}

fn assignment(tasks: &[TaskId]) -> ServerMessage {
    ServerMessage::Assignment(Assignment {
        tasks: tasks.to_vec(),
        progress: Progress {
            finished: 0,
            total: 3,
            clients: 1,
        },
        compile_first: false,
    })
}

fn refusal(code: ErrorCode) -> ServerMessage {
    ServerMessage::Error(ErrorMessage {
        code,
        message: format!("{code:?}"),
    })
}

fn report(task: TaskId) -> TaskReport {
    TaskReport {
        task,
        result: TaskResult {
            outcome: Outcome::Passed,
            exit_code: Some(0),
            duration_ms: 5,
            executed: true,
            log_tail: None,
            build_ms: 0,
        },
    }
}

fn complete() -> SessionReport {
    SessionReport {
        schema_name: "s".into(),
        records: (0..3)
            .map(|task| TaskRecord {
                task,
                result: report(task).result,
                client: "c".into(),
            })
            .collect(),
    }
}

fn lost() -> ClientError {
    ClientError::Lost(crate::connection::LostReason::StreamEnded)
}

impl Test {
    fn new() -> Self {
        let now = Instant::now();
        Test {
            machine: Machine::new(config(), Duration::from_millis(7), now),
            now,
        }
    }

    /// The actions queued, without the events.
    fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.machine.poll())
            .filter(|a| !matches!(a, Action::Emit(_)))
            .collect()
    }

    fn give(&mut self, input: Input) -> Vec<Action> {
        self.machine.handle(input, self.now);
        self.actions()
    }

    fn receive(&mut self, message: ServerMessage) -> Vec<Action> {
        self.give(Input::Received(message))
    }

    fn wait(&mut self, for_: Duration) -> Vec<Action> {
        self.now += for_;
        self.machine.handle_timeout(self.now);
        self.actions()
    }

    /// Joined on the first connection, with the first request out.
    fn joined() -> Self {
        let mut test = Test::new();
        test.actions();
        test.receive(joined(1, false));
        test
    }
}

fn sent(actions: &[Action]) -> Vec<&ClientMessage> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(m) => Some(m),
            _ => None,
        })
        .collect()
}

fn join_of(actions: &[Action]) -> &Join {
    match sent(actions).first() {
        Some(ClientMessage::Join(join)) => join,
        other => panic!("expected a join, got {other:?}"),
    }
}

#[test]
fn joins_with_the_digest_then_the_schema_when_asked() {
    let mut test = Test::new();
    let first = test.actions();
    assert!(join_of(&first).schema.is_none());
    assert!(join_of(&first).resume.is_none());
    let second = test.receive(ServerMessage::NeedSchema);
    assert!(join_of(&second).schema.is_some());
    let after = test.receive(joined(1, false));
    assert!(matches!(
        sent(&after)[..],
        [ClientMessage::Request(WorkRequest {
            max_tasks: 2,
            overhead_ms: 7
        })]
    ));
}

#[test]
fn asks_for_work_once_per_connection() {
    let mut test = Test::joined();
    // Lost with the request unanswered: it is made again on the next connection, once.
    assert!(matches!(
        test.give(Input::Failed(lost()))[..],
        [Action::Connect]
    ));
    test.give(Input::Connected);
    let rejoined = test.receive(joined(1, true));
    let requests = sent(&rejoined)
        .into_iter()
        .filter(|m| matches!(m, ClientMessage::Request(_)))
        .count();
    assert_eq!(requests, 1);
    // Answered: not made again after the next loss.
    test.receive(assignment(&[0]));
    test.give(Input::Failed(lost()));
    test.give(Input::Connected);
    let rejoined = test.receive(joined(1, true));
    assert!(sent(&rejoined).is_empty(), "{rejoined:?}");
}

#[test]
fn resends_results_and_claims_its_tasks_on_resume() {
    let mut test = Test::joined();
    test.receive(assignment(&[0, 1]));
    let after = test.give(Input::BatchFinished {
        reports: vec![report(0), report(1)],
        overhead: Duration::ZERO,
    });
    assert!(matches!(
        sent(&after)[..],
        [ClientMessage::Results(_), ClientMessage::Request(_)]
    ));
    test.receive(assignment(&[2]));
    test.give(Input::Failed(lost()));
    let join = test.give(Input::Connected);
    let join = join_of(&join);
    assert_eq!(join.resume, Some(Ticket([1; 16])));
    assert_eq!(join.running, vec![2, 0, 1], "running first, then ran");
    let rejoined = test.receive(joined(1, true));
    assert!(
        matches!(&sent(&rejoined)[..], [ClientMessage::Results(r)] if r.len() == 2),
        "{rejoined:?}"
    );
}

#[test]
fn drops_a_ticket_the_coordinator_does_not_know() {
    let mut test = Test::joined();
    test.give(Input::Failed(lost()));
    test.give(Input::Connected);
    // Forgotten: at once, a new connection and a join as a new member.
    assert!(matches!(
        test.receive(refusal(ErrorCode::UnknownTicket))[..],
        [Action::Connect]
    ));
    let join = test.give(Input::Connected);
    assert_eq!(join_of(&join).resume, None);
    assert!(join_of(&join).running.is_empty());
}

#[test]
fn retries_a_first_join_refused_as_busy_until_busy_retry_for() {
    let mut test = Test::new();
    test.actions();
    assert!(test.receive(refusal(ErrorCode::Busy)).is_empty());
    let at = test.machine.timeout().expect("a backoff");
    assert_eq!(at, test.now + FIRST_DELAY);
    assert!(matches!(test.wait(FIRST_DELAY)[..], [Action::Connect]));
    test.give(Input::Connected);
    // Refused until the time is up: the refusal is the answer.
    loop {
        let actions = test.receive(refusal(ErrorCode::Busy));
        if let [Action::Finish(Err(e))] = &actions[..] {
            assert!(is_busy(e), "{e}");
            break;
        }
        assert!(actions.is_empty(), "{actions:?}");
        let delay = test.machine.timeout().unwrap() - test.now;
        assert!(delay <= MAX_DELAY);
        test.wait(delay);
        test.give(Input::Connected);
    }
    assert!(test.now <= Instant::now() + BUSY_FOR + MAX_DELAY);
}

#[test]
fn a_first_join_lost_or_refused_otherwise_ends_the_run() {
    let mut test = Test::new();
    test.actions();
    assert!(matches!(
        test.give(Input::Failed(lost()))[..],
        [Action::Finish(Err(ClientError::Lost(_)))]
    ));
    let mut test = Test::new();
    test.actions();
    assert!(matches!(
        test.receive(refusal(ErrorCode::SchemaMismatch))[..],
        [Action::Finish(Err(ClientError::Refused {
            code: ErrorCode::SchemaMismatch,
            ..
        }))]
    ));
}

#[test]
fn a_reconnect_refused_for_good_ends_the_run() {
    let mut test = Test::joined();
    test.give(Input::Failed(lost()));
    test.give(Input::Connected);
    assert!(matches!(
        test.receive(refusal(ErrorCode::Unauthorized))[..],
        [Action::Finish(Err(ClientError::Refused {
            code: ErrorCode::Unauthorized,
            ..
        }))]
    ));
}

#[test]
fn gives_up_after_reconnect_for_and_keeps_what_the_batch_ran() {
    let mut test = Test::joined();
    test.receive(assignment(&[0]));
    test.give(Input::Failed(lost()));
    loop {
        let failed = test.give(Input::Failed(lost()));
        assert!(failed.is_empty(), "{failed:?}");
        match test.machine.timeout() {
            Some(at) => {
                let delay = at - test.now;
                assert!(matches!(test.wait(delay)[..], [Action::Connect]));
            }
            // Given up; the batch runs on, and is not aborted.
            None => break,
        }
    }
    test.machine.handle(
        Input::BatchFinished {
            reports: vec![report(0)],
            overhead: Duration::ZERO,
        },
        test.now,
    );
    let all: Vec<Action> = std::iter::from_fn(|| test.machine.poll()).collect();
    assert!(matches!(&all[0], Action::Emit(Event::Reported(r)) if r.len() == 1));
    let Action::Finish(Err(e)) = &all[1] else {
        panic!("{all:?}")
    };
    assert!(
        e.to_string().contains("could not reconnect within 1m"),
        "{e}"
    );
    assert!(
        std::error::Error::source(e).is_some(),
        "the last error is kept"
    );
}

#[test]
fn completion_while_running_stops_the_batch_then_finishes() {
    let mut test = Test::joined();
    test.receive(assignment(&[0]));
    assert!(matches!(
        test.receive(ServerMessage::Complete {
            report: complete(),
            run_sessions: 1,
        })[..],
        [Action::AbortBatch]
    ));
    // Its results are not sent: the session is over.
    let end = test.give(Input::BatchFinished {
        reports: vec![],
        overhead: Duration::ZERO,
    });
    assert!(matches!(&end[..], [Action::Finish(Ok(r))] if r == &complete()));
}

#[test]
fn an_abort_stops_the_batch_only_when_it_names_its_tasks() {
    let mut test = Test::joined();
    test.receive(assignment(&[0]));
    assert!(test.receive(ServerMessage::Abort(vec![1, 2])).is_empty());
    assert!(matches!(
        test.receive(ServerMessage::Abort(vec![0]))[..],
        [Action::AbortBatch]
    ));
    // The batch goes on to ask again, as after any batch; nothing is left to report.
    let after = test.give(Input::BatchFinished {
        reports: vec![],
        overhead: Duration::ZERO,
    });
    assert!(matches!(sent(&after)[..], [ClientMessage::Request(_)]));
}

/// Issue 11: each result goes out the moment the runner has it, before the batch ends, and
/// is not sent again with the batch's end.
#[test]
fn a_task_finished_mid_batch_is_reported_at_once_and_once() {
    let mut test = Test::joined();
    test.actions();
    test.receive(assignment(&[0, 1]));
    let now = test.give(Input::TaskFinished(report(1)));
    assert!(
        matches!(&sent(&now)[..], [ClientMessage::Results(r)] if *r == vec![report(1)]),
        "{now:?}"
    );
    // Again, or a task the batch does not run: nothing.
    assert!(test.give(Input::TaskFinished(report(1))).is_empty());
    assert!(test.give(Input::TaskFinished(report(2))).is_empty());
    let end = test.give(Input::BatchFinished {
        reports: vec![report(0), report(1)],
        overhead: Duration::ZERO,
    });
    assert!(
        matches!(
            &sent(&end)[..],
            [ClientMessage::Results(r), ClientMessage::Request(_)] if *r == vec![report(0)]
        ),
        "{end:?}"
    );
}

/// Issue 11: an idle job may copy what is left of this batch; tasks it finishes first are
/// aborted here one by one, and the batch stops only when nothing of it is left to run.
#[test]
fn an_abort_of_part_of_the_batch_lets_the_rest_run_on() {
    let mut test = Test::joined();
    test.actions();
    test.receive(assignment(&[0, 1, 2]));
    test.give(Input::TaskFinished(report(0)));
    // Task 1 finished elsewhere: 2 still runs here.
    assert!(test.receive(ServerMessage::Abort(vec![1])).is_empty());
    // Its result, should the runner still give it, is not reported.
    assert!(test.give(Input::TaskFinished(report(1))).is_empty());
    // Task 2 too: nothing of the batch is left, it stops.
    assert!(matches!(
        test.receive(ServerMessage::Abort(vec![2]))[..],
        [Action::AbortBatch]
    ));
    let end = test.give(Input::BatchFinished {
        reports: vec![report(2)],
        overhead: Duration::ZERO,
    });
    assert!(
        matches!(sent(&end)[..], [ClientMessage::Request(_)]),
        "{end:?}"
    );
}

/// A result finished while reconnecting is kept and goes with the rejoin.
#[test]
fn a_task_finished_while_reconnecting_goes_with_the_rejoin() {
    let mut test = Test::joined();
    test.actions();
    test.receive(assignment(&[0, 1]));
    test.give(Input::Failed(lost()));
    assert!(test.give(Input::TaskFinished(report(0))).is_empty());
    test.give(Input::Connected);
    let rejoin = test.receive(joined(1, true));
    assert!(
        matches!(&sent(&rejoin)[..], [ClientMessage::Results(r), ..] if *r == vec![report(0)]),
        "{rejoin:?}"
    );
}

#[test]
fn an_interrupt_stops_the_batch_and_ends_the_run() {
    let mut test = Test::joined();
    test.receive(assignment(&[0]));
    assert!(matches!(
        test.give(Input::Interrupted)[..],
        [Action::AbortBatch]
    ));
    assert!(
        test.receive(assignment(&[1])).is_empty(),
        "ignored while stopping"
    );
    assert!(matches!(
        test.give(Input::BatchFinished {
            reports: vec![report(0)],
            overhead: Duration::ZERO
        })[..],
        [Action::Finish(Err(ClientError::Interrupted))]
    ));
}

#[test]
fn an_assignment_outside_the_schema_is_a_protocol_error() {
    let mut test = Test::joined();
    assert!(matches!(
        test.receive(assignment(&[3]))[..],
        [Action::Finish(Err(ClientError::Protocol(_)))]
    ));
}

#[test]
fn a_second_assignment_while_running_stops_the_batch_and_fails() {
    let mut test = Test::joined();
    test.receive(assignment(&[0]));
    assert!(matches!(
        test.receive(assignment(&[1]))[..],
        [Action::AbortBatch]
    ));
    assert!(matches!(
        test.give(Input::BatchFinished {
            reports: vec![],
            overhead: Duration::ZERO
        })[..],
        [Action::Finish(Err(ClientError::Protocol(_)))]
    ));
}

#[test]
fn results_made_while_reconnecting_go_with_the_rejoin() {
    let mut test = Test::joined();
    test.receive(assignment(&[0]));
    test.give(Input::Failed(lost()));
    let finished = test.give(Input::BatchFinished {
        reports: vec![report(0)],
        overhead: Duration::ZERO,
    });
    assert!(sent(&finished).is_empty(), "no connection: {finished:?}");
    test.give(Input::Connected);
    let rejoined = test.receive(joined(1, true));
    assert!(matches!(
        sent(&rejoined)[..],
        [ClientMessage::Results(_), ClientMessage::Request(_)]
    ));
}

/// Regression (the bug `e2e/tests/reconnect.rs` first showed, there only with the right timing):
/// a client that found its connection lost while sending a batch's results reconnected, asked for
/// work on the new connection, and then asked again because it had reconnected; the second
/// assignment, arriving while the first ran, ended the job with "unexpected message".
#[test]
fn a_connection_lost_while_reporting_asks_for_work_once() {
    let mut test = Test::joined();
    test.receive(assignment(&[0]));
    let finished = test.give(Input::BatchFinished {
        reports: vec![report(0)],
        overhead: Duration::ZERO,
    });
    assert!(matches!(
        sent(&finished)[..],
        [ClientMessage::Results(_), ClientMessage::Request(_)]
    ));
    // The shell's send of the results fails: the request after it is dropped with the
    // connection.
    assert!(matches!(
        test.give(Input::Failed(lost()))[..],
        [Action::Connect]
    ));
    test.give(Input::Connected);
    let rejoined = test.receive(joined(1, true));
    assert!(matches!(
        sent(&rejoined)[..],
        [ClientMessage::Results(_), ClientMessage::Request(_)]
    ));
    // Nothing more until the coordinator answers, whatever else happens on this connection.
    assert!(test.receive(ServerMessage::Abort(vec![0])).is_empty());
    assert!(test.wait(Duration::from_secs(5)).is_empty());
    let running = test.receive(assignment(&[1]));
    assert!(matches!(running[..], [Action::StartBatch(..)]));
}

/// Regression (issue 10): jobs of one run that split into sessions were not told. The join
/// names the run, every time; what the coordinator says of the run's sessions at the end
/// reaches the caller before the report.
#[test]
fn the_join_names_the_run_and_the_run_s_sessions_reach_the_caller() {
    let mut test = Test::new();
    assert_eq!(
        join_of(&test.actions()).run.as_deref(),
        Some("bazel/r/test")
    );
    test.receive(joined(1, false));
    test.give(Input::Failed(lost()));
    assert_eq!(
        join_of(&test.give(Input::Connected)).run.as_deref(),
        Some("bazel/r/test")
    );
    test.receive(joined(1, true));
    test.machine.handle(
        Input::Received(ServerMessage::Complete {
            report: complete(),
            run_sessions: 2,
        }),
        test.now,
    );
    let all: Vec<Action> = std::iter::from_fn(|| test.machine.poll()).collect();
    assert!(
        matches!(
            &all[..],
            [
                Action::Emit(Event::Completed { run_sessions: 2 }),
                Action::Finish(Ok(_))
            ]
        ),
        "{all:?}"
    );
}
