//! The other end of the ruler: an upper bound on the GPU allocation any
//! placement could reach for the pods that have arrived (issue 19).
//!
//! A linear relaxation over node types and pod shapes, solved with `good_lp`
//! (the pure-Rust `microlp` solver). Nodes alike in CPU, memory, pod slots,
//! GPU count and model are one type; pods alike in CPU, memory, GPU demand and
//! allowed models one shape. `x[s][t]` pods of shape `s` go to type `t`:
//!
//! - a shape goes only where one pod of it fits an empty node (CPU, memory,
//!   GPU count, model);
//! - per type, CPU, memory, pod slots and GPU milli are not exceeded in sum;
//! - per type, whole GPUs plus shares above half a GPU (two of which never
//!   share one GPU) are at most the type's GPUs;
//! - per type and share size `m` above half a GPU, the sliver a share above
//!   `m - 1` leaves takes only shares below `1001 - m`: the other pods plus a
//!   whole GPU per such share fit the type's GPUs;
//! - no more pods of a shape than arrived.
//!
//! Maximising the GPU milli placed gives a bound no placement can pass: every
//! real placement is a feasible point (packing per node is relaxed away, and
//! CPU-only pods may be left out, as a failed pod is). Not tight: the gap
//! between it and a policy is an upper bound on what better placement could win.
//! It is loosest where CPU strands GPUs (the `cpu*` traces): leaving CPU-only
//! pods out frees their CPU, and CPU is counted per type, not per node.

use std::collections::BTreeMap;

use good_lp::{constraint, variable, Expression, ProblemVariables, Solution, SolverModel};
use phalanx_engine::{ClusterSnapshot, GpuDemand, NodeSpec};

use super::run::PreparedTrace;
use crate::trace::TracePod;

const MILLI_PER_GPU: f64 = 1000.0;

/// The bound for one arrival list.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AllocationBound {
    /// The most GPU milli any placement could allocate, as % of the cluster's.
    pub allocated_percent: f64,
    /// Pods in the arrived prefix, and how many distinct shapes and node types
    /// the program had.
    pub pods: usize,
    pub shapes: usize,
    pub node_types: usize,
}

/// Why no bound came back.
#[derive(Debug, thiserror::Error)]
pub enum BoundError {
    #[error("the cluster has no GPU capacity")]
    NoCapacity,
    #[error("the linear program could not be solved: {0}")]
    Solver(String),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct NodeType {
    cpu_milli: u64,
    memory_mib: u64,
    max_pods: u32,
    gpus: u32,
    model: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Shape {
    cpu_milli: u64,
    memory_mib: u64,
    /// GPU milli in all, and whether it is a share of one GPU.
    gpu_milli: u64,
    whole_gpus: u32,
    big_share: bool,
    /// Allowed models, `|`-joined as in the trace ("" = any).
    spec: String,
}

impl Shape {
    fn of(pod: &TracePod) -> Self {
        let (whole_gpus, big_share) = match pod.gpu {
            GpuDemand::None => (0, false),
            GpuDemand::Share { milli } => (0, f64::from(milli) > MILLI_PER_GPU / 2.0),
            GpuDemand::Whole { count } => (count, false),
        };
        Shape {
            cpu_milli: pod.cpu_milli,
            memory_mib: pod.memory_mib,
            gpu_milli: pod.gpu.total_milli(),
            whole_gpus,
            big_share,
            spec: pod.spec.clone(),
        }
    }

    /// The milli of a share of one GPU; `None` for whole GPUs or none.
    fn share_milli(&self) -> Option<f64> {
        (self.whole_gpus == 0 && self.gpu_milli > 0).then_some(self.gpu_milli as f64)
    }

    fn fits(&self, node: &NodeType) -> bool {
        let gpus_fit = match (self.gpu_milli, self.whole_gpus) {
            (0, _) => true,
            (_, 0) => node.gpus >= 1,
            (_, k) => node.gpus >= k,
        };
        let model_fits = self.gpu_milli == 0
            || self.spec.is_empty()
            || node
                .model
                .as_deref()
                .is_some_and(|m| self.spec.split('|').any(|allowed| allowed == m));
        self.cpu_milli <= node.cpu_milli
            && self.memory_mib <= node.memory_mib
            && node.max_pods >= 1
            && gpus_fit
            && model_fits
    }
}

/// The arrived prefix of `arrivals` at `percent` % of capacity: the pods whose
/// arrival the curve counts in that bucket or before (arrived milli below
/// `percent + 0.5` % of capacity), as [`super::curves`] buckets them.
pub fn arrived_prefix<'a>(
    pods: &'a [TracePod],
    arrivals: &[usize],
    capacity_milli: u64,
    percent: f64,
) -> Vec<&'a TracePod> {
    let limit = (percent + 0.5) * capacity_milli as f64 / 100.0;
    let mut arrived = 0u64;
    let mut prefix = Vec::new();
    for &i in arrivals {
        let pod = &pods[i];
        arrived += pod.gpu.total_milli();
        if arrived as f64 >= limit {
            break;
        }
        prefix.push(pod);
    }
    prefix
}

/// The upper bound on GPU allocation for `pods` on `nodes`.
pub fn allocation_bound(
    nodes: &[NodeSpec],
    pods: &[&TracePod],
) -> Result<AllocationBound, BoundError> {
    let mut types: BTreeMap<NodeType, u32> = BTreeMap::new();
    for node in nodes {
        let key = NodeType {
            cpu_milli: node.cpu_milli,
            memory_mib: node.memory_mib,
            max_pods: node.max_pods,
            gpus: node.gpus.len() as u32,
            model: node.gpu_model.clone(),
        };
        *types.entry(key).or_default() += 1;
    }
    let capacity: f64 = types
        .iter()
        .map(|(t, n)| f64::from(t.gpus) * f64::from(*n) * MILLI_PER_GPU)
        .sum();
    if capacity <= 0.0 {
        return Err(BoundError::NoCapacity);
    }
    // CPU-only pods add nothing to the objective and may be left out.
    let mut shapes: BTreeMap<Shape, u32> = BTreeMap::new();
    for pod in pods.iter().filter(|p| p.gpu != GpuDemand::None) {
        *shapes.entry(Shape::of(pod)).or_default() += 1;
    }

    let types: Vec<(NodeType, u32)> = types.into_iter().collect();
    let shapes: Vec<(Shape, u32)> = shapes.into_iter().collect();
    let mut vars = ProblemVariables::new();
    // x[s] holds (type index, variable) for the types shape s fits.
    let x: Vec<Vec<(usize, good_lp::Variable)>> = shapes
        .iter()
        .map(|(shape, _)| {
            types
                .iter()
                .enumerate()
                .filter(|(_, (t, _))| shape.fits(t))
                .map(|(ti, _)| (ti, vars.add(variable().min(0.0))))
                .collect()
        })
        .collect();

    let objective: Expression = shapes
        .iter()
        .zip(&x)
        .flat_map(|((shape, _), row)| row.iter().map(|(_, v)| shape.gpu_milli as f64 * *v))
        .sum();
    let mut model = vars.maximise(objective.clone()).using(good_lp::microlp);

    for ((_, count), row) in shapes.iter().zip(&x) {
        let placed: Expression = row.iter().map(|(_, v)| *v).sum();
        model = model.with(constraint!(placed <= f64::from(*count)));
    }
    // Every share size above half a GPU, less one milli.
    let mut sliver_thresholds: Vec<f64> = shapes
        .iter()
        .filter_map(|(s, _)| s.share_milli())
        .filter(|m| *m > MILLI_PER_GPU / 2.0)
        .map(|m| m - 1.0)
        .collect();
    sliver_thresholds.sort_by(f64::total_cmp);
    sliver_thresholds.dedup();
    for (ti, (node_type, n)) in types.iter().enumerate() {
        let n = f64::from(*n);
        let on_type = |weight: &dyn Fn(&Shape) -> f64| -> Expression {
            shapes
                .iter()
                .zip(&x)
                .flat_map(|((shape, _), row)| {
                    row.iter()
                        .filter(|(t, _)| *t == ti)
                        .map(move |(_, v)| weight(shape) * *v)
                })
                .sum()
        };
        let cpu = on_type(&|s| s.cpu_milli as f64);
        let memory = on_type(&|s| s.memory_mib as f64);
        let slots = on_type(&|_| 1.0);
        let milli = on_type(&|s| s.gpu_milli as f64);
        let exclusive = on_type(&|s| f64::from(s.whole_gpus) + f64::from(u8::from(s.big_share)));
        let gpus = f64::from(node_type.gpus);
        // Slivers: a GPU holding a share above θ (never two of them) has less
        // than 1000 − θ left, which only shares below 1000 − θ can use. So the
        // other pods, plus a whole GPU per such share, fit the type's GPUs.
        for &theta in &sliver_thresholds {
            let rest = on_type(&|s| {
                if s.share_milli().is_some_and(|m| m > theta) {
                    MILLI_PER_GPU
                } else if s.share_milli().is_some_and(|m| m < MILLI_PER_GPU - theta) {
                    0.0
                } else {
                    s.gpu_milli as f64
                }
            });
            model = model.with(constraint!(rest <= n * gpus * MILLI_PER_GPU));
        }
        model = model
            .with(constraint!(cpu <= n * node_type.cpu_milli as f64))
            .with(constraint!(memory <= n * node_type.memory_mib as f64))
            .with(constraint!(slots <= n * f64::from(node_type.max_pods)))
            .with(constraint!(milli <= n * gpus * MILLI_PER_GPU))
            .with(constraint!(exclusive <= n * gpus));
    }

    let solution = model
        .solve()
        .map_err(|e| BoundError::Solver(e.to_string()))?;
    let placed = solution.eval(&objective);
    Ok(AllocationBound {
        allocated_percent: (100.0 * placed / capacity).min(100.0),
        pods: pods.len(),
        shapes: shapes.len(),
        node_types: types.len(),
    })
}

/// The bound at each of `percents` % arrived (outer) for each seed's arrival
/// list (inner, from [`super::arrivals::seed_arrivals`]) of a trace.
pub fn seed_bounds(
    nodes: &[NodeSpec],
    cluster: &ClusterSnapshot,
    trace: &PreparedTrace,
    arrivals: &[Vec<usize>],
    percents: &[f64],
) -> Result<Vec<Vec<AllocationBound>>, BoundError> {
    let capacity = cluster.gpu_milli_capacity();
    percents
        .iter()
        .map(|&percent| {
            arrivals
                .iter()
                .map(|arrived| {
                    let prefix = arrived_prefix(&trace.pods, arrived, capacity, percent);
                    allocation_bound(nodes, &prefix)
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn node(name: &str, cpu: u64, gpus: u32, model: &str) -> NodeSpec {
        crate::openb::test_gpu_node(name, cpu, gpus, model)
    }

    fn pod(cpu: u64, gpu: GpuDemand, spec: &str) -> TracePod {
        TracePod {
            name: "p".into(),
            cpu_milli: cpu,
            memory_mib: 1,
            gpu,
            spec: spec.into(),
            qos: Default::default(),
            times: Default::default(),
        }
    }

    fn bound(nodes: &[NodeSpec], pods: &[TracePod]) -> f64 {
        let refs: Vec<&TracePod> = pods.iter().collect();
        allocation_bound(nodes, &refs).unwrap().allocated_percent
    }

    #[test]
    fn what_fits_counts_and_no_more_than_the_gpus() {
        let nodes = [node("a", 64_000, 8, "V100"), node("b", 64_000, 8, "V100")];
        let half: Vec<TracePod> = (0..8)
            .map(|_| pod(1_000, GpuDemand::Whole { count: 1 }, ""))
            .collect();
        assert!((bound(&nodes, &half) - 50.0).abs() < 1e-6);
        let too_many: Vec<TracePod> = (0..40)
            .map(|_| pod(1_000, GpuDemand::Whole { count: 1 }, ""))
            .collect();
        assert!((bound(&nodes, &too_many) - 100.0).abs() < 1e-6);
    }

    #[test]
    fn cpu_models_and_big_shares_limit_the_bound() {
        let nodes = [node("a", 8_000, 8, "V100")];
        // Each pod takes a quarter of the CPU: only four GPUs can be used.
        let cpu_bound: Vec<TracePod> = (0..8)
            .map(|_| pod(2_000, GpuDemand::Whole { count: 1 }, ""))
            .collect();
        assert!((bound(&nodes, &cpu_bound) - 50.0).abs() < 1e-6);
        // Pods for another model place nothing.
        let elsewhere = [pod(1, GpuDemand::Whole { count: 2 }, "T4|P100")];
        assert_eq!(bound(&nodes, &elsewhere), 0.0);
        // Sixteen 0.6-GPU shares: two never share a GPU, so eight at most.
        let shares: Vec<TracePod> = (0..16)
            .map(|_| pod(1, GpuDemand::Share { milli: 600 }, ""))
            .collect();
        assert!((bound(&nodes, &shares) - 60.0).abs() < 1e-6);
    }

    #[test]
    fn a_big_shares_sliver_takes_only_small_shares() {
        let nodes = [node("a", 64_000, 8, "V100")];
        // 810-milli shares leave 190 that 500-milli ones cannot use: the best is
        // four GPUs of one 810 each and four of two 500s (7,240 of 8,000), not
        // the 8,000 the GPU milli alone would allow.
        let mut pods: Vec<TracePod> = (0..8)
            .map(|_| pod(1, GpuDemand::Share { milli: 810 }, ""))
            .collect();
        pods.extend((0..8).map(|_| pod(1, GpuDemand::Share { milli: 500 }, "")));
        assert!(
            (bound(&nodes, &pods) - 90.5).abs() < 1e-6,
            "{}",
            bound(&nodes, &pods)
        );
        // 150-milli shares fit the slivers: four of them beside the four 810s
        // make 98 %; the bound may say more (slivers are pooled), never less.
        pods.extend((0..8).map(|_| pod(1, GpuDemand::Share { milli: 150 }, "")));
        let with_small = bound(&nodes, &pods);
        assert!((98.0..=100.0).contains(&with_small), "{with_small}");
    }

    #[test]
    fn the_prefix_stops_where_the_curve_bucket_ends() {
        let pods: Vec<TracePod> = (0..10)
            .map(|_| pod(1, GpuDemand::Whole { count: 1 }, ""))
            .collect();
        let arrivals: Vec<usize> = (0..10).collect();
        // 4 GPUs of capacity: 100 % arrived is four pods (the fifth is 125 %).
        assert_eq!(arrived_prefix(&pods, &arrivals, 4_000, 100.0).len(), 4);
        assert_eq!(arrived_prefix(&pods, &arrivals, 4_000, 50.0).len(), 2);
    }
}
