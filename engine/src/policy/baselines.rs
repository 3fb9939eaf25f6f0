//! The FGD paper's heuristic baselines (spec §4.2–4.5). Each returns kube-scheduler
//! style integer scores and takes GPUs with the `best` selector.

use super::PlacementPolicy;
use crate::node::MAX_GPUS_PER_NODE;
use crate::{ClusterSnapshot, GpuDemand, NodeId, PodDemand, MILLI_PER_GPU};

/// `dotprod`: the node whose free resources have the smallest dot product with the
/// pod's demand (CPU and summed GPU, each normalised by the largest node) wins.
#[derive(Debug, Clone, Copy, Default)]
pub struct DotProdPolicy;

impl PlacementPolicy for DotProdPolicy {
    fn name(&self) -> &'static str {
        "dotprod"
    }

    fn score(&mut self, snapshot: &ClusterSnapshot, node: NodeId, pod: &PodDemand) -> i64 {
        let n = snapshot.node(node);
        let max_cpu = snapshot.max_node_cpu_milli() as f64;
        let max_gpu = snapshot.max_node_gpu_milli() as f64;
        let dot = (n.cpu_milli_free() as f64 / max_cpu) * (pod.cpu_milli as f64 / max_cpu)
            + (f64::from(n.gpu_milli_free()) / max_gpu) * (pod.gpu.total_milli() as f64 / max_gpu);
        (100.0 * (1.0 - dot / 2.0)) as i64
    }
}

/// `clustering`: GPU pods of one kind (share, 1-, 2-, 4-, 8-GPU) gather on the same
/// nodes; small, busy nodes get a bonus.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClusteringPolicy;

impl PlacementPolicy for ClusteringPolicy {
    fn name(&self) -> &'static str {
        "clustering"
    }

    fn score(&mut self, snapshot: &ClusterSnapshot, node: NodeId, pod: &PodDemand) -> i64 {
        let Some(tag) = pod.gpu.tag() else { return 0 };
        let n = snapshot.node(node);
        let max_gpu = snapshot.max_node_gpu_milli() as i64;
        let base = (25 * (max_gpu - i64::from(n.gpu_milli_free()))).max(0) / max_gpu;
        let distinct = n.distinct_gpu_pod_tags();
        if n.gpu_pods_tagged(tag) > 0 {
            base + if distinct == 1 { 75 } else { 50 }
        } else if distinct == 0 {
            base + 25
        } else {
            base
        }
    }
}

/// `packing`: a partly used GPU first (tightest wins), then free GPUs on a node
/// already in use, then an idle node (smaller ones first).
#[derive(Debug, Clone, Copy, Default)]
pub struct PackingPolicy;

impl PlacementPolicy for PackingPolicy {
    fn name(&self) -> &'static str {
        "packing"
    }

    fn score(&mut self, snapshot: &ClusterSnapshot, node: NodeId, pod: &PodDemand) -> i64 {
        if pod.gpu == GpuDemand::None {
            return 0;
        }
        let n = snapshot.node(node);
        let g = n.gpu_count() as i64;
        let fully_free = i64::from(n.fully_free_gpus());
        if fully_free == g {
            return (33 - fully_free).max(fully_free);
        }
        let m = pod.gpu.milli_per_gpu();
        let mut free = n.free_list();
        // Ascending free, ties in index order: sort_by_key is stable.
        free.as_mut_slice().sort();
        let mut taken = 0;
        let mut untouched = 0i64;
        let mut percent_sum = 0i64;
        for &f in free.as_slice().iter().take(MAX_GPUS_PER_NODE) {
            if taken == pod.gpu.gpu_count() {
                break;
            }
            if f >= m {
                taken += 1;
                if f == MILLI_PER_GPU {
                    untouched += 1;
                }
                percent_sum += i64::from(f) * 100 / i64::from(MILLI_PER_GPU);
            }
        }
        if untouched > 0 {
            (50 - untouched).max(33)
        } else {
            (100 - percent_sum / 10).max(50)
        }
    }
}

/// `bestfit`: the node left with the least free CPU and GPU (equal weights) wins.
#[derive(Debug, Clone, Copy, Default)]
pub struct BestFitPolicy;

impl PlacementPolicy for BestFitPolicy {
    fn name(&self) -> &'static str {
        "bestfit"
    }

    fn score(&mut self, snapshot: &ClusterSnapshot, node: NodeId, pod: &PodDemand) -> i64 {
        let n = snapshot.node(node);
        let cpu_left = n.cpu_milli_free() as f64 - pod.cpu_milli as f64;
        let gpu_left = f64::from(n.gpu_milli_free()) - pod.gpu.total_milli() as f64;
        let left = 0.5 * cpu_left / snapshot.max_node_cpu_milli() as f64
            + 0.5 * gpu_left / snapshot.max_node_gpu_milli() as f64;
        (100.0 * (1.0 - left)) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::gpu_node;
    use crate::{GpuAssignment, GpuShare, ModelConstraint, Placement};

    /// One node of `gpus` GPUs with `cpu` milli-CPU, plus an 8-GPU, 128-core node
    /// so the normalisers are the spec's MAX_GPU = 8000 and MAX_CPU = 128000.
    fn cluster(cpu: u64, gpus: usize) -> ClusterSnapshot {
        let mut c = ClusterSnapshot::new();
        for (name, cpu, n) in [("a", cpu, gpus), ("big", 128_000, 8)] {
            c.add_node(gpu_node(name, cpu, n, "T4")).unwrap();
        }
        c
    }

    fn pod(cpu: u64, gpu: GpuDemand) -> PodDemand {
        PodDemand::new("p", cpu, 0, gpu, ModelConstraint::Any).unwrap()
    }

    fn put(c: &mut ClusterSnapshot, cpu: u64, gpu: GpuDemand, gpus: &[(u8, u32)]) {
        let mut a = GpuAssignment::default();
        for &(index, milli) in gpus {
            a.push(GpuShare { index, milli });
        }
        c.place(
            &pod(cpu, gpu),
            &Placement {
                node: NodeId(0),
                gpus: a,
            },
        )
        .unwrap();
    }

    #[test]
    fn dotprod_prefers_the_smallest_free_demand_product() {
        // Node a: 64 cores, 4 GPUs free. Pod: 16 cores, 1 GPU.
        let c = cluster(64_000, 4);
        let s = DotProdPolicy.score(&c, NodeId(0), &pod(16_000, GpuDemand::Whole { count: 1 }));
        // dot = (64/128)(16/128) + (4000/8000)(1000/8000) = 0.0625 + 0.0625 = 0.125; trunc(100·(1 − 0.0625)) = 93
        assert_eq!(s, 93);
    }

    #[test]
    fn bestfit_scores_the_tighter_node_higher() {
        let c = cluster(64_000, 4);
        let p = pod(16_000, GpuDemand::Whole { count: 1 });
        // L = 0.5·(48/128) + 0.5·(3000/8000) = 0.375 -> 62
        assert_eq!(BestFitPolicy.score(&c, NodeId(0), &p), 62);
        // big: L = 0.5·(112/128) + 0.5·(7000/8000) = 0.875 -> 12
        assert_eq!(BestFitPolicy.score(&c, NodeId(1), &p), 12);
    }

    #[test]
    fn packing_prefers_partly_used_gpus_then_used_nodes_then_small_idle_nodes() {
        let mut c = cluster(64_000, 4);
        let share = pod(1_000, GpuDemand::Share { milli: 300 });
        // Idle nodes: max(33 − F, F): 4 GPUs -> 29, 8 GPUs -> 25.
        assert_eq!(PackingPolicy.score(&c, NodeId(0), &share), 29);
        assert_eq!(PackingPolicy.score(&c, NodeId(1), &share), 25);
        put(&mut c, 1_000, GpuDemand::Share { milli: 500 }, &[(0, 500)]);
        // The 500-free GPU is the tightest that fits: 100 − 500·100/1000/10 = 95.
        assert_eq!(PackingPolicy.score(&c, NodeId(0), &share), 95);
        // A whole GPU on a used node: one untouched device taken -> max(50 − 1, 33) = 49.
        assert_eq!(
            PackingPolicy.score(&c, NodeId(0), &pod(1_000, GpuDemand::Whole { count: 1 })),
            49
        );
        assert_eq!(
            PackingPolicy.score(&c, NodeId(0), &pod(1_000, GpuDemand::None)),
            0
        );
    }

    #[test]
    fn clustering_gathers_pods_of_one_kind() {
        let mut c = cluster(64_000, 4);
        let share = pod(1_000, GpuDemand::Share { milli: 300 });
        // Idle 4-GPU node: base = 25·(8000 − 4000)/8000 = 12, no tags yet: +25.
        assert_eq!(ClusteringPolicy.score(&c, NodeId(0), &share), 37);
        put(&mut c, 1_000, GpuDemand::Share { milli: 500 }, &[(0, 500)]);
        // base = 25·(8000 − 3500)/8000 = 14; only share pods there: +75.
        assert_eq!(ClusteringPolicy.score(&c, NodeId(0), &share), 89);
        // A whole-GPU pod finds a node of another kind: base only.
        assert_eq!(
            ClusteringPolicy.score(&c, NodeId(0), &pod(1_000, GpuDemand::Whole { count: 1 })),
            14
        );
        put(&mut c, 1_000, GpuDemand::Whole { count: 1 }, &[(1, 1000)]);
        // Two kinds now: +50 for a kind that is present.
        assert_eq!(
            ClusteringPolicy.score(&c, NodeId(0), &share),
            50 + 25 * (8000 - 2500) / 8000
        );
    }
}
