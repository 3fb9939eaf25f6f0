//! What `phalanx-sim autoscale --suite` shows: the loads, one table of every
//! load x autoscaler with Phalanx's verdict per load, JSON of every run, and per
//! load an SVG of replicas, demand and queue wait over time.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde::Serialize;

use super::report::{
    end_minutes, load_in_replicas, replica_legend, replica_steps, scaler_colour, SetupJson,
};
use super::run::{RunResult, Scenario};
use super::suite::{LoadOutcome, SuiteLoad, Verdict};
use crate::report::{draw_legend, legend_line};

/// The loads: name, requests, span, shape and rates, and what a generated
/// load's peak needs at the target.
pub fn loads_table(loads: &[SuiteLoad], scenario: &Scenario) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:>8} {:>6}  {:>9}  shape and rates",
        "load", "requests", "min", "peak need"
    );
    for load in loads {
        let span = load.requests.last().map_or(0.0, |r| r.arrival) / 60.0;
        let need = load.peak_replicas_needed.map_or("-".to_string(), |n| {
            format!("{n:.1}/{}", scenario.serving.replica_capacity())
        });
        let _ = writeln!(
            out,
            "{:<16} {:>8} {:>6.1}  {:>9}  {}",
            load.name,
            load.requests.len(),
            span,
            need,
            load.about
        );
    }
    out
}

/// One row per load x autoscaler, then per load Phalanx's verdict, then the count
/// of loads on which it met every target.
pub fn table(outcomes: &[LoadOutcome], control_period_seconds: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:<8} {:>7} {:>8} {:>7} {:>14} {:>9} {:>9} {:>5}",
        "load",
        "scaler",
        "SLO %",
        "GPU-h",
        "vs hpa",
        "reversals(own)",
        "1st up s",
        "p99 w s",
        "peak"
    );
    for outcome in outcomes {
        let hpa_gpu = outcome
            .results
            .iter()
            .find(|r| r.autoscaler == "hpa")
            .map(|r| r.gpu_hours);
        for (i, r) in outcome.results.iter().enumerate() {
            let load = if i == 0 {
                outcome.load.name.as_str()
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "{:<16} {:<8} {:>7.2} {:>8.2} {:>7} {:>14} {:>9} {:>9.2} {:>5}",
                load,
                r.autoscaler,
                100.0 * r.slo_attainment,
                r.gpu_hours,
                hpa_gpu.map_or("-".to_string(), |h| format!(
                    "{:.1}%",
                    100.0 * r.gpu_hours / h
                )),
                format!(
                    "{} ({:.0}s)",
                    r.reversals_within_window, r.reversal_window_seconds
                ),
                r.first_scale_up_delay_seconds
                    .map_or("-".to_string(), |d| format!("{d:.1}")),
                r.p99_queue_seconds,
                r.peak_replicas
            );
        }
        match &outcome.verdict {
            Some(v) => {
                let _ = writeln!(
                    out,
                    "  phalanx: {}",
                    verdict_line(v, control_period_seconds)
                );
            }
            None => {
                let _ = writeln!(out, "  phalanx: no verdict (phalanx, hpa or keda missing)");
            }
        }
    }
    let met = outcomes
        .iter()
        .filter(|o| o.verdict.as_ref().is_some_and(Verdict::all_met))
        .count();
    let _ = writeln!(out, "\ntargets met on {met} of {} loads", outcomes.len());
    out
}

fn verdict_line(v: &Verdict, control_period_seconds: f64) -> String {
    let mark = |met: bool| if met { "met" } else { "MISSED" };
    let met = v.checks().iter().filter(|c| c.met).count();
    format!(
        "SLO >= max(hpa, keda) {} ({}); GPU-h <= 90 % of hpa {} ({}); no reversal in own window {} ({}); 1st up <= {control_period_seconds} s {} ({}) => {met}/4",
        mark(v.slo_at_least_best_baseline.met),
        v.slo_at_least_best_baseline.detail,
        mark(v.gpu_hours_within_90_percent_of_hpa.met),
        v.gpu_hours_within_90_percent_of_hpa.detail,
        mark(v.no_reversal_in_own_window.met),
        v.no_reversal_in_own_window.detail,
        mark(v.first_scale_up_within_one_period.met),
        v.first_scale_up_within_one_period.detail,
    )
}

#[derive(Serialize)]
struct LoadJson<'a> {
    name: &'a str,
    about: &'a str,
    requests: usize,
    peak_replicas_needed: Option<f64>,
    targets_met: Option<bool>,
    verdict: Option<&'a Verdict>,
    results: &'a [RunResult],
}

#[derive(Serialize)]
struct SuiteJson<'a> {
    seed: u64,
    control_period_seconds: f64,
    scenario: SetupJson,
    loads_with_targets_met: usize,
    loads: Vec<LoadJson<'a>>,
}

/// `{"seed", "control_period_seconds", "scenario", "loads_with_targets_met",
/// "loads": [{name, about, requests, verdict, results: [every RunResult]}]}`.
pub fn json(
    outcomes: &[LoadOutcome],
    scenario: &Scenario,
    seed: u64,
    control_period_seconds: f64,
) -> serde_json::Result<String> {
    let loads: Vec<LoadJson> = outcomes
        .iter()
        .map(|o| LoadJson {
            name: &o.load.name,
            about: &o.load.about,
            requests: o.load.requests.len(),
            peak_replicas_needed: o.load.peak_replicas_needed,
            targets_met: o.verdict.as_ref().map(Verdict::all_met),
            verdict: o.verdict.as_ref(),
            results: &o.results,
        })
        .collect();
    serde_json::to_string_pretty(&SuiteJson {
        seed,
        control_period_seconds,
        scenario: SetupJson::new(scenario),
        loads_with_targets_met: loads.iter().filter(|l| l.targets_met == Some(true)).count(),
        loads,
    })
}

/// One SVG per load in `dir` (`suite-<load>.svg`), created if missing; the paths
/// written.
pub fn svgs(
    dir: &Path,
    outcomes: &[LoadOutcome],
    scenario: &Scenario,
) -> Result<Vec<PathBuf>, Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let mut paths = Vec::new();
    for outcome in outcomes {
        let file: String = outcome
            .load
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = dir.join(format!("suite-{file}.svg"));
        svg(&path, outcome, scenario)?;
        paths.push(path);
    }
    Ok(paths)
}

/// Three panels over one time axis: replicas per autoscaler, demand in replicas
/// at the target, and the p99 queue wait of the requests arriving in each 30 s.
pub fn svg(
    path: &Path,
    outcome: &LoadOutcome,
    scenario: &Scenario,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1200, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        &format!(
            "{}: replicas, demand and queue wait over time",
            outcome.load.name
        ),
        ("sans-serif", 18),
    )?;
    let panels = root.split_evenly((3, 1));
    let results = &outcome.results;
    let demand = load_in_replicas(&outcome.load.requests, scenario);
    let end_min = end_minutes(results, &demand);

    // Replicas.
    let top = results
        .iter()
        .flat_map(|r| r.timeline.iter().map(|(_, n)| f64::from(*n)))
        .fold(1.0f64, f64::max)
        * 1.15;
    let mut chart = panel(&panels[0], end_min, top, "spec.replicas")?;
    for (i, r) in results.iter().enumerate() {
        let colour = scaler_colour(i);
        chart
            .draw_series(LineSeries::new(
                replica_steps(&r.timeline),
                colour.stroke_width(2),
            ))?
            .label(replica_legend(r))
            .legend(legend_line(colour.stroke_width(2)));
    }
    draw_legend(&mut chart, SeriesLabelPosition::UpperRight)?;

    // Demand.
    let cluster = f64::from(scenario.serving.replica_capacity());
    let top = demand.iter().map(|(_, y)| *y).fold(cluster, f64::max) * 1.15;
    let mut chart = panel(&panels[1], end_min, top, "demand (replicas)")?;
    let grey = RGBColor(110, 110, 110);
    chart
        .draw_series(LineSeries::new(
            demand.iter().copied(),
            grey.stroke_width(1),
        ))?
        .label("replicas needed at the target (10 s bins)")
        .legend(legend_line(grey.stroke_width(1)));
    let black = BLACK.mix(0.6);
    chart
        .draw_series(LineSeries::new(
            [(0.0, cluster), (end_min, cluster)],
            black.stroke_width(1),
        ))?
        .label("the cluster's capacity")
        .legend(legend_line(black.stroke_width(1)));
    draw_legend(&mut chart, SeriesLabelPosition::UpperRight)?;

    // Queue wait.
    let waits: Vec<Vec<(f64, f64)>> = results
        .iter()
        .map(|r| {
            r.waits_by_arrival
                .iter()
                .filter_map(|b| {
                    b.p99_wait_seconds
                        .map(|w| ((b.start_seconds + 15.0) / 60.0, w))
                })
                .collect()
        })
        .collect();
    let top = waits
        .iter()
        .flatten()
        .map(|(_, w)| *w)
        .fold(scenario.slo_queue_seconds, f64::max)
        * 1.15;
    let mut chart = panel(&panels[2], end_min, top, "p99 queue wait (s)")?;
    for (i, (r, series)) in results.iter().zip(waits).enumerate() {
        let colour = scaler_colour(i);
        chart
            .draw_series(LineSeries::new(series, colour.stroke_width(2)))?
            .label(format!(
                "{}: p99 wait of arrivals per 30 s (run p99 {:.1} s)",
                r.autoscaler, r.p99_queue_seconds
            ))
            .legend(legend_line(colour.stroke_width(2)));
    }
    let slo = RGBColor(110, 110, 110);
    chart
        .draw_series(LineSeries::new(
            [
                (0.0, scenario.slo_queue_seconds),
                (end_min, scenario.slo_queue_seconds),
            ],
            slo.stroke_width(1),
        ))?
        .label(format!("objective: {} s", scenario.slo_queue_seconds))
        .legend(legend_line(slo.stroke_width(1)));
    draw_legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    root.present()?;
    Ok(())
}

type Panel<'a> = ChartContext<
    'a,
    SVGBackend<'a>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// One panel over [0, end_min] minutes with its y axis described; the time axis
/// is named once, on the bottom panel (they share it).
fn panel<'a>(
    area: &DrawingArea<SVGBackend<'a>, plotters::coord::Shift>,
    end_min: f64,
    top: f64,
    y_desc: &str,
) -> Result<Panel<'a>, Box<dyn std::error::Error>> {
    let mut chart = ChartBuilder::on(area)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..end_min, 0f64..top)?;
    let mut mesh = chart.configure_mesh();
    mesh.y_desc(y_desc);
    if y_desc.contains("wait") {
        mesh.x_desc("time (minutes)");
    }
    mesh.draw()?;
    Ok(chart)
}
