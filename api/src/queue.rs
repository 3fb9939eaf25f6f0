//! `Queue`: one team's (or one organisation's) share of the cluster.
//!
//! Cluster-scoped. A queue may name a parent, so queues form a hierarchy; per
//! resource it names what it is guaranteed, the most it may ever hold, and its
//! weight when what others leave idle is shared out. Pods reach a queue by the
//! [`LABEL_QUEUE`] label on the pod, else the same label on their namespace,
//! else the scheduler's default queue. The scheduler writes the status: whether
//! the spec is valid, and per resource what the queue uses, is guaranteed and
//! deserves now, and what waits in it.
//!
//! ```yaml
//! apiVersion: phalanx.dev/v1alpha1
//! kind: Queue
//! metadata: { name: research }
//! spec:
//!   parent: org
//!   resources:
//!     - { resource: nvidia.com/gpu, guaranteed: "8", limit: "32", overQuotaWeight: 2 }
//!     - { resource: nvidia.com/gpu, model: H100, guaranteed: "4" }
//!     - { resource: cpu, guaranteed: "64" }
//! ```

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::MILLI_PER_GPU;

/// Pod (or namespace) label naming the pod's queue.
pub const LABEL_QUEUE: &str = "phalanx.dev/queue";

/// Condition type: the queue's spec (and its parents') can be used; while
/// `False`, nothing in the queue is scheduled and the reason says why.
pub const CONDITION_QUEUE_VALID: &str = "Valid";

/// The highest `overQuotaWeight` accepted: weights are ratios between
/// siblings, and a bound keeps a typo (`10000000`) from leaving every sibling
/// nothing of what is idle. The CRD's schema says so too, so the API server
/// refuses it at once; the scheduler checks again for objects stored before.
pub const MAX_OVER_QUOTA_WEIGHT: u32 = 1000;

/// One queue's place in the hierarchy and its terms.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[kube(
    group = "phalanx.dev",
    version = "v1alpha1",
    kind = "Queue",
    plural = "queues",
    // `q` is Volcano's short name for its own Queue kind: a cluster running
    // both would see one shadow the other.
    shortname = "pq",
    status = "QueueStatus",
    printcolumn = r#"{"name":"Parent","type":"string","jsonPath":".spec.parent"}"#,
    printcolumn = r#"{"name":"GPU Used","type":"string","jsonPath":".status.gpu.used"}"#,
    printcolumn = r#"{"name":"GPU Guaranteed","type":"string","jsonPath":".status.gpu.guaranteed"}"#,
    printcolumn = r#"{"name":"GPU Fair Share","type":"string","jsonPath":".status.gpu.fairShare"}"#,
    printcolumn = r#"{"name":"GPU Limit","type":"string","jsonPath":".status.gpu.limit"}"#,
    printcolumn = r#"{"name":"Pending Pods","type":"integer","jsonPath":".status.pending.pods"}"#,
    printcolumn = r#"{"name":"Valid","type":"string","jsonPath":".status.conditions[?(@.type==\"Valid\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct QueueSpec {
    /// The queue this one shares with its siblings; absent for a top-level queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The queue's terms, resource by resource; a resource not named here has
    /// nothing guaranteed, no limit of its own and an over-quota weight of 1.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<QueueResourceQuota>,
}

/// The queue's terms for one resource.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueResourceQuota {
    /// `cpu`, `memory`, `nvidia.com/gpu` (whole GPUs; `0.5` is half of one) or
    /// `phalanx.dev/gpu-milli` (thousandths of a GPU). The two GPU names are
    /// one quota in two units: a queue names at most one of them per model.
    pub resource: String,
    /// Only with a GPU resource: the terms cover GPUs of this model (the
    /// `GpuNode`'s model, as the `phalanx.dev/gpu-model` node label spells it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Always available to the queue when it asks, taken back from queues that
    /// borrowed it; absent is 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guaranteed: Option<Quantity>,
    /// Never exceeded, however idle the cluster; absent is no limit beyond
    /// the parent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<Quantity>,
    /// The queue's weight when what is left after guarantees is shared; 0
    /// borrows nothing beyond the guarantee. Absent is 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 1000))]
    pub over_quota_weight: Option<u32>,
}

/// What the scheduler last saw of the queue.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueStatus {
    /// The spec generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Valid`: `False` with the reason when the queue (or one of its
    /// parents) cannot be used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Per resource the queue names or uses: its usage, guarantee, fair share
    /// and limit, as quantities in the resource's own unit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<QueueResourceStatus>,
    /// GPUs of every model, in GPUs (`1.5`): what `kubectl get queues` shows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<QueueGpuStatus>,
    /// Work waiting in the queue.
    #[serde(default)]
    pub pending: QueuePending,
}

/// One resource's figures for the queue.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueResourceStatus {
    pub resource: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub used: Quantity,
    pub guaranteed: Quantity,
    /// What the queue deserves now: its guarantee plus its part of what is idle.
    pub fair_share: Quantity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<Quantity>,
}

/// GPU figures in GPUs as decimal strings (`1.5`), for the printer columns.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueGpuStatus {
    pub used: String,
    pub guaranteed: String,
    pub fair_share: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
}

/// Pods and gangs waiting in the queue.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueuePending {
    #[serde(default)]
    pub pods: u32,
    #[serde(default)]
    pub gangs: u32,
}

/// Milli-GPU as GPUs for the status columns, without trailing zeros:
/// 1500 → `1.5`, 2000 → `2`, 25 → `0.025`.
pub fn gpus_from_milli(milli: u64) -> String {
    let per_gpu = u64::from(MILLI_PER_GPU);
    let (whole, frac) = (milli / per_gpu, milli % per_gpu);
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:03}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    use super::*;

    #[test]
    fn crd_is_cluster_scoped_with_status_and_the_columns_kubectl_shows() {
        let crd = Queue::crd();
        assert_eq!(crd.spec.group, "phalanx.dev");
        assert_eq!(crd.spec.scope, "Cluster");
        assert_eq!(crd.spec.names.plural, "queues");
        assert_eq!(crd.spec.names.short_names, Some(vec!["pq".to_owned()]));
        let version = &crd.spec.versions[0];
        assert!(version
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some());
        let columns: Vec<&str> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            columns,
            [
                "Parent",
                "GPU Used",
                "GPU Guaranteed",
                "GPU Fair Share",
                "GPU Limit",
                "Pending Pods",
                "Valid",
                "Age"
            ]
        );
    }

    #[test]
    fn minimal_spec_parses_and_omits_what_was_not_written() {
        let spec: QueueSpec = serde_json::from_value(serde_json::json!({
            "resources": [
                { "resource": "nvidia.com/gpu", "guaranteed": 4 },
                { "resource": "nvidia.com/gpu", "model": "H100", "limit": "2", "overQuotaWeight": 3 }
            ]
        }))
        .expect("valid spec");
        assert_eq!(spec.parent, None);
        assert_eq!(spec.resources[0].guaranteed, Some(Quantity("4".into())));
        assert_eq!(spec.resources[0].over_quota_weight, None);
        assert_eq!(spec.resources[1].model.as_deref(), Some("H100"));
        assert_eq!(spec.resources[1].over_quota_weight, Some(3));
        let schema = serde_json::to_value(Queue::crd().spec.versions[0].schema.clone())
            .expect("schema serialises");
        let weight = &schema["openAPIV3Schema"]["properties"]["spec"]["properties"]["resources"]
            ["items"]["properties"]["overQuotaWeight"];
        assert_eq!(
            weight["maximum"].as_f64(),
            Some(f64::from(MAX_OVER_QUOTA_WEIGHT))
        );
        let back = serde_json::to_value(&spec.resources[0]).expect("serialises");
        assert_eq!(
            back,
            serde_json::json!({ "resource": "nvidia.com/gpu", "guaranteed": "4" })
        );
    }

    #[test]
    fn gpu_columns_read_as_gpus() {
        assert_eq!(gpus_from_milli(0), "0");
        assert_eq!(gpus_from_milli(2000), "2");
        assert_eq!(gpus_from_milli(1500), "1.5");
        assert_eq!(gpus_from_milli(25), "0.025");
        assert_eq!(gpus_from_milli(1250), "1.25");
    }
}
