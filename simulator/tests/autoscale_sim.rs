//! The autoscaling simulation on small synthetic traces, where the right answer is
//! known.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use phalanx_sim::autoscale::run::{simulate, Scenario};
use phalanx_sim::autoscale::scaler::PhalanxScaler;
use phalanx_sim::autoscale::trace::Request;
use phalanx_sim::autoscale::{
    autoscalers, compare, default_scenario, phalanx_behavior, phalanx_signal,
    PHALANX_CONTROL_PERIOD,
};

/// The default scenario with every autoscaler at its own minimum at first: these
/// loads are built around what one replica carries.
fn cold_scenario() -> Scenario {
    Scenario {
        warm_start: false,
        ..default_scenario()
    }
}

/// One request every `gap` seconds from `from` to `to`, each 2 s of slot time in
/// the default serving model (1 context token, 60 output tokens at 30 tokens/s).
fn steady(from: f64, to: f64, gap: f64) -> Vec<Request> {
    let mut out = Vec::new();
    let mut t = from;
    while t < to {
        out.push(Request {
            arrival: t,
            context_tokens: 1,
            generated_tokens: 60,
        });
        t += gap;
    }
    out
}

/// A quiet minute that one replica carries, then a burst of 30 requests a second.
fn quiet_then_burst() -> Vec<Request> {
    let mut requests = steady(0.0, 60.0, 1.0);
    requests.extend(steady(60.0, 120.0, 1.0 / 30.0));
    requests
}

#[test]
fn a_burst_is_answered_within_one_control_period() {
    let scenario = cold_scenario();
    let requests = quiet_then_burst();
    let mut phalanx = PhalanxScaler::new(
        phalanx_behavior(&scenario),
        PHALANX_CONTROL_PERIOD,
        phalanx_signal(&scenario),
    )
    .unwrap();
    let result = simulate(&requests, &scenario, &mut phalanx);
    // The quiet minute holds two requests in flight on one replica: below target,
    // by either reading of the load.
    for (crossed, delay) in [
        (
            result.load_first_crossed_instant_seconds,
            result.first_scale_up_delay_instant_seconds,
        ),
        (
            result.load_first_crossed_seconds,
            result.first_scale_up_delay_seconds,
        ),
    ] {
        let (crossed, delay) = (crossed.unwrap(), delay.unwrap());
        assert!(crossed >= 60.0, "crossed at {crossed}");
        assert!(
            delay <= PHALANX_CONTROL_PERIOD.as_secs_f64(),
            "first scale-up {delay} s after the crossing at {crossed} s"
        );
    }
    // And it did scale up, in one go, before the cold start could finish.
    let (t, replicas) = result.timeline[1];
    assert!(
        (60.0..=65.0).contains(&t) && replicas > 2,
        "{:?}",
        result.timeline
    );
}

#[test]
fn the_baselines_answer_the_same_burst_later() {
    let scenario = cold_scenario();
    let requests = quiet_then_burst();
    let results = compare(&requests, &scenario).unwrap();
    let delay = |name: &str| {
        results
            .iter()
            .find(|r| r.autoscaler == name)
            .unwrap()
            .first_scale_up_delay_seconds
    };
    let phalanx = delay("phalanx").unwrap();
    let hpa = delay("hpa").unwrap();
    assert!(hpa >= phalanx, "hpa {hpa} s, phalanx {phalanx} s");
}

#[test]
fn steady_load_below_the_target_never_scales() {
    let scenario = cold_scenario();
    // One request a second of 2 s: 2 in flight, a third of the target per replica.
    let requests = steady(0.0, 600.0, 1.0);
    let mut phalanx = PhalanxScaler::new(
        phalanx_behavior(&scenario),
        PHALANX_CONTROL_PERIOD,
        phalanx_signal(&scenario),
    )
    .unwrap();
    let result = simulate(&requests, &scenario, &mut phalanx);
    assert_eq!(result.replica_changes, 0, "{:?}", result.timeline);
    assert_eq!(result.slo_attainment, 1.0);
    // One replica of 2 GPUs for the 600 s (less one second) of the trace.
    assert!((result.gpu_hours - 2.0 * 599.0 / 3600.0).abs() < 1e-6);
}

#[test]
fn the_comparison_is_deterministic_and_names_its_autoscalers() {
    let scenario = cold_scenario();
    let requests = quiet_then_burst();
    let names: Vec<&str> = autoscalers(&scenario)
        .unwrap()
        .iter()
        .map(|a| a.name())
        .collect();
    assert_eq!(names, ["phalanx", "hpa", "keda"]);
    assert_eq!(
        compare(&requests, &scenario).unwrap(),
        compare(&requests, &scenario).unwrap()
    );
}

#[test]
fn no_more_replicas_than_the_gpus_hold() {
    let mut scenario = cold_scenario();
    scenario.serving.cluster_gpus = 6; // three replicas
    let requests = quiet_then_burst();
    for result in compare(&requests, &scenario).unwrap() {
        assert!(
            result.timeline.iter().all(|(_, n)| *n <= 3),
            "{}: {:?}",
            result.autoscaler,
            result.timeline
        );
        assert!(result.peak_replicas <= 3);
    }
}
