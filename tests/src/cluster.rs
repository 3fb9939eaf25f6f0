//! A whole control plane on loopback: etcd, kube-apiserver,
//! kube-controller-manager and KWOK, plus kube-scheduler on request. Every
//! start waits for readiness under a deadline; dropping the [`ControlPlane`]
//! stops every process and deletes its directory.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Api;

use crate::binaries::Binaries;
use crate::error::{HarnessError, Result};
use crate::janitor;
use crate::pki::Pki;
use crate::ports::free_ports;
use crate::probe;
use crate::process::Component;

mod outage;

/// The apiserver's component name (and log file stem).
const APISERVER: &str = "kube-apiserver";

/// Annotation KWOK is told to select the nodes it simulates by.
pub const KWOK_NODE_ANNOTATION: &str = "kwok.x-k8s.io/node";
/// Value of [`KWOK_NODE_ANNOTATION`] on simulated nodes.
pub const KWOK_NODE_ANNOTATION_VALUE: &str = "fake";

/// What to start and how long to wait for it.
#[derive(Debug, Clone)]
pub struct ControlPlaneOptions {
    /// Start kube-controller-manager (Deployments, ReplicaSets, service accounts).
    pub controller_manager: bool,
    /// Start KWOK to act as the kubelet of annotated nodes.
    pub kwok: bool,
    /// Point the apiserver at this etcd instead of starting one; for tests
    /// of the failure path (an unreachable etcd).
    pub external_etcd: Option<String>,
    /// Client port for etcd instead of a free one; for tests of the failure
    /// path (a port already taken).
    pub etcd_port: Option<u16>,
    /// Deadline for the apiserver to report ready.
    pub apiserver_timeout: Duration,
    /// Deadline for each other component.
    pub component_timeout: Duration,
    /// Extra kube-apiserver flags, e.g. `--feature-gates=PodLevelResources=true`
    /// for a test of a field the API server drops while its gate is off.
    pub apiserver_args: Vec<String>,
    /// Serve Kubernetes' own gang objects (`scheduling.k8s.io` v1beta1
    /// Workload and PodGroup, v1alpha3 CompositePodGroup): beta and alpha in
    /// 1.37, so off on a stock server. `false` starts a server without them,
    /// like most clusters people run today.
    pub upstream_gangs: bool,
}

impl Default for ControlPlaneOptions {
    fn default() -> Self {
        Self {
            controller_manager: true,
            kwok: true,
            external_etcd: None,
            etcd_port: None,
            apiserver_timeout: Duration::from_secs(90),
            component_timeout: Duration::from_secs(60),
            apiserver_args: Vec::new(),
            upstream_gangs: true,
        }
    }
}

/// Client settings for kube-scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// `clientConnection.qps`; upstream's default of 50 would make the API
    /// client, not the scheduler, the bottleneck of a benchmark.
    pub qps: u32,
    /// `clientConnection.burst`.
    pub burst: u32,
    /// Deadline for the scheduler to report ready.
    pub timeout: Duration,
    /// `extenders` of the KubeSchedulerConfiguration (kube-scheduler's JSON
    /// shape), e.g. Phalanx in extender mode.
    pub extenders: Vec<serde_json::Value>,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        Self {
            qps: 5000,
            burst: 10000,
            timeout: Duration::from_secs(60),
            extenders: Vec::new(),
        }
    }
}

/// A running control plane. Dropping it stops everything, panic or not.
pub struct ControlPlane {
    // Declared before `dir` so that, should `Drop` be bypassed by a future
    // refactor, processes still stop before their files disappear.
    pub(crate) components: Vec<Component>,
    binaries: Binaries,
    pki: Pki,
    kubeconfig: PathBuf,
    server: String,
    client: kube::Client,
    /// etcd's client URL and kube-apiserver's flags, kept so that a fault test
    /// can compact etcd and start the apiserver again ([`outage`]).
    etcd_url: String,
    apiserver_args: Vec<String>,
    dir: tempfile::TempDir,
}

impl ControlPlane {
    /// Starts etcd, kube-apiserver, kube-controller-manager and KWOK.
    pub async fn start(binaries: Binaries) -> Result<Self> {
        Self::start_with(binaries, ControlPlaneOptions::default()).await
    }

    /// Starts the components `options` asks for.
    pub async fn start_with(binaries: Binaries, options: ControlPlaneOptions) -> Result<Self> {
        // Leftovers of test processes that were killed outright would
        // otherwise hold ports and CPU for good.
        janitor::reap_orphans();
        let dir = tempfile::Builder::new()
            .prefix(janitor::DIR_PREFIX)
            .tempdir()
            .map_err(|e| HarnessError::io("creating the control plane's directory", e))?;
        janitor::record_owner(dir.path())?;
        let pki = Pki::generate(dir.path())?;
        let mut components = Vec::new();

        let etcd_url = match &options.external_etcd {
            Some(url) => url.clone(),
            None => {
                let (etcd, url) = start_etcd(
                    &binaries,
                    dir.path(),
                    options.etcd_port,
                    options.component_timeout,
                )
                .await?;
                components.push(etcd);
                url
            }
        };

        let (mut apiserver, server, apiserver_args) = start_apiserver(
            &binaries,
            dir.path(),
            &pki,
            &etcd_url,
            &apiserver_flags(&options),
        )?;
        let kubeconfig = dir.path().join("admin.kubeconfig");
        let client = admin_client(&pki, &kubeconfig, &server).await?;
        // Probing through the admin client proves the certificates work too.
        apiserver
            .wait_ready(options.apiserver_timeout, || {
                let client = client.clone();
                async move { probe::kube_get_ok(&client, "/readyz").await }
            })
            .await?;
        components.push(apiserver);
        let mut plane = Self {
            components,
            binaries,
            pki,
            kubeconfig,
            server,
            client,
            etcd_url,
            apiserver_args,
            dir,
        };

        if options.controller_manager {
            plane
                .start_controller_manager(options.component_timeout)
                .await?;
        }
        if options.kwok {
            plane.start_kwok(options.component_timeout).await?;
        }
        Ok(plane)
    }

    /// An admin client (system:masters) for this control plane.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The admin kubeconfig, for other processes (schedulers) to use.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The apiserver's URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The control plane's scratch directory (certificates, logs, data).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Pids of the running components, in start order, named.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.components
            .iter()
            .map(|c| (c.name().to_owned(), c.pid()))
            .collect()
    }

    /// The last lines of a component's log, for diagnosing a failed test.
    pub fn log_tail(&self, component: &str) -> Option<String> {
        self.components
            .iter()
            .find(|c| c.name() == component)
            .map(Component::log_tail)
    }

    /// Starts upstream kube-scheduler (profile `default-scheduler`) against
    /// this control plane and waits until it has synced its caches.
    pub async fn start_kube_scheduler(&mut self, options: &SchedulerOptions) -> Result<()> {
        let config_path = self.dir.path().join("kube-scheduler.json");
        let config = serde_json::json!({
            "apiVersion": "kubescheduler.config.k8s.io/v1",
            "kind": "KubeSchedulerConfiguration",
            "clientConnection": {
                "kubeconfig": self.kubeconfig,
                "qps": options.qps,
                "burst": options.burst,
            },
            "leaderElection": { "leaderElect": false },
            "profiles": [{ "schedulerName": "default-scheduler" }],
            "extenders": options.extenders,
        });
        std::fs::write(&config_path, config.to_string())
            .map_err(|e| HarnessError::io(format!("writing {}", config_path.display()), e))?;
        let port = single_port()?;
        let args = vec![
            format!("--config={}", config_path.display()),
            "--bind-address=127.0.0.1".to_owned(),
            format!("--secure-port={port}"),
            "--v=1".to_owned(),
        ];
        let program = self.binaries.kube_scheduler();
        let mut scheduler = self.spawn("kube-scheduler", &program, &args)?;
        let health = probe::insecure_client(port);
        // /readyz includes the informer-sync check, so pods created after this
        // returns are seen by a scheduler with a complete cache.
        scheduler
            .wait_ready(options.timeout, || {
                let health = health.clone();
                async move { probe::kube_get_ok(&health?, "/readyz").await }
            })
            .await?;
        self.components.push(scheduler);
        Ok(())
    }

    fn spawn(&self, name: &str, program: &Path, args: &[String]) -> Result<Component> {
        spawn_in(self.dir.path(), name, program, args)
    }

    async fn start_controller_manager(&mut self, timeout: Duration) -> Result<()> {
        let port = single_port()?;
        let args = vec![
            format!("--kubeconfig={}", self.kubeconfig.display()),
            "--bind-address=127.0.0.1".to_owned(),
            format!("--secure-port={port}"),
            "--leader-elect=false".to_owned(),
            format!(
                "--service-account-private-key-file={}",
                self.pki.service_account_key.display()
            ),
            format!("--root-ca-file={}", self.pki.ca_cert.display()),
            // One shared admin identity: per-controller service accounts
            // would only add token traffic to a test cluster.
            "--use-service-account-credentials=false".to_owned(),
            // Its default of 20 QPS would throttle ReplicaSets of thousands of pods.
            "--kube-api-qps=1000".to_owned(),
            "--kube-api-burst=2000".to_owned(),
            "--v=1".to_owned(),
        ];
        let program = self.binaries.kube_controller_manager();
        let mut kcm = self.spawn("kube-controller-manager", &program, &args)?;
        // The `default` service account is created by one of its controllers;
        // pods cannot be admitted before it exists, so it is the readiness
        // signal that matters to tests.
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), "default");
        kcm.wait_ready(timeout, || {
            let accounts = accounts.clone();
            async move {
                accounts
                    .get("default")
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("service account default/default: {e}"))
            }
        })
        .await?;
        self.components.push(kcm);
        Ok(())
    }

    async fn start_kwok(&mut self, timeout: Duration) -> Result<()> {
        let port = single_port()?;
        let mut args = vec![
            format!("--kubeconfig={}", self.kubeconfig.display()),
            "--manage-all-nodes=false".to_owned(),
            format!(
                "--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}={KWOK_NODE_ANNOTATION_VALUE}"
            ),
            format!("--server-address=127.0.0.1:{port}"),
            "--node-lease-duration-seconds=40".to_owned(),
            "--cidr=10.0.0.1/16".to_owned(),
            "--node-ip=10.1.0.1".to_owned(),
        ];
        args.extend(
            self.binaries
                .kwok_stages()
                .iter()
                .map(|stage| format!("--config={}", stage.display())),
        );
        let program = self.binaries.kwok();
        let mut kwok = self.spawn("kwok", &program, &args)?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        kwok.wait_ready(timeout, || probe::http_ok(addr, "/healthz", ""))
            .await?;
        self.components.push(kwok);
        Ok(())
    }
}

impl std::fmt::Debug for ControlPlane {
    // kube::Client is not Debug; the server and processes say what matters.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("server", &self.server)
            .field("dir", &self.dir.path())
            .field("components", &self.components)
            .finish_non_exhaustive()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Signal everyone first so they stop in parallel, then reap in
        // reverse start order (clients before the apiserver before etcd).
        for component in &mut self.components {
            component.terminate();
        }
        while let Some(mut component) = self.components.pop() {
            component.reap();
        }
    }
}

/// Spawns a component logging to `dir/<name>.log` and records its process
/// group for the janitor.
fn spawn_in(dir: &Path, name: &str, program: &Path, args: &[String]) -> Result<Component> {
    spawn_in_with_env(dir, name, program, args, &[])
}

/// [`spawn_in`] with extra environment variables.
pub(crate) fn spawn_in_with_env(
    dir: &Path,
    name: &str,
    program: &Path,
    args: &[String],
    env: &[(String, String)],
) -> Result<Component> {
    let component =
        Component::spawn_with_env(name, program, args, env, dir.join(format!("{name}.log")))?;
    janitor::record_group(dir, component.pid())?;
    Ok(component)
}

pub(crate) fn single_port() -> Result<u16> {
    free_ports(1)?.pop().ok_or_else(|| {
        HarnessError::io(
            "choosing a port",
            std::io::ErrorKind::AddrNotAvailable.into(),
        )
    })
}

async fn start_etcd(
    binaries: &Binaries,
    dir: &Path,
    client_port: Option<u16>,
    timeout: Duration,
) -> Result<(Component, String)> {
    let ports = free_ports(2)?;
    let (client_port, peer_port) = (client_port.unwrap_or(ports[0]), ports[1]);
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let args = vec![
        "--name=e2e".to_owned(),
        format!("--data-dir={}", dir.join("etcd").display()),
        format!("--listen-client-urls={client_url}"),
        format!("--advertise-client-urls={client_url}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster=e2e={peer_url}"),
        // The data is thrown away after the test; fsync would only make
        // every write wait for the disk.
        "--unsafe-no-fsync=true".to_owned(),
        "--quota-backend-bytes=8589934592".to_owned(),
        "--log-level=warn".to_owned(),
    ];
    let mut etcd = spawn_in(dir, "etcd", &binaries.etcd(), &args)?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, client_port));
    etcd.wait_ready(timeout, || {
        probe::http_ok(addr, "/health", "\"health\":\"true\"")
    })
    .await?;
    Ok((etcd, client_url))
}

/// Spawns the apiserver; readiness is awaited by the caller once a client
/// exists. Returns it with its URL and its flags.
/// The feature gates behind Kubernetes' gang API in 1.37: the Workload and
/// PodGroup objects (GenericWorkload), their topology constraint, their
/// preemption policy, and CompositePodGroup. The same list goes to every
/// component that reads them.
pub const UPSTREAM_GANG_GATES: &str = "GenericWorkload=true,TopologyAwareWorkloadScheduling=true,\
PodGroupPreemptionPolicy=true,CompositePodGroup=true";

/// The apiserver flags `options` asks for beyond the fixed ones. A repeated
/// `--feature-gates` flag adds to the earlier ones, so a test's own gates
/// combine with these.
fn apiserver_flags(options: &ControlPlaneOptions) -> Vec<String> {
    let mut flags = if options.upstream_gangs {
        vec![
            "--runtime-config=scheduling.k8s.io/v1beta1=true,scheduling.k8s.io/v1alpha3=true"
                .to_owned(),
            format!("--feature-gates={UPSTREAM_GANG_GATES}"),
        ]
    } else {
        vec![
            "--runtime-config=scheduling.k8s.io/v1beta1=false,scheduling.k8s.io/v1alpha3=false"
                .to_owned(),
        ]
    };
    flags.extend(options.apiserver_args.iter().cloned());
    flags
}

fn start_apiserver(
    binaries: &Binaries,
    dir: &Path,
    pki: &Pki,
    etcd_url: &str,
    extra_args: &[String],
) -> Result<(Component, String, Vec<String>)> {
    let port = single_port()?;
    let server = format!("https://127.0.0.1:{port}");
    let mut args = vec![
        format!("--etcd-servers={etcd_url}"),
        "--bind-address=127.0.0.1".to_owned(),
        "--advertise-address=127.0.0.1".to_owned(),
        format!("--secure-port={port}"),
        format!("--cert-dir={}", dir.join("apiserver-certs").display()),
        format!("--tls-cert-file={}", pki.serving_cert.display()),
        format!("--tls-private-key-file={}", pki.serving_key.display()),
        format!("--client-ca-file={}", pki.ca_cert.display()),
        format!(
            "--service-account-key-file={}",
            pki.service_account_pub.display()
        ),
        format!(
            "--service-account-signing-key-file={}",
            pki.service_account_key.display()
        ),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".to_owned(),
        "--service-cluster-ip-range=10.0.0.0/16".to_owned(),
        "--authorization-mode=Node,RBAC".to_owned(),
        "--allow-privileged=true".to_owned(),
        // A loopback address may not be published in the `kubernetes`
        // Endpoints object, and nothing in-cluster needs to reach it.
        "--endpoint-reconciler-type=none".to_owned(),
        // Benchmarks push thousands of requests a second through one apiserver.
        "--max-requests-inflight=3000".to_owned(),
        "--max-mutating-requests-inflight=1000".to_owned(),
        "--profiling=false".to_owned(),
        "--v=1".to_owned(),
    ];
    args.extend_from_slice(extra_args);
    let apiserver = spawn_in(dir, APISERVER, &binaries.kube_apiserver(), &args)?;
    Ok((apiserver, server, args))
}

async fn admin_client(pki: &Pki, path: &Path, server: &str) -> Result<kube::Client> {
    pki.write_kubeconfig(path, server)?;
    let kubeconfig = Kubeconfig::read_from(path)?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}
