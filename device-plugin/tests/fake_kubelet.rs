//! The plugin against a fake kubelet speaking the real gRPC API over Unix
//! sockets in a temporary directory: registration, the device lists, a GPU
//! turning unhealthy on an XID, allocation following the scheduler's
//! annotation, kubelet restarts, and the bad inputs each refused clearly.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use phalanx_api::{AssignedGpu, GpuAssignmentAnnotation, ANNOTATION_GPU_ASSIGNMENT};
use phalanx_device_plugin::backend::{FakeBackend, FakeNode};
use phalanx_device_plugin::daemon::{run_daemon, BackendChoice, DaemonConfig, DaemonError};
use phalanx_device_plugin::fake_kubelet::FakeKubelet;
use phalanx_device_plugin::kubelet::{KubeletError, KubeletPaths};
use phalanx_device_plugin::pods::StaticPodSource;
use phalanx_device_plugin::proto::podresources::{
    ContainerDevices, ContainerResources, PodResources,
};
use phalanx_device_plugin::proto::v1beta1::device_plugin_client::DevicePluginClient;
use phalanx_device_plugin::proto::v1beta1::{
    AllocateRequest, ContainerAllocateRequest, ContainerPreferredAllocationRequest, Empty,
    ListAndWatchResponse, PreferredAllocationRequest, RegisterRequest,
};
use phalanx_device_plugin::socket::SocketError;
use tokio::sync::watch;
use tonic::transport::Channel;
use tonic::Code;

const NODE: &str = "gpu-node-1";
const WHOLE: &str = "nvidia.com/gpu";
const MILLI: &str = "phalanx.dev/gpu-milli";
const WAIT: Duration = Duration::from_secs(20);

struct Setup {
    _dir: tempfile::TempDir,
    kubelet: FakeKubelet,
    fake: FakeBackend,
    pods: StaticPodSource,
    uuids: Vec<String>,
    stop: watch::Sender<bool>,
    daemon: tokio::task::JoinHandle<Result<(), DaemonError>>,
    /// Where `/metrics` and `/healthz` are served.
    http: tokio::sync::oneshot::Receiver<std::net::SocketAddr>,
}

/// 4 fake H100s (all NVLinked, GPUs 0-1 on NUMA 0, 2-3 on NUMA 1), a fake
/// kubelet, and the plugin serving it.
async fn setup() -> Setup {
    setup_with(|_| {}).await
}

/// [`setup`] with `adjust` applied to the daemon's config.
async fn setup_with(adjust: impl FnOnce(&mut DaemonConfig)) -> Setup {
    // Under /tmp so socket paths stay short.
    let dir = tempfile::Builder::new()
        .prefix("pdp")
        .tempdir_in("/tmp")
        .unwrap();
    // Kubelet's layout: device plugins in one directory, PodResources in another.
    let kubelet =
        FakeKubelet::start(&dir.path().join("dp"), &dir.path().join("pr/kubelet.sock")).unwrap();
    let fake = FakeBackend::new(FakeNode::uniform(4, "NVIDIA H100 80GB HBM3", 81_559));
    let uuids = (0..4).map(|i| format!("GPU-fake-{i:04}")).collect();
    let pods = StaticPodSource::default();
    let mut paths = KubeletPaths::in_dir(dir.path().join("dp"));
    paths.poll_interval = Duration::from_millis(100);
    let mut config = DaemonConfig::for_node(NODE);
    config.publish = false;
    config.kubelet = Some(paths);
    config.pod_resources_socket = Some(kubelet.pod_resources_socket().to_owned());
    config.sample_interval = Duration::from_millis(100);
    config.metrics_address = Some(([127, 0, 0, 1], 0).into());
    adjust(&mut config);
    let (stop, stopping) = watch::channel(false);
    let (http_tx, http) = tokio::sync::oneshot::channel();
    let daemon = tokio::spawn(run_daemon(
        config,
        BackendChoice::Fake(fake.clone()),
        None,
        Some(Arc::new(pods.clone())),
        stopping,
        move |handle| {
            let _ = http_tx.send(handle.metrics_address.expect("metrics address"));
        },
    ));
    Setup {
        _dir: dir,
        kubelet,
        fake,
        pods,
        uuids,
        stop,
        daemon,
        http,
    }
}

/// Both registrations, by resource name.
async fn registrations(kubelet: &mut FakeKubelet) -> BTreeMap<String, RegisterRequest> {
    let mut out = BTreeMap::new();
    while out.len() < 2 {
        let r = kubelet
            .next_registration(WAIT)
            .await
            .expect("no registration within 20 s");
        out.insert(r.resource_name.clone(), r);
    }
    out
}

async fn next_list(stream: &mut tonic::Streaming<ListAndWatchResponse>) -> ListAndWatchResponse {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("no device list within 20 s")
        .expect("stream ended")
        .expect("stream error")
}

fn health_of(list: &ListAndWatchResponse, id_prefix: &str) -> Vec<String> {
    list.devices
        .iter()
        .filter(|d| d.id.starts_with(id_prefix))
        .map(|d| d.health.clone())
        .collect()
}

async fn dial(kubelet: &FakeKubelet, r: &RegisterRequest) -> DevicePluginClient<Channel> {
    kubelet.dial_plugin(&r.endpoint).await.unwrap()
}

fn preferred_request(available: Vec<String>, size: i32) -> PreferredAllocationRequest {
    PreferredAllocationRequest {
        container_requests: vec![ContainerPreferredAllocationRequest {
            available_device_i_ds: available,
            must_include_device_i_ds: Vec::new(),
            allocation_size: size,
        }],
    }
}

fn allocate_request(ids: Vec<String>) -> AllocateRequest {
    AllocateRequest {
        container_requests: vec![ContainerAllocateRequest { devices_ids: ids }],
    }
}

/// A pod bound to this node asking for `count` of `resource`, with `annotation`.
fn pod(name: &str, created: &str, resource: &str, count: u32, annotation: Option<&str>) -> Pod {
    let mut annotations = serde_json::Map::new();
    if let Some(a) = annotation {
        annotations.insert(ANNOTATION_GPU_ASSIGNMENT.into(), a.into());
    }
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "ml", "creationTimestamp": created,
                     "annotations": annotations},
        "spec": {"nodeName": NODE, "containers": [{"name": "main", "resources": {
            "limits": {resource: count.to_string()}, "requests": {resource: count.to_string()}}}]},
        "status": {"phase": "Pending"}
    }))
    .unwrap()
}

fn assignment(gpus: &[(u32, &str, u32)]) -> String {
    GpuAssignmentAnnotation {
        node: NODE.into(),
        gpus: gpus
            .iter()
            .map(|(index, uuid, milli)| AssignedGpu {
                index: *index,
                uuid: (*uuid).into(),
                milli: *milli,
            })
            .collect(),
    }
    .to_json()
}

/// `GET path` over plain HTTP/1.1: the status line and the body.
async fn http_get(address: std::net::SocketAddr, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

async fn stop(setup: Setup) {
    setup.stop.send(true).unwrap();
    let result = tokio::time::timeout(WAIT, setup.daemon)
        .await
        .expect("daemon did not stop")
        .unwrap();
    result.unwrap();
    setup.kubelet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_lists_reports_an_xid_and_registers_again_after_a_kubelet_restart() {
    let mut s = setup().await;
    let regs = registrations(&mut s.kubelet).await;
    for (resource, r) in &regs {
        assert_eq!(r.version, "v1beta1");
        assert!(
            !r.endpoint.contains('/'),
            "endpoint is relative: {}",
            r.endpoint
        );
        assert!(
            s.kubelet.dir().join(&r.endpoint).exists(),
            "served before registering: {resource}"
        );
        assert!(
            r.options
                .as_ref()
                .unwrap()
                .get_preferred_allocation_available
        );
        assert!(!r.options.as_ref().unwrap().pre_start_required);
    }
    assert_eq!(
        regs.keys().cloned().collect::<Vec<_>>(),
        vec![WHOLE.to_owned(), MILLI.to_owned()]
    );

    let mut whole = dial(&s.kubelet, &regs[WHOLE]).await;
    let options = whole
        .get_device_plugin_options(Empty {})
        .await
        .unwrap()
        .into_inner();
    assert!(options.get_preferred_allocation_available);
    let mut whole_stream = whole.list_and_watch(Empty {}).await.unwrap().into_inner();
    let first = next_list(&mut whole_stream).await;
    let ids: Vec<&str> = first.devices.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, s.uuids.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(first.devices.iter().all(|d| d.health == "Healthy"));
    let numa: Vec<i64> = first
        .devices
        .iter()
        .map(|d| d.topology.as_ref().unwrap().nodes[0].id)
        .collect();
    assert_eq!(numa, vec![0, 0, 1, 1]);

    let mut milli = dial(&s.kubelet, &regs[MILLI]).await;
    let mut milli_stream = milli.list_and_watch(Empty {}).await.unwrap().into_inner();
    let first = next_list(&mut milli_stream).await;
    assert_eq!(first.devices.len(), 4000, "1000 units per GPU");
    assert_eq!(first.devices[1000].id, format!("{}::0", s.uuids[1]));

    // The driver reports XID 79 on GPU 2: both streams send the full list again
    // with GPU 2's devices Unhealthy.
    s.fake.inject_xid(&s.uuids[2], 79).unwrap();
    let after = next_list(&mut whole_stream).await;
    assert_eq!(after.devices.len(), 4, "the full list, not a delta");
    let health: Vec<&str> = after.devices.iter().map(|d| d.health.as_str()).collect();
    assert_eq!(health, vec!["Healthy", "Healthy", "Unhealthy", "Healthy"]);
    let after = next_list(&mut milli_stream).await;
    assert!(health_of(&after, &s.uuids[2])
        .iter()
        .all(|h| h == "Unhealthy"));
    assert!(health_of(&after, &s.uuids[3])
        .iter()
        .all(|h| h == "Healthy"));
    // Allocating the failed GPU is refused with the reason.
    let err = whole
        .allocate(allocate_request(vec![s.uuids[2].clone()]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("XID 79"), "{}", err.message());

    // Kubelet restarts: it deletes every socket and listens again. The plugin
    // notices, serves again and registers again; the old streams end.
    s.kubelet.restart().await.unwrap();
    let again = registrations(&mut s.kubelet).await;
    assert_eq!(
        again.keys().cloned().collect::<Vec<_>>(),
        vec![WHOLE.to_owned(), MILLI.to_owned()]
    );
    let ended = tokio::time::timeout(WAIT, whole_stream.next())
        .await
        .expect("old stream still open");
    assert!(
        !matches!(ended, Some(Ok(_))),
        "old stream should end, got {ended:?}"
    );
    let mut whole = dial(&s.kubelet, &again[WHOLE]).await;
    let mut stream = whole.list_and_watch(Empty {}).await.unwrap().into_inner();
    let listed = next_list(&mut stream).await;
    assert_eq!(
        listed.devices[2].health, "Unhealthy",
        "health survives the restart"
    );

    // The metrics tell the same story: two registrations each, GPU 2 unhealthy
    // after one XID 79, one refused allocation.
    let address = (&mut s.http).await.unwrap();
    let (status, _) = http_get(address, "/healthz").await;
    assert!(status.contains("200"), "{status}");
    let expected = [
        "phalanx_device_plugin_registrations_total{resource=\"nvidia.com/gpu\"} 2",
        "phalanx_device_plugin_registrations_total{resource=\"phalanx.dev/gpu-milli\"} 2",
        "phalanx_gpu_healthy{gpu=\"2\",uuid=\"GPU-fake-0002\",model=\"NVIDIA H100 80GB HBM3\"} 0",
        "phalanx_gpu_healthy{gpu=\"1\",uuid=\"GPU-fake-0001\",model=\"NVIDIA H100 80GB HBM3\"} 1",
        "phalanx_gpu_xid_errors_total{gpu=\"2\",uuid=\"GPU-fake-0002\",xid=\"79\"} 1",
        "phalanx_device_plugin_allocation_failures_total{resource=\"nvidia.com/gpu\",reason=\"unhealthy_device\"} 1",
    ];
    // The last registration is counted just after kubelet answers it: poll
    // briefly rather than race it.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (_, metrics) = http_get(address, "/metrics").await;
        let missing: Vec<&&str> = expected.iter().filter(|e| !metrics.contains(**e)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "missing {missing:?} in\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let sockets: Vec<PathBuf> = again
        .values()
        .map(|r| s.kubelet.dir().join(&r.endpoint))
        .collect();
    stop(s).await;
    for socket in sockets {
        assert!(!socket.exists(), "{} left behind", socket.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocation_follows_the_schedulers_annotation_else_topology() {
    let mut s = setup().await;
    let regs = registrations(&mut s.kubelet).await;
    let mut whole = dial(&s.kubelet, &regs[WHOLE]).await;
    let mut milli = dial(&s.kubelet, &regs[MILLI]).await;
    let u = s.uuids.clone();

    // No pod known: topology (all NVLinked; NUMA 1 holds 2-3 together).
    let got = whole
        .get_preferred_allocation(preferred_request(
            vec![u[1].clone(), u[2].clone(), u[3].clone()],
            2,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        got.container_responses[0].device_i_ds,
        vec![u[2].clone(), u[3].clone()]
    );

    // The scheduler chose GPUs 1 and 3 for ml/trainer.
    s.pods.set(vec![
        pod(
            "trainer",
            "2026-01-01T00:00:02Z",
            WHOLE,
            2,
            Some(&assignment(&[(1, &u[1], 1000), (3, &u[3], 1000)])),
        ),
        pod("older-single", "2026-01-01T00:00:01Z", WHOLE, 1, None),
        pod(
            "share",
            "2026-01-01T00:00:03Z",
            MILLI,
            250,
            Some(&assignment(&[(2, "", 250)])),
        ),
    ]);
    let got = whole
        .get_preferred_allocation(preferred_request(u.clone(), 2))
        .await
        .unwrap()
        .into_inner();
    let chosen = got.container_responses[0].device_i_ds.clone();
    assert_eq!(chosen, vec![u[1].clone(), u[3].clone()]);
    let allocated = whole
        .allocate(allocate_request(chosen))
        .await
        .unwrap()
        .into_inner();
    let envs = &allocated.container_responses[0].envs;
    assert_eq!(envs["NVIDIA_VISIBLE_DEVICES"], format!("{},{}", u[1], u[3]));

    // A 250-milli share on GPU 2: units of GPU 2 only, and HAMi-core limits.
    let all_units: Vec<String> = u
        .iter()
        .flat_map(|g| (0..1000).map(move |k| format!("{g}::{k}")))
        .collect();
    let got = milli
        .get_preferred_allocation(preferred_request(all_units, 250))
        .await
        .unwrap()
        .into_inner();
    let units = got.container_responses[0].device_i_ds.clone();
    assert_eq!(units.len(), 250);
    assert!(
        units
            .iter()
            .all(|id| id.starts_with(&format!("{}::", u[2]))),
        "{:?}",
        &units[..3]
    );
    let allocated = milli
        .allocate(allocate_request(units))
        .await
        .unwrap()
        .into_inner();
    let envs = &allocated.container_responses[0].envs;
    assert_eq!(envs["NVIDIA_VISIBLE_DEVICES"], u[2]);
    assert_eq!(
        envs["CUDA_DEVICE_MEMORY_LIMIT_0"],
        format!("{}m", 81_559 * 250 / 1000)
    );
    assert_eq!(envs["CUDA_DEVICE_SM_LIMIT"], "25");

    // Once kubelet reports trainer's container as holding its GPUs, the next
    // 2-GPU request is not taken for trainer's: no pod matches, topology decides.
    s.kubelet.set_pod_resources(vec![PodResources {
        name: "trainer".into(),
        namespace: "ml".into(),
        containers: vec![ContainerResources {
            name: "main".into(),
            devices: vec![ContainerDevices {
                resource_name: WHOLE.into(),
                device_ids: vec![u[1].clone(), u[3].clone()],
                topology: None,
            }],
            ..ContainerResources::default()
        }],
    }]);
    let got = whole
        .get_preferred_allocation(preferred_request(vec![u[0].clone(), u[2].clone()], 2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        got.container_responses[0].device_i_ds,
        vec![u[0].clone(), u[2].clone()]
    );
    stop(s).await;
}

/// The API server does not answer: the plugin retries for its bound, then
/// refuses (kubelet fails the pod's admission with the message) instead of
/// giving the pod GPUs the scheduler did not choose; an API server back
/// within the bound is used, and the scheduler's choice followed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_assignment_is_refused_after_retries_never_replaced_by_topology() {
    let mut s = setup_with(|config| config.assignment_read_timeout = Duration::from_secs(3)).await;
    let regs = registrations(&mut s.kubelet).await;
    let mut whole = dial(&s.kubelet, &regs[WHOLE]).await;
    let u = s.uuids.clone();
    // The scheduler chose GPU 3; topology alone would take GPU 0.
    s.pods.set(vec![pod(
        "chosen",
        "2026-01-01T00:00:01Z",
        WHOLE,
        1,
        Some(&assignment(&[(3, &u[3], 1000)])),
    )]);
    s.pods.set_unreachable(Some("connection refused"));
    let err = whole
        .get_preferred_allocation(preferred_request(u.clone(), 1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    for needle in [
        "cannot read the pods bound to node gpu-node-1",
        "last error: connection refused",
        "refusing to allocate",
    ] {
        assert!(
            err.message().contains(needle),
            "{needle:?}: {}",
            err.message()
        );
    }
    let (_, metrics) = http_get((&mut s.http).await.unwrap(), "/metrics").await;
    assert!(
        metrics.lines().any(|l| l.starts_with(
            "phalanx_device_plugin_allocation_failures_total{resource=\"nvidia.com/gpu\",reason=\"assignment_unreadable\"} 1"
        )),
        "{metrics}"
    );

    // Back once the plugin has failed a read and is retrying: the
    // scheduler's GPU, not GPU 0.
    let pods = s.pods.clone();
    let reads_before = pods.reads();
    let heal = tokio::spawn(async move {
        while pods.reads() == reads_before {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        pods.set_unreachable(None);
    });
    let got = whole
        .get_preferred_allocation(preferred_request(u.clone(), 1))
        .await
        .unwrap()
        .into_inner();
    heal.await.unwrap();
    assert_eq!(got.container_responses[0].device_i_ds, vec![u[3].clone()]);
    stop(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_grpc_errors() {
    let mut s = setup().await;
    let regs = registrations(&mut s.kubelet).await;
    let mut whole = dial(&s.kubelet, &regs[WHOLE]).await;
    let mut milli = dial(&s.kubelet, &regs[MILLI]).await;
    let u = s.uuids.clone();

    // A malformed scheduler annotation on the pod being admitted.
    s.pods.set(vec![pod(
        "broken",
        "2026-01-01T00:00:00Z",
        WHOLE,
        1,
        Some("{\"node\": \"gpu-node-1\", \"gpus\": 3"),
    )]);
    let err = whole
        .get_preferred_allocation(preferred_request(u.clone(), 1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("ml/broken") && err.message().contains("phalanx.dev/gpu-assignment"),
        "{}",
        err.message()
    );

    // An annotation naming a GPU this node does not have.
    s.pods.set(vec![pod(
        "ghost",
        "2026-01-01T00:00:00Z",
        WHOLE,
        1,
        Some(&assignment(&[(9, "", 1000)])),
    )]);
    let err = whole
        .get_preferred_allocation(preferred_request(u.clone(), 1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("index 9"), "{}", err.message());

    // A share larger than what is left on the chosen GPU.
    s.pods.set(vec![pod(
        "big",
        "2026-01-01T00:00:00Z",
        MILLI,
        600,
        Some(&assignment(&[(0, "", 600)])),
    )]);
    let few: Vec<String> = (0..500)
        .map(|k| format!("{}::{k}", u[0]))
        .chain((0..1000).map(|k| format!("{}::{k}", u[1])))
        .collect();
    let err = milli
        .get_preferred_allocation(preferred_request(few, 600))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(
        err.message().contains("larger than the 500 units left"),
        "{}",
        err.message()
    );

    // Unknown device IDs, for either resource.
    let err = whole
        .allocate(allocate_request(vec!["GPU-not-here".into()]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("unknown device ID \"GPU-not-here\""),
        "{}",
        err.message()
    );
    let err = milli
        .allocate(allocate_request(vec![u[0].clone()]))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::InvalidArgument,
        "a whole-GPU ID is not a share ID"
    );
    let err = whole
        .get_preferred_allocation(preferred_request(u.clone(), -1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    stop(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_directory_too_long_for_unix_sockets_is_refused_at_start() {
    let base = tempfile::Builder::new()
        .prefix("pdp")
        .tempdir_in("/tmp")
        .unwrap();
    let long: PathBuf = base.path().join("d".repeat(100));
    std::fs::create_dir_all(&long).unwrap();
    let mut config = DaemonConfig::for_node(NODE);
    config.publish = false;
    config.kubelet = Some(KubeletPaths::in_dir(&long));
    let (_stop, stopping) = watch::channel(false);
    let fake = FakeBackend::new(FakeNode::uniform(1, "T4", 15_360));
    let result = tokio::time::timeout(
        WAIT,
        run_daemon(
            config,
            BackendChoice::Fake(fake),
            None,
            None,
            stopping,
            |_| {},
        ),
    )
    .await
    .expect("a bad path must fail at once, not wait for kubelet");
    let err = result.unwrap_err();
    assert!(
        matches!(
            err,
            DaemonError::Kubelet(KubeletError::Socket(SocketError::PathTooLong { .. }))
        ),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("108") && message.contains(&*long.to_string_lossy()),
        "{message}"
    );
    assert!(!Path::new(&long).join("kubelet.sock").exists());
}
