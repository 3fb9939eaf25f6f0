//! Clusters, pods and policies shared by the engine's benchmarks.
//!
//! Everything is drawn from [`SEED`], so two runs (and two commits) measure the
//! same clusters and the same pods. A cluster is 8-GPU nodes of six models, a
//! quarter idle, most partly used by pods of the benchmark mix with shares spread
//! over the GPUs (fragmented, as a cluster that has been running a while is), a
//! few nearly full, about 1 % cordoned and a few unhealthy GPUs.

// Each bench target compiles this module on its own and uses part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;

use phalanx_engine::{
    build_policy, schedule_one, ClusterSnapshot, CycleOutcome, CycleScratch, GpuAssignment,
    GpuDemand, GpuSpec, ModelConstraint, NodeId, NodeSpec, Placement, PlacementPolicy, PodDemand,
    PolicyConfig, PolicyName, TypicalPod, WorkloadSource, MILLI_PER_GPU,
};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The one seed every cluster, pod stream and random policy is drawn from.
pub const SEED: u64 = 0x9A1A_0001;

/// Cluster sizes the benchmarks compare.
pub const SIZES: [usize; 2] = [1_000, 5_000];

pub const GPUS_PER_NODE: usize = 8;

/// Label naming a node's rack, as gangs' topology keys use.
pub const RACK_LABEL: &str = "topology.phalanx.dev/rack";

/// The well-known per-node label pod anti-affinity usually names.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// Pods in a benchmark's pod stream: long enough to hold every kind many times,
/// and not a multiple of anything in the cluster.
pub const STREAM_LEN: usize = 257;

struct NodeKind {
    model: &'static str,
    /// Out of 100.
    weight: u32,
    cpu_milli: u64,
    memory_mib: u64,
    gpu_memory_mib: u64,
}

const GIB: u64 = 1024;

const NODE_KINDS: [NodeKind; 6] = [
    NodeKind {
        model: "H100-80GB",
        weight: 15,
        cpu_milli: 192_000,
        memory_mib: 2048 * GIB,
        gpu_memory_mib: 80 * GIB,
    },
    NodeKind {
        model: "A100-80GB",
        weight: 25,
        cpu_milli: 128_000,
        memory_mib: 1024 * GIB,
        gpu_memory_mib: 80 * GIB,
    },
    NodeKind {
        model: "A100-40GB",
        weight: 15,
        cpu_milli: 96_000,
        memory_mib: 768 * GIB,
        gpu_memory_mib: 40 * GIB,
    },
    NodeKind {
        model: "V100M32",
        weight: 15,
        cpu_milli: 96_000,
        memory_mib: 512 * GIB,
        gpu_memory_mib: 32 * GIB,
    },
    NodeKind {
        model: "T4",
        weight: 20,
        cpu_milli: 64_000,
        memory_mib: 256 * GIB,
        gpu_memory_mib: 16 * GIB,
    },
    NodeKind {
        model: "A10",
        weight: 10,
        cpu_milli: 64_000,
        memory_mib: 384 * GIB,
        gpu_memory_mib: 24 * GIB,
    },
];

struct PodKind {
    name: &'static str,
    /// Out of 1000.
    weight: u32,
    cpu_milli: u64,
    memory_mib: u64,
    gpu: GpuDemand,
    /// Allowed GPU models (`|`-separated), `None` for any.
    models: Option<&'static str>,
}

/// The pod mix, shaped like the Alibaba openb trace the simulator replays: mostly
/// one whole GPU, a quarter GPU shares of assorted sizes, some CPU-only pods, a
/// few multi-GPU training pods, and some pods pinned to GPU models.
const POD_KINDS: [PodKind; 14] = [
    PodKind {
        name: "gpu1",
        weight: 380,
        cpu_milli: 8_000,
        memory_mib: 32 * GIB,
        gpu: GpuDemand::Whole { count: 1 },
        models: None,
    },
    PodKind {
        name: "share810",
        weight: 100,
        cpu_milli: 6_000,
        memory_mib: 24 * GIB,
        gpu: GpuDemand::Share { milli: 810 },
        models: None,
    },
    PodKind {
        name: "share470",
        weight: 70,
        cpu_milli: 4_000,
        memory_mib: 12 * GIB,
        gpu: GpuDemand::Share { milli: 470 },
        models: None,
    },
    PodKind {
        name: "share320",
        weight: 35,
        cpu_milli: 4_000,
        memory_mib: 8 * GIB,
        gpu: GpuDemand::Share { milli: 320 },
        models: None,
    },
    PodKind {
        name: "share650",
        weight: 25,
        cpu_milli: 6_000,
        memory_mib: 16 * GIB,
        gpu: GpuDemand::Share { milli: 650 },
        models: None,
    },
    PodKind {
        name: "share230",
        weight: 15,
        cpu_milli: 2_000,
        memory_mib: 8 * GIB,
        gpu: GpuDemand::Share { milli: 230 },
        models: None,
    },
    PodKind {
        name: "share160",
        weight: 10,
        cpu_milli: 2_000,
        memory_mib: 4 * GIB,
        gpu: GpuDemand::Share { milli: 160 },
        models: None,
    },
    PodKind {
        name: "cpu",
        weight: 110,
        cpu_milli: 4_000,
        memory_mib: 8 * GIB,
        gpu: GpuDemand::None,
        models: None,
    },
    PodKind {
        name: "cpu-large",
        weight: 20,
        cpu_milli: 16_000,
        memory_mib: 64 * GIB,
        gpu: GpuDemand::None,
        models: None,
    },
    PodKind {
        name: "gpu2",
        weight: 60,
        cpu_milli: 16_000,
        memory_mib: 64 * GIB,
        gpu: GpuDemand::Whole { count: 2 },
        models: None,
    },
    PodKind {
        name: "gpu4",
        weight: 40,
        cpu_milli: 32_000,
        memory_mib: 128 * GIB,
        gpu: GpuDemand::Whole { count: 4 },
        models: None,
    },
    PodKind {
        name: "gpu8",
        weight: 15,
        cpu_milli: 48_000,
        memory_mib: 192 * GIB,
        gpu: GpuDemand::Whole { count: 8 },
        models: None,
    },
    PodKind {
        name: "gpu1-a100-h100",
        weight: 60,
        cpu_milli: 12_000,
        memory_mib: 64 * GIB,
        gpu: GpuDemand::Whole { count: 1 },
        models: Some("A100-80GB|H100-80GB"),
    },
    PodKind {
        name: "share500-t4",
        weight: 60,
        cpu_milli: 4_000,
        memory_mib: 8 * GIB,
        gpu: GpuDemand::Share { milli: 500 },
        models: Some("T4"),
    },
];

fn pick<T>(rng: &mut ChaCha8Rng, items: &[T], weight: impl Fn(&T) -> u32) -> usize {
    let total: u32 = items.iter().map(&weight).sum();
    let mut draw = rng.random_range(0..total);
    for (i, item) in items.iter().enumerate() {
        let w = weight(item);
        if draw < w {
            return i;
        }
        draw -= w;
    }
    items.len() - 1
}

fn node_spec(i: usize, kind: &NodeKind, cordoned: bool) -> NodeSpec {
    let name = format!("gpu-node-{i:05}");
    NodeSpec {
        gpus: (0..GPUS_PER_NODE)
            .map(|g| GpuSpec {
                uuid: format!("GPU-{name}-{g}"),
                memory_mib: kind.gpu_memory_mib,
            })
            .collect(),
        name,
        cpu_milli: kind.cpu_milli,
        memory_mib: kind.memory_mib,
        max_pods: 110,
        gpu_model: Some(kind.model.into()),
        labels: BTreeMap::from([
            (RACK_LABEL.to_string(), format!("rack-{:03}", i / 32)),
            (HOSTNAME_LABEL.to_string(), format!("gpu-node-{i:05}")),
            ("phalanx.dev/gpu-model".to_string(), kind.model.to_string()),
        ]),
        taints: Vec::new(),
        unschedulable: cordoned,
        scalar_resources: Vec::new(),
    }
}

/// One demand per pod kind, with model constraints resolved against `snapshot`.
fn demands(snapshot: &ClusterSnapshot) -> Vec<PodDemand> {
    POD_KINDS
        .iter()
        .map(|kind| {
            let models = kind.models.map_or(ModelConstraint::Any, |spec| {
                snapshot.models().constraint(spec)
            });
            PodDemand::new(kind.name, kind.cpu_milli, kind.memory_mib, kind.gpu, models)
                .expect("the benchmark pod kinds are valid")
        })
        .collect()
}

/// GPUs for `pod` on `node`, as a scheduler that had spread shares at random
/// would have left them: a share on any GPU that holds it, whole GPUs the lowest
/// free ones. `None` when the node has no room.
fn background_gpus(
    rng: &mut ChaCha8Rng,
    snapshot: &ClusterSnapshot,
    node: NodeId,
    gpu: GpuDemand,
) -> Option<GpuAssignment> {
    let gpus = &snapshot.node(node).gpus;
    match gpu {
        GpuDemand::None => Some(GpuAssignment::default()),
        GpuDemand::Share { milli } => {
            let fitting: Vec<usize> = (0..gpus.len())
                .filter(|&g| gpus[g].healthy && gpus[g].milli_free >= milli)
                .collect();
            let g = *fitting.get(rng.random_range(0..fitting.len().max(1)))?;
            Some(GpuAssignment::from_indices([g], milli))
        }
        GpuDemand::Whole { count } => {
            let free: Vec<usize> = (0..gpus.len())
                .filter(|&g| gpus[g].healthy && gpus[g].milli_free == MILLI_PER_GPU)
                .take(count as usize)
                .collect();
            (free.len() == count as usize).then(|| GpuAssignment::from_indices(free, MILLI_PER_GPU))
        }
    }
}

/// A cluster of `nodes` 8-GPU nodes, partly used, the same for every run.
pub fn cluster(nodes: usize) -> ClusterSnapshot {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED ^ nodes as u64);
    let mut snapshot = ClusterSnapshot::new();
    let mut kinds = Vec::with_capacity(nodes);
    for i in 0..nodes {
        let kind = &NODE_KINDS[pick(&mut rng, &NODE_KINDS, |k| k.weight)];
        snapshot
            .add_node(node_spec(i, kind, false))
            .expect("the benchmark nodes are valid");
        kinds.push(kind);
    }
    let pods = demands(&snapshot);
    for i in 0..nodes {
        let node = NodeId(i as u32);
        // A quarter idle, 15 % nearly full, the rest between a fifth and 4/5 used.
        let level = match rng.random_range(0..100) {
            0..25 => 0.0,
            25..40 => rng.random_range(0.9..=1.0),
            _ => rng.random_range(0.2..0.8),
        };
        let target = (level * (GPUS_PER_NODE as u32 * MILLI_PER_GPU) as f64) as u32;
        let (mut used, mut misses) = (0, 0);
        while used < target && misses < 8 {
            let pod = &pods[pick(&mut rng, &POD_KINDS, |k| k.weight)];
            let placed = background_gpus(&mut rng, &snapshot, node, pod.gpu).is_some_and(|gpus| {
                snapshot
                    .place(pod, &phalanx_engine::Placement { node, gpus })
                    .is_ok()
            });
            if placed {
                used += pod.gpu.total_milli() as u32;
            } else {
                misses += 1;
            }
        }
    }
    // Some GPUs fail and some nodes are cordoned, pods still on them.
    for (i, kind) in kinds.into_iter().enumerate() {
        for g in 0..GPUS_PER_NODE {
            if rng.random_range(0..1000) < 3 {
                snapshot
                    .set_gpu_health(NodeId(i as u32), g, false)
                    .expect("the node has this GPU");
            }
        }
        if rng.random_range(0..100) == 0 {
            snapshot
                .upsert_node(node_spec(i, kind, true))
                .expect("cordoning keeps the inventory");
        }
    }
    // Tie-break ranks are a fixed random order, as the simulator draws them.
    let mut ranks: Vec<u32> = (0..nodes as u32).collect();
    ranks.shuffle(&mut rng);
    snapshot.set_ranks(&ranks).expect("one rank per node");
    snapshot
}

/// `len` pods drawn from the mix (names numbered), the same for every run.
pub fn pod_stream(snapshot: &ClusterSnapshot, len: usize) -> Vec<PodDemand> {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED.rotate_left(17) ^ len as u64);
    let kinds = demands(snapshot);
    (0..len)
        .map(|i| {
            let mut pod = kinds[pick(&mut rng, &POD_KINDS, |k| k.weight)].clone();
            pod.name = format!("{}-{i}", pod.name);
            pod
        })
        .collect()
}

/// The mix as FGD's typical-pod set T (what a trace-driven FGD is given).
pub fn typical_pods(snapshot: &ClusterSnapshot) -> Vec<TypicalPod> {
    let total: u32 = POD_KINDS.iter().map(|k| k.weight).sum();
    demands(snapshot)
        .iter()
        .zip(&POD_KINDS)
        .map(|(pod, kind)| TypicalPod {
            shape: pod.shape(),
            weight: f64::from(kind.weight) / f64::from(total),
        })
        .collect()
}

/// Arrivals shown to an online policy before it is measured: enough for it to
/// learn its typical-pod set (it waits for 256).
pub const PRIMING_ARRIVALS: usize = 1_024;

/// A policy as the benchmarks run it. `fgd` gets the mix as its fixed workload,
/// as the paper's simulator gives it the trace's; `phalanx` learns the workload
/// online, as the scheduler builds it, from [`PRIMING_ARRIVALS`] arrivals of the
/// mix. The others take no workload.
pub fn policy(name: PolicyName, snapshot: &ClusterSnapshot) -> Box<dyn PlacementPolicy> {
    let workload = match name {
        PolicyName::Fgd => WorkloadSource::Fixed(typical_pods(snapshot)),
        _ => WorkloadSource::Online,
    };
    let mut policy = build_policy(
        name,
        &PolicyConfig {
            seed: SEED,
            workload,
        },
    );
    for pod in pod_stream(snapshot, PRIMING_ARRIVALS) {
        policy.observe_arrival(&pod);
    }
    policy
}

/// The production default, which gangs and capacity checks are measured with.
pub fn default_policy(snapshot: &ClusterSnapshot) -> Box<dyn PlacementPolicy> {
    policy(PolicyName::Phalanx, snapshot)
}

/// One scheduling cycle as the scheduler runs it (decide, then commit), with the
/// commit undone so that the snapshot holds the same pods afterwards. The undone
/// node has a new generation, so the next cycle recomputes its scores, exactly
/// the incremental cost that a committed placement causes. True if it placed.
pub fn cycle(
    snapshot: &mut ClusterSnapshot,
    policy: &mut dyn PlacementPolicy,
    pod: &PodDemand,
    scratch: &mut CycleScratch,
) -> bool {
    match schedule_one(snapshot, policy, pod, scratch) {
        CycleOutcome::Placed(placement) => {
            place_and_undo(snapshot, pod, &placement);
            true
        }
        CycleOutcome::Unschedulable { .. } => false,
    }
}

/// Commits `placement` and releases it again, leaving the snapshot's pods as
/// they were (and the node's generation moved on, as after a real placement).
pub fn place_and_undo(snapshot: &mut ClusterSnapshot, pod: &PodDemand, placement: &Placement) {
    snapshot
        .place(pod, placement)
        .expect("the engine's own placement commits");
    snapshot
        .release(pod, placement)
        .expect("what was just placed releases");
}

/// `n` gang members, one whole GPU each (data-parallel training workers).
pub fn gang_members(n: usize) -> Vec<PodDemand> {
    (0..n)
        .map(|i| {
            PodDemand::new(
                format!("worker-{i}"),
                8_000,
                64 * GIB,
                GpuDemand::Whole { count: 1 },
                ModelConstraint::Any,
            )
            .expect("a valid worker")
        })
        .collect()
}
