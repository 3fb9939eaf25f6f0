//! `kubectl phalanx sim POD [--gpus N] [--evict POD] [--add-node-like NODE] …`:
//! would the pod fit if …? The cluster's objects, as listed from the API
//! server, are folded into the engine's snapshot by the same mirror the
//! scheduler runs, the changes applied to the copies, and the pod tried by
//! the same cycle. Pure: fed the listed objects, it changes nothing.
//!
//! Two things differ from the scheduler and are said in the output: the
//! policy starts with no learned workload (which node wins a tie may differ;
//! whether the pod fits does not), and spread defaults are kube-scheduler's
//! System ones (the scheduler's `topologySpread` config is not read).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod, ResourceRequirements,
};
use k8s_openapi::api::storage::v1::{CSINode, StorageClass};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::runtime::watcher::Event;
use phalanx_api::{
    AssignedGpu, GpuNode, SchedulingDecision, RESOURCE_GPU_MILLI, RESOURCE_WHOLE_GPU,
};
use phalanx_engine::{
    build_policy, diagnose, schedule_one, CycleOutcome, CycleScratch, PolicyConfig, PolicyName,
    WorkloadSource,
};
use phalanx_kube::decision::decision_record;
use phalanx_kube::mirror::ClusterMirror;
use phalanx_kube::translate::{pod_key, DefaultSpread};
use serde::Serialize;
use thiserror::Error;

use crate::table;

/// Hostname label kube-scheduler's spread defaults and many affinities use.
const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// Everything the snapshot is built from, as listed.
#[derive(Debug, Clone, Default)]
pub struct ClusterObjects {
    pub nodes: Vec<Node>,
    pub gpu_nodes: Vec<GpuNode>,
    pub pods: Vec<Pod>,
    pub namespaces: Vec<Namespace>,
    pub claims: Vec<PersistentVolumeClaim>,
    pub volumes: Vec<PersistentVolume>,
    pub storage_classes: Vec<StorageClass>,
    pub csi_nodes: Vec<CSINode>,
}

/// The "if …" of the question.
#[derive(Debug, Clone, Default)]
pub struct WhatIf {
    /// The pod asks for this many whole GPUs instead (0: none).
    pub gpus: Option<u32>,
    /// The pod asks for a share of one GPU of this many milli instead.
    pub gpu_milli: Option<u32>,
    /// The pod's containers together request this much CPU (a quantity).
    pub cpu: Option<String>,
    /// The pod's containers together request this much memory (a quantity).
    pub memory: Option<String>,
    /// These pods (`namespace/name`) were gone.
    pub evict: Vec<String>,
    /// These nodes were gone.
    pub without: Vec<String>,
    /// One more empty node like each of these.
    pub add_like: Vec<String>,
}

/// Why the question cannot be answered.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SimError {
    #[error(
        "--gpus and --gpu-milli both set: a pod asks for whole GPUs or a share of one, not both"
    )]
    GpusAndShare,
    #[error("--gpu-milli {0}: a share is 1 to 999 milli of one GPU (use --gpus for whole ones)")]
    BadShare(u32),
    #[error("--evict {0}: no such pod (give it as namespace/name)")]
    UnknownPod(String),
    #[error("--{flag} {node}: no such node")]
    UnknownNode { flag: &'static str, node: String },
    #[error("the pod cannot be tried: {0}")]
    BadPod(String),
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SimReport {
    /// `namespace/name`.
    pub pod: String,
    /// The changes tried, in words.
    pub what_if: Vec<String>,
    pub fits: bool,
    /// Where the policy would place it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<AssignedGpu>,
    pub policy: String,
    /// Per-reason node counts and the nearest node, when it fits nowhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<SchedulingDecision>,
}

/// Tries `pod` on the cluster `objects` describe, changed by `what_if`.
pub fn simulate(
    objects: &ClusterObjects,
    pod: &Pod,
    what_if: &WhatIf,
    policy: PolicyName,
    now_ms: u64,
) -> Result<SimReport, SimError> {
    let key = pod_key(pod);
    let wanted = changed_pod(pod, what_if)?;
    for evicted in &what_if.evict {
        if !objects.pods.iter().any(|p| pod_key(p) == *evicted) {
            return Err(SimError::UnknownPod(evicted.clone()));
        }
    }
    let node_names: Vec<String> = objects
        .nodes
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    for (flag, names) in [
        ("without", &what_if.without),
        ("add-node-like", &what_if.add_like),
    ] {
        if let Some(node) = names.iter().find(|n| !node_names.contains(n)) {
            return Err(SimError::UnknownNode {
                flag,
                node: node.clone(),
            });
        }
    }

    // Telemetry is taken as fresh: the question is about allocations.
    let mut mirror = ClusterMirror::new(u64::MAX);
    mirror.track_volumes();
    for namespace in &objects.namespaces {
        mirror.namespace_event(&Event::Apply(namespace.clone()));
    }
    for claim in &objects.claims {
        mirror.claim_event(&Event::Apply(claim.clone()));
    }
    for volume in &objects.volumes {
        mirror.volume_event(&Event::Apply(volume.clone()));
    }
    for class in &objects.storage_classes {
        mirror.storage_class_event(&Event::Apply(class.clone()));
    }
    for csi in &objects.csi_nodes {
        mirror.csi_node_event(&Event::Apply(csi.clone()));
    }
    let kept = |name: &Option<String>| name.as_ref().is_none_or(|n| !what_if.without.contains(n));
    for node in objects.nodes.iter().filter(|n| kept(&n.metadata.name)) {
        mirror.node_event(Event::Apply(node.clone()), now_ms);
    }
    for gpu_node in objects
        .gpu_nodes
        .iter()
        .filter(|g| kept(&Some(g.spec.node_name.clone())))
    {
        mirror.gpu_node_event(Event::Apply(gpu_node.clone()), now_ms);
    }
    for (n, like) in what_if.add_like.iter().enumerate() {
        let name = format!("{like}-sim-{n}");
        if let Some(node) = objects
            .nodes
            .iter()
            .find(|o| o.metadata.name.as_ref() == Some(like))
        {
            mirror.node_event(Event::Apply(empty_copy_of_node(node, &name)), now_ms);
        }
        if let Some(gpu_node) = objects.gpu_nodes.iter().find(|g| g.spec.node_name == *like) {
            mirror.gpu_node_event(
                Event::Apply(empty_copy_of_gpu_node(gpu_node, &name)),
                now_ms,
            );
        }
    }
    // The pod itself is tried afresh, so its own place (if bound) is freed.
    for other in &objects.pods {
        let other_key = pod_key(other);
        if other_key != key && !what_if.evict.contains(&other_key) {
            mirror.pod_event(&Event::Apply(other.clone()));
        }
    }

    let snapshot = mirror.state().snapshot();
    let demand = DefaultSpread::system()
        .pod_demand(&wanted, snapshot)
        .map_err(|e| SimError::BadPod(e.to_string()))?;
    let mut policy_impl = build_policy(
        policy,
        &PolicyConfig {
            seed: 0,
            workload: WorkloadSource::Online,
        },
    );
    let outcome = schedule_one(
        snapshot,
        policy_impl.as_mut(),
        &demand,
        &mut CycleScratch::default(),
    );
    let mut report = SimReport {
        pod: key,
        what_if: describe(what_if),
        fits: false,
        node: None,
        gpus: Vec::new(),
        policy: policy_impl.name().to_owned(),
        decision: None,
    };
    match outcome {
        CycleOutcome::Placed(placement) => {
            report.fits = true;
            report.node = Some(snapshot.node(placement.node).name.clone());
            report.gpus = placement
                .gpus
                .as_slice()
                .iter()
                .map(|share| AssignedGpu {
                    index: u32::from(share.index),
                    uuid: String::new(),
                    milli: share.milli,
                })
                .collect();
        }
        CycleOutcome::Unschedulable { .. } => {
            let diagnosis = diagnose(snapshot, &demand);
            report.decision = Some(decision_record(&diagnosis, snapshot, "unschedulable"));
        }
    }
    Ok(report)
}

/// The pod as it would be asked for, unbound.
fn changed_pod(pod: &Pod, what_if: &WhatIf) -> Result<Pod, SimError> {
    let mut pod = pod.clone();
    let Some(spec) = pod.spec.as_mut() else {
        return Err(SimError::BadPod("it has no spec".to_owned()));
    };
    spec.node_name = None;
    if let Some(annotations) = pod.metadata.annotations.as_mut() {
        annotations.remove(phalanx_api::ANNOTATION_GPU_ASSIGNMENT);
    }
    let gpu = match (what_if.gpus, what_if.gpu_milli) {
        (Some(_), Some(_)) => return Err(SimError::GpusAndShare),
        (Some(0), None) => Some(None),
        (Some(n), None) => Some(Some((RESOURCE_WHOLE_GPU, n.to_string()))),
        (None, Some(m)) if m == 0 || m >= 1000 => return Err(SimError::BadShare(m)),
        (None, Some(m)) => Some(Some((RESOURCE_GPU_MILLI, m.to_string()))),
        (None, None) => None,
    };
    let Some((first, rest)) = spec.containers.split_first_mut() else {
        return Err(SimError::BadPod("it has no containers".to_owned()));
    };
    let mut set_total = |name: &str, value: Option<String>, limits_too: bool| {
        for container in rest.iter_mut() {
            remove_resource(&mut container.resources, name);
        }
        remove_resource(&mut first.resources, name);
        if let Some(value) = value {
            let resources = first.resources.get_or_insert_with(Default::default);
            resources
                .requests
                .get_or_insert_with(BTreeMap::new)
                .insert(name.to_owned(), Quantity(value.clone()));
            if limits_too {
                resources
                    .limits
                    .get_or_insert_with(BTreeMap::new)
                    .insert(name.to_owned(), Quantity(value));
            }
        }
    };
    if let Some(gpu) = gpu {
        set_total(RESOURCE_WHOLE_GPU, None, true);
        set_total(RESOURCE_GPU_MILLI, None, true);
        if let Some((name, value)) = gpu {
            // Extended resources are asked for in limits (requests equal).
            set_total(name, Some(value), true);
        }
    }
    if let Some(cpu) = &what_if.cpu {
        set_total("cpu", Some(cpu.clone()), false);
    }
    if let Some(memory) = &what_if.memory {
        set_total("memory", Some(memory.clone()), false);
    }
    Ok(pod)
}

fn remove_resource(resources: &mut Option<ResourceRequirements>, name: &str) {
    if let Some(resources) = resources {
        for map in [resources.requests.as_mut(), resources.limits.as_mut()]
            .into_iter()
            .flatten()
        {
            map.remove(name);
        }
    }
}

/// A node like `node` named `name`, with nothing on it.
fn empty_copy_of_node(node: &Node, name: &str) -> Node {
    let mut copy = node.clone();
    copy.metadata.name = Some(name.to_owned());
    copy.metadata.uid = None;
    copy.metadata.resource_version = None;
    if let Some(labels) = copy.metadata.labels.as_mut() {
        if labels.contains_key(HOSTNAME_LABEL) {
            labels.insert(HOSTNAME_LABEL.to_owned(), name.to_owned());
        }
    }
    copy
}

/// Its GPUs, with new identities and nothing held.
fn empty_copy_of_gpu_node(gpu_node: &GpuNode, name: &str) -> GpuNode {
    let mut copy = gpu_node.clone();
    copy.metadata.name = Some(name.to_owned());
    copy.metadata.uid = None;
    copy.metadata.resource_version = None;
    copy.spec.node_name = name.to_owned();
    for gpu in &mut copy.spec.gpus {
        gpu.uuid = format!("{}-{name}", gpu.uuid);
        gpu.nvlink_peers = gpu
            .nvlink_peers
            .iter()
            .map(|p| format!("{p}-{name}"))
            .collect();
    }
    if let Some(status) = copy.status.as_mut() {
        for gpu in &mut status.gpus {
            gpu.uuid = format!("{}-{name}", gpu.uuid);
            gpu.pods.clear();
            gpu.memory_used_mib = 0;
            gpu.utilization_percent = 0;
        }
    }
    copy
}

fn describe(what_if: &WhatIf) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(n) = what_if.gpus {
        out.push(format!("it asked for {n} whole GPU(s)"));
    }
    if let Some(m) = what_if.gpu_milli {
        out.push(format!("it asked for a {m}-milli share of one GPU"));
    }
    if let Some(cpu) = &what_if.cpu {
        out.push(format!("its containers requested {cpu} CPU in all"));
    }
    if let Some(memory) = &what_if.memory {
        out.push(format!("its containers requested {memory} memory in all"));
    }
    out.extend(what_if.evict.iter().map(|p| format!("pod {p} were gone")));
    out.extend(
        what_if
            .without
            .iter()
            .map(|n| format!("node {n} were gone")),
    );
    out.extend(
        what_if
            .add_like
            .iter()
            .map(|n| format!("an empty node like {n} were added")),
    );
    out
}

/// The answer as text.
pub fn render(report: &SimReport) -> String {
    let mut out = format!("Pod:    {}\n", report.pod);
    if report.what_if.is_empty() {
        out.push_str("If:     nothing changed (the cluster as it is now)\n");
    } else {
        out.push_str(&format!("If:     {}\n", report.what_if.join("; ")));
    }
    if report.fits {
        let node = report.node.as_deref().unwrap_or_default();
        out.push_str(&format!(
            "Fits:   yes, {} would place it on {node}",
            report.policy
        ));
        if !report.gpus.is_empty() {
            out.push_str(&format!(" ({})", table::gpu_list(&report.gpus)));
        }
        out.push('\n');
    } else {
        out.push_str("Fits:   no\n");
    }
    if let Some(decision) = &report.decision {
        out.push_str(&format!("Nodes:  {} checked\n", decision.nodes));
        out.push_str(&table::reasons_and_nearest(decision));
    }
    out.push_str(
        "\n(The policy starts with no learned workload, so among nodes that fit its choice may \
         differ from the scheduler's; spread defaults are kube-scheduler's System ones.)\n",
    );
    out
}

#[cfg(test)]
mod tests;
