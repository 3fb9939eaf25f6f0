//! The pod's `PodScheduled=False` condition, which Cluster Autoscaler and
//! Karpenter read (not events) to decide that a pod needs a new node, and which
//! `kubectl get pods` and Kueue show.
//!
//! As kube-scheduler does: reason `Unschedulable` with the FailedScheduling
//! event's message after a failed attempt (`SchedulerError` when the API
//! server refused the write), `SchedulingGated` while the pod has scheduling
//! gates. Nothing here clears it: the API server sets
//! `PodScheduled=True` when it accepts the Binding.
//!
//! The API server itself writes `SchedulingGated` on a pod created with gates,
//! so that write is usually found already there and skipped; it matters for a
//! pod whose condition someone else changed while it was still gated.
//!
//! [`condition_patch`] decides (pure, fed the pod as the watch last showed it);
//! [`PodConditionWriter`] sends, one patch at a time, so that two conditions
//! for one pod land in the order they were decided.

use std::time::SystemTime;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use phalanx_runtime::leader::LeaseFence;
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// kube-scheduler's reason for a pod that fit nowhere.
pub const REASON_UNSCHEDULABLE: &str = "Unschedulable";
/// kube-scheduler's reason when the attempt failed for another cause than fit
/// (here: the API server refused the Binding or the gang plan). Node
/// autoscalers look for `Unschedulable` only, so no node is added for an RBAC
/// or admission refusal.
pub const REASON_SCHEDULER_ERROR: &str = "SchedulerError";
/// kube-scheduler's reason for a pod held back by its scheduling gates.
pub const REASON_SCHEDULING_GATED: &str = "SchedulingGated";
/// kube-scheduler's message for a gated pod, word for word.
pub const GATED_MESSAGE: &str = "Scheduling is blocked due to non-empty scheduling gates";

/// How many patches may wait for the writer; beyond that a patch is dropped
/// (the next failed attempt decides it again).
const WRITER_BACKLOG: usize = 4096;

/// Why the pod is not scheduled, as its condition says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotScheduled {
    pub reason: &'static str,
    pub message: String,
}

impl NotScheduled {
    pub fn unschedulable(message: String) -> Self {
        Self {
            reason: REASON_UNSCHEDULABLE,
            message,
        }
    }

    pub fn scheduler_error(message: String) -> Self {
        Self {
            reason: REASON_SCHEDULER_ERROR,
            message,
        }
    }

    pub fn gated() -> Self {
        Self {
            reason: REASON_SCHEDULING_GATED,
            message: GATED_MESSAGE.to_owned(),
        }
    }
}

/// The strategic-merge patch of `pods/status` that makes the pod say `wanted`,
/// or `None` when there is nothing to write: the pod already says it, or it is
/// bound (its `PodScheduled=True` is the Binding's to set).
///
/// The patch carries the pod's resourceVersion: if the pod changed since this
/// version (a Binding landed meanwhile), the API server refuses it with a
/// conflict instead of turning a bound pod's condition back to False.
pub fn condition_patch(pod: &Pod, wanted: &NotScheduled, now: Timestamp) -> Option<Value> {
    if pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_some()
    {
        return None;
    }
    let current = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"));
    if let Some(c) = current {
        if c.status == "False"
            && c.reason.as_deref() == Some(wanted.reason)
            && c.message.as_deref() == Some(wanted.message.as_str())
        {
            return None;
        }
    }
    // The transition time is when the status last changed, not the message.
    let transition = current
        .filter(|c| c.status == "False")
        .and_then(|c| c.last_transition_time.as_ref())
        .map_or(now, |t| t.0);
    let mut patch = json!({
        "status": {
            "conditions": [{
                "type": "PodScheduled",
                "status": "False",
                "reason": wanted.reason,
                "message": wanted.message,
                "lastProbeTime": null,
                "lastTransitionTime": transition.to_string(),
            }]
        }
    });
    if let Some(version) = pod.metadata.resource_version.as_deref() {
        patch["metadata"] = json!({ "resourceVersion": version });
    }
    Some(patch)
}

/// One patch for the writer.
#[derive(Debug)]
struct ConditionWrite {
    namespace: String,
    name: String,
    patch: Value,
}

/// The loop's side of the writer: hands patches over without waiting.
#[derive(Debug, Clone)]
pub struct PodConditionWriter {
    tx: mpsc::Sender<ConditionWrite>,
}

/// The task's side, until `write_to_api` runs it.
#[derive(Debug)]
pub struct PodConditionInbox {
    rx: mpsc::Receiver<ConditionWrite>,
}

impl PodConditionWriter {
    pub fn channel() -> (Self, PodConditionInbox) {
        let (tx, rx) = mpsc::channel(WRITER_BACKLOG);
        (Self { tx }, PodConditionInbox { rx })
    }

    /// Queues the patch; `false` when the backlog is full and it was dropped.
    pub fn send(&self, namespace: String, name: String, patch: Value) -> bool {
        self.tx
            .try_send(ConditionWrite {
                namespace,
                name,
                patch,
            })
            .is_ok()
    }
}

impl PodConditionInbox {
    /// Writes patches in the order they were handed over, while the Lease
    /// fence allows it (a replica that is not leading does not write status).
    pub async fn write_to_api(mut self, client: Client, fence: LeaseFence) {
        while let Some(write) = self.rx.recv().await {
            if !fence.allows(SystemTime::now()) {
                continue;
            }
            let api: Api<Pod> = Api::namespaced(client.clone(), &write.namespace);
            let result = api
                .patch_status(
                    &write.name,
                    &PatchParams::default(),
                    &Patch::Strategic(&write.patch),
                )
                .await;
            match result {
                Ok(_) => {}
                // Changed meanwhile (bound, or a newer version on its way to
                // the loop, which decides again) or gone: nothing to do.
                Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {
                    tracing::debug!(pod = %write.name, code = e.code, "PodScheduled not written");
                }
                Err(error) => {
                    tracing::warn!(%error, namespace = %write.namespace, pod = %write.name,
                        "writing the PodScheduled condition failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(status: Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ml", "resourceVersion": "42"},
            "spec": {"containers": []},
            "status": status,
        }))
        .expect("test pod")
    }

    fn with_condition(status: &str, reason: &str, message: &str) -> Pod {
        pod(json!({"conditions": [{
            "type": "PodScheduled", "status": status, "reason": reason,
            "message": message, "lastTransitionTime": "2026-01-01T00:00:00Z"
        }]}))
    }

    fn now() -> Timestamp {
        "2026-12-05T04:00:00Z".parse().expect("timestamp")
    }

    #[test]
    fn a_pending_pod_gets_the_condition_with_the_message_and_its_version() {
        let wanted =
            NotScheduled::unschedulable("0/3 nodes are available: 3 Insufficient cpu.".into());
        let patch = condition_patch(&pod(json!({})), &wanted, now()).expect("a patch");
        assert_eq!(
            patch,
            json!({
                "metadata": {"resourceVersion": "42"},
                "status": {"conditions": [{
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/3 nodes are available: 3 Insufficient cpu.",
                    "lastProbeTime": null,
                    "lastTransitionTime": "2026-12-05T04:00:00Z",
                }]}
            })
        );
    }

    #[test]
    fn the_same_condition_is_not_written_again() {
        let pod = with_condition("False", "Unschedulable", "0/3 nodes are available: x.");
        let same = NotScheduled::unschedulable("0/3 nodes are available: x.".into());
        assert_eq!(condition_patch(&pod, &same, now()), None);
        let gated = with_condition("False", "SchedulingGated", GATED_MESSAGE);
        assert_eq!(condition_patch(&gated, &NotScheduled::gated(), now()), None);
    }

    #[test]
    fn a_new_message_is_written_and_keeps_the_transition_time() {
        let pod = with_condition("False", "Unschedulable", "0/3 nodes are available: x.");
        let wanted = NotScheduled::unschedulable("0/4 nodes are available: y.".into());
        let patch = condition_patch(&pod, &wanted, now()).expect("a patch");
        let condition = &patch["status"]["conditions"][0];
        assert_eq!(condition["message"], "0/4 nodes are available: y.");
        assert_eq!(condition["lastTransitionTime"], "2026-01-01T00:00:00Z");
    }

    #[test]
    fn gated_then_unschedulable_is_a_change_of_reason() {
        let pod = with_condition("False", "SchedulingGated", GATED_MESSAGE);
        let wanted = NotScheduled::unschedulable(GATED_MESSAGE.into());
        let patch = condition_patch(&pod, &wanted, now()).expect("a patch");
        assert_eq!(patch["status"]["conditions"][0]["reason"], "Unschedulable");
    }

    #[test]
    fn a_true_condition_turning_false_gets_a_new_transition_time() {
        let pod = with_condition("True", "", "");
        let wanted = NotScheduled::gated();
        let patch = condition_patch(&pod, &wanted, now()).expect("a patch");
        let condition = &patch["status"]["conditions"][0];
        assert_eq!(condition["lastTransitionTime"], "2026-12-05T04:00:00Z");
        assert_eq!(condition["reason"], "SchedulingGated");
    }

    #[test]
    fn a_bound_pod_is_left_to_the_binding() {
        let mut bound = pod(json!({}));
        if let Some(spec) = bound.spec.as_mut() {
            spec.node_name = Some("gpu-1".into());
        }
        let wanted = NotScheduled::unschedulable("0/1 nodes are available: x.".into());
        assert_eq!(condition_patch(&bound, &wanted, now()), None);
    }

    #[test]
    fn without_a_resource_version_there_is_no_precondition() {
        let mut p = pod(json!({}));
        p.metadata.resource_version = None;
        let patch = condition_patch(&p, &NotScheduled::gated(), now()).expect("a patch");
        assert!(patch.get("metadata").is_none());
    }
}
