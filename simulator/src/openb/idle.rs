//! Where a policy's unallocated GPU sits (issue 19's decomposition), read off
//! the cluster at 100 % arrived in the categories the README uses.

use phalanx_engine::{ClusterSnapshot, GpuDemand, TypicalPod};

const MILLI_PER_GPU: u32 = 1000;

/// A free part that at most this share of the workload's GPU pods fit is a
/// sliver.
pub const RARE_FIT: f64 = 0.05;

/// Idle GPU milli by where it sits, as % of the cluster's GPU capacity.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct IdleBreakdown {
    /// Free parts of partly used GPUs that at most [`RARE_FIT`] of the
    /// workload's GPU pods could use (the 190 milli an 810-milli share leaves
    /// on the default trace, which only its few shares of 190 or less fit).
    pub slivers: f64,
    /// Other free parts of partly used GPUs.
    pub partial_gaps: f64,
    /// Whole free GPUs on nodes without the CPU any GPU pod of the workload asks
    /// for.
    pub stranded_whole: f64,
    /// Whole free GPUs a pod could still use.
    pub free_whole: f64,
}

impl IdleBreakdown {
    /// All of it: the unallocated GPU %.
    pub fn total(&self) -> f64 {
        self.slivers + self.partial_gaps + self.stranded_whole + self.free_whole
    }

    /// The mean of several (e.g. over seeds).
    pub fn mean(all: &[IdleBreakdown]) -> IdleBreakdown {
        let n = all.len().max(1) as f64;
        let sum = |f: fn(&IdleBreakdown) -> f64| all.iter().map(f).sum::<f64>() / n;
        IdleBreakdown {
            slivers: sum(|b| b.slivers),
            partial_gaps: sum(|b| b.partial_gaps),
            stranded_whole: sum(|b| b.stranded_whole),
            free_whole: sum(|b| b.free_whole),
        }
    }
}

/// Reads the breakdown off `cluster`, judging usability by the workload's
/// typical pods (FGD's workload model: the shapes the trace asks for).
pub fn idle_breakdown(cluster: &ClusterSnapshot, typical: &[TypicalPod]) -> IdleBreakdown {
    // The share of the workload's GPU pods (by weight) a free part of `f`
    // milli fits.
    let gpu_pods: Vec<(u32, f64)> = typical
        .iter()
        .filter_map(|t| match t.shape.gpu {
            GpuDemand::Share { milli } => Some((milli, t.weight)),
            GpuDemand::Whole { .. } => Some((MILLI_PER_GPU, t.weight)),
            GpuDemand::None => None,
        })
        .collect();
    let all_weight: f64 = gpu_pods.iter().map(|(_, w)| w).sum();
    let fit_share = |free: u32| {
        if all_weight <= 0.0 {
            return 0.0;
        }
        gpu_pods
            .iter()
            .filter(|(need, _)| *need <= free)
            .map(|(_, w)| w)
            .sum::<f64>()
            / all_weight
    };
    let least_cpu = typical
        .iter()
        .filter(|t| t.shape.gpu != GpuDemand::None)
        .map(|t| t.shape.cpu_milli)
        .min()
        .unwrap_or(0);
    let mut milli = IdleBreakdown::default();
    for node in cluster.nodes().iter().filter(|n| !n.removed) {
        let cpu_short = node.cpu_milli_free() < least_cpu;
        for &free in node.free_list().as_slice() {
            let free_f = f64::from(free);
            if free == MILLI_PER_GPU {
                if cpu_short {
                    milli.stranded_whole += free_f;
                } else {
                    milli.free_whole += free_f;
                }
            } else if free > 0 {
                if fit_share(free) <= RARE_FIT {
                    milli.slivers += free_f;
                } else {
                    milli.partial_gaps += free_f;
                }
            }
        }
    }
    let percent = cluster.gpu_milli_capacity().max(1) as f64 / 100.0;
    IdleBreakdown {
        slivers: milli.slivers / percent,
        partial_gaps: milli.partial_gaps / percent,
        stranded_whole: milli.stranded_whole / percent,
        free_whole: milli.free_whole / percent,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use phalanx_engine::{GpuAssignment, NodeSpec, Placement, PodShape};

    use super::*;
    use crate::trace::{build_cluster, TracePod};

    fn node(name: &str, cpu: u64) -> NodeSpec {
        crate::openb::test_gpu_node(name, cpu, 2, "V100")
    }

    fn typical(cpu: u64, gpu: GpuDemand, weight: f64) -> TypicalPod {
        TypicalPod {
            shape: PodShape {
                cpu_milli: cpu,
                gpu,
                models: Default::default(),
            },
            weight,
        }
    }

    #[test]
    fn idle_gpu_splits_into_slivers_gaps_stranded_and_free() {
        // Two nodes of two GPUs: one with CPU to spare, one left with 500 milli.
        let mut cluster = build_cluster(&[node("a", 64_000), node("b", 8_000)]).unwrap();
        let pod = |cpu, gpu| TracePod {
            name: "p".into(),
            cpu_milli: cpu,
            memory_mib: 1,
            gpu,
            spec: String::new(),
            qos: Default::default(),
            times: Default::default(),
        };
        // a: GPU 0 holds 810 (a 190 sliver), GPU 1 holds 400 (a 600 gap).
        for (gpu, milli) in [(0, 810), (1, 400)] {
            let demand = pod(1_000, GpuDemand::Share { milli }).demand(&cluster);
            let placement = Placement {
                node: phalanx_engine::NodeId(0),
                gpus: GpuAssignment::from_indices([gpu], milli),
            };
            cluster.place(&demand, &placement).unwrap();
        }
        // b: CPU used up to 500 milli, both GPUs free but stranded.
        let cpu_hog = pod(7_500, GpuDemand::None).demand(&cluster);
        let placement = Placement {
            node: phalanx_engine::NodeId(1),
            gpus: GpuAssignment::default(),
        };
        cluster.place(&cpu_hog, &placement).unwrap();

        // The workload: mostly 1-GPU pods and 500-milli shares (1,000 CPU each),
        // a few 150-milli shares (2 % of pods).
        let workload = [
            typical(1_000, GpuDemand::Whole { count: 1 }, 0.49),
            typical(1_000, GpuDemand::Share { milli: 500 }, 0.49),
            typical(1_000, GpuDemand::Share { milli: 150 }, 0.02),
        ];
        let b = idle_breakdown(&cluster, &workload);
        // Capacity 4,000 milli: 190 sliver, 600 gap, 2,000 stranded, 0 free.
        assert!((b.slivers - 4.75).abs() < 1e-9, "{b:?}");
        assert!((b.partial_gaps - 15.0).abs() < 1e-9, "{b:?}");
        assert!((b.stranded_whole - 50.0).abs() < 1e-9, "{b:?}");
        assert_eq!(b.free_whole, 0.0);
        assert!((b.total() - 69.75).abs() < 1e-9);
    }
}
