//! `random`: a uniform choice among feasible nodes and among GPUs that fit a share.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::PlacementPolicy;
use crate::gpu_select::random_gpus;
use crate::{ClusterSnapshot, GpuAssignment, NodeId, PodDemand};

#[derive(Debug, Clone)]
pub struct RandomPolicy {
    rng: ChaCha8Rng,
}

impl RandomPolicy {
    pub fn new(seed: u64) -> Self {
        RandomPolicy {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }
}

impl PlacementPolicy for RandomPolicy {
    fn name(&self) -> &'static str {
        "random"
    }

    fn score(&mut self, _: &ClusterSnapshot, _: NodeId, _: &PodDemand) -> i64 {
        0
    }

    fn choose_node(&mut self, _: &ClusterSnapshot, _: &PodDemand, feasible: &[NodeId]) -> NodeId {
        if feasible.len() == 1 {
            return feasible[0];
        }
        feasible[self.rng.random_range(0..feasible.len())]
    }

    fn select_gpus(
        &mut self,
        snapshot: &ClusterSnapshot,
        node: NodeId,
        pod: &PodDemand,
    ) -> GpuAssignment {
        random_gpus(snapshot.node(node), pod.gpu, &mut self.rng)
    }
}
