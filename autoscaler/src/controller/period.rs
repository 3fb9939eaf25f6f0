//! One control period of one autoscaler, decided: what the loop observed in,
//! what to do out. No I/O and no clock: the time is an input.
//!
//! The loop gathers an [`Observed`] (the target's replicas and pods, each
//! metric's reading, the time); [`decide`] turns it, the checked spec and what
//! the loop remembers of the autoscaler ([`Tracked`]) into a [`Plan`]: the
//! replicas to scale to, what to count, and (through [`Plan::settle`]) the
//! status to write and the events to record.
//!
//! Two answers only I/O can give come back in through pure steps as well:
//!
//! * how far a scale-up may go: [`decide`] asks ([`Decided::NeedsCapacity`])
//!   and the capacity check's finding is the answer
//!   ([`CapacityQuestion::answer`]), so the pod template is read and placed
//!   only when replicas are to be added;
//! * whether the `/scale` patch went through: [`Plan::rescaled`] or
//!   [`Plan::rescale_failed`], before [`Plan::settle`].

use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};
use phalanx_api::autoscaler::{ActivationStatus, MetricStatus};
use phalanx_api::{InferenceAutoscaler, InferenceAutoscalerStatus};
use phalanx_runtime::events::{EventSpec, EventType};

use super::capacity::CapacityCheck;
use super::prometheus::{MetricRead, Reading};
use super::status::{condition_events, next_status, ConditionState, Conditions, PeriodReport};
use super::telemetry::PeriodResult;
use crate::decision::{
    ActivationGate, ActivationReason, Decision, GateInput, Observation, ReplicaDecider,
};
use crate::spec::{self, AutoscalerPlan, SpecProblem};
use activation::{activation_read, activation_status, GateWords};

/// How the activation query is named in conditions, events and the
/// autoscaler's own metrics: the field it comes from, which no metric name
/// can be mistaken for.
pub const ACTIVATION: &str = "spec.activation";

/// What the loop remembers per autoscaler between periods.
#[derive(Debug)]
pub struct Tracked {
    /// The spec generation the decider was built for.
    pub generation: Option<i64>,
    pub decider: ReplicaDecider,
    /// With `spec.activation`: what wakes the workload and guards its last
    /// replica.
    pub activation: Option<ActivationGate>,
    pub last_scale_time: Option<Time>,
}

/// The target as a period reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetState {
    /// `spec.replicas` of its `/scale`.
    pub replicas: u32,
    /// Its pods on nodes and, of those, the Ready ones; when its pods cannot be
    /// counted, the replicas its `/scale` reports, for both.
    pub placed: u32,
    pub ready: u32,
}

/// Everything a period's decision needs from outside.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// The target, or why it could not be read; `None` when it was not read.
    pub target: Option<Result<TargetState, String>>,
    /// Each metric's reading, in the spec's order; empty unless the spec is
    /// acted on and the target could be read.
    pub reads: Vec<MetricRead>,
    /// The activation query's reading, with `spec.activation` (read with the
    /// metrics).
    pub activation: Option<MetricRead>,
    /// Unix time, taken once the metrics were read.
    pub now: Duration,
}

/// The spec as a period may act on it.
#[derive(Debug)]
pub enum Spec<'a> {
    /// Invalid: reported, never acted on.
    Invalid(&'a [SpecProblem]),
    /// Valid, but the decision module refused its behaviour.
    Refused,
    /// Valid, with the state that decides on it.
    Valid {
        spec: &'a AutoscalerPlan,
        tracked: &'a mut Tracked,
    },
}

/// What [`decide`] concluded.
#[derive(Debug)]
pub enum Decided {
    Plan(Plan),
    /// The metrics want more replicas: how many can be placed decides.
    NeedsCapacity(CapacityQuestion),
}

/// A scale-up from `current` to `wanted`, with `placed` of the target's pods
/// on nodes, waiting for the capacity check.
#[derive(Debug)]
pub struct CapacityQuestion {
    pub current: u32,
    pub wanted: u32,
    pub placed: u32,
    scaling: Scaling,
}

impl CapacityQuestion {
    /// The plan, given what the capacity check found: `Ok(None)` for a kind
    /// without a pod template (not limited), `Err` for a check that could not
    /// be made (no replica is added).
    pub fn answer(self, found: Result<Option<CapacityCheck>, String>) -> Plan {
        let mut scaling = self.scaling;
        let to = match found {
            Ok(Some(check)) => {
                let allowed = check.allowed;
                scaling.plan.capacity = Some(check);
                allowed
            }
            Ok(None) => self.wanted,
            Err(problem) => {
                scaling.plan.capacity_problem = Some(problem);
                self.current
            }
        };
        scaling.to(to)
    }
}

/// A change of the target's replicas the plan asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rescale {
    pub from: u32,
    pub to: u32,
    /// The event's reason: `SuccessfulRescale`, or `Activated` and
    /// `ScaledToZero` for the steps from and to zero.
    pub reason: &'static str,
    /// The event's note.
    pub note: String,
    /// When it was decided (Unix time); the decider's rate limits count from it.
    decided_at: Duration,
}

/// What one metric's reading adds to the autoscaler's own metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Tally {
    pub metric: String,
    /// The value read, for its gauge.
    pub value: Option<f64>,
    /// Absent, unavailable or too old.
    pub stale: bool,
    /// Not one usable number.
    pub invalid: bool,
}

/// What one period does, and what it shows.
#[derive(Debug, Clone)]
pub struct Plan {
    current: u32,
    desired: Option<u32>,
    deciding_metric: Option<String>,
    last_scale_time: Option<Time>,
    scaling: ConditionState,
    capacity: Option<CapacityCheck>,
    capacity_problem: Option<String>,
    stale: Vec<(String, String)>,
    metrics: Vec<MetricStatus>,
    events: Vec<(EventType, &'static str, String)>,
    rescale: Option<Rescale>,
    tallies: Vec<Tally>,
    activation: Option<ActivationStatus>,
    result: PeriodResult,
}

/// The status and the events a settled period writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Settled {
    pub status: InferenceAutoscalerStatus,
    /// Whether `status` differs from the stored one (only then is it written).
    pub changed: bool,
    /// Period events (rescale, failures) first, then condition changes.
    pub events: Vec<EventSpec>,
    pub capacity_limited: bool,
    pub result: PeriodResult,
}

/// Decides one period: checks and holds first (an invalid spec, a refused
/// behaviour, an unreadable target, an unusable metric), then the decider's
/// replicas, capped at `maxReplicas`. A scale-up with `capacity_enabled`
/// first asks how far the cluster can take it.
pub fn decide(
    spec: Spec<'_>,
    previous: Option<&InferenceAutoscalerStatus>,
    observed: &Observed,
    capacity_enabled: bool,
) -> Decided {
    let mut plan = Plan::new(previous);
    let (spec, tracked) = match spec {
        Spec::Invalid(problems) => {
            // Show the replicas if the target can be read at all.
            if let Some(Ok(target)) = &observed.target {
                plan.current = target.replicas;
            }
            let message = format!(
                "the spec is invalid, nothing is scaled: {}",
                spec::describe(problems)
            );
            plan.hold("InvalidSpec", message);
            plan.result = PeriodResult::InvalidSpec;
            return Decided::Plan(plan);
        }
        Spec::Refused => {
            plan.hold(
                "InvalidSpec",
                "the decision module refused the behaviour".to_owned(),
            );
            plan.result = PeriodResult::InvalidSpec;
            return Decided::Plan(plan);
        }
        Spec::Valid { spec, tracked } => (spec, tracked),
    };
    plan.last_scale_time = tracked.last_scale_time.clone();
    decide_valid(plan, spec, tracked, observed, capacity_enabled)
}

/// [`decide`] on a spec that is acted on.
fn decide_valid(
    mut plan: Plan,
    spec: &AutoscalerPlan,
    tracked: &mut Tracked,
    observed: &Observed,
    capacity_enabled: bool,
) -> Decided {
    let target = match &observed.target {
        Some(Ok(target)) => *target,
        Some(Err(error)) => return Decided::Plan(plan.unreadable_target(error)),
        None => return Decided::Plan(plan.unreadable_target("the target was not read")),
    };
    plan.current = target.replicas;

    let now = observed.now;
    let reads = &observed.reads;
    let max_age = spec.behavior.max_sample_age;
    plan.metrics = metric_statuses(reads, now, max_age);
    plan.tallies = tallies(reads, now, max_age);
    plan.stale = stale_problems(reads, now, max_age);
    // The activation is read, judged and counted as the metrics are.
    let activation_read = spec
        .activation
        .as_ref()
        .map(|a| activation_read(a, observed));
    if let Some(read) = &activation_read {
        plan.activation = Some(activation_status(read, false, None, now, max_age));
        plan.tallies
            .extend(tallies(std::slice::from_ref(read), now, max_age));
        plan.stale
            .extend(stale_problems(std::slice::from_ref(read), now, max_age));
    }
    let invalid: Vec<String> = reads
        .iter()
        .chain(&activation_read)
        .filter_map(|r| match &r.reading {
            Reading::Invalid(why) => Some(format!("{}: {why}", r.name)),
            _ => None,
        })
        .collect();
    if !invalid.is_empty() {
        return Decided::Plan(plan.hold_on_invalid(&invalid));
    }

    let observation = Observation {
        now,
        current_replicas: plan.current,
        ready_replicas: target.ready.min(plan.current),
        metrics: reads
            .iter()
            .zip(&spec.metrics)
            .filter_map(|(read, metric)| read.to_decision(metric))
            .collect(),
    };
    let decision = tracked.decider.decide(&observation);
    if !decision.invalid_metrics.is_empty() {
        let problems: Vec<String> = decision
            .invalid_metrics
            .iter()
            .map(|p| format!("{}: {}", p.metric, p.problem))
            .collect();
        return Decided::Plan(plan.hold_on_invalid(&problems));
    }
    for name in &decision.stale_metrics {
        if !plan.stale.iter().any(|(metric, _)| metric == name) {
            plan.stale.push((name.clone(), "sample too old".to_owned()));
        }
    }
    plan.scaling = scaling_condition(&plan, spec.metrics.len(), &decision);
    let mut desired = decision.desired_replicas;
    plan.deciding_metric = decision.deciding_metric.clone();
    let mut gate_note = None;
    if let (Some(gate), Some(read)) = (tracked.activation.as_mut(), &activation_read) {
        let gated = gate.apply(&GateInput {
            now,
            current_replicas: plan.current,
            decided: desired,
            min_replicas: spec.behavior.min_replicas,
            max_replicas: spec.behavior.max_replicas,
            reading: read.to_activation(),
        });
        if plan.current == 0 && spec.behavior.min_replicas == 0 {
            // At zero the serving metrics are expected to be absent: they
            // vanish with the last replica, and the activation decides.
            plan.stale.retain(|(name, _)| {
                name == ACTIVATION
                    || !reads
                        .iter()
                        .any(|r| &r.name == name && r.reading == Reading::Absent)
            });
        }
        plan.activation = Some(activation_status(
            read,
            gated.state.is_active(),
            gated.quiet_since,
            now,
            max_age,
        ));
        if let Some(reason) = gated.reason {
            let words = GateWords {
                gate,
                gated: &gated,
                now,
            };
            plan.scaling = words.condition(reason, plan.current);
            gate_note = words.rescale(reason);
            if reason == ActivationReason::Activated {
                plan.deciding_metric = Some(ACTIVATION.to_owned());
            }
        }
        desired = gated.desired_replicas;
    }
    let wanted = desired.min(spec.behavior.max_replicas);
    plan.desired = Some(desired);

    let scaling = Scaling {
        deciding_value: deciding_value(&decision, reads),
        plan,
        decision,
        gate_note,
        now,
    };
    if wanted > scaling.plan.current && capacity_enabled {
        Decided::NeedsCapacity(CapacityQuestion {
            current: scaling.plan.current,
            wanted,
            placed: target.placed,
            scaling,
        })
    } else {
        Decided::Plan(scaling.to(wanted))
    }
}

/// `ScalingActive` once the decider has spoken.
fn scaling_condition(plan: &Plan, metrics: usize, decision: &Decision) -> ConditionState {
    let all_stale = metrics > 0 && plan.stale.len() >= metrics;
    if all_stale {
        ConditionState::no(
            "NoFreshMetric",
            format!(
                "no metric has fresh data; replicas held at {} (never scaled down on missing data)",
                plan.current
            ),
        )
    } else {
        ConditionState::yes(
            "ValidMetricFound",
            format!(
                "replicas computed from {metrics} metric(s); last decision: {:?}{}",
                decision.reason,
                if decision.panicking {
                    " (panic mode)"
                } else {
                    ""
                }
            ),
        )
    }
}

/// A decided period before the number it scales to is known.
#[derive(Debug)]
struct Scaling {
    plan: Plan,
    decision: Decision,
    /// "queue=37": the deciding metric's reading, for the rescale note.
    deciding_value: Option<String>,
    /// When the activation decided the step: the event's reason and what
    /// its note says before the new size.
    gate_note: Option<(&'static str, String)>,
    now: Duration,
}

impl Scaling {
    /// The plan that scales to `to` (a no-op when that is the current count).
    fn to(self, to: u32) -> Plan {
        let mut plan = self.plan;
        if to != plan.current {
            let capped = capacity_note(plan.capacity.as_ref());
            let (reason, note) = match self.gate_note {
                Some((reason, why)) => (reason, format!("{why}; New size: {to}{capped}")),
                None => (
                    "SuccessfulRescale",
                    rescale_note(to, &self.decision, self.deciding_value.as_deref()) + &capped,
                ),
            };
            plan.rescale = Some(Rescale {
                from: plan.current,
                to,
                reason,
                note,
                decided_at: self.now,
            });
        }
        plan
    }
}

impl Plan {
    fn new(previous: Option<&InferenceAutoscalerStatus>) -> Self {
        Plan {
            current: previous.map_or(0, |s| s.current_replicas),
            desired: None,
            deciding_metric: None,
            last_scale_time: None,
            scaling: ConditionState::yes("ValidMetricFound", ""),
            capacity: None,
            capacity_problem: None,
            stale: Vec::new(),
            metrics: previous.map(|s| s.metrics.clone()).unwrap_or_default(),
            events: Vec::new(),
            rescale: None,
            tallies: Vec::new(),
            activation: previous.and_then(|s| s.activation.clone()),
            result: PeriodResult::Decided,
        }
    }

    /// The replicas to scale to, if they change.
    pub fn rescale(&self) -> Option<&Rescale> {
        self.rescale.as_ref()
    }

    /// What each metric's reading adds to the autoscaler's own metrics.
    pub fn tallies(&self) -> &[Tally] {
        &self.tallies
    }

    /// The `/scale` patch went through at `at`: the target has the new
    /// replicas, and `tracked` remembers the change.
    pub fn rescaled(&mut self, at: &Time, tracked: Option<&mut Tracked>) {
        let Some(rescale) = self.rescale.clone() else {
            return;
        };
        if let Some(tracked) = tracked {
            tracked
                .decider
                .record_scale(rescale.decided_at, rescale.from, rescale.to);
            tracked.last_scale_time = Some(at.clone());
        }
        self.last_scale_time = Some(at.clone());
        self.event(EventType::Normal, rescale.reason, rescale.note);
        self.current = rescale.to;
    }

    /// The `/scale` patch failed with `error`: the replicas stay.
    pub fn rescale_failed(&mut self, error: &str) {
        let to = self.rescale.as_ref().map_or(self.current, |r| r.to);
        self.event(EventType::Warning, "FailedRescale", error.to_owned());
        self.scaling = ConditionState::no(
            "FailedRescale",
            format!("the scale to {to} replicas failed: {error}"),
        );
        self.result = PeriodResult::Error;
    }

    /// The status `object` gets from this period at `now`, and the events.
    pub fn settle(self, object: &InferenceAutoscaler, now: &Time) -> Settled {
        let conditions = Conditions {
            scaling_active: self.scaling.clone(),
            capacity_limited: self.capacity_condition(),
            metrics_stale: self.stale_condition(),
        };
        let report = PeriodReport {
            generation: object.metadata.generation,
            current_replicas: self.current,
            desired_replicas: self.desired.unwrap_or(self.current),
            deciding_metric: self.deciding_metric,
            last_scale_time: self.last_scale_time,
            conditions,
            metrics: self.metrics,
            activation: self.activation,
        };
        let previous = object.status.as_ref();
        let status = next_status(previous, &report, now);
        let regarding = reference(object);
        let mut changes = condition_events(previous, &report.conditions, &regarding);
        // Period events (rescale, failures) come first: they are what happened.
        let mut events: Vec<EventSpec> = self
            .events
            .into_iter()
            .map(|(type_, reason, note)| EventSpec {
                regarding: regarding.clone(),
                type_,
                reason,
                action: "Autoscaling",
                note,
                annotations: Default::default(),
            })
            .collect();
        // A condition event repeating a period event's reason says nothing new.
        changes.retain(|e| {
            !events
                .iter()
                .any(|p| p.reason == e.reason && p.note == e.note)
        });
        events.extend(changes);
        Settled {
            changed: previous != Some(&status),
            status,
            events,
            capacity_limited: report.conditions.capacity_limited.status,
            result: self.result,
        }
    }

    /// Nothing is scaled this period, for `reason`.
    fn hold(&mut self, reason: &'static str, message: String) {
        self.desired = Some(self.current);
        self.scaling = ConditionState::no(reason, message);
    }

    fn event(&mut self, type_: EventType, reason: &'static str, note: String) {
        self.events.push((type_, reason, note));
    }

    /// The target's `/scale` could not be read (`error`): nothing is scaled.
    fn unreadable_target(mut self, error: &str) -> Self {
        self.hold("FailedGetScale", error.to_owned());
        self.event(EventType::Warning, "FailedGetScale", error.to_owned());
        self.result = PeriodResult::Error;
        self
    }

    /// A metric cannot be used (`problems`, one per metric): the replicas stay,
    /// with a Warning event and `ScalingActive=False` that say why.
    fn hold_on_invalid(mut self, problems: &[String]) -> Self {
        let message = format!(
            "a metric is not usable, replicas held at {}: {}",
            self.current,
            problems.join("; ")
        );
        self.event(EventType::Warning, "InvalidMetric", message.clone());
        self.hold("InvalidMetric", message);
        self.result = PeriodResult::InvalidMetric;
        self
    }

    fn capacity_condition(&self) -> ConditionState {
        if let Some(problem) = &self.capacity_problem {
            return ConditionState::yes(
                "CapacityUnknown",
                format!("cannot check where new replicas would go, so none are added: {problem}"),
            );
        }
        match &self.capacity {
            Some(check) if check.limited() => {
                ConditionState::yes("InsufficientCapacity", check.message())
            }
            Some(check) => ConditionState::no(
                "EnoughCapacity",
                format!("all {} wanted replicas can be placed", check.wanted),
            ),
            None => ConditionState::no(
                "EnoughCapacity",
                "no scale-up beyond capacity was asked for",
            ),
        }
    }

    fn stale_condition(&self) -> ConditionState {
        if self.stale.is_empty() {
            ConditionState::no("FreshSamples", "every metric has a fresh sample")
        } else {
            let list: Vec<String> = self
                .stale
                .iter()
                .map(|(metric, why)| format!("{metric}: {why}"))
                .collect();
            ConditionState::yes(
                "StaleSamples",
                format!("never scaled down on these: {}", list.join("; ")),
            )
        }
    }
}

/// Absent, unavailable and too-old readings, by metric.
fn stale_problems(reads: &[MetricRead], now: Duration, max_age: Duration) -> Vec<(String, String)> {
    reads
        .iter()
        .filter_map(|read| {
            let why = match &read.reading {
                Reading::Absent => "no series (absent, not zero)".to_owned(),
                Reading::Unavailable(why) => format!("Prometheus unavailable: {why}"),
                Reading::Value { sampled_at, .. } => {
                    let age = now.saturating_sub(*sampled_at);
                    if age <= max_age {
                        return None;
                    }
                    format!(
                        "sample is {}s old (max {}s)",
                        age.as_secs(),
                        max_age.as_secs()
                    )
                }
                Reading::Invalid(_) => return None,
            };
            Some((read.name.clone(), why))
        })
        .collect()
}

fn metric_statuses(reads: &[MetricRead], now: Duration, max_age: Duration) -> Vec<MetricStatus> {
    let stale = stale_problems(reads, now, max_age);
    reads
        .iter()
        .map(|read| {
            let (value, sampled_at) = match &read.reading {
                Reading::Value { value, sampled_at } => (Some(*value), Some(*sampled_at)),
                _ => (None, None),
            };
            let problem = match &read.reading {
                Reading::Value { .. } => stale
                    .iter()
                    .find(|(name, _)| *name == read.name)
                    .map(|(_, why)| why.clone()),
                other => other.problem(),
            };
            MetricStatus {
                name: read.name.clone(),
                query: Some(read.query.clone()),
                value,
                sampled_at: sampled_at.and_then(time_of),
                problem,
                detail: read.detail.clone(),
            }
        })
        .collect()
}

/// Each reading as the autoscaler's own metrics count it.
fn tallies(reads: &[MetricRead], now: Duration, max_age: Duration) -> Vec<Tally> {
    reads
        .iter()
        .map(|read| {
            let mut tally = Tally {
                metric: read.name.clone(),
                value: None,
                stale: false,
                invalid: false,
            };
            match &read.reading {
                Reading::Value { value, sampled_at } => {
                    tally.value = Some(*value);
                    tally.stale = now.saturating_sub(*sampled_at) > max_age;
                }
                Reading::Absent | Reading::Unavailable(_) => tally.stale = true,
                Reading::Invalid(_) => tally.invalid = true,
            }
            tally
        })
        .collect()
}

/// "queue=37": the deciding metric and its reading, if it has a value.
fn deciding_value(decision: &Decision, reads: &[MetricRead]) -> Option<String> {
    let name = decision.deciding_metric.as_ref()?;
    reads
        .iter()
        .find(|r| &r.name == name)
        .and_then(|r| match r.reading {
            Reading::Value { value, .. } => Some(format!("{name}={value}")),
            _ => None,
        })
}

/// "New size: 4; reason: queue=37 (ScaleUp)".
fn rescale_note(to: u32, decision: &Decision, value: Option<&str>) -> String {
    let mut note = format!(
        "New size: {to}; reason: {}{:?}",
        value.map(|v| format!("{v} ")).unwrap_or_default(),
        decision.reason
    );
    if decision.panicking {
        note.push_str(" in panic mode");
    }
    note
}

/// "; capped by capacity: …" when the capacity check cut the change short.
fn capacity_note(capacity: Option<&CapacityCheck>) -> String {
    capacity
        .filter(|c| c.limited())
        .map(|check| format!("; capped by capacity: {}", check.message()))
        .unwrap_or_default()
}

/// The object events are about.
fn reference(object: &InferenceAutoscaler) -> ObjectReference {
    ObjectReference {
        api_version: Some(InferenceAutoscaler::api_version(&()).into_owned()),
        kind: Some(InferenceAutoscaler::kind(&()).into_owned()),
        namespace: object.namespace(),
        name: Some(object.name_any()),
        uid: object.uid(),
        ..ObjectReference::default()
    }
}

fn time_of(unix: Duration) -> Option<Time> {
    let nanos = i128::try_from(unix.as_nanos()).ok()?;
    Timestamp::from_nanosecond(nanos).ok().map(Time)
}

mod activation;
#[cfg(test)]
mod tests;
