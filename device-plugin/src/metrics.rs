//! Prometheus metrics (`/metrics`) and probes (`/healthz`, `/readyz`), on the
//! runtime's server: liveness fails when no telemetry sample has been taken
//! for the stall limit (the sampler is stuck), readiness waits for the first.
//!
//! Per-GPU gauges follow Prometheus naming (base units, `_bytes`, `_ratio`,
//! `_celsius`, `_watts`), labelled `gpu` (NVML index), `uuid` and `model`:
//!
//! | metric | meaning |
//! |---|---|
//! | `phalanx_gpu_memory_used_bytes` | device memory in use |
//! | `phalanx_gpu_memory_total_bytes` | device memory |
//! | `phalanx_gpu_utilization_ratio` | share of time a kernel ran (0–1) |
//! | `phalanx_gpu_memory_utilization_ratio` | share of time memory was read or written |
//! | `phalanx_gpu_temperature_celsius` | core temperature |
//! | `phalanx_gpu_power_watts` | power draw |
//! | `phalanx_gpu_healthy` | 1 healthy, 0 unhealthy |
//! | `phalanx_gpu_xid_errors_total` | critical XID events seen (label `xid`) |
//!
//! and for the plugin itself `phalanx_device_plugin_registrations_total`,
//! `…_allocations_total`, `…_allocation_failures_total` (label `reason`),
//! `…_gpunode_writes_total` (label `reason`: `change` or `heartbeat`),
//! `…_gpunode_write_errors_total` and `…_gpunode_writes_rate_limited_total`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use phalanx_runtime::http::{Health, ServerSecurity};
use phalanx_runtime::metrics::MetricsText;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::backend::{GpuDevice, GpuTelemetry};

const MIB: f64 = 1024.0 * 1024.0;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GpuLabels {
    pub gpu: String,
    pub uuid: String,
    pub model: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct XidLabels {
    gpu: String,
    uuid: String,
    xid: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    resource: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    resource: String,
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    reason: String,
}

type GaugeF = Gauge<f64, AtomicU64>;

#[derive(Debug)]
struct Inner {
    registry: Registry,
    memory_used: Family<GpuLabels, GaugeF>,
    memory_total: Family<GpuLabels, GaugeF>,
    utilization: Family<GpuLabels, GaugeF>,
    memory_utilization: Family<GpuLabels, GaugeF>,
    temperature: Family<GpuLabels, GaugeF>,
    power: Family<GpuLabels, GaugeF>,
    healthy: Family<GpuLabels, GaugeF>,
    xids: Family<XidLabels, Counter>,
    registrations: Family<ResourceLabels, Counter>,
    allocations: Family<ResourceLabels, Counter>,
    allocation_failures: Family<ReasonLabels, Counter>,
    writes: Family<WriteLabels, Counter>,
    write_errors: Counter,
    rate_limited: Counter,
    started: Instant,
    last_sample_ms: AtomicU64,
    /// Beaten by every sample; serves the probes.
    health: Arc<Health>,
}

/// Every metric of the process; clones share them.
#[derive(Debug, Clone)]
pub struct PluginMetrics {
    inner: Arc<Inner>,
}

impl Default for PluginMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Without a configured period: ten one-second samples.
const DEFAULT_STALL_LIMIT: Duration = Duration::from_secs(10);

impl PluginMetrics {
    pub fn new() -> Self {
        Self::with_stall_limit(DEFAULT_STALL_LIMIT)
    }

    /// Metrics whose liveness fails after `stall_limit` without a sample.
    pub fn with_stall_limit(stall_limit: Duration) -> Self {
        let mut registry = Registry::with_prefix("phalanx");
        let inner = Inner {
            memory_used: Family::default(),
            memory_total: Family::default(),
            utilization: Family::default(),
            memory_utilization: Family::default(),
            temperature: Family::default(),
            power: Family::default(),
            healthy: Family::default(),
            xids: Family::default(),
            registrations: Family::default(),
            allocations: Family::default(),
            allocation_failures: Family::default(),
            writes: Family::default(),
            write_errors: Counter::default(),
            rate_limited: Counter::default(),
            started: Instant::now(),
            last_sample_ms: AtomicU64::new(0),
            health: Arc::new(Health::new(stall_limit).named("GPU telemetry sampler")),
            registry: Registry::default(),
        };
        registry.register(
            "gpu_memory_used_bytes",
            "GPU device memory in use",
            inner.memory_used.clone(),
        );
        registry.register(
            "gpu_memory_total_bytes",
            "GPU device memory",
            inner.memory_total.clone(),
        );
        registry.register(
            "gpu_utilization_ratio",
            "Share of the last sample period a kernel ran on the GPU (0-1)",
            inner.utilization.clone(),
        );
        registry.register(
            "gpu_memory_utilization_ratio",
            "Share of the last sample period device memory was read or written (0-1)",
            inner.memory_utilization.clone(),
        );
        registry.register(
            "gpu_temperature_celsius",
            "GPU core temperature",
            inner.temperature.clone(),
        );
        registry.register("gpu_power_watts", "GPU power draw", inner.power.clone());
        registry.register(
            "gpu_healthy",
            "1 when the GPU is healthy, 0 after a critical XID",
            inner.healthy.clone(),
        );
        registry.register(
            "gpu_xid_errors",
            "Critical XID events seen",
            inner.xids.clone(),
        );
        registry.register(
            "device_plugin_registrations",
            "Successful registrations with kubelet",
            inner.registrations.clone(),
        );
        registry.register(
            "device_plugin_allocations",
            "Containers given devices",
            inner.allocations.clone(),
        );
        registry.register(
            "device_plugin_allocation_failures",
            "Allocation or preferred-allocation requests refused",
            inner.allocation_failures.clone(),
        );
        registry.register(
            "device_plugin_gpunode_writes",
            "GpuNode status writes",
            inner.writes.clone(),
        );
        registry.register(
            "device_plugin_gpunode_write_errors",
            "GpuNode writes that failed",
            inner.write_errors.clone(),
        );
        registry.register(
            "device_plugin_gpunode_writes_rate_limited",
            "GpuNode writes postponed by the rate limit",
            inner.rate_limited.clone(),
        );
        PluginMetrics {
            inner: Arc::new(Inner { registry, ..inner }),
        }
    }

    pub fn labels(gpu: &GpuDevice) -> GpuLabels {
        GpuLabels {
            gpu: gpu.index.to_string(),
            uuid: gpu.uuid.clone(),
            model: gpu.model.clone(),
        }
    }

    /// Records one sample of every GPU.
    pub fn record_sample(
        &self,
        gpus: &[GpuDevice],
        samples: &[GpuTelemetry],
        healthy: impl Fn(&str) -> bool,
    ) {
        let i = &self.inner;
        for gpu in gpus {
            let labels = Self::labels(gpu);
            i.healthy
                .get_or_create(&labels)
                .set(if healthy(&gpu.uuid) { 1.0 } else { 0.0 });
            let Some(s) = samples.iter().find(|s| s.uuid == gpu.uuid) else {
                continue;
            };
            i.memory_used
                .get_or_create(&labels)
                .set(s.memory_used_mib as f64 * MIB);
            i.memory_total
                .get_or_create(&labels)
                .set(s.memory_total_mib as f64 * MIB);
            i.utilization
                .get_or_create(&labels)
                .set(f64::from(s.utilization_gpu_percent) / 100.0);
            i.memory_utilization
                .get_or_create(&labels)
                .set(f64::from(s.utilization_memory_percent) / 100.0);
            if let Some(t) = s.temperature_celsius {
                i.temperature.get_or_create(&labels).set(f64::from(t));
            }
            if let Some(p) = s.power_watts {
                i.power.get_or_create(&labels).set(p);
            }
        }
        let ms = u64::try_from(i.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        i.last_sample_ms.store(ms.max(1), Ordering::Relaxed);
        i.health.heartbeat();
        i.health.set_synced(true);
    }

    /// The probes' state: alive while samples keep coming, ready after the first.
    pub fn health(&self) -> Arc<Health> {
        Arc::clone(&self.inner.health)
    }

    pub fn xid(&self, gpu_index: Option<u32>, uuid: &str, xid: Option<u64>) {
        self.inner
            .xids
            .get_or_create(&XidLabels {
                gpu: gpu_index.map(|i| i.to_string()).unwrap_or_default(),
                uuid: uuid.to_owned(),
                xid: xid
                    .map(|x| x.to_string())
                    .unwrap_or_else(|| "unknown".into()),
            })
            .inc();
    }

    pub fn registered(&self, resource: &str) {
        self.inner
            .registrations
            .get_or_create(&ResourceLabels {
                resource: resource.to_owned(),
            })
            .inc();
    }

    pub fn allocated(&self, resource: &str) {
        self.inner
            .allocations
            .get_or_create(&ResourceLabels {
                resource: resource.to_owned(),
            })
            .inc();
    }

    pub fn allocation_failed(&self, resource: &str, reason: &str) {
        self.inner
            .allocation_failures
            .get_or_create(&ReasonLabels {
                resource: resource.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn gpunode_written(&self, reason: &str) {
        self.inner
            .writes
            .get_or_create(&WriteLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn gpunode_write_failed(&self) {
        self.inner.write_errors.inc();
    }

    pub fn gpunode_write_rate_limited(&self) {
        self.inner.rate_limited.inc();
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        phalanx_runtime::metrics::encode(&self.inner.registry)
    }

    /// Time since the last telemetry sample, `None` before the first.
    pub fn sample_age(&self) -> Option<Duration> {
        let at = self.inner.last_sample_ms.load(Ordering::Relaxed);
        (at > 0).then(|| {
            self.inner
                .started
                .elapsed()
                .saturating_sub(Duration::from_millis(at))
        })
    }
}

impl MetricsText for PluginMetrics {
    fn encode(&self) -> String {
        PluginMetrics::encode(self)
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `address` until `stop` turns
/// true, secured as `security` says. Returns the bound address (port 0 picks one).
pub async fn serve_http(
    address: SocketAddr,
    metrics: PluginMetrics,
    security: ServerSecurity,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    let router = phalanx_runtime::http::router(metrics.health(), Arc::new(metrics));
    let stopped = async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    };
    let task = tokio::spawn(phalanx_runtime::http::serve_secured(
        listener, router, security, stopped,
    ));
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::FakeNode;

    #[test]
    fn gauges_use_conventional_names_and_units() {
        let node = FakeNode::uniform(1, "NVIDIA H100 80GB HBM3", 81_559);
        let gpus = vec![node.gpus[0].device.clone()];
        let metrics = PluginMetrics::new();
        metrics.record_sample(
            &gpus,
            &[GpuTelemetry {
                uuid: gpus[0].uuid.clone(),
                memory_used_mib: 1024,
                memory_total_mib: 81_559,
                utilization_gpu_percent: 50,
                utilization_memory_percent: 10,
                temperature_celsius: Some(40),
                power_watts: Some(70.5),
            }],
            |_| false,
        );
        metrics.xid(Some(0), &gpus[0].uuid, Some(79));
        metrics.gpunode_written("heartbeat");
        let text = metrics.encode();
        for expected in [
            "phalanx_gpu_memory_used_bytes{gpu=\"0\",uuid=\"GPU-fake-0000\",model=\"NVIDIA H100 80GB HBM3\"} 1073741824",
            "phalanx_gpu_utilization_ratio{gpu=\"0\",uuid=\"GPU-fake-0000\",model=\"NVIDIA H100 80GB HBM3\"} 0.5",
            "phalanx_gpu_healthy{gpu=\"0\",uuid=\"GPU-fake-0000\",model=\"NVIDIA H100 80GB HBM3\"} 0.0",
            "phalanx_gpu_power_watts{",
            "phalanx_gpu_xid_errors_total{gpu=\"0\",uuid=\"GPU-fake-0000\",xid=\"79\"} 1",
            "phalanx_device_plugin_gpunode_writes_total{reason=\"heartbeat\"} 1",
        ] {
            assert!(text.contains(expected), "missing {expected} in\n{text}");
        }
        assert!(metrics.sample_age().is_some());
    }
}
