//! A device plugin writes only its own node's `GpuNode` and reads only its
//! node's pods, on a real API server (v1.37) with the chart's RBAC and
//! ValidatingAdmissionPolicy (rendered from the chart with Helm's engine and
//! applied as they are). The plugin's credentials are made as kubelet makes
//! them: a token of its ServiceAccount bound to its pod on node A, which
//! carries the node claim. With it the plugin's own publishing code creates
//! and updates GpuNode A; GpuNode B, a new GpuNode C, and GpuNode A claiming
//! node B are denied with the policy's message; a token bound to no pod is
//! denied for want of a node claim, and so is one bound to a pod on no node;
//! the plugin's pod lookup returns A's pods only.
//!
//! Needs the control-plane binaries and the Helm engine's virtualenv; without
//! them the test prints `skipped: <test>: <why>`, and with `PHALANX_E2E=1` it
//! fails instead.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{ObjectMeta, PostParams};
use kube::Api;
use phalanx_api::{GpuNode, GpuNodeSpec as GpuInventory, GpuNodeStatus};
use phalanx_device_plugin::pods::{ApiPodSource, PodSource};
use phalanx_device_plugin::telemetry::publisher::{ensure_gpu_node, write_status};
use phalanx_e2e::device_plugin::{client_for_plane, pod_bound_token, unbound_token};
use phalanx_e2e::helm::{server_apply, HelmTool, ServerCheck};
use phalanx_e2e::phalanx::ensure_namespace;
use phalanx_e2e::wait;
use phalanx_e2e::{create_gpu_nodes, install_phalanx_crds, Binaries, ControlPlane, GpuNodeSpec};

const RELEASE: &str = "phalanx";
const NAMESPACE: &str = "phalanx-system";
const ACCOUNT: &str = "phalanx-device-plugin";
/// The chart's objects this test installs: the plugin's identity, its RBAC
/// and the policy with its binding.
const KINDS: [&str; 5] = [
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
];

fn inventory(node: &str) -> GpuInventory {
    GpuInventory {
        node_name: node.to_owned(),
        driver_version: Some("fake".to_owned()),
        gpus: Vec::new(),
    }
}

fn status() -> GpuNodeStatus {
    serde_json::from_value(serde_json::json!({"gpus": []})).unwrap()
}

/// The API server's refusal, or a panic naming what was admitted instead.
fn refusal<T: std::fmt::Debug>(what: &str, result: Result<T, kube::Error>) -> (u16, String) {
    match result {
        Err(kube::Error::Api(status)) => (status.code, status.message),
        other => panic!("{what}: expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_plugin_writes_only_its_own_nodes_gpunode() -> anyhow::Result<()> {
    let test = "a_device_plugin_writes_only_its_own_nodes_gpunode";
    let Some(binaries) = Binaries::for_test(test) else {
        return Ok(());
    };
    let Some(helm) = HelmTool::for_test(test) else {
        return Ok(());
    };
    let plane = ControlPlane::start(binaries).await?;
    let admin = plane.client();
    install_phalanx_crds(&admin).await?;
    ensure_namespace(&admin, NAMESPACE).await?;
    let chart = helm.render(&serde_json::json!({}), RELEASE, NAMESPACE)?;
    let mut applied = Vec::new();
    for kind in KINDS {
        for object in chart
            .of_kind(kind)
            .into_iter()
            .filter(|o| o.name().starts_with("phalanx-device-plugin"))
        {
            let check = server_apply(&admin, &object.object, NAMESPACE, false).await?;
            assert_eq!(check, ServerCheck::Accepted, "{}", object.id());
            applied.push(object.id());
        }
    }
    assert_eq!(applied.len(), KINDS.len(), "{applied:?}");

    let nodes = create_gpu_nodes(&admin, "trust", 2, &GpuNodeSpec::with_gpus(2, "H100")).await?;
    let (a, b) = (nodes[0].as_str(), nodes[1].as_str());
    // GpuNode B exists already (B's own plugin made it).
    let gpu_nodes: Api<GpuNode> = Api::all(admin.clone());
    gpu_nodes
        .create(
            &PostParams::default(),
            &GpuNode {
                metadata: ObjectMeta {
                    name: Some(b.to_owned()),
                    ..ObjectMeta::default()
                },
                spec: inventory(b),
                status: None,
            },
        )
        .await?;

    // The plugin's pod on A and the token kubelet would mount into it.
    let token = pod_bound_token(&admin, NAMESPACE, ACCOUNT, "device-plugin-a", Some(a)).await?;
    let plugin = client_for_plane(&plane, Some(&token), None).await?;

    // The policy takes effect once the API server has loaded it: until then
    // the write to B would pass on RBAC alone.
    let (code, message) = wait::until(
        "the admission policy to deny a write to another node's GpuNode",
        Duration::from_secs(30),
        || async {
            Ok(match write_status(&plugin, b, &status()).await {
                Err(kube::Error::Api(s)) => Ok((s.code, s.message)),
                other => Err(format!("{other:?}")),
            })
        },
    )
    .await?;
    assert_eq!(code, 403, "{message}");
    assert!(
        message.contains(&format!(
            "the device plugin on node {a} may write only its own node's GpuNode, not GpuNode {b}"
        )),
        "{message}"
    );
    assert!(
        gpu_nodes.get(b).await?.status.is_none(),
        "B's status was written"
    );

    // Its own: created (owned by its Node) and its status written, by the
    // plugin's own publishing code.
    ensure_gpu_node(&plugin, a, &inventory(a)).await?;
    write_status(&plugin, a, &status()).await?;
    let own = gpu_nodes.get(a).await?;
    assert_eq!(own.spec.node_name, a);
    assert!(own.status.is_some(), "A's status not written");

    // A GpuNode for a node that has none yet, and A's GpuNode renamed to B
    // in its spec: both denied.
    let (code, message) = refusal(
        "creating GpuNode C",
        ensure_gpu_node(&plugin, "trust-c", &inventory("trust-c")).await,
    );
    assert_eq!(code, 403);
    assert!(message.contains("not GpuNode trust-c"), "{message}");
    let (code, message) = refusal(
        "A's GpuNode claiming node B",
        ensure_gpu_node(&plugin, a, &inventory(b)).await,
    );
    assert_eq!(code, 403);
    assert!(
        message.contains(&format!(
            "may not write a GpuNode whose spec.nodeName is {b}"
        )),
        "{message}"
    );
    assert_eq!(gpu_nodes.get(a).await?.spec.node_name, a);

    // A token of the same account bound to no pod carries no node claim.
    let loose = unbound_token(&admin, NAMESPACE, ACCOUNT).await?;
    let loose = client_for_plane(&plane, Some(&loose), None).await?;
    let (code, message) = refusal(
        "a write with a token bound to no pod",
        write_status(&loose, a, &status()).await,
    );
    assert_eq!(code, 403);
    assert!(message.contains("carries no node claim"), "{message}");

    // Nor does one bound to a pod that is on no node yet.
    let unplaced =
        pod_bound_token(&admin, NAMESPACE, ACCOUNT, "device-plugin-unplaced", None).await?;
    let unplaced = client_for_plane(&plane, Some(&unplaced), None).await?;
    let (code, message) = refusal(
        "a write with a token bound to a pod on no node",
        write_status(&unplaced, a, &status()).await,
    );
    assert_eq!(code, 403);
    assert!(message.contains("carries no node claim"), "{message}");

    // Reads: the plugin's pod lookup asks for its node's pods only (RBAC
    // alone would let it list them all; see deploy/device-plugin/README.md).
    let pods: Api<Pod> = Api::namespaced(admin.clone(), NAMESPACE);
    pod_bound_token(&admin, NAMESPACE, ACCOUNT, "device-plugin-b", Some(b)).await?;
    assert_eq!(pods.list(&Default::default()).await?.items.len(), 3);
    let seen = ApiPodSource::new(plugin.clone())
        .pods_on_node(a)
        .await
        .map_err(anyhow::Error::msg)?;
    let names: Vec<String> = seen
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert_eq!(names, vec!["device-plugin-a".to_owned()]);
    Ok(())
}
