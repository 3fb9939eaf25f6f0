//! `GpuNode`: one cluster-scoped object per GPU node, written by the device plugin
//! and read by the scheduler.
//!
//! The spec is the inventory (changes when hardware or driver does); the status is
//! live state (memory use, utilisation, health, which pods hold which GPU) and is
//! refreshed every few seconds through the status subresource, so the frequent
//! writes never touch the inventory.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Inventory of one node's GPUs. The object's name is the node's name.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "phalanx.dev",
    version = "v1alpha1",
    kind = "GpuNode",
    plural = "gpunodes",
    shortname = "gn",
    status = "GpuNodeStatus",
    printcolumn = r#"{"name":"GPUs","type":"integer","jsonPath":".spec.gpus[*].index","description":"GPU count"}"#,
    printcolumn = r#"{"name":"Observed","type":"date","jsonPath":".status.observedAt"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct GpuNodeSpec {
    /// The Kubernetes node these GPUs belong to (equal to the object's name).
    pub node_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_version: Option<String>,
    #[serde(default)]
    pub gpus: Vec<GpuDeviceSpec>,
}

/// One GPU as NVML enumerates it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuDeviceSpec {
    /// NVML index on the node; the scheduler's assignment annotation uses it.
    pub index: u32,
    /// `GPU-…` UUID: the device ID kubelet is given.
    pub uuid: String,
    /// Product name, e.g. `NVIDIA H100 80GB HBM3`.
    pub model: String,
    pub memory_mib: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_bus_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa_node: Option<u32>,
    /// UUIDs of GPUs reachable over active NVLinks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nvlink_peers: Vec<String>,
    #[serde(default)]
    pub mig_enabled: bool,
}

/// Live state of the node's GPUs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuNodeStatus {
    /// When the device plugin took these readings; the scheduler ignores telemetry
    /// older than its configured limit. Microseconds, not whole seconds: a
    /// second of rounding is a fifth of a 5 s freshness budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<MicroTime>,
    #[serde(default)]
    pub gpus: Vec<GpuDeviceStatus>,
}

/// Live state of one GPU.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuDeviceStatus {
    pub uuid: String,
    /// False after an XID error or a failed health check: never chosen while false.
    pub healthy: bool,
    /// Why it is unhealthy (e.g. `XID 79: GPU has fallen off the bus`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_reason: Option<String>,
    pub memory_used_mib: u64,
    pub utilization_percent: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_celsius: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_watts: Option<f64>,
    /// Pods holding this GPU, as kubelet's PodResources API reports them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<GpuHolder>,
}

/// A pod that holds (part of) a GPU.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuHolder {
    pub namespace: String,
    pub name: String,
    /// Milli of the GPU it holds (1000 for a whole GPU).
    pub milli: u32,
}
