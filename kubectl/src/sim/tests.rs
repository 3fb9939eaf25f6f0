use k8s_openapi::api::core::v1::{Node, Pod};
use phalanx_api::GpuNode;
use serde_json::json;

use super::*;

fn gpu_node(name: &str, gpus: u32) -> (Node, GpuNode) {
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110",
                                   "nvidia.com/gpu": gpus.to_string()}}
    }))
    .unwrap();
    let devices: Vec<_> = (0..gpus)
        .map(|i| json!({"index": i, "uuid": format!("GPU-{name}-{i}"), "model": "A100", "memoryMib": 81920}))
        .collect();
    let gpu_node: GpuNode = serde_json::from_value(json!({
        "apiVersion": "phalanx.dev/v1alpha1", "kind": "GpuNode",
        "metadata": {"name": name}, "spec": {"nodeName": name, "gpus": devices}
    }))
    .unwrap();
    (node, gpu_node)
}

fn pod(name: &str, gpus: u32, node: Option<&str>) -> Pod {
    let mut spec = json!({
        "schedulerName": "phalanx",
        "containers": [{"name": "main", "image": "x", "resources": {
            "requests": {"cpu": "1", "memory": "1Gi"},
            "limits": {"nvidia.com/gpu": gpus.to_string()}}}]
    });
    if let Some(node) = node {
        spec["nodeName"] = json!(node);
    }
    let mut pod = json!({"metadata": {"name": name, "namespace": "ml", "uid": format!("uid-{name}")}, "spec": spec,
                         "status": {"phase": if node.is_some() { "Running" } else { "Pending" }}});
    if let Some(node) = node {
        let gpus: Vec<_> = (0..gpus)
            .map(|i| json!({"index": i, "milli": 1000}))
            .collect();
        pod["metadata"]["annotations"] = json!({phalanx_api::ANNOTATION_GPU_ASSIGNMENT:
            json!({"node": node, "gpus": gpus}).to_string()});
    }
    serde_json::from_value(pod).unwrap()
}

/// Two 8-GPU nodes, six GPUs of each taken.
fn cluster() -> ClusterObjects {
    let (a, ga) = gpu_node("gpu-a", 8);
    let (b, gb) = gpu_node("gpu-b", 8);
    ClusterObjects {
        nodes: vec![a, b],
        gpu_nodes: vec![ga, gb],
        pods: vec![
            pod("holder-a", 6, Some("gpu-a")),
            pod("holder-b", 6, Some("gpu-b")),
        ],
        ..ClusterObjects::default()
    }
}

fn try_it(what_if: WhatIf) -> Result<SimReport, SimError> {
    simulate(
        &cluster(),
        &pod("wants-four", 4, None),
        &what_if,
        PolicyName::Phalanx,
        0,
    )
}

#[test]
fn as_the_cluster_is_the_pod_fits_nowhere_and_the_nearest_node_is_named() {
    let report = try_it(WhatIf::default()).unwrap();
    assert!(!report.fits);
    let decision = report.decision.clone().unwrap();
    assert_eq!(
        decision.reasons,
        [("Insufficient nvidia.com/gpu".to_owned(), 2)].into()
    );
    let nearest = decision.nearest.unwrap();
    assert_eq!(nearest.lacks, ["2 more whole GPU(s): 2 free, 4 requested"]);
    let text = render(&report);
    assert!(text.contains("If:     nothing changed"), "{text}");
    assert!(text.contains("Fits:   no"), "{text}");
}

#[test]
fn each_change_can_make_it_fit() {
    for what_if in [
        WhatIf {
            gpus: Some(2),
            ..WhatIf::default()
        },
        WhatIf {
            gpu_milli: Some(500),
            ..WhatIf::default()
        },
        WhatIf {
            evict: vec!["ml/holder-b".into()],
            ..WhatIf::default()
        },
        WhatIf {
            add_like: vec!["gpu-a".into()],
            ..WhatIf::default()
        },
    ] {
        let report = try_it(what_if.clone()).unwrap();
        assert!(report.fits, "{what_if:?}: {report:?}");
        assert!(report.decision.is_none());
    }
    let added = try_it(WhatIf {
        add_like: vec!["gpu-a".into()],
        ..WhatIf::default()
    })
    .unwrap();
    assert_eq!(added.node.as_deref(), Some("gpu-a-sim-0"));
    assert_eq!(added.gpus.len(), 4);
    assert!(render(&added).contains("If:     an empty node like gpu-a were added"));
    let evicted = try_it(WhatIf {
        evict: vec!["ml/holder-b".into()],
        ..WhatIf::default()
    })
    .unwrap();
    assert_eq!(evicted.node.as_deref(), Some("gpu-b"));
}

#[test]
fn removing_a_node_or_asking_more_keeps_it_out() {
    let report = try_it(WhatIf {
        without: vec!["gpu-a".into()],
        cpu: Some("40".into()),
        ..WhatIf::default()
    })
    .unwrap();
    assert!(!report.fits);
    let decision = report.decision.unwrap();
    assert_eq!(decision.nodes, 1);
    assert_eq!(decision.nearest.unwrap().lacks.len(), 2, "CPU and GPUs");
}

#[test]
fn a_bound_pod_is_tried_afresh_in_its_own_place() {
    let objects = cluster();
    let report = simulate(
        &objects,
        &objects.pods[0],
        &WhatIf::default(),
        PolicyName::Phalanx,
        0,
    )
    .unwrap();
    assert!(report.fits, "its own six GPUs are free for it: {report:?}");
}

#[test]
fn bad_changes_are_refused_by_flag() {
    assert_eq!(
        try_it(WhatIf {
            gpus: Some(1),
            gpu_milli: Some(100),
            ..WhatIf::default()
        })
        .unwrap_err(),
        SimError::GpusAndShare
    );
    assert_eq!(
        try_it(WhatIf {
            gpu_milli: Some(1000),
            ..WhatIf::default()
        })
        .unwrap_err(),
        SimError::BadShare(1000)
    );
    assert_eq!(
        try_it(WhatIf {
            evict: vec!["ml/nobody".into()],
            ..WhatIf::default()
        })
        .unwrap_err(),
        SimError::UnknownPod("ml/nobody".into())
    );
    let unknown = try_it(WhatIf {
        add_like: vec!["gpu-z".into()],
        ..WhatIf::default()
    })
    .unwrap_err();
    assert_eq!(unknown.to_string(), "--add-node-like gpu-z: no such node");
    let bad_cpu = try_it(WhatIf {
        cpu: Some("lots".into()),
        ..WhatIf::default()
    })
    .unwrap_err();
    assert!(
        matches!(bad_cpu, SimError::BadPod(ref why) if why.contains("cpu")),
        "{bad_cpu}"
    );
}
