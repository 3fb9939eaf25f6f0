//! Phalanx's queues, as the scheduler runs them (issue 17), on the engine's
//! `QueueLedger` and victim selection:
//!
//! - Queues take turns by the ledger's `turn_key` (dominant share of usage over
//!   fair share, fair shares refreshed once per instant as the scheduler does
//!   once per cycle); inside a queue, by priority then arrival; a gang is one
//!   unit. A job that would take its queue past its limit waits
//!   (`check_limit`).
//! - A job that does not fit may preempt lower-priority jobs of its own queue,
//!   or reclaim from queues over their guarantee while its queue stays within
//!   its own (`plan_preemption` with the ledger), whole gangs only; at most
//!   [`PREEMPTIONS_PER_INSTANT`] attempts per instant, and again after
//!   [`PREEMPTION_BACKOFF_S`](super::state::PREEMPTION_BACKOFF_S) when none
//!   was found; minimum runtime 0 (the scheduler's default).
//! - A gang that has waited [`STARVING_GANG_S`] (the scheduler's default
//!   `starvingGangSeconds`) gets the nodes it would use held for it: nothing
//!   of its priority or lower is placed there until it fits.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use phalanx_engine::queues::{QueueId, QueueLedger, QueueResource, ResourceAmounts};

use super::fit_queues::FitQueues;
use super::policy::DayPolicy;
use super::priority::{RunningPriorities, PREEMPTIONS_PER_INSTANT};
use super::state::{DayError, DayState};
use super::tenants::queue_tree;
use super::workload::{DayWorkload, JobId};

/// Seconds a gang waits before nodes are held for it.
pub const STARVING_GANG_S: u64 = 60;

type Order = (Reverse<i32>, u64);

#[derive(Debug)]
pub struct Phalanx {
    ledger: QueueLedger,
    ids: Vec<QueueId>,
    capacity: ResourceAmounts,
    waiting: Vec<FitQueues<Order>>,
    running: Vec<RunningPriorities>,
}

fn amounts(gpu_milli: u64) -> ResourceAmounts {
    if gpu_milli == 0 {
        ResourceAmounts::new()
    } else {
        BTreeMap::from([(QueueResource::GpuMilli, gpu_milli)])
    }
}

impl Phalanx {
    pub fn new(workload: &DayWorkload) -> Result<Self, DayError> {
        let tree = queue_tree(&workload.queues).map_err(|e| DayError::Config(e.to_string()))?;
        let ids = workload
            .queues
            .iter()
            .map(|q| {
                tree.id(&q.name)
                    .ok_or_else(|| DayError::Config(format!("queue {} is not in the tree", q.name)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let n = ids.len();
        Ok(Phalanx {
            ledger: QueueLedger::new(tree),
            ids,
            capacity: amounts(workload.capacity_milli),
            waiting: (0..n).map(|_| FitQueues::default()).collect(),
            running: (0..n).map(|_| RunningPriorities::default()).collect(),
        })
    }

    fn order(state: &DayState<'_>, id: JobId) -> Order {
        let job = state.job(id);
        (Reverse(job.priority), job.arrival_s)
    }

    fn started(&mut self, state: &DayState<'_>, id: JobId) {
        let job = state.job(id);
        let q = self.ids[job.queue];
        self.ledger.remove_pending(q, &amounts(job.gpu_milli));
        self.ledger.add_usage(q, &amounts(job.gpu_milli));
        self.running[job.queue].add(job.priority);
    }

    fn stopped(&mut self, state: &DayState<'_>, id: JobId) {
        let job = state.job(id);
        self.ledger
            .remove_usage(self.ids[job.queue], &amounts(job.gpu_milli));
        self.running[job.queue].remove(job.priority);
    }

    fn waits(&mut self, state: &DayState<'_>, id: JobId) {
        let job = state.job(id);
        self.ledger
            .add_pending(self.ids[job.queue], &amounts(job.gpu_milli));
        self.waiting[job.queue].insert(state, Self::order(state, id), id);
    }

    /// May preemption or reclaim find anything for this job?
    fn may_preempt(&self, state: &DayState<'_>, id: JobId) -> bool {
        let job = state.job(id);
        self.running[job.queue].any_below(job.priority)
            || self
                .ledger
                .may_reclaim(self.ids[job.queue], &amounts(job.gpu_milli))
    }
}

impl DayPolicy for Phalanx {
    fn name(&self) -> &'static str {
        "phalanx"
    }

    fn uses_queues(&self) -> bool {
        true
    }

    fn on_arrival(&mut self, state: &DayState<'_>, job: JobId) {
        self.waits(state, job);
    }

    fn on_departure(&mut self, state: &DayState<'_>, job: JobId) {
        self.stopped(state, job);
    }

    fn schedule(&mut self, state: &mut DayState<'_>) -> Result<(), DayError> {
        self.ledger.refresh_fair_shares(self.capacity.clone());
        let mut heads: Vec<_> = self.waiting.iter().map(|w| w.heads(state)).collect();
        let mut attempts = 0;
        // The queue whose turn it is: least turn key among those with a candidate.
        while let Some(q) = (0..heads.len())
            .filter(|&q| !heads[q].is_empty())
            .min_by(|&a, &b| {
                self.ledger
                    .turn_key(self.ids[a])
                    .cmp(&self.ledger.turn_key(self.ids[b]))
            })
        {
            let Some(Reverse((order, id))) = heads[q].pop() else {
                break;
            };
            let job = state.job(id);
            if state.known_unfit(&state.fit_key(id)) && !self.may_preempt(state, id) {
                continue;
            }
            if self
                .ledger
                .check_limit(self.ids[q], &amounts(job.gpu_milli))
                .is_err()
            {
                // Over its queue's limit: the rest of its group waits too.
                continue;
            }
            if state.try_place(id)? {
                self.started(state, id);
                if let Some(next) = self.waiting[q].take(state, order, id) {
                    heads[q].push(Reverse(next));
                }
                continue;
            }
            if attempts < PREEMPTIONS_PER_INSTANT
                && self.may_preempt(state, id)
                && state.may_ask_for_victims(id)
            {
                attempts += 1;
                let found = state.preempt_for(id, Some(&self.ledger), 0)?;
                if let Some(victims) = found {
                    for victim in victims {
                        self.stopped(state, victim);
                        self.waits(state, victim);
                    }
                    self.started(state, id);
                    if let Some(next) = self.waiting[q].take(state, order, id) {
                        heads[q].push(Reverse(next));
                    }
                    // Evictions freed room: every group may fit again.
                    heads = self.waiting.iter().map(|w| w.heads(state)).collect();
                    continue;
                }
            }
            if job.members.len() > 1 && state.now() - job.arrival_s >= STARVING_GANG_S {
                state.hold_for(id);
            }
        }
        Ok(())
    }
}
