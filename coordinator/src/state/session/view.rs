//! What a session shows on the dashboard (see [`crate::state::view`]).

use super::*;
use crate::state::view::{
    id_of, label_of, BatchView, Counts, FailingTask, JobView, SessionDetail, SessionSummary,
    TaskBar,
};

/// The most task bars one timeline holds; a session with more shows its first batches.
pub(crate) const MAX_BARS: usize = 5000;

impl Session {
    fn ms_since_start(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.created_at).as_millis() as u64
    }

    /// The session's line in the list.
    pub(crate) fn summary(&self, now: Instant) -> SessionSummary {
        let failed = self
            .slots
            .iter()
            .filter(|s| matches!(s, Slot::Done(r) if !r.result.outcome.is_success()))
            .count() as u32;
        SessionSummary {
            id: id_of(&self.key),
            label: label_of(&self.key),
            schema_name: self.schema.name.clone(),
            scope: self.history_scope.clone(),
            tasks: self.slots.len() as u32,
            finished: (self.slots.len() - self.remaining) as u32,
            connected: self.connected as u32,
            members: self.members.len() as u32,
            age_ms: self.ms_since_start(now),
            duration_ms: self.completed_at.map(|done| self.ms_since_start(done)),
            failed,
            passed: self.completed_at.map(|_| failed == 0),
        }
    }

    /// The session's timeline and failures.
    pub(crate) fn detail(&self, now: Instant) -> SessionDetail {
        let lanes: Vec<MemberIdx> = self.members.keys().copied().collect();
        let lane_of = |idx: MemberIdx| lanes.iter().position(|&m| m == idx).unwrap_or(0);
        let text = |task: TaskId| self.schema.tasks[task as usize].task.clone();
        // Batches: the counted results that share a member and a lease time.
        let mut batches: BTreeMap<(MemberIdx, Instant), BatchView> = BTreeMap::new();
        let mut bars = 0;
        for span in &self.spans {
            let Slot::Done(record) = &self.slots[span.task as usize] else {
                continue;
            };
            if bars == MAX_BARS {
                break;
            }
            bars += 1;
            let batch = batches
                .entry((span.member, span.leased))
                .or_insert_with(|| BatchView {
                    job: lane_of(span.member),
                    start_ms: self.ms_since_start(span.leased),
                    end_ms: 0,
                    running: false,
                    tasks: Vec::new(),
                });
            let reported_ms = self.ms_since_start(span.reported);
            batch.end_ms = batch.end_ms.max(reported_ms);
            batch.tasks.push(TaskBar {
                task: text(span.task),
                outcome: Some(record.result.outcome.label()),
                success: record.result.outcome.is_success(),
                duration_ms: record.result.duration_ms,
                executed: record.result.executed,
                reported_ms,
            });
        }
        // Leases still out: batches running now.
        let now_ms = self.ms_since_start(now);
        for (task, slot) in self.slots.iter().enumerate() {
            let Slot::Leased { holder, since, .. } = slot else {
                continue;
            };
            if bars == MAX_BARS {
                break;
            }
            bars += 1;
            let batch = batches
                .entry((*holder, *since))
                .or_insert_with(|| BatchView {
                    job: lane_of(*holder),
                    start_ms: self.ms_since_start(*since),
                    end_ms: now_ms,
                    running: true,
                    tasks: Vec::new(),
                });
            batch.running = true;
            batch.end_ms = batch.end_ms.max(now_ms);
            batch.tasks.push(TaskBar {
                task: text(task as TaskId),
                outcome: None,
                success: true,
                duration_ms: now_ms.saturating_sub(self.ms_since_start(*since)),
                executed: true,
                reported_ms: now_ms,
            });
        }
        let mut batches: Vec<BatchView> = batches.into_values().collect();
        batches.sort_by_key(|b| (b.start_ms, b.job));
        let failing = self
            .slots
            .iter()
            .filter_map(|slot| match slot {
                Slot::Done(record) if !record.result.outcome.is_success() => Some(FailingTask {
                    task: text(record.task),
                    outcome: record.result.outcome.label(),
                    job: record.client.clone(),
                    log_tail: record.result.log_tail.clone(),
                }),
                _ => None,
            })
            .collect();
        SessionDetail {
            summary: self.summary(now),
            jobs: self
                .members
                .values()
                .map(|m| JobView {
                    name: m.client_id.clone(),
                    connected: m.conn.is_some(),
                })
                .collect(),
            batches,
            ideal_makespan_ms: self.ideal_makespan_ms(),
            failing,
            queued: self.queue.len() as u32,
        }
    }

    /// `max(executed work / members, longest executed task)`.
    fn ideal_makespan_ms(&self) -> u64 {
        let (mut total, mut longest) = (0u64, 0u64);
        for slot in &self.slots {
            if let Slot::Done(record) = slot {
                if let Some(cost) = record.result.cost_ms() {
                    total += cost;
                    longest = longest.max(cost);
                }
            }
        }
        (total / self.members.len().max(1) as u64).max(longest)
    }

    /// When it was created (or restored).
    pub(crate) fn created_at(&self) -> Instant {
        self.created_at
    }

    /// What this session has done.
    pub(crate) fn counts(&self) -> &Counts {
        &self.counts
    }
}
