//! The auto-grouper's rules, owner family by family, fed objects shaped as
//! their controllers write them.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::DynamicObject;
use phalanx_api::{
    ANNOTATION_AUTO_GANG, ANNOTATION_GANG_MIN_MEMBER, ANNOTATION_GANG_TIMEOUT_SECONDS,
};
use serde_json::{json, Value};

use super::*;

const NS: &str = "ml";

/// An ownerReference with `controller: true`.
fn controller(api_version: &str, kind: &str, name: &str) -> Value {
    json!({ "apiVersion": api_version, "kind": kind, "name": name,
            "uid": format!("uid-{name}"), "controller": true })
}

fn pod(owner: Option<Value>, labels: Value, annotations: Value) -> Pod {
    let owners: Vec<Value> = owner.into_iter().collect();
    serde_json::from_value(json!({
        "metadata": { "name": "p-0", "namespace": NS, "uid": "pod-uid",
                      "labels": labels, "annotations": annotations,
                      "ownerReferences": owners },
        "spec": { "containers": [] },
    }))
    .unwrap()
}

fn metadata(name: &str, owner: Option<Value>, annotations: Value) -> Value {
    let owners: Vec<Value> = owner.into_iter().collect();
    json!({ "name": name, "namespace": NS, "uid": format!("uid-{name}"),
            "annotations": annotations, "ownerReferences": owners })
}

fn job(name: &str, owner: Option<Value>, spec: Value) -> Job {
    serde_json::from_value(json!({
        "metadata": metadata(name, owner, json!({})),
        "spec": spec,
    }))
    .unwrap()
}

fn dynamic(
    kind: OwnerKind,
    name: &str,
    owner: Option<Value>,
    annotations: Value,
    spec: Value,
) -> OwnerRecord {
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": kind.api_version(),
        "kind": kind.name(),
        "metadata": metadata(name, owner, annotations),
        "spec": spec,
    }))
    .unwrap();
    OwnerRecord::from_dynamic(kind, &object)
}

fn index(records: impl IntoIterator<Item = OwnerRecord>) -> OwnerIndex {
    let mut index = OwnerIndex::default();
    for kind in OwnerKind::ALL {
        index.watch(kind);
    }
    for record in records {
        index.apply(record);
    }
    index
}

fn gang(pod: &Pod, index: &OwnerIndex) -> AutoGang {
    auto_gang_of(pod, index).unwrap().gang
}

/// The key and minimum of a gang, or panics naming what came instead.
fn key_and_min(result: AutoGang) -> (String, u32) {
    match result {
        AutoGang::Gang(m) => {
            assert_eq!(m.source, GangSource::Owner);
            assert_eq!(m.key.namespace, NS);
            (m.key.name, m.min_member.unwrap())
        }
        other => panic!("not a gang: {other:?}"),
    }
}

fn single_reason(result: AutoGang) -> String {
    match result {
        AutoGang::Single { reason } => reason,
        other => panic!("not single: {other:?}"),
    }
}

fn indexed(parallelism: i32, completions: i32) -> Value {
    json!({ "completionMode": "Indexed", "parallelism": parallelism, "completions": completions,
            "template": { "spec": { "containers": [] } } })
}

fn job_pod(job: &str) -> Pod {
    pod(
        Some(controller("batch/v1", "Job", job)),
        json!({}),
        json!({}),
    )
}

// ---- batch/v1 Job ----

#[test]
fn indexed_job_with_parallelism_equal_to_completions_is_a_gang() {
    let index = index([OwnerRecord::from_job(&job("train", None, indexed(4, 4)))]);
    let (key, min) = key_and_min(gang(&job_pod("train"), &index));
    assert_eq!((key.as_str(), min), ("Job/train", 4));
}

#[test]
fn other_jobs_are_not_grouped() {
    let specs = [
        indexed(4, 8),
        indexed(1, 1),
        json!({ "parallelism": 4, "completions": 4, "template": {} }),
        json!({ "completionMode": "NonIndexed", "parallelism": 4, "completions": 4, "template": {} }),
        json!({ "completionMode": "Indexed", "parallelism": 4, "template": {} }),
    ];
    for spec in specs {
        let index = index([OwnerRecord::from_job(&job("train", None, spec.clone()))]);
        assert_eq!(
            gang(&job_pod("train"), &index),
            AutoGang::NotGrouped,
            "{spec}"
        );
    }
}

#[test]
fn pod_of_an_unseen_job_waits_for_it_and_one_of_a_replaced_job_too() {
    let empty = index([]);
    let decision = auto_gang_of(&job_pod("train"), &empty).unwrap();
    assert_eq!(
        decision.gang,
        AutoGang::WaitingForOwner {
            owner: "Job ml/train".to_owned()
        }
    );
    assert_eq!(decision.consulted.len(), 1);
    // Same name, another UID: not this pod's Job.
    let mut other = job("train", None, indexed(4, 4));
    other.metadata.uid = Some("another".to_owned());
    let index = index([OwnerRecord::from_job(&other)]);
    assert!(matches!(
        gang(&job_pod("train"), &index),
        AutoGang::WaitingForOwner { .. }
    ));
}

#[test]
fn pods_without_a_known_owner_kind_are_not_grouped() {
    let index = index([]);
    let bare = pod(None, json!({}), json!({}));
    assert_eq!(gang(&bare, &index), AutoGang::NotGrouped);
    let replica_set = pod(
        Some(controller("apps/v1", "ReplicaSet", "web")),
        json!({}),
        json!({}),
    );
    assert_eq!(gang(&replica_set, &index), AutoGang::NotGrouped);
    // A kind that is not served (not watched) is not waited for.
    let unwatched = OwnerIndex::default();
    assert_eq!(gang(&job_pod("train"), &unwatched), AutoGang::NotGrouped);
}

// ---- JobSet and TrainJob ----

fn jobset_spec(jobs: Value) -> Value {
    json!({ "replicatedJobs": jobs })
}

fn replicated(name: &str, replicas: u32, parallelism: u32, completions: u32) -> Value {
    json!({ "name": name, "replicas": replicas,
            "template": { "spec": { "parallelism": parallelism, "completions": completions,
                                    "completionMode": "Indexed" } } })
}

fn jobset_job(name: &str, jobset: &str) -> OwnerRecord {
    OwnerRecord::from_job(&job(
        name,
        Some(controller("jobset.x-k8s.io/v1alpha2", "JobSet", jobset)),
        indexed(2, 2),
    ))
}

fn jobset_pod(job: &str, attempt: &str) -> Pod {
    pod(
        Some(controller("batch/v1", "Job", job)),
        json!({ "jobset.sigs.k8s.io/jobset-name": "train",
                "jobset.sigs.k8s.io/restart-attempt": attempt }),
        json!({}),
    )
}

#[test]
fn jobset_is_one_gang_of_replicas_times_parallelism() {
    let spec = jobset_spec(json!([
        replicated("driver", 1, 1, 1),
        replicated("workers", 3, 2, 2)
    ]));
    let index = index([
        dynamic(OwnerKind::JobSet, "train", None, json!({}), spec),
        jobset_job("train-workers-0", "train"),
    ]);
    let decision = auto_gang_of(&jobset_pod("train-workers-0", "0"), &index).unwrap();
    assert_eq!(decision.consulted.len(), 2, "the Job, then the JobSet");
    let (key, min) = key_and_min(decision.gang);
    assert_eq!((key.as_str(), min), ("JobSet/train/attempt-0", 7));
}

#[test]
fn a_jobset_restart_is_a_new_gang() {
    let spec = jobset_spec(json!([replicated("workers", 2, 2, 2)]));
    let index = index([
        dynamic(OwnerKind::JobSet, "train", None, json!({}), spec),
        jobset_job("train-workers-0", "train"),
    ]);
    let (first, _) = key_and_min(gang(&jobset_pod("train-workers-0", "0"), &index));
    let (second, _) = key_and_min(gang(&jobset_pod("train-workers-0", "1"), &index));
    assert_ne!(first, second);
    assert_eq!(second, "JobSet/train/attempt-1");
}

#[test]
fn jobsets_whose_jobs_do_not_start_together_are_single() {
    let cases = [
        (
            jobset_spec(json!([replicated("workers", 2, 4, 8)])),
            "spec.replicatedJobs[0].template.spec.parallelism (4) differs from its completions (8)",
        ),
        (
            jobset_spec(json!([
                replicated("init", 1, 1, 1),
                { "name": "workers", "replicas": 2, "dependsOn": [{ "name": "init", "status": "Complete" }],
                  "template": { "spec": { "parallelism": 2, "completions": 2 } } },
            ])),
            "spec.replicatedJobs[1].dependsOn is set",
        ),
        (
            json!({ "startupPolicy": { "startupPolicyOrder": "InOrder" },
                    "replicatedJobs": [replicated("workers", 2, 2, 2)] }),
            "spec.startupPolicy.startupPolicyOrder is InOrder",
        ),
        (
            jobset_spec(json!([{ "name": "workers", "replicas": "two" }])),
            "spec.replicatedJobs[0].replicas is \"two\"",
        ),
        (json!({ "replicatedJobs": {} }), "spec.replicatedJobs is {}"),
    ];
    for (spec, expected) in cases {
        let index = index([
            dynamic(OwnerKind::JobSet, "train", None, json!({}), spec),
            jobset_job("train-workers-0", "train"),
        ]);
        let reason = single_reason(gang(&jobset_pod("train-workers-0", "0"), &index));
        assert!(reason.starts_with("JobSet ml/train: "), "{reason}");
        assert!(reason.contains(expected), "{reason} lacks {expected}");
        assert!(reason.contains("one by one"), "{reason}");
    }
}

#[test]
fn a_jobset_pod_waits_for_its_jobset() {
    let index = index([jobset_job("train-workers-0", "train")]);
    assert_eq!(
        gang(&jobset_pod("train-workers-0", "0"), &index),
        AutoGang::WaitingForOwner {
            owner: "JobSet ml/train".to_owned()
        }
    );
}

#[test]
fn trainjob_pods_follow_the_jobset_rule_and_name_the_trainjob() {
    let spec = jobset_spec(json!([replicated("node", 4, 1, 1)]));
    let trainjob = controller("trainer.kubeflow.org/v1alpha1", "TrainJob", "llm");
    let with_trainjob = index([
        dynamic(OwnerKind::TrainJob, "llm", None, json!({}), json!({})),
        dynamic(
            OwnerKind::JobSet,
            "train",
            Some(trainjob.clone()),
            json!({}),
            spec.clone(),
        ),
        jobset_job("train-node-0", "train"),
    ]);
    let (key, min) = key_and_min(gang(&jobset_pod("train-node-0", "0"), &with_trainjob));
    assert_eq!((key.as_str(), min), ("TrainJob/llm/attempt-0", 4));
    // Not seen (or not served): the JobSet's pods are not held back for it.
    let without = index([
        dynamic(OwnerKind::JobSet, "train", Some(trainjob), json!({}), spec),
        jobset_job("train-node-0", "train"),
    ]);
    assert_eq!(
        key_and_min(gang(&jobset_pod("train-node-0", "0"), &without)).1,
        4
    );
}

#[test]
fn opting_out_on_the_trainjob_turns_its_pods_off() {
    let spec = jobset_spec(json!([replicated("node", 4, 1, 1)]));
    let trainjob = controller("trainer.kubeflow.org/v1alpha1", "TrainJob", "llm");
    let index = index([
        dynamic(
            OwnerKind::TrainJob,
            "llm",
            None,
            json!({ ANNOTATION_AUTO_GANG: "false" }),
            json!({}),
        ),
        dynamic(OwnerKind::JobSet, "train", Some(trainjob), json!({}), spec),
        jobset_job("train-node-0", "train"),
    ]);
    assert_eq!(
        gang(&jobset_pod("train-node-0", "0"), &index),
        AutoGang::NotGrouped
    );
}

// ---- training-operator v1 ----

fn pytorch_pod() -> Pod {
    pod(
        Some(controller("kubeflow.org/v1", "PyTorchJob", "bert")),
        json!({ "training.kubeflow.org/job-name": "bert",
                "training.kubeflow.org/replica-type": "worker" }),
        json!({}),
    )
}

#[test]
fn training_jobs_sum_their_replicas_or_use_min_available() {
    let spec = json!({ "pytorchReplicaSpecs": {
        "Master": { "replicas": 1 }, "Worker": { "replicas": 3 } } });
    let index1 = index([dynamic(
        OwnerKind::PyTorchJob,
        "bert",
        None,
        json!({}),
        spec,
    )]);
    let (key, min) = key_and_min(gang(&pytorch_pod(), &index1));
    assert_eq!((key.as_str(), min), ("PyTorchJob/bert", 4));

    let spec = json!({ "runPolicy": { "schedulingPolicy": { "minAvailable": 3 } },
                       "pytorchReplicaSpecs": { "Master": {}, "Worker": { "replicas": 3 } } });
    let index2 = index([dynamic(
        OwnerKind::PyTorchJob,
        "bert",
        None,
        json!({}),
        spec,
    )]);
    assert_eq!(key_and_min(gang(&pytorch_pod(), &index2)).1, 3);

    let tf = json!({ "tfReplicaSpecs": { "PS": { "replicas": 2 }, "Worker": { "replicas": 4 } } });
    let index3 = index([dynamic(OwnerKind::TfJob, "bert", None, json!({}), tf)]);
    let tf_pod = pod(
        Some(controller("kubeflow.org/v1", "TFJob", "bert")),
        json!({}),
        json!({}),
    );
    assert_eq!(
        key_and_min(gang(&tf_pod, &index3)),
        ("TFJob/bert".to_owned(), 6)
    );

    let mpi = json!({ "mpiReplicaSpecs": { "Launcher": { "replicas": 1 }, "Worker": { "replicas": 2 } } });
    let index4 = index([dynamic(OwnerKind::MpiJob, "bert", None, json!({}), mpi)]);
    let mpi_pod = pod(
        Some(controller("kubeflow.org/v1", "MPIJob", "bert")),
        json!({}),
        json!({}),
    );
    assert_eq!(key_and_min(gang(&mpi_pod, &index4)).1, 3);
}

#[test]
fn inconsistent_training_jobs_are_single_naming_the_field() {
    let cases = [
        (json!({}), "spec.pytorchReplicaSpecs is missing"),
        (
            json!({ "runPolicy": { "schedulingPolicy": { "minAvailable": 9 } },
                    "pytorchReplicaSpecs": { "Worker": { "replicas": 3 } } }),
            "spec.runPolicy.schedulingPolicy.minAvailable (9) is more than its 3 replicas",
        ),
        (
            json!({ "runPolicy": { "schedulingPolicy": { "minAvailable": 0 } },
                    "pytorchReplicaSpecs": { "Worker": { "replicas": 3 } } }),
            "minAvailable is 0",
        ),
        (
            json!({ "pytorchReplicaSpecs": { "Worker": { "replicas": -1 } } }),
            "spec.pytorchReplicaSpecs.Worker.replicas is -1",
        ),
    ];
    for (spec, expected) in cases {
        let index = index([dynamic(
            OwnerKind::PyTorchJob,
            "bert",
            None,
            json!({}),
            spec,
        )]);
        let reason = single_reason(gang(&pytorch_pod(), &index));
        assert!(reason.starts_with("PyTorchJob ml/bert: "), "{reason}");
        assert!(reason.contains(expected), "{reason} lacks {expected}");
    }
}

// ---- LeaderWorkerSet ----

fn lws_pod(group: &str, revision: &str, size: Option<&str>) -> Pod {
    let annotations = match size {
        Some(size) => json!({ "leaderworkerset.sigs.k8s.io/size": size }),
        None => json!({}),
    };
    pod(
        Some(controller("apps/v1", "StatefulSet", "serve")),
        json!({ "leaderworkerset.sigs.k8s.io/name": "serve",
                "leaderworkerset.sigs.k8s.io/group-index": group,
                "leaderworkerset.sigs.k8s.io/template-revision-hash": revision }),
        annotations,
    )
}

fn lws(spec: Value) -> OwnerRecord {
    dynamic(OwnerKind::LeaderWorkerSet, "serve", None, json!({}), spec)
}

#[test]
fn each_leaderworkerset_group_and_revision_is_a_gang_of_its_size() {
    let index = index([lws(
        json!({ "replicas": 3, "leaderWorkerTemplate": { "size": 4 } }),
    )]);
    let (key, min) = key_and_min(gang(&lws_pod("1", "abc", None), &index));
    assert_eq!(
        (key.as_str(), min),
        ("LeaderWorkerSet/serve/group-1/rev-abc", 4)
    );
    let (other_group, _) = key_and_min(gang(&lws_pod("2", "abc", None), &index));
    let (new_revision, _) = key_and_min(gang(&lws_pod("1", "def", None), &index));
    assert_ne!(key, other_group);
    assert_ne!(key, new_revision);
    // The size the group's revision was created with wins over the spec's.
    assert_eq!(
        key_and_min(gang(&lws_pod("1", "old", Some("2")), &index)).1,
        2
    );
}

#[test]
fn leaderworkerset_cases_that_cannot_be_a_gang() {
    let leader_ready = index([lws(json!({ "startupPolicy": "LeaderReady",
                                          "leaderWorkerTemplate": { "size": 4 } }))]);
    let reason = single_reason(gang(&lws_pod("0", "abc", None), &leader_ready));
    assert!(
        reason.contains("spec.startupPolicy is LeaderReady"),
        "{reason}"
    );

    let size_one = index([lws(json!({ "leaderWorkerTemplate": { "size": 1 } }))]);
    assert_eq!(
        gang(&lws_pod("0", "abc", None), &size_one),
        AutoGang::NotGrouped
    );

    let fine = index([lws(json!({ "leaderWorkerTemplate": { "size": 4 } }))]);
    let reason = single_reason(gang(&lws_pod("0", "abc", Some("four")), &fine));
    assert!(
        reason.contains("leaderworkerset.sigs.k8s.io/size=\"four\""),
        "{reason}"
    );
    let mut no_group = lws_pod("0", "abc", None);
    no_group
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .remove("leaderworkerset.sigs.k8s.io/group-index");
    let reason = single_reason(gang(&no_group, &fine));
    assert!(reason.contains("group-index is missing"), "{reason}");

    assert_eq!(
        gang(&lws_pod("0", "abc", None), &index([])),
        AutoGang::WaitingForOwner {
            owner: "LeaderWorkerSet ml/serve".to_owned()
        }
    );
}

// ---- RayCluster ----

fn ray_pod() -> Pod {
    pod(
        Some(controller("ray.io/v1", "RayCluster", "rc")),
        json!({ "ray.io/cluster": "rc", "ray.io/node-type": "worker" }),
        json!({}),
    )
}

fn ray_min(spec: Value) -> AutoGang {
    let index = index([dynamic(OwnerKind::RayCluster, "rc", None, json!({}), spec)]);
    gang(&ray_pod(), &index)
}

#[test]
fn raycluster_is_head_plus_desired_workers_times_hosts() {
    let spec = json!({ "headGroupSpec": {}, "workerGroupSpecs": [
        { "groupName": "a", "replicas": 2, "minReplicas": 1, "maxReplicas": 5, "numOfHosts": 2 },
        { "groupName": "b", "replicas": 9, "minReplicas": 0, "maxReplicas": 3 },
        { "groupName": "c", "replicas": 0, "minReplicas": 2, "maxReplicas": 4 },
        { "groupName": "d", "replicas": 4, "minReplicas": 1, "maxReplicas": 4, "suspend": true },
    ]});
    // 1 + 2×2 + 3 (clamped to max) + 2 (raised to min) + 0 (suspended).
    assert_eq!(key_and_min(ray_min(spec)), ("RayCluster/rc".to_owned(), 10));
}

#[test]
fn autoscaled_raycluster_counts_min_replicas() {
    let spec = json!({ "enableInTreeAutoscaling": true, "workerGroupSpecs": [
        { "groupName": "a", "replicas": 5, "minReplicas": 2, "maxReplicas": 8, "numOfHosts": 2 },
    ]});
    assert_eq!(key_and_min(ray_min(spec)).1, 5);
    // Head only: a gang of one is no gang.
    let spec = json!({ "enableInTreeAutoscaling": true, "workerGroupSpecs": [
        { "groupName": "a", "minReplicas": 0, "maxReplicas": 8 } ]});
    assert_eq!(ray_min(spec), AutoGang::NotGrouped);
    let reason = single_reason(ray_min(
        json!({ "workerGroupSpecs": [{ "minReplicas": "1" }] }),
    ));
    assert!(
        reason.contains("spec.workerGroupSpecs[0].minReplicas is \"1\""),
        "{reason}"
    );
}

#[test]
fn a_rayjob_submitter_is_not_a_member() {
    // The submitter is a non-indexed batch Job's pod.
    let submitter = job(
        "rc-job",
        Some(controller("ray.io/v1", "RayJob", "rj")),
        json!({ "parallelism": 1, "completions": 1, "template": {} }),
    );
    let index = index([
        dynamic(
            OwnerKind::RayCluster,
            "rc",
            Some(controller("ray.io/v1", "RayJob", "rj")),
            json!({}),
            json!({ "workerGroupSpecs": [{ "replicas": 2, "minReplicas": 2 }] }),
        ),
        OwnerRecord::from_job(&submitter),
    ]);
    assert_eq!(gang(&job_pod("rc-job"), &index), AutoGang::NotGrouped);
    assert_eq!(key_and_min(gang(&ray_pod(), &index)).1, 3);
}

// ---- opt-out and overrides ----

#[test]
fn opt_out_on_the_pod_or_the_owner() {
    let index1 = index([OwnerRecord::from_job(&job("train", None, indexed(4, 4)))]);
    let mut opted = job_pod("train");
    opted.metadata.annotations =
        Some([(ANNOTATION_AUTO_GANG.to_owned(), "false".to_owned())].into());
    assert_eq!(gang(&opted, &index1), AutoGang::NotGrouped);

    let mut on_job = job("train", None, indexed(4, 4));
    on_job.metadata.annotations =
        Some([(ANNOTATION_AUTO_GANG.to_owned(), "false".to_owned())].into());
    let index2 = index([OwnerRecord::from_job(&on_job)]);
    assert_eq!(gang(&job_pod("train"), &index2), AutoGang::NotGrouped);
}

#[test]
fn min_member_override_on_pod_wins_over_owner_wins_over_spec() {
    let spec = json!({ "pytorchReplicaSpecs": { "Worker": { "replicas": 8 } } });
    let annotated = |value: &str| {
        dynamic(
            OwnerKind::PyTorchJob,
            "bert",
            None,
            json!({ ANNOTATION_GANG_MIN_MEMBER: value }),
            spec.clone(),
        )
    };
    let index1 = index([annotated("6")]);
    assert_eq!(key_and_min(gang(&pytorch_pod(), &index1)).1, 6);
    let mut p = pytorch_pod();
    p.metadata.annotations = Some(
        [
            (ANNOTATION_GANG_MIN_MEMBER.to_owned(), "5".to_owned()),
            (ANNOTATION_GANG_TIMEOUT_SECONDS.to_owned(), "90".to_owned()),
        ]
        .into(),
    );
    match gang(&p, &index1) {
        AutoGang::Gang(m) => {
            assert_eq!(m.min_member, Some(5));
            assert_eq!(m.timeout, Some(Duration::from_secs(90)));
        }
        other => panic!("{other:?}"),
    }
    // A malformed override on the owner: single, naming owner and annotation.
    let index2 = index([annotated("many")]);
    let reason = single_reason(gang(&pytorch_pod(), &index2));
    assert!(
        reason.starts_with("PyTorchJob ml/bert: annotation phalanx.dev/gang-min-member=\"many\""),
        "{reason}"
    );
}

#[test]
fn malformed_pod_annotations_are_errors_naming_pod_and_annotation() {
    let index = index([OwnerRecord::from_job(&job("train", None, indexed(4, 4)))]);
    for (annotation, value) in [
        (ANNOTATION_AUTO_GANG, "no"),
        (ANNOTATION_GANG_MIN_MEMBER, "0"),
    ] {
        let mut p = job_pod("train");
        p.metadata.annotations = Some([(annotation.to_owned(), value.to_owned())].into());
        let message = auto_gang_of(&p, &index).unwrap_err().to_string();
        assert!(
            message.contains("ml/p-0") && message.contains(annotation),
            "{message}"
        );
    }
    let mut owner = job("train", None, indexed(4, 4));
    owner.metadata.annotations =
        Some([(ANNOTATION_AUTO_GANG.to_owned(), "maybe".to_owned())].into());
    let reason = single_reason(gang(
        &job_pod("train"),
        &super::tests::index([OwnerRecord::from_job(&owner)]),
    ));
    assert!(
        reason.starts_with("Job ml/train: annotation phalanx.dev/auto-gang=\"maybe\""),
        "{reason}"
    );
}

// ---- the index ----

#[test]
fn index_reports_only_real_changes_and_forgets_unlisted_owners() {
    let mut index = OwnerIndex::default();
    let record = OwnerRecord::from_job(&job("train", None, indexed(4, 4)));
    assert!(index.apply(record.clone()));
    assert!(
        !index.apply(record.clone()),
        "the same summary is no change"
    );
    assert!(index.apply(OwnerRecord::from_job(&job("train", None, indexed(2, 2)))));
    let gone = index.retain_listed(OwnerKind::Job, &HashSet::new());
    assert_eq!(gone, vec![record.id.clone()]);
    assert!(index.is_empty());
}

#[test]
fn owner_kinds_cover_every_family_and_map_back() {
    for kind in OWNER_KINDS {
        let owner = OwnerKind::of(kind).unwrap();
        assert_eq!(owner.optional_kind(), Some(*kind));
    }
    assert_eq!(
        OWNER_KINDS.len(),
        OwnerKind::ALL.len() - 1,
        "all but batch/v1 Job"
    );
}
