//! The engine's snapshot kept in step with the cluster, plus the pods that hold
//! resources in it.
//!
//! Pure: the scheduler loop feeds it translated watch events (node specs, GPU live
//! state, bound pods, deletions) and its own decisions (assume before binding,
//! forget when a binding fails). Pods are recorded by UID so that a watch event
//! for a pod the scheduler already assumed confirms it instead of counting it twice,
//! and a pod on a node the scheduler has not seen yet is replayed when it appears.

use std::collections::{HashMap, HashSet};

use phalanx_api::{AssignedGpu, GpuAssignmentAnnotation};
use thiserror::Error;

use phalanx_engine::{
    ClusterSnapshot, EngineError, GpuAssignment, GpuDemand, GpuShare, NodeSpec, Placement,
    PodDemand, TelemetryRejection, TelemetryVerdict, MILLI_PER_GPU,
};

/// What became of the telemetry samples of one `GpuNode` status, for the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TelemetryReport {
    /// Plausible samples already older than the age limit, ignored.
    pub stale_samples: u64,
    /// Implausible samples, ignored (their GPUs count as having stale telemetry).
    pub rejected: Vec<RejectedSample>,
}

impl TelemetryReport {
    pub fn merge(&mut self, other: TelemetryReport) {
        self.stale_samples += other.stale_samples;
        self.rejected.extend(other.rejected);
    }
}

/// One implausible sample: which GPU, and which field gave it away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedSample {
    pub node: String,
    pub gpu_index: usize,
    pub reason: TelemetryRejection,
}

/// Live state of one GPU, as `translate::gpu_live_states` reads it from a `GpuNode`.
pub use crate::translate::GpuLiveState as GpuLive;

/// A pod that holds (or is about to hold) resources on a node.
#[derive(Debug, Clone)]
struct PodRecord {
    key: String,
    node: String,
    demand: PodDemand,
    /// The GPUs it holds; `None` while its node is unknown to the snapshot.
    placement: Option<Placement>,
    /// Placed by this scheduler and not yet seen bound in the watch.
    assumed: bool,
    /// The GPUs it is known to hold (its assignment annotation, or its last
    /// placement), so that placing it again after its node was unknown or
    /// rebuilt puts it on those GPUs rather than the first free ones.
    known_gpus: Option<GpuAssignmentAnnotation>,
}

/// Something the state could not account as the cluster reports it; the pod is
/// still tracked, and the caller logs it (never a panic, never a lost pod).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AccountingError {
    #[error("pod {pod} on node {node} does not fit the scheduler's accounting: {source}")]
    DoesNotFit {
        pod: String,
        node: String,
        source: EngineError,
    },
    #[error("node {node}: {source}")]
    Node { node: String, source: EngineError },
    #[error("pod {pod} was planned on node {node}, which the cluster no longer has")]
    NodeGone { pod: String, node: String },
    #[error("pod {pod} was planned on node {node} with {planned} GPUs, but it asks for {wanted}")]
    PlanMismatch {
        pod: String,
        node: String,
        planned: usize,
        wanted: usize,
    },
}

/// The snapshot and every pod accounted in it.
#[derive(Debug, Default)]
pub struct ClusterState {
    snapshot: ClusterSnapshot,
    pods: HashMap<String, PodRecord>,
    pods_by_node: HashMap<String, HashSet<String>>,
    /// Nodes in the snapshot that the cluster still has.
    live_nodes: HashSet<String>,
}

impl ClusterState {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn snapshot(&self) -> &ClusterSnapshot {
        &self.snapshot
    }

    /// For gang placement, which commits straight to the snapshot; the caller must
    /// then [`Self::record_assumed`] every placement it keeps.
    pub fn snapshot_mut(&mut self) -> &mut ClusterSnapshot {
        &mut self.snapshot
    }

    pub fn has_node(&self, name: &str) -> bool {
        self.live_nodes.contains(name)
    }

    pub fn node_count(&self) -> usize {
        self.live_nodes.len()
    }

    /// Pods accounted (bound or assumed).
    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    pub fn is_assumed(&self, uid: &str) -> bool {
        self.pods.get(uid).is_some_and(|r| r.assumed)
    }

    pub fn holds(&self, uid: &str) -> bool {
        self.pods.contains_key(uid)
    }

    /// A node appeared or changed. If its GPU inventory changed under allocated
    /// pods, the node is rebuilt and its pods replayed onto it.
    pub fn apply_node(&mut self, spec: NodeSpec) -> Vec<AccountingError> {
        let name = spec.name.clone();
        let was_live = self.live_nodes.contains(&name);
        match self.snapshot.upsert_node(spec.clone()) {
            Ok(_) => {}
            Err(EngineError::InvalidNode { reason, .. })
                if reason.contains("inventory changed") =>
            {
                self.snapshot.remove_node(&name);
                self.unplace_all_on(&name);
                if let Err(source) = self.snapshot.upsert_node(spec) {
                    return vec![AccountingError::Node { node: name, source }];
                }
            }
            Err(source) => return vec![AccountingError::Node { node: name, source }],
        }
        self.live_nodes.insert(name.clone());
        if was_live {
            self.replay_unplaced_on(&name)
        } else {
            // A node (re)appearing: pods that reported it before it was known.
            self.unplace_all_on(&name);
            self.replay_unplaced_on(&name)
        }
    }

    /// A node left the cluster: its pods no longer hold anything (they are gone with
    /// it, or will be replayed if it comes back).
    pub fn remove_node(&mut self, name: &str) {
        if self.live_nodes.remove(name) {
            self.snapshot.remove_node(name);
            if let Some(uids) = self.pods_by_node.get(name) {
                for uid in uids {
                    if let Some(record) = self.pods.get_mut(uid) {
                        record.placement = None;
                    }
                }
            }
        }
    }

    /// Health and telemetry of a node's GPUs. Returns None for an unknown node, else
    /// what became of the samples: the snapshot checks each against its GPU's memory
    /// (from the GpuNode spec), 0–100 % utilisation and the clock, and ignores the
    /// implausible ones.
    pub fn apply_gpu_live(
        &mut self,
        node: &str,
        gpus: &[GpuLive],
        now_ms: u64,
        max_age_ms: u64,
    ) -> Option<TelemetryReport> {
        let id = self.live_node_id(node)?;
        let mut report = TelemetryReport::default();
        for gpu in gpus {
            // Indices come from the same GpuNode the inventory came from; one that is
            // out of range means the inventory has not caught up yet.
            let _ = self.snapshot.set_gpu_health(id, gpu.index, gpu.healthy);
            let Some(sample) = gpu.sample else {
                continue;
            };
            match self
                .snapshot
                .set_gpu_telemetry(id, gpu.index, sample, now_ms, max_age_ms)
            {
                Ok(TelemetryVerdict::Fresh) | Err(_) => {}
                Ok(TelemetryVerdict::Stale) => report.stale_samples += 1,
                Ok(TelemetryVerdict::Rejected(reason)) => report.rejected.push(RejectedSample {
                    node: node.to_owned(),
                    gpu_index: gpu.index,
                    reason,
                }),
            }
        }
        Some(report)
    }

    /// Drops the effect of telemetry older than the limit; returns the GPUs whose
    /// telemetry is stale or missing.
    pub fn expire_telemetry(&mut self, now_ms: u64, max_age_ms: u64) -> usize {
        self.snapshot.expire_telemetry(now_ms, max_age_ms)
    }

    /// Places a pod this scheduler decided on, before binding it.
    pub fn assume(
        &mut self,
        uid: &str,
        demand: PodDemand,
        placement: Placement,
    ) -> Result<(), EngineError> {
        self.snapshot.place(&demand, &placement)?;
        self.record(uid, demand, placement, true);
        Ok(())
    }

    /// Assumes a pod where an earlier decision put it: on `node`, with exactly the
    /// GPUs `assignment` names (a gang plan a previous leader recorded). Refused,
    /// holding nothing, when the node is gone, the plan does not match the pod's
    /// demand, or the pod no longer fits there (its GPUs were taken meanwhile).
    pub fn assume_recorded(
        &mut self,
        uid: &str,
        node: &str,
        demand: PodDemand,
        assignment: &GpuAssignmentAnnotation,
    ) -> Result<Placement, AccountingError> {
        let Some(id) = self.live_node_id(node) else {
            return Err(AccountingError::NodeGone {
                pod: demand.name.clone(),
                node: node.to_owned(),
            });
        };
        let mut gpus = GpuAssignment::default();
        for g in &assignment.gpus {
            // An index no node can have is a plan that cannot be honoured.
            let Ok(index) = u8::try_from(g.index) else {
                break;
            };
            gpus.push(GpuShare {
                index,
                milli: g.milli,
            });
        }
        let wanted = demand.gpu.gpu_count() as usize;
        if gpus.len() != assignment.gpus.len() || gpus.len() != wanted {
            return Err(AccountingError::PlanMismatch {
                pod: demand.name.clone(),
                node: node.to_owned(),
                planned: assignment.gpus.len(),
                wanted,
            });
        }
        let placement = Placement { node: id, gpus };
        let pod = demand.name.clone();
        self.assume(uid, demand, placement)
            .map_err(|source| AccountingError::DoesNotFit {
                pod,
                node: node.to_owned(),
                source,
            })?;
        Ok(placement)
    }

    /// Records a placement that is already committed to the snapshot (gangs).
    pub fn record_assumed(&mut self, uid: &str, demand: PodDemand, placement: Placement) {
        self.record(uid, demand, placement, true);
    }

    /// A binding failed or was abandoned: release what was assumed.
    pub fn forget_assumed(&mut self, uid: &str) {
        if self.is_assumed(uid) {
            self.forget_pod(uid);
        }
    }

    /// A pod the watch shows bound to `node` and not finished. Idempotent: a pod
    /// already accounted on that node is only confirmed.
    pub fn observe_bound(
        &mut self,
        uid: &str,
        node: &str,
        demand: PodDemand,
        assignment: Option<&GpuAssignmentAnnotation>,
    ) -> Result<(), AccountingError> {
        if let Some(record) = self.pods.get_mut(uid) {
            if record.node == node && record.placement.is_some() {
                record.assumed = false;
                return Ok(());
            }
            // Bound elsewhere than assumed (another replica or scheduler won), or
            // still waiting for its node: account it afresh.
            self.forget_pod(uid);
        }
        let key = demand.name.clone();
        let Some(id) = self.live_node_id(node) else {
            self.record_unplaced(uid, node, demand, assignment.cloned());
            return Ok(());
        };
        let gpus = self.gpus_for(id, &demand, assignment, node);
        let placement = Placement { node: id, gpus };
        match self.snapshot.place(&demand, &placement) {
            Ok(()) => {
                self.record(uid, demand, placement, false);
                if let Some(record) = self.pods.get_mut(uid) {
                    record.known_gpus = assignment.cloned();
                }
                Ok(())
            }
            Err(source) => {
                // Kubelet admitted what our accounting refuses (stale snapshot, or
                // another scheduler over-committed). Keep the pod known so that its
                // deletion is handled, but do not count it twice later.
                self.record_unplaced(uid, node, demand, assignment.cloned());
                Err(AccountingError::DoesNotFit {
                    pod: key,
                    node: node.to_owned(),
                    source,
                })
            }
        }
    }

    /// A pod was deleted or finished: release what it held.
    pub fn forget_pod(&mut self, uid: &str) {
        let Some(record) = self.pods.remove(uid) else {
            return;
        };
        if let Some(set) = self.pods_by_node.get_mut(&record.node) {
            set.remove(uid);
            if set.is_empty() {
                self.pods_by_node.remove(&record.node);
            }
        }
        if let Some(placement) = record.placement {
            // Cannot underflow: every recorded placement was committed by `place`.
            let _ = self.snapshot.release(&record.demand, &placement);
        }
    }

    /// Every pod that holds resources in the snapshot: its UID, demand and
    /// placement (pods waiting for their node to appear are left out). What
    /// preemption chooses victims from.
    pub fn placed_pods(&self) -> impl Iterator<Item = (&str, &PodDemand, &Placement)> + '_ {
        self.pods.iter().filter_map(|(uid, record)| {
            record
                .placement
                .as_ref()
                .map(|placement| (uid.as_str(), &record.demand, placement))
        })
    }

    /// The pod keys on a node (bound or assumed), for diagnostics and tests.
    pub fn pods_on(&self, node: &str) -> Vec<&str> {
        let mut keys: Vec<&str> = self
            .pods_by_node
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(|uid| self.pods.get(uid).map(|r| r.key.as_str()))
            .collect();
        keys.sort_unstable();
        keys
    }

    fn live_node_id(&self, node: &str) -> Option<phalanx_engine::NodeId> {
        if self.live_nodes.contains(node) {
            self.snapshot.node_id(node)
        } else {
            None
        }
    }

    fn record(&mut self, uid: &str, demand: PodDemand, placement: Placement, assumed: bool) {
        let node = self.snapshot.node(placement.node).name.clone();
        self.pods_by_node
            .entry(node.clone())
            .or_default()
            .insert(uid.to_owned());
        self.pods.insert(
            uid.to_owned(),
            PodRecord {
                key: demand.name.clone(),
                node,
                demand,
                placement: Some(placement),
                assumed,
                known_gpus: None,
            },
        );
    }

    /// Tracks a bound pod that holds nothing in the snapshot (its node is unknown,
    /// or it did not fit), so that its deletion and its node's arrival are handled.
    fn record_unplaced(
        &mut self,
        uid: &str,
        node: &str,
        demand: PodDemand,
        known_gpus: Option<GpuAssignmentAnnotation>,
    ) {
        self.pods_by_node
            .entry(node.to_owned())
            .or_default()
            .insert(uid.to_owned());
        self.pods.insert(
            uid.to_owned(),
            PodRecord {
                key: demand.name.clone(),
                node: node.to_owned(),
                demand,
                placement: None,
                assumed: false,
                known_gpus,
            },
        );
    }

    /// Releases every placement on a node (before a rebuild) and marks them unplaced.
    fn unplace_all_on(&mut self, node: &str) {
        let Some(uids) = self.pods_by_node.get(node) else {
            return;
        };
        for uid in uids {
            if let Some(record) = self.pods.get_mut(uid) {
                if let Some(p) = record.placement.take() {
                    let _ = self.snapshot.release(&record.demand, &p);
                    if record.known_gpus.is_none() && !p.gpus.is_empty() {
                        record.known_gpus = Some(GpuAssignmentAnnotation {
                            node: record.node.clone(),
                            gpus: p
                                .gpus
                                .as_slice()
                                .iter()
                                .map(|g| AssignedGpu {
                                    index: u32::from(g.index),
                                    uuid: String::new(),
                                    milli: g.milli,
                                })
                                .collect(),
                        });
                    }
                }
            }
        }
    }

    /// Places the pods recorded on `node` that hold nothing yet (their node was
    /// unknown or rebuilt). GPUs come from each pod's assignment if it still fits.
    fn replay_unplaced_on(&mut self, node: &str) -> Vec<AccountingError> {
        let Some(id) = self.live_node_id(node) else {
            return Vec::new();
        };
        let mut uids: Vec<String> = self
            .pods_by_node
            .get(node)
            .into_iter()
            .flatten()
            .filter(|uid| self.pods.get(*uid).is_some_and(|r| r.placement.is_none()))
            .cloned()
            .collect();
        // Pods that name their GPUs first: a pod placed on the first free GPUs
        // must not take the ones another pod is known to hold.
        uids.sort_by_key(|uid| self.pods.get(uid).is_none_or(|r| r.known_gpus.is_none()));
        let mut errors = Vec::new();
        for uid in uids {
            let Some(record) = self.pods.get(&uid) else {
                continue;
            };
            let demand = record.demand.clone();
            let known = record.known_gpus.clone();
            let gpus = self.gpus_for(id, &demand, known.as_ref(), node);
            let mut placement = Placement { node: id, gpus };
            let mut placed = self.snapshot.place(&demand, &placement);
            if placed.is_err() && known.is_some() {
                // Its GPUs are gone from the inventory: where there is room.
                placement.gpus = self.gpus_for(id, &demand, None, node);
                placed = self.snapshot.place(&demand, &placement);
            }
            match placed {
                Ok(()) => {
                    if let Some(record) = self.pods.get_mut(&uid) {
                        record.placement = Some(placement);
                    }
                }
                Err(source) => errors.push(AccountingError::DoesNotFit {
                    pod: demand.name.clone(),
                    node: node.to_owned(),
                    source,
                }),
            }
        }
        errors
    }

    /// The GPUs a bound pod holds: its assignment annotation when that names this
    /// node and matches its demand, else the lowest-indexed GPUs with room (the
    /// pod was placed by someone who did not say, e.g. another scheduler).
    fn gpus_for(
        &self,
        id: phalanx_engine::NodeId,
        demand: &PodDemand,
        assignment: Option<&GpuAssignmentAnnotation>,
        node: &str,
    ) -> GpuAssignment {
        if demand.gpu == GpuDemand::None {
            return GpuAssignment::default();
        }
        if let Some(a) = assignment.filter(|a| a.node == node) {
            let mut gpus = GpuAssignment::default();
            for g in &a.gpus {
                // An index beyond any node's GPUs makes the annotation unusable.
                let Ok(index) = u8::try_from(g.index) else {
                    break;
                };
                gpus.push(GpuShare {
                    index,
                    milli: g.milli,
                });
            }
            if gpus.len() == a.gpus.len() && gpus.len() == demand.gpu.gpu_count() as usize {
                return gpus;
            }
        }
        let want = demand.gpu.milli_per_gpu();
        let mut gpus = GpuAssignment::default();
        for (index, gpu) in self.snapshot.node(id).gpus.iter().enumerate() {
            if gpus.len() == demand.gpu.gpu_count() as usize {
                break;
            }
            let room = if want == MILLI_PER_GPU {
                gpu.milli_free == MILLI_PER_GPU
            } else {
                gpu.milli_free >= want
            };
            if room {
                gpus.push(GpuShare {
                    index: index as u8,
                    milli: want,
                });
            }
        }
        gpus
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use phalanx_api::AssignedGpu;
    use phalanx_engine::{GpuSpec, ModelConstraint};

    fn node(name: &str, gpus: usize) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            cpu_milli: 32_000,
            memory_mib: 128 << 10,
            max_pods: 110,
            gpu_model: Some("H100".into()),
            gpus: (0..gpus)
                .map(|i| GpuSpec {
                    uuid: format!("{name}-{i}"),
                    memory_mib: 81_559,
                })
                .collect(),
            ..NodeSpec::default()
        }
    }

    fn share(name: &str, milli: u32) -> PodDemand {
        PodDemand::new(
            name,
            1000,
            1024,
            GpuDemand::Share { milli },
            ModelConstraint::Any,
        )
        .unwrap()
    }

    fn free(state: &ClusterState, node: &str) -> Vec<u32> {
        let id = state.snapshot().node_id(node).unwrap();
        state
            .snapshot()
            .node(id)
            .gpus
            .iter()
            .map(|g| g.milli_free)
            .collect()
    }

    #[test]
    fn assumed_pod_is_confirmed_not_counted_twice() {
        let mut s = ClusterState::new();
        assert!(s.apply_node(node("a", 2)).is_empty());
        let id = s.snapshot().node_id("a").unwrap();
        let placement = Placement {
            node: id,
            gpus: GpuAssignment::from_indices([1], 300),
        };
        s.assume("u1", share("ns/p", 300), placement).unwrap();
        assert!(s.is_assumed("u1"));
        let annotation = GpuAssignmentAnnotation {
            node: "a".into(),
            gpus: vec![AssignedGpu {
                index: 1,
                uuid: "a-1".into(),
                milli: 300,
            }],
        };
        s.observe_bound("u1", "a", share("ns/p", 300), Some(&annotation))
            .unwrap();
        assert!(!s.is_assumed("u1"));
        assert_eq!(free(&s, "a"), vec![1000, 700]);
        s.forget_pod("u1");
        assert_eq!(free(&s, "a"), vec![1000, 1000]);
    }

    fn planned(node: &str, gpus: &[(u32, u32)]) -> GpuAssignmentAnnotation {
        GpuAssignmentAnnotation {
            node: node.into(),
            gpus: gpus
                .iter()
                .map(|&(index, milli)| AssignedGpu {
                    index,
                    uuid: String::new(),
                    milli,
                })
                .collect(),
        }
    }

    #[test]
    fn a_recorded_plan_is_assumed_on_its_gpus_or_refused_holding_nothing() {
        let mut s = ClusterState::new();
        s.apply_node(node("a", 2));
        let placement = s
            .assume_recorded("u1", "a", share("ns/p", 300), &planned("a", &[(1, 300)]))
            .unwrap();
        assert!(s.is_assumed("u1"));
        assert_eq!(placement.gpus, GpuAssignment::from_indices([1], 300));
        assert_eq!(free(&s, "a"), vec![1000, 700]);
        // The GPU's room was taken meanwhile.
        let err = s
            .assume_recorded("u2", "a", share("ns/q", 800), &planned("a", &[(1, 800)]))
            .unwrap_err();
        assert!(matches!(err, AccountingError::DoesNotFit { .. }), "{err}");
        // The node left the cluster.
        let err = s
            .assume_recorded("u3", "b", share("ns/r", 100), &planned("b", &[(0, 100)]))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "pod ns/r was planned on node b, which the cluster no longer has"
        );
        // A plan naming no GPU for a pod that wants one.
        let err = s
            .assume_recorded("u4", "a", share("ns/s", 100), &planned("a", &[]))
            .unwrap_err();
        assert!(
            matches!(
                err,
                AccountingError::PlanMismatch {
                    planned: 0,
                    wanted: 1,
                    ..
                }
            ),
            "{err}"
        );
        // An index no node has.
        let err = s
            .assume_recorded("u5", "a", share("ns/t", 100), &planned("a", &[(4096, 100)]))
            .unwrap_err();
        assert!(matches!(err, AccountingError::PlanMismatch { .. }), "{err}");
        for uid in ["u2", "u3", "u4", "u5"] {
            assert!(!s.holds(uid), "{uid} holds something after a refusal");
        }
        assert_eq!(free(&s, "a"), vec![1000, 700]);
    }

    #[test]
    fn bound_pod_uses_its_annotation_or_lowest_gpus() {
        let mut s = ClusterState::new();
        s.apply_node(node("a", 2));
        let annotation = GpuAssignmentAnnotation {
            node: "a".into(),
            gpus: vec![AssignedGpu {
                index: 1,
                uuid: String::new(),
                milli: 500,
            }],
        };
        s.observe_bound("u1", "a", share("ns/p", 500), Some(&annotation))
            .unwrap();
        // An annotation for another node is stale: lowest GPU with room instead.
        let stale = GpuAssignmentAnnotation {
            node: "b".into(),
            ..annotation
        };
        s.observe_bound("u2", "a", share("ns/q", 200), Some(&stale))
            .unwrap();
        assert_eq!(free(&s, "a"), vec![800, 500]);
    }

    #[test]
    fn pods_before_their_node_are_replayed() {
        let mut s = ClusterState::new();
        s.observe_bound("u1", "late", share("ns/p", 400), None)
            .unwrap();
        assert!(!s.has_node("late"));
        assert!(s.apply_node(node("late", 1)).is_empty());
        assert_eq!(free(&s, "late"), vec![600]);
        assert_eq!(s.pods_on("late"), vec!["ns/p"]);
    }

    #[test]
    fn inventory_change_rebuilds_and_replays() {
        let mut s = ClusterState::new();
        s.apply_node(node("a", 2));
        let annotation = GpuAssignmentAnnotation {
            node: "a".into(),
            gpus: vec![AssignedGpu {
                index: 1,
                uuid: String::new(),
                milli: 500,
            }],
        };
        s.observe_bound("u1", "a", share("ns/p", 500), Some(&annotation))
            .unwrap();
        // GPU 1 vanished (the plugin reports one GPU now): the pod is replayed on GPU 0.
        assert!(s.apply_node(node("a", 1)).is_empty());
        assert_eq!(free(&s, "a"), vec![500]);
        s.forget_pod("u1");
        assert_eq!(free(&s, "a"), vec![1000]);
    }

    #[test]
    fn pods_seen_before_their_gpus_are_placed_on_their_annotated_gpus() {
        // A standby lists pods before the GpuNode: the pods wait unplaced, and
        // when the GPUs arrive each goes back on the GPUs its annotation names,
        // not on the first free ones (which would leave its real GPUs looking
        // free and let the next gang over-commit them).
        let mut s = ClusterState::new();
        let on = |index: u32| GpuAssignmentAnnotation {
            node: "a".into(),
            gpus: vec![AssignedGpu {
                index,
                uuid: String::new(),
                milli: 1000,
            }],
        };
        let whole = |name: &str| {
            PodDemand::new(
                name,
                0,
                0,
                GpuDemand::Whole { count: 1 },
                ModelConstraint::Any,
            )
            .unwrap()
        };
        s.observe_bound("u3", "a", whole("ns/c"), Some(&on(3)))
            .unwrap();
        s.observe_bound("u0", "a", whole("ns/n"), None).unwrap();
        s.observe_bound("u2", "a", whole("ns/b"), Some(&on(2)))
            .unwrap();
        assert!(s.apply_node(node("a", 4)).is_empty());
        // GPUs 2 and 3 are held as annotated; the unannotated pod takes GPU 0.
        assert_eq!(free(&s, "a"), vec![0, 1000, 0, 0]);
        s.forget_pod("u3");
        assert_eq!(free(&s, "a"), vec![0, 1000, 0, 1000]);
    }

    #[test]
    fn removed_node_releases_and_over_commit_is_reported() {
        let mut s = ClusterState::new();
        s.apply_node(node("a", 1));
        s.observe_bound("u1", "a", share("ns/p", 800), None)
            .unwrap();
        let err = s
            .observe_bound("u2", "a", share("ns/q", 800), None)
            .unwrap_err();
        assert!(err.to_string().contains("ns/q"), "{err}");
        assert!(s.holds("u2"), "still tracked");
        s.remove_node("a");
        assert!(!s.has_node("a"));
        assert_eq!(s.node_count(), 0);
        // Deleting pods of a removed node is harmless.
        s.forget_pod("u1");
        s.forget_pod("u2");
        assert_eq!(s.pod_count(), 0);
    }

    #[test]
    fn unhealthy_gpu_from_live_state() {
        let mut s = ClusterState::new();
        s.apply_node(node("a", 2));
        let live = [GpuLive {
            index: 0,
            healthy: false,
            sample: None,
        }];
        assert_eq!(
            s.apply_gpu_live("a", &live, 0, 10_000),
            Some(TelemetryReport::default())
        );
        assert_eq!(s.apply_gpu_live("nope", &live, 0, 10_000), None);
        let id = s.snapshot().node_id("a").unwrap();
        assert_eq!(s.snapshot().node(id).fully_free_gpus(), 1);
    }
}
