//! Phalanx as an HTTP extender of the real upstream kube-scheduler: the
//! configuration in `deploy/extender/kube-scheduler-config.yaml`, on a real
//! control plane with KWOK GPU nodes. kube-scheduler keeps scheduling pods of
//! `default-scheduler`; Phalanx filters and scores the nodes for GPU pods and
//! binds them with the GPU assignment annotation.
//!
//! Needs the control-plane binaries and `cargo build -p phalanx-scheduler`;
//! without them the test prints SKIPPED, and with `PHALANX_E2E=1` it fails.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::ListParams;
use kube::Api;
use phalanx_api::{
    ANNOTATION_GANG_MIN_MEMBER, ANNOTATION_GANG_NAME, ANNOTATION_GPU_MODELS, LABEL_GPU_MODEL,
    RESOURCE_GPU_MILLI, RESOURCE_WHOLE_GPU,
};
use phalanx_e2e::{
    assignment_of, assignment_violations, create_gpu_nodes, create_pods, gpu_share_container,
    gpu_worker_container, install_phalanx_crds, node_of, phalanx_scheduler_for_test, pod_events,
    pod_for, Binaries, ControlPlane, GpuNodeSpec, PhalanxOptions, SchedulerOptions,
};

const NS: &str = "default";
const DEFAULT_SCHEDULER: &str = "default-scheduler";

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

fn with_annotations(mut pod: Pod, annotations: &[(&str, &str)]) -> Pod {
    pod.metadata.annotations = Some(
        annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    );
    pod
}

/// Waits until every pod in `names` is bound, then returns all pods.
async fn wait_bound(
    plane: &ControlPlane,
    api: &Api<Pod>,
    names: &[String],
) -> anyhow::Result<Vec<Pod>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pods = api.list(&ListParams::default()).await?.items;
        let unbound: Vec<&String> = names
            .iter()
            .filter(|n| {
                !pods
                    .iter()
                    .any(|p| p.metadata.name.as_ref() == Some(*n) && node_of(p).is_some())
            })
            .collect();
        if unbound.is_empty() {
            return Ok(pods);
        }
        if Instant::now() >= deadline {
            bail!(
                "pods not bound after 60 s: {unbound:?}\n--- kube-scheduler ---\n{}\n{}",
                plane.log_tail("kube-scheduler").unwrap_or_default(),
                plane.phalanx_logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits for a FailedScheduling event about `pod` whose note contains `needle`.
async fn wait_failed(plane: &ControlPlane, pod: &str, needle: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let events = pod_events(&plane.client(), NS).await?;
        if let Some(event) = events
            .iter()
            .find(|e| e.pod == pod && e.reason == "FailedScheduling" && e.note.contains(needle))
        {
            return Ok(event.note.clone());
        }
        if Instant::now() >= deadline {
            let about: Vec<_> = events.iter().filter(|e| e.pod == pod).collect();
            bail!("no FailedScheduling for {pod} mentioning {needle:?}; its events: {about:#?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
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
        let spec = GpuNodeSpec {
            gpus: 2,
            model: model.to_owned(),
            ..GpuNodeSpec::default()
        };
        create_gpu_nodes(&client, prefix, 2, &spec).await?;
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
            with_annotations(
                pod_for(
                    &format!("train-{i}"),
                    DEFAULT_SCHEDULER,
                    gpu_worker_container(1),
                ),
                &[(ANNOTATION_GPU_MODELS, "H100")],
            )
        })
        .collect();
    let h100_names = create_pods(&pods, h100_pods).await?;
    wait_bound(&plane, &pods, &h100_names).await?;

    // A fifth H100 pod does not fit: kube-scheduler reports the extender's reasons.
    create_pods(
        &pods,
        vec![with_annotations(
            pod_for("train-extra", DEFAULT_SCHEDULER, gpu_worker_container(1)),
            &[(ANNOTATION_GPU_MODELS, "H100")],
        )],
    )
    .await?;
    let note = wait_failed(&plane, "train-extra", "nodes are available").await?;
    assert!(
        note.starts_with("0/4 nodes are available"),
        "kube-scheduler's wording with the extender's reasons expected: {note}"
    );

    // Four half-GPU shares with no model constraint: only the A100s are free,
    // and the extender packs two shares per GPU.
    let share_names = create_pods(
        &pods,
        (0..4)
            .map(|i| {
                pod_for(
                    &format!("infer-{i}"),
                    DEFAULT_SCHEDULER,
                    gpu_share_container(500),
                )
            })
            .collect(),
    )
    .await?;
    let all = wait_bound(&plane, &pods, &share_names).await?;

    // A gang needs the full scheduler; the extender refuses it with a reason.
    create_pods(
        &pods,
        vec![with_annotations(
            pod_for("gang-0", DEFAULT_SCHEDULER, gpu_worker_container(1)),
            &[
                (ANNOTATION_GANG_NAME, "job"),
                (ANNOTATION_GANG_MIN_MEMBER, "2"),
            ],
        )],
    )
    .await?;
    let gang_note = wait_failed(&plane, "gang-0", "all-or-nothing").await?;
    assert!(gang_note.contains("belongs to gang"), "{gang_note}");

    // Where everything went, from the objects themselves.
    let nodes: Api<Node> = Api::all(client.clone());
    let mut model_of = HashMap::new();
    let mut gpus_per_node = HashMap::new();
    for node in nodes.list(&ListParams::default()).await? {
        let name = node.metadata.name.clone().unwrap_or_default();
        if let Some(model) = node
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_GPU_MODEL))
        {
            model_of.insert(name.clone(), model.clone());
            gpus_per_node.insert(name, 2);
        }
    }
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
        assert_eq!(
            model_of.get(node).map(String::as_str),
            Some(want),
            "{name} on {node}"
        );
    }
    let violations = assignment_violations(&bound, &gpus_per_node);
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
