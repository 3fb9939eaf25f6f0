//! The cluster as the watches report it, folded into [`ClusterState`].
//!
//! Pure: it is fed `watcher` events (already typed objects) and answers what
//! changed, so that the scheduler loop and the extender share one way of turning
//! Nodes, GpuNodes and Pods into engine state. Relists (`Init` … `InitDone`)
//! delete whatever the new list no longer has.
//!
//! Namespaces are folded in only by a mirror built
//! [`ClusterMirror::watching_namespaces`]: their labels are what pod affinity
//! terms' `namespaceSelector` match, and such a mirror is not synced before
//! the first list of them, so no pod is placed against labels not yet seen.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::runtime::watcher::Event;
use kube::ResourceExt;
use phalanx_api::GpuNode;

use crate::cluster_state::{AccountingError, ClusterState, RejectedSample, TelemetryReport};
use crate::translate;

mod volumes;

/// What an event changed, for the caller to act on.
#[derive(Debug, Default)]
pub struct MirrorChange {
    /// Capacity may have been freed or added: unschedulable work is worth a retry.
    pub cluster_changed: bool,
    /// Accounting problems to log (never fatal).
    pub errors: Vec<String>,
    /// Telemetry samples a new GpuNode status brought that were ignored, for the
    /// metrics. Only GpuNode events fill it, so a sample is counted once.
    pub telemetry: TelemetryReport,
    /// Nodes whose telemetry has just started being rejected (log these once; the
    /// set clears when a node's samples are all plausible again).
    pub newly_rejecting: Vec<RejectedSample>,
}

impl MirrorChange {
    fn merge(&mut self, other: MirrorChange) {
        self.cluster_changed |= other.cluster_changed;
        self.errors.extend(other.errors);
        self.telemetry.merge(other.telemetry);
        self.newly_rejecting.extend(other.newly_rejecting);
    }
}

/// The kinds the mirror watches, for sync tracking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WatchedKind {
    Node,
    GpuNode,
    Pod,
    Namespace,
    // Only once volumes are tracked (`mirror/volumes.rs`).
    PersistentVolumeClaim,
    PersistentVolume,
    StorageClass,
    CsiNode,
}

/// Where each bound pod is and what it holds, plus the objects needed to rebuild a
/// node when its Node or GpuNode changes.
#[derive(Debug)]
pub struct ClusterMirror {
    state: ClusterState,
    nodes: HashMap<String, Node>,
    gpu_nodes: HashMap<String, GpuNode>,
    /// The spec last applied per node, to skip heartbeats that change nothing.
    applied: HashMap<String, phalanx_engine::NodeSpec>,
    /// Bound, unfinished pods by UID (the node they are on).
    bound: HashMap<String, String>,
    relisting: HashMap<WatchedKind, HashSet<String>>,
    synced: HashSet<WatchedKind>,
    telemetry_max_age_ms: u64,
    /// Nodes whose latest GpuNode status had an implausible sample (logged once).
    rejecting: HashSet<String>,
    /// The kinds whose first list `synced` waits for.
    required: Vec<WatchedKind>,
    /// Namespace labels as last applied to the snapshot, to tell a change
    /// (worth a retry) from a resync.
    namespaces: HashMap<String, BTreeMap<String, String>>,
}

impl ClusterMirror {
    pub fn new(telemetry_max_age_ms: u64) -> Self {
        ClusterMirror {
            state: ClusterState::new(),
            nodes: HashMap::new(),
            gpu_nodes: HashMap::new(),
            applied: HashMap::new(),
            bound: HashMap::new(),
            relisting: HashMap::new(),
            synced: HashSet::new(),
            telemetry_max_age_ms,
            rejecting: HashSet::new(),
            required: vec![WatchedKind::Node, WatchedKind::GpuNode, WatchedKind::Pod],
            namespaces: HashMap::new(),
        }
    }

    /// A mirror whose owner also feeds it Namespaces ([`Self::namespace_event`]):
    /// it is synced only once they have been listed too.
    pub fn watching_namespaces(mut self) -> Self {
        self.required.push(WatchedKind::Namespace);
        self
    }

    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    pub fn state_mut(&mut self) -> &mut ClusterState {
        &mut self.state
    }

    /// True once every watched kind has finished its first list.
    pub fn synced(&self) -> bool {
        self.required.iter().all(|k| self.synced.contains(k)) && self.volumes_synced()
    }

    /// Whether a pod is known to be bound (by the watch).
    pub fn is_bound(&self, uid: &str) -> bool {
        self.bound.contains_key(uid)
    }

    pub fn node_event(&mut self, event: Event<Node>, now_ms: u64) -> MirrorChange {
        match event {
            Event::Init => self.begin_relist(WatchedKind::Node),
            Event::InitApply(node) => {
                self.seen(WatchedKind::Node, node.name_any());
                self.apply_node(node, now_ms)
            }
            Event::Apply(node) => self.apply_node(node, now_ms),
            Event::Delete(node) => self.delete_node(&node.name_any()),
            Event::InitDone => {
                let known: Vec<String> = self.nodes.keys().cloned().collect();
                let gone = self.end_relist(WatchedKind::Node, known.iter());
                let mut change = MirrorChange::default();
                for name in gone {
                    change.merge(self.delete_node(&name));
                }
                change
            }
        }
    }

    pub fn gpu_node_event(&mut self, event: Event<GpuNode>, now_ms: u64) -> MirrorChange {
        match event {
            Event::Init => self.begin_relist(WatchedKind::GpuNode),
            Event::InitApply(gpu_node) => {
                self.seen(WatchedKind::GpuNode, gpu_node.name_any());
                self.apply_gpu_node(gpu_node, now_ms)
            }
            Event::Apply(gpu_node) => self.apply_gpu_node(gpu_node, now_ms),
            Event::Delete(gpu_node) => {
                let name = gpu_node.name_any();
                self.gpu_nodes.remove(&name);
                self.rebuild_node(&name, now_ms)
            }
            Event::InitDone => {
                let known: Vec<String> = self.gpu_nodes.keys().cloned().collect();
                let gone = self.end_relist(WatchedKind::GpuNode, known.iter());
                let mut change = MirrorChange::default();
                for name in gone {
                    self.gpu_nodes.remove(&name);
                    change.merge(self.rebuild_node(&name, now_ms));
                }
                change
            }
        }
    }

    /// Accounts bound pods. Pending pods are the caller's business; it gets the
    /// pod back to decide (see `scheduler_loop`).
    pub fn pod_event(&mut self, event: &Event<Pod>) -> MirrorChange {
        match event {
            Event::Init => self.begin_relist(WatchedKind::Pod),
            Event::InitApply(pod) => {
                self.seen(WatchedKind::Pod, pod_uid(pod));
                self.apply_pod(pod)
            }
            Event::Apply(pod) => self.apply_pod(pod),
            Event::Delete(pod) => self.forget_pod(&pod_uid(pod)),
            Event::InitDone => {
                let known: Vec<String> = self.bound.keys().cloned().collect();
                let gone = self.end_relist(WatchedKind::Pod, known.iter());
                let mut change = MirrorChange::default();
                for uid in gone {
                    change.merge(self.forget_pod(&uid));
                }
                change
            }
        }
    }

    /// Records each namespace's labels in the snapshot. A change is a
    /// `cluster_changed`: a pod refused because a namespaceSelector matched
    /// nothing (or too much) may fit now.
    pub fn namespace_event(&mut self, event: &Event<Namespace>) -> MirrorChange {
        match event {
            Event::Init => self.begin_relist(WatchedKind::Namespace),
            Event::InitApply(namespace) => {
                self.seen(WatchedKind::Namespace, namespace.name_any());
                self.apply_namespace(namespace)
            }
            Event::Apply(namespace) => self.apply_namespace(namespace),
            Event::Delete(namespace) => self.delete_namespace(&namespace.name_any()),
            Event::InitDone => {
                let known: Vec<String> = self.namespaces.keys().cloned().collect();
                let gone = self.end_relist(WatchedKind::Namespace, known.iter());
                let mut change = MirrorChange::default();
                for name in gone {
                    change.merge(self.delete_namespace(&name));
                }
                change
            }
        }
    }

    fn apply_namespace(&mut self, namespace: &Namespace) -> MirrorChange {
        let name = namespace.name_any();
        let labels = namespace.labels().clone();
        if self.namespaces.get(&name) == Some(&labels) {
            return MirrorChange::default();
        }
        self.state
            .snapshot_mut()
            .set_namespace_labels(&name, labels.clone());
        self.namespaces.insert(name, labels);
        MirrorChange {
            cluster_changed: true,
            ..MirrorChange::default()
        }
    }

    fn delete_namespace(&mut self, name: &str) -> MirrorChange {
        if self.namespaces.remove(name).is_none() {
            return MirrorChange::default();
        }
        self.state.snapshot_mut().remove_namespace(name);
        MirrorChange {
            cluster_changed: true,
            ..MirrorChange::default()
        }
    }

    /// Drops telemetry older than the limit; returns GPUs with stale or no telemetry.
    pub fn expire_telemetry(&mut self, now_ms: u64) -> usize {
        self.state
            .expire_telemetry(now_ms, self.telemetry_max_age_ms)
    }

    fn apply_pod(&mut self, pod: &Pod) -> MirrorChange {
        let uid = pod_uid(pod);
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        if is_finished(pod) {
            return self.forget_pod(&uid);
        }
        let Some(node) = node else {
            return MirrorChange::default();
        };
        let mut change = MirrorChange::default();
        let demand = match translate::pod_demand(pod, self.state.snapshot().models()) {
            Ok(demand) => demand,
            Err(error) => {
                change.errors.push(format!(
                    "bound pod {} is not accounted: {error}",
                    translate::pod_key(pod)
                ));
                return change;
            }
        };
        let assignment = match translate::assignment_of(pod) {
            Ok(a) => a,
            Err(error) => {
                change.errors.push(error.to_string());
                None
            }
        };
        if let Err(error) = self
            .state
            .observe_bound(&uid, &node, demand, assignment.as_ref())
        {
            change.errors.push(error.to_string());
        }
        self.bound.insert(uid, node);
        change
    }

    fn forget_pod(&mut self, uid: &str) -> MirrorChange {
        let held = self.state.holds(uid);
        self.state.forget_pod(uid);
        self.bound.remove(uid);
        MirrorChange {
            cluster_changed: held,
            ..MirrorChange::default()
        }
    }

    fn apply_node(&mut self, node: Node, now_ms: u64) -> MirrorChange {
        let name = node.name_any();
        self.nodes.insert(name.clone(), node);
        let mut change = self.rebuild_node(&name, now_ms);
        // The samples re-applied here were counted when their GpuNode came.
        change.telemetry = TelemetryReport::default();
        change
    }

    fn apply_gpu_node(&mut self, gpu_node: GpuNode, now_ms: u64) -> MirrorChange {
        let name = gpu_node.name_any();
        let health_before = self.gpu_nodes.get(&name).map(health_of);
        let health_after = health_of(&gpu_node);
        self.gpu_nodes.insert(name.clone(), gpu_node);
        let mut change = self.rebuild_node(&name, now_ms);
        change.cluster_changed |= health_before.as_ref() != Some(&health_after);
        change
    }

    fn delete_node(&mut self, name: &str) -> MirrorChange {
        self.nodes.remove(name);
        self.applied.remove(name);
        self.rejecting.remove(name);
        self.state.remove_node(name);
        MirrorChange {
            cluster_changed: true,
            ..MirrorChange::default()
        }
    }

    /// Re-derives a node from its Node and GpuNode; applies it only if it changed,
    /// then refreshes GPU health and telemetry.
    fn rebuild_node(&mut self, name: &str, now_ms: u64) -> MirrorChange {
        let mut change = MirrorChange::default();
        let Some(node) = self.nodes.get(name) else {
            return change;
        };
        let gpu_node = self.gpu_nodes.get(name);
        match translate::node_spec(node, gpu_node) {
            Ok(spec) => {
                if self.applied.get(name) != Some(&spec) {
                    let errors = self.state.apply_node(spec.clone());
                    change
                        .errors
                        .extend(errors.iter().map(AccountingError::to_string));
                    self.applied.insert(name.to_owned(), spec);
                    change.cluster_changed = true;
                }
            }
            Err(error) => {
                // A node we cannot read is not schedulable; say so rather than guess.
                change.errors.push(error.to_string());
                if self.state.has_node(name) {
                    self.state.remove_node(name);
                    self.applied.remove(name);
                }
                return change;
            }
        }
        if let Some(gpu_node) = gpu_node {
            let live = translate::gpu_live_states(gpu_node);
            let report = self
                .state
                .apply_gpu_live(name, &live, now_ms, self.telemetry_max_age_ms)
                .unwrap_or_default();
            if report.rejected.is_empty() {
                self.rejecting.remove(name);
            } else if self.rejecting.insert(name.to_owned()) {
                change.newly_rejecting.push(report.rejected[0].clone());
            }
            change.telemetry = report;
        } else {
            self.rejecting.remove(name);
        }
        change
    }

    fn begin_relist(&mut self, kind: WatchedKind) -> MirrorChange {
        self.relisting.insert(kind, HashSet::new());
        MirrorChange::default()
    }

    fn seen(&mut self, kind: WatchedKind, key: String) {
        if let Some(set) = self.relisting.get_mut(&kind) {
            set.insert(key);
        }
    }

    /// Ends a relist; returns the keys known before that the list did not have.
    fn end_relist<'a>(
        &mut self,
        kind: WatchedKind,
        known: impl Iterator<Item = &'a String>,
    ) -> Vec<String> {
        let seen = self.relisting.remove(&kind).unwrap_or_default();
        self.synced.insert(kind);
        known.filter(|k| !seen.contains(*k)).cloned().collect()
    }
}

/// Health per GPU, to tell a health change (worth a retry) from a telemetry tick.
fn health_of(gpu_node: &GpuNode) -> Vec<(String, bool)> {
    gpu_node
        .status
        .iter()
        .flat_map(|s| &s.gpus)
        .map(|g| (g.uuid.clone(), g.healthy))
        .collect()
}

pub fn pod_uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

pub use crate::translate::is_finished;
