//! Gang definitions users already write.
//!
//! [`PodGroup`] is the scheduler-plugins coscheduling CRD
//! (`scheduling.x-k8s.io/v1alpha1`), used by Kubeflow's trainer, KubeRay and
//! others. Phalanx reads it and updates its status; it does not own the CRD, but
//! the type can generate it for clusters (and tests) that lack it.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Pod label naming the pod's PodGroup (in the pod's namespace).
pub const LABEL_POD_GROUP: &str = "scheduling.x-k8s.io/pod-group";

/// Phalanx's annotation form of a gang, for users without the PodGroup CRD: every
/// member carries the gang's name and its minimum member count.
pub const ANNOTATION_GANG_NAME: &str = "phalanx.dev/gang";
pub const ANNOTATION_GANG_MIN_MEMBER: &str = "phalanx.dev/gang-min-member";
/// Optional: seconds the gang may wait before it is reported as timed out.
pub const ANNOTATION_GANG_TIMEOUT_SECONDS: &str = "phalanx.dev/gang-timeout-seconds";
/// Optional: node label whose values are the topology domains the gang prefers.
pub const ANNOTATION_GANG_TOPOLOGY_KEY: &str = "phalanx.dev/gang-topology-key";
/// `"false"` on a pod (its template) or on the workload object that owns it
/// turns off finding the pod's gang from its owner (a JobSet, an indexed Job, a
/// LeaderWorkerSet group, ...): the pod is scheduled on its own. On a pod that
/// declares no gang, [`ANNOTATION_GANG_MIN_MEMBER`] (on the pod or the owner)
/// overrides the minimum derived from the owner's spec.
pub const ANNOTATION_AUTO_GANG: &str = "phalanx.dev/auto-gang";

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[kube(
    group = "scheduling.x-k8s.io",
    version = "v1alpha1",
    kind = "PodGroup",
    plural = "podgroups",
    shortname = "pg",
    namespaced,
    status = "PodGroupStatus"
)]
#[serde(rename_all = "camelCase")]
pub struct PodGroupSpec {
    /// Pods that must be scheduled together.
    #[serde(default)]
    pub min_member: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_resources: Option<BTreeMap<String, Quantity>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_timeout_seconds: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodGroupStatus {
    /// Pending, PreScheduling, Scheduling, Scheduled, Running, Finished, Failed, Unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occupied_by: Option<String>,
    #[serde(default)]
    pub scheduled: i32,
    #[serde(default)]
    pub running: i32,
    #[serde(default)]
    pub succeeded: i32,
    #[serde(default)]
    pub failed: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_start_time: Option<Time>,
}
