//! The `GpuNode` spec and status, and when a new status is worth writing.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use phalanx_api::{GpuDeviceSpec, GpuDeviceStatus, GpuHolder, GpuNodeSpec, GpuNodeStatus};

use crate::backend::{GpuInventory, GpuTelemetry};
use crate::health::HealthReport;
use crate::resources::sorted_by_index;

/// Memory use must move by at least this share of the GPU's memory (or
/// [`MEMORY_CHANGE_MIN_MIB`], whichever is larger) to count as a change: the
/// scheduler turns memory into milli-GPU, and 1 % is 10 milli.
pub const MEMORY_CHANGE_FRACTION: f64 = 0.01;
pub const MEMORY_CHANGE_MIN_MIB: u64 = 128;
/// Utilisation must move by this many percentage points.
pub const UTILIZATION_CHANGE_POINTS: u32 = 10;

/// The inventory as the CRD spells it.
pub fn gpu_node_spec(node_name: &str, inventory: &GpuInventory) -> GpuNodeSpec {
    GpuNodeSpec {
        node_name: node_name.to_owned(),
        driver_version: inventory.driver_version.clone(),
        gpus: sorted_by_index(&inventory.gpus)
            .into_iter()
            .map(|g| GpuDeviceSpec {
                index: g.index,
                uuid: g.uuid.clone(),
                model: g.model.clone(),
                memory_mib: g.memory_total_mib,
                pci_bus_id: Some(g.pci_bus_id.clone()).filter(|b| !b.is_empty()),
                numa_node: g.numa_node,
                nvlink_peers: g.nvlink_peers.clone(),
                mig_enabled: g.mig_enabled,
            })
            .collect(),
    }
}

/// The status for one sample. A GPU the sample misses (NVML failed to read it)
/// is reported unhealthy with that reason, never silently as idle.
pub fn gpu_node_status(
    inventory: &GpuInventory,
    samples: &[GpuTelemetry],
    health: &HealthReport,
    holders: &BTreeMap<String, Vec<GpuHolder>>,
    observed_at: MicroTime,
) -> GpuNodeStatus {
    let gpus = sorted_by_index(&inventory.gpus)
        .into_iter()
        .map(|g| {
            let sample = samples.iter().find(|s| s.uuid == g.uuid);
            let (healthy, health_reason) = match (health.reason(&g.uuid), sample) {
                (Some(reason), _) => (false, Some(reason.to_owned())),
                (None, None) => (
                    false,
                    Some("no telemetry: the driver did not answer".to_owned()),
                ),
                (None, Some(_)) => (true, None),
            };
            GpuDeviceStatus {
                uuid: g.uuid.clone(),
                healthy,
                health_reason,
                memory_used_mib: sample.map_or(0, |s| s.memory_used_mib),
                utilization_percent: sample.map_or(0, |s| s.utilization_gpu_percent),
                temperature_celsius: sample.and_then(|s| s.temperature_celsius),
                power_watts: sample.and_then(|s| s.power_watts),
                pods: holders.get(&g.uuid).cloned().unwrap_or_default(),
            }
        })
        .collect();
    GpuNodeStatus {
        observed_at: Some(observed_at),
        gpus,
    }
}

/// Why a status is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteReason {
    /// Nothing written yet.
    First,
    /// Health, holders, or a large enough move in memory or utilisation.
    Change,
    /// Nothing changed, but the last write is getting old.
    Heartbeat,
}

impl WriteReason {
    pub fn as_str(self) -> &'static str {
        match self {
            WriteReason::First => "first",
            WriteReason::Change => "change",
            WriteReason::Heartbeat => "heartbeat",
        }
    }
}

/// Whether `next` differs from what was last written in a way the scheduler cares about.
pub fn meaningful_change(
    last: &GpuNodeStatus,
    next: &GpuNodeStatus,
    inventory: &GpuInventory,
) -> bool {
    if last.gpus.len() != next.gpus.len() {
        return true;
    }
    last.gpus.iter().zip(&next.gpus).any(|(a, b)| {
        let total = inventory
            .gpus
            .iter()
            .find(|g| g.uuid == b.uuid)
            .map_or(0, |g| g.memory_total_mib);
        let memory_step =
            ((total as f64 * MEMORY_CHANGE_FRACTION) as u64).max(MEMORY_CHANGE_MIN_MIB);
        a.uuid != b.uuid
            || a.healthy != b.healthy
            || a.health_reason != b.health_reason
            || a.pods != b.pods
            || a.memory_used_mib.abs_diff(b.memory_used_mib) >= memory_step
            || a.utilization_percent.abs_diff(b.utilization_percent) >= UTILIZATION_CHANGE_POINTS
    })
}

/// Whether to write `next` now, given what was written and how long ago.
pub fn write_reason(
    last: Option<&GpuNodeStatus>,
    next: &GpuNodeStatus,
    inventory: &GpuInventory,
    since_last_write: Duration,
    heartbeat: Duration,
) -> Option<WriteReason> {
    match last {
        None => Some(WriteReason::First),
        Some(last) if meaningful_change(last, next, inventory) => Some(WriteReason::Change),
        Some(_) if since_last_write >= heartbeat => Some(WriteReason::Heartbeat),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::backend::FakeNode;

    fn inventory() -> GpuInventory {
        let node = FakeNode::uniform(2, "NVIDIA H100 80GB HBM3", 81_920);
        GpuInventory {
            driver_version: Some("fake".into()),
            gpus: node.gpus.into_iter().map(|g| g.device).collect(),
        }
    }

    fn sample(uuid: &str, memory: u64, util: u32) -> GpuTelemetry {
        GpuTelemetry {
            uuid: uuid.into(),
            memory_used_mib: memory,
            memory_total_mib: 81_920,
            utilization_gpu_percent: util,
            utilization_memory_percent: 0,
            temperature_celsius: Some(40),
            power_watts: Some(70.0),
        }
    }

    #[test]
    fn spec_and_status_follow_inventory_health_and_samples() {
        let inv = inventory();
        let spec = gpu_node_spec("n1", &inv);
        assert_eq!(spec.node_name, "n1");
        assert_eq!(spec.gpus[1].index, 1);
        assert_eq!(spec.gpus[1].nvlink_peers, vec![inv.gpus[0].uuid.clone()]);
        let mut health = HealthReport::default();
        health.mark_unhealthy(&inv.gpus[0].uuid, "XID 79: GPU has fallen off the bus");
        let holders = BTreeMap::from([(
            inv.gpus[1].uuid.clone(),
            vec![GpuHolder {
                namespace: "ml".into(),
                name: "p".into(),
                milli: 500,
            }],
        )]);
        let status = gpu_node_status(
            &inv,
            &[
                sample(&inv.gpus[0].uuid, 10, 0),
                sample(&inv.gpus[1].uuid, 4096, 80),
            ],
            &health,
            &holders,
            MicroTime(Timestamp::UNIX_EPOCH),
        );
        assert!(!status.gpus[0].healthy);
        assert_eq!(
            status.gpus[0].health_reason.as_deref(),
            Some("XID 79: GPU has fallen off the bus")
        );
        assert_eq!(
            (
                status.gpus[1].memory_used_mib,
                status.gpus[1].utilization_percent
            ),
            (4096, 80)
        );
        assert_eq!(status.gpus[1].pods[0].milli, 500);

        let missing = gpu_node_status(
            &inv,
            &[],
            &HealthReport::default(),
            &BTreeMap::new(),
            MicroTime(Timestamp::UNIX_EPOCH),
        );
        assert!(
            missing.gpus.iter().all(|g| !g.healthy),
            "unread GPUs are not reported idle"
        );
    }

    #[test]
    fn writes_on_change_and_heartbeat_only() {
        let inv = inventory();
        let u0 = inv.gpus[0].uuid.clone();
        let u1 = inv.gpus[1].uuid.clone();
        let at = MicroTime(Timestamp::UNIX_EPOCH);
        let status = |m0: u64, util: u32| {
            gpu_node_status(
                &inv,
                &[sample(&u0, m0, util), sample(&u1, 0, 0)],
                &HealthReport::default(),
                &BTreeMap::new(),
                at.clone(),
            )
        };
        let hb = Duration::from_secs(4);
        let base = status(1000, 10);
        assert_eq!(
            write_reason(None, &base, &inv, Duration::ZERO, hb),
            Some(WriteReason::First)
        );
        assert_eq!(
            write_reason(
                Some(&base),
                &status(1500, 15),
                &inv,
                Duration::from_secs(1),
                hb
            ),
            None,
            "small moves wait"
        );
        assert_eq!(
            write_reason(Some(&base), &status(1000, 15), &inv, hb, hb),
            Some(WriteReason::Heartbeat)
        );
        assert_eq!(
            write_reason(Some(&base), &status(2000, 10), &inv, Duration::ZERO, hb),
            Some(WriteReason::Change),
            "≥ 1 % of 80 GiB"
        );
        assert_eq!(
            write_reason(Some(&base), &status(1000, 20), &inv, Duration::ZERO, hb),
            Some(WriteReason::Change)
        );
        let mut sick = HealthReport::default();
        sick.mark_unhealthy(&u1, "XID 48");
        let next = gpu_node_status(
            &inv,
            &[sample(&u0, 1000, 10), sample(&u1, 0, 0)],
            &sick,
            &BTreeMap::new(),
            at.clone(),
        );
        assert_eq!(
            write_reason(Some(&base), &next, &inv, Duration::ZERO, hb),
            Some(WriteReason::Change)
        );
    }
}
