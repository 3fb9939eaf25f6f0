//! The FGD paper's heuristic baselines (spec §4.2–4.5). Each returns kube-scheduler
//! style integer scores and takes GPUs with the `best` selector.

use super::PlacementPolicy;
use crate::engine::gpu_select::best_fit_gpus;
use crate::engine::node::MAX_GPUS_PER_NODE;
use crate::engine::{ClusterSnapshot, GpuAssignment, GpuDemand, NodeId, PodDemand, MILLI_PER_GPU};

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

    fn select_gpus(&mut self, snapshot: &ClusterSnapshot, node: NodeId, pod: &PodDemand) -> GpuAssignment {
        best_fit_gpus(snapshot.node(node), pod.gpu)
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

    fn select_gpus(&mut self, snapshot: &ClusterSnapshot, node: NodeId, pod: &PodDemand) -> GpuAssignment {
        best_fit_gpus(snapshot.node(node), pod.gpu)
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

    fn select_gpus(&mut self, snapshot: &ClusterSnapshot, node: NodeId, pod: &PodDemand) -> GpuAssignment {
        best_fit_gpus(snapshot.node(node), pod.gpu)
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

    fn select_gpus(&mut self, snapshot: &ClusterSnapshot, node: NodeId, pod: &PodDemand) -> GpuAssignment {
        best_fit_gpus(snapshot.node(node), pod.gpu)
    }
}

