//! Why a pod waits, as the scheduler publishes it for `kubectl phalanx why`.
//!
//! The scheduler writes one [`SchedulingDecision`] as JSON in the
//! [`ANNOTATION_DECISION`] annotation of each `FailedScheduling` event it
//! records (and refreshes it when a repeat folds into the event's series), so
//! the latest such event says what the last attempt found. The event's note
//! stays kube-scheduler's one-line message; this is the structured rest, read
//! by the plugin and by anyone with `get events`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The Event annotation holding a [`SchedulingDecision`] as JSON.
pub const ANNOTATION_DECISION: &str = "phalanx.dev/decision";

/// What one failed attempt at a pod found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchedulingDecision {
    /// Why the pod waits, as the `pending_pods_by_reason{reason}` metric
    /// names it: `insufficient_gpu`, `constraint`, `quota`, `gated`, `gang`
    /// or `other`.
    pub wait_reason: String,
    /// Nodes the pod was checked against.
    pub nodes: u32,
    /// Nodes on which the pod would fit now, on its own (more than zero when
    /// it waits for a quota, its gang or a node held for another pod).
    pub feasible_nodes: u32,
    /// Nodes per first failing check, in kube-scheduler's words.
    pub reasons: BTreeMap<String, u32>,
    /// The node that comes closest to fitting, and what it lacks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nearest: Option<NearestNode>,
    /// The pod's gang, when it belongs to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gang: Option<GangProgress>,
    /// The pod's team queue, when queues are on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueuePosition>,
}

/// A node that fails the fewest checks for the pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NearestNode {
    pub name: String,
    /// Every check the node fails, in filter order, each a sentence
    /// ("2 more whole GPUs: 6 free, 8 requested").
    pub lacks: Vec<String>,
}

/// How far a gang has come.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GangProgress {
    /// `namespace/name` of the gang.
    pub name: String,
    /// Members needed before any is bound (0 when not yet known).
    pub min_member: u32,
    /// Members the scheduler has seen, pending or bound.
    pub members: u32,
    /// Members bound (or with a Binding in flight).
    pub placed: u32,
}

/// Where the pod stands in its team's queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueuePosition {
    pub name: String,
    /// Pending pods and gangs of the same queue that are tried before it
    /// (higher priority, or equal priority and waiting longer).
    pub ahead: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_round_trips_and_omits_what_it_lacks() {
        let decision = SchedulingDecision {
            wait_reason: "insufficient_gpu".into(),
            nodes: 3,
            feasible_nodes: 0,
            reasons: [("Insufficient nvidia.com/gpu".to_owned(), 3)].into(),
            nearest: Some(NearestNode {
                name: "gpu-0".into(),
                lacks: vec!["2 more whole GPUs: 6 free, 8 requested".into()],
            }),
            gang: None,
            queue: None,
        };
        let text = serde_json::to_string(&decision).unwrap();
        assert!(!text.contains("gang") && !text.contains("queue"), "{text}");
        assert!(
            text.contains("\"waitReason\":\"insufficient_gpu\""),
            "{text}"
        );
        let back: SchedulingDecision = serde_json::from_str(&text).unwrap();
        assert_eq!(back, decision);
    }
}
