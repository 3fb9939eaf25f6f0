//! [`decide`] fed observations; the plans checked.

use super::*;

fn read(name: &str, reading: Reading) -> MetricRead {
    MetricRead {
        name: name.into(),
        query: format!("sum({name})"),
        reading,
        detail: None,
    }
}

#[test]
fn stale_means_absent_unavailable_or_old_never_invalid() {
    let now = Duration::from_secs(1000);
    let max = Duration::from_secs(60);
    let reads = [
        read(
            "fresh",
            Reading::Value {
                value: 1.0,
                sampled_at: Duration::from_secs(990),
            },
        ),
        read(
            "old",
            Reading::Value {
                value: 1.0,
                sampled_at: Duration::from_secs(900),
            },
        ),
        read("gone", Reading::Absent),
        read("down", Reading::Unavailable("connection refused".into())),
        read("nan", Reading::Invalid("NaN".into())),
    ];
    let stale = stale_problems(&reads, now, max);
    let names: Vec<&str> = stale.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["old", "gone", "down"]);
    assert_eq!(stale[0].1, "sample is 100s old (max 60s)");
    let statuses = metric_statuses(&reads, now, max);
    assert_eq!(statuses[0].problem, None);
    assert_eq!(statuses[0].value, Some(1.0));
    assert_eq!(
        statuses[1].problem.as_deref(),
        Some("sample is 100s old (max 60s)")
    );
    assert_eq!(statuses[2].value, None, "absent is no value, not zero");
    assert_eq!(statuses[4].problem.as_deref(), Some("NaN"));
    assert_eq!(
        statuses[0].sampled_at,
        Some(Time(Timestamp::from_second(990).expect("time")))
    );
}

use std::collections::BTreeMap;

use kube::api::ObjectMeta;
use phalanx_api::autoscaler::{
    AutoscalerMetric, MetricTargetSpec, ScaleTargetRef, CONDITION_CAPACITY_LIMITED,
    CONDITION_METRICS_STALE, CONDITION_SCALING_ACTIVE,
};
use phalanx_api::InferenceAutoscalerSpec;

fn at(seconds: u64) -> Time {
    time_of(Duration::from_secs(seconds)).expect("time")
}

/// `queue` as Prometheus answered it at `now`: `value` sampled just now.
fn queue(value: f64, now: u64) -> Reading {
    Reading::Value {
        value,
        sampled_at: Duration::from_secs(now),
    }
}

/// What the loop gathered: the target with `replicas`, all placed and
/// ready, and `queue` read as `reading`, at `now`.
fn observed(replicas: u32, reading: Reading, now: u64) -> Observed {
    Observed {
        target: Some(Ok(TargetState {
            replicas,
            placed: replicas,
            ready: replicas,
        })),
        reads: vec![read("queue", reading)],
        activation: None,
        now: Duration::from_secs(now),
    }
}

/// One autoscaler on `serving/llm`: 1 to 10 replicas, 10 waiting requests
/// per replica, the spec's default behaviour, as the loop tracks it.
struct Autoscaler {
    object: InferenceAutoscaler,
    spec: AutoscalerPlan,
    tracked: Tracked,
}

impl Autoscaler {
    fn new() -> Self {
        Self::with_metric(AutoscalerMetric {
            name: "queue".into(),
            query: Some("sum(queue)".into()),
            preset: None,
            match_labels: BTreeMap::new(),
            serving: None,
            target: MetricTargetSpec {
                per_replica: Some(10.0),
                total: None,
                queue_wait: None,
            },
        })
    }

    /// As [`Autoscaler::new`], scaling on `metric` alone.
    fn with_metric(metric: AutoscalerMetric) -> Self {
        let spec = InferenceAutoscalerSpec {
            scale_target_ref: ScaleTargetRef {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: "llm".into(),
            },
            min_replicas: 1,
            max_replicas: 10,
            metrics: vec![metric],
            // The HPA's scale-down (300 s, all at once), so that each test sees
            // the rule it is about whatever the tuned defaults are.
            behavior: phalanx_api::autoscaler::AutoscalerBehavior {
                scale_down: Some(hpa_scale_down(300)),
                ..Default::default()
            },
            activation: None,
        };
        let plan = spec::plan(&spec).expect("a valid spec");
        let mut object = InferenceAutoscaler::new("llm", spec);
        object.metadata = ObjectMeta {
            name: Some("llm".into()),
            namespace: Some("serving".into()),
            uid: Some("uid-1".into()),
            generation: Some(1),
            ..ObjectMeta::default()
        };
        let tracked = Tracked {
            generation: Some(1),
            decider: ReplicaDecider::new(plan.behavior.clone()).expect("a valid behaviour"),
            activation: None,
            last_scale_time: None,
        };
        Autoscaler {
            object,
            spec: plan,
            tracked,
        }
    }

    /// As if an earlier period had shown `current` replicas.
    fn showing(mut self, current: u32) -> Self {
        self.object.status = Some(InferenceAutoscalerStatus {
            current_replicas: current,
            desired_replicas: current,
            ..InferenceAutoscalerStatus::default()
        });
        self
    }

    fn decide(&mut self, observed: &Observed, capacity_enabled: bool) -> Decided {
        let spec = Spec::Valid {
            spec: &self.spec,
            tracked: &mut self.tracked,
        };
        decide(
            spec,
            self.object.status.as_ref(),
            observed,
            capacity_enabled,
        )
    }

    /// The plan, where no capacity check is asked for.
    fn plan(&mut self, observed: &Observed) -> Plan {
        match self.decide(observed, true) {
            Decided::Plan(plan) => plan,
            Decided::NeedsCapacity(question) => {
                panic!("no capacity check expected: {question:?}")
            }
        }
    }

    /// A scale-up's capacity question.
    fn question(&mut self, observed: &Observed) -> CapacityQuestion {
        match self.decide(observed, true) {
            Decided::NeedsCapacity(question) => question,
            Decided::Plan(plan) => panic!("a capacity check expected: {plan:?}"),
        }
    }

    /// Settles `plan` at `now` and keeps the status, as the loop does once
    /// the write went through.
    fn settle(&mut self, plan: Plan, now: u64) -> Settled {
        let settled = plan.settle(&self.object, &at(now));
        self.object.status = Some(settled.status.clone());
        settled
    }
}

fn condition<'a>(
    status: &'a InferenceAutoscalerStatus,
    type_: &str,
) -> (&'a str, &'a str, &'a str) {
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .expect("every condition is set");
    (c.status.as_str(), c.reason.as_str(), c.message.as_str())
}

fn events(settled: &Settled) -> Vec<(EventType, &'static str, &str)> {
    settled
        .events
        .iter()
        .map(|e| (e.type_, e.reason, e.note.as_str()))
        .collect()
}

/// 3 replicas' room of 4 wanted: one more than now, one less than asked.
fn limited_check() -> CapacityCheck {
    CapacityCheck {
        wanted: 4,
        current: 2,
        placed: 2,
        ahead: 0,
        fit: 1,
        allowed: 3,
        first_failure: Some("0/2 nodes are available: 2 Insufficient nvidia.com/gpu.".into()),
    }
}

#[test]
fn a_scale_up_within_capacity_goes_as_far_as_the_metrics_ask() {
    let mut autoscaler = Autoscaler::new().showing(2);
    // 35 waiting at 10 per replica: 4 replicas.
    let question = autoscaler.question(&observed(2, queue(35.0, 1000), 1000));
    assert_eq!(
        (question.current, question.wanted, question.placed),
        (2, 4, 2)
    );
    let mut plan = question.answer(Ok(Some(CapacityCheck {
        fit: 2,
        allowed: 4,
        first_failure: None,
        ..limited_check()
    })));
    let rescale = plan.rescale().cloned().expect("a rescale");
    assert_eq!((rescale.from, rescale.to), (2, 4));
    assert_eq!(rescale.note, "New size: 4; reason: queue=35 ScaleUp");
    assert_eq!(plan.tallies()[0].value, Some(35.0));

    plan.rescaled(&at(1001), Some(&mut autoscaler.tracked));
    let settled = autoscaler.settle(plan, 1001);
    assert_eq!(settled.result, PeriodResult::Decided);
    assert!(settled.changed);
    let status = &settled.status;
    assert_eq!((status.current_replicas, status.desired_replicas), (4, 4));
    assert_eq!(status.deciding_metric.as_deref(), Some("queue"));
    assert_eq!(status.last_scale_time, Some(at(1001)));
    assert_eq!(autoscaler.tracked.last_scale_time, Some(at(1001)));
    assert_eq!(
        condition(status, CONDITION_CAPACITY_LIMITED),
        (
            "False",
            "EnoughCapacity",
            "all 4 wanted replicas can be placed"
        )
    );
    assert!(!settled.capacity_limited);
    assert_eq!(
        events(&settled),
        [(
            EventType::Normal,
            "SuccessfulRescale",
            "New size: 4; reason: queue=35 ScaleUp"
        )]
    );
}

#[test]
fn a_scale_up_beyond_capacity_stops_where_the_replicas_fit() {
    let mut autoscaler = Autoscaler::new().showing(2);
    let question = autoscaler.question(&observed(2, queue(35.0, 1000), 1000));
    let mut plan = question.answer(Ok(Some(limited_check())));
    let rescale = plan.rescale().cloned().expect("a rescale");
    assert_eq!((rescale.from, rescale.to), (2, 3));
    assert!(
        rescale.note.starts_with(
            "New size: 3; reason: queue=35 ScaleUp; capped by capacity: \
             wanted 4 replicas but the cluster can place only 3"
        ),
        "{}",
        rescale.note
    );

    plan.rescaled(&at(1001), Some(&mut autoscaler.tracked));
    let settled = autoscaler.settle(plan, 1001);
    let status = &settled.status;
    // The metrics' wish is shown; the target has what fits.
    assert_eq!((status.current_replicas, status.desired_replicas), (3, 4));
    assert!(settled.capacity_limited);
    let (limited, reason, message) = condition(status, CONDITION_CAPACITY_LIMITED);
    assert_eq!((limited, reason), ("True", "InsufficientCapacity"));
    assert!(message.contains("Insufficient nvidia.com/gpu"), "{message}");
    let events = events(&settled);
    assert_eq!(
        events
            .iter()
            .map(|(type_, reason, _)| (*type_, *reason))
            .collect::<Vec<_>>(),
        [
            (EventType::Normal, "SuccessfulRescale"),
            (EventType::Warning, "InsufficientCapacity"),
        ]
    );
}

#[test]
fn a_scale_up_the_capacity_check_cannot_judge_adds_nothing() {
    let mut autoscaler = Autoscaler::new().showing(2);
    let question = autoscaler.question(&observed(2, queue(35.0, 1000), 1000));
    let plan = question.answer(Err("reading the object: forbidden".into()));
    assert_eq!(plan.rescale(), None);
    let settled = autoscaler.settle(plan, 1001);
    assert_eq!(
        (
            settled.status.current_replicas,
            settled.status.desired_replicas
        ),
        (2, 4)
    );
    let (limited, reason, message) = condition(&settled.status, CONDITION_CAPACITY_LIMITED);
    assert_eq!((limited, reason), ("True", "CapacityUnknown"));
    assert!(
        message.ends_with("so none are added: reading the object: forbidden"),
        "{message}"
    );
}

#[test]
fn without_the_capacity_check_or_a_template_a_scale_up_is_not_capped() {
    let mut autoscaler = Autoscaler::new().showing(2);
    let seen = observed(2, queue(35.0, 1000), 1000);
    let Decided::Plan(plan) = autoscaler.decide(&seen, false) else {
        panic!("the capacity check is off");
    };
    assert_eq!(plan.rescale().map(|r| r.to), Some(4));

    // A kind without a pod template: nothing to place, nothing capped.
    let mut autoscaler = Autoscaler::new().showing(2);
    let plan = autoscaler.question(&seen).answer(Ok(None));
    assert_eq!(plan.rescale().map(|r| r.to), Some(4));
    let settled = autoscaler.settle(plan, 1001);
    assert_eq!(
        condition(&settled.status, CONDITION_CAPACITY_LIMITED).1,
        "EnoughCapacity"
    );
}

#[test]
fn a_metric_prometheus_answers_with_garbage_holds_the_replicas() {
    let mut autoscaler = Autoscaler::new().showing(2);
    let garbage = Reading::Invalid("the query returned 2 series".into());
    let plan = autoscaler.plan(&observed(2, garbage, 1000));
    assert_eq!(plan.rescale(), None);
    assert_eq!(plan.tallies()[0].metric, "queue");
    assert!(plan.tallies()[0].invalid);
    let settled = autoscaler.settle(plan, 1000);
    assert_eq!(settled.result, PeriodResult::InvalidMetric);
    let message = "a metric is not usable, replicas held at 2: queue: the query returned 2 series";
    assert_eq!(
        condition(&settled.status, CONDITION_SCALING_ACTIVE),
        ("False", "InvalidMetric", message)
    );
    assert_eq!(
        (
            settled.status.current_replicas,
            settled.status.desired_replicas
        ),
        (2, 2)
    );
    // One event: the condition's change repeats the period's.
    assert_eq!(
        events(&settled),
        [(EventType::Warning, "InvalidMetric", message)]
    );
    assert_eq!(
        settled.status.metrics[0].problem.as_deref(),
        Some("the query returned 2 series")
    );
}

#[test]
fn prometheus_unavailable_holds_and_never_scales_down() {
    let mut autoscaler = Autoscaler::new().showing(4);
    let down = Reading::Unavailable("connection refused".into());
    let plan = autoscaler.plan(&observed(4, down, 1000));
    assert_eq!(plan.rescale(), None);
    assert!(plan.tallies()[0].stale);
    let settled = autoscaler.settle(plan, 1000);
    assert_eq!(settled.result, PeriodResult::Decided);
    assert_eq!(
        (
            settled.status.current_replicas,
            settled.status.desired_replicas
        ),
        (4, 4)
    );
    let (active, reason, _) = condition(&settled.status, CONDITION_SCALING_ACTIVE);
    assert_eq!((active, reason), ("False", "NoFreshMetric"));
    assert_eq!(
        condition(&settled.status, CONDITION_METRICS_STALE),
        (
            "True",
            "StaleSamples",
            "never scaled down on these: queue: Prometheus unavailable: connection refused"
        )
    );
}

#[test]
fn a_scale_down_waits_out_the_stabilisation_window() {
    // 4 replicas, load for 1; the spec's scale-down window is 300 s.
    let mut autoscaler = Autoscaler::new().showing(4);
    let start = 1000;
    for now in (start..start + 300).step_by(15) {
        let plan = autoscaler.plan(&observed(4, queue(10.0, now), now));
        assert_eq!(plan.rescale(), None, "at {now}s");
        let settled = autoscaler.settle(plan, now);
        assert_eq!(settled.status.desired_replicas, 4, "at {now}s");
        let (_, _, message) = condition(&settled.status, CONDITION_SCALING_ACTIVE);
        assert!(message.ends_with("last decision: Stabilized"), "{message}");
    }
    let now = start + 300;
    let mut plan = autoscaler.plan(&observed(4, queue(10.0, now), now));
    let rescale = plan.rescale().cloned().expect("the window is over");
    assert_eq!((rescale.from, rescale.to), (4, 1));
    assert_eq!(rescale.note, "New size: 1; reason: queue=10 ScaleDown");
    plan.rescaled(&at(now), Some(&mut autoscaler.tracked));
    let settled = autoscaler.settle(plan, now);
    assert_eq!(
        (
            settled.status.current_replicas,
            settled.status.desired_replicas
        ),
        (1, 1)
    );

    // The next period starts from the new count.
    let now = now + 15;
    let plan = autoscaler.plan(&observed(1, queue(10.0, now), now));
    assert_eq!(plan.rescale(), None);
}

#[test]
fn a_target_that_cannot_be_read_holds_and_says_why() {
    let mut autoscaler = Autoscaler::new().showing(3);
    autoscaler.tracked.last_scale_time = Some(at(500));
    let error = "Deployment serving/llm: reading /scale: deployments.apps \"llm\" not found";
    let unreadable = Observed {
        target: Some(Err(error.into())),
        reads: Vec::new(),
        activation: None,
        now: Duration::from_secs(1000),
    };
    let plan = autoscaler.plan(&unreadable);
    assert_eq!(plan.rescale(), None);
    assert!(plan.tallies().is_empty());
    let settled = autoscaler.settle(plan, 1000);
    assert_eq!(settled.result, PeriodResult::Error);
    assert_eq!(
        (
            settled.status.current_replicas,
            settled.status.desired_replicas
        ),
        (3, 3)
    );
    assert_eq!(settled.status.last_scale_time, Some(at(500)));
    assert_eq!(
        condition(&settled.status, CONDITION_SCALING_ACTIVE),
        ("False", "FailedGetScale", error)
    );
    assert_eq!(
        events(&settled),
        [(EventType::Warning, "FailedGetScale", error)]
    );

    // The same failure again: the status stands, nothing is written.
    let again = autoscaler
        .plan(&unreadable)
        .settle(&autoscaler.object, &at(1015));
    assert!(!again.changed);
    assert_eq!(
        events(&again),
        [(EventType::Warning, "FailedGetScale", error)]
    );
}

#[test]
fn a_failed_patch_keeps_the_replicas_and_says_so() {
    let mut autoscaler = Autoscaler::new().showing(2);
    let Decided::Plan(mut plan) = autoscaler.decide(&observed(2, queue(35.0, 1000), 1000), false)
    else {
        panic!("the capacity check is off");
    };
    plan.rescale_failed("the object has been modified");
    let settled = autoscaler.settle(plan, 1001);
    assert_eq!(settled.result, PeriodResult::Error);
    assert_eq!(
        (
            settled.status.current_replicas,
            settled.status.desired_replicas
        ),
        (2, 4)
    );
    assert_eq!(settled.status.last_scale_time, None);
    assert_eq!(autoscaler.tracked.last_scale_time, None);
    assert_eq!(
        events(&settled),
        [
            (
                EventType::Warning,
                "FailedRescale",
                "the object has been modified"
            ),
            (
                EventType::Warning,
                "FailedRescale",
                "the scale to 4 replicas failed: the object has been modified"
            ),
        ]
    );
}

#[test]
fn an_invalid_spec_is_shown_not_acted_on() {
    let autoscaler = Autoscaler::new();
    let problems = [SpecProblem {
        field: "spec.maxReplicas".into(),
        message: "must be at least 1".into(),
    }];
    let seen = observed(5, queue(35.0, 1000), 1000);
    let Decided::Plan(plan) = decide(Spec::Invalid(&problems), None, &seen, true) else {
        panic!("nothing to place");
    };
    assert_eq!(plan.rescale(), None);
    let settled = plan.settle(&autoscaler.object, &at(1000));
    assert_eq!(settled.result, PeriodResult::InvalidSpec);
    assert_eq!(
        (
            settled.status.current_replicas,
            settled.status.desired_replicas
        ),
        (5, 5)
    );
    assert_eq!(
        condition(&settled.status, CONDITION_SCALING_ACTIVE),
        (
            "False",
            "InvalidSpec",
            "the spec is invalid, nothing is scaled: spec.maxReplicas: must be at least 1"
        )
    );

    let Decided::Plan(plan) = decide(Spec::Refused, None, &seen, true) else {
        panic!("nothing to place");
    };
    let settled = plan.settle(&autoscaler.object, &at(1000));
    assert_eq!(settled.result, PeriodResult::InvalidSpec);
    assert_eq!(
        settled.status.current_replicas, 0,
        "nothing read, nothing shown"
    );
}

/// The same autoscaler with `minReplicas: 0` and a gateway queue as its
/// The HPA's scale-down rules with this stabilisation window: down by 100 %
/// per 15 s.
fn hpa_scale_down(window_seconds: u32) -> phalanx_api::autoscaler::ScalingRules {
    phalanx_api::autoscaler::ScalingRules {
        stabilization_window_seconds: Some(window_seconds),
        policies: Some(vec![phalanx_api::autoscaler::ScalingPolicy {
            type_: phalanx_api::autoscaler::ScalingPolicyType::Percent,
            value: 100,
            period_seconds: 15,
        }]),
    }
}

/// activation (threshold 0, a 30 s cooldown), scaling down without a
/// stabilisation window so that only the cooldown holds the last replica.
fn scaling_to_zero() -> Autoscaler {
    let mut autoscaler = Autoscaler::new();
    let mut spec = autoscaler.object.spec.clone();
    spec.min_replicas = 0;
    spec.behavior.scale_down = Some(hpa_scale_down(0));
    spec.activation = Some(phalanx_api::autoscaler::ActivationSpec {
        query: "sum(gateway_queue_depth)".into(),
        threshold: None,
        per_replica: Some(4.0),
        cooldown_seconds: Some(30),
    });
    let plan = spec::plan(&spec).expect("a valid spec");
    autoscaler.object.spec = spec;
    autoscaler.tracked.decider =
        ReplicaDecider::new(plan.behavior.clone()).expect("a valid behaviour");
    autoscaler.tracked.activation = plan
        .activation
        .as_ref()
        .map(|a| ActivationGate::new(a.activation).expect("a valid activation"));
    autoscaler.spec = plan;
    autoscaler
}

/// `replicas`, the serving queue read as `queue`, the gateway as `gateway`.
fn observed_gateway(replicas: u32, queue: Reading, gateway: Reading, now: u64) -> Observed {
    Observed {
        activation: Some(read(ACTIVATION, gateway)),
        ..observed(replicas, queue, now)
    }
}

#[test]
fn at_zero_a_quiet_gateway_keeps_zero_and_absent_serving_metrics_are_expected() {
    let mut autoscaler = scaling_to_zero().showing(0);
    let plan = autoscaler.plan(&observed_gateway(
        0,
        Reading::Absent,
        queue(0.0, 1000),
        1000,
    ));
    assert_eq!(plan.rescale(), None);
    let settled = autoscaler.settle(plan, 1000);
    let status = &settled.status;
    assert_eq!((status.current_replicas, status.desired_replicas), (0, 0));
    assert_eq!(
        condition(status, CONDITION_SCALING_ACTIVE),
        (
            "True",
            "Idle",
            "at zero replicas; spec.activation 0 is at or below 0: nothing to wake for"
        )
    );
    assert_eq!(condition(status, CONDITION_METRICS_STALE).0, "False");
    let activation = status.activation.as_ref().expect("status.activation");
    assert_eq!((activation.value, activation.active), (Some(0.0), false));
    assert_eq!(activation.quiet_since, Some(at(1000)));
    assert!(events(&settled).is_empty(), "{:?}", events(&settled));
}

#[test]
fn at_zero_a_gateway_backlog_wakes_the_workload_per_replica() {
    let mut autoscaler = scaling_to_zero().showing(0);
    let seen = observed_gateway(0, Reading::Absent, queue(9.0, 1000), 1000);
    let question = autoscaler.question(&seen);
    assert_eq!((question.current, question.wanted), (0, 3), "ceil(9 / 4)");
    let mut plan = question.answer(Ok(None));
    let rescale = plan.rescale().cloned().expect("a wake-up");
    assert_eq!(
        (rescale.from, rescale.to, rescale.reason),
        (0, 3, "Activated")
    );
    assert_eq!(rescale.note, "spec.activation 9 > 0; New size: 3");
    let gauge = plan.tallies().iter().find(|t| t.metric == ACTIVATION);
    assert_eq!(gauge.and_then(|t| t.value), Some(9.0));
    plan.rescaled(&at(1000), Some(&mut autoscaler.tracked));
    let settled = autoscaler.settle(plan, 1000);
    assert_eq!(
        events(&settled),
        [(
            EventType::Normal,
            "Activated",
            "spec.activation 9 > 0; New size: 3"
        )]
    );
    let status = &settled.status;
    assert_eq!(status.deciding_metric.as_deref(), Some(ACTIVATION));
    assert_eq!(condition(status, CONDITION_SCALING_ACTIVE).1, "Activated");
    assert!(status.activation.as_ref().is_some_and(|a| a.active));
}

#[test]
fn at_zero_an_unreadable_gateway_never_wakes_and_says_so() {
    let mut autoscaler = scaling_to_zero().showing(0);
    let plan = autoscaler.plan(&observed_gateway(0, Reading::Absent, Reading::Absent, 1000));
    assert_eq!(plan.rescale(), None);
    let settled = autoscaler.settle(plan, 1000);
    let (active, reason, message) = condition(&settled.status, CONDITION_SCALING_ACTIVE);
    assert_eq!((active, reason), ("False", "ActivationUnreadable"));
    assert!(
        message.contains("spec.activation has no fresh sample"),
        "{message}"
    );
    assert_eq!(
        condition(&settled.status, CONDITION_METRICS_STALE).2,
        "never scaled down on these: spec.activation: no series (absent, not zero)"
    );
    assert!(
        events(&settled)
            .iter()
            .any(|(t, r, _)| *t == EventType::Warning && *r == "ActivationUnreadable"),
        "{:?}",
        events(&settled)
    );

    // Garbage from the gateway query holds as a garbage metric does.
    let garbage = Reading::Invalid("the query returned 2 series".into());
    let plan = autoscaler.plan(&observed_gateway(0, Reading::Absent, garbage, 1001));
    assert_eq!(plan.rescale(), None);
    let settled = autoscaler.settle(plan, 1001);
    assert_eq!(
        condition(&settled.status, CONDITION_SCALING_ACTIVE),
        (
            "False",
            "InvalidMetric",
            "a metric is not usable, replicas held at 0: spec.activation: the query returned 2 series"
        )
    );
}

#[test]
fn the_last_replica_goes_only_after_the_cooldown() {
    let mut autoscaler = scaling_to_zero().showing(1);
    // The serving queue and the gateway are empty from 1000 s on; the
    // decider would scale to zero at once, the activation holds 30 s.
    for now in (1000..1030).step_by(5) {
        let plan = autoscaler.plan(&observed_gateway(1, queue(0.0, now), queue(0.0, now), now));
        assert_eq!(plan.rescale(), None, "at {now}s");
        let settled = autoscaler.settle(plan, now);
        let (_, reason, message) = condition(&settled.status, CONDITION_SCALING_ACTIVE);
        assert_eq!(reason, "ActivationCooldown", "at {now}s");
        assert!(
            message.contains(&format!("quiet for {}s", now - 1000)),
            "{message}"
        );
        assert_eq!(settled.status.desired_replicas, 1);
    }
    let now = 1030;
    let mut plan = autoscaler.plan(&observed_gateway(1, queue(0.0, now), queue(0.0, now), now));
    let rescale = plan.rescale().cloned().expect("the cooldown is over");
    assert_eq!((rescale.to, rescale.reason), (0, "ScaledToZero"));
    assert_eq!(
        rescale.note,
        "spec.activation 0 is at or below 0 for 30s (cooldownSeconds 30); New size: 0"
    );
    plan.rescaled(&at(now), Some(&mut autoscaler.tracked));
    let settled = autoscaler.settle(plan, now);
    assert_eq!(
        condition(&settled.status, CONDITION_SCALING_ACTIVE).1,
        "ScaledToZero"
    );
    assert_eq!(events(&settled)[0].1, "ScaledToZero");
}

#[test]
fn a_busy_gateway_keeps_the_last_replica_from_a_larger_scale_down() {
    let mut autoscaler = scaling_to_zero().showing(3);
    // The replicas are idle, but requests wait at the gateway.
    let plan = autoscaler.plan(&observed_gateway(
        3,
        queue(0.0, 1000),
        queue(2.0, 1000),
        1000,
    ));
    let rescale = plan.rescale().cloned().expect("a scale-down");
    assert_eq!((rescale.from, rescale.to), (3, 1));
    assert_eq!(rescale.reason, "SuccessfulRescale");
    assert_eq!(
        rescale.note,
        "reason: ActivationCooldown: spec.activation 2 > 0, quiet for 0s of 30s; New size: 1"
    );
}

/// A `queueWait` metric on vLLM's serving series, read through the sizing.
mod queue_wait {
    use phalanx_api::autoscaler::{MetricPreset, QueueWaitTarget};

    use super::*;
    use crate::controller::serving::{size, ServingReads};
    use crate::decision::{replicas_for_objective, ServingSignals};
    use crate::spec::MetricSource;

    fn autoscaler() -> Autoscaler {
        Autoscaler::with_metric(AutoscalerMetric {
            name: "wait".into(),
            query: None,
            preset: Some(MetricPreset::VllmServing),
            match_labels: BTreeMap::new(),
            serving: None,
            target: MetricTargetSpec {
                queue_wait: Some(QueueWaitTarget {
                    seconds: 2.0,
                    slots_per_replica: 8,
                    attainment: None,
                    drain_seconds: None,
                }),
                ..MetricTargetSpec::default()
            },
        })
    }

    fn at(value: f64, now: u64) -> Reading {
        queue(value, now)
    }

    /// The loop's reading of the series at `now`: sized, with its detail.
    fn sized(autoscaler: &Autoscaler, reads: &ServingReads, ready: u32) -> MetricRead {
        let MetricSource::Serving(source) = &autoscaler.spec.metrics[0].source else {
            panic!("a serving source");
        };
        let sized = size(reads, source, ready);
        MetricRead {
            name: "wait".into(),
            query: "vllm".into(),
            reading: sized.reading,
            detail: sized.detail,
        }
    }

    fn busy(now: u64) -> ServingReads {
        ServingReads {
            running: at(16.0, now),
            waiting: at(10.0, now),
            mean_slot_seconds: at(7.5, now - 2),
            kv_cache_usage: Some(at(0.5, now)),
            ready_replicas: Some(at(2.0, now)),
        }
    }

    #[test]
    fn the_replicas_the_objective_needs_are_scaled_to_and_shown() {
        let mut autoscaler = autoscaler().showing(2);
        let read = sized(&autoscaler, &busy(1000), 2);
        let need = replicas_for_objective(
            &ServingSignals {
                running: 16.0,
                waiting: 10.0,
                mean_slot_seconds: Some(7.5),
                kv_cache_usage: Some(0.5),
                ready_replicas: 2,
            },
            &crate::decision::ReplicaShape {
                slots: 8,
                drain_seconds: crate::decision::objective_defaults::DRAIN_SECONDS,
            },
            &crate::decision::QueueObjective {
                wait_seconds: 2.0,
                attainment: crate::decision::objective_defaults::ATTAINMENT,
            },
        )
        .expect("sized");
        let want = need.ceil() as u32;
        assert!(want > 2, "the numbers must ask for a scale-up: {need}");
        let observed = Observed {
            reads: vec![read],
            ..observed(2, Reading::Absent, 1000)
        };
        let question = autoscaler.question(&observed);
        assert_eq!((question.current, question.wanted), (2, want));
        let plan = question.answer(Ok(None));
        assert_eq!(plan.rescale().map(|r| r.to), Some(want));
        let settled = autoscaler.settle(plan, 1000);
        let metric = &settled.status.metrics[0];
        assert_eq!(metric.value, Some(need));
        assert_eq!(
            metric.sampled_at,
            Some(super::at(998)),
            "as old as the oldest series"
        );
        let detail = metric.detail.as_deref().expect("detail");
        assert!(
            detail.starts_with("running 16, waiting 10, slot 7.5 s, KV 0.5, ready 2 -> "),
            "{detail}"
        );
    }

    #[test]
    fn garbage_in_one_series_holds_naming_it_and_absent_running_never_scales_down() {
        let mut autoscaler = autoscaler().showing(4);
        let garbage = ServingReads {
            waiting: Reading::Invalid("the query returned 2 series".into()),
            ..busy(1000)
        };
        let bad = Observed {
            reads: vec![sized(&autoscaler, &garbage, 4)],
            ..observed(4, Reading::Absent, 1000)
        };
        let plan = autoscaler.plan(&bad);
        assert_eq!(plan.rescale(), None);
        let settled = autoscaler.settle(plan, 1000);
        let (status, reason, message) = condition(&settled.status, CONDITION_SCALING_ACTIVE);
        assert_eq!((status, reason), ("False", "InvalidMetric"));
        assert!(
            message.contains("wait: waiting: the query returned 2 series"),
            "{message}"
        );

        // Nothing running or waiting is absent, not zero: held at 4 for
        // longer than any window.
        for now in (1001..1400).step_by(15) {
            let gone = ServingReads {
                running: Reading::Absent,
                ..busy(now)
            };
            let observed = Observed {
                reads: vec![sized(&autoscaler, &gone, 4)],
                ..observed(4, Reading::Absent, now)
            };
            let plan = autoscaler.plan(&observed);
            assert_eq!(plan.rescale(), None, "at {now}");
            let settled = autoscaler.settle(plan, now);
            let (stale, _, _) = condition(&settled.status, CONDITION_METRICS_STALE);
            assert_eq!(stale, "True");
        }
    }
}
