//! Binding a pod to the node the engine chose, with the GPUs it chose.
//!
//! The GPU assignment annotation must be on the pod no later than `spec.nodeName`
//! (the device plugin reads it when kubelet allocates). By default
//! ([`AnnotationWrite::WithBinding`]) it travels on the Binding's own metadata:
//! the API server copies a Binding's annotations onto the pod in the same update
//! that sets `spec.nodeName`, so one write does both and a Binding the server
//! refuses (409: already bound) changes nothing. [`AnnotationWrite::Patch`] writes
//! it with a merge patch first, then the Binding. Both carry the pod's UID, so a
//! pod deleted and recreated under the same name between the decision and the
//! write is never bound with another pod's decision. Bindings are rate limited
//! with `governor`.
//!
//! A gang is bound in two phases (see ARCHITECTURE.md, "Gangs across a leader
//! change"): [`Binder::write_plan`] records the whole gang's placement on every
//! member first, then each member gets its Binding. A new leader finishes such
//! a plan with Bindings, or undoes it with [`Binder::delete_member`] and
//! [`Binder::clear_plan`].

use std::num::NonZeroU32;
use std::sync::Arc;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Client};
use phalanx_api::{
    GangPlanAnnotation, GpuAssignmentAnnotation, ANNOTATION_GANG_PLAN, ANNOTATION_GPU_ASSIGNMENT,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::metrics::BindingErrorReason;

/// The pod being bound, as the scheduler saw it when it decided.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl std::fmt::Display for PodRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// How the GPU assignment annotation reaches the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AnnotationWrite {
    /// A merge patch on the pod, then the Binding (two writes). During a leader
    /// handover a replica that loses the race for the Binding has already
    /// overwritten the winner's annotation, so this is not the default.
    Patch,
    /// On the Binding's metadata (one write): only the replica whose Binding the
    /// API server accepts ever writes the annotation, and it lands in the same
    /// update as `spec.nodeName`.
    #[default]
    WithBinding,
}

/// Why a binding did not happen. Only [`BindError::Api`] is worth retrying.
#[derive(Debug, Error)]
pub enum BindError {
    #[error("pod {pod} no longer exists")]
    Gone { pod: String },
    #[error("pod {pod} was bound by someone else or replaced: {message}")]
    Conflict { pod: String, message: String },
    #[error("pod {pod} not bound: this replica's Lease is expiring or held by another replica")]
    Fenced { pod: String },
    /// Not sent: the node was deleted after the pod was placed on it.
    #[error("pod {pod} not bound: node {node} was deleted after the pod was placed on it")]
    NodeGone { pod: String, node: String },
    #[error("pod {pod} not bound: its gang's plan could not be written on every member: {why}")]
    GangPlanNotWritten { pod: String, why: String },
    /// Its claims were not pre-bound, or not Bound in time (VolumeBinding's
    /// PreBind); the Binding was not sent.
    #[error("pod {pod} not bound: binding volumes: {why}")]
    Volumes { pod: String, why: String },
    #[error("binding pod {pod} failed: {source}")]
    Api {
        pod: String,
        #[source]
        source: kube::Error,
    },
}

impl BindError {
    /// The label of the binding-errors metric.
    pub fn reason(&self) -> BindingErrorReason {
        match self {
            BindError::Gone { .. } => BindingErrorReason::NotFound,
            BindError::Conflict { .. } => BindingErrorReason::Conflict,
            BindError::Fenced { .. } => BindingErrorReason::Fenced,
            BindError::NodeGone { .. } => BindingErrorReason::NodeGone,
            BindError::Api { .. }
            | BindError::GangPlanNotWritten { .. }
            | BindError::Volumes { .. } => BindingErrorReason::Other,
        }
    }

    fn from_kube(pod: &PodRef, source: kube::Error) -> Self {
        match &source {
            kube::Error::Api(status) if status.code == 404 => BindError::Gone {
                pod: pod.to_string(),
            },
            // 409: already bound, or UID precondition failed. 422 on the patch: the
            // UID we sent is not this pod's (it was recreated under the same name).
            kube::Error::Api(status) if status.code == 409 || status.code == 422 => {
                BindError::Conflict {
                    pod: pod.to_string(),
                    message: status.message.clone(),
                }
            }
            _ => BindError::Api {
                pod: pod.to_string(),
                source,
            },
        }
    }
}

/// Writes annotations and Bindings, at most `qps` pods per second.
#[derive(Clone)]
pub struct Binder {
    client: Client,
    limiter: Arc<DefaultDirectRateLimiter>,
    mode: AnnotationWrite,
}

impl std::fmt::Debug for Binder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Binder").field("mode", &self.mode).finish()
    }
}

impl Binder {
    pub fn new(client: Client, qps: NonZeroU32, burst: NonZeroU32, mode: AnnotationWrite) -> Self {
        let quota = Quota::per_second(qps).allow_burst(burst);
        Binder {
            client,
            limiter: Arc::new(RateLimiter::direct(quota)),
            mode,
        }
    }

    /// Binds `pod` to `node`, recording `gpus` first when the pod has any.
    pub async fn bind(
        &self,
        pod: &PodRef,
        node: &str,
        gpus: Option<&GpuAssignmentAnnotation>,
    ) -> Result<(), BindError> {
        self.ready().await;
        self.bind_now(pod, node, gpus).await
    }

    /// Waits until the rate limiter lets one more binding through. Callers
    /// that must re-check something after the wait (the Lease, the node) call
    /// this, check, then [`Binder::bind_now`].
    pub async fn ready(&self) {
        self.limiter.until_ready().await;
    }

    /// [`Binder::bind`] without waiting for the rate limiter: only after
    /// [`Binder::ready`].
    pub async fn bind_now(
        &self,
        pod: &PodRef,
        node: &str,
        gpus: Option<&GpuAssignmentAnnotation>,
    ) -> Result<(), BindError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        let mut binding = binding_for(pod, node);
        if let Some(gpus) = gpus {
            match self.mode {
                AnnotationWrite::Patch => {
                    api.patch(
                        &pod.name,
                        &PatchParams::default(),
                        &Patch::Merge(annotation_patch(pod, gpus)),
                    )
                    .await
                    .map_err(|e| BindError::from_kube(pod, e))?;
                }
                AnnotationWrite::WithBinding => {
                    binding.metadata.annotations = Some(
                        [(ANNOTATION_GPU_ASSIGNMENT.to_owned(), gpus.to_json())]
                            .into_iter()
                            .collect(),
                    );
                }
            }
        }
        let _status: serde_json::Value = api
            .create_subresource("binding", &pod.name, &PostParams::default(), &binding)
            .await
            .map_err(|e| BindError::from_kube(pod, e))?;
        Ok(())
    }
}

impl Binder {
    /// Records the member's part of its gang's plan. The patch carries the
    /// pod's UID, so a pod replaced meanwhile refuses it (422). No
    /// `resourceVersion` precondition: the scheduler's own writes to a waiting
    /// member (its `PodScheduled=False` condition) change the version between
    /// the decision and this write, and a conflict there cost a whole gang a
    /// backoff for nothing. A pod bound meanwhile refuses its Binding instead.
    pub async fn write_plan(
        &self,
        pod: &PodRef,
        plan: &GangPlanAnnotation,
    ) -> Result<(), BindError> {
        self.patch(pod, plan_patch(pod, Some(plan))).await
    }

    /// Removes a plan that will not be carried out (an undone gang).
    pub async fn clear_plan(&self, pod: &PodRef) -> Result<(), BindError> {
        self.patch(pod, plan_patch(pod, None)).await
    }

    /// Deletes a bound member of a gang that cannot be finished, so that its
    /// owner recreates it and the gang is placed again whole. The UID
    /// precondition spares a pod recreated under the same name.
    pub async fn delete_member(&self, pod: &PodRef) -> Result<(), BindError> {
        self.limiter.until_ready().await;
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(pod.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        api.delete(&pod.name, &params)
            .await
            .map(|_| ())
            .map_err(|e| BindError::from_kube(pod, e))
    }

    async fn patch(&self, pod: &PodRef, patch: serde_json::Value) -> Result<(), BindError> {
        self.limiter.until_ready().await;
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        api.patch(&pod.name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map(|_| ())
            .map_err(|e| BindError::from_kube(pod, e))
    }
}

/// The merge patch that sets (`Some`) or removes (`None`) the gang plan,
/// guarded by the pod's UID.
pub fn plan_patch(pod: &PodRef, plan: Option<&GangPlanAnnotation>) -> serde_json::Value {
    serde_json::json!({
        "metadata": {
            "uid": pod.uid,
            "annotations": { ANNOTATION_GANG_PLAN: plan.map(GangPlanAnnotation::to_json) }
        }
    })
}

/// The Binding kube-scheduler would send: the pod's name, namespace and UID (a
/// precondition the API server checks), targeting the node.
pub fn binding_for(pod: &PodRef, node: &str) -> Binding {
    Binding {
        metadata: ObjectMeta {
            name: Some(pod.name.clone()),
            namespace: Some(pod.namespace.clone()),
            uid: Some(pod.uid.clone()),
            ..ObjectMeta::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.to_owned()),
            ..ObjectReference::default()
        },
    }
}

/// The merge patch that records the assignment. The UID rides along: the API
/// server refuses to change a UID, so a recreated pod rejects the patch (422).
pub fn annotation_patch(pod: &PodRef, gpus: &GpuAssignmentAnnotation) -> serde_json::Value {
    serde_json::json!({
        "metadata": {
            "uid": pod.uid,
            "annotations": { ANNOTATION_GPU_ASSIGNMENT: gpus.to_json() }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> PodRef {
        PodRef {
            namespace: "ml".into(),
            name: "train-0".into(),
            uid: "u0".into(),
        }
    }

    #[test]
    fn a_plan_is_written_on_the_same_pod_and_cleared_with_null() {
        let plan = GangPlanAnnotation {
            plan: "p@1#1".into(),
            gang: "ml/train".into(),
            members: 2,
            node: "gpu-1".into(),
            gpus: vec![],
        };
        assert_eq!(
            plan_patch(&pod(), Some(&plan)),
            serde_json::json!({ "metadata": {
                "uid": "u0",
                "annotations": { ANNOTATION_GANG_PLAN: plan.to_json() }
            }})
        );
        // null removes the key in a merge patch.
        assert_eq!(
            plan_patch(&pod(), None),
            serde_json::json!({ "metadata": {
                "uid": "u0",
                "annotations": { ANNOTATION_GANG_PLAN: null }
            }})
        );
    }
}
