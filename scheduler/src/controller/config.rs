//! The scheduler's configuration: one YAML file, read and validated at start.
//!
//! Every key has a default, so an empty file is a valid configuration and a
//! file only names what it changes. Mistakes are reported before anything
//! starts, and every error names the key that is wrong (`binding.qps`), with the
//! file and line where the parser knows them: an unknown or misspelt key is an
//! error rather than a silently ignored setting.
//!
//! `deploy/scheduler-config.example.yaml` lists every key with its default.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::engine::policy::PolicyName;

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the scheduler config: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The YAML is malformed, has an unknown key, or a value of the wrong type.
    #[error("{origin}{}: {}{message}", location(*line, *column), key_prefix(key))]
    Parse {
        /// Where the text came from (a path, or a name for text built in code).
        origin: String,
        /// Dotted path of the offending key (`binding.qsp`); empty for the document.
        key: String,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
    /// Well-formed, but some values are out of range or inconsistent. All such
    /// problems are reported at once so that one edit fixes them.
    #[error("{}{}", origin_prefix(origin), join(violations))]
    Invalid {
        origin: Option<String>,
        violations: Vec<Violation>,
    },
}

/// One rule a value breaks, e.g. `binding.qps: must be at least 1, got 0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Dotted path of the key in the YAML file.
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

fn origin_prefix(origin: &Option<String>) -> String {
    origin
        .as_ref()
        .map(|origin| format!("{origin}: "))
        .unwrap_or_default()
}

fn join(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(Violation::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The whole configuration of the `phalanx-scheduler` binary.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct SchedulerConfig {
    /// Pods whose `spec.schedulerName` is this are ours.
    pub scheduler_name: String,
    /// How nodes are scored and GPUs chosen.
    #[serde(deserialize_with = "policy_by_name")]
    pub policy: PolicyName,
    pub telemetry: TelemetryConfig,
    pub binding: BindingConfig,
    pub backoff: BackoffConfig,
    pub gangs: GangConfig,
    pub leader_election: LeaderElectionConfig,
    pub http: HttpConfig,
    pub extender: ExtenderConfig,
    pub logging: LoggingConfig,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            scheduler_name: phalanx_api::SCHEDULER_NAME.to_owned(),
            policy: PolicyName::Phalanx,
            telemetry: TelemetryConfig::default(),
            binding: BindingConfig::default(),
            backoff: BackoffConfig::default(),
            gangs: GangConfig::default(),
            leader_election: LeaderElectionConfig::default(),
            http: HttpConfig::default(),
            extender: ExtenderConfig::default(),
            logging: LoggingConfig::default(),
        }
    }
}

/// GPU telemetry published by the device plugin on `GpuNode` status.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct TelemetryConfig {
    /// Samples older than this are ignored: the GPU is placed on its
    /// allocations alone, as if it had no telemetry.
    pub max_age_seconds: f64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            max_age_seconds: 10.0,
        }
    }
}

impl TelemetryConfig {
    pub fn max_age(&self) -> Duration {
        seconds(self.max_age_seconds)
    }
}

/// Writing placements to the API server.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct BindingConfig {
    /// Sustained Binding requests per second (token bucket rate).
    pub qps: u32,
    /// Requests allowed at once above the sustained rate (token bucket size).
    pub burst: u32,
    /// Bindings in flight at once.
    pub concurrency: usize,
    /// How the GPU assignment annotation is written: `patch` (a pod patch, then the
    /// Binding) or `withBinding` (on the Binding itself, one write).
    pub annotation_write: super::binder::AnnotationWrite,
}

impl Default for BindingConfig {
    fn default() -> Self {
        Self {
            qps: 5000,
            burst: 10000,
            concurrency: 64,
            annotation_write: super::binder::AnnotationWrite::default(),
        }
    }
}

/// Retrying pods that did not fit, as kube-scheduler's backoff queue does.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct BackoffConfig {
    /// Backoff after a pod's first failed attempt; doubles on each further one.
    pub initial_seconds: f64,
    /// Ceiling of the doubling.
    pub max_seconds: f64,
    /// An unschedulable pod is retried after this long even if no cluster event
    /// suggested it might fit now (kube-scheduler's podMaxInUnschedulablePodsDuration).
    pub max_unschedulable_seconds: f64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial_seconds: 1.0,
            max_seconds: 10.0,
            max_unschedulable_seconds: 300.0,
        }
    }
}

impl BackoffConfig {
    pub fn initial(&self) -> Duration {
        seconds(self.initial_seconds)
    }

    pub fn max(&self) -> Duration {
        seconds(self.max_seconds)
    }

    pub fn max_unschedulable(&self) -> Duration {
        seconds(self.max_unschedulable_seconds)
    }
}

/// Gang (PodGroup) scheduling.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct GangConfig {
    /// Node label whose value must be the same for every member of a gang
    /// (e.g. a rack or NVLink domain); `None` places gangs anywhere.
    pub topology_key: Option<String>,
    /// How long a gang may wait for all its members when its PodGroup sets no
    /// `scheduleTimeoutSeconds`.
    pub default_timeout_seconds: u64,
}

impl Default for GangConfig {
    fn default() -> Self {
        Self {
            topology_key: None,
            default_timeout_seconds: 600,
        }
    }
}

impl GangConfig {
    pub fn default_timeout(&self) -> Duration {
        Duration::from_secs(self.default_timeout_seconds)
    }
}

/// Leader election on a `coordination.k8s.io` Lease, so that only one replica schedules.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct LeaderElectionConfig {
    /// Off only for a single replica (development); two unelected replicas
    /// would place pods on the same GPUs.
    pub enabled: bool,
    pub lease_name: String,
    pub lease_namespace: String,
    /// The Lease is the holder's for this long after its last renewal.
    pub lease_duration_seconds: u64,
    /// The holder renews this long before the Lease would expire; must be
    /// shorter than the duration (kube-lease-manager's `grace`).
    pub renew_grace_seconds: u64,
    /// This replica's name in the Lease; default: the pod's hostname.
    pub identity: Option<String>,
}

impl Default for LeaderElectionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            lease_name: "phalanx-scheduler".to_owned(),
            lease_namespace: "kube-system".to_owned(),
            lease_duration_seconds: 15,
            renew_grace_seconds: 5,
            identity: None,
        }
    }
}

impl LeaderElectionConfig {
    pub fn lease_duration(&self) -> Duration {
        Duration::from_secs(self.lease_duration_seconds)
    }

    pub fn renew_grace(&self) -> Duration {
        Duration::from_secs(self.renew_grace_seconds)
    }

    /// The configured identity, else `hostname` (in a pod, the pod's name, which
    /// is unique among replicas), else a name made unique by the process id.
    pub fn identity_or(&self, hostname: Option<String>) -> String {
        self.identity
            .clone()
            .or(hostname.filter(|name| !name.trim().is_empty()))
            .unwrap_or_else(|| format!("phalanx-scheduler-{}", std::process::id()))
    }

    /// [`Self::identity_or`] with the `HOSTNAME` environment variable, which
    /// Kubernetes sets to the pod name.
    pub fn resolved_identity(&self) -> String {
        self.identity_or(std::env::var("HOSTNAME").ok())
    }
}

/// The health and metrics server.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpConfig {
    /// Serves `/metrics`, `/healthz` and `/readyz`.
    pub bind_address: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            // kube-scheduler's historical insecure port, which probes and
            // scrape configs often already expect.
            bind_address: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 10251),
        }
    }
}

/// The kube-scheduler HTTP extender endpoint.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ExtenderConfig {
    pub bind_address: SocketAddr,
}

impl Default for ExtenderConfig {
    fn default() -> Self {
        Self {
            bind_address: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8888),
        }
    }
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

impl SchedulerConfig {
    /// Parses and validates YAML text; `origin` names it in errors (usually its path).
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config = parse(text, origin)?;
        config.validate().map_err(|error| match error {
            ConfigError::Invalid { violations, .. } => ConfigError::Invalid {
                origin: Some(origin.to_owned()),
                violations,
            },
            other => other,
        })?;
        Ok(config)
    }

    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml(&text, &path.display().to_string())
    }

    /// Checks ranges and consistency; reports every broken rule, not just the first.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let violations = self.violations();
        if violations.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid {
                origin: None,
                violations,
            })
        }
    }

    pub fn telemetry_max_age(&self) -> Duration {
        self.telemetry.max_age()
    }

    fn violations(&self) -> Vec<Violation> {
        let mut out = Rules::default();
        // Pod validation requires spec.schedulerName to be a DNS subdomain, so
        // any other name could never match a pod.
        out.check(
            "schedulerName",
            dns_subdomain(&self.scheduler_name),
            &self.scheduler_name,
        );

        out.positive_seconds("telemetry.maxAgeSeconds", self.telemetry.max_age_seconds);

        let binding = &self.binding;
        out.at_least("binding.qps", u64::from(binding.qps), 1);
        out.at_least("binding.burst", u64::from(binding.burst), 1);
        if binding.burst < binding.qps {
            out.push(
                "binding.burst",
                format!(
                    "must be at least binding.qps ({}), got {}",
                    binding.qps, binding.burst
                ),
            );
        }
        if !(1..=1024).contains(&binding.concurrency) {
            out.push(
                "binding.concurrency",
                format!("must be between 1 and 1024, got {}", binding.concurrency),
            );
        }

        let backoff = &self.backoff;
        out.positive_seconds("backoff.initialSeconds", backoff.initial_seconds);
        out.positive_seconds("backoff.maxSeconds", backoff.max_seconds);
        out.positive_seconds(
            "backoff.maxUnschedulableSeconds",
            backoff.max_unschedulable_seconds,
        );
        if backoff.max_seconds < backoff.initial_seconds {
            out.push(
                "backoff.maxSeconds",
                format!(
                    "must be at least backoff.initialSeconds ({}), got {}",
                    backoff.initial_seconds, backoff.max_seconds
                ),
            );
        }

        if let Some(key) = &self.gangs.topology_key {
            out.check("gangs.topologyKey", label_key(key), key);
        }
        out.at_least(
            "gangs.defaultTimeoutSeconds",
            self.gangs.default_timeout_seconds,
            1,
        );

        let election = &self.leader_election;
        out.check(
            "leaderElection.leaseName",
            dns_subdomain(&election.lease_name),
            &election.lease_name,
        );
        out.check(
            "leaderElection.leaseNamespace",
            dns_label(&election.lease_namespace),
            &election.lease_namespace,
        );
        // kube-lease-manager panics on a zero duration or grace, or a grace not
        // shorter than the duration: catch both here, with the key named.
        out.at_least(
            "leaderElection.leaseDurationSeconds",
            election.lease_duration_seconds,
            2,
        );
        out.at_least(
            "leaderElection.renewGraceSeconds",
            election.renew_grace_seconds,
            1,
        );
        if election.renew_grace_seconds >= election.lease_duration_seconds {
            out.push(
                "leaderElection.renewGraceSeconds",
                format!(
                    "must be less than leaderElection.leaseDurationSeconds ({}), got {}",
                    election.lease_duration_seconds, election.renew_grace_seconds
                ),
            );
        }
        if let Some(identity) = &election.identity {
            if identity.trim().is_empty() {
                out.push(
                    "leaderElection.identity",
                    "must not be empty; leave it out to use the hostname".to_owned(),
                );
            }
        }

        if ports_collide(self.http.bind_address, self.extender.bind_address) {
            out.push(
                "extender.bindAddress",
                format!(
                    "must not use the port of http.bindAddress ({}), got {}",
                    self.http.bind_address, self.extender.bind_address
                ),
            );
        }

        out.check(
            "logging.level",
            log_filter(&self.logging.level),
            &self.logging.level,
        );
        out.0
    }
}

/// Collects violations with uniform messages.
#[derive(Default)]
struct Rules(Vec<Violation>);

impl Rules {
    fn push(&mut self, key: &'static str, message: String) {
        self.0.push(Violation { key, message });
    }

    fn at_least(&mut self, key: &'static str, value: u64, min: u64) {
        if value < min {
            self.push(key, format!("must be at least {min}, got {value}"));
        }
    }

    fn positive_seconds(&mut self, key: &'static str, value: f64) {
        // Also bounds the value so that `Duration` conversions stay exact.
        if !(value > 0.0 && value <= MAX_SECONDS) {
            self.push(
                key,
                format!(
                    "must be a number of seconds above 0 and at most {MAX_SECONDS}, got {value}"
                ),
            );
        }
    }

    /// `rule` says what a valid value looks like when `value` is not one.
    fn check(&mut self, key: &'static str, rule: Result<(), String>, value: &str) {
        if let Err(expected) = rule {
            self.push(key, format!("must be {expected}, got {value:?}"));
        }
    }
}

/// A year: far beyond any sensible timeout, far below `Duration`'s limits.
const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

/// Seconds as a `Duration`; out-of-range values (only possible in a config that
/// skipped validation) saturate instead of panicking.
fn seconds(value: f64) -> Duration {
    if value.is_nan() || value <= 0.0 {
        Duration::ZERO
    } else {
        Duration::try_from_secs_f64(value).unwrap_or(Duration::MAX)
    }
}

/// Two listeners conflict on the same non-zero port unless their IPs differ
/// and neither is the wildcard.
fn ports_collide(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn policy_by_name<'de, D: Deserializer<'de>>(deserializer: D) -> Result<PolicyName, D::Error> {
    let name = String::deserialize(deserializer)?;
    name.parse().map_err(serde::de::Error::custom)
}

/// RFC 1123 label: what Kubernetes requires of namespace names.
pub fn dns_label(value: &str) -> Result<(), String> {
    const EXPECTED: &str =
        "a DNS label (at most 63 lowercase letters, digits and '-', starting and ending alphanumeric)";
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && starts_and_ends_alphanumeric(value);
    if ok {
        Ok(())
    } else {
        Err(EXPECTED.to_owned())
    }
}

/// RFC 1123 subdomain: what Kubernetes requires of most object names.
fn dns_subdomain(value: &str) -> Result<(), String> {
    const EXPECTED: &str = "a DNS subdomain (at most 253 lowercase letters, digits, '-' and '.', starting and ending alphanumeric)";
    let ok = !value.is_empty()
        && value.len() <= 253
        && value.split('.').all(|part| dns_label(part).is_ok());
    if ok {
        Ok(())
    } else {
        Err(EXPECTED.to_owned())
    }
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at most
/// 63 letters, digits, '-', '_' and '.', starting and ending alphanumeric.
fn label_key(value: &str) -> Result<(), String> {
    const EXPECTED: &str = "a label key ([prefix/]name, the name at most 63 letters, digits, '-', '_' and '.', starting and ending alphanumeric, the prefix a DNS subdomain)";
    let (prefix, name) = match value.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, value),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && starts_and_ends_alphanumeric(name);
    let prefix_ok = prefix.is_none_or(|prefix| dns_subdomain(prefix).is_ok());
    if name_ok && prefix_ok {
        Ok(())
    } else {
        Err(EXPECTED.to_owned())
    }
}

fn starts_and_ends_alphanumeric(value: &str) -> bool {
    let bytes = value.as_bytes();
    matches!((bytes.first(), bytes.last()), (Some(first), Some(last))
        if first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric())
}

/// A bare level, or a `tracing` filter with targets. A lone word must be a
/// level: `tracing` would read `verbose` as a target name and log nothing.
pub fn log_filter(value: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    const EXPECTED: &str =
        "one of trace, debug, info, warn, error, off, or a tracing filter such as \"info,kube=warn\"";
    let trimmed = value.trim();
    let is_directive_list = trimmed.contains(['=', ',', '[']);
    let ok = if is_directive_list {
        tracing_subscriber::EnvFilter::builder()
            .parse(trimmed)
            .is_ok()
    } else {
        LEVELS.contains(&trimmed.to_ascii_lowercase().as_str())
    };
    if ok {
        Ok(())
    } else {
        Err(EXPECTED.to_owned())
    }
}

/// Deserializes with the path of every key tracked, so errors say which key.
fn parse(text: &str, origin: &str) -> Result<SchedulerConfig, ConfigError> {
    // An empty file (or one of comments only) is a YAML null, not a mapping:
    // read it as the empty mapping so that it means "all defaults".
    if is_blank_yaml(text) {
        return Ok(SchedulerConfig::default());
    }
    let deserializer = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let key = error.path().to_string();
        let key = if key == "." { String::new() } else { key };
        let inner = error.inner();
        let location = inner.location();
        ConfigError::Parse {
            origin: origin.to_owned(),
            message: bare_message(&inner.to_string(), &key),
            key,
            line: location.as_ref().map(|l| l.line()),
            column: location.as_ref().map(|l| l.column()),
        }
    })
}

fn is_blank_yaml(text: &str) -> bool {
    text.lines().all(|line| {
        let line = line.trim();
        line.is_empty() || line.starts_with('#') || line == "---"
    })
}

/// serde_yaml_ng's message without the parts our error prints itself: its
/// own path prefix (that of the enclosing mapping, some ancestor of `key`) and
/// its ` at line L column C` suffix.
fn bare_message(message: &str, key: &str) -> String {
    let mut message = message;
    if let Some(at) = message.rfind(" at line ") {
        message = &message[..at];
    }
    let mut ancestor = key;
    while !ancestor.is_empty() {
        if let Some(rest) = message
            .strip_prefix(ancestor)
            .and_then(|m| m.strip_prefix(": "))
        {
            return rest.to_owned();
        }
        ancestor = ancestor.rsplit_once('.').map_or("", |(parent, _)| parent);
    }
    message.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../deploy/scheduler-config.example.yaml");

    fn parse_err(yaml: &str) -> ConfigError {
        SchedulerConfig::from_yaml(yaml, "test.yaml").expect_err("config should be rejected")
    }

    /// The keys of the violations of `yaml` (which must parse).
    fn violated_keys(yaml: &str) -> Vec<&'static str> {
        let config = parse(yaml, "test.yaml").expect("config should parse");
        config.violations().into_iter().map(|v| v.key).collect()
    }

    #[test]
    fn empty_file_is_all_defaults() {
        for text in ["", "\n", "# nothing set\n", "---\n", "{}"] {
            let config = SchedulerConfig::from_yaml(text, "empty.yaml").expect("empty is valid");
            assert_eq!(config, SchedulerConfig::default(), "text {text:?}");
        }
    }

    #[test]
    fn defaults_are_as_documented() {
        let config = SchedulerConfig::default();
        assert_eq!(config.scheduler_name, "phalanx");
        assert_eq!(config.policy, PolicyName::Phalanx);
        assert_eq!(config.telemetry_max_age(), Duration::from_secs(10));
        assert_eq!(
            config.binding,
            BindingConfig {
                qps: 5000,
                burst: 10000,
                concurrency: 64,
                annotation_write: crate::controller::binder::AnnotationWrite::WithBinding,
            }
        );
        assert_eq!(config.backoff.initial(), Duration::from_secs(1));
        assert_eq!(config.backoff.max(), Duration::from_secs(10));
        assert_eq!(config.backoff.max_unschedulable(), Duration::from_secs(300));
        assert_eq!(config.gangs.topology_key, None);
        assert_eq!(config.gangs.default_timeout(), Duration::from_secs(600));
        assert!(config.leader_election.enabled);
        assert_eq!(config.leader_election.lease_name, "phalanx-scheduler");
        assert_eq!(config.leader_election.lease_namespace, "kube-system");
        assert_eq!(
            config.leader_election.lease_duration(),
            Duration::from_secs(15)
        );
        assert_eq!(config.leader_election.renew_grace(), Duration::from_secs(5));
        assert_eq!(config.http.bind_address.to_string(), "0.0.0.0:10251");
        assert_eq!(config.extender.bind_address.to_string(), "0.0.0.0:8888");
        assert_eq!(config.logging.format, LogFormat::Json);
        assert_eq!(config.logging.level, "info");
        config.validate().expect("defaults are valid");
    }

    #[test]
    fn example_file_parses_and_sets_every_section() {
        let config = SchedulerConfig::from_yaml(EXAMPLE, "scheduler-config.example.yaml")
            .expect("example is valid");
        // The example documents the defaults, except where it shows a choice.
        let expected = SchedulerConfig {
            gangs: GangConfig {
                topology_key: Some("topology.kubernetes.io/zone".to_owned()),
                ..GangConfig::default()
            },
            ..SchedulerConfig::default()
        };
        assert_eq!(config, expected);
    }

    #[test]
    fn partial_file_keeps_other_defaults() {
        let config = SchedulerConfig::from_yaml(
            "policy: FGD\nbinding:\n  qps: 100\n  burst: 200\nlogging:\n  format: text\n",
            "t.yaml",
        )
        .expect("valid");
        assert_eq!(config.policy, PolicyName::Fgd);
        assert_eq!(config.binding.qps, 100);
        assert_eq!(config.binding.burst, 200);
        assert_eq!(config.binding.concurrency, 64);
        assert_eq!(config.logging.format, LogFormat::Text);
        assert_eq!(config.backoff, BackoffConfig::default());
    }

    #[test]
    fn unknown_key_is_named_with_its_path_and_line() {
        let error = parse_err("binding:\n  qsp: 10\n");
        let ConfigError::Parse { key, line, .. } = &error else {
            panic!("expected a parse error, got {error:?}");
        };
        assert_eq!(key, "binding.qsp");
        assert_eq!(*line, Some(2));
        let text = error.to_string();
        assert!(text.starts_with("test.yaml:2:"), "{text}");
        assert!(text.contains("binding.qsp: unknown field `qsp`"), "{text}");
    }

    #[test]
    fn unknown_top_level_key_is_named() {
        let error = parse_err("schedulerNmae: x\n");
        assert!(
            error.to_string().contains("schedulerNmae: unknown field"),
            "{error}"
        );
    }

    #[test]
    fn wrong_type_names_the_path() {
        let error = parse_err("leaderElection:\n  leaseDurationSeconds: soon\n");
        let ConfigError::Parse {
            key, line, message, ..
        } = &error
        else {
            panic!("expected a parse error, got {error:?}");
        };
        assert_eq!(key, "leaderElection.leaseDurationSeconds");
        assert_eq!(*line, Some(2));
        assert!(message.contains("invalid type"), "{message}");
    }

    #[test]
    fn negative_count_and_bad_address_name_the_path() {
        let error = parse_err("binding:\n  concurrency: -1\n");
        assert!(
            error.to_string().contains("binding.concurrency: "),
            "{error}"
        );
        let error = parse_err("http:\n  bindAddress: localhost\n");
        assert!(error.to_string().contains("http.bindAddress: "), "{error}");
    }

    #[test]
    fn unknown_policy_lists_the_valid_ones() {
        let error = parse_err("policy: best\n");
        let text = error.to_string();
        assert!(text.contains("policy: unknown policy \"best\""), "{text}");
        assert!(text.contains("bestfit"), "{text}");
    }

    #[test]
    fn unknown_log_format_is_named() {
        let error = parse_err("logging:\n  format: xml\n");
        assert!(
            error
                .to_string()
                .contains("logging.format: unknown variant `xml`"),
            "{error}"
        );
    }

    #[test]
    fn malformed_yaml_is_reported_with_a_line() {
        let error = parse_err("binding:\n  qps: [1\n");
        let ConfigError::Parse { line, .. } = &error else {
            panic!("expected a parse error, got {error:?}");
        };
        assert!(line.is_some(), "{error}");
        let error = parse_err("- a\n- b\n");
        assert!(matches!(error, ConfigError::Parse { .. }), "{error:?}");
    }

    #[test]
    fn validation_message_names_key_and_value() {
        let error = parse_err("binding:\n  qps: 0\n");
        assert_eq!(
            error.to_string(),
            "test.yaml: binding.qps: must be at least 1, got 0"
        );
        let error = SchedulerConfig {
            binding: BindingConfig {
                qps: 0,
                ..BindingConfig::default()
            },
            ..SchedulerConfig::default()
        }
        .validate()
        .expect_err("invalid");
        assert_eq!(error.to_string(), "binding.qps: must be at least 1, got 0");
    }

    #[test]
    fn all_violations_are_reported_together() {
        let error = parse_err("binding:\n  concurrency: 0\ngangs:\n  defaultTimeoutSeconds: 0\n");
        let ConfigError::Invalid { violations, .. } = &error else {
            panic!("expected a validation error, got {error:?}");
        };
        let keys: Vec<_> = violations.iter().map(|v| v.key).collect();
        assert_eq!(keys, ["binding.concurrency", "gangs.defaultTimeoutSeconds"]);
    }

    #[test]
    fn each_rule_rejects_its_key() {
        let cases: &[(&str, &[&str])] = &[
            ("schedulerName: Phalanx_Scheduler", &["schedulerName"]),
            ("schedulerName: ''", &["schedulerName"]),
            (
                "telemetry: {maxAgeSeconds: 0}",
                &["telemetry.maxAgeSeconds"],
            ),
            (
                "telemetry: {maxAgeSeconds: -1.5}",
                &["telemetry.maxAgeSeconds"],
            ),
            (
                "telemetry: {maxAgeSeconds: .nan}",
                &["telemetry.maxAgeSeconds"],
            ),
            (
                "telemetry: {maxAgeSeconds: .inf}",
                &["telemetry.maxAgeSeconds"],
            ),
            ("binding: {qps: 0, burst: 1}", &["binding.qps"]),
            (
                "binding: {qps: 0, burst: 0}",
                &["binding.qps", "binding.burst"],
            ),
            ("binding: {qps: 10, burst: 5}", &["binding.burst"]),
            ("binding: {concurrency: 0}", &["binding.concurrency"]),
            ("binding: {concurrency: 1025}", &["binding.concurrency"]),
            ("backoff: {initialSeconds: 0}", &["backoff.initialSeconds"]),
            ("backoff: {maxSeconds: 0.5}", &["backoff.maxSeconds"]),
            (
                "backoff: {initialSeconds: 20, maxSeconds: 10}",
                &["backoff.maxSeconds"],
            ),
            (
                "backoff: {maxUnschedulableSeconds: 0}",
                &["backoff.maxUnschedulableSeconds"],
            ),
            ("gangs: {topologyKey: 'not a key'}", &["gangs.topologyKey"]),
            (
                "gangs: {topologyKey: 'Bad_Prefix/rack'}",
                &["gangs.topologyKey"],
            ),
            (
                "gangs: {topologyKey: 'example.com/'}",
                &["gangs.topologyKey"],
            ),
            ("gangs: {topologyKey: ''}", &["gangs.topologyKey"]),
            (
                "gangs: {defaultTimeoutSeconds: 0}",
                &["gangs.defaultTimeoutSeconds"],
            ),
            (
                "leaderElection: {leaseName: 'Phalanx'}",
                &["leaderElection.leaseName"],
            ),
            (
                "leaderElection: {leaseNamespace: 'kube.system'}",
                &["leaderElection.leaseNamespace"],
            ),
            (
                "leaderElection: {leaseDurationSeconds: 0, renewGraceSeconds: 0}",
                &[
                    "leaderElection.leaseDurationSeconds",
                    "leaderElection.renewGraceSeconds",
                    "leaderElection.renewGraceSeconds",
                ],
            ),
            (
                "leaderElection: {renewGraceSeconds: 15}",
                &["leaderElection.renewGraceSeconds"],
            ),
            (
                "leaderElection: {identity: ' '}",
                &["leaderElection.identity"],
            ),
            (
                "extender: {bindAddress: '127.0.0.1:10251'}",
                &["extender.bindAddress"],
            ),
            ("logging: {level: verbose}", &["logging.level"]),
            ("logging: {level: 'info,kube=loud'}", &["logging.level"]),
        ];
        for (yaml, keys) in cases {
            assert_eq!(violated_keys(yaml), *keys, "config {yaml:?}");
        }
    }

    #[test]
    fn valid_edge_values_pass() {
        for yaml in [
            "binding: {qps: 1, burst: 1, concurrency: 1}",
            "binding: {concurrency: 1024}",
            "backoff: {initialSeconds: 0.05, maxSeconds: 0.05}",
            "gangs: {topologyKey: rack}",
            "gangs: {topologyKey: 'phalanx.example.com/nvlink-domain'}",
            "leaderElection: {leaseDurationSeconds: 2, renewGraceSeconds: 1}",
            "extender: {bindAddress: '127.0.0.1:0'}\nhttp: {bindAddress: '127.0.0.1:0'}",
            "extender: {bindAddress: '10.0.0.1:9000'}\nhttp: {bindAddress: '10.0.0.2:9000'}",
            "logging: {level: DEBUG}",
            "logging: {level: 'info,kube=warn,phalanx_scheduler=debug'}",
        ] {
            assert_eq!(violated_keys(yaml), Vec::<&str>::new(), "config {yaml:?}");
        }
    }

    #[test]
    fn duration_accessors_never_panic() {
        let config = SchedulerConfig {
            telemetry: TelemetryConfig {
                max_age_seconds: f64::NAN,
            },
            backoff: BackoffConfig {
                initial_seconds: -1.0,
                max_seconds: f64::INFINITY,
                max_unschedulable_seconds: 1e300,
            },
            ..SchedulerConfig::default()
        };
        assert_eq!(config.telemetry_max_age(), Duration::ZERO);
        assert_eq!(config.backoff.initial(), Duration::ZERO);
        assert_eq!(config.backoff.max(), Duration::MAX);
        assert_eq!(config.backoff.max_unschedulable(), Duration::MAX);
        assert_eq!(
            SchedulerConfig::from_yaml("backoff: {initialSeconds: 0.25}", "t")
                .expect("valid")
                .backoff
                .initial(),
            Duration::from_millis(250)
        );
    }

    #[test]
    fn identity_prefers_config_then_hostname() {
        let mut election = LeaderElectionConfig::default();
        assert_eq!(election.identity_or(Some("phalanx-0".into())), "phalanx-0");
        assert!(election.identity_or(None).starts_with("phalanx-scheduler-"));
        assert!(election
            .identity_or(Some(String::new()))
            .starts_with("phalanx-scheduler-"));
        election.identity = Some("me".into());
        assert_eq!(election.identity_or(Some("phalanx-0".into())), "me");
    }

    #[test]
    fn load_reads_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "binding:\n  qps: 7\n  burst: 7\n").expect("write");
        let config = SchedulerConfig::load(&path).expect("valid");
        assert_eq!(config.binding.qps, 7);

        std::fs::write(&path, "binding:\n  qsp: 7\n").expect("write");
        let error = SchedulerConfig::load(&path).expect_err("invalid");
        assert!(
            error
                .to_string()
                .starts_with(&format!("{}:2:", path.display())),
            "{error}"
        );
    }

    #[test]
    fn missing_file_error_names_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nope.yaml");
        let error = SchedulerConfig::load(&path).expect_err("missing");
        assert!(matches!(error, ConfigError::Read { .. }), "{error:?}");
        assert!(
            error.to_string().contains(&path.display().to_string()),
            "{error}"
        );
    }

    #[test]
    fn non_utf8_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("binary.yaml");
        std::fs::write(&path, [0xff, 0xfe, 0x00]).expect("write");
        assert!(SchedulerConfig::load(&path).is_err());
    }
}
