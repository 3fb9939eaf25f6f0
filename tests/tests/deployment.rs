//! A Deployment's pods are created by kube-controller-manager, scheduled by
//! upstream kube-scheduler onto KWOK's fake GPU nodes and reach Running; and
//! once the control plane is dropped none of its processes is left.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::Api;
use phalanx_e2e::process::{is_alive, live_children};
use phalanx_e2e::wait::{self, WithLogs};
use phalanx_e2e::{
    create_gpu_nodes, gpu_worker_container, node_of, wait_fake_nodes_ready, Binaries, ControlPlane,
    GpuNodeSpec, PodBuilder, PodSelector, SchedulerOptions,
};

const REPLICAS: usize = 4;

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
    let spec = GpuNodeSpec::with_gpus(2, "A100");
    let nodes = create_gpu_nodes(&client, "gpu", 2, &spec).await?;
    wait_fake_nodes_ready(&client, nodes.len(), Duration::from_secs(60)).await?;
    plane
        .start_kube_scheduler(&SchedulerOptions::default())
        .await?;

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let deployment = PodBuilder::template("default-scheduler", gpu_worker_container(1))
        .deployment("gpu-workers", i32::try_from(REPLICAS).unwrap_or(i32::MAX));
    deployments
        .create(&PostParams::default(), &deployment)
        .await?;

    // The ReplicaSet names its pods: they are found by the Deployment's label.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let workers = PodSelector::labels("app=gpu-workers");
    let placements = wait::until(
        &format!("{REPLICAS} {workers} Running"),
        Duration::from_secs(120),
        || async {
            let all = workers.list(&pods).await?;
            let running: Vec<(String, String)> = all
                .iter()
                .filter(|pod| {
                    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                })
                .filter_map(|pod| Some((pod.metadata.name.clone()?, node_of(pod)?.to_owned())))
                .collect();
            Ok(if running.len() == REPLICAS {
                Ok(running)
            } else {
                Err(format!("{} Running of {} pods", running.len(), all.len()))
            })
        },
    )
    .await
    .with_logs(&plane)?;

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
