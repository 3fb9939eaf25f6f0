//! What the autoscaler's end-to-end tests share and the harness library
//! cannot hold: the autoscaler itself is a dev-dependency of this crate, so
//! starting it in-process lives here, included by each test file that needs
//! it (`mod common;`).

use anyhow::Context as _;
use phalanx_autoscaler::controller::config::{AutoscalerConfig, ConfigFile};

/// The Lease the in-process replicas share.
pub const LEASE: &str = "phalanx-autoscaler";

pub type Running = tokio::task::JoinHandle<Result<(), phalanx_autoscaler::controller::StartError>>;

/// Starts one autoscaler replica in this process (1 s control period, the
/// Lease in `default`); send on the returned channel to stop it.
pub fn start_autoscaler(
    client: &kube::Client,
    prometheus: &str,
    identity: &str,
) -> anyhow::Result<(tokio::sync::oneshot::Sender<()>, Running)> {
    let config = AutoscalerConfig::from_yaml(
        &serde_json::json!({
            "controlPeriodSeconds": 1,
            "prometheus": { "url": prometheus, "timeoutSeconds": 2 },
            "leaderElection": {
                "enabled": true,
                "leaseName": LEASE,
                "leaseNamespace": "default",
                "leaseDurationSeconds": 4,
                "renewGraceSeconds": 2,
                "identity": identity,
            },
            "http": { "bindAddress": "127.0.0.1:0" },
            "logging": { "format": "text" },
        })
        .to_string(),
        "test config",
    )
    .context("the test's autoscaler config")?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(phalanx_autoscaler::controller::run(
        config,
        client.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    Ok((stop, running))
}
