//! Phalanx's device plugin on the harness's control plane: the plugin's daemon
//! runs in this process with a fake GPU backend the test keeps a handle on
//! (to change memory use or raise an XID), publishing the `GpuNode` of a KWOK
//! node; optionally with a fake kubelet in a temporary directory, so that the
//! kubelet device plugin API can be called as kubelet would.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::Api;
use phalanx_api::GpuNode;
use phalanx_device_plugin::backend::FakeBackend;
use phalanx_device_plugin::daemon::{run_daemon, BackendChoice, DaemonConfig, DaemonError};
use phalanx_device_plugin::fake_kubelet::FakeKubelet;
use phalanx_device_plugin::kubelet::KubeletPaths;
use phalanx_device_plugin::pods::ApiPodSource;
use tokio::sync::watch;
use tokio::task::JoinHandle;

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
