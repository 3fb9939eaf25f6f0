//! The engine's [`Diagnosis`] in the words of the published
//! [`SchedulingDecision`]: shared by the scheduler, which writes it on its
//! FailedScheduling events, and `kubectl phalanx sim`, which prints the same
//! record for a pod tried against a changed copy of the cluster.

use phalanx_api::{NearestNode, SchedulingDecision};
use phalanx_engine::{ClusterSnapshot, Diagnosis};

/// The record for `diagnosis` of a pod that waits for `wait_reason`
/// (`pending_pods_by_reason`'s label); no gang or queue.
pub fn decision_record(
    diagnosis: &Diagnosis,
    snapshot: &ClusterSnapshot,
    wait_reason: &str,
) -> SchedulingDecision {
    SchedulingDecision {
        wait_reason: wait_reason.to_owned(),
        nodes: diagnosis.nodes as u32,
        feasible_nodes: diagnosis.feasible as u32,
        reasons: diagnosis
            .reasons
            .iter()
            .map(|(reason, n)| (reason.to_string(), *n as u32))
            .collect(),
        nearest: diagnosis.nearest.as_ref().map(|miss| NearestNode {
            name: snapshot.node(miss.node).name.clone(),
            lacks: miss.lacks.iter().map(ToString::to_string).collect(),
        }),
        gang: None,
        queue: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_diagnosis_has_no_nearest_node() {
        let record = decision_record(&Diagnosis::default(), &ClusterSnapshot::new(), "other");
        assert_eq!(record.wait_reason, "other");
        assert_eq!((record.nodes, record.feasible_nodes), (0, 0));
        assert!(record.reasons.is_empty() && record.nearest.is_none());
    }
}
