//! GPU backends: what GPUs a node has, how they are doing, and what went wrong.

mod fake;
mod nvml;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use fake::{FakeBackend, FakeGpu, FakeNode};
pub use nvml::NvmlBackend;

/// One GPU as inventoried at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuDevice {
    pub index: u32,
    pub uuid: String,
    /// Product name as the driver reports it (e.g. "NVIDIA H100 80GB HBM3").
    pub model: String,
    pub memory_total_mib: u64,
    pub pci_bus_id: String,
    /// NUMA node of the GPU's PCIe root, when the platform reports one.
    pub numa_node: Option<u32>,
    /// Active NVLink links, and the UUIDs of the GPUs at their far ends (links to
    /// an NVSwitch or a CPU are counted but name no GPU).
    pub nvlink_active_links: u32,
    pub nvlink_peers: Vec<String>,
    pub mig_enabled: bool,
    /// CUDA compute capability, e.g. (9, 0) for Hopper.
    pub compute_capability: Option<(i32, i32)>,
}

/// A node's GPUs and driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuInventory {
    pub driver_version: Option<String>,
    pub gpus: Vec<GpuDevice>,
}

/// Live state of one GPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuTelemetry {
    pub uuid: String,
    pub memory_used_mib: u64,
    pub memory_total_mib: u64,
    /// Percent of the last sample period with a kernel running.
    pub utilization_gpu_percent: u32,
    pub utilization_memory_percent: u32,
    pub temperature_celsius: Option<u32>,
    pub power_watts: Option<f64>,
}

/// Something that makes a GPU unfit for new work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GpuEvent {
    /// A critical XID error (e.g. 48 double-bit ECC, 79 fallen off the bus).
    CriticalXid { uuid: String, xid: Option<u64> },
}

#[derive(Debug, Error)]
pub enum BackendError {
    #[error(
        "the NVML library (libnvidia-ml.so.1) could not be loaded: {0}. Is the NVIDIA driver installed and \
         mounted into the container? Use the fake backend on nodes without GPUs."
    )]
    NvmlUnavailable(String),
    #[error("NVML {operation} failed: {message}")]
    Nvml {
        operation: &'static str,
        message: String,
    },
    #[error("fake GPU file {file}: {message}")]
    FakeFile { file: String, message: String },
    #[error("unknown GPU {0}")]
    UnknownGpu(String),
}

/// The one interface the plugin's servers use, whatever the hardware.
pub trait GpuBackend: Send {
    fn name(&self) -> &'static str;
    fn inventory(&self) -> Result<GpuInventory, BackendError>;
    fn telemetry(&self) -> Result<Vec<GpuTelemetry>, BackendError>;
    /// Events that arrived since the last call, waiting up to `timeout` for the first.
    fn wait_for_events(&mut self, timeout: Duration) -> Result<Vec<GpuEvent>, BackendError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Probe {
        backend: String,
        inventory: GpuInventory,
        telemetry: Vec<GpuTelemetry>,
        events: Vec<GpuEvent>,
    }

    #[test]
    fn real_h100_probes_read_back_into_our_types() {
        let idle: Probe =
            serde_json::from_str(include_str!("../../testdata/nvml-h100-probe-idle.json")).unwrap();
        let busy: Probe =
            serde_json::from_str(include_str!("../../testdata/nvml-h100-probe-busy.json")).unwrap();
        assert_eq!(idle.backend, "nvml");
        let gpu = &busy.inventory.gpus[0];
        assert_eq!(gpu.model, "NVIDIA H100 80GB HBM3");
        assert_eq!(gpu.compute_capability, Some((9, 0)));
        assert_eq!(gpu.memory_total_mib, 81_559);
        assert!(gpu.uuid.starts_with("GPU-"));
        assert_eq!(idle.telemetry[0].memory_used_mib, 0);
        assert!(busy.telemetry[0].memory_used_mib > 20 * 1024);
        assert_eq!(busy.telemetry[0].utilization_gpu_percent, 100);
        assert!(busy.events.is_empty() && idle.events.is_empty());
    }
}
