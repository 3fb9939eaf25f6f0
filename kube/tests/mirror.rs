//! The cluster mirror fed watch events directly, as the watches deliver them:
//! relists (`Init` … `InitApply` … `InitDone`) and live events (`Apply`,
//! `Delete`), with what each must leave in the engine's snapshot.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::watcher::Event;
use phalanx_api::GpuNode;
use phalanx_engine::TelemetryRejection;
use phalanx_kube::cluster_state::TelemetryReport;
use phalanx_kube::mirror::ClusterMirror;
use serde_json::json;

/// Telemetry older than a minute is ignored; the tests' clock stays well inside.
const MAX_AGE_MS: u64 = 60_000;
const NOW_MS: u64 = 1_000_000;

fn node(name: &str, gpus: u32) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"phalanx.dev/gpu-model": "H100"}},
        "status": {"allocatable": {
            "cpu": "32", "memory": "256Gi", "pods": "110",
            "nvidia.com/gpu": gpus.to_string(),
        }}
    }))
    .unwrap()
}

fn gpu_node(name: &str, gpus: u32, memory_mib: u64) -> GpuNode {
    let devices: Vec<_> = (0..gpus)
        .map(|i| {
            json!({"index": i, "uuid": format!("GPU-{name}-{i}"), "model": "H100",
                   "memoryMib": memory_mib})
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"nodeName": name, "gpus": devices},
    }))
    .unwrap()
}

/// A running pod bound to `node_name` holding `gpus` whole GPUs.
fn bound_pod(uid: &str, node_name: &str, gpus: u32) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("pod-{uid}"), "namespace": "ml", "uid": uid},
        "spec": {
            "schedulerName": "phalanx",
            "nodeName": node_name,
            "containers": [{"name": "main", "resources": {
                "requests": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": gpus.to_string()},
                "limits": {"nvidia.com/gpu": gpus.to_string()},
            }}],
        },
        "status": {"phase": "Running"},
    }))
    .unwrap()
}

/// GPU milli still free on `name`, or `None` when the snapshot lacks the node.
fn free_milli(mirror: &ClusterMirror, name: &str) -> Option<u32> {
    let snapshot = mirror.state().snapshot();
    let id = snapshot.node_id(name)?;
    let node = snapshot.node(id);
    (!node.removed).then(|| node.gpus.iter().map(|g| g.milli_free).sum())
}

fn gpus_of(mirror: &ClusterMirror, name: &str) -> Vec<(String, u64)> {
    let snapshot = mirror.state().snapshot();
    let node = snapshot.node(snapshot.node_id(name).unwrap());
    node.gpus
        .iter()
        .map(|g| (g.uuid.clone(), g.memory_mib))
        .collect()
}

/// A first list of `nodes` (with GpuNodes) and `pods`, as a fresh watch delivers it.
fn listed(nodes: &[(&str, u32)], pods: &[Pod]) -> ClusterMirror {
    let mut mirror = ClusterMirror::new(MAX_AGE_MS);
    mirror.node_event(Event::Init, NOW_MS);
    mirror.gpu_node_event(Event::Init, NOW_MS);
    mirror.pod_event(&Event::Init);
    for (name, gpus) in nodes {
        mirror.node_event(Event::InitApply(node(name, *gpus)), NOW_MS);
        mirror.gpu_node_event(Event::InitApply(gpu_node(name, *gpus, 81_920)), NOW_MS);
    }
    for pod in pods {
        mirror.pod_event(&Event::InitApply(pod.clone()));
    }
    mirror.node_event(Event::InitDone, NOW_MS);
    mirror.gpu_node_event(Event::InitDone, NOW_MS);
    mirror.pod_event(&Event::InitDone);
    mirror
}

#[test]
fn the_first_list_syncs_and_accounts_bound_pods() {
    let mut mirror = ClusterMirror::new(MAX_AGE_MS);
    assert!(!mirror.synced());
    mirror.node_event(Event::Init, NOW_MS);
    mirror.node_event(Event::InitApply(node("n1", 8)), NOW_MS);
    mirror.node_event(Event::InitDone, NOW_MS);
    assert!(!mirror.synced(), "GpuNodes and Pods have not listed yet");
    mirror.gpu_node_event(Event::Init, NOW_MS);
    mirror.gpu_node_event(Event::InitDone, NOW_MS);
    mirror.pod_event(&Event::Init);
    mirror.pod_event(&Event::InitApply(bound_pod("u1", "n1", 2)));
    mirror.pod_event(&Event::InitDone);
    assert!(mirror.synced());
    assert!(mirror.is_bound("u1"));
    assert_eq!(free_milli(&mirror, "n1"), Some(6_000));
}

#[test]
fn a_relist_drops_nodes_the_new_list_no_longer_has() {
    let mut mirror = listed(&[("n1", 8), ("n2", 8)], &[]);
    assert!(mirror.state().has_node("n2"));

    // The watch expired (410 Gone) and relisted while n2 was deleted: no Delete
    // event ever arrives for it, only a list without it.
    mirror.node_event(Event::Init, NOW_MS);
    mirror.node_event(Event::InitApply(node("n1", 8)), NOW_MS);
    let change = mirror.node_event(Event::InitDone, NOW_MS);
    assert!(change.cluster_changed);
    assert!(mirror.state().has_node("n1"));
    assert!(!mirror.state().has_node("n2"));
    assert_eq!(free_milli(&mirror, "n2"), None);
}

#[test]
fn a_relist_drops_pods_the_new_list_no_longer_has() {
    let mut mirror = listed(
        &[("n1", 8)],
        &[bound_pod("u1", "n1", 2), bound_pod("u2", "n1", 4)],
    );
    assert_eq!(free_milli(&mirror, "n1"), Some(2_000));

    // u2 finished and was deleted while the pod watch was down.
    mirror.pod_event(&Event::Init);
    mirror.pod_event(&Event::InitApply(bound_pod("u1", "n1", 2)));
    let change = mirror.pod_event(&Event::InitDone);
    assert!(change.cluster_changed, "freed GPUs are worth a retry");
    assert!(mirror.is_bound("u1"));
    assert!(!mirror.is_bound("u2"));
    assert!(!mirror.state().holds("u2"));
    assert_eq!(free_milli(&mirror, "n1"), Some(6_000));
}

#[test]
fn a_relist_drops_gpunodes_the_new_list_no_longer_has() {
    let mut mirror = listed(&[("n1", 2)], &[]);
    assert_eq!(gpus_of(&mirror, "n1")[0].0, "GPU-n1-0");

    // Without its GpuNode the node falls back to its extended resources: the
    // same count of GPUs under synthetic UUIDs and no known memory.
    mirror.gpu_node_event(Event::Init, NOW_MS);
    mirror.gpu_node_event(Event::InitDone, NOW_MS);
    assert_eq!(
        gpus_of(&mirror, "n1"),
        vec![("n1-gpu-0".to_owned(), 0), ("n1-gpu-1".to_owned(), 0)]
    );
}

#[test]
fn a_pod_seen_before_its_node_is_replayed_when_the_node_appears() {
    let mut mirror = ClusterMirror::new(MAX_AGE_MS);
    // Watches are independent: the pod watch may deliver first.
    mirror.pod_event(&Event::Apply(bound_pod("u1", "late", 3)));
    assert!(mirror.is_bound("u1"));
    assert_eq!(free_milli(&mirror, "late"), None);

    mirror.node_event(Event::Apply(node("late", 8)), NOW_MS);
    assert_eq!(
        free_milli(&mirror, "late"),
        Some(5_000),
        "the pod's GPUs are held once the node exists"
    );
    assert!(mirror.state().holds("u1"));
}

#[test]
fn a_gpu_inventory_change_rebuilds_the_node() {
    let mut mirror = listed(&[("n1", 2)], &[bound_pod("u1", "n1", 1)]);
    assert_eq!(gpus_of(&mirror, "n1").len(), 2);

    // The device plugin found two more GPUs (or a driver upgrade reported new
    // memory sizes): the node is rebuilt from the new GpuNode.
    let change = mirror.gpu_node_event(Event::Apply(gpu_node("n1", 4, 97_871)), NOW_MS);
    assert!(change.cluster_changed);
    let gpus = gpus_of(&mirror, "n1");
    assert_eq!(gpus.len(), 4);
    assert!(gpus.iter().all(|(_, memory)| *memory == 97_871));
    assert_eq!(
        free_milli(&mirror, "n1"),
        Some(3_000),
        "the bound pod still holds its GPU after the rebuild"
    );

    // The same GpuNode again (a heartbeat) changes nothing.
    let change = mirror.gpu_node_event(Event::Apply(gpu_node("n1", 4, 97_871)), NOW_MS);
    assert!(!change.cluster_changed);
}

#[test]
fn deletes_free_what_they_held() {
    let mut mirror = listed(&[("n1", 8)], &[bound_pod("u1", "n1", 8)]);
    assert_eq!(free_milli(&mirror, "n1"), Some(0));

    let change = mirror.pod_event(&Event::Delete(bound_pod("u1", "n1", 8)));
    assert!(change.cluster_changed);
    assert_eq!(free_milli(&mirror, "n1"), Some(8_000));

    let change = mirror.node_event(Event::Delete(node("n1", 8)), NOW_MS);
    assert!(change.cluster_changed);
    assert!(!mirror.state().has_node("n1"));
}

#[test]
fn a_finished_pod_releases_its_gpus() {
    let mut mirror = listed(&[("n1", 8)], &[bound_pod("u1", "n1", 4)]);
    let mut done = bound_pod("u1", "n1", 4);
    done.status.as_mut().unwrap().phase = Some("Succeeded".to_owned());
    mirror.pod_event(&Event::Apply(done));
    assert!(!mirror.is_bound("u1"));
    assert_eq!(free_milli(&mirror, "n1"), Some(8_000));
}

#[test]
fn a_node_that_cannot_be_read_is_removed_and_the_error_names_it() {
    let mut mirror = listed(&[("n1", 8)], &[]);
    let mut broken = node("n1", 8);
    broken
        .status
        .as_mut()
        .unwrap()
        .allocatable
        .as_mut()
        .unwrap()
        .insert(
            "cpu".to_owned(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("lots".to_owned()),
        );
    let change = mirror.node_event(Event::Apply(broken), NOW_MS);
    assert!(!mirror.state().has_node("n1"));
    assert_eq!(change.errors.len(), 1, "{:?}", change.errors);
    assert!(change.errors[0].contains("node n1"), "{:?}", change.errors);
}

/// `name`'s GpuNode with a status: per GPU (memory used MiB, utilisation %), all
/// observed at `observed_at` (RFC 3339).
fn gpu_node_reporting(name: &str, observed_at: &str, gpus: &[(u64, u32)]) -> GpuNode {
    let mut gn = gpu_node(name, gpus.len() as u32, 81_920);
    let status: Vec<_> = gpus
        .iter()
        .enumerate()
        .map(|(i, (used, util))| {
            json!({"uuid": format!("GPU-{name}-{i}"), "healthy": true,
                   "memoryUsedMib": used, "utilizationPercent": util})
        })
        .collect();
    gn.status =
        Some(serde_json::from_value(json!({"observedAt": observed_at, "gpus": status})).unwrap());
    gn
}

/// What a new pod could use of each of `name`'s GPUs.
fn usable(mirror: &ClusterMirror, name: &str) -> Vec<u32> {
    let snapshot = mirror.state().snapshot();
    let node = snapshot.node(snapshot.node_id(name).unwrap());
    node.gpus.iter().map(|g| g.usable_free()).collect()
}

/// NOW_MS as the device plugin writes it.
const NOW: &str = "1970-01-01T00:16:40Z";

#[test]
fn plausible_telemetry_still_caps_the_gpu() {
    let mut mirror = listed(&[("n1", 2)], &[]);
    let change = mirror.gpu_node_event(
        Event::Apply(gpu_node_reporting("n1", NOW, &[(40_960, 97), (0, 0)])),
        NOW_MS,
    );
    assert_eq!(change.telemetry, TelemetryReport::default());
    assert!(change.newly_rejecting.is_empty());
    assert_eq!(usable(&mirror, "n1"), vec![500, 1000]);
}

#[test]
fn hostile_telemetry_is_ignored_counted_and_reported_once_per_node() {
    let mut mirror = listed(&[("n1", 2)], &[]);
    // A busy GPU 0 first.
    mirror.gpu_node_event(
        Event::Apply(gpu_node_reporting("n1", NOW, &[(81_920, 100), (0, 0)])),
        NOW_MS,
    );
    assert_eq!(usable(&mirror, "n1"), vec![0, 1000]);
    // 3.7e17 MiB used wrapped `used * 50` and made the busy GPU look idle; now the
    // sample is ignored and the GPU falls back to allocation accounting.
    let hostile = gpu_node_reporting("n1", NOW, &[(370_000_000_000_000_000, 50), (10, 1000)]);
    let change = mirror.gpu_node_event(Event::Apply(hostile.clone()), NOW_MS);
    let reasons: Vec<_> = change
        .telemetry
        .rejected
        .iter()
        .map(|r| (r.node.as_str(), r.gpu_index, r.reason))
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("n1", 0, TelemetryRejection::MemoryUsed),
            ("n1", 1, TelemetryRejection::Utilization)
        ]
    );
    assert_eq!(change.newly_rejecting.len(), 1, "one log line for the node");
    assert_eq!(change.newly_rejecting[0].reason.field(), "memoryUsedMib");
    assert_eq!(usable(&mirror, "n1"), vec![1000, 1000]);
    assert_eq!(mirror.expire_telemetry(NOW_MS), 2, "counted as stale");

    // The same bad status again: counted again, not logged again.
    let change = mirror.gpu_node_event(Event::Apply(hostile), NOW_MS);
    assert_eq!(change.telemetry.rejected.len(), 2);
    assert!(change.newly_rejecting.is_empty());
    // A Node event re-applies the samples without counting them twice.
    let change = mirror.node_event(Event::Apply(node("n1", 2)), NOW_MS);
    assert_eq!(change.telemetry, TelemetryReport::default());

    // Plausible again, then bad again: worth a new log line.
    mirror.gpu_node_event(
        Event::Apply(gpu_node_reporting("n1", NOW, &[(0, 0), (0, 0)])),
        NOW_MS,
    );
    let change = mirror.gpu_node_event(
        Event::Apply(gpu_node_reporting("n1", NOW, &[(0, 101), (0, 0)])),
        NOW_MS,
    );
    assert_eq!(change.newly_rejecting.len(), 1);
}

#[test]
fn telemetry_from_the_future_is_rejected_and_old_telemetry_is_stale() {
    let mut mirror = listed(&[("n1", 2)], &[]);
    // An hour ahead used to count as fresh for an hour (and for millennia for year 9000).
    for future in ["1970-01-01T01:16:40Z", "9000-01-01T00:00:00Z"] {
        let change = mirror.gpu_node_event(
            Event::Apply(gpu_node_reporting("n1", future, &[(81_920, 100), (0, 0)])),
            NOW_MS,
        );
        assert!(change
            .telemetry
            .rejected
            .iter()
            .all(|r| r.reason == TelemetryRejection::ObservedInFuture));
        assert_eq!(change.telemetry.rejected.len(), 2, "{future}");
        assert_eq!(usable(&mirror, "n1"), vec![1000, 1000]);
    }
    // Within the clock skew allowance it is fresh.
    let change = mirror.gpu_node_event(
        Event::Apply(gpu_node_reporting(
            "n1",
            "1970-01-01T00:16:44Z",
            &[(81_920, 100), (0, 0)],
        )),
        NOW_MS,
    );
    assert_eq!(change.telemetry, TelemetryReport::default());
    assert_eq!(usable(&mirror, "n1"), vec![0, 1000]);
    // Older than the limit: plausible, ignored, counted as stale samples.
    let change = mirror.gpu_node_event(
        Event::Apply(gpu_node_reporting(
            "n1",
            "1970-01-01T00:00:00Z",
            &[(81_920, 100), (0, 0)],
        )),
        NOW_MS,
    );
    assert_eq!(change.telemetry.stale_samples, 2);
    assert!(change.telemetry.rejected.is_empty());
    assert_eq!(usable(&mirror, "n1"), vec![1000, 1000]);
}

/// A pod created with `spec.nodeName` already set (a DaemonSet's, or one placed by
/// hand) is never Phalanx's to bind, yet what it holds is accounted on its node:
/// CPU, host ports and extended resources, so that pending pods see them taken.
#[test]
fn a_pod_with_node_name_preset_is_accounted_never_scheduled() {
    let mut n1 = node("n1", 0);
    n1.status
        .as_mut()
        .unwrap()
        .allocatable
        .as_mut()
        .unwrap()
        .insert(
            "rdma/hca".into(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("2".into()),
        );
    let preset: Pod = serde_json::from_value(json!({
        "metadata": {"name": "agent", "namespace": "kube-system", "uid": "u-agent"},
        "spec": {
            "nodeName": "n1",
            "schedulerName": "phalanx",
            "containers": [{"name": "agent",
                "ports": [{"containerPort": 9100, "hostPort": 9100}],
                "resources": {"requests": {"cpu": "500m", "rdma/hca": "1"}}}],
        },
    }))
    .unwrap();
    assert!(!phalanx_kube::translate::is_ours(&preset, "phalanx"));
    let mut mirror = ClusterMirror::new(MAX_AGE_MS);
    mirror.node_event(Event::Init, NOW_MS);
    mirror.node_event(Event::InitApply(n1), NOW_MS);
    mirror.node_event(Event::InitDone, NOW_MS);
    mirror.gpu_node_event(Event::Init, NOW_MS);
    mirror.gpu_node_event(Event::InitDone, NOW_MS);
    mirror.pod_event(&Event::Init);
    mirror.pod_event(&Event::InitApply(preset.clone()));
    mirror.pod_event(&Event::InitDone);
    assert!(mirror.is_bound("u-agent"));

    let snapshot = mirror.state().snapshot();
    let id = snapshot.node_id("n1").unwrap();
    let n = snapshot.node(id);
    assert_eq!(n.cpu_milli_used, 500);
    assert_eq!(n.used_ports().len(), 1);
    let hca = n
        .scalar_resources()
        .iter()
        .find(|r| &*r.name == "rdma/hca")
        .unwrap();
    assert_eq!((hca.allocatable, hca.requested), (2, 1));

    // A pending copy wanting the same host port does not fit beside it.
    let mut pending = preset;
    pending.spec.as_mut().unwrap().node_name = None;
    pending.metadata.uid = Some("u-pending".into());
    let demand = phalanx_kube::translate::pod_demand(&pending, snapshot.models()).unwrap();
    assert_eq!(
        snapshot.check_fit(id, &demand),
        Err(phalanx_engine::UnfitReason::HostPortConflict)
    );

    mirror.pod_event(&Event::Delete(deleted_agent("u-agent")));
    let snapshot = mirror.state().snapshot();
    let n = snapshot.node(id);
    assert_eq!((n.cpu_milli_used, n.used_ports().len()), (0, 0));
}

/// The agent as its Delete event carries it.
fn deleted_agent(uid: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "agent", "namespace": "kube-system", "uid": uid},
        "spec": {"nodeName": "n1", "containers": []},
    }))
    .unwrap()
}
