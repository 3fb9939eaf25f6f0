//! Builders shared by the engine's unit tests.

use super::{GpuSpec, NodeSpec};

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
