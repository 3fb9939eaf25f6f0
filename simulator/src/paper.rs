//! The FGD paper authors' own results (`fgd_expected_results/analysis_allo_discrete.csv`),
//! shipped with the simulator so that every table shows the published figure beside ours.

use std::collections::HashMap;

use crate::stats::Stats;

const EMBEDDED: &str = include_str!("../data/fgd_paper_allocation.csv");

/// Unallocated GPU % at 100 % and 130 % arrived, per seed, for one workload and policy.
#[derive(Debug, Clone, Default)]
pub struct PaperCell {
    pub at_100: Vec<f64>,
    pub at_130: Vec<f64>,
}

/// Keyed by (workload, paper policy label such as `06-FGD`).
#[derive(Debug, Clone, Default)]
pub struct PaperResults {
    cells: HashMap<(String, String), PaperCell>,
}

impl PaperResults {
    /// Parses the embedded file; a malformed row (which would be our packaging bug)
    /// is skipped rather than trusted.
    pub fn embedded() -> Self {
        let mut out = PaperResults::default();
        let mut rdr = csv::Reader::from_reader(EMBEDDED.as_bytes());
        let Ok(headers) = rdr.headers().cloned() else {
            return out;
        };
        let col = |name: &str| headers.iter().position(|h| h == name);
        let (Some(w), Some(p), Some(c100), Some(c130)) =
            (col("workload"), col("sc_policy"), col("100"), col("130"))
        else {
            return out;
        };
        for record in rdr.records().flatten() {
            let parse = |i: usize| record.get(i).and_then(|v| v.parse::<f64>().ok());
            let (Some(a100), Some(a130)) = (parse(c100), parse(c130)) else {
                continue;
            };
            let key = (
                record.get(w).unwrap_or_default().to_owned(),
                record.get(p).unwrap_or_default().to_owned(),
            );
            let cell = out.cells.entry(key).or_default();
            cell.at_100.push(100.0 - a100);
            cell.at_130.push(100.0 - a130);
        }
        out
    }

    pub fn get(&self, workload: &str, label: &str) -> Option<&PaperCell> {
        self.cells.get(&(workload.to_owned(), label.to_owned()))
    }

    /// Workloads with published results.
    pub fn workloads(&self) -> Vec<String> {
        let mut w: Vec<String> = self.cells.keys().map(|(w, _)| w.clone()).collect();
        w.sort();
        w.dedup();
        w
    }
}

/// The spec's acceptance test (§8.4): |mean_new − mean_paper| ≤ 3·√((sd_p² + sd_n²)/n).
pub fn tolerance(paper: &Stats, ours: &Stats) -> f64 {
    let n = paper.n.min(ours.n).max(1) as f64;
    3.0 * ((paper.sd.powi(2) + ours.sd.powi(2)) / n).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_results_reproduce_the_spec_table() {
        let paper = PaperResults::embedded();
        let fgd = Stats::of(
            &paper
                .get("openb_pod_list_default", "06-FGD")
                .unwrap()
                .at_100,
        );
        assert_eq!(fgd.n, 10);
        assert!((fgd.mean - 4.77).abs() < 0.006, "{}", fgd.mean);
        let random = Stats::of(
            &paper
                .get("openb_pod_list_multigpu50", "01-Random")
                .unwrap()
                .at_100,
        );
        assert!((random.mean - 18.72).abs() < 0.006, "{}", random.mean);
        assert_eq!(paper.workloads().len(), 13);
    }
}
