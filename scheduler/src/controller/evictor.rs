//! Evicting the victims of a preemption or reclaim, the way kube-scheduler
//! does it: the pod first gets the `DisruptionTarget` condition (so its
//! controller and `kubectl describe` say why it goes), then it is evicted
//! through the Eviction API, which honours PodDisruptionBudgets and the pod's
//! grace period. Both carry the pod's UID: a pod recreated under the same name
//! meanwhile is never touched.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, EvictParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client};
use phalanx_engine::preemption::EvictionReason;
use serde_json::{json, Value};
use thiserror::Error;

use super::binder::PodRef;

/// The reason kube-scheduler gives on the condition; controllers (the Job
/// controller's pod failure policy, for one) match on it.
pub const DISRUPTION_REASON: &str = "PreemptionByScheduler";

/// One pod to evict, and for whom.
#[derive(Debug, Clone)]
pub struct Eviction {
    pub victim: PodRef,
    pub reason: EvictionReason,
    /// `namespace/name` of the pod or gang that needs the room.
    pub preemptor: String,
    /// The preemptor's queue (for reclaim's message).
    pub queue: Option<String>,
    pub node: String,
}

impl Eviction {
    /// What the condition and the victim's event say.
    pub fn message(&self, scheduler: &str) -> String {
        match (self.reason, &self.queue) {
            (EvictionReason::Reclaim, Some(queue)) => format!(
                "{scheduler}: reclaiming capacity on node {} for queue {queue} (below its \
                 guarantee) for {}",
                self.node, self.preemptor
            ),
            _ => format!(
                "{scheduler}: preempting to accommodate a higher priority pod, {}, on node {}",
                self.preemptor, self.node
            ),
        }
    }
}

#[derive(Debug, Error)]
pub enum EvictError {
    /// 429: a PodDisruptionBudget allows no more disruptions now.
    #[error("evicting {pod} is refused by a PodDisruptionBudget: {message}")]
    Budget { pod: String, message: String },
    #[error("evicting {pod} failed: {source}")]
    Api {
        pod: String,
        #[source]
        source: kube::Error,
    },
}

/// The status patch that adds `DisruptionTarget=True`.
pub fn disruption_condition_patch(message: &str, now: Timestamp) -> Value {
    json!({
        "status": {
            "conditions": [{
                "type": "DisruptionTarget",
                "status": "True",
                "reason": DISRUPTION_REASON,
                "message": message,
                "lastTransitionTime": now.to_string(),
            }]
        }
    })
}

/// Marks and evicts one victim. A victim already gone is not an error.
pub async fn evict(
    client: &Client,
    eviction: &Eviction,
    scheduler: &str,
) -> Result<(), EvictError> {
    let pod = &eviction.victim;
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    let message = eviction.message(scheduler);
    let patch = disruption_condition_patch(&message, Timestamp::now());
    match api
        .patch_status(
            &pod.name,
            &PatchParams::default(),
            &Patch::Strategic(&patch),
        )
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
        Err(source) => {
            // The condition is information; the eviction is what frees the
            // room, so it goes ahead.
            tracing::warn!(%source, pod = %pod, "could not set DisruptionTarget");
        }
    }
    let params = EvictParams {
        delete_options: Some(DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(pod.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        }),
        ..EvictParams::default()
    };
    match api.evict(&pod.name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 429 => Err(EvictError::Budget {
            pod: pod.to_string(),
            message: e.message,
        }),
        Err(source) => Err(EvictError::Api {
            pod: pod.to_string(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eviction(reason: EvictionReason, queue: Option<&str>) -> Eviction {
        Eviction {
            victim: PodRef {
                namespace: "ml".into(),
                name: "low-0".into(),
                uid: "u".into(),
            },
            reason,
            preemptor: "ml/high".into(),
            queue: queue.map(str::to_owned),
            node: "gpu-3".into(),
        }
    }

    #[test]
    fn messages_name_the_preemptor_the_node_and_for_reclaim_the_queue() {
        assert_eq!(
            eviction(EvictionReason::Preemption, None).message("phalanx"),
            "phalanx: preempting to accommodate a higher priority pod, ml/high, on node gpu-3"
        );
        assert_eq!(
            eviction(EvictionReason::Reclaim, Some("team-a")).message("phalanx"),
            "phalanx: reclaiming capacity on node gpu-3 for queue team-a (below its guarantee) \
             for ml/high"
        );
    }

    #[test]
    fn the_condition_is_disruption_target_with_kube_schedulers_reason() {
        let patch = disruption_condition_patch("m", Timestamp::UNIX_EPOCH);
        let condition = &patch["status"]["conditions"][0];
        assert_eq!(condition["type"], "DisruptionTarget");
        assert_eq!(condition["status"], "True");
        assert_eq!(condition["reason"], "PreemptionByScheduler");
        assert_eq!(condition["message"], "m");
    }
}
