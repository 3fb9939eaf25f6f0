//! Properties of the Phalanx autoscaler driven through the simulator on loads
//! generated at random (rates changing in steps, any token shape, monitoring
//! outages), and on the suite's generated loads at any seed and rate: replicas
//! stay within their bounds, a scale-up is never undone
//! within the scale-down window, and stale data never scales down.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use std::time::Duration;

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use phalanx_sim::autoscale::loads::{ChatTokens, GeneratedLoad, LoadKind};
use phalanx_sim::autoscale::run::simulate;
use phalanx_sim::autoscale::scaler::PhalanxScaler;
use phalanx_sim::autoscale::trace::{read_requests, Request, DEFAULT_MAX_TRACE_HOURS};
use phalanx_sim::autoscale::{
    default_scenario, phalanx_behavior, phalanx_signal, EMBEDDED_TRACE, EMBEDDED_TRACE_NAME,
    PHALANX_CONTROL_PERIOD,
};
use phalanx_sim::trace::CsvSource;

/// A load: steps of (seconds, requests per second), and the mean prompt and
/// output tokens.
#[derive(Debug, Clone)]
struct Load {
    steps: Vec<(u32, f64)>,
    prompt: u32,
    output: u32,
    seed: u64,
}

fn any_load() -> impl Strategy<Value = Load> {
    (
        prop::collection::vec((30u32..600, 0.0..12.0f64), 1..6),
        10u32..20_000,
        1u32..400,
        any::<u64>(),
    )
        .prop_map(|(steps, prompt, output, seed)| Load {
            steps,
            prompt,
            output,
            seed,
        })
}

/// Poisson arrivals at each step's rate; tokens uniform within ±50 % of the means.
fn requests(load: &Load) -> Vec<Request> {
    let mut rng = ChaCha8Rng::seed_from_u64(load.seed);
    let mut out = Vec::new();
    let mut start = 0.0;
    for &(seconds, rate) in &load.steps {
        let end = start + f64::from(seconds);
        if rate > 0.0 {
            let mut t = start;
            loop {
                t += -(1.0 - rng.random::<f64>()).ln() / rate;
                if t >= end {
                    break;
                }
                let around = |mean: u32, rng: &mut ChaCha8Rng| {
                    ((f64::from(mean) * rng.random_range(0.5..1.5)) as u32).max(1)
                };
                out.push(Request {
                    arrival: t,
                    context_tokens: around(load.prompt, &mut rng),
                    generated_tokens: around(load.output, &mut rng),
                });
            }
        }
        start = end;
    }
    if out.is_empty() {
        out.push(Request {
            arrival: 0.0,
            context_tokens: 1,
            generated_tokens: 1,
        });
    }
    out
}

/// Runs Phalanx between `min` and `min + span` with Prometheus cut off during
/// `outages` (from, length in seconds) and checks the three properties.
fn check(
    requests: &[Request],
    min: u32,
    span: u32,
    outages: &[(u64, u64)],
) -> Result<(), TestCaseError> {
    let mut scenario = default_scenario();
    scenario.scrape_outages = outages
        .iter()
        .map(|&(from, length)| {
            (
                Duration::from_secs(from),
                Duration::from_secs(from + length),
            )
        })
        .collect();
    let mut behavior = phalanx_behavior(&scenario);
    behavior.min_replicas = min;
    behavior.max_replicas = min + span;
    let down_window = behavior.scale_down_stabilization.as_secs_f64();
    let max_age = behavior.max_sample_age.as_secs_f64();
    let mut phalanx =
        PhalanxScaler::new(behavior, PHALANX_CONTROL_PERIOD, phalanx_signal(&scenario)).unwrap();
    let result = simulate(requests, &scenario, &mut phalanx);

    let mut last_up: Option<f64> = None;
    for pair in result.timeline.windows(2) {
        let ((_, before), (at, after)) = (pair[0], pair[1]);
        prop_assert!(
            (min..=min + span).contains(&after),
            "{after} replicas at {at} s"
        );
        if after > before {
            last_up = Some(at);
        } else if after < before {
            if let Some(up) = last_up {
                prop_assert!(at - up >= down_window, "up at {up} s undone at {at} s");
            }
            // The newest sample is older than the maximum age: stale.
            let stale = scenario.scrape_outages.iter().any(|(from, until)| {
                at >= from.as_secs_f64() + max_age + 5.0 && at < until.as_secs_f64()
            });
            prop_assert!(
                !stale,
                "scaled down {before} -> {after} at {at} s on stale data"
            );
        }
    }
    Ok(())
}

fn outages() -> impl Strategy<Value = Vec<(u64, u64)>> {
    prop::collection::vec((0u64..2_000, 30u64..400), 0..3)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn on_random_step_loads_replicas_stay_in_bounds_are_not_undone_within_the_window_and_stale_data_never_scales_down(
        load in any_load(),
        min in 1u32..4,
        span in 0u32..13,
        outages in outages(),
    ) {
        check(&requests(&load), min, span, &outages)?;
    }

    #[test]
    fn on_the_suites_generated_loads_at_any_seed_and_rate_the_same_holds(
        kind in 0usize..LoadKind::ALL.len(),
        seed in any::<u64>(),
        rate in 0.3..1.5f64,
        min in 1u32..4,
        span in 0u32..13,
        outages in outages(),
    ) {
        let mut load = GeneratedLoad::new(LoadKind::ALL[kind]);
        load.base_rate *= rate;
        check(&load.generate(seed, &CHAT), min, span, &outages)?;
    }
}

/// Chat token lengths drawn from the embedded Azure trace, read once.
static CHAT: std::sync::LazyLock<ChatTokens> = std::sync::LazyLock::new(|| {
    let azure = read_requests(
        &CsvSource::embedded(EMBEDDED_TRACE_NAME, EMBEDDED_TRACE),
        DEFAULT_MAX_TRACE_HOURS * 3600.0,
    )
    .unwrap();
    ChatTokens::from_requests(&azure).unwrap()
});
