//! `phalanx-api`: the contract between the Phalanx components.
//!
//! Types only, no I/O: the extended resources and annotations every component
//! agrees on, the `GpuNode` CRD the device plugin publishes and the scheduler
//! reads, the scheduler-plugins `PodGroup` the scheduler honours, and the GPU
//! assignment annotation, and the decision record `kubectl phalanx why` reads. The Helm chart's CRD YAML is generated from these types.

mod assignment;
mod decision;
mod gang_plan;
mod gpunode;
mod podgroup;
mod queue;
mod resources;

pub use assignment::{AssignedGpu, AssignmentParseError, GpuAssignmentAnnotation};
pub use decision::{
    GangProgress, NearestNode, QueuePosition, SchedulingDecision, ANNOTATION_DECISION,
};
pub use gang_plan::{GangPlanAnnotation, GangPlanParseError, ANNOTATION_GANG_PLAN};
pub use gpunode::{GpuDeviceSpec, GpuDeviceStatus, GpuHolder, GpuNode, GpuNodeSpec, GpuNodeStatus};
pub use podgroup::{
    PodGroup, PodGroupSpec, PodGroupStatus, ANNOTATION_AUTO_GANG, ANNOTATION_GANG_MIN_MEMBER,
    ANNOTATION_GANG_NAME, ANNOTATION_GANG_TIMEOUT_SECONDS, ANNOTATION_GANG_TOPOLOGY_KEY,
    LABEL_POD_GROUP,
};
pub use queue::{
    gpus_from_milli, Queue, QueueGpuStatus, QueuePending, QueueResourceQuota, QueueResourceStatus,
    QueueSpec, QueueStatus, CONDITION_QUEUE_VALID, LABEL_QUEUE, MAX_OVER_QUOTA_WEIGHT,
};
pub use resources::*;
pub mod autoscaler;
pub mod crds;
pub use autoscaler::{InferenceAutoscaler, InferenceAutoscalerSpec, InferenceAutoscalerStatus};
