//! Phalanx's device plugin on the harness's control plane: the plugin's daemon
//! runs in this process with a fake GPU backend the test keeps a handle on
//! (to change memory use or raise an XID), publishing the `GpuNode` of a KWOK
//! node; optionally with a fake kubelet in a temporary directory, so that the
//! kubelet device plugin API can be called as kubelet would. Also: the
//! credentials a plugin's pod holds (a token bound to a pod on a node, which
//! carries the node claim the chart's admission policy checks), and clients
//! through another address (a cuttable proxy, [`crate::proxy`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::BoundObjectReference;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use kube::api::{ObjectMeta, PostParams};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::Api;
use phalanx_api::GpuNode;
use phalanx_device_plugin::backend::FakeBackend;
use phalanx_device_plugin::daemon::{run_daemon, BackendChoice, DaemonConfig, DaemonError};
use phalanx_device_plugin::fake_kubelet::FakeKubelet;
use phalanx_device_plugin::kubelet::KubeletPaths;
use phalanx_device_plugin::pods::ApiPodSource;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::tokens::{request_token, token_request};
use crate::ControlPlane;

/// How the plugin is run.
#[derive(Debug, Clone)]
pub struct DevicePluginOptions {
    pub sample_interval: Duration,
    pub heartbeat: Duration,
    /// Also serve the kubelet API to a fake kubelet (pods looked up through
    /// the API server).
    pub with_fake_kubelet: bool,
}

impl Default for DevicePluginOptions {
    fn default() -> Self {
        Self {
            sample_interval: Duration::from_millis(200),
            heartbeat: Duration::from_secs(2),
            with_fake_kubelet: false,
        }
    }
}

/// A running plugin. Stop it with [`DevicePluginHandle::stop`] (dropping it
/// stops the daemon task too, without waiting).
#[derive(Debug)]
pub struct DevicePluginHandle {
    /// The test's handle on the fake GPUs.
    pub fake: FakeBackend,
    /// The fake kubelet, when asked for.
    pub kubelet: Option<FakeKubelet>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<Result<(), DaemonError>>>,
    _dir: Option<tempfile::TempDir>,
}

impl DevicePluginHandle {
    /// Stops the daemon and returns how it ended.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), task).await???;
        }
        if let Some(kubelet) = self.kubelet.take() {
            kubelet.stop().await;
        }
        Ok(())
    }

    /// Whether the daemon has ended (an error ends it early).
    pub fn has_ended(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

impl Drop for DevicePluginHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Starts the plugin for `node` with the fake GPUs `fake`.
pub async fn start_device_plugin(
    client: &kube::Client,
    node: &str,
    fake: FakeBackend,
    options: &DevicePluginOptions,
) -> anyhow::Result<DevicePluginHandle> {
    start_device_plugin_with(client, node, fake, options, |_| {}).await
}

/// [`start_device_plugin`] with `adjust` applied to the daemon's config last
/// (e.g. its `assignment_read_timeout`).
pub async fn start_device_plugin_with(
    client: &kube::Client,
    node: &str,
    fake: FakeBackend,
    options: &DevicePluginOptions,
    adjust: impl FnOnce(&mut DaemonConfig),
) -> anyhow::Result<DevicePluginHandle> {
    let mut config = DaemonConfig::for_node(node);
    config.sample_interval = options.sample_interval;
    config.heartbeat = options.heartbeat;
    let (dir, kubelet) = if options.with_fake_kubelet {
        // Under /tmp: Unix socket paths are short.
        let dir = tempfile::Builder::new().prefix("pdp").tempdir_in("/tmp")?;
        // Kubelet's layout: device plugins in one directory, PodResources in another.
        let pod_resources = dir.path().join("pr/kubelet.sock");
        let kubelet = FakeKubelet::start(&dir.path().join("dp"), &pod_resources)?;
        let mut paths = KubeletPaths::in_dir(dir.path().join("dp"));
        paths.poll_interval = Duration::from_millis(200);
        config.kubelet = Some(paths);
        config.pod_resources_socket = Some(pod_resources);
        (Some(dir), Some(kubelet))
    } else {
        (None, None)
    };
    adjust(&mut config);
    let (stop, stopping) = watch::channel(false);
    let task = tokio::spawn(run_daemon(
        config,
        BackendChoice::Fake(fake.clone()),
        Some(client.clone()),
        Some(Arc::new(ApiPodSource::new(client.clone()))),
        stopping,
        |_| {},
    ));
    Ok(DevicePluginHandle {
        fake,
        kubelet,
        stop,
        task: Some(task),
        _dir: dir,
    })
}

/// Polls the `GpuNode` named `node` every 100 ms until `check` accepts it
/// (returns `Ok`), or fails after `timeout` with the last reason.
pub async fn wait_gpu_node<F>(
    client: &kube::Client,
    node: &str,
    timeout: Duration,
    mut check: F,
) -> anyhow::Result<GpuNode>
where
    F: FnMut(&GpuNode) -> Result<(), String>,
{
    let api: Api<GpuNode> = Api::all(client.clone());
    let deadline = Instant::now() + timeout;
    let mut why = "no GpuNode yet".to_owned();
    loop {
        if let Some(gpu_node) = api.get_opt(node).await? {
            match check(&gpu_node) {
                Ok(()) => return Ok(gpu_node),
                Err(reason) => why = reason,
            }
        }
        if Instant::now() >= deadline {
            anyhow::bail!("GpuNode {node} not as expected after {timeout:?}: {why}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates pod `namespace/pod` running as `service_account`, bound to `node`
/// from the start (as a DaemonSet's pod is), and returns a token for the
/// account bound to that pod, as kubelet mounts into it: the API server then
/// puts `authentication.kubernetes.io/node-name` = `node` into the user info
/// of every request made with it (Kubernetes 1.30 and later). With `None`
/// the pod is on no node (and no scheduler will place it): its token
/// carries no node claim.
pub async fn pod_bound_token(
    client: &kube::Client,
    namespace: &str,
    service_account: &str,
    pod: &str,
    node: Option<&str>,
) -> anyhow::Result<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let created = pods
        .create(
            &PostParams::default(),
            &Pod {
                metadata: ObjectMeta {
                    name: Some(pod.to_owned()),
                    ..ObjectMeta::default()
                },
                spec: Some(PodSpec {
                    node_name: node.map(str::to_owned),
                    scheduler_name: node
                        .is_none()
                        .then(|| "no-scheduler-places-this".to_owned()),
                    service_account_name: Some(service_account.to_owned()),
                    automount_service_account_token: Some(false),
                    containers: vec![Container {
                        name: "device-plugin".to_owned(),
                        image: Some("example.invalid/phalanx-device-plugin:1".to_owned()),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
                ..Pod::default()
            },
        )
        .await?;
    let request = token_request(Some(BoundObjectReference {
        api_version: Some("v1".to_owned()),
        kind: Some("Pod".to_owned()),
        name: Some(pod.to_owned()),
        uid: created.metadata.uid.clone(),
    }));
    Ok(request_token(client, namespace, service_account, &request).await?)
}

/// A token for `namespace/service_account` bound to nothing (what
/// `kubectl create token` hands out): it carries no node claim.
pub async fn unbound_token(
    client: &kube::Client,
    namespace: &str,
    service_account: &str,
) -> anyhow::Result<String> {
    Ok(request_token(client, namespace, service_account, &token_request(None)).await?)
}

/// A client for `plane` that authenticates with `token` instead of the admin
/// certificate (when given) and talks to `server` instead of the API server
/// itself (when given: a proxy in front of it; the API server's certificate
/// still verifies, for its names do not depend on the port).
pub async fn client_for_plane(
    plane: &ControlPlane,
    token: Option<&str>,
    server: Option<&str>,
) -> anyhow::Result<kube::Client> {
    let kubeconfig = Kubeconfig::read_from(plane.kubeconfig())?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    if let Some(token) = token {
        config.auth_info = AuthInfo {
            token: Some(token.to_owned().into()),
            ..AuthInfo::default()
        };
    }
    if let Some(server) = server {
        config.cluster_url = server.parse()?;
    }
    Ok(kube::Client::try_from(config)?)
}
