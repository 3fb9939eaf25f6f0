//! KubeRay's real ray-operator (v1.5.0, built from its Go module) against the
//! test control plane: a RayCluster is created as a user writes one, the
//! operator creates its head and worker pods, and Phalanx places them all or
//! nothing although nobody wrote a PodGroup: the gang is derived from the
//! pods' owner (head + Σ worker minReplicas × numOfHosts).
//!
//! Needs the control-plane binaries and the operator
//! (tests/control-plane/ensure.sh, which runs build-operators.sh and
//! fetch-crds.sh) and `cargo build -p phalanx-scheduler`; without them the
//! test prints `skipped: <test>: <why>`, and with `PHALANX_E2E=1` it fails.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::scheduling::v1beta1::PodGroup as UpstreamPodGroup;
use kube::api::{ApiResource, DynamicObject, ListParams, PostParams};
use kube::core::GroupVersionKind;
use kube::{Api, ResourceExt};
use phalanx_api::{
    GangPlanAnnotation, PodGroup, ANNOTATION_GANG_PLAN, RESOURCE_WHOLE_GPU, SCHEDULER_NAME,
};
use phalanx_e2e::crds;
use phalanx_e2e::operators::RAY_OPERATOR;
use phalanx_e2e::phalanx::plane_with_scheduler;
use phalanx_e2e::wait::{
    self, namespace_ready_for_pods, stays_pending, wait_pods_exist, wait_selected_bound, WithLogs,
};
use phalanx_e2e::{
    assignment_violations, create_gpu_nodes, gpu_request, node_facts, node_of, pod_events,
    wait_fake_nodes_ready, GpuNodeSpec, PhalanxOptions, PodSelector,
};

const NS: &str = "ray";

/// The label KubeRay puts on every pod of a RayCluster, naming it.
const LABEL_RAY_CLUSTER: &str = "ray.io/cluster";

/// A RayCluster as a user writes it: a head without GPUs and one worker group
/// of `replicas` replicas of `hosts` pods with `gpus` GPUs each, every pod for
/// Phalanx. Fixed size (min = max = replicas), no autoscaler.
fn ray_cluster(name: &str, replicas: u32, hosts: u32, gpus: u32) -> serde_json::Value {
    let mut worker = serde_json::json!({ "cpu": "1", "memory": "4Gi" });
    worker[RESOURCE_WHOLE_GPU] = gpus.to_string().into();
    serde_json::json!({
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": { "name": name, "namespace": NS },
        "spec": {
            "rayVersion": "2.46.0",
            "headGroupSpec": {
                "rayStartParams": {},
                "template": { "spec": {
                    "schedulerName": SCHEDULER_NAME,
                    "containers": [{
                        "name": "ray-head",
                        "image": "rayproject/ray:2.46.0",
                        "resources": {
                            "requests": { "cpu": "1", "memory": "2Gi" },
                            "limits": { "cpu": "1", "memory": "2Gi" },
                        },
                    }],
                }},
            },
            "workerGroupSpecs": [{
                "groupName": "gpu",
                "replicas": replicas,
                "minReplicas": replicas,
                "maxReplicas": replicas,
                "numOfHosts": hosts,
                "rayStartParams": {},
                "template": { "spec": {
                    "schedulerName": SCHEDULER_NAME,
                    "containers": [{
                        "name": "ray-worker",
                        "image": "rayproject/ray:2.46.0",
                        "resources": { "requests": worker, "limits": worker },
                    }],
                }},
            }],
        },
    })
}

/// The RayCluster resource at ray.io/v1.
fn ray_clusters(client: &kube::Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("ray.io", "v1", "RayCluster");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "rayclusters");
    Api::namespaced_with(client.clone(), NS, &resource)
}

async fn create_ray_cluster(
    client: &kube::Client,
    manifest: serde_json::Value,
) -> anyhow::Result<()> {
    let object: DynamicObject = serde_json::from_value(manifest)?;
    ray_clusters(client)
        .create(&PostParams::default(), &object)
        .await
        .with_context(|| format!("creating RayCluster {}", object.name_any()))?;
    Ok(())
}

/// The pods KubeRay made for the RayCluster `name`.
fn pods_of(name: &str) -> PodSelector {
    PodSelector::labels(&format!("{LABEL_RAY_CLUSTER}={name}"))
}

/// When KubeRay's CRDs appear relative to Phalanx's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CrdsInstalled {
    /// Before the scheduler starts, as on a cluster that already runs KubeRay.
    BeforeScheduler,
    /// After, as when KubeRay is installed on a cluster Phalanx already
    /// schedules for.
    AfterScheduler,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ray_clusters_are_ganged_from_their_owner_without_a_pod_group() -> anyhow::Result<()> {
    ray_clusters_ganged(
        "ray_clusters_are_ganged_from_their_owner_without_a_pod_group",
        CrdsInstalled::BeforeScheduler,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ray_clusters_are_ganged_when_kuberay_is_installed_after_the_scheduler(
) -> anyhow::Result<()> {
    ray_clusters_ganged(
        "ray_clusters_are_ganged_when_kuberay_is_installed_after_the_scheduler",
        CrdsInstalled::AfterScheduler,
    )
    .await
}

/// (a) A RayCluster that fits binds whole, as one gang; (b) one whose gang
/// cannot fit binds nothing and every pod is told why; no PodGroup anywhere.
async fn ray_clusters_ganged(test: &str, crds_installed: CrdsInstalled) -> anyhow::Result<()> {
    let Some(operator) = RAY_OPERATOR.for_test(test) else {
        return Ok(());
    };
    let Some((mut plane, scheduler)) = plane_with_scheduler(test).await? else {
        return Ok(());
    };
    let client = plane.client();
    // 24 GPUs in whole nodes of 8; every worker below asks for 4, so free
    // GPUs always come in fours and any one worker alone would fit.
    create_gpu_nodes(&client, "a100", 3, &GpuNodeSpec::with_gpus(8, "A100")).await?;
    wait_fake_nodes_ready(&client, 3, Duration::from_secs(60)).await?;
    let kuberay_crds = RAY_OPERATOR.crds.locate().map_err(anyhow::Error::msg)?;
    if crds_installed == CrdsInstalled::BeforeScheduler {
        crds::install(&client, &kuberay_crds).await?;
    }
    let handle = plane
        .start_phalanx_scheduler(&PhalanxOptions {
            binary: Some(scheduler),
            // Asked every second, so that CRDs installed later are found soon.
            extra: serde_json::json!({"gangs": {"discoveryIntervalSeconds": 1}}),
            ..PhalanxOptions::default()
        })
        .await?;
    // Installs the CRDs unless they are there already.
    plane.start_operator(&RAY_OPERATOR, &operator).await?;
    // The scheduler finds the kind served (at start, or at its next
    // discovery) before anyone creates a RayCluster.
    let active = "phalanx_scheduler_gang_source_active{source=\"rayclusters\"} 1";
    wait::until(
        "the scheduler finds RayClusters served",
        Duration::from_secs(30),
        || async {
            let metrics = handle.metrics().await.map_err(anyhow::Error::msg)?;
            Ok(if metrics.lines().any(|line| line == active) {
                Ok(())
            } else {
                Err(format!("its gauge lacks {active}"))
            })
        },
    )
    .await
    .with_logs(&plane)?;
    namespace_ready_for_pods(&client, NS, Duration::from_secs(30)).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let gpus = node_facts(&client).await?.gpus;

    // (a) A cluster that fits: the head and 2 replicas × 2 hosts of 4 GPUs
    // (16 of 24). All five pods bind, as one gang: each carries the same
    // plan, which counts five members.
    let created_at = Instant::now();
    create_ray_cluster(&client, ray_cluster("fits", 2, 2, 4)).await?;
    let bound = wait_selected_bound(&pods, &pods_of("fits"), 5, Duration::from_secs(120))
        .await
        .context("the operator's pods of RayCluster fits, all bound")
        .with_logs(&plane)
        .with_context(|| operator_log(&plane))?;
    println!(
        "{test}: RayCluster fits: its 5 pods made by ray-operator and bound as one gang {:.1?} \
         after it was created; {}",
        created_at.elapsed(),
        creation_to_binding(&bound)
    );
    // The head asks for no GPU and carries no GPU assignment; the workers
    // must hold theirs without over-committing any GPU.
    let workers: Vec<Pod> = bound
        .iter()
        .filter(|pod| gpu_request(pod).0 > 0)
        .cloned()
        .collect();
    assert_eq!(workers.len(), 4, "the operator made other pods than asked");
    let problems = assignment_violations(&workers, &gpus);
    assert!(problems.is_empty(), "{problems:#?}");
    let mut plan_ids = BTreeSet::new();
    for pod in &bound {
        let value = pod
            .annotations()
            .get(ANNOTATION_GANG_PLAN)
            .with_context(|| {
                format!(
                    "{} was bound without a gang plan\n{}",
                    pod.name_any(),
                    plane.scheduler_logs()
                )
            })?;
        let plan = GangPlanAnnotation::parse(value)?;
        assert_eq!(plan.members, 5, "{}: {plan:?}", pod.name_any());
        assert_eq!(
            Some(plan.node.as_str()),
            node_of(pod),
            "{}: bound away from its plan",
            pod.name_any()
        );
        plan_ids.insert(plan.plan);
    }
    assert_eq!(
        plan_ids.len(),
        1,
        "the members were placed apart: {plan_ids:?}"
    );

    // (b) A cluster whose gang cannot fit: the head and 3 workers of 4 GPUs
    // (12) with 8 GPUs left. The head and any one worker alone would fit;
    // all or nothing, none binds and every pod is told why.
    create_ray_cluster(&client, ray_cluster("too-big", 3, 1, 4)).await?;
    let created = wait_pods_exist(&pods, &pods_of("too-big"), 4, Duration::from_secs(60))
        .await
        .with_context(|| operator_log(&plane))?;
    let names: BTreeSet<String> = created.iter().map(ResourceExt::name_any).collect();
    let failures = wait::until(
        "a FailedScheduling event for every pod of RayCluster too-big",
        Duration::from_secs(60),
        || async {
            let mut notes: BTreeMap<String, String> = BTreeMap::new();
            for event in pod_events(&client, NS).await? {
                if event.reason == "FailedScheduling" && names.contains(&event.pod) {
                    notes.insert(event.pod, event.note);
                }
            }
            Ok(if notes.len() == names.len() {
                Ok(notes)
            } else {
                Err(format!(
                    "{} of {} have one: {notes:?}",
                    notes.len(),
                    names.len()
                ))
            })
        },
    )
    .await
    .with_logs(&plane)?;
    for (pod, note) in &failures {
        println!("{test}: {pod}: FailedScheduling: {note}");
        assert!(
            note.contains("gang"),
            "{pod}: the event does not say the gang is what does not fit: {note}"
        );
    }
    stays_pending(&pods, &pods_of("too-big"), Duration::from_secs(5))
        .await
        .with_logs(&plane)?;
    let fits_still: Vec<Pod> = pods_of("fits").list(&pods).await?;
    assert!(fits_still.iter().all(|p| node_of(p).is_some()));

    // Nobody wrote a PodGroup, Phalanx's or Kubernetes' own: the gangs came
    // from the RayClusters.
    let groups: Api<PodGroup> = Api::namespaced(client.clone(), NS);
    let upstream: Api<UpstreamPodGroup> = Api::namespaced(client.clone(), NS);
    let mut written: Vec<String> = groups
        .list(&ListParams::default())
        .await?
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    written.extend(
        upstream
            .list(&ListParams::default())
            .await?
            .iter()
            .map(ResourceExt::name_any),
    );
    assert!(written.is_empty(), "PodGroups appeared: {written:?}");
    Ok(())
}

/// When the last member was created and when the last was bound, from the
/// pods' own timestamps (whole seconds), to tell the operator's pace from
/// the scheduler's.
fn creation_to_binding(pods: &[Pod]) -> String {
    let created = pods
        .iter()
        .filter_map(|pod| pod.metadata.creation_timestamp.as_ref())
        .map(|time| time.0)
        .max();
    let scheduled = pods
        .iter()
        .filter_map(|pod| pod.status.as_ref()?.conditions.as_ref())
        .flatten()
        .filter(|condition| condition.type_ == "PodScheduled" && condition.status == "True")
        .filter_map(|condition| condition.last_transition_time.as_ref())
        .map(|time| time.0)
        .max();
    match (created, scheduled) {
        (Some(created), Some(scheduled)) => {
            format!("last member created at {created}, last PodScheduled=True at {scheduled}")
        }
        _ => "no timestamps".to_owned(),
    }
}

/// The operator's log tail, for a failure that may be the operator's.
fn operator_log(plane: &phalanx_e2e::ControlPlane) -> String {
    format!(
        "--- {} ---\n{}",
        RAY_OPERATOR.name,
        plane.log_tail(RAY_OPERATOR.name).unwrap_or_default()
    )
}
