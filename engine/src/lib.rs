//! The pure placement engine.
//!
//! * [`ClusterSnapshot`] holds nodes with per-GPU accounting (milli-GPU free per
//!   device, model, memory, health) and applies placements and releases in O(GPUs
//!   of one node).
//! * [`PodDemand`] is what a pod asks for: CPU, memory, whole GPUs or a milli share
//!   of one GPU, and the GPU models it may use.
//! * [`PlacementPolicy`] scores feasible nodes and picks the GPUs inside the chosen
//!   node; [`PolicyName`] lists the built-in ones (the FGD paper's baselines, FGD,
//!   and `phalanx`).
//! * [`schedule_one`] runs one scheduling cycle: filter, score, break ties by the
//!   snapshot's fixed node ranks, and return a [`Placement`] naming node and GPUs.
//! * Pod affinity, anti-affinity and topology spread ([`InterPodSpec`]) filter and
//!   score with kube-scheduler's semantics, from per-domain counts the snapshot
//!   keeps on place and release.
//! * [`place_gang`] places a gang's members all on one snapshot or none of them,
//!   tried domain by domain over a topology of node labels listed tightest first
//!   ([`TopologyLevel`]: NVLink clique, rack, zone): tightest level first, and in
//!   a level the domain with the least free capacity that still holds the gang; a
//!   required level confines the gang to one of its domains.
//! * [`queues`] divides the cluster among teams' queues (guarantees, limits,
//!   over-quota weights, a hierarchy) and orders their turns.
//! * [`preemption`] chooses the fewest, least valuable running pods (whole
//!   gangs or none) whose eviction lets a waiting pod or gang fit, for
//!   priority preemption inside a queue and reclaim across queues.
//! * [`batch_order`] orders pods that wait together before each is placed
//!   (the simulator's batch methodology).
//! * [`ClusterGauges`] adds up a snapshot's GPUs by model and node pool
//!   (capacity, allocated, fragmented by the simulator's measure, shared),
//!   recomputing only the nodes that changed, for the scheduler's gauges.
//! * [`replicas_that_fit`] counts how many copies of one pod the snapshot can take
//!   (the autoscaler's capacity check), leaving the snapshot as it was.
//!
//! Every node keeps a generation counter that changes whenever its state does;
//! policies cache per-(node, pod shape) scores against it, so a placement costs
//! recomputation on one node only.

mod batch;
mod capacity;
mod cluster_gauges;
mod constraints;
mod cycle;
mod diagnosis;
mod error;
mod fragmentation;
mod gang;
mod gpu_select;
mod host_ports;
mod inter_pod;
mod label_selector;
mod model;
mod node;
mod pod;
pub mod policy;
pub mod preemption;
mod preferences;
pub mod queues;
mod scalar_resources;
mod snapshot;
#[cfg(test)]
mod test_support;
mod volumes;
mod workload;

pub use batch::{batch_order, BatchOrder};
pub use capacity::{replicas_that_fit, ReplicaFit};
pub use cluster_gauges::{ClusterGauges, GaugeGroup, GpuTally};
pub use constraints::{
    NodePlacementRules, NodeSelectorRequirement, PreferredNodeTerm, SelectorOperator, Taint,
    TaintEffect, Toleration, TolerationOperator,
};
pub use cycle::{
    schedule_one, schedule_one_among, unschedulable_message, CycleOutcome, CycleScratch,
};
pub use diagnosis::{diagnose, Diagnosis, Lack, NearMiss};
pub use error::EngineError;
pub use fragmentation::node_fragmentation;
pub use gang::{
    place_gang, DomainOrder, GangDomain, GangError, GangPlan, GangSpec, GangUnschedulable,
    TopologyLevel,
};
pub use host_ports::{HostIp, HostPort, PortProtocol};
pub use inter_pod::{
    InterPodSpec, NamespaceScope, NodeInclusionPolicy, PodAffinityRules, PodAffinityTerm,
    TopologySpreadConstraint, WeightedPodAffinityTerm, WhenUnsatisfiable,
};
pub use label_selector::{LabelOperator, LabelRequirement, LabelSelector};
pub use model::{GpuModelId, GpuModelRegistry, ModelConstraint};
pub use node::{
    Gpu, GpuSample, GpuSpec, HeldRoom, NodeId, NodeReservation, NodeSpec, NodeState,
    TelemetryRejection, TelemetryVerdict, MAX_TELEMETRY_CLOCK_SKEW_MS, MAX_UNKNOWN_GPU_MEMORY_MIB,
};
pub use pod::{GpuDemand, PodDemand, PodShape};
pub use policy::{build_policy, PlacementPolicy, PolicyConfig, PolicyName, WorkloadSource};
pub use preferences::{
    INTER_POD_SCORE_WEIGHT, NODE_AFFINITY_SCORE_WEIGHT, POLICY_SCORE_WEIGHT,
    TAINT_TOLERATION_SCORE_WEIGHT,
};
pub use scalar_resources::{NodeScalar, ResourceName, ScalarRequest};
pub use snapshot::{ClusterSnapshot, GpuAssignment, GpuShare, Placement, UnfitReason};
pub use volumes::{
    claim_key, AccessMode, BindingMode, ClaimSpec, PodVolumes, StorageClassSpec, VolumeBinding,
    VolumeCatalogue, VolumeMode, VolumeRefusal, VolumeSpec, NO_PROVISIONER,
};
pub use workload::{TypicalPod, WorkloadModel};

/// Milli-GPU units in one GPU.
pub const MILLI_PER_GPU: u32 = 1000;
