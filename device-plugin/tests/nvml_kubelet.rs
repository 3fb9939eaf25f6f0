//! The NVML backend through the whole plugin, on a machine with an NVIDIA GPU:
//! a fake kubelet registers it, lists the real GPUs, and allocates one. On a
//! machine without the driver it prints SKIPPED and passes (the missing-driver
//! error itself is tested in `run_cli.rs` and `backend::nvml`).

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use std::time::Duration;

use futures::StreamExt;
use phalanx_device_plugin::backend::{GpuBackend, NvmlBackend};
use phalanx_device_plugin::daemon::{run_daemon, BackendChoice, DaemonConfig};
use phalanx_device_plugin::fake_kubelet::FakeKubelet;
use phalanx_device_plugin::kubelet::KubeletPaths;
use phalanx_device_plugin::proto::v1beta1::{AllocateRequest, ContainerAllocateRequest, Empty};
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_gpus_are_registered_listed_and_allocated() {
    if !std::path::Path::new("/dev/nvidiactl").exists() {
        eprintln!("SKIPPED real_gpus_are_registered_listed_and_allocated: no NVIDIA driver here");
        return;
    }
    let nvml = NvmlBackend::new().unwrap();
    let inventory = nvml.inventory().unwrap();
    eprintln!("{}", serde_json::to_string_pretty(&inventory).unwrap());
    assert!(
        !inventory.gpus.is_empty(),
        "the driver is loaded but lists no GPU"
    );
    drop(nvml);

    let dir = tempfile::Builder::new()
        .prefix("pdp")
        .tempdir_in("/tmp")
        .unwrap();
    let mut kubelet =
        FakeKubelet::start(&dir.path().join("dp"), &dir.path().join("pr/kubelet.sock")).unwrap();
    let mut config = DaemonConfig::for_node("gpu-host");
    config.publish = false;
    config.kubelet = Some(KubeletPaths::in_dir(dir.path().join("dp")));
    config.pod_resources_socket = Some(dir.path().join("pr/kubelet.sock"));
    let (stop, stopping) = watch::channel(false);
    let daemon = tokio::spawn(run_daemon(
        config,
        BackendChoice::Nvml,
        None,
        None,
        stopping,
        |_| {},
    ));

    let mut whole = None;
    for _ in 0..2 {
        let r = kubelet
            .next_registration(WAIT)
            .await
            .expect("no registration");
        if r.resource_name == "nvidia.com/gpu" {
            whole = Some(r);
        }
    }
    let whole = whole.expect("nvidia.com/gpu registered");
    let mut client = kubelet.dial_plugin(&whole.endpoint).await.unwrap();
    let mut stream = client.list_and_watch(Empty {}).await.unwrap().into_inner();
    let list = tokio::time::timeout(WAIT, stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let ids: Vec<&str> = list.devices.iter().map(|d| d.id.as_str()).collect();
    let mut expected: Vec<(u32, &str)> = inventory
        .gpus
        .iter()
        .map(|g| (g.index, g.uuid.as_str()))
        .collect();
    expected.sort_unstable();
    assert_eq!(ids, expected.iter().map(|(_, u)| *u).collect::<Vec<_>>());
    assert!(
        list.devices.iter().all(|d| d.health == "Healthy"),
        "{list:?}"
    );

    let first = ids[0].to_owned();
    let allocated = client
        .allocate(AllocateRequest {
            container_requests: vec![ContainerAllocateRequest {
                devices_ids: vec![first.clone()],
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        allocated.container_responses[0].envs["NVIDIA_VISIBLE_DEVICES"],
        first
    );

    stop.send(true).unwrap();
    tokio::time::timeout(WAIT, daemon)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    kubelet.stop().await;
}
