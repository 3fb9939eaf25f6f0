//! The scheduler's own events, in kube-scheduler's words, so that
//! `kubectl describe pod` reads the same whichever scheduler placed the pod.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;
use phalanx_runtime::events::{EventSpec, EventType};

/// `Scheduled`, as kube-scheduler words it.
pub fn scheduled(regarding: ObjectReference, node: &str) -> EventSpec {
    let note = format!(
        "Successfully assigned {}/{} to {node}",
        regarding.namespace.as_deref().unwrap_or_default(),
        regarding.name.as_deref().unwrap_or_default()
    );
    EventSpec {
        regarding,
        type_: EventType::Normal,
        reason: "Scheduled",
        action: "Binding",
        note,
        annotations: Default::default(),
    }
}

/// `FailedScheduling` with the "0/N nodes are available: …" message (or any
/// other reason the pod could not be scheduled), and the structured decision
/// in `annotations` (`phalanx.dev/decision`).
pub fn failed_scheduling(
    regarding: ObjectReference,
    message: String,
    annotations: BTreeMap<String, String>,
) -> EventSpec {
    EventSpec {
        regarding,
        type_: EventType::Warning,
        reason: "FailedScheduling",
        action: "Scheduling",
        note: message,
        annotations,
    }
}

/// `GangNotDerived`: the pod's owner would make it a gang member, but its gang
/// cannot be derived (the owner is inconsistent, ambiguous or never seen), so
/// the pod is scheduled on its own; the note says why.
pub fn gang_not_derived(regarding: ObjectReference, why: String) -> EventSpec {
    EventSpec {
        regarding,
        type_: EventType::Warning,
        reason: "GangNotDerived",
        action: "Scheduling",
        note: why,
        annotations: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;
    use phalanx_runtime::events::{new_event, pod_reference};

    use super::*;

    #[test]
    fn scheduled_event_reads_like_kube_scheduler() {
        let spec = scheduled(pod_reference("ml", "train-0", "u1"), "gpu-7");
        let event = new_event(&spec, "phalanx", "phalanx-abc", Timestamp::UNIX_EPOCH);
        assert_eq!(
            event.note.as_deref(),
            Some("Successfully assigned ml/train-0 to gpu-7")
        );
        assert_eq!(event.reason.as_deref(), Some("Scheduled"));
        assert_eq!(event.type_.as_deref(), Some("Normal"));
        assert_eq!(event.action.as_deref(), Some("Binding"));
        assert_eq!(event.metadata.namespace.as_deref(), Some("ml"));
        assert_eq!(event.reporting_controller.as_deref(), Some("phalanx"));
    }
}
