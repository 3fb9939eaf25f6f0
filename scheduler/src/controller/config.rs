//! The scheduler's configuration: one YAML file, read and validated at start
//! (`phalanx_runtime::config` says how every controller's file is read).
//!
//! `deploy/scheduler-config.example.yaml` lists every key with its default.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use phalanx_engine::policy::PolicyName;
use phalanx_engine::WhenUnsatisfiable;
use phalanx_kube::translate::{DefaultConstraint, DefaultSpread};
use phalanx_runtime::config::{dns_subdomain, label_key, ports_collide, seconds, Rules};
pub use phalanx_runtime::config::{
    ConfigError, ConfigFile, ControllerDefaults, HttpConfig, LeaderElectionConfig, LogFormat,
    LoggingConfig, Violation,
};
use phalanx_runtime::tls::{ClientCertificates, TlsFiles, TlsKeys};

/// The scheduler's defaults in the sections every controller has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerDefaults;

impl ControllerDefaults for SchedulerDefaults {
    const NAME: &'static str = "phalanx-scheduler";
    // kube-scheduler's historical insecure port, which probes and scrape
    // configs often already expect.
    const HTTP_PORT: u16 = 10251;
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
    pub topology_spread: TopologySpreadConfig,
    pub queues: QueuesConfig,
    pub preemption: PreemptionConfig,
    pub leader_election: LeaderElectionConfig<SchedulerDefaults>,
    pub http: HttpConfig<SchedulerDefaults>,
    pub extender: ExtenderConfig,
    pub metrics: MetricsConfig,
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
            topology_spread: TopologySpreadConfig::default(),
            queues: QueuesConfig::default(),
            preemption: PreemptionConfig::default(),
            leader_election: LeaderElectionConfig::default(),
            http: HttpConfig::default(),
            extender: ExtenderConfig::default(),
            metrics: MetricsConfig::default(),
            logging: LoggingConfig::default(),
        }
    }
}

/// What the live cluster gauges are broken down by.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct MetricsConfig {
    /// The node label whose value is the `pool` of the GPU gauges
    /// (`phalanx_scheduler_cluster_gpus{pool}`); nodes without it are pool "".
    pub pool_label: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            pool_label: "phalanx.dev/pool".to_owned(),
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
    /// How long, after pre-binding a pod's WaitForFirstConsumer claims, to
    /// wait for them to be Bound before giving up (kube-scheduler's
    /// VolumeBinding `bindTimeoutSeconds`).
    pub volume_timeout_seconds: f64,
}

impl Default for BindingConfig {
    fn default() -> Self {
        Self {
            qps: 5000,
            burst: 10000,
            concurrency: 64,
            annotation_write: super::binder::AnnotationWrite::default(),
            volume_timeout_seconds: 600.0,
        }
    }
}

impl BindingConfig {
    pub fn volume_timeout(&self) -> Duration {
        seconds(self.volume_timeout_seconds)
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
    /// Node label whose domains a gang prefers (e.g. a rack or NVLink domain):
    /// the tightest that holds it first, spanning them if none does; `None`
    /// places gangs anywhere.
    pub topology_key: Option<String>,
    /// How long a gang may wait for all its members when its PodGroup sets no
    /// `scheduleTimeoutSeconds`.
    pub default_timeout_seconds: u64,
    /// How often the scheduler asks the server again which gang object kinds
    /// it serves (a CRD or API group installed later is then watched); 0 asks
    /// only at start.
    pub discovery_interval_seconds: u64,
    /// Find the gang of a pod that declares none from the workload that owns
    /// it (an indexed Job, a JobSet or TrainJob, a training-operator job, a
    /// LeaderWorkerSet group, a RayCluster): `gangs/owners/`.
    pub auto_group: bool,
}

impl Default for GangConfig {
    fn default() -> Self {
        Self {
            topology_key: None,
            default_timeout_seconds: 600,
            discovery_interval_seconds: 60,
            auto_group: true,
        }
    }
}

impl GangConfig {
    pub fn default_timeout(&self) -> Duration {
        Duration::from_secs(self.default_timeout_seconds)
    }

    /// `None`: discover only at start.
    pub fn discovery_interval(&self) -> Option<Duration> {
        (self.discovery_interval_seconds > 0)
            .then(|| Duration::from_secs(self.discovery_interval_seconds))
    }
}

/// Teams' `Queue`s: quotas, fair share and the order queues take turns in.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct QueuesConfig {
    /// Off (the default) keeps the scheduler as it was before queues: pods by
    /// priority then age, no quotas, `Queue` objects not read.
    pub enabled: bool,
    /// The queue of a pod whose own labels and namespace's labels name none.
    /// It need not exist as a `Queue` object: work in a queue that does not
    /// exist waits, with an event saying so, until one is created.
    pub default_queue: String,
}

impl Default for QueuesConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            default_queue: "default".to_owned(),
        }
    }
}

impl QueuesConfig {
    fn check(&self, out: &mut Rules) {
        const KEY: &str = "queues.defaultQueue";
        // A Queue's name is an object name (a DNS subdomain) that pods name
        // in a label value, so it must be both: a subdomain of at most 63.
        out.check(KEY, dns_subdomain(&self.default_queue), &self.default_queue);
        if self.default_queue.len() > MAX_LABEL_VALUE_LEN {
            out.push(
                KEY,
                format!(
                    "must be at most {MAX_LABEL_VALUE_LEN} characters to fit a label value \
                     (phalanx.dev/queue), got {}",
                    self.default_queue.len()
                ),
            );
        }
    }
}

/// The longest label value Kubernetes accepts.
const MAX_LABEL_VALUE_LEN: usize = 63;

/// Preemption by priority (with queues, inside the preemptor's queue) and,
/// with queues, reclaim across queues (a queue below its guarantee takes back
/// what others borrowed).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct PreemptionConfig {
    /// Off: pods wait for room to free itself; nothing is evicted.
    pub enabled: bool,
    /// A pod that has run less than this is never chosen as a victim, so work
    /// is not evicted before it has done any; 0 protects none.
    pub min_runtime_seconds: u64,
    /// How long the room freed for a preemptor is held for it; released if
    /// it has not been placed by then.
    pub reservation_seconds: u64,
    /// A gang at the head of its queue that has waited longer than this gets
    /// nodes reserved for it, so a stream of small pods cannot starve it.
    pub starving_gang_seconds: u64,
}

impl Default for PreemptionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            min_runtime_seconds: 0,
            reservation_seconds: 30,
            starving_gang_seconds: 60,
        }
    }
}

impl PreemptionConfig {
    pub fn min_runtime(&self) -> Duration {
        Duration::from_secs(self.min_runtime_seconds)
    }

    pub fn reservation(&self) -> Duration {
        Duration::from_secs(self.reservation_seconds)
    }

    pub fn starving_gang(&self) -> Duration {
        Duration::from_secs(self.starving_gang_seconds)
    }

    fn check(&self, out: &mut Rules) {
        // 0 would release the freed room before the preemptor could use it,
        // and reserve for every gang at once.
        out.at_least("preemption.reservationSeconds", self.reservation_seconds, 1);
        out.at_least(
            "preemption.starvingGangSeconds",
            self.starving_gang_seconds,
            1,
        );
    }
}

/// Topology spread constraints for pods that set none (kube-scheduler's
/// PodTopologySpread `defaultingType` and `defaultConstraints`). Phalanx's
/// default is none at all: kube-scheduler's System defaults spread each
/// workload's replicas over nodes, which works against packing GPUs.
/// `defaultingType: System` turns them on. Which pods a default counts: those
/// of the same ReplicaSet, StatefulSet or ReplicationController
/// (`phalanx_kube::translate::DefaultSpread` says why).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct TopologySpreadConfig {
    pub defaulting_type: SpreadDefaulting,
    /// With `List` only; kube-scheduler refuses a `labelSelector` here too.
    pub default_constraints: Vec<DefaultSpreadConstraint>,
}

/// Where the default constraints come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum SpreadDefaulting {
    /// `defaultConstraints` as listed (Phalanx's default: an empty list).
    #[default]
    List,
    /// kube-scheduler's: maxSkew 3 over `kubernetes.io/hostname` and 5 over
    /// `topology.kubernetes.io/zone`, both ScheduleAnyway.
    System,
}

/// One default constraint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DefaultSpreadConstraint {
    pub max_skew: i32,
    pub topology_key: String,
    pub when_unsatisfiable: SpreadWhen,
}

/// `whenUnsatisfiable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SpreadWhen {
    DoNotSchedule,
    ScheduleAnyway,
}

impl TopologySpreadConfig {
    /// The defaults as the translation applies them (valid once
    /// [`ConfigFile::validate`] passed; a non-positive maxSkew reads as 1).
    pub fn defaults(&self) -> DefaultSpread {
        match self.defaulting_type {
            SpreadDefaulting::System => DefaultSpread::system(),
            SpreadDefaulting::List => {
                DefaultSpread::list(self.default_constraints.iter().map(|c| DefaultConstraint {
                    max_skew: u32::try_from(c.max_skew).unwrap_or(1).max(1),
                    topology_key: &c.topology_key,
                    when_unsatisfiable: match c.when_unsatisfiable {
                        SpreadWhen::DoNotSchedule => WhenUnsatisfiable::DoNotSchedule,
                        SpreadWhen::ScheduleAnyway => WhenUnsatisfiable::ScheduleAnyway,
                    },
                }))
            }
        }
    }

    fn check(&self, out: &mut Rules) {
        const KEY: &str = "topologySpread.defaultConstraints";
        if self.defaulting_type == SpreadDefaulting::System && !self.default_constraints.is_empty()
        {
            out.push(
                KEY,
                "must be empty with defaultingType: System (kube-scheduler's own defaults)"
                    .to_owned(),
            );
        }
        let mut seen = Vec::new();
        for (i, c) in self.default_constraints.iter().enumerate() {
            if c.max_skew < 1 {
                out.push(
                    KEY,
                    format!("[{i}].maxSkew must be at least 1, got {}", c.max_skew),
                );
            }
            if let Err(expected) = label_key(&c.topology_key) {
                out.push(
                    KEY,
                    format!(
                        "[{i}].topologyKey must be {expected}, got {:?}",
                        c.topology_key
                    ),
                );
            }
            let pair = (c.topology_key.as_str(), c.when_unsatisfiable);
            if seen.contains(&pair) {
                out.push(
                    KEY,
                    format!(
                        "[{i}] repeats topologyKey {:?} with whenUnsatisfiable {:?}",
                        c.topology_key, c.when_unsatisfiable
                    ),
                );
            }
            seen.push(pair);
        }
    }
}

/// The largest extender request body accepted by default: 5,000 Nodes as
/// kubelet reports them (about 21 KB each in Go's compact JSON: labels from GPU
/// feature discovery, managedFields, conditions, the 50 images kubelet lists,
/// `scheduler/tests/data/kubelet-gpu-node.json`), about 105 MB, with half again
/// as margin. Only an extender with `nodeCacheCapable: false` gets bodies this
/// large; with names only, 5,000 nodes are about 100 KB.
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 160 * 1024 * 1024;

/// Below this no ExtenderArgs with a real pod fits; a smaller limit is a typo.
pub const MIN_MAX_REQUEST_BYTES: u64 = 64 * 1024;

/// At most this (4 GiB): a larger body would not fit the process's memory as
/// parsed Nodes anyway.
pub const MAX_MAX_REQUEST_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// The kube-scheduler HTTP extender endpoint.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ExtenderConfig {
    pub bind_address: SocketAddr,
    /// HTTPS, for kube-scheduler's `enableHTTPS: true`; absent: plain HTTP.
    pub tls: Option<ExtenderTlsConfig>,
    /// Request bodies larger than this get 413, a WARN log and a count in
    /// `phalanx_scheduler_extender_requests_refused_total`.
    pub max_request_bytes: u64,
    /// The kube-scheduler profiles this extender serves: `/bind` refuses a pod
    /// whose `spec.schedulerName` is not one of them.
    pub scheduler_names: Vec<String>,
}

impl Default for ExtenderConfig {
    fn default() -> Self {
        Self {
            bind_address: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8888),
            tls: None,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            scheduler_names: vec!["default-scheduler".to_owned()],
        }
    }
}

/// The extender's certificate, and who may call it: kube-scheduler's
/// `tlsConfig` `certFile`/`keyFile` is a client certificate, which
/// `clientCAFile` must have signed; a client without one is refused during
/// the TLS handshake, before any request is read.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExtenderTlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// CA of the client certificates accepted; without it any client that
    /// reaches the port may call `/bind` (encryption only).
    #[serde(default, rename = "clientCAFile")]
    pub client_ca_file: Option<PathBuf>,
    /// Subject CNs accepted (the cluster CA signs many certificates); empty:
    /// any certificate `clientCAFile` signed.
    #[serde(default)]
    pub allowed_client_names: Vec<String>,
}

impl ExtenderTlsConfig {
    /// Where these keys are, for errors about the files.
    pub const KEYS: TlsKeys = TlsKeys {
        cert_file: "extender.tls.certFile",
        key_file: "extender.tls.keyFile",
        client_ca_file: "extender.tls.clientCAFile",
    };

    /// The files, in the shape the runtime loads.
    pub fn files(&self) -> TlsFiles {
        TlsFiles {
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            client_ca_file: self.client_ca_file.clone(),
        }
    }

    /// Required with a client CA; otherwise no certificate is asked for.
    pub fn client_certificates(&self) -> ClientCertificates {
        match self.client_ca_file {
            Some(_) => ClientCertificates::Required {
                allowed_names: self.allowed_client_names.clone(),
            },
            None => ClientCertificates::Optional,
        }
    }
}

impl ExtenderConfig {
    /// `max_request_bytes` as a buffer size (saturating on 32-bit targets).
    pub fn max_request_bytes(&self) -> usize {
        usize::try_from(self.max_request_bytes).unwrap_or(usize::MAX)
    }
}

impl SchedulerConfig {
    pub fn telemetry_max_age(&self) -> Duration {
        self.telemetry.max_age()
    }
}

impl ConfigFile for SchedulerConfig {
    const COMPONENT: &'static str = "scheduler";

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
        out.positive_seconds(
            "binding.volumeTimeoutSeconds",
            binding.volume_timeout_seconds,
        );

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

        out.check(
            "metrics.poolLabel",
            label_key(&self.metrics.pool_label),
            &self.metrics.pool_label,
        );

        self.topology_spread.check(&mut out);
        self.queues.check(&mut out);
        self.preemption.check(&mut out);

        out.leader_election(&self.leader_election);

        let extender = &self.extender;
        if !(MIN_MAX_REQUEST_BYTES..=MAX_MAX_REQUEST_BYTES).contains(&extender.max_request_bytes) {
            out.push(
                "extender.maxRequestBytes",
                format!(
                    "must be between {MIN_MAX_REQUEST_BYTES} and {MAX_MAX_REQUEST_BYTES}, got {}",
                    extender.max_request_bytes
                ),
            );
        }
        if extender.scheduler_names.is_empty() {
            out.push(
                "extender.schedulerNames",
                "must name at least one kube-scheduler profile".to_owned(),
            );
        }
        for name in &extender.scheduler_names {
            out.check("extender.schedulerNames", dns_subdomain(name), name);
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

        out.http(&self.http);
        if let Some(tls) = &self.extender.tls {
            let keys = ExtenderTlsConfig::KEYS;
            out.tls_files(
                [keys.cert_file, keys.key_file, keys.client_ca_file],
                &tls.files(),
            );
            if !tls.allowed_client_names.is_empty() && tls.client_ca_file.is_none() {
                out.push(
                    "extender.tls.allowedClientNames",
                    "needs extender.tls.clientCAFile: names are read from verified client certificates"
                        .to_owned(),
                );
            }
            if tls
                .allowed_client_names
                .iter()
                .any(|name| name.trim().is_empty())
            {
                out.push(
                    "extender.tls.allowedClientNames",
                    "must not contain an empty name".to_owned(),
                );
            }
        }

        out.logging(&self.logging);
        out.into_violations()
    }
}

fn policy_by_name<'de, D: Deserializer<'de>>(deserializer: D) -> Result<PolicyName, D::Error> {
    let name = String::deserialize(deserializer)?;
    name.parse().map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../deploy/scheduler-config.example.yaml");

    #[test]
    fn gang_discovery_interval_zero_means_only_at_start() {
        let config = SchedulerConfig::from_yaml("gangs: {discoveryIntervalSeconds: 0}", "t")
            .expect("0 is valid");
        assert_eq!(config.gangs.discovery_interval(), None);
        let config = SchedulerConfig::from_yaml("gangs: {discoveryIntervalSeconds: 15}", "t")
            .expect("15 is valid");
        assert_eq!(
            config.gangs.discovery_interval(),
            Some(Duration::from_secs(15))
        );
    }

    fn parse_err(yaml: &str) -> ConfigError {
        SchedulerConfig::from_yaml(yaml, "test.yaml").expect_err("config should be rejected")
    }

    /// The keys of the violations of `yaml` (which must parse).
    fn violated_keys(yaml: &str) -> Vec<&'static str> {
        let config: SchedulerConfig = phalanx_runtime::config::yaml_file::parse(yaml, "test.yaml")
            .expect("config should parse");
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
                volume_timeout_seconds: 600.0,
            }
        );
        assert_eq!(config.backoff.initial(), Duration::from_secs(1));
        assert_eq!(config.backoff.max(), Duration::from_secs(10));
        assert_eq!(config.backoff.max_unschedulable(), Duration::from_secs(300));
        assert_eq!(config.gangs.topology_key, None);
        assert_eq!(config.gangs.default_timeout(), Duration::from_secs(600));
        assert_eq!(
            config.gangs.discovery_interval(),
            Some(Duration::from_secs(60))
        );
        assert!(
            config.gangs.auto_group,
            "gangs are found from owners by default"
        );
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
        assert_eq!(config.extender.max_request_bytes, 160 * 1024 * 1024);
        assert_eq!(config.extender.scheduler_names, ["default-scheduler"]);
        assert!(!config.queues.enabled, "queues are off unless turned on");
        assert_eq!(config.queues.default_queue, "default");
        assert!(config.preemption.enabled);
        assert_eq!(config.preemption.min_runtime(), Duration::ZERO);
        assert_eq!(config.preemption.reservation(), Duration::from_secs(30));
        assert_eq!(config.preemption.starving_gang(), Duration::from_secs(60));
        assert_eq!(config.logging.format, LogFormat::Json);
        assert_eq!(config.logging.level, "info");
        config.validate().expect("defaults are valid");
    }

    #[test]
    fn finding_gangs_from_owners_can_be_turned_off() {
        let config =
            SchedulerConfig::from_yaml("gangs:\n  autoGroup: false\n", "test.yaml").expect("valid");
        assert!(!config.gangs.auto_group);
        let error = parse_err("gangs:\n  autoGroup: sometimes\n");
        assert!(error.to_string().contains("autoGroup"), "{error}");
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
            (
                "binding: {volumeTimeoutSeconds: 0}",
                &["binding.volumeTimeoutSeconds"],
            ),
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
            ("metrics: {poolLabel: 'not a key'}", &["metrics.poolLabel"]),
            ("metrics: {poolLabel: ''}", &["metrics.poolLabel"]),
            ("http: {authentication: delegated}", &["http.authentication"]),
            (
                "extender: {tls: {certFile: c, keyFile: k, allowedClientNames: [kube-scheduler]}}",
                &["extender.tls.allowedClientNames"],
            ),
            (
                "extender: {tls: {certFile: c, keyFile: k, clientCAFile: a, allowedClientNames: ['']}}",
                &["extender.tls.allowedClientNames"],
            ),
            (
                "extender: {tls: {certFile: '', keyFile: k}}",
                &["extender.tls.certFile"],
            ),
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
            (
                "extender: {maxRequestBytes: 1000}",
                &["extender.maxRequestBytes"],
            ),
            (
                "extender: {maxRequestBytes: 5000000000}",
                &["extender.maxRequestBytes"],
            ),
            (
                "extender: {schedulerNames: []}",
                &["extender.schedulerNames"],
            ),
            (
                "extender: {schedulerNames: [default-scheduler, 'GPU Profile']}",
                &["extender.schedulerNames"],
            ),
            (
                "topologySpread: {defaultingType: System, defaultConstraints: \
                 [{maxSkew: 1, topologyKey: zone, whenUnsatisfiable: DoNotSchedule}]}",
                &["topologySpread.defaultConstraints"],
            ),
            (
                "topologySpread: {defaultConstraints: \
                 [{maxSkew: 0, topologyKey: zone, whenUnsatisfiable: DoNotSchedule}]}",
                &["topologySpread.defaultConstraints"],
            ),
            (
                "topologySpread: {defaultConstraints: \
                 [{maxSkew: 1, topologyKey: 'not a key', whenUnsatisfiable: DoNotSchedule}]}",
                &["topologySpread.defaultConstraints"],
            ),
            (
                "topologySpread: {defaultConstraints: [\
                 {maxSkew: 1, topologyKey: zone, whenUnsatisfiable: DoNotSchedule}, \
                 {maxSkew: 2, topologyKey: zone, whenUnsatisfiable: DoNotSchedule}]}",
                &["topologySpread.defaultConstraints"],
            ),
            ("queues: {defaultQueue: ''}", &["queues.defaultQueue"]),
            ("queues: {defaultQueue: Team_A}", &["queues.defaultQueue"]),
            (
                "queues: {defaultQueue: research.batch.a-fine-subdomain.but-longer.than-any-label-value-may-be}",
                &["queues.defaultQueue"],
            ),
            (
                "preemption: {reservationSeconds: 0}",
                &["preemption.reservationSeconds"],
            ),
            (
                "preemption: {starvingGangSeconds: 0}",
                &["preemption.starvingGangSeconds"],
            ),
            ("logging: {level: verbose}", &["logging.level"]),
            ("logging: {level: 'info,kube=loud'}", &["logging.level"]),
        ];
        for (yaml, keys) in cases {
            assert_eq!(violated_keys(yaml), *keys, "config {yaml:?}");
        }
    }

    #[test]
    fn queues_and_preemption_are_read_and_bad_values_named() {
        let config = SchedulerConfig::from_yaml(
            "queues: {enabled: true, defaultQueue: research.batch}\n\
             preemption: {enabled: false, minRuntimeSeconds: 600, reservationSeconds: 5, \
             starvingGangSeconds: 120}\n",
            "t.yaml",
        )
        .expect("valid");
        assert_eq!(
            config.queues,
            QueuesConfig {
                enabled: true,
                default_queue: "research.batch".to_owned(),
            }
        );
        assert!(!config.preemption.enabled);
        assert_eq!(config.preemption.min_runtime(), Duration::from_secs(600));
        assert_eq!(config.preemption.reservation(), Duration::from_secs(5));
        assert_eq!(config.preemption.starving_gang(), Duration::from_secs(120));
        let error = parse_err("preemption:\n  minRuntimeSeconds: -1\n");
        assert!(
            error.to_string().contains("preemption.minRuntimeSeconds: "),
            "{error}"
        );
        let error = parse_err("queues:\n  defaultQeue: x\n");
        assert!(
            error
                .to_string()
                .contains("queues.defaultQeue: unknown field"),
            "{error}"
        );
        let error = parse_err("preemption:\n  reservationSeconds: 0\n");
        assert_eq!(
            error.to_string(),
            "test.yaml: preemption.reservationSeconds: must be at least 1, got 0"
        );
    }

    #[test]
    fn topology_spread_defaults_are_none_unless_asked_for() {
        let none = SchedulerConfig::default().topology_spread.defaults();
        assert!(none.is_empty(), "Phalanx packs GPUs unless told to spread");
        let system = SchedulerConfig::from_yaml("topologySpread: {defaultingType: System}", "t")
            .expect("valid");
        assert_eq!(system.topology_spread.defaults(), DefaultSpread::system());
        let listed = SchedulerConfig::from_yaml(
            "topologySpread:\n  defaultConstraints:\n  - maxSkew: 2\n    \
             topologyKey: topology.kubernetes.io/zone\n    whenUnsatisfiable: ScheduleAnyway\n",
            "t",
        )
        .expect("valid");
        let defaults = listed.topology_spread.defaults();
        let [zone] = defaults.constraints() else {
            panic!("{defaults:?}");
        };
        assert_eq!(zone.max_skew, 2);
        assert_eq!(zone.topology_key, "topology.kubernetes.io/zone");
        assert_eq!(zone.when_unsatisfiable, WhenUnsatisfiable::ScheduleAnyway);
    }

    #[test]
    fn a_default_constraint_with_a_label_selector_is_refused_naming_it() {
        let error = SchedulerConfig::from_yaml(
            "topologySpread:\n  defaultConstraints:\n  - maxSkew: 1\n    topologyKey: zone\n    \
             whenUnsatisfiable: DoNotSchedule\n    labelSelector: {}\n",
            "t.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("topologySpread.defaultConstraints"),
            "{error}"
        );
        assert!(error.contains("labelSelector"), "{error}");
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
            "extender: {maxRequestBytes: 65536, schedulerNames: [default-scheduler, gpu-batch]}",
            "extender: {maxRequestBytes: 4294967296}",
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
        let mut election = LeaderElectionConfig::<SchedulerDefaults>::default();
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

    #[test]
    fn the_extender_over_tls_requires_certificates_of_its_ca() {
        let config = SchedulerConfig::from_yaml(
            "extender:\n  tls:\n    certFile: /tls/tls.crt\n    keyFile: /tls/tls.key\n    \
             clientCAFile: /tls/ca.crt\n    allowedClientNames: [kube-scheduler]\n",
            "test.yaml",
        )
        .expect("valid");
        let tls = config.extender.tls.expect("tls");
        assert_eq!(
            tls.client_certificates(),
            ClientCertificates::Required {
                allowed_names: vec!["kube-scheduler".to_owned()]
            }
        );
        assert_eq!(
            tls.files().client_ca_file,
            Some(PathBuf::from("/tls/ca.crt"))
        );
        let without_ca = ExtenderTlsConfig {
            client_ca_file: None,
            allowed_client_names: vec![],
            ..tls
        };
        assert_eq!(
            without_ca.client_certificates(),
            ClientCertificates::Optional
        );
    }

    #[test]
    fn an_unreadable_extender_file_is_named_by_its_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tls = ExtenderTlsConfig {
            cert_file: dir.path().join("tls.crt"),
            key_file: dir.path().join("tls.key"),
            client_ca_file: Some(dir.path().join("ca.crt")),
            allowed_client_names: vec![],
        };
        // What extender mode loads at start.
        let load = || {
            phalanx_runtime::tls::ReloadingTls::load(
                tls.files(),
                ExtenderTlsConfig::KEYS,
                tls.client_certificates(),
            )
        };
        let error = load().expect_err("no files");
        assert_eq!(error.key, "extender.tls.certFile");
        std::fs::write(&tls.cert_file, "not PEM").expect("write");
        std::fs::write(&tls.key_file, "not PEM").expect("write");
        let error = load().expect_err("no CA");
        assert_eq!(error.key, "extender.tls.clientCAFile");
        std::fs::write(dir.path().join("ca.crt"), "not PEM").expect("write");
        let error = load().expect_err("bad files");
        assert!(
            error.to_string().starts_with("extender.tls.certFile: "),
            "{error}"
        );
    }
}
