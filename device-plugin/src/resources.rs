//! The two extended resources the plugin advertises, and how their device IDs
//! name GPUs.
//!
//! * Whole GPUs (`nvidia.com/gpu` by default): one device per GPU, its ID the
//!   GPU's UUID, as NVIDIA's own plugin does, so Phalanx can stand in for it.
//! * Shares (`phalanx.dev/gpu-milli`): `units_per_gpu` devices per GPU, with IDs
//!   `<uuid>::<unit>`. With the default 1000 units, one device is one milli-GPU,
//!   the unit the scheduler counts in; a pod asking for 250 of them gets a
//!   quarter of one GPU.

use std::collections::BTreeMap;

use thiserror::Error;

use crate::backend::GpuDevice;
use crate::health::HealthReport;

/// Kubelet's limit on a device ID.
pub const MAX_DEVICE_ID_LEN: usize = 63;
/// Separates a GPU's UUID from the unit number in a share's device ID.
pub const SHARE_ID_SEPARATOR: &str = "::";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    WholeGpu,
    GpuShare { units_per_gpu: u32 },
}

/// One advertised resource: its name and how it divides the GPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceSpec {
    pub name: String,
    pub kind: ResourceKind,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ResourceError {
    #[error(
        "resource name {0:?} is not an extended resource name (`domain/name`, outside kubernetes.io)"
    )]
    BadName(String),
    #[error("units per GPU must be between 1 and 10000, got {0}")]
    BadUnits(u32),
    #[error("device ID {id:?} is {len} characters; kubelet allows at most {MAX_DEVICE_ID_LEN}")]
    DeviceIdTooLong { id: String, len: usize },
}

/// A device as listed to kubelet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceEntry {
    pub id: String,
    pub healthy: bool,
    pub numa_node: Option<u32>,
}

impl ResourceSpec {
    pub fn whole(name: impl Into<String>) -> Result<Self, ResourceError> {
        Self::checked(name.into(), ResourceKind::WholeGpu)
    }

    pub fn share(name: impl Into<String>, units_per_gpu: u32) -> Result<Self, ResourceError> {
        if !(1..=10_000).contains(&units_per_gpu) {
            return Err(ResourceError::BadUnits(units_per_gpu));
        }
        Self::checked(name.into(), ResourceKind::GpuShare { units_per_gpu })
    }

    fn checked(name: String, kind: ResourceKind) -> Result<Self, ResourceError> {
        let valid = match name.split_once('/') {
            Some((domain, rest)) => {
                !domain.is_empty()
                    && !rest.is_empty()
                    && !rest.contains('/')
                    && domain != "kubernetes.io"
                    && !domain.ends_with(".kubernetes.io")
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'))
            }
            None => false,
        };
        if !valid {
            return Err(ResourceError::BadName(name));
        }
        Ok(ResourceSpec { name, kind })
    }

    /// Units of this resource in one whole GPU.
    pub fn units_per_gpu(&self) -> u32 {
        match self.kind {
            ResourceKind::WholeGpu => 1,
            ResourceKind::GpuShare { units_per_gpu } => units_per_gpu,
        }
    }

    /// The plugin's socket file name in the device-plugin directory, e.g.
    /// `phalanx-nvidia.com-gpu.sock`.
    pub fn socket_file_name(&self) -> String {
        format!("phalanx-{}.sock", self.name.replace('/', "-"))
    }

    /// Device IDs of one GPU.
    pub fn device_ids(&self, gpu_uuid: &str) -> Vec<String> {
        match self.kind {
            ResourceKind::WholeGpu => vec![gpu_uuid.to_owned()],
            ResourceKind::GpuShare { units_per_gpu } => (0..units_per_gpu)
                .map(|unit| share_device_id(gpu_uuid, unit))
                .collect(),
        }
    }

    /// The GPU UUID (and unit, for shares) a device ID names, if it is
    /// well-formed for this resource. Whether the GPU exists is for the caller.
    pub fn parse_device_id<'a>(&self, id: &'a str) -> Option<(&'a str, u32)> {
        match self.kind {
            ResourceKind::WholeGpu => {
                (!id.is_empty() && !id.contains(SHARE_ID_SEPARATOR)).then_some((id, 0))
            }
            ResourceKind::GpuShare { units_per_gpu } => {
                let (uuid, unit) = id.rsplit_once(SHARE_ID_SEPARATOR)?;
                let unit: u32 = unit.parse().ok()?;
                (!uuid.is_empty() && unit < units_per_gpu).then_some((uuid, unit))
            }
        }
    }

    /// Every device of every GPU, with health and NUMA node, in GPU index order.
    pub fn devices(
        &self,
        gpus: &[GpuDevice],
        health: &HealthReport,
    ) -> Result<Vec<DeviceEntry>, ResourceError> {
        let mut out = Vec::with_capacity(gpus.len() * self.units_per_gpu() as usize);
        for gpu in sorted_by_index(gpus) {
            let healthy = health.is_healthy(&gpu.uuid);
            for id in self.device_ids(&gpu.uuid) {
                if id.len() > MAX_DEVICE_ID_LEN {
                    return Err(ResourceError::DeviceIdTooLong { len: id.len(), id });
                }
                out.push(DeviceEntry {
                    id,
                    healthy,
                    numa_node: gpu.numa_node,
                });
            }
        }
        Ok(out)
    }
}

/// `<uuid>::<unit>`.
pub fn share_device_id(gpu_uuid: &str, unit: u32) -> String {
    format!("{gpu_uuid}{SHARE_ID_SEPARATOR}{unit}")
}

/// GPUs in NVML index order.
pub fn sorted_by_index(gpus: &[GpuDevice]) -> Vec<&GpuDevice> {
    let mut sorted: Vec<&GpuDevice> = gpus.iter().collect();
    sorted.sort_by_key(|g| g.index);
    sorted
}

/// GPUs by UUID.
pub fn by_uuid(gpus: &[GpuDevice]) -> BTreeMap<&str, &GpuDevice> {
    gpus.iter().map(|g| (g.uuid.as_str(), g)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::FakeNode;

    #[test]
    fn names_and_ids() {
        assert!(ResourceSpec::whole("nvidia.com/gpu").is_ok());
        for bad in [
            "gpu",
            "/gpu",
            "nvidia.com/",
            "kubernetes.io/gpu",
            "a/b/c",
            "x.com/g pu",
        ] {
            assert_eq!(
                ResourceSpec::whole(bad),
                Err(ResourceError::BadName(bad.into())),
                "{bad}"
            );
        }
        assert_eq!(
            ResourceSpec::share("phalanx.dev/gpu-milli", 0),
            Err(ResourceError::BadUnits(0))
        );
        let share = ResourceSpec::share("phalanx.dev/gpu-milli", 4).unwrap();
        assert_eq!(
            share.socket_file_name(),
            "phalanx-phalanx.dev-gpu-milli.sock"
        );
        assert_eq!(
            share.device_ids("GPU-a"),
            ["GPU-a::0", "GPU-a::1", "GPU-a::2", "GPU-a::3"]
        );
        assert_eq!(share.parse_device_id("GPU-a::3"), Some(("GPU-a", 3)));
        assert_eq!(share.parse_device_id("GPU-a::4"), None, "beyond units");
        assert_eq!(share.parse_device_id("GPU-a"), None);
        let whole = ResourceSpec::whole("nvidia.com/gpu").unwrap();
        assert_eq!(whole.parse_device_id("GPU-a"), Some(("GPU-a", 0)));
        assert_eq!(whole.parse_device_id("GPU-a::1"), None);
    }

    #[test]
    fn devices_carry_health_and_numa_and_refuse_long_ids() {
        let node = FakeNode::uniform(2, "T4", 15_360);
        let gpus: Vec<GpuDevice> = node.gpus.iter().map(|g| g.device.clone()).collect();
        let mut health = HealthReport::default();
        health.mark_unhealthy(&gpus[1].uuid, "XID 79");
        let share = ResourceSpec::share("phalanx.dev/gpu-milli", 1000).unwrap();
        let devices = share.devices(&gpus, &health).unwrap();
        assert_eq!(devices.len(), 2000);
        assert!(devices[..1000]
            .iter()
            .all(|d| d.healthy && d.numa_node == Some(0)));
        assert!(devices[1000..]
            .iter()
            .all(|d| !d.healthy && d.numa_node == Some(1)));

        let mut long = gpus.clone();
        long[0].uuid = format!("GPU-{}", "x".repeat(60));
        let err = share.devices(&long, &health).unwrap_err().to_string();
        assert!(err.contains("at most 63"), "{err}");
    }
}
