//! Samples the GPUs every `sample_interval`, keeps `/metrics` current, and
//! keeps this node's `GpuNode` current: the spec (inventory) once, the status
//! through the status subresource whenever it changed meaningfully or the last
//! write is `heartbeat` old. Writes pass a `governor` rate limit, so a flapping
//! GPU cannot flood the API server; a postponed write happens on a later tick.
//!
//! Freshness: with the defaults (1 s samples, 4 s heartbeat) `observedAt` is at
//! most about 4 s old whenever the API server has it, below the 5 s the design
//! asks for and well inside the scheduler's 10 s limit; a change reaches it
//! within about a sample interval. Measured on a real control plane by
//! `cargo run --release -p phalanx-e2e --bin telemetry_freshness`.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use governor::{Quota, RateLimiter};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::Api;
use phalanx_api::{GpuHolder, GpuNode, GpuNodeSpec, GpuNodeStatus};
use tokio::sync::watch;

use super::holders::gpu_holders;
use super::status::{gpu_node_spec, gpu_node_status, write_reason};
use crate::backend::{GpuBackend, GpuInventory};
use crate::health::HealthReport;
use crate::kubelet::pod_resources;
use crate::metrics::PluginMetrics;
use crate::resources::ResourceSpec;

#[derive(Debug, Clone)]
pub struct PublisherConfig {
    pub node_name: String,
    pub sample_interval: Duration,
    pub heartbeat: Duration,
    pub max_writes_per_second: NonZeroU32,
    /// Kubelet's PodResources socket, for the holders of each GPU.
    pub pod_resources_socket: Option<PathBuf>,
    /// The advertised resources (to read device IDs back as GPUs).
    pub resources: Vec<ResourceSpec>,
}

/// The sampler and writer. Without a client it only keeps `/metrics` current.
pub struct TelemetryPublisher {
    config: PublisherConfig,
    backend: Box<dyn GpuBackend>,
    inventory: GpuInventory,
    health: watch::Receiver<HealthReport>,
    client: Option<kube::Client>,
    metrics: PluginMetrics,
}

impl std::fmt::Debug for TelemetryPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryPublisher")
            .field("config", &self.config)
            .field("backend", &self.backend.name())
            .finish_non_exhaustive()
    }
}

impl TelemetryPublisher {
    pub fn new(
        config: PublisherConfig,
        backend: Box<dyn GpuBackend>,
        inventory: GpuInventory,
        health: watch::Receiver<HealthReport>,
        client: Option<kube::Client>,
        metrics: PluginMetrics,
    ) -> Self {
        TelemetryPublisher {
            config,
            backend,
            inventory,
            health,
            client,
            metrics,
        }
    }

    /// Runs until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let burst = self
            .config
            .max_writes_per_second
            .saturating_mul(NonZeroU32::MIN.saturating_add(1));
        let limiter = RateLimiter::direct(
            Quota::per_second(self.config.max_writes_per_second).allow_burst(burst),
        );
        let mut ticker = tokio::time::interval(self.config.sample_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let spec = gpu_node_spec(&self.config.node_name, &self.inventory);
        let mut spec_written = false;
        let mut last_written: Option<(GpuNodeStatus, Instant)> = None;
        let mut holders: BTreeMap<String, Vec<GpuHolder>> = BTreeMap::new();
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.changed() => {}
            }
            // A dropped sender counts as stop, or `changed()` would spin.
            if *stop.borrow() || stop.has_changed().is_err() {
                return;
            }
            let samples = match self.backend.telemetry() {
                Ok(samples) => samples,
                Err(e) => {
                    tracing::warn!(error = %e, "GPU telemetry failed");
                    Vec::new()
                }
            };
            let health = self.health.borrow().clone();
            self.metrics
                .record_sample(&self.inventory.gpus, &samples, |uuid| {
                    health.is_healthy(uuid)
                });
            if let Some(socket) = &self.config.pod_resources_socket {
                match pod_resources::list(socket, Duration::from_secs(2)).await {
                    Ok(response) => holders = gpu_holders(&response, &self.config.resources),
                    // Keep the last known holders: kubelet restarting is no reason
                    // to tell the scheduler the GPUs were freed.
                    Err(why) => tracing::debug!(%why, "PodResources unavailable"),
                }
            }
            let Some(client) = &self.client else {
                continue;
            };
            // The heartbeat counts from when this sample was taken, not from
            // when its write finished: a slow write must not age what the
            // scheduler reads beyond the heartbeat.
            let sampled = Instant::now();
            let status = gpu_node_status(
                &self.inventory,
                &samples,
                &health,
                &holders,
                MicroTime(Timestamp::now()),
            );
            let since = last_written
                .as_ref()
                .map_or(Duration::MAX, |(_, at)| at.elapsed());
            // Samples come every sample_interval, a little late or early:
            // a heartbeat due at exactly `heartbeat` would often slip to the
            // sample after, and the published state age by a whole interval
            // more. Due half an interval early, it goes out on time.
            let heartbeat_due = self
                .config
                .heartbeat
                .saturating_sub(self.config.sample_interval / 2);
            let Some(reason) = write_reason(
                last_written.as_ref().map(|(s, _)| s),
                &status,
                &self.inventory,
                since,
                heartbeat_due,
            ) else {
                continue;
            };
            if limiter.check().is_err() {
                self.metrics.gpunode_write_rate_limited();
                continue;
            }
            if !spec_written {
                match ensure_gpu_node(client, &self.config.node_name, &spec).await {
                    Ok(()) => spec_written = true,
                    Err(e) => {
                        tracing::warn!(error = %e, node = %self.config.node_name, "writing GpuNode spec failed");
                        self.metrics.gpunode_write_failed();
                        continue;
                    }
                }
            }
            match write_status(client, &self.config.node_name, &status).await {
                Ok(()) => {
                    self.metrics.gpunode_written(reason.as_str());
                    last_written = Some((status, sampled));
                }
                Err(e) => {
                    if matches!(&e, kube::Error::Api(s) if s.code == 404) {
                        // Someone deleted it: create it again next time.
                        spec_written = false;
                    }
                    tracing::warn!(error = %e, node = %self.config.node_name, "writing GpuNode status failed");
                    self.metrics.gpunode_write_failed();
                }
            }
        }
    }
}

/// Creates the `GpuNode` (owned by its Node, so it goes when the Node does), or
/// brings an existing one's spec up to date.
pub async fn ensure_gpu_node(
    client: &kube::Client,
    node_name: &str,
    spec: &GpuNodeSpec,
) -> Result<(), kube::Error> {
    let api: Api<GpuNode> = Api::all(client.clone());
    match api.get_opt(node_name).await? {
        Some(existing) if existing.spec == *spec => Ok(()),
        Some(mut existing) => {
            existing.spec = spec.clone();
            api.replace(node_name, &PostParams::default(), &existing)
                .await?;
            tracing::info!(node = node_name, "GpuNode inventory updated");
            Ok(())
        }
        None => {
            let owner = match Api::<Node>::all(client.clone()).get_opt(node_name).await {
                Ok(Some(node)) => node.metadata.uid.map(|uid| OwnerReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: node_name.to_owned(),
                    uid,
                    ..OwnerReference::default()
                }),
                // Without read access to Nodes the object simply has no owner.
                _ => None,
            };
            let object = GpuNode {
                metadata: ObjectMeta {
                    name: Some(node_name.to_owned()),
                    owner_references: owner.map(|o| vec![o]),
                    ..ObjectMeta::default()
                },
                spec: spec.clone(),
                status: None,
            };
            match api.create(&PostParams::default(), &object).await {
                Ok(_) => {
                    tracing::info!(node = node_name, gpus = spec.gpus.len(), "GpuNode created");
                    Ok(())
                }
                // Created meanwhile (a previous instance): bring its spec up to date.
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    let mut existing = api.get(node_name).await?;
                    if existing.spec != *spec {
                        existing.spec = spec.clone();
                        api.replace(node_name, &PostParams::default(), &existing)
                            .await?;
                    }
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
    }
}

/// Replaces the status (a JSON merge patch replaces the `gpus` list whole).
pub async fn write_status(
    client: &kube::Client,
    node_name: &str,
    status: &GpuNodeStatus,
) -> Result<(), kube::Error> {
    let api: Api<GpuNode> = Api::all(client.clone());
    let patch = serde_json::json!({ "status": status });
    api.patch_status(node_name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}
