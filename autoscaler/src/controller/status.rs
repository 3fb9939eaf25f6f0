//! The status an autoscaler shows, and the events its changes deserve.
//!
//! Pure: built from what one control period found. A condition keeps its
//! `lastTransitionTime` while its status stays the same, as Kubernetes
//! conventions ask, and [`condition_events`] reports a condition when it turns
//! bad, when it recovers, or when a bad one's message changes (new numbers),
//! so events follow changes rather than periods.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use phalanx_api::autoscaler::{
    ActivationStatus, InferenceAutoscalerStatus, MetricStatus, CONDITION_CAPACITY_LIMITED,
    CONDITION_METRICS_STALE, CONDITION_SCALING_ACTIVE,
};
use phalanx_runtime::events::{EventSpec, EventType};

/// One condition as a period sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionState {
    pub status: bool,
    /// CamelCase, as Kubernetes conditions and events spell reasons.
    pub reason: &'static str,
    pub message: String,
}

impl ConditionState {
    pub fn yes(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: true,
            reason,
            message: message.into(),
        }
    }

    pub fn no(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: false,
            reason,
            message: message.into(),
        }
    }
}

/// The three conditions of an `InferenceAutoscaler`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conditions {
    pub scaling_active: ConditionState,
    pub capacity_limited: ConditionState,
    pub metrics_stale: ConditionState,
}

impl Conditions {
    fn by_type(&self) -> [(&'static str, &ConditionState, bool); 3] {
        // (type, state, the status that is bad news)
        [
            (CONDITION_SCALING_ACTIVE, &self.scaling_active, false),
            (CONDITION_CAPACITY_LIMITED, &self.capacity_limited, true),
            (CONDITION_METRICS_STALE, &self.metrics_stale, true),
        ]
    }
}

/// What a period found, for the status.
#[derive(Debug, Clone)]
pub struct PeriodReport {
    pub generation: Option<i64>,
    pub current_replicas: u32,
    pub desired_replicas: u32,
    pub deciding_metric: Option<String>,
    pub last_scale_time: Option<Time>,
    pub conditions: Conditions,
    pub metrics: Vec<MetricStatus>,
    pub activation: Option<ActivationStatus>,
}

fn status_word(status: bool) -> &'static str {
    if status {
        "True"
    } else {
        "False"
    }
}

/// The new status, keeping transition times of conditions whose status held.
pub fn next_status(
    previous: Option<&InferenceAutoscalerStatus>,
    report: &PeriodReport,
    now: &Time,
) -> InferenceAutoscalerStatus {
    let conditions = report
        .conditions
        .by_type()
        .into_iter()
        .map(|(type_, state, _)| {
            let before = previous.and_then(|s| s.conditions.iter().find(|c| c.type_ == type_));
            let last_transition_time = match before {
                Some(c) if c.status == status_word(state.status) => c.last_transition_time.clone(),
                _ => now.clone(),
            };
            Condition {
                type_: type_.to_owned(),
                status: status_word(state.status).to_owned(),
                reason: state.reason.to_owned(),
                message: state.message.clone(),
                last_transition_time,
                observed_generation: report.generation,
            }
        })
        .collect();
    InferenceAutoscalerStatus {
        observed_generation: report.generation,
        current_replicas: report.current_replicas,
        desired_replicas: report.desired_replicas,
        deciding_metric: report.deciding_metric.clone(),
        last_scale_time: report
            .last_scale_time
            .clone()
            .or_else(|| previous.and_then(|s| s.last_scale_time.clone())),
        conditions,
        metrics: report.metrics.clone(),
        activation: report.activation.clone(),
    }
}

/// Events for conditions that changed: a Warning when one turns bad (or a bad
/// one's message changes), a Normal one when it recovers.
pub fn condition_events(
    previous: Option<&InferenceAutoscalerStatus>,
    conditions: &Conditions,
    regarding: &ObjectReference,
) -> Vec<EventSpec> {
    conditions
        .by_type()
        .into_iter()
        .filter_map(|(type_, state, bad_status)| {
            let before = previous.and_then(|s| s.conditions.iter().find(|c| c.type_ == type_));
            let was_bad = before.is_some_and(|c| c.status == status_word(bad_status));
            let is_bad = state.status == bad_status;
            let message_changed = before.is_none_or(|c| c.message != state.message);
            let type_ = if is_bad && (!was_bad || message_changed) {
                EventType::Warning
            } else if !is_bad && was_bad {
                EventType::Normal
            } else {
                return None;
            };
            Some(EventSpec {
                regarding: regarding.clone(),
                type_,
                reason: state.reason,
                action: "Autoscaling",
                note: state.message.clone(),
                annotations: Default::default(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).expect("valid time"))
    }

    fn report(capacity: ConditionState) -> PeriodReport {
        PeriodReport {
            generation: Some(3),
            current_replicas: 2,
            desired_replicas: 4,
            deciding_metric: Some("queue".into()),
            last_scale_time: None,
            conditions: Conditions {
                scaling_active: ConditionState::yes("ValidMetricFound", "ok"),
                capacity_limited: capacity,
                metrics_stale: ConditionState::no("FreshSamples", "all fresh"),
            },
            metrics: Vec::new(),
            activation: None,
        }
    }

    fn reference() -> ObjectReference {
        ObjectReference {
            name: Some("llm".into()),
            namespace: Some("serving".into()),
            ..ObjectReference::default()
        }
    }

    #[test]
    fn transition_times_move_only_when_the_status_does() {
        let first = next_status(
            None,
            &report(ConditionState::no("NotLimited", "")),
            &at(100),
        );
        assert!(first
            .conditions
            .iter()
            .all(|c| c.last_transition_time == at(100)));
        assert_eq!(first.observed_generation, Some(3));
        let limited = report(ConditionState::yes(
            "InsufficientCapacity",
            "wanted 4, 3 fit",
        ));
        let second = next_status(Some(&first), &limited, &at(200));
        let time_of = |status: &InferenceAutoscalerStatus, type_: &str| {
            status
                .conditions
                .iter()
                .find(|c| c.type_ == type_)
                .map(|c| c.last_transition_time.clone())
        };
        assert_eq!(time_of(&second, CONDITION_CAPACITY_LIMITED), Some(at(200)));
        assert_eq!(time_of(&second, CONDITION_SCALING_ACTIVE), Some(at(100)));
    }

    #[test]
    fn events_follow_changes_not_periods() {
        let fine = report(ConditionState::no("NotLimited", ""));
        let limited = report(ConditionState::yes(
            "InsufficientCapacity",
            "wanted 4, 3 fit",
        ));
        let s0 = next_status(None, &fine, &at(1));
        // First sight of good conditions: nothing to say.
        assert!(condition_events(None, &fine.conditions, &reference()).is_empty());
        let events = condition_events(Some(&s0), &limited.conditions, &reference());
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].type_, EventType::Warning);
        assert_eq!(events[0].reason, "InsufficientCapacity");
        assert_eq!(events[0].note, "wanted 4, 3 fit");
        let s1 = next_status(Some(&s0), &limited, &at(2));
        assert!(condition_events(Some(&s1), &limited.conditions, &reference()).is_empty());
        let worse = report(ConditionState::yes(
            "InsufficientCapacity",
            "wanted 6, 3 fit",
        ));
        assert_eq!(
            condition_events(Some(&s1), &worse.conditions, &reference()).len(),
            1
        );
        let recovered = condition_events(Some(&s1), &fine.conditions, &reference());
        assert_eq!(recovered.len(), 1);
        assert_eq!(recovered[0].type_, EventType::Normal);
    }
}
