//! The exit code of a whole `bazel test` or `bazel build` session, in Bazel's terms. Every job computes it from
//! the same report, so every job exits the same way.

use schemas::{Outcome, SessionReport};

/// Bazel's exit codes.
pub mod code {
    /// Every test passed.
    pub const SUCCESS: i32 = 0;
    /// The build failed.
    pub const BUILD_FAILURE: i32 = 1;
    /// The command line was bad.
    pub const COMMAND_LINE: i32 = 2;
    /// The build succeeded but a test failed or timed out.
    pub const TESTS_FAILED: i32 = 3;
    /// No test targets matched.
    pub const NO_TESTS: i32 = 4;
    /// Interrupted.
    pub const INTERRUPTED: i32 = 8;
}

/// The exit code Bazel would give the whole session (`testing` for `bazel test`, not for
/// `bazel build`): a build failure (or a target without a verdict) outranks a failed test,
/// which outranks "no tests" (a `bazel test` none of whose tests ran, whatever was built),
/// which outranks success.
pub fn exit_code(report: &SessionReport, testing: bool) -> i32 {
    let outcomes = || report.records.iter().map(|r| r.result.outcome);
    if outcomes().any(|o| o == Outcome::FailedToBuild) {
        return code::BUILD_FAILURE;
    }
    let failed_test = outcomes().any(|o| matches!(o, Outcome::Failed | Outcome::TimedOut));
    // A target left without a verdict by a Bazel says why in its exit code. Beside a failed
    // test, one without an exit code was never started (the session stopped at its first
    // failing test: `--notest_keep_going`), and one whose Bazel exited 3 was stopped by that
    // Bazel at a failing test; as in Bazel, that is a test failure, not a build failure.
    let stopped = |r: &&schemas::TaskRecord| {
        failed_test && matches!(r.result.exit_code, None | Some(code::TESTS_FAILED))
    };
    if let Some(record) = report
        .records
        .iter()
        .find(|r| r.result.outcome == Outcome::NoStatus && !stopped(r))
    {
        // The Bazel that left it without a verdict said why (bad flag: 2, interrupted: 8, ...).
        return match record.result.exit_code {
            Some(c) if c != code::SUCCESS && c != code::TESTS_FAILED && c != code::NO_TESTS => c,
            _ => code::BUILD_FAILURE,
        };
    }
    if failed_test {
        return code::TESTS_FAILED;
    }
    if testing && outcomes().all(|o| matches!(o, Outcome::Skipped | Outcome::Built)) {
        return code::NO_TESTS;
    }
    code::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::{TaskRecord, TaskResult};

    fn report(outcomes: &[(Outcome, Option<i32>)]) -> SessionReport {
        SessionReport {
            schema_name: "bazel test".into(),
            records: outcomes
                .iter()
                .enumerate()
                .map(|(i, &(outcome, exit_code))| TaskRecord {
                    task: i as u32,
                    result: TaskResult {
                        outcome,
                        exit_code,
                        duration_ms: 0,
                        executed: true,
                        log_tail: None,
                        build_ms: 0,
                    },
                    client: "j".into(),
                })
                .collect(),
        }
    }

    /// Each target's outcome and its Bazel's exit code, then the session's expected exit code.
    type Case<'a> = (&'a [(Outcome, Option<i32>)], i32);

    #[test]
    fn a_build_of_built_targets_succeeds_and_a_test_of_them_found_no_tests() {
        use Outcome::*;
        let built = report(&[(Built, Some(0)), (Built, Some(0))]);
        assert_eq!(exit_code(&built, false), code::SUCCESS);
        assert_eq!(exit_code(&built, true), code::NO_TESTS);
        let broken = report(&[(Built, Some(1)), (FailedToBuild, Some(1))]);
        assert_eq!(exit_code(&broken, false), code::BUILD_FAILURE);
    }

    #[test]
    fn the_worst_outcome_decides() {
        use Outcome::*;
        let cases: &[Case] = &[
            (&[(Passed, Some(0)), (Flaky, Some(0))], 0),
            (&[(Passed, Some(0)), (Skipped, Some(0))], 0),
            (&[(Passed, Some(3)), (Failed, Some(3))], 3),
            (&[(TimedOut, Some(3))], 3),
            (&[(Failed, Some(3)), (FailedToBuild, Some(1))], 1),
            (&[(Skipped, Some(4)), (Skipped, Some(0))], 4),
            // `bazel test` whose tests were all filtered out still built the rest.
            (&[(Skipped, Some(4)), (Built, Some(4))], 4),
            (&[], 4),
            (&[(Passed, Some(0)), (NoStatus, Some(2))], 2),
            (&[(NoStatus, Some(8)), (Failed, Some(3))], 8),
            (&[(NoStatus, Some(3))], 1),
            (&[(NoStatus, None)], 1),
            // Stopped at the first failing test (`--notest_keep_going`): Bazel exits 3.
            (&[(Failed, Some(3)), (NoStatus, None), (Passed, None)], 3),
            (
                &[(Failed, Some(3)), (NoStatus, None), (NoStatus, Some(1))],
                1,
            ),
            // A batch Bazel itself stopped at a failing test leaves the rest NO STATUS, exit 3.
            (&[(Failed, None), (NoStatus, Some(3))], 3),
        ];
        for (outcomes, want) in cases {
            assert_eq!(exit_code(&report(outcomes), true), *want, "{outcomes:?}");
        }
    }
}
