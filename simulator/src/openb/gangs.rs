//! The openb experiment with gangs (`phalanx-sim openb --gangs`): how the order
//! in which a gang's topology domains are tried changes packing.
//!
//! The seed's arrival list is the plain experiment's (same shuffle, tuning and
//! node ranks). Pods asking for two or more whole GPUs are grouped into gangs in
//! arrival order: a gang opens at the first such pod, takes the next ones until
//! it has its size, drawn uniformly from 2–8 by a stream of its own
//! (`seed ^` [`GANG_SEED_SALT`]), and is placed with `place_gang` (all members
//! or none, `minMember` = size) when its last member arrives; a gang still open
//! when the trace ends is placed with the members it has. Other pods are
//! scheduled one at a time as they arrive, as in the plain experiment. A failed
//! pod or gang is dropped, no departures.
//!
//! Nodes get synthetic racks: `rack-000`, `rack-001`, … of `rack_nodes`
//! consecutive nodes in node-list order ([`with_racks`]). A gang has the rack as
//! its one, preferred, topology level and is placed under one of
//! [`GangPlacement`].

use std::collections::BTreeSet;
use std::time::Instant;

use phalanx_engine::{
    place_gang, ClusterSnapshot, DomainOrder, EngineError, GangError, GangSpec, GpuDemand,
    NodeSpec, PodDemand, PolicyName, TopologyLevel,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use thiserror::Error;

use super::curves::Curves;
use super::run::{PreparedTrace, Replay, WorkloadMode};

/// The synthetic rack label.
pub const RACK_LABEL: &str = "topology.phalanx.dev/rack";

/// Gang sizes, drawn uniformly.
pub const GANG_SIZES: std::ops::RangeInclusive<usize> = 2..=8;

/// Mixed into the run seed for the gang-size stream, so that the arrivals and
/// node ranks stay those of the plain run of the same seed.
pub const GANG_SEED_SALT: u64 = 0x6A6E_6700;

/// How a gang's rack is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GangPlacement {
    /// No topology: the members go wherever the policy puts them.
    Anywhere,
    /// Rack level, the rack with the most free GPU first (the engine's old order).
    Emptiest,
    /// Rack level, the rack with the least free capacity that holds the gang first.
    TightestFit,
}

impl GangPlacement {
    pub const ALL: [GangPlacement; 3] = [
        GangPlacement::Anywhere,
        GangPlacement::Emptiest,
        GangPlacement::TightestFit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GangPlacement::Anywhere => "anywhere",
            GangPlacement::Emptiest => "emptiest",
            GangPlacement::TightestFit => "tightest",
        }
    }
}

/// The node list with a rack label on every node, `rack_nodes` nodes a rack.
pub fn with_racks(nodes: &[NodeSpec], rack_nodes: usize) -> Vec<NodeSpec> {
    nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let mut node = node.clone();
            node.labels.insert(
                RACK_LABEL.to_owned(),
                format!("rack-{:03}", i / rack_nodes.max(1)),
            );
            node
        })
        .collect()
}

/// One step of a run: a pod alone or a gang's members (indices into the trace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Pod(usize),
    Gang(Vec<usize>),
}

/// A gang member asks for two or more whole GPUs.
fn is_multi_gpu(pod: &PodDemand) -> bool {
    matches!(pod.gpu, GpuDemand::Whole { count } if count >= 2)
}

/// Splits the arrival list into steps (see the module comment).
pub fn group_gangs(arrivals: &[usize], demands: &[PodDemand], seed: u64) -> Vec<Step> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ GANG_SEED_SALT);
    let mut steps = Vec::with_capacity(arrivals.len());
    let mut open: Vec<usize> = Vec::new();
    let mut size = 0;
    for &i in arrivals {
        if !is_multi_gpu(&demands[i]) {
            steps.push(Step::Pod(i));
            continue;
        }
        if open.is_empty() {
            size = rng.random_range(GANG_SIZES);
        }
        open.push(i);
        if open.len() == size {
            steps.push(Step::Gang(std::mem::take(&mut open)));
        }
    }
    if !open.is_empty() {
        steps.push(Step::Gang(open));
    }
    steps
}

#[derive(Debug, Clone, Copy)]
pub struct GangRunSpec {
    pub policy: PolicyName,
    pub seed: u64,
    pub tune: f64,
    pub workload: WorkloadMode,
    pub placement: GangPlacement,
}

#[derive(Debug, Clone)]
pub struct GangRunResult {
    pub spec: GangRunSpec,
    pub workload: String,
    pub pods_file: String,
    pub curves: Curves,
    pub pods_arrived: usize,
    /// Pods not placed, gang members included.
    pub pods_failed: usize,
    pub gangs: usize,
    pub gangs_placed: usize,
    /// Distinct racks under each placed gang, summed.
    pub gang_racks: usize,
    /// Placed gangs of more than one member that used a single rack.
    pub gangs_in_one_rack: usize,
    pub wall_seconds: f64,
}

impl GangRunResult {
    /// Unallocated GPU % when `percent` % of capacity has arrived.
    pub fn unallocated_at(&self, percent: usize) -> Option<f64> {
        self.curves
            .allocation
            .get(percent)
            .copied()
            .flatten()
            .map(|a| 100.0 - a)
    }

    pub fn racks_per_gang(&self) -> f64 {
        self.gang_racks as f64 / self.gangs_placed.max(1) as f64
    }
}

#[derive(Debug, Error)]
pub enum GangRunError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Gang(#[from] GangError),
}

/// Replays the trace with gangs under one policy, seed and gang placement.
/// `cluster` must carry the rack labels ([`with_racks`]).
pub fn run_gangs(
    cluster: &ClusterSnapshot,
    trace: &PreparedTrace,
    spec: GangRunSpec,
) -> Result<GangRunResult, GangRunError> {
    let started = Instant::now();
    let mut replay = Replay::new(
        cluster,
        trace,
        spec.seed,
        spec.tune,
        spec.workload,
        spec.policy,
    )?;
    let steps = group_gangs(&replay.seeded.arrivals, &trace.demands, spec.seed);
    let racks = [TopologyLevel::preferred(RACK_LABEL)];
    let (topology, domain_order): (&[TopologyLevel<'_>], _) = match spec.placement {
        GangPlacement::Anywhere => (&[], DomainOrder::TightestFit),
        GangPlacement::Emptiest => (&racks, DomainOrder::Emptiest),
        GangPlacement::TightestFit => (&racks, DomainOrder::TightestFit),
    };
    let (mut gangs, mut gangs_placed, mut gang_racks, mut gangs_in_one_rack) = (0, 0, 0, 0);
    let mut members: Vec<PodDemand> = Vec::new();

    for step in steps {
        match step {
            Step::Pod(i) => replay.schedule_pod(&trace.demands[i])?,
            Step::Gang(indices) => {
                gangs += 1;
                members.clear();
                members.extend(indices.iter().map(|&i| trace.demands[i].clone()));
                for member in &members {
                    replay.policy.observe_arrival(member);
                }
                let gang = GangSpec {
                    name: "gang",
                    members: &members,
                    min_member: members.len(),
                    topology,
                    domain_order,
                };
                let placed = match place_gang(
                    &mut replay.cluster,
                    replay.policy.as_mut(),
                    &gang,
                    &mut replay.scratch,
                )? {
                    Ok(plan) => {
                        gangs_placed += 1;
                        let mut nodes = BTreeSet::new();
                        for (_, placement) in &plan.placements {
                            replay.node_changed(placement.node);
                            nodes.insert(placement.node);
                        }
                        let racks: BTreeSet<&String> = nodes
                            .iter()
                            .filter_map(|&n| replay.cluster.node(n).labels.get(RACK_LABEL))
                            .collect();
                        gang_racks += racks.len();
                        if members.len() > 1 && racks.len() == 1 {
                            gangs_in_one_rack += 1;
                        }
                        true
                    }
                    Err(_) => false,
                };
                // One record per member, as the plain run records one per pod.
                for member in &members {
                    replay.record_arrival(member, placed);
                }
            }
        }
    }

    Ok(GangRunResult {
        spec,
        workload: trace.workload.clone(),
        pods_file: trace.pods_file.clone(),
        curves: replay.curves(),
        pods_arrived: replay.seeded.arrivals.len(),
        pods_failed: replay.failed(),
        gangs,
        gangs_placed,
        gang_racks,
        gangs_in_one_rack,
        wall_seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use phalanx_engine::ModelConstraint;

    fn pod(gpus: u32) -> PodDemand {
        let gpu = match gpus {
            0 => GpuDemand::None,
            k => GpuDemand::Whole { count: k },
        };
        PodDemand::new("p", 1_000, 1, gpu, ModelConstraint::Any).unwrap()
    }

    #[test]
    fn multi_gpu_pods_are_grouped_in_arrival_order_and_others_stay_alone() {
        // Trace pods: 0 and 1 take one GPU or none, 2 takes two, 3 takes eight.
        let demands = [pod(1), pod(0), pod(2), pod(8)];
        let arrivals: Vec<usize> = (0..40).map(|i| [0, 2, 1, 3][i % 4]).collect();
        let steps = group_gangs(&arrivals, &demands, 42);
        assert_eq!(steps, group_gangs(&arrivals, &demands, 42), "seeded");
        let mut gang_members = Vec::new();
        let mut singles = Vec::new();
        for step in &steps {
            match step {
                Step::Pod(i) => singles.push(*i),
                Step::Gang(members) => {
                    assert!(members.len() <= *GANG_SIZES.end());
                    gang_members.extend(members.iter().copied());
                }
            }
        }
        assert_eq!(singles.len(), 20);
        assert!(singles.iter().all(|&i| i < 2));
        let multi: Vec<usize> = arrivals.iter().copied().filter(|&i| i >= 2).collect();
        assert_eq!(gang_members, multi, "every multi-GPU pod once, in order");
        // All but the last gang have a size from the range.
        let gangs: Vec<usize> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Gang(m) => Some(m.len()),
                Step::Pod(_) => None,
            })
            .collect();
        assert!(gangs[..gangs.len() - 1]
            .iter()
            .all(|n| GANG_SIZES.contains(n)));
    }

    #[test]
    fn racks_are_consecutive_nodes_in_list_order() {
        let nodes: Vec<NodeSpec> = (0..5)
            .map(|i| NodeSpec {
                name: format!("n{i}"),
                ..NodeSpec::default()
            })
            .collect();
        let racks: Vec<String> = with_racks(&nodes, 2)
            .iter()
            .map(|n| n.labels[RACK_LABEL].clone())
            .collect();
        assert_eq!(
            racks,
            ["rack-000", "rack-000", "rack-001", "rack-001", "rack-002"]
        );
    }

    #[test]
    fn every_pod_is_placed_or_failed_and_racks_keep_gangs_together() {
        use crate::trace::{build_cluster, TracePod};
        use phalanx_engine::GpuSpec;

        // Sixteen 8-GPU nodes in racks of four; 1- and 2-GPU pods, so that every
        // gang (at most 16 GPUs) fits in an empty rack; half the capacity arrives,
        // so some rack always has room for the next gang.
        let nodes: Vec<NodeSpec> = (0..16)
            .map(|i| NodeSpec {
                name: format!("n{i}"),
                cpu_milli: 64_000,
                memory_mib: 1 << 20,
                max_pods: 110,
                gpu_model: Some("V100".into()),
                gpus: vec![GpuSpec::default(); 8],
                ..NodeSpec::default()
            })
            .collect();
        let cluster = build_cluster(&with_racks(&nodes, 4)).unwrap();
        let pods: Vec<TracePod> = (0..24)
            .map(|i| TracePod {
                name: format!("p{i:02}"),
                cpu_milli: 1_000,
                memory_mib: 1_024,
                gpu: GpuDemand::Whole {
                    count: [1, 2][i % 2],
                },
                spec: String::new(),
                qos: Default::default(),
                times: Default::default(),
            })
            .collect();
        let trace = PreparedTrace::new("t".into(), "t.csv".into(), pods, &cluster);
        for placement in GangPlacement::ALL {
            let run = run_gangs(
                &cluster,
                &trace,
                GangRunSpec {
                    policy: PolicyName::Phalanx,
                    seed: 7,
                    tune: 0.5,
                    workload: WorkloadMode::Trace,
                    placement,
                },
            )
            .unwrap();
            assert!(
                run.gangs > 0 && run.gangs_placed <= run.gangs,
                "{placement:?}"
            );
            assert!(run.gang_racks >= run.gangs_placed, "{placement:?}");
            assert!(run.pods_failed <= run.pods_arrived, "{placement:?}");
            if placement != GangPlacement::Anywhere {
                assert_eq!(
                    run.gang_racks, run.gangs_placed,
                    "{placement:?}: one rack each"
                );
            }
        }
    }
}
