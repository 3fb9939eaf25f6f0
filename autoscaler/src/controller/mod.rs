//! The autoscaler in a cluster (feature `controller`).
//!
//! Pure parts: [`period`] decides one period of one autoscaler from what the
//! loop observed, [`status`] builds the status and the events a period deserves,
//! [`capacity`] turns a pod template and the cluster snapshot into how far a
//! scale-up may go, [`namespace_label`] keeps each autoscaler's queries inside
//! its namespace when configured, [`config`] reads the YAML file. I/O parts: [`prometheus`]
//! reads the metrics, [`target`] reads and patches `/scale`, [`telemetry`] and
//! [`http`] serve the autoscaler's own metrics and probes, [`leader`] holds
//! the Lease, and [`autoscaler_loop`] ties them together. The cluster mirror
//! and pod translation are `phalanx-kube`'s and the placement is
//! `phalanx-engine`'s, the scheduler's own, so the capacity check places a
//! replica exactly as the scheduler would; probes, election and events are
//! `phalanx-runtime`'s.

pub mod autoscaler_loop;
pub mod capacity;
pub mod config;
pub mod http;
pub mod leader;
pub mod namespace_label;
pub mod pending;
pub mod period;
pub mod prometheus;
pub mod serving;
pub mod status;
pub mod target;
pub mod telemetry;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use phalanx_runtime::events::EventRecorder;

use self::autoscaler_loop::{AutoscalerLoop, LoopDeps};
use self::config::AutoscalerConfig;
use self::http::Health;
use self::prometheus::MetricsReader;
use self::telemetry::AutoscalerMetrics;

/// Why the autoscaler could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("prometheus.url: {0}")]
    Prometheus(String),
    #[error("joining leader election: {0}")]
    Election(#[from] kube_lease_manager::LeaseManagerError),
    #[error("cannot listen on http.bindAddress: {0}")]
    Listen(#[from] std::io::Error),
    #[error(transparent)]
    Tls(#[from] phalanx_runtime::tls::TlsError),
}

/// Runs the whole autoscaler (probes and metrics server, election, control
/// loop) until `shutdown` completes.
pub async fn run(
    config: AutoscalerConfig,
    client: Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let config = Arc::new(config);
    let reader = MetricsReader::new(&config.prometheus.url, config.prometheus_timeout())
        .map_err(StartError::Prometheus)?;
    let metrics = Arc::new(AutoscalerMetrics::new());
    // A loop silent for several periods is stuck; the kubelet restarts it.
    let stall_limit = (config.control_period() * 4).max(Duration::from_secs(30));
    let health = Arc::new(Health::new(stall_limit).named("control loop"));
    let security = http::ServerSecurity::from_config(&config.http, &client)?;
    let listener = tokio::net::TcpListener::bind(config.http.bind_address).await?;
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let router = http::router(health.clone(), metrics.clone());
    tokio::spawn(async move {
        let stopped = async move {
            let _ = http_stopped.await;
        };
        if let Err(error) = http::serve_secured(listener, router, security, stopped).await {
            tracing::error!(%error, "health and metrics server stopped");
        }
    });
    let identity = config.leader_election.resolved_identity();
    let leadership = leader::join(client.clone(), &config.leader_election, &identity).await?;
    let events = EventRecorder::spawn(client.clone(), "phalanx-autoscaler".to_owned(), identity);
    tracing::info!(
        prometheus = %config.prometheus.url,
        period_seconds = config.control_period_seconds,
        "starting"
    );
    let deps = LoopDeps {
        client,
        config,
        metrics,
        health,
        events,
        reader,
        is_leader: leadership.is_leader,
        fence: leadership.fence,
    };
    AutoscalerLoop::new(deps).run(shutdown).await;
    let _ = stop_http.send(());
    Ok(())
}
