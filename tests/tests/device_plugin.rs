//! The device plugin's telemetry against a real control plane: the plugin
//! publishes a KWOK node's `GpuNode` from fake GPUs, follows their memory use
//! and an XID, and Phalanx's scheduler acts on what it published (an
//! unhealthy GPU is never chosen, live memory use steers whole GPUs and
//! shares). Then the plugin, asked by a fake kubelet, gives the bound pod the
//! GPU the scheduler chose, found through the API server. And the plugin
//! cut off from the API server (a proxy in between, cut): it refuses rather
//! than allocate against a choice it cannot read (a GPU partly shared out,
//! which kubelet would still hand out whole), the refused pod's GPU is
//! released and its replacement placed on it, and once the link is back the
//! plugin follows the scheduler's choice again and the GpuNode agrees with
//! the scheduler's annotations; the recovery times are printed.
//!
//! Needs the control-plane binaries (tests/control-plane/ensure.sh) and
//! `cargo build -p phalanx-scheduler`; without them the test prints
//! `skipped: <test>: <why>`, and with `PHALANX_E2E=1` it fails instead.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use phalanx_api::{GpuNode, SCHEDULER_NAME};
use phalanx_device_plugin::backend::{FakeBackend, FakeNode};
use phalanx_device_plugin::proto::podresources::{
    ContainerDevices, ContainerResources, PodResources,
};
use phalanx_device_plugin::proto::v1beta1::{
    AllocateRequest, ContainerAllocateRequest, ContainerPreferredAllocationRequest,
    PreferredAllocationRequest,
};
use phalanx_e2e::device_plugin::{
    client_for_plane, start_device_plugin, start_device_plugin_with, wait_gpu_node,
    DevicePluginOptions,
};
use phalanx_e2e::proxy::{socket_address_of, CuttableProxy, Link};
use phalanx_e2e::wait::{self, wait_pod_bound, WithLogs};
use phalanx_e2e::{
    assignment_of, create_gpu_nodes, gpu_share_container, gpu_worker_container,
    install_phalanx_crds, phalanx_scheduler_for_test, pod_for, wait_fake_nodes_ready, Binaries,
    ControlPlane, GpuNodeSpec, PhalanxOptions,
};

const NS: &str = "default";
const MODEL: &str = "NVIDIA H100 80GB HBM3";
const MEMORY_MIB: u64 = 81_559;

fn gpu_status(gn: &GpuNode, index: usize) -> Option<&phalanx_api::GpuDeviceStatus> {
    gn.status.as_ref()?.gpus.get(index)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_gpu_state_steers_the_scheduler_and_the_allocation() -> anyhow::Result<()> {
    let test = "published_gpu_state_steers_the_scheduler_and_the_allocation";
    let Some(binaries) = Binaries::for_test(test) else {
        return Ok(());
    };
    let Some(scheduler) = phalanx_scheduler_for_test(test) else {
        return Ok(());
    };
    let mut plane = ControlPlane::start(binaries).await?;
    let client = plane.client();
    install_phalanx_crds(&client).await?;
    let node = create_gpu_nodes(&client, "dp", 1, &GpuNodeSpec::with_gpus(3, "H100"))
        .await?
        .remove(0);
    wait_fake_nodes_ready(&client, 1, Duration::from_secs(60)).await?;

    let fake = FakeBackend::new(FakeNode::uniform(3, MODEL, MEMORY_MIB));
    let uuids: Vec<String> = (0..3).map(|i| format!("GPU-fake-{i:04}")).collect();
    let plugin = start_device_plugin(
        &client,
        &node,
        fake.clone(),
        &DevicePluginOptions {
            with_fake_kubelet: true,
            ..DevicePluginOptions::default()
        },
    )
    .await?;

    // The GpuNode appears: inventory in the spec, all healthy and idle.
    let published = wait_gpu_node(&client, &node, Duration::from_secs(20), |gn| {
        let status = gn.status.as_ref().ok_or("no status yet")?;
        if status.gpus.len() == 3 && status.observed_at.is_some() {
            Ok(())
        } else {
            Err(format!("status has {} GPUs", status.gpus.len()))
        }
    })
    .await?;
    assert_eq!(published.spec.node_name, node);
    let listed: Vec<&str> = published
        .spec
        .gpus
        .iter()
        .map(|g| g.uuid.as_str())
        .collect();
    assert_eq!(listed, uuids.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(published
        .spec
        .gpus
        .iter()
        .all(|g| g.model == MODEL && g.memory_mib == MEMORY_MIB));
    let owner = published
        .metadata
        .owner_references
        .clone()
        .unwrap_or_default();
    assert_eq!(
        owner.first().map(|o| o.kind.as_str()),
        Some("Node"),
        "owned by its Node"
    );
    assert!(published
        .status
        .as_ref()
        .unwrap()
        .gpus
        .iter()
        .all(|g| g.healthy && g.memory_used_mib == 0));

    // A workload fills half of GPU 1, and GPU 0 falls off the bus.
    fake.set_memory_used(&uuids[1], 40_000)?;
    fake.inject_xid(&uuids[0], 79)?;
    let updated = wait_gpu_node(&client, &node, Duration::from_secs(20), |gn| {
        let g0 = gpu_status(gn, 0).ok_or("no GPU 0")?;
        let g1 = gpu_status(gn, 1).ok_or("no GPU 1")?;
        if !g0.healthy && g1.memory_used_mib == 40_000 {
            Ok(())
        } else {
            Err(format!(
                "GPU 0 healthy={}, GPU 1 memory={}",
                g0.healthy, g1.memory_used_mib
            ))
        }
    })
    .await?;
    assert_eq!(
        gpu_status(&updated, 0).unwrap().health_reason.as_deref(),
        Some("XID 79: GPU has fallen off the bus")
    );

    // The scheduler reads it: the whole GPU cannot be GPU 0 (unhealthy) nor
    // GPU 1 (half its memory in use), though both are free by allocation and
    // it would otherwise take the lowest index; the share fits only GPU 1's
    // remaining memory once GPU 2 is taken.
    plane
        .start_phalanx_scheduler(&PhalanxOptions {
            binary: Some(scheduler),
            ..PhalanxOptions::default()
        })
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    pods.create(
        &PostParams::default(),
        &pod_for("whole", SCHEDULER_NAME, gpu_worker_container(1)),
    )
    .await?;
    let whole = wait_pod_bound(&pods, "whole", Duration::from_secs(30))
        .await
        .with_logs(&plane)?;
    let assignment = assignment_of(&whole)
        .context("no assignment")?
        .map_err(anyhow::Error::msg)?;
    assert_eq!(assignment.node, node);
    assert_eq!(assignment.gpus.len(), 1);
    assert_eq!(
        (assignment.gpus[0].index, assignment.gpus[0].uuid.as_str()),
        (2, uuids[2].as_str()),
        "{assignment:?}"
    );

    pods.create(
        &PostParams::default(),
        &pod_for("share", SCHEDULER_NAME, gpu_share_container(400)),
    )
    .await?;
    let share = wait_pod_bound(&pods, "share", Duration::from_secs(30))
        .await
        .with_logs(&plane)?;
    let share_assignment = assignment_of(&share)
        .context("no assignment")?
        .map_err(anyhow::Error::msg)?;
    assert_eq!(share_assignment.gpus.len(), 1);
    assert_eq!(
        (
            share_assignment.gpus[0].index,
            share_assignment.gpus[0].milli
        ),
        (1, 400)
    );

    // Kubelet admits "whole": the plugin finds it through the API server and
    // steers kubelet to GPU 2, although topology alone would pick GPU 1.
    let kubelet = plugin.kubelet.as_ref().unwrap();
    let endpoint = "phalanx-nvidia.com-gpu.sock";
    let mut client_plugin = wait::until_some(
        "the whole-GPU plugin socket",
        Duration::from_secs(20),
        || async { Ok(kubelet.dial_plugin(endpoint).await.ok()) },
    )
    .await?;
    let preferred = client_plugin
        .get_preferred_allocation(PreferredAllocationRequest {
            container_requests: vec![ContainerPreferredAllocationRequest {
                available_device_i_ds: vec![uuids[1].clone(), uuids[2].clone()],
                must_include_device_i_ds: Vec::new(),
                allocation_size: 1,
            }],
        })
        .await?
        .into_inner();
    assert_eq!(
        preferred.container_responses[0].device_i_ds,
        vec![uuids[2].clone()]
    );
    let allocated = client_plugin
        .allocate(AllocateRequest {
            container_requests: vec![ContainerAllocateRequest {
                devices_ids: vec![uuids[2].clone()],
            }],
        })
        .await?
        .into_inner();
    assert_eq!(
        allocated.container_responses[0].envs["NVIDIA_VISIBLE_DEVICES"],
        uuids[2]
    );

    assert!(!plugin.has_ended(), "the plugin stopped early");
    plugin.stop().await?;
    Ok(())
}

/// What kubelet's PodResources says once `pods` (name, GPU UUID) hold one
/// whole GPU each in their container `worker`.
fn holding(pods: &[(&str, &str)]) -> Vec<PodResources> {
    pods.iter()
        .map(|(name, uuid)| PodResources {
            name: (*name).to_owned(),
            namespace: NS.to_owned(),
            containers: vec![ContainerResources {
                name: "worker".to_owned(),
                devices: vec![ContainerDevices {
                    resource_name: "nvidia.com/gpu".to_owned(),
                    device_ids: vec![(*uuid).to_owned()],
                    topology: None,
                }],
                ..ContainerResources::default()
            }],
        })
        .collect()
}

fn one_gpu(available: &[&String]) -> PreferredAllocationRequest {
    PreferredAllocationRequest {
        container_requests: vec![ContainerPreferredAllocationRequest {
            available_device_i_ds: available.iter().map(|u| (*u).clone()).collect(),
            must_include_device_i_ds: Vec::new(),
            allocation_size: 1,
        }],
    }
}

/// Each GPU's holders as `(index, ["ns/name", …])`, from a GpuNode.
fn holders_of(gn: &GpuNode) -> Vec<(usize, Vec<String>)> {
    gn.status
        .as_ref()
        .map(|s| {
            s.gpus
                .iter()
                .enumerate()
                .map(|(i, g)| {
                    let pods = g
                        .pods
                        .iter()
                        .map(|p| format!("{}/{}", p.namespace, p.name))
                        .collect();
                    (i, pods)
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_off_from_the_api_server_the_plugin_refuses_then_follows_the_scheduler_again(
) -> anyhow::Result<()> {
    let test = "cut_off_from_the_api_server_the_plugin_refuses_then_follows_the_scheduler_again";
    let Some(binaries) = Binaries::for_test(test) else {
        return Ok(());
    };
    let Some(scheduler) = phalanx_scheduler_for_test(test) else {
        return Ok(());
    };
    let mut plane = ControlPlane::start(binaries).await?;
    let client = plane.client();
    install_phalanx_crds(&client).await?;
    let node = create_gpu_nodes(&client, "cut", 1, &GpuNodeSpec::with_gpus(3, "H100"))
        .await?
        .remove(0);
    wait_fake_nodes_ready(&client, 1, Duration::from_secs(60)).await?;

    let fake = FakeBackend::new(FakeNode::uniform(3, MODEL, MEMORY_MIB));
    let uuids: Vec<String> = (0..3).map(|i| format!("GPU-fake-{i:04}")).collect();
    // Only the plugin goes through the proxy; the scheduler keeps its link.
    let upstream = socket_address_of(plane.server()).context("the API server's address")?;
    let proxy = CuttableProxy::start(upstream).await?;
    let plugin_client = client_for_plane(&plane, None, Some(&proxy.https_url())).await?;
    let budget = Duration::from_secs(10);
    let plugin = start_device_plugin_with(
        &plugin_client,
        &node,
        fake.clone(),
        &DevicePluginOptions {
            with_fake_kubelet: true,
            ..DevicePluginOptions::default()
        },
        |config| config.assignment_read_timeout = budget,
    )
    .await?;
    wait_gpu_node(&client, &node, Duration::from_secs(20), |gn| {
        match gn.status.as_ref().map(|s| s.gpus.len()) {
            Some(3) => Ok(()),
            other => Err(format!("GPUs in status: {other:?}")),
        }
    })
    .await?;
    plane
        .start_phalanx_scheduler(&PhalanxOptions {
            binary: Some(scheduler),
            ..PhalanxOptions::default()
        })
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let bind = |name: &'static str| {
        let pods = pods.clone();
        async move {
            pods.create(
                &PostParams::default(),
                &pod_for(name, SCHEDULER_NAME, gpu_worker_container(1)),
            )
            .await?;
            let bound = wait_pod_bound(&pods, name, Duration::from_secs(30)).await?;
            let assignment = assignment_of(&bound)
                .context("no assignment")?
                .map_err(anyhow::Error::msg)?;
            anyhow::Ok(assignment.gpus[0].index as usize)
        }
    };
    // Half of GPU 0 is shared out first, so the scheduler gives whole GPUs
    // 1 and 2. Kubelet, which counts whole GPUs and shares as unrelated
    // resources, still offers GPU 0 as a whole GPU, and topology alone
    // (every GPU NVLinked, lowest index) would take it: an over-commit.
    pods.create(
        &PostParams::default(),
        &pod_for("resident", SCHEDULER_NAME, gpu_share_container(500)),
    )
    .await?;
    let resident = wait_pod_bound(&pods, "resident", Duration::from_secs(30))
        .await
        .with_logs(&plane)?;
    let resident = assignment_of(&resident)
        .context("no assignment")?
        .map_err(anyhow::Error::msg)?;
    assert_eq!((resident.gpus[0].index, resident.gpus[0].milli), (0, 500));
    let first = bind("first").await.with_logs(&plane)?;
    assert_eq!(first, 1, "GPU 0 is partly shared out");

    let kubelet = plugin.kubelet.as_ref().unwrap();
    let mut grpc = wait::until_some(
        "the whole-GPU plugin socket",
        Duration::from_secs(20),
        || async {
            Ok(kubelet
                .dial_plugin("phalanx-nvidia.com-gpu.sock")
                .await
                .ok())
        },
    )
    .await?;
    kubelet.set_pod_resources(Vec::new());

    // 1. Cut off (connections refused): kubelet admits "first", and the
    // plugin, unable to read its assignment, refuses after its bound. Kubelet
    // then fails the admission and allocates nothing; no GPU is given
    // against the scheduler's choice.
    proxy.set(Link::Refused);
    let cut_at = Instant::now();
    let refused = grpc
        .get_preferred_allocation(one_gpu(&uuids.iter().collect::<Vec<_>>()))
        .await
        .expect_err("allocated while the scheduler's choice was unreadable");
    let refused_after = cut_at.elapsed();
    // tonic's Code, by name (tonic is not a dependency of the harness).
    assert_eq!(
        format!("{:?}", refused.code()),
        "Unavailable",
        "{refused:?}"
    );
    for needle in [
        format!("cannot read the pods bound to node {node}"),
        "refusing to allocate".to_owned(),
    ] {
        assert!(
            refused.message().contains(&needle),
            "{needle}: {}",
            refused.message()
        );
    }
    assert!(refused_after >= budget, "refused after {refused_after:?}");

    // Kubelet fails the admission: "first" turns Failed with the plugin's
    // message (written here as kubelet writes it, once KWOK has started
    // it). The scheduler counts a Failed pod as holding nothing, so the
    // replacement its controller creates gets GPU 1 again, while the
    // plugin is still cut off.
    wait::until("first to be running", Duration::from_secs(30), || async {
        let phase = pods.get("first").await?.status.and_then(|s| s.phase);
        Ok(if phase.as_deref() == Some("Running") {
            Ok(())
        } else {
            Err(format!("phase {phase:?}"))
        })
    })
    .await?;
    let refused_at = Instant::now();
    pods.patch_status(
        "first",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"status": {
            "phase": "Failed",
            "reason": "UnexpectedAdmissionError",
            "message": format!("Allocate failed due to {}, which is unexpected", refused.message()),
        }})),
    )
    .await?;
    let replacement = bind("first-again").await.with_logs(&plane)?;
    let replaced_after = refused_at.elapsed();
    assert_eq!(replacement, first, "the failed pod's GPU was released");
    let first = replacement;

    // 2. The link is back: kubelet admits the replacement, and it gets the
    // scheduler's GPU 1 and nothing else.
    proxy.set(Link::Open);
    let restored_at = Instant::now();
    let preferred = grpc
        .get_preferred_allocation(one_gpu(&uuids.iter().collect::<Vec<_>>()))
        .await?
        .into_inner();
    let allocation_recovered = restored_at.elapsed();
    assert_eq!(
        preferred.container_responses[0].device_i_ds,
        vec![uuids[first].clone()]
    );
    let allocated = grpc
        .allocate(AllocateRequest {
            container_requests: vec![ContainerAllocateRequest {
                devices_ids: vec![uuids[first].clone()],
            }],
        })
        .await?
        .into_inner();
    assert_eq!(
        allocated.container_responses[0].envs["NVIDIA_VISIBLE_DEVICES"],
        uuids[first]
    );
    kubelet.set_pod_resources(holding(&[("first-again", &uuids[first])]));
    let agreeing = |expected: Vec<(usize, Vec<String>)>| {
        move |gn: &GpuNode| {
            let holders = holders_of(gn);
            if holders == expected {
                Ok(())
            } else {
                Err(format!("holders {holders:?}"))
            }
        }
    };
    wait_gpu_node(
        &client,
        &node,
        Duration::from_secs(30),
        agreeing(vec![
            (0, vec![]),
            (1, vec![format!("{NS}/first-again")]),
            (2, vec![]),
        ]),
    )
    .await?;
    let gpunode_recovered = restored_at.elapsed();

    // 3. A partition that drops packets, healed within the bound: the
    // plugin's read hangs, is cut, retried, and answered with the
    // scheduler's choice once the link is back.
    let second = bind("second").await.with_logs(&plane)?;
    assert_eq!(second, 2, "GPU 1 is held and GPU 0 partly shared out");
    proxy.set(Link::Silent);
    let request = one_gpu(&[&uuids[0], &uuids[2]]);
    let mut call = grpc.clone();
    let pending = tokio::spawn(async move { call.get_preferred_allocation(request).await });
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.set(Link::Open);
    let healed_at = Instant::now();
    let preferred = pending.await??.into_inner();
    let partition_recovered = healed_at.elapsed();
    assert_eq!(
        preferred.container_responses[0].device_i_ds,
        vec![uuids[second].clone()]
    );
    kubelet.set_pod_resources(holding(&[
        ("first-again", &uuids[first]),
        ("second", &uuids[second]),
    ]));
    let published = wait_gpu_node(
        &client,
        &node,
        Duration::from_secs(30),
        agreeing(vec![
            (0, vec![]),
            (1, vec![format!("{NS}/first-again")]),
            (2, vec![format!("{NS}/second")]),
        ]),
    )
    .await?;

    // The scheduler's view and the node's agree: each pod is bound once, to
    // this node, its annotation names the GPU it holds, and no GPU has two
    // holders.
    let failed = pods.get("first").await?;
    assert_eq!(
        failed.status.and_then(|s| s.phase).as_deref(),
        Some("Failed"),
        "the refused pod stays Failed, visible"
    );
    for (name, index) in [("first-again", first), ("second", second)] {
        let pod = pods.get(name).await?;
        assert_eq!(
            pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
            Some(node.as_str())
        );
        let assignment = assignment_of(&pod).unwrap().map_err(anyhow::Error::msg)?;
        assert_eq!(assignment.gpus.len(), 1);
        assert_eq!(assignment.gpus[0].index as usize, index);
    }
    assert!(holders_of(&published)
        .iter()
        .all(|(_, holders)| holders.len() <= 1));

    println!(
        "device plugin cut off from the API server: refused after {:.2} s (bound {} s); the \
         refused pod's replacement was bound to the same GPU {:.2} s after it failed; after the link was restored the next allocation followed the scheduler's choice in \
         {:.3} s and the GpuNode agreed with it in {:.2} s; a silent partition healed within the \
         bound was answered {:.3} s after the link came back",
        refused_after.as_secs_f64(),
        budget.as_secs(),
        replaced_after.as_secs_f64(),
        allocation_recovered.as_secs_f64(),
        gpunode_recovered.as_secs_f64(),
        partition_recovered.as_secs_f64(),
    );
    assert!(!plugin.has_ended(), "the plugin stopped early");
    plugin.stop().await?;
    Ok(())
}
