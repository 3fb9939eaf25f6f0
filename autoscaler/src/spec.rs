//! An `InferenceAutoscaler`'s spec checked and turned into what the decision
//! module and the metrics reader work with.
//!
//! Pure: no client, no clock. Every problem names the field it is about
//! (`spec.metrics[1].target`), and all of them are reported at once, so the
//! status condition tells the user everything to fix in one edit. A spec with
//! any problem is not acted on at all: scaling on half a spec is scaling on
//! garbage.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use phalanx_api::autoscaler::{
    ActivationSpec, AutoscalerBehavior, AutoscalerMetric, MetricPreset, QueueWaitTarget,
    ScalingPolicyType, ScalingRules, ServingQueries as ServingQueriesSpec,
};
use phalanx_api::InferenceAutoscalerSpec;

use crate::decision::{
    objective_defaults, Activation, Behavior, MetricTarget, QueueObjective, RateAmount, RateLimit,
    ReplicaShape,
};
use crate::promql::{
    label_name_problem, serving_preset_queries, Matchers, SeriesQuery, ServingPreset,
    ServingQueries,
};

/// Defaults of the fields (documented on the CRD type). The behaviour's come
/// from the decision module's tuned defaults ([`crate::decision::defaults`],
/// measured with `phalanx-sim autoscale --suite`), except the two that depend
/// on the workload and the Prometheus setup rather than on the load's shape.
pub mod defaults {
    use crate::decision::defaults as tuned;

    pub const TOLERANCE: f64 = tuned::TOLERANCE;
    pub const STABLE_WINDOW_SECONDS: u32 = tuned::STABLE_WINDOW.as_secs() as u32;
    pub const PANIC_WINDOW_SECONDS: u32 = tuned::PANIC_WINDOW.as_secs() as u32;
    pub const PANIC_THRESHOLD: f64 = tuned::PANIC_THRESHOLD;
    pub const SCALE_UP_STABILIZATION_SECONDS: u32 = tuned::SCALE_UP_STABILIZATION.as_secs() as u32;
    pub const SCALE_DOWN_STABILIZATION_SECONDS: u32 =
        tuned::SCALE_DOWN_STABILIZATION.as_secs() as u32;
    /// A replica's cold start: the workload's own (the simulator's 60 s is a 70B
    /// model's); set `startupSeconds` to yours.
    pub const STARTUP_SECONDS: u32 = 30;
    /// Two missed scrapes at Prometheus's common 30 s interval.
    pub const MAX_SAMPLE_AGE_SECONDS: u32 = 60;
    /// KEDA's `activationThreshold`: active on any value above zero.
    pub const ACTIVATION_THRESHOLD: f64 = 0.0;
    /// KEDA's `cooldownPeriod`.
    pub const ACTIVATION_COOLDOWN_SECONDS: u32 = 300;
}

/// One thing wrong with a spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecProblem {
    /// Path of the field, e.g. `spec.metrics[0].target`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for SpecProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// All problems of a spec in one line, for a condition message or an event.
pub fn describe(problems: &[SpecProblem]) -> String {
    problems
        .iter()
        .map(SpecProblem::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Where a metric's number comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricSource {
    /// The user's PromQL, evaluated as is.
    Query(String),
    /// A ready-made query, narrowed by label matchers.
    Preset {
        preset: MetricPreset,
        matchers: Matchers,
    },
    /// A `queueWait` target: serving series, sized into the replicas the
    /// objective needs (read as a `perReplica` target of 1).
    Serving(Box<ServingSource>),
}

/// A `queueWait` metric: where its serving series come from and what they
/// are sized for.
#[derive(Debug, Clone, PartialEq)]
pub struct ServingSource {
    pub series: ServingSeries,
    pub objective: QueueObjective,
    pub shape: ReplicaShape,
}

#[cfg(test)]
impl ServingSource {
    /// A 2 s objective at 99 % on replicas of 8 slots, backlog drained in 5 s:
    /// the controller modules' tests' serving metric.
    pub(crate) fn for_tests(series: ServingSeries) -> Self {
        ServingSource {
            series,
            objective: QueueObjective {
                wait_seconds: 2.0,
                attainment: 0.99,
            },
            shape: ReplicaShape {
                slots: 8,
                drain_seconds: 5.0,
            },
        }
    }
}

/// The serving series of a `queueWait` metric.
#[derive(Debug, Clone, PartialEq)]
pub enum ServingSeries {
    /// `vllmServing`, `tritonServing` or `tgiServing`, narrowed by matchers.
    Preset {
        preset: ServingPreset,
        matchers: Matchers,
    },
    /// The user's `serving` block.
    Queries(ServingQueries),
}

impl ServingSeries {
    /// The PromQL to read.
    pub fn queries(&self) -> ServingQueries {
        match self {
            ServingSeries::Preset { preset, matchers } => serving_preset_queries(*preset, matchers),
            ServingSeries::Queries(queries) => queries.clone(),
        }
    }
}

/// A metric ready to be read.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPlan {
    pub name: String,
    pub source: MetricSource,
    pub target: MetricTarget,
}

/// `spec.activation`, ready to be read and judged.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivationPlan {
    /// Always [`MetricSource::Query`]: the user's PromQL.
    pub source: MetricSource,
    pub activation: Activation,
}

/// A valid spec, in the decision module's terms.
#[derive(Debug, Clone)]
pub struct AutoscalerPlan {
    pub behavior: Behavior,
    pub metrics: Vec<MetricPlan>,
    /// What wakes the workload at zero and guards its last replica.
    pub activation: Option<ActivationPlan>,
}

/// Checks `spec` and builds its plan, or returns every problem found.
pub fn plan(spec: &InferenceAutoscalerSpec) -> Result<AutoscalerPlan, Vec<SpecProblem>> {
    let mut problems = Problems::default();
    let target = &spec.scale_target_ref;
    for (field, value) in [
        ("apiVersion", &target.api_version),
        ("kind", &target.kind),
        ("name", &target.name),
    ] {
        if value.trim().is_empty() {
            problems.push(format!("spec.scaleTargetRef.{field}"), "must not be empty");
        }
    }
    if spec.max_replicas == 0 {
        problems.push("spec.maxReplicas", "must be at least 1, got 0");
    }
    if spec.min_replicas > spec.max_replicas {
        problems.push(
            "spec.minReplicas",
            format!(
                "must not be above spec.maxReplicas ({}), got {}",
                spec.max_replicas, spec.min_replicas
            ),
        );
    }
    if spec.metrics.is_empty() {
        problems.push("spec.metrics", "must name at least one metric");
    }
    let mut names = BTreeSet::new();
    let metrics: Vec<MetricPlan> = spec
        .metrics
        .iter()
        .enumerate()
        .filter_map(|(i, metric)| {
            let field = format!("spec.metrics[{i}]");
            if !metric.name.trim().is_empty() && !names.insert(metric.name.as_str()) {
                problems.push(
                    format!("{field}.name"),
                    format!("{:?} is used by an earlier metric", metric.name),
                );
            }
            metric_plan(metric, &field, &mut problems)
        })
        .collect();
    let behavior = behavior(spec, &mut problems);
    let activation = match &spec.activation {
        Some(activation) => activation_plan(activation, behavior.max_sample_age, &mut problems),
        None => {
            if spec.min_replicas == 0 {
                problems.push(
                    "spec.minReplicas",
                    "0 needs spec.activation: serving metrics vanish with the last replica, \
                     so nothing could wake the workload",
                );
            }
            None
        }
    };
    // The decision module checks the same ranges in its own words; ask it only
    // when ours found nothing, so each problem is reported once.
    if problems.0.is_empty() {
        if let Err(invalid) = behavior.validate() {
            problems.push("spec.behavior", invalid.to_string());
        }
        if let Some(Err(invalid)) = activation.as_ref().map(|a| a.activation.validate()) {
            problems.push("spec.activation", invalid.to_string());
        }
    }
    if problems.0.is_empty() {
        Ok(AutoscalerPlan {
            behavior,
            metrics,
            activation,
        })
    } else {
        Err(problems.0)
    }
}

fn metric_plan(
    metric: &AutoscalerMetric,
    field: &str,
    problems: &mut Problems,
) -> Option<MetricPlan> {
    let mut ok = true;
    if metric.name.trim().is_empty() {
        problems.push(format!("{field}.name"), "must not be empty");
        ok = false;
    }
    let serving_target = metric.target.queue_wait.is_some();
    let source = match (&metric.query, metric.preset, &metric.serving) {
        (Some(query), None, None) => {
            if query.trim().is_empty() {
                problems.push(format!("{field}.query"), "must not be empty");
                ok = false;
            }
            if !metric.match_labels.is_empty() {
                problems.push(
                    format!("{field}.matchLabels"),
                    "only narrows a preset; write the matchers into the query",
                );
                ok = false;
            }
            if serving_target {
                problems.push(
                    format!("{field}.target.queueWait"),
                    "needs the serving series of a serving preset (vllmServing, tritonServing, \
                     tgiServing) or a serving block, not one query",
                );
                ok = false;
            }
            Some(Planned::Source(MetricSource::Query(
                query.trim().to_owned(),
            )))
        }
        (None, Some(preset), None) => {
            if preset.is_serving() != serving_target {
                ok = false;
                if serving_target {
                    problems.push(
                        format!("{field}.target.queueWait"),
                        format!(
                            "needs a serving preset (vllmServing, tritonServing, tgiServing), \
                             not {}",
                            preset.as_str()
                        ),
                    );
                } else {
                    problems.push(
                        format!("{field}.preset"),
                        format!(
                            "{} is a set of serving series: it needs a queueWait target",
                            preset.as_str()
                        ),
                    );
                }
            }
            matchers(&metric.match_labels, field, problems).map(|matchers| match ServingPreset::of(
                preset,
            ) {
                Some(preset) => Planned::Serving(ServingSeries::Preset { preset, matchers }),
                None => Planned::Source(MetricSource::Preset { preset, matchers }),
            })
        }
        (None, None, Some(serving)) => {
            if !metric.match_labels.is_empty() {
                problems.push(
                    format!("{field}.matchLabels"),
                    "only narrows a preset; write the matchers into the serving queries",
                );
                ok = false;
            }
            if !serving_target {
                problems.push(
                    format!("{field}.serving"),
                    "is a set of serving series: it needs a queueWait target",
                );
                ok = false;
            }
            serving_queries(serving, field, problems)
                .map(|queries| Planned::Serving(ServingSeries::Queries(queries)))
        }
        (None, None, None) => {
            problems.push(
                field.to_owned(),
                format!(
                    "needs a query, a preset (one of {}) or a serving block",
                    MetricPreset::ALL.map(MetricPreset::as_str).join(", ")
                ),
            );
            None
        }
        _ => {
            problems.push(
                field.to_owned(),
                "sets more than one of query, preset and serving; choose one",
            );
            None
        }
    };
    let target = target(metric, field, problems);
    match (source, target) {
        (Some(Planned::Serving(series)), Some(Target::QueueWait(objective, shape))) if ok => {
            Some(MetricPlan {
                name: metric.name.clone(),
                source: MetricSource::Serving(Box::new(ServingSource {
                    series,
                    objective,
                    shape,
                })),
                // The reading is the replicas needed.
                target: MetricTarget::PerReplica(1.0),
            })
        }
        (Some(Planned::Source(source)), Some(Target::Metric(target))) if ok => Some(MetricPlan {
            name: metric.name.clone(),
            source,
            target,
        }),
        _ => None,
    }
}

/// A metric's source before its target is known.
enum Planned {
    Source(MetricSource),
    Serving(ServingSeries),
}

/// A `serving` block's queries, trimmed, or `None` after naming each empty one.
fn serving_queries(
    spec: &ServingQueriesSpec,
    field: &str,
    problems: &mut Problems,
) -> Option<ServingQueries> {
    let mut ok = true;
    let mut query = |name: &str, text: &str| {
        let text = text.trim();
        if text.is_empty() {
            problems.push(format!("{field}.serving.{name}"), "must not be empty");
            ok = false;
        }
        SeriesQuery::raw(text)
    };
    let queries = ServingQueries {
        running: query("running", &spec.running),
        waiting: query("waiting", &spec.waiting),
        mean_slot_seconds: query("meanSlotSeconds", &spec.mean_slot_seconds),
        kv_cache_usage: spec
            .kv_cache_usage
            .as_deref()
            .map(|q| query("kvCacheUsage", q))
            .into_iter()
            .collect(),
        ready_replicas: spec
            .ready_replicas
            .as_deref()
            .map(|q| query("readyReplicas", q)),
    };
    ok.then_some(queries)
}

fn activation_plan(
    spec: &ActivationSpec,
    max_sample_age: Duration,
    problems: &mut Problems,
) -> Option<ActivationPlan> {
    let before = problems.0.len();
    let query = spec.query.trim();
    if query.is_empty() {
        problems.push("spec.activation.query", "must not be empty");
    }
    let threshold = spec.threshold.unwrap_or(defaults::ACTIVATION_THRESHOLD);
    if !(threshold.is_finite() && threshold >= 0.0) {
        problems.push(
            "spec.activation.threshold",
            format!("must be a number of at least 0, got {threshold}"),
        );
    }
    if let Some(per_replica) = spec.per_replica {
        if !(per_replica.is_finite() && per_replica > 0.0) {
            problems.push(
                "spec.activation.perReplica",
                format!("must be a number above 0, got {per_replica}"),
            );
        }
    }
    let activation = Activation {
        threshold,
        per_replica: spec.per_replica,
        cooldown: secs(
            spec.cooldown_seconds
                .unwrap_or(defaults::ACTIVATION_COOLDOWN_SECONDS),
        ),
        max_sample_age,
    };
    (problems.0.len() == before).then(|| ActivationPlan {
        source: MetricSource::Query(query.to_owned()),
        activation,
    })
}

fn matchers(
    labels: &BTreeMap<String, String>,
    field: &str,
    problems: &mut Problems,
) -> Option<Matchers> {
    let mut ok = true;
    for name in labels.keys() {
        if let Some(problem) = label_name_problem(name) {
            problems.push(format!("{field}.matchLabels[{name:?}]"), problem);
            ok = false;
        }
    }
    ok.then(|| Matchers::new(labels.clone()))
}

/// A metric's target: one number to compare with, or a queueing objective.
enum Target {
    Metric(MetricTarget),
    QueueWait(QueueObjective, ReplicaShape),
}

fn target(metric: &AutoscalerMetric, field: &str, problems: &mut Problems) -> Option<Target> {
    let field = format!("{field}.target");
    let t = &metric.target;
    let (value, target): (f64, fn(f64) -> MetricTarget) =
        match (t.per_replica, t.total, &t.queue_wait) {
            (Some(value), None, None) => (value, MetricTarget::PerReplica),
            (None, Some(value), None) => (value, MetricTarget::Total),
            (None, None, Some(queue_wait)) => {
                return queue_wait_target(queue_wait, &field, problems);
            }
            (None, None, None) => {
                problems.push(field, "needs perReplica, total or queueWait");
                return None;
            }
            _ => {
                problems.push(
                    field,
                    "sets more than one of perReplica, total and queueWait; choose one",
                );
                return None;
            }
        };
    if value.is_finite() && value > 0.0 {
        Some(Target::Metric(target(value)))
    } else {
        problems.push(
            field,
            format!("must be a number above 0 (a target of {value} cannot be divided by)"),
        );
        None
    }
}

fn queue_wait_target(
    spec: &QueueWaitTarget,
    field: &str,
    problems: &mut Problems,
) -> Option<Target> {
    let before = problems.0.len();
    let field = format!("{field}.queueWait");
    if !(spec.seconds.is_finite() && spec.seconds > 0.0) {
        problems.push(
            format!("{field}.seconds"),
            format!("must be a number above 0, got {}", spec.seconds),
        );
    }
    if spec.slots_per_replica == 0 {
        problems.push(
            format!("{field}.slotsPerReplica"),
            "must be at least 1 (the requests a replica serves at once), got 0",
        );
    }
    let attainment = spec.attainment.unwrap_or(objective_defaults::ATTAINMENT);
    if !(attainment > 0.0 && attainment < 1.0) {
        problems.push(
            format!("{field}.attainment"),
            format!("must be above 0 and below 1, got {attainment}"),
        );
    }
    let drain_seconds = spec
        .drain_seconds
        .unwrap_or(objective_defaults::DRAIN_SECONDS);
    if !(drain_seconds.is_finite() && drain_seconds > 0.0) {
        problems.push(
            format!("{field}.drainSeconds"),
            format!("must be a number above 0, got {drain_seconds}"),
        );
    }
    (problems.0.len() == before).then_some(Target::QueueWait(
        QueueObjective {
            wait_seconds: spec.seconds,
            attainment,
        },
        ReplicaShape {
            slots: spec.slots_per_replica,
            drain_seconds,
        },
    ))
}

fn behavior(spec: &InferenceAutoscalerSpec, problems: &mut Problems) -> Behavior {
    let b: &AutoscalerBehavior = &spec.behavior;
    let tolerance = b.tolerance.unwrap_or(defaults::TOLERANCE);
    if !(tolerance.is_finite() && (0.0..1.0).contains(&tolerance)) {
        problems.push(
            "spec.behavior.tolerance",
            format!("must be at least 0 and below 1, got {tolerance}"),
        );
    }
    let panic_threshold = b.panic_threshold.unwrap_or(defaults::PANIC_THRESHOLD);
    if !(panic_threshold.is_finite() && panic_threshold > 1.0) {
        problems.push(
            "spec.behavior.panicThreshold",
            format!("must be a number above 1, got {panic_threshold}"),
        );
    }
    let stable = b
        .stable_window_seconds
        .unwrap_or(defaults::STABLE_WINDOW_SECONDS);
    let panic = b
        .panic_window_seconds
        .unwrap_or(defaults::PANIC_WINDOW_SECONDS);
    if stable == 0 {
        problems.push("spec.behavior.stableWindowSeconds", "must be at least 1");
    }
    if panic == 0 || panic > stable {
        problems.push(
            "spec.behavior.panicWindowSeconds",
            format!("must be at least 1 and at most stableWindowSeconds ({stable}), got {panic}"),
        );
    }
    let max_sample_age = b
        .max_sample_age_seconds
        .unwrap_or(defaults::MAX_SAMPLE_AGE_SECONDS);
    if max_sample_age == 0 {
        problems.push("spec.behavior.maxSampleAgeSeconds", "must be at least 1");
    }
    // The tuned rate limits (the bounds do not matter for them).
    let tuned = Behavior::with_bounds(0, 1);
    let up = rules(
        b.scale_up.as_ref(),
        "spec.behavior.scaleUp",
        defaults::SCALE_UP_STABILIZATION_SECONDS,
        &tuned.scale_up_limits,
        problems,
    );
    let down = rules(
        b.scale_down.as_ref(),
        "spec.behavior.scaleDown",
        defaults::SCALE_DOWN_STABILIZATION_SECONDS,
        &tuned.scale_down_limits,
        problems,
    );
    Behavior {
        min_replicas: spec.min_replicas,
        max_replicas: spec.max_replicas,
        tolerance,
        stable_window: secs(stable),
        panic_window: secs(panic),
        panic_threshold,
        scale_up_stabilization: up.0,
        scale_down_stabilization: down.0,
        scale_up_limits: up.1,
        scale_down_limits: down.1,
        startup: secs(b.startup_seconds.unwrap_or(defaults::STARTUP_SECONDS)),
        max_sample_age: secs(max_sample_age),
    }
}

fn rules(
    rules: Option<&ScalingRules>,
    field: &str,
    default_window: u32,
    default_limits: &[RateLimit],
    problems: &mut Problems,
) -> (Duration, Vec<RateLimit>) {
    let window = rules
        .and_then(|r| r.stabilization_window_seconds)
        .unwrap_or(default_window);
    let Some(policies) = rules.and_then(|r| r.policies.as_ref()) else {
        return (secs(window), default_limits.to_vec());
    };
    if policies.is_empty() {
        problems.push(
            format!("{field}.policies"),
            "must name at least one policy (leave it out for the defaults)",
        );
    }
    let limits = policies
        .iter()
        .enumerate()
        .map(|(i, policy)| {
            if policy.value == 0 {
                problems.push(
                    format!("{field}.policies[{i}].value"),
                    "must be at least 1, got 0",
                );
            }
            if policy.period_seconds == 0 {
                problems.push(
                    format!("{field}.policies[{i}].periodSeconds"),
                    "must be at least 1, got 0",
                );
            }
            RateLimit {
                amount: match policy.type_ {
                    ScalingPolicyType::Pods => RateAmount::Pods(policy.value),
                    ScalingPolicyType::Percent => RateAmount::Percent(policy.value),
                },
                period: secs(policy.period_seconds),
            }
        })
        .collect();
    (secs(window), limits)
}

fn secs(seconds: u32) -> Duration {
    Duration::from_secs(u64::from(seconds))
}

#[derive(Debug, Default)]
struct Problems(Vec<SpecProblem>);

impl Problems {
    fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(SpecProblem {
            field: field.into(),
            message: message.into(),
        });
    }
}

#[cfg(test)]
mod tests {
    use phalanx_api::autoscaler::{MetricTargetSpec, ScaleTargetRef, ScalingPolicy};

    use crate::promql::ServingPreset;

    use super::*;

    fn metric(name: &str, preset: MetricPreset, target: MetricTargetSpec) -> AutoscalerMetric {
        AutoscalerMetric {
            name: name.to_owned(),
            query: None,
            preset: Some(preset),
            match_labels: BTreeMap::new(),
            serving: None,
            target,
        }
    }

    fn per_replica(value: f64) -> MetricTargetSpec {
        MetricTargetSpec {
            per_replica: Some(value),
            total: None,
            queue_wait: None,
        }
    }

    fn spec(min: u32, max: u32, metrics: Vec<AutoscalerMetric>) -> InferenceAutoscalerSpec {
        InferenceAutoscalerSpec {
            scale_target_ref: ScaleTargetRef {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: "llm".into(),
            },
            min_replicas: min,
            max_replicas: max,
            metrics,
            behavior: AutoscalerBehavior::default(),
            activation: (min == 0).then(|| gateway("sum(gateway_queue_depth)")),
        }
    }

    fn gateway(query: &str) -> ActivationSpec {
        ActivationSpec {
            query: query.to_owned(),
            threshold: None,
            per_replica: None,
            cooldown_seconds: None,
        }
    }

    fn problems(spec: &InferenceAutoscalerSpec) -> Vec<String> {
        match plan(spec) {
            Ok(_) => Vec::new(),
            Err(problems) => problems.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_valid_spec_gets_the_documented_defaults() {
        let mut queue = metric("queue", MetricPreset::VllmQueueDepth, per_replica(8.0));
        queue
            .match_labels
            .insert("namespace".into(), "serving".into());
        let plan = plan(&spec(0, 10, vec![queue])).expect("valid");
        let b = &plan.behavior;
        assert_eq!((b.min_replicas, b.max_replicas), (0, 10));
        assert_eq!(b.tolerance, defaults::TOLERANCE);
        // The decision module's tuned defaults, but for the workload's own two.
        let tuned = Behavior::with_bounds(0, 10);
        assert_eq!(b.stable_window, tuned.stable_window);
        assert_eq!(b.panic_window, tuned.panic_window);
        assert_eq!(b.panic_threshold, tuned.panic_threshold);
        assert_eq!(b.scale_up_stabilization, tuned.scale_up_stabilization);
        assert_eq!(b.scale_down_stabilization, Duration::from_secs(70));
        assert_eq!(b.scale_up_limits, tuned.scale_up_limits);
        assert_eq!(b.scale_down_limits, tuned.scale_down_limits);
        assert_eq!(b.startup, Duration::from_secs(30));
        assert_eq!(b.max_sample_age, Duration::from_secs(60));
        assert_eq!(plan.metrics.len(), 1);
        assert_eq!(plan.metrics[0].target, MetricTarget::PerReplica(8.0));
        let activation = plan.activation.expect("activation planned");
        assert_eq!(
            activation.source,
            MetricSource::Query("sum(gateway_queue_depth)".into())
        );
        assert_eq!(activation.activation.threshold, 0.0);
        assert_eq!(activation.activation.per_replica, None);
        assert_eq!(activation.activation.cooldown, Duration::from_secs(300));
        assert_eq!(activation.activation.max_sample_age, b.max_sample_age);
        assert!(matches!(
            &plan.metrics[0].source,
            MetricSource::Preset { preset: MetricPreset::VllmQueueDepth, matchers }
                if matchers.render() == r#"namespace="serving""#
        ));
    }

    #[test]
    fn min_above_max_names_both_numbers() {
        let spec = spec(
            5,
            3,
            vec![metric("q", MetricPreset::TgiQueueSize, per_replica(1.0))],
        );
        let problems = problems(&spec);
        assert!(
            problems.contains(
                &"spec.minReplicas: must not be above spec.maxReplicas (3), got 5".to_owned()
            ),
            "{problems:?}"
        );
    }

    #[test]
    fn a_zero_or_nan_target_is_refused() {
        for value in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let spec = spec(
                1,
                3,
                vec![metric("q", MetricPreset::TgiQueueSize, per_replica(value))],
            );
            let problems = problems(&spec);
            assert_eq!(problems.len(), 1, "{value}: {problems:?}");
            assert!(
                problems[0].starts_with("spec.metrics[0].target: must be a number above 0"),
                "{problems:?}"
            );
        }
    }

    #[test]
    fn a_metric_needs_exactly_one_source_and_one_target() {
        let mut both = metric("a", MetricPreset::TgiQueueSize, per_replica(1.0));
        both.query = Some("sum(x)".into());
        let mut neither = metric("b", MetricPreset::TgiQueueSize, MetricTargetSpec::default());
        neither.preset = None;
        let mut empty_query = metric("c", MetricPreset::TgiQueueSize, per_replica(1.0));
        empty_query.preset = None;
        empty_query.query = Some("  ".into());
        let two_targets = metric(
            "d",
            MetricPreset::TgiQueueSize,
            MetricTargetSpec {
                per_replica: Some(1.0),
                total: Some(1.0),
                queue_wait: None,
            },
        );
        let problems = problems(&spec(1, 3, vec![both, neither, empty_query, two_targets]));
        let expected = [
            "spec.metrics[0]: sets more than one of query, preset and serving; choose one",
            "spec.metrics[1]: needs a query, a preset (one of vllmQueueDepth,",
            "spec.metrics[1].target: needs perReplica, total or queueWait",
            "spec.metrics[2].query: must not be empty",
            "spec.metrics[3].target: sets more than one of perReplica, total and queueWait; \
             choose one",
        ];
        for want in expected {
            assert!(
                problems.iter().any(|p| p.starts_with(want)),
                "{want}: {problems:?}"
            );
        }
    }

    #[test]
    fn bad_label_names_and_duplicate_metric_names_are_refused() {
        let mut bad = metric("q", MetricPreset::VllmQueueDepth, per_replica(1.0));
        bad.match_labels.insert("model-name".into(), "x".into());
        let again = metric("q", MetricPreset::TgiQueueSize, per_replica(1.0));
        let problems = problems(&spec(1, 3, vec![bad, again]));
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("spec.metrics[0].matchLabels[\"model-name\"]")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p == "spec.metrics[1].name: \"q\" is used by an earlier metric"),
            "{problems:?}"
        );
    }

    #[test]
    fn no_metrics_zero_max_and_bad_behaviour_are_all_reported_at_once() {
        let mut spec = spec(0, 0, Vec::new());
        spec.behavior.tolerance = Some(1.5);
        spec.behavior.panic_window_seconds = Some(120);
        spec.behavior.scale_up = Some(ScalingRules {
            stabilization_window_seconds: None,
            policies: Some(vec![ScalingPolicy {
                type_: ScalingPolicyType::Pods,
                value: 0,
                period_seconds: 0,
            }]),
        });
        let problems = problems(&spec);
        for field in [
            "spec.maxReplicas",
            "spec.metrics",
            "spec.behavior.tolerance",
            "spec.behavior.panicWindowSeconds",
            "spec.behavior.scaleUp.policies[0].value",
            "spec.behavior.scaleUp.policies[0].periodSeconds",
        ] {
            assert!(
                problems
                    .iter()
                    .any(|p| p.starts_with(&format!("{field}: "))),
                "{field}: {problems:?}"
            );
        }
    }

    #[test]
    fn min_zero_without_activation_is_refused_naming_min_replicas() {
        let mut spec = spec(
            0,
            3,
            vec![metric("q", MetricPreset::VllmQueueDepth, per_replica(1.0))],
        );
        spec.activation = None;
        assert_eq!(
            problems(&spec),
            [
                "spec.minReplicas: 0 needs spec.activation: serving metrics vanish with the last \
              replica, so nothing could wake the workload"
            ]
        );
    }

    #[test]
    fn activation_with_a_minimum_of_one_is_allowed() {
        let mut spec = spec(
            1,
            3,
            vec![metric("q", MetricPreset::VllmQueueDepth, per_replica(1.0))],
        );
        spec.activation = Some(ActivationSpec {
            threshold: Some(2.0),
            per_replica: Some(4.0),
            cooldown_seconds: Some(0),
            ..gateway("sum(gateway_queue_depth)")
        });
        let plan = plan(&spec).expect("valid");
        let activation = plan.activation.expect("activation planned").activation;
        assert_eq!(activation.threshold, 2.0);
        assert_eq!(activation.per_replica, Some(4.0));
        assert_eq!(activation.cooldown, Duration::ZERO);
    }

    #[test]
    fn a_bad_activation_names_each_field() {
        let mut spec = spec(
            0,
            3,
            vec![metric("q", MetricPreset::VllmQueueDepth, per_replica(1.0))],
        );
        spec.activation = Some(ActivationSpec {
            threshold: Some(-1.0),
            per_replica: Some(0.0),
            ..gateway("  ")
        });
        let problems = problems(&spec);
        for field in [
            "spec.activation.query",
            "spec.activation.threshold",
            "spec.activation.perReplica",
        ] {
            assert!(
                problems
                    .iter()
                    .any(|p| p.starts_with(&format!("{field}: "))),
                "{field}: {problems:?}"
            );
        }
        for threshold in [f64::NAN, f64::INFINITY] {
            spec.activation = Some(ActivationSpec {
                threshold: Some(threshold),
                ..gateway("sum(g)")
            });
            let problems = super::tests::problems(&spec);
            assert_eq!(
                problems,
                [format!(
                    "spec.activation.threshold: must be a number of at least 0, got {threshold}"
                )]
            );
        }
    }

    fn queue_wait(seconds: f64, slots: u32) -> MetricTargetSpec {
        MetricTargetSpec {
            queue_wait: Some(QueueWaitTarget {
                seconds,
                slots_per_replica: slots,
                attainment: None,
                drain_seconds: None,
            }),
            ..MetricTargetSpec::default()
        }
    }

    fn serving_block() -> ServingQueriesSpec {
        ServingQueriesSpec {
            running: " sum(engine_running) ".into(),
            waiting: "sum(engine_waiting)".into(),
            mean_slot_seconds: "engine_slot_seconds".into(),
            kv_cache_usage: None,
            ready_replicas: Some("count(engine_running)".into()),
        }
    }

    #[test]
    fn a_serving_preset_with_queue_wait_plans_the_objective_with_its_defaults() {
        let mut wait = metric("wait", MetricPreset::VllmServing, queue_wait(2.0, 8));
        wait.match_labels.insert("model".into(), "llm".into());
        let plan = plan(&spec(1, 10, vec![wait])).expect("valid");
        let metric = &plan.metrics[0];
        assert_eq!(metric.target, MetricTarget::PerReplica(1.0));
        let MetricSource::Serving(serving) = &metric.source else {
            panic!("a serving source: {:?}", metric.source);
        };
        assert_eq!(
            serving.objective,
            QueueObjective {
                wait_seconds: 2.0,
                attainment: objective_defaults::ATTAINMENT,
            }
        );
        assert_eq!(
            serving.shape,
            ReplicaShape {
                slots: 8,
                drain_seconds: objective_defaults::DRAIN_SECONDS,
            }
        );
        assert!(matches!(
            &serving.series,
            ServingSeries::Preset { preset: ServingPreset::Vllm, matchers }
                if matchers.render() == r#"model="llm""#
        ));
    }

    #[test]
    fn a_serving_block_plans_its_queries_trimmed() {
        let mut own = metric("wait", MetricPreset::VllmServing, queue_wait(1.0, 4));
        own.preset = None;
        own.serving = Some(serving_block());
        let plan = plan(&spec(1, 10, vec![own])).expect("valid");
        let MetricSource::Serving(serving) = &plan.metrics[0].source else {
            panic!("a serving source");
        };
        let ServingSeries::Queries(queries) = &serving.series else {
            panic!("the user's queries");
        };
        assert_eq!(queries.running, SeriesQuery::raw("sum(engine_running)"));
        assert!(queries.kv_cache_usage.is_empty());
        assert_eq!(
            queries.ready_replicas,
            Some(SeriesQuery::raw("count(engine_running)"))
        );
    }

    #[test]
    fn a_bad_queue_wait_names_every_field() {
        let bad = MetricTargetSpec {
            queue_wait: Some(QueueWaitTarget {
                seconds: 0.0,
                slots_per_replica: 0,
                attainment: Some(1.0),
                drain_seconds: Some(-1.0),
            }),
            ..MetricTargetSpec::default()
        };
        let problems = problems(&spec(
            1,
            3,
            vec![metric("wait", MetricPreset::TgiServing, bad)],
        ));
        let field = "spec.metrics[0].target.queueWait";
        for want in [
            format!("{field}.seconds: must be a number above 0, got 0"),
            format!("{field}.slotsPerReplica: must be at least 1"),
            format!("{field}.attainment: must be above 0 and below 1, got 1"),
            format!("{field}.drainSeconds: must be a number above 0, got -1"),
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(&want)),
                "{want}: {problems:?}"
            );
        }
        assert_eq!(problems.len(), 4, "{problems:?}");
        for attainment in [0.0, f64::NAN, -0.5] {
            let target = MetricTargetSpec {
                queue_wait: Some(QueueWaitTarget {
                    attainment: Some(attainment),
                    ..queue_wait(2.0, 8).queue_wait.expect("set")
                }),
                ..MetricTargetSpec::default()
            };
            let problems = super::tests::problems(&spec(
                1,
                3,
                vec![metric("wait", MetricPreset::TgiServing, target)],
            ));
            assert_eq!(problems.len(), 1, "{attainment}: {problems:?}");
            assert!(problems[0].starts_with(&format!("{field}.attainment")));
        }
    }

    #[test]
    fn queue_wait_and_serving_series_come_only_together() {
        // queueWait on a one-number preset, and on a raw query.
        let on_queue = metric("a", MetricPreset::VllmQueueDepth, queue_wait(2.0, 8));
        let mut on_query = metric("b", MetricPreset::VllmQueueDepth, queue_wait(2.0, 8));
        on_query.preset = None;
        on_query.query = Some("sum(x)".into());
        // A serving preset, and a serving block, without queueWait.
        let serving_per_replica = metric("c", MetricPreset::TritonServing, per_replica(4.0));
        let mut block_per_replica = metric("d", MetricPreset::TritonServing, per_replica(4.0));
        block_per_replica.preset = None;
        block_per_replica.serving = Some(serving_block());
        // queueWait beside perReplica; a serving block beside a preset.
        let two_targets = metric(
            "e",
            MetricPreset::VllmServing,
            MetricTargetSpec {
                per_replica: Some(1.0),
                ..queue_wait(2.0, 8)
            },
        );
        let mut two_sources = metric("f", MetricPreset::VllmServing, queue_wait(2.0, 8));
        two_sources.serving = Some(serving_block());
        let mut empty = metric("g", MetricPreset::VllmServing, queue_wait(2.0, 8));
        empty.preset = None;
        empty.serving = Some(ServingQueriesSpec {
            waiting: " ".into(),
            kv_cache_usage: Some(String::new()),
            ..serving_block()
        });
        empty.match_labels.insert("model".into(), "llm".into());
        let problems = problems(&spec(
            1,
            3,
            vec![
                on_queue,
                on_query,
                serving_per_replica,
                block_per_replica,
                two_targets,
                two_sources,
                empty,
            ],
        ));
        for want in [
            "spec.metrics[0].target.queueWait: needs a serving preset (vllmServing, \
             tritonServing, tgiServing), not vllmQueueDepth",
            "spec.metrics[1].target.queueWait: needs the serving series",
            "spec.metrics[2].preset: tritonServing is a set of serving series: it needs a \
             queueWait target",
            "spec.metrics[3].serving: is a set of serving series: it needs a queueWait target",
            "spec.metrics[4].target: sets more than one of perReplica, total and queueWait",
            "spec.metrics[5]: sets more than one of query, preset and serving",
            "spec.metrics[6].serving.waiting: must not be empty",
            "spec.metrics[6].serving.kvCacheUsage: must not be empty",
            "spec.metrics[6].matchLabels: only narrows a preset",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(want)),
                "{want}: {problems:?}"
            );
        }
        assert_eq!(problems.len(), 9, "{problems:?}");
    }
}
