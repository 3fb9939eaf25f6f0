//! Choosing the GPUs inside a chosen node (Kubernetes "Reserve"; FGD spec §4.1).

use rand::Rng;

use super::node::NodeState;
use super::pod::GpuDemand;
use super::snapshot::{GpuAssignment, GpuShare};
use super::MILLI_PER_GPU;

/// The `k` lowest-indexed GPUs that are healthy and entirely free, by allocation
/// and by live memory use.
pub(crate) fn lowest_free_gpus(node: &NodeState, count: u32) -> GpuAssignment {
    let mut out = GpuAssignment::default();
    for (index, gpu) in node.gpus.iter().enumerate() {
        if out.len() as u32 == count {
            break;
        }
        if gpu.usable_free() == MILLI_PER_GPU {
            out.push(GpuShare {
                index: index as u8,
                milli: MILLI_PER_GPU,
            });
        }
    }
    out
}

/// `best`: a share goes to the tightest GPU that holds it (lowest index on equal
/// free), whole GPUs to the lowest-indexed free ones.
pub(crate) fn best_fit_gpus(node: &NodeState, demand: GpuDemand) -> GpuAssignment {
    match demand {
        GpuDemand::None => GpuAssignment::default(),
        GpuDemand::Whole { count } => lowest_free_gpus(node, count),
        GpuDemand::Share { milli } => {
            let mut best: Option<(u32, usize)> = None;
            for (index, gpu) in node.gpus.iter().enumerate() {
                let free = gpu.usable_free();
                if free >= milli && best.is_none_or(|(b, _)| free < b) {
                    best = Some((free, index));
                }
            }
            best.map(|(_, index)| GpuAssignment::from_indices([index], milli))
                .unwrap_or_default()
        }
    }
}

/// `random`: a share goes to a uniformly drawn GPU that holds it (reservoir sampling
/// in index order), whole GPUs to the lowest-indexed free ones.
pub(crate) fn random_gpus(
    node: &NodeState,
    demand: GpuDemand,
    rng: &mut impl Rng,
) -> GpuAssignment {
    match demand {
        GpuDemand::Share { milli } => {
            let mut chosen = None;
            let mut seen = 0u32;
            for (index, gpu) in node.gpus.iter().enumerate() {
                if gpu.usable_free() >= milli {
                    seen += 1;
                    if rng.random_range(0..seen) == 0 {
                        chosen = Some(index);
                    }
                }
            }
            chosen
                .map(|index| GpuAssignment::from_indices([index], milli))
                .unwrap_or_default()
        }
        other => best_fit_gpus(node, other),
    }
}
