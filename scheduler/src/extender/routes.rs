//! The HTTP side: `POST /filter`, `/prioritize` and `/bind` in kube-scheduler's
//! JSON shapes, on `extender.bindAddress`.
//!
//! Bodies are read as bytes, at most `extender.maxRequestBytes` of them, and
//! parsed here: a larger body gets 413 with a WARN log naming the verb, its
//! size and the limit, and a body that is not the expected JSON (or comes
//! without a content type) gets a 400 whose text names the verb and the serde
//! error, never a panic or axum's generic rejection. Both are counted in
//! `phalanx_scheduler_extender_requests_refused_total{verb,reason}`.
//!
//! `/bind` trusts nothing in its body but the names: the pod is read from the
//! API server and refused unless it is the pod named, unbound, of a profile
//! this extender serves and asking for Phalanx's GPUs, and the node is one the
//! engine accepts for it now ([`super::handlers::plan_bind`]).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use phalanx_api::GpuAssignmentAnnotation;
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;

use super::handlers::BindRefusal;
use super::types::{ExtenderArgs, ExtenderBindingArgs, ExtenderBindingResult, NodeName};
use super::ExtenderCore;
use crate::controller::binder::{BindError, Binder, PodRef};
use crate::controller::metrics::{AttemptResult, ExtenderRefusal, ExtenderVerb, SchedulerMetrics};

/// The API calls bind makes, behind a trait so that the routes can be tested
/// without an API server.
pub trait ClusterApi: Send + Sync {
    /// Reads the pod kube-scheduler asked to bind; `Ok(None)` when it does not
    /// exist.
    fn get_pod<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Pod>, String>>;

    /// Writes the GPU annotation (when given) and the Binding.
    fn bind<'a>(
        &'a self,
        pod: &'a PodRef,
        node: &'a str,
        gpus: Option<&'a GpuAssignmentAnnotation>,
    ) -> BoxFuture<'a, Result<(), BindError>>;
}

/// The real thing: a kube client and the scheduler's [`Binder`].
#[allow(missing_debug_implementations)] // kube::Client has no Debug
pub struct KubeApi {
    pub client: kube::Client,
    pub binder: Binder,
}

impl ClusterApi for KubeApi {
    fn get_pod<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Pod>, String>> {
        Box::pin(async move {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
            api.get_opt(name)
                .await
                .map_err(|e| format!("reading pod {namespace}/{name}: {e}"))
        })
    }

    fn bind<'a>(
        &'a self,
        pod: &'a PodRef,
        node: &'a str,
        gpus: Option<&'a GpuAssignmentAnnotation>,
    ) -> BoxFuture<'a, Result<(), BindError>> {
        Box::pin(self.binder.bind(pod, node, gpus))
    }
}

#[derive(Clone)]
struct AppState {
    core: Arc<Mutex<ExtenderCore>>,
    api: Arc<dyn ClusterApi>,
    metrics: Arc<SchedulerMetrics>,
    max_request_bytes: usize,
}

/// `POST /filter`, `/prioritize` and `/bind`, reading bodies of at most
/// `max_request_bytes`.
pub fn router(
    core: Arc<Mutex<ExtenderCore>>,
    api: Arc<dyn ClusterApi>,
    metrics: Arc<SchedulerMetrics>,
    max_request_bytes: usize,
) -> Router {
    Router::new()
        .route("/filter", post(filter))
        .route("/prioritize", post(prioritize))
        .route("/bind", post(bind))
        .layer(DefaultBodyLimit::max(max_request_bytes))
        .with_state(AppState {
            core,
            api,
            metrics,
            max_request_bytes,
        })
}

/// The body as `T`, or the response that refuses it (413 or 400), logged and
/// counted (boxed: a Response is large and the refusal is the rare path).
fn read<T: DeserializeOwned>(
    state: &AppState,
    verb: ExtenderVerb,
    what: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, Box<Response>> {
    let refuse = |reason: ExtenderRefusal, status: StatusCode, message: String| {
        state.metrics.extender_request_refused(verb, reason);
        Box::new((status, message).into_response())
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let content_length = headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("unknown");
            let limit = state.max_request_bytes;
            tracing::warn!(
                verb = verb.as_str(),
                content_length,
                limit_bytes = limit,
                "refused an extender request larger than extender.maxRequestBytes; with \
                 nodeCacheCapable: false kube-scheduler sends whole Nodes: set \
                 nodeCacheCapable: true or raise the limit"
            );
            return Err(refuse(
                ExtenderRefusal::TooLarge,
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "{}: the body ({content_length} bytes) is larger than \
                     extender.maxRequestBytes ({limit} bytes)",
                    verb.as_str()
                ),
            ));
        }
        Err(rejection) => {
            return Err(refuse(
                ExtenderRefusal::Malformed,
                rejection.status(),
                format!("{}: the body could not be read: {rejection}", verb.as_str()),
            ));
        }
    };
    serde_json::from_slice(&body).map_err(|error| {
        refuse(
            ExtenderRefusal::Malformed,
            StatusCode::BAD_REQUEST,
            format!(
                "{}: the body is not a valid {what} (kube-scheduler extender v1 JSON): {error}",
                verb.as_str()
            ),
        )
    })
}

async fn filter(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let args: ExtenderArgs =
        match read(&state, ExtenderVerb::Filter, "ExtenderArgs", &headers, body) {
            Ok(args) => args,
            Err(refused) => return *refused,
        };
    let result = state.core.lock().await.filter(args);
    if !result.error.is_empty() {
        state.metrics.record_attempt(AttemptResult::Error);
    } else if result.node_names.as_ref().is_some_and(Vec::is_empty)
        || result.nodes.as_ref().is_some_and(|n| n.items.is_empty())
    {
        state.metrics.record_attempt(AttemptResult::Unschedulable);
    }
    Json(result).into_response()
}

async fn prioritize(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let verb = ExtenderVerb::Prioritize;
    // Names are all prioritize reads: whole Nodes are skipped while parsing.
    let args: ExtenderArgs<NodeName> = match read(&state, verb, "ExtenderArgs", &headers, body) {
        Ok(args) => args,
        Err(refused) => return *refused,
    };
    let result = state.core.lock().await.prioritize(&args);
    Json(result).into_response()
}

async fn bind(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let verb = ExtenderVerb::Bind;
    let args: ExtenderBindingArgs = match read(&state, verb, "ExtenderBindingArgs", &headers, body)
    {
        Ok(args) => args,
        Err(refused) => return *refused,
    };
    let error = match bind_pod(&state, &args).await {
        Ok(()) => {
            state.metrics.record_attempt(AttemptResult::Scheduled);
            String::new()
        }
        Err(BindFailure::Refused(refusal)) => {
            tracing::warn!(
                reason = refusal.reason.as_str(),
                error = %refusal,
                pod = %args.pod_name,
                namespace = %args.pod_namespace,
                node = %args.node,
                "bind refused"
            );
            state.metrics.extender_request_refused(verb, refusal.reason);
            state.metrics.record_attempt(AttemptResult::Error);
            refusal.message
        }
        Err(BindFailure::Failed(error)) => {
            tracing::warn!(%error, pod = %args.pod_name, namespace = %args.pod_namespace, "bind failed");
            state.metrics.record_attempt(AttemptResult::Error);
            error
        }
    };
    Json(ExtenderBindingResult { error }).into_response()
}

/// Why a bind did not happen: refused (the pod or node is not for us), or an
/// API call failed.
enum BindFailure {
    Refused(BindRefusal),
    Failed(String),
}

async fn bind_pod(state: &AppState, args: &ExtenderBindingArgs) -> Result<(), BindFailure> {
    // Always the API server's pod: the body's names are all we take from the caller.
    let pod = state
        .api
        .get_pod(&args.pod_namespace, &args.pod_name)
        .await
        .map_err(BindFailure::Failed)?
        .ok_or_else(|| {
            BindFailure::Refused(BindRefusal::new(
                ExtenderRefusal::PodNotFound,
                format!(
                    "pod {}/{} does not exist",
                    args.pod_namespace, args.pod_name
                ),
            ))
        })?;
    let plan = state
        .core
        .lock()
        .await
        .plan_bind(&pod, args)
        .map_err(BindFailure::Refused)?;
    let started = Instant::now();
    let result = state
        .api
        .bind(&plan.pod, &plan.node, plan.annotation.as_ref())
        .await;
    state.metrics.observe_binding(started.elapsed());
    let mut core = state.core.lock().await;
    match result {
        Ok(()) => {
            core.bind_written(&plan.pod.uid, phalanx_runtime::clock::unix_millis());
            Ok(())
        }
        Err(error) => {
            state.metrics.binding_error(error.reason());
            core.mirror_mut().state_mut().forget_assumed(&plan.pod.uid);
            Err(BindFailure::Failed(error.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use axum::body::Body;
    use http::Request;
    use serde_json::{json, Value};
    use tower::ServiceExt;

    use super::*;
    use crate::controller::config::ExtenderConfig;
    use crate::extender::handlers::tests::{mirror, pod_json};
    use crate::extender::types::NodeList;
    use phalanx_engine::{build_policy, PolicyConfig, PolicyName, WorkloadSource};
    use phalanx_kube::mirror::ClusterMirror;

    #[derive(Default)]
    struct FakeApi {
        pods: Vec<Pod>,
        binds: StdMutex<Vec<(PodRef, String, Option<GpuAssignmentAnnotation>)>>,
        fail: bool,
        unreachable: bool,
    }

    impl ClusterApi for FakeApi {
        fn get_pod<'a>(
            &'a self,
            namespace: &'a str,
            name: &'a str,
        ) -> BoxFuture<'a, Result<Option<Pod>, String>> {
            let found = self.pods.iter().find(|p| {
                p.metadata.namespace.as_deref() == Some(namespace)
                    && p.metadata.name.as_deref() == Some(name)
            });
            let result = if self.unreachable {
                Err(format!(
                    "reading pod {namespace}/{name}: connection refused"
                ))
            } else {
                Ok(found.cloned())
            };
            Box::pin(async move { result })
        }

        fn bind<'a>(
            &'a self,
            pod: &'a PodRef,
            node: &'a str,
            gpus: Option<&'a GpuAssignmentAnnotation>,
        ) -> BoxFuture<'a, Result<(), BindError>> {
            Box::pin(async move {
                if self.fail {
                    return Err(BindError::Gone {
                        pod: pod.to_string(),
                    });
                }
                self.binds
                    .lock()
                    .unwrap()
                    .push((pod.clone(), node.to_owned(), gpus.cloned()));
                Ok(())
            })
        }
    }

    struct App {
        router: Router,
        core: Arc<Mutex<ExtenderCore>>,
        metrics: Arc<SchedulerMetrics>,
    }

    fn app_with(api: Arc<FakeApi>, mirror: ClusterMirror, max_request_bytes: usize) -> App {
        let policy = build_policy(
            PolicyName::BestFit,
            &PolicyConfig {
                seed: 0,
                workload: WorkloadSource::Online,
            },
        );
        let core = Arc::new(Mutex::new(ExtenderCore::with_mirror(
            mirror,
            policy,
            vec!["default-scheduler".to_owned()],
        )));
        let metrics = Arc::new(SchedulerMetrics::new());
        let router = router(core.clone(), api, metrics.clone(), max_request_bytes);
        App {
            router,
            core,
            metrics,
        }
    }

    fn app(api: Arc<FakeApi>) -> (Router, Arc<Mutex<ExtenderCore>>) {
        let app = app_with(
            api,
            mirror(&[("gpu-1", 8), ("gpu-2", 1)], &[]),
            ExtenderConfig::default().max_request_bytes(),
        );
        (app.router, app.core)
    }

    /// The value of the refusal counter for `verb` and `reason`.
    fn refused(metrics: &SchedulerMetrics, verb: &str, reason: &str) -> String {
        let series = format!(
            "phalanx_scheduler_extender_requests_refused_total{{verb=\"{verb}\",reason=\"{reason}\"}} "
        );
        let text = metrics.encode();
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .unwrap_or_else(|| panic!("no {series} in {text}"))
            .to_owned()
    }

    fn filter_body_pod() -> Pod {
        let body: Value = serde_json::from_str(FILTER_BODY).unwrap();
        serde_json::from_value(body["Pod"].clone()).unwrap()
    }

    async fn post(router: &Router, path: &str, body: String) -> (StatusCode, String) {
        let response = router
            .clone()
            .oneshot(
                Request::post(path)
                    .header("content-type", "application/json")
                    .header("content-length", body.len())
                    .body(Body::from(body))
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    /// ExtenderArgs exactly as kube-scheduler (Go `encoding/json`, no tags) sends
    /// it to an extender with `nodeCacheCapable: false`: informer objects without
    /// kind/apiVersion, `NodeNames` null.
    const FILTER_BODY: &str = r#"{
      "Pod": {
        "metadata": {"name": "train-0", "namespace": "ml", "uid": "6f1c2a7e-0000-4000-8000-000000000001",
                     "resourceVersion": "4711", "creationTimestamp": "2025-01-01T00:00:00Z"},
        "spec": {
          "containers": [{"name": "main", "image": "cuda:12",
            "resources": {"limits": {"nvidia.com/gpu": "2"}, "requests": {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "2"}}}],
          "restartPolicy": "Always", "schedulerName": "default-scheduler", "priority": 0
        },
        "status": {"phase": "Pending", "qosClass": "Burstable"}
      },
      "Nodes": {
        "metadata": {},
        "items": [
          {"metadata": {"name": "gpu-1", "labels": {"kubernetes.io/hostname": "gpu-1"}},
           "spec": {},
           "status": {"capacity": {"cpu": "32", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": "8"},
                      "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": "8"}}},
          {"metadata": {"name": "gpu-2", "labels": {"kubernetes.io/hostname": "gpu-2"}},
           "spec": {},
           "status": {"capacity": {"cpu": "32", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": "1"},
                      "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": "1"}}}
        ]
      },
      "NodeNames": null
    }"#;

    #[tokio::test]
    async fn filter_prioritize_and_bind_in_kube_schedulers_shapes() {
        let api = Arc::new(FakeApi {
            pods: vec![filter_body_pod()],
            ..FakeApi::default()
        });
        let (router, core) = app(api.clone());

        let (status, body) = post(&router, "/filter", FILTER_BODY.to_owned()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let result: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(result["Error"], "");
        assert_eq!(result["NodeNames"], Value::Null);
        assert_eq!(result["Nodes"]["items"][0]["metadata"]["name"], "gpu-1");
        assert_eq!(result["Nodes"]["items"].as_array().unwrap().len(), 1);
        assert_eq!(
            result["FailedNodes"],
            json!({"gpu-2": "Insufficient nvidia.com/gpu"})
        );
        assert_eq!(result["FailedAndUnresolvableNodes"], json!({}));

        let (status, body) = post(&router, "/prioritize", FILTER_BODY.to_owned()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!([{"Host": "gpu-1", "Score": 10}, {"Host": "gpu-2", "Score": 0}])
        );

        // ExtenderBindingArgs as kube-scheduler sends it.
        let bind_body = r#"{"PodName": "train-0", "PodNamespace": "ml",
            "PodUID": "6f1c2a7e-0000-4000-8000-000000000001", "Node": "gpu-1"}"#;
        let (status, body) = post(&router, "/bind", bind_body.to_owned()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({"Error": ""})
        );
        let binds = api.binds.lock().unwrap().clone();
        assert_eq!(binds.len(), 1);
        let (pod, node, gpus) = &binds[0];
        assert_eq!(
            (pod.to_string(), node.as_str()),
            ("ml/train-0".to_owned(), "gpu-1")
        );
        assert_eq!(gpus.as_ref().unwrap().gpus.len(), 2);
        assert!(core
            .lock()
            .await
            .mirror()
            .state()
            .is_assumed("6f1c2a7e-0000-4000-8000-000000000001"));
    }

    #[tokio::test]
    async fn bind_reads_the_pod_and_forgets_failed_bindings() {
        let unseen: Pod =
            serde_json::from_value(pod_json("late", "u-late", json!({"nvidia.com/gpu": "1"})))
                .unwrap();
        let api = Arc::new(FakeApi {
            pods: vec![unseen],
            fail: true,
            ..FakeApi::default()
        });
        let (router, core) = app(api);
        let body = r#"{"PodName":"late","PodNamespace":"ml","PodUID":"u-late","Node":"gpu-2"}"#;
        let (status, body) = post(&router, "/bind", body.to_owned()).await;
        assert_eq!(status, StatusCode::OK);
        let result: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(result["Error"], "pod ml/late no longer exists");
        assert!(!core.lock().await.mirror().state().holds("u-late"));
        assert_eq!(core.lock().await.assumed_waiting(), 0);

        let api = Arc::new(FakeApi {
            unreachable: true,
            ..FakeApi::default()
        });
        let (router, _) = app(api);
        let (_, body) = post(
            &router,
            "/bind",
            r#"{"PodName":"late","PodNamespace":"ml","PodUID":"u-late","Node":"gpu-2"}"#.to_owned(),
        )
        .await;
        let result: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(result["Error"], "reading pod ml/late: connection refused");
    }

    /// Every refusal reaches kube-scheduler as `Error`, is counted by reason,
    /// and writes no Binding.
    #[tokio::test]
    async fn bind_refuses_pods_not_meant_for_it_and_counts_why() {
        let pod = |name: &str, uid: &str, requests: Value| -> Pod {
            serde_json::from_value(pod_json(name, uid, requests)).unwrap()
        };
        let mut other_scheduler = pod("other", "u-other", json!({"nvidia.com/gpu": "1"}));
        other_scheduler.spec.as_mut().unwrap().scheduler_name = Some("phalanx".into());
        let mut bound = pod("bound", "u-bound", json!({"nvidia.com/gpu": "1"}));
        bound.spec.as_mut().unwrap().node_name = Some("gpu-2".into());
        let api = Arc::new(FakeApi {
            pods: vec![
                other_scheduler,
                bound,
                pod("cpu", "u-cpu", json!({"cpu": "1"})),
                pod("ok", "u-ok", json!({"nvidia.com/gpu": "1"})),
                pod("big", "u-big", json!({"nvidia.com/gpu": "4"})),
            ],
            ..FakeApi::default()
        });
        let app = app_with(
            api.clone(),
            mirror(&[("gpu-1", 8), ("gpu-2", 1)], &[]),
            1 << 20,
        );
        let cases = [
            (
                "forged",
                "u-forged",
                "gpu-1",
                "pod_not_found",
                "pod ml/forged does not exist",
            ),
            (
                "ok",
                "u-stale",
                "gpu-1",
                "uid_mismatch",
                "the pod was replaced",
            ),
            (
                "bound",
                "u-bound",
                "gpu-1",
                "already_bound",
                "already bound to node gpu-2",
            ),
            (
                "other",
                "u-other",
                "gpu-1",
                "other_scheduler",
                "spec.schedulerName \"phalanx\"",
            ),
            (
                "cpu",
                "u-cpu",
                "gpu-1",
                "no_managed_resource",
                "requests neither",
            ),
            (
                "big",
                "u-big",
                "gpu-2",
                "node_refused",
                "Insufficient nvidia.com/gpu",
            ),
            (
                "ok",
                "u-ok",
                "nowhere",
                "node_refused",
                "not known to phalanx",
            ),
        ];
        for (name, uid, node, reason, text) in cases {
            let before: u64 = refused(&app.metrics, "bind", reason).parse().unwrap();
            let body = json!({"PodName": name, "PodNamespace": "ml", "PodUID": uid, "Node": node});
            let (status, body) = post(&app.router, "/bind", body.to_string()).await;
            assert_eq!(status, StatusCode::OK, "{name}: {body}");
            let error = serde_json::from_str::<Value>(&body).unwrap()["Error"]
                .as_str()
                .unwrap()
                .to_owned();
            assert!(error.contains(text), "{name}: {error}");
            let after: u64 = refused(&app.metrics, "bind", reason).parse().unwrap();
            assert_eq!(after, before + 1, "{name}: {reason} counted");
            assert!(!app.core.lock().await.mirror().state().holds(uid), "{name}");
        }
        assert!(api.binds.lock().unwrap().is_empty(), "no Binding written");
    }

    /// A filter body describing a pod that does not exist does not make /bind
    /// bind it: bind reads the pod from the API server.
    #[tokio::test]
    async fn a_forged_filter_body_does_not_open_bind() {
        let api = Arc::new(FakeApi::default());
        let (router, core) = app(api.clone());
        let (status, _) = post(&router, "/filter", FILTER_BODY.to_owned()).await;
        assert_eq!(status, StatusCode::OK);
        let bind_body = r#"{"PodName": "train-0", "PodNamespace": "ml",
            "PodUID": "6f1c2a7e-0000-4000-8000-000000000001", "Node": "gpu-1"}"#;
        let (_, body) = post(&router, "/bind", bind_body.to_owned()).await;
        let result: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(result["Error"], "pod ml/train-0 does not exist");
        assert!(api.binds.lock().unwrap().is_empty());
        assert_eq!(
            core.lock().await.recent_pods(),
            0,
            "bodies are not remembered"
        );
    }

    #[tokio::test]
    async fn bodies_above_the_limit_are_413_logged_and_counted() {
        let app = app_with(
            Arc::new(FakeApi::default()),
            mirror(&[("gpu-1", 8)], &[]),
            64 * 1024,
        );
        // A names-only body of 20,000 nodes is about 300 KB.
        let names: Vec<String> = (0..20_000).map(|i| format!("node-{i:05}")).collect();
        let mut args: Value = serde_json::from_str(FILTER_BODY).unwrap();
        args["Nodes"] = Value::Null;
        args["NodeNames"] = json!(names);
        let big = args.to_string();
        for (path, verb) in [
            ("/filter", "filter"),
            ("/prioritize", "prioritize"),
            ("/bind", "bind"),
        ] {
            let (status, text) = post(&app.router, path, big.clone()).await;
            assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{path}: {text}");
            assert_eq!(
                text,
                format!(
                    "{verb}: the body ({} bytes) is larger than extender.maxRequestBytes (65536 bytes)",
                    big.len()
                )
            );
            assert_eq!(refused(&app.metrics, verb, "too_large"), "1", "{path}");
        }
        // Without a Content-Length (chunked) the limit still holds.
        let response = app
            .router
            .clone()
            .oneshot(
                Request::post("/filter")
                    .header("content-type", "application/json")
                    .body(Body::from_stream(futures::stream::iter(
                        big.into_bytes()
                            .chunks(8192)
                            .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c)))
                            .collect::<Vec<_>>(),
                    )))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(refused(&app.metrics, "filter", "too_large"), "2");
        // Just under the limit is served.
        let small = {
            let mut args: Value = serde_json::from_str(FILTER_BODY).unwrap();
            args["Nodes"] = Value::Null;
            args["NodeNames"] = json!(["gpu-1"]);
            args.to_string()
        };
        let (status, _) = post(&app.router, "/filter", small).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn malformed_bodies_are_400_with_a_clear_message() {
        let app = app_with(
            Arc::new(FakeApi::default()),
            mirror(&[("gpu-1", 8)], &[]),
            1 << 20,
        );
        let router = &app.router;
        for (path, body, what) in [
            ("/filter", "{not json", "ExtenderArgs"),
            ("/filter", r#"{"Nodes": null}"#, "ExtenderArgs"),
            ("/prioritize", r#"{"Pod": 7}"#, "ExtenderArgs"),
            ("/bind", r#"{"PodName": "x"}"#, "ExtenderBindingArgs"),
            ("/bind", "", "ExtenderBindingArgs"),
        ] {
            let (status, text) = post(router, path, body.to_owned()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body}: {text}");
            let verb = &path[1..];
            assert!(
                text.starts_with(&format!("{verb}: the body is not a valid {what}")),
                "{text}"
            );
        }
        assert_eq!(refused(&app.metrics, "filter", "malformed"), "2");
        assert_eq!(refused(&app.metrics, "bind", "malformed"), "2");
        let (status, _) = post(
            router,
            "/filter",
            "{\"Pod\": {}, \"NodeNames\": [\"gpu-1\"]}".into(),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "an empty pod is JSON kube could send; it is judged, not rejected"
        );
    }

    /// A Node as kubelet reports it on a GPU node (GPU feature discovery
    /// labels, managedFields, conditions, the 50 images kubelet lists).
    const KUBELET_NODE: &str = include_str!("../../tests/data/kubelet-gpu-node.json");

    /// `n` copies of [`KUBELET_NODE`] named `gpu-node-00000`…, each as Go's
    /// compact JSON, and a synced mirror that knows them.
    fn realistic_cluster(n: usize) -> (Vec<String>, ClusterMirror) {
        use kube::runtime::watcher::Event;
        let template: Value = serde_json::from_str(KUBELET_NODE).unwrap();
        let mut mirror = ClusterMirror::new(60_000);
        mirror.node_event(Event::Init, 0);
        mirror.gpu_node_event(Event::Init, 0);
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let name = format!("gpu-node-{i:05}");
            let mut node = template.clone();
            node["metadata"]["name"] = name.clone().into();
            node["metadata"]["labels"]["kubernetes.io/hostname"] = name.into();
            nodes.push(node.to_string());
            let change =
                mirror.node_event(Event::InitApply(serde_json::from_value(node).unwrap()), 0);
            assert!(change.errors.is_empty(), "{:?}", change.errors);
        }
        mirror.node_event(Event::InitDone, 0);
        mirror.gpu_node_event(Event::InitDone, 0);
        mirror.pod_event(&Event::Init);
        mirror.pod_event(&Event::InitDone);
        assert!(mirror.synced());
        (nodes, mirror)
    }

    /// ExtenderArgs for a one-GPU pod that tolerates the GPU taint: whole
    /// Nodes (`nodeCacheCapable: false`) or names only.
    fn args_body(nodes: &[String], whole_nodes: bool) -> String {
        let pod = json!({
            "metadata": {"name": "train-0", "namespace": "ml", "uid": "u-train-0"},
            "spec": {"schedulerName": "default-scheduler",
                     "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                     "containers": [{"name": "main", "image": "cuda",
                         "resources": {"requests": {"cpu": "4", "memory": "32Gi", "nvidia.com/gpu": "1"},
                                       "limits": {"nvidia.com/gpu": "1"}}}]}
        });
        if whole_nodes {
            format!(
                r#"{{"Pod":{pod},"Nodes":{{"metadata":{{}},"items":[{}]}},"NodeNames":null}}"#,
                nodes.join(",")
            )
        } else {
            let names: Vec<String> = (0..nodes.len())
                .map(|i| format!("gpu-node-{i:05}"))
                .collect();
            json!({"Pod": pod, "Nodes": null, "NodeNames": names}).to_string()
        }
    }

    /// An ExtenderFilterResult read back by node name: a 100 MB answer parsed
    /// into whole Nodes is slow unoptimised.
    #[derive(Debug, serde::Deserialize)]
    struct FilterAnswer {
        #[serde(rename = "Nodes")]
        nodes: Option<NodeList<NodeName>>,
        #[serde(rename = "NodeNames")]
        node_names: Option<Vec<String>>,
        #[serde(rename = "Error")]
        error: String,
    }

    /// The size the default `extender.maxRequestBytes` is sized for: 5,000
    /// kubelet-reported Nodes pass filter and prioritize in both forms.
    #[tokio::test]
    async fn five_thousand_kubelet_nodes_are_filtered_and_prioritized() {
        let (nodes, mirror) = realistic_cluster(5_000);
        let app = app_with(
            Arc::new(FakeApi::default()),
            mirror,
            ExtenderConfig::default().max_request_bytes(),
        );
        for whole_nodes in [true, false] {
            let body = args_body(&nodes, whole_nodes);
            let (status, text) = post(&app.router, "/filter", body.clone()).await;
            assert_eq!(status, StatusCode::OK, "{}", &text[..text.len().min(300)]);
            let result: FilterAnswer = serde_json::from_str(&text).unwrap();
            assert_eq!(result.error, "");
            let passed = match (result.nodes, result.node_names) {
                (Some(nodes), None) if whole_nodes => nodes.items.len(),
                (None, Some(names)) if !whole_nodes => names.len(),
                other => panic!("answered in the wrong form: {other:?}"),
            };
            assert_eq!(passed, 5_000, "whole nodes: {whole_nodes}");
            let (status, text) = post(&app.router, "/prioritize", body).await;
            assert_eq!(status, StatusCode::OK);
            let scores: Vec<Value> = serde_json::from_str(&text).unwrap();
            assert_eq!(scores.len(), 5_000);
        }
        assert_eq!(refused(&app.metrics, "filter", "too_large"), "0");
    }

    /// Filter and prioritize latency through the router for 5,000 Nodes, whole
    /// and by name. A measurement, not a check; run it optimised:
    /// `cargo test --release -p phalanx-scheduler --lib -- --ignored --nocapture extender_latency`.
    #[tokio::test]
    #[ignore = "a measurement; run with --release --ignored --nocapture"]
    async fn extender_latency_for_5000_nodes() {
        const ROUNDS: usize = 10;
        let (nodes, mirror) = realistic_cluster(5_000);
        let app = app_with(
            Arc::new(FakeApi::default()),
            mirror,
            ExtenderConfig::default().max_request_bytes(),
        );
        println!("| body | bytes | verb | median ms | max ms |");
        println!("|---|---|---|---|---|");
        for whole_nodes in [true, false] {
            let body = args_body(&nodes, whole_nodes);
            for path in ["/filter", "/prioritize"] {
                let mut millis = Vec::with_capacity(ROUNDS);
                for _ in 0..ROUNDS {
                    let started = std::time::Instant::now();
                    let (status, _) = post(&app.router, path, body.clone()).await;
                    millis.push(started.elapsed().as_secs_f64() * 1e3);
                    assert_eq!(status, StatusCode::OK);
                }
                millis.sort_by(f64::total_cmp);
                println!(
                    "| {} | {} | {path} | {:.1} | {:.1} |",
                    if whole_nodes {
                        "5,000 Nodes"
                    } else {
                        "5,000 names"
                    },
                    body.len(),
                    millis[ROUNDS / 2],
                    millis[ROUNDS - 1]
                );
            }
        }
    }
}
