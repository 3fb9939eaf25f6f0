//! Phalanx as an HTTP extender of the real upstream kube-scheduler: the
//! configuration in `deploy/extender/kube-scheduler-config.yaml`, on a real
//! control plane with KWOK GPU nodes. kube-scheduler keeps scheduling pods of
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
use phalanx_api::{
    ANNOTATION_GANG_MIN_MEMBER, ANNOTATION_GANG_NAME, ANNOTATION_GPU_MODELS, RESOURCE_GPU_MILLI,
    RESOURCE_WHOLE_GPU,
};
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

/// The extender stanza of deploy/extender/kube-scheduler-config.yaml, pointed
/// at the local extender.
fn extender_config(address: std::net::SocketAddr) -> serde_json::Value {
    serde_json::json!({
        "urlPrefix": format!("http://{address}"),
        "filterVerb": "filter",
        "prioritizeVerb": "prioritize",
        "bindVerb": "bind",
        "weight": 5,
        "enableHTTPS": false,
        "httpTimeout": "5s",
        "nodeCacheCapable": false,
        "managedResources": [
            { "name": RESOURCE_WHOLE_GPU, "ignoredByScheduler": true },
            { "name": RESOURCE_GPU_MILLI, "ignoredByScheduler": true },
        ],
        "ignorable": false,
    })
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
    let (_extender, address) = plane.start_phalanx_extender(&options).await?;
    plane
        .start_kube_scheduler(&SchedulerOptions {
            extenders: vec![extender_config(address)],
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
    let share_names = create_pods(
        &pods,
        (0..4)
            .map(|i| default_pod(&format!("infer-{i}"), gpu_share_container(500)).build())
            .collect(),
    )
    .await?;
    wait_bound(&pods, &share_names, WAIT)
        .await
        .with_logs(&plane)?;

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
    Ok(())
}
