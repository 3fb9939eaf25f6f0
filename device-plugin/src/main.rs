//! The `phalanx-device-plugin` command.
//!
//! * `run`: the DaemonSet process: kubelet device plugins for whole GPUs and
//!   milli-GPU shares, the node's `GpuNode` telemetry, `/metrics`, `/healthz`
//!   and `/readyz`.
//! * `probe`: prints what a GPU backend sees (inventory, telemetry, events) as JSON.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use phalanx_device_plugin::backend::{FakeBackend, GpuBackend, NvmlBackend};
use phalanx_device_plugin::daemon::{run_daemon, BackendChoice, DaemonConfig};
use phalanx_device_plugin::kubelet::{
    KubeletPaths, DEFAULT_DEVICE_PLUGIN_DIR, DEFAULT_POD_RESOURCES_SOCKET,
};
use phalanx_runtime::auth::{DelegatedAuth, KubeReviews};
use phalanx_runtime::config::LoggingConfig;
use phalanx_runtime::http::ServerSecurity;
use phalanx_runtime::tls::{ClientCertificates, ReloadingTls, TlsFiles, TlsKeys};

#[derive(Parser, Debug)]
#[command(
    name = "phalanx-device-plugin",
    version,
    about = "Phalanx GPU device plugin"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve kubelet and publish this node's GpuNode until SIGTERM or Ctrl-C.
    Run(Box<RunArgs>),
    /// Print the GPUs a backend sees, their live state, and events over a short window.
    Probe {
        #[arg(long, value_enum, default_value_t = Backend::Nvml)]
        backend: Backend,
        /// JSON description of the fake node (with `--backend fake`).
        #[arg(long)]
        fake_file: Option<PathBuf>,
        /// Seconds to listen for critical XID events, 0 to 3600 (a probe is a short
        /// look; an unbounded window used to panic instead of being refused).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=3600))]
        events_seconds: u64,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Backend {
    Nvml,
    Fake,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// GPU backend: `nvml` (the driver) or `fake` (a JSON file; KWOK and tests).
    #[arg(long, env = "PHALANX_BACKEND", value_enum, default_value_t = Backend::Nvml)]
    backend: Backend,
    /// The fake node's JSON description (with `--backend fake`).
    #[arg(long, env = "PHALANX_FAKE_FILE")]
    fake_file: Option<PathBuf>,
    /// This node's name (the downward API's `spec.nodeName`).
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// Kubelet's device-plugin directory.
    #[arg(long, env = "PHALANX_DEVICE_PLUGIN_DIR", default_value = DEFAULT_DEVICE_PLUGIN_DIR)]
    device_plugin_dir: PathBuf,
    /// Kubelet's registration socket; `<device-plugin-dir>/kubelet.sock` by default.
    #[arg(long, env = "PHALANX_KUBELET_SOCKET")]
    kubelet_socket: Option<PathBuf>,
    /// Kubelet's PodResources socket (which pods hold which GPU).
    #[arg(long, env = "PHALANX_POD_RESOURCES_SOCKET", default_value = DEFAULT_POD_RESOURCES_SOCKET)]
    pod_resources_socket: PathBuf,
    /// Serve the kubelet device plugin API (off on KWOK nodes, which have no kubelet).
    #[arg(long, env = "PHALANX_SERVE_KUBELET", default_value_t = true, action = clap::ArgAction::Set)]
    serve_kubelet: bool,
    /// Publish the node's GpuNode (needs API access).
    #[arg(long, env = "PHALANX_PUBLISH", default_value_t = true, action = clap::ArgAction::Set)]
    publish: bool,
    /// Resource name for whole GPUs.
    #[arg(long, env = "PHALANX_WHOLE_GPU_RESOURCE", default_value = phalanx_api::RESOURCE_WHOLE_GPU)]
    whole_gpu_resource: String,
    /// Resource name for GPU shares.
    #[arg(long, env = "PHALANX_GPU_MILLI_RESOURCE", default_value = phalanx_api::RESOURCE_GPU_MILLI)]
    gpu_milli_resource: String,
    /// Share units per GPU; 1000 matches the scheduler's milli-GPU.
    #[arg(long, env = "PHALANX_UNITS_PER_GPU", default_value_t = phalanx_api::MILLI_PER_GPU)]
    units_per_gpu: u32,
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, env = "PHALANX_METRICS_ADDRESS", default_value = "0.0.0.0:9445")]
    metrics_address: SocketAddr,
    /// Serve /metrics over HTTPS with this certificate (PEM; with --metrics-tls-key-file).
    #[arg(
        long,
        env = "PHALANX_METRICS_TLS_CERT_FILE",
        requires = "metrics_tls_key_file"
    )]
    metrics_tls_cert_file: Option<PathBuf>,
    /// The private key of --metrics-tls-cert-file (PEM).
    #[arg(
        long,
        env = "PHALANX_METRICS_TLS_KEY_FILE",
        requires = "metrics_tls_cert_file"
    )]
    metrics_tls_key_file: Option<PathBuf>,
    /// CA of the client certificates accepted as credentials (user = CN, groups = O).
    #[arg(
        long,
        env = "PHALANX_METRICS_CLIENT_CA_FILE",
        requires = "metrics_tls_cert_file"
    )]
    metrics_client_ca_file: Option<PathBuf>,
    /// `delegated`: /metrics needs a bearer token or client certificate the API
    /// server accepts and RBAC `get` on the path (needs HTTPS); probes stay open.
    #[arg(long, env = "PHALANX_METRICS_AUTHENTICATION", value_enum, default_value_t = MetricsAuthentication::None)]
    metrics_authentication: MetricsAuthentication,
    /// Telemetry sample period, milliseconds.
    #[arg(long, env = "PHALANX_SAMPLE_INTERVAL_MS", default_value_t = 1000)]
    sample_interval_ms: u64,
    /// Write the GpuNode status at least this often, seconds.
    #[arg(long, env = "PHALANX_HEARTBEAT_SECONDS", default_value_t = 4)]
    heartbeat_seconds: u64,
    /// Most GpuNode writes per second.
    #[arg(long, env = "PHALANX_MAX_WRITES_PER_SECOND", default_value_t = NonZeroU32::MIN.saturating_add(1))]
    max_writes_per_second: NonZeroU32,
    /// Seconds `GetPreferredAllocation` keeps trying to read the pods on this
    /// node from an API server that does not answer before refusing the
    /// allocation (kubelet then fails the pod's admission), 0 to 60.
    #[arg(long, env = "PHALANX_ASSIGNMENT_READ_TIMEOUT_SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(0..=60))]
    assignment_read_timeout_seconds: u64,
    #[arg(long, env = "PHALANX_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,
}

/// Who may read /metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum MetricsAuthentication {
    /// Anyone who reaches the port.
    None,
    /// TokenReview / client certificate, then SubjectAccessReview, as kube-scheduler.
    Delegated,
}

/// The flags' keys, named in errors about the files.
const METRICS_TLS_FLAGS: TlsKeys = TlsKeys {
    cert_file: "--metrics-tls-cert-file",
    key_file: "--metrics-tls-key-file",
    client_ca_file: "--metrics-client-ca-file",
};

/// TLS and authentication of the metrics server from the flags; the files
/// are read now, so a bad one stops the start naming its flag.
fn metrics_security(args: &RunArgs, client: Option<&kube::Client>) -> Result<ServerSecurity> {
    let delegated = args.metrics_authentication == MetricsAuthentication::Delegated;
    // The flag combinations first, so that they are named before any file is read.
    if delegated && args.metrics_tls_cert_file.is_none() {
        bail!("--metrics-authentication delegated needs --metrics-tls-cert-file and --metrics-tls-key-file: bearer tokens must not cross the network in clear text");
    }
    if delegated && client.is_none() {
        bail!("--metrics-authentication delegated needs API access (in-cluster service account or KUBECONFIG)");
    }
    let mut security = ServerSecurity::plain();
    if let (Some(cert_file), Some(key_file)) =
        (&args.metrics_tls_cert_file, &args.metrics_tls_key_file)
    {
        let files = TlsFiles {
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
            client_ca_file: args.metrics_client_ca_file.clone(),
        };
        security = security.with_tls(ReloadingTls::load(
            files,
            METRICS_TLS_FLAGS,
            ClientCertificates::Optional,
        )?);
    }
    if let (true, Some(client)) = (delegated, client) {
        let always_allow = ["/healthz", "/readyz", "/livez"]
            .map(str::to_owned)
            .to_vec();
        let reviews = Arc::new(KubeReviews::new(client.clone()));
        security = security.with_auth(Arc::new(DelegatedAuth::new(reviews, always_allow)));
    }
    Ok(security)
}

fn init_logging(format: LogFormat) {
    phalanx_runtime::logging::init_logging(&LoggingConfig {
        format: match format {
            LogFormat::Json => phalanx_runtime::config::LogFormat::Json,
            LogFormat::Text => phalanx_runtime::config::LogFormat::Text,
        },
        ..LoggingConfig::default()
    });
}

fn backend_choice(backend: Backend, fake_file: Option<&PathBuf>) -> Result<BackendChoice> {
    Ok(match backend {
        Backend::Nvml => BackendChoice::Nvml,
        Backend::Fake => {
            let file =
                fake_file.context("--backend fake needs --fake-file (or PHALANX_FAKE_FILE)")?;
            BackendChoice::Fake(FakeBackend::from_file(file)?)
        }
    })
}

async fn run(args: RunArgs) -> Result<()> {
    init_logging(args.log_format);
    if args.sample_interval_ms == 0 || args.heartbeat_seconds == 0 {
        bail!("--sample-interval-ms and --heartbeat-seconds must be positive");
    }
    let backend = backend_choice(args.backend, args.fake_file.as_ref())?;
    // Fail before anything else when the GPUs cannot be read (no driver).
    drop(backend.open()?);
    let client = match kube::Client::try_default().await {
        Ok(client) => Some(client),
        Err(_) if !args.publish && !args.serve_kubelet => None,
        Err(e) if args.publish => return Err(anyhow::Error::new(e).context(
            "publishing the GpuNode needs API access (in-cluster service account or KUBECONFIG)",
        )),
        Err(e) => {
            tracing::warn!(error = %e, "no API access: allocations cannot follow the scheduler's annotation");
            None
        }
    };
    let metrics_security = metrics_security(&args, client.as_ref())?;
    let kubelet = args.serve_kubelet.then(|| {
        let mut paths = KubeletPaths::in_dir(&args.device_plugin_dir);
        if let Some(socket) = &args.kubelet_socket {
            paths.kubelet_socket = socket.clone();
        }
        paths
    });
    let config = DaemonConfig {
        node_name: args.node_name.clone(),
        whole_gpu_resource: args.whole_gpu_resource.clone(),
        gpu_milli_resource: args.gpu_milli_resource.clone(),
        units_per_gpu: args.units_per_gpu,
        pod_resources_socket: args
            .serve_kubelet
            .then(|| args.pod_resources_socket.clone()),
        kubelet,
        publish: args.publish,
        metrics_address: Some(args.metrics_address),
        metrics_security,
        sample_interval: Duration::from_millis(args.sample_interval_ms),
        heartbeat: Duration::from_secs(args.heartbeat_seconds),
        max_writes_per_second: args.max_writes_per_second,
        assignment_read_timeout: Duration::from_secs(args.assignment_read_timeout_seconds),
    };
    let stop = phalanx_runtime::shutdown::stop_on_signal();
    run_daemon(config, backend, client, None, stop, |_| {}).await?;
    Ok(())
}

fn probe(backend: Backend, fake_file: Option<PathBuf>, events_seconds: u64) -> Result<()> {
    let mut backend: Box<dyn GpuBackend> = match backend {
        Backend::Nvml => Box::new(NvmlBackend::new()?),
        Backend::Fake => {
            let file = fake_file.context("--backend fake needs --fake-file")?;
            Box::new(FakeBackend::from_file(&file)?)
        }
    };
    let inventory = backend.inventory()?;
    let telemetry = backend.telemetry()?;
    let events = backend.wait_for_events(Duration::from_secs(events_seconds))?;
    let report = serde_json::json!({
        "backend": backend.name(),
        "inventory": inventory,
        "telemetry": telemetry,
        "events": events,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Run(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?
            .block_on(run(*args)),
        Command::Probe {
            backend,
            fake_file,
            events_seconds,
        } => probe(backend, fake_file, events_seconds),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(flags: &[&str]) -> std::result::Result<RunArgs, clap::Error> {
        let argv = ["phalanx-device-plugin", "run", "--node-name", "gpu-0"]
            .iter()
            .chain(flags);
        match Cli::try_parse_from(argv)?.command {
            Command::Run(args) => Ok(*args),
            Command::Probe { .. } => unreachable!("parsed run"),
        }
    }

    #[test]
    fn the_metrics_port_is_plain_http_by_default() {
        let args = run_args(&[]).expect("parses");
        let security = metrics_security(&args, None).expect("plain");
        assert!(!security.is_tls());
    }

    #[test]
    fn delegated_authentication_needs_tls_and_api_access() {
        let args = run_args(&["--metrics-authentication", "delegated"]).expect("parses");
        let error = metrics_security(&args, None)
            .expect_err("no TLS")
            .to_string();
        assert!(error.contains("needs --metrics-tls-cert-file"), "{error}");

        let args = run_args(&[
            "--metrics-authentication=delegated",
            "--metrics-tls-cert-file=/tls/tls.crt",
            "--metrics-tls-key-file=/tls/tls.key",
        ])
        .expect("parses");
        let error = metrics_security(&args, None)
            .expect_err("no client")
            .to_string();
        assert!(error.contains("needs API access"), "{error}");
    }

    #[test]
    fn a_missing_certificate_names_its_flag_and_path() {
        let args = run_args(&[
            "--metrics-tls-cert-file=/nonexistent/tls.crt",
            "--metrics-tls-key-file=/nonexistent/tls.key",
        ])
        .expect("parses");
        let error = metrics_security(&args, None)
            .expect_err("missing")
            .to_string();
        assert!(
            error.starts_with("--metrics-tls-cert-file: /nonexistent/tls.crt: cannot read"),
            "{error}"
        );
    }

    #[test]
    fn a_certificate_without_its_key_is_refused_by_the_parser() {
        let error = run_args(&["--metrics-tls-cert-file=/tls/tls.crt"]).expect_err("no key");
        assert!(
            error.to_string().contains("--metrics-tls-key-file"),
            "{error}"
        );
        let error = run_args(&["--metrics-authentication=token"]).expect_err("bad mode");
        assert!(error.to_string().contains("delegated"), "{error}");
    }
}
