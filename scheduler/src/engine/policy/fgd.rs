//! `fgd`: Fragmentation Gradient Descent (Weng et al., ATC'23), faithful to the
//! paper's simulator: the node whose expected fragmentation grows least wins, on
//! the integer-quantised score, ties to the lowest node rank (spec §5).

use super::gradient::{FragmentationGradient, WorkloadSource};
use super::PlacementPolicy;
use crate::engine::gpu_select::lowest_free_gpus;
use crate::engine::{ClusterSnapshot, GpuAssignment, GpuDemand, NodeId, PodDemand};

#[derive(Debug, Clone)]
pub struct FgdPolicy {
    gradient: FragmentationGradient,
}

impl FgdPolicy {
    pub fn new(workload: WorkloadSource) -> Self {
        FgdPolicy { gradient: FragmentationGradient::new(workload) }
    }

}

impl PlacementPolicy for FgdPolicy {
    fn name(&self) -> &'static str {
        "fgd"
    }

    fn observe_arrival(&mut self, pod: &PodDemand) {
        self.gradient.observe_arrival(pod);
    }

    fn begin_cycle(&mut self, _: &ClusterSnapshot, pod: &PodDemand) {
        self.gradient.begin(pod);
    }

    fn score(&mut self, snapshot: &ClusterSnapshot, node: NodeId, pod: &PodDemand) -> i64 {
        i64::from(self.gradient.evaluate(snapshot, node, pod).score)
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
