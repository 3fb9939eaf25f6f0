//! The autoscaler's configuration: one YAML file, read and validated at start,
//! the same way as every Phalanx controller's
//! ([`phalanx_runtime::config::yaml_file`]).
//!
//! `deploy/autoscaler-config.example.yaml` lists every key with its default.

use std::time::Duration;

use serde::Deserialize;

use phalanx_runtime::config::sections;
use phalanx_runtime::config::{dns_label, seconds, Rules};
pub use phalanx_runtime::config::{
    ConfigError, ConfigFile, ControllerDefaults, LogFormat, LoggingConfig, Violation,
};

/// The autoscaler's defaults in the sections every controller has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoscalerDefaults;

impl ControllerDefaults for AutoscalerDefaults {
    const NAME: &'static str = "phalanx-autoscaler";
    const HTTP_PORT: u16 = 8080;
}

pub type LeaderElectionConfig = sections::LeaderElectionConfig<AutoscalerDefaults>;
pub type HttpConfig = sections::HttpConfig<AutoscalerDefaults>;

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
    /// When set (e.g. `namespace`), every selector of every query an
    /// autoscaler runs must match this label to the autoscaler's own
    /// namespace: missing matchers are added, other values refused
    /// ([`super::namespace_label`]). Off by default: queries run as written
    /// and can read every series Prometheus holds.
    pub enforce_namespace_label: Option<String>,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        Self {
            url: "http://prometheus-operated.monitoring.svc:9090".to_owned(),
            timeout_seconds: 5.0,
            enforce_namespace_label: None,
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

impl AutoscalerConfig {
    pub fn control_period(&self) -> Duration {
        seconds(self.control_period_seconds)
    }

    pub fn prometheus_timeout(&self) -> Duration {
        seconds(self.prometheus.timeout_seconds)
    }
}

impl ConfigFile for AutoscalerConfig {
    const COMPONENT: &'static str = "autoscaler";

    fn violations(&self) -> Vec<Violation> {
        let mut out = Rules::default();
        out.positive_seconds("controlPeriodSeconds", self.control_period_seconds);
        out.positive_seconds("prometheus.timeoutSeconds", self.prometheus.timeout_seconds);
        if let Some(namespace) = &self.namespace {
            out.check("namespace", dns_label(namespace), namespace);
        }
        if let Some(label) = &self.prometheus.enforce_namespace_label {
            if let Some(problem) = crate::promql::label_name_problem(label) {
                out.push(
                    "prometheus.enforceNamespaceLabel",
                    format!("{label:?} {problem}"),
                );
            }
        }
        if let Err(error) =
            crate::controller::prometheus::MetricsReader::new(&self.prometheus.url, Duration::ZERO)
        {
            out.push("prometheus.url", error);
        } else if !(self.prometheus.url.starts_with("http://")
            || self.prometheus.url.starts_with("https://"))
        {
            out.push(
                "prometheus.url",
                format!(
                    "must be an http:// or https:// URL, got {:?}",
                    self.prometheus.url
                ),
            );
        }
        if let Err(error) = self.capacity.policy.parse::<phalanx_engine::PolicyName>() {
            out.push("capacity.policy", error.to_string());
        }
        out.leader_election(&self.leader_election);
        out.http(&self.http);
        out.logging(&self.logging);
        out.into_violations()
    }
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
    fn a_partial_shared_section_keeps_the_autoscaler_defaults() {
        // The sections are the scheduler's types; their defaults must still be ours.
        let config = AutoscalerConfig::from_yaml(
            "leaderElection:\n  leaseDurationSeconds: 20\nhttp: {}\n",
            "cfg",
        )
        .expect("valid");
        assert_eq!(config.leader_election.lease_name, "phalanx-autoscaler");
        assert_eq!(config.leader_election.lease_duration_seconds, 20);
        assert_eq!(config.http.bind_address.port(), 8080);
        assert!(config
            .leader_election
            .identity_or(None)
            .starts_with("phalanx-autoscaler-"));
    }

    #[test]
    fn the_namespace_label_is_off_by_default_and_must_be_a_label_name() {
        assert_eq!(
            AutoscalerConfig::default()
                .prometheus
                .enforce_namespace_label,
            None
        );
        let config =
            AutoscalerConfig::from_yaml("prometheus:\n  enforceNamespaceLabel: namespace\n", "cfg")
                .expect("valid");
        assert_eq!(
            config.prometheus.enforce_namespace_label.as_deref(),
            Some("namespace")
        );
        for bad in ["''", "__name__", "9lives"] {
            let error = AutoscalerConfig::from_yaml(
                &format!("prometheus:\n  enforceNamespaceLabel: {bad}\n"),
                "cfg",
            )
            .expect_err("invalid label");
            assert!(
                error
                    .to_string()
                    .contains("prometheus.enforceNamespaceLabel: "),
                "{error}"
            );
        }
    }

    #[test]
    fn a_missing_file_names_the_autoscaler_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        let error =
            AutoscalerConfig::load(&dir.path().join("nope.yaml")).expect_err("missing file");
        assert!(
            error
                .to_string()
                .contains("cannot read the autoscaler config"),
            "{error}"
        );
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
        let text = "controlPeriodSeconds: 0\nprometheus:\n  url: ftp://x\n  enforceNamespaceLabel: kube-namespace\ncapacity:\n  policy: tetris\nleaderElection:\n  leaseDurationSeconds: 5\n  renewGraceSeconds: 5\nlogging:\n  level: verbose\n";
        let error = AutoscalerConfig::from_yaml(text, "cfg").expect_err("invalid");
        let ConfigError::Invalid { violations, .. } = &error else {
            panic!("expected violations: {error}");
        };
        let keys: Vec<&str> = violations.iter().map(|v| v.key).collect();
        assert_eq!(
            keys,
            [
                "controlPeriodSeconds",
                "prometheus.enforceNamespaceLabel",
                "prometheus.url",
                "capacity.policy",
                "leaderElection.renewGraceSeconds",
                "logging.level"
            ],
            "{error}"
        );
    }
}
