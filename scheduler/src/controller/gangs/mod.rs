//! Gangs along the data path: which gang a pod belongs to and its policy
//! (`membership`, with Kubernetes' own PodGroups read by `upstream`), which
//! gang objects a cluster serves (`sources`), how long each gang has waited
//! (`tracker`), the status that reports it (`status` for scheduler-plugins
//! PodGroups, `upstream_status` for Kubernetes PodGroups), the gang plans a
//! new leader finishes or undoes (`plans`), and the gangs found from the
//! workload that owns pods that declare none (`owners`).
//!
//! Pure: fed Kubernetes objects and instants, no client; the scheduler loop
//! does the I/O.

mod membership;
pub mod owners;
mod plans;
pub mod sources;
mod status;
mod tracker;
mod upstream;
mod upstream_status;

pub use membership::{
    gang_of, gang_policy, GangDefaults, GangKey, GangMembership, GangObjects, GangPolicy, GangRule,
    GangSource, GangSpecError, TopologyLevel,
};
pub use owners::{auto_gang_of, AutoGang, AutoGangDecision, OwnerIndex, OwnerKind, OwnerRecord};
pub use plans::{PlanBook, PlanCarrier, PlanVerdict, UndoReason};
pub use status::{podgroup_phase, podgroup_status, PodGroupPhase};
pub use tracker::{GangMemberCounts, GangTracker};
pub use upstream::{GangDisruption, PreemptionPolicy, UpstreamGroup, UpstreamPolicy};
pub use upstream_status::{
    find_initially_scheduled, initially_scheduled, GroupOutcome, CONDITION_INITIALLY_SCHEDULED,
};
