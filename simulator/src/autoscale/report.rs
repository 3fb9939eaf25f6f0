//! What `phalanx-sim autoscale` shows: a table with the targets checked,
//! JSON for scripts, and an SVG of load and replicas over time.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use super::run::{RunResult, Scenario};
use super::trace::Request;
use crate::report::{draw_legend, legend_line};

/// The comparison, one row per autoscaler, then the targets for Phalanx.
pub fn table(results: &[RunResult], control_period_seconds: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<8} {:>8} {:>9} {:>7} {:>8} {:>14} {:>10} {:>10} {:>10} {:>9} {:>9} {:>5} {:>7}",
        "scaler",
        "SLO %",
        "GPU-h",
        "vs hpa",
        "changes",
        "reversals(own)",
        "rev(300s)",
        "1st up s",
        "(instant)",
        "mean w s",
        "p99 w s",
        "peak",
        "cap-lim"
    );
    let hpa_gpu = results
        .iter()
        .find(|r| r.autoscaler == "hpa")
        .map(|r| r.gpu_hours);
    for r in results {
        let vs = hpa_gpu.map_or("-".to_string(), |h| {
            format!("{:.1}%", 100.0 * r.gpu_hours / h)
        });
        let first = r
            .first_scale_up_delay_seconds
            .map_or("-".to_string(), |d| format!("{d:.1}"));
        let first_instant = r
            .first_scale_up_delay_instant_seconds
            .map_or("-".to_string(), |d| format!("{d:.1}"));
        let _ = writeln!(
            out,
            "{:<8} {:>8.2} {:>9.2} {:>7} {:>8} {:>14} {:>10} {:>10} {:>10} {:>9.2} {:>9.2} {:>5} {:>7}",
            r.autoscaler,
            100.0 * r.slo_attainment,
            r.gpu_hours,
            vs,
            r.replica_changes,
            format!(
                "{} ({:.0}s)",
                r.reversals_within_window, r.reversal_window_seconds
            ),
            r.reversals_within_common_window,
            first,
            first_instant,
            r.mean_queue_seconds,
            r.p99_queue_seconds,
            r.peak_replicas,
            r.capacity_limited_decisions
        );
    }
    for r in results
        .iter()
        .filter(|r| r.timeline.first().is_some_and(|t| t.1 == 0))
    {
        // KEDA's default minReplicaCount is 0: its "first scale-up" is the
        // activation to one replica, not an answer to load above the target.
        let _ = writeln!(
            out,
            "  ({} starts at 0 replicas: any request is above its target, so its 1st up is the activation to 1 at the first poll)",
            r.autoscaler
        );
    }
    if let (Some(p), Some(h)) = (
        results.iter().find(|r| r.autoscaler == "phalanx"),
        results.iter().find(|r| r.autoscaler == "hpa"),
    ) {
        let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
        let _ = writeln!(out, "\ntargets (issue 6):");
        let _ = writeln!(
            out,
            "  SLO attainment >= hpa:                {} ({:.2} % vs {:.2} %)",
            verdict(p.slo_attainment >= h.slo_attainment),
            100.0 * p.slo_attainment,
            100.0 * h.slo_attainment
        );
        let ratio = p.gpu_hours / h.gpu_hours;
        let _ = writeln!(
            out,
            "  GPU-hours <= 90 % of hpa:             {} ({:.1} %)",
            verdict(ratio <= 0.9),
            100.0 * ratio
        );
        let _ = writeln!(
            out,
            "  no reversal within its window:        {} ({} within {:.0} s, {} within 300 s)",
            verdict(p.reversals_within_window == 0),
            p.reversals_within_window,
            p.reversal_window_seconds,
            p.reversals_within_common_window
        );
        let first_ok = p
            .first_scale_up_delay_seconds
            .is_some_and(|d| d <= control_period_seconds);
        let _ = writeln!(
            out,
            "  first scale-up within one period:     {} ({} s after the 1-minute load crossed its target at {} s; period {control_period_seconds} s)",
            verdict(first_ok),
            p.first_scale_up_delay_seconds
                .map_or("-".into(), |d| format!("{d:.1}")),
            p.load_first_crossed_seconds
                .map_or("-".into(), |d| format!("{d:.1}")),
        );
        let _ = writeln!(
            out,
            "    (from the first instant in flight exceeded the target, at {} s: {} s)",
            p.load_first_crossed_instant_seconds
                .map_or("-".into(), |d| format!("{d:.1}")),
            p.first_scale_up_delay_instant_seconds
                .map_or("-".into(), |d| format!("{d:.1}")),
        );
    }
    out
}

#[derive(Serialize)]
struct SummaryRow<'a> {
    autoscaler: &'a str,
    slo_attainment: f64,
    gpu_hours: f64,
    replica_changes: u32,
    reversals_within_window: u32,
    first_scale_up_delay_seconds: Option<f64>,
}

#[derive(Serialize)]
struct DetailRow<'a> {
    autoscaler: &'a str,
    reversal_window_seconds: f64,
    reversals_within_common_window: u32,
    load_first_crossed_seconds: Option<f64>,
    first_scale_up_delay_instant_seconds: Option<f64>,
    load_first_crossed_instant_seconds: Option<f64>,
    capacity_limited_decisions: u32,
    mean_queue_seconds: f64,
    /// `null` when some request never started.
    p99_queue_seconds: Option<f64>,
    peak_replicas: u32,
    timeline: &'a [(f64, u32)],
}

#[derive(Serialize)]
struct ScenarioJson<'a> {
    trace: &'a str,
    requests: usize,
    #[serde(flatten)]
    setup: SetupJson,
}

/// The scenario as JSON: the replica model, the objective and the metric setup.
#[derive(Debug, Serialize)]
pub struct SetupJson {
    slots_per_replica: u32,
    prefill_tokens_per_second: f64,
    decode_tokens_per_second: f64,
    cold_start_seconds: f64,
    gpus_per_replica: u32,
    cluster_gpus: u32,
    slo_queue_seconds: f64,
    target_in_flight_per_replica: f64,
    scrape_interval_seconds: f64,
    query_window_seconds: f64,
    common_reversal_window_seconds: f64,
}

impl SetupJson {
    pub fn new(scenario: &Scenario) -> Self {
        let s = &scenario.serving;
        SetupJson {
            slots_per_replica: s.slots,
            prefill_tokens_per_second: s.prefill_tokens_per_second,
            decode_tokens_per_second: s.decode_tokens_per_second,
            cold_start_seconds: s.cold_start_seconds,
            gpus_per_replica: s.gpus_per_replica,
            cluster_gpus: s.cluster_gpus,
            slo_queue_seconds: scenario.slo_queue_seconds,
            target_in_flight_per_replica: scenario.target_in_flight_per_replica,
            scrape_interval_seconds: scenario.scrape_interval.as_secs_f64(),
            query_window_seconds: scenario.query_window.as_secs_f64(),
            common_reversal_window_seconds: scenario.common_reversal_window.as_secs_f64(),
        }
    }
}

#[derive(Serialize)]
struct Report<'a> {
    summary: Vec<SummaryRow<'a>>,
    scenario: ScenarioJson<'a>,
    details: Vec<DetailRow<'a>>,
}

/// `{"summary": [...], "scenario": {...}, "details": [...]}`.
pub fn json(
    results: &[RunResult],
    scenario: &Scenario,
    trace_name: &str,
    requests: usize,
) -> serde_json::Result<String> {
    let report = Report {
        summary: results
            .iter()
            .map(|r| SummaryRow {
                autoscaler: r.autoscaler,
                slo_attainment: r.slo_attainment,
                gpu_hours: r.gpu_hours,
                replica_changes: r.replica_changes,
                reversals_within_window: r.reversals_within_window,
                first_scale_up_delay_seconds: r.first_scale_up_delay_seconds,
            })
            .collect(),
        scenario: ScenarioJson {
            trace: trace_name,
            requests,
            setup: SetupJson::new(scenario),
        },
        details: results
            .iter()
            .map(|r| DetailRow {
                autoscaler: r.autoscaler,
                reversal_window_seconds: r.reversal_window_seconds,
                reversals_within_common_window: r.reversals_within_common_window,
                load_first_crossed_seconds: r.load_first_crossed_seconds,
                first_scale_up_delay_instant_seconds: r.first_scale_up_delay_instant_seconds,
                load_first_crossed_instant_seconds: r.load_first_crossed_instant_seconds,
                capacity_limited_decisions: r.capacity_limited_decisions,
                mean_queue_seconds: r.mean_queue_seconds,
                p99_queue_seconds: r
                    .p99_queue_seconds
                    .is_finite()
                    .then_some(r.p99_queue_seconds),
                peak_replicas: r.peak_replicas,
                timeline: &r.timeline,
            })
            .collect(),
    };
    serde_json::to_string_pretty(&report)
}

/// The offered load as replicas needed at the target: per 10 s bin, the slot
/// time that bin's arrivals need (Little's law), over the target per replica.
/// Where a plot's time axis ends, in minutes: the last replica change or the
/// last point of the load, whichever is later (at least one minute).
pub fn end_minutes(results: &[RunResult], load: &[(f64, f64)]) -> f64 {
    results
        .iter()
        .flat_map(|r| r.timeline.last().map(|(t, _)| t / 60.0))
        .chain(load.last().map(|(t, _)| *t))
        .fold(1.0f64, f64::max)
}

pub fn load_in_replicas(requests: &[Request], scenario: &Scenario) -> Vec<(f64, f64)> {
    const BIN: f64 = 10.0;
    let end = requests.last().map_or(0.0, |r| r.arrival);
    let bins = (end / BIN).floor() as usize + 1;
    let mut work = vec![0.0; bins];
    for r in requests {
        let bin = ((r.arrival / BIN).floor() as usize).min(bins - 1);
        work[bin] += scenario.serving.service_micros(r) as f64 / 1e6;
    }
    work.iter()
        .enumerate()
        .map(|(i, w)| {
            (
                (i as f64 + 0.5) * BIN / 60.0,
                w / BIN / scenario.target_in_flight_per_replica,
            )
        })
        .collect()
}

/// The colour of the `i`-th autoscaler's series in every autoscale plot.
pub fn scaler_colour(i: usize) -> RGBColor {
    // Phalanx, the HPA, KEDA, then the suite's oracle in grey.
    const COLOURS: [RGBColor; 4] = [
        RGBColor(214, 39, 40),
        RGBColor(31, 119, 180),
        RGBColor(44, 160, 44),
        RGBColor(127, 127, 127),
    ];
    COLOURS[i % COLOURS.len()]
}

/// The legend of an autoscaler's replica line: its name and what it achieved.
pub fn replica_legend(r: &RunResult) -> String {
    format!(
        "{}: SLO {:.1} %, {:.2} GPU-h, {} changes",
        r.autoscaler,
        100.0 * r.slo_attainment,
        r.gpu_hours,
        r.replica_changes
    )
}

/// `spec.replicas` over time as (minutes, replicas) corners of a step line: a
/// value holds until the next change.
pub fn replica_steps(timeline: &[(f64, u32)]) -> Vec<(f64, f64)> {
    let mut steps = Vec::with_capacity(timeline.len() * 2);
    for (j, &(t, n)) in timeline.iter().enumerate() {
        if j > 0 {
            steps.push((t / 60.0, f64::from(timeline[j - 1].1)));
        }
        steps.push((t / 60.0, f64::from(n)));
    }
    steps
}

/// Load and replicas over time, one line per autoscaler.
pub fn svg(
    path: &Path,
    results: &[RunResult],
    load: &[(f64, f64)],
    title: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1200, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let end_min = end_minutes(results, load);
    let top = results
        .iter()
        .flat_map(|r| r.timeline.iter().map(|(_, n)| f64::from(*n)))
        .chain(load.iter().map(|(_, y)| *y))
        .fold(1.0f64, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..end_min, 0f64..top)?;
    chart
        .configure_mesh()
        .x_desc("time (minutes)")
        .y_desc("replicas")
        .draw()?;
    let grey = RGBColor(150, 150, 150);
    chart
        .draw_series(LineSeries::new(load.iter().copied(), grey.stroke_width(1)))?
        .label("load: replicas needed at the target (10 s bins)")
        .legend(legend_line(grey.stroke_width(1)));
    for (i, r) in results.iter().enumerate() {
        let colour = scaler_colour(i);
        let steps = replica_steps(&r.timeline);
        chart
            .draw_series(LineSeries::new(steps, colour.stroke_width(2)))?
            .label(replica_legend(r))
            .legend(legend_line(colour.stroke_width(2)));
    }
    draw_legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    root.present()?;
    Ok(())
}
