//! Expected fragmentation of a node with respect to a workload (FGD spec §5.2–5.3).
//!
//! A node's idle GPU milli counts as fragment for a typical pod type when that type
//! could not use it: it needs no GPU, lacks CPU, may not use this model, or the GPUs
//! do not fit it; when it fits, only the devices too small for it are fragment.

use super::model::GpuModelId;
use super::workload::TypicalPod;

/// F(n) = Σ_t w_t · φ_t(n) for a node given by its free CPU, model and per-GPU free
/// milli. `free` holds only usable (healthy) GPUs' free milli.
pub fn node_fragmentation(
    typical: &[TypicalPod],
    cpu_free: u64,
    model: Option<GpuModelId>,
    free: &[u32],
) -> f64 {
    let gpu_free: u32 = free.iter().sum();
    if gpu_free == 0 {
        return 0.0;
    }
    let mut total = 0.0;
    for t in typical {
        total += t.weight * f64::from(fragment_for_type(t, cpu_free, model, free, gpu_free));
    }
    total
}

/// φ_t(n): idle milli on the node that type `t` cannot use.
fn fragment_for_type(
    t: &TypicalPod,
    cpu_free: u64,
    model: Option<GpuModelId>,
    free: &[u32],
    gpu_free: u32,
) -> u32 {
    let m = t.shape.gpu.milli_per_gpu();
    if m == 0 {
        return gpu_free;
    }
    let Some(model) = model else { return gpu_free };
    if !t.shape.models.allows(model) {
        return gpu_free;
    }
    if cpu_free < t.shape.cpu_milli {
        return gpu_free;
    }
    let mut fitting = 0u32;
    let mut too_small = 0u32;
    for &f in free {
        if f >= m {
            fitting += 1;
        } else {
            too_small += f;
        }
    }
    if fitting >= t.shape.gpu.gpu_count() {
        too_small
    } else {
        gpu_free
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GpuDemand, ModelConstraint, PodShape};

    fn t(cpu: u64, gpu: GpuDemand, weight: f64) -> TypicalPod {
        TypicalPod {
            shape: PodShape {
                cpu_milli: cpu,
                gpu,
                models: ModelConstraint::Any,
            },
            weight,
        }
    }

    const M: Option<GpuModelId> = Some(GpuModelId(0));

    #[test]
    fn hand_computed_node_fragmentation() {
        // Node: 4 GPUs free [1000, 1000, 300, 0], 8 cores free.
        let free = [1000, 1000, 300, 0];
        let typical = [
            t(1000, GpuDemand::Whole { count: 1 }, 0.5), // fits; the 300 is fragment -> 300
            t(1000, GpuDemand::Share { milli: 500 }, 0.25), // fits; the 300 is fragment -> 300
            t(1000, GpuDemand::Whole { count: 4 }, 0.125), // does not fit -> all 2300
            t(500, GpuDemand::None, 0.125), // CPU-only: all idle GPU is fragment -> 2300
        ];
        let f = node_fragmentation(&typical, 8000, M, &free);
        let expect = 0.5 * 300.0 + 0.25 * 300.0 + 0.125 * 2300.0 + 0.125 * 2300.0;
        assert!((f - expect).abs() < 1e-9, "{f} vs {expect}");
    }

    #[test]
    fn lack_of_cpu_makes_every_idle_gpu_a_fragment() {
        let typical = [t(4000, GpuDemand::Whole { count: 1 }, 1.0)];
        assert_eq!(node_fragmentation(&typical, 3999, M, &[1000, 1000]), 2000.0);
        assert_eq!(node_fragmentation(&typical, 4000, M, &[1000, 1000]), 0.0);
    }

    #[test]
    fn a_model_the_type_may_not_use_is_all_fragment() {
        let mut typical = [t(0, GpuDemand::Whole { count: 1 }, 1.0)];
        typical[0].shape.models = ModelConstraint::OneOf(0b10);
        assert_eq!(node_fragmentation(&typical, 1000, M, &[1000]), 1000.0);
        assert_eq!(
            node_fragmentation(&typical, 1000, Some(GpuModelId(1)), &[1000]),
            0.0
        );
    }

    #[test]
    fn a_full_node_has_no_fragment() {
        let typical = [t(0, GpuDemand::None, 1.0)];
        assert_eq!(node_fragmentation(&typical, 1000, M, &[0, 0]), 0.0);
    }
}
