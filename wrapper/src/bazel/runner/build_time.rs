//! What a batch's targets cost to build. Bazel's build events say how long each test ran, not
//! how long its compiling and linking took; but the batch's wall time when no test was running
//! is the invocation's fixed cost (start-up, loading, analysis: what an empty invocation costs)
//! plus building. Pure arithmetic, in milliseconds.
//!
//! Building is given to the targets whose actions it was: Bazel reports every completed action
//! with the label it belongs to and its output (`--build_event_publish_all_actions`); the
//! output's write time is when it finished, and the time from the previous command's finish to
//! its own is that command's (on a job building one thing at a time that is exact; when Bazel
//! builds several at once it is the wall time between finishes). Not the time the event was
//! read: Bazel writes the events in bunches, a compile, a link and a test seconds apart in one. A target's cost is its own
//! actions', nothing of the dependencies it shares with others (`//core`, compiled by every job
//! that needs it, is `//core`'s). Without action events (a Bazel that does not report them),
//! the building done since the previous verdict goes to the targets reaching theirs — which
//! gives a test another target's compiling whenever Bazel interleaves them, as it does.

use std::collections::HashMap;

/// The split of one batch's idle time (wall time with no test running).
#[derive(Debug)]
pub(super) struct BuildTime {
    /// The invocation's fixed cost, as known before the batch: never anyone's building.
    overhead_ms: u64,
    /// The idle time up to which building has been given out (it starts at the fixed cost).
    mark_ms: u64,
    /// Idle time given out as building so far, to targets or to actions.
    building_ms: u64,
    /// Whether Bazel reports actions; then each target's cost is its own actions' (`own`).
    by_action: bool,
    /// Building given to actions of each label, not yet handed to a verdict.
    own: HashMap<String, u64>,
    /// When the last command seen finished (milliseconds since the epoch).
    last_finish_ms: Option<u64>,
    /// The batch's invocations: one, two after a compile-first pass, each with its fixed cost.
    invocations: u64,
}

impl BuildTime {
    pub(super) fn new(overhead_ms: u64) -> BuildTime {
        BuildTime {
            overhead_ms,
            mark_ms: overhead_ms,
            building_ms: 0,
            by_action: false,
            own: HashMap::new(),
            last_finish_ms: None,
            invocations: 1,
        }
    }

    /// Commands completed: each one's target, when it finished (milliseconds since the epoch,
    /// when its output was written; `None` if it left no local file, e.g. fetched from a cache)
    /// and whether it was a test. `start_ms` is when the batch started: the fixed cost after it
    /// is nobody's. A command's time is from the previous one's finish (or the fixed cost's end)
    /// to its own — on a job running one action at a time, exactly its running time — and a
    /// test's is the test's, not building. Actions that run no command (writing a file, making
    /// symlinks) take no time worth the name and are not among them.
    pub(super) fn commands_finished(
        &mut self,
        start_ms: u64,
        commands: &[(String, Option<u64>, bool)],
    ) {
        if commands.is_empty() {
            return;
        }
        self.by_action = true;
        let mut sorted: Vec<&(String, Option<u64>, bool)> = commands.iter().collect();
        sorted.sort_by_key(|c| c.1);
        let mut last = self.last_finish_ms.unwrap_or(start_ms + self.overhead_ms);
        for (label, finished, test) in sorted {
            let Some(finished) = *finished else {
                continue;
            };
            let took = finished.saturating_sub(last);
            last = last.max(finished);
            if !test {
                *self.own.entry(label.clone()).or_default() += took;
                self.building_ms += took;
            }
        }
        self.last_finish_ms = Some(last);
    }

    /// A further invocation for the batch started at `start_ms` (milliseconds since the
    /// epoch), after one that compiled first: its fixed cost is nobody's building either.
    pub(super) fn invocation_started(&mut self, start_ms: u64) {
        let fixed_until = start_ms + self.overhead_ms;
        self.last_finish_ms = Some(self.last_finish_ms.unwrap_or(0).max(fixed_until));
        self.mark_ms += self.overhead_ms;
        self.invocations += 1;
    }

    /// What each of `labels`, which just reached their verdicts with the batch idle for
    /// `idle_ms` so far, cost to build: its own actions' time; without action events, an equal
    /// share of the idle time nobody has been given yet beyond the fixed cost.
    pub(super) fn verdicts(&mut self, idle_ms: u64, labels: &[&str]) -> Vec<u64> {
        if self.by_action {
            return labels
                .iter()
                .map(|label| self.own.remove(*label).unwrap_or(0))
                .collect();
        }
        let each = self.share(idle_ms, labels.len());
        vec![each; labels.len()]
    }

    /// `targets` targets just reached their verdicts, the batch having been idle for `idle_ms`
    /// so far: an equal share each of the idle time nobody has been given yet beyond the fixed
    /// cost (how costs are split without action events).
    fn share(&mut self, idle_ms: u64, targets: usize) -> u64 {
        if targets == 0 {
            return 0;
        }
        let each = idle_ms.saturating_sub(self.mark_ms) / targets as u64;
        self.building_ms += each * targets as u64;
        self.mark_ms += each * targets as u64;
        each
    }

    /// The invocation's fixed cost this batch measured once it ended idle for `idle_ms`: what
    /// was not building, over the batch's invocations.
    pub(super) fn fixed_ms(&self, idle_ms: u64) -> u64 {
        idle_ms.saturating_sub(self.building_ms) / self.invocations
    }

    /// The job's estimate of an invocation's fixed cost after this batch, which ended idle for
    /// `idle_ms`; `first` when there was no measured estimate before it.
    ///
    /// Only a batch that gave none of its idle time to building can lower a measured
    /// estimate: its whole idle time is then at most the fixed cost (the cheapest such batch
    /// says best what an empty invocation costs). When building was given some, what is left
    /// is the estimate plus the time after the last action, or — if it is less — the idle time
    /// shrank after a share was handed out: a test's running time counts as idle until Bazel
    /// reports its attempt, so an action or verdict in between is given that time as building.
    /// Such a batch measures nothing, and taking it as the cost had the estimate fall to 0
    /// within a few batches — every later batch was sized for no overhead, one target per
    /// invocation.
    pub(super) fn next_overhead_ms(&self, idle_ms: u64, first: bool) -> u64 {
        match (self.building_ms == 0, first) {
            (true, true) => idle_ms / self.invocations,
            (true, false) => (idle_ms / self.invocations).min(self.overhead_ms),
            // The assumed cost and what came after the last action.
            (false, true) => self.fixed_ms(idle_ms).max(self.overhead_ms),
            (false, false) => self.overhead_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 11: a compile-heavy batch's building is its targets' cost, not an "overhead" that
    /// every later batch would be sized by.
    #[test]
    fn building_goes_to_the_targets_that_needed_it_and_the_rest_is_overhead() {
        // A 1 s fixed cost; the first target's verdict after 21 s idle (20 s of compiling).
        let mut build = BuildTime::new(1_000);
        assert_eq!(build.share(21_000, 1), 20_000);
        // Two more after another 4 s idle: 2 s each.
        assert_eq!(build.share(25_000, 2), 2_000);
        // No idle time since: nothing built for this one.
        assert_eq!(build.share(25_000, 1), 0);
        // Bazel took 1.5 s more to exit: the fixed cost measured is 1 s + 1.5 s.
        assert_eq!(build.fixed_ms(26_500), 2_500);
        // Nothing before the fixed cost has passed.
        let mut early = BuildTime::new(3_000);
        assert_eq!(early.share(2_000, 2), 0);
        assert_eq!(early.fixed_ms(2_000), 2_000);
        assert_eq!(early.share(2_000, 0), 0);
    }

    /// Issue 11: after a compile-first pass the batch's own invocation has its fixed cost too:
    /// not the first action's building, and the fixed cost measured is per invocation.
    #[test]
    fn a_second_invocation_adds_a_fixed_cost_not_building() {
        let mut build = BuildTime::new(1_000);
        // The pass starts at 10 s: its fixed cost to 11 s, then compiling until 14 s.
        build.commands_finished(10_000, &[("//a:t".into(), Some(14_000), false)]);
        // The batch starts at 14.5 s: its fixed cost to 15.5 s, then linking until 16 s.
        build.invocation_started(14_500);
        build.commands_finished(10_000, &[("//a:t".into(), Some(16_000), false)]);
        assert_eq!(build.verdicts(6_000, &["//a:t"]), [3_500]);
        // 6 s idle, 3.5 s of it building: 1.25 s for each of the two invocations.
        assert_eq!(build.fixed_ms(6_000), 1_250);
        assert_eq!(build.next_overhead_ms(6_000, true), 1_250);
    }

    /// Regression (the compiled benchmark: 48–56 invocations for 67 targets on one job): a
    /// verdict that came while a test was running, not yet reported, gave that test's running
    /// time to the targets as building; when its attempt arrived the batch's idle time shrank,
    /// what was left for the fixed cost was 18 ms where the estimate had been 401 ms, and the
    /// next batch took it — then 0, and one target per invocation from there on.
    #[test]
    fn regression_a_batch_whose_idle_time_shrank_does_not_lower_the_overhead() {
        let mut build = BuildTime::new(401);
        // 4.0 s idle at a verdict (a running test's 0.4 s included), 3.6 s at the end.
        assert_eq!(build.share(4_000, 8), 449);
        assert_eq!(build.fixed_ms(3_640), 48);
        assert_eq!(build.next_overhead_ms(3_640, false), 401);
        // A consistent batch that gave its targets some: the estimate stands.
        let mut build = BuildTime::new(401);
        build.share(2_000, 2);
        assert_eq!(build.next_overhead_ms(2_300, false), 401);
        // One that gave them nothing: all its idle time is at most the fixed cost.
        let build = BuildTime::new(401);
        assert_eq!(build.next_overhead_ms(350, false), 350);
        assert_eq!(build.next_overhead_ms(900, false), 401);
        // The first measurement replaces the assumed one, up or down.
        assert_eq!(BuildTime::new(1_000).next_overhead_ms(700, true), 700);
        let mut first = BuildTime::new(1_000);
        first.share(5_000, 1);
        assert_eq!(first.next_overhead_ms(5_300, true), 1_300);
    }

    /// Regression (the compiled benchmark: the test with the longest compile was handed out
    /// last in a warm run and kept one job busy 8 s after the others finished): Bazel builds
    /// a batch's targets interleaved — t00 compiled, t06 compiled, t00 linked, t00's verdict —
    /// and the building since the previous verdict went to t00, t06's compile with it. Now each
    /// target's cost is its own commands', and a shared dependency's (`//core`) is nobody's.
    #[test]
    fn regression_a_target_is_not_given_another_targets_compiling() {
        let command = |label: &str, at: u64| (label.to_string(), Some(at), false);
        // Started at 100 s with a 1 s fixed cost; then //core compiles (5 s), t00 compiles
        // (1 s), t06 compiles (4 s), t00 links (0.5 s). The events come in two bunches.
        let mut build = BuildTime::new(1_000);
        build.commands_finished(
            100_000,
            &[command("//core:core", 106_000), command("//a:t00", 107_000)],
        );
        build.commands_finished(
            100_000,
            &[command("//a:t00", 111_500), command("//a:t06", 111_000)],
        );
        // t00's verdict: its compile and link, not t06's compile nor core's.
        assert_eq!(build.verdicts(11_500, &["//a:t00"]), [1_500]);
        // t06 links (0.5 s) after its 2 s test; the test's time is not building.
        build.commands_finished(
            100_000,
            &[
                ("//a:t06".to_string(), Some(113_500), true),
                command("//a:t06", 114_000),
            ],
        );
        assert_eq!(build.verdicts(12_000, &["//a:t06"]), [4_500]);
        // A target with no commands of its own (everything it needed came from a cache), and
        // a command whose output is not here: nothing.
        build.commands_finished(100_000, &[("//a:t07".to_string(), None, false)]);
        assert_eq!(build.verdicts(12_000, &["//a:t07"]), [0]);
        // The 0.8 s after the last command is the invocation's: everything else was building,
        // core's included.
        assert_eq!(build.fixed_ms(12_800), 1_800);
        assert_eq!(build.next_overhead_ms(12_800, true), 1_800);
    }

    /// Without action events the old split stands: the idle time since the previous verdict.
    #[test]
    fn without_action_events_building_goes_to_the_targets_reaching_their_verdicts() {
        let mut build = BuildTime::new(1_000);
        assert_eq!(build.verdicts(21_000, &["//a:t"]), [20_000]);
        assert_eq!(build.verdicts(25_000, &["//a:u", "//a:v"]), [2_000, 2_000]);
    }

    /// Commands running side by side (a job with several cores): each is given the time from
    /// the previous finish to its own, so together they are given the wall time, not more.
    #[test]
    fn overlapping_commands_are_given_the_wall_time_between_finishes() {
        let mut build = BuildTime::new(0);
        let commands = [
            ("//a:x".to_string(), Some(3_000), false),
            ("//a:y".to_string(), Some(2_000), false),
            ("//a:x".to_string(), Some(3_000), false),
        ];
        build.commands_finished(0, &commands);
        assert_eq!(build.verdicts(3_000, &["//a:x", "//a:y"]), [1_000, 2_000]);
        assert_eq!(build.fixed_ms(3_000), 0);
    }
}
