//! Gangs found from the workload that owns the pods, with no PodGroup and no
//! gang label, against a real control plane (the Job controller of
//! kube-controller-manager creates Jobs' pods) with KWOK GPU nodes and
//! Phalanx's scheduler.
//!
//! - An indexed Job with parallelism = completions, created as a user would:
//!   one that fits binds whole; one too big for the cluster (though some of
//!   its pods would fit alone) binds nothing, and its pods' FailedScheduling
//!   names the Job.
//! - JobSet, TrainJob (+ its JobSet) with their real CRDs: the owner objects
//!   are created as their operators' users and controllers would, and the
//!   JobSet's Jobs with the owner references and labels the JobSet controller
//!   sets (the Job controller then creates the pods); a PyTorchJob's and a
//!   LeaderWorkerSet group's pods with the owner references and labels their
//!   controllers set. Each gang's pods wait while only part of it exists and
//!   bind once the rest comes.
//! - A PyTorchJob whose minAvailable exceeds its replicas: its pods are
//!   scheduled one by one, each told why (`GangNotDerived`).
//! - Pods whose owner comes after them are held, then form its gang; pods
//!   whose owner never comes are let go alone after the owner wait (30 s),
//!   told why.
//!
//! Needs the control-plane binaries (tests/control-plane/ensure.sh), the CRDs
//! (tests/control-plane/fetch-crds.sh) and `cargo build -p phalanx-scheduler`;
//! without them the test prints `skipped: …`, and with `PHALANX_E2E=1` it
//! fails instead.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ApiResource, DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use kube::Api;
use phalanx_api::SCHEDULER_NAME;
use phalanx_e2e::binaries::or_skip;
use phalanx_e2e::crds::{self, JOBSET, LWS, TRAINER, TRAINING_OPERATOR};
use phalanx_e2e::phalanx::{plane_with_scheduler, quick_retry};
use phalanx_e2e::wait::{self, WithLogs};
use phalanx_e2e::{
    create_gpu_nodes, create_pods, gpu_worker_container, node_of, pod_events, ControlPlane,
    GpuNodeSpec, PhalanxOptions, PodBuilder, PodSelector,
};
use serde_json::{json, Value};

const NS: &str = "default";
const BIND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a partial gang is watched for any of its pods being bound.
const PARTIAL_FOR: Duration = Duration::from_secs(4);

/// A cluster of `nodes` KWOK nodes of 8 GPUs and the scheduler on it, with
/// the operators' CRDs when `operator_crds`.
async fn start(
    test: &str,
    nodes: usize,
    operator_crds: bool,
) -> anyhow::Result<Option<ControlPlane>> {
    let Some((mut plane, binary)) = plane_with_scheduler(test).await? else {
        return Ok(None);
    };
    let client = plane.client();
    if operator_crds {
        // Before the scheduler starts: it asks which kinds are served once.
        let mut files = Vec::new();
        for source in [JOBSET, LWS, TRAINER, TRAINING_OPERATOR] {
            let Some(found) = or_skip(test, source.locate()) else {
                return Ok(None);
            };
            files.extend(found);
        }
        crds::install(&client, &files).await?;
    }
    let spec = GpuNodeSpec {
        gpus: 8,
        model: "H100".to_owned(),
        ..GpuNodeSpec::default()
    };
    create_gpu_nodes(&client, "h100", nodes, &spec).await?;
    phalanx_e2e::wait_fake_nodes_ready(&client, nodes, BIND_TIMEOUT).await?;
    plane
        .start_phalanx_scheduler(&PhalanxOptions {
            binary: Some(binary),
            extra: quick_retry(),
            ..PhalanxOptions::default()
        })
        .await?;
    Ok(Some(plane))
}

/// A pod template for Phalanx asking for `gpus` GPUs, as a Job's.
fn pod_template(gpus: u32, labels: Value) -> Value {
    let pod = PodBuilder::template(SCHEDULER_NAME, gpu_worker_container(gpus)).build();
    let mut spec = serde_json::to_value(pod.spec).unwrap_or_default();
    spec["restartPolicy"] = json!("Never");
    json!({ "metadata": { "labels": labels }, "spec": spec })
}

/// An indexed Job spec of `pods` pods at once.
fn indexed_job_spec(pods: u32, gpus: u32, labels: Value) -> Value {
    json!({ "completionMode": "Indexed", "parallelism": pods, "completions": pods,
            "backoffLimit": 0, "template": pod_template(gpus, labels) })
}

async fn create_job(
    client: &kube::Client,
    name: &str,
    owner: Option<Value>,
    spec: Value,
) -> anyhow::Result<()> {
    let owners: Vec<Value> = owner.into_iter().collect();
    let job: Job = serde_json::from_value(json!({
        "metadata": { "name": name, "ownerReferences": owners }, "spec": spec,
    }))?;
    Api::<Job>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &job)
        .await?;
    Ok(())
}

/// Creates an operator's object (its CRD installed); returns it as created.
async fn create_custom(
    client: &kube::Client,
    (group, version, kind, plural): (&str, &str, &str, &str),
    name: &str,
    owner: Option<Value>,
    spec: Value,
) -> anyhow::Result<DynamicObject> {
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    let owners: Vec<Value> = owner.into_iter().collect();
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": format!("{group}/{version}"), "kind": kind,
        "metadata": { "name": name, "namespace": NS, "ownerReferences": owners },
        "spec": spec,
    }))?;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &resource);
    Ok(api.create(&PostParams::default(), &object).await?)
}

/// The controller reference to `object`, as its operator would set it.
fn controller_of(object: &DynamicObject) -> Value {
    let types = object.types.clone().unwrap_or_default();
    json!({ "apiVersion": types.api_version, "kind": types.kind,
            "name": object.metadata.name, "uid": object.metadata.uid, "controller": true })
}

fn bound(pods: &[Pod]) -> usize {
    pods.iter().filter(|p| node_of(p).is_some()).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexed_job_binds_whole_or_not_at_all() -> anyhow::Result<()> {
    let test = "indexed_job_binds_whole_or_not_at_all";
    let Some(plane) = start(test, 2, false).await? else {
        return Ok(());
    };
    let client = plane.client();
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);

    // Three 1-GPU pods: fits.
    create_job(&client, "fits", None, indexed_job_spec(3, 1, json!({}))).await?;
    wait::wait_selected_bound(
        &pods,
        &PodSelector::labels("batch.kubernetes.io/job-name=fits"),
        3,
        BIND_TIMEOUT,
    )
    .await
    .with_logs(&plane)?;

    // Three whole 8-GPU nodes wanted, two exist: two pods would fit alone,
    // the gang does not.
    create_job(&client, "huge", None, indexed_job_spec(3, 8, json!({}))).await?;
    let huge = PodSelector::labels("batch.kubernetes.io/job-name=huge");
    wait::wait_pods_exist(&pods, &huge, 3, BIND_TIMEOUT).await?;
    let waiting = wait::stays_pending(&pods, &huge, PARTIAL_FOR)
        .await
        .with_logs(&plane)?;
    let names: Vec<String> = waiting
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    wait::until(
        "every pod of Job huge told the Job's gang does not fit",
        BIND_TIMEOUT,
        || async {
            let events = pod_events(&client, NS).await?;
            let untold: Vec<&String> = names
                .iter()
                .filter(|name| {
                    !events.iter().any(|e| {
                        &e.pod == *name
                            && e.reason == "FailedScheduling"
                            && e.note.contains("Job/huge")
                    })
                })
                .collect();
            Ok(if untold.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "no FailedScheduling naming Job/huge for {untold:?}"
                ))
            })
        },
    )
    .await
    .with_logs(&plane)?;
    let after = huge.list(&pods).await?;
    assert_eq!(bound(&after), 0, "a part of Job huge was bound");
    Ok(())
}

const JOBSET_KIND: (&str, &str, &str, &str) = ("jobset.x-k8s.io", "v1alpha2", "JobSet", "jobsets");
const TRAINJOB_KIND: (&str, &str, &str, &str) =
    ("trainer.kubeflow.org", "v1alpha1", "TrainJob", "trainjobs");
const PYTORCHJOB_KIND: (&str, &str, &str, &str) =
    ("kubeflow.org", "v1", "PyTorchJob", "pytorchjobs");
const LWS_KIND: (&str, &str, &str, &str) = (
    "leaderworkerset.x-k8s.io",
    "v1",
    "LeaderWorkerSet",
    "leaderworkersets",
);

/// A JobSet of one replicated job, `replicas` Jobs of `parallelism` 1-GPU pods.
fn jobset_spec(replicated_job: &str, replicas: u32, parallelism: u32) -> Value {
    json!({ "replicatedJobs": [{ "name": replicated_job, "replicas": replicas,
        "template": { "spec": indexed_job_spec(parallelism, 1, json!({})) } }] })
}

/// The `index`th Job of the JobSet `jobset` as the JobSet controller creates
/// it: owned by the JobSet, its pods labelled with the JobSet's name and
/// restart attempt.
async fn jobset_job(
    client: &kube::Client,
    jobset: &DynamicObject,
    replicated_job: &str,
    index: u32,
    parallelism: u32,
) -> anyhow::Result<String> {
    let name = jobset.metadata.name.clone().unwrap_or_default();
    let job = format!("{name}-{replicated_job}-{index}");
    let labels = json!({
        "jobset.sigs.k8s.io/jobset-name": name,
        "jobset.sigs.k8s.io/replicatedjob-name": replicated_job,
        "jobset.sigs.k8s.io/job-index": index.to_string(),
        "jobset.sigs.k8s.io/restart-attempt": "0",
    });
    create_job(
        client,
        &job,
        Some(controller_of(jobset)),
        indexed_job_spec(parallelism, 1, labels),
    )
    .await?;
    Ok(job)
}

/// Pods owned by `owner` (or labelled only), named `{prefix}-{i}`, 1 GPU each.
fn owned_pods(
    prefix: &str,
    range: std::ops::Range<u32>,
    owner: Option<&Value>,
    labels: &Value,
) -> Vec<Pod> {
    range
        .map(|i| {
            let mut pod = PodBuilder::new(
                &format!("{prefix}-{i}"),
                SCHEDULER_NAME,
                gpu_worker_container(1),
            );
            if let Some(map) = labels.as_object() {
                for (key, value) in map {
                    pod = pod.label(key, value.as_str().unwrap_or_default());
                }
            }
            let mut pod = pod.build();
            if let Some(owner) = owner {
                pod.metadata.owner_references = Some(vec![
                    serde_json::from_value(owner.clone()).unwrap_or_default()
                ]);
            }
            pod
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_owners_make_gangs_without_a_podgroup() -> anyhow::Result<()> {
    let test = "operator_owners_make_gangs_without_a_podgroup";
    let Some(plane) = start(test, 3, true).await? else {
        return Ok(());
    };
    let client = plane.client();
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);

    // Pods of a LeaderWorkerSet that never comes: held, then let go alone
    // (checked at the end, after OWNER_WAIT).
    let ghost_labels = lws_group_labels("ghost");
    let ghosts = create_pods(&pods, owned_pods("ghost-0", 0..2, None, &ghost_labels)).await?;
    // Pods whose LeaderWorkerSet comes after them: held, then a gang.
    let late_labels = lws_group_labels("late");
    let late = PodSelector::labels("leaderworkerset.sigs.k8s.io/name=late");
    create_pods(&pods, owned_pods("late-0", 0..2, None, &late_labels)).await?;
    wait::stays_pending(&pods, &late, PARTIAL_FOR)
        .await
        .with_logs(&plane)?;
    create_custom(&client, LWS_KIND, "late", None, lws_spec(3)).await?;
    wait::stays_pending(&pods, &late, PARTIAL_FOR)
        .await
        .map_err(|e| anyhow::anyhow!("a gang of 3 once its owner came: {e}"))
        .with_logs(&plane)?;
    create_pods(&pods, owned_pods("late-0", 2..3, None, &late_labels)).await?;
    wait::wait_selected_bound(&pods, &late, 3, BIND_TIMEOUT)
        .await
        .with_logs(&plane)?;

    // JobSet: 2 Jobs × 2 pods. TrainJob → JobSet: 2 Jobs × 2 pods.
    let jobset = create_custom(
        &client,
        JOBSET_KIND,
        "js",
        None,
        jobset_spec("workers", 2, 2),
    )
    .await?;
    let trainjob = create_custom(
        &client,
        TRAINJOB_KIND,
        "tj",
        None,
        json!({ "runtimeRef": { "name": "torch-distributed" } }),
    )
    .await?;
    let trainjob_set = create_custom(
        &client,
        JOBSET_KIND,
        "tj",
        Some(controller_of(&trainjob)),
        jobset_spec("node", 2, 2),
    )
    .await?;
    // PyTorchJob: a master and two workers.
    let pytorchjob = create_custom(
        &client,
        PYTORCHJOB_KIND,
        "pt",
        None,
        json!({ "pytorchReplicaSpecs": {
            "Master": { "replicas": 1, "template": pod_template(1, json!({})) },
            "Worker": { "replicas": 2, "template": pod_template(1, json!({})) } } }),
    )
    .await?;
    let pt_owner = controller_of(&pytorchjob);
    let pt_labels = json!({ "training.kubeflow.org/job-name": "pt",
                            "training.kubeflow.org/operator-name": "pytorchjob-controller" });
    // LeaderWorkerSet: groups of 3.
    create_custom(&client, LWS_KIND, "serve", None, lws_spec(3)).await?;
    let lws_labels = lws_group_labels("serve");

    // Part of each gang.
    jobset_job(&client, &jobset, "workers", 0, 2).await?;
    jobset_job(&client, &trainjob_set, "node", 0, 2).await?;
    create_pods(&pods, owned_pods("pt", 0..2, Some(&pt_owner), &pt_labels)).await?;
    create_pods(&pods, owned_pods("serve-0", 0..2, None, &lws_labels)).await?;
    // (gang key, its pods, its size)
    let gangs = [
        (
            "JobSet/js/attempt-0",
            PodSelector::labels("jobset.sigs.k8s.io/jobset-name=js"),
            4,
        ),
        (
            "TrainJob/tj/attempt-0",
            PodSelector::labels("jobset.sigs.k8s.io/jobset-name=tj"),
            4,
        ),
        (
            "PyTorchJob/pt",
            PodSelector::labels("training.kubeflow.org/job-name=pt"),
            3,
        ),
        (
            "LeaderWorkerSet/serve/group-0/rev-r1",
            PodSelector::labels("leaderworkerset.sigs.k8s.io/name=serve"),
            3,
        ),
    ];
    for (_, selector, _) in &gangs {
        wait::wait_pods_exist(&pods, selector, 2, BIND_TIMEOUT).await?;
    }
    for (key, selector, _) in &gangs {
        wait::stays_pending(&pods, selector, PARTIAL_FOR)
            .await
            .map_err(|e| anyhow::anyhow!("{key}: {e}"))
            .with_logs(&plane)?;
    }
    // Each waiting pod was told which gang it waits in: the derived key.
    let events = pod_events(&client, NS).await?;
    for (key, selector, _) in &gangs {
        let names: Vec<String> = selector
            .list(&pods)
            .await?
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        for name in &names {
            assert!(
                events.iter().any(|e| &e.pod == name
                    && e.reason == "FailedScheduling"
                    && e.note
                        .contains(&format!("{NS}/{key}: fewer than its minMember"))),
                "{name}: no FailedScheduling naming gang {key}"
            );
        }
    }
    // The rest of each gang.
    jobset_job(&client, &jobset, "workers", 1, 2).await?;
    jobset_job(&client, &trainjob_set, "node", 1, 2).await?;
    create_pods(&pods, owned_pods("pt", 2..3, Some(&pt_owner), &pt_labels)).await?;
    create_pods(&pods, owned_pods("serve-0", 2..3, None, &lws_labels)).await?;
    for (key, selector, size) in &gangs {
        wait::wait_selected_bound(&pods, selector, *size, BIND_TIMEOUT)
            .await
            .map_err(|e| anyhow::anyhow!("{key}: {e}"))
            .with_logs(&plane)?;
    }

    // Inconsistent: minAvailable 5 over 2 replicas. Scheduled one by one
    // (both fit), each told why.
    let bad = create_custom(
        &client,
        PYTORCHJOB_KIND,
        "bad",
        None,
        json!({ "runPolicy": { "schedulingPolicy": { "minAvailable": 5 } },
                "pytorchReplicaSpecs": {
                    "Worker": { "replicas": 2, "template": pod_template(1, json!({})) } } }),
    )
    .await?;
    let bad_names = create_pods(
        &pods,
        owned_pods("bad", 0..2, Some(&controller_of(&bad)), &json!({})),
    )
    .await?;
    wait::wait_bound(&pods, &bad_names, BIND_TIMEOUT)
        .await
        .with_logs(&plane)?;
    let events = pod_events(&client, NS).await?;
    for name in &bad_names {
        let told = events
            .iter()
            .find(|e| &e.pod == name && e.reason == "GangNotDerived");
        let note = told.map(|e| e.note.as_str()).unwrap_or_default();
        assert!(
            note.contains("PyTorchJob default/bad")
                && note.contains("spec.runPolicy.schedulingPolicy.minAvailable (5)"),
            "{name}: GangNotDerived {note:?}"
        );
    }

    // Never waiting forever for an owner.
    wait::wait_bound(&pods, &ghosts, BIND_TIMEOUT)
        .await
        .with_logs(&plane)?;
    let events = pod_events(&client, NS).await?;
    for name in &ghosts {
        assert!(
            events.iter().any(|e| &e.pod == name
                && e.reason == "GangNotDerived"
                && e.note.contains("LeaderWorkerSet default/ghost")
                && e.note.contains("was not seen within")),
            "{name}: no GangNotDerived saying its owner never came"
        );
    }
    Ok(())
}

/// A LeaderWorkerSet spec of one group of `size`.
fn lws_spec(size: u32) -> Value {
    json!({ "replicas": 1, "leaderWorkerTemplate": { "size": size,
        "workerTemplate": pod_template(1, json!({})) } })
}

/// The labels the LeaderWorkerSet controller puts on the pods of group 0.
fn lws_group_labels(name: &str) -> Value {
    json!({ "leaderworkerset.sigs.k8s.io/name": name,
            "leaderworkerset.sigs.k8s.io/group-index": "0",
            "leaderworkerset.sigs.k8s.io/template-revision-hash": "r1" })
}
