//! The config sections every Phalanx controller has (`leaderElection`, `http`,
//! `logging`), the same keys with per-controller defaults.

use std::marker::PhantomData;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

pub use crate::tls::TlsFiles;

/// What differs between the controllers' shared sections. Implemented by a
/// unit marker type per controller (which derives Debug, Clone and PartialEq so
/// that the sections can).
pub trait ControllerDefaults {
    /// The default Lease name, and the prefix of an identity made up when the
    /// pod name is unknown (`phalanx-scheduler`).
    const NAME: &'static str;
    /// The default port of `/metrics`, `/healthz` and `/readyz`.
    const HTTP_PORT: u16;
}

/// Leader election on a `coordination.k8s.io` Lease, so that only one replica acts.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    rename_all = "camelCase",
    bound = "C: ControllerDefaults"
)]
pub struct LeaderElectionConfig<C> {
    /// Off only for a single replica (development); two unelected replicas
    /// would both act (place pods on the same GPUs, scale the same target).
    pub enabled: bool,
    pub lease_name: String,
    pub lease_namespace: String,
    /// The Lease is the holder's for this long after its last renewal.
    pub lease_duration_seconds: u64,
    /// The holder renews this long before the Lease would expire; must be
    /// shorter than the duration (kube-lease-manager's `grace`).
    pub renew_grace_seconds: u64,
    /// This replica's name in the Lease; default: the pod's name.
    pub identity: Option<String>,
    #[serde(skip)]
    controller: PhantomData<C>,
}

impl<C: ControllerDefaults> Default for LeaderElectionConfig<C> {
    fn default() -> Self {
        Self {
            enabled: true,
            lease_name: C::NAME.to_owned(),
            lease_namespace: "kube-system".to_owned(),
            lease_duration_seconds: 15,
            renew_grace_seconds: 5,
            identity: None,
            controller: PhantomData,
        }
    }
}

impl<C: ControllerDefaults> LeaderElectionConfig<C> {
    pub fn lease_duration(&self) -> Duration {
        Duration::from_secs(self.lease_duration_seconds)
    }

    pub fn renew_grace(&self) -> Duration {
        Duration::from_secs(self.renew_grace_seconds)
    }

    /// The configured identity, else `pod_name` (unique among replicas), else
    /// a name made unique by the process id.
    pub fn identity_or(&self, pod_name: Option<String>) -> String {
        self.identity
            .clone()
            .or(pod_name.filter(|name| !name.trim().is_empty()))
            .unwrap_or_else(|| format!("{}-{}", C::NAME, std::process::id()))
    }

    /// [`Self::identity_or`] with `POD_NAME` (the chart sets it from the
    /// downward API), else `HOSTNAME` (which Kubernetes sets to the pod name).
    pub fn resolved_identity(&self) -> String {
        let from_env = |name| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        self.identity_or(from_env("POD_NAME").or_else(|| from_env("HOSTNAME")))
    }
}

/// The health and metrics server.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    rename_all = "camelCase",
    bound = "C: ControllerDefaults"
)]
pub struct HttpConfig<C> {
    /// Serves `/metrics`, `/healthz`, `/livez` and `/readyz`.
    pub bind_address: SocketAddr,
    /// HTTPS with these files; absent: plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Who may read what; `delegated` needs `tls`.
    pub authentication: HttpAuthentication,
    /// Paths served without credentials under `delegated` (exact, or a prefix
    /// ending in `*`), as kube-scheduler's `--authorization-always-allow-paths`.
    pub always_allow_paths: Vec<String>,
    #[serde(skip)]
    controller: PhantomData<C>,
}

impl<C: ControllerDefaults> Default for HttpConfig<C> {
    fn default() -> Self {
        Self {
            bind_address: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), C::HTTP_PORT),
            tls: None,
            authentication: HttpAuthentication::None,
            always_allow_paths: ["/healthz", "/readyz", "/livez"]
                .map(str::to_owned)
                .to_vec(),
            controller: PhantomData,
        }
    }
}

/// How the health and metrics server authenticates requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpAuthentication {
    /// Anyone who reaches the port reads everything (the NetworkPolicy is
    /// then the only boundary).
    #[default]
    None,
    /// Bearer tokens checked by TokenReview, client certificates by
    /// `tls.clientCAFile`, then a SubjectAccessReview for `get` on the path.
    Delegated,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line, for log collectors.
    #[default]
    Json,
    /// Human-readable lines, for a terminal.
    Text,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct LoggingConfig {
    pub format: LogFormat,
    /// A level (`info`) or a `tracing` filter (`info,kube=warn`); `RUST_LOG`
    /// overrides it where the binary honours it.
    pub level: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            level: "info".to_owned(),
        }
    }
}
