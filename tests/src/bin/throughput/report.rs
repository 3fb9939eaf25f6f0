//! One run's figures, the line printed after it, the table printed at the end
//! and Phalanx's speed-up over kube-scheduler on the same workload.

use crate::check::Verdict;

#[derive(Debug, serde::Serialize)]
pub struct Report {
    /// `plain-gpu`, `anti-affinity`, `preferred-affinity` or `zone-spread`.
    pub workload: &'static str,
    pub scheduler: &'static str,
    /// "streamed" (pods created while the scheduler runs) or "precreated".
    pub mode: &'static str,
    pub nodes: usize,
    /// Pods bound by the benchmark before the scheduler started (not timed).
    pub init_pods: usize,
    pub pods: usize,
    pub pods_bound: usize,
    /// From the first pod created (or the scheduler ready, when precreated)
    /// to the last binding seen.
    pub seconds: f64,
    pub pods_per_second: f64,
    /// This run's pods/s over kube-scheduler's on the same workload, node
    /// count and mode (Phalanx's runs, when both were measured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speedup_vs_kube_scheduler: Option<f64>,
    /// Free whole GPUs on nodes that have some but not all GPUs in use.
    pub fragmented_gpus: u64,
    /// Rules the placements broke (see `check`), and what was checked.
    pub violations: usize,
    pub check: String,
    /// apiserver requests per second (all clients) over the measured window.
    pub api_qps: f64,
    /// One per `--gang-form`, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gangs: Vec<GangReport>,
    /// Why the run failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct GangReport {
    /// `podgroup` (scheduler-plugins) or `upstream` (scheduling.k8s.io/v1beta1).
    pub form: &'static str,
    pub members: usize,
    pub members_bound: usize,
    /// Seconds from the last member's creation to the first member seen with
    /// the gang plan: the gang is placed and its first plan write has landed.
    pub planned_seconds: Option<f64>,
    /// Seconds from the last member's creation to the first member seen bound
    /// (negative would mean a member bound before the gang was complete).
    pub first_bound_seconds: Option<f64>,
    /// Seconds from the last member's creation to the last member seen bound.
    pub last_bound_seconds: Option<f64>,
    /// For the `preempting` form: seconds the scheduler spent choosing
    /// victims (its `victim_selection_duration` histogram's sum), over how
    /// many choices, and how many pods it evicted.
    pub victim_selection_seconds: Option<f64>,
    pub victim_selections: Option<u64>,
    pub victims: Option<u64>,
}

impl GangReport {
    /// Reads the preemption figures from the scheduler's metrics text.
    pub fn set_preemption(&mut self, metrics: &str) {
        let value = |name: &str| -> Option<f64> {
            metrics
                .lines()
                .filter(|l| l.starts_with(name))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .reduce(|a, b| a + b)
        };
        self.victim_selection_seconds =
            value("phalanx_scheduler_victim_selection_duration_seconds_sum");
        self.victim_selections =
            value("phalanx_scheduler_victim_selection_duration_seconds_count").map(|v| v as u64);
        self.victims = value("phalanx_scheduler_preemption_victims_total").map(|v| v as u64);
    }
}

impl Report {
    pub fn set_verdict(&mut self, verdict: Verdict) {
        self.violations = verdict.violations;
        self.check = verdict.detail;
        self.fragmented_gpus = verdict.fragmented_gpus;
    }
}

/// Sets each Phalanx report's speed-up over the kube-scheduler report of the
/// same workload, node count and mode.
pub fn set_speedups(reports: &mut [Report]) {
    let baselines: Vec<(&'static str, usize, &'static str, f64)> = reports
        .iter()
        .filter(|r| r.scheduler == "kube-scheduler" && r.error.is_none() && r.pods_per_second > 0.0)
        .map(|r| (r.workload, r.nodes, r.mode, r.pods_per_second))
        .collect();
    for report in reports
        .iter_mut()
        .filter(|r| r.scheduler == "phalanx" && r.error.is_none())
    {
        report.speedup_vs_kube_scheduler = baselines
            .iter()
            .find(|(w, n, m, _)| *w == report.workload && *n == report.nodes && *m == report.mode)
            .map(|(_, _, _, baseline)| report.pods_per_second / baseline);
    }
}

pub fn print_summary(report: &Report) {
    if let Some(error) = &report.error {
        println!(
            "{} {} on {} nodes FAILED: {error}",
            report.workload, report.scheduler, report.nodes
        );
        return;
    }
    println!(
        "{}: {} bound {}/{} pods on {} nodes ({} init pods) in {:.2}s: {:.1} pods/s; {} GPUs fragmented \
         (free GPUs on nodes with some but not all GPUs in use); apiserver {:.0} requests/s (all clients)",
        report.workload,
        report.scheduler,
        report.pods_bound,
        report.pods,
        report.nodes,
        report.init_pods,
        report.seconds,
        report.pods_per_second,
        report.fragmented_gpus,
        report.api_qps
    );
    println!("check: {} violations: {}", report.violations, report.check);
    for gang in &report.gangs {
        println!(
            "{} gang of {}: {} bound; placed (first plan seen) {}, first member bound {} and last {} after the last member was created",
            gang.form,
            gang.members,
            gang.members_bound,
            seconds(gang.planned_seconds),
            seconds(gang.first_bound_seconds),
            seconds(gang.last_bound_seconds)
        );
        if let Some(spent) = gang.victim_selection_seconds {
            println!(
                "  victims chosen in {spent:.3}s over {} selection(s); {} pod(s) evicted",
                gang.victim_selections.unwrap_or(0),
                gang.victims.unwrap_or(0)
            );
        }
    }
}

fn seconds(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |s| format!("{s:.2}s"))
}

pub fn print_table(reports: &[Report]) {
    println!();
    println!(
        "{:<18} {:<15} {:>6} {:>10} {:>5} {:>6} {:>9} {:>7} {:>10} {:>10} {:>8} {:>10} {:>10}",
        "workload",
        "scheduler",
        "nodes",
        "mode",
        "init",
        "pods",
        "pods/s",
        "vs kube",
        "violations",
        "fragmented",
        "API QPS",
        "gang first",
        "gang last"
    );
    // With several gang forms the gang columns hold one figure per form, in
    // `--gang-form` order, separated by "/".
    for r in reports {
        if let Some(error) = &r.error {
            let first_line = error.lines().next().unwrap_or_default();
            println!(
                "{:<18} {:<15} {:>6} FAILED: {first_line}",
                r.workload, r.scheduler, r.nodes
            );
            continue;
        }
        let (first, last) = if r.gangs.is_empty() {
            ("-".to_owned(), "-".to_owned())
        } else {
            let joined = |figure: fn(&GangReport) -> Option<f64>| {
                r.gangs
                    .iter()
                    .map(|g| seconds(figure(g)))
                    .collect::<Vec<_>>()
                    .join("/")
            };
            (
                joined(|g| g.first_bound_seconds),
                joined(|g| g.last_bound_seconds),
            )
        };
        let speedup = r
            .speedup_vs_kube_scheduler
            .map_or_else(|| "-".to_owned(), |s| format!("{s:.2}x"));
        println!(
            "{:<18} {:<15} {:>6} {:>10} {:>5} {:>6} {:>9.1} {:>7} {:>10} {:>10} {:>8.0} {:>10} {:>10}",
            r.workload,
            r.scheduler,
            r.nodes,
            r.mode,
            r.init_pods,
            r.pods_bound,
            r.pods_per_second,
            speedup,
            r.violations,
            r.fragmented_gpus,
            r.api_qps,
            first,
            last
        );
    }
    println!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(workload: &'static str, scheduler: &'static str, pods_per_second: f64) -> Report {
        Report {
            workload,
            scheduler,
            mode: "precreated",
            nodes: 5000,
            init_pods: 0,
            pods: 100,
            pods_bound: 100,
            seconds: 1.0,
            pods_per_second,
            speedup_vs_kube_scheduler: None,
            fragmented_gpus: 0,
            violations: 0,
            check: String::new(),
            api_qps: 0.0,
            gangs: Vec::new(),
            error: None,
        }
    }

    #[test]
    fn speedup_is_against_kube_scheduler_on_the_same_workload() {
        let mut reports = vec![
            report("plain-gpu", "kube-scheduler", 200.0),
            report("plain-gpu", "phalanx", 600.0),
            report("zone-spread", "kube-scheduler", 100.0),
            report("zone-spread", "phalanx", 250.0),
            report("anti-affinity", "phalanx", 300.0),
        ];
        set_speedups(&mut reports);
        let speedups: Vec<Option<f64>> = reports
            .iter()
            .map(|r| r.speedup_vs_kube_scheduler)
            .collect();
        assert_eq!(
            speedups,
            vec![None, Some(3.0), None, Some(2.5), None],
            "no baseline, no ratio"
        );
    }
}
