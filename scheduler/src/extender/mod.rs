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
//! * Nothing a request carries grows state: bodies above
//!   `extender.maxRequestBytes` are refused (413); `/bind` reads the pod from
//!   the API server and binds only pods of `extender.schedulerNames` that ask
//!   for Phalanx's GPU resources ([`handlers::bind_refusal`]); the online
//!   workload model learns from pending pods seen by the watch, not from
//!   request bodies; the pods it has seen ([`RECENT_PODS_LIMIT`]) and the
//!   placements assumed at bind ([`ASSUMED_BIND_TTL`]) are bounded.

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
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::runtime::watcher::Event;
use kube::{Api, Client};
use phalanx_api::GpuNode;
use thiserror::Error;
use tokio::sync::{mpsc, Mutex};

use crate::controller::binder::Binder;
use crate::controller::config::{ExtenderTlsConfig, SchedulerConfig};
use crate::controller::metrics::SchedulerMetrics;
use handlers::{BindPlan, BindRefusal};
use phalanx_engine::{build_policy, PlacementPolicy, PolicyConfig, WorkloadSource};
use phalanx_kube::mirror::{pod_uid, ClusterMirror, MirrorChange};
use phalanx_kube::translate::{self, is_waiting_for_node};
use phalanx_runtime::http::{self, Health};
use phalanx_runtime::https;
use phalanx_runtime::tls::{ReloadingTls, TlsError};
use phalanx_runtime::watch::spawn_watch;
use types::{
    CandidateNode, ExtenderArgs, ExtenderBindingArgs, ExtenderFilterResult, HostPriorityList,
};

/// Pending pods whose arrival the online workload model has been shown (by
/// UID, so that each is shown once); beyond this many the oldest half is
/// forgotten (a forgotten pod still pending may be shown again: a small bias,
/// not a leak).
pub const RECENT_PODS_LIMIT: usize = 10_000;
/// A placement assumed at bind that the watch has not confirmed (pod bound) or
/// cleared (pod deleted) after this long is released: the Binding was written,
/// so this only happens when the watch missed the pod (it was deleted while the
/// watch was down). kube-scheduler expires its assumed pods the same way.
pub const ASSUMED_BIND_TTL: Duration = Duration::from_secs(60);
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

/// The mirror, the policy, the pending pods already shown to the policy, and
/// the placements assumed at bind, shared by the watch task and the HTTP
/// handlers.
#[derive(Debug)]
pub struct ExtenderCore {
    mirror: ClusterMirror,
    policy: Box<dyn PlacementPolicy>,
    scheduler_names: Vec<String>,
    /// UID -> sequence number of when it was shown to the policy.
    recent: HashMap<String, u64>,
    seq: u64,
    /// UID -> when its Binding was written (unix ms), until the watch confirms it.
    assumed_at: HashMap<String, u64>,
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
        Self::with_mirror(
            ClusterMirror::new(max_age).watching_namespaces(),
            policy,
            config.extender.scheduler_names.clone(),
        )
    }

    pub fn with_mirror(
        mirror: ClusterMirror,
        policy: Box<dyn PlacementPolicy>,
        scheduler_names: Vec<String>,
    ) -> Self {
        ExtenderCore {
            mirror,
            policy,
            scheduler_names,
            recent: HashMap::new(),
            seq: 0,
            assumed_at: HashMap::new(),
        }
    }

    pub fn mirror(&self) -> &ClusterMirror {
        &self.mirror
    }

    pub fn mirror_mut(&mut self) -> &mut ClusterMirror {
        &mut self.mirror
    }

    pub fn filter(&self, args: ExtenderArgs) -> ExtenderFilterResult {
        handlers::filter(&self.mirror, args)
    }

    pub fn prioritize(&mut self, args: &ExtenderArgs<impl CandidateNode>) -> HostPriorityList {
        handlers::prioritize(&self.mirror, self.policy.as_mut(), args)
    }

    /// Plans the bind of `pod`, which must have been read from the API server.
    pub fn plan_bind(
        &mut self,
        pod: &Pod,
        args: &ExtenderBindingArgs,
    ) -> Result<BindPlan, BindRefusal> {
        handlers::plan_bind(
            &mut self.mirror,
            self.policy.as_mut(),
            pod,
            args,
            &self.scheduler_names,
        )
    }

    /// The Binding of an assumed pod was written at `now_ms`: the assumption
    /// now waits for the watch, at most [`ASSUMED_BIND_TTL`].
    pub fn bind_written(&mut self, uid: &str, now_ms: u64) {
        if self.mirror.state().is_assumed(uid) {
            self.assumed_at.insert(uid.to_owned(), now_ms);
        }
    }

    /// Releases placements assumed at bind that the watch has not confirmed
    /// within [`ASSUMED_BIND_TTL`]; forgets entries the watch settled. Returns
    /// the UIDs released.
    pub fn expire_assumed(&mut self, now_ms: u64) -> Vec<String> {
        let ttl = u64::try_from(ASSUMED_BIND_TTL.as_millis()).unwrap_or(u64::MAX);
        let state = self.mirror.state();
        let mut expired = Vec::new();
        self.assumed_at.retain(|uid, at| {
            if !state.is_assumed(uid) {
                return false;
            }
            if now_ms.saturating_sub(*at) >= ttl {
                expired.push(uid.clone());
                return false;
            }
            true
        });
        for uid in &expired {
            self.mirror.state_mut().forget_assumed(uid);
        }
        expired
    }

    /// Placements assumed at bind still waiting for the watch.
    pub fn assumed_waiting(&self) -> usize {
        self.assumed_at.len()
    }

    /// Pending pods remembered as shown to the policy.
    pub fn recent_pods(&self) -> usize {
        self.recent.len()
    }

    /// Folds one watch event into the mirror. A pending pod of a served profile
    /// that asks for Phalanx's GPUs is shown to the policy once; bound or
    /// deleted pods are forgotten from the recent-pod set and the assumed set.
    pub fn pod_event(&mut self, event: &Event<Pod>) -> MirrorChange {
        match event {
            Event::Apply(pod) | Event::InitApply(pod) if is_waiting_for_node(pod) => {
                self.remember(pod);
            }
            Event::Apply(pod) | Event::InitApply(pod) | Event::Delete(pod) => {
                let uid = pod_uid(pod);
                self.recent.remove(&uid);
                self.assumed_at.remove(&uid);
            }
            _ => {}
        }
        self.mirror.pod_event(event)
    }

    /// A pod arriving for the first time is shown to policies that learn the
    /// workload online, as the scheduler does once per pod. Only pods the
    /// watch shows are shown: a request body is not evidence of a pod.
    fn remember(&mut self, pod: &Pod) {
        let uid = pod_uid(pod);
        if uid.is_empty() || self.recent.contains_key(&uid) {
            return;
        }
        let scheduler = pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduler_name.as_deref())
            .unwrap_or("default-scheduler");
        if !self.scheduler_names.iter().any(|n| n == scheduler)
            || !handlers::requests_managed_resource(pod)
        {
            return;
        }
        if let Ok(demand) = translate::pod_demand(pod, self.mirror.state().snapshot().models()) {
            self.policy.observe_arrival(&demand);
        }
        self.seq += 1;
        if self.recent.len() >= RECENT_PODS_LIMIT {
            let cutoff = self.seq.saturating_sub((RECENT_PODS_LIMIT / 2) as u64);
            self.recent.retain(|_, seen| *seen > cutoff);
        }
        self.recent.insert(uid, self.seq);
    }
}

enum Input {
    Node(Box<Event<Node>>),
    GpuNode(Box<Event<GpuNode>>),
    Pod(Box<Event<Pod>>),
    Namespace(Box<Event<Namespace>>),
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
    spawn_watch(Api::<Pod>::all(client.clone()), tx.clone(), |e| {
        Input::Pod(Box::new(e))
    });
    // Their labels, for pod affinity terms' namespaceSelector.
    spawn_watch(Api::<Namespace>::all(client.clone()), tx, |e| {
        Input::Namespace(Box::new(e))
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
    let app = routes::router(core, api, metrics, config.extender.max_request_bytes());
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
                apply(&mut core, &metrics, input);
                for _ in 0..4096 {
                    match inputs.try_recv() {
                        Ok(input) => apply(&mut core, &metrics, input),
                        Err(_) => break,
                    }
                }
                health.set_synced(core.mirror.synced());
            }
            _ = tick.tick() => {
                let mut core = core.lock().await;
                let now_ms = phalanx_runtime::clock::unix_millis();
                for uid in core.expire_assumed(now_ms) {
                    tracing::warn!(
                        pod_uid = %uid,
                        ttl_seconds = ASSUMED_BIND_TTL.as_secs(),
                        "released a placement assumed at bind that the watch never confirmed"
                    );
                }
                let stale = core.mirror.expire_telemetry(now_ms);
                metrics.set_stale_gpus(stale as u64);
                metrics.set_nodes(core.mirror.state().node_count() as u64);
                health.set_synced(core.mirror.synced());
                health.heartbeat();
            }
        }
    }
}

fn apply(core: &mut ExtenderCore, metrics: &SchedulerMetrics, input: Input) {
    let now_ms = phalanx_runtime::clock::unix_millis();
    let change = match input {
        Input::Node(event) => core.mirror.node_event(*event, now_ms),
        Input::GpuNode(event) => core.mirror.gpu_node_event(*event, now_ms),
        Input::Pod(event) => core.pod_event(&event),
        Input::Namespace(event) => core.mirror.namespace_event(&event),
    };
    for error in &change.errors {
        tracing::warn!(%error, "cluster state");
    }
    metrics.count_telemetry(&change);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::extender::handlers::tests::{mirror, pod_json};
    use phalanx_engine::PolicyName;

    fn core() -> ExtenderCore {
        let policy = build_policy(
            PolicyName::Phalanx,
            &PolicyConfig {
                seed: 0,
                workload: WorkloadSource::Online,
            },
        );
        ExtenderCore::with_mirror(
            mirror(&[("a", 8)], &[]),
            policy,
            vec!["default-scheduler".to_owned()],
        )
    }

    #[test]
    fn implausible_telemetry_is_ignored_and_counted_as_in_the_scheduler() {
        let mut core = core();
        let metrics = SchedulerMetrics::new();
        let devices: Vec<_> = (0..8)
            .map(|i| {
                json!({"index": i, "uuid": format!("GPU-a-{i}"),
                            "model": "NVIDIA H100 80GB HBM3", "memoryMib": 81920})
            })
            .collect();
        // 3.7e17 MiB used on an 80 GiB GPU, and a utilisation above 100 %.
        let hostile: GpuNode = serde_json::from_value(json!({
            "metadata": {"name": "a"},
            "spec": {"nodeName": "a", "gpus": devices},
            "status": {
                "observedAt": "2026-01-01T00:00:00Z",
                "gpus": [
                    {"uuid": "GPU-a-0", "healthy": true, "memoryUsedMib": 370_000_000_000_000_000u64, "utilizationPercent": 10},
                    {"uuid": "GPU-a-1", "healthy": true, "memoryUsedMib": 10, "utilizationPercent": 250}
                ]
            }
        }))
        .unwrap();
        apply(
            &mut core,
            &metrics,
            Input::GpuNode(Box::new(Event::Apply(hostile))),
        );
        let text = metrics.encode();
        let rejected: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("phalanx_scheduler_telemetry_rejected_total{"))
            .filter(|l| !l.ends_with(" 0"))
            .collect();
        assert_eq!(rejected.len(), 2, "{text}");
    }

    fn pending(name: &str, requests: serde_json::Value) -> Pod {
        serde_json::from_value(pod_json(name, &format!("u-{name}"), requests)).unwrap()
    }

    #[test]
    fn recent_pods_stay_bounded_however_many_pods_arrive() {
        let mut core = core();
        for i in 0..RECENT_PODS_LIMIT + 100 {
            let pod = pending(&format!("p{i}"), json!({"nvidia.com/gpu": "1"}));
            core.pod_event(&Event::Apply(pod));
            assert!(core.recent_pods() <= RECENT_PODS_LIMIT, "after {i} pods");
        }
        assert!(core.recent_pods() > RECENT_PODS_LIMIT / 2);

        // Pods kube-scheduler never sends us are not remembered.
        let mut core = self::core();
        let mut other = pending("other", json!({"nvidia.com/gpu": "1"}));
        other.spec.as_mut().unwrap().scheduler_name = Some("phalanx".into());
        core.pod_event(&Event::Apply(other));
        core.pod_event(&Event::Apply(pending("cpu", json!({"cpu": "1"}))));
        assert_eq!(core.recent_pods(), 0);
        // A pod is remembered once, and forgotten when bound or deleted.
        let gpu = pending("gpu", json!({"nvidia.com/gpu": "1"}));
        core.pod_event(&Event::Apply(gpu.clone()));
        core.pod_event(&Event::Apply(gpu.clone()));
        assert_eq!(core.recent_pods(), 1);
        core.pod_event(&Event::Delete(gpu));
        assert_eq!(core.recent_pods(), 0);
    }

    fn bind(core: &mut ExtenderCore, pod: &Pod) -> String {
        let uid = pod.metadata.uid.clone().unwrap();
        let args = ExtenderBindingArgs {
            pod_name: pod.metadata.name.clone().unwrap(),
            pod_namespace: "ml".into(),
            pod_uid: uid.clone(),
            node: "a".into(),
        };
        core.plan_bind(pod, &args).unwrap();
        uid
    }

    #[test]
    fn placements_assumed_at_bind_expire_unless_the_watch_confirms_them() {
        let mut core = core();
        let ttl = u64::try_from(ASSUMED_BIND_TTL.as_millis()).unwrap();
        let lost = pending("lost", json!({"nvidia.com/gpu": "4"}));
        let seen = pending("seen", json!({"nvidia.com/gpu": "4"}));
        let lost_uid = bind(&mut core, &lost);
        let seen_uid = bind(&mut core, &seen);
        core.bind_written(&lost_uid, 1_000);
        core.bind_written(&seen_uid, 1_000);
        assert_eq!(core.assumed_waiting(), 2);

        // The watch shows one bound: confirmed, no longer waiting.
        let mut bound = seen.clone();
        bound.spec.as_mut().unwrap().node_name = Some("a".into());
        core.pod_event(&Event::Apply(bound));
        assert_eq!(core.assumed_waiting(), 1);
        assert!(core.mirror().is_bound(&seen_uid));

        assert!(core.expire_assumed(1_000 + ttl - 1).is_empty());
        assert!(core.mirror().state().is_assumed(&lost_uid));
        assert_eq!(core.expire_assumed(1_000 + ttl), vec![lost_uid.clone()]);
        assert!(
            !core.mirror().state().holds(&lost_uid),
            "its GPUs are free again"
        );
        assert!(
            core.mirror().state().holds(&seen_uid),
            "the confirmed pod stays"
        );
        assert_eq!(core.assumed_waiting(), 0);

        // A bind that failed (assumption already forgotten) is not tracked.
        let failed = pending("failed", json!({"nvidia.com/gpu": "1"}));
        let failed_uid = bind(&mut core, &failed);
        core.mirror_mut().state_mut().forget_assumed(&failed_uid);
        core.bind_written(&failed_uid, 2_000);
        assert_eq!(core.assumed_waiting(), 0);
    }
}
