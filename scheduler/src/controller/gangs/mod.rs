//! Gangs along the data path: which gang a pod belongs to and its policy
//! (`membership`), how long each gang has waited (`tracker`), and the
//! scheduler-plugins PodGroup status that reports it (`status`), the gang
//! plans a new leader finishes or undoes (`plans`), and the gangs found from
//! the workload that owns pods that declare none (`owners`).
//!
//! Pure: fed Kubernetes objects and instants, no client; the scheduler loop
//! does the I/O.

mod membership;
pub mod owners;
mod plans;
mod status;
mod tracker;

pub use membership::{
    gang_of, gang_policy, upstream_gang_of, upstream_min_member, upstream_workload_min_member,
    GangDefaults, GangKey, GangMembership, GangPolicy, GangSource, GangSpecError, UpstreamGroupRef,
};
pub use owners::{auto_gang_of, AutoGang, AutoGangDecision, OwnerIndex, OwnerKind, OwnerRecord};
pub use plans::{PlanBook, PlanCarrier, PlanVerdict, UndoReason};
pub use status::{podgroup_phase, podgroup_status, PodGroupPhase};
pub use tracker::{GangMemberCounts, GangTracker};
