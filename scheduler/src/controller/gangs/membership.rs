//! Which gang a pod belongs to, and that gang's policy.
//!
//! One internal notion of a gang (a minimum member count, a timeout, topology
//! levels, a priority), read from the three forms users already write:
//!
//! 1. the scheduler-plugins label `scheduling.x-k8s.io/pod-group` naming a
//!    `PodGroup` (`scheduling.x-k8s.io/v1alpha1`) in the pod's namespace;
//! 2. Phalanx's annotation `phalanx.dev/gang` with `phalanx.dev/gang-min-member`;
//! 3. Kubernetes' own gang scheduling (1.37, `scheduling.k8s.io/v1beta1`): the
//!    pod's `spec.schedulingGroup.podGroupName` names a `PodGroup` in its
//!    namespace, whose policy [`super::upstream`] reads.
//!
//! A pod belongs to one gang at most. When it declares more than one form, they
//! must name the same gang (else [`GangSpecError::ConflictingGangs`], naming
//! both fields); the object of the strongest form present is the policy source:
//! the upstream PodGroup, else the scheduler-plugins PodGroup, else the
//! annotations. (Kubernetes 1.35's pod `spec.workloadRef` is not read: the 1.37
//! API has no such pod field.)
//!
//! The optional annotations `phalanx.dev/gang-min-member`,
//! `phalanx.dev/gang-timeout-seconds` and `phalanx.dev/gang-topology-key` are read
//! for every form, so a PodGroup user can add a timeout or a topology preference
//! without a new field; a PodGroup's own fields win where both say something.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::scheduling::v1alpha3::CompositePodGroup;
use k8s_openapi::api::scheduling::v1beta1::PodGroup as UpstreamPodGroup;
use phalanx_api::{
    PodGroup, ANNOTATION_GANG_MIN_MEMBER, ANNOTATION_GANG_NAME, ANNOTATION_GANG_TIMEOUT_SECONDS,
    ANNOTATION_GANG_TOPOLOGY_KEY, LABEL_POD_GROUP,
};

use super::upstream::{self, GangDisruption, PreemptionPolicy, UpstreamPolicy};

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

/// The form a gang was declared in: the source of its policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GangSource {
    /// scheduler-plugins `PodGroup` named by the `scheduling.x-k8s.io/pod-group` label.
    PodGroup,
    /// `phalanx.dev/gang` and `phalanx.dev/gang-min-member` annotations.
    Annotation,
    /// `spec.schedulingGroup.podGroupName`: a `scheduling.k8s.io/v1beta1` PodGroup.
    Upstream,
    /// Found from the workload that owns the pod (`owners`): its minimum is
    /// derived from the owner's spec.
    Owner,
}

impl GangSource {
    /// Where a pod names a gang of this form, for messages.
    pub fn field(self) -> &'static str {
        match self {
            Self::PodGroup => FIELD_LABEL,
            Self::Annotation => FIELD_ANNOTATION,
            Self::Upstream => FIELD_SCHEDULING_GROUP,
            Self::Owner => "metadata.ownerReferences",
        }
    }
}

/// Where a pod may name its gang, for messages.
const FIELD_LABEL: &str = "label scheduling.x-k8s.io/pod-group";
const FIELD_ANNOTATION: &str = "annotation phalanx.dev/gang";
const FIELD_SCHEDULING_GROUP: &str = "spec.schedulingGroup.podGroupName";

/// A pod's gang, as the pod declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GangMembership {
    pub key: GangKey,
    pub source: GangSource,
    /// From `phalanx.dev/gang-min-member`.
    pub min_member: Option<u32>,
    /// From `phalanx.dev/gang-timeout-seconds`.
    pub timeout: Option<Duration>,
    /// From `phalanx.dev/gang-topology-key`.
    pub topology_key: Option<String>,
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
    #[error(
        "pod {pod}: {first_field}={first:?} and {second_field}={second:?} name different \
         gangs; a pod belongs to one gang at most, so it is not scheduled until they agree"
    )]
    ConflictingGangs {
        pod: String,
        first_field: &'static str,
        first: String,
        second_field: &'static str,
        second: String,
    },
    #[error("PodGroup {pod_group} not found")]
    PodGroupNotFound { pod_group: GangKey },
    #[error("PodGroup {pod_group}: spec.minMember is {value}; it must be at least 1")]
    InvalidPodGroupMinMember { pod_group: GangKey, value: i32 },
    #[error("PodGroup {pod_group}: spec.scheduleTimeoutSeconds is {value}; it must be at least 1")]
    InvalidPodGroupTimeout { pod_group: GangKey, value: i32 },
    #[error("gang {gang}: minimum member count unknown")]
    MinMemberUnknown { gang: GangKey },
    #[error("scheduling.k8s.io PodGroup {pod_group} not found")]
    UpstreamPodGroupNotFound { pod_group: GangKey },
    #[error("scheduling.k8s.io PodGroup {pod_group}: {field} {problem}")]
    UpstreamInvalid {
        pod_group: GangKey,
        field: &'static str,
        problem: String,
    },
    #[error(
        "scheduling.k8s.io PodGroup {pod_group}: spec.parentCompositePodGroupName names \
         CompositePodGroup {composite:?}, which is not found"
    )]
    CompositeNotFound {
        pod_group: GangKey,
        composite: String,
    },
    #[error(
        "scheduling.k8s.io PodGroup {pod_group}: spec.parentCompositePodGroupName names \
         CompositePodGroup {composite:?}, whose gang policy (minGroupCount {min_group_count}) \
         places sibling PodGroups together; Phalanx cannot place several PodGroups as one \
         gang yet, so it does not schedule this group rather than place it alone"
    )]
    CompositeGangUnsupported {
        pod_group: GangKey,
        composite: String,
        min_group_count: i32,
    },
    #[error("CompositePodGroup {composite}: {field} {problem}")]
    CompositeInvalid {
        composite: GangKey,
        field: &'static str,
        problem: String,
    },
    #[error("pod {pod}: {problem}")]
    AutoGang { pod: String, problem: String },
}

impl GangSpecError {
    /// The group's own spec is wrong (reported as `SchedulerError` on an
    /// upstream PodGroup), as opposed to something missing that may appear.
    pub fn is_invalid_group(&self) -> bool {
        matches!(
            self,
            Self::InvalidPodGroupMinMember { .. }
                | Self::InvalidPodGroupTimeout { .. }
                | Self::UpstreamInvalid { .. }
                | Self::CompositeGangUnsupported { .. }
                | Self::CompositeInvalid { .. }
        )
    }
}

/// The gang `pod` belongs to, through any of the three forms; `None` if it
/// declares none. An empty label or scheduling group is no gang.
pub fn gang_of(pod: &Pod) -> Result<Option<GangMembership>, GangSpecError> {
    let pod_name = pod_display_name(pod);
    let no_annotations = BTreeMap::new();
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&no_annotations);
    let Some((name, source)) = declared_gang_name(pod, annotations, &pod_name)? else {
        return Ok(None);
    };
    let PodGangOptions {
        min_member,
        timeout,
        topology_key,
    } = pod_gang_options(pod)?;
    if source == GangSource::Annotation && min_member.is_none() {
        return Err(GangSpecError::MissingMinMember {
            pod: pod_name,
            gang: name,
        });
    }
    Ok(Some(GangMembership {
        key: GangKey::new(pod_namespace(pod), name),
        source,
        min_member,
        timeout,
        topology_key,
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

/// The gang's name and policy source. Every form the pod uses must name the
/// same gang; the strongest present is the source (upstream, then the
/// scheduler-plugins PodGroup, then the annotations).
fn declared_gang_name(
    pod: &Pod,
    annotations: &BTreeMap<String, String>,
    pod_name: &str,
) -> Result<Option<(String, GangSource)>, GangSpecError> {
    let scheduling_group = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.scheduling_group.as_ref())
        .and_then(|group| group.pod_group_name.as_deref())
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| {
            (
                FIELD_SCHEDULING_GROUP,
                name.to_owned(),
                GangSource::Upstream,
            )
        });
    let label = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(LABEL_POD_GROUP))
        .map(|value| value.trim())
        .filter(|value| !value.is_empty())
        .map(|name| (FIELD_LABEL, name.to_owned(), GangSource::PodGroup));
    let annotation = text_annotation(annotations, ANNOTATION_GANG_NAME, pod_name)?
        .map(|name| (FIELD_ANNOTATION, name, GangSource::Annotation));
    // Strongest first: the first one present is the policy source.
    let declared: Vec<_> = [scheduling_group, label, annotation]
        .into_iter()
        .flatten()
        .collect();
    let Some((first_field, first, source)) = declared.first().cloned() else {
        return Ok(None);
    };
    if let Some((second_field, second, _)) = declared.iter().find(|(_, name, _)| *name != first) {
        return Err(GangSpecError::ConflictingGangs {
            pod: pod_name.to_owned(),
            first_field,
            first,
            second_field,
            second: second.clone(),
        });
    }
    Ok(Some((first, source)))
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

/// A node label whose values are the gang's topology domains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopologyLevel {
    pub key: String,
    /// Every member in one domain, or the gang is not placed (an upstream
    /// PodGroup's `schedulingConstraints.topology`); else one domain is
    /// preferred and the gang may span them (`phalanx.dev/gang-topology-key`,
    /// `gangs.topologyKey`).
    pub required: bool,
}

/// A gang's resolved policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GangPolicy {
    pub min_member: usize,
    pub timeout: Duration,
    /// Topology levels, tightest first: required ones, then the preferred one.
    pub topology: Vec<TopologyLevel>,
    /// The gang's place in the queue (an upstream PodGroup's `spec.priority`);
    /// `None`: its members' pod priority.
    pub priority: Option<i32>,
    /// `Never` keeps the gang from preempting (`scheduler_loop/preempt.rs`).
    pub preemption: Option<PreemptionPolicy>,
    /// Carried: Phalanx evicts a gang only whole, which every mode allows.
    pub disruption: Option<GangDisruption>,
}

/// How a declared gang is scheduled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GangRule {
    /// All of `min_member` or nothing.
    Gang(GangPolicy),
    /// An upstream PodGroup with the `basic` policy: each pod alone, in the
    /// group's queue slot.
    EachAlone { priority: Option<i32> },
}

/// The objects gangs read their policy from, as the watches last showed them.
#[derive(Clone, Copy, Debug)]
pub struct GangObjects<'a> {
    /// scheduler-plugins PodGroups.
    pub pod_groups: &'a HashMap<GangKey, PodGroup>,
    /// `scheduling.k8s.io/v1beta1` PodGroups.
    pub upstream: &'a HashMap<GangKey, UpstreamPodGroup>,
    /// `scheduling.k8s.io/v1alpha3` CompositePodGroups.
    pub composites: &'a HashMap<GangKey, CompositePodGroup>,
}

/// Resolves a gang's policy. For the PodGroup form the `PodGroup` object is
/// authoritative for `minMember`, and its `scheduleTimeoutSeconds` wins over the
/// timeout annotation and the default. For the upstream form the PodGroup's
/// policy, topology, priority and parent composite are read by
/// [`upstream::read_pod_group`]. The annotation form needs `m.min_member`.
pub fn gang_policy(
    m: &GangMembership,
    objects: GangObjects<'_>,
    defaults: &GangDefaults,
) -> Result<GangRule, GangSpecError> {
    let mut upstream_group = None;
    let (min_member, declared_timeout) = match m.source {
        GangSource::PodGroup => pod_group_policy(&m.key, objects.pod_groups.get(&m.key))?,
        GangSource::Annotation | GangSource::Owner => {
            let min_member = m
                .min_member
                .ok_or_else(|| GangSpecError::MinMemberUnknown {
                    gang: m.key.clone(),
                })?;
            (min_member, None)
        }
        GangSource::Upstream => {
            let group = upstream::read_pod_group(&m.key, objects.upstream, objects.composites)?;
            let min_count = match group.policy {
                UpstreamPolicy::Basic => {
                    return Ok(GangRule::EachAlone {
                        priority: group.priority,
                    })
                }
                UpstreamPolicy::Gang { min_count } => min_count,
            };
            upstream_group = Some(group);
            (min_count, None)
        }
    };
    let mut topology: Vec<TopologyLevel> = upstream_group
        .as_ref()
        .map(|g| {
            g.required_topology
                .iter()
                .map(|key| TopologyLevel {
                    key: key.clone(),
                    required: true,
                })
                .collect()
        })
        .unwrap_or_default();
    if let Some(key) = m
        .topology_key
        .clone()
        .or_else(|| defaults.topology_key.clone())
    {
        if !topology.iter().any(|level| level.key == key) {
            topology.push(TopologyLevel {
                key,
                required: false,
            });
        }
    }
    Ok(GangRule::Gang(GangPolicy {
        min_member: usize::try_from(min_member).unwrap_or(usize::MAX),
        timeout: declared_timeout.or(m.timeout).unwrap_or(defaults.timeout),
        topology,
        priority: upstream_group.as_ref().and_then(|g| g.priority),
        preemption: upstream_group.as_ref().and_then(|g| g.preemption),
        disruption: upstream_group.as_ref().and_then(|g| g.disruption),
    }))
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSchedulingGroup;
    use serde_json::{json, Value};

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

    /// Resolves `m`'s policy with at most one PodGroup of each kind present.
    fn policy_with(
        m: &GangMembership,
        pod_group: Option<PodGroup>,
        upstream: Option<Value>,
    ) -> Result<GangRule, GangSpecError> {
        let pod_groups: HashMap<GangKey, PodGroup> = pod_group
            .into_iter()
            .map(|pg| (GangKey::new("ml", "train"), pg))
            .collect();
        let upstream: HashMap<GangKey, UpstreamPodGroup> = upstream
            .into_iter()
            .map(|spec| {
                let pg = serde_json::from_value(json!({
                    "metadata": { "name": "train", "namespace": "ml" },
                    "spec": spec,
                }))
                .unwrap();
                (GangKey::new("ml", "train"), pg)
            })
            .collect();
        let objects = GangObjects {
            pod_groups: &pod_groups,
            upstream: &upstream,
            composites: &HashMap::new(),
        };
        gang_policy(m, objects, &defaults())
    }

    fn gang(rule: Result<GangRule, GangSpecError>) -> GangPolicy {
        match rule {
            Ok(GangRule::Gang(policy)) => policy,
            other => panic!("not a gang: {other:?}"),
        }
    }

    /// A pod naming its gang in `spec.schedulingGroup`, with labels and annotations.
    fn upstream_pod(group: &str, labels: Value, annotations: Value) -> Pod {
        let mut p = pod(labels, annotations);
        p.spec.as_mut().unwrap().scheduling_group = Some(PodSchedulingGroup {
            pod_group_name: Some(group.to_owned()),
        });
        p
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
        let policy = gang(policy_with(&m, Some(pod_group(8, Some(120))), None));
        assert_eq!(
            policy,
            GangPolicy {
                min_member: 8,
                timeout: Duration::from_secs(120),
                topology: vec![TopologyLevel {
                    key: "topology.kubernetes.io/zone".to_owned(),
                    required: false,
                }],
                priority: None,
                preemption: None,
                disruption: None,
            }
        );
        let policy = gang(policy_with(&m, Some(pod_group(8, None)), None));
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
        let policy = gang(policy_with(&m, Some(pod_group(8, Some(120))), None));
        assert_eq!(policy.min_member, 8);
        assert_eq!(policy.timeout, Duration::from_secs(120));
        assert_eq!(
            policy.topology,
            [TopologyLevel {
                key: "rack".to_owned(),
                required: false
            }]
        );
        // Without scheduleTimeoutSeconds the annotation beats the default.
        let policy = gang(policy_with(&m, Some(pod_group(8, None)), None));
        assert_eq!(policy.timeout, Duration::from_secs(30));
    }

    #[test]
    fn missing_pod_group_is_an_error() {
        let m = gang_of(&pod(json!({ LABEL_POD_GROUP: "train" }), json!({})))
            .unwrap()
            .unwrap();
        let err = policy_with(&m, None, None).unwrap_err();
        assert_eq!(err.to_string(), "PodGroup ml/train not found");
    }

    #[test]
    fn invalid_pod_group_numbers_are_errors() {
        let m = gang_of(&pod(json!({ LABEL_POD_GROUP: "train" }), json!({})))
            .unwrap()
            .unwrap();
        for min_member in [0, -3] {
            let err = policy_with(&m, Some(pod_group(min_member, None)), None).unwrap_err();
            let message = err.to_string();
            assert!(
                message.contains("ml/train") && message.contains("spec.minMember"),
                "{message}"
            );
        }
        for timeout in [0, -1] {
            let err = policy_with(&m, Some(pod_group(2, Some(timeout))), None).unwrap_err();
            assert!(
                err.to_string().contains("spec.scheduleTimeoutSeconds"),
                "{err}"
            );
        }
    }

    #[test]
    fn annotation_policy_uses_annotations_then_defaults() {
        let m = gang_of(&annotation_gang("4")).unwrap().unwrap();
        let policy = gang(policy_with(&m, None, None));
        assert_eq!(policy.min_member, 4);
        assert_eq!(policy.timeout, Duration::from_secs(600));
        let no_min = GangMembership {
            min_member: None,
            ..m
        };
        assert!(matches!(
            policy_with(&no_min, None, None),
            Err(GangSpecError::MinMemberUnknown { .. })
        ));
    }

    /// Which gang and policy source a pod gets from the forms it declares.
    #[test]
    fn precedence_table() {
        let a = |name: &str| json!({ ANNOTATION_GANG_NAME: name, ANNOTATION_GANG_MIN_MEMBER: "2" });
        let l = |name: &str| json!({ LABEL_POD_GROUP: name });
        /// The policy source, or the two fields named in the conflict.
        type Expected = Result<GangSource, (&'static str, &'static str)>;
        let cases: Vec<(&str, Pod, Expected)> = vec![
            (
                "label",
                pod(l("train"), json!({})),
                Ok(GangSource::PodGroup),
            ),
            (
                "annotation",
                pod(json!({}), a("train")),
                Ok(GangSource::Annotation),
            ),
            (
                "schedulingGroup",
                upstream_pod("train", json!({}), json!({})),
                Ok(GangSource::Upstream),
            ),
            (
                "label = annotation",
                pod(l("train"), a("train")),
                Ok(GangSource::PodGroup),
            ),
            (
                "schedulingGroup = label",
                upstream_pod("train", l("train"), json!({})),
                Ok(GangSource::Upstream),
            ),
            (
                "schedulingGroup = annotation",
                upstream_pod("train", json!({}), a("train")),
                Ok(GangSource::Upstream),
            ),
            (
                "all three agree",
                upstream_pod("train", l("train"), a("train")),
                Ok(GangSource::Upstream),
            ),
            (
                "label != annotation",
                pod(l("train"), a("other")),
                Err((FIELD_LABEL, FIELD_ANNOTATION)),
            ),
            (
                "schedulingGroup != label",
                upstream_pod("train", l("other"), json!({})),
                Err((FIELD_SCHEDULING_GROUP, FIELD_LABEL)),
            ),
            (
                "schedulingGroup != annotation",
                upstream_pod("train", json!({}), a("other")),
                Err((FIELD_SCHEDULING_GROUP, FIELD_ANNOTATION)),
            ),
            (
                "schedulingGroup = label != annotation",
                upstream_pod("train", l("train"), a("other")),
                Err((FIELD_SCHEDULING_GROUP, FIELD_ANNOTATION)),
            ),
        ];
        for (case, p, expected) in cases {
            match (gang_of(&p), expected) {
                (Ok(Some(m)), Ok(source)) => {
                    assert_eq!(m.source, source, "{case}");
                    assert_eq!(m.key, GangKey::new("ml", "train"), "{case}");
                }
                (Err(err), Err((first, second))) => {
                    let message = err.to_string();
                    assert!(
                        matches!(err, GangSpecError::ConflictingGangs { .. }),
                        "{case}: {message}"
                    );
                    assert!(
                        message.contains(first) && message.contains(second),
                        "{case}: {message}"
                    );
                    assert!(message.contains("ml/worker-0"), "{case}: {message}");
                }
                (got, expected) => panic!("{case}: got {got:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn upstream_form_needs_no_min_member_annotation_but_reads_the_others() {
        let p = upstream_pod(
            "train",
            json!({}),
            json!({ ANNOTATION_GANG_TIMEOUT_SECONDS: "90", ANNOTATION_GANG_TOPOLOGY_KEY: "rack" }),
        );
        let m = gang_of(&p).unwrap().unwrap();
        assert_eq!(m.timeout, Some(Duration::from_secs(90)));
        let empty = upstream_pod(" ", json!({}), json!({}));
        assert_eq!(gang_of(&empty).unwrap(), None, "an empty name is no gang");
    }

    #[test]
    fn upstream_policy_comes_from_the_upstream_pod_group() {
        let m = gang_of(&upstream_pod(
            "train",
            json!({}),
            json!({ ANNOTATION_GANG_TOPOLOGY_KEY: "rack", ANNOTATION_GANG_MIN_MEMBER: "9" }),
        ))
        .unwrap()
        .unwrap();
        let policy = gang(policy_with(
            &m,
            Some(pod_group(8, None)),
            Some(json!({
                "schedulingPolicy": { "gang": { "minCount": 3 } },
                "schedulingConstraints": { "topology": [{ "key": "block" }] },
                "priority": 50,
                "preemptionPolicy": "PreemptLowerPriority",
                "disruptionMode": { "single": {} },
            })),
        ));
        assert_eq!(
            policy,
            GangPolicy {
                min_member: 3,
                timeout: Duration::from_secs(600),
                topology: vec![
                    TopologyLevel {
                        key: "block".to_owned(),
                        required: true
                    },
                    TopologyLevel {
                        key: "rack".to_owned(),
                        required: false
                    },
                ],
                priority: Some(50),
                preemption: Some(PreemptionPolicy::PreemptLowerPriority),
                disruption: Some(GangDisruption::Single),
            }
        );
    }

    #[test]
    fn upstream_basic_policy_places_each_pod_alone() {
        let m = gang_of(&upstream_pod("train", json!({}), json!({})))
            .unwrap()
            .unwrap();
        assert_eq!(
            policy_with(
                &m,
                None,
                Some(json!({ "schedulingPolicy": { "basic": {} }, "priority": 7 }))
            ),
            Ok(GangRule::EachAlone { priority: Some(7) })
        );
    }

    #[test]
    fn missing_upstream_pod_group_names_it() {
        let m = gang_of(&upstream_pod("train", json!({}), json!({})))
            .unwrap()
            .unwrap();
        assert_eq!(
            policy_with(&m, Some(pod_group(2, None)), None)
                .unwrap_err()
                .to_string(),
            "scheduling.k8s.io PodGroup ml/train not found"
        );
    }
}
