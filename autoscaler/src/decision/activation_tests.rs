//! The activation gate fed readings, period by period.

use proptest::prelude::*;

use super::*;

const AGE: Duration = Duration::from_secs(30);

fn activation(per_replica: Option<f64>, cooldown: u64) -> Activation {
    Activation {
        threshold: 0.0,
        per_replica,
        cooldown: Duration::from_secs(cooldown),
        max_sample_age: AGE,
    }
}

fn gate(per_replica: Option<f64>, cooldown: u64) -> ActivationGate {
    ActivationGate::new(activation(per_replica, cooldown)).expect("valid activation")
}

/// `value` sampled at `now`.
fn fresh(value: f64, now: u64) -> ActivationReading {
    ActivationReading::Value {
        value,
        sampled_at: Duration::from_secs(now),
    }
}

fn period(now: u64, current: u32, decided: u32, reading: ActivationReading) -> GateInput {
    GateInput {
        now: Duration::from_secs(now),
        current_replicas: current,
        decided,
        min_replicas: 0,
        max_replicas: 8,
        reading,
    }
}

#[test]
fn at_zero_a_quiet_gateway_stays_at_zero() {
    let mut gate = gate(None, 300);
    let gated = gate.apply(&period(10, 0, 0, fresh(0.0, 10)));
    assert_eq!(gated.desired_replicas, 0);
    assert_eq!(gated.reason, Some(ActivationReason::Idle));
    assert_eq!(gated.state, ActivationState::Quiet { value: 0.0 });
}

#[test]
fn at_zero_a_waiting_request_wakes_one_replica() {
    let mut gate = gate(None, 300);
    let gated = gate.apply(&period(10, 0, 0, fresh(3.0, 10)));
    assert_eq!(gated.desired_replicas, 1);
    assert_eq!(gated.reason, Some(ActivationReason::Activated));
    assert!(gated.state.is_active());
}

#[test]
fn a_large_backlog_wakes_per_replica_capped_at_max() {
    let mut gate = gate(Some(8.0), 300);
    assert_eq!(
        gate.apply(&period(10, 0, 0, fresh(17.0, 10)))
            .desired_replicas,
        3,
        "ceil(17 / 8)"
    );
    assert_eq!(
        gate.apply(&period(11, 0, 0, fresh(0.5, 11)))
            .desired_replicas,
        1,
        "never fewer than one"
    );
    let gated = gate.apply(&period(12, 0, 0, fresh(1000.0, 12)));
    assert_eq!(gated.desired_replicas, 8, "never above max");
    assert_eq!(gated.reason, Some(ActivationReason::Activated));
}

#[test]
fn the_threshold_is_exclusive() {
    let mut gate = ActivationGate::new(Activation {
        threshold: 5.0,
        ..activation(None, 300)
    })
    .expect("valid");
    assert_eq!(
        gate.apply(&period(10, 0, 0, fresh(5.0, 10)))
            .desired_replicas,
        0
    );
    assert_eq!(
        gate.apply(&period(11, 0, 0, fresh(5.5, 11)))
            .desired_replicas,
        1
    );
}

#[test]
fn stale_absent_or_invalid_never_wakes() {
    let mut gate = gate(None, 300);
    let readings = [
        ActivationReading::Absent,
        ActivationReading::Invalid("the query returned 2 series".into()),
        // A large backlog, but read 31 s ago.
        fresh(50.0, 69),
        fresh(f64::NAN, 100),
        fresh(-1.0, 100),
    ];
    for reading in readings {
        let gated = gate.apply(&period(100, 0, 0, reading.clone()));
        assert_eq!(gated.desired_replicas, 0, "{reading:?}");
        assert_eq!(
            gated.reason,
            Some(ActivationReason::ActivationUnreadable),
            "{reading:?}"
        );
    }
}

#[test]
fn the_last_replica_goes_only_after_a_fresh_quiet_cooldown() {
    let mut gate = gate(None, 10);
    // Busy: the decider's choice stands.
    let gated = gate.apply(&period(0, 2, 2, fresh(4.0, 0)));
    assert_eq!((gated.desired_replicas, gated.reason), (2, None));
    // The gateway empties at 1 s; the decider wants zero at once.
    for now in 1..11 {
        let gated = gate.apply(&period(now, 1, 0, fresh(0.0, now)));
        assert_eq!(gated.desired_replicas, 1, "at {now}s");
        assert_eq!(gated.reason, Some(ActivationReason::ActivationCooldown));
        assert_eq!(gated.quiet_since, Some(Duration::from_secs(1)));
    }
    let gated = gate.apply(&period(11, 1, 0, fresh(0.0, 11)));
    assert_eq!(gated.desired_replicas, 0);
    assert_eq!(gated.reason, Some(ActivationReason::ScaledToZero));
}

#[test]
fn a_stale_read_or_a_blip_starts_the_cooldown_again() {
    let mut gate = gate(None, 10);
    for now in 0..8 {
        gate.apply(&period(now, 1, 0, fresh(0.0, now)));
    }
    let gated = gate.apply(&period(8, 1, 0, ActivationReading::Absent));
    assert_eq!((gated.desired_replicas, gated.quiet_since), (1, None));
    for now in 9..19 {
        let gated = gate.apply(&period(now, 1, 0, fresh(0.0, now)));
        assert_eq!(
            gated.desired_replicas,
            1,
            "at {now}s: only {}s quiet",
            now - 9
        );
    }
    // A single request at the gateway: the wait starts over.
    gate.apply(&period(19, 1, 0, fresh(1.0, 19)));
    let gated = gate.apply(&period(20, 1, 0, fresh(0.0, 20)));
    assert_eq!(gated.desired_replicas, 1);
    assert_eq!(gated.quiet_since, Some(Duration::from_secs(20)));
    let gated = gate.apply(&period(30, 1, 0, fresh(0.0, 30)));
    assert_eq!(gated.desired_replicas, 0);
}

#[test]
fn with_a_minimum_of_one_the_gate_changes_nothing() {
    let mut gate = gate(Some(1.0), 0);
    for (current, decided, reading) in [
        (0, 1, fresh(0.0, 5)),
        (0, 1, fresh(40.0, 5)),
        (2, 1, fresh(0.0, 5)),
        (1, 1, ActivationReading::Absent),
    ] {
        let gated = gate.apply(&GateInput {
            min_replicas: 1,
            ..period(5, current, decided, reading)
        });
        assert_eq!((gated.desired_replicas, gated.reason), (decided, None));
    }
}

#[test]
fn a_bad_activation_is_refused() {
    for bad in [
        Activation {
            threshold: -1.0,
            ..activation(None, 1)
        },
        Activation {
            threshold: f64::NAN,
            ..activation(None, 1)
        },
        activation(Some(0.0), 1),
        activation(Some(f64::INFINITY), 1),
        Activation {
            max_sample_age: Duration::ZERO,
            ..activation(None, 1)
        },
    ] {
        assert!(ActivationGate::new(bad).is_err(), "{bad:?}");
    }
}

/// One generated period: seconds since the last, what the decider wants, and
/// the reading (value, age in seconds; `None` for absent).
fn step() -> impl Strategy<Value = (u64, u32, Option<(f64, u64)>)> {
    (
        1u64..20,
        0u32..10,
        prop_oneof![
            1 => Just(None),
            6 => (prop_oneof![3 => Just(0.0), 1 => 0.0f64..3.0, 2 => 0.0f64..50.0], 0u64..45)
                .prop_map(Some),
        ],
    )
}

proptest! {
    /// Driven like the controller (each period's answer applied), the gate
    /// keeps the bounds, never wakes on data it cannot trust, and removes the
    /// last replica only after a whole cooldown of fresh, quiet readings.
    #[test]
    fn zero_is_reached_and_left_only_on_fresh_evidence(
        min in 0u32..3,
        spread in 0u32..6,
        threshold in prop_oneof![Just(0.0), 0.0f64..5.0],
        per_replica in proptest::option::of(0.5f64..20.0),
        cooldown in 0u64..60,
        start in 0u32..4,
        steps in proptest::collection::vec(step(), 1..80),
    ) {
        let max = min.max(1) + spread;
        let mut gate = ActivationGate::new(Activation {
            threshold,
            per_replica,
            cooldown: Duration::from_secs(cooldown),
            max_sample_age: AGE,
        })
        .expect("valid activation");
        let mut now = 0u64;
        let mut current = start.clamp(min, max);
        // (time, fresh and quiet) of every period so far.
        let mut history: Vec<(u64, bool)> = Vec::new();
        for (gap, decided, reading) in steps {
            now += gap;
            let decided = decided.clamp(min, max);
            let reading = reading.map_or(ActivationReading::Absent, |(value, age)| {
                ActivationReading::Value {
                    value,
                    sampled_at: Duration::from_secs(now.saturating_sub(age)),
                }
            });
            let fresh_value = match reading {
                ActivationReading::Value { value, sampled_at }
                    if Duration::from_secs(now).saturating_sub(sampled_at) <= AGE =>
                {
                    Some(value)
                }
                _ => None,
            };
            history.push((now, fresh_value.is_some_and(|v| v <= threshold)));
            let gated = gate.apply(&GateInput {
                now: Duration::from_secs(now),
                current_replicas: current,
                decided,
                min_replicas: min,
                max_replicas: max,
                reading,
            });
            let desired = gated.desired_replicas;
            prop_assert!(desired >= min && desired <= max, "{desired} outside [{min}, {max}]");
            if current == 0 && desired > 0 && min == 0 {
                prop_assert!(
                    fresh_value.is_some_and(|v| v > threshold),
                    "woke at {now}s on {fresh_value:?}"
                );
            }
            if current > 0 && desired == 0 {
                // The quiet run that ends now began at least a cooldown ago.
                let run_start = history
                    .iter()
                    .rev()
                    .take_while(|(_, quiet)| *quiet)
                    .last()
                    .map(|(at, _)| *at);
                prop_assert!(
                    run_start.is_some_and(|at| now - at >= cooldown),
                    "to zero at {now}s, quiet since {run_start:?}, cooldown {cooldown}s"
                );
            }
            if current > 0 && decided > 0 {
                prop_assert_eq!(desired, decided, "the decider's choice stands above zero");
            }
            current = desired;
        }
    }
}
