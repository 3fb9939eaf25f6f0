//! The structured "why" published with each FailedScheduling event
//! (`phalanx.dev/decision`, read by `kubectl phalanx why`).
//!
//! Built only when an event is about to be written (a new message, or a
//! repeat after the event interval), from the same snapshot the attempt just
//! used: the engine's [`diagnose`] for per-reason node counts and the nearest
//! node, the gang's progress and the pod's place in its team's queue.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use phalanx_api::{GangProgress, QueuePosition, SchedulingDecision, ANNOTATION_DECISION};
use phalanx_engine::diagnose;
use phalanx_kube::decision::decision_record;
use phalanx_kube::mirror::pod_uid;

use super::{SchedulerLoop, WorkKey};
use crate::controller::wait_reasons::WaitReason;

impl SchedulerLoop {
    /// What the pod's last attempt found, as published with its event;
    /// `gang` is [`Self::gang_progress`] of the pod.
    pub(super) fn scheduling_decision(
        &self,
        pod: &Pod,
        gang: Option<GangProgress>,
    ) -> SchedulingDecision {
        let uid = pod_uid(pod);
        let snapshot = self.mirror.state().snapshot();
        let key = match self.gang_of_member.get(&uid) {
            Some(gang) => WorkKey::Gang(gang.clone()),
            None => WorkKey::Pod(uid.clone()),
        };
        let wait = self.pending.get(&uid).and_then(|p| p.wait);
        // A spec the engine cannot read has nothing to diagnose; the event's
        // message already names the bad field.
        let diagnosis = self
            .default_spread
            .pod_demand(pod, snapshot)
            .ok()
            .map(|mut demand| {
                demand.reservation = self.hold_token(&key);
                diagnose(snapshot, &demand)
            })
            .unwrap_or_default();
        let queue = self
            .queues_enabled()
            .then(|| self.queue.ahead_in_tenant(&key))
            .flatten()
            .and_then(|(tenant, ahead)| {
                Some(QueuePosition {
                    name: self.queues.name(tenant)?.to_owned(),
                    ahead: ahead as u32,
                })
            });
        let wait = wait.unwrap_or(WaitReason::Other).as_str();
        SchedulingDecision {
            gang,
            queue,
            ..decision_record(&diagnosis, snapshot, wait)
        }
    }

    /// The gang a pending member belongs to, and how far it has come.
    pub(super) fn gang_progress(&self, uid: &str) -> Option<GangProgress> {
        let key = self.gang_of_member.get(uid)?;
        let gang = self.gangs.get(key)?;
        let placed = gang
            .members
            .iter()
            .filter(|m| self.mirror.state().holds(m) || self.mirror.is_bound(m))
            .count();
        Some(GangProgress {
            name: format!("{}/{}", key.namespace, key.name),
            min_member: gang.min_member().unwrap_or(0) as u32,
            members: gang.members.len() as u32,
            placed: placed as u32,
        })
    }
}

/// The event annotations carrying `decision`.
pub(super) fn decision_annotations(decision: &SchedulingDecision) -> BTreeMap<String, String> {
    match serde_json::to_string(decision) {
        Ok(json) => [(ANNOTATION_DECISION.to_owned(), json)].into(),
        // Plain strings and numbers: never fails; an event without it still
        // carries the message.
        Err(_) => BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use phalanx_engine::{
        ClusterSnapshot, GpuDemand, GpuSpec, ModelConstraint, NodeSpec, PodDemand,
    };

    use super::*;

    fn node(name: &str, gpus: usize) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            cpu_milli: 64_000,
            memory_mib: 1 << 20,
            max_pods: 110,
            gpu_model: Some("A100".into()),
            gpus: vec![GpuSpec::default(); gpus],
            ..NodeSpec::default()
        }
    }

    #[test]
    fn a_diagnosis_reads_as_the_published_record() {
        let mut snapshot = ClusterSnapshot::new();
        snapshot.add_node(node("gpu-a", 4)).unwrap();
        snapshot.add_node(node("gpu-b", 2)).unwrap();
        let pod = PodDemand::new(
            "eight",
            1000,
            1024,
            GpuDemand::Whole { count: 8 },
            ModelConstraint::Any,
        )
        .unwrap();
        let decision = decision_record(
            &diagnose(&snapshot, &pod),
            &snapshot,
            WaitReason::InsufficientGpu.as_str(),
        );
        assert_eq!(decision.wait_reason, "insufficient_gpu");
        assert_eq!((decision.nodes, decision.feasible_nodes), (2, 0));
        assert_eq!(
            decision.reasons,
            [("Insufficient nvidia.com/gpu".to_owned(), 2)].into()
        );
        let nearest = decision.nearest.clone().unwrap();
        assert_eq!(nearest.name, "gpu-a");
        assert_eq!(nearest.lacks, ["4 more whole GPU(s): 4 free, 8 requested"]);
        let annotations = decision_annotations(&decision);
        let back: SchedulingDecision =
            serde_json::from_str(&annotations[ANNOTATION_DECISION]).unwrap();
        assert_eq!(back, decision);
    }
}
