//! Fragmentation gradient: how much a placement would change a node's expected
//! fragmentation F (spec §5), with the caches that make it cheap.
//!
//! A node's evaluation for a pod shape depends only on that node's state, so it is
//! cached per (shape, node) against the node's generation and the workload epoch.
//! Placing a pod changes one node; only that node is evaluated again.

use std::collections::HashMap;

use crate::fragmentation::node_fragmentation;
use crate::gpu_select::lowest_free_gpus;
use crate::node::{FreeList, NodeState};
use crate::workload::{OnlineWorkload, TypicalPod};
use crate::{ClusterSnapshot, GpuAssignment, GpuDemand, NodeId, PodDemand, PodShape};

/// Where the typical-pod set T comes from.
#[derive(Debug, Clone)]
pub enum WorkloadSource {
    /// Known in advance (FGD's assumption: the whole trace's distribution).
    Fixed(Vec<TypicalPod>),
    /// Learned online from the pods that have arrived so far, as a live cluster must.
    Online,
}

/// Pod shapes whose per-node evaluations are cached at once. Each shape's cache
/// is one entry per node, so shapes must not grow without bound: the extender
/// sees shapes from request bodies anyone can send. Past this many the caches
/// start afresh (a recomputation, never a wrong score); real clusters run far
/// fewer distinct shapes.
pub const MAX_CACHED_SHAPES: usize = 256;

/// FGD's quantised score of a fragmentation change Δ (milli): trunc(100·σ(Δ/1000)).
/// Δ = 0 scores 50, and the truncation makes near-equal nodes tie (spec §5.4).
pub fn quantised_score(delta: f64) -> i32 {
    (100.0 / (1.0 + (-delta / 1000.0).exp())) as i32
}

/// One node's evaluation for one pod shape.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GradientEval {
    /// FGD's quantised node score (0..=100).
    pub score: i32,
    /// F(n) − F(n ⊕ p) for the chosen device, in milli; higher is better.
    pub delta: f64,
    /// For a share: the device FGD would choose (lowest index with the best score).
    pub share_gpu: u8,
    /// For a share: among devices with the best score, the one left with the
    /// smallest gap (best fit), and that gap in milli.
    pub tightest_gpu: u8,
    pub tightest_gap: u32,
}

#[derive(Debug, Clone, Copy, Default)]
struct Cached<T> {
    key: u64,
    value: T,
}

/// Computes and caches fragmentation gradients for one policy instance.
#[derive(Debug, Clone)]
pub struct FragmentationGradient {
    online: Option<OnlineWorkload>,
    typical: Vec<TypicalPod>,
    /// The smallest share of one GPU among `typical` (milli), if any.
    smallest_share: Option<u32>,
    /// Bumped whenever `typical` changes; part of every cache key.
    epoch: u32,
    shape_ids: HashMap<PodShape, usize>,
    current_shape: usize,
    before: Vec<Cached<f64>>,
    evals: Vec<Vec<Cached<GradientEval>>>,
}

impl FragmentationGradient {
    pub fn new(source: WorkloadSource) -> Self {
        let (online, typical) = match source {
            WorkloadSource::Fixed(t) => (None, t),
            WorkloadSource::Online => (Some(OnlineWorkload::new()), Vec::new()),
        };
        FragmentationGradient {
            online,
            smallest_share: smallest_share(&typical),
            typical,
            epoch: 1,
            shape_ids: HashMap::new(),
            current_shape: 0,
            before: Vec::new(),
            evals: Vec::new(),
        }
    }

    /// Learns from an arriving pod when the workload is online. T is rebuilt on
    /// [`OnlineWorkload`]'s schedule and cached scores are dropped only when T
    /// changed materially.
    pub fn observe_arrival(&mut self, pod: &PodDemand) {
        let Some(learned) = self.online.as_mut().and_then(|o| o.observe(pod.shape())) else {
            return;
        };
        if materially_different(&self.typical, &learned) {
            self.smallest_share = smallest_share(&learned);
            self.typical = learned;
            self.epoch = self.epoch.wrapping_add(1).max(1);
        }
    }

    /// The smallest share of one GPU the workload asks for (milli); `None`
    /// when it asks for none or nothing is learned yet. A free part below it
    /// fits no pod of the workload.
    pub fn smallest_share(&self) -> Option<u32> {
        self.smallest_share
    }

    /// Resolves the pod's shape once per cycle.
    pub fn begin(&mut self, pod: &PodDemand) {
        if self.shape_ids.len() >= MAX_CACHED_SHAPES && !self.shape_ids.contains_key(&pod.shape()) {
            self.shape_ids.clear();
            self.evals.clear();
        }
        let next = self.shape_ids.len();
        self.current_shape = *self.shape_ids.entry(pod.shape()).or_insert(next);
        if self.current_shape == self.evals.len() {
            self.evals.push(Vec::new());
        }
    }

    fn key(&self, node: &NodeState) -> u64 {
        (u64::from(self.epoch) << 32) | u64::from(node.generation)
    }

    /// F(n) of the node as it stands.
    pub fn fragmentation(&mut self, snapshot: &ClusterSnapshot, node: NodeId) -> f64 {
        let state = snapshot.node(node);
        let key = self.key(state);
        let i = node.index();
        if self.before.len() <= i {
            self.before
                .resize(snapshot.len().max(i + 1), Cached::default());
        }
        if self.before[i].key != key {
            let f = node_fragmentation(
                &self.typical,
                state.cpu_milli_free(),
                state.model,
                state.free_list().as_slice(),
            );
            self.before[i] = Cached { key, value: f };
        }
        self.before[i].value
    }

    /// The evaluation of placing the current cycle's pod on `node` (where it fits).
    pub fn evaluate(
        &mut self,
        snapshot: &ClusterSnapshot,
        node: NodeId,
        pod: &PodDemand,
    ) -> GradientEval {
        let state = snapshot.node(node);
        let key = self.key(state);
        let i = node.index();
        let shape = self.current_shape;
        if self.evals[shape].len() <= i {
            self.evals[shape].resize(snapshot.len().max(i + 1), Cached::default());
        }
        if self.evals[shape][i].key == key {
            return self.evals[shape][i].value;
        }
        let before = self.fragmentation(snapshot, node);
        let value = evaluate_uncached(&self.typical, state, pod, before);
        self.evals[shape][i] = Cached { key, value };
        value
    }
}

fn smallest_share(typical: &[TypicalPod]) -> Option<u32> {
    typical
        .iter()
        .filter_map(|t| match t.shape.gpu {
            GpuDemand::Share { milli } => Some(milli),
            _ => None,
        })
        .min()
}

/// True when two typical sets differ in membership or any weight moved by more than
/// 5 % of itself (weights below 1 % are compared as if they were 1 %).
fn materially_different(old: &[TypicalPod], new: &[TypicalPod]) -> bool {
    if old.len() != new.len() {
        return true;
    }
    new.iter().any(|n| {
        old.iter()
            .find(|o| o.shape == n.shape)
            .is_none_or(|o| (o.weight - n.weight).abs() > 0.05 * o.weight.max(0.01))
    })
}

/// Which GPU an FGD-family policy gives a share among the best-scored ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareChoice {
    /// The lowest index (FGD as published).
    LowestIndex,
    /// The one left with the smallest gap (phalanx).
    Tightest,
}

impl FragmentationGradient {
    /// The GPUs for `pod` on `node`: shares as `choice` says, whole GPUs the
    /// lowest-indexed free ones (which ones does not change F, spec §5.4).
    pub fn select_gpus(
        &mut self,
        snapshot: &ClusterSnapshot,
        node: NodeId,
        pod: &PodDemand,
        choice: ShareChoice,
    ) -> GpuAssignment {
        match pod.gpu {
            GpuDemand::Share { milli } => {
                let eval = self.evaluate(snapshot, node, pod);
                let gpu = match choice {
                    ShareChoice::LowestIndex => eval.share_gpu,
                    ShareChoice::Tightest => eval.tightest_gpu,
                };
                GpuAssignment::from_indices([gpu as usize], milli)
            }
            GpuDemand::Whole { count } => lowest_free_gpus(snapshot.node(node), count),
            GpuDemand::None => GpuAssignment::default(),
        }
    }
}

fn evaluate_uncached(
    typical: &[TypicalPod],
    node: &NodeState,
    pod: &PodDemand,
    before: f64,
) -> GradientEval {
    let cpu_after = node.cpu_milli_free().saturating_sub(pod.cpu_milli);
    let free = node.free_list();
    let m = pod.gpu.milli_per_gpu();
    if pod.gpu.is_share() {
        let mut best: Option<GradientEval> = None;
        for (g, &f) in free.as_slice().iter().enumerate() {
            if f < m {
                continue;
            }
            let mut after_free = free;
            after_free.as_mut_slice()[g] -= m;
            let delta =
                before - node_fragmentation(typical, cpu_after, node.model, after_free.as_slice());
            let score = quantised_score(delta);
            let gap = f - m;
            match &mut best {
                Some(b) if score < b.score => {}
                Some(b) if score == b.score => {
                    if gap < b.tightest_gap {
                        b.tightest_gap = gap;
                        b.tightest_gpu = g as u8;
                    }
                }
                _ => {
                    best = Some(GradientEval {
                        score,
                        delta,
                        share_gpu: g as u8,
                        tightest_gpu: g as u8,
                        tightest_gap: gap,
                    })
                }
            }
        }
        return best.unwrap_or_default();
    }
    let after_free = take_tightest(free, m, pod.gpu.gpu_count());
    let delta = before - node_fragmentation(typical, cpu_after, node.model, after_free.as_slice());
    GradientEval {
        score: quantised_score(delta),
        delta,
        ..GradientEval::default()
    }
}

/// Removes `m` from the first `k` devices, in ascending-free order, that hold `m`.
fn take_tightest(mut free: FreeList, m: u32, k: u32) -> FreeList {
    if k == 0 || m == 0 {
        return free;
    }
    let mut order: [u8; crate::node::MAX_GPUS_PER_NODE] = [0; crate::node::MAX_GPUS_PER_NODE];
    let n = free.as_slice().len();
    for (i, slot) in order.iter_mut().enumerate().take(n) {
        *slot = i as u8;
    }
    order[..n].sort_by_key(|&i| free.as_slice()[i as usize]);
    let mut taken = 0;
    for &i in &order[..n] {
        if taken == k {
            break;
        }
        let f = &mut free.as_mut_slice()[i as usize];
        if *f >= m {
            *f -= m;
            taken += 1;
        }
    }
    free
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_weight_drift_keeps_the_caches() {
        use crate::{GpuDemand, ModelConstraint};
        let shape = |milli| PodShape {
            cpu_milli: 1,
            gpu: GpuDemand::Share { milli },
            models: ModelConstraint::Any,
        };
        let a = vec![
            TypicalPod {
                shape: shape(500),
                weight: 0.6,
            },
            TypicalPod {
                shape: shape(200),
                weight: 0.4,
            },
        ];
        let mut b = a.clone();
        b[0].weight = 0.61;
        b[1].weight = 0.39;
        assert!(!materially_different(&a, &b));
        b[1].weight = 0.30;
        assert!(materially_different(&a, &b));
        assert!(materially_different(&a, &a[..1]));
    }

    #[test]
    fn cached_shapes_stay_bounded() {
        use crate::ModelConstraint;
        let mut gradient = FragmentationGradient::new(WorkloadSource::Online);
        for cpu in 0..(MAX_CACHED_SHAPES as u64 * 3) {
            let pod = PodDemand::new(
                "p",
                cpu,
                1,
                GpuDemand::Whole { count: 1 },
                ModelConstraint::Any,
            )
            .expect("valid pod");
            gradient.begin(&pod);
            assert!(gradient.shape_ids.len() <= MAX_CACHED_SHAPES);
            assert_eq!(gradient.evals.len(), gradient.shape_ids.len());
            assert_eq!(gradient.evals.len(), gradient.current_shape + 1);
        }
    }

    #[test]
    fn quantisation_matches_the_spec_facts() {
        assert_eq!(quantised_score(0.0), 50);
        assert_eq!(
            quantised_score(-1.0),
            49,
            "any tiny increase already loses a point"
        );
        // Near Δ = 0 one step is about 40 milli.
        assert_eq!(quantised_score(39.0), 50);
        assert_eq!(quantised_score(41.0), 51);
        assert!(quantised_score(-1e9) >= 0 && quantised_score(1e9) <= 100);
    }
}
