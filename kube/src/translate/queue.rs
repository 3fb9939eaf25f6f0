//! `Queue` objects into the engine's [`QueueSpec`]s, and which queue a pod
//! (and a gang) belongs to.
//!
//! Quantities become the engine's units: CPU in milli-CPU (a finer fraction is
//! an error, as for requests it would be rounded and a quota should say what
//! it means), memory in MiB rounded up, GPUs in milli-GPU (`nvidia.com/gpu:
//! 0.5` is 500, `phalanx.dev/gpu-milli: 500` the same). Every error names the
//! queue and the field path, ready for the queue's `Valid` condition and an
//! event.
//!
//! A pod's queue is its [`QUEUE_LABEL`] label, else the same label on its
//! namespace, else the scheduler's default queue; an empty label value names
//! no queue and falls through to the next source.

use std::collections::BTreeMap;

use phalanx_api::{
    Queue, QueueResourceQuota, MAX_OVER_QUOTA_WEIGHT, RESOURCE_GPU_MILLI, RESOURCE_WHOLE_GPU,
};
use phalanx_engine::queues::{QueueResource, QueueSpec, Quota};

use super::quantity::{Quantity, QuantityError, Rounding};

/// Pod (or namespace) label naming the queue.
pub const QUEUE_LABEL: &str = phalanx_api::LABEL_QUEUE;

/// A `Queue` whose spec cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("queue {queue}: {field}: {problem}")]
pub struct QueueSpecError {
    pub queue: String,
    /// Path into the object, e.g. `spec.resources[2].resource`.
    pub field: String,
    pub problem: QueueSpecProblem,
}

/// What is wrong with one field of a `Queue`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueSpecProblem {
    #[error(
        "unknown resource {0:?}; use cpu, memory, {RESOURCE_WHOLE_GPU} or {RESOURCE_GPU_MILLI}"
    )]
    UnknownResource(String),
    #[error("{value:?} {problem}")]
    Quantity {
        value: String,
        problem: QuantityError,
    },
    #[error(
        "a model is allowed only with {RESOURCE_WHOLE_GPU} or {RESOURCE_GPU_MILLI}, not {resource}"
    )]
    ModelOnNonGpuResource { resource: String },
    #[error("must not be empty")]
    Empty,
    #[error("{resource} is already given at spec.resources[{first}]")]
    NamedTwice { resource: String, first: usize },
    #[error(
        "{resource} is the same quota as spec.resources[{first}] ({RESOURCE_WHOLE_GPU} and \
         {RESOURCE_GPU_MILLI} are one quota in two units): name one of them"
    )]
    GpuNamedInBothUnits { resource: String, first: usize },
    #[error("{0} is above the highest accepted weight, {MAX_OVER_QUOTA_WEIGHT}")]
    WeightOutOfRange(u32),
}

/// The engine's view of one `Queue` object.
pub fn queue_spec(queue: &Queue) -> Result<QueueSpec, QueueSpecError> {
    let name = queue.metadata.name.clone().unwrap_or_default();
    let error = |field: String, problem| QueueSpecError {
        queue: name.clone(),
        field,
        problem,
    };
    if queue.spec.parent.as_deref() == Some("") {
        return Err(error("spec.parent".into(), QueueSpecProblem::Empty));
    }
    let mut quotas = BTreeMap::new();
    // Where each engine resource was named, to point a repeat at the first.
    let mut named_at: BTreeMap<QueueResource, (usize, &str)> = BTreeMap::new();
    for (i, entry) in queue.spec.resources.iter().enumerate() {
        let field = |leaf: &str| format!("spec.resources[{i}].{leaf}");
        let (resource, unit) = resource_of(entry).map_err(|(leaf, p)| error(field(leaf), p))?;
        if let Some(&(first, first_name)) = named_at.get(&resource) {
            let problem = if first_name == entry.resource {
                QueueSpecProblem::NamedTwice {
                    resource: resource_label(entry),
                    first,
                }
            } else {
                QueueSpecProblem::GpuNamedInBothUnits {
                    resource: resource_label(entry),
                    first,
                }
            };
            return Err(error(field("resource"), problem));
        }
        named_at.insert(resource.clone(), (i, entry.resource.as_str()));
        let guaranteed = match &entry.guaranteed {
            Some(q) => unit
                .convert(&q.0)
                .map_err(|p| error(field("guaranteed"), p))?,
            None => 0,
        };
        let limit = match &entry.limit {
            Some(q) => Some(unit.convert(&q.0).map_err(|p| error(field("limit"), p))?),
            None => None,
        };
        let over_quota_weight = entry.over_quota_weight.unwrap_or(1);
        if over_quota_weight > MAX_OVER_QUOTA_WEIGHT {
            return Err(error(
                field("overQuotaWeight"),
                QueueSpecProblem::WeightOutOfRange(over_quota_weight),
            ));
        }
        quotas.insert(
            resource,
            Quota {
                guaranteed,
                limit,
                over_quota_weight,
            },
        );
    }
    Ok(QueueSpec {
        name,
        parent: queue.spec.parent.clone(),
        quotas,
    })
}

/// `nvidia.com/gpu` or `nvidia.com/gpu (model H100)`, for messages.
fn resource_label(entry: &QueueResourceQuota) -> String {
    match &entry.model {
        Some(model) => format!("{} (model {model})", entry.resource),
        None => entry.resource.clone(),
    }
}

/// The unit a resource's quantities are converted to.
#[derive(Clone, Copy)]
enum Unit {
    /// Thousandths of the written value, exactly (`cpu`, `nvidia.com/gpu`).
    Milli,
    /// Bytes to MiB, rounded up.
    Mib,
    /// The written value, exactly (`phalanx.dev/gpu-milli`).
    Exact,
}

impl Unit {
    fn convert(self, raw: &str) -> Result<u64, QueueSpecProblem> {
        let quantity = |problem| QueueSpecProblem::Quantity {
            value: raw.to_owned(),
            problem,
        };
        let parsed = Quantity::parse(raw).map_err(quantity)?;
        match self {
            Unit::Milli => parsed.scaled(1000, 1, Rounding::Exact),
            Unit::Mib => parsed.scaled(1, 1 << 20, Rounding::Up),
            Unit::Exact => parsed.value_exact(),
        }
        .map_err(quantity)
    }
}

/// The engine resource an entry names and the unit of its quantities; on
/// error, the offending leaf field and the problem.
fn resource_of(
    entry: &QueueResourceQuota,
) -> Result<(QueueResource, Unit), (&'static str, QueueSpecProblem)> {
    let is_gpu = entry.resource == RESOURCE_WHOLE_GPU || entry.resource == RESOURCE_GPU_MILLI;
    if let Some(model) = &entry.model {
        if !is_gpu {
            return Err((
                "model",
                QueueSpecProblem::ModelOnNonGpuResource {
                    resource: entry.resource.clone(),
                },
            ));
        }
        if model.is_empty() {
            return Err(("model", QueueSpecProblem::Empty));
        }
    }
    let gpu = || match &entry.model {
        Some(model) => QueueResource::ModelGpuMilli(model.clone()),
        None => QueueResource::GpuMilli,
    };
    Ok(match entry.resource.as_str() {
        "cpu" => (QueueResource::CpuMilli, Unit::Milli),
        "memory" => (QueueResource::MemoryMib, Unit::Mib),
        RESOURCE_WHOLE_GPU => (gpu(), Unit::Milli),
        RESOURCE_GPU_MILLI => (gpu(), Unit::Exact),
        other => {
            return Err((
                "resource",
                QueueSpecProblem::UnknownResource(other.to_owned()),
            ))
        }
    })
}

/// Where a pod's queue was found, so an event can name the field to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueSource {
    /// The pod's own [`QUEUE_LABEL`] label.
    PodLabel,
    /// The [`QUEUE_LABEL`] label of the pod's namespace.
    NamespaceLabel,
    /// Neither names one: the scheduler's `queues.defaultQueue`.
    Default,
}

impl std::fmt::Display for QueueSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::PodLabel => write!(f, "metadata.labels[{QUEUE_LABEL}]"),
            Self::NamespaceLabel => write!(f, "the namespace's metadata.labels[{QUEUE_LABEL}]"),
            Self::Default => f.write_str("the scheduler's queues.defaultQueue"),
        }
    }
}

/// A pod's queue and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueAssignment {
    pub queue: String,
    pub source: QueueSource,
}

/// The queue a pod belongs to: its label, else its namespace's label, else
/// `default_queue`. `namespace_labels` is `None` when the namespace is not
/// known (yet): the pod then goes by its own label or the default.
pub fn queue_name_of(
    pod_labels: Option<&BTreeMap<String, String>>,
    namespace_labels: Option<&BTreeMap<String, String>>,
    default_queue: &str,
) -> QueueAssignment {
    let named = |labels: Option<&BTreeMap<String, String>>| {
        labels
            .and_then(|l| l.get(QUEUE_LABEL))
            .filter(|q| !q.is_empty())
            .cloned()
    };
    if let Some(queue) = named(pod_labels) {
        return QueueAssignment {
            queue,
            source: QueueSource::PodLabel,
        };
    }
    if let Some(queue) = named(namespace_labels) {
        return QueueAssignment {
            queue,
            source: QueueSource::NamespaceLabel,
        };
    }
    QueueAssignment {
        queue: default_queue.to_owned(),
        source: QueueSource::Default,
    }
}

/// Two members of one gang in different queues.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "gang {gang}: members are in different queues, {:?} (from {}) and {:?} (from {}); a gang \
     belongs to one queue: give every member the same metadata.labels[{QUEUE_LABEL}]",
    first.queue, first.source, second.queue, second.source
)]
pub struct GangQueueConflict {
    pub gang: String,
    pub first: QueueAssignment,
    pub second: QueueAssignment,
}

/// The one queue all of a gang's members are in (`None` for no members).
pub fn gang_queue<'a>(
    gang: &str,
    members: impl IntoIterator<Item = &'a QueueAssignment>,
) -> Result<Option<String>, GangQueueConflict> {
    let mut members = members.into_iter();
    let Some(first) = members.next() else {
        return Ok(None);
    };
    match members.find(|m| m.queue != first.queue) {
        Some(second) => Err(GangQueueConflict {
            gang: gang.to_owned(),
            first: first.clone(),
            second: second.clone(),
        }),
        None => Ok(Some(first.queue.clone())),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn entry(resource: &str, guaranteed: Option<&str>, limit: Option<&str>) -> QueueResourceQuota {
        QueueResourceQuota {
            resource: resource.into(),
            model: None,
            guaranteed: guaranteed.map(|g| K8sQuantity(g.into())),
            limit: limit.map(|l| K8sQuantity(l.into())),
            over_quota_weight: None,
        }
    }

    fn queue(parent: Option<&str>, resources: Vec<QueueResourceQuota>) -> Queue {
        Queue {
            metadata: ObjectMeta {
                name: Some("research".into()),
                ..Default::default()
            },
            spec: phalanx_api::QueueSpec {
                parent: parent.map(str::to_owned),
                resources,
            },
            status: None,
        }
    }

    fn error_of(resources: Vec<QueueResourceQuota>) -> String {
        queue_spec(&queue(None, resources))
            .expect_err("must be refused")
            .to_string()
    }

    #[test]
    fn quantities_become_engine_units() {
        let mut h100 = entry(RESOURCE_GPU_MILLI, Some("1500"), None);
        h100.model = Some("H100".into());
        h100.over_quota_weight = Some(3);
        let spec = queue_spec(&queue(
            Some("org"),
            vec![
                entry("cpu", Some("2.5"), Some("64")),
                entry("memory", Some("1Gi"), Some("1000001")),
                entry(RESOURCE_WHOLE_GPU, Some("0.5"), Some("8")),
                h100,
            ],
        ))
        .expect("valid");
        assert_eq!(spec.name, "research");
        assert_eq!(spec.parent.as_deref(), Some("org"));
        let quota = |r: QueueResource| spec.quotas[&r];
        assert_eq!(quota(QueueResource::CpuMilli).guaranteed, 2500);
        assert_eq!(quota(QueueResource::CpuMilli).limit, Some(64_000));
        assert_eq!(quota(QueueResource::MemoryMib).guaranteed, 1024);
        // 1000001 bytes is a little under 1 MiB: rounded up.
        assert_eq!(quota(QueueResource::MemoryMib).limit, Some(1));
        assert_eq!(quota(QueueResource::GpuMilli).guaranteed, 500);
        assert_eq!(quota(QueueResource::GpuMilli).limit, Some(8000));
        assert_eq!(quota(QueueResource::GpuMilli).over_quota_weight, 1);
        let h100 = quota(QueueResource::ModelGpuMilli("H100".into()));
        assert_eq!((h100.guaranteed, h100.limit), (1500, None));
        assert_eq!(h100.over_quota_weight, 3);
    }

    #[test]
    fn absent_guarantee_is_zero_and_no_resources_is_an_empty_spec() {
        let spec = queue_spec(&queue(None, vec![entry("cpu", None, Some("4"))])).expect("valid");
        assert_eq!(spec.quotas[&QueueResource::CpuMilli].guaranteed, 0);
        let spec = queue_spec(&queue(None, vec![])).expect("valid");
        assert!(spec.quotas.is_empty());
    }

    #[test]
    fn unknown_resource_names_the_field_and_the_accepted_names() {
        let message = error_of(vec![
            entry("cpu", None, None),
            entry("memory", None, None),
            entry("nvidia.com/gpus", Some("1"), None),
        ]);
        assert_eq!(
            message,
            "queue research: spec.resources[2].resource: unknown resource \"nvidia.com/gpus\"; \
             use cpu, memory, nvidia.com/gpu or phalanx.dev/gpu-milli"
        );
    }

    #[test]
    fn bad_quantities_name_the_field_and_the_value() {
        let cases = [
            (
                entry("cpu", Some("-1"), None),
                "spec.resources[0].guaranteed: \"-1\" is negative",
            ),
            (
                entry("cpu", Some("0.0001"), None),
                "spec.resources[0].guaranteed: \"0.0001\" is not a whole number",
            ),
            (
                entry(RESOURCE_WHOLE_GPU, None, Some("0.0005")),
                "spec.resources[0].limit: \"0.0005\" is not a whole number",
            ),
            (
                entry(RESOURCE_GPU_MILLI, Some("1.5"), None),
                "spec.resources[0].guaranteed: \"1.5\" is not a whole number",
            ),
            (
                entry("memory", None, Some("lots")),
                "spec.resources[0].limit: \"lots\" is not a quantity",
            ),
            (
                entry("memory", Some("1e400"), None),
                "spec.resources[0].guaranteed: \"1e400\" is out of range",
            ),
        ];
        for (bad, expected) in cases {
            let message = error_of(vec![bad]);
            assert_eq!(message, format!("queue research: {expected}"));
        }
    }

    #[test]
    fn model_only_with_a_gpu_resource_and_never_empty() {
        let mut cpu = entry("cpu", Some("1"), None);
        cpu.model = Some("H100".into());
        assert_eq!(
            error_of(vec![cpu]),
            "queue research: spec.resources[0].model: a model is allowed only with \
             nvidia.com/gpu or phalanx.dev/gpu-milli, not cpu"
        );
        let mut gpu = entry(RESOURCE_WHOLE_GPU, Some("1"), None);
        gpu.model = Some(String::new());
        assert_eq!(
            error_of(vec![gpu]),
            "queue research: spec.resources[0].model: must not be empty"
        );
    }

    #[test]
    fn a_resource_named_twice_points_at_the_first() {
        assert_eq!(
            error_of(vec![
                entry("cpu", None, None),
                entry("cpu", Some("1"), None)
            ]),
            "queue research: spec.resources[1].resource: cpu is already given at \
             spec.resources[0]"
        );
    }

    #[test]
    fn whole_and_milli_gpu_for_one_model_are_one_quota() {
        let mut whole = entry(RESOURCE_WHOLE_GPU, Some("1"), None);
        whole.model = Some("H100".into());
        let mut milli = entry(RESOURCE_GPU_MILLI, Some("500"), None);
        milli.model = Some("H100".into());
        let message = error_of(vec![whole.clone(), milli]);
        assert!(
            message.starts_with(
                "queue research: spec.resources[1].resource: phalanx.dev/gpu-milli (model H100) \
                 is the same quota as spec.resources[0]"
            ),
            "{message}"
        );
        // Unmodelled GPUs and one model's GPUs are different quotas.
        let spec = queue_spec(&queue(
            None,
            vec![whole, entry(RESOURCE_GPU_MILLI, Some("500"), None)],
        ))
        .expect("valid");
        assert_eq!(spec.quotas.len(), 2);
    }

    #[test]
    fn over_quota_weight_is_bounded() {
        let mut heavy = entry("cpu", None, None);
        heavy.over_quota_weight = Some(MAX_OVER_QUOTA_WEIGHT + 1);
        assert_eq!(
            error_of(vec![heavy.clone()]),
            "queue research: spec.resources[0].overQuotaWeight: 1001 is above the highest \
             accepted weight, 1000"
        );
        heavy.over_quota_weight = Some(0);
        let spec = queue_spec(&queue(None, vec![heavy])).expect("0 borrows nothing");
        assert_eq!(spec.quotas[&QueueResource::CpuMilli].over_quota_weight, 0);
    }

    #[test]
    fn an_empty_parent_is_refused() {
        let err = queue_spec(&queue(Some(""), vec![])).expect_err("empty parent");
        assert_eq!(err.field, "spec.parent");
        assert_eq!(
            err.to_string(),
            "queue research: spec.parent: must not be empty"
        );
    }

    fn labels(queue: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(QUEUE_LABEL.to_owned(), queue.to_owned())])
    }

    #[test]
    fn pod_label_then_namespace_label_then_default() {
        let (pod, ns) = (labels("a"), labels("b"));
        let other = BTreeMap::from([("team".to_owned(), "x".to_owned())]);
        let of = |p, n| queue_name_of(p, n, "default");
        assert_eq!(
            of(Some(&pod), Some(&ns)),
            QueueAssignment {
                queue: "a".into(),
                source: QueueSource::PodLabel
            }
        );
        assert_eq!(
            of(Some(&other), Some(&ns)),
            QueueAssignment {
                queue: "b".into(),
                source: QueueSource::NamespaceLabel
            }
        );
        assert_eq!(
            of(None, Some(&other)),
            QueueAssignment {
                queue: "default".into(),
                source: QueueSource::Default
            }
        );
        assert_eq!(of(None, None).source, QueueSource::Default);
        // An empty value names no queue.
        assert_eq!(of(Some(&labels("")), Some(&ns)).queue, "b");
    }

    #[test]
    fn a_gang_is_in_its_members_one_queue() {
        let a = queue_name_of(Some(&labels("a")), None, "default");
        assert_eq!(
            gang_queue("train", [&a, &a.clone()]),
            Ok(Some("a".to_owned()))
        );
        assert_eq!(gang_queue("train", []), Ok(None));
    }

    #[test]
    fn a_gang_across_queues_names_both_and_the_label() {
        let a = queue_name_of(Some(&labels("a")), None, "default");
        let default = queue_name_of(None, None, "default");
        let err = gang_queue("train", [&a, &a.clone(), &default]).expect_err("conflict");
        assert_eq!(err.second, default);
        assert_eq!(
            err.to_string(),
            "gang train: members are in different queues, \"a\" (from \
             metadata.labels[phalanx.dev/queue]) and \"default\" (from the scheduler's \
             queues.defaultQueue); a gang belongs to one queue: give every member the same \
             metadata.labels[phalanx.dev/queue]"
        );
    }
}
