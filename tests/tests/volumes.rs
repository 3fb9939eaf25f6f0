//! Pods with PersistentVolumeClaims under Phalanx's scheduler, against a real
//! control plane whose kube-controller-manager runs the PV controller: a
//! WaitForFirstConsumer claim is pre-bound to the static PV on the node the
//! pod lands on (the PV's node affinity picks it), a pod whose claim does not
//! exist waits saying so and is placed once it appears, and a gang's members
//! get distinct PVs.
//!
//! Needs the control-plane binaries (tests/control-plane/ensure.sh) and
//! `cargo build -p phalanx-scheduler`; without them each test prints
//! `skipped: <test>: <why>`, and with `PHALANX_E2E=1` it fails instead.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::PostParams;
use kube::Api;
use phalanx_api::{ANNOTATION_GANG_MIN_MEMBER, ANNOTATION_GANG_NAME, SCHEDULER_NAME};
use phalanx_e2e::nodes::LABEL_HOSTNAME;
use phalanx_e2e::phalanx::plane_with_scheduler;
use phalanx_e2e::wait::{self, wait_bound, wait_pod_bound, WithLogs};
use phalanx_e2e::{
    create_gpu_nodes, node_of, wait_fake_nodes_ready, ControlPlane, GpuNodeSpec, PhalanxOptions,
    PodBuilder,
};
use serde_json::json;

const NS: &str = "default";
const CLASS: &str = "local-wait";
const TIMEOUT: Duration = Duration::from_secs(90);

fn from<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).unwrap()
}

/// Three KWOK nodes (`vol-0`..`vol-2`), the local StorageClass, and Phalanx's
/// scheduler; `None` when the test is skipped.
async fn cluster(test: &str) -> anyhow::Result<Option<ControlPlane>> {
    let Some((mut plane, binary)) = plane_with_scheduler(test).await? else {
        return Ok(None);
    };
    let client = plane.client();
    create_gpu_nodes(&client, "vol", 3, &GpuNodeSpec::with_gpus(1, "A100")).await?;
    wait_fake_nodes_ready(&client, 3, Duration::from_secs(60)).await?;
    let classes: Api<StorageClass> = Api::all(client.clone());
    classes
        .create(
            &PostParams::default(),
            &from(json!({
                "metadata": {"name": CLASS},
                "provisioner": "kubernetes.io/no-provisioner",
                "volumeBindingMode": "WaitForFirstConsumer",
            })),
        )
        .await?;
    plane
        .start_phalanx_scheduler(&PhalanxOptions {
            binary: Some(binary),
            ..PhalanxOptions::default()
        })
        .await?;
    Ok(Some(plane))
}

/// A 1Gi local PV of the class, usable only from `node`.
async fn create_local_pv(client: &kube::Client, name: &str, node: &str) -> anyhow::Result<()> {
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let pv = from(json!({
        "metadata": {"name": name},
        "spec": {
            "storageClassName": CLASS,
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "local": {"path": format!("/mnt/{name}")},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": LABEL_HOSTNAME, "operator": "In", "values": [node]}
            ]}]}},
        },
    }));
    volumes.create(&PostParams::default(), &pv).await?;
    Ok(())
}

async fn create_claim(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), NS);
    let pvc = from(json!({
        "metadata": {"name": name},
        "spec": {
            "storageClassName": CLASS,
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }));
    claims.create(&PostParams::default(), &pvc).await?;
    Ok(())
}

fn plain_container() -> Container {
    Container {
        name: "main".into(),
        image: Some("busybox".into()),
        ..Container::default()
    }
}

fn pod_with_claim(name: &str, claim: &str) -> PodBuilder {
    PodBuilder::new(name, SCHEDULER_NAME, plain_container()).claim_volume("data", claim)
}

/// Waits until the claim is Bound to `volume` and the PV Bound to the claim.
async fn wait_claim_bound(client: &kube::Client, claim: &str, volume: &str) -> anyhow::Result<()> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), NS);
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    wait::until(
        &format!("claim {claim} and PV {volume} Bound to each other"),
        TIMEOUT,
        || async {
            let pvc = claims.get(claim).await?;
            let pv = volumes.get(volume).await?;
            let pvc_phase = pvc.status.as_ref().and_then(|s| s.phase.clone());
            let pvc_volume = pvc.spec.as_ref().and_then(|s| s.volume_name.clone());
            let pv_phase = pv.status.as_ref().and_then(|s| s.phase.clone());
            Ok(
                if pvc_phase.as_deref() == Some("Bound")
                    && pvc_volume.as_deref() == Some(volume)
                    && pv_phase.as_deref() == Some("Bound")
                {
                    Ok(())
                } else {
                    Err(format!(
                        "claim {pvc_phase:?} to {pvc_volume:?}, PV {pv_phase:?}"
                    ))
                },
            )
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_for_first_consumer_claim_takes_the_pod_to_its_local_pv() -> anyhow::Result<()> {
    let test = "a_wait_for_first_consumer_claim_takes_the_pod_to_its_local_pv";
    let Some(plane) = cluster(test).await? else {
        return Ok(());
    };
    let client = plane.client();
    create_local_pv(&client, "local-pv-1", "vol-1").await?;
    create_claim(&client, "data").await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    pods.create(
        &PostParams::default(),
        &pod_with_claim("app", "data").build(),
    )
    .await?;

    let pod = wait_pod_bound(&pods, "app", TIMEOUT)
        .await
        .with_logs(&plane)?;
    assert_eq!(
        node_of(&pod),
        Some("vol-1"),
        "the PV's node affinity decides"
    );
    wait_claim_bound(&client, "data", "local-pv-1")
        .await
        .with_logs(&plane)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_waits_for_its_missing_claim_and_binds_once_it_appears() -> anyhow::Result<()> {
    let test = "a_pod_waits_for_its_missing_claim_and_binds_once_it_appears";
    let Some(plane) = cluster(test).await? else {
        return Ok(());
    };
    let client = plane.client();
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    pods.create(
        &PostParams::default(),
        &pod_with_claim("orphan", "later").build(),
    )
    .await?;
    let message = wait::wait_not_scheduled(&client, NS, "orphan", "Unschedulable")
        .await
        .with_logs(&plane)?;
    assert_eq!(
        message,
        "0/3 nodes are available: persistentvolumeclaim \"later\" not found."
    );

    create_local_pv(&client, "local-pv-2", "vol-2").await?;
    create_claim(&client, "later").await?;
    let pod = wait_pod_bound(&pods, "orphan", TIMEOUT)
        .await
        .with_logs(&plane)?;
    assert_eq!(node_of(&pod), Some("vol-2"));
    wait_claim_bound(&client, "later", "local-pv-2")
        .await
        .with_logs(&plane)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gang_gets_one_pv_per_member_on_the_pvs_nodes() -> anyhow::Result<()> {
    let test = "a_gang_gets_one_pv_per_member_on_the_pvs_nodes";
    let Some(plane) = cluster(test).await? else {
        return Ok(());
    };
    let client = plane.client();
    create_local_pv(&client, "gang-pv-0", "vol-0").await?;
    create_local_pv(&client, "gang-pv-2", "vol-2").await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let mut names = Vec::new();
    for i in 0..2 {
        let (name, claim) = (format!("member-{i}"), format!("member-data-{i}"));
        create_claim(&client, &claim).await?;
        let pod = pod_with_claim(&name, &claim)
            .annotation(ANNOTATION_GANG_NAME, "volumes")
            .annotation(ANNOTATION_GANG_MIN_MEMBER, "2")
            .build();
        pods.create(&PostParams::default(), &pod).await?;
        names.push(name);
    }
    let bound = wait_bound(&pods, &names, TIMEOUT).await.with_logs(&plane)?;
    let nodes: HashSet<&str> = bound.iter().filter_map(node_of).collect();
    assert_eq!(
        nodes,
        HashSet::from(["vol-0", "vol-2"]),
        "one member per PV"
    );
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), NS);
    let mut by_node = BTreeMap::new();
    for pod in &bound {
        let name = pod.metadata.name.clone().unwrap();
        let claim = format!("member-data-{}", name.trim_start_matches("member-"));
        let volume = format!(
            "gang-pv-{}",
            node_of(pod).unwrap().trim_start_matches("vol-")
        );
        wait_claim_bound(&client, &claim, &volume)
            .await
            .with_logs(&plane)?;
        let pvc = claims.get(&claim).await?;
        by_node.insert(name, pvc.spec.and_then(|s| s.volume_name));
    }
    assert_eq!(by_node.len(), 2, "{by_node:?}");
    Ok(())
}
