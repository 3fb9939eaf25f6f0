//! The controller's API writes against a scripted API server: the exact
//! requests for a binding (annotation patch, Binding) and for events, and what
//! happens when the API server says 409, 404, 422 or 500, or cannot be reached.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

mod support;

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use phalanx_api::{AssignedGpu, GpuAssignmentAnnotation};
use phalanx_runtime::events::{self, EventRecorder};
use phalanx_scheduler::controller::binder::{AnnotationWrite, BindError, Binder, PodRef};
use phalanx_scheduler::controller::metrics::BindingErrorReason;
use phalanx_scheduler::controller::scheduling_events;
use serde_json::{json, Value};
use support::{finish, mock_client, serve, status, Exchange, JSON, MERGE_PATCH};

const POD_PATH: &str = "/api/v1/namespaces/ns/pods/p";
const BINDING_PATH: &str = "/api/v1/namespaces/ns/pods/p/binding";
const EVENTS_PATH: &str = "/apis/events.k8s.io/v1/namespaces/ns/events";
/// The annotation value for `two_gpus()`, spelled out: the device plugin parses it.
const ASSIGNMENT_JSON: &str = r#"{"node":"node-1","gpus":[{"index":0,"uuid":"GPU-a","milli":1000},{"index":1,"uuid":"GPU-b","milli":500}]}"#;

fn pod() -> PodRef {
    PodRef {
        namespace: "ns".into(),
        name: "p".into(),
        uid: "u1".into(),
    }
}

fn two_gpus() -> GpuAssignmentAnnotation {
    GpuAssignmentAnnotation {
        node: "node-1".into(),
        gpus: vec![
            AssignedGpu {
                index: 0,
                uuid: "GPU-a".into(),
                milli: 1000,
            },
            AssignedGpu {
                index: 1,
                uuid: "GPU-b".into(),
                milli: 500,
            },
        ],
    }
}

fn binder(client: kube::Client, mode: AnnotationWrite) -> Binder {
    // Generous limits: these tests are not about the rate limit.
    let many = NonZeroU32::new(1000).unwrap();
    Binder::new(client, many, many, mode)
}

fn annotation_patch() -> Value {
    json!({
        "metadata": {
            "uid": "u1",
            "annotations": { "phalanx.dev/gpu-assignment": ASSIGNMENT_JSON }
        }
    })
}

fn binding_body() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": { "name": "p", "namespace": "ns", "uid": "u1" },
        "target": { "apiVersion": "v1", "kind": "Node", "name": "node-1" }
    })
}

fn patched_pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "p",
            "namespace": "ns",
            "uid": "u1",
            "annotations": { "phalanx.dev/gpu-assignment": ASSIGNMENT_JSON }
        }
    })
}

fn annotation_exchange() -> Exchange {
    Exchange::patch(POD_PATH)
        .body(MERGE_PATCH, annotation_patch())
        .reply(200, patched_pod())
}

fn binding_exchange() -> Exchange {
    Exchange::post(BINDING_PATH)
        .body(JSON, binding_body())
        .reply(201, status(201, "", ""))
}

/// Binds `pod()` to node-1 against `script`, checking that exactly those
/// requests were made, and returns the result.
async fn bind_against(
    mode: AnnotationWrite,
    gpus: Option<GpuAssignmentAnnotation>,
    script: Vec<Exchange>,
) -> Result<(), BindError> {
    let (client, handle) = mock_client();
    let server = serve(handle, script);
    let binder = binder(client, mode);
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        binder.bind(&pod(), "node-1", gpus.as_ref()),
    )
    .await
    .expect("bind hung");
    drop(binder);
    finish(server).await;
    result
}

// ---------------------------------------------------------------- binder

#[tokio::test]
async fn patch_mode_patches_the_annotation_then_posts_the_binding() {
    let result = bind_against(
        AnnotationWrite::Patch,
        Some(two_gpus()),
        vec![annotation_exchange(), binding_exchange()],
    )
    .await;
    result.unwrap();
}

#[tokio::test]
async fn with_binding_mode_sends_one_binding_carrying_the_annotation() {
    let mut body = binding_body();
    body["metadata"]["annotations"] = json!({ "phalanx.dev/gpu-assignment": ASSIGNMENT_JSON });
    let result = bind_against(
        AnnotationWrite::WithBinding,
        Some(two_gpus()),
        vec![Exchange::post(BINDING_PATH)
            .body(JSON, body)
            .reply(201, status(201, "", ""))],
    )
    .await;
    result.unwrap();
}

#[tokio::test]
async fn a_pod_without_gpus_gets_no_annotation_in_either_mode() {
    for mode in [AnnotationWrite::Patch, AnnotationWrite::WithBinding] {
        let result = bind_against(mode, None, vec![binding_exchange()]).await;
        result.unwrap();
    }
}

#[tokio::test]
async fn conflict_on_the_binding_is_a_conflict() {
    let result = bind_against(
        AnnotationWrite::Patch,
        Some(two_gpus()),
        vec![
            annotation_exchange(),
            Exchange::post(BINDING_PATH)
                .body(JSON, binding_body())
                .reply(
                    409,
                    status(409, "Conflict", "Operation cannot be fulfilled on pods/binding \"p\": pod p is already assigned to node \"node-2\""),
                ),
        ],
    )
    .await;
    let error = result.unwrap_err();
    assert_eq!(error.reason(), BindingErrorReason::Conflict);
    match error {
        BindError::Conflict { pod, message } => {
            assert_eq!(pod, "ns/p");
            assert!(message.contains("already assigned"), "{message}");
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
}

/// The pod was deleted while it waited in the queue: the annotation patch finds
/// nothing, and no Binding is attempted.
#[tokio::test]
async fn pod_deleted_while_queued_is_gone_and_no_binding_is_sent() {
    let result = bind_against(
        AnnotationWrite::Patch,
        Some(two_gpus()),
        vec![Exchange::patch(POD_PATH)
            .body(MERGE_PATCH, annotation_patch())
            .reply(404, status(404, "NotFound", "pods \"p\" not found"))],
    )
    .await;
    let error = result.unwrap_err();
    assert_eq!(error.reason(), BindingErrorReason::NotFound);
    assert!(
        matches!(&error, BindError::Gone { pod } if pod == "ns/p"),
        "{error:?}"
    );
}

/// The same for a pod without GPUs: the Binding itself answers 404.
#[tokio::test]
async fn pod_deleted_before_its_binding_is_gone() {
    let result = bind_against(
        AnnotationWrite::Patch,
        None,
        vec![Exchange::post(BINDING_PATH)
            .body(JSON, binding_body())
            .reply(404, status(404, "NotFound", "pods \"p\" not found"))],
    )
    .await;
    assert!(matches!(result, Err(BindError::Gone { .. })), "{result:?}");
}

/// The pod was recreated under the same name: the UID in the patch does not
/// match (422), which is a conflict, and the new pod is not bound.
#[tokio::test]
async fn uid_mismatch_on_the_patch_is_a_conflict_and_no_binding_is_sent() {
    let result = bind_against(
        AnnotationWrite::Patch,
        Some(two_gpus()),
        vec![Exchange::patch(POD_PATH)
            .body(MERGE_PATCH, annotation_patch())
            .reply(
                422,
                status(
                    422,
                    "Invalid",
                    "Pod \"p\" is invalid: metadata.uid: Invalid value: \"u1\": field is immutable",
                ),
            )],
    )
    .await;
    let error = result.unwrap_err();
    assert_eq!(error.reason(), BindingErrorReason::Conflict);
    assert!(matches!(error, BindError::Conflict { .. }), "{error:?}");
}

#[tokio::test]
async fn server_error_on_the_binding_is_retryable() {
    let result = bind_against(
        AnnotationWrite::Patch,
        Some(two_gpus()),
        vec![
            annotation_exchange(),
            Exchange::post(BINDING_PATH)
                .body(JSON, binding_body())
                .reply(
                    500,
                    status(500, "InternalError", "etcdserver: request timed out"),
                ),
        ],
    )
    .await;
    let error = result.unwrap_err();
    assert_eq!(error.reason(), BindingErrorReason::Other);
    match error {
        BindError::Api { pod, source } => {
            assert_eq!(pod, "ns/p");
            assert!(
                matches!(&source, kube::Error::Api(s) if s.code == 500),
                "{source:?}"
            );
        }
        other => panic!("expected Api, got {other:?}"),
    }
}

#[tokio::test]
async fn server_error_on_the_patch_stops_before_the_binding() {
    let result = bind_against(
        AnnotationWrite::Patch,
        Some(two_gpus()),
        vec![Exchange::patch(POD_PATH)
            .body(MERGE_PATCH, annotation_patch())
            .reply(
                503,
                status(
                    503,
                    "ServiceUnavailable",
                    "the server is currently unable to handle the request",
                ),
            )],
    )
    .await;
    assert!(matches!(result, Err(BindError::Api { .. })), "{result:?}");
}

/// The connection fails on the request: a retryable error, not a panic.
#[tokio::test]
async fn unreachable_api_server_is_a_retryable_error() {
    let result = bind_against(
        AnnotationWrite::Patch,
        Some(two_gpus()),
        vec![Exchange::patch(POD_PATH)
            .body(MERGE_PATCH, annotation_patch())
            .unreachable()],
    )
    .await;
    let error = result.unwrap_err();
    assert_eq!(error.reason(), BindingErrorReason::Other);
    assert!(
        matches!(&error, BindError::Api { source, .. } if !matches!(source, kube::Error::Api(_))),
        "expected a transport error, got {error:?}"
    );
}

/// No API server at all (the mock's other end is gone): every bind fails
/// with a retryable error, and nothing panics.
#[tokio::test]
async fn api_server_gone_is_a_retryable_error() {
    let (client, handle) = mock_client();
    drop(handle);
    let binder = binder(client, AnnotationWrite::Patch);
    for gpus in [Some(two_gpus()), None] {
        let result = tokio::time::timeout(
            Duration::from_secs(20),
            binder.bind(&pod(), "node-1", gpus.as_ref()),
        )
        .await
        .expect("bind hung");
        assert!(
            matches!(&result, Err(e @ BindError::Api { .. }) if e.reason() == BindingErrorReason::Other),
            "{result:?}"
        );
    }
}

// ---------------------------------------------------------------- rate limit

/// Three binds of pods without GPUs, timing when each Binding reaches the
/// server. governor keeps its own clock (not tokio's), so this runs in real
/// time: with 2 per second and a burst of 1 the third Binding cannot come before
/// 1 s after the first; with a burst of 3 all three go at once.
async fn three_binds(qps: u32, burst: u32) -> Vec<Duration> {
    let (client, handle) = mock_client();
    let start = Instant::now();
    let arrivals = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let script = (0..3)
        .map(|_| {
            let arrivals = arrivals.clone();
            Exchange::post(BINDING_PATH)
                .body(JSON, binding_body())
                .reply_with(move |_| {
                    arrivals.lock().unwrap().push(start.elapsed());
                    (201, status(201, "", ""))
                })
        })
        .collect();
    let server = serve(handle, script);
    let binder = Binder::new(
        client,
        NonZeroU32::new(qps).unwrap(),
        NonZeroU32::new(burst).unwrap(),
        AnnotationWrite::Patch,
    );
    for _ in 0..3 {
        binder.bind(&pod(), "node-1", None).await.unwrap();
    }
    drop(binder);
    finish(server).await;
    let arrivals = arrivals.lock().unwrap().clone();
    arrivals
}

#[tokio::test]
async fn bindings_are_rate_limited() {
    let limited = three_binds(2, 1).await;
    assert!(
        limited[1] - limited[0] >= Duration::from_millis(450)
            && limited[2] - limited[1] >= Duration::from_millis(450)
            && limited[2] >= Duration::from_millis(950),
        "2/s with burst 1 let Bindings through at {limited:?}"
    );
    let burst = three_binds(2, 3).await;
    assert!(
        burst[2] < Duration::from_millis(400),
        "a burst of 3 should let three Bindings through at once: {burst:?}"
    );
}

// ---------------------------------------------------------------- events

/// Replies 201 with the posted Event, named `name` by the "server".
fn created_as(name: &'static str) -> impl FnOnce(&Value) -> (u16, Value) + Send + 'static {
    move |body: &Value| {
        let mut created = body.clone();
        created["metadata"]["name"] = json!(name);
        created["metadata"]["uid"] = json!("event-uid");
        created["metadata"]["resourceVersion"] = json!("1");
        (201, created)
    }
}

fn regarding_p() -> Value {
    json!({ "apiVersion": "v1", "kind": "Pod", "name": "p", "namespace": "ns", "uid": "u1" })
}

fn is_micro_time(value: &Value) -> bool {
    // RFC 3339 with microseconds, e.g. 2025-01-01T00:00:00.000000Z.
    value
        .as_str()
        .is_some_and(|s| s.len() == 27 && s.ends_with('Z') && s.as_bytes()[19] == b'.')
}

/// Runs `record` against `script` and checks that exactly those requests were
/// made once the recorder is dropped.
async fn events_against(script: Vec<Exchange>, record: impl FnOnce(&EventRecorder)) {
    let (client, handle) = mock_client();
    let server = serve(handle, script);
    let recorder = EventRecorder::spawn(client, "phalanx".into(), "phalanx-0".into());
    record(&recorder);
    assert_eq!(recorder.dropped(), 0);
    // The writer task ends (dropping the client) once its queue is drained.
    drop(recorder);
    tokio::time::timeout(Duration::from_secs(30), finish(server))
        .await
        .expect("event writer hung");
}

#[tokio::test]
async fn scheduled_event_is_created_with_kube_schedulers_fields() {
    let check = |body: &Value| {
        let mut body = body.clone();
        let event_time = body.as_object_mut().unwrap().remove("eventTime").unwrap();
        assert!(is_micro_time(&event_time), "eventTime {event_time}");
        let name = body["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("name")
            .unwrap();
        assert!(name.as_str().unwrap().starts_with("p."), "name {name}");
        assert_eq!(
            body,
            json!({
                "apiVersion": "events.k8s.io/v1",
                "kind": "Event",
                "metadata": { "namespace": "ns" },
                "type": "Normal",
                "reason": "Scheduled",
                "action": "Binding",
                "note": "Successfully assigned ns/p to node-1",
                "regarding": regarding_p(),
                "reportingController": "phalanx",
                "reportingInstance": "phalanx-0",
            })
        );
    };
    events_against(
        vec![Exchange::post(EVENTS_PATH)
            .body_with(JSON, check)
            .reply_with(created_as("p.1"))],
        |recorder| {
            assert!(recorder.record(scheduling_events::scheduled(
                events::pod_reference("ns", "p", "u1"),
                "node-1"
            )));
        },
    )
    .await;
}

/// A repeat is folded into the first event: a merge patch of its `series`, on
/// the name the server gave the created event.
#[tokio::test]
async fn repeated_failed_scheduling_patches_the_series() {
    let message = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.";
    let first = Exchange::post(EVENTS_PATH)
        .body_with(JSON, move |body: &Value| {
            assert_eq!(body["type"], "Warning");
            assert_eq!(body["reason"], "FailedScheduling");
            assert_eq!(body["action"], "Scheduling");
            assert_eq!(body["note"], message);
            assert_eq!(body["regarding"], regarding_p());
            assert!(body.get("series").is_none(), "{body}");
        })
        .reply_with(created_as("p.from-server"));
    let repeat = Exchange::patch(&format!("{EVENTS_PATH}/p.from-server"))
        .body_with(MERGE_PATCH, |body: &Value| {
            let series = body["series"].as_object().unwrap();
            assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
            assert_eq!(series.len(), 2, "{body}");
            assert_eq!(series["count"], 2);
            assert!(is_micro_time(&series["lastObservedTime"]), "{body}");
        })
        .reply(200, json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "p.from-server", "namespace": "ns"}}));
    // The third carries a decision: the patch replaces the event's with it.
    let third = Exchange::patch(&format!("{EVENTS_PATH}/p.from-server"))
        .body_with(MERGE_PATCH, |body: &Value| {
            assert_eq!(body["series"]["count"], 3);
            assert_eq!(
                body["metadata"]["annotations"]["phalanx.dev/decision"],
                "{\"nodes\":3}"
            );
        })
        .reply(200, json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "p.from-server", "namespace": "ns"}}));
    events_against(vec![first, repeat, third], |recorder| {
        for attempt in 0..3 {
            let annotations = if attempt == 2 {
                [(
                    "phalanx.dev/decision".to_owned(),
                    "{\"nodes\":3}".to_owned(),
                )]
                .into()
            } else {
                Default::default()
            };
            recorder.record(scheduling_events::failed_scheduling(
                events::pod_reference("ns", "p", "u1"),
                message.into(),
                annotations,
            ));
        }
    })
    .await;
}

/// A failed event write is logged and skipped: later events are still written,
/// and a repeat of the failed one is created afresh (there is nothing to patch).
#[tokio::test]
async fn a_failed_event_write_does_not_stop_later_events() {
    let note_is = |note: &'static str| move |body: &Value| assert_eq!(body["note"], note);
    let script = vec![
        Exchange::post(EVENTS_PATH)
            .body_with(JSON, note_is("first"))
            .reply(
                500,
                status(500, "InternalError", "etcdserver: leader changed"),
            ),
        Exchange::post(EVENTS_PATH)
            .body_with(JSON, note_is("Successfully assigned ns/p to node-1"))
            .unreachable(),
        Exchange::post(EVENTS_PATH)
            .body_with(JSON, note_is("first"))
            .reply_with(created_as("p.2")),
    ];
    events_against(script, |recorder| {
        let reference = events::pod_reference("ns", "p", "u1");
        recorder.record(scheduling_events::failed_scheduling(
            reference.clone(),
            "first".into(),
            Default::default(),
        ));
        recorder.record(scheduling_events::scheduled(reference.clone(), "node-1"));
        recorder.record(scheduling_events::failed_scheduling(
            reference,
            "first".into(),
            Default::default(),
        ));
    })
    .await;
}
