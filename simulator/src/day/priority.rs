//! kube-scheduler's priority preemption, no queues: waiting pods are tried by
//! priority, then arrival (a gang as one unit); one that does not fit may
//! evict running pods of strictly lower priority, chosen by the engine's
//! victim selection (`plan_preemption`, the scheduler's own: fewest and least
//! valuable victims, whole gangs only), and takes their room at once. Quotas
//! and limits are ignored. At most [`PREEMPTIONS_PER_INSTANT`] preemption
//! attempts are made per instant (a real scheduler's cycles take time too),
//! and a pod that found no victims asks again after
//! [`PREEMPTION_BACKOFF_S`](super::state::PREEMPTION_BACKOFF_S); the minimum
//! runtime is the scheduler's default, 0.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use super::fit_queues::FitQueues;
use super::policy::DayPolicy;
use super::state::{DayError, DayState};
use super::workload::JobId;

/// Preemption attempts per instant of the day, for this policy and `phalanx`.
pub const PREEMPTIONS_PER_INSTANT: usize = 4;

/// Running jobs per priority, to skip preemption when nothing lower runs.
#[derive(Debug, Default)]
pub struct RunningPriorities(BTreeMap<i32, usize>);

impl RunningPriorities {
    pub fn add(&mut self, priority: i32) {
        *self.0.entry(priority).or_default() += 1;
    }

    pub fn remove(&mut self, priority: i32) {
        if let Some(n) = self.0.get_mut(&priority) {
            *n -= 1;
            if *n == 0 {
                self.0.remove(&priority);
            }
        }
    }

    pub fn any_below(&self, priority: i32) -> bool {
        self.0
            .keys()
            .next()
            .is_some_and(|&lowest| lowest < priority)
    }
}

#[derive(Debug, Default)]
pub struct PriorityPreemption {
    waiting: FitQueues<(Reverse<i32>, u64)>,
    running: RunningPriorities,
}

impl PriorityPreemption {
    fn order(state: &DayState<'_>, id: JobId) -> (Reverse<i32>, u64) {
        let job = state.job(id);
        (Reverse(job.priority), job.arrival_s)
    }

    fn placed(&mut self, state: &DayState<'_>, placed: &[JobId]) {
        for &id in placed {
            self.running.add(state.job(id).priority);
        }
    }
}

impl DayPolicy for PriorityPreemption {
    fn name(&self) -> &'static str {
        "priority"
    }

    fn on_arrival(&mut self, state: &DayState<'_>, job: JobId) {
        self.waiting.insert(state, Self::order(state, job), job);
    }

    fn on_departure(&mut self, state: &DayState<'_>, job: JobId) {
        self.running.remove(state.job(job).priority);
    }

    fn schedule(&mut self, state: &mut DayState<'_>) -> Result<(), DayError> {
        let placed = self.waiting.place_in_order(state)?;
        self.placed(state, &placed);
        let mut attempts = 0;
        for (order, id) in self.waiting.heads_in_order() {
            if attempts == PREEMPTIONS_PER_INSTANT {
                break;
            }
            let priority = state.job(id).priority;
            if !self.running.any_below(priority) || !state.may_ask_for_victims(id) {
                continue;
            }
            attempts += 1;
            let Some(victims) = state.preempt_for(id, None, 0)? else {
                continue;
            };
            self.waiting.take(state, order, id);
            self.running.add(priority);
            for victim in victims {
                self.running.remove(state.job(victim).priority);
                self.waiting
                    .insert(state, Self::order(state, victim), victim);
            }
        }
        if attempts > 0 {
            // Victims may have left more room than their preemptors took.
            let placed = self.waiting.place_in_order(state)?;
            self.placed(state, &placed);
        }
        Ok(())
    }
}
