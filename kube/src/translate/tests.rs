//! Translation end to end: Kubernetes objects through the engine and back to an
//! assignment annotation.

use k8s_openapi::api::core::v1::{Node, Pod};
use phalanx_api::{AssignedGpu, GpuNode};
use serde_json::json;

use super::*;
use phalanx_engine::{
    build_policy, schedule_one, ClusterSnapshot, CycleOutcome, CycleScratch, GpuAssignment,
    GpuDemand, NodeSpec, Placement, PolicyConfig, PolicyName, WorkloadSource,
};

fn from<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).unwrap()
}

fn gpu_node(name: &str, gpus: u32, model: &str) -> (Node, GpuNode) {
    let node: Node = from(json!({
        "metadata": {"name": name},
        "status": {"allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110",
                                   "nvidia.com/gpu": gpus.to_string()}}
    }));
    let devices: Vec<_> = (0..gpus)
        .map(|i| json!({"index": i, "uuid": format!("GPU-{name}-{i}"), "model": model, "memoryMib": 81920}))
        .collect();
    let gn: GpuNode =
        from(json!({"metadata": {"name": name}, "spec": {"nodeName": name, "gpus": devices}}));
    (node, gn)
}

fn schedule(snapshot: &ClusterSnapshot, pod: &Pod) -> Option<Placement> {
    let demand = pod_demand(pod, snapshot.models()).unwrap();
    let config = PolicyConfig {
        seed: 0,
        workload: WorkloadSource::Online,
    };
    let mut policy = build_policy(PolicyName::BestFit, &config);
    match schedule_one(
        snapshot,
        policy.as_mut(),
        &demand,
        &mut CycleScratch::default(),
    ) {
        CycleOutcome::Placed(p) => Some(p),
        CycleOutcome::Unschedulable { .. } => None,
    }
}

fn cluster() -> ClusterSnapshot {
    let mut snapshot = ClusterSnapshot::new();
    for (name, model) in [
        ("h1", "NVIDIA H100 80GB HBM3"),
        ("a1", "NVIDIA A100-SXM4-80GB"),
    ] {
        let (node, gn) = gpu_node(name, 8, model);
        snapshot
            .add_node(node_spec(&node, Some(&gn)).unwrap())
            .unwrap();
    }
    snapshot
}

fn gpu_pod(annotations: serde_json::Value, spec_extra: serde_json::Value) -> Pod {
    let mut spec = json!({"containers": [{"name": "main",
        "resources": {"requests": {"cpu": "1", "memory": "1Gi", "phalanx.dev/gpu-milli": "500"}}}]});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), spec_extra.as_object()) {
        spec.extend(extra.clone());
    }
    from(
        json!({"metadata": {"name": "p", "namespace": "ml", "annotations": annotations}, "spec": spec}),
    )
}

#[test]
fn model_annotation_steers_the_pod_to_that_model() {
    let snapshot = cluster();
    let pod = gpu_pod(
        json!({"phalanx.dev/gpu-models": "NVIDIA A100-SXM4-80GB"}),
        json!({}),
    );
    let placement = schedule(&snapshot, &pod).unwrap();
    assert_eq!(snapshot.node(placement.node).name, "a1");
    let pod = gpu_pod(json!({"phalanx.dev/gpu-models": "B200"}), json!({}));
    assert_eq!(schedule(&snapshot, &pod), None, "no B200 node yet");
}

#[test]
fn required_affinity_on_the_model_label_and_on_the_node_name() {
    let snapshot = cluster();
    let by_label = gpu_pod(
        json!({}),
        json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "phalanx.dev/gpu-model",
                "operator": "In", "values": ["NVIDIA-H100-80GB-HBM3"]}]}]}}}}),
    );
    let placement = schedule(&snapshot, &by_label).unwrap();
    assert_eq!(snapshot.node(placement.node).name, "h1");
    let by_name = gpu_pod(
        json!({}),
        json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name",
                "operator": "In", "values": ["a1"]}]}]}}}}),
    );
    let placement = schedule(&snapshot, &by_name).unwrap();
    assert_eq!(snapshot.node(placement.node).name, "a1");
}

#[test]
fn placement_becomes_an_annotation_that_reads_back() {
    let snapshot = cluster();
    let pod = gpu_pod(json!({}), json!({}));
    let placement = schedule(&snapshot, &pod).unwrap();
    let node = snapshot.node(placement.node);
    let annotation = assignment_annotation(&node.name, &placement, node);
    assert_eq!(annotation.node, node.name);
    assert_eq!(annotation.gpus.len(), 1);
    let gpu = &annotation.gpus[0];
    assert_eq!(gpu.milli, 500);
    assert_eq!(gpu.uuid, format!("GPU-{}-{}", node.name, gpu.index));

    let annotated: Pod = from(json!({"metadata": {"name": "p", "namespace": "ml",
        "annotations": {"phalanx.dev/gpu-assignment": annotation.to_json()}}}));
    assert_eq!(assignment_of(&annotated).unwrap(), Some(annotation));
}

#[test]
fn synthetic_uuids_are_not_written_into_annotations() {
    let node: Node = from(json!({
        "metadata": {"name": "t1", "labels": {"nvidia.com/gpu.product": "Tesla-T4"}},
        "status": {"allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110", "nvidia.com/gpu": "4"}}
    }));
    let mut snapshot = ClusterSnapshot::new();
    let id = snapshot.add_node(node_spec(&node, None).unwrap()).unwrap();
    let placement = Placement {
        node: id,
        gpus: GpuAssignment::from_indices([1, 3], 1000),
    };
    let annotation = assignment_annotation("t1", &placement, snapshot.node(id));
    assert_eq!(
        annotation.gpus,
        vec![
            AssignedGpu {
                index: 1,
                uuid: String::new(),
                milli: 1000
            },
            AssignedGpu {
                index: 3,
                uuid: String::new(),
                milli: 1000
            },
        ]
    );
}

#[test]
fn the_gpu_limit_matches_the_engine() {
    let node_with = |gpus: usize| NodeSpec {
        name: format!("n{gpus}"),
        gpu_model: Some("T4".into()),
        gpus: vec![Default::default(); gpus],
        ..NodeSpec::default()
    };
    let mut snapshot = ClusterSnapshot::new();
    assert!(snapshot.add_node(node_with(MAX_GPUS_PER_NODE)).is_ok());
    assert!(snapshot.add_node(node_with(MAX_GPUS_PER_NODE + 1)).is_err());
}

#[test]
fn live_states_apply_to_the_snapshot() {
    let (node, mut gn) = gpu_node("h1", 2, "NVIDIA H100 80GB HBM3");
    gn.status = Some(from(json!({"observedAt": "2025-01-01T00:00:00Z", "gpus": [
        {"uuid": "GPU-h1-1", "healthy": false, "memoryUsedMib": 0, "utilizationPercent": 0}]})));
    let mut snapshot = ClusterSnapshot::new();
    let id = snapshot
        .add_node(node_spec(&node, Some(&gn)).unwrap())
        .unwrap();
    for state in gpu_live_states(&gn) {
        snapshot
            .set_gpu_health(id, state.index, state.healthy)
            .unwrap();
    }
    assert_eq!(snapshot.node(id).fully_free_gpus(), 1);
    let whole_two: Pod = from(json!({"metadata": {"name": "p", "namespace": "ml"},
        "spec": {"containers": [{"name": "m", "resources": {"limits": {"nvidia.com/gpu": "2"}}}]}}));
    assert_eq!(
        pod_demand(&whole_two, snapshot.models()).unwrap().gpu,
        GpuDemand::Whole { count: 2 }
    );
    assert_eq!(
        schedule(&snapshot, &whole_two),
        None,
        "one GPU is unhealthy"
    );
}

#[test]
fn only_a_pod_with_gates_left_is_scheduling_gated() {
    let gated: Pod = from(json!({
        "metadata": {"name": "p"},
        "spec": {"containers": [], "schedulingGates": [{"name": "kueue.x-k8s.io/admission"}]}
    }));
    let emptied: Pod = from(json!({
        "metadata": {"name": "p"},
        "spec": {"containers": [], "schedulingGates": []}
    }));
    let plain: Pod = from(json!({"metadata": {"name": "p"}, "spec": {"containers": []}}));
    let no_spec: Pod = from(json!({"metadata": {"name": "p"}}));
    assert!(is_scheduling_gated(&gated));
    assert!(!is_scheduling_gated(&emptied));
    assert!(!is_scheduling_gated(&plain));
    assert!(!is_scheduling_gated(&no_spec));
}

/// The node the BestFit policy chooses for `pod`, for tests that check which
/// node a translated rule steers a pod to.
pub(super) fn best_fit_choice(
    snapshot: &phalanx_engine::ClusterSnapshot,
    pod: &phalanx_engine::PodDemand,
) -> String {
    let mut policy = phalanx_engine::build_policy(
        phalanx_engine::PolicyName::BestFit,
        &phalanx_engine::PolicyConfig {
            seed: 0,
            workload: phalanx_engine::WorkloadSource::Fixed(vec![]),
        },
    );
    let outcome = phalanx_engine::schedule_one(
        snapshot,
        policy.as_mut(),
        pod,
        &mut phalanx_engine::CycleScratch::default(),
    );
    let phalanx_engine::CycleOutcome::Placed(p) = outcome else {
        panic!("{outcome:?}");
    };
    snapshot.node(p.node).name.clone()
}
