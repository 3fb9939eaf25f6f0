//! Extender mode: the same engine behind kube-scheduler's HTTP extender API
//! (`k8s.io/kube-scheduler/extender/v1`), for clusters that keep the default
//! scheduler. kube-scheduler runs its own plugins, then asks us to `filter` and
//! `prioritize` the nodes left, and (with `bindVerb`) lets us `bind`.
//!
//! * The cluster view is the scheduler's own [`ClusterMirror`], fed by watches of
//!   Nodes, `GpuNode`s and Pods; pods bound by anyone are accounted from the
//!   watch, pods bound by us are assumed as soon as we bind them.
//! * **bindVerb is required** for GPU pods: only the binder writes the
//!   `phalanx.dev/gpu-assignment` annotation that tells the device plugin which
//!   GPUs (and which share) the pod got. Without it kube-scheduler binds, no
//!   annotation is written, and the mirror assumes the lowest-indexed GPUs.
//!   `deploy/extender/kube-scheduler-config.yaml` has the configuration.
//! * Single pods only: a pod that declares a gang gets an `Error` telling its
//!   owner to use `schedulerName: phalanx` (an extender sees one pod at a time
//!   and cannot place a gang all-or-nothing). No `preemptVerb`.
//! * Scores come from the configured policy's per-node `score`, scaled onto
//!   0..=10 ([`handlers::scale_scores`]).
//! * `/healthz`, `/readyz` (ready once the watches have listed everything) and
//!   `/metrics` are served on `http.bindAddress` as in scheduler mode.
//! * With `extender.tls` the API is HTTPS (kube-scheduler's `enableHTTPS`),
//!   and with `extender.tls.clientCAFile` only a client presenting a
//!   certificate of that CA (kube-scheduler's `tlsConfig.certFile`), with a
//!   CN in `allowedClientNames` if set, gets past the TLS handshake;
//!   `deploy/extender/kube-scheduler-config-tls.yaml` has the configuration.

pub mod handlers;
pub mod routes;
pub mod types;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::watcher::Event;
use kube::{Api, Client};
use phalanx_api::GpuNode;
use thiserror::Error;
use tokio::sync::{mpsc, Mutex};

use crate::controller::binder::Binder;
use crate::controller::config::{ExtenderTlsConfig, SchedulerConfig};
use crate::controller::metrics::SchedulerMetrics;
use handlers::BindPlan;
use phalanx_engine::{build_policy, PlacementPolicy, PolicyConfig, WorkloadSource};
use phalanx_kube::mirror::{pod_uid, ClusterMirror, MirrorChange};
use phalanx_kube::translate::{self, is_waiting_for_node};
use phalanx_runtime::http::{self, Health};
use phalanx_runtime::https;
use phalanx_runtime::tls::{ReloadingTls, TlsError};
use phalanx_runtime::watch::spawn_watch;
use types::{ExtenderArgs, ExtenderBindingArgs, ExtenderFilterResult, HostPriorityList};

/// Pods remembered from filter calls for the bind that follows; beyond this many
/// the oldest half is dropped (bind then reads the pod from the API).
const RECENT_PODS_LIMIT: usize = 10_000;
/// How often telemetry ages are checked and liveness is reported.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);

/// Why extender mode stopped.
#[derive(Debug, Error)]
pub enum ExtenderError {
    #[error("extender server on {address}: {source}")]
    Serve {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the watches of Nodes, GpuNodes and Pods stopped")]
    WatchesEnded,
    /// A TLS file of `http.tls` or `extender.tls` cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// The mirror, the policy, and the pods seen in filter calls (by UID), shared by
/// the watch task and the HTTP handlers.
#[derive(Debug)]
pub struct ExtenderCore {
    mirror: ClusterMirror,
    policy: Box<dyn PlacementPolicy>,
    recent: HashMap<String, (u64, Pod)>,
    seq: u64,
}

impl ExtenderCore {
    pub fn new(config: &SchedulerConfig) -> Self {
        let policy = build_policy(
            config.policy,
            &PolicyConfig {
                seed: 0,
                workload: WorkloadSource::Online,
            },
        );
        let max_age = u64::try_from(config.telemetry_max_age().as_millis()).unwrap_or(u64::MAX);
        Self::with_mirror(ClusterMirror::new(max_age), policy)
    }

    pub fn with_mirror(mirror: ClusterMirror, policy: Box<dyn PlacementPolicy>) -> Self {
        ExtenderCore {
            mirror,
            policy,
            recent: HashMap::new(),
            seq: 0,
        }
    }

    pub fn mirror(&self) -> &ClusterMirror {
        &self.mirror
    }

    pub fn mirror_mut(&mut self) -> &mut ClusterMirror {
        &mut self.mirror
    }

    pub fn filter(&mut self, args: &ExtenderArgs) -> ExtenderFilterResult {
        self.remember(&args.pod);
        handlers::filter(&self.mirror, args)
    }

    pub fn prioritize(&mut self, args: &ExtenderArgs) -> HostPriorityList {
        self.remember(&args.pod);
        handlers::prioritize(&self.mirror, self.policy.as_mut(), args)
    }

    pub fn plan_bind(&mut self, pod: &Pod, args: &ExtenderBindingArgs) -> Result<BindPlan, String> {
        let plan = handlers::plan_bind(&mut self.mirror, self.policy.as_mut(), pod, args);
        if plan.is_ok() {
            self.recent.remove(&args.pod_uid);
        }
        plan
    }

    /// The pod a filter or prioritize call showed for this UID.
    pub fn recent_pod(&self, uid: &str) -> Option<Pod> {
        self.recent.get(uid).map(|(_, pod)| pod.clone())
    }

    /// Folds one watch event into the mirror; bound or deleted pods are forgotten
    /// from the recent-pod cache.
    pub fn pod_event(&mut self, event: &Event<Pod>) -> MirrorChange {
        match event {
            Event::Apply(pod) | Event::InitApply(pod) if !is_waiting_for_node(pod) => {
                self.recent.remove(&pod_uid(pod));
            }
            Event::Delete(pod) => {
                self.recent.remove(&pod_uid(pod));
            }
            _ => {}
        }
        self.mirror.pod_event(event)
    }

    /// A pod arriving for the first time is shown to policies that learn the
    /// workload online, as the scheduler does once per pod.
    fn remember(&mut self, pod: &Pod) {
        let uid = pod_uid(pod);
        if uid.is_empty() {
            return;
        }
        self.seq += 1;
        if let Some(entry) = self.recent.get_mut(&uid) {
            *entry = (self.seq, pod.clone());
            return;
        }
        if let Ok(demand) = translate::pod_demand(pod, self.mirror.state().snapshot().models()) {
            self.policy.observe_arrival(&demand);
        }
        if self.recent.len() >= RECENT_PODS_LIMIT {
            let cutoff = self.seq.saturating_sub((RECENT_PODS_LIMIT / 2) as u64);
            self.recent.retain(|_, (seen, _)| *seen > cutoff);
        }
        self.recent.insert(uid, (self.seq, pod.clone()));
    }
}

enum Input {
    Node(Box<Event<Node>>),
    GpuNode(Box<Event<GpuNode>>),
    Pod(Box<Event<Pod>>),
}

/// Runs extender mode until `shutdown` resolves: watches into the mirror, the
/// extender API on `extender.bindAddress`, probes and metrics on
/// `http.bindAddress`.
pub async fn serve(
    config: Arc<SchedulerConfig>,
    client: Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ExtenderError> {
    let shutdown = shutdown.boxed().shared();
    let metrics = Arc::new(SchedulerMetrics::new());
    let health = Arc::new(Health::new(Duration::from_secs(30)));
    let core = Arc::new(Mutex::new(ExtenderCore::new(&config)));

    let (tx, inputs) = mpsc::channel(16_384);
    spawn_watch(Api::<Node>::all(client.clone()), tx.clone(), |e| {
        Input::Node(Box::new(e))
    });
    spawn_watch(Api::<GpuNode>::all(client.clone()), tx.clone(), |e| {
        Input::GpuNode(Box::new(e))
    });
    spawn_watch(Api::<Pod>::all(client.clone()), tx, |e| {
        Input::Pod(Box::new(e))
    });
    let folding = tokio::spawn(fold_inputs(
        inputs,
        core.clone(),
        health.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));

    let probes = http::router(health, metrics.clone());
    let probe_security = http::ServerSecurity::from_config(&config.http, &client)?;
    http::spawn_serve_secured(
        config.http.bind_address,
        probes,
        probe_security,
        shutdown.clone(),
    );

    let binder = Binder::new(
        client.clone(),
        NonZeroU32::new(config.binding.qps).unwrap_or(NonZeroU32::MIN),
        NonZeroU32::new(config.binding.burst).unwrap_or(NonZeroU32::MIN),
        config.binding.annotation_write,
    );
    let api = Arc::new(routes::KubeApi { client, binder });
    let app = routes::router(core, api, metrics);
    let address = config.extender.bind_address;
    let tls = extender_tls(&config)?;
    tracing::info!(
        %address,
        policy = %config.policy,
        https = tls.is_some(),
        "serving the kube-scheduler extender API"
    );
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| ExtenderError::Serve { address, source })?;
    let server = async move {
        match tls {
            Some(tls) => https::serve_tls(listener, tls, app, shutdown).await,
            None => {
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
        }
    };
    tokio::select! {
        served = server => served.map_err(|source| ExtenderError::Serve { address, source }),
        folded = folding => match folded {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(ExtenderError::WatchesEnded),
        },
    }
}

/// The extender's TLS configuration, read now so that a bad file stops the
/// start with its key and path.
fn extender_tls(config: &SchedulerConfig) -> Result<Option<Arc<ReloadingTls>>, TlsError> {
    let Some(tls) = &config.extender.tls else {
        tracing::warn!("the extender API is plain HTTP: anyone who reaches extender.bindAddress can bind pods; set extender.tls");
        return Ok(None);
    };
    if tls.client_ca_file.is_none() {
        tracing::warn!(
            "extender.tls has no clientCAFile: any client that reaches the port can bind pods"
        );
    }
    ReloadingTls::load(
        tls.files(),
        ExtenderTlsConfig::KEYS,
        tls.client_certificates(),
    )
    .map(Some)
}

/// Applies watch events to the mirror and keeps the probes current until
/// `shutdown`; `Err` if the watches end.
async fn fold_inputs(
    mut inputs: mpsc::Receiver<Input>,
    core: Arc<Mutex<ExtenderCore>>,
    health: Arc<Health>,
    metrics: Arc<SchedulerMetrics>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ExtenderError> {
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(HOUSEKEEPING_INTERVAL);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => return Ok(()),
            input = inputs.recv() => {
                let Some(input) = input else { return Err(ExtenderError::WatchesEnded) };
                let mut core = core.lock().await;
                apply(&mut core, input);
                for _ in 0..4096 {
                    match inputs.try_recv() {
                        Ok(input) => apply(&mut core, input),
                        Err(_) => break,
                    }
                }
                health.set_synced(core.mirror.synced());
            }
            _ = tick.tick() => {
                let mut core = core.lock().await;
                let stale = core.mirror.expire_telemetry(phalanx_runtime::clock::unix_millis());
                metrics.set_stale_gpus(stale as u64);
                metrics.set_nodes(core.mirror.state().node_count() as u64);
                health.set_synced(core.mirror.synced());
                health.heartbeat();
            }
        }
    }
}

fn apply(core: &mut ExtenderCore, input: Input) {
    let now_ms = phalanx_runtime::clock::unix_millis();
    let change = match input {
        Input::Node(event) => core.mirror.node_event(*event, now_ms),
        Input::GpuNode(event) => core.mirror.gpu_node_event(*event, now_ms),
        Input::Pod(event) => core.pod_event(&event),
    };
    for error in &change.errors {
        tracing::warn!(%error, "cluster state");
    }
}
