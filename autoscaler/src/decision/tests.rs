//! The decision rules, one by one, on hand-made observations.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use std::time::Duration;

use super::*;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A behaviour with no rate limits and fixed windows (a stable window of 60 s, a
/// panic window of 10 s, 180 s of scale-down stabilisation), so each test sees
/// only the rule it is about, whatever the tuned defaults are.
fn unlimited(min: u32, max: u32) -> Behavior {
    Behavior {
        stable_window: secs(60),
        panic_window: secs(10),
        scale_down_stabilization: secs(180),
        scale_up_limits: vec![],
        scale_down_limits: vec![],
        ..Behavior::with_bounds(min, max)
    }
}

fn queue(value: f64, at: u64) -> MetricReading {
    MetricReading {
        name: "queue".into(),
        value: Some(value),
        sampled_at: Some(secs(at)),
        target: MetricTarget::PerReplica(10.0),
    }
}

fn observe(now: u64, current: u32, ready: u32, metrics: Vec<MetricReading>) -> Observation {
    Observation {
        now: secs(now),
        current_replicas: current,
        ready_replicas: ready,
        metrics,
    }
}

/// Applies a decision as the controller would, returning the new replica count.
fn apply(decider: &mut ReplicaDecider, now: u64, current: u32, decision: &Decision) -> u32 {
    decider.record_scale(secs(now), current, decision.desired_replicas);
    decision.desired_replicas
}

#[test]
fn the_hpa_formula_rounds_the_need_up() {
    let mut d = ReplicaDecider::new(unlimited(1, 20)).unwrap();
    let decision = d.decide(&observe(0, 3, 3, vec![queue(45.0, 0)]));
    assert_eq!(decision.desired_replicas, 5);
    assert_eq!(decision.reason, DecisionReason::ScaleUp);
    assert_eq!(decision.deciding_metric.as_deref(), Some("queue"));
    assert_eq!(decision.recommended_replicas, Some(5));
}

#[test]
fn within_tolerance_nothing_changes() {
    let mut d = ReplicaDecider::new(unlimited(1, 20)).unwrap();
    // 21 / (10 * 2) = 1.05: within 10 %.
    let decision = d.decide(&observe(0, 2, 2, vec![queue(21.0, 0)]));
    assert_eq!(decision.desired_replicas, 2);
    assert_eq!(decision.reason, DecisionReason::WithinTolerance);
    // 23 / 20 = 1.15: outside.
    let decision = d.decide(&observe(5, 2, 2, vec![queue(23.0, 5)]));
    assert_eq!(decision.desired_replicas, 3);
}

#[test]
fn the_largest_metric_decides() {
    let mut d = ReplicaDecider::new(unlimited(1, 20)).unwrap();
    let kv = MetricReading {
        name: "kv-cache".into(),
        value: Some(0.9),
        sampled_at: Some(secs(0)),
        // Level metric: 4 ready replicas at 0.9 against 0.6 need 6.
        target: MetricTarget::Total(0.6),
    };
    let decision = d.decide(&observe(0, 4, 4, vec![queue(30.0, 0), kv]));
    assert_eq!(decision.desired_replicas, 6);
    assert_eq!(decision.deciding_metric.as_deref(), Some("kv-cache"));
}

#[test]
fn starting_replicas_are_capacity_on_the_way() {
    let mut d = ReplicaDecider::new(unlimited(1, 20)).unwrap();
    let decision = d.decide(&observe(0, 2, 2, vec![queue(60.0, 0)]));
    let current = apply(&mut d, 0, 2, &decision);
    assert_eq!(current, 6);
    // Four replicas are still starting and the same load is still there: no
    // second scale-up for it.
    for t in [5, 10, 15, 20] {
        let decision = d.decide(&observe(t, current, 2, vec![queue(60.0, t)]));
        assert_eq!(decision.desired_replicas, 6, "at {t} s: {decision:?}");
    }
}

#[test]
fn a_burst_panics_scales_up_on_the_short_window_and_never_down_while_panicking() {
    let mut d = ReplicaDecider::new(unlimited(1, 40)).unwrap();
    let mut current = 2;
    // A minute of steady load that two replicas carry.
    for t in (0..60).step_by(5) {
        let decision = d.decide(&observe(t, current, current, vec![queue(20.0, t)]));
        current = apply(&mut d, t, current, &decision);
    }
    assert_eq!(current, 2);
    // A burst: the short window (samples of 2 and 12) needs 7, more than twice
    // the ready replicas.
    let decision = d.decide(&observe(60, 2, 2, vec![queue(120.0, 60)]));
    assert!(decision.panicking);
    assert_eq!(decision.reason, DecisionReason::PanicScaleUp);
    assert_eq!(decision.desired_replicas, 7);
    current = apply(&mut d, 60, current, &decision);
    // The burst ends at once: the short window (12 and 0) still triggers, and
    // wants 6; while panicking nothing scales down.
    let decision = d.decide(&observe(65, current, 2, vec![queue(0.0, 65)]));
    assert!(decision.panicking);
    assert_eq!(decision.desired_replicas, 7);
    assert_eq!(decision.reason, DecisionReason::PanicHold);
    // A stable window after the last trigger the panic is over (the scale-down
    // window still holds the replicas).
    let decision = d.decide(&observe(125, current, current, vec![queue(5.0, 125)]));
    assert!(!decision.panicking);
    assert_eq!(decision.desired_replicas, 7);
    assert_eq!(decision.reason, DecisionReason::Stabilized);
}

#[test]
fn scale_down_waits_for_the_whole_stabilisation_window() {
    let mut b = unlimited(1, 20);
    b.scale_down_stabilization = secs(180);
    let mut d = ReplicaDecider::new(b).unwrap();
    let decision = d.decide(&observe(0, 6, 6, vec![queue(60.0, 0)]));
    assert_eq!(decision.desired_replicas, 6);
    let mut current = 6;
    for t in (5..180).step_by(5) {
        let decision = d.decide(&observe(t, current, current, vec![queue(20.0, t)]));
        assert_eq!(decision.desired_replicas, 6, "at {t} s");
        assert_eq!(decision.reason, DecisionReason::Stabilized);
    }
    // The highest recommendation of the window decides: the one made at 5 s, when
    // the stable window still averaged 6 and 2.
    let decision = d.decide(&observe(180, current, current, vec![queue(20.0, 180)]));
    assert_eq!(decision.desired_replicas, 4);
    assert_eq!(decision.reason, DecisionReason::ScaleDown);
    current = apply(&mut d, 180, current, &decision);
    for t in (185..=240).step_by(5) {
        let decision = d.decide(&observe(t, current, current, vec![queue(20.0, t)]));
        assert!(decision.desired_replicas <= current, "at {t} s");
        current = apply(&mut d, t, current, &decision);
    }
    assert_eq!(current, 2);
}

#[test]
fn scale_up_stabilisation_takes_the_lowest_recommendation_of_its_window() {
    let mut b = unlimited(1, 20);
    b.scale_up_stabilization = secs(30);
    b.panic_window = secs(5);
    let mut d = ReplicaDecider::new(b).unwrap();
    d.decide(&observe(0, 2, 2, vec![queue(20.0, 0)]));
    let decision = d.decide(&observe(10, 2, 2, vec![queue(35.0, 10)]));
    assert_eq!(decision.desired_replicas, 2);
    assert_eq!(decision.reason, DecisionReason::Stabilized);
    // Both recommendations of the window (stable means 2.75 and 3) now want 3.
    let decision = d.decide(&observe(30, 2, 2, vec![queue(35.0, 30)]));
    assert_eq!(decision.desired_replicas, 3, "{decision:?}");
}

#[test]
fn rate_limits_take_the_most_permissive_policy_and_count_applied_changes() {
    let mut b = unlimited(1, 100);
    b.scale_up_limits = vec![
        RateLimit {
            amount: RateAmount::Percent(50),
            period: secs(15),
        },
        RateLimit {
            amount: RateAmount::Pods(2),
            period: secs(15),
        },
    ];
    b.panic_threshold = 100.0; // keep panic out of this test
    let mut d = ReplicaDecider::new(b).unwrap();
    let decision = d.decide(&observe(0, 10, 10, vec![queue(400.0, 0)]));
    assert_eq!(decision.desired_replicas, 15);
    assert_eq!(decision.reason, DecisionReason::RateLimited);
    let current = apply(&mut d, 0, 10, &decision);
    // Within the period the 5 added count against the limit.
    let decision = d.decide(&observe(5, current, current, vec![queue(400.0, 5)]));
    assert_eq!(decision.desired_replicas, 15);
    assert_eq!(decision.reason, DecisionReason::RateLimited);
    // A period later the limit is counted from 15.
    let decision = d.decide(&observe(15, current, current, vec![queue(400.0, 15)]));
    assert_eq!(decision.desired_replicas, 23);
}

#[test]
fn scale_down_limits_keep_the_gentlest_step_that_is_still_the_most_permissive() {
    let mut b = Behavior::with_bounds(1, 20);
    // 25 % or 1 pod per minute, whichever lets more go.
    b.scale_down_limits = vec![
        RateLimit {
            amount: RateAmount::Percent(25),
            period: secs(60),
        },
        RateLimit {
            amount: RateAmount::Pods(1),
            period: secs(60),
        },
    ];
    b.scale_down_stabilization = Duration::ZERO;
    let mut d = ReplicaDecider::new(b).unwrap();
    // Settle the stable window at a low need.
    let mut decision = d.decide(&observe(0, 8, 8, vec![queue(10.0, 0)]));
    assert_eq!(decision.desired_replicas, 6); // ceil(8 * 0.75)
    let current = apply(&mut d, 0, 8, &decision);
    decision = d.decide(&observe(30, current, current, vec![queue(10.0, 30)]));
    assert_eq!(decision.desired_replicas, 6);
    assert_eq!(decision.reason, DecisionReason::RateLimited);
    decision = d.decide(&observe(60, current, current, vec![queue(10.0, 60)]));
    // A minute later: 25 % of 6 leaves ceil(4.5) = 5, as does one pod.
    assert_eq!(decision.desired_replicas, 5);
}

#[test]
fn bounds_hold_whatever_the_load() {
    let mut d = ReplicaDecider::new(unlimited(3, 10)).unwrap();
    let decision = d.decide(&observe(0, 5, 5, vec![queue(1000.0, 0)]));
    assert_eq!(decision.desired_replicas, 10);
    assert_eq!(decision.reason, DecisionReason::AtMax);
    let mut b = unlimited(3, 10);
    b.scale_down_stabilization = Duration::ZERO;
    let mut d = ReplicaDecider::new(b).unwrap();
    let decision = d.decide(&observe(0, 5, 5, vec![queue(0.0, 0)]));
    assert_eq!(decision.desired_replicas, 3);
    assert_eq!(decision.reason, DecisionReason::AtMin);
    // Below the minimum (someone scaled by hand): raised even with no metric.
    let decision = d.decide(&observe(5, 1, 1, vec![]));
    assert_eq!(decision.desired_replicas, 3);
    assert_eq!(decision.reason, DecisionReason::AtMin);
}

#[test]
fn zero_load_scales_to_zero_only_when_allowed_and_any_load_wakes_it() {
    let mut b = unlimited(0, 10);
    b.scale_down_stabilization = secs(30);
    let mut d = ReplicaDecider::new(b).unwrap();
    let mut current = 2;
    for t in (0..=30).step_by(5) {
        let decision = d.decide(&observe(t, current, current, vec![queue(0.0, t)]));
        current = apply(&mut d, t, current, &decision);
    }
    assert_eq!(current, 0);
    let decision = d.decide(&observe(35, 0, 0, vec![queue(1.0, 35)]));
    assert_eq!(decision.desired_replicas, 1);

    // With min 1 the same load stops at one replica.
    let mut b = unlimited(1, 10);
    b.scale_down_stabilization = Duration::ZERO;
    let mut d = ReplicaDecider::new(b).unwrap();
    let decision = d.decide(&observe(0, 2, 2, vec![queue(0.0, 0)]));
    assert_eq!(decision.desired_replicas, 1);
}

#[test]
fn stale_or_absent_metrics_never_scale_down_but_fresh_ones_may_scale_up() {
    let mut b = unlimited(1, 20);
    b.scale_down_stabilization = Duration::ZERO;
    let old = MetricReading {
        name: "kv-cache".into(),
        value: Some(0.1),
        sampled_at: Some(secs(0)),
        target: MetricTarget::Total(0.8),
    };
    let absent = MetricReading {
        value: None,
        ..old.clone()
    };
    let untimed = MetricReading {
        sampled_at: None,
        ..old.clone()
    };
    for other in [old, absent, untimed] {
        let mut d = ReplicaDecider::new(b.clone()).unwrap();
        // The queue alone would go from 8 to 1.
        let decision = d.decide(&observe(100, 8, 8, vec![queue(5.0, 100), other.clone()]));
        assert_eq!(decision.desired_replicas, 8, "{other:?}");
        assert_eq!(decision.reason, DecisionReason::MetricsStale);
        assert_eq!(decision.stale_metrics, vec!["kv-cache".to_string()]);
        // A fresh metric that needs more still scales up.
        let mut d = ReplicaDecider::new(b.clone()).unwrap();
        let decision = d.decide(&observe(100, 8, 8, vec![queue(150.0, 100), other]));
        assert_eq!(decision.desired_replicas, 15);
        assert_eq!(decision.reason, DecisionReason::ScaleUp);
    }
    // Only stale metrics: hold.
    let mut d = ReplicaDecider::new(b).unwrap();
    let decision = d.decide(&observe(100, 8, 8, vec![queue(0.0, 10)]));
    assert_eq!(decision.desired_replicas, 8);
    assert_eq!(decision.reason, DecisionReason::MetricsStale);
    assert_eq!(decision.deciding_metric, None);
}

#[test]
fn garbage_readings_and_targets_are_reported_and_never_drive_scaling() {
    let mut b = unlimited(1, 20);
    b.scale_down_stabilization = Duration::ZERO;
    let garbage = [
        (f64::NAN, 10.0, "not a finite number"),
        (f64::INFINITY, 10.0, "not a finite number"),
        (-3.0, 10.0, "negative"),
        (50.0, 0.0, "not a positive number"),
        (50.0, -1.0, "not a positive number"),
        (50.0, f64::NAN, "not a positive number"),
        (1e300, 1e-300, "too large"),
    ];
    for (value, target, problem) in garbage {
        let mut d = ReplicaDecider::new(b.clone()).unwrap();
        let bad = MetricReading {
            name: "bad".into(),
            value: Some(value),
            sampled_at: Some(secs(0)),
            target: MetricTarget::PerReplica(target),
        };
        let decision = d.decide(&observe(0, 4, 4, vec![bad.clone()]));
        assert_eq!(decision.desired_replicas, 4, "{value}/{target}");
        assert_eq!(decision.reason, DecisionReason::NoValidMetric);
        assert_eq!(decision.invalid_metrics.len(), 1);
        assert!(
            decision.invalid_metrics[0].problem.contains(problem),
            "{:?}",
            decision.invalid_metrics
        );
        // Beside a valid metric it blocks the scale-down that metric wants.
        let decision = d.decide(&observe(5, 4, 4, vec![queue(0.0, 5), bad]));
        assert_eq!(decision.desired_replicas, 4);
    }
}

#[test]
fn a_metric_named_twice_is_reported() {
    let mut d = ReplicaDecider::new(unlimited(1, 20)).unwrap();
    let decision = d.decide(&observe(0, 2, 2, vec![queue(45.0, 0), queue(500.0, 0)]));
    assert_eq!(decision.desired_replicas, 5);
    assert_eq!(decision.invalid_metrics.len(), 1);
    assert!(decision.invalid_metrics[0]
        .problem
        .contains("more than once"));
}

#[test]
fn a_level_with_no_ready_replica_says_nothing() {
    let mut d = ReplicaDecider::new(unlimited(0, 20)).unwrap();
    let kv = MetricReading {
        name: "kv".into(),
        value: Some(0.0),
        sampled_at: Some(secs(0)),
        target: MetricTarget::Total(0.8),
    };
    let decision = d.decide(&observe(0, 3, 0, vec![kv]));
    assert_eq!(decision.desired_replicas, 3);
    assert_eq!(decision.reason, DecisionReason::NoValidMetric);
}

#[test]
fn above_max_comes_down_to_max_even_with_stale_metrics() {
    let mut d = ReplicaDecider::new(unlimited(1, 5)).unwrap();
    let decision = d.decide(&observe(100, 9, 9, vec![queue(90.0, 0)]));
    assert_eq!(decision.desired_replicas, 5);
    assert_eq!(decision.reason, DecisionReason::AtMax);
}

#[test]
fn time_running_backwards_does_not_panic() {
    let mut d = ReplicaDecider::new(Behavior::with_bounds(1, 20)).unwrap();
    d.decide(&observe(100, 2, 2, vec![queue(50.0, 100)]));
    d.record_scale(secs(100), 2, 4);
    let decision = d.decide(&observe(50, 4, 2, vec![queue(50.0, 50)]));
    assert!((1..=20).contains(&decision.desired_replicas));
}

#[test]
fn behaviours_that_cannot_work_are_refused_by_name() {
    let ok = Behavior::with_bounds(1, 10);
    assert_eq!(ok.validate(), Ok(()));
    let cases: Vec<(Behavior, &str)> = vec![
        (
            Behavior::with_bounds(5, 2),
            "min_replicas (5) is above max_replicas (2)",
        ),
        (Behavior::with_bounds(0, 0), "max_replicas is 0"),
        (
            Behavior {
                tolerance: f64::NAN,
                ..ok.clone()
            },
            "tolerance",
        ),
        (
            Behavior {
                tolerance: -0.1,
                ..ok.clone()
            },
            "tolerance",
        ),
        (
            Behavior {
                panic_threshold: 1.0,
                ..ok.clone()
            },
            "panic_threshold",
        ),
        (
            Behavior {
                stable_window: Duration::ZERO,
                ..ok.clone()
            },
            "stable_window",
        ),
        (
            Behavior {
                max_sample_age: Duration::ZERO,
                ..ok.clone()
            },
            "max_sample_age",
        ),
        (
            Behavior {
                panic_window: secs(120),
                ..ok.clone()
            },
            "panic_window",
        ),
        (
            Behavior {
                scale_up_limits: vec![RateLimit {
                    amount: RateAmount::Pods(1),
                    period: Duration::ZERO,
                }],
                ..ok.clone()
            },
            "scale_up_limits[0]: the period",
        ),
        (
            Behavior {
                scale_down_limits: vec![
                    ok.scale_down_limits[0],
                    RateLimit {
                        amount: RateAmount::Percent(0),
                        period: secs(10),
                    },
                ],
                ..ok.clone()
            },
            "scale_down_limits[1]: the amount",
        ),
    ];
    for (behavior, expected) in cases {
        let err = ReplicaDecider::new(behavior).unwrap_err().to_string();
        assert!(err.contains(expected), "{err:?} lacks {expected:?}");
    }
}

#[test]
fn reasons_read_as_event_reasons() {
    assert_eq!(DecisionReason::PanicScaleUp.to_string(), "PanicScaleUp");
    assert_eq!(DecisionReason::MetricsStale.as_str(), "MetricsStale");
}

#[test]
fn outside_panic_a_single_spike_does_not_scale_up_but_the_stable_window_does() {
    let mut d = ReplicaDecider::new(unlimited(1, 20)).unwrap();
    for t in (0..60).step_by(5) {
        d.decide(&observe(t, 2, 2, vec![queue(20.0, t)]));
    }
    // One reading of 35 (3.5 replicas, under twice the ready two): the stable
    // minute averages 2.1, within the tolerance.
    let decision = d.decide(&observe(60, 2, 2, vec![queue(35.0, 60)]));
    assert!(!decision.panicking);
    assert_eq!(decision.desired_replicas, 2);
    assert_eq!(decision.reason, DecisionReason::WithinTolerance);
    // Sustained, it moves the stable mean past the tolerance.
    let mut decision = decision;
    for t in (65..=90).step_by(5) {
        decision = d.decide(&observe(t, 2, 2, vec![queue(35.0, t)]));
    }
    assert_eq!(decision.desired_replicas, 3, "{decision:?}");
    assert_eq!(decision.reason, DecisionReason::ScaleUp);
}

#[test]
fn while_replicas_start_only_a_need_of_panic_size_scales_up_again() {
    let mut d = ReplicaDecider::new(unlimited(1, 40)).unwrap();
    let decision = d.decide(&observe(0, 2, 2, vec![queue(60.0, 0)]));
    assert_eq!(decision.desired_replicas, 6);
    let current = apply(&mut d, 0, 2, &decision);
    // The backlog grows while four replicas start: 9 replicas' worth is still
    // under twice the six on the way.
    let decision = d.decide(&observe(5, current, 2, vec![queue(90.0, 5)]));
    assert_eq!(decision.desired_replicas, 6, "{decision:?}");
    assert_eq!(decision.reason, DecisionReason::ReplicasStarting);
    // Twice the replicas on the way is a burst of its own.
    let decision = d.decide(&observe(10, current, 2, vec![queue(300.0, 10)]));
    assert!(decision.desired_replicas > 6, "{decision:?}");
    // Once the startup time has passed, the replicas count as they are.
    let mut d = ReplicaDecider::new(unlimited(1, 40)).unwrap();
    let decision = d.decide(&observe(0, 2, 2, vec![queue(60.0, 0)]));
    let current = apply(&mut d, 0, 2, &decision);
    let decision = d.decide(&observe(61, current, 6, vec![queue(90.0, 61)]));
    assert!(decision.desired_replicas > 6, "{decision:?}");
}

#[test]
fn a_backlog_the_starting_replicas_carry_is_not_scaled_to_once_they_are_ready() {
    let mut d = ReplicaDecider::new(unlimited(1, 40)).unwrap();
    // A burst: 6 replicas wanted at once, panicking.
    let decision = d.decide(&observe(0, 2, 2, vec![queue(60.0, 0)]));
    assert!(decision.panicking);
    let current = apply(&mut d, 0, 2, &decision);
    // The backlog grows to 11 replicas' worth while four start (under twice the
    // six on the way), then shrinks to 5 as the first of them serve.
    for t in (5..60).step_by(5) {
        let value = if t <= 30 { 110.0 } else { 50.0 };
        let decision = d.decide(&observe(t, current, 2, vec![queue(value, t)]));
        assert_eq!(decision.desired_replicas, 6, "at {t}: {decision:?}");
    }
    // Ready, the replicas face what the stable window still averages (about 8),
    // not the backlog's peak that panic would otherwise have remembered.
    let decision = d.decide(&observe(61, current, 6, vec![queue(50.0, 61)]));
    assert!(decision.desired_replicas <= 8, "{decision:?}");
}

#[test]
fn bursts_shorter_than_the_stable_window_keep_their_replicas_through_the_gaps() {
    let behavior = Behavior {
        scale_down_stabilization: secs(70),
        ..unlimited(1, 40)
    };
    let mut d = ReplicaDecider::new(behavior).unwrap();
    let mut current = 10;
    // 20 s of 10 replicas' worth, then 50 s of one: the stable minute's mean
    // stays near 3.6, but every gap is shorter than the scale-down window.
    for t in (0..600).step_by(5) {
        let value = if t % 70 < 20 { 100.0 } else { 10.0 };
        let decision = d.decide(&observe(t, current, current, vec![queue(value, t)]));
        current = apply(&mut d, t, current, &decision);
        assert_eq!(current, 10, "at {t}: {decision:?}");
    }
    // Once the bursts stop for longer than the window, the replicas go.
    for t in (600..800).step_by(5) {
        let decision = d.decide(&observe(t, current, current, vec![queue(10.0, t)]));
        current = apply(&mut d, t, current, &decision);
    }
    assert_eq!(current, 1);
}

#[test]
fn a_load_that_comes_back_after_a_scale_down_stretches_the_window() {
    let behavior = Behavior {
        scale_down_stabilization: secs(70),
        ..unlimited(1, 40)
    };
    let mut d = ReplicaDecider::new(behavior).unwrap();
    let mut current = 1;
    let mut downs = Vec::new();
    // Bursts of 10 replicas' worth for 20 s every 120 s: the 100 s gaps are
    // longer than the 70 s window, so the first gap sheds the replicas ...
    for t in (0..1200).step_by(5) {
        let value = if t % 120 < 20 { 100.0 } else { 10.0 };
        let decision = d.decide(&observe(t, current, current, vec![queue(value, t)]));
        let next = apply(&mut d, t, current, &decision);
        if next < current {
            downs.push(t);
        }
        current = next;
    }
    // ... the burst after it undoes that, the window doubles to 140 s, and from
    // then on every gap is held.
    assert!(
        !downs.is_empty() && downs.iter().all(|t| *t < 120),
        "scaled down at {downs:?}"
    );
    assert_eq!(current, 10);
}

#[test]
fn no_scale_down_below_what_a_burst_that_has_just_begun_needs() {
    let behavior = Behavior {
        scale_down_stabilization: secs(30),
        ..unlimited(1, 40)
    };
    let mut d = ReplicaDecider::new(behavior).unwrap();
    let mut current = 10;
    // Quiet until the window would let the ten go ...
    for t in (0..30).step_by(5) {
        let decision = d.decide(&observe(t, current, current, vec![queue(10.0, t)]));
        assert_eq!(decision.desired_replicas, 10, "at {t}: {decision:?}");
    }
    // ... when a burst of 10 replicas' worth begins: the stable minute still
    // needs under 3, the short window (10 s: this sample and the one before)
    // already 5.5.
    let decision = d.decide(&observe(30, current, current, vec![queue(100.0, 30)]));
    current = apply(&mut d, 30, current, &decision);
    assert_eq!(current, 6, "{decision:?}");
}
