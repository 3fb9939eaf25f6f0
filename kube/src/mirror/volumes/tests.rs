//! Feed volume watch events, assert what the snapshot decides.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use k8s_openapi::api::core::v1::{Node, Pod};
use phalanx_engine::policy::PolicyConfig;
use phalanx_engine::{
    build_policy, schedule_one, CycleOutcome, CycleScratch, PolicyName, UnfitReason, WorkloadSource,
};
use serde_json::json;

use super::*;

fn from<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).unwrap()
}

fn node(name: &str) -> Node {
    from(json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"allocatable": {"cpu": "8", "memory": "16Gi", "pods": "110"}},
    }))
}

fn class() -> StorageClass {
    from(json!({
        "metadata": {"name": "local"},
        "provisioner": "kubernetes.io/no-provisioner",
        "volumeBindingMode": "WaitForFirstConsumer",
    }))
}

fn claim() -> PersistentVolumeClaim {
    from(json!({
        "metadata": {"name": "db", "namespace": "default"},
        "spec": {"storageClassName": "local", "accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": "1Gi"}}},
    }))
}

fn local_pv(node: &str) -> PersistentVolume {
    from(json!({
        "metadata": {"name": format!("pv-{node}")},
        "spec": {"storageClassName": "local", "capacity": {"storage": "1Gi"},
                 "accessModes": ["ReadWriteOnce"], "local": {"path": "/d"},
                 "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                     {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}},
    }))
}

fn pod() -> Pod {
    from(json!({
        "metadata": {"name": "app", "namespace": "default", "uid": "u1"},
        "spec": {"schedulerName": "phalanx", "containers": [{"name": "c"}],
                 "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "db"}}]},
    }))
}

/// Where the pod would land, or the reasons.
fn decide(mirror: &ClusterMirror) -> Result<String, Vec<UnfitReason>> {
    let snapshot = mirror.state().snapshot();
    let demand = translate::pod_demand(&pod(), snapshot.models()).unwrap();
    let mut policy = build_policy(
        PolicyName::Phalanx,
        &PolicyConfig {
            seed: 1,
            workload: WorkloadSource::Online,
        },
    );
    match schedule_one(
        snapshot,
        policy.as_mut(),
        &demand,
        &mut CycleScratch::default(),
    ) {
        CycleOutcome::Placed(p) => Ok(snapshot.node(p.node).name.clone()),
        CycleOutcome::Unschedulable { reasons, .. } => Err(reasons.into_keys().collect()),
    }
}

fn mirror_with_nodes() -> ClusterMirror {
    let mut mirror = ClusterMirror::new(60_000);
    for name in ["n1", "n2", "n3"] {
        mirror.node_event(Event::Apply(node(name)), 0);
    }
    mirror
}

#[test]
fn watched_claims_pvs_and_classes_steer_the_pod_to_its_pv() {
    let mut mirror = mirror_with_nodes();
    mirror.track_volumes();
    assert_eq!(decide(&mirror), Err(vec![UnfitReason::VolumeClaimUnusable]));
    mirror.storage_class_event(&Event::Apply(class()));
    let change = mirror.claim_event(&Event::Apply(claim()));
    assert!(change.cluster_changed, "a new claim may unblock a pod");
    assert_eq!(decide(&mirror), Err(vec![UnfitReason::NoAvailableVolumes]));
    mirror.volume_event(&Event::Apply(local_pv("n2")));
    assert_eq!(decide(&mirror).as_deref(), Ok("n2"));
    mirror.volume_event(&Event::Delete(local_pv("n2")));
    assert_eq!(decide(&mirror), Err(vec![UnfitReason::NoAvailableVolumes]));
}

#[test]
fn a_relist_forgets_claims_the_list_no_longer_has() {
    let mut mirror = mirror_with_nodes();
    mirror.track_volumes();
    mirror.storage_class_event(&Event::Apply(class()));
    mirror.volume_event(&Event::Apply(local_pv("n1")));
    mirror.claim_event(&Event::Apply(claim()));
    assert_eq!(decide(&mirror).as_deref(), Ok("n1"));
    mirror.claim_event(&Event::Init);
    mirror.claim_event(&Event::InitDone);
    assert_eq!(decide(&mirror), Err(vec![UnfitReason::VolumeClaimUnusable]));
}

#[test]
fn tracked_volumes_hold_sync_until_every_volume_kind_is_listed() {
    let mut mirror = ClusterMirror::new(60_000);
    for kind in [WatchedKind::Node, WatchedKind::GpuNode, WatchedKind::Pod] {
        mirror.begin_relist(kind);
        mirror.end_relist(kind, std::iter::empty());
    }
    assert!(mirror.synced(), "untracked: the three kinds suffice");
    mirror.track_volumes();
    assert!(!mirror.synced());
    mirror.claim_event(&Event::Init);
    mirror.claim_event(&Event::InitDone);
    mirror.volume_event(&Event::Init);
    mirror.volume_event(&Event::InitDone);
    mirror.storage_class_event(&Event::Init);
    mirror.storage_class_event(&Event::InitDone);
    assert!(!mirror.synced());
    mirror.csi_node_event(&Event::Init);
    mirror.csi_node_event(&Event::InitDone);
    assert!(mirror.synced());
}

#[test]
fn an_untracked_mirror_refuses_no_pod_for_its_claims() {
    // The extender and the autoscaler never watch volumes.
    let mirror = mirror_with_nodes();
    assert!(decide(&mirror).is_ok());
}
