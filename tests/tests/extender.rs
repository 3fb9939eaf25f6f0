//! Phalanx as an HTTP extender of the real upstream kube-scheduler: the
//! configuration in `deploy/extender/kube-scheduler-config.yaml` (node names
//! only, `nodeCacheCapable: true`; one test turns it off so that whole Nodes
//! stay tested too), on a real control plane with KWOK GPU nodes. kube-scheduler keeps scheduling pods of
//! `default-scheduler`; Phalanx filters and scores the nodes for GPU pods and
//! binds them with the GPU assignment annotation.
//!
//! Needs the control-plane binaries and `cargo build -p phalanx-scheduler`;
//! without them the test prints `skipped: <test>: <why>`, and with
//! `PHALANX_E2E=1` it fails.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::ListParams;
use kube::Api;
use phalanx_api::{ANNOTATION_GANG_MIN_MEMBER, ANNOTATION_GANG_NAME, ANNOTATION_GPU_MODELS};
use phalanx_e2e::probe::http_post_json;
use phalanx_e2e::wait::{wait_bound, wait_pod_event, WithLogs};
use phalanx_e2e::{
    assignment_of, assignment_violations, create_gpu_nodes, create_pods, gpu_share_container,
    gpu_worker_container, install_phalanx_crds, node_facts, node_of, phalanx_scheduler_for_test,
    Binaries, ControlPlane, GpuNodeSpec, PhalanxOptions, PodBuilder, SchedulerOptions,
};

const NS: &str = "default";
const DEFAULT_SCHEDULER: &str = "default-scheduler";
/// How long any one step may take.
const WAIT: Duration = Duration::from_secs(60);

/// The KubeSchedulerConfiguration Phalanx ships for extender mode.
const SHIPPED_CONFIG: &str = include_str!("../../deploy/extender/kube-scheduler-config.yaml");

/// The extender stanza of deploy/extender/kube-scheduler-config.yaml as
/// shipped, pointed at the local extender; `node_cache_capable` overrides the
/// shipped `nodeCacheCapable` (true: node names only).
fn extender_config(
    address: std::net::SocketAddr,
    node_cache_capable: Option<bool>,
) -> anyhow::Result<serde_json::Value> {
    let shipped: serde_json::Value = serde_yaml_ng::from_str(SHIPPED_CONFIG)
        .context("deploy/extender/kube-scheduler-config.yaml")?;
    let mut stanza = shipped["extenders"][0].clone();
    anyhow::ensure!(
        stanza["bindVerb"] == "bind" && stanza["ignorable"] == false,
        "the shipped extender stanza binds and is not ignorable: {stanza}"
    );
    stanza["urlPrefix"] = format!("http://{address}").into();
    if let Some(capable) = node_cache_capable {
        stanza["nodeCacheCapable"] = capable.into();
    }
    Ok(stanza)
}

/// A pod for kube-scheduler's default profile, which calls the extender.
fn default_pod(name: &str, container: Container) -> PodBuilder {
    PodBuilder::new(name, DEFAULT_SCHEDULER, container)
}

#[tokio::test]
async fn kube_scheduler_with_the_phalanx_extender_places_gpu_pods() {
    if let Err(error) = extender_places_gpu_pods().await {
        panic!("{error:#}");
    }
}

async fn extender_places_gpu_pods() -> anyhow::Result<()> {
    let test = "kube_scheduler_with_the_phalanx_extender_places_gpu_pods";
    let Some(binaries) = Binaries::for_test(test) else {
        return Ok(());
    };
    let Some(binary) = phalanx_scheduler_for_test(test) else {
        return Ok(());
    };
    let mut plane = ControlPlane::start(binaries).await?;
    let client = plane.client();
    install_phalanx_crds(&client).await?;
    for (prefix, model) in [("h100", "H100"), ("a100", "A100")] {
        create_gpu_nodes(&client, prefix, 2, &GpuNodeSpec::with_gpus(2, model)).await?;
    }
    let options = PhalanxOptions {
        binary: Some(binary),
        ..PhalanxOptions::default()
    };
    let (extender, address) = plane.start_phalanx_extender(&options).await?;
    let stanza = extender_config(address, None)?;
    assert_eq!(
        stanza["nodeCacheCapable"], true,
        "the shipped config sends node names only"
    );
    plane
        .start_kube_scheduler(&SchedulerOptions {
            extenders: vec![stanza],
            ..SchedulerOptions::default()
        })
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);

    // Four whole-GPU pods that must run on H100s: exactly the H100 capacity.
    let h100_pods: Vec<Pod> = (0..4)
        .map(|i| {
            default_pod(&format!("train-{i}"), gpu_worker_container(1))
                .annotation(ANNOTATION_GPU_MODELS, "H100")
                .build()
        })
        .collect();
    let h100_names = create_pods(&pods, h100_pods).await?;
    wait_bound(&pods, &h100_names, WAIT)
        .await
        .with_logs(&plane)?;

    // A fifth H100 pod does not fit: kube-scheduler reports the extender's reasons.
    create_pods(
        &pods,
        vec![default_pod("train-extra", gpu_worker_container(1))
            .annotation(ANNOTATION_GPU_MODELS, "H100")
            .build()],
    )
    .await?;
    let note = wait_pod_event(
        &client,
        NS,
        "train-extra",
        "FailedScheduling",
        "nodes are available",
        WAIT,
    )
    .await
    .with_logs(&plane)?
    .note;
    assert!(
        note.starts_with("0/4 nodes are available"),
        "kube-scheduler's wording with the extender's reasons expected: {note}"
    );

    // Four half-GPU shares with no model constraint: only the A100s are free,
    // and the extender packs two shares per GPU.
    // One after another: kube-scheduler binds asynchronously and may ask the
    // extender to score the next pod before the previous pod's /bind reached
    // it, and then two empty A100 nodes tie (a limit of extender mode, where
    // kube-scheduler owns the assume step). Packing is asserted for pods that
    // arrive after the previous one is bound.
    let mut share_names = Vec::new();
    for i in 0..4 {
        let mut created = create_pods(
            &pods,
            vec![default_pod(&format!("infer-{i}"), gpu_share_container(500)).build()],
        )
        .await?;
        wait_bound(&pods, &created, WAIT).await.with_logs(&plane)?;
        share_names.append(&mut created);
    }

    // A gang needs the full scheduler; the extender refuses it with a reason.
    create_pods(
        &pods,
        vec![default_pod("gang-0", gpu_worker_container(1))
            .annotation(ANNOTATION_GANG_NAME, "job")
            .annotation(ANNOTATION_GANG_MIN_MEMBER, "2")
            .build()],
    )
    .await?;
    let gang_note = wait_pod_event(
        &client,
        NS,
        "gang-0",
        "FailedScheduling",
        "all-or-nothing",
        WAIT,
    )
    .await
    .with_logs(&plane)?
    .note;
    assert!(gang_note.contains("belongs to gang"), "{gang_note}");

    // Where everything went, from the objects themselves.
    let facts = node_facts(&client).await?;
    let all = pods.list(&ListParams::default()).await?.items;
    let bound: Vec<Pod> = all.into_iter().filter(|p| node_of(p).is_some()).collect();
    assert_eq!(
        bound.len(),
        8,
        "4 trainers and 4 shares bound, nothing else"
    );
    for pod in &bound {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let node = node_of(pod).unwrap();
        let assignment = assignment_of(pod)
            .with_context(|| format!("{name}: the extender's binder writes the annotation"))?
            .map_err(anyhow::Error::msg)?;
        assert_eq!(assignment.node, node, "{name}: annotation names its node");
        let want = if name.starts_with("train-") {
            "H100"
        } else {
            "A100"
        };
        assert_eq!(facts.model(node), Some(want), "{name} on {node}");
    }
    let violations = assignment_violations(&bound, &facts.gpus);
    assert!(violations.is_empty(), "{violations:#?}");
    // Two shares per GPU: the four shares fill exactly two A100 GPUs.
    let mut share_gpus: Vec<(String, u32)> = bound
        .iter()
        .filter(|p| {
            p.metadata
                .name
                .as_ref()
                .is_some_and(|n| n.starts_with("infer-"))
        })
        .flat_map(|p| {
            let a = assignment_of(p).unwrap().unwrap();
            a.gpus
                .iter()
                .map(move |g| (a.node.clone(), g.index))
                .collect::<Vec<_>>()
        })
        .collect();
    share_gpus.sort();
    share_gpus.dedup();
    assert_eq!(
        share_gpus.len(),
        2,
        "shares packed two per GPU: {share_gpus:?}"
    );

    // /bind is not a way to bind pods of another scheduler: a GPU pod of a
    // profile the extender does not serve (nothing schedules it) is refused
    // with the reason, stays unbound, and the refusal is counted.
    let [other] = &create_pods(
        &pods,
        vec![PodBuilder::new("other-0", "gpu-batch", gpu_worker_container(1)).build()],
    )
    .await?[..] else {
        anyhow::bail!("one pod created");
    };
    let uid = pods.get(other).await?.metadata.uid.unwrap_or_default();
    let refused = "phalanx_scheduler_extender_requests_refused_total";
    for (pod_uid, reason, says) in [
        (
            uid.as_str(),
            "other_scheduler",
            "spec.schedulerName \"gpu-batch\"",
        ),
        ("not-its-uid", "uid_mismatch", "the pod was replaced"),
    ] {
        let body = serde_json::json!({
            "PodName": other, "PodNamespace": NS, "PodUID": pod_uid, "Node": "a100-0",
        });
        let (status, answer) = http_post_json(address, "/bind", &body.to_string())
            .await
            .map_err(anyhow::Error::msg)?;
        assert_eq!(status, 200, "{answer}");
        let error: serde_json::Value = serde_json::from_str(&answer)?;
        let error = error["Error"].as_str().unwrap_or_default();
        assert!(error.contains(says), "{reason}: {error}");
        let metrics = extender.metrics().await.map_err(anyhow::Error::msg)?;
        let series = format!("{refused}{{verb=\"bind\",reason=\"{reason}\"}} 1");
        assert!(
            metrics.lines().any(|l| l == series),
            "{series} in:\n{metrics}"
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        node_of(&pods.get(other).await?),
        None,
        "no Binding was written for the other scheduler's pod"
    );
    Ok(())
}

#[tokio::test]
async fn kube_scheduler_sending_whole_nodes_still_places_gpu_pods() {
    if let Err(error) = extender_with_whole_nodes().await {
        panic!("{error:#}");
    }
}

/// `nodeCacheCapable: false`, the form a user may still choose: kube-scheduler
/// sends whole Node objects, and Phalanx answers with Nodes.
async fn extender_with_whole_nodes() -> anyhow::Result<()> {
    let test = "kube_scheduler_sending_whole_nodes_still_places_gpu_pods";
    let Some(binaries) = Binaries::for_test(test) else {
        return Ok(());
    };
    let Some(binary) = phalanx_scheduler_for_test(test) else {
        return Ok(());
    };
    let mut plane = ControlPlane::start(binaries).await?;
    let client = plane.client();
    install_phalanx_crds(&client).await?;
    for (prefix, model) in [("h100", "H100"), ("a100", "A100")] {
        create_gpu_nodes(&client, prefix, 2, &GpuNodeSpec::with_gpus(2, model)).await?;
    }
    let options = PhalanxOptions {
        binary: Some(binary),
        ..PhalanxOptions::default()
    };
    let (_extender, address) = plane.start_phalanx_extender(&options).await?;
    plane
        .start_kube_scheduler(&SchedulerOptions {
            extenders: vec![extender_config(address, Some(false))?],
            ..SchedulerOptions::default()
        })
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let names = create_pods(
        &pods,
        (0..4)
            .map(|i| {
                default_pod(&format!("train-{i}"), gpu_worker_container(1))
                    .annotation(ANNOTATION_GPU_MODELS, "A100")
                    .build()
            })
            .collect(),
    )
    .await?;
    wait_bound(&pods, &names, WAIT).await.with_logs(&plane)?;
    let facts = node_facts(&client).await?;
    for name in &names {
        let pod = pods.get(name).await?;
        let node = node_of(&pod).unwrap();
        assert_eq!(facts.model(node), Some("A100"), "{name} on {node}");
        let assignment = assignment_of(&pod)
            .with_context(|| format!("{name}: the extender's binder writes the annotation"))?
            .map_err(anyhow::Error::msg)?;
        assert_eq!(assignment.node, node);
    }
    Ok(())
}
