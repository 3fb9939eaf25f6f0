//! Which pod kubelet is admitting, so that its container gets the GPUs the
//! scheduler chose.
//!
//! Kubelet's device-plugin calls do not name the pod. The rule: among the pods
//! bound to this node that have not finished, take those with a container
//! asking for exactly the number of devices kubelet asks us to choose and which
//! does not hold devices of this resource yet according to kubelet's
//! PodResources API (when that API cannot be read, only `Pending` pods count);
//! the one bound first is the one: kubelet learns of pods as they are bound
//! to its node and admits them in that order. The binding time is the
//! `PodScheduled` condition's transition (whole seconds); ties, and pods
//! created with `spec.nodeName` (no such condition), go by creation time.
//! Its `phalanx.dev/gpu-assignment` annotation then steers the choice; without
//! one (another scheduler placed it), or with one naming another node (stale),
//! the topology-best set is used. A malformed annotation is an error.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::Api;
use phalanx_api::{AssignmentParseError, GpuAssignmentAnnotation, ANNOTATION_GPU_ASSIGNMENT};

use crate::proto::podresources::ListPodResourcesResponse;

/// `(namespace, pod, container, resource)` that already hold devices.
pub type AllocatedContainers = BTreeSet<(String, String, String, String)>;

/// The containers PodResources reports holding devices.
pub fn allocated_containers(resources: &ListPodResourcesResponse) -> AllocatedContainers {
    let mut out = AllocatedContainers::new();
    for pod in &resources.pod_resources {
        for container in &pod.containers {
            for devices in &container.devices {
                if !devices.device_ids.is_empty() {
                    out.insert((
                        pod.namespace.clone(),
                        pod.name.clone(),
                        container.name.clone(),
                        devices.resource_name.clone(),
                    ));
                }
            }
        }
    }
    out
}

/// A container's request for `resource` as a plain count: extended resources
/// are integers (`"500"`, or `"1k"`).
pub fn requested_count(quantity: &str) -> Option<u64> {
    let q = quantity.trim();
    let (digits, factor) = match q.strip_suffix('k') {
        Some(d) => (d, 1000),
        None => match q.strip_suffix('M') {
            Some(d) => (d, 1_000_000),
            None => (q, 1),
        },
    };
    digits.parse::<u64>().ok()?.checked_mul(factor)
}

fn container_request(
    container: &k8s_openapi::api::core::v1::Container,
    resource: &str,
) -> Option<u64> {
    let resources = container.resources.as_ref()?;
    resources
        .limits
        .as_ref()
        .and_then(|l| l.get(resource))
        .or_else(|| resources.requests.as_ref().and_then(|r| r.get(resource)))
        .and_then(|q| requested_count(&q.0))
}

/// The pod being admitted for a request of `size` devices of `resource`, by the
/// rule in this module's documentation.
pub fn identify_pod<'a>(
    pods: &'a [Pod],
    allocated: Option<&AllocatedContainers>,
    node: &str,
    resource: &str,
    size: u64,
) -> Option<&'a Pod> {
    let mut candidates: Vec<&Pod> = pods
        .iter()
        .filter(|pod| {
            let spec = pod.spec.as_ref();
            let on_node = spec.and_then(|s| s.node_name.as_deref()) == Some(node);
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            let waiting = match allocated {
                Some(_) => !matches!(phase, Some("Succeeded" | "Failed")),
                None => phase.is_none_or(|p| p == "Pending"),
            };
            let namespace = pod.metadata.namespace.clone().unwrap_or_default();
            let name = pod.metadata.name.clone().unwrap_or_default();
            let waiting_container = spec.is_some_and(|s| {
                s.init_containers
                    .iter()
                    .flatten()
                    .chain(s.containers.iter())
                    .any(|c| {
                        container_request(c, resource) == Some(size)
                            && !allocated.is_some_and(|a| {
                                a.contains(&(
                                    namespace.clone(),
                                    name.clone(),
                                    c.name.clone(),
                                    resource.to_owned(),
                                ))
                            })
                    })
            });
            on_node && waiting && pod.metadata.deletion_timestamp.is_none() && waiting_container
        })
        .collect();
    candidates.sort_by(|a, b| {
        let key = |p: &Pod| {
            let created = p.metadata.creation_timestamp.as_ref().map(|t| t.0);
            (
                bound_at(p).or(created),
                created,
                p.metadata.namespace.clone(),
                p.metadata.name.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
    candidates.first().copied()
}

/// When the pod was bound: its `PodScheduled=True` condition's transition.
fn bound_at(pod: &Pod) -> Option<k8s_openapi::jiff::Timestamp> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "True")?
        .last_transition_time
        .as_ref()
        .map(|t| t.0)
}

/// `namespace/name`.
pub fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The scheduler's assignment for this node: `None` without an annotation or
/// when it names another node (stale); an error when it is malformed.
pub fn assignment_for_node(
    pod: &Pod,
    node: &str,
) -> Result<Option<GpuAssignmentAnnotation>, PodAssignmentError> {
    let Some(raw) = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_GPU_ASSIGNMENT))
    else {
        return Ok(None);
    };
    let assignment = GpuAssignmentAnnotation::parse(raw).map_err(|source| PodAssignmentError {
        pod: pod_key(pod),
        source,
    })?;
    Ok((assignment.node == node).then_some(assignment))
}

#[derive(Debug, thiserror::Error)]
#[error("pod {pod}: {source}")]
pub struct PodAssignmentError {
    pub pod: String,
    #[source]
    pub source: AssignmentParseError,
}

type PodsFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<Pod>, String>> + Send + 'a>>;

/// Where the plugin learns the pods bound to its node.
pub trait PodSource: Send + Sync + std::fmt::Debug {
    fn pods_on_node<'a>(&'a self, node: &'a str) -> PodsFuture<'a>;
}

/// The API server: pods with `spec.nodeName` = this node.
#[derive(Clone)]
pub struct ApiPodSource {
    client: kube::Client,
}

impl std::fmt::Debug for ApiPodSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiPodSource")
    }
}

impl ApiPodSource {
    pub fn new(client: kube::Client) -> Self {
        ApiPodSource { client }
    }
}

impl PodSource for ApiPodSource {
    fn pods_on_node<'a>(&'a self, node: &'a str) -> PodsFuture<'a> {
        Box::pin(async move {
            let api: Api<Pod> = Api::all(self.client.clone());
            let params = ListParams::default().fields(&format!("spec.nodeName={node}"));
            api.list(&params)
                .await
                .map(|list| list.items)
                .map_err(|e| format!("listing pods on node {node}: {e}"))
        })
    }
}

/// A list held in memory: for nodes without API access (always topology-best)
/// and for tests that play the API server's part, an unreachable one included.
#[derive(Debug, Clone, Default)]
pub struct StaticPodSource {
    pods: Arc<Mutex<Vec<Pod>>>,
    /// While set, every read fails with this error.
    unreachable: Arc<Mutex<Option<String>>>,
    /// Reads so far, failed ones included.
    reads: Arc<std::sync::atomic::AtomicUsize>,
}

impl StaticPodSource {
    pub fn set(&self, pods: Vec<Pod>) {
        *self.pods.lock().unwrap_or_else(|p| p.into_inner()) = pods;
    }

    /// Every read fails with `why` until this is called with `None`.
    pub fn set_unreachable(&self, why: Option<&str>) {
        *self.unreachable.lock().unwrap_or_else(|p| p.into_inner()) = why.map(str::to_owned);
    }

    /// How many times the pods were read, failed reads included.
    pub fn reads(&self) -> usize {
        self.reads.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl PodSource for StaticPodSource {
    fn pods_on_node<'a>(&'a self, _node: &'a str) -> PodsFuture<'a> {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let failure = self
            .unreachable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let pods = self.pods.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Box::pin(async move {
            match failure {
                Some(why) => Err(why),
                None => Ok(pods),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(name: &str, created: &str, milli: &str, annotation: Option<&str>, phase: &str) -> Pod {
        let mut annotations = serde_json::Map::new();
        if let Some(a) = annotation {
            annotations.insert(ANNOTATION_GPU_ASSIGNMENT.into(), a.into());
        }
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ml", "creationTimestamp": created,
                         "annotations": annotations},
            "spec": {"nodeName": "n1", "containers": [
                {"name": "main", "resources": {"limits": {"phalanx.dev/gpu-milli": milli}}}]},
            "status": {"phase": phase}
        }))
        .unwrap()
    }

    #[test]
    fn oldest_pending_pod_with_a_matching_unallocated_container() {
        let pods = vec![
            pod("newer", "2026-01-01T00:00:05Z", "300", None, "Pending"),
            pod("older", "2026-01-01T00:00:01Z", "300", None, "Pending"),
            pod("running", "2026-01-01T00:00:00Z", "300", None, "Running"),
            pod("other-size", "2026-01-01T00:00:00Z", "500", None, "Pending"),
        ];
        // Without PodResources: only Pending pods, oldest first.
        let got = identify_pod(&pods, None, "n1", "phalanx.dev/gpu-milli", 300).unwrap();
        assert_eq!(pod_key(got), "ml/older");
        // With it: a Running pod whose container holds nothing yet counts too
        // (simulated kubelets mark pods Running at once), allocated ones do not.
        let mut allocated = AllocatedContainers::new();
        let got =
            identify_pod(&pods, Some(&allocated), "n1", "phalanx.dev/gpu-milli", 300).unwrap();
        assert_eq!(pod_key(got), "ml/running");
        allocated.insert((
            "ml".into(),
            "running".into(),
            "main".into(),
            "phalanx.dev/gpu-milli".into(),
        ));
        allocated.insert((
            "ml".into(),
            "older".into(),
            "main".into(),
            "phalanx.dev/gpu-milli".into(),
        ));
        let got =
            identify_pod(&pods, Some(&allocated), "n1", "phalanx.dev/gpu-milli", 300).unwrap();
        assert_eq!(pod_key(got), "ml/newer");
        assert!(identify_pod(&pods, None, "n2", "phalanx.dev/gpu-milli", 300).is_none());
        assert!(identify_pod(&pods, None, "n1", "phalanx.dev/gpu-milli", 700).is_none());
        assert_eq!(requested_count("1k"), Some(1000));
        assert_eq!(requested_count("0.5"), None);
    }

    #[test]
    fn the_pod_bound_first_is_admitted_first_whatever_its_age() {
        let scheduled = |mut p: Pod, at: &str| {
            p.status = Some(
                serde_json::from_value(json!({"phase": "Pending", "conditions": [
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": at}]}))
                .unwrap(),
            );
            p
        };
        // "waited" was created first but bound only after "quick" was.
        let waited = scheduled(
            pod("waited", "2026-01-01T00:00:00Z", "300", None, "Pending"),
            "2026-01-01T00:01:00Z",
        );
        let quick = scheduled(
            pod("quick", "2026-01-01T00:00:30Z", "300", None, "Pending"),
            "2026-01-01T00:00:31Z",
        );
        // Created with spec.nodeName: no condition, bound when created.
        let direct = pod("direct", "2026-01-01T00:00:40Z", "300", None, "Pending");
        let pods = vec![waited.clone(), quick.clone(), direct];
        let got = identify_pod(&pods, None, "n1", "phalanx.dev/gpu-milli", 300).unwrap();
        assert_eq!(pod_key(got), "ml/quick");
        let pods = vec![waited, pods[2].clone()];
        let got = identify_pod(&pods, None, "n1", "phalanx.dev/gpu-milli", 300).unwrap();
        assert_eq!(pod_key(got), "ml/direct");
        // Bound in the same second: the older first.
        let twin = scheduled(
            pod("twin", "2026-01-01T00:00:20Z", "300", None, "Pending"),
            "2026-01-01T00:00:31Z",
        );
        let pods = [quick, twin];
        let got = identify_pod(&pods, None, "n1", "phalanx.dev/gpu-milli", 300).unwrap();
        assert_eq!(pod_key(got), "ml/twin");
    }

    #[test]
    fn annotations_for_this_node_others_ignored_garbage_refused() {
        let good = r#"{"node":"n1","gpus":[{"index":1,"milli":300}]}"#;
        let p = pod("p", "2026-01-01T00:00:00Z", "300", Some(good), "Pending");
        assert_eq!(
            assignment_for_node(&p, "n1").unwrap().unwrap().gpus[0].index,
            1
        );
        assert!(
            assignment_for_node(&p, "n2").unwrap().is_none(),
            "stale: another node"
        );
        let p = pod("p", "2026-01-01T00:00:00Z", "300", None, "Pending");
        assert!(assignment_for_node(&p, "n1").unwrap().is_none());
        let p = pod(
            "bad",
            "2026-01-01T00:00:00Z",
            "300",
            Some("{gpus: 1"),
            "Pending",
        );
        let err = assignment_for_node(&p, "n1").unwrap_err().to_string();
        assert!(
            err.contains("ml/bad") && err.contains("phalanx.dev/gpu-assignment"),
            "{err}"
        );
    }
}
