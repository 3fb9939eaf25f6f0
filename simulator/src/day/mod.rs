//! A cluster day (issue 17): the openb pod list replayed in time through the
//! engine, with teams sharing the cluster through queues, under one of several
//! admission and ordering policies.
//!
//! [`workload`] turns the trace into jobs: a pod arrives at its
//! `creation_time` (divided by the load factor, so that a sparse trace
//! contends) and, once placed, runs for as long as it ran in the trace, then
//! leaves. [`tenants`] maps pods to four queues and QoS classes to
//! priorities, and sets the queues' terms; large gangs are injected at fixed
//! times so that their wait is measured. [`state`] is the replay: events in
//! time order, placements through the engine's `schedule_one` and
//! `place_gang` with the phalanx placement policy (the code the scheduler
//! runs), departures through `ClusterSnapshot::release`. A [`DayPolicy`]
//! decides what is tried, in which order, and what is evicted; [`metrics`]
//! records what the report shows.

pub mod fifo;
pub mod fit_queues;
pub mod kueue;
pub mod metrics;
pub mod phalanx;
pub mod policy;
pub mod priority;
pub mod report;
pub mod state;
pub mod tenants;
pub mod workload;

pub use policy::{DayPolicy, DayPolicyName};
pub use state::{run_day, DayError, DayResult, DayState};
pub use workload::{DayConfig, DayJob, DayWorkload, JobId};

#[cfg(test)]
mod tests;
