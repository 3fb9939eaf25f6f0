//! Nodes and `GpuNode`s: capacity, labels, taints, GPU inventory and live state.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Taint as K8sTaint};
use phalanx_api::{
    GpuDeviceSpec, GpuNode, LABEL_GPU_MODEL, MILLI_PER_GPU, RESOURCE_GPU_MILLI, RESOURCE_WHOLE_GPU,
};

use super::labels::{
    model_label_value, parse_taint_effect, LABEL_GPU_PRODUCT, NODE_NAME_FIELD_KEY,
};
use super::quantity::Rounding;
use super::scalar::node_scalar_resources;
use super::{convert_quantity, TranslateError};
use phalanx_engine::{GpuSample, GpuSpec, NodeSpec, Taint};

/// Most GPUs the engine takes on one node. Mirrors the engine's own (private)
/// limit; a test checks the two agree by adding nodes to a snapshot.
pub const MAX_GPUS_PER_NODE: usize = 16;

/// Live state of one GPU, by the engine's device index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuLiveState {
    pub index: usize,
    pub healthy: bool,
    pub sample: Option<GpuSample>,
}

/// The UUID given to GPUs of a node that has no `GpuNode` yet.
pub fn synthetic_gpu_uuid(node_name: &str, index: usize) -> String {
    format!("{node_name}-gpu-{index}")
}

/// A node as the engine sees it. Capacity comes from `status.allocatable` (or
/// `capacity` before kubelet reports allocatable), rounded down so the node never
/// looks bigger than it is; a resource not reported yet is zero. GPUs come from
/// the `GpuNode` when there is one, otherwise from the extended resources.
pub fn node_spec(node: &Node, gpu_node: Option<&GpuNode>) -> Result<NodeSpec, TranslateError> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let object = format!("node {name}");
    let mut labels = node.metadata.labels.clone().unwrap_or_default();
    let (gpus, gpu_model) = match gpu_node {
        Some(gn) => gpus_from_gpu_node(&name, gn)?,
        None => gpus_from_resources(&object, &name, node, &labels)?,
    };
    if gpus.len() > MAX_GPUS_PER_NODE {
        return Err(TranslateError::invalid(
            object,
            "GPUs",
            format!(
                "has {} GPUs; at most {MAX_GPUS_PER_NODE} per node are supported",
                gpus.len()
            ),
        ));
    }
    if let Some(model) = &gpu_model {
        // Required node affinity on the model label then works on every GPU node.
        labels.insert(LABEL_GPU_MODEL.to_owned(), model.clone());
    }
    labels.insert(NODE_NAME_FIELD_KEY.to_owned(), name.clone());
    let spec = node.spec.as_ref();
    Ok(NodeSpec {
        cpu_milli: allocatable(&object, node, "cpu", 1000, 1)?,
        memory_mib: allocatable(&object, node, "memory", 1, 1 << 20)?,
        max_pods: u32::try_from(allocatable(&object, node, "pods", 1, 1)?).unwrap_or(u32::MAX),
        gpu_model,
        gpus,
        labels,
        taints: taints(
            &object,
            spec.and_then(|s| s.taints.as_deref()).unwrap_or_default(),
        )?,
        unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
        scalar_resources: node_scalar_resources(&object, node)?,
        name,
    })
}

/// `resource · mul / div` from allocatable, else capacity, rounded down; 0 when
/// neither reports it.
fn allocatable(
    object: &str,
    node: &Node,
    resource: &str,
    mul: u64,
    div: u64,
) -> Result<u64, TranslateError> {
    let status = node.status.as_ref();
    let lists = [
        (
            "status.allocatable",
            status.and_then(|s| s.allocatable.as_ref()),
        ),
        ("status.capacity", status.and_then(|s| s.capacity.as_ref())),
    ];
    let Some((path, raw)) = lists
        .iter()
        .find_map(|(path, list)| Some((path, list.as_ref()?.get(resource)?)))
    else {
        return Ok(0);
    };
    convert_quantity(object, format!("{path}[{resource:?}]"), raw, |q| {
        q.scaled(mul, div, Rounding::Down)
    })
}

/// The `GpuNode`'s inventory in index order. Indices must be 0..n-1: the engine's
/// device index is a GPU's position and the assignment annotation hands it to the
/// device plugin as the NVML index, so the two must agree.
fn gpus_from_gpu_node(
    node_name: &str,
    gn: &GpuNode,
) -> Result<(Vec<GpuSpec>, Option<String>), TranslateError> {
    let object = format!(
        "gpunode {}",
        gn.metadata.name.as_deref().unwrap_or(node_name)
    );
    if gn.spec.node_name != node_name {
        return Err(TranslateError::invalid(
            object,
            "spec.nodeName",
            format!("{:?} is not node {node_name:?}", gn.spec.node_name),
        ));
    }
    let devices = sorted_devices(gn);
    let indices: Vec<u32> = devices.iter().map(|d| d.index).collect();
    if indices
        .iter()
        .enumerate()
        .any(|(pos, index)| *index as usize != pos)
    {
        return Err(TranslateError::invalid(
            object,
            "spec.gpus[*].index",
            format!("indices must be 0..n-1 without gaps or repeats, got {indices:?}"),
        ));
    }
    let model = match devices.first() {
        Some(first) => Some(single_model(&object, first, &devices)?),
        None => None,
    };
    let gpus = devices
        .iter()
        .map(|d| GpuSpec {
            uuid: d.uuid.clone(),
            memory_mib: d.memory_mib,
        })
        .collect();
    Ok((gpus, model))
}

fn sorted_devices(gn: &GpuNode) -> Vec<&GpuDeviceSpec> {
    let mut devices: Vec<&GpuDeviceSpec> = gn.spec.gpus.iter().collect();
    devices.sort_by_key(|d| d.index);
    devices
}

/// The engine gives a node one model; a node mixing models cannot be described.
fn single_model(
    object: &str,
    first: &GpuDeviceSpec,
    devices: &[&GpuDeviceSpec],
) -> Result<String, TranslateError> {
    let model = model_label_value(&first.model);
    if model.is_empty() {
        return Err(TranslateError::invalid(
            object,
            format!("spec.gpus[{}].model", first.index),
            format!("{:?} names no model", first.model),
        ));
    }
    match devices
        .iter()
        .find(|d| model_label_value(&d.model) != model)
    {
        Some(other) => Err(TranslateError::invalid(
            object,
            "spec.gpus[*].model",
            format!(
                "mixes GPU models ({:?} and {:?}); one model per node is supported",
                first.model, other.model
            ),
        )),
        None => Ok(model),
    }
}

/// GPUs counted from `nvidia.com/gpu` (or `phalanx.dev/gpu-milli` / 1000) with
/// synthetic UUIDs and unknown memory; the model from the node's labels.
fn gpus_from_resources(
    object: &str,
    node_name: &str,
    node: &Node,
    labels: &BTreeMap<String, String>,
) -> Result<(Vec<GpuSpec>, Option<String>), TranslateError> {
    let mut count = allocatable(object, node, RESOURCE_WHOLE_GPU, 1, 1)?;
    if count == 0 {
        // Only whole GPUs can be modelled; a remainder of milli is dropped.
        count = allocatable(
            object,
            node,
            RESOURCE_GPU_MILLI,
            1,
            u64::from(MILLI_PER_GPU),
        )?;
    }
    if count == 0 {
        return Ok((Vec::new(), None));
    }
    // Refuse before allocating anything for an absurd count.
    if count > MAX_GPUS_PER_NODE as u64 {
        return Err(TranslateError::invalid(
            object,
            format!("status.allocatable[{RESOURCE_WHOLE_GPU:?}]"),
            format!("has {count} GPUs; at most {MAX_GPUS_PER_NODE} per node are supported"),
        ));
    }
    let model = [LABEL_GPU_MODEL, LABEL_GPU_PRODUCT]
        .iter()
        .filter_map(|key| labels.get(*key))
        .map(|value| model_label_value(value))
        .find(|model| !model.is_empty())
        .ok_or_else(|| {
            TranslateError::invalid(
                object,
                "metadata.labels",
                format!(
                    "has {count} GPUs but no model: label it {LABEL_GPU_MODEL} or {LABEL_GPU_PRODUCT}, \
                     or let the device plugin publish its GpuNode"
                ),
            )
        })?;
    let gpus = (0..count as usize)
        .map(|i| GpuSpec {
            uuid: synthetic_gpu_uuid(node_name, i),
            memory_mib: 0,
        })
        .collect();
    Ok((gpus, Some(model)))
}

fn taints(object: &str, taints: &[K8sTaint]) -> Result<Vec<Taint>, TranslateError> {
    taints
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let effect = parse_taint_effect(&t.effect).ok_or_else(|| {
                TranslateError::invalid(
                    object,
                    format!("spec.taints[{i}].effect"),
                    format!("unknown effect {:?}", t.effect),
                )
            })?;
            Ok(Taint {
                key: t.key.clone(),
                value: t.value.clone().unwrap_or_default(),
                effect,
            })
        })
        .collect()
}

/// Health and the latest sample of each GPU, matched to the inventory by UUID.
/// A GPU the status does not mention yet counts as healthy with no sample; without
/// `status.observedAt` the samples cannot be dated, so none is given. The numbers
/// are passed on as written: `ClusterSnapshot::set_gpu_telemetry` checks them
/// against the GPU's memory (spec `memoryMib`), 0–100 % and the clock, in the one
/// place every caller goes through.
pub fn gpu_live_states(gpu_node: &GpuNode) -> Vec<GpuLiveState> {
    let status = gpu_node.status.as_ref();
    let observed_at_ms = status
        .and_then(|s| s.observed_at.as_ref())
        .map(|t| u64::try_from(t.0.as_millisecond()).unwrap_or(0));
    sorted_devices(gpu_node)
        .iter()
        .enumerate()
        .map(|(index, device)| {
            let live = status.and_then(|s| s.gpus.iter().find(|g| g.uuid == device.uuid));
            GpuLiveState {
                index,
                healthy: live.is_none_or(|g| g.healthy),
                sample: live
                    .zip(observed_at_ms)
                    .map(|(g, observed_at_ms)| GpuSample {
                        memory_used_mib: g.memory_used_mib,
                        utilization_percent: g.utilization_percent,
                        observed_at_ms,
                    }),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use phalanx_engine::TaintEffect;

    use super::*;

    fn node(value: serde_json::Value) -> Node {
        serde_json::from_value(value).unwrap()
    }

    fn gpu_node(value: serde_json::Value) -> GpuNode {
        serde_json::from_value(value).unwrap()
    }

    fn h100(index: u32, uuid: &str) -> serde_json::Value {
        json!({"index": index, "uuid": uuid, "model": "NVIDIA H100 80GB HBM3", "memoryMib": 81559})
    }

    fn plain_node() -> Node {
        node(json!({
            "metadata": {"name": "n1", "labels": {"zone": "a"}},
            "spec": {"taints": [
                {"key": "gpu", "value": "yes", "effect": "NoSchedule"},
                {"key": "soft", "effect": "PreferNoSchedule"}
            ], "unschedulable": true},
            "status": {
                "capacity": {"cpu": "64", "memory": "512Gi", "pods": "250"},
                "allocatable": {"cpu": "63500m", "memory": "514000000Ki", "pods": "110"}
            }
        }))
    }

    #[test]
    fn label_values_for_products() {
        assert_eq!(
            model_label_value("NVIDIA H100 80GB HBM3"),
            "NVIDIA-H100-80GB-HBM3"
        );
        assert_eq!(
            model_label_value("NVIDIA-A100-SXM4-80GB"),
            "NVIDIA-A100-SXM4-80GB"
        );
        assert_eq!(model_label_value("  Tesla T4 (rev 2) "), "Tesla-T4--rev-2");
        assert_eq!(model_label_value("GPU/ü_x."), "GPU--_x");
        assert_eq!(model_label_value("***"), "");
        let long = model_label_value(&format!("{}--{}", "a".repeat(62), "b".repeat(10)));
        assert_eq!(long, "a".repeat(62), "63 characters, trailing dash trimmed");
        for v in [
            "NVIDIA H100 80GB HBM3",
            "  Tesla T4 (rev 2) ",
            &"x".repeat(100),
        ] {
            let once = model_label_value(v);
            assert!(once.len() <= 63);
            assert_eq!(model_label_value(&once), once, "idempotent");
        }
    }

    #[test]
    fn cpu_node_from_allocatable() {
        let spec = node_spec(&plain_node(), None).unwrap();
        assert_eq!(spec.name, "n1");
        assert_eq!(spec.cpu_milli, 63_500);
        assert_eq!(
            spec.memory_mib, 501_953,
            "514000000 KiB = 501953.125 MiB, rounded down"
        );
        assert_eq!(spec.max_pods, 110);
        assert!(spec.gpus.is_empty());
        assert_eq!(spec.gpu_model, None);
        assert!(spec.unschedulable);
        assert_eq!(spec.labels.get("zone").map(String::as_str), Some("a"));
        assert_eq!(
            spec.labels.get(NODE_NAME_FIELD_KEY).map(String::as_str),
            Some("n1")
        );
        assert!(!spec.labels.contains_key(LABEL_GPU_MODEL));
        assert_eq!(
            spec.taints,
            vec![
                Taint {
                    key: "gpu".into(),
                    value: "yes".into(),
                    effect: TaintEffect::NoSchedule
                },
                Taint {
                    key: "soft".into(),
                    value: String::new(),
                    effect: TaintEffect::PreferNoSchedule
                },
            ]
        );
    }

    #[test]
    fn capacity_stands_in_until_allocatable_is_reported() {
        let n = node(json!({"metadata": {"name": "n1"},
            "status": {"capacity": {"cpu": "8", "memory": "16Gi", "pods": "110"}}}));
        let spec = node_spec(&n, None).unwrap();
        assert_eq!(
            (spec.cpu_milli, spec.memory_mib, spec.max_pods),
            (8000, 16384, 110)
        );
        let bare = node_spec(&node(json!({"metadata": {"name": "n2"}})), None).unwrap();
        assert_eq!((bare.cpu_milli, bare.memory_mib, bare.max_pods), (0, 0, 0));
        assert!(!bare.unschedulable);
    }

    #[test]
    fn gpus_from_extended_resources_and_labels() {
        let n = node(json!({
            "metadata": {"name": "g1", "labels": {"nvidia.com/gpu.product": "Tesla-T4"}},
            "status": {"allocatable": {"cpu": "8", "nvidia.com/gpu": "4"}}
        }));
        let spec = node_spec(&n, None).unwrap();
        assert_eq!(spec.gpu_model.as_deref(), Some("Tesla-T4"));
        assert_eq!(
            spec.labels.get(LABEL_GPU_MODEL).map(String::as_str),
            Some("Tesla-T4")
        );
        let uuids: Vec<&str> = spec.gpus.iter().map(|g| g.uuid.as_str()).collect();
        assert_eq!(uuids, ["g1-gpu-0", "g1-gpu-1", "g1-gpu-2", "g1-gpu-3"]);
        assert!(spec.gpus.iter().all(|g| g.memory_mib == 0));

        let milli_only = node(json!({
            "metadata": {"name": "g2", "labels": {
                "phalanx.dev/gpu-model": "A100", "nvidia.com/gpu.product": "ignored"}},
            "status": {"allocatable": {"phalanx.dev/gpu-milli": "2500"}}
        }));
        let spec = node_spec(&milli_only, None).unwrap();
        assert_eq!(spec.gpus.len(), 2, "2500 milli is two whole GPUs");
        assert_eq!(spec.gpu_model.as_deref(), Some("A100"), "our label wins");
    }

    #[test]
    fn gpus_from_a_gpu_node_in_index_order() {
        let gn = gpu_node(json!({
            "metadata": {"name": "g1"},
            "spec": {"nodeName": "g1", "gpus": [h100(1, "GPU-b"), h100(0, "GPU-a")]}
        }));
        let n = node(
            json!({"metadata": {"name": "g1", "labels": {"phalanx.dev/gpu-model": "stale"}},
            "status": {"allocatable": {"nvidia.com/gpu": "8"}}}),
        );
        let spec = node_spec(&n, Some(&gn)).unwrap();
        assert_eq!(
            spec.gpus,
            vec![
                GpuSpec {
                    uuid: "GPU-a".into(),
                    memory_mib: 81559
                },
                GpuSpec {
                    uuid: "GPU-b".into(),
                    memory_mib: 81559
                },
            ],
            "the GpuNode's inventory, not the resource count"
        );
        assert_eq!(spec.gpu_model.as_deref(), Some("NVIDIA-H100-80GB-HBM3"));
        assert_eq!(
            spec.labels.get(LABEL_GPU_MODEL).map(String::as_str),
            Some("NVIDIA-H100-80GB-HBM3"),
            "the inventory overrides a stale label"
        );
    }

    #[test]
    fn bad_nodes_are_errors_naming_the_field() {
        let err = |n: &Node, gn: Option<&GpuNode>| node_spec(n, gn).unwrap_err().to_string();
        let mut mixed_gpus = vec![h100(0, "GPU-a")];
        mixed_gpus
            .push(json!({"index": 1, "uuid": "GPU-b", "model": "NVIDIA A100", "memoryMib": 1}));
        let mixed = gpu_node(
            json!({"metadata": {"name": "g1"}, "spec": {"nodeName": "g1", "gpus": mixed_gpus}}),
        );
        let g1 = node(json!({"metadata": {"name": "g1"}}));
        let e = err(&g1, Some(&mixed));
        assert!(
            e.starts_with("gpunode g1: spec.gpus[*].model: mixes GPU models"),
            "{e}"
        );

        let gap = gpu_node(json!({"metadata": {"name": "g1"},
            "spec": {"nodeName": "g1", "gpus": [h100(0, "a"), h100(2, "c")]}}));
        assert!(err(&g1, Some(&gap)).contains("got [0, 2]"));
        let other =
            gpu_node(json!({"metadata": {"name": "g9"}, "spec": {"nodeName": "g9", "gpus": []}}));
        assert!(err(&g1, Some(&other)).contains("spec.nodeName"));

        let unlabelled = node(json!({"metadata": {"name": "g1"},
            "status": {"allocatable": {"nvidia.com/gpu": "2"}}}));
        let e = err(&unlabelled, None);
        assert!(
            e.starts_with("node g1: metadata.labels: has 2 GPUs but no model"),
            "{e}"
        );

        let many = node(
            json!({"metadata": {"name": "g1", "labels": {"phalanx.dev/gpu-model": "T4"}},
            "status": {"allocatable": {"nvidia.com/gpu": "17"}}}),
        );
        assert!(err(&many, None).contains("at most 16 per node"));
        let huge = node(
            json!({"metadata": {"name": "g1", "labels": {"phalanx.dev/gpu-model": "T4"}},
            "status": {"allocatable": {"nvidia.com/gpu": "1e15"}}}),
        );
        assert!(err(&huge, None).contains("at most 16 per node"));
        let devices: Vec<_> = (0..17).map(|i| h100(i, &format!("GPU-{i}"))).collect();
        let big = gpu_node(
            json!({"metadata": {"name": "g1"}, "spec": {"nodeName": "g1", "gpus": devices}}),
        );
        assert!(err(&g1, Some(&big)).starts_with("node g1: GPUs: has 17 GPUs"));

        let bad_cpu =
            node(json!({"metadata": {"name": "n"}, "status": {"allocatable": {"cpu": "many"}}}));
        assert_eq!(
            err(&bad_cpu, None),
            r#"node n: status.allocatable["cpu"]: "many" is not a quantity"#
        );
        let bad_gpu = node(
            json!({"metadata": {"name": "n"}, "status": {"allocatable": {"nvidia.com/gpu": "-2"}}}),
        );
        assert!(err(&bad_gpu, None).contains("is negative"));
        let bad_taint = node(json!({"metadata": {"name": "n"},
            "spec": {"taints": [{"key": "k", "effect": "Sometimes"}]}}));
        assert_eq!(
            err(&bad_taint, None),
            r#"node n: spec.taints[0].effect: unknown effect "Sometimes""#
        );
    }

    #[test]
    fn live_states_match_status_by_uuid() {
        let gn = gpu_node(json!({
            "metadata": {"name": "g1"},
            "spec": {"nodeName": "g1", "gpus": [h100(0, "GPU-a"), h100(1, "GPU-b"), h100(2, "GPU-c")]},
            "status": {
                "observedAt": "2025-01-02T03:04:05Z",
                "gpus": [
                    {"uuid": "GPU-c", "healthy": false, "memoryUsedMib": 10, "utilizationPercent": 0},
                    {"uuid": "GPU-a", "healthy": true, "memoryUsedMib": 40000, "utilizationPercent": 97},
                    {"uuid": "GPU-gone", "healthy": false, "memoryUsedMib": 0, "utilizationPercent": 0}
                ]
            }
        }));
        let at = 1_735_787_045_000;
        let states = gpu_live_states(&gn);
        assert_eq!(
            states,
            vec![
                GpuLiveState {
                    index: 0,
                    healthy: true,
                    sample: Some(GpuSample {
                        memory_used_mib: 40000,
                        utilization_percent: 97,
                        observed_at_ms: at
                    }),
                },
                GpuLiveState {
                    index: 1,
                    healthy: true,
                    sample: None
                },
                GpuLiveState {
                    index: 2,
                    healthy: false,
                    sample: Some(GpuSample {
                        memory_used_mib: 10,
                        utilization_percent: 0,
                        observed_at_ms: at
                    }),
                },
            ]
        );
        let undated = gpu_node(json!({"metadata": {"name": "g1"},
            "spec": {"nodeName": "g1", "gpus": [h100(0, "GPU-a")]},
            "status": {"gpus": [{"uuid": "GPU-a", "healthy": false, "memoryUsedMib": 1, "utilizationPercent": 1}]}}));
        assert_eq!(
            gpu_live_states(&undated),
            vec![GpuLiveState {
                index: 0,
                healthy: false,
                sample: None
            }]
        );
        let no_status = gpu_node(json!({"metadata": {"name": "g1"},
            "spec": {"nodeName": "g1", "gpus": [h100(0, "GPU-a")]}}));
        assert_eq!(
            gpu_live_states(&no_status),
            vec![GpuLiveState {
                index: 0,
                healthy: true,
                sample: None
            }]
        );
    }

    #[test]
    fn live_states_pass_hostile_numbers_on_for_the_snapshot_to_reject() {
        // The snapshot checks samples against the GPU's memory and the clock; the
        // translation only must not panic or wrap: before 1970 reads as 0 (stale).
        let gn = gpu_node(json!({"metadata": {"name": "g1"},
            "spec": {"nodeName": "g1", "gpus": [h100(0, "GPU-a")]},
            "status": {"observedAt": "1960-01-01T00:00:00Z", "gpus": [{"uuid": "GPU-a",
                "healthy": true, "memoryUsedMib": u64::MAX, "utilizationPercent": u32::MAX}]}}));
        assert_eq!(
            gpu_live_states(&gn),
            vec![GpuLiveState {
                index: 0,
                healthy: true,
                sample: Some(GpuSample {
                    memory_used_mib: u64::MAX,
                    utilization_percent: u32::MAX,
                    observed_at_ms: 0
                })
            }]
        );
    }
}
