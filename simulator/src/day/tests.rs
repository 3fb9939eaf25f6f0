//! The replay's invariants on small days built by hand.

use phalanx_engine::{ClusterSnapshot, GpuDemand, GpuSpec, ModelConstraint, NodeSpec, PodDemand};

use super::policy::DayPolicy;
use super::state::{DayError, DayState};
use super::tenants::queue_terms;
use super::workload::{DayConfig, DayJob, DayWorkload, JobId};
use super::{run_day, DayPolicyName, DayResult};
use crate::trace::build_cluster;

fn cluster(nodes: usize, gpus: usize) -> ClusterSnapshot {
    let nodes: Vec<NodeSpec> = (0..nodes)
        .map(|i| NodeSpec {
            name: format!("n{i}"),
            cpu_milli: 64_000,
            memory_mib: 1 << 20,
            max_pods: 110,
            gpu_model: Some("V100".into()),
            gpus: vec![GpuSpec::default(); gpus],
            ..NodeSpec::default()
        })
        .collect();
    build_cluster(&nodes).unwrap()
}

fn job(
    name: &str,
    queue: usize,
    gpu: GpuDemand,
    members: usize,
    arrival_s: u64,
    run_s: u64,
) -> DayJob {
    let members: Vec<PodDemand> = (0..members)
        .map(|m| {
            PodDemand::new(
                format!("{name}-{m}"),
                1_000,
                1_024,
                gpu,
                ModelConstraint::Any,
            )
            .unwrap()
        })
        .collect();
    DayJob {
        name: name.into(),
        gpu_milli: members.iter().map(|m| m.gpu.total_milli()).sum(),
        members,
        queue,
        priority: 0,
        arrival_s,
        run_s,
        large_gang: false,
    }
}

fn day(jobs: Vec<DayJob>, cluster: &ClusterSnapshot) -> DayWorkload {
    let mut jobs = jobs;
    jobs.sort_by_key(|j| j.arrival_s);
    let mut requested = vec![0; 4];
    for j in &jobs {
        requested[j.queue] += j.gpu_milli;
    }
    let capacity_milli = cluster.gpu_milli_capacity();
    DayWorkload {
        window_s: jobs.iter().map(|j| j.arrival_s).max().unwrap_or(0),
        queues: queue_terms(&requested, capacity_milli),
        jobs,
        capacity_milli,
        config: DayConfig::default(),
    }
}

/// A seeded busy day: pods of shares, whole GPUs and gangs in four queues,
/// more than the cluster holds at once.
fn busy_day(cluster: &ClusterSnapshot, seed: u64) -> DayWorkload {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let jobs = (0..300)
        .map(|i| {
            let gpu = match rng.random_range(0..4) {
                0 => GpuDemand::Share {
                    milli: rng.random_range(100..900),
                },
                1 => GpuDemand::None,
                _ => GpuDemand::Whole {
                    count: rng.random_range(1..=4),
                },
            };
            let members = if rng.random_bool(0.1) { 3 } else { 1 };
            let gpu = if members > 1 {
                GpuDemand::Whole { count: 2 }
            } else {
                gpu
            };
            job(
                &format!("j{i}"),
                rng.random_range(0..4),
                gpu,
                members,
                rng.random_range(0..600),
                rng.random_range(0..300),
            )
        })
        .collect();
    day(jobs, cluster)
}

/// Runs a policy, checking after every instant what it must never do.
struct Checked<P> {
    inner: P,
    check: fn(&DayState<'_>),
}

impl<P: DayPolicy> DayPolicy for Checked<P> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn on_arrival(&mut self, state: &DayState<'_>, job: JobId) {
        self.inner.on_arrival(state, job);
    }
    fn on_departure(&mut self, state: &DayState<'_>, job: JobId) {
        self.inner.on_departure(state, job);
    }
    fn schedule(&mut self, state: &mut DayState<'_>) -> Result<(), DayError> {
        self.inner.schedule(state)?;
        (self.check)(state);
        Ok(())
    }
}

fn run(
    workload: &DayWorkload,
    cluster: &ClusterSnapshot,
    name: DayPolicyName,
) -> (DayResult, ClusterSnapshot) {
    run_day(workload, cluster, name.build(workload).unwrap().as_mut()).unwrap()
}

#[test]
fn every_job_ends_finished_and_departures_release_what_placements_took() {
    let cluster = cluster(6, 4);
    for seed in 0..4 {
        let workload = busy_day(&cluster, seed);
        for name in DayPolicyName::ALL {
            let (result, after) = run(&workload, &cluster, name);
            // Kueue never admits a workload larger than its queue's nominal quota
            // (without borrowing) or its limit (with); everything else fits the
            // empty cluster.
            let inadmissible = workload
                .jobs
                .iter()
                .filter(|j| {
                    let terms = &workload.queues[j.queue];
                    match name {
                        DayPolicyName::Kueue => j.gpu_milli > terms.guaranteed_milli,
                        DayPolicyName::KueueBorrow => {
                            terms.limit_milli.is_some_and(|l| j.gpu_milli > l)
                        }
                        DayPolicyName::Fifo | DayPolicyName::Priority => false,
                        DayPolicyName::Phalanx => {
                            terms.limit_milli.is_some_and(|l| j.gpu_milli > l)
                        }
                    }
                })
                .count();
            assert_eq!(result.never_placed, inadmissible, "{name:?} seed {seed}");
            let counted: usize = result.queues.iter().map(|q| q.jobs).sum();
            assert_eq!(
                counted,
                workload.jobs.len(),
                "{name:?}: every job counted once"
            );
            assert_eq!(after.gpu_milli_allocated(), 0, "{name:?} seed {seed}");
            for node in after.nodes() {
                assert_eq!(node.cpu_milli_free(), 64_000, "{name:?}: {}", node.name);
            }
        }
    }
}

#[test]
fn a_job_that_never_fits_is_waiting_at_the_end_not_lost() {
    let cluster = cluster(1, 2);
    let workload = day(
        vec![
            job("fits", 0, GpuDemand::Whole { count: 1 }, 1, 0, 5),
            job("too-big", 1, GpuDemand::Whole { count: 2 }, 2, 1, 5),
        ],
        &cluster,
    );
    for name in DayPolicyName::ALL {
        let (result, after) = run(&workload, &cluster, name);
        // Under Kueue without borrowing, "fits" is larger than its queue's quota too.
        let expected = if name == DayPolicyName::Kueue { 2 } else { 1 };
        assert_eq!(result.never_placed, expected, "{name:?}");
        assert_eq!(result.queues.iter().map(|q| q.jobs).sum::<usize>(), 2);
        assert_eq!(after.gpu_milli_allocated(), 0);
    }
}

#[test]
fn fifo_places_in_arrival_order_and_lets_smaller_pods_pass() {
    // One node of two GPUs. a (1 GPU, 100 s) runs; b (2 GPUs) cannot fit
    // until a leaves; c (1 GPU) passes b; d (2 GPUs) waits behind b.
    let cluster = cluster(1, 2);
    let one = GpuDemand::Whole { count: 1 };
    let two = GpuDemand::Whole { count: 2 };
    let workload = day(
        vec![
            job("a", 0, one, 1, 0, 100),
            job("b", 1, two, 1, 10, 50),
            job("c", 2, one, 1, 20, 30),
            job("d", 3, two, 1, 30, 10),
        ],
        &cluster,
    );
    let mut policy = Checked {
        inner: super::fifo::Fifo::default(),
        check: |_| {},
    };
    let (result, _) = run_day(&workload, &cluster, &mut policy).unwrap();
    // a at 0, c at 20 (passing b), b at 100 (a left at 100, c at 50), d after b at 150.
    let waits: Vec<u64> = result.queues.iter().map(|q| q.wait_p50_s).collect();
    assert_eq!(waits, [0, 90, 0, 120]);
}

#[test]
fn kueue_never_admits_beyond_nominal_quota_without_borrowing() {
    let cluster = cluster(6, 4);
    for seed in 0..4 {
        let workload = busy_day(&cluster, seed);
        let mut policy = Checked {
            inner: super::kueue::Kueue::new(false),
            check: |state| {
                for (q, terms) in state.workload().queues.iter().enumerate() {
                    assert!(
                        state.usage_milli(q) <= terms.guaranteed_milli,
                        "{} uses {} of nominal {}",
                        terms.name,
                        state.usage_milli(q),
                        terms.guaranteed_milli
                    );
                }
            },
        };
        run_day(&workload, &cluster, &mut policy).unwrap();
    }
}

#[test]
fn kueue_borrows_within_the_cohort_and_the_limit() {
    let cluster = cluster(6, 4);
    let workload = busy_day(&cluster, 1);
    let mut policy = Checked {
        inner: super::kueue::Kueue::new(true),
        check: |state| {
            let workload = state.workload();
            let total: u64 = (0..4).map(|q| state.usage_milli(q)).sum();
            assert!(total <= workload.capacity_milli);
            for (q, terms) in workload.queues.iter().enumerate() {
                if let Some(limit) = terms.limit_milli {
                    assert!(state.usage_milli(q) <= limit, "{}", terms.name);
                }
            }
        },
    };
    let (borrowing, _) = run_day(&workload, &cluster, &mut policy).unwrap();
    let (strict, _) = run(&workload, &cluster, DayPolicyName::Kueue);
    assert!(
        borrowing.allocation_avg_pct > strict.allocation_avg_pct,
        "borrowing uses idle quota: {} vs {}",
        borrowing.allocation_avg_pct,
        strict.allocation_avg_pct
    );
}

#[test]
fn priority_preemption_evicts_a_lower_priority_pod_and_counts_its_lost_time() {
    let cluster = cluster(1, 2);
    let mut low = job("low", 0, GpuDemand::Whole { count: 2 }, 1, 0, 1_000);
    low.priority = 0;
    let mut high = job("high", 1, GpuDemand::Whole { count: 2 }, 1, 360, 10);
    high.priority = 1_000;
    high.members[0].priority = 1_000;
    let workload = day(vec![low, high], &cluster);
    let (result, after) = run(&workload, &cluster, DayPolicyName::Priority);
    assert_eq!(result.preempted_pods, 1);
    // Two GPUs for 360 s.
    assert!(
        (result.gpu_hours_lost - 0.2).abs() < 1e-9,
        "{}",
        result.gpu_hours_lost
    );
    assert_eq!(
        result.queues[1].wait_p50_s, 0,
        "the preemptor is placed at once"
    );
    // The victim starts again when the preemptor leaves at 370: waited 370 s.
    assert_eq!(result.queues[0].wait_p50_s, 370);
    assert_eq!(after.gpu_milli_allocated(), 0);
    // Without priorities nothing is evicted.
    let (fifo, _) = run(&workload, &cluster, DayPolicyName::Fifo);
    assert_eq!(fifo.preempted_pods, 0);
}

#[test]
fn phalanx_reclaims_what_another_queue_borrowed_beyond_its_guarantee() {
    // Four GPUs; team-a and team-b ask alike, so each is guaranteed 1.6 GPUs
    // (80 % of the cluster split in proportion). team-b borrows all four GPUs
    // with long pods; team-a's two pods arrive later and take back their share.
    let cluster = cluster(1, 4);
    let one = GpuDemand::Whole { count: 1 };
    let mut jobs: Vec<DayJob> = (0..4)
        .map(|i| job(&format!("b{i}"), 1, one, 1, 0, 10_000))
        .collect();
    jobs.push(job("a0", 0, one, 1, 100, 50));
    jobs.push(job("a1", 0, one, 1, 100, 50));
    let workload = day(jobs, &cluster);
    let (result, after) = run(&workload, &cluster, DayPolicyName::Phalanx);
    assert!(result.preempted_pods >= 1, "team-b gave back borrowed GPUs");
    assert_eq!(
        result.queues[0].wait_p50_s, 0,
        "team-a's first pod, within its guarantee, is placed at once"
    );
    assert_eq!(
        result.queues[0].wait_p99_s, 50,
        "its second would pass the guarantee: it waits for the first to finish"
    );
    assert_eq!(after.gpu_milli_allocated(), 0);
    // Kueue with borrowing cannot take anything back: team-a waits for team-b.
    let (kueue, _) = run(&workload, &cluster, DayPolicyName::KueueBorrow);
    assert_eq!(kueue.preempted_pods, 0);
    assert!(kueue.queues[0].wait_p50_s > 0);
}

#[test]
fn phalanx_never_takes_a_queue_past_its_limit() {
    let cluster = cluster(6, 4);
    for seed in 0..4 {
        let workload = busy_day(&cluster, seed);
        let mut policy = Checked {
            inner: super::phalanx::Phalanx::new(&workload).unwrap(),
            check: |state| {
                for (q, terms) in state.workload().queues.iter().enumerate() {
                    if let Some(limit) = terms.limit_milli {
                        assert!(state.usage_milli(q) <= limit, "{}", terms.name);
                    }
                }
            },
        };
        run_day(&workload, &cluster, &mut policy).unwrap();
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(12))]

    /// Whatever the day, under every policy: every job is counted once
    /// (finished or never placed), the cluster ends empty, and no queue with a
    /// limit passes it under the policies that honour limits.
    #[test]
    fn no_policy_loses_a_job_or_leaks_a_placement(seed in 0u64..1_000_000, nodes in 2usize..8) {
        let cluster = cluster(nodes, 4);
        let workload = busy_day(&cluster, seed);
        for name in DayPolicyName::ALL {
            let (result, after) = run(&workload, &cluster, name);
            let counted: usize = result.queues.iter().map(|q| q.jobs).sum();
            proptest::prop_assert_eq!(counted, workload.jobs.len(), "{:?}", name);
            proptest::prop_assert_eq!(after.gpu_milli_allocated(), 0, "{:?}", name);
            proptest::prop_assert!(after.nodes().iter().all(|n| n.pods == 0), "{:?}", name);
        }
    }
}
