//! Which gang a pod belongs to, and that gang's policy.
//!
//! One internal notion of a gang (a minimum member count, a timeout, an optional
//! topology key), read from the forms users already write, in this order of
//! precedence:
//!
//! 1. the scheduler-plugins label `scheduling.x-k8s.io/pod-group` naming a
//!    `PodGroup` (`scheduling.x-k8s.io/v1alpha1`) in the pod's namespace;
//! 2. Phalanx's annotation `phalanx.dev/gang` with `phalanx.dev/gang-min-member`;
//! 3. upstream Kubernetes gang scheduling (`scheduling.k8s.io`, alpha), which the
//!    typed `Pod` of k8s-openapi `v1_33` cannot see, so it is parsed from the raw
//!    pod JSON by [`upstream_gang_of`].
//!
//! The optional annotations `phalanx.dev/gang-min-member`,
//! `phalanx.dev/gang-timeout-seconds` and `phalanx.dev/gang-topology-key` are read
//! for the label form too, so a scheduler-plugins user can add a topology
//! preference without a new CRD.
//!
//! # The upstream forms (KEP-4671 and KEP-5832)
//!
//! What the Kubernetes documentation and API reference say (looked up for this
//! module; both are alpha, behind the `GenericWorkload` feature gate):
//!
//! - **Kubernetes 1.35**, `scheduling.k8s.io/v1alpha1`: a `Workload` lists
//!   `spec.podGroups[]`, each `{name, policy: {gang: {minCount}} | {basic: {}}}`;
//!   a pod joins one with `spec.workloadRef: {name, podGroup, podGroupReplicaKey?}`
//!   (the Workload's name, the group's name inside it, and an optional key that
//!   splits one group into independent replicas, each its own gang).
//! - **Kubernetes 1.36**, `scheduling.k8s.io/v1alpha2` (KEP-5832 decouples the
//!   PodGroup from the Workload): a standalone runtime `PodGroup` carries
//!   `spec.schedulingPolicy: {gang: {minCount}} | {basic: {}}`; a pod joins it with
//!   `spec.schedulingGroup: {podGroupName}`. The Workload keeps templates in
//!   `spec.podGroupTemplates[]` (`{name, schedulingPolicy}`) from which
//!   controllers create the PodGroups. Later versions (`v1alpha3`, `v1beta1`)
//!   keep these names; there `minCount` may be left for a controller to default.
//!
//! [`upstream_gang_of`] accepts both pod shapes (`schedulingGroup` first);
//! [`upstream_min_member`] accepts a PodGroup object, a Workload `podGroups[]`
//! entry or a `podGroupTemplates[]` entry, with the policy under `policy` or
//! `schedulingPolicy`; [`upstream_workload_min_member`] finds the entry in a
//! Workload. The key of a `workloadRef` gang is `workload/podGroup` (plus
//! `/replicaKey`), which cannot clash with an object name (names have no `/`).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use phalanx_api::{
    PodGroup, ANNOTATION_GANG_MIN_MEMBER, ANNOTATION_GANG_NAME, ANNOTATION_GANG_TIMEOUT_SECONDS,
    ANNOTATION_GANG_TOPOLOGY_KEY, LABEL_POD_GROUP,
};
use serde_json::Value;

/// A gang, by the namespace of its pods and its name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GangKey {
    pub namespace: String,
    pub name: String,
}

impl GangKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for GangKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The form a gang was declared in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GangSource {
    /// scheduler-plugins `PodGroup` named by the `scheduling.x-k8s.io/pod-group` label.
    PodGroup,
    /// `phalanx.dev/gang` and `phalanx.dev/gang-min-member` annotations.
    Annotation,
    /// Upstream `scheduling.k8s.io` gang scheduling.
    Upstream,
    /// Found from the workload that owns the pod (`owners`): its minimum is
    /// derived from the owner's spec.
    Owner,
}

/// The upstream object that holds an upstream gang's policy.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum UpstreamGroupRef {
    /// `spec.schedulingGroup.podGroupName`: a `scheduling.k8s.io` PodGroup.
    PodGroup { name: String },
    /// `spec.workloadRef`: a pod group inside a `scheduling.k8s.io` Workload.
    Workload {
        workload: String,
        pod_group: String,
        replica_key: Option<String>,
    },
}

/// A pod's gang, as the pod declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GangMembership {
    pub key: GangKey,
    pub source: GangSource,
    /// From `phalanx.dev/gang-min-member` (or, for an upstream gang, filled in by
    /// the caller from [`upstream_min_member`]).
    pub min_member: Option<u32>,
    /// From `phalanx.dev/gang-timeout-seconds`.
    pub timeout: Option<Duration>,
    /// From `phalanx.dev/gang-topology-key`.
    pub topology_key: Option<String>,
    /// For [`GangSource::Upstream`]: the object to read the policy from.
    pub upstream: Option<UpstreamGroupRef>,
}

/// Why a gang's declaration cannot be used. Each names the pod or group and the
/// field, so that the event tells the user what to fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GangSpecError {
    #[error("pod {pod}: annotation {annotation}={value:?} must be an integer from 1 to {max}")]
    InvalidAnnotationNumber {
        pod: String,
        annotation: &'static str,
        value: String,
        max: u64,
    },
    #[error("pod {pod}: annotation {annotation} is empty")]
    EmptyAnnotation {
        pod: String,
        annotation: &'static str,
    },
    #[error(
        "pod {pod}: annotation {ANNOTATION_GANG_NAME}={gang:?} needs \
         {ANNOTATION_GANG_MIN_MEMBER} (the gang's minimum member count)"
    )]
    MissingMinMember { pod: String, gang: String },
    #[error("PodGroup {pod_group} not found")]
    PodGroupNotFound { pod_group: GangKey },
    #[error("PodGroup {pod_group}: spec.minMember is {value}; it must be at least 1")]
    InvalidPodGroupMinMember { pod_group: GangKey, value: i32 },
    #[error("PodGroup {pod_group}: spec.scheduleTimeoutSeconds is {value}; it must be at least 1")]
    InvalidPodGroupTimeout { pod_group: GangKey, value: i32 },
    #[error("gang {gang}: minimum member count unknown (for an upstream gang, read minCount from its PodGroup or Workload first)")]
    MinMemberUnknown { gang: GangKey },
    #[error("{group}: uses the basic scheduling policy, not gang")]
    UpstreamNotGang { group: String },
    #[error("{group}: {field} {problem}")]
    UpstreamInvalid {
        group: String,
        field: &'static str,
        problem: String,
    },
    #[error("pod {pod}: {problem}")]
    AutoGang { pod: String, problem: String },
    #[error("Workload {workload}: has no pod group {pod_group:?} in spec.podGroups or spec.podGroupTemplates")]
    UpstreamPodGroupNotInWorkload { workload: String, pod_group: String },
}

/// The gang `pod` belongs to through the scheduler-plugins label or Phalanx's
/// annotation; `None` if it declares neither (see [`upstream_gang_of`] for the
/// upstream form). An empty label is no gang, as in scheduler-plugins.
pub fn gang_of(pod: &Pod) -> Result<Option<GangMembership>, GangSpecError> {
    let pod_name = pod_display_name(pod);
    let no_annotations = BTreeMap::new();
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&no_annotations);
    let Some((name, source)) = declared_gang_name(pod, annotations, &pod_name)? else {
        return Ok(None);
    };
    let min_member = number_annotation(
        annotations,
        ANNOTATION_GANG_MIN_MEMBER,
        &pod_name,
        u32::MAX.into(),
    )?
    .map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    if source == GangSource::Annotation && min_member.is_none() {
        return Err(GangSpecError::MissingMinMember {
            pod: pod_name,
            gang: name,
        });
    }
    let timeout = number_annotation(
        annotations,
        ANNOTATION_GANG_TIMEOUT_SECONDS,
        &pod_name,
        u64::MAX,
    )?
    .map(Duration::from_secs);
    let topology_key = text_annotation(annotations, ANNOTATION_GANG_TOPOLOGY_KEY, &pod_name)?;
    Ok(Some(GangMembership {
        key: GangKey::new(pod_namespace(pod), name),
        source,
        min_member,
        timeout,
        topology_key,
        upstream: None,
    }))
}

/// The optional gang annotations of a pod, for a gang whose name comes from
/// elsewhere (its owner).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodGangOptions {
    /// `phalanx.dev/gang-min-member`.
    pub min_member: Option<u32>,
    /// `phalanx.dev/gang-timeout-seconds`.
    pub timeout: Option<Duration>,
    /// `phalanx.dev/gang-topology-key`.
    pub topology_key: Option<String>,
}

/// Reads [`PodGangOptions`]; a malformed one is an error naming the pod and
/// the annotation, as in [`gang_of`].
pub fn pod_gang_options(pod: &Pod) -> Result<PodGangOptions, GangSpecError> {
    let pod_name = pod_display_name(pod);
    let no_annotations = BTreeMap::new();
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&no_annotations);
    let min_member = number_annotation(
        annotations,
        ANNOTATION_GANG_MIN_MEMBER,
        &pod_name,
        u32::MAX.into(),
    )?
    .map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    let timeout = number_annotation(
        annotations,
        ANNOTATION_GANG_TIMEOUT_SECONDS,
        &pod_name,
        u64::MAX,
    )?
    .map(Duration::from_secs);
    let topology_key = text_annotation(annotations, ANNOTATION_GANG_TOPOLOGY_KEY, &pod_name)?;
    Ok(PodGangOptions {
        min_member,
        timeout,
        topology_key,
    })
}

/// The gang's name and form: the label wins over the annotation.
fn declared_gang_name(
    pod: &Pod,
    annotations: &BTreeMap<String, String>,
    pod_name: &str,
) -> Result<Option<(String, GangSource)>, GangSpecError> {
    let label = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(LABEL_POD_GROUP))
        .map(|value| value.trim())
        .filter(|value| !value.is_empty());
    if let Some(pod_group) = label {
        return Ok(Some((pod_group.to_owned(), GangSource::PodGroup)));
    }
    let gang = text_annotation(annotations, ANNOTATION_GANG_NAME, pod_name)?;
    Ok(gang.map(|name| (name, GangSource::Annotation)))
}

/// An optional annotation holding an integer from 1 to `max`.
fn number_annotation(
    annotations: &BTreeMap<String, String>,
    annotation: &'static str,
    pod_name: &str,
    max: u64,
) -> Result<Option<u64>, GangSpecError> {
    let Some(value) = annotations.get(annotation) else {
        return Ok(None);
    };
    match value.trim().parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(Some(n)),
        _ => Err(GangSpecError::InvalidAnnotationNumber {
            pod: pod_name.to_owned(),
            annotation,
            value: value.clone(),
            max,
        }),
    }
}

/// An optional annotation that, when present, must not be blank.
fn text_annotation(
    annotations: &BTreeMap<String, String>,
    annotation: &'static str,
    pod_name: &str,
) -> Result<Option<String>, GangSpecError> {
    let Some(value) = annotations.get(annotation) else {
        return Ok(None);
    };
    let value = value.trim();
    if value.is_empty() {
        return Err(GangSpecError::EmptyAnnotation {
            pod: pod_name.to_owned(),
            annotation,
        });
    }
    Ok(Some(value.to_owned()))
}

/// Pods read from the API always have a namespace; "default" is what kubectl
/// assumes for one that does not (hand-built test objects).
fn pod_namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("default")
}

/// "namespace/name" for messages.
fn pod_display_name(pod: &Pod) -> String {
    let name = pod
        .metadata
        .name
        .as_deref()
        .or(pod.metadata.generate_name.as_deref())
        .unwrap_or("<unnamed>");
    format!("{}/{}", pod_namespace(pod), name)
}

/// What a gang gets when its declaration says nothing (scheduler configuration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GangDefaults {
    pub timeout: Duration,
    pub topology_key: Option<String>,
}

/// A gang's resolved policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GangPolicy {
    pub min_member: usize,
    pub timeout: Duration,
    pub topology_key: Option<String>,
}

/// Resolves a gang's policy. For the PodGroup form the `PodGroup` object is
/// authoritative for `minMember`, and its `scheduleTimeoutSeconds` wins over the
/// timeout annotation and the default. The other forms need `m.min_member` (the
/// annotation, or an upstream gang's `minCount` filled in by the caller).
pub fn gang_policy(
    m: &GangMembership,
    pod_group: Option<&PodGroup>,
    defaults: &GangDefaults,
) -> Result<GangPolicy, GangSpecError> {
    let (min_member, declared_timeout) = match m.source {
        GangSource::PodGroup => pod_group_policy(&m.key, pod_group)?,
        GangSource::Annotation | GangSource::Upstream | GangSource::Owner => {
            let min_member = m
                .min_member
                .ok_or_else(|| GangSpecError::MinMemberUnknown {
                    gang: m.key.clone(),
                })?;
            (min_member, None)
        }
    };
    Ok(GangPolicy {
        min_member: usize::try_from(min_member).unwrap_or(usize::MAX),
        timeout: declared_timeout.or(m.timeout).unwrap_or(defaults.timeout),
        topology_key: m
            .topology_key
            .clone()
            .or_else(|| defaults.topology_key.clone()),
    })
}

/// `minMember` and `scheduleTimeoutSeconds` of a scheduler-plugins PodGroup.
fn pod_group_policy(
    key: &GangKey,
    pod_group: Option<&PodGroup>,
) -> Result<(u32, Option<Duration>), GangSpecError> {
    let pod_group = pod_group.ok_or_else(|| GangSpecError::PodGroupNotFound {
        pod_group: key.clone(),
    })?;
    let min_member = pod_group.spec.min_member;
    let min_member = u32::try_from(min_member)
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| GangSpecError::InvalidPodGroupMinMember {
            pod_group: key.clone(),
            value: min_member,
        })?;
    let timeout = match pod_group.spec.schedule_timeout_seconds {
        None => None,
        Some(seconds) => Some(
            u64::try_from(seconds)
                .ok()
                .filter(|s| *s >= 1)
                .map(Duration::from_secs)
                .ok_or_else(|| GangSpecError::InvalidPodGroupTimeout {
                    pod_group: key.clone(),
                    value: seconds,
                })?,
        ),
    };
    Ok((min_member, timeout))
}

/// The upstream gang a pod joins through `spec.schedulingGroup.podGroupName`
/// (Kubernetes 1.36+) or `spec.workloadRef` (1.35), from the pod's raw JSON.
/// `None` when it names neither, or names one incompletely (a reference missing
/// its group name cannot be followed; the API server would have rejected it).
/// `min_member` is left empty: it lives on the group ([`upstream_min_member`]).
pub fn upstream_gang_of(pod_json: &Value) -> Option<GangMembership> {
    let namespace = pod_json
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .filter(|ns| !ns.is_empty())
        .unwrap_or("default");
    let spec = pod_json.get("spec")?;
    let (name, upstream) = scheduling_group_ref(spec).or_else(|| workload_ref(spec))?;
    Some(GangMembership {
        key: GangKey::new(namespace, name),
        source: GangSource::Upstream,
        min_member: None,
        timeout: None,
        topology_key: None,
        upstream: Some(upstream),
    })
}

/// A non-empty string field.
fn text_field<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get(field)?.as_str().filter(|s| !s.is_empty())
}

/// `spec.schedulingGroup.podGroupName`.
fn scheduling_group_ref(spec: &Value) -> Option<(String, UpstreamGroupRef)> {
    let name = text_field(spec.get("schedulingGroup")?, "podGroupName")?;
    Some((
        name.to_owned(),
        UpstreamGroupRef::PodGroup {
            name: name.to_owned(),
        },
    ))
}

/// `spec.workloadRef.{name, podGroup, podGroupReplicaKey}`. Each replica is its
/// own gang, so the replica key is part of the gang's name.
fn workload_ref(spec: &Value) -> Option<(String, UpstreamGroupRef)> {
    let reference = spec.get("workloadRef")?;
    let workload = text_field(reference, "name")?;
    let pod_group = text_field(reference, "podGroup")?;
    let replica_key = text_field(reference, "podGroupReplicaKey");
    let gang_name = match replica_key {
        Some(replica) => format!("{workload}/{pod_group}/{replica}"),
        None => format!("{workload}/{pod_group}"),
    };
    Some((
        gang_name,
        UpstreamGroupRef::Workload {
            workload: workload.to_owned(),
            pod_group: pod_group.to_owned(),
            replica_key: replica_key.map(str::to_owned),
        },
    ))
}

/// `gang.minCount` of an upstream group: a `scheduling.k8s.io` PodGroup object
/// (`spec.schedulingPolicy`), or a Workload's `spec.podGroups[]` entry (`policy`)
/// or `spec.podGroupTemplates[]` entry (`schedulingPolicy`). A group with the
/// basic policy is not a gang ([`GangSpecError::UpstreamNotGang`]): its pods are
/// scheduled one by one.
pub fn upstream_min_member(group_json: &Value) -> Result<u32, GangSpecError> {
    let group = upstream_group_name(group_json);
    let policy = [
        "/spec/schedulingPolicy",
        "/schedulingPolicy",
        "/policy",
        "/spec/policy",
    ]
    .iter()
    .find_map(|path| group_json.pointer(path).filter(|p| p.is_object()))
    .ok_or_else(|| GangSpecError::UpstreamInvalid {
        group: group.clone(),
        field: "schedulingPolicy",
        problem: "is missing".to_owned(),
    })?;
    if let Some(gang) = policy.get("gang").filter(|g| !g.is_null()) {
        return min_count(gang, group);
    }
    if policy.get("basic").is_some_and(|b| !b.is_null()) {
        return Err(GangSpecError::UpstreamNotGang { group });
    }
    Err(GangSpecError::UpstreamInvalid {
        group,
        field: "schedulingPolicy",
        problem: "sets neither gang nor basic".to_owned(),
    })
}

/// `gang.minCount`: a positive integer. Newer versions let a controller default
/// it; until one has, the gang cannot be scheduled.
fn min_count(gang: &Value, group: String) -> Result<u32, GangSpecError> {
    let invalid = |problem: String| GangSpecError::UpstreamInvalid {
        group: group.clone(),
        field: "gang.minCount",
        problem,
    };
    let value = gang
        .get("minCount")
        .filter(|v| !v.is_null())
        .ok_or_else(|| invalid("is missing".to_owned()))?;
    value
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n >= 1)
        .ok_or_else(|| invalid(format!("is {value}; it must be a positive integer")))
}

/// `minCount` of the pod group `pod_group` inside a Workload (`spec.podGroups`
/// in v1alpha1, `spec.podGroupTemplates` later).
pub fn upstream_workload_min_member(
    workload_json: &Value,
    pod_group: &str,
) -> Result<u32, GangSpecError> {
    let entry = ["/spec/podGroups", "/spec/podGroupTemplates"]
        .iter()
        .filter_map(|path| workload_json.pointer(path).and_then(Value::as_array))
        .flatten()
        .find(|entry| entry.get("name").and_then(Value::as_str) == Some(pod_group));
    match entry {
        Some(entry) => upstream_min_member(entry),
        None => Err(GangSpecError::UpstreamPodGroupNotInWorkload {
            workload: object_name(workload_json).unwrap_or_else(|| "<unnamed>".to_owned()),
            pod_group: pod_group.to_owned(),
        }),
    }
}

/// "namespace/name" of an object's metadata, if it has a name.
fn object_name(object: &Value) -> Option<String> {
    let name = object.pointer("/metadata/name")?.as_str()?;
    let namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    Some(format!("{namespace}/{name}"))
}

/// How messages name an upstream group: the object, or a Workload's entry.
fn upstream_group_name(group_json: &Value) -> String {
    if let Some(name) = object_name(group_json) {
        return format!("scheduling.k8s.io PodGroup {name}");
    }
    match group_json.get("name").and_then(Value::as_str) {
        Some(name) => format!("Workload pod group {name:?}"),
        None => "upstream pod group".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(labels: Value, annotations: Value) -> Pod {
        serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "worker-0",
                "namespace": "ml",
                "labels": labels,
                "annotations": annotations,
            },
            "spec": { "containers": [{ "name": "main", "image": "trainer" }] },
        }))
        .unwrap()
    }

    fn pod_group(min_member: i32, timeout: Option<i32>) -> PodGroup {
        serde_json::from_value(json!({
            "apiVersion": "scheduling.x-k8s.io/v1alpha1",
            "kind": "PodGroup",
            "metadata": { "name": "train", "namespace": "ml" },
            "spec": { "minMember": min_member, "scheduleTimeoutSeconds": timeout },
        }))
        .unwrap()
    }

    fn defaults() -> GangDefaults {
        GangDefaults {
            timeout: Duration::from_secs(600),
            topology_key: Some("topology.kubernetes.io/zone".to_owned()),
        }
    }

    fn annotation_gang(min_member: &str) -> Pod {
        pod(
            json!({}),
            json!({ ANNOTATION_GANG_NAME: "train", ANNOTATION_GANG_MIN_MEMBER: min_member }),
        )
    }

    #[test]
    fn pod_without_gang_has_none() {
        assert_eq!(gang_of(&pod(json!({}), json!({}))).unwrap(), None);
        let bare: Pod = serde_json::from_value(json!({ "metadata": { "name": "p" } })).unwrap();
        assert_eq!(gang_of(&bare).unwrap(), None);
    }

    #[test]
    fn pod_group_label_names_the_gang() {
        let m = gang_of(&pod(json!({ LABEL_POD_GROUP: "train" }), json!({})))
            .unwrap()
            .unwrap();
        assert_eq!(m.key, GangKey::new("ml", "train"));
        assert_eq!(m.source, GangSource::PodGroup);
        assert_eq!(m.min_member, None);
        assert_eq!(m.upstream, None);
    }

    #[test]
    fn label_wins_over_annotation_and_takes_its_options() {
        let p = pod(
            json!({ LABEL_POD_GROUP: "from-label" }),
            json!({
                ANNOTATION_GANG_NAME: "from-annotation",
                ANNOTATION_GANG_MIN_MEMBER: "3",
                ANNOTATION_GANG_TIMEOUT_SECONDS: "90",
                ANNOTATION_GANG_TOPOLOGY_KEY: "rack",
            }),
        );
        let m = gang_of(&p).unwrap().unwrap();
        assert_eq!(m.key.name, "from-label");
        assert_eq!(m.source, GangSource::PodGroup);
        assert_eq!(m.min_member, Some(3));
        assert_eq!(m.timeout, Some(Duration::from_secs(90)));
        assert_eq!(m.topology_key.as_deref(), Some("rack"));
    }

    #[test]
    fn empty_label_is_no_gang_as_in_scheduler_plugins() {
        assert_eq!(
            gang_of(&pod(json!({ LABEL_POD_GROUP: "" }), json!({}))).unwrap(),
            None
        );
    }

    #[test]
    fn annotation_form_needs_min_member() {
        let m = gang_of(&annotation_gang("4")).unwrap().unwrap();
        assert_eq!(m.key, GangKey::new("ml", "train"));
        assert_eq!(m.source, GangSource::Annotation);
        assert_eq!(m.min_member, Some(4));

        let err = gang_of(&pod(json!({}), json!({ ANNOTATION_GANG_NAME: "train" }))).unwrap_err();
        assert!(matches!(err, GangSpecError::MissingMinMember { .. }));
        let message = err.to_string();
        assert!(message.contains("ml/worker-0"), "{message}");
        assert!(message.contains(ANNOTATION_GANG_MIN_MEMBER), "{message}");
    }

    #[test]
    fn malformed_min_member_is_an_error_naming_pod_and_annotation() {
        for bad in ["0", "-1", "four", "", "1.5", "4294967296"] {
            let err = gang_of(&annotation_gang(bad)).unwrap_err();
            let message = err.to_string();
            assert!(
                matches!(
                    err,
                    GangSpecError::InvalidAnnotationNumber {
                        annotation: ANNOTATION_GANG_MIN_MEMBER,
                        ..
                    }
                ),
                "{bad:?}: {message}"
            );
            assert!(message.contains("ml/worker-0"), "{message}");
            assert!(message.contains(ANNOTATION_GANG_MIN_MEMBER), "{message}");
        }
        assert_eq!(
            gang_of(&annotation_gang(" 4 "))
                .unwrap()
                .unwrap()
                .min_member,
            Some(4)
        );
    }

    #[test]
    fn malformed_min_member_on_label_form_is_an_error_too() {
        let p = pod(
            json!({ LABEL_POD_GROUP: "train" }),
            json!({ ANNOTATION_GANG_MIN_MEMBER: "many" }),
        );
        assert!(matches!(
            gang_of(&p),
            Err(GangSpecError::InvalidAnnotationNumber { .. })
        ));
    }

    #[test]
    fn malformed_timeout_is_an_error() {
        for bad in ["0", "soon", "-5", "18446744073709551616"] {
            let p = pod(
                json!({ LABEL_POD_GROUP: "train" }),
                json!({ ANNOTATION_GANG_TIMEOUT_SECONDS: bad }),
            );
            let message = gang_of(&p).unwrap_err().to_string();
            assert!(
                message.contains(ANNOTATION_GANG_TIMEOUT_SECONDS),
                "{message}"
            );
        }
    }

    #[test]
    fn empty_gang_name_or_topology_key_is_an_error() {
        let p = pod(
            json!({}),
            json!({ ANNOTATION_GANG_NAME: " ", ANNOTATION_GANG_MIN_MEMBER: "2" }),
        );
        let err = gang_of(&p).unwrap_err();
        assert_eq!(
            err,
            GangSpecError::EmptyAnnotation {
                pod: "ml/worker-0".to_owned(),
                annotation: ANNOTATION_GANG_NAME
            }
        );
        let p = pod(
            json!({ LABEL_POD_GROUP: "train" }),
            json!({ ANNOTATION_GANG_TOPOLOGY_KEY: "" }),
        );
        assert!(gang_of(&p)
            .unwrap_err()
            .to_string()
            .contains(ANNOTATION_GANG_TOPOLOGY_KEY));
    }

    #[test]
    fn pod_group_policy_comes_from_the_pod_group() {
        let m = gang_of(&pod(json!({ LABEL_POD_GROUP: "train" }), json!({})))
            .unwrap()
            .unwrap();
        let policy = gang_policy(&m, Some(&pod_group(8, Some(120))), &defaults()).unwrap();
        assert_eq!(
            policy,
            GangPolicy {
                min_member: 8,
                timeout: Duration::from_secs(120),
                topology_key: Some("topology.kubernetes.io/zone".to_owned()),
            }
        );
        let policy = gang_policy(&m, Some(&pod_group(8, None)), &defaults()).unwrap();
        assert_eq!(policy.timeout, Duration::from_secs(600), "the default");
    }

    #[test]
    fn pod_group_wins_over_annotations_for_min_member_and_timeout() {
        let p = pod(
            json!({ LABEL_POD_GROUP: "train" }),
            json!({
                ANNOTATION_GANG_MIN_MEMBER: "2",
                ANNOTATION_GANG_TIMEOUT_SECONDS: "30",
                ANNOTATION_GANG_TOPOLOGY_KEY: "rack",
            }),
        );
        let m = gang_of(&p).unwrap().unwrap();
        let policy = gang_policy(&m, Some(&pod_group(8, Some(120))), &defaults()).unwrap();
        assert_eq!(policy.min_member, 8);
        assert_eq!(policy.timeout, Duration::from_secs(120));
        assert_eq!(policy.topology_key.as_deref(), Some("rack"));
        // Without scheduleTimeoutSeconds the annotation beats the default.
        let policy = gang_policy(&m, Some(&pod_group(8, None)), &defaults()).unwrap();
        assert_eq!(policy.timeout, Duration::from_secs(30));
    }

    #[test]
    fn missing_pod_group_is_an_error() {
        let m = gang_of(&pod(json!({ LABEL_POD_GROUP: "train" }), json!({})))
            .unwrap()
            .unwrap();
        let err = gang_policy(&m, None, &defaults()).unwrap_err();
        assert_eq!(err.to_string(), "PodGroup ml/train not found");
    }

    #[test]
    fn invalid_pod_group_numbers_are_errors() {
        let m = gang_of(&pod(json!({ LABEL_POD_GROUP: "train" }), json!({})))
            .unwrap()
            .unwrap();
        for min_member in [0, -3] {
            let err = gang_policy(&m, Some(&pod_group(min_member, None)), &defaults()).unwrap_err();
            let message = err.to_string();
            assert!(
                message.contains("ml/train") && message.contains("spec.minMember"),
                "{message}"
            );
        }
        for timeout in [0, -1] {
            let err = gang_policy(&m, Some(&pod_group(2, Some(timeout))), &defaults()).unwrap_err();
            assert!(
                err.to_string().contains("spec.scheduleTimeoutSeconds"),
                "{err}"
            );
        }
    }

    #[test]
    fn annotation_policy_uses_annotations_then_defaults() {
        let m = gang_of(&annotation_gang("4")).unwrap().unwrap();
        let policy = gang_policy(&m, None, &defaults()).unwrap();
        assert_eq!(policy.min_member, 4);
        assert_eq!(policy.timeout, Duration::from_secs(600));
        let no_min = GangMembership {
            min_member: None,
            ..m
        };
        assert!(matches!(
            gang_policy(&no_min, None, &defaults()),
            Err(GangSpecError::MinMemberUnknown { .. })
        ));
    }

    #[test]
    fn upstream_scheduling_group_is_read_from_raw_json() {
        let p = json!({
            "metadata": { "name": "worker-0", "namespace": "ml" },
            "spec": { "schedulingGroup": { "podGroupName": "training-worker-0" } },
        });
        let m = upstream_gang_of(&p).unwrap();
        assert_eq!(m.key, GangKey::new("ml", "training-worker-0"));
        assert_eq!(m.source, GangSource::Upstream);
        assert_eq!(
            m.upstream,
            Some(UpstreamGroupRef::PodGroup {
                name: "training-worker-0".to_owned()
            })
        );
    }

    #[test]
    fn upstream_workload_ref_makes_one_gang_per_replica() {
        let p = json!({
            "metadata": { "name": "worker-0", "namespace": "ml" },
            "spec": { "workloadRef": { "name": "job", "podGroup": "workers" } },
        });
        assert_eq!(
            upstream_gang_of(&p).unwrap().key,
            GangKey::new("ml", "job/workers")
        );
        let p = json!({
            "metadata": { "name": "worker-0" },
            "spec": { "workloadRef": { "name": "job", "podGroup": "workers", "podGroupReplicaKey": "1" } },
        });
        let m = upstream_gang_of(&p).unwrap();
        assert_eq!(m.key, GangKey::new("default", "job/workers/1"));
        assert_eq!(
            m.upstream,
            Some(UpstreamGroupRef::Workload {
                workload: "job".to_owned(),
                pod_group: "workers".to_owned(),
                replica_key: Some("1".to_owned()),
            })
        );
    }

    #[test]
    fn upstream_scheduling_group_wins_over_workload_ref() {
        let p = json!({ "spec": {
            "schedulingGroup": { "podGroupName": "pg" },
            "workloadRef": { "name": "job", "podGroup": "workers" },
        }});
        assert_eq!(upstream_gang_of(&p).unwrap().key.name, "pg");
    }

    #[test]
    fn upstream_incomplete_or_odd_references_are_no_gang() {
        for p in [
            json!(null),
            json!("pod"),
            json!({}),
            json!({ "spec": {} }),
            json!({ "spec": { "schedulingGroup": {} } }),
            json!({ "spec": { "schedulingGroup": { "podGroupName": "" } } }),
            json!({ "spec": { "schedulingGroup": { "podGroupName": 7 } } }),
            json!({ "spec": { "workloadRef": { "name": "job" } } }),
            json!({ "spec": { "workloadRef": { "podGroup": "workers" } } }),
            json!({ "spec": { "workloadRef": "job" } }),
        ] {
            assert_eq!(upstream_gang_of(&p), None, "{p}");
        }
    }

    #[test]
    fn upstream_min_member_reads_every_shape() {
        let standalone = json!({
            "apiVersion": "scheduling.k8s.io/v1alpha2",
            "kind": "PodGroup",
            "metadata": { "name": "pg", "namespace": "ml" },
            "spec": { "schedulingPolicy": { "gang": { "minCount": 4 } } },
        });
        assert_eq!(upstream_min_member(&standalone).unwrap(), 4);
        let v1alpha1_entry = json!({ "name": "workers", "policy": { "gang": { "minCount": 3 } } });
        assert_eq!(upstream_min_member(&v1alpha1_entry).unwrap(), 3);
        let template =
            json!({ "name": "workers", "schedulingPolicy": { "gang": { "minCount": 2 } } });
        assert_eq!(upstream_min_member(&template).unwrap(), 2);
    }

    #[test]
    fn upstream_workload_entry_is_found_by_name() {
        let v1alpha1 = json!({
            "apiVersion": "scheduling.k8s.io/v1alpha1",
            "kind": "Workload",
            "metadata": { "name": "job", "namespace": "ml" },
            "spec": { "podGroups": [
                { "name": "driver", "policy": { "basic": {} } },
                { "name": "workers", "policy": { "gang": { "minCount": 4 } } },
            ]},
        });
        assert_eq!(
            upstream_workload_min_member(&v1alpha1, "workers").unwrap(),
            4
        );
        assert!(matches!(
            upstream_workload_min_member(&v1alpha1, "driver"),
            Err(GangSpecError::UpstreamNotGang { .. })
        ));
        let err = upstream_workload_min_member(&v1alpha1, "ps").unwrap_err();
        assert_eq!(
            err.to_string(),
            "Workload ml/job: has no pod group \"ps\" in spec.podGroups or spec.podGroupTemplates"
        );
        let v1alpha2 = json!({
            "metadata": { "name": "job" },
            "spec": { "podGroupTemplates": [
                { "name": "workers", "schedulingPolicy": { "gang": { "minCount": 8 } } },
            ]},
        });
        assert_eq!(
            upstream_workload_min_member(&v1alpha2, "workers").unwrap(),
            8
        );
        assert!(upstream_workload_min_member(&json!(null), "workers").is_err());
    }

    #[test]
    fn upstream_bad_groups_are_errors_naming_group_and_field() {
        let group =
            |spec: Value| json!({ "metadata": { "name": "pg", "namespace": "ml" }, "spec": spec });
        let cases = [
            (group(json!({})), "schedulingPolicy is missing"),
            (
                group(json!({ "schedulingPolicy": {} })),
                "sets neither gang nor basic",
            ),
            (
                group(json!({ "schedulingPolicy": { "gang": {} } })),
                "gang.minCount is missing",
            ),
            (
                group(json!({ "schedulingPolicy": { "gang": { "minCount": null } } })),
                "gang.minCount is missing",
            ),
            (
                group(json!({ "schedulingPolicy": { "gang": { "minCount": 0 } } })),
                "gang.minCount is 0",
            ),
            (
                group(json!({ "schedulingPolicy": { "gang": { "minCount": -2 } } })),
                "gang.minCount is -2",
            ),
            (
                group(json!({ "schedulingPolicy": { "gang": { "minCount": "4" } } })),
                "gang.minCount is \"4\"",
            ),
            (
                group(json!({ "schedulingPolicy": { "gang": { "minCount": 2.5 } } })),
                "gang.minCount is 2.5",
            ),
            (
                group(json!({ "schedulingPolicy": { "gang": { "minCount": 5_000_000_000u64 } } })),
                "must be a positive integer",
            ),
            (
                group(json!({ "schedulingPolicy": "gang" })),
                "schedulingPolicy is missing",
            ),
        ];
        for (json, expected) in cases {
            let message = upstream_min_member(&json).unwrap_err().to_string();
            assert!(
                message.contains("scheduling.k8s.io PodGroup ml/pg"),
                "{message}"
            );
            assert!(message.contains(expected), "{message} lacks {expected}");
        }
        let basic = group(json!({ "schedulingPolicy": { "basic": {} } }));
        assert_eq!(
            upstream_min_member(&basic).unwrap_err().to_string(),
            "scheduling.k8s.io PodGroup ml/pg: uses the basic scheduling policy, not gang"
        );
        assert!(upstream_min_member(&json!(null)).is_err());
        assert!(upstream_min_member(&json!([])).is_err());
    }

    #[test]
    fn upstream_policy_needs_min_count_filled_in() {
        let m =
            upstream_gang_of(&json!({ "spec": { "schedulingGroup": { "podGroupName": "pg" } } }))
                .unwrap();
        assert!(matches!(
            gang_policy(&m, None, &defaults()),
            Err(GangSpecError::MinMemberUnknown { .. })
        ));
        let m = GangMembership {
            min_member: Some(
                upstream_min_member(&json!({ "policy": { "gang": { "minCount": 2 } } })).unwrap(),
            ),
            ..m
        };
        assert_eq!(gang_policy(&m, None, &defaults()).unwrap().min_member, 2);
    }
}
