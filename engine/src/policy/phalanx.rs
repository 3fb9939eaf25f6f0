//! `phalanx`: our default policy.
//!
//! It keeps FGD's core, the integer-quantised fragmentation gradient, because
//! quantisation is what makes FGD consolidate: near-equal nodes tie and go to the
//! same preferred nodes (spec §10: exact gradients lose 1 point on the default
//! trace). It changes what happens inside those ties, which decide most placements:
//!
//! 1. **Consolidate**: among equally scored nodes, one already running pods beats
//!    an idle one, so idle nodes stay whole for multi-GPU pods and CPU-hungry pods.
//! 2. **Best-fit shares**: a GPU share goes to the tightest GPU among those FGD
//!    scores best (on the node and across tied nodes), so partly used GPUs close up
//!    instead of leaving gaps only tiny pods could fill.
//! 3. **Learns online**: in a live cluster there is no trace; the typical-pod set is
//!    learned from arriving pods, rebuilt on a geometric schedule, and caches are
//!    dropped only when the set really changed.
//!
//! Measured in the simulator (`phalanx-sim openb`); see the README for the figures.

use super::gradient::{FragmentationGradient, ShareChoice, WorkloadSource};
use super::PlacementPolicy;
use crate::node::NodeState;
use crate::{ClusterSnapshot, GpuAssignment, NodeId, PodDemand, MILLI_PER_GPU};

#[derive(Debug, Clone)]
pub struct PhalanxPolicy {
    gradient: FragmentationGradient,
}

impl PhalanxPolicy {
    pub fn new(workload: WorkloadSource) -> Self {
        PhalanxPolicy {
            gradient: FragmentationGradient::new(workload),
        }
    }
}

/// 1 if the node already runs something on its GPUs or CPU.
fn in_use(node: &NodeState) -> i64 {
    i64::from(node.pods > 0)
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
        let consolidation = in_use(snapshot.node(node));
        // Lexicographic: gradient score, then (shares) tightest gap, then in use.
        let gap_preference = if pod.gpu.is_share() {
            i64::from(MILLI_PER_GPU - eval.tightest_gap)
        } else {
            0
        };
        (i64::from(eval.score) << 32) | (gap_preference << 1) | consolidation
    }

    fn select_gpus(
        &mut self,
        snapshot: &ClusterSnapshot,
        node: NodeId,
        pod: &PodDemand,
    ) -> GpuAssignment {
        self.gradient
            .select_gpus(snapshot, node, pod, ShareChoice::Tightest)
    }
}
