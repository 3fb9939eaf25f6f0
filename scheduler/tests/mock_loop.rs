//! The whole scheduling loop against a mock API server that serves the lists
//! and watches kube's watcher issues: a pod deleted while it waits in the queue
//! is never bound, and (the control) the same pod left alone is bound; a
//! refused Binding is retried; a leader whose Lease may have passed on binds
//! nothing; a gang's plan is written on every member before its first
//! Binding; a gang member whose Binding failed is bound alone later; a new
//! leader finishes or undoes a plan an earlier one left partly bound; a
//! PodGroup whose gang timed out is written `Failed` and nothing after it; a
//! gated pod is marked `SchedulingGated` once and bound only when its gate is
//! removed; an unfittable pod's `PodScheduled` condition says what its event
//! says, and a refused Binding's says `SchedulerError`.
//!
//! The API server here is a router rather than a script, because four watchers
//! ask concurrently. Each request is logged; the test decides when a held
//! response (a watch, or a list it wants to delay) is answered, which is how
//! the order "pod deleted, then caches synced" is made deterministic.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

mod support;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::Method;
use phalanx_runtime::events::EventRecorder;
use phalanx_runtime::http::Health;
use phalanx_runtime::leader::LeaseFence;
use phalanx_scheduler::controller::binder::{AnnotationWrite, Binder};
use phalanx_scheduler::controller::config::SchedulerConfig;
use phalanx_scheduler::controller::metrics::SchedulerMetrics;
use phalanx_scheduler::controller::scheduler_loop::{LoopDeps, LoopError, SchedulerLoop};
use serde_json::{json, Value};
use support::{json_response, mock_client, status, MockHandle};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

const NODES: &str = "/api/v1/nodes";
const PODS: &str = "/api/v1/pods";
const GPU_NODES: &str = "/apis/phalanx.dev/v1alpha1/gpunodes";
const NAMESPACES: &str = "/api/v1/namespaces";
const POD_GROUPS: &str = "/apis/scheduling.x-k8s.io/v1alpha1/podgroups";
const BINDING: &str = "/api/v1/namespaces/ns/pods/p/binding";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/ns/events";
const POD_STATUS: &str = "/api/v1/namespaces/ns/pods/p/status";
const POD_GROUP_STATUS: &str =
    "/apis/scheduling.x-k8s.io/v1alpha1/namespaces/ns/podgroups/trio/status";

/// One request as the router saw it.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    method: Method,
    path: String,
    query: String,
    body: Value,
}

impl Seen {
    fn is_watch(&self) -> bool {
        self.query.split('&').any(|kv| kv == "watch=true")
    }

    /// The watcher's paged initial list (as opposed to the loop's own relist).
    fn is_watcher_list(&self) -> bool {
        !self.is_watch() && self.query.contains("limit=500")
    }
}

/// A response the test sends later: a JSON object, or watch event lines.
enum Later {
    Json(u16, Value),
    WatchEvents(Vec<Value>),
}

/// Requests the test answers itself, by (path, watch?, n-th such request).
type Held = HashMap<(&'static str, bool, usize), oneshot::Receiver<Later>>;

/// The API server: answers what it can at once, holds what `held` names, and
/// holds every other watch forever (an idle watch).
struct Router {
    log: Arc<Mutex<Vec<Seen>>>,
    arrived: mpsc::UnboundedReceiver<Seen>,
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({ "apiVersion": "v1", "kind": kind, "metadata": { "resourceVersion": "10" }, "items": items })
}

fn node() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": { "name": "node-1", "uid": "n1", "resourceVersion": "5" },
        "status": { "allocatable": { "cpu": "8", "memory": "32Gi", "pods": "110" } }
    })
}

fn pending_pod(resource_version: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "p", "namespace": "ns", "uid": "u1", "resourceVersion": resource_version },
        "spec": {
            "schedulerName": "phalanx",
            "containers": [{
                "name": "c",
                "image": "busybox",
                "resources": { "requests": { "cpu": "100m", "memory": "64Mi" } }
            }]
        },
        "status": { "phase": "Pending" }
    })
}

fn spawn_router(handle: MockHandle, held: Held) -> (Router, JoinHandle<()>) {
    spawn_router_serving(handle, held, vec![pending_pod("7")])
}

/// [`spawn_router`] listing `pods` as the cluster's pods.
fn spawn_router_serving(
    handle: MockHandle,
    held: Held,
    pods: Vec<Value>,
) -> (Router, JoinHandle<()>) {
    spawn_router_with_pod_groups(handle, held, pods, None)
}

/// [`spawn_router_serving`], and the PodGroup CRD served with `pod_groups`
/// when they are given (else it is not installed).
fn spawn_router_with_pod_groups(
    mut handle: MockHandle,
    mut held: Held,
    pods: Vec<Value>,
    pod_groups: Option<Vec<Value>>,
) -> (Router, JoinHandle<()>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let (arrived_tx, arrived) = mpsc::unbounded_channel();
    let router_log = log.clone();
    let task = tokio::spawn(async move {
        let mut counts: HashMap<(String, bool), usize> = HashMap::new();
        // Idle watches: their responders are kept so that the watch stays open.
        let mut idle = Vec::new();
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap();
            let seen = Seen {
                method: parts.method.clone(),
                path: parts.uri.path().to_owned(),
                query: parts.uri.query().unwrap_or("").to_owned(),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            router_log.lock().unwrap().push(seen.clone());
            let _ = arrived_tx.send(seen.clone());
            let watch = seen.is_watch();
            let n = {
                let c = counts.entry((seen.path.clone(), watch)).or_default();
                *c += 1;
                *c
            };
            let key = held
                .keys()
                .find(|(path, w, i)| *path == seen.path && *w == watch && *i == n)
                .copied();
            if let Some(key) = key {
                let later = held.remove(&key).unwrap();
                tokio::spawn(async move {
                    if let Ok(later) = later.await {
                        send.send_response(match later {
                            Later::Json(code, body) => json_response(code, &body),
                            Later::WatchEvents(events) => {
                                let mut lines = Vec::new();
                                for event in events {
                                    serde_json::to_writer(&mut lines, &event).unwrap();
                                    lines.push(b'\n');
                                }
                                http::Response::builder()
                                    .status(200)
                                    .body(kube::client::Body::from(lines))
                                    .unwrap()
                            }
                        });
                    }
                });
                continue;
            }
            let reply = match (&seen.method, seen.path.as_str()) {
                _ if watch => {
                    idle.push(send);
                    continue;
                }
                (&Method::GET, NODES) => list("NodeList", vec![node()]),
                (&Method::GET, PODS) => list("PodList", pods.clone()),
                (&Method::GET, GPU_NODES) => list("GpuNodeList", vec![]),
                (&Method::GET, NAMESPACES) => list("NamespaceList", vec![]),
                // The volume kinds: nothing in this cluster.
                (&Method::GET, "/api/v1/persistentvolumeclaims") => {
                    list("PersistentVolumeClaimList", vec![])
                }
                (&Method::GET, "/api/v1/persistentvolumes") => list("PersistentVolumeList", vec![]),
                (&Method::GET, "/apis/storage.k8s.io/v1/storageclasses") => {
                    list("StorageClassList", vec![])
                }
                (&Method::GET, "/apis/storage.k8s.io/v1/csinodes") => list("CSINodeList", vec![]),
                // Aggregated discovery (what the scheduler asks first): the
                // scheduler-plugins group exactly when this cluster has PodGroups.
                (&Method::GET, "/apis") => json!({
                    "kind": "APIGroupDiscoveryList",
                    "apiVersion": "apidiscovery.k8s.io/v2",
                    "items": if pod_groups.is_some() {
                        json!([{
                            "metadata": {"name": "scheduling.x-k8s.io"},
                            "versions": [{
                                "version": "v1alpha1",
                                "freshness": "Current",
                                "resources": [{
                                    "resource": "podgroups",
                                    "responseKind": {"group": "scheduling.x-k8s.io", "version": "v1alpha1", "kind": "PodGroup"},
                                    "scope": "Namespaced",
                                    "singularResource": "podgroup",
                                    "verbs": ["get", "list", "watch", "patch"],
                                    "subresources": [{"subresource": "status", "verbs": ["get", "patch"]}]
                                }]
                            }]
                        }])
                    } else {
                        json!([])
                    },
                }),
                (&Method::GET, POD_GROUPS) if pod_groups.is_some() => {
                    list("PodGroupList", pod_groups.clone().unwrap_or_default())
                }
                (&Method::PATCH, path)
                    if pod_groups.is_some()
                        && path.starts_with("/apis/scheduling.x-k8s.io/")
                        && path.ends_with("/status") =>
                {
                    let name = path.trim_end_matches("/status").rsplit('/').next();
                    json!({
                        "apiVersion": "scheduling.x-k8s.io/v1alpha1",
                        "kind": "PodGroup",
                        "metadata": { "name": name, "namespace": "ns" },
                        "spec": {},
                        "status": seen.body["status"],
                    })
                }
                (&Method::GET, POD_GROUPS) => {
                    send.send_response(json_response(
                        404,
                        &status(
                            404,
                            "NotFound",
                            "the server could not find the requested resource",
                        ),
                    ));
                    continue;
                }
                (&Method::POST, path) if path.ends_with("/binding") => status(201, "", ""),
                // A gang's plan, written on each member before its Binding.
                (&Method::PATCH, path) if path.starts_with("/api/v1/namespaces/ns/pods/") => {
                    let name = path.rsplit('/').next().unwrap_or_default();
                    let mut pod = gang_member(name);
                    pod["metadata"]["annotations"]
                        .as_object_mut()
                        .unwrap()
                        .extend(
                            seen.body["metadata"]["annotations"]
                                .as_object()
                                .cloned()
                                .unwrap_or_default(),
                        );
                    pod
                }
                // An undone gang's bound member.
                (&Method::DELETE, path) if path.starts_with("/api/v1/namespaces/ns/pods/") => {
                    gang_member(path.rsplit('/').next().unwrap_or_default())
                }
                (&Method::POST, EVENTS) => {
                    let mut created = seen.body.clone();
                    created["metadata"]["name"] = json!(format!("event-{n}"));
                    created
                }
                (&Method::PATCH, path) if path.starts_with(EVENTS) => seen.body.clone(),
                _ => {
                    send.send_response(json_response(
                        404,
                        &status(404, "NotFound", "not served by the mock"),
                    ));
                    continue;
                }
            };
            let code = if seen.method == Method::POST {
                201
            } else {
                200
            };
            send.send_response(json_response(code, &reply));
        }
    });
    (Router { log, arrived }, task)
}

impl Router {
    /// Waits until a request matching `pred` arrives (or has arrived).
    async fn wait_for(&mut self, what: &str, pred: impl Fn(&Seen) -> bool) -> Seen {
        if let Some(seen) = self.log.lock().unwrap().iter().find(|s| pred(s)) {
            return seen.clone();
        }
        let wait = async {
            loop {
                let seen = self.arrived.recv().await.unwrap();
                if pred(&seen) {
                    return seen;
                }
            }
        };
        match tokio::time::timeout(Duration::from_secs(20), wait).await {
            Ok(seen) => seen,
            Err(_) => panic!(
                "no request for {what}; requests so far: {:#?}",
                self.log.lock().unwrap()
            ),
        }
    }

    fn bindings(&self) -> Vec<Seen> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.method == Method::POST && s.path.ends_with("/binding"))
            .cloned()
            .collect()
    }
}

/// A running loop on a mock client.
struct Running {
    leader: watch::Sender<bool>,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<Result<(), LoopError>>,
}

fn start_loop(client: kube::Client) -> Running {
    let (leader, is_leader) = watch::channel(false);
    start_loop_with(client, is_leader, leader, LeaseFence::unfenced())
}

fn start_loop_with(
    client: kube::Client,
    is_leader: watch::Receiver<bool>,
    leader: watch::Sender<bool>,
    fence: LeaseFence,
) -> Running {
    let config = Arc::new(SchedulerConfig::default());
    let many = NonZeroU32::new(1000).unwrap();
    let deps = LoopDeps {
        client: client.clone(),
        config,
        metrics: Arc::new(SchedulerMetrics::new()),
        health: Arc::new(Health::new(Duration::from_secs(30))),
        events: EventRecorder::spawn(client.clone(), "phalanx".into(), "phalanx-0".into()),
        binder: Binder::new(client, many, many, AnnotationWrite::Patch),
        is_leader,
        fence,
    };
    let (shutdown, stop) = oneshot::channel::<()>();
    let task = tokio::spawn(SchedulerLoop::new(deps).run(async {
        let _ = stop.await;
    }));
    Running {
        leader,
        shutdown,
        task,
    }
}

impl Running {
    async fn stop(self) {
        self.shutdown.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the loop did not shut down")
            .unwrap()
            .unwrap();
    }
}

fn is(path: &'static str, pred: fn(&Seen) -> bool) -> impl Fn(&Seen) -> bool {
    move |s: &Seen| s.path == path && pred(s)
}

/// The exact Binding the loop sends for `p` on node-1 (a pod without GPUs:
/// no annotation patch before it).
fn expected_binding() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": { "name": "p", "namespace": "ns", "uid": "u1" },
        "target": { "apiVersion": "v1", "kind": "Node", "name": "node-1" }
    })
}

/// Starts the loop with the pods watch and the GpuNode list held by the test,
/// makes it leader, and waits until it has relisted pods and the watchers are
/// waiting. Returns the senders for the held pod watch and GpuNode list.
async fn started() -> (
    Router,
    Running,
    oneshot::Sender<Later>,
    oneshot::Sender<Later>,
) {
    let (client, handle) = mock_client();
    let (pod_watch, pod_watch_rx) = oneshot::channel();
    let (gpu_list, gpu_list_rx) = oneshot::channel();
    let mut held = Held::new();
    held.insert((PODS, true, 1), pod_watch_rx);
    held.insert((GPU_NODES, false, 1), gpu_list_rx);
    let (mut router, _task) = spawn_router(handle, held);
    let running = start_loop(client);
    router
        .wait_for("the GpuNode list", is(GPU_NODES, |s| s.is_watcher_list()))
        .await;
    router
        .wait_for("the pods watch", is(PODS, Seen::is_watch))
        .await;
    router
        .wait_for("the nodes watch", is(NODES, Seen::is_watch))
        .await;
    running.leader.send(true).unwrap();
    router
        .wait_for(
            "the new leader's relist of pods",
            is(PODS, |s| !s.is_watch() && !s.is_watcher_list()),
        )
        .await;
    (router, running, pod_watch, gpu_list)
}

/// The pod is listed pending; before the caches sync (so before it can be
/// scheduled) a watch DELETED arrives; then the caches sync. No Binding is ever
/// sent, and no event either.
#[tokio::test]
async fn pod_deleted_while_queued_is_never_bound() {
    deleted_while_queued().await;
}

async fn deleted_while_queued() {
    let (mut router, running, pod_watch, gpu_list) = started().await;
    let mut deleted = pending_pod("11");
    deleted["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
    pod_watch
        .send(Later::WatchEvents(vec![
            json!({ "type": "DELETED", "object": deleted }),
        ]))
        .ok()
        .unwrap();
    // The watcher asks again only after it has handed the DELETED to the loop.
    router
        .wait_for("the pods watch resumed after the DELETED", |s| {
            s.path == PODS && s.is_watch() && s.query.contains("resourceVersion=11")
        })
        .await;
    gpu_list
        .send(Later::Json(200, list("GpuNodeList", vec![])))
        .ok()
        .unwrap();
    router
        .wait_for(
            "the GpuNode watch (caches synced)",
            is(GPU_NODES, Seen::is_watch),
        )
        .await;
    // The control test binds within milliseconds of this point.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(router.bindings(), vec![], "a deleted pod was bound");
    let writes: Vec<Seen> = router
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.method != Method::GET)
        .cloned()
        .collect();
    assert_eq!(writes, vec![], "no writes at all were expected");
    running.stop().await;
}

/// The control: the same start without the DELETED binds the pod once the
/// caches sync, with the exact Binding, and records Scheduled.
#[tokio::test]
async fn pending_pod_is_bound_once_caches_sync() {
    bound_once_synced().await;
}

async fn bound_once_synced() {
    let (mut router, running, _pod_watch, gpu_list) = started().await;
    assert_eq!(router.bindings(), vec![], "bound before the caches synced");
    gpu_list
        .send(Later::Json(200, list("GpuNodeList", vec![])))
        .ok()
        .unwrap();
    let binding = router
        .wait_for("the Binding", |s| {
            s.method == Method::POST && s.path == BINDING
        })
        .await;
    assert_eq!(binding.body, expected_binding());
    let event = router
        .wait_for("the Scheduled event", |s| {
            s.method == Method::POST && s.path == EVENTS
        })
        .await;
    assert_eq!(event.body["reason"], "Scheduled");
    assert_eq!(event.body["note"], "Successfully assigned ns/p to node-1");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(router.bindings().len(), 1, "bound more than once");
    running.stop().await;
}

/// Without leader election `main` passes `leader::always_leader()`, whose
/// receiver is `true` from the start. The loop must schedule then too.
///
/// It does not: the loop becomes leader only on `is_leader.changed()`, and a
/// receiver that starts `true` never changes, so the caches sync but the loop
/// never relists, never pops the queue and never binds.
#[tokio::test]
async fn without_leader_election_the_loop_schedules() {
    always_leader_binds().await;
}

async fn always_leader_binds() {
    let (client, handle) = mock_client();
    let (mut router, _task) = spawn_router(handle, Held::new());
    let leadership = phalanx_runtime::leader::always_leader();
    // A sender nobody uses: `always_leader` keeps its own alive forever.
    let (unused, _) = watch::channel(true);
    let running = start_loop_with(client, leadership.is_leader, unused, leadership.fence);
    let binding = router
        .wait_for("the Binding", |s| {
            s.method == Method::POST && s.path == BINDING
        })
        .await;
    assert_eq!(binding.body, expected_binding());
    running.stop().await;
}

/// A replica the elector still calls leader, but whose Lease (as the API shows
/// it) is about to run out or is held by another, sends no Binding; once its
/// renewal is seen, it binds.
#[tokio::test]
async fn a_leader_whose_lease_is_expiring_does_not_bind() {
    fenced_leader_waits().await;
}

async fn fenced_leader_waits() {
    let (client, handle) = mock_client();
    let (mut router, _task) = spawn_router(handle, Held::new());
    let (leader, is_leader) = watch::channel(true);
    let (valid_until, fence) = watch::channel(None);
    let running = start_loop_with(client, is_leader, leader, LeaseFence::from_channel(fence));
    router
        .wait_for(
            "the GpuNode watch (caches synced)",
            is(GPU_NODES, Seen::is_watch),
        )
        .await;
    // The open-fence control (`always_leader_binds`) binds within milliseconds.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(router.bindings(), vec![], "bound without a valid Lease");
    valid_until
        .send(Some(SystemTime::now() + Duration::from_secs(60)))
        .unwrap();
    let binding = router
        .wait_for("the Binding after the renewal", |s| {
            s.method == Method::POST && s.path == BINDING
        })
        .await;
    assert_eq!(binding.body, expected_binding());
    running.stop().await;
}

/// A Binding the API server refuses (403: the scheduler's role lacked the verb
/// for a moment) is retried after a backoff, not forgotten: the pod does not
/// change, so no watch event would ever bring it back.
#[tokio::test]
async fn a_refused_binding_is_retried() {
    refused_binding_retried().await;
}

async fn refused_binding_retried() {
    let (client, handle) = mock_client();
    let (refusal, refusal_rx) = oneshot::channel();
    let mut held = Held::new();
    held.insert((BINDING, false, 1), refusal_rx);
    let (mut router, _task) = spawn_router(handle, held);
    let leadership = phalanx_runtime::leader::always_leader();
    let (unused, _) = watch::channel(true);
    let running = start_loop_with(client, leadership.is_leader, unused, leadership.fence);
    router
        .wait_for("the first Binding", |s| {
            s.method == Method::POST && s.path == BINDING
        })
        .await;
    refusal
        .send(Later::Json(
            403,
            status(
                403,
                "Forbidden",
                "pods \"p\" is forbidden: cannot create pods/binding",
            ),
        ))
        .ok()
        .unwrap();
    let retried = async {
        loop {
            if router.bindings().len() >= 2 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), retried)
        .await
        .unwrap_or_else(|_| panic!("the refused Binding was never retried"));
    assert_eq!(router.bindings()[1].body, expected_binding());
    // A refusal is no reason for a node autoscaler to add a node: the pod's
    // condition says SchedulerError, not Unschedulable.
    let patch = router
        .wait_for("the SchedulerError condition", is_pod_status_patch)
        .await;
    let condition = &patch.body["status"]["conditions"][0];
    assert_eq!(condition["reason"], "SchedulerError");
    assert!(
        condition["message"]
            .as_str()
            .unwrap()
            .starts_with("Binding rejected: "),
        "{condition}"
    );
    running.stop().await;
}

/// A member of the two-pod gang `pair` (annotation form), needing one CPU.
fn gang_member(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name, "namespace": "ns", "uid": format!("uid-{name}"), "resourceVersion": "7",
            "annotations": { "phalanx.dev/gang": "pair", "phalanx.dev/gang-min-member": "2" }
        },
        "spec": {
            "schedulerName": "phalanx",
            "containers": [{
                "name": "c",
                "image": "busybox",
                "resources": { "requests": { "cpu": "1", "memory": "64Mi" } }
            }]
        },
        "status": { "phase": "Pending" }
    })
}

/// A gang is placed whole, but one member's Binding fails (a 500 from the API
/// server) after the other's went through. No unbinding exists in Kubernetes,
/// so the member bound stays; the failed one is retried on its own (bound
/// members count towards minMember) and lands, instead of the gang waiting
/// for a member that will never come back to the queue.
#[tokio::test]
async fn a_gang_member_whose_binding_failed_is_bound_alone_later() {
    let (client, handle) = mock_client();
    let (failure, failure_rx) = oneshot::channel();
    let (pod_watch, pod_watch_rx) = oneshot::channel();
    let mut held = Held::new();
    let second = "/api/v1/namespaces/ns/pods/g-1/binding";
    held.insert((second, false, 1), failure_rx);
    held.insert((PODS, true, 1), pod_watch_rx);
    let (mut router, _task) =
        spawn_router_serving(handle, held, vec![gang_member("g-0"), gang_member("g-1")]);
    let leadership = phalanx_runtime::leader::always_leader();
    let (unused, _) = watch::channel(true);
    let running = start_loop_with(client, leadership.is_leader, unused, leadership.fence);
    let is_binding_of = |pod: &'static str| {
        move |s: &Seen| s.method == Method::POST && s.path.ends_with(&format!("/{pod}/binding"))
    };
    router
        .wait_for("the first member's Binding", is_binding_of("g-0"))
        .await;
    router
        .wait_for("the second member's Binding", is_binding_of("g-1"))
        .await;
    // Phase 1 before phase 2: the plan on both members, guarded by their UIDs,
    // before either Binding.
    {
        let log = router.log.lock().unwrap();
        let first_binding = log
            .iter()
            .position(|s| s.method == Method::POST && s.path.ends_with("/binding"))
            .unwrap();
        for pod in ["g-0", "g-1"] {
            let plan = log
                .iter()
                .position(|s| {
                    s.method == Method::PATCH && s.path.ends_with(&format!("/pods/{pod}"))
                })
                .unwrap_or_else(|| panic!("no plan written on {pod}: {log:#?}"));
            assert!(plan < first_binding, "{pod}'s plan came after a Binding");
            let body = &log[plan].body["metadata"];
            assert!(
                body.get("resourceVersion").is_none(),
                "a plan is guarded by UID only"
            );
            let written: Value = serde_json::from_str(
                body["annotations"]["phalanx.dev/gang-plan"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(written["members"], 2);
            assert_eq!(written["node"], "node-1");
        }
    }
    failure
        .send(Later::Json(
            500,
            status(500, "InternalError", "etcdserver: request timed out"),
        ))
        .ok()
        .unwrap();
    // The API server reports the first member bound, as it would.
    let mut bound = gang_member("g-0");
    bound["metadata"]["resourceVersion"] = json!("11");
    bound["spec"]["nodeName"] = json!("node-1");
    pod_watch
        .send(Later::WatchEvents(vec![
            json!({ "type": "MODIFIED", "object": bound }),
        ]))
        .ok()
        .unwrap();
    let retried = async {
        loop {
            let again = router
                .bindings()
                .iter()
                .filter(|s| s.path == second)
                .count();
            if again >= 2 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), retried)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the failed member was never bound: {:#?}",
                router.bindings()
            )
        });
    let bindings = router.bindings();
    let last = bindings.iter().rev().find(|s| s.path == second).unwrap();
    assert_eq!(last.body["target"]["name"], "node-1");
    assert_eq!(
        bindings.iter().filter(|s| s.path.contains("/g-0/")).count(),
        1,
        "the bound member was bound once"
    );
    running.stop().await;
}

/// A member of the scheduler-plugins PodGroup `trio`.
fn trio_member(name: &str) -> Value {
    let mut pod = gang_member(name);
    pod["metadata"]["annotations"] = json!({});
    pod["metadata"]["labels"] = json!({ "scheduling.x-k8s.io/pod-group": "trio" });
    pod
}

/// The phases of the PodGroup status patches sent so far, in order.
fn status_phases(router: &Router) -> Vec<String> {
    router
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.method == Method::PATCH && s.path == POD_GROUP_STATUS)
        .map(|s| s.body["status"]["phase"].as_str().unwrap_or("?").to_owned())
        .collect()
}

/// A PodGroup gang of three with one member waits (`Pending`) and times out;
/// the attempt after the timeout writes `Failed`, and nothing else. Each
/// decision used to spawn its own patch, and the timeout's `Failed` was
/// followed by a `Pending` from the same attempt.
#[tokio::test]
async fn a_timed_out_pod_group_is_written_failed_and_nothing_after() {
    let (client, handle) = mock_client();
    let (pod_watch, pod_watch_rx) = oneshot::channel();
    let mut held = Held::new();
    held.insert((PODS, true, 1), pod_watch_rx);
    let trio = json!({
        "apiVersion": "scheduling.x-k8s.io/v1alpha1",
        "kind": "PodGroup",
        "metadata": { "name": "trio", "namespace": "ns", "uid": "pg-1", "resourceVersion": "3" },
        "spec": { "minMember": 3, "scheduleTimeoutSeconds": 1 }
    });
    let (mut router, _task) =
        spawn_router_with_pod_groups(handle, held, vec![trio_member("t-0")], Some(vec![trio]));
    let leadership = phalanx_runtime::leader::always_leader();
    let (unused, _) = watch::channel(true);
    let running = start_loop_with(client, leadership.is_leader, unused, leadership.fence);
    let patched = |phase: &'static str| {
        move |s: &Seen| {
            s.method == Method::PATCH
                && s.path == POD_GROUP_STATUS
                && s.body["status"]["phase"] == phase
        }
    };
    let pending = router.wait_for("status Pending", patched("Pending")).await;
    assert_eq!(pending.body["status"]["scheduled"], 0);
    assert!(pending.body["status"].get("scheduleStartTime").is_none());
    // Past the timeout a second member arrives: the gang is looked at again,
    // still one short.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    pod_watch
        .send(Later::WatchEvents(vec![
            json!({ "type": "ADDED", "object": trio_member("t-1") }),
        ]))
        .ok()
        .unwrap();
    let failed = router.wait_for("status Failed", patched("Failed")).await;
    assert_eq!(failed.body["status"]["scheduled"], 0);
    assert!(failed.body["status"]["scheduleStartTime"].is_string());
    // Time for any other write to land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status_phases(&router), ["Pending", "Failed"]);
    assert!(
        router.bindings().is_empty(),
        "a member of a short gang was bound"
    );
    running.stop().await;
}

/// Member `name` of gang `pair` carrying plan `plan` (of `members`) that put
/// it on node-1, bound there when `bound`.
fn planned_member(name: &str, plan: &str, members: u32, bound: bool) -> Value {
    let mut pod = gang_member(name);
    pod["metadata"]["annotations"]["phalanx.dev/gang-plan"] = json!(json!({
        "plan": plan, "gang": "ns/pair", "members": members, "node": "node-1", "gpus": []
    })
    .to_string());
    if bound {
        pod["spec"]["nodeName"] = json!("node-1");
        pod["status"]["phase"] = json!("Running");
    }
    pod
}

/// An earlier leader wrote the pair's plan and bound g-0 before it died. The
/// new leader binds g-1 where the plan says, without placing it afresh or
/// writing a plan of its own, and g-0 is left alone.
#[tokio::test]
async fn a_new_leader_finishes_a_gang_plan_an_earlier_term_left_partly_bound() {
    let (client, handle) = mock_client();
    let plan = "phalanx-old@1#1";
    let (mut router, _task) = spawn_router_serving(
        handle,
        Held::new(),
        vec![
            planned_member("g-0", plan, 2, true),
            planned_member("g-1", plan, 2, false),
        ],
    );
    let leadership = phalanx_runtime::leader::always_leader();
    let (unused, _) = watch::channel(true);
    let running = start_loop_with(client, leadership.is_leader, unused, leadership.fence);
    let binding = router
        .wait_for("g-1's Binding", |s| {
            s.method == Method::POST && s.path.ends_with("/g-1/binding")
        })
        .await;
    assert_eq!(binding.body["target"]["name"], "node-1");
    let resumed = router
        .wait_for("a GangPlanResumed event", |s| {
            s.method == Method::POST && s.path == EVENTS && s.body["reason"] == "GangPlanResumed"
        })
        .await;
    assert!(
        resumed.body["note"].as_str().unwrap().contains(plan),
        "{}",
        resumed.body["note"]
    );
    let log = router.log.lock().unwrap().clone();
    let writes: Vec<&Seen> = log
        .iter()
        .filter(|s| s.path.contains("/pods/g-") && s.method != Method::GET)
        .collect();
    assert_eq!(writes.len(), 1, "only g-1's Binding: {writes:#?}");
    running.stop().await;
}

/// The plan placed three members but only two carry it (one was deleted
/// while no leader was up): the new leader deletes the bound member (UID
/// precondition), clears the plan from the unbound one, and binds nothing.
#[tokio::test]
async fn a_new_leader_undoes_a_gang_plan_that_lost_a_member() {
    let (client, handle) = mock_client();
    let plan = "phalanx-old@1#2";
    let (mut router, _task) = spawn_router_serving(
        handle,
        Held::new(),
        vec![
            planned_member("g-0", plan, 3, true),
            planned_member("g-1", plan, 3, false),
        ],
    );
    let leadership = phalanx_runtime::leader::always_leader();
    let (unused, _) = watch::channel(true);
    let running = start_loop_with(client, leadership.is_leader, unused, leadership.fence);
    let deleted = router
        .wait_for("g-0 deleted", |s| {
            s.method == Method::DELETE && s.path.ends_with("/pods/g-0")
        })
        .await;
    assert_eq!(deleted.body["preconditions"]["uid"], "uid-g-0");
    let cleared = router
        .wait_for("g-1's plan cleared", |s| {
            s.method == Method::PATCH && s.path.ends_with("/pods/g-1")
        })
        .await;
    assert_eq!(
        cleared.body["metadata"]["annotations"]["phalanx.dev/gang-plan"],
        Value::Null
    );
    assert_eq!(cleared.body["metadata"]["uid"], "uid-g-1");
    let abandoned = router
        .wait_for("a GangPlanAbandoned event", |s| {
            s.method == Method::POST && s.path == EVENTS && s.body["reason"] == "GangPlanAbandoned"
        })
        .await;
    let note = abandoned.body["note"].as_str().unwrap();
    assert!(
        note.contains("placed 3 members but only 2 still carry it"),
        "{note}"
    );
    // g-1 alone is below minMember 2 while g-0 is being deleted: never bound.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        router.bindings(),
        vec![],
        "bound a member of an undone gang"
    );
    running.stop().await;
}

fn is_pod_status_patch(s: &Seen) -> bool {
    s.method == Method::PATCH && s.path == POD_STATUS
}

/// A gated pod is marked `SchedulingGated` (once, although both the relist and
/// the watcher's list show it), is neither bound nor given an event; the watch
/// showing its gate removed gets it bound.
#[tokio::test]
async fn a_gated_pod_waits_for_its_last_gate() {
    let (client, handle) = mock_client();
    let (pod_watch, pod_watch_rx) = oneshot::channel();
    let mut held = Held::new();
    held.insert((PODS, true, 1), pod_watch_rx);
    let mut gated = pending_pod("7");
    gated["spec"]["schedulingGates"] = json!([{ "name": "kueue.x-k8s.io/admission" }]);
    let (mut router, _task) = spawn_router_serving(handle, held, vec![gated]);
    let leadership = phalanx_runtime::leader::always_leader();
    let (unused, _) = watch::channel(true);
    let running = start_loop_with(client, leadership.is_leader, unused, leadership.fence);
    let patch = router
        .wait_for("the SchedulingGated condition", is_pod_status_patch)
        .await;
    let condition = &patch.body["status"]["conditions"][0];
    assert_eq!(condition["type"], "PodScheduled");
    assert_eq!(condition["status"], "False");
    assert_eq!(condition["reason"], "SchedulingGated");
    assert_eq!(patch.body["metadata"]["resourceVersion"], "7");
    router
        .wait_for("the pods watch", is(PODS, Seen::is_watch))
        .await;
    // An ungated pod is bound within milliseconds of the watch starting.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(router.bindings(), vec![], "a gated pod was bound");
    let writes: Vec<Seen> = router
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.method != Method::GET)
        .cloned()
        .collect();
    assert_eq!(writes.len(), 1, "only the one condition patch: {writes:#?}");
    pod_watch
        .send(Later::WatchEvents(vec![
            json!({ "type": "MODIFIED", "object": pending_pod("12") }),
        ]))
        .ok()
        .unwrap();
    let binding = router
        .wait_for("the Binding after the gate was removed", |s| {
            s.method == Method::POST && s.path == BINDING
        })
        .await;
    assert_eq!(binding.body, expected_binding());
    running.stop().await;
}

/// A pod that fits nowhere gets `PodScheduled=False`, reason `Unschedulable`,
/// with its FailedScheduling event's message, on its current resourceVersion.
#[tokio::test]
async fn an_unfittable_pod_says_why_in_its_condition() {
    let (client, handle) = mock_client();
    let mut huge = pending_pod("7");
    huge["spec"]["containers"][0]["resources"]["requests"]["cpu"] = json!("100");
    let (mut router, _task) = spawn_router_serving(handle, Held::new(), vec![huge]);
    let leadership = phalanx_runtime::leader::always_leader();
    let (unused, _) = watch::channel(true);
    let running = start_loop_with(client, leadership.is_leader, unused, leadership.fence);
    let event = router
        .wait_for("the FailedScheduling event", |s| {
            s.method == Method::POST && s.path == EVENTS
        })
        .await;
    assert_eq!(event.body["reason"], "FailedScheduling");
    let note = event.body["note"].as_str().unwrap().to_owned();
    assert!(note.starts_with("0/1 nodes are available: "), "{note}");
    let patch = router
        .wait_for("the Unschedulable condition", is_pod_status_patch)
        .await;
    let condition = &patch.body["status"]["conditions"][0];
    assert_eq!(condition["type"], "PodScheduled");
    assert_eq!(condition["status"], "False");
    assert_eq!(condition["reason"], "Unschedulable");
    assert_eq!(condition["message"], note.as_str());
    assert_eq!(patch.body["metadata"]["resourceVersion"], "7");
    assert_eq!(router.bindings(), vec![]);
    running.stop().await;
}
