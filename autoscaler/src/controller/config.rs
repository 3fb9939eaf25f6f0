//! The autoscaler's configuration: one YAML file, read and validated at start.
//!
//! Every key has a default, so an empty file is valid and a file names only
//! what it changes. Unknown keys are errors, and every error names the key
//! (`prometheus.url`) and, where the parser knows it, the line.
//! `deploy/autoscaler-config.example.yaml` lists every key with its default.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

// Logging is configured the same way in every Phalanx binary.
use phalanx_scheduler::controller::config::{dns_label, log_filter};
pub use phalanx_scheduler::controller::config::{LogFormat, LoggingConfig};

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read the autoscaler config: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Malformed YAML, an unknown key, or a value of the wrong type.
    #[error("{origin}{}: {}{message}", location(*line, *column), key_prefix(key))]
    Parse {
        origin: String,
        /// Dotted path of the offending key; empty for the whole document.
        key: String,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
    /// Values out of range or inconsistent; all of them at once.
    #[error("{origin}: {}", join(violations))]
    Invalid {
        origin: String,
        violations: Vec<Violation>,
    },
}

/// One broken rule, e.g. `controlPeriodSeconds: must be above 0, got 0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub key: &'static str,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!(":{line}:{column}"),
        (Some(line), None) => format!(":{line}"),
        _ => String::new(),
    }
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("{key}: ")
    }
}

fn join(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(Violation::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The whole configuration of `phalanx-autoscaler run`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct AutoscalerConfig {
    /// Each autoscaler reads its metrics and decides once per period.
    pub control_period_seconds: f64,
    /// Only autoscalers in this namespace; all namespaces when absent.
    pub namespace: Option<String>,
    pub prometheus: PrometheusConfig,
    pub capacity: CapacityConfig,
    pub leader_election: LeaderElectionConfig,
    pub http: HttpConfig,
    pub logging: LoggingConfig,
}

impl Default for AutoscalerConfig {
    fn default() -> Self {
        Self {
            control_period_seconds: 15.0,
            namespace: None,
            prometheus: PrometheusConfig::default(),
            capacity: CapacityConfig::default(),
            leader_election: LeaderElectionConfig::default(),
            http: HttpConfig::default(),
            logging: LoggingConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct PrometheusConfig {
    /// Base URL of the Prometheus HTTP API.
    pub url: String,
    /// Bound on each query, on the server and on the wire.
    pub timeout_seconds: f64,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        Self {
            url: "http://prometheus-operated.monitoring.svc:9090".to_owned(),
            timeout_seconds: 5.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct CapacityConfig {
    /// Check that new replicas can be placed before scaling up. Off only for
    /// clusters whose nodes the autoscaler cannot see.
    pub enabled: bool,
    /// The placement policy the check places with; the scheduler's, ideally.
    pub policy: String,
}

impl Default for CapacityConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            policy: "phalanx".to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct LeaderElectionConfig {
    /// Off only for a single replica; two unelected replicas would both scale.
    pub enabled: bool,
    pub lease_name: String,
    pub lease_namespace: String,
    pub lease_duration_seconds: u64,
    /// Renew this long before the Lease expires; below the duration.
    pub renew_grace_seconds: u64,
    /// This replica's name in the Lease; default: the pod's hostname.
    pub identity: Option<String>,
}

impl Default for LeaderElectionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            lease_name: "phalanx-autoscaler".to_owned(),
            lease_namespace: "kube-system".to_owned(),
            lease_duration_seconds: 15,
            renew_grace_seconds: 5,
            identity: None,
        }
    }
}

impl LeaderElectionConfig {
    /// The configured identity, else the pod name, else one made unique by
    /// the process id.
    pub fn resolved_identity(&self) -> String {
        self.identity
            .clone()
            .or_else(|| std::env::var("POD_NAME").ok())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .filter(|name| !name.trim().is_empty())
            .unwrap_or_else(|| format!("phalanx-autoscaler-{}", std::process::id()))
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpConfig {
    /// Serves `/metrics`, `/healthz` and `/readyz`.
    pub bind_address: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            bind_address: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8080),
        }
    }
}

impl AutoscalerConfig {
    /// Parses and validates YAML; `origin` names the text in errors.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config = parse(text, origin)?;
        let violations = config.violations();
        if violations.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                origin: origin.to_owned(),
                violations,
            })
        }
    }

    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml(&text, &path.display().to_string())
    }

    pub fn control_period(&self) -> Duration {
        seconds(self.control_period_seconds)
    }

    pub fn prometheus_timeout(&self) -> Duration {
        seconds(self.prometheus.timeout_seconds)
    }

    fn violations(&self) -> Vec<Violation> {
        let mut out = Vec::new();
        let mut push = |key: &'static str, message: String| out.push(Violation { key, message });
        for (key, value) in [
            ("controlPeriodSeconds", self.control_period_seconds),
            ("prometheus.timeoutSeconds", self.prometheus.timeout_seconds),
        ] {
            if !(value > 0.0 && value <= MAX_SECONDS) {
                push(
                    key,
                    format!("must be a number of seconds above 0 and at most {MAX_SECONDS}, got {value}"),
                );
            }
        }
        if let Some(namespace) = &self.namespace {
            if dns_label(namespace).is_err() {
                push(
                    "namespace",
                    format!("must be a namespace name, got {namespace:?}"),
                );
            }
        }
        if let Err(error) =
            crate::controller::prometheus::MetricsReader::new(&self.prometheus.url, Duration::ZERO)
        {
            push("prometheus.url", error);
        } else if !(self.prometheus.url.starts_with("http://")
            || self.prometheus.url.starts_with("https://"))
        {
            push(
                "prometheus.url",
                format!(
                    "must be an http:// or https:// URL, got {:?}",
                    self.prometheus.url
                ),
            );
        }
        if let Err(error) = self
            .capacity
            .policy
            .parse::<phalanx_scheduler::engine::PolicyName>()
        {
            push("capacity.policy", error.to_string());
        }
        let election = &self.leader_election;
        if !election
            .lease_name
            .split('.')
            .all(|part| dns_label(part).is_ok())
        {
            push(
                "leaderElection.leaseName",
                format!("must be a DNS subdomain, got {:?}", election.lease_name),
            );
        }
        if dns_label(&election.lease_namespace).is_err() {
            push(
                "leaderElection.leaseNamespace",
                format!(
                    "must be a namespace name, got {:?}",
                    election.lease_namespace
                ),
            );
        }
        // kube-lease-manager panics on these; name the key instead.
        if election.lease_duration_seconds < 2 {
            push(
                "leaderElection.leaseDurationSeconds",
                format!(
                    "must be at least 2, got {}",
                    election.lease_duration_seconds
                ),
            );
        }
        if election.renew_grace_seconds == 0
            || election.renew_grace_seconds >= election.lease_duration_seconds
        {
            push(
                "leaderElection.renewGraceSeconds",
                format!(
                    "must be at least 1 and less than leaderElection.leaseDurationSeconds ({}), got {}",
                    election.lease_duration_seconds, election.renew_grace_seconds
                ),
            );
        }
        if election
            .identity
            .as_ref()
            .is_some_and(|id| id.trim().is_empty())
        {
            push(
                "leaderElection.identity",
                "must not be empty; leave it out to use the hostname".to_owned(),
            );
        }
        if log_filter(&self.logging.level).is_err() {
            push(
                "logging.level",
                format!(
                    "must be a level (trace, debug, info, warn, error, off) or a tracing filter, got {:?}",
                    self.logging.level
                ),
            );
        }
        out
    }
}

/// A year: beyond any sensible period, within `Duration`'s range.
const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

fn seconds(value: f64) -> Duration {
    if value.is_finite() && value > 0.0 {
        Duration::try_from_secs_f64(value).unwrap_or(Duration::MAX)
    } else {
        Duration::ZERO
    }
}

fn parse(text: &str, origin: &str) -> Result<AutoscalerConfig, ConfigError> {
    // A file of comments only is a YAML null: read it as "all defaults".
    let blank = text.lines().all(|line| {
        let line = line.trim();
        line.is_empty() || line.starts_with('#') || line == "---"
    });
    if blank {
        return Ok(AutoscalerConfig::default());
    }
    let deserializer = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let key = error.path().to_string();
        let key = if key == "." { String::new() } else { key };
        let inner = error.inner();
        let location = inner.location();
        let mut message = inner.to_string();
        // The parser appends its own location, which the error prints already.
        if let Some(at) = message.rfind(" at line ") {
            message.truncate(at);
        }
        ConfigError::Parse {
            origin: origin.to_owned(),
            message,
            key,
            line: location.as_ref().map(|l| l.line()),
            column: location.as_ref().map(|l| l.column()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_all_defaults() {
        let config = AutoscalerConfig::from_yaml("# nothing\n", "empty").expect("valid");
        assert_eq!(config, AutoscalerConfig::default());
        assert_eq!(config.control_period(), Duration::from_secs(15));
        assert_eq!(config.leader_election.lease_name, "phalanx-autoscaler");
    }

    #[test]
    fn the_example_file_is_valid_and_matches_the_defaults() {
        let text = include_str!("../../../deploy/autoscaler-config.example.yaml");
        let config = AutoscalerConfig::from_yaml(text, "example").expect("example is valid");
        assert_eq!(config, AutoscalerConfig::default());
    }

    #[test]
    fn unknown_and_mistyped_keys_name_the_key() {
        let error = AutoscalerConfig::from_yaml("prometheus:\n  uri: http://x\n", "cfg")
            .expect_err("unknown key");
        let text = error.to_string();
        assert!(text.starts_with("cfg:2:"), "{text}");
        assert!(
            text.contains("prometheus.uri") || text.contains("unknown field `uri`"),
            "{text}"
        );
        let error = AutoscalerConfig::from_yaml("controlPeriodSeconds: soon\n", "cfg")
            .expect_err("wrong type");
        assert!(
            error.to_string().contains("controlPeriodSeconds: "),
            "{error}"
        );
    }

    #[test]
    fn out_of_range_values_are_all_reported() {
        let text = "controlPeriodSeconds: 0\nprometheus:\n  url: ftp://x\ncapacity:\n  policy: tetris\nleaderElection:\n  leaseDurationSeconds: 5\n  renewGraceSeconds: 5\nlogging:\n  level: verbose\n";
        let error = AutoscalerConfig::from_yaml(text, "cfg").expect_err("invalid");
        let ConfigError::Invalid { violations, .. } = &error else {
            panic!("expected violations: {error}");
        };
        let keys: Vec<&str> = violations.iter().map(|v| v.key).collect();
        assert_eq!(
            keys,
            [
                "controlPeriodSeconds",
                "prometheus.url",
                "capacity.policy",
                "leaderElection.renewGraceSeconds",
                "logging.level"
            ],
            "{error}"
        );
    }
}
