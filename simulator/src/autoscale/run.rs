//! One replay of a trace under one autoscaler, and what it measured.

use std::collections::VecDeque;
use std::time::Duration;

use super::cluster::{micros, Cluster, ServingModel, US};
use super::prometheus::Prometheus;
use super::scaler::{Autoscaler, TargetView};
use super::trace::Request;
use super::waits::{by_arrival, WaitBucket, WAIT_BUCKET_SECONDS};

/// The cluster, the workload's service objective and the shared metric setup.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub serving: ServingModel,
    /// A request meets the objective when it waits less than this for a slot.
    pub slo_queue_seconds: f64,
    /// The metric target every autoscaler uses: requests in flight per replica.
    pub target_in_flight_per_replica: f64,
    /// Prometheus scrapes the in-flight series this often (all autoscalers alike).
    pub scrape_interval: Duration,
    /// The window of the baselines' `avg_over_time` query.
    pub query_window: Duration,
    /// After the last arrival the run goes on this long so queued requests can start.
    pub drain: Duration,
    /// Reversals closer than this are also counted for every autoscaler alike.
    pub common_reversal_window: Duration,
    /// Every autoscaler starts with the replicas the first [`WARM_START_SPAN`] of
    /// the load needs at the common target, as a service that has been running
    /// would (`false`: each starts at its own minimum).
    pub warm_start: bool,
    /// Spans (from, until) in which Prometheus scrapes nothing: a monitoring
    /// outage, during which every series ages.
    pub scrape_outages: Vec<(Duration, Duration)>,
}

impl Scenario {
    /// The cluster, the replicas and the objective in one line, for headers.
    pub fn describe(&self) -> String {
        let s = &self.serving;
        format!(
            "{} GPUs, {} per replica (at most {} replicas); {} slots, {:.0} prefill + {:.0} \
             decode tokens/s, a KV cache of {} tokens per replica; cold start {:.0} s; \
             objective: wait < {} s; target {} in flight per replica{}",
            s.cluster_gpus,
            s.gpus_per_replica,
            s.replica_capacity(),
            s.slots,
            s.prefill_tokens_per_second,
            s.decode_tokens_per_second,
            s.kv_cache_tokens,
            s.cold_start_seconds,
            self.slo_queue_seconds,
            self.target_in_flight_per_replica,
            if self.warm_start { "; warm start" } else { "" },
        )
    }
}

/// What one run measured.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RunResult {
    pub autoscaler: &'static str,
    /// Share of requests that waited less than the objective (never started: missed).
    pub slo_attainment: f64,
    /// GPU time held by replicas (starting, serving, draining) up to the last arrival.
    pub gpu_hours: f64,
    /// Applied changes of `spec.replicas`.
    pub replica_changes: u32,
    /// Consecutive changes in opposite directions closer than the autoscaler's own
    /// scale-down stabilisation window.
    pub reversals_within_window: u32,
    pub reversal_window_seconds: f64,
    /// The same, within the scenario's common window.
    pub reversals_within_common_window: u32,
    /// From the load first exceeding its target to the autoscaler's first
    /// scale-up decision (0 when it decided before). The load is the mean of
    /// requests in flight over the trailing minute (sampled every second), and it
    /// exceeds its target when above target x (1 + the HPA's tolerance 0.1) per
    /// replica: within the tolerance no autoscaler is meant to act, and a single
    /// instant of a queue is noise, not load.
    pub first_scale_up_delay_seconds: Option<f64>,
    pub load_first_crossed_seconds: Option<f64>,
    /// The same from the first instant the requests in flight exceed target x
    /// replicas (the strictest reading, dominated by noise).
    pub first_scale_up_delay_instant_seconds: Option<f64>,
    pub load_first_crossed_instant_seconds: Option<f64>,
    /// Decisions the GPU capacity cut short.
    pub capacity_limited_decisions: u32,
    pub mean_queue_seconds: f64,
    pub p99_queue_seconds: f64,
    pub peak_replicas: u32,
    /// (seconds, spec.replicas) after every applied change, starting at zero.
    pub timeline: Vec<(f64, u32)>,
    /// Queue waits of the requests arriving in each 30 s ([`WAIT_BUCKET_SECONDS`]).
    pub waits_by_arrival: Vec<WaitBucket>,
}

/// Replays `requests` under `autoscaler`. Deterministic: no randomness, integer time.
pub fn simulate(
    requests: &[Request],
    scenario: &Scenario,
    autoscaler: &mut dyn Autoscaler,
) -> RunResult {
    let arrivals: Vec<u64> = requests.iter().map(|r| micros(r.arrival)).collect();
    let horizon = arrivals.last().copied().unwrap_or(0).max(1);
    let end = horizon + scenario.drain.as_micros() as u64;
    let scrape = (scenario.scrape_interval.as_micros() as u64).max(US);
    let mut prometheus =
        Prometheus::new((scenario.query_window.as_micros() as u64).max(scrape) + scrape);
    let mut cluster = Cluster::new(
        scenario.serving.clone(),
        requests,
        if scenario.warm_start {
            warm_replicas(requests, scenario).max(autoscaler.initial_replicas())
        } else {
            autoscaler.initial_replicas()
        },
        horizon,
    );
    let target = scenario.target_in_flight_per_replica;
    let over_target = |c: &Cluster| {
        let spec = c.spec_replicas();
        f64::from(c.in_flight()) > target * f64::from(spec) || (spec == 0 && c.in_flight() > 0)
    };

    // The trailing minute of in flight, one sample a second.
    let mut minute: VecDeque<f64> = VecDeque::with_capacity(61);
    let mut crossed_smooth: Option<u64> = None;
    let mut next = 0usize;
    let mut crossed: Option<u64> = None;
    let mut first_up: Option<u64> = None;
    let mut changes: Vec<(u64, bool)> = Vec::new();
    let mut timeline = vec![(0.0, cluster.spec_replicas())];
    let mut capacity_limited = 0;
    let mut peak = cluster.spec_replicas();
    let mut now = 0u64;
    while now <= end {
        while next < arrivals.len() && arrivals[next] <= now {
            cluster.advance_to(arrivals[next]);
            cluster.arrive(next);
            if crossed.is_none() && over_target(&cluster) {
                crossed = Some(arrivals[next]);
            }
            next += 1;
        }
        cluster.advance_to(now);
        if crossed.is_none() && over_target(&cluster) {
            crossed = Some(now);
        }
        if minute.len() == 60 {
            minute.pop_front();
        }
        minute.push_back(f64::from(cluster.in_flight()));
        let load = minute.iter().sum::<f64>() / minute.len() as f64;
        let spec_now = f64::from(cluster.spec_replicas());
        if crossed_smooth.is_none()
            && (load > target * (1.0 + SMOOTH_TOLERANCE) * spec_now
                || (spec_now == 0.0 && load > 0.0))
        {
            crossed_smooth = Some(now);
        }
        let in_outage = scenario.scrape_outages.iter().any(|(from, until)| {
            (from.as_micros() as u64..until.as_micros() as u64).contains(&now)
        });
        if now.is_multiple_of(scrape) && !in_outage {
            prometheus.scrape(now, cluster.scrape());
        }
        let spec = cluster.spec_replicas();
        let view = TargetView {
            now,
            spec_replicas: spec,
            ready_replicas: cluster.ready_replicas(),
        };
        if let Some(desired) = autoscaler.tick(&view, &prometheus) {
            if desired > spec && first_up.is_none() {
                first_up = Some(now);
            }
            let applied = cluster.scale_to(desired);
            if applied < desired {
                capacity_limited += 1;
            }
            if applied != spec {
                autoscaler.applied(now, spec, applied);
                changes.push((now, applied > spec));
                timeline.push((now as f64 / US as f64, applied));
                peak = peak.max(applied);
            }
        }
        now += US;
    }
    timeline.push((end as f64 / US as f64, cluster.spec_replicas()));

    let waits: Vec<Option<f64>> = cluster
        .started()
        .iter()
        .zip(&arrivals)
        .map(|(start, arrival)| start.map(|s| (s - arrival) as f64 / US as f64))
        .collect();
    let met = waits
        .iter()
        .filter(|w| w.is_some_and(|w| w < scenario.slo_queue_seconds))
        .count();
    let mut started: Vec<f64> = waits.iter().flatten().copied().collect();
    started.sort_by(f64::total_cmp);
    let mean_queue_seconds = if started.is_empty() {
        0.0
    } else {
        started.iter().sum::<f64>() / started.len() as f64
    };
    let p99_queue_seconds = if waits.iter().any(Option::is_none) {
        f64::INFINITY
    } else {
        started
            .get(((started.len() as f64 * 0.99).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(0.0)
    };
    let own_window = autoscaler.stabilization_window();
    RunResult {
        autoscaler: autoscaler.name(),
        slo_attainment: met as f64 / requests.len().max(1) as f64,
        gpu_hours: cluster.gpu_hours(),
        replica_changes: changes.len() as u32,
        reversals_within_window: reversals(&changes, own_window),
        reversal_window_seconds: own_window.as_secs_f64(),
        reversals_within_common_window: reversals(&changes, scenario.common_reversal_window),
        first_scale_up_delay_seconds: delay(crossed_smooth, first_up),
        load_first_crossed_seconds: crossed_smooth.map(|c| c as f64 / US as f64),
        first_scale_up_delay_instant_seconds: delay(crossed, first_up),
        load_first_crossed_instant_seconds: crossed.map(|c| c as f64 / US as f64),
        capacity_limited_decisions: capacity_limited,
        mean_queue_seconds,
        p99_queue_seconds,
        peak_replicas: peak,
        timeline,
        waits_by_arrival: by_arrival(requests, &waits, WAIT_BUCKET_SECONDS),
    }
}

/// How much of the load's beginning sizes a warm start.
pub const WARM_START_SPAN: f64 = 300.0;

/// The replicas the first [`WARM_START_SPAN`] of the load needs at the common
/// target: its requests' slot time over the span (the mean in flight, by
/// Little's law) over the target per replica, rounded up.
pub fn warm_replicas(requests: &[Request], scenario: &Scenario) -> u32 {
    let slot_seconds: f64 = requests
        .iter()
        .take_while(|r| r.arrival < WARM_START_SPAN)
        .map(|r| scenario.serving.service_micros(r) as f64 / US as f64)
        .sum();
    let in_flight = slot_seconds / WARM_START_SPAN;
    (in_flight / scenario.target_in_flight_per_replica).ceil() as u32
}

/// The tolerance within which the load counts as at its target (the HPA's default).
const SMOOTH_TOLERANCE: f64 = 0.1;

/// Seconds from the crossing to the first scale-up decision; 0 if it came first.
fn delay(crossed: Option<u64>, first_up: Option<u64>) -> Option<f64> {
    match (crossed, first_up) {
        (Some(c), Some(u)) => Some(u.saturating_sub(c) as f64 / US as f64),
        _ => None,
    }
}

/// Consecutive changes in opposite directions less than `window` apart.
pub fn reversals(changes: &[(u64, bool)], window: Duration) -> u32 {
    let window = window.as_micros() as u64;
    changes
        .windows(2)
        .filter(|pair| pair[0].1 != pair[1].1 && pair[1].0 - pair[0].0 < window)
        .count() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reversals_count_only_opposite_neighbours_inside_the_window() {
        let s = US;
        let changes = [
            (0, true),
            (10 * s, true),
            (100 * s, false),
            (500 * s, true),
            (510 * s, false),
        ];
        assert_eq!(reversals(&changes, Duration::from_secs(300)), 2);
        assert_eq!(reversals(&changes, Duration::from_secs(20)), 1);
        assert_eq!(reversals(&changes, Duration::ZERO), 0);
    }
}
