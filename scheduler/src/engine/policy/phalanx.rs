//! `phalanx`: our default policy. Work in progress; see the module doc once tuned.

use super::gradient::{FragmentationGradient, WorkloadSource};
use super::PlacementPolicy;
use crate::engine::gpu_select::lowest_free_gpus;
use crate::engine::{ClusterSnapshot, GpuAssignment, GpuDemand, NodeId, PodDemand};

#[derive(Debug, Clone)]
pub struct PhalanxPolicy {
    gradient: FragmentationGradient,
}

impl PhalanxPolicy {
    pub fn new(workload: WorkloadSource) -> Self {
        PhalanxPolicy { gradient: FragmentationGradient::new(workload) }
    }
}

impl PlacementPolicy for PhalanxPolicy {
    fn name(&self) -> &'static str {
        "phalanx"
    }

    fn observe_arrival(&mut self, pod: &PodDemand) {
        self.gradient.observe_arrival(pod);
    }

    fn begin_cycle(&mut self, _: &ClusterSnapshot, pod: &PodDemand) {
        self.gradient.begin(pod);
    }

    fn score(&mut self, snapshot: &ClusterSnapshot, node: NodeId, pod: &PodDemand) -> i64 {
        let eval = self.gradient.evaluate(snapshot, node, pod);
        let n = snapshot.node(node);
        let gpu_left = i64::from(n.gpu_milli_free()) - pod.gpu.total_milli() as i64;
        (i64::from(eval.score) << 32) - gpu_left
    }

    fn select_gpus(&mut self, snapshot: &ClusterSnapshot, node: NodeId, pod: &PodDemand) -> GpuAssignment {
        match pod.gpu {
            GpuDemand::Share { milli } => {
                let eval = self.gradient.evaluate(snapshot, node, pod);
                GpuAssignment::from_indices([eval.share_gpu as usize], milli)
            }
            GpuDemand::Whole { count } => lowest_free_gpus(snapshot.node(node), count),
            GpuDemand::None => GpuAssignment::default(),
        }
    }
}
