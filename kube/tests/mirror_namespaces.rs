//! Namespaces fed to the mirror: their labels are what a pod affinity term's
//! `namespaceSelector` matches, so a pod refused for want of them fits once
//! they arrive, and a mirror that watches them waits for their first list.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::runtime::watcher::Event;
use phalanx_engine::{
    build_policy, schedule_one, CycleOutcome, CycleScratch, PolicyConfig, PolicyName,
    WorkloadSource,
};
use phalanx_kube::mirror::ClusterMirror;
use phalanx_kube::translate;
use serde_json::json;

const NOW_MS: u64 = 1_000_000;

fn node(name: &str) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"}}
    }))
    .unwrap()
}

fn namespace(name: &str, labels: serde_json::Value) -> Namespace {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap()
}

/// A running cache pod in namespace `shared`, bound to `n1`.
fn cache_on_n1() -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "cache", "namespace": "shared", "uid": "cache",
                     "labels": {"app": "cache"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "main", "resources": {
            "requests": {"cpu": "1", "memory": "1Gi"}}}]},
        "status": {"phase": "Running"},
    }))
    .unwrap()
}

/// A pod in `team-a` that must share a node with a cache pod from any
/// namespace labelled `role: shared`.
fn near_the_cache() -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "team-a", "uid": "web"},
        "spec": {"schedulerName": "phalanx", "containers": [], "affinity": {"podAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [{
                "labelSelector": {"matchLabels": {"app": "cache"}},
                "namespaceSelector": {"matchLabels": {"role": "shared"}},
                "topologyKey": "kubernetes.io/hostname"}]}}},
    }))
    .unwrap()
}

/// Nodes n1 and n2 listed, the cache pod bound to n1; namespaces not yet.
fn listed_without_namespaces() -> ClusterMirror {
    let mut mirror = ClusterMirror::new(60_000).watching_namespaces();
    mirror.node_event(Event::Init, NOW_MS);
    mirror.gpu_node_event(Event::Init, NOW_MS);
    mirror.pod_event(&Event::Init);
    for name in ["n1", "n2"] {
        mirror.node_event(Event::InitApply(node(name)), NOW_MS);
    }
    mirror.pod_event(&Event::InitApply(cache_on_n1()));
    mirror.node_event(Event::InitDone, NOW_MS);
    mirror.gpu_node_event(Event::InitDone, NOW_MS);
    mirror.pod_event(&Event::InitDone);
    mirror
}

/// Where the engine would put `pod` now, or `None` if nowhere.
fn placed_on(mirror: &ClusterMirror, pod: &Pod) -> Option<String> {
    let snapshot = mirror.state().snapshot();
    let demand = translate::pod_demand(pod, snapshot.models()).unwrap();
    let mut policy = build_policy(
        PolicyName::BestFit,
        &PolicyConfig {
            seed: 0,
            workload: WorkloadSource::Fixed(vec![]),
        },
    );
    match schedule_one(
        snapshot,
        policy.as_mut(),
        &demand,
        &mut CycleScratch::default(),
    ) {
        CycleOutcome::Placed(p) => Some(snapshot.node(p.node).name.clone()),
        CycleOutcome::Unschedulable { .. } => None,
    }
}

#[test]
fn a_mirror_watching_namespaces_syncs_only_after_their_first_list() {
    let mut mirror = listed_without_namespaces();
    assert!(!mirror.synced(), "namespaces have not been listed");
    mirror.namespace_event(&Event::Init);
    mirror.namespace_event(&Event::InitApply(namespace("shared", json!({}))));
    mirror.namespace_event(&Event::InitDone);
    assert!(mirror.synced());
    let plain = ClusterMirror::new(60_000);
    assert!(!plain.synced());
}

#[test]
fn a_pod_refused_for_want_of_namespace_labels_fits_once_they_arrive() {
    let mut mirror = listed_without_namespaces();
    let web = near_the_cache();
    assert_eq!(
        placed_on(&mirror, &web),
        None,
        "no namespace is known to be labelled role=shared"
    );
    let change = mirror.namespace_event(&Event::Apply(namespace(
        "shared",
        json!({"role": "shared"}),
    )));
    assert!(change.cluster_changed, "the refused pod is worth a retry");
    assert_eq!(placed_on(&mirror, &web).as_deref(), Some("n1"));

    let again = mirror.namespace_event(&Event::Apply(namespace(
        "shared",
        json!({"role": "shared"}),
    )));
    assert!(!again.cluster_changed, "a resync that changes nothing");
}

#[test]
fn deleted_or_relabelled_namespaces_stop_matching() {
    let mut mirror = listed_without_namespaces();
    let web = near_the_cache();
    mirror.namespace_event(&Event::Apply(namespace(
        "shared",
        json!({"role": "shared"}),
    )));
    assert_eq!(placed_on(&mirror, &web).as_deref(), Some("n1"));

    let relabelled =
        mirror.namespace_event(&Event::Apply(namespace("shared", json!({"role": "old"}))));
    assert!(relabelled.cluster_changed);
    assert_eq!(placed_on(&mirror, &web), None);

    mirror.namespace_event(&Event::Apply(namespace(
        "shared",
        json!({"role": "shared"}),
    )));
    // A relist that no longer has the namespace forgets its labels.
    mirror.namespace_event(&Event::Init);
    mirror.namespace_event(&Event::InitApply(namespace("team-a", json!({}))));
    let relisted = mirror.namespace_event(&Event::InitDone);
    assert!(relisted.cluster_changed);
    assert_eq!(placed_on(&mirror, &web), None);

    mirror.namespace_event(&Event::Apply(namespace(
        "shared",
        json!({"role": "shared"}),
    )));
    let deleted = mirror.namespace_event(&Event::Delete(namespace("shared", json!({}))));
    assert!(deleted.cluster_changed);
    assert_eq!(placed_on(&mirror, &web), None);
}
