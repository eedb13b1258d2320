//! Scheduling arithmetic: task order, expected durations and batch sizes. Pure functions.
//!
//! The aim is the ideal makespan `max(total work / clients, longest task)`. Longest-first order
//! keeps a long task from starting last; batches follow expected durations and shrink as the
//! queue drains (guided self-scheduling), so early batches save per-batch overhead and the last
//! tasks spread evenly across the clients.

use std::collections::VecDeque;

use schemas::TaskId;

/// How the queue is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// The schema's order: what the original project did.
    Listed,
    /// Longest expected duration first.
    LongestFirst,
}

/// How batches are sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batching {
    /// One task per request: the original project's way.
    Single,
    /// A share of the remaining expected work, shrinking as the queue drains.
    Guided,
}

/// Expected durations for every task: its history where known, else its weight times what a
/// task of weight 1 is expected to take — the median of the known tasks' durations per unit of
/// weight, else `default_ms`. Weights are priors (e.g. from a Bazel test's `size`): calibrating
/// them against the known durations keeps new tasks comparable to those with history.
///
/// Returns the estimates, how many were known, and the expectation per unit of weight.
pub fn fill_estimates(
    known: &[Option<u64>],
    weights: &[u32],
    default_ms: u64,
) -> (Vec<u64>, usize, u64) {
    let mut per_unit: Vec<u64> = known
        .iter()
        .zip(weights)
        .filter_map(|(k, &w)| k.map(|ms| ms / u64::from(w.max(1))))
        .collect();
    per_unit.sort_unstable();
    let unit = if per_unit.is_empty() {
        default_ms
    } else {
        per_unit[per_unit.len() / 2]
    };
    let estimates = known
        .iter()
        .zip(weights)
        .map(|(k, &w)| k.unwrap_or(unit * u64::from(w.max(1))))
        .collect();
    (estimates, per_unit.len(), unit)
}

/// The initial queue: task ids in the given order. Ties keep the schema's order. Longest
/// first puts the prerequisites (`prerequisite[id]`: what the other tasks likely need built)
/// ahead of the rest, longest first among themselves: built first, by one job each, they are
/// in the shared cache by the time the others link them.
pub fn initial_queue(estimates: &[u64], prerequisite: &[bool], order: Order) -> VecDeque<TaskId> {
    let mut ids: Vec<TaskId> = (0..estimates.len() as TaskId).collect();
    if order == Order::LongestFirst {
        ids.sort_by_key(|&id| {
            (
                !prerequisite.get(id as usize).copied().unwrap_or(false),
                std::cmp::Reverse(estimates[id as usize]),
            )
        });
    }
    ids.into()
}

/// The least expected work for a batch whose job compiles first while a prerequisite is being
/// built elsewhere (`pending_ms`: what the longest such build is still expected to take): half
/// as much again, so that what the job compiles before it builds anything that needs the
/// prerequisite covers it — then the prerequisite comes from the shared cache rather than
/// being built a second time. Never more than `fair_ms`, the job's share of the queue.
pub fn compile_first_target_ms(target_ms: u64, pending_ms: u64, fair_ms: u64) -> u64 {
    target_ms
        .max(pending_ms.saturating_mul(3) / 2)
        .min(fair_ms.max(target_ms))
}

/// How much expected work the next batch should hold, in milliseconds, for `clients` jobs
/// each running one task at a time: [`job_batch_target_ms`] with a parallelism of 1.
///
/// Guided self-scheduling: half a fair share (`W / 2N`, `W` the queued work, `N` the clients),
/// which shrinks as the queue drains so the last tasks spread evenly. It is also at most
/// `4 × sqrt(W × o / N)` (`o` the client's per-batch overhead: the term balances the overhead of
/// many batches against the imbalance of long ones) and at most the longest task of the session
/// (`longest_ms`: the makespan cannot be shorter anyway) — both keep the first client to join
/// from taking a large share before the others arrive, since it cannot know how many will. And
/// at least three overheads, so the overhead stays small beside the work — but never more than
/// a fair share of the queue (`W / N`) while other clients are connected: a job whose first
/// batch was slow (a cold compile counted as overhead) must not take the whole queue while the
/// others sit idle.
pub fn batch_target_ms(
    queued_work_ms: u64,
    clients: usize,
    overhead_ms: u64,
    longest_ms: u64,
) -> u64 {
    job_batch_target_ms(queued_work_ms, 1, clients as u64, overhead_ms, longest_ms)
}

/// How much expected work the next batch of one job should hold, sized in expected *wall time
/// on that job*: it runs `parallelism` tasks side by side, and the connected jobs together run
/// `connected_parallelism` (its own included). Each of their slots is one client of
/// [`batch_target_ms`]'s guided self-scheduling (half a slot's fair share, at most
/// `4 × sqrt(W × o / slots)`), and the job's batch holds what its slots do in that time:
/// `parallelism ×` that. Jobs testing on more cores get more work for the same expected wall
/// time, and the fair share a job may take while others are connected is its slots' share of
/// the queue (`W × p / P`). Two bounds stay on the batch's *work*, not its wall time: at most
/// the session's longest task, so the heaviest tasks are not bunched onto the first wide job
/// to arrive (its cores may be busier than its parallelism says, and the next jobs are
/// moments away; a session passes `u64::MAX` once it has a result, when they have come), and
/// at least three overheads.
pub fn job_batch_target_ms(
    queued_work_ms: u64,
    parallelism: u32,
    connected_parallelism: u64,
    overhead_ms: u64,
    longest_ms: u64,
) -> u64 {
    let parallelism = u64::from(parallelism.max(1));
    let slots = connected_parallelism.max(parallelism);
    let share = queued_work_ms / (2 * slots);
    let balanced =
        (4.0 * (queued_work_ms as f64 * overhead_ms as f64 / slots as f64).sqrt()) as u64;
    let target = parallelism
        .saturating_mul(share.min(balanced))
        .min(longest_ms)
        .max(overhead_ms.saturating_mul(3));
    if slots > parallelism {
        // Others are connected: never more than this job's slots' share of the queue.
        let fair = u128::from(queued_work_ms) * u128::from(parallelism) / u128::from(slots);
        target.min(fair as u64)
    } else {
        target
    }
}

/// How much expected work the next batch of one job should hold when every queued task's
/// duration is known from history (a warm session, past its first result): three quarters of
/// the job's slots' share of all the work not yet done — the queue and what the other
/// connected jobs still run (`elsewhere_ms`) — at least three overheads, never more than that
/// share.
///
/// Guided self-scheduling ([`job_batch_target_ms`]) sizes batches from the queue alone, so
/// batches shrink as work leaves the queue even while it is still running elsewhere: the
/// compiled benchmark's warm jobs ran ten invocations each at two jobs (a static split ran
/// one), each paying about a second of Bazel's fixed cost at half a core. With durations
/// known, a share of the unfinished work lets the jobs finish together in a few batches;
/// the quarter left out absorbs what the history got wrong, and a straggler's unfinished
/// remainder is still backed up on idle jobs.
pub fn warm_batch_target_ms(
    queued_work_ms: u64,
    elsewhere_ms: u64,
    parallelism: u32,
    connected_parallelism: u64,
    overhead_ms: u64,
) -> u64 {
    let parallelism = u64::from(parallelism.max(1));
    let slots = connected_parallelism.max(parallelism);
    let unfinished = u128::from(queued_work_ms) + u128::from(elsewhere_ms);
    let fair = (unfinished * u128::from(parallelism) / u128::from(slots)) as u64;
    (fair / 4 * 3).max(overhead_ms.saturating_mul(3)).min(fair)
}

/// How many tasks from the head of the queue make the next batch: as many as fit in
/// `target_ms` of expected work (see [`batch_target_ms`]); a task longer than that goes alone.
/// Always at least one task, at most `limit`.
pub fn batch_len(
    queue: &VecDeque<TaskId>,
    estimate: impl Fn(TaskId) -> u64,
    target_ms: u64,
    limit: u32,
    batching: Batching,
) -> usize {
    if queue.is_empty() {
        return 0;
    }
    if batching == Batching::Single {
        return 1;
    }
    let mut len = 0;
    let mut work = 0;
    for &task in queue.iter().take(limit.max(1) as usize) {
        let expected = estimate(task);
        if len > 0 && work + expected > target_ms {
            break;
        }
        work += expected;
        len += 1;
    }
    len
}

/// Which queued tasks make the next batch, as positions in the queue, in queue order: the head
/// (the longest expected, so that it does not start last), then as much as fits in `target_ms`
/// (see [`batch_len`]) preferring tasks `near` the job (of a group it already has, so that what
/// they share is built once) from the next few positions, then the rest in queue order. The
/// batch's expected work and length are what [`batch_len`] would give or less; affinity only
/// changes which tasks of the queue's head make it up.
pub fn pick_batch(
    queue: &VecDeque<TaskId>,
    estimate: impl Fn(TaskId) -> u64,
    target_ms: u64,
    limit: u32,
    batching: Batching,
    near: impl Fn(TaskId) -> bool,
) -> Vec<usize> {
    let natural = batch_len(queue, &estimate, target_ms, limit, batching);
    if natural <= 1 || natural == queue.len() {
        return (0..natural).collect();
    }
    // Far enough to find a few of the job's own, near enough to keep longest-first order.
    let window = queue.len().min(3 * natural + 8);
    let budget = queue
        .iter()
        .take(natural)
        .map(|&t| estimate(t))
        .sum::<u64>();
    let mut chosen = vec![0];
    let mut work = estimate(queue[0]);
    let mut taken = vec![false; window];
    taken[0] = true;
    for pass_near in [true, false] {
        for position in 1..window {
            if chosen.len() >= natural {
                break;
            }
            let task = queue[position];
            if taken[position] || (pass_near && !near(task)) {
                continue;
            }
            let expected = estimate(task);
            if work + expected > budget {
                if pass_near {
                    continue;
                }
                break;
            }
            work += expected;
            taken[position] = true;
            chosen.push(position);
        }
    }
    chosen.sort_unstable();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_tasks_get_the_median_of_the_known_ones() {
        let known = [Some(10), None, Some(30), Some(20), None];
        let (estimates, count, unit) = fill_estimates(&known, &[1; 5], 999);
        assert_eq!(estimates, [10, 20, 30, 20, 20]);
        assert_eq!((count, unit), (3, 20));
        assert_eq!(fill_estimates(&[None, None], &[1, 1], 999).0, [999, 999]);
    }

    #[test]
    fn priors_order_a_cold_queue() {
        // No history: a weight-4 task (a Bazel `large` test) is expected to take four times a
        // weight-1 one, so longest-first puts the heavy ones at the head, in listed order.
        let weights = [1, 4, 1, 2, 4, 1];
        let (estimates, count, _) = fill_estimates(&[None; 6], &weights, 1000);
        assert_eq!(count, 0);
        assert_eq!(estimates, [1000, 4000, 1000, 2000, 4000, 1000]);
        assert_eq!(
            initial_queue(&estimates, &[], Order::LongestFirst),
            [1, 4, 3, 0, 2, 5]
        );
    }

    #[test]
    fn priors_are_calibrated_against_the_history() {
        // Known: 300 ms at weight 1, 800 ms at weight 4 (200 per unit): the unit is the median
        // per-unit duration (of 300 and 200, the upper: 300); an unknown weight-2 task expects 600.
        let (estimates, count, unit) =
            fill_estimates(&[Some(300), Some(800), None], &[1, 4, 2], 1000);
        assert_eq!((count, unit), (2, 300));
        assert_eq!(estimates, [300, 800, 600]);
    }

    #[test]
    fn longest_first_with_stable_ties() {
        let estimates = [5, 50, 5, 500, 50];
        assert_eq!(
            initial_queue(&estimates, &[], Order::LongestFirst),
            [3, 1, 4, 0, 2]
        );
        assert_eq!(
            initial_queue(&estimates, &[], Order::Listed),
            [0, 1, 2, 3, 4]
        );
    }

    /// Issue 11: prerequisites come first, longest first among themselves; the rest follow
    /// longest first. The schema's order is kept when asked for.
    #[test]
    fn prerequisites_head_the_queue() {
        let estimates = [5, 1, 9, 3, 7];
        let prerequisite = [false, true, false, true, false];
        assert_eq!(
            initial_queue(&estimates, &prerequisite, Order::LongestFirst),
            [3, 1, 2, 4, 0]
        );
        assert_eq!(
            initial_queue(&estimates, &prerequisite, Order::Listed),
            [0, 1, 2, 3, 4]
        );
    }

    /// Issue 11: compiling first covers the prerequisite's build, within the job's share.
    #[test]
    fn a_compile_first_batch_covers_the_pending_build() {
        assert_eq!(compile_first_target_ms(2_000, 8_000, 50_000), 12_000);
        assert_eq!(compile_first_target_ms(20_000, 8_000, 50_000), 20_000);
        assert_eq!(compile_first_target_ms(2_000, 8_000, 10_000), 10_000);
        // Never below what it would have been.
        assert_eq!(compile_first_target_ms(2_000, 8_000, 1_000), 2_000);
    }

    #[test]
    fn batches_balance_overhead_against_imbalance() {
        // 1000 ms of work, 2 clients, 1 ms overhead: 4 × sqrt(1000 × 1 / 2) ≈ 89 ms.
        assert_eq!(batch_target_ms(1000, 2, 1, 10_000), 89);
        // More overhead, longer batches (4 × sqrt(1000 × 4 / 2) ≈ 178 ms) ...
        assert_eq!(batch_target_ms(1000, 2, 4, 10_000), 178);
        // ... up to half a fair share: 250 ms.
        assert_eq!(batch_target_ms(1000, 2, 10, 10_000), 250);
        // ... and no longer than the session's longest task.
        assert_eq!(batch_target_ms(1000, 2, 10, 120), 120);
        // A large overhead: at least three of them, 300 ms.
        assert_eq!(batch_target_ms(1000, 2, 100, 10_000), 300);
        // Near the end, half a fair share is what limits: 60 ms for 3 clients is 10 ms each.
        assert_eq!(batch_target_ms(60, 3, 1, 10_000), 10);
        // Without overhead there is no reason to batch.
        assert_eq!(batch_target_ms(1000, 2, 0, 10_000), 0);
    }

    /// Regression (issue 11): after a compile-heavy first batch a job reported ~21 s of
    /// overhead; three overheads (63 s) were more than the 40 s left, and it took the whole
    /// queue while the other job sat idle.
    #[test]
    fn the_overhead_floor_never_hands_one_job_more_than_its_fair_share() {
        assert_eq!(batch_target_ms(40_000, 2, 21_000, 25_000), 20_000);
        assert_eq!(batch_target_ms(40_000, 4, 21_000, 25_000), 10_000);
        // Alone, the floor stands: nobody else could take the work.
        assert_eq!(batch_target_ms(40_000, 1, 21_000, 25_000), 63_000);
        // And for any figures, never above W / N with others connected.
        for work in [0, 1, 999, 40_000, 1_000_000] {
            for clients in 2..6 {
                for overhead in [0, 10, 5_000, 100_000] {
                    for longest in [0, 1_000, 1_000_000] {
                        let target = batch_target_ms(work, clients, overhead, longest);
                        assert!(
                            target <= work / clients as u64,
                            "{work} {clients} {overhead}"
                        );
                    }
                }
            }
        }
    }

    /// Issue 11: batches are sized in expected wall time on the job that runs them.
    #[test]
    fn batches_are_sized_in_wall_time_on_the_job() {
        // Every job one test at a time: the same as before.
        for (work, clients, overhead, longest) in
            [(1000, 2, 4, 10_000), (40_000, 2, 21_000, 25_000)]
        {
            assert_eq!(
                job_batch_target_ms(work, 1, clients, overhead, longest),
                batch_target_ms(work, clients as usize, overhead, longest)
            );
        }
        // A 4-core job beside a 1-core one: five slots, 4 × sqrt(10 s × 10 ms / 5) ≈ 565 ms of
        // wall time each; the 4-core job's batch holds four times the work of the other's.
        assert_eq!(job_batch_target_ms(10_000, 1, 5, 10, 10_000), 565);
        assert_eq!(job_batch_target_ms(10_000, 4, 5, 10, 10_000), 2_260);
        // No job takes more than its cores' share of the queue while others are connected.
        for work in [0, 999, 40_000, 1_000_000] {
            for (mine, others) in [(1, 1), (4, 1), (1, 4), (8, 8), (16, 2)] {
                for overhead in [0, 10, 5_000, 100_000] {
                    for longest in [0, 1_000, 1_000_000] {
                        let all = mine + others;
                        let target =
                            job_batch_target_ms(work, mine, u64::from(all), overhead, longest);
                        assert!(
                            target <= work * u64::from(mine) / u64::from(all),
                            "{work} {mine}/{all} {overhead} {longest}: {target}"
                        );
                    }
                }
            }
        }
        // Alone, the floor of three overheads stands, as for a job testing one at a time.
        assert_eq!(job_batch_target_ms(40_000, 4, 4, 21_000, 25_000), 63_000);
        // The longest-task bound is on the batch's work: a 2-core job alone at the start, with
        // 80 s of work and a 7 s test, takes 7 s of work, not two 7 s tests.
        assert_eq!(job_batch_target_ms(80_000, 2, 2, 1000, 7000), 7000);
    }

    /// Issue 11: warm batches are a share of all the unfinished work, so that jobs finish
    /// together in few invocations instead of shrinking with the queue.
    #[test]
    fn warm_batches_share_the_unfinished_work() {
        // Two 1-core jobs, 80 s queued, the other job still running 10 s of its batch: this
        // job's share of the 90 s left is 45 s; it takes three quarters of that.
        assert_eq!(warm_batch_target_ms(80_000, 10_000, 1, 2, 1000), 33_750);
        // Guided self-scheduling would give a quarter of the queue at most.
        assert!(job_batch_target_ms(80_000, 1, 2, 1000, u64::MAX) <= 20_000);
        // Near the end, with the other job busy for 20 s and 5 s queued: all of the queue.
        assert_eq!(warm_batch_target_ms(5_000, 20_000, 1, 2, 1000), 9_375);
        // A 4-core job beside a 1-core one gets four fifths of the share.
        assert_eq!(warm_batch_target_ms(10_000, 0, 4, 5, 10), 6_000);
        // Alone, three quarters of the queue.
        assert_eq!(warm_batch_target_ms(40_000, 0, 1, 1, 1000), 30_000);
        // The floor of three overheads never beats the share.
        assert_eq!(warm_batch_target_ms(2_000, 0, 1, 2, 1000), 1_000);
        for queued in [0, 999, 40_000, 1_000_000] {
            for elsewhere in [0, 5_000, 1_000_000] {
                for (mine, all) in [(1, 1), (1, 2), (4, 5), (8, 16)] {
                    for overhead in [0, 10, 5_000, 100_000] {
                        let target = warm_batch_target_ms(queued, elsewhere, mine, all, overhead);
                        let share = (queued + elsewhere) * u64::from(mine) / all;
                        assert!(
                            target <= share,
                            "{queued} {elsewhere} {mine}/{all}: {target}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_first_client_takes_no_more_than_the_longest_task() {
        // Alone (so far) with 80 s of work and a 1 s overhead: half of everything would be 40 s,
        // 4 × sqrt(80 × 1) ≈ 36 s; the longest task, 7 s, is what bounds it.
        assert_eq!(batch_target_ms(80_000, 1, 1000, 7000), 7000);
    }

    /// Issue 11: a job is given tasks of the groups it already has (a package's targets share
    /// what they build), without taking more work than it would have, and the queue's head first.
    #[test]
    fn batches_prefer_the_jobs_own_groups() {
        // Two packages interleaved, all tasks alike: 10 ms each, head first.
        let queue: VecDeque<TaskId> = (0..20).collect();
        let estimate = |_: TaskId| 10;
        let in_a = |t: TaskId| t.is_multiple_of(2);
        let picked = pick_batch(&queue, estimate, 40, 100, Batching::Guided, |t| !in_a(t));
        // The head (task 0, of package a) still goes first; the rest are the job's package b.
        assert_eq!(picked, [0, 1, 3, 5]);
        let natural = pick_batch(&queue, estimate, 40, 100, Batching::Guided, |_| false);
        assert_eq!(natural, [0, 1, 2, 3], "nothing near: the queue's order");
        // Never more work than the batch would have had: a long task of its own waits.
        let long = |t: TaskId| if t == 3 { 100 } else { 10 };
        let picked = pick_batch(&queue, long, 40, 100, Batching::Guided, |t| {
            t == 3 || t == 5
        });
        assert_eq!(picked, [0, 1, 5]);
        // One at a time, or the whole queue: nothing to choose.
        assert_eq!(
            pick_batch(&queue, estimate, 40, 100, Batching::Single, in_a),
            [0]
        );
        let short: VecDeque<TaskId> = (0..3).collect();
        assert_eq!(
            pick_batch(&short, estimate, 400, 100, Batching::Guided, in_a),
            [0, 1, 2]
        );
    }

    #[test]
    fn batches_fill_up_to_the_target() {
        // One long task and many short ones: 1000 ms + 100 × 10 ms, longest first.
        let mut estimates = vec![1000];
        estimates.extend([10; 100]);
        let estimate = |t: TaskId| estimates[t as usize];
        let all: VecDeque<TaskId> = (0..101).collect();
        let short: VecDeque<TaskId> = (1..101).collect();
        // A task longer than the target goes alone.
        assert_eq!(batch_len(&all, estimate, 250, 1000, Batching::Guided), 1);
        assert_eq!(batch_len(&short, estimate, 250, 1000, Batching::Guided), 25);
        // The client's limit caps it, and there is always at least one.
        assert_eq!(batch_len(&short, estimate, 250, 7, Batching::Guided), 7);
        assert_eq!(batch_len(&short, estimate, 0, 1000, Batching::Guided), 1);
        assert_eq!(batch_len(&short, estimate, 250, 1000, Batching::Single), 1);
        assert_eq!(
            batch_len(&VecDeque::new(), estimate, 250, 1000, Batching::Guided),
            0
        );
    }
}
