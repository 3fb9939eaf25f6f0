//! Checks that the scheduling hot path allocates nothing in steady state, as
//! DESIGN.md and `CycleScratch` promise: after warm-up, with one reused scratch,
//! a `schedule_one` that places a pod should make no heap allocation, for every
//! built-in policy at 1,000 and 5,000 nodes.
//!
//! Any allocation in a placing cycle fails the check (exit 1). The clusters
//! include cordoned nodes and unhealthy GPUs on purpose: the filter once built
//! the cordon taint (a 32-byte String) for every cordoned node it looked at,
//! every cycle, which this check found.
//!
//! Each policy is counted twice: with the plain pod stream, and with the same pods
//! as the cluster translates them (a namespace and labels, no inter-pod terms,
//! suffix `+labels`), which must not allocate either.
//!
//! Also reported, not asserted: the unschedulable outcome, committing and
//! undoing a placement (`place` + `release`), and an online policy learning
//! from an arrival (`observe_arrival`, once per pod rather than per cycle).
//!
//! A plain `main` (no test harness, no criterion): nothing else runs while it
//! counts, so every allocation counted is the engine's. It runs under both
//! `cargo bench -p phalanx-engine` and `cargo test -p phalanx-engine`.

mod support;

use std::alloc::System;
use std::process::ExitCode;

use phalanx_engine::{
    schedule_one, ClusterSnapshot, CycleOutcome, CycleScratch, GpuDemand, InterPodSpec, NodeId,
    NodeState, PlacementPolicy, PodAffinityRules, PodDemand, PolicyName,
};
use stats_alloc::{Region, Stats, StatsAlloc, INSTRUMENTED_SYSTEM};

// Counts every allocation in this process. The counting wrapper around the
// system allocator is stats_alloc's; the workspace forbids unsafe code of ours.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Passes over the pod stream before counting (fills every per-shape cache).
const WARM_UP_PASSES: usize = 2;
/// Passes over the pod stream counted.
const COUNTED_PASSES: usize = 4;

/// Allocation events (new blocks and reallocations) and bytes over some calls.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    calls: u64,
    events: u64,
    bytes: u64,
}

impl Tally {
    fn add(&mut self, stats: Stats) {
        self.calls += 1;
        self.events += (stats.allocations + stats.reallocations) as u64;
        self.bytes += (stats.bytes_allocated + stats.bytes_reallocated.max(0) as usize) as u64;
    }

    fn per_call(&self) -> String {
        if self.calls == 0 {
            return "-".into();
        }
        let calls = self.calls as f64;
        format!(
            "{:.2} ({:.0} B)",
            self.events as f64 / calls,
            self.bytes as f64 / calls
        )
    }
}

#[derive(Debug, Default)]
struct PolicyTally {
    placed: Tally,
    unschedulable: Tally,
    commit: Tally,
    arrival: Tally,
}

/// A pod that fits nowhere: it wants a GPU model the cluster does not have.
fn unplaceable(snapshot: &ClusterSnapshot) -> PodDemand {
    PodDemand::new(
        "wants-b200",
        4_000,
        8 * 1024,
        GpuDemand::Whole { count: 1 },
        snapshot.models().constraint("B200"),
    )
    .expect("a valid pod")
}

/// The pod stream as the cluster translates pods: each with a namespace and
/// labels (so that other pods' terms could select it) and no terms of its own.
/// Their cycles must stay allocation-free too.
fn labelled(pods: &[PodDemand]) -> Vec<PodDemand> {
    pods.iter()
        .map(|p| {
            let labels = [("app".to_string(), p.name.clone())].into();
            let spec = InterPodSpec::new(
                &p.name,
                "default",
                labels,
                PodAffinityRules::default(),
                vec![],
            )
            .expect("a valid spec");
            p.clone().with_inter_pod(spec)
        })
        .collect()
}

fn count(
    snapshot: &mut ClusterSnapshot,
    policy: &mut dyn PlacementPolicy,
    pods: &[PodDemand],
    unplaceable: &PodDemand,
) -> PolicyTally {
    let mut scratch = CycleScratch::default();
    for _ in 0..WARM_UP_PASSES {
        for pod in pods {
            support::cycle(snapshot, policy, pod, &mut scratch);
        }
        support::cycle(snapshot, policy, unplaceable, &mut scratch);
    }
    let mut tally = PolicyTally::default();
    for _ in 0..COUNTED_PASSES {
        for pod in pods.iter().chain([unplaceable]) {
            let region = Region::new(GLOBAL);
            let outcome = schedule_one(snapshot, policy, pod, &mut scratch);
            let stats = region.change();
            match outcome {
                CycleOutcome::Placed(placement) => {
                    tally.placed.add(stats);
                    let region = Region::new(GLOBAL);
                    support::place_and_undo(snapshot, pod, &placement);
                    tally.commit.add(region.change());
                }
                CycleOutcome::Unschedulable { .. } => tally.unschedulable.add(stats),
            }
        }
    }
    for pod in pods {
        let region = Region::new(GLOBAL);
        policy.observe_arrival(pod);
        tally.arrival.add(region.change());
    }
    tally
}

/// Allocations of one `check_fit` of `pod` on the first node that `which`
/// accepts, if there is one.
fn check_fit_allocations(
    snapshot: &ClusterSnapshot,
    pod: &PodDemand,
    which: impl Fn(&NodeState) -> bool,
) -> Option<Tally> {
    let id = snapshot.nodes().iter().position(which)?;
    let mut tally = Tally::default();
    let region = Region::new(GLOBAL);
    let fit = snapshot.check_fit(NodeId(id as u32), pod);
    tally.add(region.change());
    std::hint::black_box(fit).ok();
    Some(tally)
}

fn main() -> ExitCode {
    println!(
        "Heap allocations per call in steady state ({WARM_UP_PASSES} warm-up passes, \
         {COUNTED_PASSES} counted passes over {} pods of the mix plus one unplaceable pod, \
         one reused CycleScratch); events (bytes)",
        support::STREAM_LEN
    );
    println!(
        "{:>6}  {:<18}  {:>22}  {:>22}  {:>16}  {:>16}",
        "nodes",
        "policy",
        "schedule_one, placed",
        "schedule_one, unsched.",
        "place+release",
        "observe_arrival"
    );
    let mut failures = Vec::new();
    for nodes in support::SIZES {
        let mut snapshot = support::cluster(nodes);
        let pods = support::pod_stream(&snapshot, support::STREAM_LEN);
        let unplaceable = unplaceable(&snapshot);
        let cordoned = snapshot
            .nodes()
            .iter()
            .filter(|n| n.unschedulable && !n.removed)
            .count() as u64;
        let on = |which: fn(&NodeState) -> bool| {
            check_fit_allocations(&snapshot, &pods[0], which)
                .map_or_else(|| "no such node".into(), |t| t.per_call())
        };
        println!(
            "{nodes:>6}  ({cordoned} cordoned nodes; one check_fit on a cordoned node: {}, \
             on a schedulable one: {})",
            on(|n| n.unschedulable),
            on(|n| !n.unschedulable)
        );
        let labelled = labelled(&pods);
        let streams = [("", &pods), (" +labels", &labelled)];
        for (name, (suffix, pods)) in PolicyName::ALL
            .into_iter()
            .flat_map(|name| streams.map(|stream| (name, stream)))
        {
            let mut policy = support::policy(name, &snapshot);
            let tally = count(&mut snapshot, policy.as_mut(), pods, &unplaceable);
            let name = format!("{name}{suffix}");
            println!(
                "{nodes:>6}  {:<18}  {:>22}  {:>22}  {:>16}  {:>16}",
                name,
                tally.placed.per_call(),
                tally.unschedulable.per_call(),
                tally.commit.per_call(),
                tally.arrival.per_call()
            );
            if tally.placed.calls == 0 {
                failures.push(format!("{name} at {nodes} nodes placed nothing to count"));
            } else if tally.placed.events > 0 {
                failures.push(format!(
                    "{name} at {nodes} nodes: {} allocations in {} placing cycles",
                    tally.placed.events, tally.placed.calls
                ));
            }
        }
    }
    if failures.is_empty() {
        println!("hot path: no allocation in a placing cycle, every policy, every size");
        ExitCode::SUCCESS
    } else {
        for failure in &failures {
            eprintln!("hot path allocates: {failure}");
        }
        ExitCode::FAILURE
    }
}
