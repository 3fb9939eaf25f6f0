//! `kubectl phalanx why POD`: the pod's last scheduling decision, from what
//! the scheduler published: the latest FailedScheduling event and its
//! `phalanx.dev/decision` record, the PodScheduled condition and the GPU
//! assignment annotation. Pure: fed the pod and its events.

use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::jiff::Timestamp;
use phalanx_api::{AssignedGpu, SchedulingDecision, ANNOTATION_DECISION};
use phalanx_kube::translate::{assignment_of, is_bound, is_finished, pod_key};
use serde::Serialize;
use thiserror::Error;

use crate::table;

/// Why there is no report for the pod.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum WhyError {
    #[error(
        "pod {pod} is not a Phalanx pod: its spec.schedulerName is {scheduler:?}, not {wanted:?}, \
         so Phalanx never tries it (ask that scheduler, or set schedulerName: {wanted})"
    )]
    NotPhalanx {
        pod: String,
        scheduler: String,
        wanted: String,
    },
}

/// Where the pod stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum PodState {
    /// Bound to a node.
    Bound,
    /// Held back by its scheduling gates; not tried.
    Gated,
    /// Waiting for the scheduler.
    Pending,
    /// Succeeded or Failed.
    Finished,
}

/// The answer to "why does my pod wait", as printed or as `-o json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WhyReport {
    /// `namespace/name`.
    pub pod: String,
    pub state: PodState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The GPUs the scheduler assigned (a bound pod).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<AssignedGpu>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scheduling_gates: Vec<String>,
    /// The last FailedScheduling message (or the PodScheduled condition's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the last attempt was reported, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_attempt: Option<String>,
    /// How many times that message was reported (the event's series).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reported_times: Option<i32>,
    /// The structured decision published with that event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<SchedulingDecision>,
    /// A published decision that could not be read (a newer scheduler's format).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision_error: Option<String>,
}

/// Builds the report for `pod` from the events about it (any order; others
/// than its FailedScheduling ones are ignored). `scheduler` is the name
/// Phalanx runs as.
pub fn why(pod: &Pod, events: &[Event], scheduler: &str) -> Result<WhyReport, WhyError> {
    let key = pod_key(pod);
    let spec = pod.spec.clone().unwrap_or_default();
    // The API server defaults an unset schedulerName to default-scheduler.
    let named = spec
        .scheduler_name
        .clone()
        .unwrap_or_else(|| "default-scheduler".to_owned());
    if named != scheduler {
        return Err(WhyError::NotPhalanx {
            pod: key,
            scheduler: named,
            wanted: scheduler.to_owned(),
        });
    }
    let gates: Vec<String> = spec
        .scheduling_gates
        .unwrap_or_default()
        .into_iter()
        .map(|g| g.name)
        .collect();
    let state = if is_finished(pod) {
        PodState::Finished
    } else if is_bound(pod) {
        PodState::Bound
    } else if !gates.is_empty() {
        PodState::Gated
    } else {
        PodState::Pending
    };
    let gpus = assignment_of(pod)
        .ok()
        .flatten()
        .map(|a| a.gpus)
        .unwrap_or_default();
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let last = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("FailedScheduling"))
        .filter(|e| uid.is_empty() || e.involved_object.uid.as_deref() == Some(uid))
        .max_by_key(|e| last_seen(e));
    let (decision, decision_error) = match last
        .and_then(|e| e.metadata.annotations.as_ref())
        .and_then(|a| a.get(ANNOTATION_DECISION))
    {
        Some(json) => match serde_json::from_str::<SchedulingDecision>(json) {
            Ok(decision) => (Some(decision), None),
            Err(error) => (None, Some(format!("{ANNOTATION_DECISION}: {error}"))),
        },
        None => (None, None),
    };
    let condition_message = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        })
        .and_then(|c| c.message.clone());
    let waiting = matches!(state, PodState::Pending | PodState::Gated);
    Ok(WhyReport {
        pod: key,
        state,
        node: spec.node_name,
        gpus,
        scheduling_gates: gates,
        message: waiting
            .then(|| last.and_then(|e| e.message.clone()).or(condition_message))
            .flatten(),
        last_attempt: waiting
            .then(|| last.and_then(last_seen).map(|t| t.to_string()))
            .flatten(),
        reported_times: waiting
            .then(|| {
                last.map(|e| {
                    e.series
                        .as_ref()
                        .map_or(e.count.unwrap_or(1), |s| s.count.unwrap_or(1))
                })
            })
            .flatten(),
        decision: decision.filter(|_| waiting),
        decision_error: decision_error.filter(|_| waiting),
    })
}

/// When an event was last seen: its series' last observation, else its time.
fn last_seen(event: &Event) -> Option<Timestamp> {
    event
        .series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref())
        .map(|t| t.0)
        .or_else(|| event.event_time.as_ref().map(|t| t.0))
        .or_else(|| event.last_timestamp.as_ref().map(|t| t.0))
        .or_else(|| event.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// The report as text for a terminal.
pub fn render(report: &WhyReport) -> String {
    let mut out = format!("Pod:      {}\n", report.pod);
    match report.state {
        PodState::Finished => out.push_str("State:    finished; it waits for nothing\n"),
        PodState::Bound => {
            let node = report.node.as_deref().unwrap_or_default();
            out.push_str(&format!("State:    bound to node {node}\n"));
            if !report.gpus.is_empty() {
                out.push_str(&format!("GPUs:     {}\n", table::gpu_list(&report.gpus)));
            }
        }
        PodState::Gated => out.push_str(&format!(
            "State:    gated; not tried until these scheduling gates are removed: {}\n",
            report.scheduling_gates.join(", ")
        )),
        PodState::Pending => out.push_str("State:    pending\n"),
    }
    if !matches!(report.state, PodState::Pending | PodState::Gated) {
        return out;
    }
    match (&report.message, &report.last_attempt) {
        (Some(message), Some(at)) => {
            let times = report.reported_times.unwrap_or(1);
            out.push_str(&format!("Last try: {at} (reported {times} time(s))\n"));
            out.push_str(&format!("Message:  {message}\n"));
        }
        (Some(message), None) => out.push_str(&format!("Message:  {message}\n")),
        _ => out.push_str(
            "Last try: none recorded (not tried yet, or its FailedScheduling event has expired)\n",
        ),
    }
    if let Some(error) = &report.decision_error {
        out.push_str(&format!("Decision: unreadable ({error})\n"));
    }
    let Some(decision) = &report.decision else {
        return out;
    };
    out.push_str(&format!(
        "Waits:    {}\n",
        wait_sentence(&decision.wait_reason)
    ));
    out.push_str(&format!(
        "Nodes:    {} checked, {} would take it now\n",
        decision.nodes, decision.feasible_nodes
    ));
    out.push_str(&table::reasons_and_nearest(decision));
    if let Some(gang) = &decision.gang {
        out.push('\n');
        let state = if gang.min_member > 0 && gang.members < gang.min_member {
            format!(
                "waits for members: {} of the {} it needs exist",
                gang.members, gang.min_member
            )
        } else {
            "waits for room to place its members together".to_owned()
        };
        out.push_str(&format!(
            "Gang:     {}: {state}; {} of {} members placed (minMember {})\n",
            gang.name, gang.placed, gang.members, gang.min_member
        ));
    }
    if let Some(queue) = &decision.queue {
        out.push_str(&format!(
            "Queue:    {}: {} pod(s) or gang(s) go before it\n",
            queue.name, queue.ahead
        ));
    }
    out
}

/// `pending_pods_by_reason`'s label as a sentence.
fn wait_sentence(reason: &str) -> String {
    match reason {
        "insufficient_gpu" => "for GPUs: no node has the free GPUs it asks for".to_owned(),
        "constraint" => {
            "on a constraint: every node is ruled out by what the pod requires of it".to_owned()
        }
        "quota" => "for its queue's quota".to_owned(),
        "gated" => "for its scheduling gates".to_owned(),
        "gang" => "for its gang".to_owned(),
        "other" => "for CPU, memory, a held node or another reason (see the message)".to_owned(),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests;
