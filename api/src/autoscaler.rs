//! `InferenceAutoscaler`: scales an inference workload (anything with a `/scale`
//! subresource) on Prometheus metrics, never beyond what the cluster can place.
//!
//! The spec says what to scale, between which bounds, on which metrics and how
//! eagerly; `phalanx-autoscaler` reads it every control period and writes the
//! status: the replicas it saw and wants, the metric that decided, and the
//! conditions `ScalingActive`, `CapacityLimited` and `MetricsStale`.
//!
//! ```yaml
//! apiVersion: phalanx.dev/v1alpha1
//! kind: InferenceAutoscaler
//! metadata: { name: llama, namespace: serving }
//! spec:
//!   scaleTargetRef: { apiVersion: apps/v1, kind: Deployment, name: llama }
//!   minReplicas: 1
//!   maxReplicas: 16
//!   metrics:
//!     - name: queue-wait
//!       preset: vllmServing
//!       matchLabels: { namespace: serving, model_name: llama }
//!       target: { queueWait: { seconds: 2, slotsPerReplica: 64 } }
//!     - name: kv-cache            # HPA-compatible: a level per replica
//!       preset: vllmKvCacheUsage
//!       target: { total: 0.8 }
//! ```
//!
//! With `minReplicas: 0`, `spec.activation` names what wakes the workload:
//!
//! ```yaml
//!   minReplicas: 0
//!   activation:
//!     query: sum(gateway_queue_depth{model="llama"})
//!     threshold: 0          # active above this
//!     perReplica: 8         # wake to ceil(value / 8) replicas, at least 1
//!     cooldownSeconds: 300  # quiet this long before the last replica goes
//! ```

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Condition type: the autoscaler can read its metrics and scale the target.
pub const CONDITION_SCALING_ACTIVE: &str = "ScalingActive";
/// Condition type: more replicas were wanted than the cluster can place.
pub const CONDITION_CAPACITY_LIMITED: &str = "CapacityLimited";
/// Condition type: some metric's samples are absent or older than allowed.
pub const CONDITION_METRICS_STALE: &str = "MetricsStale";

/// What to scale and how.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "phalanx.dev",
    version = "v1alpha1",
    kind = "InferenceAutoscaler",
    plural = "inferenceautoscalers",
    shortname = "ias",
    namespaced,
    status = "InferenceAutoscalerStatus",
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.scaleTargetRef.name"}"#,
    printcolumn = r#"{"name":"Min","type":"integer","jsonPath":".spec.minReplicas"}"#,
    printcolumn = r#"{"name":"Max","type":"integer","jsonPath":".spec.maxReplicas"}"#,
    printcolumn = r#"{"name":"Current","type":"integer","jsonPath":".status.currentReplicas"}"#,
    printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".status.desiredReplicas"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct InferenceAutoscalerSpec {
    /// The workload whose `/scale` subresource is patched (a Deployment,
    /// StatefulSet, or any custom resource that has one), in this namespace.
    pub scale_target_ref: ScaleTargetRef,
    /// Fewest replicas; 0 lets the workload scale to zero when idle, and
    /// needs `activation`.
    #[serde(default = "default_min_replicas")]
    pub min_replicas: u32,
    /// Most replicas, whatever the metrics say.
    pub max_replicas: u32,
    /// Scaling signals; the one asking for the most replicas wins.
    pub metrics: Vec<AutoscalerMetric>,
    /// How eagerly to follow the metrics; every field has a default.
    #[serde(default)]
    pub behavior: AutoscalerBehavior,
    /// Scale from zero (KEDA-style activation): a metric that exists while the
    /// workload has no replica wakes it, and keeps the last replica until it
    /// has been quiet for `cooldownSeconds`. Required with `minReplicas: 0`
    /// (serving metrics vanish with the last replica, so nothing else could
    /// wake the workload); with `minReplicas` of 1 or more the workload never
    /// reaches zero and it changes nothing (it is still read and shown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<ActivationSpec>,
}

fn default_min_replicas() -> u32 {
    1
}

/// What wakes a workload at zero replicas, and when its last replica may go.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActivationSpec {
    /// A PromQL query that exists while the workload is at zero, e.g. a
    /// gateway's or router's queue for this model. One series, read and judged
    /// as the metrics are (absent or older than `maxSampleAgeSeconds` is
    /// stale, several series or NaN invalid; `prometheus.enforceNamespaceLabel`
    /// applies).
    pub query: String,
    /// Active when the value is above this (KEDA's `activationThreshold`)
    /// [0]: at zero replicas an active reading wakes the workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// On wake-up, ask for max(1, ceil(value / perReplica)) replicas instead
    /// of 1, so a large backlog is not woken one replica at a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_replica: Option<f64>,
    /// The last replica is removed only after the activation value has been at
    /// or below the threshold this long, read fresh every period (a stale
    /// reading starts the wait again), seconds [300, KEDA's `cooldownPeriod`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_seconds: Option<u32>,
}

/// The object to scale, as `kubectl` names it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleTargetRef {
    /// `apps/v1` for a Deployment.
    pub api_version: String,
    pub kind: String,
    pub name: String,
}

/// One scaling signal: a PromQL query (or a ready-made one) and its target.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalerMetric {
    /// Names the metric in the status, events and the autoscaler's own metrics.
    pub name: String,
    /// A PromQL query returning one series (a single number). Exactly one of
    /// `query`, `preset` and `serving` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// A ready-made query for a common inference server or exporter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<MetricPreset>,
    /// Label matchers (`label = value`) added to a preset's selectors, e.g. the
    /// namespace and model of this workload; not used with `query`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// An engine's serving series as the user's own PromQL, for a `queueWait`
    /// target on an engine no serving preset covers. Exclusive with `query`
    /// and `preset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<ServingQueries>,
    pub target: MetricTargetSpec,
}

/// The serving series a `queueWait` target sizes on, each a PromQL query
/// returning one number summed over the engine's replicas.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServingQueries {
    /// Requests holding a slot (being served), summed.
    pub running: String,
    /// Requests waiting for a slot, summed.
    pub waiting: String,
    /// Mean seconds a finished request held its slot, e.g. a histogram's
    /// `rate(_sum[5m]) / rate(_count[5m])`; absent or NaN (nothing finished)
    /// makes the sizing give every request a slot.
    pub mean_slot_seconds: String,
    /// KV-cache use averaged over the replicas, 0..1; when full before the
    /// slots are, a replica serves fewer requests at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_cache_usage: Option<String>,
    /// Replicas exporting the series (e.g. `count(...)` of the running
    /// gauge); the target's ready replicas when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<String>,
}

/// Ready-made queries. Each aggregates over all matching series, so one number
/// comes back; an absent series is "no data", never zero.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum MetricPreset {
    /// vLLM requests waiting: `sum(vllm:num_requests_waiting)`; use a
    /// `perReplica` target.
    VllmQueueDepth,
    /// vLLM KV-cache use (0..1), averaged: `vllm:kv_cache_usage_perc`, or the
    /// older `vllm:gpu_cache_usage_perc` when only that exists; use a `total`
    /// target such as 0.8.
    VllmKvCacheUsage,
    /// Triton requests waiting: `sum(nv_inference_pending_request_count)`.
    TritonQueueDepth,
    /// Text Generation Inference queue: `sum(tgi_queue_size)`.
    TgiQueueSize,
    /// DCGM GPU framebuffer used over total (used + free), 0..1; use a `total`
    /// target.
    DcgmGpuMemory,
    /// vLLM's serving series (running, waiting, the inference-time histogram,
    /// KV-cache use, replicas), for a `queueWait` target.
    VllmServing,
    /// Triton's serving series (pending requests, compute time and successes),
    /// for a `queueWait` target.
    TritonServing,
    /// Text Generation Inference's serving series (queue, batch size, the
    /// inference-duration histogram), for a `queueWait` target.
    TgiServing,
}

impl MetricPreset {
    pub const ALL: [MetricPreset; 8] = [
        MetricPreset::VllmQueueDepth,
        MetricPreset::VllmKvCacheUsage,
        MetricPreset::TritonQueueDepth,
        MetricPreset::TgiQueueSize,
        MetricPreset::DcgmGpuMemory,
        MetricPreset::VllmServing,
        MetricPreset::TritonServing,
        MetricPreset::TgiServing,
    ];

    /// A set of serving series for a `queueWait` target, rather than one
    /// number for `perReplica` or `total`.
    pub fn is_serving(self) -> bool {
        matches!(
            self,
            MetricPreset::VllmServing | MetricPreset::TritonServing | MetricPreset::TgiServing
        )
    }

    /// The name used in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricPreset::VllmQueueDepth => "vllmQueueDepth",
            MetricPreset::VllmKvCacheUsage => "vllmKvCacheUsage",
            MetricPreset::TritonQueueDepth => "tritonQueueDepth",
            MetricPreset::TgiQueueSize => "tgiQueueSize",
            MetricPreset::DcgmGpuMemory => "dcgmGpuMemory",
            MetricPreset::VllmServing => "vllmServing",
            MetricPreset::TritonServing => "tritonServing",
            MetricPreset::TgiServing => "tgiServing",
        }
    }
}

/// The value the metric should sit at. Exactly one field is set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricTargetSpec {
    /// The query returns a total over all replicas (e.g. requests waiting);
    /// each replica should carry this much: replicas = ceil(value / perReplica).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_replica: Option<f64>,
    /// The query returns a level that should sit at this value (e.g. mean
    /// KV-cache use 0.8): replicas = ceil(current × value / total).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<f64>,
    /// Size for what users feel: the replicas whose slots keep requests'
    /// wait for a slot within `seconds`, from the serving series of a
    /// `*Serving` preset or a `serving` block (Erlang C on the running and
    /// waiting requests and the mean time a request holds a slot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_wait: Option<QueueWaitTarget>,
}

/// The queueing objective: at most `1 - attainment` of requests wait longer
/// than `seconds` for a slot.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueWaitTarget {
    /// The longest wait for a slot the objective allows, seconds.
    pub seconds: f64,
    /// Requests one replica serves at once (vLLM `--max-num-seqs`, TGI
    /// `--max-batch-size`, Triton's instance count × max batch).
    pub slots_per_replica: u32,
    /// Share of requests the sizing keeps within `seconds` in its queueing
    /// model, in (0, 1) [0.998]; bursts and cold starts make the share a load
    /// measures lower.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attainment: Option<f64>,
    /// A backlog on saturated replicas is sized to clear in this long,
    /// seconds [5].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_seconds: Option<f64>,
}

/// How eagerly to follow the metrics (defaults in brackets).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalerBehavior {
    /// No change while the ratio of metric to target is within 1 ± this [0.1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f64>,
    /// Averaging window of normal decisions, seconds [60].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_window_seconds: Option<u32>,
    /// Short window used for bursts, seconds [10].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub panic_window_seconds: Option<u32>,
    /// Panic (scale up on the short window, never down) when it asks for this
    /// many times the ready replicas [2.0].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub panic_threshold: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up: Option<ScalingRules>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down: Option<ScalingRules>,
    /// How long a new replica takes to become ready, seconds [30]; replicas
    /// starting within it count as capacity on the way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_seconds: Option<u32>,
    /// Samples older than this are stale and never lead to a scale-down,
    /// seconds [60].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sample_age_seconds: Option<u32>,
}

/// Stabilisation and rate limits for one direction (HPA's shape).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingRules {
    /// The most permissive (up) or cautious (down) recommendation within this
    /// window is used, seconds [up 0, down 70]. A scale-down that the load
    /// undoes within it stretches it (to 1.5 times the gap the load came back
    /// after, at least double, at most 10 min); it halves after an hour
    /// without.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stabilization_window_seconds: Option<u32>,
    /// Rate limits; the one allowing the largest change applies [up: 100 % or
    /// 4 pods per 15 s; down: 50 % or 1 pod per 60 s].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policies: Option<Vec<ScalingPolicy>>,
}

/// At most `value` pods (or percent of the current replicas) per `periodSeconds`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingPolicy {
    #[serde(rename = "type")]
    pub type_: ScalingPolicyType,
    pub value: u32,
    pub period_seconds: u32,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ScalingPolicyType {
    Pods,
    Percent,
}

/// What the autoscaler last saw and did.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InferenceAutoscalerStatus {
    /// The spec generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The target's replicas when last looked at.
    #[serde(default)]
    pub current_replicas: u32,
    /// What the metrics ask for (before the capacity cap).
    #[serde(default)]
    pub desired_replicas: u32,
    /// The metric that asked for the most replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deciding_metric: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
    /// `ScalingActive`, `CapacityLimited`, `MetricsStale`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Each metric's last reading.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricStatus>,
    /// The activation query's last reading, with `spec.activation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<ActivationStatus>,
}

/// The activation query's last reading, and what it says.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActivationStatus {
    /// The PromQL that was evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// The value read; absent when there was no usable sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// When Prometheus took the sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampled_at: Option<Time>,
    /// A fresh value above the threshold: the workload is wanted.
    #[serde(default)]
    pub active: bool,
    /// Since when the value has been at or below the threshold, read fresh
    /// every period; the last replica goes `cooldownSeconds` after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_since: Option<Time>,
    /// Why the reading was not used (absent, stale, several series, NaN, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// One metric's last reading.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricStatus {
    pub name: String,
    /// The PromQL that was evaluated (for `vllmKvCacheUsage`, with the metric
    /// name found in use; for serving series, each series' query, separated
    /// by `; `).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// The value read; absent when there was no usable sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// When Prometheus took the sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampled_at: Option<Time>,
    /// Why the reading was not used (absent, stale, several series, NaN, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// For a `queueWait` metric, the serving series behind `value` (the
    /// replicas needed), e.g. `running 12, waiting 3, slot 7.6 s, KV 0.41,
    /// ready 2 -> 3.2 replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    use super::*;

    #[test]
    fn crd_is_namespaced_with_status_subresource() {
        let crd = InferenceAutoscaler::crd();
        assert_eq!(crd.spec.group, "phalanx.dev");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.kind, "InferenceAutoscaler");
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some());
    }

    #[test]
    fn minimal_spec_takes_defaults() {
        let spec: InferenceAutoscalerSpec = serde_json::from_value(serde_json::json!({
            "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "llm" },
            "maxReplicas": 4,
            "metrics": [
                { "name": "queue", "preset": "vllmQueueDepth", "target": { "perReplica": 8 } },
                { "name": "raw", "query": "sum(up)", "target": { "total": 0.5 } }
            ]
        }))
        .expect("valid spec");
        assert_eq!(spec.min_replicas, 1);
        assert_eq!(spec.behavior, AutoscalerBehavior::default());
        assert_eq!(spec.metrics[0].preset, Some(MetricPreset::VllmQueueDepth));
        assert_eq!(spec.metrics[1].target.total, Some(0.5));
        assert_eq!(spec.activation, None);
    }

    #[test]
    fn activation_takes_its_fields_in_camel_case() {
        let spec: InferenceAutoscalerSpec = serde_json::from_value(serde_json::json!({
            "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "llm" },
            "minReplicas": 0,
            "maxReplicas": 4,
            "metrics": [
                { "name": "queue", "preset": "vllmQueueDepth", "target": { "perReplica": 8 } }
            ],
            "activation": {
                "query": "sum(gateway_queue_depth)",
                "threshold": 2,
                "perReplica": 8,
                "cooldownSeconds": 60
            }
        }))
        .expect("valid spec");
        let activation = spec.activation.expect("activation");
        assert_eq!(activation.query, "sum(gateway_queue_depth)");
        assert_eq!(activation.threshold, Some(2.0));
        assert_eq!(activation.per_replica, Some(8.0));
        assert_eq!(activation.cooldown_seconds, Some(60));
    }

    #[test]
    fn a_queue_wait_target_and_a_serving_block_take_camel_case() {
        let metric: AutoscalerMetric = serde_json::from_value(serde_json::json!({
            "name": "wait",
            "serving": {
                "running": "sum(r)",
                "waiting": "sum(w)",
                "meanSlotSeconds": "s",
                "readyReplicas": "count(r)"
            },
            "target": { "queueWait": { "seconds": 2, "slotsPerReplica": 8, "drainSeconds": 10 } }
        }))
        .expect("valid metric");
        let serving = metric.serving.expect("serving");
        assert_eq!(serving.mean_slot_seconds, "s");
        assert_eq!(serving.kv_cache_usage, None);
        assert_eq!(serving.ready_replicas.as_deref(), Some("count(r)"));
        let target = metric.target.queue_wait.expect("queueWait");
        assert_eq!((target.seconds, target.slots_per_replica), (2.0, 8));
        assert_eq!(
            (target.attainment, target.drain_seconds),
            (None, Some(10.0))
        );
        let serving: Vec<&str> = MetricPreset::ALL
            .into_iter()
            .filter(|p| p.is_serving())
            .map(MetricPreset::as_str)
            .collect();
        assert_eq!(serving, ["vllmServing", "tritonServing", "tgiServing"]);
    }

    #[test]
    fn preset_names_match_their_yaml_spelling() {
        for preset in MetricPreset::ALL {
            let json = serde_json::to_value(preset).expect("serialises");
            assert_eq!(json, serde_json::Value::String(preset.as_str().to_owned()));
        }
    }
}
