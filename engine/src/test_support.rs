//! Builders shared by the engine's unit tests.

use super::{GpuDemand, GpuSpec, ModelConstraint, NodeSpec, PodDemand};

/// A node with `gpus` GPUs of `model`, `cpu_milli` CPU and ample memory and pod slots.
pub(crate) fn gpu_node(name: &str, cpu_milli: u64, gpus: usize, model: &str) -> NodeSpec {
    NodeSpec {
        name: name.into(),
        cpu_milli,
        memory_mib: 1 << 20,
        max_pods: 100,
        gpu_model: Some(model.into()),
        gpus: vec![GpuSpec::default(); gpus],
        ..NodeSpec::default()
    }
}

/// A pod of 1 CPU and 1 GiB asking for `count` whole GPUs of any model.
pub(crate) fn whole_pod(name: &str, count: u32) -> PodDemand {
    PodDemand::new(
        name,
        1000,
        1024,
        GpuDemand::Whole { count },
        ModelConstraint::Any,
    )
    .unwrap()
}

/// A pod of 1 CPU and 1 GiB asking for `milli` of one GPU of any model.
pub(crate) fn share_pod(name: &str, milli: u32) -> PodDemand {
    PodDemand::new(
        name,
        1000,
        1024,
        GpuDemand::Share { milli },
        ModelConstraint::Any,
    )
    .unwrap()
}
