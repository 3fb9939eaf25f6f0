//! What the autoscaler's tests need besides the control plane: a real
//! Prometheus server (Debian's `prometheus` package) scraping a test exporter
//! served on loopback, and the `InferenceAutoscaler` CRD installed.
//!
//! The Prometheus binary is `$PHALANX_PROMETHEUS_BIN`, else
//! `/usr/bin/prometheus` (`apt-get install -y prometheus`; `scripts/test-all.sh`
//! installs it). It runs as our own child with a config and a TSDB in a temp
//! directory, scraping every second; the Debian service is never started.
//! Without the binary and without `PHALANX_E2E`, tests print
//! `skipped: <test>: <why>` and pass.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::header;
use axum::routing::get;
use axum::Router;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{ListParams, PostParams};
use kube::{Api, CustomResourceExt};
use phalanx_api::InferenceAutoscaler;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::binaries::{is_executable, or_skip};
use crate::cluster::single_port;
use crate::error::{HarnessError, Result};
use crate::janitor;
use crate::probe;
use crate::process::Component;
use crate::wait;

/// Overrides where the Prometheus binary is taken from.
pub const PROMETHEUS_BIN_ENV: &str = "PHALANX_PROMETHEUS_BIN";
/// Where Debian's package installs it.
pub const PROMETHEUS_DEFAULT_BIN: &str = "/usr/bin/prometheus";

/// The Prometheus binary, if present.
pub fn locate_prometheus() -> std::result::Result<PathBuf, String> {
    let path = std::env::var_os(PROMETHEUS_BIN_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(PROMETHEUS_DEFAULT_BIN));
    if is_executable(&path) {
        Ok(path)
    } else {
        Err(format!(
            "no Prometheus binary at {} (apt-get install -y prometheus, or set {PROMETHEUS_BIN_ENV})",
            path.display()
        ))
    }
}

/// For tests: the binary, or `None` after printing why the test is skipped.
pub fn prometheus_for_test(test: &str) -> Option<PathBuf> {
    or_skip(test, locate_prometheus())
}

/// A `/metrics` endpoint on loopback whose text the test sets at will.
#[derive(Debug)]
pub struct TestExporter {
    addr: SocketAddr,
    text: Arc<Mutex<String>>,
    stop: Option<oneshot::Sender<()>>,
}

impl TestExporter {
    /// Serves `text` (Prometheus text exposition format) on 127.0.0.1.
    pub async fn start(text: &str) -> Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|e| HarnessError::io("binding the test exporter", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| HarnessError::io("the test exporter's address", e))?;
        let shared = Arc::new(Mutex::new(text.to_owned()));
        let served = shared.clone();
        let router = Router::new().route(
            "/metrics",
            get(move || {
                let served = served.clone();
                async move {
                    let body = served.lock().map(|t| t.clone()).unwrap_or_default();
                    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
                }
            }),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self {
            addr,
            text: shared,
            stop: Some(stop),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What the next scrape returns.
    pub fn set(&self, text: &str) {
        if let Ok(mut current) = self.text.lock() {
            *current = text.to_owned();
        }
    }
}

impl Drop for TestExporter {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A Prometheus server of our own, scraping loopback targets every second.
#[derive(Debug)]
pub struct PrometheusServer {
    // Before `dir`: the process stops before its files disappear.
    process: Component,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl PrometheusServer {
    /// Starts `binary` scraping `targets` and waits until it is ready.
    pub async fn start(binary: &Path, targets: &[SocketAddr]) -> Result<Self> {
        janitor::reap_orphans();
        let dir = tempfile::Builder::new()
            .prefix(janitor::DIR_PREFIX)
            .tempdir()
            .map_err(|e| HarnessError::io("creating Prometheus's directory", e))?;
        janitor::record_owner(dir.path())?;
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, scrape_config(targets))
            .map_err(|e| HarnessError::io(format!("writing {}", config_path.display()), e))?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, single_port()?));
        let args = vec![
            format!("--config.file={}", config_path.display()),
            format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            format!("--web.listen-address={addr}"),
            "--storage.tsdb.retention.time=1h".to_owned(),
            "--log.level=warn".to_owned(),
        ];
        let mut process = Component::spawn(
            "prometheus",
            binary,
            &args,
            dir.path().join("prometheus.log"),
        )?;
        janitor::record_group(dir.path(), process.pid())?;
        process
            .wait_ready(Duration::from_secs(60), || async move {
                probe::http_ok(addr, "/-/ready", "").await
            })
            .await?;
        Ok(Self { process, addr, dir })
    }

    /// The base URL of its HTTP API.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }
}

/// A scrape config for `targets`, every second.
pub fn scrape_config(targets: &[SocketAddr]) -> String {
    let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
    format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: test-exporter\n    scrape_interval: 1s\n    scrape_timeout: 1s\n    \
         static_configs:\n      - targets: [{}]\n",
        targets.join(", ")
    )
}

/// Installs the `InferenceAutoscaler` CRD and waits until it is served.
pub async fn install_autoscaler_crd(client: &kube::Client) -> Result<()> {
    let timeout = Duration::from_secs(60);
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    match crds
        .create(&PostParams::default(), &InferenceAutoscaler::crd())
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    let api: Api<InferenceAutoscaler> = Api::all(client.clone());
    let deadline = Instant::now() + timeout;
    while api.list(&ListParams::default().limit(1)).await.is_err() {
        if Instant::now() >= deadline {
            return Err(HarnessError::Timeout {
                what: "the InferenceAutoscaler resource served".to_owned(),
                timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Condition `type_` of an autoscaler's status, if set.
pub fn autoscaler_condition<'a>(
    object: &'a InferenceAutoscaler,
    type_: &str,
) -> Option<&'a Condition> {
    object
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// Waits until autoscaler `name`'s condition `type_` has `status` and
/// `reason` and its message contains `saying`; returns the message.
pub async fn wait_autoscaler_condition(
    api: &Api<InferenceAutoscaler>,
    name: &str,
    type_: &str,
    (status, reason): (&str, &str),
    saying: &str,
    timeout: Duration,
) -> anyhow::Result<String> {
    let what = format!("{name}: {type_}={status} ({reason}) saying {saying:?}");
    wait::until(&what, timeout, || async {
        let object = api.get(name).await?;
        Ok(autoscaler_condition(&object, type_)
            .filter(|c| c.status == status && c.reason == reason && c.message.contains(saying))
            .map(|c| c.message.clone())
            .ok_or_else(|| format!("last status: {:?}", object.status)))
    })
    .await
}

/// (reason, note) of every event about autoscaler `namespace/name`.
pub async fn events_about(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().is_some_and(|r| {
                r.kind.as_deref() == Some("InferenceAutoscaler") && r.name.as_deref() == Some(name)
            })
        })
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect())
}

/// An `InferenceAutoscaler` of Deployment `target`, tuned for tests that wait
/// seconds rather than minutes: windows of 1–2 s, up by `up_pods` per second,
/// down all at once after 2 s, replicas counted ready after 1 s.
pub fn quick_autoscaler(
    name: &str,
    target: &str,
    replicas: std::ops::RangeInclusive<u32>,
    metrics: Vec<phalanx_api::autoscaler::AutoscalerMetric>,
    up_pods: u32,
    activation: Option<phalanx_api::autoscaler::ActivationSpec>,
) -> InferenceAutoscaler {
    use phalanx_api::autoscaler::{
        AutoscalerBehavior, ScaleTargetRef, ScalingPolicy, ScalingPolicyType, ScalingRules,
    };
    let every_second = |window: u32, type_, value| ScalingRules {
        stabilization_window_seconds: Some(window),
        policies: Some(vec![ScalingPolicy {
            type_,
            value,
            period_seconds: 1,
        }]),
    };
    InferenceAutoscaler::new(
        name,
        phalanx_api::InferenceAutoscalerSpec {
            scale_target_ref: ScaleTargetRef {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: target.into(),
            },
            min_replicas: *replicas.start(),
            max_replicas: *replicas.end(),
            metrics,
            behavior: AutoscalerBehavior {
                stable_window_seconds: Some(2),
                panic_window_seconds: Some(1),
                scale_up: Some(every_second(0, ScalingPolicyType::Pods, up_pods)),
                scale_down: Some(every_second(2, ScalingPolicyType::Percent, 100)),
                startup_seconds: Some(1),
                max_sample_age_seconds: Some(30),
                ..AutoscalerBehavior::default()
            },
            activation,
        },
    )
}

/// A Deployment's `spec.replicas` through its `/scale` subresource.
pub async fn scale_replicas(
    deployments: &Api<k8s_openapi::api::apps::v1::Deployment>,
    name: &str,
) -> Result<i32> {
    let scale = deployments.get_scale(name).await?;
    Ok(scale.spec.and_then(|s| s.replicas).unwrap_or(0))
}

/// A control plane for an autoscaler to work on: `nodes` fake GPU nodes of
/// `gpus` A100s each, ready, with kube-scheduler placing the replicas and the
/// `InferenceAutoscaler` CRD installed.
pub async fn autoscaling_cluster(
    binaries: crate::Binaries,
    nodes: usize,
    gpus: u32,
) -> Result<(crate::ControlPlane, kube::Client)> {
    let mut plane = crate::ControlPlane::start(binaries).await?;
    let client = plane.client();
    let spec = crate::GpuNodeSpec::with_gpus(gpus, "A100");
    let created = crate::create_gpu_nodes(&client, "gpu", nodes, &spec).await?;
    crate::wait_fake_nodes_ready(&client, created.len(), Duration::from_secs(60)).await?;
    plane
        .start_kube_scheduler(&crate::SchedulerOptions::default())
        .await?;
    install_autoscaler_crd(&client).await?;
    Ok((plane, client))
}

/// Creates, in `default`, one Deployment per name of `replicas` pods that each
/// ask for one GPU from kube-scheduler and stop at once when deleted.
pub async fn gpu_deployments(
    client: &kube::Client,
    names: &[&str],
    replicas: i32,
) -> Result<Api<k8s_openapi::api::apps::v1::Deployment>> {
    let deployments = Api::namespaced(client.clone(), "default");
    for name in names {
        let deployment =
            crate::PodBuilder::template("default-scheduler", crate::gpu_worker_container(1))
                .termination_grace_seconds(0)
                .deployment(name, replicas);
        deployments
            .create(&PostParams::default(), &deployment)
            .await?;
    }
    Ok(deployments)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrape_config_lists_every_target() {
        let a = SocketAddr::from((Ipv4Addr::LOCALHOST, 9100));
        let b = SocketAddr::from((Ipv4Addr::LOCALHOST, 9101));
        let text = scrape_config(&[a, b]);
        assert!(
            text.contains("targets: ['127.0.0.1:9100', '127.0.0.1:9101']"),
            "{text}"
        );
        assert!(text.contains("scrape_interval: 1s"), "{text}");
    }

    #[tokio::test]
    async fn the_exporter_serves_what_it_is_given() {
        let exporter = TestExporter::start("a 1\n").await.expect("exporter");
        let (status, body) = probe::http_get(exporter.addr(), "/metrics")
            .await
            .expect("get");
        assert_eq!((status, body.as_str()), (200, "a 1\n"));
        exporter.set("b 2\n");
        let (_, body) = probe::http_get(exporter.addr(), "/metrics")
            .await
            .expect("get");
        assert_eq!(body, "b 2\n");
    }
}
