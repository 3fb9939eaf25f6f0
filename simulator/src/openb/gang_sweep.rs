//! Many gang runs (traces × policies × gang placements × seeds) in parallel, and
//! their table.

use std::fmt::Write as _;

use indicatif::ProgressBar;
use phalanx_engine::{ClusterSnapshot, PolicyName};
use rayon::prelude::*;

use super::gangs::{run_gangs, GangPlacement, GangRunError, GangRunResult, GangRunSpec};
use super::run::{PreparedTrace, WorkloadMode};
use crate::stats::Stats;

#[derive(Debug, Clone)]
pub struct GangSweepConfig {
    pub policies: Vec<PolicyName>,
    pub placements: Vec<GangPlacement>,
    pub seeds: Vec<u64>,
    pub tune: f64,
    pub workload: WorkloadMode,
    pub progress: bool,
}

/// Runs every (trace, policy, placement, seed); results come back in a fixed order.
pub fn run_gang_sweep(
    cluster: &ClusterSnapshot,
    traces: &[PreparedTrace],
    config: &GangSweepConfig,
) -> Result<Vec<GangRunResult>, GangRunError> {
    let mut jobs = Vec::new();
    for t in 0..traces.len() {
        for &policy in &config.policies {
            for &placement in &config.placements {
                for &seed in &config.seeds {
                    jobs.push((
                        t,
                        GangRunSpec {
                            policy,
                            seed,
                            tune: config.tune,
                            workload: config.workload,
                            placement,
                        },
                    ));
                }
            }
        }
    }
    let bar = if config.progress {
        ProgressBar::new(jobs.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    let results = jobs
        .par_iter()
        .map(|(t, spec)| {
            let result = run_gangs(cluster, &traces[*t], *spec);
            bar.inc(1);
            result
        })
        .collect();
    bar.finish_and_clear();
    results
}

/// One (trace, policy, placement) row: means over seeds.
#[derive(Debug, Clone)]
pub struct GangSummaryRow {
    pub workload: String,
    pub policy: PolicyName,
    pub placement: GangPlacement,
    pub unallocated_at_100: Stats,
    pub unallocated_at_130: Stats,
    pub failed_pods: Stats,
    pub gangs: Stats,
    pub gangs_placed: Stats,
    pub racks_per_gang: Stats,
    pub one_rack_percent: Stats,
    pub wall_seconds: Stats,
}

/// Groups runs per (trace, policy, placement), in input order.
pub fn summarise_gangs(runs: &[GangRunResult]) -> Vec<GangSummaryRow> {
    let mut keys: Vec<(&str, PolicyName, GangPlacement)> = Vec::new();
    for r in runs {
        let key = (r.pods_file.as_str(), r.spec.policy, r.spec.placement);
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys.into_iter()
        .map(|(pods_file, policy, placement)| {
            let group: Vec<&GangRunResult> = runs
                .iter()
                .filter(|r| {
                    r.pods_file == pods_file
                        && r.spec.policy == policy
                        && r.spec.placement == placement
                })
                .collect();
            let stats = |f: &dyn Fn(&GangRunResult) -> Option<f64>| {
                Stats::of(&group.iter().filter_map(|r| f(r)).collect::<Vec<_>>())
            };
            GangSummaryRow {
                workload: group[0].workload.clone(),
                policy,
                placement,
                unallocated_at_100: stats(&|r| r.unallocated_at(100)),
                unallocated_at_130: stats(&|r| r.unallocated_at(130)),
                failed_pods: stats(&|r| Some(r.pods_failed as f64)),
                gangs: stats(&|r| Some(r.gangs as f64)),
                gangs_placed: stats(&|r| Some(r.gangs_placed as f64)),
                racks_per_gang: stats(&|r| Some(r.racks_per_gang())),
                one_rack_percent: stats(&|r| {
                    Some(100.0 * r.gangs_in_one_rack as f64 / r.gangs_placed.max(1) as f64)
                }),
                wall_seconds: stats(&|r| Some(r.wall_seconds)),
            }
        })
        .collect()
}

/// The gang table, means over seeds.
pub fn gang_table(rows: &[GangSummaryRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:<10} {:<9} {:>8} {:>8} {:>8} {:>14} {:>11} {:>10} {:>7}",
        "trace",
        "policy",
        "gangs",
        "@100%",
        "@130%",
        "failed",
        "gangs placed",
        "racks/gang",
        "one rack%",
        "s/run"
    );
    let mut last = "";
    for row in rows {
        if !last.is_empty() && last != row.workload {
            out.push('\n');
        }
        last = &row.workload;
        let _ = writeln!(
            out,
            "{:<24} {:<10} {:<9} {:>8.2} {:>8.2} {:>8.0} {:>14} {:>11.2} {:>10.1} {:>7.3}",
            row.workload,
            row.policy.as_str(),
            row.placement.as_str(),
            row.unallocated_at_100.mean,
            row.unallocated_at_130.mean,
            row.failed_pods.mean,
            format!("{:.0}/{:.0}", row.gangs_placed.mean, row.gangs.mean),
            row.racks_per_gang.mean,
            row.one_rack_percent.mean,
            row.wall_seconds.mean,
        );
    }
    out
}
