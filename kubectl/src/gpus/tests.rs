use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use phalanx_api::GpuNode;
use serde_json::json;

use super::*;

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
    let rows = gpu_rows(&[gpu_node()], &pods, now, None);
    assert_eq!(rows.len(), 2);
    let first = &rows[0];
    assert_eq!((first.index, first.uuid.as_str()), (0, "GPU-a"));
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
    let text = render(&rows);
    assert!(text.contains("unhealthy: XID 79"), "{text}");
    assert!(text.contains("ml/share-a(300m)"), "{text}");
    assert!(text.contains("7s"), "{text}");
    assert!(gpu_rows(&[gpu_node()], &pods, now, Some("gpu-9")).is_empty());
}

#[test]
fn a_node_without_status_shows_unknown_health() {
    let mut node = gpu_node();
    node.status = None;
    let rows = gpu_rows(&[node], &[], Timestamp::UNIX_EPOCH, Some("gpu-1"));
    assert_eq!(rows[0].healthy, None);
    assert_eq!(rows[0].telemetry_age_seconds, None);
    assert!(render(&rows).contains("unknown"));
    assert!(render(&[]).starts_with("No GPUs found"));
}
