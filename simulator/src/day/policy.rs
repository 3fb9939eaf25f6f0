//! What a policy decides in the day: which waiting jobs are tried, in which
//! order, and (for the policies that preempt) what is evicted to make room.
//! Placement itself is always the engine's, through [`DayState::try_place`].
//!
//! Implemented: [`fifo`](super::fifo) and Kueue-style quota admission without
//! and with borrowing ([`kueue`](super::kueue)). The seams for the other two
//! baselines of issue 17 are this trait and [`DayState::evict`]:
//! `priority` (kube-scheduler's priority preemption, no queues) and `phalanx`
//! (fair turns by dominant share, limits, in-queue preemption, cross-queue
//! reclaim, reservations for starving gangs) plug in here once the engine's
//! queue ledger and victim selection are on main.

use super::state::{DayError, DayState};
use super::workload::{DayWorkload, JobId};

pub trait DayPolicy {
    fn name(&self) -> &'static str;

    /// Whether running pods carry their queue for victim selection (reclaim).
    fn uses_queues(&self) -> bool {
        false
    }

    /// A job arrived (it is waiting in `state`).
    fn on_arrival(&mut self, _state: &DayState<'_>, _job: JobId) {}

    /// A job finished and its room is free.
    fn on_departure(&mut self, _state: &DayState<'_>, _job: JobId) {}

    /// Called once per instant, after that instant's departures and arrivals:
    /// places (and may evict) what the policy chooses.
    fn schedule(&mut self, state: &mut DayState<'_>) -> Result<(), DayError>;
}

/// The policies `phalanx-sim day` compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DayPolicyName {
    Fifo,
    Kueue,
    KueueBorrow,
    Priority,
    Phalanx,
}

impl DayPolicyName {
    pub const ALL: [DayPolicyName; 5] = [
        DayPolicyName::Fifo,
        DayPolicyName::Priority,
        DayPolicyName::Kueue,
        DayPolicyName::KueueBorrow,
        DayPolicyName::Phalanx,
    ];

    pub fn build(self, workload: &DayWorkload) -> Result<Box<dyn DayPolicy>, DayError> {
        Ok(match self {
            DayPolicyName::Fifo => Box::<super::fifo::Fifo>::default(),
            DayPolicyName::Priority => Box::<super::priority::PriorityPreemption>::default(),
            DayPolicyName::Kueue => Box::new(super::kueue::Kueue::new(false)),
            DayPolicyName::KueueBorrow => Box::new(super::kueue::Kueue::new(true)),
            DayPolicyName::Phalanx => Box::new(super::phalanx::Phalanx::new(workload)?),
        })
    }
}
