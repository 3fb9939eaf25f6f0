//! `kubectl phalanx gpus [NODE]`: every GPU with its model, what is
//! allocated of it and to whom, its health and how old its telemetry is.
//!
//! From what the components publish: each Node's GPUs as the scheduler
//! counts them (the `GpuNode` inventory when the device plugin wrote one,
//! else the node's `nvidia.com/gpu`, through the same translation), the
//! `GpuNode` status for health and telemetry, and the pods' GPU assignment
//! annotations (the scheduler's). A holder the device plugin reports but no
//! annotation names (a pod another scheduler placed) is listed too. Pure:
//! fed the objects.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use phalanx_api::{GpuNode, MILLI_PER_GPU};
use phalanx_kube::translate::{assignment_of, is_finished, node_spec, pod_key};
use serde::Serialize;

use crate::table;

/// One pod's hold on a GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Holder {
    /// `namespace/name`.
    pub pod: String,
    pub milli: u32,
}

/// One GPU.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuRow {
    pub node: String,
    pub index: u32,
    pub uuid: String,
    pub model: String,
    pub memory_mib: u64,
    /// `None` while the device plugin has reported no status for it.
    pub healthy: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_reason: Option<String>,
    /// Milli held by the pods below (1000 per whole GPU).
    pub allocated_milli: u32,
    /// Holders of less than a whole GPU.
    pub shares: u32,
    pub holders: Vec<Holder>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub utilization_percent: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_used_mib: Option<u64>,
    /// Seconds since the device plugin's last reading of the node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub telemetry_age_seconds: Option<u64>,
}

/// Every GPU, and the nodes whose objects could not be read.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuReport {
    pub gpus: Vec<GpuRow>,
    /// `node: why` for each node left out.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreadable_nodes: Vec<String>,
}

/// The GPUs of `nodes` (of `only` when given), by node then index, with the
/// holders `pods` record.
pub fn gpu_report(
    nodes: &[Node],
    gpu_nodes: &[GpuNode],
    pods: &[Pod],
    now: Timestamp,
    only: Option<&str>,
) -> GpuReport {
    let held = holders_by_gpu(pods);
    let mut nodes: Vec<&Node> = nodes
        .iter()
        .filter(|n| only.is_none_or(|name| n.metadata.name.as_deref() == Some(name)))
        .collect();
    nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut report = GpuReport::default();
    for node in nodes {
        let name = node.metadata.name.clone().unwrap_or_default();
        let gpu_node = gpu_nodes.iter().find(|g| g.spec.node_name == name);
        let spec = match node_spec(node, gpu_node) {
            Ok(spec) => spec,
            Err(error) => {
                report.unreadable_nodes.push(format!("{name}: {error}"));
                continue;
            }
        };
        let status = gpu_node.and_then(|g| g.status.as_ref());
        let age = status
            .and_then(|s| s.observed_at.as_ref())
            .map(|t| now.duration_since(t.0).as_secs().max(0) as u64);
        let model = spec.gpu_model.clone().unwrap_or_default();
        for (index, device) in spec.gpus.into_iter().enumerate() {
            let index = index as u32;
            let live = status.and_then(|s| s.gpus.iter().find(|g| g.uuid == device.uuid));
            let mut holders = held
                .get(&(name.clone(), index))
                .cloned()
                .unwrap_or_default();
            for reported in live.map(|g| g.pods.as_slice()).unwrap_or_default() {
                let pod = format!("{}/{}", reported.namespace, reported.name);
                if !holders.iter().any(|h| h.pod == pod) {
                    holders.push(Holder {
                        pod,
                        milli: reported.milli,
                    });
                }
            }
            holders.sort_by(|a, b| a.pod.cmp(&b.pod));
            report.gpus.push(GpuRow {
                node: name.clone(),
                index,
                uuid: device.uuid,
                model: model.clone(),
                memory_mib: device.memory_mib,
                healthy: live.map(|g| g.healthy),
                health_reason: live.and_then(|g| g.health_reason.clone()),
                allocated_milli: holders.iter().map(|h| h.milli).sum(),
                shares: holders.iter().filter(|h| h.milli < MILLI_PER_GPU).count() as u32,
                holders,
                utilization_percent: live.map(|g| g.utilization_percent),
                memory_used_mib: live.map(|g| g.memory_used_mib),
                telemetry_age_seconds: live.and(age),
            });
        }
    }
    report
}

/// Holders per (node, GPU index) from the assignment annotations of pods
/// bound to that node and not finished.
fn holders_by_gpu(pods: &[Pod]) -> BTreeMap<(String, u32), Vec<Holder>> {
    let mut held: BTreeMap<(String, u32), Vec<Holder>> = BTreeMap::new();
    for pod in pods {
        let finished = is_finished(pod);
        let bound_to = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
        let Ok(Some(assignment)) = assignment_of(pod) else {
            continue;
        };
        // An annotation naming another node than the pod's is stale.
        if finished || bound_to != Some(assignment.node.as_str()) {
            continue;
        }
        let name = pod_key(pod);
        for gpu in assignment.gpus {
            held.entry((assignment.node.clone(), gpu.index))
                .or_default()
                .push(Holder {
                    pod: name.clone(),
                    milli: gpu.milli,
                });
        }
    }
    held
}

/// The report as a table, then the nodes left out.
pub fn render(report: &GpuReport) -> String {
    let mut out = if report.gpus.is_empty() {
        "No GPUs found: no node offers nvidia.com/gpu and no GpuNode lists any\n".to_owned()
    } else {
        table(&report.gpus)
    };
    for unreadable in &report.unreadable_nodes {
        out.push_str(&format!("left out: {unreadable}\n"));
    }
    out
}

fn table(rows: &[GpuRow]) -> String {
    table::render(
        &[
            "NODE",
            "GPU",
            "MODEL",
            "ALLOCATED",
            "SHARES",
            "HOLDERS",
            "HEALTH",
            "UTIL",
            "TELEMETRY AGE",
        ],
        rows.iter().map(|row| {
            vec![
                row.node.clone(),
                row.index.to_string(),
                row.model.clone(),
                format!("{}m", row.allocated_milli),
                row.shares.to_string(),
                if row.holders.is_empty() {
                    "-".to_owned()
                } else {
                    row.holders
                        .iter()
                        .map(|h| format!("{}({}m)", h.pod, h.milli))
                        .collect::<Vec<_>>()
                        .join(",")
                },
                match (row.healthy, &row.health_reason) {
                    (None, _) => "unknown".to_owned(),
                    (Some(true), _) => "healthy".to_owned(),
                    (Some(false), Some(why)) => format!("unhealthy: {why}"),
                    (Some(false), None) => "unhealthy".to_owned(),
                },
                row.utilization_percent
                    .map_or("-".to_owned(), |u| format!("{u}%")),
                row.telemetry_age_seconds
                    .map_or("-".to_owned(), |s| format!("{s}s")),
            ]
        }),
    )
}

#[cfg(test)]
mod tests;
