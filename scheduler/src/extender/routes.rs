//! The HTTP side: `POST /filter`, `/prioritize` and `/bind` in kube-scheduler's
//! JSON shapes, on `extender.bindAddress`.
//!
//! Bodies are read as bytes and parsed here, so that a body that is not the
//! expected JSON (or comes without a content type) gets a 400 whose text names
//! the verb and the serde error, never a panic or axum's generic rejection.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use phalanx_api::GpuAssignmentAnnotation;
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;

use super::types::{ExtenderArgs, ExtenderBindingArgs, ExtenderBindingResult};
use super::ExtenderCore;
use crate::controller::binder::{BindError, Binder, PodRef};
use crate::controller::metrics::{AttemptResult, SchedulerMetrics};

/// The API calls bind makes, behind a trait so that the routes can be tested
/// without an API server.
pub trait ClusterApi: Send + Sync {
    /// Reads a pod kube-scheduler asked to bind that no filter call showed us.
    fn get_pod<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Pod, String>>;

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
    ) -> BoxFuture<'a, Result<Pod, String>> {
        Box::pin(async move {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
            api.get(name)
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
}

/// `POST /filter`, `/prioritize` and `/bind`.
pub fn router(
    core: Arc<Mutex<ExtenderCore>>,
    api: Arc<dyn ClusterApi>,
    metrics: Arc<SchedulerMetrics>,
) -> Router {
    Router::new()
        .route("/filter", post(filter))
        .route("/prioritize", post(prioritize))
        .route("/bind", post(bind))
        .with_state(AppState { core, api, metrics })
}

/// The body as `T`, or the 400 text naming the verb and what is wrong.
fn parse<T: DeserializeOwned>(verb: &str, what: &str, body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|error| {
        format!("{verb}: the body is not a valid {what} (kube-scheduler extender v1 JSON): {error}")
    })
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, message).into_response()
}

async fn filter(State(state): State<AppState>, body: Bytes) -> Response {
    let args: ExtenderArgs = match parse("filter", "ExtenderArgs", &body) {
        Ok(args) => args,
        Err(message) => return bad_request(message),
    };
    let result = state.core.lock().await.filter(&args);
    if !result.error.is_empty() {
        state.metrics.record_attempt(AttemptResult::Error);
    } else if result.node_names.as_ref().is_some_and(Vec::is_empty)
        || result.nodes.as_ref().is_some_and(|n| n.items.is_empty())
    {
        state.metrics.record_attempt(AttemptResult::Unschedulable);
    }
    Json(result).into_response()
}

async fn prioritize(State(state): State<AppState>, body: Bytes) -> Response {
    let args: ExtenderArgs = match parse("prioritize", "ExtenderArgs", &body) {
        Ok(args) => args,
        Err(message) => return bad_request(message),
    };
    let result = state.core.lock().await.prioritize(&args);
    Json(result).into_response()
}

async fn bind(State(state): State<AppState>, body: Bytes) -> Response {
    let args: ExtenderBindingArgs = match parse("bind", "ExtenderBindingArgs", &body) {
        Ok(args) => args,
        Err(message) => return bad_request(message),
    };
    let error = match bind_pod(&state, &args).await {
        Ok(()) => {
            state.metrics.record_attempt(AttemptResult::Scheduled);
            String::new()
        }
        Err(error) => {
            tracing::warn!(%error, pod = %args.pod_name, namespace = %args.pod_namespace, "bind failed");
            state.metrics.record_attempt(AttemptResult::Error);
            error
        }
    };
    Json(ExtenderBindingResult { error }).into_response()
}

async fn bind_pod(state: &AppState, args: &ExtenderBindingArgs) -> Result<(), String> {
    let cached = state.core.lock().await.recent_pod(&args.pod_uid);
    let pod = match cached {
        Some(pod) => pod,
        None => {
            state
                .api
                .get_pod(&args.pod_namespace, &args.pod_name)
                .await?
        }
    };
    let plan = state.core.lock().await.plan_bind(&pod, args)?;
    let started = Instant::now();
    let result = state
        .api
        .bind(&plan.pod, &plan.node, plan.annotation.as_ref())
        .await;
    state.metrics.observe_binding(started.elapsed());
    match result {
        Ok(()) => Ok(()),
        Err(error) => {
            state.metrics.binding_error(error.reason());
            state
                .core
                .lock()
                .await
                .mirror_mut()
                .state_mut()
                .forget_assumed(&plan.pod.uid);
            Err(error.to_string())
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
    use crate::extender::handlers::tests::{mirror, pod_json};
    use phalanx_engine::{build_policy, PolicyConfig, PolicyName, WorkloadSource};

    #[derive(Default)]
    struct FakeApi {
        pods: Vec<Pod>,
        binds: StdMutex<Vec<(PodRef, String, Option<GpuAssignmentAnnotation>)>>,
        fail: bool,
    }

    impl ClusterApi for FakeApi {
        fn get_pod<'a>(
            &'a self,
            namespace: &'a str,
            name: &'a str,
        ) -> BoxFuture<'a, Result<Pod, String>> {
            let found = self.pods.iter().find(|p| {
                p.metadata.namespace.as_deref() == Some(namespace)
                    && p.metadata.name.as_deref() == Some(name)
            });
            let result = found
                .cloned()
                .ok_or_else(|| format!("pod {namespace}/{name} not found"));
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

    fn app(api: Arc<FakeApi>) -> (Router, Arc<Mutex<ExtenderCore>>) {
        let policy = build_policy(
            PolicyName::BestFit,
            &PolicyConfig {
                seed: 0,
                workload: WorkloadSource::Online,
            },
        );
        let core = Arc::new(Mutex::new(ExtenderCore::with_mirror(
            mirror(&[("gpu-1", 8), ("gpu-2", 1)], &[]),
            policy,
        )));
        let router = router(core.clone(), api, Arc::new(SchedulerMetrics::new()));
        (router, core)
    }

    async fn post(router: &Router, path: &str, body: String) -> (StatusCode, String) {
        let response = router
            .clone()
            .oneshot(
                Request::post(path)
                    .header("content-type", "application/json")
                    .body(Body::from(body))
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
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
        let api = Arc::new(FakeApi::default());
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
    async fn bind_reads_unknown_pods_and_forgets_failed_bindings() {
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

        let body = r#"{"PodName":"nobody","PodNamespace":"ml","PodUID":"u-x","Node":"gpu-2"}"#;
        let (_, body) = post(&router, "/bind", body.to_owned()).await;
        let result: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(result["Error"], "pod ml/nobody not found");
    }

    #[tokio::test]
    async fn malformed_bodies_are_400_with_a_clear_message() {
        let (router, _) = app(Arc::new(FakeApi::default()));
        for (path, body, what) in [
            ("/filter", "{not json", "ExtenderArgs"),
            ("/filter", r#"{"Nodes": null}"#, "ExtenderArgs"),
            ("/prioritize", r#"{"Pod": 7}"#, "ExtenderArgs"),
            ("/bind", r#"{"PodName": "x"}"#, "ExtenderBindingArgs"),
            ("/bind", "", "ExtenderBindingArgs"),
        ] {
            let (status, text) = post(&router, path, body.to_owned()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body}: {text}");
            let verb = &path[1..];
            assert!(
                text.starts_with(&format!("{verb}: the body is not a valid {what}")),
                "{text}"
            );
        }
        let (status, _) = post(
            &router,
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
}
