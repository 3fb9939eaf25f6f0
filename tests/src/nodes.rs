//! Fake GPU nodes for KWOK to simulate: Node objects with GPU capacity, the
//! Phalanx GPU resources and model label, any other labels a case needs
//! (zones, racks, GPU product names), annotated so KWOK takes them over.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, NodeStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::Api;
use phalanx_api::{LABEL_GPU_MODEL, MILLI_PER_GPU, RESOURCE_GPU_MILLI, RESOURCE_WHOLE_GPU};

use crate::cluster::{KWOK_NODE_ANNOTATION, KWOK_NODE_ANNOTATION_VALUE};
use crate::error::{HarnessError, Result};

/// Label on every node this module creates, to find them again.
pub const FAKE_NODE_LABEL: &str = "phalanx.dev/e2e-fake-node";

/// Requests in flight while creating nodes in bulk.
const CREATE_CONCURRENCY: usize = 32;

/// The zone label every cloud provider sets (`topology.kubernetes.io/zone`).
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";
/// The region label (`topology.kubernetes.io/region`).
pub const LABEL_REGION: &str = "topology.kubernetes.io/region";
/// The node's host name, set on every node to its name.
pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";

/// The shape of one fake GPU node.
///
/// ```
/// # use phalanx_e2e::nodes::{GpuNodeSpec, LABEL_ZONE};
/// let spec = GpuNodeSpec::with_gpus(4, "H100")
///     .label(LABEL_ZONE, "zone-a")
///     .label("example.com/rack", "r1");
/// assert_eq!(spec.labels.len(), 2);
/// ```
#[derive(Debug, Clone)]
pub struct GpuNodeSpec {
    /// Whole GPUs (`nvidia.com/gpu`); `phalanx.dev/gpu-milli` is 1000 per GPU.
    pub gpus: u32,
    /// Value of the `phalanx.dev/gpu-model` label.
    pub model: String,
    pub cpu_cores: u32,
    pub memory_gib: u32,
    pub max_pods: u32,
    /// More labels on the node. One for `phalanx.dev/gpu-model` replaces
    /// `model`; the harness's own (its marker, `kubernetes.io/hostname`,
    /// `type`) cannot be replaced.
    pub labels: BTreeMap<String, String>,
}

impl Default for GpuNodeSpec {
    fn default() -> Self {
        Self {
            gpus: 8,
            model: "A100".to_owned(),
            cpu_cores: 96,
            memory_gib: 1024,
            max_pods: 110,
            labels: BTreeMap::new(),
        }
    }
}

impl GpuNodeSpec {
    /// The default node with `gpus` GPUs of `model`.
    pub fn with_gpus(gpus: u32, model: &str) -> Self {
        Self {
            gpus,
            model: model.to_owned(),
            ..Self::default()
        }
    }

    /// Adds the label `key: value`.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Adds every label of `labels`.
    pub fn labels<K: Into<String>, V: Into<String>>(
        mut self,
        labels: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.labels
            .extend(labels.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }
}

/// The Node object for one fake GPU node named `name`.
pub fn fake_gpu_node(name: &str, spec: &GpuNodeSpec) -> Node {
    let resources: BTreeMap<String, Quantity> = [
        ("cpu".to_owned(), spec.cpu_cores.to_string()),
        ("memory".to_owned(), format!("{}Gi", spec.memory_gib)),
        ("pods".to_owned(), spec.max_pods.to_string()),
        (RESOURCE_WHOLE_GPU.to_owned(), spec.gpus.to_string()),
        (
            RESOURCE_GPU_MILLI.to_owned(),
            (u64::from(spec.gpus) * u64::from(MILLI_PER_GPU)).to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k, Quantity(v)))
    .collect();
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            annotations: Some(BTreeMap::from([(
                KWOK_NODE_ANNOTATION.to_owned(),
                KWOK_NODE_ANNOTATION_VALUE.to_owned(),
            )])),
            labels: Some(node_labels(name, spec)),
            ..ObjectMeta::default()
        },
        // The apiserver keeps the status given at creation, so capacity is
        // there before KWOK's first heartbeat.
        status: Some(NodeStatus {
            capacity: Some(resources.clone()),
            allocatable: Some(resources),
            ..NodeStatus::default()
        }),
        ..Node::default()
    }
}

/// The labels of the fake node `name`: the model, the spec's labels, then the
/// harness's own.
fn node_labels(name: &str, spec: &GpuNodeSpec) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([(LABEL_GPU_MODEL.to_owned(), spec.model.clone())]);
    labels.extend(spec.labels.clone());
    labels.extend([
        (FAKE_NODE_LABEL.to_owned(), "true".to_owned()),
        (LABEL_HOSTNAME.to_owned(), name.to_owned()),
        ("type".to_owned(), "kwok".to_owned()),
    ]);
    labels
}

/// Creates `count` nodes named `{prefix}-{i}` and returns their names.
pub async fn create_gpu_nodes(
    client: &kube::Client,
    prefix: &str,
    count: usize,
    spec: &GpuNodeSpec,
) -> Result<Vec<String>> {
    let api: Api<Node> = Api::all(client.clone());
    let names: Vec<String> = (0..count).map(|i| format!("{prefix}-{i}")).collect();
    futures::stream::iter(names.iter().map(|name| {
        let api = api.clone();
        let node = fake_gpu_node(name, spec);
        async move { api.create(&PostParams::default(), &node).await.map(|_| ()) }
    }))
    .buffer_unordered(CREATE_CONCURRENCY)
    .try_collect::<Vec<()>>()
    .await?;
    Ok(names)
}

/// Waits until at least `count` fake nodes report `Ready=True`.
pub async fn wait_fake_nodes_ready(
    client: &kube::Client,
    count: usize,
    timeout: Duration,
) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let params = ListParams::default().labels(&format!("{FAKE_NODE_LABEL}=true"));
    let deadline = Instant::now() + timeout;
    loop {
        let ready = api
            .list(&params)
            .await?
            .items
            .iter()
            .filter(|node| is_ready(node))
            .count();
        if ready >= count {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(HarnessError::Timeout {
                what: format!("{count} fake nodes Ready (only {ready} are)"),
                timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What the tests check placements against, read from the Node objects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFacts {
    /// Allocatable whole GPUs per node (0 for a node without any).
    pub gpus: HashMap<String, u32>,
    /// Every node's labels.
    pub labels: HashMap<String, BTreeMap<String, String>>,
}

impl NodeFacts {
    /// The value of label `key` on `node`.
    pub fn label(&self, node: &str, key: &str) -> Option<&str> {
        self.labels.get(node)?.get(key).map(String::as_str)
    }

    /// The node's `phalanx.dev/gpu-model` label.
    pub fn model(&self, node: &str) -> Option<&str> {
        self.label(node, LABEL_GPU_MODEL)
    }
}

/// GPUs and labels of every node.
pub async fn node_facts(client: &kube::Client) -> Result<NodeFacts> {
    let api: Api<Node> = Api::all(client.clone());
    let mut facts = NodeFacts::default();
    for node in api.list(&ListParams::default()).await?.items {
        let name = node.metadata.name.clone().unwrap_or_default();
        let gpus = node
            .status
            .as_ref()
            .and_then(|s| s.allocatable.as_ref())
            .and_then(|a| a.get(RESOURCE_WHOLE_GPU))
            .and_then(|q| q.0.parse::<u32>().ok())
            .unwrap_or(0);
        facts.gpus.insert(name.clone(), gpus);
        facts
            .labels
            .insert(name, node.metadata.labels.unwrap_or_default());
    }
    Ok(facts)
}

/// Whether a node's `Ready` condition is `True`.
pub fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conds| {
            conds
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_added_the_model_can_be_replaced_the_harness_labels_cannot() {
        let spec = GpuNodeSpec::with_gpus(4, "H100")
            .label(LABEL_ZONE, "zone-a")
            .labels([("example.com/rack", "r7"), (LABEL_HOSTNAME, "elsewhere")]);
        let node = fake_gpu_node("n1", &spec);
        let labels = node.metadata.labels.unwrap_or_default();
        let get = |key: &str| labels.get(key).map(String::as_str);
        assert_eq!(get(LABEL_ZONE), Some("zone-a"));
        assert_eq!(get("example.com/rack"), Some("r7"));
        assert_eq!(get(LABEL_GPU_MODEL), Some("H100"));
        assert_eq!(get(LABEL_HOSTNAME), Some("n1"), "the harness's label wins");
        assert_eq!(get(FAKE_NODE_LABEL), Some("true"));

        let relabelled = fake_gpu_node("n2", &spec.label(LABEL_GPU_MODEL, "H100-SXM"));
        let labels = relabelled.metadata.labels.unwrap_or_default();
        assert_eq!(
            labels.get(LABEL_GPU_MODEL).map(String::as_str),
            Some("H100-SXM")
        );
    }
}
