//! The pod spec end to end: fields Phalanx does not honour are refused by name
//! (FailedScheduling and `PodScheduled=False` say which), pod-level resources
//! count as kube-scheduler counts them, and host ports keep two pods asking for
//! the same one off a node, in kube-scheduler's words.
//!
//! Needs the control-plane binaries (tests/control-plane/ensure.sh) and
//! `cargo build -p phalanx-scheduler`; without them each test prints
//! `skipped: <test>: <why>`, and with `PHALANX_E2E=1` it fails instead.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, Pod, PodResourceClaim, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::Api;
use phalanx_api::SCHEDULER_NAME;
use phalanx_e2e::phalanx::plane_with_scheduler_and;
use phalanx_e2e::wait::{stays_pending, wait_not_scheduled, wait_pod_bound, WithLogs};
use phalanx_e2e::{
    create_gpu_nodes, create_pods, node_of, wait_fake_nodes_ready, ControlPlaneOptions,
    GpuNodeSpec, PhalanxOptions, PodBuilder, PodSelector,
};

const NS: &str = "default";

/// A container that opens `host_port` (TCP, all addresses) on its node.
fn web_container(host_port: i32) -> Container {
    Container {
        name: "web".to_owned(),
        image: Some("example.invalid/web:1".to_owned()),
        ports: Some(vec![ContainerPort {
            container_port: 80,
            host_port: Some(host_port),
            ..ContainerPort::default()
        }]),
        ..Container::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_fields_are_refused_and_host_ports_are_exclusive() -> anyhow::Result<()> {
    let test = "unsupported_fields_are_refused_and_host_ports_are_exclusive";
    // Pod-level resources are beta and on by default since 1.34, and dynamic
    // resource allocation is GA: the API server keeps both fields.
    let Some((mut plane, binary)) =
        plane_with_scheduler_and(test, ControlPlaneOptions::default()).await?
    else {
        return Ok(());
    };
    let client = plane.client();
    create_gpu_nodes(&client, "solo", 1, &GpuNodeSpec::with_gpus(1, "A100")).await?;
    wait_fake_nodes_ready(&client, 1, Duration::from_secs(60)).await?;
    plane
        .start_phalanx_scheduler(&PhalanxOptions {
            binary: Some(binary),
            ..PhalanxOptions::default()
        })
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);

    // A resource claim (dynamic resource allocation): refused, naming the
    // field, and never bound.
    let mut claims = PodBuilder::new("claims", SCHEDULER_NAME, web_container(0)).build();
    claims.spec.as_mut().unwrap().resource_claims = Some(vec![PodResourceClaim {
        name: "gpu".to_owned(),
        resource_claim_name: Some("some-claim".to_owned()),
        ..PodResourceClaim::default()
    }]);
    create_pods(&pods, vec![claims]).await?;
    let message = wait_not_scheduled(&client, NS, "claims", "Unschedulable")
        .await
        .with_logs(&plane)?;
    assert!(
        message.contains("spec.resourceClaims") && message.contains("not supported"),
        "{message}"
    );

    // Pod-level requests replace the containers' sum: 1,000 CPUs at pod level
    // fit no node, though the container asks for none.
    let mut pod_level = PodBuilder::new("pod-level", SCHEDULER_NAME, web_container(0)).build();
    pod_level.spec.as_mut().unwrap().resources = Some(ResourceRequirements {
        requests: Some(BTreeMap::from([(
            "cpu".to_owned(),
            Quantity("1000".to_owned()),
        )])),
        ..ResourceRequirements::default()
    });
    create_pods(&pods, vec![pod_level]).await?;
    let message = wait_not_scheduled(&client, NS, "pod-level", "Unschedulable")
        .await
        .with_logs(&plane)?;
    assert!(message.contains("Insufficient cpu"), "{message}");

    // Two pods on one host port, one node: one binds, the other waits and is
    // told why in kube-scheduler's words.
    create_pods(
        &pods,
        vec![PodBuilder::new("port-a", SCHEDULER_NAME, web_container(8080)).build()],
    )
    .await?;
    let first = wait_pod_bound(&pods, "port-a", Duration::from_secs(60))
        .await
        .with_logs(&plane)?;
    assert!(node_of(&first).is_some());
    create_pods(
        &pods,
        vec![PodBuilder::new("port-b", SCHEDULER_NAME, web_container(8080)).build()],
    )
    .await?;
    let message = wait_not_scheduled(&client, NS, "port-b", "Unschedulable")
        .await
        .with_logs(&plane)?;
    assert_eq!(
        message,
        "0/1 nodes are available: 1 node(s) didn't have free ports for the requested pod ports."
    );
    stays_pending(
        &pods,
        &PodSelector::names(&["port-b".to_owned(), "pod-level".to_owned()]),
        Duration::from_secs(3),
    )
    .await
    .with_logs(&plane)?;
    Ok(())
}
