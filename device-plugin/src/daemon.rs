//! The whole plugin process, as a library so tests can run it in-process with
//! a fake backend they keep a handle on: health watching, telemetry publishing,
//! `/metrics`, and the kubelet plugins.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::watch;

use crate::assignment_lookup::LookupRetry;
use crate::backend::{BackendError, FakeBackend, GpuBackend, GpuEvent, NvmlBackend};
use crate::health::{spawn_event_watcher, HealthBoard};
use crate::kubelet::{run_plugins, GpuDevicePlugin, KubeletError, KubeletPaths};
use crate::metrics::{serve_http, PluginMetrics};
use crate::pods::{ApiPodSource, PodSource, StaticPodSource};
use crate::resources::{ResourceError, ResourceSpec};
use crate::telemetry::{PublisherConfig, TelemetryPublisher};
use phalanx_runtime::http::ServerSecurity;

/// Which GPUs the plugin reads.
#[derive(Debug, Clone)]
pub enum BackendChoice {
    Nvml,
    /// A fake node; the caller may keep a clone to change it at run time.
    Fake(FakeBackend),
}

impl BackendChoice {
    /// A new handle on the backend (the event watcher and the sampler each get one).
    pub fn open(&self) -> Result<Box<dyn GpuBackend>, BackendError> {
        Ok(match self {
            BackendChoice::Nvml => Box::new(NvmlBackend::new()?),
            BackendChoice::Fake(fake) => Box::new(fake.clone()),
        })
    }
}

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// The Kubernetes node this runs on (the `GpuNode`'s name).
    pub node_name: String,
    pub whole_gpu_resource: String,
    pub gpu_milli_resource: String,
    pub units_per_gpu: u32,
    /// Where to serve the kubelet plugins; `None` on nodes without a kubelet
    /// (KWOK) where only telemetry is published.
    pub kubelet: Option<KubeletPaths>,
    pub pod_resources_socket: Option<PathBuf>,
    /// Write the `GpuNode` (needs a client).
    pub publish: bool,
    pub metrics_address: Option<SocketAddr>,
    /// TLS and authentication of the metrics server; plain HTTP by default.
    pub metrics_security: ServerSecurity,
    pub sample_interval: Duration,
    pub heartbeat: Duration,
    pub max_writes_per_second: NonZeroU32,
    /// How long `GetPreferredAllocation` keeps trying to read the pods on the
    /// node from an API server that does not answer before it refuses
    /// ([`crate::assignment_lookup`]).
    pub assignment_read_timeout: Duration,
}

impl DaemonConfig {
    /// Defaults for `node_name`: the standard resource names, 1000 units per
    /// GPU, 1 s samples, 4 s heartbeat, 2 writes per second, no kubelet, 10 s
    /// to read a pod's assignment.
    pub fn for_node(node_name: impl Into<String>) -> Self {
        DaemonConfig {
            node_name: node_name.into(),
            whole_gpu_resource: phalanx_api::RESOURCE_WHOLE_GPU.to_owned(),
            gpu_milli_resource: phalanx_api::RESOURCE_GPU_MILLI.to_owned(),
            units_per_gpu: phalanx_api::MILLI_PER_GPU,
            kubelet: None,
            pod_resources_socket: None,
            publish: true,
            metrics_address: None,
            metrics_security: ServerSecurity::plain(),
            sample_interval: Duration::from_secs(1),
            heartbeat: Duration::from_secs(4),
            max_writes_per_second: NonZeroU32::MIN.saturating_add(1),
            assignment_read_timeout: LookupRetry::default().budget,
        }
    }
}

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Resource(#[from] ResourceError),
    #[error(transparent)]
    Kubelet(#[from] KubeletError),
    #[error("serving metrics on {address}: {source}")]
    Http {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
}

/// What a started daemon tells its caller.
#[derive(Debug, Clone)]
pub struct DaemonHandle {
    pub metrics: PluginMetrics,
    pub health: HealthBoard,
    /// Where `/metrics` is served, when it is.
    pub metrics_address: Option<SocketAddr>,
}

/// Runs the plugin until `stop` turns true or the kubelet side fails.
/// `on_started` receives the handle once everything is up.
pub async fn run_daemon(
    config: DaemonConfig,
    backend: BackendChoice,
    client: Option<kube::Client>,
    pods: Option<Arc<dyn PodSource>>,
    stop: watch::Receiver<bool>,
    on_started: impl FnOnce(DaemonHandle) + Send,
) -> Result<(), DaemonError> {
    if config.node_name.is_empty() {
        return Err(DaemonError::Config(
            "the node name is empty: set NODE_NAME (the downward API's spec.nodeName) or --node-name".into(),
        ));
    }
    if config.publish && client.is_none() {
        return Err(DaemonError::Config(
            "publishing the GpuNode needs a Kubernetes client".into(),
        ));
    }
    let sampler = backend.open()?;
    let inventory = sampler.inventory()?;
    tracing::info!(backend = sampler.name(), gpus = inventory.gpus.len(), node = %config.node_name, "GPUs found");
    let whole = ResourceSpec::whole(&config.whole_gpu_resource)?;
    let share = ResourceSpec::share(&config.gpu_milli_resource, config.units_per_gpu)?;
    if whole.name == share.name {
        return Err(DaemonError::Config(format!(
            "the whole-GPU and share resources must differ, both are {:?}",
            whole.name
        )));
    }
    // Ten samples missed in a row (at least 10 s) is a stuck sampler.
    let stall_limit = (config.sample_interval * 10).max(Duration::from_secs(10));
    let metrics = PluginMetrics::with_stall_limit(stall_limit);
    let health = HealthBoard::new(inventory.gpus.iter().map(|g| g.uuid.clone()).collect());

    let watcher_stop = Arc::new(AtomicBool::new(false));
    let event_metrics = metrics.clone();
    let gpu_index: Vec<(String, u32)> = inventory
        .gpus
        .iter()
        .map(|g| (g.uuid.clone(), g.index))
        .collect();
    let watcher = spawn_event_watcher(
        backend.open()?,
        health.clone(),
        move |event| match event {
            GpuEvent::CriticalXid { uuid, xid } => {
                let index = gpu_index.iter().find(|(u, _)| u == uuid).map(|(_, i)| *i);
                event_metrics.xid(index, uuid, *xid);
            }
        },
        Arc::clone(&watcher_stop),
    )
    .map_err(|e| DaemonError::Config(format!("starting the GPU event thread: {e}")))?;

    let metrics_address = match config.metrics_address {
        Some(address) => {
            let security = config.metrics_security.clone();
            let (bound, _task) = serve_http(address, metrics.clone(), security, stop.clone())
                .await
                .map_err(|source| DaemonError::Http { address, source })?;
            tracing::info!(%bound, "serving /metrics, /healthz and /readyz");
            Some(bound)
        }
        None => None,
    };

    let publisher = TelemetryPublisher::new(
        PublisherConfig {
            node_name: config.node_name.clone(),
            sample_interval: config.sample_interval,
            heartbeat: config.heartbeat,
            max_writes_per_second: config.max_writes_per_second,
            pod_resources_socket: config.pod_resources_socket.clone(),
            resources: vec![whole.clone(), share.clone()],
        },
        sampler,
        inventory.clone(),
        health.subscribe(),
        if config.publish { client.clone() } else { None },
        metrics.clone(),
    );
    let publisher_task = tokio::spawn(publisher.run(stop.clone()));

    on_started(DaemonHandle {
        metrics: metrics.clone(),
        health: health.clone(),
        metrics_address,
    });

    let result = match &config.kubelet {
        Some(paths) => {
            let pods: Arc<dyn PodSource> = match (pods, &client) {
                (Some(pods), _) => pods,
                (None, Some(client)) => Arc::new(ApiPodSource::new(client.clone())),
                (None, None) => Arc::new(StaticPodSource::default()),
            };
            let gpus = Arc::new(inventory.gpus.clone());
            let plugins = [whole, share]
                .into_iter()
                .map(|spec| {
                    GpuDevicePlugin::new(
                        spec,
                        config.node_name.clone(),
                        Arc::clone(&gpus),
                        health.subscribe(),
                        Arc::clone(&pods),
                        config.pod_resources_socket.clone(),
                        metrics.clone(),
                    )
                    .map(|plugin| {
                        plugin
                            .with_lookup_retry(LookupRetry::within(config.assignment_read_timeout))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            run_plugins(paths.clone(), plugins, metrics.clone(), stop.clone())
                .await
                .map_err(DaemonError::from)
        }
        None => {
            let mut stop = stop.clone();
            let _ = stop.wait_for(|s| *s).await;
            Ok(())
        }
    };
    watcher_stop.store(true, Ordering::Relaxed);
    publisher_task.abort();
    let _ = tokio::task::spawn_blocking(move || watcher.join()).await;
    result
}
