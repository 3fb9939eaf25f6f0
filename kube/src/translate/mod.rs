//! Kubernetes objects in, engine inputs out: the pure translation layer.
//!
//! Nothing here does I/O. The controller feeds it the Pods, Nodes and
//! `GpuNode`s its watches deliver and gets back [`PodDemand`]s, [`NodeSpec`]s,
//! live GPU states and assignment annotations. Semantics follow kube-scheduler
//! where it has them (resource requests, node affinity, taints, pod affinity and
//! topology spread), so a pod lands
//! where kube-scheduler would have allowed it to.
//!
//! Malformed input never panics: every bad field comes back as a
//! [`TranslateError`] naming the object and the field, ready to become an Event.
//!
//! [`PodDemand`]: phalanx_engine::PodDemand
//! [`NodeSpec`]: phalanx_engine::NodeSpec

mod default_spread;
mod disruption_budget;
mod host_ports;
mod inter_pod;
mod labels;
mod node;
#[cfg(test)]
mod node_rules_tests;
mod pod;
pub mod quantity;
mod queue;
mod scalar;
#[cfg(test)]
mod tests;
mod unsupported;
mod volumes;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use phalanx_api::{AssignedGpu, AssignmentParseError, GpuAssignmentAnnotation};

use phalanx_engine::{NodeState, Placement};

pub use default_spread::{DefaultConstraint, DefaultSpread, LABEL_CONTROLLER_UID};
pub use disruption_budget::{disruption_budget, DisruptionBudget};
pub use labels::{model_label_value, parse_taint_effect, LABEL_GPU_PRODUCT, NODE_NAME_FIELD_KEY};
pub use node::{gpu_live_states, node_spec, synthetic_gpu_uuid, GpuLiveState, MAX_GPUS_PER_NODE};
pub use pod::{
    assignment_of, is_bound, is_finished, is_ours, is_scheduling_gated, is_waiting_for_node,
    pod_demand, pod_key,
};
pub use quantity::{Quantity, QuantityError, Rounding};
pub use queue::{
    gang_queue, queue_name_of, queue_spec, GangQueueConflict, QueueAssignment, QueueSource,
    QueueSpecError, QueueSpecProblem, QUEUE_LABEL,
};
pub use volumes::{
    attach_limits, claim_spec, storage_class_spec, volume_spec, ANNOTATION_SELECTED_NODE,
};

/// A field of a Kubernetes object that cannot be translated. The `object` is
/// `pod <namespace>/<name>`, `node <name>` or `gpunode <name>`; the `field` is a
/// path into it, e.g. `spec.containers["main"].resources.requests["cpu"]`.
#[derive(Debug, thiserror::Error)]
pub enum TranslateError {
    /// A quantity that does not parse, or that is negative, fractional or too large
    /// where that is not allowed.
    #[error("{object}: {field}: {value:?} {problem}")]
    Quantity {
        object: String,
        field: String,
        value: String,
        problem: QuantityError,
    },
    /// Any other field whose value the scheduler cannot use.
    #[error("{object}: {field}: {reason}")]
    Invalid {
        object: String,
        field: String,
        reason: String,
    },
    /// The GPU assignment annotation is not the JSON the scheduler writes.
    #[error("{object}: {source}")]
    Assignment {
        object: String,
        #[source]
        source: AssignmentParseError,
    },
}

impl TranslateError {
    pub(crate) fn invalid(
        object: impl Into<String>,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        TranslateError::Invalid {
            object: object.into(),
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The object the error is about (`pod default/x`, `node n1`, `gpunode n1`).
    pub fn object(&self) -> &str {
        match self {
            TranslateError::Quantity { object, .. }
            | TranslateError::Invalid { object, .. }
            | TranslateError::Assignment { object, .. } => object,
        }
    }
}

/// Parses and converts one quantity, naming the field when either step fails.
pub(crate) fn convert_quantity(
    object: &str,
    field: String,
    raw: &K8sQuantity,
    convert: impl FnOnce(&Quantity) -> Result<u64, QuantityError>,
) -> Result<u64, TranslateError> {
    Quantity::parse(&raw.0)
        .and_then(|q| convert(&q))
        .map_err(|problem| TranslateError::Quantity {
            object: object.to_owned(),
            field,
            value: raw.0.clone(),
            problem,
        })
}

/// The annotation recording `placement` on a pod: each GPU's index, UUID and milli.
/// Synthetic UUIDs (a node without a `GpuNode`) are left empty, as the annotation's
/// contract asks, so the device plugin never looks for a device that does not exist.
pub fn assignment_annotation(
    node_name: &str,
    placement: &Placement,
    node: &NodeState,
) -> GpuAssignmentAnnotation {
    let gpus = placement
        .gpus
        .as_slice()
        .iter()
        .map(|share| {
            let index = usize::from(share.index);
            let uuid = node
                .gpus
                .get(index)
                .map(|gpu| gpu.uuid.as_str())
                .filter(|uuid| *uuid != synthetic_gpu_uuid(node_name, index))
                .unwrap_or_default();
            AssignedGpu {
                index: u32::from(share.index),
                uuid: uuid.to_owned(),
                milli: share.milli,
            }
        })
        .collect();
    GpuAssignmentAnnotation {
        node: node_name.to_owned(),
        gpus,
    }
}
