//! Properties that hold for any behaviour and any sequence of readings: bounds,
//! no scale-down on stale or garbage metrics, no reversal within a stabilisation
//! window.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use std::time::Duration;

use proptest::prelude::*;

use super::*;

/// What one metric shows in one period.
#[derive(Debug, Clone, Copy)]
enum Reading {
    Fresh(f64),
    /// A valid value sampled this many seconds ago (stale if older than the maximum age).
    Aged(f64, u64),
    Absent,
    NotANumber,
    Negative,
}

impl Reading {
    fn unusable(&self, max_age: Duration) -> bool {
        match *self {
            Reading::Fresh(_) => false,
            Reading::Aged(_, age) => Duration::from_secs(age) > max_age,
            Reading::Absent | Reading::NotANumber | Reading::Negative => true,
        }
    }
}

fn reading() -> impl Strategy<Value = Reading> {
    prop_oneof![
        6 => (0.0..300.0f64).prop_map(Reading::Fresh),
        2 => (0.0..300.0f64, 0u64..90).prop_map(|(v, a)| Reading::Aged(v, a)),
        1 => Just(Reading::Absent),
        1 => Just(Reading::NotANumber),
        1 => Just(Reading::Negative),
    ]
}

fn limits() -> impl Strategy<Value = Vec<RateLimit>> {
    prop::collection::vec(
        (
            prop_oneof![
                (1u32..6).prop_map(RateAmount::Pods),
                (1u32..200).prop_map(RateAmount::Percent)
            ],
            1u64..120,
        )
            .prop_map(|(amount, period)| RateLimit {
                amount,
                period: Duration::from_secs(period),
            }),
        0..3,
    )
}

fn any_behavior() -> impl Strategy<Value = Behavior> {
    (
        0u32..4,
        1u32..30,
        0.0..0.5f64,
        (1u64..120, 1u64..120),
        1.1..5.0f64,
        (0u64..60, 0u64..400),
        limits(),
        limits(),
        1u64..60,
    )
        .prop_map(
            |(min, span, tolerance, (w1, w2), threshold, (up, down), ups, downs, age)| Behavior {
                min_replicas: min,
                max_replicas: min + span,
                tolerance,
                stable_window: Duration::from_secs(w1.max(w2)),
                panic_window: Duration::from_secs(w1.min(w2)),
                panic_threshold: threshold,
                scale_up_stabilization: Duration::from_secs(up),
                scale_down_stabilization: Duration::from_secs(down),
                scale_up_limits: ups,
                scale_down_limits: downs,
                startup: Duration::from_secs(30),
                max_sample_age: Duration::from_secs(age),
            },
        )
}

/// One control period: seconds since the previous one, and the two metrics.
fn any_steps() -> impl Strategy<Value = Vec<(u64, Reading, Reading)>> {
    prop::collection::vec((1u64..30, reading(), reading()), 1..80)
}

fn metric(name: &str, reading: Reading, now: u64, target: MetricTarget) -> MetricReading {
    let (value, at) = match reading {
        Reading::Fresh(v) => (Some(v), Some(now)),
        Reading::Aged(v, age) => (Some(v), Some(now.saturating_sub(age))),
        Reading::Absent => (None, Some(now)),
        Reading::NotANumber => (Some(f64::NAN), Some(now)),
        Reading::Negative => (Some(-1.0), Some(now)),
    };
    MetricReading {
        name: name.into(),
        value,
        sampled_at: at.map(Duration::from_secs),
        target,
    }
}

/// A scale change the property runs applied: when, and which way.
struct Change {
    at: u64,
    up: bool,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn decisions_stay_in_bounds_never_scale_down_on_unusable_metrics_and_never_reverse_within_a_window(
        behavior in any_behavior(),
        start in 0u32..40,
        steps in any_steps(),
    ) {
        let mut decider = ReplicaDecider::new(behavior.clone()).unwrap();
        let mut current = start.clamp(behavior.min_replicas, behavior.max_replicas);
        let mut ready = current;
        let mut now = 1000u64;
        let mut last_change: Option<Change> = None;
        for (dt, queue, kv) in steps {
            now += dt;
            let observation = Observation {
                now: Duration::from_secs(now),
                current_replicas: current,
                ready_replicas: ready,
                metrics: vec![
                    metric("queue", queue, now, MetricTarget::PerReplica(10.0)),
                    metric("kv", kv, now, MetricTarget::Total(0.8)),
                ],
            };
            let decision = decider.decide(&observation);
            let desired = decision.desired_replicas;
            prop_assert!(
                (behavior.min_replicas..=behavior.max_replicas).contains(&desired),
                "{desired} outside [{}, {}]", behavior.min_replicas, behavior.max_replicas
            );
            let unusable = queue.unusable(behavior.max_sample_age)
                || kv.unusable(behavior.max_sample_age)
                // A level with no ready replica says nothing either.
                || ready == 0;
            if unusable {
                prop_assert!(desired >= current, "scaled down {current} -> {desired} with an unusable metric: {decision:?}");
            }
            if decision.stale_metrics.is_empty() && decision.invalid_metrics.is_empty() {
                prop_assert!(!queue.unusable(behavior.max_sample_age) && !kv.unusable(behavior.max_sample_age));
            }
            if desired != current {
                let up = desired > current;
                if let Some(last) = &last_change {
                    if last.up != up {
                        let window = if up {
                            behavior.scale_up_stabilization
                        } else {
                            behavior.scale_down_stabilization
                        };
                        prop_assert!(
                            Duration::from_secs(now - last.at) >= window,
                            "reversal after {} s within a {window:?} window", now - last.at
                        );
                    }
                }
                last_change = Some(Change { at: now, up });
                decider.record_scale(Duration::from_secs(now), current, desired);
            }
            // Replicas started last period are ready now; the new ones are starting.
            ready = current.min(desired);
            current = desired;
        }
    }

    #[test]
    fn only_garbage_never_moves_replicas_inside_the_bounds(
        behavior in any_behavior(),
        start in 0u32..40,
        values in prop::collection::vec(prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(-5.0)], 1..20),
    ) {
        let mut decider = ReplicaDecider::new(behavior.clone()).unwrap();
        let current = start.clamp(behavior.min_replicas, behavior.max_replicas);
        for (i, value) in values.into_iter().enumerate() {
            let now = Duration::from_secs(10 * i as u64);
            let decision = decider.decide(&Observation {
                now,
                current_replicas: current,
                ready_replicas: current,
                metrics: vec![
                    MetricReading { name: "q".into(), value: Some(value), sampled_at: Some(now), target: MetricTarget::PerReplica(5.0) },
                    MetricReading { name: "zero-target".into(), value: Some(10.0), sampled_at: Some(now), target: MetricTarget::PerReplica(0.0) },
                ],
            });
            prop_assert_eq!(decision.desired_replicas, current);
            prop_assert_eq!(decision.invalid_metrics.len(), 2);
            prop_assert_eq!(decision.reason, DecisionReason::NoValidMetric);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// More load never needs fewer replicas, and the answer is always a number.
    #[test]
    fn the_queue_wait_sizing_grows_with_load_and_is_always_a_number(
        running in 0.0..400.0f64,
        waiting in 0.0..400.0f64,
        more in 0.0..100.0f64,
        slot_seconds in 0.05..60.0f64,
        kv in prop::option::of(0.0..1.0f64),
        ready in 0u32..50,
        slots in 1u32..64,
        wait_seconds in 0.1..30.0f64,
        attainment in 0.5..0.9999f64,
    ) {
        let shape = ReplicaShape { slots, drain_seconds: 5.0 };
        let objective = QueueObjective { wait_seconds, attainment };
        let signals = |running, waiting| ServingSignals {
            running,
            waiting,
            mean_slot_seconds: Some(slot_seconds),
            kv_cache_usage: kv,
            ready_replicas: ready,
        };
        let base = replicas_for_objective(&signals(running, waiting), &shape, &objective).unwrap();
        prop_assert!(base.is_finite() && base >= 0.0, "{base}");
        let more_waiting =
            replicas_for_objective(&signals(running, waiting + more), &shape, &objective).unwrap();
        prop_assert!(more_waiting >= base, "{more} more waiting: {base} -> {more_waiting}");
        // More running with the KV cache as full: the same mix, more of it.
        let more_running =
            replicas_for_objective(&signals(running + more, waiting), &shape, &objective).unwrap();
        prop_assert!(
            kv.is_some() || more_running >= base,
            "{more} more running: {base} -> {more_running}"
        );
    }
}
