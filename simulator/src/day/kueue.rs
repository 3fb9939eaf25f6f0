//! Kueue-style quota admission, from Kueue's documented ClusterQueue and
//! cohort semantics (GPUs only, one resource flavor):
//!
//! - Each queue is a ClusterQueue whose `nominalQuota` is its guarantee. A
//!   workload is *admitted* when its queue's admitted usage plus its request
//!   stays within that quota; admission reserves the quota until the workload
//!   finishes, placed or not (Kueue admits by quota, not by free room).
//! - With borrowing (`kueue-borrow`) the four ClusterQueues share a cohort
//!   that also holds the unguaranteed rest of the cluster as its own quota
//!   (Kueue's Cohort resource). A workload that does not fit its queue's
//!   nominal quota may borrow the cohort's unused quota: the cohort's admitted
//!   usage plus the request stays within the cohort's total, and the queue's
//!   borrowing stays within its `borrowingLimit` (the limited queue's limit
//!   minus its guarantee; the others have none). Even within its nominal
//!   quota a workload waits while borrowers hold the cohort's capacity.
//! - Order (`BestEffortFIFO`): by priority, then creation; a workload that does
//!   not fit does not block those behind it. Within one cycle, workloads that
//!   fit without borrowing are admitted before any that borrow.
//! - Admitted workloads are then placed in the same order (kube-scheduler's
//!   priority order, as pods admitted by Kueue are ungated to it); one that
//!   does not fit waits with its quota held.
//! - No preemption in this baseline (`withinClusterQueue` and
//!   `reclaimWithinCohort` are `Never`): a queue below its nominal quota
//!   waits for borrowers to finish.

use std::cmp::Reverse;
use std::collections::BTreeSet;

use super::fit_queues::FitQueues;
use super::policy::DayPolicy;
use super::state::{DayError, DayState};
use super::workload::JobId;

type Order = (Reverse<i32>, u64, JobId);

#[derive(Debug)]
pub struct Kueue {
    borrowing: bool,
    /// Quota held by admitted jobs, per queue (milli-GPU).
    admitted_milli: Vec<u64>,
    admitted: Vec<bool>,
    /// Arrived and not admitted, in admission order.
    unadmitted: BTreeSet<Order>,
    /// Admitted and not placed, in placement order.
    unplaced: FitQueues<(Reverse<i32>, u64)>,
    /// Arrived since the last cycle (all that may newly fit if no quota was freed).
    arrived: Vec<JobId>,
    quota_freed: bool,
}

impl Kueue {
    pub fn new(borrowing: bool) -> Self {
        Kueue {
            borrowing,
            admitted_milli: Vec::new(),
            admitted: Vec::new(),
            unadmitted: BTreeSet::new(),
            unplaced: FitQueues::default(),
            arrived: Vec::new(),
            quota_freed: false,
        }
    }

    fn order(state: &DayState<'_>, id: JobId) -> Order {
        let job = state.job(id);
        (Reverse(job.priority), job.arrival_s, id)
    }

    /// May the job be admitted now, borrowing or not?
    fn fits(&self, state: &DayState<'_>, id: JobId, borrow: bool) -> bool {
        let workload = state.workload();
        let job = state.job(id);
        let terms = &workload.queues[job.queue];
        let after = self.admitted_milli[job.queue] + job.gpu_milli;
        if !self.borrowing {
            // A ClusterQueue of its own: its nominal quota is all there is.
            return after <= terms.guaranteed_milli;
        }
        // In the cohort, what others borrowed is in use even when it is this
        // queue's unused nominal quota: without preemption the workload waits
        // until the cohort has room. The cohort holds every queue's nominal
        // quota plus its own (the rest of the cluster).
        let cohort_used: u64 = self.admitted_milli.iter().sum();
        if cohort_used + job.gpu_milli > workload.capacity_milli {
            return false;
        }
        if after <= terms.guaranteed_milli {
            return true;
        }
        if !borrow {
            return false;
        }
        terms.limit_milli.is_none_or(|limit| after <= limit)
    }

    fn admit(&mut self, state: &DayState<'_>, id: JobId) {
        let job = state.job(id);
        self.admitted_milli[job.queue] += job.gpu_milli;
        self.admitted[id] = true;
        let order = Self::order(state, id);
        self.unadmitted.remove(&order);
        self.unplaced.insert(state, (order.0, order.1), id);
    }

    /// Admits what fits, in order: first what needs no borrowing, then (with
    /// borrowing) what does.
    fn admission_cycle(&mut self, state: &DayState<'_>) {
        let candidates: Vec<JobId> = if self.quota_freed {
            self.unadmitted.iter().map(|&(_, _, id)| id).collect()
        } else {
            let mut new: Vec<Order> = self
                .arrived
                .iter()
                .map(|&id| Self::order(state, id))
                .collect();
            new.sort();
            new.into_iter().map(|(_, _, id)| id).collect()
        };
        let passes: &[bool] = if self.borrowing {
            &[false, true]
        } else {
            &[false]
        };
        for &borrow in passes {
            for &id in &candidates {
                if !self.admitted[id] && self.fits(state, id, borrow) {
                    self.admit(state, id);
                }
            }
        }
        self.arrived.clear();
        self.quota_freed = false;
    }
}

impl DayPolicy for Kueue {
    fn name(&self) -> &'static str {
        if self.borrowing {
            "kueue-borrow"
        } else {
            "kueue"
        }
    }

    fn on_arrival(&mut self, state: &DayState<'_>, job: JobId) {
        if self.admitted.is_empty() {
            self.admitted = vec![false; state.workload().jobs.len()];
            self.admitted_milli = vec![0; state.workload().queues.len()];
        }
        self.unadmitted.insert(Self::order(state, job));
        self.arrived.push(job);
    }

    fn on_departure(&mut self, state: &DayState<'_>, job: JobId) {
        let j = state.job(job);
        self.admitted_milli[j.queue] -= j.gpu_milli;
        self.admitted[job] = false;
        self.quota_freed = true;
    }

    fn schedule(&mut self, state: &mut DayState<'_>) -> Result<(), DayError> {
        self.admission_cycle(state);
        self.unplaced.place_in_order(state)?;
        Ok(())
    }
}

/// Admitted quota per queue (for tests).
impl Kueue {
    pub fn admitted_milli(&self) -> &[u64] {
        &self.admitted_milli
    }
}
