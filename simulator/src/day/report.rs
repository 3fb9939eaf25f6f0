//! The day's comparison: a table for people, JSON for scripts, SVG plots.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde::Serialize;

use super::metrics::DayResult;
use super::tenants::QueueTerms;
use super::workload::DayConfig;
use crate::report::{draw_legend, legend_line};

/// Seconds as the table shows them.
pub fn duration(s: u64) -> String {
    match s {
        0..=119 => format!("{s}s"),
        120..=7_199 => format!("{:.1}m", s as f64 / 60.0),
        _ => format!("{:.1}h", s as f64 / 3600.0),
    }
}

/// One row per policy, then one per queue of it.
pub fn table(results: &[DayResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<14} {:>7} {:>8} {:>8} {:>7} {:>9} {:>9} {:>8} {:>8} {:>10} {:>7} {:>7}",
        "policy",
        "alloc%",
        "p50",
        "p99",
        "dev%",
        "below-g",
        "reclaim",
        "preempt",
        "GPU-h",
        "gang-max",
        "unplcd",
        "s"
    );
    for r in results {
        let longest_below = r
            .queues
            .iter()
            .map(|q| q.longest_below_guarantee_s)
            .max()
            .unwrap_or(0);
        let longest_reclaimable = r
            .queues
            .iter()
            .map(|q| q.longest_below_while_others_borrow_s)
            .max()
            .unwrap_or(0);
        let deviation: f64 = r.queues.iter().map(|q| q.deviation_avg_pct).sum();
        let _ = writeln!(
            out,
            "{:<14} {:>7.2} {:>8} {:>8} {:>7.2} {:>9} {:>9} {:>8} {:>8.1} {:>10} {:>7} {:>7.2}",
            r.policy,
            r.allocation_avg_pct,
            duration(r.wait_p50_s),
            duration(r.wait_p99_s),
            deviation,
            duration(longest_below),
            duration(longest_reclaimable),
            r.preempted_pods,
            r.gpu_hours_lost,
            r.large_gang_longest_wait_s
                .map_or_else(|| "-".into(), duration),
            r.never_placed,
            r.wall_seconds
        );
        for q in &r.queues {
            let _ = writeln!(
                out,
                "  {:<12} {:>7} {:>8} {:>8} {:>7.2} {:>9} {:>9}",
                q.name,
                "",
                duration(q.wait_p50_s),
                duration(q.wait_p99_s),
                q.deviation_avg_pct,
                duration(q.longest_below_guarantee_s),
                duration(q.longest_below_while_others_borrow_s),
            );
        }
    }
    out
}

#[derive(Serialize)]
struct JsonReport<'a> {
    pods_file: &'a str,
    nodes_file: &'a str,
    config: &'a DayConfig,
    capacity_gpus: f64,
    queues: &'a [QueueTerms],
    results: &'a [DayResult],
}

pub fn json(
    results: &[DayResult],
    queues: &[QueueTerms],
    config: &DayConfig,
    capacity_milli: u64,
    pods_file: &str,
    nodes_file: &str,
) -> serde_json::Result<String> {
    serde_json::to_string_pretty(&JsonReport {
        pods_file,
        nodes_file,
        config,
        capacity_gpus: capacity_milli as f64 / 1000.0,
        queues,
        results,
    })
}

type PlotResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Writes `day-allocation.svg` (GPU allocation over time, a line per policy)
/// and `day-share-deviation.svg` (a panel per policy, a line per queue) into
/// `dir`; returns their paths.
pub fn svg(dir: &Path, results: &[DayResult]) -> PlotResult<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let allocation = dir.join("day-allocation.svg");
    draw_allocation(&allocation, results)?;
    let deviation = dir.join("day-share-deviation.svg");
    draw_deviation(&deviation, results)?;
    Ok(vec![allocation, deviation])
}

fn hours(results: &[DayResult]) -> f64 {
    results
        .iter()
        .flat_map(|r| r.allocation_curve.last().map(|p| p.0))
        .fold(0.0, f64::max)
        .max(1e-3)
}

fn draw_allocation(path: &Path, results: &[DayResult]) -> PlotResult<()> {
    let root = SVGBackend::new(path, (1000, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("cluster day: GPU allocation over time", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(0f64..hours(results), 0f64..100f64)?;
    chart
        .configure_mesh()
        .x_desc("time since the first arrival (h)")
        .y_desc("GPU allocated (% of cluster)")
        .draw()?;
    for (i, r) in results.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                r.allocation_curve.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(format!(
                "{} ({:.1}% on average)",
                r.policy, r.allocation_avg_pct
            ))
            .legend(legend_line(color.stroke_width(2)));
    }
    draw_legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    root.present()?;
    Ok(())
}

fn draw_deviation(path: &Path, results: &[DayResult]) -> PlotResult<()> {
    let rows = results.len().max(1);
    let root = SVGBackend::new(path, (1000, 320 * rows as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let top = results
        .iter()
        .flat_map(|r| &r.queues)
        .flat_map(|q| q.deviation_curve.iter().map(|p| p.1))
        .fold(1.0f64, f64::max)
        .ceil();
    for (panel, r) in root.split_evenly((rows, 1)).iter().zip(results) {
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!("{}: below deserved share, per queue", r.policy),
                ("sans-serif", 16),
            )
            .margin(10)
            .x_label_area_size(32)
            .y_label_area_size(48)
            .build_cartesian_2d(0f64..hours(results), 0f64..top)?;
        chart
            .configure_mesh()
            .x_desc("time since the first arrival (h)")
            .y_desc("% of cluster GPUs")
            .draw()?;
        for (i, q) in r.queues.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    q.deviation_curve.iter().copied(),
                    color.stroke_width(2),
                ))?
                .label(format!(
                    "{} ({:.2}% on average)",
                    q.name, q.deviation_avg_pct
                ))
                .legend(legend_line(color.stroke_width(2)));
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    }
    root.present()?;
    Ok(())
}
