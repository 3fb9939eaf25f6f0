use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use phalanx_api::GpuNode;
use serde_json::json;

use super::*;

fn node(name: &str, gpus: u32, model: Option<&str>) -> Node {
    let mut labels = json!({});
    if let Some(model) = model {
        labels[phalanx_api::LABEL_GPU_MODEL] = json!(model);
    }
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "status": {"allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110",
                                   "nvidia.com/gpu": gpus.to_string()}}
    }))
    .unwrap()
}

fn gpu_node() -> GpuNode {
    serde_json::from_value(json!({
        "apiVersion": "phalanx.dev/v1alpha1", "kind": "GpuNode",
        "metadata": {"name": "gpu-1"},
        "spec": {"nodeName": "gpu-1", "gpus": [
            {"index": 1, "uuid": "GPU-b", "model": "A100", "memoryMib": 81920},
            {"index": 0, "uuid": "GPU-a", "model": "A100", "memoryMib": 81920}
        ]},
        "status": {"observedAt": "2026-12-05T10:00:00.000000Z", "gpus": [
            {"uuid": "GPU-a", "healthy": true, "memoryUsedMib": 1000, "utilizationPercent": 40,
             "pods": [{"namespace": "other", "name": "by-default-scheduler", "milli": 1000}]},
            {"uuid": "GPU-b", "healthy": false, "healthReason": "XID 79", "memoryUsedMib": 0, "utilizationPercent": 0}
        ]}
    }))
    .unwrap()
}

fn pod(name: &str, node: &str, assignment: &str, phase: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "ml",
                     "annotations": {phalanx_api::ANNOTATION_GPU_ASSIGNMENT: assignment}},
        "spec": {"nodeName": node, "containers": []},
        "status": {"phase": phase}
    }))
    .unwrap()
}

#[test]
fn rows_list_holders_health_and_telemetry_age() {
    let pods = [
        pod(
            "share-a",
            "gpu-1",
            r#"{"node":"gpu-1","gpus":[{"index":0,"milli":300}]}"#,
            "Running",
        ),
        pod(
            "share-b",
            "gpu-1",
            r#"{"node":"gpu-1","gpus":[{"index":0,"milli":200}]}"#,
            "Pending",
        ),
        // Finished, and one whose annotation names another node: neither holds.
        pod(
            "done",
            "gpu-1",
            r#"{"node":"gpu-1","gpus":[{"index":1,"milli":1000}]}"#,
            "Succeeded",
        ),
        pod(
            "stale",
            "gpu-2",
            r#"{"node":"gpu-1","gpus":[{"index":1,"milli":1000}]}"#,
            "Running",
        ),
    ];
    let now: Timestamp = "2026-12-05T10:00:07Z".parse().unwrap();
    let nodes = [node("gpu-1", 2, None)];
    let report = gpu_report(&nodes, &[gpu_node()], &pods, now, None);
    let rows = &report.gpus;
    assert_eq!(rows.len(), 2);
    let first = &rows[0];
    assert_eq!((first.index, first.uuid.as_str()), (0, "GPU-a"));
    assert_eq!(first.model, "A100");
    assert_eq!(first.allocated_milli, 1500);
    assert_eq!(first.shares, 2);
    assert_eq!(
        first
            .holders
            .iter()
            .map(|h| h.pod.as_str())
            .collect::<Vec<_>>(),
        ["ml/share-a", "ml/share-b", "other/by-default-scheduler"]
    );
    assert_eq!(first.telemetry_age_seconds, Some(7));
    let second = &rows[1];
    assert_eq!(second.allocated_milli, 0);
    assert_eq!(second.healthy, Some(false));
    let text = render(&report);
    assert!(text.contains("unhealthy: XID 79"), "{text}");
    assert!(text.contains("ml/share-a(300m)"), "{text}");
    assert!(text.contains("7s"), "{text}");
    assert!(gpu_report(&nodes, &[gpu_node()], &pods, now, Some("gpu-9"))
        .gpus
        .is_empty());
}

#[test]
fn a_node_without_gpu_node_counts_its_extended_resource_with_unknown_health() {
    let nodes = [node("plain", 3, Some("T4")), node("cpu-only", 0, None)];
    let report = gpu_report(&nodes, &[], &[], Timestamp::UNIX_EPOCH, None);
    assert_eq!(report.gpus.len(), 3);
    assert!(report
        .gpus
        .iter()
        .all(|r| r.node == "plain" && r.model == "T4"));
    assert_eq!(report.gpus[0].healthy, None);
    assert_eq!(report.gpus[0].telemetry_age_seconds, None);
    assert!(render(&report).contains("unknown"));
    assert!(render(&GpuReport::default()).starts_with("No GPUs found"));
}

#[test]
fn a_node_that_cannot_be_read_is_named_not_dropped_silently() {
    let mut bad = node("bad", 2, Some("A100"));
    bad.status
        .as_mut()
        .unwrap()
        .allocatable
        .as_mut()
        .unwrap()
        .insert(
            "cpu".into(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("lots".into()),
        );
    let report = gpu_report(&[bad], &[], &[], Timestamp::UNIX_EPOCH, None);
    assert!(report.gpus.is_empty());
    assert_eq!(report.unreadable_nodes.len(), 1);
    assert!(
        report.unreadable_nodes[0].starts_with("bad: "),
        "{:?}",
        report.unreadable_nodes
    );
    assert!(render(&report).contains("left out: bad: "));
}
