//! LeaderWorkerSet (`leaderworkerset.x-k8s.io/v1`): each group (a leader and
//! its `size - 1` workers) serves one replica and is useless in part, so each
//! group is a gang of `spec.leaderWorkerTemplate.size`. The controller labels
//! every pod of a group with the set's name, the group's index and the
//! template revision (a rolling update recreates a group as a new revision,
//! a new gang), and annotates it with the group's size as that revision
//! created it, which wins over the set's current spec.
//!
//! The leader is owned by the leader StatefulSet, the workers by a StatefulSet
//! the leader owns; neither is watched: the labels name the set.
//!
//! With `startupPolicy: LeaderReady` the workers are created only once the
//! leader is ready (LWS's own Volcano integration then asks for a gang of 1):
//! a gang would wait for pods that cannot exist yet, so they are scheduled
//! one by one.

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use super::fields::{count, text};
use super::{found, label, Derived, Finding, OwnerKind, Stop, Walk};

pub const LABEL_NAME: &str = "leaderworkerset.sigs.k8s.io/name";
pub const LABEL_GROUP_INDEX: &str = "leaderworkerset.sigs.k8s.io/group-index";
pub const LABEL_REVISION: &str = "leaderworkerset.sigs.k8s.io/template-revision-hash";
pub const ANNOTATION_SIZE: &str = "leaderworkerset.sigs.k8s.io/size";

/// The gang a LeaderWorkerSet's spec implies for each group.
pub(super) fn derived(spec: &Value) -> Derived {
    let size = match count(
        spec,
        "/leaderWorkerTemplate/size",
        "spec.leaderWorkerTemplate.size",
        1,
    ) {
        Ok(size) => size,
        Err(why) => return Derived::Unusable(why),
    };
    match text(spec, "/startupPolicy", "spec.startupPolicy") {
        Err(why) => Derived::Unusable(why),
        Ok(Some("LeaderReady")) => Derived::Unusable(
            "spec.startupPolicy is LeaderReady: workers are created only once the leader is ready"
                .to_owned(),
        ),
        Ok(_) => Derived::Members(size),
    }
}

/// The gang of a pod labelled as a LeaderWorkerSet's (`Ok(None)`: it is not).
pub(super) fn find(pod: &Pod, walk: &mut Walk<'_>) -> Result<Option<Finding>, Stop> {
    let Some(name) = label(pod, LABEL_NAME) else {
        return Ok(None);
    };
    let record = found(walk.by_name(OwnerKind::LeaderWorkerSet, name, None))?;
    let owner = record.id.to_string();
    let Some(group) = label(pod, LABEL_GROUP_INDEX) else {
        return Ok(Some(Finding {
            key: String::new(),
            derived: Derived::Unusable(format!("pod label {LABEL_GROUP_INDEX} is missing")),
            owner,
            pod_min: None,
        }));
    };
    let mut key = format!("LeaderWorkerSet/{name}/group-{group}");
    if let Some(revision) = label(pod, LABEL_REVISION) {
        key.push_str("/rev-");
        key.push_str(revision);
    }
    let size = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_SIZE));
    let (derived, pod_min) = match size.map(|s| s.trim().parse::<u32>()) {
        None => (record.derived.clone(), None),
        Some(Ok(size)) => (record.derived.clone(), Some(size)),
        Some(Err(_)) => (
            Derived::Unusable(format!(
                "pod annotation {ANNOTATION_SIZE}={:?} is not a count",
                size.map(String::as_str).unwrap_or_default()
            )),
            None,
        ),
    };
    Ok(Some(Finding {
        key,
        derived,
        owner,
        pod_min,
    }))
}
