//! Phalanx's own scheduler on the harness's control plane: finding the
//! `phalanx-scheduler` binary, installing the CRDs it reads, and starting one
//! or more replicas (leader election) that can be killed outright.
//!
//! The binary is not built by `cargo test -p phalanx-e2e` (a test cannot depend
//! on another package's binary); build it first:
//!
//! ```text
//! cargo build -p phalanx-scheduler            # tests
//! cargo build --release -p phalanx-scheduler  # the throughput benchmark
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Api, CustomResourceExt};
use phalanx_api::{GpuNode, PodGroup, Queue, SCHEDULER_NAME};

use crate::binaries::{binary_for_test, locate_workspace_binary};
use crate::cluster::{single_port, spawn_in_with_env, ControlPlane, ControlPlaneOptions};
use crate::error::{HarnessError, Result};
use crate::probe;

/// Overrides where the `phalanx-scheduler` binary is taken from.
pub const BIN_ENV: &str = "PHALANX_SCHEDULER_BIN";
/// The binary's file name in a cargo target directory.
pub const BIN_NAME: &str = "phalanx-scheduler";
/// Default Lease the replicas compete for (the scheduler's own default).
pub const DEFAULT_LEASE_NAME: &str = "phalanx-scheduler";
/// Default namespace of that Lease.
pub const DEFAULT_LEASE_NAMESPACE: &str = "kube-system";

/// Leader-election settings of one replica.
#[derive(Debug, Clone)]
pub struct LeaderElectionOptions {
    pub lease_name: String,
    pub lease_namespace: String,
    pub lease_duration_seconds: u32,
    /// `renewGraceSeconds`: renew this long before the Lease expires; must be
    /// shorter than the duration. `None`: half the duration, at most 5 (the
    /// scheduler's default), at least 1.
    pub renew_grace_seconds: Option<u32>,
}

impl Default for LeaderElectionOptions {
    fn default() -> Self {
        Self {
            lease_name: DEFAULT_LEASE_NAME.to_owned(),
            lease_namespace: DEFAULT_LEASE_NAMESPACE.to_owned(),
            lease_duration_seconds: 15,
            renew_grace_seconds: None,
        }
    }
}

/// How to run one `phalanx-scheduler run` replica.
#[derive(Debug, Clone)]
pub struct PhalanxOptions {
    /// `schedulerName`; pods opt in with the same name.
    pub scheduler_name: String,
    /// `binding.qps`: the scheduler's API client rate.
    pub qps: u32,
    /// `binding.burst`.
    pub burst: u32,
    /// `binding.concurrency`, when set.
    pub concurrency: Option<u32>,
    /// `leaderElection`; `None` disables it (a single replica).
    pub leader_election: Option<LeaderElectionOptions>,
    /// `leaderElection.identity`; defaults to `phalanx-<n>` for the n-th replica.
    pub identity: Option<String>,
    /// `gangs.defaultTimeoutSeconds`, when set.
    pub gang_timeout_seconds: Option<u32>,
    /// `logging.level` (an EnvFilter directive).
    pub log_level: String,
    /// Merged into the generated config last (objects merge key by key), for
    /// settings this struct does not name.
    pub extra: serde_json::Value,
    /// Path probed until it answers 200: `/readyz` (watches synced) by
    /// default; `/healthz` for a standby replica that may not sync before it
    /// leads.
    pub ready_path: String,
    /// Deadline for the readiness probe.
    pub timeout: Duration,
    /// The binary; [`locate_phalanx_scheduler`] when `None`.
    pub binary: Option<PathBuf>,
    /// Extra environment variables (test hooks such as
    /// `PHALANX_FAULT_EXIT_AFTER_GANG_BINDINGS`).
    pub env: Vec<(String, String)>,
}

impl Default for PhalanxOptions {
    fn default() -> Self {
        Self {
            scheduler_name: SCHEDULER_NAME.to_owned(),
            qps: 5000,
            burst: 10000,
            concurrency: None,
            leader_election: None,
            identity: None,
            gang_timeout_seconds: None,
            log_level: "info".to_owned(),
            extra: serde_json::Value::Null,
            ready_path: "/readyz".to_owned(),
            timeout: Duration::from_secs(60),
            binary: None,
            env: Vec::new(),
        }
    }
}

/// One started replica.
#[derive(Debug, Clone)]
pub struct PhalanxHandle {
    /// Component name (`phalanx-scheduler-<n>`), for [`ControlPlane::log_tail`].
    pub name: String,
    /// Its leader-election identity (the Lease's `holderIdentity` while it leads).
    pub identity: String,
    pub pid: u32,
    /// Where it serves /healthz, /readyz and /metrics (plain HTTP).
    pub http: SocketAddr,
    pub config: PathBuf,
    pub log: PathBuf,
}

impl PhalanxHandle {
    /// Whether /readyz answers 200 right now.
    pub async fn is_ready(&self) -> bool {
        probe::http_ok(self.http, "/readyz", "").await.is_ok()
    }

    /// The Prometheus text of /metrics.
    pub async fn metrics(&self) -> std::result::Result<String, String> {
        probe::http_get(self.http, "/metrics")
            .await
            .and_then(|(status, body)| {
                if status == 200 {
                    Ok(body)
                } else {
                    Err(format!("GET /metrics: status {status}"))
                }
            })
    }
}

/// The `phalanx-scheduler` binary: `$PHALANX_SCHEDULER_BIN`, else the one in
/// the cargo target directory this executable runs from (same profile
/// first), else `$CARGO_TARGET_DIR` or the workspace's `target/`. One in a
/// target directory of this workspace that is older than the scheduler's
/// sources is refused ([`crate::freshness`]).
pub fn locate_phalanx_scheduler() -> Result<PathBuf> {
    locate_workspace_binary(BIN_NAME, BIN_ENV)
}

/// For tests: the binary, or `None` after printing why the test is skipped;
/// a stale binary fails the test (see [`binary_for_test`]).
pub fn phalanx_scheduler_for_test(test: &str) -> Option<PathBuf> {
    binary_for_test(test, locate_phalanx_scheduler())
}

/// `backoff` settings for tests that watch the scheduler decide again and
/// again: an unschedulable pod or gang is looked at every second, so a test
/// sees the next decision (a gang placed once room appears, a status kept)
/// within seconds. For [`PhalanxOptions::extra`].
pub fn quick_retry() -> serde_json::Value {
    serde_json::json!({
        "backoff": {
            "initialSeconds": 0.5,
            "maxSeconds": 1.0,
            "maxUnschedulableSeconds": 1.0,
        }
    })
}

/// For a test of the scheduler: a control plane with the Phalanx CRDs and
/// the `phalanx-scheduler` binary to run on it, or `None` after printing why
/// the test is skipped (see [`binary_for_test`]).
pub async fn plane_with_scheduler(test: &str) -> Result<Option<(ControlPlane, PathBuf)>> {
    plane_with_scheduler_and(test, ControlPlaneOptions::default()).await
}

/// [`plane_with_scheduler`] with a control plane started as `options` say
/// (extra API server flags, say).
pub async fn plane_with_scheduler_and(
    test: &str,
    options: ControlPlaneOptions,
) -> Result<Option<(ControlPlane, PathBuf)>> {
    let Some(binaries) = crate::Binaries::for_test(test) else {
        return Ok(None);
    };
    let Some(scheduler) = phalanx_scheduler_for_test(test) else {
        return Ok(None);
    };
    let plane = ControlPlane::start_with(binaries, options).await?;
    install_phalanx_crds(&plane.client()).await?;
    Ok(Some((plane, scheduler)))
}

/// The config file for `options`, serving HTTP on `http`.
pub fn phalanx_config(
    options: &PhalanxOptions,
    identity: &str,
    http: SocketAddr,
) -> serde_json::Value {
    let mut binding = serde_json::json!({ "qps": options.qps, "burst": options.burst });
    if let Some(concurrency) = options.concurrency {
        binding["concurrency"] = concurrency.into();
    }
    let leader_election = match &options.leader_election {
        Some(le) => serde_json::json!({
            "enabled": true,
            "leaseName": le.lease_name,
            "leaseNamespace": le.lease_namespace,
            "leaseDurationSeconds": le.lease_duration_seconds,
            "renewGraceSeconds": le
                .renew_grace_seconds
                .unwrap_or_else(|| (le.lease_duration_seconds / 2).clamp(1, 5)),
            "identity": identity,
        }),
        None => serde_json::json!({ "enabled": false, "identity": identity }),
    };
    let mut config = serde_json::json!({
        "schedulerName": options.scheduler_name,
        "binding": binding,
        "leaderElection": leader_election,
        "http": { "bindAddress": http.to_string() },
        "logging": { "format": "text", "level": options.log_level },
    });
    if let Some(timeout) = options.gang_timeout_seconds {
        config["gangs"] = serde_json::json!({ "defaultTimeoutSeconds": timeout });
    }
    merge(&mut config, &options.extra);
    config
}

/// Merges `extra` into `base`: objects key by key, anything else replaces.
fn merge(base: &mut serde_json::Value, extra: &serde_json::Value) {
    match (base, extra) {
        (_, serde_json::Value::Null) => {}
        (serde_json::Value::Object(base), serde_json::Value::Object(extra)) => {
            for (key, value) in extra {
                merge(
                    base.entry(key.clone()).or_insert(serde_json::Value::Null),
                    value,
                );
            }
        }
        (base, extra) => *base = extra.clone(),
    }
}

impl ControlPlane {
    /// Starts a `phalanx-scheduler run` replica with the admin kubeconfig and
    /// waits until `options.ready_path` answers 200. Call it again for more
    /// replicas (with leader election on). The CRDs must be installed first
    /// ([`install_phalanx_crds`]).
    pub async fn start_phalanx_scheduler(
        &mut self,
        options: &PhalanxOptions,
    ) -> Result<PhalanxHandle> {
        self.spawn_phalanx(options, "run", serde_json::Value::Null)
            .await
    }

    /// Starts `phalanx-scheduler extender` (kube-scheduler's HTTP extender)
    /// with the admin kubeconfig, waits until its watches have synced, and
    /// returns it with the address kube-scheduler should call.
    pub async fn start_phalanx_extender(
        &mut self,
        options: &PhalanxOptions,
    ) -> Result<(PhalanxHandle, SocketAddr)> {
        let extender = SocketAddr::from((Ipv4Addr::LOCALHOST, single_port()?));
        let extra = serde_json::json!({ "extender": { "bindAddress": extender.to_string() } });
        let handle = self.spawn_phalanx(options, "extender", extra).await?;
        Ok((handle, extender))
    }

    async fn spawn_phalanx(
        &mut self,
        options: &PhalanxOptions,
        subcommand: &str,
        mode_config: serde_json::Value,
    ) -> Result<PhalanxHandle> {
        let path = options.ready_path.clone();
        self.spawn_phalanx_probed(options, subcommand, mode_config, move |http| {
            let path = path.clone();
            async move { probe::http_ok(http, &path, "").await }
        })
        .await
    }

    /// Starts a replica with `mode_config` merged into its config and waits
    /// until `ready` (given its probe and metrics address) succeeds, for
    /// replicas whose port is not plain HTTP.
    pub(crate) async fn spawn_phalanx_probed<P, F>(
        &mut self,
        options: &PhalanxOptions,
        subcommand: &str,
        mode_config: serde_json::Value,
        ready: P,
    ) -> Result<PhalanxHandle>
    where
        P: Fn(SocketAddr) -> F,
        F: std::future::Future<Output = std::result::Result<(), String>>,
    {
        let program = match &options.binary {
            Some(path) => {
                crate::freshness::ensure_fresh_if_built_here(path)?;
                path.clone()
            }
            None => locate_phalanx_scheduler()?,
        };
        let n = self
            .components
            .iter()
            .filter(|c| c.name().starts_with("phalanx-scheduler-"))
            .count();
        let name = format!("phalanx-scheduler-{n}");
        let identity = options
            .identity
            .clone()
            .unwrap_or_else(|| format!("phalanx-{n}"));
        if let Some(le) = &options.leader_election {
            ensure_namespace(&self.client(), &le.lease_namespace).await?;
        }
        let http = SocketAddr::from((Ipv4Addr::LOCALHOST, single_port()?));
        let config_path = self.dir().join(format!("{name}.yaml"));
        // JSON is YAML: the scheduler's YAML loader reads it as is.
        let mut config = phalanx_config(options, &identity, http);
        merge(&mut config, &mode_config);
        let text = serde_json::to_string_pretty(&config).unwrap_or_default();
        std::fs::write(&config_path, text)
            .map_err(|e| HarnessError::io(format!("writing {}", config_path.display()), e))?;
        let args = vec![
            subcommand.to_owned(),
            "--config".to_owned(),
            config_path.display().to_string(),
        ];
        let mut env = vec![
            (
                "KUBECONFIG".to_owned(),
                self.kubeconfig().display().to_string(),
            ),
            ("NO_COLOR".to_owned(), "1".to_owned()),
        ];
        env.extend(options.env.iter().cloned());
        let mut scheduler = spawn_in_with_env(self.dir(), &name, &program, &args, &env)?;
        scheduler
            .wait_ready(options.timeout, || ready(http))
            .await?;
        let handle = PhalanxHandle {
            name,
            identity,
            pid: scheduler.pid(),
            http,
            config: config_path,
            log: scheduler.log_path().to_owned(),
        };
        self.components.push(scheduler);
        Ok(handle)
    }

    /// Kills a component's whole process group with SIGKILL (no graceful
    /// shutdown, no Lease release: a crashed node) and reaps it. Returns
    /// whether a running component had that pid.
    pub fn kill_component(&mut self, pid: u32) -> bool {
        let Some(component) = self.components.iter_mut().find(|c| c.pid() == pid) else {
            return false;
        };
        if component.has_exited() {
            return false;
        }
        component.kill();
        true
    }

    /// Log tails of every phalanx-scheduler replica, headed by name, for
    /// failure messages.
    pub fn phalanx_logs(&self) -> String {
        self.components
            .iter()
            .filter(|c| c.name().starts_with("phalanx-scheduler-"))
            .map(|c| format!("--- {} ({}) ---\n{}\n", c.name(), c.pid(), c.log_tail()))
            .collect()
    }

    /// [`ControlPlane::phalanx_logs`], and kube-scheduler's log tail when it
    /// runs: what explains a pod that was not scheduled.
    pub fn scheduler_logs(&self) -> String {
        let mut logs = self.phalanx_logs();
        if let Some(tail) = self.log_tail("kube-scheduler") {
            logs.push_str(&format!("--- kube-scheduler ---\n{tail}\n"));
        }
        logs
    }
}

/// Creates a namespace unless it exists.
pub async fn ensure_namespace(client: &kube::Client, name: &str) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    if api.get_opt(name).await?.is_some() {
        return Ok(());
    }
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    match api.create(&PostParams::default(), &namespace).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Installs the GpuNode, PodGroup and Queue CRDs (generated from
/// `phalanx-api`) and waits until they are Established and served.
pub async fn install_phalanx_crds(client: &kube::Client) -> Result<()> {
    let timeout = Duration::from_secs(60);
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [GpuNode::crd(), PodGroup::crd(), Queue::crd()] {
        match crds.create(&PostParams::default(), &crd).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    let deadline = Instant::now() + timeout;
    for name in [GpuNode::crd_name(), PodGroup::crd_name(), Queue::crd_name()] {
        while !is_established(&crds.get(name).await?) {
            if Instant::now() >= deadline {
                return Err(HarnessError::Timeout {
                    what: format!("CRD {name} Established"),
                    timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Discovery can lag Established by a moment.
    let gpu_nodes: Api<GpuNode> = Api::all(client.clone());
    let pod_groups: Api<PodGroup> = Api::all(client.clone());
    let queues: Api<Queue> = Api::all(client.clone());
    loop {
        let params = ListParams::default().limit(1);
        let served = gpu_nodes.list(&params).await.is_ok()
            && pod_groups.list(&params).await.is_ok()
            && queues.list(&params).await.is_ok();
        if served {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(HarnessError::Timeout {
                what: "the GpuNode, PodGroup and Queue resources served".to_owned(),
                timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(crate) fn is_established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

/// The Lease's current holder, if the Lease exists and names one.
pub async fn lease_holder(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Option<String>> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    Ok(leases
        .get_opt(name)
        .await?
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_the_documented_keys_and_extra_merges() {
        let options = PhalanxOptions {
            leader_election: Some(LeaderElectionOptions {
                lease_duration_seconds: 4,
                ..LeaderElectionOptions::default()
            }),
            extra: serde_json::json!({ "binding": { "concurrency": 8 }, "policy": "spread" }),
            ..PhalanxOptions::default()
        };
        let http = SocketAddr::from((Ipv4Addr::LOCALHOST, 1234));
        let config = phalanx_config(&options, "me", http);
        assert_eq!(config["schedulerName"], "phalanx");
        assert_eq!(config["binding"]["qps"], 5000);
        assert_eq!(config["binding"]["concurrency"], 8);
        assert_eq!(config["policy"], "spread");
        assert_eq!(config["leaderElection"]["leaseDurationSeconds"], 4);
        assert_eq!(config["leaderElection"]["renewGraceSeconds"], 2);
        assert_eq!(config["leaderElection"]["identity"], "me");
        assert_eq!(config["http"]["bindAddress"], "127.0.0.1:1234");
    }

    #[test]
    fn looks_next_to_the_running_executable_first() {
        let candidates = crate::binaries::workspace_binary_candidates(BIN_NAME);
        let exe = std::env::current_exe().expect("current exe");
        let expected = exe
            .parent()
            .and_then(std::path::Path::parent)
            .map(|d| d.join(BIN_NAME));
        assert_eq!(candidates.get(1), expected.as_ref(), "{candidates:?}");
    }
}
