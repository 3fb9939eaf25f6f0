//! The FGD paper's experiment on the openb trace (spec §6–7): inflate the workload
//! to a multiple of cluster GPU capacity by seeded resampling, shuffle, schedule one
//! pod at a time with no departures and no retries, and record the GPU allocation
//! ratio and fragmentation at every percent of arrived workload. [`gangs`] runs
//! the same experiment with multi-GPU pods grouped into gangs on racked nodes.

pub mod arrivals;
pub mod bound;
pub mod curves;
pub mod gang_sweep;
pub mod gangs;
pub mod idle;
pub mod run;
pub mod share_floor;
pub mod sweep;

/// A GPU node for the openb modules' tests: `gpus` GPUs of `model`, `cpu`
/// milli-CPU and ample memory.
#[cfg(test)]
pub(crate) fn test_gpu_node(
    name: &str,
    cpu: u64,
    gpus: u32,
    model: &str,
) -> phalanx_engine::NodeSpec {
    phalanx_engine::NodeSpec {
        name: name.into(),
        cpu_milli: cpu,
        memory_mib: 1 << 20,
        max_pods: 110,
        gpu_model: Some(model.into()),
        gpus: (0..gpus)
            .map(|i| phalanx_engine::GpuSpec {
                uuid: format!("{name}-{i}"),
                memory_mib: 0,
            })
            .collect(),
        labels: Default::default(),
        taints: Vec::new(),
        unschedulable: false,
        scalar_resources: Vec::new(),
    }
}
