//! What a day is measured by.
//!
//! - **GPU allocation**: milli-GPU placed / cluster capacity, a step function
//!   of time, averaged over the arrival window `[0, last arrival]` (the same
//!   window for every policy) and sampled as a curve over it.
//! - **Wait** of a job: from its arrival to the placement it ran to the end
//!   from (an evicted job's wait includes its lost run and its second wait).
//!   A job still waiting when nothing more happens counts with its wait so
//!   far and is reported as never placed. Per queue and over all jobs, p50
//!   and p99 (nearest rank).
//! - **Deviation from deserved share**: per queue, `max(0, min(fair share,
//!   demand) − usage) / cluster GPUs`, with the fair share from the engine's
//!   `fair_shares` over the queues' terms and demand = usage + waiting; its
//!   time average over the window, and the longest stretch (over the whole
//!   day) in which a queue used less than `min(guarantee, demand)`.
//! - **Preemptions**: jobs and pods evicted, and the GPU-hours they had run
//!   (lost: an evicted pod starts again from scratch).
//! - **Large gangs**: the longest wait of an injected gang.

use std::collections::BTreeMap;

use phalanx_engine::queues::{fair_shares, QueueResource, QueueTree};
use serde::Serialize;

use super::state::{DayError, Preemptions};
use super::tenants::queue_tree;
use super::workload::{DayJob, DayWorkload};

/// Points each curve is sampled at over the window.
pub const CURVE_POINTS: usize = 240;

/// The per-queue amounts the recorder reads after each instant.
#[derive(Debug)]
pub struct QueueLevels<'a> {
    pub usage_milli: &'a [u64],
    pub waiting_milli: &'a [u64],
}

#[derive(Debug)]
pub struct DayRecorder {
    tree: QueueTree,
    capacity_milli: u64,
    window_s: u64,
    guaranteed: Vec<u64>,
    names: Vec<String>,
    last_s: u64,
    alloc_milli: u64,
    deviation: Vec<f64>,
    alloc_integral: f64,
    deviation_integral: Vec<f64>,
    below_since: Vec<Option<u64>>,
    longest_below_s: Vec<u64>,
    /// Below its guarantee while another queue used more than its own: room
    /// reclaim could have taken back.
    reclaimable_since: Vec<Option<u64>>,
    longest_reclaimable_s: Vec<u64>,
    alloc_points: Vec<(u64, f64)>,
    deviation_points: Vec<Vec<(u64, f64)>>,
    waits: Vec<Vec<u64>>,
    large_gang_waits: Vec<u64>,
    large_gangs_placed: usize,
    never_placed: usize,
}

impl DayRecorder {
    pub fn new(workload: &DayWorkload) -> Result<Self, DayError> {
        let tree = queue_tree(&workload.queues).map_err(|e| DayError::Config(e.to_string()))?;
        let n = workload.queues.len();
        Ok(DayRecorder {
            tree,
            capacity_milli: workload.capacity_milli.max(1),
            window_s: workload.window_s,
            guaranteed: workload.queues.iter().map(|q| q.guaranteed_milli).collect(),
            names: workload.queues.iter().map(|q| q.name.clone()).collect(),
            last_s: 0,
            alloc_milli: 0,
            deviation: vec![0.0; n],
            alloc_integral: 0.0,
            deviation_integral: vec![0.0; n],
            below_since: vec![None; n],
            longest_below_s: vec![0; n],
            reclaimable_since: vec![None; n],
            longest_reclaimable_s: vec![0; n],
            alloc_points: Vec::new(),
            deviation_points: vec![Vec::new(); n],
            waits: vec![Vec::new(); n],
            large_gang_waits: Vec::new(),
            large_gangs_placed: 0,
            never_placed: 0,
        })
    }

    /// Time moves to `now`: the levels since the last instant held until now.
    pub fn advance(&mut self, now: u64) {
        let until = now.min(self.window_s);
        if until > self.last_s {
            let span = (until - self.last_s) as f64;
            self.alloc_integral += self.alloc_milli as f64 * span;
            for (sum, d) in self.deviation_integral.iter_mut().zip(&self.deviation) {
                *sum += d * span;
            }
        }
        self.last_s = self.last_s.max(now);
    }

    /// The levels after the instant `now`.
    pub fn observe(&mut self, now: u64, levels: &QueueLevels<'_>) {
        self.alloc_milli = levels.usage_milli.iter().sum();
        let gpu = QueueResource::GpuMilli;
        let demand: Vec<BTreeMap<QueueResource, u64>> = levels
            .usage_milli
            .iter()
            .zip(levels.waiting_milli)
            .map(|(u, w)| BTreeMap::from([(gpu.clone(), u + w)]))
            .collect();
        let capacity = BTreeMap::from([(gpu.clone(), self.capacity_milli)]);
        let fair = fair_shares(&self.tree, &capacity, &demand);
        let borrowing: Vec<bool> = levels
            .usage_milli
            .iter()
            .zip(&self.guaranteed)
            .map(|(usage, guaranteed)| usage > guaranteed)
            .collect();
        for (q, share) in fair.iter().enumerate().take(self.deviation.len()) {
            let usage = levels.usage_milli[q];
            let wanted = usage + levels.waiting_milli[q];
            let share = share.get(&gpu).copied().unwrap_or(0);
            self.deviation[q] =
                share.min(wanted).saturating_sub(usage) as f64 / self.capacity_milli as f64;
            let below = usage < self.guaranteed[q].min(wanted);
            stretch(
                &mut self.below_since[q],
                &mut self.longest_below_s[q],
                below,
                now,
            );
            let others_borrow = borrowing
                .iter()
                .enumerate()
                .any(|(other, borrows)| other != q && *borrows);
            stretch(
                &mut self.reclaimable_since[q],
                &mut self.longest_reclaimable_s[q],
                below && others_borrow,
                now,
            );
            push_point(
                &mut self.deviation_points[q],
                now,
                100.0 * self.deviation[q],
            );
        }
        let alloc_pct = 100.0 * self.alloc_milli as f64 / self.capacity_milli as f64;
        push_point(&mut self.alloc_points, now, alloc_pct);
    }

    /// A job finished; it had waited `wait_s` before its last placement.
    pub fn finished(&mut self, job: &DayJob, wait_s: u64) {
        self.waits[job.queue].push(wait_s);
        if job.large_gang {
            self.large_gang_waits.push(wait_s);
            self.large_gangs_placed += 1;
        }
    }

    /// A job still waits when nothing more happens.
    pub fn never_placed(&mut self, job: &DayJob, end: u64) {
        self.never_placed += 1;
        let wait_s = end.saturating_sub(job.arrival_s);
        self.waits[job.queue].push(wait_s);
        if job.large_gang {
            self.large_gang_waits.push(wait_s);
        }
    }

    pub fn finish(
        mut self,
        policy: &'static str,
        end_s: u64,
        preemptions: Preemptions,
        wall_seconds: f64,
    ) -> DayResult {
        for q in 0..self.below_since.len() {
            stretch(
                &mut self.below_since[q],
                &mut self.longest_below_s[q],
                false,
                end_s,
            );
            stretch(
                &mut self.reclaimable_since[q],
                &mut self.longest_reclaimable_s[q],
                false,
                end_s,
            );
        }
        let window = self.window_s.max(1) as f64;
        let mut all: Vec<u64> = self.waits.iter().flatten().copied().collect();
        all.sort_unstable();
        let queues = (0..self.names.len())
            .map(|q| {
                let mut waits = std::mem::take(&mut self.waits[q]);
                waits.sort_unstable();
                QueueResult {
                    name: self.names[q].clone(),
                    jobs: waits.len(),
                    wait_p50_s: percentile(&waits, 50),
                    wait_p99_s: percentile(&waits, 99),
                    deviation_avg_pct: 100.0 * self.deviation_integral[q] / window,
                    longest_below_guarantee_s: self.longest_below_s[q],
                    longest_below_while_others_borrow_s: self.longest_reclaimable_s[q],
                    deviation_curve: sample(&self.deviation_points[q], self.window_s),
                }
            })
            .collect();
        DayResult {
            policy,
            window_s: self.window_s,
            end_s,
            allocation_avg_pct: 100.0 * self.alloc_integral / (window * self.capacity_milli as f64),
            allocation_curve: sample(&self.alloc_points, self.window_s),
            wait_p50_s: percentile(&all, 50),
            wait_p99_s: percentile(&all, 99),
            queues,
            preempted_jobs: preemptions.jobs,
            preempted_pods: preemptions.pods,
            gpu_hours_lost: preemptions.lost_milli_s as f64 / 1000.0 / 3600.0,
            victim_searches: preemptions.searches,
            victim_search_seconds: preemptions.search_seconds,
            large_gang_longest_wait_s: self.large_gang_waits.iter().copied().max(),
            large_gangs_placed: self.large_gangs_placed,
            never_placed: self.never_placed,
            wall_seconds,
        }
    }
}

/// Follows one condition's stretches: opens one when it becomes true at
/// `now`, closes it (keeping the longest) when it becomes false.
fn stretch(since: &mut Option<u64>, longest: &mut u64, holds: bool, now: u64) {
    match (holds, *since) {
        (true, None) => *since = Some(now),
        (false, Some(start)) => {
            *longest = (*longest).max(now - start);
            *since = None;
        }
        _ => {}
    }
}

/// Appends a step point, replacing one at the same instant.
fn push_point(points: &mut Vec<(u64, f64)>, now: u64, value: f64) {
    match points.last_mut() {
        Some((t, v)) if *t == now => *v = value,
        Some((_, v)) if *v == value => {}
        _ => points.push((now, value)),
    }
}

/// The step function `points` at [`CURVE_POINTS`] even times over `[0, window_s]`,
/// as (hours, value).
fn sample(points: &[(u64, f64)], window_s: u64) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(CURVE_POINTS + 1);
    let mut at = 0;
    let mut value = 0.0;
    for i in 0..=CURVE_POINTS {
        let t = window_s as f64 * i as f64 / CURVE_POINTS as f64;
        while at < points.len() && points[at].0 as f64 <= t {
            value = points[at].1;
            at += 1;
        }
        out.push((t / 3600.0, value));
    }
    out
}

/// Nearest-rank percentile of sorted values; 0 for none.
pub fn percentile(sorted: &[u64], p: u64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p as usize * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

#[derive(Debug, Clone, Serialize)]
pub struct QueueResult {
    pub name: String,
    /// Jobs whose wait is counted (finished, or never placed).
    pub jobs: usize,
    pub wait_p50_s: u64,
    pub wait_p99_s: u64,
    pub deviation_avg_pct: f64,
    pub longest_below_guarantee_s: u64,
    /// The longest stretch it was below `min(guarantee, demand)` while another
    /// queue used more than its guarantee: what reclaim is there to end.
    pub longest_below_while_others_borrow_s: u64,
    /// (hours, % of cluster GPUs) over the window.
    pub deviation_curve: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DayResult {
    pub policy: &'static str,
    pub window_s: u64,
    /// The last event (everything that was placed has finished).
    pub end_s: u64,
    pub allocation_avg_pct: f64,
    /// (hours, % of cluster GPUs allocated) over the window.
    pub allocation_curve: Vec<(f64, f64)>,
    pub wait_p50_s: u64,
    pub wait_p99_s: u64,
    pub queues: Vec<QueueResult>,
    pub preempted_jobs: u64,
    pub preempted_pods: u64,
    pub gpu_hours_lost: f64,
    /// Calls of the engine's victim selection and the wall time they took.
    pub victim_searches: u64,
    pub victim_search_seconds: f64,
    pub large_gang_longest_wait_s: Option<u64>,
    pub large_gangs_placed: usize,
    pub never_placed: usize,
    pub wall_seconds: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50), 50);
        assert_eq!(percentile(&v, 99), 99);
        assert_eq!(percentile(&[7], 99), 7);
        assert_eq!(percentile(&[], 50), 0);
        assert_eq!(percentile(&[1, 2, 3], 50), 2);
    }

    #[test]
    fn samples_hold_the_last_step() {
        let points = [(0, 1.0), (10, 5.0), (30, 2.0)];
        let s = sample(&points, 40);
        let at = |t: f64| {
            s.iter()
                .find(|(h, _)| (h * 3600.0 - t).abs() < 1e-6)
                .unwrap()
                .1
        };
        assert_eq!(at(0.0), 1.0);
        assert_eq!(at(20.0), 5.0);
        assert_eq!(at(40.0), 2.0);
    }
}
