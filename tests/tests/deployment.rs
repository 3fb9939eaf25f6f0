//! A Deployment's pods are created by kube-controller-manager, scheduled by
//! upstream kube-scheduler onto KWOK's fake GPU nodes and reach Running; and
//! once the control plane is dropped none of its processes is left.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::bail;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{Pod, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::Api;
use phalanx_e2e::process::{is_alive, live_children};
use phalanx_e2e::{
    create_gpu_nodes, gpu_worker_container, wait_fake_nodes_ready, Binaries, ControlPlane,
    GpuNodeSpec, SchedulerOptions,
};

const REPLICAS: usize = 4;

fn gpu_deployment(name: &str) -> Deployment {
    let labels = BTreeMap::from([("app".to_owned(), name.to_owned())]);
    Deployment {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(i32::try_from(REPLICAS).unwrap_or(i32::MAX)),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![gpu_worker_container(1)],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_pods_are_scheduled_onto_kwok_nodes_and_run() -> anyhow::Result<()> {
    let Some(binaries) =
        Binaries::for_test("deployment_pods_are_scheduled_onto_kwok_nodes_and_run")
    else {
        return Ok(());
    };
    let mut plane = ControlPlane::start(binaries).await?;
    let client = plane.client();

    // Two nodes of 2 GPUs for 4 one-GPU pods: the scheduler must spread them.
    let spec = GpuNodeSpec {
        gpus: 2,
        ..GpuNodeSpec::default()
    };
    let nodes = create_gpu_nodes(&client, "gpu", 2, &spec).await?;
    wait_fake_nodes_ready(&client, nodes.len(), Duration::from_secs(60)).await?;
    plane
        .start_kube_scheduler(&SchedulerOptions::default())
        .await?;

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deployments
        .create(&PostParams::default(), &gpu_deployment("gpu-workers"))
        .await?;

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let params = ListParams::default().labels("app=gpu-workers");
    let deadline = Instant::now() + Duration::from_secs(120);
    let placements = loop {
        let list = pods.list(&params).await?;
        let running: Vec<(String, String)> = list
            .items
            .iter()
            .filter(|pod| pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .filter_map(|pod| {
                let node = pod.spec.as_ref()?.node_name.clone()?;
                Some((pod.metadata.name.clone()?, node))
            })
            .collect();
        if running.len() == REPLICAS {
            break running;
        }
        if Instant::now() >= deadline {
            bail!(
                "only {} of {REPLICAS} pods Running after 120s ({} pods exist)\nkube-scheduler log:\n{}",
                running.len(),
                list.items.len(),
                plane.log_tail("kube-scheduler").unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    for node in &nodes {
        let on_node = placements.iter().filter(|(_, n)| n == node).count();
        assert_eq!(
            on_node, 2,
            "each 2-GPU node holds 2 one-GPU pods: {placements:?}"
        );
    }

    let pids = plane.pids();
    assert_eq!(pids.len(), 5, "five components were running: {pids:?}");
    drop(plane);
    let alive: Vec<_> = pids.iter().filter(|(_, pid)| is_alive(*pid)).collect();
    assert!(alive.is_empty(), "components survived teardown: {alive:?}");
    assert!(
        live_children().is_empty(),
        "child processes left: {:?}",
        live_children()
    );
    Ok(())
}
