//! `phalanx-sim autoscale --suite`: every load of issue 18 through every
//! autoscaler, and for each load whether Phalanx met the issue's targets.
//!
//! The loads: the embedded Azure conversation trace (decode-heavy), the embedded
//! Mooncake trace (prefill-heavy), the five generated loads of [`super::loads`],
//! and any trace the user gives.

use rayon::prelude::*;
use serde::Serialize;

use phalanx_autoscaler::decision::InvalidBehavior;

use super::loads::{ChatTokens, GeneratedLoad, LoadKind};
use super::run::{RunResult, Scenario};
use super::trace::{
    read_mooncake, read_requests, read_trace, Request, EMBEDDED_MOONCAKE_TRACE,
    EMBEDDED_MOONCAKE_TRACE_NAME,
};
use super::{compare, oracle, EMBEDDED_TRACE, EMBEDDED_TRACE_NAME};
use crate::trace::{CsvSource, TraceError};

/// One load of the suite.
#[derive(Debug, Clone)]
pub struct SuiteLoad {
    /// Short name for tables and plot files.
    pub name: String,
    /// Where it comes from and its shape, in words.
    pub about: String,
    pub requests: Vec<Request>,
    /// For generated loads: replicas needed at the peak rate at the target.
    pub peak_replicas_needed: Option<f64>,
}

/// The suite's loads for `seed`: the two embedded traces, the generated loads at
/// their default rates, then `traces` (either format) in the order given.
pub fn build_loads(
    seed: u64,
    traces: &[CsvSource],
    max_span_seconds: f64,
    scenario: &Scenario,
) -> Result<Vec<SuiteLoad>, TraceError> {
    let azure_src = CsvSource::embedded(EMBEDDED_TRACE_NAME, EMBEDDED_TRACE);
    let azure = read_requests(&azure_src, max_span_seconds)?;
    let mooncake_src = CsvSource::embedded(EMBEDDED_MOONCAKE_TRACE_NAME, EMBEDDED_MOONCAKE_TRACE);
    let mooncake = read_mooncake(&mooncake_src, max_span_seconds)?;
    let chat = ChatTokens::from_requests(&azure).ok_or_else(|| TraceError::File {
        file: azure_src.name.clone(),
        message: "no requests to draw chat token lengths from".into(),
    })?;

    let mut loads = vec![
        trace_load("azure-conv", &azure_src.name, azure),
        trace_load("mooncake", &mooncake_src.name, mooncake),
    ];
    for kind in LoadKind::ALL {
        let load = GeneratedLoad::new(kind);
        let requests = load.generate(seed, &chat);
        loads.push(SuiteLoad {
            name: kind.name().to_owned(),
            about: format!("generated (seed {seed}): {}", kind.describe(load.base_rate)),
            peak_replicas_needed: Some(load.peak_replicas_needed(&requests, scenario)),
            requests,
        });
    }
    for src in traces {
        let requests = read_trace(src, max_span_seconds)?;
        loads.push(trace_load(&src.workload_name(), &src.name, requests));
    }
    Ok(loads)
}

fn trace_load(name: &str, file: &str, requests: Vec<Request>) -> SuiteLoad {
    let n = requests.len().max(1) as f64;
    let mean = |f: fn(&Request) -> u32| requests.iter().map(|r| f64::from(f(r))).sum::<f64>() / n;
    SuiteLoad {
        name: name.to_owned(),
        about: format!(
            "trace {file}: mean {:.0} input / {:.0} output tokens",
            mean(|r| r.context_tokens),
            mean(|r| r.generated_tokens)
        ),
        peak_replicas_needed: None,
        requests,
    }
}

/// One of the issue's targets for Phalanx on one load.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    pub met: bool,
    /// The numbers it was judged on, in words.
    pub detail: String,
}

/// The issue's four targets for Phalanx on one load.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// SLO attainment at least that of the better of the HPA-like and KEDA-like.
    pub slo_at_least_best_baseline: Check,
    /// GPU-hours at most 90 % of the HPA-like's.
    pub gpu_hours_within_90_percent_of_hpa: Check,
    /// No direction reversal within its own stabilisation window.
    pub no_reversal_in_own_window: Check,
    /// First scale-up within one control period of the load crossing its target.
    pub first_scale_up_within_one_period: Check,
}

impl Verdict {
    pub fn checks(&self) -> [&Check; 4] {
        [
            &self.slo_at_least_best_baseline,
            &self.gpu_hours_within_90_percent_of_hpa,
            &self.no_reversal_in_own_window,
            &self.first_scale_up_within_one_period,
        ]
    }

    pub fn all_met(&self) -> bool {
        self.checks().iter().all(|c| c.met)
    }
}

/// The SLO attainment of the better of the HPA-like and KEDA-like runs in
/// `results` (0 when neither is there).
pub fn better_baseline_attainment(results: &[RunResult]) -> f64 {
    results
        .iter()
        .filter(|r| r.autoscaler == "hpa" || r.autoscaler == "keda")
        .map(|r| r.slo_attainment)
        .fold(0.0, f64::max)
}

/// Judges Phalanx against the baselines in `results` (by autoscaler name);
/// `None` when one of phalanx, hpa and keda is missing.
pub fn verdict(results: &[RunResult], control_period_seconds: f64) -> Option<Verdict> {
    let find = |name: &str| results.iter().find(|r| r.autoscaler == name);
    let (p, h, _) = (find("phalanx")?, find("hpa")?, find("keda")?);
    let best = better_baseline_attainment(results);
    let ratio = p.gpu_hours / h.gpu_hours;
    let first_up = match (p.load_first_crossed_seconds, p.first_scale_up_delay_seconds) {
        (None, _) => Check {
            met: true,
            detail: "the load never crossed its target".into(),
        },
        (Some(at), None) => Check {
            met: false,
            detail: format!("no scale-up after the load crossed its target at {at:.0} s"),
        },
        (Some(at), Some(delay)) => Check {
            met: delay <= control_period_seconds,
            detail: format!("{delay:.1} s after the crossing at {at:.0} s"),
        },
    };
    Some(Verdict {
        slo_at_least_best_baseline: Check {
            met: p.slo_attainment >= best,
            detail: format!("{:.2} % vs {:.2} %", 100.0 * p.slo_attainment, 100.0 * best),
        },
        gpu_hours_within_90_percent_of_hpa: Check {
            met: ratio <= 0.9,
            detail: format!("{:.1} % of hpa", 100.0 * ratio),
        },
        no_reversal_in_own_window: Check {
            met: p.reversals_within_window == 0,
            detail: format!(
                "{} within {:.0} s",
                p.reversals_within_window, p.reversal_window_seconds
            ),
        },
        first_scale_up_within_one_period: first_up,
    })
}

/// Every autoscaler's run on one load, and Phalanx's verdict.
#[derive(Debug, Clone)]
pub struct LoadOutcome {
    pub load: SuiteLoad,
    pub results: Vec<RunResult>,
    pub verdict: Option<Verdict>,
}

/// Runs [`compare`] on every load, loads in parallel, results in load order.
pub fn run(
    loads: Vec<SuiteLoad>,
    scenario: &Scenario,
    control_period_seconds: f64,
) -> Result<Vec<LoadOutcome>, InvalidBehavior> {
    loads
        .into_par_iter()
        .map(|load| {
            let mut results = compare(&load.requests, scenario)?;
            let verdict = verdict(&results, control_period_seconds);
            results.push(oracle::cheapest_meeting(
                &load.requests,
                scenario,
                better_baseline_attainment(&results),
            ));
            Ok(LoadOutcome {
                load,
                results,
                verdict,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

    use super::*;
    use crate::autoscale::default_scenario;
    use crate::autoscale::trace::DEFAULT_MAX_TRACE_HOURS;

    const SPAN: f64 = DEFAULT_MAX_TRACE_HOURS * 3600.0;

    /// Real runs of a tiny load, then set to the figures a case needs.
    fn results(
        slo: [f64; 3],
        gpu: [f64; 3],
        reversals: u32,
        crossed: Option<f64>,
        delay: Option<f64>,
    ) -> Vec<RunResult> {
        let requests: Vec<Request> = (0..20)
            .map(|i| Request {
                arrival: f64::from(i),
                context_tokens: 100,
                generated_tokens: 10,
            })
            .collect();
        let mut results = compare(&requests, &default_scenario()).unwrap();
        assert_eq!(
            results.iter().map(|r| r.autoscaler).collect::<Vec<_>>(),
            ["phalanx", "hpa", "keda"]
        );
        for (i, r) in results.iter_mut().enumerate() {
            r.slo_attainment = slo[i];
            r.gpu_hours = gpu[i];
        }
        results[0].reversals_within_window = reversals;
        results[0].load_first_crossed_seconds = crossed;
        results[0].first_scale_up_delay_seconds = delay;
        results
    }

    fn met(v: &Verdict) -> [bool; 4] {
        v.checks().map(|c| c.met)
    }

    #[test]
    fn the_verdict_checks_each_target_against_the_issues_bound() {
        let all = results(
            [0.97, 0.96, 0.95],
            [9.0, 10.0, 11.0],
            0,
            Some(100.0),
            Some(5.0),
        );
        let v = verdict(&all, 5.0).unwrap();
        assert_eq!(met(&v), [true; 4]);
        assert!(v.all_met());

        // The better baseline is the bar: here KEDA's.
        let v = verdict(
            &results(
                [0.96, 0.95, 0.97],
                [9.0, 10.0, 9.0],
                0,
                Some(1.0),
                Some(0.0),
            ),
            5.0,
        )
        .unwrap();
        assert_eq!(met(&v), [false, true, true, true]);
        assert_eq!(v.slo_at_least_best_baseline.detail, "96.00 % vs 97.00 %");

        // 90 % of the HPA's GPU-hours, not KEDA's.
        let v = verdict(
            &results([0.97, 0.96, 0.95], [9.1, 10.0, 20.0], 1, None, None),
            5.0,
        )
        .unwrap();
        assert_eq!(met(&v), [true, false, false, true]);
        assert!(!v.all_met());

        // A late first scale-up, and none at all after a crossing.
        let v = verdict(
            &results([1.0, 1.0, 1.0], [1.0, 2.0, 2.0], 0, Some(60.0), Some(5.1)),
            5.0,
        )
        .unwrap();
        assert_eq!(met(&v), [true, true, true, false]);
        let v = verdict(
            &results([1.0, 1.0, 1.0], [1.0, 2.0, 2.0], 0, Some(60.0), None),
            5.0,
        )
        .unwrap();
        assert!(!v.first_scale_up_within_one_period.met);
        assert!(v
            .first_scale_up_within_one_period
            .detail
            .contains("no scale-up"));

        assert!(verdict(&all[..2], 5.0).is_none());
    }

    #[test]
    fn the_suite_has_every_load_of_the_issue_and_the_users_traces() {
        let user = CsvSource::embedded(
            "mine.jsonl",
            "{\"timestamp\": 0, \"input_length\": 5, \"output_length\": 5}\n",
        );
        let loads = build_loads(1, &[user], SPAN, &default_scenario()).unwrap();
        let names: Vec<&str> = loads.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "azure-conv",
                "mooncake",
                "step-4x",
                "flash-crowd-10x",
                "diurnal",
                "code-bursts",
                "drift",
                "mine"
            ]
        );
        assert_eq!(loads[0].requests.len(), 19_366);
        assert_eq!(loads[1].requests.len(), 3_993);
        assert!(loads[2].about.contains("8.8/s"), "{}", loads[2].about);
        assert!(loads[2..7].iter().all(|l| l.peak_replicas_needed.is_some()));

        let bad = CsvSource::embedded("bad.jsonl", "{\"timestamp\": 0}\n");
        let err = build_loads(1, &[bad], SPAN, &default_scenario()).unwrap_err();
        assert!(
            err.to_string().starts_with("bad.jsonl:1: missing field"),
            "{err}"
        );
    }

    #[test]
    fn loads_run_in_parallel_come_back_in_order_with_verdicts() {
        let load = |name: &str, n: u32| SuiteLoad {
            name: name.into(),
            about: String::new(),
            requests: (0..n)
                .map(|i| Request {
                    arrival: f64::from(i) * 0.5,
                    context_tokens: 500,
                    generated_tokens: 50,
                })
                .collect(),
            peak_replicas_needed: None,
        };
        let outcomes = run(
            vec![load("a", 40), load("b", 80), load("c", 10)],
            &default_scenario(),
            5.0,
        )
        .unwrap();
        let names: Vec<&str> = outcomes.iter().map(|o| o.load.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        for outcome in &outcomes {
            let scalers: Vec<&str> = outcome.results.iter().map(|r| r.autoscaler).collect();
            assert_eq!(scalers, ["phalanx", "hpa", "keda", "oracle"]);
            assert!(outcome.verdict.is_some());
        }
    }
}
