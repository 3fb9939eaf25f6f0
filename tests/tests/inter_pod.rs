//! Pod affinity, anti-affinity and topology spread through Phalanx's scheduler
//! on a real control plane with KWOK nodes: replicas kept apart (and the one
//! that cannot be, marked Unschedulable in kube-scheduler's words), pods
//! balanced over zones of unequal size, an existing pod's anti-affinity
//! honoured against newcomers, affinity to pods in namespaces chosen by
//! their labels, which arrive after the pod, and kube-scheduler's System
//! default spread when the config asks for it.
//!
//! Needs the control-plane binaries (tests/control-plane/ensure.sh) and
//! `cargo build -p phalanx-scheduler`; without them each test prints
//! `skipped: <test>: <why>`, and with `PHALANX_E2E=1` it fails instead.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Namespace, Pod};
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use phalanx_api::SCHEDULER_NAME;
use phalanx_e2e::nodes::{LABEL_HOSTNAME, LABEL_ZONE};
use phalanx_e2e::phalanx::plane_with_scheduler;
use phalanx_e2e::wait::{
    self, namespace_ready_for_pods, stays_pending, wait_bound, wait_not_scheduled, wait_pod_bound,
    WithLogs,
};
use phalanx_e2e::{
    create_gpu_nodes, create_pods, gpu_share_container, match_labels, node_facts, node_of,
    pod_term, wait_fake_nodes_ready, ControlPlane, GpuNodeSpec, PhalanxOptions, PodBuilder,
    PodSelector,
};

const NS: &str = "default";
const WAIT: Duration = Duration::from_secs(60);

/// A control plane with `nodes` (name prefix, count, zone) ready and
/// Phalanx's scheduler running, or `None` when the test is skipped.
async fn plane_with_nodes(
    test: &str,
    nodes: &[(&str, usize, &str)],
) -> anyhow::Result<Option<ControlPlane>> {
    plane_with_config(test, nodes, serde_json::Value::Null).await
}

/// [`plane_with_nodes`] with `config` merged into the scheduler's config; a
/// zone `""` leaves the nodes without one.
async fn plane_with_config(
    test: &str,
    nodes: &[(&str, usize, &str)],
    config: serde_json::Value,
) -> anyhow::Result<Option<ControlPlane>> {
    let Some((mut plane, binary)): Option<(ControlPlane, PathBuf)> =
        plane_with_scheduler(test).await?
    else {
        return Ok(None);
    };
    let client = plane.client();
    let mut total = 0;
    for (prefix, count, zone) in nodes {
        let mut spec = GpuNodeSpec::with_gpus(4, "A100");
        if !zone.is_empty() {
            spec = spec.label(LABEL_ZONE, zone);
        }
        create_gpu_nodes(&client, prefix, *count, &spec).await?;
        total += count;
    }
    wait_fake_nodes_ready(&client, total, WAIT).await?;
    plane
        .start_phalanx_scheduler(&PhalanxOptions {
            binary: Some(binary),
            extra: config,
            ..PhalanxOptions::default()
        })
        .await?;
    Ok(Some(plane))
}

/// A quarter of a GPU: the GPU packing policy alone would put every such pod
/// on one node.
fn small() -> Container {
    gpu_share_container(250)
}

fn phalanx_pod(name: &str) -> PodBuilder {
    PodBuilder::new(name, SCHEDULER_NAME, small())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_with_anti_affinity_take_a_node_each_and_the_extra_one_says_why(
) -> anyhow::Result<()> {
    let test = "replicas_with_anti_affinity_take_a_node_each_and_the_extra_one_says_why";
    let Some(plane) = plane_with_nodes(test, &[("n", 3, "zone-a")]).await? else {
        return Ok(());
    };
    let client = plane.client();
    // Four replicas, at most one per node, on three nodes.
    let deployment = PodBuilder::template(SCHEDULER_NAME, small())
        .required_pod_anti_affinity(pod_term(("app", "web"), LABEL_HOSTNAME))
        .deployment("web", 4);
    Api::<Deployment>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &deployment)
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let replicas = PodSelector::labels("app=web");
    let (bound, pending) = wait::until("4 replicas, 3 of them bound", WAIT, || async {
        let all = replicas.list(&pods).await?;
        let (bound, pending): (Vec<Pod>, Vec<Pod>) =
            all.into_iter().partition(|p| node_of(p).is_some());
        Ok(if bound.len() == 3 && pending.len() == 1 {
            Ok((bound, pending))
        } else {
            Err(format!("{} bound, {} pending", bound.len(), pending.len()))
        })
    })
    .await
    .with_logs(&plane)?;
    let nodes: HashSet<&str> = bound.iter().filter_map(node_of).collect();
    assert_eq!(nodes.len(), 3, "two replicas share a node: {nodes:?}");

    let extra = pending[0].metadata.name.clone().unwrap();
    let message = wait_not_scheduled(&client, NS, &extra, "Unschedulable")
        .await
        .with_logs(&plane)?;
    assert_eq!(
        message,
        "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules."
    );
    stays_pending(&pods, &PodSelector::names(&[extra]), Duration::from_secs(3)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_zone_spread_balances_pods_over_zones_of_unequal_size() -> anyhow::Result<()> {
    let test = "a_hard_zone_spread_balances_pods_over_zones_of_unequal_size";
    // Three nodes in zone-a, one in each of the others: packing, or spreading
    // over nodes, would fill zone-a first.
    let zones = [("a", 3, "zone-a"), ("b", 1, "zone-b"), ("c", 1, "zone-c")];
    let Some(plane) = plane_with_nodes(test, &zones).await? else {
        return Ok(());
    };
    let client = plane.client();
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let spread: Vec<Pod> = (0..6)
        .map(|i| {
            phalanx_pod(&format!("spread-{i}"))
                .label("app", "spread")
                .spread(("app", "spread"), LABEL_ZONE, 1, true)
                .build()
        })
        .collect();
    let names = create_pods(&pods, spread).await?;
    let bound = wait_bound(&pods, &names, WAIT).await.with_logs(&plane)?;
    let facts = node_facts(&client).await?;
    let mut per_zone: BTreeMap<&str, u32> = BTreeMap::new();
    for pod in &bound {
        let zone = facts.label(node_of(pod).unwrap(), LABEL_ZONE).unwrap();
        *per_zone.entry(zone).or_default() += 1;
    }
    assert_eq!(
        per_zone,
        BTreeMap::from([("zone-a", 2), ("zone-b", 2), ("zone-c", 2)])
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_pods_anti_affinity_keeps_matching_pods_off_its_node() -> anyhow::Result<()> {
    let test = "an_existing_pods_anti_affinity_keeps_matching_pods_off_its_node";
    let Some(plane) = plane_with_nodes(test, &[("n", 2, "zone-a")]).await? else {
        return Ok(());
    };
    let client = plane.client();
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    // The loner says no batch pod may share its node; batch pods say nothing.
    let loner = create_pods(
        &pods,
        vec![phalanx_pod("loner")
            .required_pod_anti_affinity(pod_term(("role", "batch"), LABEL_HOSTNAME))
            .build()],
    )
    .await?;
    let loner_node = node_of(
        &wait_pod_bound(&pods, &loner[0], WAIT)
            .await
            .with_logs(&plane)?,
    )
    .unwrap()
    .to_owned();
    // Packing would put them next to the loner, on the node already in use.
    let batch: Vec<Pod> = (0..3)
        .map(|i| {
            phalanx_pod(&format!("batch-{i}"))
                .label("role", "batch")
                .build()
        })
        .collect();
    let names = create_pods(&pods, batch).await?;
    let bound = wait_bound(&pods, &names, WAIT).await.with_logs(&plane)?;
    for pod in &bound {
        assert_ne!(node_of(pod), Some(loner_node.as_str()), "{pod:?}");
    }
    // With the other node cordoned off by a node selector, a batch pod has
    // nowhere to go, and says whose rule keeps it out.
    let stuck = create_pods(
        &pods,
        vec![phalanx_pod("batch-stuck")
            .label("role", "batch")
            .node_selector(LABEL_HOSTNAME, &loner_node)
            .build()],
    )
    .await?;
    let message = wait_not_scheduled(&client, NS, &stuck[0], "Unschedulable")
        .await
        .with_logs(&plane)?;
    assert!(
        message.contains("1 node(s) didn't satisfy existing pods anti-affinity rules"),
        "{message}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn affinity_to_namespaces_by_label_waits_for_the_label_then_follows_the_pods(
) -> anyhow::Result<()> {
    let test = "affinity_to_namespaces_by_label_waits_for_the_label_then_follows_the_pods";
    let Some(plane) = plane_with_nodes(test, &[("n", 3, "zone-a")]).await? else {
        return Ok(());
    };
    let client = plane.client();
    // A cache in its own namespace, not (yet) labelled as shared.
    namespace_ready_for_pods(&client, "caches", WAIT).await?;
    let caches: Api<Pod> = Api::namespaced(client.clone(), "caches");
    let cache = create_pods(
        &caches,
        vec![phalanx_pod("cache").label("app", "cache").build()],
    )
    .await?;
    let cache_node = node_of(
        &wait_pod_bound(&caches, &cache[0], WAIT)
            .await
            .with_logs(&plane)?,
    )
    .unwrap()
    .to_owned();
    // A pod elsewhere that must run next to a cache from a shared namespace:
    // none is labelled so, so it waits.
    let mut term = pod_term(("app", "cache"), LABEL_HOSTNAME);
    term.namespace_selector = Some(match_labels("sharing", "open"));
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let web = create_pods(
        &pods,
        vec![phalanx_pod("web").required_pod_affinity(term).build()],
    )
    .await?;
    let message = wait_not_scheduled(&client, NS, &web[0], "Unschedulable")
        .await
        .with_logs(&plane)?;
    assert!(
        message.contains("didn't match pod affinity rules"),
        "{message}"
    );
    // The label arrives: the waiting pod is tried again and joins the cache.
    Api::<Namespace>::all(client.clone())
        .patch(
            "caches",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {"sharing": "open"}}})),
        )
        .await?;
    let bound = wait_pod_bound(&pods, &web[0], WAIT)
        .await
        .with_logs(&plane)?;
    assert_eq!(node_of(&bound), Some(cache_node.as_str()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_default_spread_moves_replicas_that_packing_would_stack() -> anyhow::Result<()> {
    let test = "system_default_spread_moves_replicas_that_packing_would_stack";
    // No zone labels: kube-scheduler's System defaults still spread over
    // hostnames (the zone default, which no node could satisfy, is dropped).
    let config = serde_json::json!({"topologySpread": {"defaultingType": "System"}});
    let Some(plane) = plane_with_config(test, &[("n", 2, "")], config).await? else {
        return Ok(());
    };
    let client = plane.client();
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    // The control, on the empty cluster: pods no workload controls get no
    // defaults, and the GPU policy stacks four quarter-GPU pods on one node.
    let bare: Vec<Pod> = (0..4)
        .map(|i| {
            phalanx_pod(&format!("bare-{i}"))
                .termination_grace_seconds(0)
                .build()
        })
        .collect();
    let names = create_pods(&pods, bare).await?;
    let bound = wait_bound(&pods, &names, WAIT).await.with_logs(&plane)?;
    let nodes: HashSet<&str> = bound.iter().filter_map(node_of).collect();
    assert_eq!(nodes.len(), 1, "bare pods were spread: {nodes:?}");
    for name in &names {
        pods.delete(name, &Default::default()).await?;
    }
    let bare = PodSelector::names(&names);
    wait::until("the bare pods gone", WAIT, || async {
        let left = bare.list(&pods).await?.len();
        Ok(if left == 0 {
            Ok(())
        } else {
            Err(format!("{left} left"))
        })
    })
    .await?;

    // The same pods as a Deployment's replicas get the defaults.
    let deployment = PodBuilder::template(SCHEDULER_NAME, small()).deployment("web", 4);
    Api::<Deployment>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &deployment)
        .await?;
    let bound = wait::wait_selected_bound(&pods, &PodSelector::labels("app=web"), 4, WAIT)
        .await
        .with_logs(&plane)?;
    // A soft maxSkew of 3 outweighs packing only once the skew grows: as in
    // kube-scheduler, where PodTopologySpread scores at twice the weight of
    // NodeResourcesFit, the fourth replica goes to the other node (3 and 1).
    let nodes: HashSet<&str> = bound.iter().filter_map(node_of).collect();
    assert_eq!(nodes.len(), 2, "the replicas were stacked: {nodes:?}");
    Ok(())
}
