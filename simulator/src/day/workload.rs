//! The trace as a day of jobs: when each arrives, how long it runs once placed,
//! its queue and priority; and the large gangs injected into it.
//!
//! - **Arrival**: the trace's creation times mapped linearly onto a day of
//!   `hours` (default 24): from the day's start, the creation time of the
//!   trace's [`START_PERCENTILE`]-th percentile pod (the few pods created
//!   earlier, most of them long-running, arrive at 0: they are already there
//!   when the day begins), to its last creation. The shipped openb list is a
//!   sample of its cluster's pods: replayed alone it never asks for more than
//!   a few % of the cluster's GPUs at once, so nothing contends. `load` makes
//!   the day hold that many copies of the trace: copy 0 is the trace itself,
//!   copies 1, 2, … (the last one a seeded subset for a fractional load) arrive
//!   at their pod's time plus a seeded offset in ±[`COPY_JITTER_S`], within
//!   the day. Every copy is drawn into a queue like any pod.
//! - **Run time**: `deletion_time − scheduled_time`; where `scheduled_time` is
//!   missing (a pod that never ran in the trace) or 0 while the pod was created
//!   later (the trace's placeholder), `deletion_time − creation_time`. A pod
//!   runs that long from its placement, whenever that is; evicted, it starts
//!   again from scratch.
//! - **Large gangs**: `large_gangs` jobs of `gang_members` pods of
//!   `member_gpus` whole GPUs (32 cores, 128 GiB each, any model), all or
//!   nothing, arriving at `window × k / (large_gangs + 1)` for k = 1, 2, …
//!   (evenly inside the trace's arrival window), in queues `team-a`, `team-b`,
//!   … in turn, at mid priority, each running `gang_run_s` seconds.

use phalanx_engine::{ClusterSnapshot, GpuDemand, ModelConstraint, PodDemand};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::state::DayError;
use super::tenants::{
    draw_queue, priority_of, queue_terms, queue_tree, QueueTerms, MID_PRIORITY, QUEUE_NAMES,
};
use crate::trace::TracePod;

/// The default `--load`: see the README for what it offers the cluster.
pub const DEFAULT_DAY_LOAD: f64 = 16.0;

/// The day starts at this percentile of the trace's creation times.
pub const START_PERCENTILE: usize = 1;

/// Copies of a pod arrive within this many seconds of it.
pub const COPY_JITTER_S: u64 = 1800;

/// Copies of the trace beyond this are refused (a typo, not a day).
pub const MAX_LOAD: f64 = 1000.0;

/// Index of a job in [`DayWorkload::jobs`].
pub type JobId = usize;

/// How the trace becomes a day.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct DayConfig {
    /// Copies of the trace in the day (see the module comment).
    pub load: f64,
    /// The day's length: arrivals are mapped onto `[0, hours]` (run times are
    /// not scaled).
    pub hours: f64,
    /// Seeds the draw of pods into queues.
    pub seed: u64,
    pub large_gangs: usize,
    pub gang_members: usize,
    pub member_gpus: u32,
    pub gang_run_s: u64,
}

impl Default for DayConfig {
    fn default() -> Self {
        DayConfig {
            load: 1.0,
            hours: 24.0,
            seed: 42,
            large_gangs: 8,
            gang_members: 16,
            member_gpus: 8,
            gang_run_s: 4 * 3600,
        }
    }
}

/// What is scheduled as one: a trace pod alone, or an injected gang.
#[derive(Debug, Clone)]
pub struct DayJob {
    pub name: String,
    /// One pod, or a gang's members (placed all or none).
    pub members: Vec<PodDemand>,
    pub queue: usize,
    pub priority: i32,
    pub arrival_s: u64,
    pub run_s: u64,
    pub large_gang: bool,
    /// Milli-GPU of all members together.
    pub gpu_milli: u64,
}

/// The day: jobs in arrival order (ties in trace order, gangs after the pods
/// of their second) and the queues' terms.
#[derive(Debug, Clone)]
pub struct DayWorkload {
    pub jobs: Vec<DayJob>,
    pub queues: Vec<QueueTerms>,
    pub capacity_milli: u64,
    /// The last arrival: the report averages over `[0, window_s]`.
    pub window_s: u64,
    pub config: DayConfig,
}

fn missing_time(file: &str, pod: &str, column: &str) -> DayError {
    DayError::Trace(format!(
        "{file}: pod {pod} has no {column}; the day replay needs creation_time and \
         deletion_time for every pod"
    ))
}

/// How long a trace pod runs once placed (see the module comment).
fn run_time(file: &str, pod: &TracePod) -> Result<(u64, u64), DayError> {
    let created = pod
        .times
        .creation_time_s
        .ok_or_else(|| missing_time(file, &pod.name, "creation_time"))?;
    let deleted = pod
        .times
        .deletion_time_s
        .ok_or_else(|| missing_time(file, &pod.name, "deletion_time"))?;
    let started = match pod.times.scheduled_time_s {
        Some(0) if created > 0 => created,
        Some(at) => at,
        None => created,
    };
    Ok((created, deleted.saturating_sub(started)))
}

/// Builds the day from a pod list (`file` names it in errors).
pub fn build_workload(
    pods: &[TracePod],
    cluster: &ClusterSnapshot,
    config: &DayConfig,
    file: &str,
) -> Result<DayWorkload, DayError> {
    if !(config.load.is_finite() && (1.0..=MAX_LOAD).contains(&config.load)) {
        return Err(DayError::Config(format!(
            "--load must be between 1 and {MAX_LOAD} (copies of the trace in the day), got {}",
            config.load
        )));
    }
    if !(config.hours.is_finite() && config.hours > 0.0 && config.hours <= 24.0 * 365.0) {
        return Err(DayError::Config(format!(
            "--hours must be a positive number of hours up to a year, got {}",
            config.hours
        )));
    }
    if config.large_gangs > 0 && (config.gang_members == 0 || config.member_gpus == 0) {
        return Err(DayError::Config(
            "--gang-members and --member-gpus must be at least 1 when --large-gangs is set".into(),
        ));
    }
    let mut timed = Vec::with_capacity(pods.len());
    for pod in pods {
        timed.push(run_time(file, pod)?);
    }
    let day_s = (config.hours * 3600.0).round() as u64;
    let arrivals = day_arrivals(&timed, day_s);
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut jobs = Vec::new();
    let copies = config.load.ceil() as usize;
    for copy in 0..copies {
        // The last copy of a fractional load keeps each pod with the fraction's odds.
        let keep = (config.load - copy as f64).min(1.0);
        for (i, pod) in pods.iter().enumerate() {
            if keep < 1.0 && !rng.random_bool(keep) {
                continue;
            }
            let arrival_s = if copy == 0 {
                arrivals[i]
            } else {
                let offset = rng.random_range(0..=2 * COPY_JITTER_S);
                (arrivals[i] + offset)
                    .saturating_sub(COPY_JITTER_S)
                    .min(day_s)
            };
            let priority = priority_of(&pod.qos);
            let mut demand = pod.demand(cluster);
            demand.priority = priority;
            if copy > 0 {
                demand.name = format!("{}-copy{copy}", pod.name);
            }
            jobs.push(DayJob {
                name: demand.name.clone(),
                gpu_milli: demand.gpu.total_milli(),
                members: vec![demand],
                queue: draw_queue(&mut rng),
                priority,
                arrival_s,
                run_s: timed[i].1,
                large_gang: false,
            });
        }
    }
    let window_s = jobs.iter().map(|j| j.arrival_s).max().unwrap_or(0);
    for k in 0..config.large_gangs {
        jobs.push(large_gang(config, k, window_s)?);
    }
    // Stable: ties keep copy and trace order, and gangs come after the pods of their second.
    jobs.sort_by_key(|j| j.arrival_s);
    let mut requested = vec![0u64; QUEUE_NAMES.len()];
    for job in &jobs {
        requested[job.queue] += job.gpu_milli;
    }
    let capacity_milli = cluster.gpu_milli_capacity();
    let queues = queue_terms(&requested, capacity_milli);
    queue_tree(&queues).map_err(|e| DayError::Config(e.to_string()))?;
    Ok(DayWorkload {
        jobs,
        queues,
        capacity_milli,
        window_s,
        config: *config,
    })
}

/// Each pod's arrival in the day (see the module comment).
fn day_arrivals(timed: &[(u64, u64)], day_s: u64) -> Vec<u64> {
    let mut created: Vec<u64> = timed.iter().map(|(c, _)| *c).collect();
    created.sort_unstable();
    let Some(&last) = created.last() else {
        return Vec::new();
    };
    let start = created[(created.len() - 1) * START_PERCENTILE / 100];
    let span = (last - start).max(1) as f64;
    timed
        .iter()
        .map(|&(c, _)| {
            let since = c.saturating_sub(start) as f64;
            ((since / span * day_s as f64).round() as u64).min(day_s)
        })
        .collect()
}

/// The `k`-th injected large gang (see the module comment).
fn large_gang(config: &DayConfig, k: usize, window_s: u64) -> Result<DayJob, DayError> {
    let name = format!("large-gang-{k}");
    let members: Vec<PodDemand> = (0..config.gang_members)
        .map(|m| {
            let mut pod = PodDemand::new(
                format!("{name}-{m}"),
                32_000,
                128 * 1024,
                GpuDemand::Whole {
                    count: config.member_gpus,
                },
                ModelConstraint::Any,
            )
            .map_err(|e| DayError::Config(format!("large gang member: {e}")))?;
            pod.priority = MID_PRIORITY;
            Ok(pod)
        })
        .collect::<Result<_, DayError>>()?;
    Ok(DayJob {
        name,
        gpu_milli: members.iter().map(|m| m.gpu.total_milli()).sum(),
        members,
        queue: k % QUEUE_NAMES.len(),
        priority: MID_PRIORITY,
        arrival_s: window_s * (k as u64 + 1) / (config.large_gangs as u64 + 1),
        run_s: config.gang_run_s,
        large_gang: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{PodTimes, Qos};

    pub(crate) fn trace_pod(
        name: &str,
        created: u64,
        scheduled: Option<u64>,
        deleted: u64,
    ) -> TracePod {
        TracePod {
            name: name.into(),
            cpu_milli: 1_000,
            memory_mib: 1_024,
            gpu: GpuDemand::Whole { count: 1 },
            spec: String::new(),
            qos: Qos::LatencySensitive,
            times: PodTimes {
                creation_time_s: Some(created),
                deletion_time_s: Some(deleted),
                scheduled_time_s: scheduled,
            },
        }
    }

    #[test]
    fn run_time_counts_from_schedule_else_creation() {
        let f = "t.csv";
        assert_eq!(
            run_time(f, &trace_pod("a", 10, Some(15), 100)).unwrap(),
            (10, 85)
        );
        assert_eq!(
            run_time(f, &trace_pod("b", 10, None, 100)).unwrap(),
            (10, 90)
        );
        assert_eq!(
            run_time(f, &trace_pod("c", 10, Some(0), 100)).unwrap(),
            (10, 90)
        );
        assert_eq!(
            run_time(f, &trace_pod("d", 0, Some(0), 100)).unwrap(),
            (0, 100)
        );
        let mut no_time = trace_pod("e", 0, None, 1);
        no_time.times.deletion_time_s = None;
        let err = run_time(f, &no_time).unwrap_err().to_string();
        assert!(err.contains("t.csv: pod e has no deletion_time"), "{err}");
    }
}
