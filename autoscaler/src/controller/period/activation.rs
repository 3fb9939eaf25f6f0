//! What the activation gate's verdicts look like from outside: the activation
//! query's reading, `status.activation`, and the words of conditions and
//! events when the activation decided a period.

use std::time::Duration;

use phalanx_api::autoscaler::ActivationStatus;

use super::{metric_statuses, time_of, ConditionState, MetricRead, Observed, Reading, ACTIVATION};
use crate::decision::{ActivationGate, ActivationReason, ActivationState, Gated};
use crate::spec::{ActivationPlan, MetricSource};

/// The activation's reading, or an absent one when the loop did not read it.
pub(super) fn activation_read(activation: &ActivationPlan, observed: &Observed) -> MetricRead {
    observed.activation.clone().unwrap_or_else(|| MetricRead {
        name: ACTIVATION.to_owned(),
        query: match &activation.source {
            MetricSource::Query(query) => query.clone(),
            MetricSource::Preset { preset, .. } => preset.as_str().to_owned(),
            MetricSource::Serving(serving) => serving.series.queries().running.value,
        },
        reading: Reading::Absent,
        detail: None,
    })
}

/// `status.activation`: its reading shown as a metric's is, and the gate's
/// verdict (`active`, quiet since when).
pub(super) fn activation_status(
    read: &MetricRead,
    active: bool,
    quiet_since: Option<Duration>,
    now: Duration,
    max_age: Duration,
) -> ActivationStatus {
    let status = metric_statuses(std::slice::from_ref(read), now, max_age)
        .pop()
        .unwrap_or_default();
    ActivationStatus {
        query: status.query,
        value: status.value,
        sampled_at: status.sampled_at,
        active,
        quiet_since: quiet_since.and_then(time_of),
        problem: status.problem,
    }
}

/// What the activation gate's decisions say in conditions and events.
pub(super) struct GateWords<'a> {
    pub gate: &'a ActivationGate,
    pub gated: &'a Gated,
    pub now: Duration,
}

impl GateWords<'_> {
    /// "activation 3 > threshold 0", "activation 0 ≤ threshold 0", or why
    /// there is no usable value.
    fn reading(&self) -> String {
        let threshold = self.gate.activation().threshold;
        match &self.gated.state {
            ActivationState::Active { value } => format!("{ACTIVATION} {value} > {threshold}"),
            ActivationState::Quiet { value } => {
                format!("{ACTIVATION} {value} is at or below {threshold}")
            }
            ActivationState::Stale => format!("{ACTIVATION} has no fresh sample"),
            ActivationState::Invalid(why) => format!("{ACTIVATION} is not usable: {why}"),
        }
    }

    fn quiet_for(&self) -> u64 {
        self.gated
            .quiet_since
            .map_or(0, |since| self.now.saturating_sub(since).as_secs())
    }

    fn cooldown(&self) -> u64 {
        self.gate.activation().cooldown.as_secs()
    }

    /// `ScalingActive` when the activation decided the period.
    pub fn condition(&self, reason: ActivationReason, current: u32) -> ConditionState {
        let reading = self.reading();
        match reason {
            ActivationReason::Activated => ConditionState::yes(
                reason.as_str(),
                format!(
                    "{reading}: waking from zero to {} replica(s)",
                    self.gated.desired_replicas
                ),
            ),
            ActivationReason::Idle => ConditionState::yes(
                reason.as_str(),
                format!("at zero replicas; {reading}: nothing to wake for"),
            ),
            ActivationReason::ActivationUnreadable => ConditionState::no(
                reason.as_str(),
                format!(
                    "at zero replicas and {reading}: nothing wakes the workload until it reads \
                     fresh again"
                ),
            ),
            ActivationReason::ActivationCooldown => ConditionState::yes(
                reason.as_str(),
                format!(
                    "the metrics allow zero replicas, but {reading}; the last replica goes after \
                     {}s of fresh quiet readings (quiet for {}s); holding {} of {current}",
                    self.cooldown(),
                    self.quiet_for(),
                    self.gated.desired_replicas,
                ),
            ),
            ActivationReason::ScaledToZero => ConditionState::yes(
                reason.as_str(),
                format!(
                    "{reading} for {}s (cooldownSeconds {}) and the metrics want no replica",
                    self.quiet_for(),
                    self.cooldown()
                ),
            ),
        }
    }

    /// The event's reason and note (before the new size) for a change the
    /// activation decided; `None` for reasons that never change the replicas.
    pub fn rescale(&self, reason: ActivationReason) -> Option<(&'static str, String)> {
        let reading = self.reading();
        match reason {
            ActivationReason::Activated => Some((reason.as_str(), reading)),
            ActivationReason::ScaledToZero => Some((
                reason.as_str(),
                format!(
                    "{reading} for {}s (cooldownSeconds {})",
                    self.quiet_for(),
                    self.cooldown()
                ),
            )),
            ActivationReason::ActivationCooldown => Some((
                "SuccessfulRescale",
                format!(
                    "reason: {reason}: {reading}, quiet for {}s of {}s",
                    self.quiet_for(),
                    self.cooldown()
                ),
            )),
            ActivationReason::Idle | ActivationReason::ActivationUnreadable => None,
        }
    }
}
