//! Fake GPU nodes for KWOK to simulate: Node objects with GPU capacity, the
//! Phalanx GPU resources and model label, annotated so KWOK takes them over.

use std::collections::BTreeMap;
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

/// The shape of one fake GPU node.
#[derive(Debug, Clone)]
pub struct GpuNodeSpec {
    /// Whole GPUs (`nvidia.com/gpu`); `phalanx.dev/gpu-milli` is 1000 per GPU.
    pub gpus: u32,
    /// Value of the `phalanx.dev/gpu-model` label.
    pub model: String,
    pub cpu_cores: u32,
    pub memory_gib: u32,
    pub max_pods: u32,
}

impl Default for GpuNodeSpec {
    fn default() -> Self {
        Self {
            gpus: 8,
            model: "A100".to_owned(),
            cpu_cores: 96,
            memory_gib: 1024,
            max_pods: 110,
        }
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
            labels: Some(BTreeMap::from([
                (FAKE_NODE_LABEL.to_owned(), "true".to_owned()),
                (LABEL_GPU_MODEL.to_owned(), spec.model.clone()),
                ("kubernetes.io/hostname".to_owned(), name.to_owned()),
                ("type".to_owned(), "kwok".to_owned()),
            ])),
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
