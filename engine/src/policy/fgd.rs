//! `fgd`: Fragmentation Gradient Descent (Weng et al., ATC'23), faithful to the
//! paper's simulator: the node whose expected fragmentation grows least wins, on
//! the integer-quantised score, ties to the lowest node rank (spec §5).

use super::gradient::{FragmentationGradient, ShareChoice, WorkloadSource};
use super::PlacementPolicy;
use crate::{ClusterSnapshot, GpuAssignment, NodeId, PodDemand};

#[derive(Debug, Clone)]
pub struct FgdPolicy {
    gradient: FragmentationGradient,
}

impl FgdPolicy {
    pub fn new(workload: WorkloadSource) -> Self {
        FgdPolicy {
            gradient: FragmentationGradient::new(workload),
        }
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

    fn select_gpus(
        &mut self,
        snapshot: &ClusterSnapshot,
        node: NodeId,
        pod: &PodDemand,
    ) -> GpuAssignment {
        self.gradient
            .select_gpus(snapshot, node, pod, ShareChoice::LowestIndex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::gpu_node;
    use crate::{
        schedule_one, CycleOutcome, CycleScratch, GpuDemand, ModelConstraint, PodShape, TypicalPod,
    };

    fn typical(gpu: GpuDemand, weight: f64) -> TypicalPod {
        TypicalPod {
            shape: PodShape {
                cpu_milli: 1_000,
                gpu,
                models: ModelConstraint::Any,
            },
            weight,
        }
    }

    #[test]
    fn a_share_goes_where_it_closes_a_gap_not_where_it_opens_one() {
        // Workload: half 500-milli shares, half whole GPUs.
        let t = vec![
            typical(GpuDemand::Share { milli: 500 }, 0.5),
            typical(GpuDemand::Whole { count: 1 }, 0.5),
        ];
        let mut c = ClusterSnapshot::new();
        let a = c.add_node(gpu_node("a", 32_000, 2, "A100")).unwrap();
        let b = c.add_node(gpu_node("b", 32_000, 2, "A100")).unwrap();
        let half = PodDemand::new(
            "h",
            1_000,
            0,
            GpuDemand::Share { milli: 500 },
            ModelConstraint::Any,
        )
        .unwrap();
        c.place(
            &half,
            &crate::Placement {
                node: b,
                gpus: GpuAssignment::from_indices([1], 500),
            },
        )
        .unwrap();
        let mut fgd = FgdPolicy::new(WorkloadSource::Fixed(t));
        fgd.begin_cycle(&c, &half);
        // On b, GPU 1 has 500 free: filling it removes a 500 fragment for whole-GPU pods,
        // Δ = +250 -> trunc(100·σ(0.25)) = 56. On idle a, any GPU: Δ = −250 -> 43.
        assert_eq!(fgd.score(&c, b, &half), 56);
        assert_eq!(fgd.score(&c, a, &half), 43);
        let mut scratch = CycleScratch::default();
        match schedule_one(&c, &mut fgd, &half, &mut scratch) {
            CycleOutcome::Placed(p) => {
                assert_eq!(p.node, b);
                assert_eq!(p.gpus.as_slice()[0].index, 1);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ties_go_to_the_lowest_rank() {
        let t = vec![typical(GpuDemand::Whole { count: 1 }, 1.0)];
        let mut c = ClusterSnapshot::new();
        for name in ["x", "y", "z"] {
            c.add_node(gpu_node(name, 8_000, 1, "A100")).unwrap();
        }
        c.set_ranks(&[2, 0, 1]).unwrap();
        let p = PodDemand::new(
            "p",
            1_000,
            0,
            GpuDemand::Whole { count: 1 },
            ModelConstraint::Any,
        )
        .unwrap();
        let mut fgd = FgdPolicy::new(WorkloadSource::Fixed(t));
        let mut scratch = CycleScratch::default();
        match schedule_one(&c, &mut fgd, &p, &mut scratch) {
            CycleOutcome::Placed(placement) => assert_eq!(c.node(placement.node).name, "y"),
            other => panic!("{other:?}"),
        }
    }
}
