//! Gangs found from the workload that owns the pods, for pods that declare none.
//!
//! A Kubeflow TrainJob, a JobSet, a training-operator PyTorchJob, a
//! LeaderWorkerSet group, a RayCluster or an indexed Job with parallelism =
//! completions only works when all its pods run at once; their operators say
//! so to gang schedulers by writing a PodGroup for them. Phalanx reads the
//! owner's spec instead, so that no PodGroup (and no gang label) is needed.
//!
//! The owners are summarised into an [`OwnerIndex`] as the watches deliver them
//! ([`OwnerRecord::from_job`], [`OwnerRecord::from_dynamic`]): the owner's
//! identity, its controller, the two Phalanx annotations, and the gang its spec
//! implies ([`Derived`]), computed once per spec change by the family's rule
//! (`job.rs`, `jobset.rs`, `training.rs`, `lws.rs`, `ray.rs`). Then
//! [`auto_gang_of`] follows a pod's owner chain through the index and says
//! which gang it is in ([`AutoGang`]). Pure: fed objects, no client.
//!
//! Gang keys start with the owner's kind (`JobSet/train/attempt-0`): object
//! names are lower case, so no key can equal a PodGroup's name, a `phalanx.dev/gang`
//! name or an upstream `workload/podGroup` key.

mod fields;
mod job;
mod jobset;
mod lws;
mod ray;
mod training;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::DynamicObject;
use phalanx_api::{ANNOTATION_AUTO_GANG, ANNOTATION_GANG_MIN_MEMBER};

use super::membership::{
    pod_gang_options, GangKey, GangMembership, GangSource, GangSpecError, PodGangOptions,
};
use crate::controller::served_apis::OptionalKind;

pub const JOBSET: OptionalKind = OptionalKind {
    group: "jobset.x-k8s.io",
    version: "v1alpha2",
    kind: "JobSet",
    plural: "jobsets",
};
pub const TRAINJOB: OptionalKind = OptionalKind {
    group: "trainer.kubeflow.org",
    version: "v1alpha1",
    kind: "TrainJob",
    plural: "trainjobs",
};
pub const PYTORCHJOB: OptionalKind = OptionalKind {
    group: "kubeflow.org",
    version: "v1",
    kind: "PyTorchJob",
    plural: "pytorchjobs",
};
pub const TFJOB: OptionalKind = OptionalKind {
    group: "kubeflow.org",
    version: "v1",
    kind: "TFJob",
    plural: "tfjobs",
};
pub const MPIJOB: OptionalKind = OptionalKind {
    group: "kubeflow.org",
    version: "v1",
    kind: "MPIJob",
    plural: "mpijobs",
};
pub const LEADERWORKERSET: OptionalKind = OptionalKind {
    group: "leaderworkerset.x-k8s.io",
    version: "v1",
    kind: "LeaderWorkerSet",
    plural: "leaderworkersets",
};
pub const RAYCLUSTER: OptionalKind = OptionalKind {
    group: "ray.io",
    version: "v1",
    kind: "RayCluster",
    plural: "rayclusters",
};

/// The operator kinds whose objects gangs are found from, watched where the
/// server serves them (batch/v1 Jobs are always served and watched typed).
pub const OWNER_KINDS: &[OptionalKind] = &[
    JOBSET,
    TRAINJOB,
    PYTORCHJOB,
    TFJOB,
    MPIJOB,
    LEADERWORKERSET,
    RAYCLUSTER,
];

/// A kind of workload object the auto-grouper reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OwnerKind {
    Job,
    JobSet,
    TrainJob,
    PyTorchJob,
    TfJob,
    MpiJob,
    LeaderWorkerSet,
    RayCluster,
}

impl OwnerKind {
    /// The kind of an `OwnerKinds` entry.
    pub fn of(kind: &OptionalKind) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.optional_kind().as_ref() == Some(kind))
    }

    const ALL: [Self; 8] = [
        Self::Job,
        Self::JobSet,
        Self::TrainJob,
        Self::PyTorchJob,
        Self::TfJob,
        Self::MpiJob,
        Self::LeaderWorkerSet,
        Self::RayCluster,
    ];

    /// The served kind behind it; `None` for batch/v1 Job (always served).
    pub fn optional_kind(self) -> Option<OptionalKind> {
        match self {
            Self::Job => None,
            Self::JobSet => Some(JOBSET),
            Self::TrainJob => Some(TRAINJOB),
            Self::PyTorchJob => Some(PYTORCHJOB),
            Self::TfJob => Some(TFJOB),
            Self::MpiJob => Some(MPIJOB),
            Self::LeaderWorkerSet => Some(LEADERWORKERSET),
            Self::RayCluster => Some(RAYCLUSTER),
        }
    }

    /// `apiVersion` of its objects.
    fn api_version(self) -> String {
        self.optional_kind()
            .map_or_else(|| "batch/v1".to_owned(), |k| k.api_version())
    }

    /// The kind as written in objects and ownerReferences.
    pub fn name(self) -> &'static str {
        self.optional_kind().map_or("Job", |k| k.kind)
    }

    /// The kind a controller reference points at, if it is one of ours.
    fn of_reference(link: &OwnerLink) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == link.kind && k.api_version() == link.api_version)
    }
}

impl fmt::Display for OwnerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An owner object, by kind, namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerId {
    pub kind: OwnerKind,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for OwnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// An object's controller reference (`ownerReferences[]` with `controller: true`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerLink {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
}

impl OwnerLink {
    /// The controller among `references` (the API server allows at most one).
    pub fn controller_of(references: Option<&Vec<OwnerReference>>) -> Option<Self> {
        references?
            .iter()
            .find(|r| r.controller == Some(true))
            .map(|r| Self {
                api_version: r.api_version.clone(),
                kind: r.kind.clone(),
                name: r.name.clone(),
                uid: r.uid.clone(),
            })
    }
}

/// The gang an owner's spec implies, worked out when the owner is summarised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Derived {
    /// Its pods need not run together (a Job that is not indexed, a
    /// LeaderWorkerSet of size 1, ...), or the owner is not a gang itself (a
    /// TrainJob: its JobSet is).
    NotAGang,
    /// Its pods are a gang of at least this many.
    Members(u32),
    /// Its pods should be a gang, but how many cannot be known from the spec
    /// (or the spec is malformed): why, naming the field.
    Unusable(String),
}

/// What the auto-grouper keeps of an owner object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerRecord {
    pub id: OwnerId,
    pub uid: String,
    pub controller: Option<OwnerLink>,
    /// `phalanx.dev/auto-gang`: `Some(false)` opts its pods out.
    pub auto_gang: Result<Option<bool>, String>,
    /// `phalanx.dev/gang-min-member` on the owner.
    pub min_override: Result<Option<u32>, String>,
    pub derived: Derived,
}

impl OwnerRecord {
    /// Summarises a batch/v1 Job.
    pub fn from_job(job: &Job) -> Self {
        Self::new(OwnerKind::Job, &job.metadata, job::derived(job))
    }

    /// Summarises an operator's object, watched untyped.
    pub fn from_dynamic(kind: OwnerKind, object: &DynamicObject) -> Self {
        let spec = object.data.get("spec").unwrap_or(&serde_json::Value::Null);
        let derived = match kind {
            // Jobs are watched typed ([`Self::from_job`]).
            OwnerKind::Job => Derived::NotAGang,
            OwnerKind::JobSet => jobset::derived(spec),
            OwnerKind::TrainJob => Derived::NotAGang,
            OwnerKind::PyTorchJob | OwnerKind::TfJob | OwnerKind::MpiJob => {
                training::derived(kind, spec)
            }
            OwnerKind::LeaderWorkerSet => lws::derived(spec),
            OwnerKind::RayCluster => ray::derived(spec),
        };
        Self::new(kind, &object.metadata, derived)
    }

    fn new(kind: OwnerKind, metadata: &ObjectMeta, derived: Derived) -> Self {
        let no_annotations = BTreeMap::new();
        let annotations = metadata.annotations.as_ref().unwrap_or(&no_annotations);
        Self {
            id: OwnerId {
                kind,
                namespace: metadata.namespace.clone().unwrap_or_default(),
                name: metadata.name.clone().unwrap_or_default(),
            },
            uid: metadata.uid.clone().unwrap_or_default(),
            controller: OwnerLink::controller_of(metadata.owner_references.as_ref()),
            auto_gang: auto_gang_annotation(annotations),
            min_override: min_override_annotation(annotations),
            derived,
        }
    }
}

/// `phalanx.dev/auto-gang`, when present: `true` or `false`.
fn auto_gang_annotation(annotations: &BTreeMap<String, String>) -> Result<Option<bool>, String> {
    let Some(value) = annotations.get(ANNOTATION_AUTO_GANG) else {
        return Ok(None);
    };
    match value.trim() {
        "true" => Ok(Some(true)),
        "false" => Ok(Some(false)),
        _ => Err(format!(
            "annotation {ANNOTATION_AUTO_GANG}={value:?} must be \"true\" or \"false\""
        )),
    }
}

/// `phalanx.dev/gang-min-member`, when present: an integer from 1.
fn min_override_annotation(annotations: &BTreeMap<String, String>) -> Result<Option<u32>, String> {
    let Some(value) = annotations.get(ANNOTATION_GANG_MIN_MEMBER) else {
        return Ok(None);
    };
    value
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|n| *n >= 1)
        .map(Some)
        .ok_or_else(|| {
            format!(
                "annotation {ANNOTATION_GANG_MIN_MEMBER}={value:?} must be an integer from 1 to {}",
                u32::MAX
            )
        })
}

/// The owners seen so far, and which kinds are watched at all.
#[derive(Debug, Default)]
pub struct OwnerIndex {
    owners: HashMap<OwnerId, OwnerRecord>,
    /// Kinds whose watch runs: a pod whose owner is of another kind (not
    /// served here) is not grouped rather than waiting for an owner that
    /// cannot arrive.
    watched: HashSet<OwnerKind>,
}

impl OwnerIndex {
    /// Records that `kind` is watched.
    pub fn watch(&mut self, kind: OwnerKind) {
        self.watched.insert(kind);
    }

    /// The kind is no longer served: its pods are no longer held for owners.
    pub fn unwatch(&mut self, kind: OwnerKind) {
        self.watched.remove(&kind);
    }

    pub fn watches(&self, kind: OwnerKind) -> bool {
        self.watched.contains(&kind)
    }

    /// Stores an owner's summary; returns whether it differs from what was
    /// stored (status-only updates change nothing).
    pub fn apply(&mut self, record: OwnerRecord) -> bool {
        if self.owners.get(&record.id) == Some(&record) {
            return false;
        }
        self.owners.insert(record.id.clone(), record);
        true
    }

    pub fn delete(&mut self, id: &OwnerId) -> bool {
        self.owners.remove(id).is_some()
    }

    /// Forgets the owners of `kind` missing from a fresh list (`keep`).
    pub fn retain_listed(&mut self, kind: OwnerKind, keep: &HashSet<OwnerId>) -> Vec<OwnerId> {
        let gone: Vec<OwnerId> = self
            .owners
            .keys()
            .filter(|id| id.kind == kind && !keep.contains(*id))
            .cloned()
            .collect();
        for id in &gone {
            self.owners.remove(id);
        }
        gone
    }

    pub fn get(&self, id: &OwnerId) -> Option<&OwnerRecord> {
        self.owners.get(id)
    }

    pub fn len(&self) -> usize {
        self.owners.len()
    }

    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }
}

/// Which gang a pod is in through its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AutoGang {
    /// No owner whose pods form a gang, auto-grouping turned off for it, or the
    /// owner's kind not watched: the pod is scheduled on its own, silently.
    NotGrouped,
    /// The pod's gang, `source` [`GangSource::Owner`], with its minimum.
    Gang(GangMembership),
    /// The owner should make a gang but is ambiguous or inconsistent: the pod
    /// is scheduled on its own, and an event says why.
    Single { reason: String },
    /// The owner object (named) has not been seen yet: wait a bounded time,
    /// then schedule the pod on its own.
    WaitingForOwner { owner: String },
}

/// [`AutoGang`] and the owners looked at to decide it: when one of them
/// changes, the pod's gang is decided again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutoGangDecision {
    pub gang: AutoGang,
    pub consulted: Vec<OwnerId>,
}

/// A rule's finding before the annotations are applied.
struct Finding {
    /// The owner the gang is named after (and whose annotations apply after
    /// the pod's).
    key: String,
    derived: Derived,
    owner: String,
    /// A pod-level count that wins over the owner's spec (a LeaderWorkerSet
    /// group's size as its revision created it).
    pod_min: Option<u32>,
}

/// Why following an owner chain stopped before a rule could decide.
enum Stop {
    /// The owner's kind is not watched (not served here): not grouped.
    NotWatched,
    /// The owner (named) has not been seen yet.
    Waiting(String),
}

impl From<Stop> for AutoGang {
    fn from(stop: Stop) -> Self {
        match stop {
            Stop::NotWatched => AutoGang::NotGrouped,
            Stop::Waiting(owner) => AutoGang::WaitingForOwner { owner },
        }
    }
}

enum Lookup<'a> {
    Found(&'a OwnerRecord),
    Stopped(Stop),
}

struct Walk<'a> {
    index: &'a OwnerIndex,
    namespace: &'a str,
    consulted: Vec<OwnerId>,
}

impl<'a> Walk<'a> {
    /// Looks an owner up by a reference (its kind already known).
    fn follow(&mut self, kind: OwnerKind, link: &OwnerLink) -> Lookup<'a> {
        self.by_name(kind, &link.name, Some(&link.uid))
    }

    fn by_name(&mut self, kind: OwnerKind, name: &str, uid: Option<&str>) -> Lookup<'a> {
        if !self.index.watches(kind) {
            return Lookup::Stopped(Stop::NotWatched);
        }
        let id = OwnerId {
            kind,
            namespace: self.namespace.to_owned(),
            name: name.to_owned(),
        };
        let record = self.index.get(&id);
        self.consulted.push(id.clone());
        match record {
            // Another object of the same name (the pod's owner was replaced):
            // its own owner will come, or the pod will be deleted.
            Some(record) if uid.is_none_or(|uid| uid == record.uid) => Lookup::Found(record),
            _ => Lookup::Stopped(Stop::Waiting(id.to_string())),
        }
    }
}

/// The gang `pod` is in through its owner. The caller asks only for pods
/// that declare no gang themselves (label, annotation or upstream reference).
/// An error is a malformed Phalanx annotation on the pod (refuse it, naming
/// the annotation, as for the other gang annotations).
pub fn auto_gang_of(pod: &Pod, index: &OwnerIndex) -> Result<AutoGangDecision, GangSpecError> {
    let no_annotations = BTreeMap::new();
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&no_annotations);
    let pod_name = pod_display_name(pod);
    let opted = auto_gang_annotation(annotations).map_err(|problem| GangSpecError::AutoGang {
        pod: pod_name.clone(),
        problem,
    })?;
    let options = pod_gang_options(pod)?;
    let mut walk = Walk {
        index,
        namespace: pod.metadata.namespace.as_deref().unwrap_or("default"),
        consulted: Vec::new(),
    };
    if opted == Some(false) {
        return Ok(AutoGangDecision {
            gang: AutoGang::NotGrouped,
            consulted: walk.consulted,
        });
    }
    let finding = find(pod, &mut walk);
    let gang = match finding {
        Err(stop) => stop.into(),
        Ok(None) => AutoGang::NotGrouped,
        Ok(Some(finding)) => decide(finding, &walk, &options),
    };
    Ok(AutoGangDecision {
        gang,
        consulted: walk.consulted,
    })
}

/// Follows the pod's owner chain to the rule of its family.
fn find(pod: &Pod, walk: &mut Walk<'_>) -> Result<Option<Finding>, Stop> {
    let controller = OwnerLink::controller_of(pod.metadata.owner_references.as_ref());
    let kind = controller.as_ref().and_then(OwnerKind::of_reference);
    match (kind, controller) {
        (Some(OwnerKind::Job), Some(link)) => {
            let job = found(walk.follow(OwnerKind::Job, &link))?;
            match job.controller.as_ref().and_then(|c| {
                OwnerKind::of_reference(c)
                    .filter(|k| *k == OwnerKind::JobSet)
                    .map(|_| c)
            }) {
                Some(jobset) => jobset::find(pod, jobset, walk),
                None => Ok(job::find(job)),
            }
        }
        (
            Some(kind @ (OwnerKind::PyTorchJob | OwnerKind::TfJob | OwnerKind::MpiJob)),
            Some(link),
        ) => {
            let job = found(walk.follow(kind, &link))?;
            Ok(Some(training::find(job)))
        }
        (Some(OwnerKind::RayCluster), Some(link)) => {
            let cluster = found(walk.follow(OwnerKind::RayCluster, &link))?;
            Ok(Some(ray::find(cluster)))
        }
        _ => lws::find(pod, walk),
    }
}

fn found(lookup: Lookup<'_>) -> Result<&OwnerRecord, Stop> {
    match lookup {
        Lookup::Found(record) => Ok(record),
        Lookup::Stopped(stop) => Err(stop),
    }
}

/// Applies the opt-outs and overrides (the pod's, then the consulted owners'
/// from the pod outwards) to a rule's finding.
fn decide(finding: Finding, walk: &Walk<'_>, options: &PodGangOptions) -> AutoGang {
    let owners: Vec<&OwnerRecord> = walk
        .consulted
        .iter()
        .filter_map(|id| walk.index.get(id))
        .collect();
    for owner in &owners {
        match &owner.auto_gang {
            Ok(Some(false)) => return AutoGang::NotGrouped,
            Ok(_) => {}
            Err(problem) => {
                return AutoGang::Single {
                    reason: format!("{}: {problem}", owner.id),
                }
            }
        }
    }
    let mut min_override = options.min_member;
    for owner in &owners {
        match &owner.min_override {
            Ok(found) => min_override = min_override.or(*found),
            Err(problem) => {
                return AutoGang::Single {
                    reason: format!("{}: {problem}", owner.id),
                }
            }
        }
    }
    let derived = match finding.derived {
        Derived::NotAGang => return AutoGang::NotGrouped,
        Derived::Unusable(why) => {
            return AutoGang::Single {
                reason: format!(
                    "{}: {why}; its pods are scheduled one by one, not as a gang",
                    finding.owner
                ),
            }
        }
        Derived::Members(n) => n,
    };
    let min_member = min_override.or(finding.pod_min).unwrap_or(derived);
    if min_member <= 1 {
        return AutoGang::NotGrouped;
    }
    AutoGang::Gang(GangMembership {
        key: GangKey::new(walk.namespace, finding.key),
        source: GangSource::Owner,
        min_member: Some(min_member),
        timeout: options.timeout,
        topology_key: options.topology_key.clone(),
    })
}

/// "namespace/name" for messages.
fn pod_display_name(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata
            .name
            .as_deref()
            .or(pod.metadata.generate_name.as_deref())
            .unwrap_or("<unnamed>")
    )
}

/// A pod label, if set and not blank.
fn label<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(key)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests;
