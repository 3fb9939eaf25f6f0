use k8s_openapi::api::core::v1::{Event, Pod};
use serde_json::json;

use super::*;

fn pod(scheduler: Option<&str>, node: Option<&str>, gates: &[&str]) -> Pod {
    let mut spec = json!({"containers": [{"name": "main", "image": "x"}]});
    if let Some(s) = scheduler {
        spec["schedulerName"] = json!(s);
    }
    if let Some(n) = node {
        spec["nodeName"] = json!(n);
    }
    if !gates.is_empty() {
        spec["schedulingGates"] =
            json!(gates.iter().map(|g| json!({"name": g})).collect::<Vec<_>>());
    }
    serde_json::from_value(json!({
        "metadata": {"name": "train-0", "namespace": "ml", "uid": "u1"},
        "spec": spec,
    }))
    .unwrap()
}

fn event(uid: &str, at: &str, note: &str, decision: Option<&str>) -> Event {
    let mut metadata = json!({"name": format!("train-0.{at}"), "namespace": "ml"});
    if let Some(d) = decision {
        metadata["annotations"] = json!({ANNOTATION_DECISION: d});
    }
    serde_json::from_value(json!({
        "metadata": metadata,
        "involvedObject": {"kind": "Pod", "namespace": "ml", "name": "train-0", "uid": uid},
        "reason": "FailedScheduling",
        "message": note,
        "eventTime": at,
    }))
    .unwrap()
}

const DECISION: &str = r#"{"waitReason":"insufficient_gpu","nodes":3,"feasibleNodes":0,
  "reasons":{"Insufficient nvidia.com/gpu":2,"node(s) had untolerated taint":1},
  "nearest":{"name":"gpu-1","lacks":["2 more whole GPU(s): 6 free, 8 requested"]},
  "gang":{"name":"ml/train","minMember":4,"members":3,"placed":0},
  "queue":{"name":"team-a","ahead":2}}"#;

#[test]
fn the_latest_event_of_the_pod_gives_the_decision() {
    let events = [
        event("u1", "2026-12-05T10:00:00.000000Z", "old", Some(r#"{"waitReason":"other","nodes":1,"feasibleNodes":0,"reasons":{}}"#)),
        event("u1", "2026-12-05T10:05:00.000000Z", "0/3 nodes are available: 2 Insufficient nvidia.com/gpu, 1 node(s) had untolerated taint.", Some(DECISION)),
        // Another pod of the same name, since deleted.
        event("u0", "2026-12-05T11:00:00.000000Z", "stale", None),
    ];
    let report = why(&pod(Some("phalanx"), None, &[]), &events, "phalanx").unwrap();
    assert_eq!(report.state, PodState::Pending);
    assert!(report.message.as_deref().unwrap().starts_with("0/3 nodes"));
    let decision = report.decision.clone().unwrap();
    assert_eq!(decision.nearest.unwrap().name, "gpu-1");
    let text = render(&report);
    for wanted in [
        "Waits:    for GPUs",
        "Nodes:    3 checked, 0 would take it now",
        "NODES",
        "2      Insufficient nvidia.com/gpu",
        "Nearest node: gpu-1, which lacks:\n  - 2 more whole GPU(s): 6 free, 8 requested",
        "Gang:     ml/train: waits for members: 3 of the 4 it needs exist; 0 of 3 members placed",
        "Queue:    team-a: 2 pod(s) or gang(s) go before it",
    ] {
        assert!(text.contains(wanted), "{wanted:?} not in\n{text}");
    }
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["decision"]["gang"]["minMember"], 4);
    assert_eq!(json["state"], "pending");
}

#[test]
fn a_pod_for_another_scheduler_is_refused_by_name() {
    let error = why(&pod(None, None, &[]), &[], "phalanx").unwrap_err();
    assert_eq!(
        error,
        WhyError::NotPhalanx {
            pod: "ml/train-0".into(),
            scheduler: "default-scheduler".into(),
            wanted: "phalanx".into()
        }
    );
    assert!(error.to_string().contains("is not a Phalanx pod"));
}

#[test]
fn a_bound_pod_says_where_and_no_stale_decision() {
    let mut bound = pod(Some("phalanx"), Some("gpu-2"), &[]);
    bound.metadata.annotations = Some(
        [(
            phalanx_api::ANNOTATION_GPU_ASSIGNMENT.to_owned(),
            r#"{"node":"gpu-2","gpus":[{"index":3,"milli":1000}]}"#.to_owned(),
        )]
        .into(),
    );
    let events = [event(
        "u1",
        "2026-12-05T10:00:00.000000Z",
        "earlier",
        Some(DECISION),
    )];
    let report = why(&bound, &events, "phalanx").unwrap();
    assert_eq!(report.state, PodState::Bound);
    assert_eq!(report.decision, None);
    assert_eq!(report.message, None);
    assert!(render(&report).contains("bound to node gpu-2\nGPUs:     GPU 3 (1000 milli)"));
}

#[test]
fn a_gated_or_untried_pod_says_so() {
    let gated = why(
        &pod(Some("phalanx"), None, &["wait-for-quota"]),
        &[],
        "phalanx",
    )
    .unwrap();
    assert_eq!(gated.state, PodState::Gated);
    assert!(render(&gated).contains("until these scheduling gates are removed: wait-for-quota"));
    let untried = why(&pod(Some("phalanx"), None, &[]), &[], "phalanx").unwrap();
    assert!(render(&untried).contains("Last try: none recorded"));
}

#[test]
fn an_unreadable_decision_is_reported_not_fatal() {
    let events = [event(
        "u1",
        "2026-12-05T10:00:00.000000Z",
        "msg",
        Some("{not json"),
    )];
    let report = why(&pod(Some("phalanx"), None, &[]), &events, "phalanx").unwrap();
    assert_eq!(report.decision, None);
    assert!(report
        .decision_error
        .as_deref()
        .unwrap()
        .starts_with(ANNOTATION_DECISION));
    assert!(render(&report).contains("Decision: unreadable"));
    assert_eq!(report.message.as_deref(), Some("msg"));
}
