//! kube-scheduler's extender API, `k8s.io/kube-scheduler/extender/v1`.
//!
//! The Go types carry no `json` tags, so `encoding/json` writes the Go field
//! names as they are (`Pod`, `NodeNames`, `FailedNodes`, `Host`, `Score` …).
//! We write exactly those names. Go reads keys case-insensitively; we accept the
//! exact names plus a lower-camel alias (`pod`, `nodeNames` …) for hand-written
//! clients. Go pointers and maps may arrive as `null` or be missing; both read as
//! "absent" here.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta;
use serde::{Deserialize, Deserializer, Serialize};

/// `MinExtenderPriority`.
pub const MIN_EXTENDER_PRIORITY: i64 = 0;
/// `MaxExtenderPriority`: kube-scheduler multiplies extender scores by
/// `MaxNodeScore / MaxExtenderPriority` (100 / 10) and then by the weight.
pub const MAX_EXTENDER_PRIORITY: i64 = 10;

/// `v1.NodeList` as kube-scheduler sends it (informer objects: no `kind` or
/// `apiVersion`). Only the items matter; the list metadata is passed through.
/// Items are whole [`Node`]s where they must be answered back (filter), and
/// [`NodeName`]s where only the names are read (prioritize).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "N: Deserialize<'de>"))]
pub struct NodeList<N = Node> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ListMeta>,
    #[serde(default = "Vec::new", deserialize_with = "null_as_default")]
    pub items: Vec<N>,
}

/// A candidate Node read for its name alone: every other field of a whole
/// Node (about 21 KB as kubelet reports it) is skipped while parsing, never
/// built into objects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeName {
    #[serde(default)]
    pub metadata: NodeNameMeta,
}

/// The one field of a Node's metadata that [`NodeName`] keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeNameMeta {
    #[serde(default)]
    pub name: Option<String>,
}

/// A candidate node in `ExtenderArgs.Nodes`, whole or by name.
pub trait CandidateNode {
    /// `metadata.name`, empty when missing.
    fn node_name(&self) -> &str;
}

impl CandidateNode for Node {
    fn node_name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }
}

impl CandidateNode for NodeName {
    fn node_name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }
}

/// `ExtenderArgs`: the body of the filter and prioritize calls.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExtenderArgs<N = Node> {
    /// The pod being scheduled.
    #[serde(rename = "Pod", alias = "pod")]
    pub pod: Pod,
    /// Candidate nodes; sent when the extender is not `nodeCacheCapable`.
    #[serde(rename = "Nodes", alias = "nodes", default = "Option::default")]
    pub nodes: Option<NodeList<N>>,
    /// Candidate node names; sent when the extender is `nodeCacheCapable`.
    #[serde(rename = "NodeNames", alias = "nodeNames", default)]
    pub node_names: Option<Vec<String>>,
}

/// `FailedNodesMap`: node name to failure message.
pub type FailedNodesMap = BTreeMap<String, String>;

/// `ExtenderFilterResult`: the answer to filter. The passing nodes come back in
/// the form they were asked in (`Nodes` or `NodeNames`); the other is `null`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExtenderFilterResult {
    #[serde(rename = "Nodes", alias = "nodes", default)]
    pub nodes: Option<NodeList>,
    #[serde(rename = "NodeNames", alias = "nodeNames", default)]
    pub node_names: Option<Vec<String>>,
    /// Nodes the pod does not fit now, where preemption could help.
    #[serde(
        rename = "FailedNodes",
        alias = "failedNodes",
        default,
        deserialize_with = "null_as_default"
    )]
    pub failed_nodes: FailedNodesMap,
    /// Nodes the pod cannot use whatever is preempted; they take precedence over
    /// `FailedNodes` in kube-scheduler.
    #[serde(
        rename = "FailedAndUnresolvableNodes",
        alias = "failedAndUnresolvableNodes",
        default,
        deserialize_with = "null_as_default"
    )]
    pub failed_and_unresolvable_nodes: FailedNodesMap,
    /// Non-empty when the call failed as a whole (kube-scheduler then fails the
    /// pod's scheduling attempt, unless the extender is `ignorable`).
    #[serde(
        rename = "Error",
        alias = "error",
        default,
        deserialize_with = "null_as_default"
    )]
    pub error: String,
}

impl ExtenderFilterResult {
    /// A whole-call failure.
    pub fn failure(message: impl Into<String>) -> Self {
        ExtenderFilterResult {
            error: message.into(),
            ..Self::default()
        }
    }
}

/// `HostPriority`: one node's score, `0..=MAX_EXTENDER_PRIORITY`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPriority {
    #[serde(rename = "Host", alias = "host")]
    pub host: String,
    #[serde(rename = "Score", alias = "score")]
    pub score: i64,
}

/// `HostPriorityList`: the answer to prioritize (a bare JSON array).
pub type HostPriorityList = Vec<HostPriority>;

/// `ExtenderBindingArgs`: the body of the bind call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtenderBindingArgs {
    #[serde(rename = "PodName", alias = "podName")]
    pub pod_name: String,
    #[serde(rename = "PodNamespace", alias = "podNamespace")]
    pub pod_namespace: String,
    #[serde(rename = "PodUID", alias = "podUID", alias = "podUid")]
    pub pod_uid: String,
    #[serde(rename = "Node", alias = "node")]
    pub node: String,
}

/// `ExtenderBindingResult`: empty `Error` on success.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtenderBindingResult {
    #[serde(
        rename = "Error",
        alias = "error",
        default,
        deserialize_with = "null_as_default"
    )]
    pub error: String,
}

/// Go writes a nil slice, map or pointer as `null`; read it as empty.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn field_names_are_the_go_names() {
        let result = ExtenderFilterResult {
            node_names: Some(vec!["n1".into()]),
            failed_nodes: [("n2".to_owned(), "Insufficient cpu".to_owned())].into(),
            ..ExtenderFilterResult::default()
        };
        assert_eq!(
            serde_json::to_value(&result).unwrap(),
            json!({
                "Nodes": null,
                "NodeNames": ["n1"],
                "FailedNodes": {"n2": "Insufficient cpu"},
                "FailedAndUnresolvableNodes": {},
                "Error": ""
            })
        );
        let priorities: HostPriorityList = vec![HostPriority {
            host: "n1".into(),
            score: 10,
        }];
        assert_eq!(
            serde_json::to_value(&priorities).unwrap(),
            json!([{"Host": "n1", "Score": 10}])
        );
        assert_eq!(
            serde_json::to_value(ExtenderBindingResult::default()).unwrap(),
            json!({"Error": ""})
        );
    }

    #[test]
    fn go_nulls_and_binding_args_read() {
        let args: ExtenderArgs = serde_json::from_value(json!({
            "Pod": {"metadata": {"name": "p", "namespace": "default"}},
            "Nodes": null,
            "NodeNames": ["a", "b"]
        }))
        .unwrap();
        assert!(args.nodes.is_none());
        assert_eq!(args.node_names.unwrap(), ["a", "b"]);
        let result: ExtenderFilterResult = serde_json::from_value(json!({
            "Nodes": {"metadata": {}, "items": null},
            "NodeNames": null,
            "FailedNodes": null,
            "FailedAndUnresolvableNodes": null,
            "Error": ""
        }))
        .unwrap();
        assert_eq!(result.nodes.unwrap().items.len(), 0);
        let bind: ExtenderBindingArgs = serde_json::from_value(json!({
            "PodName": "p", "PodNamespace": "ns", "PodUID": "u-1", "Node": "n1"
        }))
        .unwrap();
        assert_eq!(bind.pod_uid, "u-1");
    }

    #[test]
    fn prioritize_reads_whole_nodes_by_name_alone() {
        let node = include_str!("../../tests/data/kubelet-gpu-node.json");
        let args: ExtenderArgs<NodeName> = serde_json::from_str(&format!(
            r#"{{"Pod": {{"metadata": {{"name": "p"}}}}, "Nodes": {{"metadata": {{}}, "items": [{node}, {{}}]}}}}"#
        ))
        .unwrap();
        let items = args.nodes.unwrap().items;
        let names: Vec<&str> = items.iter().map(CandidateNode::node_name).collect();
        assert_eq!(names, ["gpu-node-0000", ""]);
        let whole: Node = serde_json::from_str(node).unwrap();
        assert_eq!(whole.node_name(), "gpu-node-0000");
        let args: ExtenderArgs<NodeName> =
            serde_json::from_value(json!({"Pod": {}, "Nodes": {"items": null}})).unwrap();
        assert!(args.nodes.unwrap().items.is_empty());
    }
}
