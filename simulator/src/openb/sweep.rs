//! Many runs (traces × policies × seeds) in parallel, and their summary.

use indicatif::{ProgressBar, ProgressStyle};
use phalanx_engine::{ClusterSnapshot, EngineError, PolicyName};
use rayon::prelude::*;

use super::run::{run_once, Batching, PreparedTrace, RunResult, RunSpec, WorkloadMode};
use crate::paper::{tolerance, PaperResults};
use crate::stats::Stats;

#[derive(Debug, Clone)]
pub struct SweepConfig {
    pub policies: Vec<PolicyName>,
    pub seeds: Vec<u64>,
    pub tune: f64,
    pub workload: WorkloadMode,
    pub batching: Batching,
    pub progress: bool,
}

/// One (trace, policy) row of the summary.
#[derive(Debug, Clone)]
pub struct SummaryRow {
    pub workload: String,
    pub pods_file: String,
    pub policy: PolicyName,
    pub seeds: Vec<u64>,
    pub at_100: Stats,
    pub at_130: Stats,
    pub failed_pods: Stats,
    pub wall_seconds: Stats,
    pub paper: Option<PaperComparison>,
    /// Per seed, this policy's unallocated GPU % at 100 % arrived less FGD's on
    /// the same arrivals (same trace, seeds and methodology); `None` for FGD
    /// itself or when FGD was not run. Pairing by seed removes the arrival
    /// noise both share, so its standard error is what says whether a policy
    /// really beats FGD.
    pub against_fgd: Option<Stats>,
}

impl SummaryRow {
    /// Lower than FGD by more than two standard errors of the paired mean.
    pub fn beats_fgd(&self) -> bool {
        self.against_fgd
            .is_some_and(|d| d.n > 1 && d.mean < -2.0 * d.standard_error())
    }
}

#[derive(Debug, Clone, Copy)]
pub struct PaperComparison {
    pub at_100: Stats,
    /// The spec's acceptance band around the paper's mean (§8.4).
    pub tolerance: f64,
}

impl PaperComparison {
    pub fn within(&self, ours: &Stats) -> bool {
        (ours.mean - self.at_100.mean).abs() <= self.tolerance
    }
}

/// Runs every (trace, policy, seed) on the rayon pool; results come back in a fixed order.
pub fn run_sweep(
    cluster: &ClusterSnapshot,
    traces: &[PreparedTrace],
    config: &SweepConfig,
) -> Result<Vec<RunResult>, EngineError> {
    let mut jobs = Vec::new();
    for (t, _) in traces.iter().enumerate() {
        for &policy in &config.policies {
            for &seed in &config.seeds {
                jobs.push((
                    t,
                    RunSpec {
                        policy,
                        seed,
                        tune: config.tune,
                        workload: config.workload,
                        batching: config.batching,
                    },
                ));
            }
        }
    }
    let bar = if config.progress {
        ProgressBar::new(jobs.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) = ProgressStyle::with_template(
        "{bar:40} {pos}/{len} runs  {elapsed_precise} (eta {eta}) {msg}",
    ) {
        bar.set_style(style);
    }
    let results: Result<Vec<RunResult>, EngineError> = jobs
        .par_iter()
        .map(|(t, spec)| {
            let result = run_once(cluster, &traces[*t], *spec);
            bar.inc(1);
            result
        })
        .collect();
    bar.finish_and_clear();
    results
}

/// `group`'s runs (one trace, one policy) less FGD's run of the same trace and
/// seed, where there is one for every seed.
fn paired_against_fgd(runs: &[RunResult], group: &[&RunResult]) -> Option<Stats> {
    let differences: Option<Vec<f64>> = group
        .iter()
        .filter_map(|r| r.unallocated_at(100).map(|v| (r, v)))
        .map(|(r, value)| {
            runs.iter()
                .find(|f| {
                    f.policy == PolicyName::Fgd && f.pods_file == r.pods_file && f.seed == r.seed
                })
                .and_then(|f| f.unallocated_at(100))
                .map(|fgd| value - fgd)
        })
        .collect();
    differences.filter(|d| !d.is_empty()).map(|d| Stats::of(&d))
}

/// Groups runs per (trace, policy), in input order, with the paper's figures beside.
pub fn summarise(runs: &[RunResult], paper: &PaperResults) -> Vec<SummaryRow> {
    let mut keys: Vec<(String, String, PolicyName)> = Vec::new();
    for r in runs {
        let key = (r.workload.clone(), r.pods_file.clone(), r.policy);
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys.into_iter()
        .map(|(workload, pods_file, policy)| {
            let group: Vec<&RunResult> = runs
                .iter()
                .filter(|r| r.pods_file == pods_file && r.policy == policy)
                .collect();
            let values = |f: &dyn Fn(&RunResult) -> Option<f64>| -> Vec<f64> {
                group.iter().filter_map(|r| f(r)).collect()
            };
            let at_100 = Stats::of(&values(&|r| r.unallocated_at(100)));
            let against_fgd = (policy != PolicyName::Fgd)
                .then(|| paired_against_fgd(runs, &group))
                .flatten();
            let paper = policy
                .paper_label()
                .and_then(|label| paper.get(&workload, label))
                .map(|cell| {
                    let p = Stats::of(&cell.at_100);
                    PaperComparison {
                        at_100: p,
                        tolerance: tolerance(&p, &at_100),
                    }
                });
            SummaryRow {
                seeds: group.iter().map(|r| r.seed).collect(),
                at_130: Stats::of(&values(&|r| r.unallocated_at(130))),
                failed_pods: Stats::of(&values(&|r| Some(r.pods_failed as f64))),
                wall_seconds: Stats::of(&values(&|r| Some(r.wall_seconds))),
                at_100,
                paper,
                against_fgd,
                workload,
                pods_file,
                policy,
            }
        })
        .collect()
}
