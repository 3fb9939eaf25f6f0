//! The cluster snapshot: every node's accounting, and the only place it changes.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use super::constraints::{tolerates_all, TaintEffect, Toleration, TolerationOperator};
use super::host_ports::ports_free;
use super::inter_pod::{same_pod, NamespaceLabels, TermIndex};
use super::model::{GpuModelId, GpuModelRegistry};
use super::node::{
    Gpu, GpuSample, NodeId, NodeReservation, NodeSpec, NodeState, TelemetryVerdict,
    MAX_GPUS_PER_NODE,
};
use super::pod::{GpuDemand, PodDemand};
use super::scalar_resources::{self, ResourceName};
use super::volumes::VolumeCatalogue;
use super::{EngineError, MILLI_PER_GPU};

/// Milli taken from one GPU by a placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GpuShare {
    /// Device index on the node.
    pub index: u8,
    pub milli: u32,
}

/// The GPUs a placement takes, inline so that placing allocates nothing.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct GpuAssignment {
    len: u8,
    shares: [GpuShare; MAX_GPUS_PER_NODE],
}

impl GpuAssignment {
    pub fn push(&mut self, share: GpuShare) {
        if (self.len as usize) < MAX_GPUS_PER_NODE {
            self.shares[self.len as usize] = share;
            self.len += 1;
        }
    }

    pub fn as_slice(&self) -> &[GpuShare] {
        &self.shares[..self.len as usize]
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// `count` GPUs given by index, each taking `milli`.
    pub fn from_indices(indices: impl IntoIterator<Item = usize>, milli: u32) -> Self {
        let mut out = GpuAssignment::default();
        for index in indices {
            out.push(GpuShare {
                index: index as u8,
                milli,
            });
        }
        out
    }
}

impl fmt::Debug for GpuAssignment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

/// Where a pod goes: the node and the exact GPUs and shares on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub node: NodeId,
    pub gpus: GpuAssignment,
}

/// Why a pod does not fit a node, in the words kube-scheduler users know.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UnfitReason {
    Unschedulable,
    UntoleratedTaint,
    NodeAffinityMismatch,
    /// NodePorts: a wanted host port is taken on the node.
    HostPortConflict,
    InsufficientCpu,
    InsufficientMemory,
    TooManyPods,
    GpuModelMismatch,
    InsufficientWholeGpus,
    InsufficientGpuShare,
    TopologySpreadMissingLabel,
    TopologySpreadSkew,
    PodAffinity,
    PodAntiAffinity,
    ExistingPodsAntiAffinity,
    // Volumes (engine/src/volumes): pod-level first, then kube-scheduler's
    // node filter order.
    VolumeClaimUnusable,
    UnboundImmediateClaims,
    ReadWriteOncePodConflict,
    ExceedMaxVolumeCount,
    VolumeNodeAffinityConflict,
    NoAvailableVolumes,
    VolumeZoneConflict,
    /// Held for a preempting pod or a waiting gang of equal or higher priority.
    Reserved,
    /// Ephemeral storage, huge pages or an extended resource, by name.
    InsufficientResource(ResourceName),
}

impl UnfitReason {
    /// Every reason without a payload, in declaration order; cycles count nodes
    /// per reason in an array indexed by [`Self::fixed_index`].
    pub const ALL: [UnfitReason; 23] = [
        UnfitReason::Unschedulable,
        UnfitReason::UntoleratedTaint,
        UnfitReason::NodeAffinityMismatch,
        UnfitReason::HostPortConflict,
        UnfitReason::InsufficientCpu,
        UnfitReason::InsufficientMemory,
        UnfitReason::TooManyPods,
        UnfitReason::GpuModelMismatch,
        UnfitReason::InsufficientWholeGpus,
        UnfitReason::InsufficientGpuShare,
        UnfitReason::TopologySpreadMissingLabel,
        UnfitReason::TopologySpreadSkew,
        UnfitReason::PodAffinity,
        UnfitReason::PodAntiAffinity,
        UnfitReason::ExistingPodsAntiAffinity,
        UnfitReason::VolumeClaimUnusable,
        UnfitReason::UnboundImmediateClaims,
        UnfitReason::ReadWriteOncePodConflict,
        UnfitReason::ExceedMaxVolumeCount,
        UnfitReason::VolumeNodeAffinityConflict,
        UnfitReason::NoAvailableVolumes,
        UnfitReason::VolumeZoneConflict,
        UnfitReason::Reserved,
    ];

    /// The position in [`Self::ALL`]; `None` for a reason that names a resource.
    /// A match, not a search: cycles call it for every node that does not fit.
    pub fn fixed_index(&self) -> Option<usize> {
        Some(match self {
            UnfitReason::Unschedulable => 0,
            UnfitReason::UntoleratedTaint => 1,
            UnfitReason::NodeAffinityMismatch => 2,
            UnfitReason::HostPortConflict => 3,
            UnfitReason::InsufficientCpu => 4,
            UnfitReason::InsufficientMemory => 5,
            UnfitReason::TooManyPods => 6,
            UnfitReason::GpuModelMismatch => 7,
            UnfitReason::InsufficientWholeGpus => 8,
            UnfitReason::InsufficientGpuShare => 9,
            UnfitReason::TopologySpreadMissingLabel => 10,
            UnfitReason::TopologySpreadSkew => 11,
            UnfitReason::PodAffinity => 12,
            UnfitReason::PodAntiAffinity => 13,
            UnfitReason::ExistingPodsAntiAffinity => 14,
            UnfitReason::VolumeClaimUnusable => 15,
            UnfitReason::UnboundImmediateClaims => 16,
            UnfitReason::ReadWriteOncePodConflict => 17,
            UnfitReason::ExceedMaxVolumeCount => 18,
            UnfitReason::VolumeNodeAffinityConflict => 19,
            UnfitReason::NoAvailableVolumes => 20,
            UnfitReason::VolumeZoneConflict => 21,
            UnfitReason::Reserved => 22,
            UnfitReason::InsufficientResource(_) => return None,
        })
    }
}

impl fmt::Display for UnfitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UnfitReason::Unschedulable => "node(s) were unschedulable",
            UnfitReason::UntoleratedTaint => "node(s) had untolerated taint",
            UnfitReason::NodeAffinityMismatch => {
                "node(s) didn't match Pod's node affinity/selector"
            }
            UnfitReason::HostPortConflict => {
                "node(s) didn't have free ports for the requested pod ports"
            }
            UnfitReason::InsufficientCpu => "Insufficient cpu",
            UnfitReason::InsufficientMemory => "Insufficient memory",
            UnfitReason::TooManyPods => "Too many pods",
            UnfitReason::GpuModelMismatch => "node(s) didn't have the requested GPU model",
            UnfitReason::InsufficientWholeGpus => "Insufficient nvidia.com/gpu",
            UnfitReason::InsufficientGpuShare => "Insufficient phalanx.dev/gpu-milli",
            UnfitReason::TopologySpreadMissingLabel => {
                "node(s) didn't match pod topology spread constraints (missing required label)"
            }
            UnfitReason::TopologySpreadSkew => {
                "node(s) didn't match pod topology spread constraints"
            }
            UnfitReason::PodAffinity => "node(s) didn't match pod affinity rules",
            UnfitReason::PodAntiAffinity => "node(s) didn't match pod anti-affinity rules",
            UnfitReason::ExistingPodsAntiAffinity => {
                "node(s) didn't satisfy existing pods anti-affinity rules"
            }
            UnfitReason::VolumeClaimUnusable => {
                "persistentvolumeclaim not found, being deleted or bound to a missing volume"
            }
            UnfitReason::UnboundImmediateClaims => {
                "pod has unbound immediate PersistentVolumeClaims"
            }
            UnfitReason::ReadWriteOncePodConflict => {
                "node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode"
            }
            UnfitReason::ExceedMaxVolumeCount => "node(s) exceed max volume count",
            UnfitReason::VolumeNodeAffinityConflict => "node(s) had volume node affinity conflict",
            UnfitReason::NoAvailableVolumes => {
                "node(s) didn't find available persistent volumes to bind"
            }
            UnfitReason::VolumeZoneConflict => "node(s) had no available volume zone",
            UnfitReason::Reserved => "node(s) were held for a preempting pod or a waiting gang",
            UnfitReason::InsufficientResource(name) => return write!(f, "Insufficient {name}"),
        })
    }
}

/// All nodes with their accounting.
#[derive(Debug, Clone, Default)]
pub struct ClusterSnapshot {
    models: GpuModelRegistry,
    nodes: Vec<NodeState>,
    by_name: HashMap<String, NodeId>,
    // The normalisers of DotProd, BestFit and GpuClustering: the largest node.
    max_node_cpu_milli: u64,
    max_node_gpu_milli: u64,
    /// Per-domain counts for the terms placed pods carry (pod affinity, spread).
    inter_pod: TermIndex,
    /// Labels of the namespaces the cluster has told us about (namespaceSelector).
    namespace_labels: NamespaceLabels,
    /// Claims, PVs, classes, attach limits, and what placed pods hold of them.
    volumes: VolumeCatalogue,
    /// Present nodes with a PreferNoSchedule taint: while there are none,
    /// TaintToleration scoring is skipped without looking at any node.
    soft_tainted_nodes: usize,
}

impl ClusterSnapshot {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a node with nothing allocated. Its rank defaults to its insertion order.
    pub fn add_node(&mut self, spec: NodeSpec) -> Result<NodeId, EngineError> {
        let invalid = |reason: String| EngineError::InvalidNode {
            node: spec.name.clone(),
            reason,
        };
        if self.by_name.contains_key(&spec.name) {
            return Err(invalid(
                "a node of this name is already in the snapshot".into(),
            ));
        }
        let model = self.validated_model(&spec)?;
        let id = NodeId(self.nodes.len() as u32);
        let mut node = NodeState {
            name: spec.name.clone(),
            cpu_milli_cap: spec.cpu_milli,
            cpu_milli_used: 0,
            memory_mib_cap: spec.memory_mib,
            memory_mib_used: 0,
            max_pods: spec.max_pods,
            pods: 0,
            model,
            gpus: spec.gpus.iter().map(Gpu::unallocated).collect(),
            labels: spec.labels.clone(),
            taints: spec.taints.clone(),
            unschedulable: spec.unschedulable,
            removed: false,
            rank: id.0,
            reservation: None,
            generation: 0,
            inter_pod: Vec::new(),
            extra: Box::default(),
            gpu_pod_tags: Vec::new(),
            fully_free_gpus: 0,
            max_gpu_free: 0,
            gpu_free_total: 0,
        };
        scalar_resources::set_allocatable(&mut node.extra.scalar, &spec.scalar_resources);
        node.refresh_summaries();
        self.soft_tainted_nodes += usize::from(has_soft_taint(&node.taints));
        self.widen_normalisers(spec.cpu_milli, spec.gpus.len());
        self.by_name.insert(spec.name, id);
        self.nodes.push(node);
        Ok(id)
    }

    /// Adds a node, or brings an existing one up to date with `spec` (labels, taints,
    /// cordon, capacity, GPU inventory) while keeping what is allocated on it. A
    /// removed node of the same name comes back empty. A GPU that disappears while
    /// pods hold part of it is refused: the caller must remove the node and replay
    /// its pods, since their accounting can no longer be kept.
    pub fn upsert_node(&mut self, spec: NodeSpec) -> Result<NodeId, EngineError> {
        let Some(id) = self.node_id(&spec.name) else {
            return self.add_node(spec);
        };
        let invalid = |reason: String| EngineError::InvalidNode {
            node: spec.name.clone(),
            reason,
        };
        let model = self.validated_model(&spec)?;
        let node = &mut self.nodes[id.index()];
        let was_soft_tainted = !node.removed && has_soft_taint(&node.taints);
        if node.removed {
            node.cpu_milli_used = 0;
            node.memory_mib_used = 0;
            node.pods = 0;
            node.gpus.clear();
            node.gpu_pod_tags.clear();
            node.extra.used_ports.clear();
            node.extra.scalar.clear();
            node.removed = false;
        }
        let lost_allocated = node
            .gpus
            .iter()
            .skip(spec.gpus.len())
            .any(|g| g.milli_free < MILLI_PER_GPU);
        let model_changed =
            node.model != model && node.gpus.iter().any(|g| g.milli_free < MILLI_PER_GPU);
        if lost_allocated || model_changed {
            return Err(invalid(
                "GPU inventory changed under allocated pods; remove the node and replay them"
                    .into(),
            ));
        }
        node.gpus.truncate(spec.gpus.len());
        for (i, g) in spec.gpus.iter().enumerate() {
            match node.gpus.get_mut(i) {
                Some(gpu) => {
                    if gpu.uuid != g.uuid {
                        // Another device in this slot: its telemetry is not ours.
                        gpu.telemetry = None;
                        gpu.telemetry_cap = MILLI_PER_GPU;
                    }
                    gpu.uuid.clone_from(&g.uuid);
                    gpu.memory_mib = g.memory_mib;
                }
                None => node.gpus.push(Gpu::unallocated(g)),
            }
        }
        let relabelled = node.labels != spec.labels && !node.inter_pod.is_empty();
        node.model = model;
        node.cpu_milli_cap = spec.cpu_milli;
        node.memory_mib_cap = spec.memory_mib;
        node.max_pods = spec.max_pods;
        node.labels = spec.labels;
        node.taints = spec.taints;
        node.unschedulable = spec.unschedulable;
        scalar_resources::set_allocatable(&mut node.extra.scalar, &spec.scalar_resources);
        let is_soft_tainted = has_soft_taint(&node.taints);
        let (cpu_milli, gpus) = (node.cpu_milli_cap, node.gpus.len());
        node.refresh_summaries();
        self.soft_tainted_nodes =
            self.soft_tainted_nodes - usize::from(was_soft_tainted) + usize::from(is_soft_tainted);
        self.widen_normalisers(cpu_milli, gpus);
        if relabelled {
            // Its pods now sit in other topology domains.
            self.inter_pod.rebuild(&self.nodes, &self.namespace_labels);
        }
        Ok(id)
    }

    /// Takes a node out of the cluster: nothing is placed on it any more and its
    /// accounting is dropped (its pods are gone with it). Returns false if unknown.
    pub fn remove_node(&mut self, name: &str) -> bool {
        let Some(id) = self.node_id(name) else {
            return false;
        };
        let node = &mut self.nodes[id.index()];
        if !node.removed && has_soft_taint(&node.taints) {
            self.soft_tainted_nodes -= 1;
        }
        node.removed = true;
        node.reservation = None;
        node.cpu_milli_used = 0;
        node.memory_mib_used = 0;
        node.pods = 0;
        for gpu in &mut node.gpus {
            gpu.milli_free = MILLI_PER_GPU;
            gpu.shares_held = 0;
        }
        node.gpu_pod_tags.clear();
        node.extra.used_ports.clear();
        node.extra.scalar.clear();
        node.refresh_summaries();
        if !node.inter_pod.is_empty() {
            node.inter_pod.clear();
            self.inter_pod.rebuild(&self.nodes, &self.namespace_labels);
        }
        true
    }

    /// Holds `node` for a reservation's holder (see [`NodeReservation`]),
    /// replacing any reservation it had. Returns false for an unknown node.
    pub fn reserve(&mut self, node: NodeId, reservation: NodeReservation) -> bool {
        match self.nodes.get_mut(node.index()) {
            Some(state) if !state.removed => {
                state.reservation = Some(reservation);
                true
            }
            _ => false,
        }
    }

    /// Lifts every reservation held by `holder`; returns how many nodes it held.
    pub fn release_reservations(&mut self, holder: u64) -> usize {
        let mut lifted = 0;
        for node in &mut self.nodes {
            if node.reservation.is_some_and(|r| r.holder == holder) {
                node.reservation = None;
                lifted += 1;
            }
        }
        lifted
    }

    /// Nodes in the cluster (removed ones excluded).
    pub fn present_nodes(&self) -> usize {
        self.nodes.iter().filter(|n| !n.removed).count()
    }

    /// Checks what `add_node` and `upsert_node` both require of a spec and interns
    /// its GPU model.
    fn validated_model(&mut self, spec: &NodeSpec) -> Result<Option<GpuModelId>, EngineError> {
        let invalid = |reason: String| EngineError::InvalidNode {
            node: spec.name.clone(),
            reason,
        };
        if spec.gpus.len() > MAX_GPUS_PER_NODE {
            return Err(invalid(format!(
                "has {} GPUs; at most {MAX_GPUS_PER_NODE} per node are supported",
                spec.gpus.len()
            )));
        }
        match (&spec.gpu_model, spec.gpus.is_empty()) {
            (Some(name), false) if !name.is_empty() => Ok(Some(self.models.intern(name)?)),
            (_, true) => Ok(None),
            _ => Err(invalid("has GPUs but no GPU model".into())),
        }
    }

    /// The score normalisers follow the largest node ever seen.
    fn widen_normalisers(&mut self, cpu_milli: u64, gpus: usize) {
        self.max_node_cpu_milli = self.max_node_cpu_milli.max(cpu_milli);
        self.max_node_gpu_milli = self
            .max_node_gpu_milli
            .max(gpus as u64 * u64::from(MILLI_PER_GPU));
    }

    /// Sets the tie-break rank of every node (`ranks[i]` for node i); lower wins ties.
    pub fn set_ranks(&mut self, ranks: &[u32]) -> Result<(), EngineError> {
        if ranks.len() != self.nodes.len() {
            return Err(EngineError::UnknownNode(ranks.len()));
        }
        for (node, rank) in self.nodes.iter_mut().zip(ranks) {
            node.rank = *rank;
        }
        Ok(())
    }

    /// Marks one GPU healthy or not (device plugin health, XID events).
    pub fn set_gpu_health(
        &mut self,
        node: NodeId,
        index: usize,
        healthy: bool,
    ) -> Result<(), EngineError> {
        let state = self
            .nodes
            .get_mut(node.index())
            .ok_or(EngineError::UnknownNode(node.index()))?;
        let gpu = state
            .gpus
            .get_mut(index)
            .ok_or_else(|| EngineError::InvalidNode {
                node: state.name.clone(),
                reason: format!("has no GPU {index}"),
            })?;
        gpu.healthy = healthy;
        state.refresh_summaries();
        Ok(())
    }

    /// CPU of the largest node, in milli (normaliser of the score formulas).
    pub fn max_node_cpu_milli(&self) -> u64 {
        self.max_node_cpu_milli.max(1)
    }

    /// GPU capacity of the largest node, in milli.
    pub fn max_node_gpu_milli(&self) -> u64 {
        self.max_node_gpu_milli.max(1)
    }

    /// Records a live sample for one GPU. A fresh sample (at most `max_age_ms` old at
    /// `now_ms`) caps the GPU at what its memory use leaves; a stale one is ignored.
    /// An implausible one (see [`GpuSample::check`]) is rejected: the GPU's telemetry
    /// is cleared, so it falls back to allocation accounting and counts as stale.
    pub fn set_gpu_telemetry(
        &mut self,
        node: NodeId,
        index: usize,
        sample: GpuSample,
        now_ms: u64,
        max_age_ms: u64,
    ) -> Result<TelemetryVerdict, EngineError> {
        let state = self
            .nodes
            .get_mut(node.index())
            .ok_or(EngineError::UnknownNode(node.index()))?;
        let name = state.name.clone();
        let gpu = state
            .gpus
            .get_mut(index)
            .ok_or_else(|| EngineError::InvalidNode {
                node: name,
                reason: format!("has no GPU {index}"),
            })?;
        let verdict = match sample.check(gpu.memory_mib, now_ms) {
            Ok(()) if sample.is_fresh(now_ms, max_age_ms) => TelemetryVerdict::Fresh,
            Ok(()) => TelemetryVerdict::Stale,
            Err(rejection) => TelemetryVerdict::Rejected(rejection),
        };
        gpu.telemetry = match verdict {
            TelemetryVerdict::Rejected(_) => None,
            _ => Some(sample),
        };
        let cap = gpu.cap_from(now_ms, max_age_ms);
        if cap != gpu.telemetry_cap {
            gpu.telemetry_cap = cap;
            state.refresh_summaries();
        }
        Ok(verdict)
    }

    /// Drops the effect of samples older than `max_age_ms` (the scheduler falls back
    /// to allocation accounting for those GPUs) and returns how many GPUs have stale
    /// or no telemetry, for the stale-telemetry metric.
    pub fn expire_telemetry(&mut self, now_ms: u64, max_age_ms: u64) -> usize {
        let mut stale = 0;
        for node in &mut self.nodes {
            let mut changed = false;
            for gpu in &mut node.gpus {
                let cap = gpu.cap_from(now_ms, max_age_ms);
                let fresh = gpu
                    .telemetry
                    .is_some_and(|s| s.is_fresh(now_ms, max_age_ms));
                if !fresh {
                    stale += 1;
                }
                if cap != gpu.telemetry_cap {
                    gpu.telemetry_cap = cap;
                    changed = true;
                }
            }
            if changed {
                node.refresh_summaries();
            }
        }
        stale
    }

    /// Records a namespace's labels, which pod affinity terms with a
    /// `namespaceSelector` match against. Unknown namespaces have no labels.
    pub fn set_namespace_labels(&mut self, namespace: &str, labels: BTreeMap<String, String>) {
        if self.namespace_labels.get(namespace) == Some(&labels) {
            return;
        }
        self.namespace_labels.insert(namespace.to_owned(), labels);
        self.recount_namespace_selectors();
    }

    /// Forgets a deleted namespace's labels.
    pub fn remove_namespace(&mut self, namespace: &str) {
        if self.namespace_labels.remove(namespace).is_some() {
            self.recount_namespace_selectors();
        }
    }

    fn recount_namespace_selectors(&mut self) {
        let uses_selectors = self
            .inter_pod
            .entries
            .iter()
            .any(|e| e.term.namespaces.selector.is_some());
        if uses_selectors {
            self.inter_pod.rebuild(&self.nodes, &self.namespace_labels);
        }
    }

    /// Whether any present node has a PreferNoSchedule taint.
    pub(crate) fn has_prefer_no_schedule_taints(&self) -> bool {
        self.soft_tainted_nodes > 0
    }

    pub(crate) fn inter_pod_index(&self) -> &TermIndex {
        &self.inter_pod
    }

    /// The labels of a namespace the cluster has told us about.
    pub fn labels_of_namespace(&self, namespace: &str) -> Option<&BTreeMap<String, String>> {
        self.namespace_labels.get(namespace)
    }

    pub(crate) fn namespace_labels(&self) -> &NamespaceLabels {
        &self.namespace_labels
    }

    pub fn models(&self) -> &GpuModelRegistry {
        &self.models
    }

    pub fn nodes(&self) -> &[NodeState] {
        &self.nodes
    }

    pub fn node(&self, id: NodeId) -> &NodeState {
        &self.nodes[id.index()]
    }

    pub fn node_id(&self, name: &str) -> Option<NodeId> {
        self.by_name.get(name).copied()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn model_of(&self, id: NodeId) -> Option<GpuModelId> {
        self.nodes[id.index()].model
    }

    /// Total GPU capacity in milli (healthy or not).
    pub fn gpu_milli_capacity(&self) -> u64 {
        self.nodes
            .iter()
            .map(|n| n.gpus.len() as u64 * u64::from(MILLI_PER_GPU))
            .sum()
    }

    /// Milli-GPU allocated to pods over the whole cluster.
    pub fn gpu_milli_allocated(&self) -> u64 {
        self.nodes
            .iter()
            .flat_map(|n| &n.gpus)
            .map(|g| u64::from(MILLI_PER_GPU - g.milli_free))
            .sum()
    }

    /// The filter: does `pod` fit `node` as it stands? The first failing check is
    /// returned, in the order kube-scheduler's NodeResourcesFit reports them.
    pub fn check_fit(&self, node: NodeId, pod: &PodDemand) -> Result<(), UnfitReason> {
        fit_failure(&self.nodes[node.index()], pod).map_err(|f| f.reason(pod))
    }

    /// [`Self::check_fit`] for the cycle's hot loop: nothing built to say why.
    pub(crate) fn fit_failure(&self, node: NodeId, pod: &PodDemand) -> Result<(), FitFailure> {
        fit_failure(&self.nodes[node.index()], pod)
    }

    /// [`Self::fit_failure`] for a pod that `is_plain_for_filter` accepts.
    pub(crate) fn plain_fit_failure(
        &self,
        node: NodeId,
        pod: &PodDemand,
    ) -> Result<(), FitFailure> {
        plain_fit_failure(&self.nodes[node.index()], pod)
    }

    pub fn fits(&self, node: NodeId, pod: &PodDemand) -> bool {
        fit_failure(&self.nodes[node.index()], pod).is_ok()
    }

    /// Commits a placement. Refuses (and changes nothing) if it does not fit or does
    /// not match the pod's GPU demand, so no sequence of calls can over-commit.
    pub fn place(&mut self, pod: &PodDemand, placement: &Placement) -> Result<(), EngineError> {
        let node = self
            .nodes
            .get_mut(placement.node.index())
            .ok_or(EngineError::UnknownNode(placement.node.index()))?;
        let refuse = |reason: String| EngineError::DoesNotFit {
            node: node.name.clone(),
            reason,
        };
        if let Err(failure) = fit_failure(node, pod) {
            return Err(refuse(failure.reason(pod).to_string()));
        }
        validate_assignment(node, pod.gpu, &placement.gpus, true).map_err(refuse)?;
        node.cpu_milli_used += pod.cpu_milli;
        node.memory_mib_used += pod.memory_mib;
        node.pods += 1;
        node.extra.used_ports.extend(pod.host_ports.iter().cloned());
        scalar_resources::add(&mut node.extra.scalar, &pod.scalar);
        for share in placement.gpus.as_slice() {
            let gpu = &mut node.gpus[share.index as usize];
            gpu.milli_free -= share.milli;
            if share.milli < MILLI_PER_GPU {
                gpu.shares_held = gpu.shares_held.saturating_add(1);
            }
        }
        if let Some(tag) = pod.gpu.tag() {
            match node.gpu_pod_tags.iter_mut().find(|(t, _)| *t == tag) {
                Some((_, n)) => *n += 1,
                None => node.gpu_pod_tags.push((tag, 1)),
            }
        }
        node.refresh_summaries();
        if let Some(spec) = &pod.inter_pod {
            node.inter_pod.push(spec.clone());
            let index = placement.node.index();
            self.inter_pod
                .on_place(&self.nodes, index, spec, &self.namespace_labels);
        }
        if let Some(volumes) = &pod.volumes {
            let node = &self.nodes[placement.node.index()];
            self.volumes
                .on_place(&pod.name, &node.name, &node.labels, volumes);
        }
        Ok(())
    }

    /// Undoes a placement (pod deleted, or a gang transaction rolled back).
    pub fn release(&mut self, pod: &PodDemand, placement: &Placement) -> Result<(), EngineError> {
        let node = self
            .nodes
            .get_mut(placement.node.index())
            .ok_or(EngineError::UnknownNode(placement.node.index()))?;
        let underflow = |reason: String| EngineError::ReleaseUnderflow {
            node: node.name.clone(),
            reason,
        };
        if node.cpu_milli_used < pod.cpu_milli
            || node.memory_mib_used < pod.memory_mib
            || node.pods == 0
        {
            return Err(underflow("CPU, memory or pod count".into()));
        }
        if !scalar_resources::can_subtract(&node.extra.scalar, &pod.scalar) {
            return Err(underflow(
                "ephemeral storage, huge pages or extended resources".into(),
            ));
        }
        if !pod
            .host_ports
            .iter()
            .all(|p| node.extra.used_ports.contains(p))
        {
            return Err(underflow("host ports".into()));
        }
        validate_assignment(node, pod.gpu, &placement.gpus, false).map_err(underflow)?;
        node.cpu_milli_used -= pod.cpu_milli;
        node.memory_mib_used -= pod.memory_mib;
        node.pods -= 1;
        scalar_resources::subtract(&mut node.extra.scalar, &pod.scalar);
        for port in &pod.host_ports {
            if let Some(at) = node.extra.used_ports.iter().position(|p| p == port) {
                node.extra.used_ports.swap_remove(at);
            }
        }
        for share in placement.gpus.as_slice() {
            let gpu = &mut node.gpus[share.index as usize];
            gpu.milli_free += share.milli;
            if share.milli < MILLI_PER_GPU {
                gpu.shares_held = gpu.shares_held.saturating_sub(1);
            }
        }
        if let Some(tag) = pod.gpu.tag() {
            if let Some((_, n)) = node.gpu_pod_tags.iter_mut().find(|(t, _)| *t == tag) {
                *n = n.saturating_sub(1);
            }
        }
        node.refresh_summaries();
        if let Some(spec) = &pod.inter_pod {
            if let Some(at) = node.inter_pod.iter().position(|p| same_pod(p, spec)) {
                node.inter_pod.swap_remove(at);
                let index = placement.node.index();
                self.inter_pod
                    .on_release(&self.nodes, index, spec, &self.namespace_labels);
            }
        }
        if pod.volumes.is_some() {
            self.volumes.on_release(&pod.name);
        }
        Ok(())
    }
}

/// The taint a cordoned node carries, which pods may tolerate (as DaemonSets do).
/// The taint kube-scheduler treats a cordoned node as carrying.
const UNSCHEDULABLE_TAINT_KEY: &str = "node.kubernetes.io/unschedulable";

/// Checked for every cordoned node in every cycle: compares against the
/// cordon taint's parts instead of building a `Taint`, so it allocates nothing.
pub(crate) fn tolerates_unschedulable(tolerations: &[Toleration]) -> bool {
    tolerations.iter().any(|t| {
        t.tolerates_parts(UNSCHEDULABLE_TAINT_KEY, "", TaintEffect::NoSchedule)
            || (t.operator == TolerationOperator::Exists && t.key.is_none() && t.effect.is_none())
    })
}

fn has_soft_taint(taints: &[super::constraints::Taint]) -> bool {
    taints
        .iter()
        .any(|t| t.effect == TaintEffect::PreferNoSchedule)
}

/// `used + request > cap`, where a sum past u64::MAX also exceeds.
fn exceeds(used: u64, request: u64, cap: u64) -> bool {
    used.checked_add(request).is_none_or(|total| total > cap)
}

/// What the per-node filter returns: a payload-free reason by its slot in
/// [`UnfitReason::ALL`], or the index of the pod's scalar request that does not
/// fit. Copy and small, so the filter of every node in every cycle returns in
/// registers with nothing to drop; an [`UnfitReason`] is built only to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FitFailure {
    Fixed(usize),
    Resource(usize),
}

impl FitFailure {
    pub(crate) fn reason(self, pod: &PodDemand) -> UnfitReason {
        match self {
            FitFailure::Fixed(slot) => UnfitReason::ALL[slot].clone(),
            FitFailure::Resource(k) => {
                UnfitReason::InsufficientResource(pod.scalar[k].name.clone())
            }
        }
    }
}

// The two checks only some pods need live out of line: inlined, their code
// made `fit_failure` save more registers on every call, which cost the plain
// path (every trace pod, every node) about a fifth of its filter time.
#[cold]
#[inline(never)]
fn port_conflict(node: &NodeState, pod: &PodDemand) -> bool {
    !ports_free(&node.extra.used_ports, &pod.host_ports)
}

#[cold]
#[inline(never)]
fn scalar_shortfall(node: &NodeState, pod: &PodDemand) -> Option<usize> {
    scalar_resources::first_insufficient(&node.extra.scalar, &pod.scalar)
}

/// The slot of a payload-free reason; inlined, each call folds to a constant.
#[inline(always)]
fn fixed(reason: UnfitReason) -> FitFailure {
    FitFailure::Fixed(reason.fixed_index().unwrap_or(0))
}

fn fit_failure(node: &NodeState, pod: &PodDemand) -> Result<(), FitFailure> {
    fit_failure_of::<false>(node, pod)
}

/// True for a pod whose filter needs no node rule, host port or scalar
/// resource check (every trace pod): cycles then run [`plain_fit_failure`].
pub(crate) fn is_plain_for_filter(pod: &PodDemand) -> bool {
    pod.rules.is_empty() && pod.host_ports.is_empty() && pod.scalar.is_empty()
}

/// [`fit_failure`] for a pod [`is_plain_for_filter`] accepts: the checks that
/// cannot fail for it are compiled out, so the plain path (every trace pod on
/// every node) pays nothing for the rules only some pods carry.
pub(crate) fn plain_fit_failure(node: &NodeState, pod: &PodDemand) -> Result<(), FitFailure> {
    debug_assert!(is_plain_for_filter(pod));
    fit_failure_of::<true>(node, pod)
}

#[inline(always)]
fn fit_failure_of<const PLAIN: bool>(node: &NodeState, pod: &PodDemand) -> Result<(), FitFailure> {
    // Filters in kube-scheduler's order: cordon, taints, affinity, then resources.
    // A removed node is reported as cordoned if anyone asks; cycles skip it.
    if node.removed || node.unschedulable && !tolerates_unschedulable(&pod.rules.tolerations) {
        return Err(fixed(UnfitReason::Unschedulable));
    }
    if !node.taints.is_empty() && !tolerates_all(&node.taints, &pod.rules.tolerations) {
        return Err(fixed(UnfitReason::UntoleratedTaint));
    }
    if !PLAIN && !pod.rules.is_empty() && !pod.rules.selects(&node.labels) {
        return Err(fixed(UnfitReason::NodeAffinityMismatch));
    }
    if !PLAIN && !pod.host_ports.is_empty() && port_conflict(node, pod) {
        return Err(fixed(UnfitReason::HostPortConflict));
    }
    // Checked: requests come from pod specs, where a huge quantity saturates to
    // u64::MAX; the sum must not wrap into "fits". `place` adds only after this.
    if exceeds(node.cpu_milli_used, pod.cpu_milli, node.cpu_milli_cap) {
        return Err(fixed(UnfitReason::InsufficientCpu));
    }
    if exceeds(node.memory_mib_used, pod.memory_mib, node.memory_mib_cap) {
        return Err(fixed(UnfitReason::InsufficientMemory));
    }
    if node.pods >= node.max_pods {
        return Err(fixed(UnfitReason::TooManyPods));
    }
    if !PLAIN && !pod.scalar.is_empty() {
        if let Some(k) = scalar_shortfall(node, pod) {
            return Err(FitFailure::Resource(k));
        }
    }
    match pod.gpu {
        GpuDemand::None => Ok(()),
        demand => {
            let Some(model) = node.model else {
                return Err(fixed(match demand {
                    GpuDemand::Share { .. } => UnfitReason::InsufficientGpuShare,
                    _ => UnfitReason::InsufficientWholeGpus,
                }));
            };
            if !pod.models.allows(model) {
                return Err(fixed(UnfitReason::GpuModelMismatch));
            }
            match demand {
                GpuDemand::Share { milli } if node.max_gpu_free < milli => {
                    Err(fixed(UnfitReason::InsufficientGpuShare))
                }
                GpuDemand::Whole { count } if node.fully_free_gpus < count => {
                    Err(fixed(UnfitReason::InsufficientWholeGpus))
                }
                _ => Ok(()),
            }
        }
    }
}

/// Checks that `gpus` is exactly what `demand` asks of this node: the right number of
/// distinct healthy devices, each with the right milli, and (when placing) enough free.
fn validate_assignment(
    node: &NodeState,
    demand: GpuDemand,
    gpus: &GpuAssignment,
    placing: bool,
) -> Result<(), String> {
    let want = demand.gpu_count() as usize;
    if gpus.len() != want {
        return Err(format!(
            "demand needs {want} GPU(s), assignment names {}",
            gpus.len()
        ));
    }
    let mut seen = 0u32;
    for share in gpus.as_slice() {
        let index = share.index as usize;
        let Some(gpu) = node.gpus.get(index) else {
            return Err(format!("no GPU {index}"));
        };
        if seen & (1 << index) != 0 {
            return Err(format!("GPU {index} named twice"));
        }
        seen |= 1 << index;
        if share.milli != demand.milli_per_gpu() {
            return Err(format!(
                "GPU {index}: share {} != demand {}",
                share.milli,
                demand.milli_per_gpu()
            ));
        }
        if placing {
            if !gpu.healthy {
                return Err(format!("GPU {index} is unhealthy"));
            }
            if gpu.milli_free < share.milli {
                return Err(format!(
                    "GPU {index} has {} milli free, needs {}",
                    gpu.milli_free, share.milli
                ));
            }
        } else if gpu.milli_free + share.milli > MILLI_PER_GPU {
            return Err(format!(
                "GPU {index} would have more than {MILLI_PER_GPU} milli free"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod hostile_input_tests;
mod volumes;
