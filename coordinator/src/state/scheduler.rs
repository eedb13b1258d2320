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

/// Expected durations for every task: its history where known, else the median of the known
/// ones, else `default_ms`. Returns the estimates and how many were known.
pub fn fill_estimates(known: &[Option<u64>], default_ms: u64) -> (Vec<u64>, usize) {
    let mut sorted: Vec<u64> = known.iter().flatten().copied().collect();
    sorted.sort_unstable();
    let fallback = if sorted.is_empty() {
        default_ms
    } else {
        sorted[sorted.len() / 2]
    };
    let estimates = known.iter().map(|k| k.unwrap_or(fallback)).collect();
    (estimates, sorted.len())
}

/// The initial queue: task ids in the given order. Ties keep the schema's order.
pub fn initial_queue(estimates: &[u64], order: Order) -> VecDeque<TaskId> {
    let mut ids: Vec<TaskId> = (0..estimates.len() as TaskId).collect();
    if order == Order::LongestFirst {
        ids.sort_by_key(|&id| std::cmp::Reverse(estimates[id as usize]));
    }
    ids.into()
}

/// How many tasks from the head of the queue make the next batch.
///
/// Guided: the batch's expected work aims at `queued_work / (2 × clients)` — half a fair share,
/// so there are always batches left to even out — but at least three times the client's
/// per-batch overhead, so the overhead stays small beside the work. Always at least one task,
/// at most `limit`.
pub fn batch_len(
    queue: &VecDeque<TaskId>,
    estimates: &[u64],
    queued_work_ms: u64,
    clients: usize,
    overhead_ms: u64,
    limit: u32,
    batching: Batching,
) -> usize {
    if queue.is_empty() {
        return 0;
    }
    if batching == Batching::Single {
        return 1;
    }
    let share = queued_work_ms / (2 * clients.max(1) as u64);
    let target = share.max(3 * overhead_ms);
    let mut len = 0;
    let mut work = 0;
    for &task in queue.iter().take(limit.max(1) as usize) {
        let estimate = estimates[task as usize];
        if len > 0 && work + estimate > target {
            break;
        }
        work += estimate;
        len += 1;
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_tasks_get_the_median_of_the_known_ones() {
        let (estimates, known) = fill_estimates(&[Some(10), None, Some(30), Some(20), None], 999);
        assert_eq!(estimates, [10, 20, 30, 20, 20]);
        assert_eq!(known, 3);
        assert_eq!(fill_estimates(&[None, None], 999).0, [999, 999]);
    }

    #[test]
    fn longest_first_with_stable_ties() {
        let estimates = [5, 50, 5, 500, 50];
        assert_eq!(
            initial_queue(&estimates, Order::LongestFirst),
            [3, 1, 4, 0, 2]
        );
        assert_eq!(initial_queue(&estimates, Order::Listed), [0, 1, 2, 3, 4]);
    }

    #[test]
    fn batches_aim_at_half_a_fair_share_and_amortise_overhead() {
        let estimates = vec![10; 100];
        let queue: VecDeque<TaskId> = (0..100).collect();
        // 1000 ms of work, 2 clients: aim at 250 ms = 25 tasks.
        assert_eq!(
            batch_len(&queue, &estimates, 1000, 2, 0, 1000, Batching::Guided),
            25
        );
        // The client's limit caps it.
        assert_eq!(
            batch_len(&queue, &estimates, 1000, 2, 0, 7, Batching::Guided),
            7
        );
        // Little work left: the overhead floor keeps batches worth starting (3 × 20 ms = 6 tasks).
        assert_eq!(
            batch_len(&queue, &estimates, 40, 2, 20, 1000, Batching::Guided),
            6
        );
        // A task longer than the target still goes, alone.
        let long = vec![5000, 10, 10];
        let queue: VecDeque<TaskId> = (0..3).collect();
        assert_eq!(
            batch_len(&queue, &long, 5020, 4, 0, 1000, Batching::Guided),
            1
        );
        assert_eq!(
            batch_len(&queue, &long, 5020, 4, 0, 1000, Batching::Single),
            1
        );
        assert_eq!(
            batch_len(&VecDeque::new(), &long, 0, 4, 0, 1000, Batching::Guided),
            0
        );
    }
}
