//! What a sweep shows: a table for people, JSON for scripts, an SVG plot.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use crate::openb::curves::BUCKETS;
use crate::openb::run::{RunResult, WorkloadMode};
use crate::openb::sweep::SummaryRow;

/// A legend entry's sample: a short line in the series' own style.
pub fn legend_line(style: ShapeStyle) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style)
}

/// The legend box every plot of the simulator draws, at `position`.
pub fn draw_legend<'a, DB, CT>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>
where
    DB: DrawingBackend + 'a,
    CT: CoordTranslate,
{
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
}

/// The comparison table: unallocated GPU % at 100 % arrived, ours beside the paper's.
pub fn table(rows: &[SummaryRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<28} {:<11} {:>7} {:>7} {:>7} {:>8} {:>8}   {:>7} {:>6} {:>4}   {:>14}",
        "trace",
        "policy",
        "mean",
        "min",
        "max",
        "failed",
        "s/run",
        "paper",
        "±tol",
        "",
        "vs fgd ± SE"
    );
    let mut last = "";
    for row in rows {
        if !last.is_empty() && last != row.pods_file {
            out.push('\n');
        }
        last = &row.pods_file;
        let (paper, tol, verdict) = match &row.paper {
            Some(p) => (
                format!("{:.2}", p.at_100.mean),
                format!("{:.2}", p.tolerance),
                if p.within(&row.at_100) { "ok" } else { "MISS" },
            ),
            None => ("-".into(), "".into(), ""),
        };
        // `*`: below FGD by more than two standard errors.
        let against_fgd = row.against_fgd.map_or(String::new(), |d| {
            let mark = if row.beats_fgd() { "*" } else { " " };
            format!("{:+.3} ±{:.3}{mark}", d.mean, d.standard_error())
        });
        let _ = writeln!(
            out,
            "{:<28} {:<11} {:>7.2} {:>7.2} {:>7.2} {:>8.0} {:>8.3}   {:>7} {:>6} {:>4}   {:>14}",
            row.workload,
            row.policy.as_str(),
            row.at_100.mean,
            row.at_100.min,
            row.at_100.max,
            row.failed_pods.mean,
            row.wall_seconds.mean,
            paper,
            tol,
            verdict,
            against_fgd
        );
    }
    out
}

#[derive(Serialize)]
struct JsonSummary<'a> {
    policy: &'a str,
    pods_file: &'a str,
    workload: &'a str,
    workload_model: WorkloadMode,
    seeds: &'a [u64],
    mean_unallocated_gpu_pct_at_100: f64,
    min_unallocated_gpu_pct_at_100: f64,
    max_unallocated_gpu_pct_at_100: f64,
    sd_unallocated_gpu_pct_at_100: f64,
    mean_unallocated_gpu_pct_at_130: f64,
    mean_failed_pods: f64,
    mean_wall_seconds_per_run: f64,
    paper_mean_unallocated_gpu_pct_at_100: Option<f64>,
    paper_tolerance: Option<f64>,
    within_paper_tolerance: Option<bool>,
    /// Paired by seed against FGD: mean difference and its standard error.
    vs_fgd_mean: Option<f64>,
    vs_fgd_standard_error: Option<f64>,
    beats_fgd_by_two_standard_errors: Option<bool>,
}

#[derive(Serialize)]
struct JsonRun<'a> {
    policy: &'a str,
    pods_file: &'a str,
    seed: u64,
    unallocated_gpu_pct_at_100: Option<f64>,
    unallocated_gpu_pct_at_130: Option<f64>,
    wall_seconds: f64,
    pods_arrived: usize,
    pods_failed: usize,
    allocation_curve: &'a [Option<f64>],
    frag_amount_curve: &'a [Option<f64>],
    frag_ratio_curve: &'a [Option<f64>],
}

#[derive(Serialize)]
struct JsonReport<'a> {
    tune: f64,
    nodes_file: &'a str,
    summary: Vec<JsonSummary<'a>>,
    runs: Vec<JsonRun<'a>>,
}

pub fn json(
    rows: &[SummaryRow],
    runs: &[RunResult],
    tune: f64,
    nodes_file: &str,
    workload_model: WorkloadMode,
) -> serde_json::Result<String> {
    let report = JsonReport {
        tune,
        nodes_file,
        summary: rows
            .iter()
            .map(|r| JsonSummary {
                policy: r.policy.as_str(),
                pods_file: &r.pods_file,
                workload: &r.workload,
                workload_model,
                seeds: &r.seeds,
                mean_unallocated_gpu_pct_at_100: r.at_100.mean,
                min_unallocated_gpu_pct_at_100: r.at_100.min,
                max_unallocated_gpu_pct_at_100: r.at_100.max,
                sd_unallocated_gpu_pct_at_100: r.at_100.sd,
                mean_unallocated_gpu_pct_at_130: r.at_130.mean,
                mean_failed_pods: r.failed_pods.mean,
                mean_wall_seconds_per_run: r.wall_seconds.mean,
                paper_mean_unallocated_gpu_pct_at_100: r.paper.map(|p| p.at_100.mean),
                paper_tolerance: r.paper.map(|p| p.tolerance),
                within_paper_tolerance: r.paper.map(|p| p.within(&r.at_100)),
                vs_fgd_mean: r.against_fgd.map(|d| d.mean),
                vs_fgd_standard_error: r.against_fgd.map(|d| d.standard_error()),
                beats_fgd_by_two_standard_errors: r.against_fgd.map(|_| r.beats_fgd()),
            })
            .collect(),
        runs: runs
            .iter()
            .map(|r| JsonRun {
                policy: r.policy.as_str(),
                pods_file: &r.pods_file,
                seed: r.seed,
                unallocated_gpu_pct_at_100: r.unallocated_at(100),
                unallocated_gpu_pct_at_130: r.unallocated_at(130),
                wall_seconds: r.wall_seconds,
                pods_arrived: r.pods_arrived,
                pods_failed: r.pods_failed,
                allocation_curve: &r.curves.allocation,
                frag_amount_curve: &r.curves.frag_amount,
                frag_ratio_curve: &r.curves.frag_ratio,
            })
            .collect(),
    };
    serde_json::to_string_pretty(&report)
}

/// Mean allocation curve over seeds for one trace and policy.
fn mean_curve(runs: &[&RunResult]) -> Vec<(f64, f64)> {
    (0..BUCKETS)
        .filter_map(|r| {
            let values: Vec<f64> = runs
                .iter()
                .filter_map(|run| run.curves.allocation[r])
                .collect();
            (!values.is_empty())
                .then(|| (r as f64, values.iter().sum::<f64>() / values.len() as f64))
        })
        .collect()
}

/// One panel per trace: GPU allocation ratio against arrived workload, a line per policy.
/// `bounds`: per trace (workload name), points (arrived %, allocation %) of the
/// upper bound any placement could reach, drawn as a dashed line; may be empty.
pub fn svg(
    path: &Path,
    runs: &[RunResult],
    bounds: &[(String, Vec<(f64, f64)>)],
) -> Result<(), Box<dyn std::error::Error>> {
    let mut traces: Vec<&str> = Vec::new();
    for r in runs {
        if !traces.contains(&r.workload.as_str()) {
            traces.push(&r.workload);
        }
    }
    // Two panels per trace: the whole run, and the end where policies differ.
    let rows = traces.len().max(1);
    let root = SVGBackend::new(path, (1200, 440 * rows as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((rows, 1));
    for (panel, trace) in panels.iter().zip(&traces) {
        let group_of = |policy| -> Vec<&RunResult> {
            runs.iter()
                .filter(|r| r.workload == *trace && r.policy == policy)
                .collect()
        };
        let mut policies: Vec<_> = runs
            .iter()
            .filter(|r| r.workload == *trace)
            .map(|r| r.policy)
            .collect();
        policies.sort();
        policies.dedup();
        let curves: Vec<_> = policies
            .iter()
            .map(|p| (*p, mean_curve(&group_of(*p))))
            .collect();
        let zoom_floor = curves
            .iter()
            .flat_map(|(_, c)| c.iter().filter(|(x, _)| *x >= 80.0).map(|(_, y)| *y))
            .fold(100.0f64, f64::min);
        let zoom_floor = (zoom_floor - 2.0).floor().max(0.0);
        let (left, right) = panel.split_horizontally(600);
        for (area, x_range, y_range, title) in [
            (
                &left,
                0f64..130f64,
                0f64..100f64,
                format!("{trace}: GPU allocation vs arrived workload"),
            ),
            (
                &right,
                70f64..130f64,
                zoom_floor..100f64,
                "the end of the run, where policies differ".to_string(),
            ),
        ] {
            let mut chart = ChartBuilder::on(area)
                .caption(title, ("sans-serif", 16))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(48)
                .build_cartesian_2d(x_range.clone(), y_range.clone())?;
            chart
                .configure_mesh()
                .x_desc("arrived workload (% of cluster GPU capacity)")
                .y_desc("GPU allocation (%)")
                .draw()?;
            for (i, (policy, curve)) in curves.iter().enumerate() {
                let color = Palette99::pick(i).to_rgba();
                let at100: Vec<f64> = group_of(*policy)
                    .iter()
                    .filter_map(|r| r.unallocated_at(100))
                    .collect();
                let label = if at100.is_empty() {
                    policy.to_string()
                } else {
                    format!(
                        "{policy} ({:.2}% idle at 100%)",
                        at100.iter().sum::<f64>() / at100.len() as f64
                    )
                };
                let points = curve
                    .iter()
                    .copied()
                    .filter(|(x, y)| x_range.contains(x) && *y >= y_range.start);
                chart
                    .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                    .label(label)
                    .legend(legend_line(color.stroke_width(2)));
            }
            if let Some((_, bound)) = bounds.iter().find(|(w, _)| w == *trace) {
                let points: Vec<(f64, f64)> = bound
                    .iter()
                    .copied()
                    .filter(|(x, y)| x_range.contains(x) && *y >= y_range.start)
                    .collect();
                let style = BLACK.stroke_width(1);
                chart
                    .draw_series(DashedLineSeries::new(points, 6, 4, style))?
                    .label("upper bound, any placement")
                    .legend(legend_line(style));
            }
            draw_legend(&mut chart, SeriesLabelPosition::LowerRight)?;
        }
    }
    root.present()?;
    Ok(())
}
