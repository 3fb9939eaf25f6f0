//! The extender's verbs on the cluster as the mirror sees it. Pure: no I/O, no
//! locks; `routes` calls them under the core's lock.
//!
//! * **filter**: each candidate node passes if the engine's `check_fit` says the
//!   pod fits it now. A node it does not fit goes to `FailedNodes` with the
//!   kube-scheduler wording of the first failing check when preempting pods could
//!   make room (CPU, memory, pod count, GPUs), and to `FailedAndUnresolvableNodes`
//!   otherwise (cordoned, taint, affinity, GPU model), as kube-scheduler's own
//!   plugins classify them. A node the mirror does not know (not watched yet, or
//!   a Node it cannot translate) is *unresolvable*: preempting pods there cannot
//!   make Phalanx accept it, so kube-scheduler should not try.
//! * **prioritize**: the configured policy's own per-node `score` for the feasible
//!   candidates, scaled linearly onto `0..=10` (the best node 10, the worst 0;
//!   all 10 when they tie). Infeasible and unknown nodes get 0.
//! * **bind**: [`plan_bind`] refuses pods not meant for this extender (see
//!   [`bind_refusal`]: the pod as the API server has it, not as the caller
//!   describes it), re-checks the chosen node, lets the policy choose the GPUs
//!   on it, and assumes the placement so that the next filter already sees it;
//!   the caller then writes the GPU annotation and the Binding.
//!
//! Whole-call failures (the pod cannot be translated, it belongs to a gang, the
//! caches have not synced) come back as `Error`, which fails the pod's scheduling
//! attempt in kube-scheduler (the extender is configured `ignorable: false`).

use k8s_openapi::api::core::v1::{Container, Pod};
use phalanx_api::{GpuAssignmentAnnotation, RESOURCE_GPU_MILLI, RESOURCE_WHOLE_GPU};

use super::types::{
    CandidateNode, ExtenderArgs, ExtenderBindingArgs, ExtenderFilterResult, HostPriority,
    HostPriorityList, NodeList, MAX_EXTENDER_PRIORITY, MIN_EXTENDER_PRIORITY,
};
use crate::controller::binder::PodRef;
use crate::controller::gangs;
use crate::controller::metrics::ExtenderRefusal;
use phalanx_engine::{GpuDemand, NodeId, Placement, PlacementPolicy, PodDemand, UnfitReason};
use phalanx_kube::cluster_state::ClusterState;
use phalanx_kube::mirror::{pod_uid, ClusterMirror};
use phalanx_kube::translate;

/// `FailedAndUnresolvableNodes` message for a node the mirror does not know.
pub const NODE_NOT_KNOWN: &str = "node(s) not known to phalanx";

/// `Error` while the watches have not delivered their first full lists.
pub const NOT_SYNCED: &str =
    "phalanx extender has not synced its view of the cluster yet; retry shortly";

/// Whether kube-scheduler could make room by preempting pods (`FailedNodes`) or
/// not (`FailedAndUnresolvableNodes`), following its own plugins: resource
/// shortages are resolvable, node conditions and constraints are not.
pub fn is_resolvable(reason: &UnfitReason) -> bool {
    match reason {
        UnfitReason::InsufficientCpu
        | UnfitReason::InsufficientResource(_)
        // Evicting the pod that holds the port frees it.
        | UnfitReason::HostPortConflict
        | UnfitReason::InsufficientMemory
        | UnfitReason::TooManyPods
        | UnfitReason::InsufficientWholeGpus
        | UnfitReason::InsufficientGpuShare
        // Evicting the pods that count against the skew or the anti-affinity helps.
        | UnfitReason::TopologySpreadSkew
        | UnfitReason::PodAntiAffinity
        | UnfitReason::ExistingPodsAntiAffinity
        // Evicting the pods that hold the volumes (the extender tracks none).
        | UnfitReason::ReadWriteOncePodConflict
        | UnfitReason::ExceedMaxVolumeCount => true,
        UnfitReason::Unschedulable
        | UnfitReason::UntoleratedTaint
        | UnfitReason::NodeAffinityMismatch
        | UnfitReason::GpuModelMismatch
        | UnfitReason::TopologySpreadMissingLabel
        | UnfitReason::PodAffinity
        | UnfitReason::VolumeClaimUnusable
        | UnfitReason::UnboundImmediateClaims
        | UnfitReason::VolumeNodeAffinityConflict
        | UnfitReason::NoAvailableVolumes
        | UnfitReason::VolumeZoneConflict
        // The extender holds no nodes for anyone; a reservation is Phalanx's
        // own scheduler's, and preempting does not lift it.
        | UnfitReason::Reserved => false,
    }
}

/// The `Error` for a pod that declares a gang (the scheduler-plugins label,
/// Phalanx's annotation or Kubernetes' `spec.schedulingGroup`, well-formed or
/// not): an extender sees one pod at a time and cannot place a gang
/// all-or-nothing. (A `spec.schedulingGroup` naming a PodGroup with the `basic`
/// policy is refused too: the extender does not watch PodGroups to tell.)
pub fn gang_refusal(pod: &Pod) -> Option<String> {
    let hint = "gangs are placed all-or-nothing only by the full Phalanx scheduler; \
                set spec.schedulerName: phalanx on its pods (the extender places single pods)";
    match gangs::gang_of(pod) {
        Ok(None) => None,
        Ok(Some(gang)) => Some(format!(
            "pod {} belongs to gang {}/{} ({}): {hint}",
            translate::pod_key(pod),
            gang.key.namespace,
            gang.key.name,
            gang.source.field(),
        )),
        Err(error) => Some(format!("{error}; {hint}")),
    }
}

/// What the pod asks for, or the whole-call `Error`.
pub fn single_pod_demand(mirror: &ClusterMirror, pod: &Pod) -> Result<PodDemand, String> {
    if !mirror.synced() {
        return Err(NOT_SYNCED.to_owned());
    }
    if let Some(refusal) = gang_refusal(pod) {
        return Err(refusal);
    }
    translate::pod_demand(pod, mirror.state().snapshot().models()).map_err(|e| e.to_string())
}

/// One candidate node's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Fits(NodeId),
    Failed(String),
    Unresolvable(String),
}

/// The engine's verdict for `pod` on the node named `name`.
pub fn verdict(state: &ClusterState, name: &str, demand: &PodDemand) -> Verdict {
    let Some(id) = known_node(state, name) else {
        return Verdict::Unresolvable(NODE_NOT_KNOWN.to_owned());
    };
    match state.snapshot().check_fit(id, demand) {
        Ok(()) => Verdict::Fits(id),
        Err(reason) if is_resolvable(&reason) => Verdict::Failed(reason.to_string()),
        Err(reason) => Verdict::Unresolvable(reason.to_string()),
    }
}

fn known_node(state: &ClusterState, name: &str) -> Option<NodeId> {
    if !state.has_node(name) {
        return None;
    }
    state
        .snapshot()
        .node_id(name)
        .filter(|id| !state.snapshot().node(*id).removed)
}

/// The candidate node names: `NodeNames` when sent (a `nodeCacheCapable`
/// extender), else the names of `Nodes`.
pub fn candidate_names<N: CandidateNode>(args: &ExtenderArgs<N>) -> Result<Vec<&str>, String> {
    if let Some(names) = &args.node_names {
        return Ok(names.iter().map(String::as_str).collect());
    }
    if let Some(nodes) = &args.nodes {
        return Ok(nodes.items.iter().map(CandidateNode::node_name).collect());
    }
    Err("ExtenderArgs has neither Nodes nor NodeNames: no candidate nodes".to_owned())
}

/// The filter verb. Passing nodes come back in the form they were sent in,
/// moved out of `args` (5,000 whole Nodes are about 100 MB; no copy).
pub fn filter(mirror: &ClusterMirror, args: ExtenderArgs) -> ExtenderFilterResult {
    let demand = match single_pod_demand(mirror, &args.pod) {
        Ok(demand) => demand,
        Err(error) => return ExtenderFilterResult::failure(error),
    };
    let names = match candidate_names(&args) {
        Ok(names) => names,
        Err(error) => return ExtenderFilterResult::failure(error),
    };
    let mut result = ExtenderFilterResult::default();
    let mut passed = vec![false; names.len()];
    for (i, name) in names.iter().enumerate() {
        match verdict(mirror.state(), name, &demand) {
            Verdict::Fits(_) => passed[i] = true,
            Verdict::Failed(message) => {
                result.failed_nodes.insert((*name).to_owned(), message);
            }
            Verdict::Unresolvable(message) => {
                result
                    .failed_and_unresolvable_nodes
                    .insert((*name).to_owned(), message);
            }
        }
    }
    if let Some(names) = args.node_names {
        result.node_names = Some(passing(names, &passed));
    } else if let Some(nodes) = args.nodes {
        result.nodes = Some(NodeList {
            metadata: nodes.metadata,
            items: passing(nodes.items, &passed),
        });
    }
    result
}

/// The items whose `passed` entry is true, in order.
fn passing<T>(items: Vec<T>, passed: &[bool]) -> Vec<T> {
    items
        .into_iter()
        .zip(passed)
        .filter(|(_, ok)| **ok)
        .map(|(item, _)| item)
        .collect()
}

/// The prioritize verb: one entry per candidate, in the order sent. A pod the
/// filter would refuse scores 0 everywhere (kube-scheduler ignores prioritize
/// errors anyway, and filter has already reported it).
pub fn prioritize(
    mirror: &ClusterMirror,
    policy: &mut dyn PlacementPolicy,
    args: &ExtenderArgs<impl CandidateNode>,
) -> HostPriorityList {
    let names = candidate_names(args).unwrap_or_default();
    let zero = |names: &[&str]| {
        names
            .iter()
            .map(|n| HostPriority {
                host: (*n).to_owned(),
                score: MIN_EXTENDER_PRIORITY,
            })
            .collect()
    };
    let Ok(demand) = single_pod_demand(mirror, &args.pod) else {
        return zero(&names);
    };
    let state = mirror.state();
    let snapshot = state.snapshot();
    policy.begin_cycle(snapshot, &demand);
    let raw: Vec<Option<i64>> = names
        .iter()
        .map(|name| match verdict(state, name, &demand) {
            Verdict::Fits(id) => Some(policy.score(snapshot, id, &demand)),
            Verdict::Failed(_) | Verdict::Unresolvable(_) => None,
        })
        .collect();
    let scores = scale_scores(&raw);
    names
        .iter()
        .zip(scores)
        .map(|(name, score)| HostPriority {
            host: (*name).to_owned(),
            score,
        })
        .collect()
}

/// Maps policy scores linearly onto `0..=MAX_EXTENDER_PRIORITY` (`None`, an
/// infeasible node, is 0). The best feasible node gets the maximum, the worst 0;
/// feasible nodes that all tie get the maximum. Rounds down, so only the best
/// reaches the maximum unless others tie with it.
pub fn scale_scores(raw: &[Option<i64>]) -> Vec<i64> {
    let feasible = raw.iter().flatten();
    let (Some(min), Some(max)) = (feasible.clone().min(), feasible.max()) else {
        return vec![MIN_EXTENDER_PRIORITY; raw.len()];
    };
    let span = i128::from(*max) - i128::from(*min);
    raw.iter()
        .map(|score| match score {
            None => MIN_EXTENDER_PRIORITY,
            Some(_) if span == 0 => MAX_EXTENDER_PRIORITY,
            Some(s) => {
                let scaled = (i128::from(*s) - i128::from(*min))
                    * i128::from(MAX_EXTENDER_PRIORITY - MIN_EXTENDER_PRIORITY)
                    / span;
                MIN_EXTENDER_PRIORITY + i64::try_from(scaled).unwrap_or(MAX_EXTENDER_PRIORITY)
            }
        })
        .collect()
}

/// What the bind verb writes: the pod, its node, and the GPU annotation when it
/// asks for GPUs. The placement is already assumed in the mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindPlan {
    pub pod: PodRef,
    pub node: String,
    pub annotation: Option<GpuAssignmentAnnotation>,
}

/// Why a bind was refused: the metric's reason, and the message that goes to
/// kube-scheduler in `ExtenderBindingResult.error` (and to the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindRefusal {
    pub reason: ExtenderRefusal,
    pub message: String,
}

impl BindRefusal {
    pub fn new(reason: ExtenderRefusal, message: impl Into<String>) -> Self {
        BindRefusal {
            reason,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for BindRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Whether any container (init containers included) names `nvidia.com/gpu` or
/// `phalanx.dev/gpu-milli` in its requests or limits: the test kube-scheduler's
/// `managedResources` applies to decide which pods reach this extender at all.
pub fn requests_managed_resource(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    let names = |c: &Container| {
        let resources = c.resources.as_ref();
        let requests = resources.and_then(|r| r.requests.as_ref());
        let limits = resources.and_then(|r| r.limits.as_ref());
        [requests, limits]
            .into_iter()
            .flatten()
            .any(|m| m.contains_key(RESOURCE_WHOLE_GPU) || m.contains_key(RESOURCE_GPU_MILLI))
    };
    spec.containers.iter().any(names) || spec.init_containers.iter().flatten().any(names)
}

/// Why `pod` (as the API server has it) must not be bound by this extender at
/// the caller's request, or `None`: `/bind` is reachable by anyone who can
/// reach the extender, and writes a Binding with the scheduler's credentials.
/// The pod must be the one named (same UID), still unbound, of a profile this
/// extender serves, and ask for a GPU resource Phalanx manages.
pub fn bind_refusal(
    pod: &Pod,
    args: &ExtenderBindingArgs,
    scheduler_names: &[String],
) -> Option<BindRefusal> {
    let key = format!("{}/{}", args.pod_namespace, args.pod_name);
    let uid = pod_uid(pod);
    if uid != args.pod_uid {
        return Some(BindRefusal::new(
            ExtenderRefusal::UidMismatch,
            format!(
                "pod {key}: UID {} is not the pod's UID {uid:?}; the pod was replaced",
                args.pod_uid
            ),
        ));
    }
    let spec = pod.spec.as_ref();
    if let Some(node) = spec.and_then(|s| s.node_name.as_deref()) {
        return Some(BindRefusal::new(
            ExtenderRefusal::AlreadyBound,
            format!("pod {key} is already bound to node {node}"),
        ));
    }
    let scheduler = spec
        .and_then(|s| s.scheduler_name.as_deref())
        .unwrap_or("default-scheduler");
    if !scheduler_names.iter().any(|n| n == scheduler) {
        return Some(BindRefusal::new(
            ExtenderRefusal::OtherScheduler,
            format!(
                "pod {key} has spec.schedulerName {scheduler:?}, which this extender does not \
                 serve (extender.schedulerNames: {})",
                scheduler_names.join(", ")
            ),
        ));
    }
    if !requests_managed_resource(pod) {
        return Some(BindRefusal::new(
            ExtenderRefusal::NoManagedResource,
            format!(
                "pod {key} requests neither {RESOURCE_WHOLE_GPU} nor {RESOURCE_GPU_MILLI}; \
                 this extender binds only pods whose GPUs it manages"
            ),
        ));
    }
    None
}

/// Decides the GPUs for `pod` (read from the API server) on the node
/// kube-scheduler chose and assumes the placement (the caller must
/// [`ClusterState::forget_assumed`] if the write fails). `Err` says why the bind
/// is refused; nothing is assumed then.
pub fn plan_bind(
    mirror: &mut ClusterMirror,
    policy: &mut dyn PlacementPolicy,
    pod: &Pod,
    args: &ExtenderBindingArgs,
    scheduler_names: &[String],
) -> Result<BindPlan, BindRefusal> {
    if let Some(refusal) = bind_refusal(pod, args, scheduler_names) {
        return Err(refusal);
    }
    let key = format!("{}/{}", args.pod_namespace, args.pod_name);
    let uid = pod_uid(pod);
    if mirror.is_bound(&uid) {
        return Err(BindRefusal::new(
            ExtenderRefusal::AlreadyBound,
            format!("pod {key} is already bound"),
        ));
    }
    if !mirror.synced() {
        return Err(BindRefusal::new(ExtenderRefusal::NotSynced, NOT_SYNCED));
    }
    if let Some(refusal) = gang_refusal(pod) {
        return Err(BindRefusal::new(ExtenderRefusal::Gang, refusal));
    }
    let demand = translate::pod_demand(pod, mirror.state().snapshot().models())
        .map_err(|e| BindRefusal::new(ExtenderRefusal::InvalidPod, e.to_string()))?;
    // A retried bind: release what the earlier attempt assumed.
    mirror.state_mut().forget_assumed(&uid);
    let node = args.node.as_str();
    let refused = |why: &dyn std::fmt::Display| {
        BindRefusal::new(
            ExtenderRefusal::NodeRefused,
            format!("pod {key} cannot be bound to node {node}: {why}"),
        )
    };
    let id = match verdict(mirror.state(), node, &demand) {
        Verdict::Fits(id) => id,
        Verdict::Failed(why) | Verdict::Unresolvable(why) => return Err(refused(&why)),
    };
    let snapshot = mirror.state().snapshot();
    policy.begin_cycle(snapshot, &demand);
    let gpus = policy.select_gpus(snapshot, id, &demand);
    let placement = Placement { node: id, gpus };
    let annotation = (demand.gpu != GpuDemand::None)
        .then(|| translate::assignment_annotation(node, &placement, snapshot.node(id)));
    mirror
        .state_mut()
        .assume(&uid, demand, placement)
        .map_err(|e| refused(&e))?;
    Ok(BindPlan {
        pod: PodRef {
            namespace: args.pod_namespace.clone(),
            name: args.pod_name.clone(),
            uid,
        },
        node: node.to_owned(),
        annotation,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use k8s_openapi::api::core::v1::Node;
    use kube::runtime::watcher::Event;
    use phalanx_api::GpuNode;
    use serde_json::json;

    use super::*;
    use phalanx_api::{ANNOTATION_GANG_NAME, LABEL_POD_GROUP};
    use phalanx_engine::{build_policy, PolicyConfig, PolicyName, WorkloadSource};

    fn from<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
        serde_json::from_value(value).unwrap()
    }

    pub(crate) fn node_json(name: &str, gpus: u32) -> serde_json::Value {
        json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "status": {"allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110",
                                       "nvidia.com/gpu": gpus.to_string()}}
        })
    }

    fn gpu_node(name: &str, gpus: u32) -> GpuNode {
        let devices: Vec<_> = (0..gpus)
            .map(|i| {
                json!({"index": i, "uuid": format!("GPU-{name}-{i}"),
                            "model": "NVIDIA H100 80GB HBM3", "memoryMib": 81920})
            })
            .collect();
        from(json!({"metadata": {"name": name}, "spec": {"nodeName": name, "gpus": devices}}))
    }

    pub(crate) fn pod_json(
        name: &str,
        uid: &str,
        requests: serde_json::Value,
    ) -> serde_json::Value {
        json!({
            "metadata": {"name": name, "namespace": "ml", "uid": uid},
            "spec": {"schedulerName": "default-scheduler",
                     "containers": [{"name": "main", "image": "cuda",
                                     "resources": {"requests": requests, "limits": requests}}]}
        })
    }

    fn pod(name: &str, uid: &str, requests: serde_json::Value) -> Pod {
        from(pod_json(name, uid, requests))
    }

    /// A synced mirror with `nodes` (name, GPUs) and `bound` pods on them.
    pub(crate) fn mirror(nodes: &[(&str, u32)], bound: &[(Pod, &str)]) -> ClusterMirror {
        let mut m = ClusterMirror::new(60_000);
        m.node_event(Event::Init, 0);
        m.gpu_node_event(Event::Init, 0);
        for (name, gpus) in nodes {
            m.node_event(Event::InitApply(from(node_json(name, *gpus))), 0);
            m.gpu_node_event(Event::InitApply(gpu_node(name, *gpus)), 0);
        }
        m.node_event(Event::InitDone, 0);
        m.gpu_node_event(Event::InitDone, 0);
        m.pod_event(&Event::Init);
        for (pod, node) in bound {
            let mut pod = pod.clone();
            if let Some(spec) = pod.spec.as_mut() {
                spec.node_name = Some((*node).to_owned());
            }
            let change = m.pod_event(&Event::InitApply(pod));
            assert!(change.errors.is_empty(), "{:?}", change.errors);
        }
        m.pod_event(&Event::InitDone);
        assert!(m.synced());
        m
    }

    fn args_names(pod: Pod, names: &[&str]) -> ExtenderArgs {
        ExtenderArgs {
            pod,
            nodes: None,
            node_names: Some(names.iter().map(|n| (*n).to_owned()).collect()),
        }
    }

    fn policy(name: PolicyName) -> Box<dyn PlacementPolicy> {
        build_policy(
            name,
            &PolicyConfig {
                seed: 0,
                workload: WorkloadSource::Online,
            },
        )
    }

    fn cordoned_node(name: &str) -> Node {
        let mut value = node_json(name, 8);
        value["spec"] = json!({"unschedulable": true});
        value["metadata"]["labels"]["nvidia.com/gpu.product"] = json!("NVIDIA-H100-80GB-HBM3");
        from(value)
    }

    #[test]
    fn filter_splits_nodes_with_kube_scheduler_messages() {
        // full: 8 GPUs, all taken by a bound 8-GPU pod; small: 1 GPU; big: 8 free.
        let hog = pod("hog", "u-hog", json!({"nvidia.com/gpu": "8"}));
        let mut m = mirror(&[("full", 8), ("small", 1), ("big", 8)], &[(hog, "full")]);
        let change = m.node_event(Event::Apply(cordoned_node("cordoned")), 0);
        assert!(change.errors.is_empty(), "{:?}", change.errors);
        let four = pod(
            "train",
            "u-train",
            json!({"cpu": "4", "nvidia.com/gpu": "4"}),
        );
        let args = args_names(four, &["full", "small", "big", "cordoned", "ghost"]);
        let result = filter(&m, args);
        assert_eq!(result.error, "");
        assert_eq!(result.node_names.as_deref(), Some(&["big".to_owned()][..]));
        assert!(result.nodes.is_none());
        assert_eq!(
            result.failed_nodes,
            [
                ("full".to_owned(), "Insufficient nvidia.com/gpu".to_owned()),
                ("small".to_owned(), "Insufficient nvidia.com/gpu".to_owned()),
            ]
            .into()
        );
        assert_eq!(
            result.failed_and_unresolvable_nodes,
            [
                (
                    "cordoned".to_owned(),
                    "node(s) were unschedulable".to_owned()
                ),
                (
                    "ghost".to_owned(),
                    "node(s) not known to phalanx".to_owned()
                ),
            ]
            .into()
        );

        // A share that no GPU has room for, and too much CPU.
        let share = pod("s", "u-s", json!({"phalanx.dev/gpu-milli": "500"}));
        let result = filter(&m, args_names(share, &["full", "big"]));
        assert_eq!(
            result.failed_nodes.get("full").map(String::as_str),
            Some("Insufficient phalanx.dev/gpu-milli")
        );
        let greedy = pod("c", "u-c", json!({"cpu": "64", "nvidia.com/gpu": "1"}));
        let result = filter(&m, args_names(greedy, &["big"]));
        assert_eq!(
            result.failed_nodes.get("big").map(String::as_str),
            Some("Insufficient cpu")
        );
    }

    #[test]
    fn filter_answers_in_the_form_it_was_asked() {
        let m = mirror(&[("a", 8), ("b", 1)], &[]);
        let args = ExtenderArgs {
            pod: pod("p", "u-p", json!({"nvidia.com/gpu": "2"})),
            nodes: Some(NodeList {
                metadata: None,
                items: vec![from(node_json("a", 8)), from(node_json("b", 1))],
            }),
            node_names: None,
        };
        let result = filter(&m, args);
        assert!(result.node_names.is_none());
        let items = result.nodes.unwrap().items;
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].metadata.name.as_deref(), Some("a"));
        assert_eq!(result.failed_nodes.len(), 1);
    }

    #[test]
    fn prioritize_ranks_the_best_fit_node_highest() {
        // BestFit packs: the node with the least room left after placing wins.
        let two = pod("two", "u-two", json!({"nvidia.com/gpu": "6"}));
        let m = mirror(&[("empty", 8), ("busy", 8), ("tiny", 1)], &[(two, "busy")]);
        let share = pod("s", "u-s", json!({"phalanx.dev/gpu-milli": "500"}));
        for name in PolicyName::ALL {
            let mut policy = policy(name);
            let scores = prioritize(
                &m,
                policy.as_mut(),
                &args_names(share.clone(), &["empty", "busy", "tiny", "ghost"]),
            );
            assert_eq!(scores.len(), 4);
            assert!(
                scores
                    .iter()
                    .all(|h| (0..=MAX_EXTENDER_PRIORITY).contains(&h.score)),
                "{name}: {scores:?}"
            );
            assert_eq!(
                scores[3],
                HostPriority {
                    host: "ghost".into(),
                    score: 0
                }
            );
        }
        let mut best_fit = policy(PolicyName::BestFit);
        let scores = prioritize(
            &m,
            best_fit.as_mut(),
            &args_names(share, &["empty", "busy", "tiny"]),
        );
        let best = scores.iter().max_by_key(|h| h.score).unwrap();
        assert_eq!(best.score, MAX_EXTENDER_PRIORITY);
        assert_ne!(best.host, "empty", "{scores:?}");
        let empty = scores.iter().find(|h| h.host == "empty").unwrap();
        assert_eq!(empty.score, MIN_EXTENDER_PRIORITY, "{scores:?}");
    }

    #[test]
    fn scores_scale_onto_zero_to_ten() {
        assert_eq!(scale_scores(&[Some(5), None, Some(5)]), [10, 0, 10]);
        assert_eq!(scale_scores(&[Some(0), Some(50), Some(100)]), [0, 5, 10]);
        assert_eq!(scale_scores(&[Some(i64::MIN), Some(i64::MAX)]), [0, 10]);
        assert_eq!(scale_scores(&[None, None]), [0, 0]);
        assert!(scale_scores(&[]).is_empty());
    }

    #[test]
    fn gang_pods_are_refused_with_an_error() {
        let m = mirror(&[("a", 8)], &[]);
        let mut labelled = pod("w0", "u-w0", json!({"nvidia.com/gpu": "1"}));
        labelled.metadata.labels = Some([(LABEL_POD_GROUP.to_owned(), "job".to_owned())].into());
        let result = filter(&m, args_names(labelled.clone(), &["a"]));
        assert!(
            result.error.contains("belongs to gang ml/job"),
            "{}",
            result.error
        );
        assert!(
            result.error.contains("schedulerName: phalanx"),
            "{}",
            result.error
        );
        assert!(result.node_names.is_none() && result.failed_nodes.is_empty());

        // Kubernetes' own form is a gang too, never placed as a single pod.
        let mut upstream = pod("w2", "u-w2", json!({"nvidia.com/gpu": "1"}));
        upstream.spec.as_mut().unwrap().scheduling_group =
            Some(k8s_openapi::api::core::v1::PodSchedulingGroup {
                pod_group_name: Some("job".to_owned()),
            });
        let result = filter(&m, args_names(upstream, &["a"]));
        assert!(
            result
                .error
                .contains("belongs to gang ml/job (spec.schedulingGroup.podGroupName)"),
            "{}",
            result.error
        );

        let mut annotated = pod("w1", "u-w1", json!({"nvidia.com/gpu": "1"}));
        annotated.metadata.annotations =
            Some([(ANNOTATION_GANG_NAME.to_owned(), "job".to_owned())].into());
        // Malformed (no min-member) is refused too, with the reason and the hint.
        let result = filter(&m, args_names(annotated, &["a"]));
        assert!(result.error.contains("gang-min-member"), "{}", result.error);
        assert!(
            result.error.contains("schedulerName: phalanx"),
            "{}",
            result.error
        );

        let mut policy = policy(PolicyName::Phalanx);
        let scores = prioritize(&m, policy.as_mut(), &args_names(labelled, &["a"]));
        assert_eq!(
            scores,
            vec![HostPriority {
                host: "a".into(),
                score: 0
            }]
        );
    }

    #[test]
    fn untranslatable_pods_and_unsynced_caches_are_errors() {
        let m = mirror(&[("a", 8)], &[]);
        let bad = pod("bad", "u-bad", json!({"cpu": "lots"}));
        let result = filter(&m, args_names(bad, &["a"]));
        assert!(result.error.starts_with("pod ml/bad: "), "{}", result.error);
        assert!(result.error.contains("cpu"), "{}", result.error);

        let fresh = ClusterMirror::new(60_000);
        let ok = pod("ok", "u-ok", json!({"nvidia.com/gpu": "1"}));
        assert_eq!(filter(&fresh, args_names(ok, &["a"])).error, NOT_SYNCED);
    }

    fn bind_args(name: &str, uid: &str, node: &str) -> ExtenderBindingArgs {
        ExtenderBindingArgs {
            pod_name: name.into(),
            pod_namespace: "ml".into(),
            pod_uid: uid.into(),
            node: node.into(),
        }
    }

    fn served() -> Vec<String> {
        vec!["default-scheduler".to_owned()]
    }

    fn bind_plan(
        m: &mut ClusterMirror,
        policy: &mut dyn PlacementPolicy,
        pod: &Pod,
        args: &ExtenderBindingArgs,
    ) -> Result<BindPlan, BindRefusal> {
        plan_bind(m, policy, pod, args, &served())
    }

    #[test]
    fn bind_assumes_the_placement_and_writes_the_gpus() {
        let mut m = mirror(&[("a", 2)], &[]);
        let mut policy = policy(PolicyName::Phalanx);
        let p = pod("p", "u-p", json!({"nvidia.com/gpu": "2"}));
        let plan = bind_plan(&mut m, policy.as_mut(), &p, &bind_args("p", "u-p", "a")).unwrap();
        assert_eq!(plan.node, "a");
        assert_eq!(plan.pod.to_string(), "ml/p");
        let annotation = plan.annotation.unwrap();
        assert_eq!(annotation.node, "a");
        let uuids: Vec<_> = annotation.gpus.iter().map(|g| g.uuid.as_str()).collect();
        assert_eq!(uuids, ["GPU-a-0", "GPU-a-1"]);
        assert!(m.state().is_assumed("u-p"));
        // The next filter sees the assumption.
        let other = pod("q", "u-q", json!({"nvidia.com/gpu": "1"}));
        let result = filter(&m, args_names(other.clone(), &["a"]));
        assert_eq!(
            result.failed_nodes.get("a").map(String::as_str),
            Some("Insufficient nvidia.com/gpu")
        );
        // A retried bind of the same pod re-plans instead of counting it twice.
        assert!(bind_plan(&mut m, policy.as_mut(), &p, &bind_args("p", "u-p", "a")).is_ok());
        // Another pod does not fit any more; nothing is assumed for it.
        let error =
            bind_plan(&mut m, policy.as_mut(), &other, &bind_args("q", "u-q", "a")).unwrap_err();
        assert_eq!(
            error,
            BindRefusal::new(
                ExtenderRefusal::NodeRefused,
                "pod ml/q cannot be bound to node a: Insufficient nvidia.com/gpu"
            )
        );
        assert!(!m.state().holds("u-q"));
        // A share gets an annotation naming one GPU.
        m.state_mut().forget_assumed("u-p");
        let share = pod("s", "u-s", json!({"phalanx.dev/gpu-milli": "300"}));
        let plan = bind_plan(&mut m, policy.as_mut(), &share, &bind_args("s", "u-s", "a")).unwrap();
        assert_eq!(plan.annotation.unwrap().gpus.len(), 1);
    }

    /// One pod per refusal, each checked against a mirror where the pod would
    /// otherwise fit, so that only the named reason can refuse it.
    #[test]
    fn bind_refuses_pods_not_meant_for_it() {
        let mut bound_elsewhere = pod("b", "u-b", json!({"nvidia.com/gpu": "1"}));
        bound_elsewhere.spec.as_mut().unwrap().node_name = Some("a".into());
        let watched_bound = pod("w", "u-w", json!({"nvidia.com/gpu": "1"}));
        let mut m = mirror(&[("a", 2), ("b", 2)], &[(watched_bound.clone(), "b")]);
        let mut other_scheduler = pod("o", "u-o", json!({"nvidia.com/gpu": "1"}));
        other_scheduler.spec.as_mut().unwrap().scheduler_name = Some("gpu-batch".into());
        let mut unnamed_scheduler = pod("d", "u-d", json!({"nvidia.com/gpu": "1"}));
        unnamed_scheduler.spec.as_mut().unwrap().scheduler_name = None;
        let cpu_only = pod("c", "u-c", json!({"cpu": "1"}));
        let mut gang = pod("g", "u-g", json!({"nvidia.com/gpu": "1"}));
        gang.metadata.labels = Some([(LABEL_POD_GROUP.to_owned(), "job".to_owned())].into());
        let unreadable = pod("x", "u-x", json!({"nvidia.com/gpu": "lots"}));
        let fits = pod("f", "u-f", json!({"nvidia.com/gpu": "1"}));
        let cases: Vec<(&Pod, ExtenderBindingArgs, ExtenderRefusal, &str)> = vec![
            (&fits, bind_args("f", "u-old", "a"), ExtenderRefusal::UidMismatch, "was replaced"),
            (
                &bound_elsewhere,
                bind_args("b", "u-b", "b"),
                ExtenderRefusal::AlreadyBound,
                "already bound to node a",
            ),
            (
                &watched_bound,
                bind_args("w", "u-w", "a"),
                ExtenderRefusal::AlreadyBound,
                "already bound",
            ),
            (
                &other_scheduler,
                bind_args("o", "u-o", "a"),
                ExtenderRefusal::OtherScheduler,
                "\"gpu-batch\", which this extender does not serve (extender.schedulerNames: default-scheduler)",
            ),
            (
                &cpu_only,
                bind_args("c", "u-c", "a"),
                ExtenderRefusal::NoManagedResource,
                "requests neither nvidia.com/gpu nor phalanx.dev/gpu-milli",
            ),
            (&gang, bind_args("g", "u-g", "a"), ExtenderRefusal::Gang, "belongs to gang ml/job"),
            (
                &unreadable,
                bind_args("x", "u-x", "a"),
                ExtenderRefusal::InvalidPod,
                "nvidia.com/gpu",
            ),
            (
                &fits,
                bind_args("f", "u-f", "ghost"),
                ExtenderRefusal::NodeRefused,
                NODE_NOT_KNOWN,
            ),
        ];
        let mut policy = policy(PolicyName::Phalanx);
        for (pod, args, reason, text) in cases {
            let refusal = bind_plan(&mut m, policy.as_mut(), pod, &args).unwrap_err();
            assert_eq!(refusal.reason, reason, "{args:?}: {refusal}");
            assert!(refusal.message.contains(text), "{args:?}: {refusal}");
            assert!(!m.state().is_assumed(&args.pod_uid), "{args:?}");
        }
        // The pod without a schedulerName is kube-scheduler's default profile.
        assert!(bind_plan(
            &mut m,
            policy.as_mut(),
            &unnamed_scheduler,
            &bind_args("d", "u-d", "a")
        )
        .is_ok());
        // Before the watches have listed everything nothing is bound.
        let mut fresh = ClusterMirror::new(60_000);
        let refusal = bind_plan(
            &mut fresh,
            policy.as_mut(),
            &fits,
            &bind_args("f", "u-f", "a"),
        )
        .unwrap_err();
        assert_eq!(refusal.reason, ExtenderRefusal::NotSynced);
        // A profile the config names is served.
        let names = vec!["default-scheduler".to_owned(), "gpu-batch".to_owned()];
        assert!(plan_bind(
            &mut m,
            policy.as_mut(),
            &other_scheduler,
            &bind_args("o", "u-o", "a"),
            &names
        )
        .is_ok());
    }

    #[test]
    fn managed_resources_are_found_in_requests_limits_and_init_containers() {
        let limits_only: Pod = from(json!({
            "metadata": {"name": "l", "namespace": "ml", "uid": "u-l"},
            "spec": {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}
        }));
        assert!(requests_managed_resource(&limits_only));
        let init: Pod = from(json!({
            "metadata": {"name": "i", "namespace": "ml", "uid": "u-i"},
            "spec": {"containers": [{"name": "c"}],
                     "initContainers": [{"name": "warm", "resources": {"requests": {"phalanx.dev/gpu-milli": "100"}}}]}
        }));
        assert!(requests_managed_resource(&init));
        assert!(!requests_managed_resource(&pod(
            "c",
            "u-c",
            json!({"cpu": "1", "memory": "1Gi"})
        )));
        assert!(!requests_managed_resource(&Pod::default()));
    }
}
