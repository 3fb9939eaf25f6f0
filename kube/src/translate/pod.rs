//! Pods: whether they are ours, what they ask for, and where they may go.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    Container, NodeSelectorRequirement as K8sRequirement, NodeSelectorTerm, Pod, PodSpec,
    Toleration as K8sToleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use phalanx_api::{
    GpuAssignmentAnnotation, ANNOTATION_GPU_ASSIGNMENT, ANNOTATION_GPU_MODELS, MILLI_PER_GPU,
    RESOURCE_GPU_MILLI, RESOURCE_WHOLE_GPU,
};

use super::default_spread::labels_for_matching;
use super::host_ports::host_ports;
use super::inter_pod::inter_pod_spec;
use super::labels::{model_label_value, parse_taint_effect, NODE_NAME_FIELD_KEY};
use super::quantity::{Quantity, QuantityError};
use super::scalar::is_scalar_resource;
use super::unsupported::refuse_unsupported;
use super::volumes::pod_volumes;
use super::{convert_quantity, TranslateError};
use phalanx_engine::{
    GpuDemand, GpuModelRegistry, ModelConstraint, NodePlacementRules, NodeSelectorRequirement,
    PodDemand, PreferredNodeTerm, ScalarRequest, SelectorOperator, Toleration, TolerationOperator,
};

type ResourceList = BTreeMap<String, K8sQuantity>;

/// True for a pod this scheduler should place: it names us and is waiting
/// for a node ([`is_waiting_for_node`]).
pub fn is_ours(pod: &Pod, scheduler_name: &str) -> bool {
    let names_us = pod
        .spec
        .as_ref()
        .is_some_and(|s| s.scheduler_name.as_deref() == Some(scheduler_name));
    names_us && is_waiting_for_node(pod)
}

/// True while the pod has `spec.schedulingGates`: like kube-scheduler's
/// SchedulingGates plugin, such a pod is not attempted at all (no events) until
/// whoever added the gates (Kueue, a workflow engine) removes the last one.
pub fn is_scheduling_gated(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.scheduling_gates.as_ref())
        .is_some_and(|gates| !gates.is_empty())
}

/// Not bound yet, not being deleted, not finished: a pod some scheduler has
/// still to place, whichever. A pod without a spec waits for nothing.
pub fn is_waiting_for_node(pod: &Pod) -> bool {
    pod.spec.is_some()
        && !is_bound(pod)
        && pod.metadata.deletion_timestamp.is_none()
        && !is_finished(pod)
}

/// Bound to a node (`spec.nodeName` set).
pub fn is_bound(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty())
}

/// Succeeded and Failed pods hold nothing.
pub fn is_finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// `namespace/name`. Objects from the API server always carry a namespace; a pod
/// built by hand without one is taken to be in `default`, as kubectl would.
pub fn pod_key(pod: &Pod) -> String {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    format!("{namespace}/{name}")
}

fn pod_object(pod: &Pod) -> String {
    format!("pod {}", pod_key(pod))
}

/// What the pod asks of a node: resources as kube-scheduler computes them, its GPU
/// demand, allowed GPU models, placement rules, priority, and its namespace, labels,
/// pod (anti-)affinity and topology spread constraints.
pub fn pod_demand(pod: &Pod, models: &GpuModelRegistry) -> Result<PodDemand, TranslateError> {
    let object = pod_object(pod);
    let spec = pod
        .spec
        .as_ref()
        .ok_or_else(|| TranslateError::invalid(&object, "spec", "missing"))?;
    if !is_bound(pod) {
        refuse_unsupported(&object, spec)?;
    }
    let requests = pod_requests(&object, spec)?;
    let gpu = gpu_demand(&object, requests.gpus, requests.gpu_milli)?;
    let model_constraint = model_constraint(&object, pod, models)?;
    let rules = placement_rules(&object, spec)?;
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let labels = labels_for_matching(pod);
    let inter_pod = inter_pod_spec(&object, namespace, labels, spec)?;
    let demand = PodDemand::new(
        pod_key(pod),
        requests.cpu_milli,
        requests.memory_bytes.div_ceil(1 << 20),
        gpu,
        model_constraint,
    )
    .map_err(|e| TranslateError::invalid(&object, "spec.containers[*].resources", e.to_string()))?;
    Ok(PodDemand {
        rules,
        priority: spec.priority.unwrap_or(0),
        inter_pod: Some(Arc::new(inter_pod)),
        volumes: pod_volumes(&object, pod, spec)?.map(Arc::new),
        host_ports: host_ports(&object, spec)?,
        scalar: requests.scalar_requests(),
        ..demand
    })
}

/// The GPU assignment the scheduler recorded on the pod, if any.
pub fn assignment_of(pod: &Pod) -> Result<Option<GpuAssignmentAnnotation>, TranslateError> {
    let Some(value) = annotation(pod, ANNOTATION_GPU_ASSIGNMENT) else {
        return Ok(None);
    };
    GpuAssignmentAnnotation::parse(value)
        .map(Some)
        .map_err(|source| TranslateError::Assignment {
            object: pod_object(pod),
            source,
        })
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

// ---- resources ----------------------------------------------------------------

/// The resources the scheduler accounts for, in the engine's units before the
/// final MiB rounding (bytes are summed first so rounding happens once per pod).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Requests {
    cpu_milli: u64,
    memory_bytes: u64,
    gpus: u64,
    gpu_milli: u64,
    /// Ephemeral storage, huge pages, extended resources; empty for most pods
    /// (an empty map allocates nothing).
    scalar: BTreeMap<String, u64>,
}

impl Requests {
    fn plus(mut self, o: &Requests) -> Requests {
        for (name, amount) in &o.scalar {
            let sum = self.scalar.entry(name.clone()).or_insert(0);
            *sum = sum.saturating_add(*amount);
        }
        Requests {
            cpu_milli: self.cpu_milli.saturating_add(o.cpu_milli),
            memory_bytes: self.memory_bytes.saturating_add(o.memory_bytes),
            gpus: self.gpus.saturating_add(o.gpus),
            gpu_milli: self.gpu_milli.saturating_add(o.gpu_milli),
            scalar: self.scalar,
        }
    }

    fn max(mut self, o: &Requests) -> Requests {
        for (name, amount) in &o.scalar {
            let most = self.scalar.entry(name.clone()).or_insert(0);
            *most = (*most).max(*amount);
        }
        Requests {
            cpu_milli: self.cpu_milli.max(o.cpu_milli),
            memory_bytes: self.memory_bytes.max(o.memory_bytes),
            gpus: self.gpus.max(o.gpus),
            gpu_milli: self.gpu_milli.max(o.gpu_milli),
            scalar: self.scalar,
        }
    }

    /// The scalar requests as the engine takes them: zero ones dropped, as
    /// kube-scheduler skips them.
    fn scalar_requests(&self) -> Vec<ScalarRequest> {
        self.scalar
            .iter()
            .filter(|(_, amount)| **amount > 0)
            .map(|(name, amount)| ScalarRequest {
                name: name.as_str().into(),
                amount: *amount,
            })
            .collect()
    }
}

/// kube-scheduler's `computePodResourceRequest`: app containers summed; each
/// regular init container runs alone next to the sidecars started before it, so
/// the pod needs the largest of those moments; sidecars run for the pod's whole
/// life, so they also add to the app containers; overhead comes on top.
/// Pod-level `spec.resources` (PodLevelResources: beta and on by default since
/// 1.34) then replaces the aggregate for the resources it names.
///
/// Not modelled: in-place resize, where kube-scheduler also looks at the
/// allocated resources in the container statuses.
fn pod_requests(object: &str, spec: &PodSpec) -> Result<Requests, TranslateError> {
    let mut total = Requests::default();
    for c in &spec.containers {
        total = total.plus(&container_requests(object, "containers", c)?);
    }
    let mut sidecars = Requests::default();
    let mut init_peak = Requests::default();
    for c in spec.init_containers.iter().flatten() {
        let own = container_requests(object, "initContainers", c)?;
        let moment = if c.restart_policy.as_deref() == Some("Always") {
            total = total.plus(&own);
            sidecars = sidecars.plus(&own);
            sidecars.clone()
        } else {
            own.plus(&sidecars)
        };
        init_peak = init_peak.max(&moment);
    }
    let overhead = read_resources(object, &[("spec.overhead".into(), spec.overhead.as_ref())])?;
    let containers = apply_pod_level(object, spec, total.max(&init_peak))?;
    Ok(containers.plus(&overhead))
}

/// kube-scheduler's `PodRequests` with pod-level resources: each resource the
/// pod-level requests name (cpu, memory, huge pages: the only ones Kubernetes
/// allows there) replaces the containers' aggregate; a pod-level limit without
/// a request counts as the request, as API defaulting fills it in. Any other
/// name is refused by field rather than ignored.
fn apply_pod_level(
    object: &str,
    spec: &PodSpec,
    mut requests: Requests,
) -> Result<Requests, TranslateError> {
    let Some(resources) = spec.resources.as_ref() else {
        return Ok(requests);
    };
    let lists = [
        ("spec.resources.requests", resources.requests.as_ref()),
        ("spec.resources.limits", resources.limits.as_ref()),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for (path, list) in lists {
        for (name, raw) in list.into_iter().flatten() {
            if !seen.insert(name.as_str()) {
                continue;
            }
            let field = format!("{path}[{name:?}]");
            match name.as_str() {
                "cpu" => {
                    requests.cpu_milli = convert_quantity(object, field, raw, Quantity::milli_up)?;
                }
                "memory" => {
                    requests.memory_bytes =
                        convert_quantity(object, field, raw, Quantity::value_up)?;
                }
                huge if huge.starts_with("hugepages-") => {
                    let amount = convert_quantity(object, field, raw, Quantity::value_up)?;
                    requests.scalar.insert(huge.to_owned(), amount);
                }
                _ => {
                    return Err(TranslateError::invalid(
                        object,
                        field,
                        "only cpu, memory and hugepages-* may be set at pod level",
                    ))
                }
            }
        }
    }
    Ok(requests)
}

/// A container's requests; a resource with a limit but no request uses the limit,
/// as API defaulting would have filled it in.
fn container_requests(object: &str, list: &str, c: &Container) -> Result<Requests, TranslateError> {
    let prefix = format!("spec.{list}[{:?}].resources", c.name);
    let resources = c.resources.as_ref();
    read_resources(
        object,
        &[
            (
                format!("{prefix}.requests"),
                resources.and_then(|r| r.requests.as_ref()),
            ),
            (
                format!("{prefix}.limits"),
                resources.and_then(|r| r.limits.as_ref()),
            ),
        ],
    )
}

/// Reads each resource from the first list that has it.
fn read_resources(
    object: &str,
    lists: &[(String, Option<&ResourceList>)],
) -> Result<Requests, TranslateError> {
    let read = |name: &str, convert: fn(&Quantity) -> Result<u64, QuantityError>| {
        lists
            .iter()
            .find_map(|(path, list)| Some((path, list.as_ref()?.get(name)?)))
            .map_or(Ok(0), |(path, raw)| {
                convert_quantity(object, format!("{path}[{name:?}]"), raw, convert)
            })
    };
    let mut scalar = BTreeMap::new();
    let names = lists
        .iter()
        .filter_map(|(_, list)| *list)
        .flat_map(|list| list.keys())
        .filter(|name| is_scalar_resource(name));
    for name in names {
        if !scalar.contains_key(name) {
            scalar.insert(name.clone(), read(name, Quantity::value_up)?);
        }
    }
    Ok(Requests {
        cpu_milli: read("cpu", Quantity::milli_up)?,
        memory_bytes: read("memory", Quantity::value_up)?,
        gpus: read(RESOURCE_WHOLE_GPU, Quantity::value_exact)?,
        gpu_milli: read(RESOURCE_GPU_MILLI, Quantity::value_exact)?,
        scalar,
    })
}

// ---- GPUs ---------------------------------------------------------------------

/// Whole GPUs from `nvidia.com/gpu`, a share from `phalanx.dev/gpu-milli`, or
/// both: N GPUs at M milli each.
fn gpu_demand(object: &str, gpus: u64, milli: u64) -> Result<GpuDemand, TranslateError> {
    let milli_field = format!("resources.requests[{RESOURCE_GPU_MILLI:?}]");
    let count = u32::try_from(gpus).map_err(|_| {
        TranslateError::invalid(
            object,
            format!("resources.requests[{RESOURCE_WHOLE_GPU:?}]"),
            format!("{gpus} GPUs is more than any node has"),
        )
    })?;
    let per_gpu = i64::try_from(milli)
        .map_err(|_| TranslateError::invalid(object, &milli_field, "out of range"))?;
    let whole = u64::from(MILLI_PER_GPU);
    match (count, milli) {
        (0, 0) => Ok(GpuDemand::None),
        (n, 0) => Ok(GpuDemand::Whole { count: n }),
        (0, m) if m < whole => Ok(GpuDemand::Share { milli: m as u32 }),
        (0, m) if m % whole == 0 => u32::try_from(m / whole)
            .map(|count| GpuDemand::Whole { count })
            .map_err(|_| TranslateError::invalid(object, &milli_field, "out of range")),
        (0, m) => Err(TranslateError::invalid(
            object,
            milli_field,
            format!(
                "{m} milli is neither a share of one GPU (1..999) nor whole GPUs (a multiple of {whole})"
            ),
        )),
        (n, _) => GpuDemand::from_count_and_milli(n, per_gpu).map_err(|reason| {
            TranslateError::invalid(
                object,
                format!("resources.requests[{RESOURCE_WHOLE_GPU:?}] with {milli_field}"),
                reason,
            )
        }),
    }
}

/// The models named in `phalanx.dev/gpu-models`. Names are compared in label
/// form, the form nodes carry; names no node has yet match nothing for now, and
/// the pod is retried when such a node appears.
fn model_constraint(
    object: &str,
    pod: &Pod,
    models: &GpuModelRegistry,
) -> Result<ModelConstraint, TranslateError> {
    let Some(value) = annotation(pod, ANNOTATION_GPU_MODELS) else {
        return Ok(ModelConstraint::Any);
    };
    let names: Vec<String> = value
        .split('|')
        .map(model_label_value)
        .filter(|name| !name.is_empty())
        .collect();
    if names.is_empty() {
        return Err(TranslateError::invalid(
            object,
            format!("metadata.annotations[{ANNOTATION_GPU_MODELS:?}]"),
            format!("{value:?} names no GPU model; leave the annotation out to allow any"),
        ));
    }
    Ok(models.constraint(&names.join("|")))
}

// ---- placement rules ----------------------------------------------------------

fn placement_rules(object: &str, spec: &PodSpec) -> Result<NodePlacementRules, TranslateError> {
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    let mut required_terms = Vec::new();
    if let Some(selector) = required {
        for (i, term) in selector.node_selector_terms.iter().enumerate() {
            required_terms.push(selector_term(
                object,
                &format!("{REQUIRED_TERMS}[{i}]"),
                term,
            )?);
        }
        // A required selector without terms matches no node in kube-scheduler; the
        // engine reads "no terms" as "no constraint", so say it with one empty term.
        if required_terms.is_empty() {
            required_terms.push(Vec::new());
        }
    }
    let tolerations = spec
        .tolerations
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, t)| toleration(object, i, t))
        .collect::<Result<_, _>>()?;
    Ok(NodePlacementRules {
        node_selector: spec.node_selector.clone().unwrap_or_default(),
        required_terms,
        tolerations,
        preferred_terms: preferred_terms(object, spec)?,
    })
}

const PREFERRED_TERMS: &str =
    "spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution";

/// Preferred node affinity (NodeAffinity's score). A term of weight 0 counts for
/// nothing and is left out, as kube-scheduler does.
fn preferred_terms(object: &str, spec: &PodSpec) -> Result<Vec<PreferredNodeTerm>, TranslateError> {
    let terms = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        });
    let mut out = Vec::new();
    for (i, term) in terms.into_iter().flatten().enumerate() {
        let field = format!("{PREFERRED_TERMS}[{i}]");
        if !(0..=100).contains(&term.weight) {
            return Err(TranslateError::invalid(
                object,
                format!("{field}.weight"),
                format!("{} is outside 0..100", term.weight),
            ));
        }
        if term.weight == 0 {
            continue;
        }
        out.push(PreferredNodeTerm {
            weight: term.weight,
            requirements: selector_term(object, &format!("{field}.preference"), &term.preference)?,
        });
    }
    Ok(out)
}

const REQUIRED_TERMS: &str =
    "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms";

/// One term: its label expressions and field expressions, all ANDed. The only
/// field Kubernetes allows is `metadata.name`, which nodes carry as the
/// pseudo-label [`NODE_NAME_FIELD_KEY`].
pub(super) fn selector_term(
    object: &str,
    path: &str,
    term: &NodeSelectorTerm,
) -> Result<Vec<NodeSelectorRequirement>, TranslateError> {
    let mut out = Vec::new();
    for (j, req) in term.match_expressions.iter().flatten().enumerate() {
        let field = format!("{path}.matchExpressions[{j}]");
        out.push(requirement(object, &field, req.key.clone(), req)?);
    }
    for (j, req) in term.match_fields.iter().flatten().enumerate() {
        let field = format!("{path}.matchFields[{j}]");
        if req.key != "metadata.name" {
            return Err(TranslateError::invalid(
                object,
                format!("{field}.key"),
                format!(
                    "{:?} is not a supported field; only metadata.name is",
                    req.key
                ),
            ));
        }
        out.push(requirement(
            object,
            &field,
            NODE_NAME_FIELD_KEY.into(),
            req,
        )?);
    }
    Ok(out)
}

fn requirement(
    object: &str,
    field: &str,
    key: String,
    req: &K8sRequirement,
) -> Result<NodeSelectorRequirement, TranslateError> {
    let values = req.values.clone().unwrap_or_default();
    let bad = |reason: String| TranslateError::invalid(object, field, reason);
    let single_integer = |values: &[String]| match values {
        [v] => v.parse::<i64>().map_err(|_| {
            bad(format!(
                "{} needs an integer value, got {v:?}",
                req.operator
            ))
        }),
        _ => Err(bad(format!("{} needs exactly one value", req.operator))),
    };
    let operator = match req.operator.as_str() {
        "In" => SelectorOperator::In(values),
        "NotIn" => SelectorOperator::NotIn(values),
        "Exists" => SelectorOperator::Exists,
        "DoesNotExist" => SelectorOperator::DoesNotExist,
        "Gt" => SelectorOperator::Gt(single_integer(&values)?),
        "Lt" => SelectorOperator::Lt(single_integer(&values)?),
        other => return Err(bad(format!("unknown operator {other:?}"))),
    };
    Ok(NodeSelectorRequirement { key, operator })
}

/// `tolerationSeconds` is dropped: it only matters for eviction, not placement.
fn toleration(object: &str, index: usize, t: &K8sToleration) -> Result<Toleration, TranslateError> {
    let field = format!("spec.tolerations[{index}]");
    let operator = match t.operator.as_deref().unwrap_or_default() {
        "" | "Equal" => TolerationOperator::Equal,
        "Exists" => TolerationOperator::Exists,
        other => {
            return Err(TranslateError::invalid(
                object,
                format!("{field}.operator"),
                format!("unknown operator {other:?}"),
            ))
        }
    };
    let effect = match t.effect.as_deref().unwrap_or_default() {
        "" => None,
        effect => Some(parse_taint_effect(effect).ok_or_else(|| {
            TranslateError::invalid(
                object,
                format!("{field}.effect"),
                format!("unknown effect {effect:?}"),
            )
        })?),
    };
    Ok(Toleration {
        // An empty key with Exists tolerates everything; the engine spells that None.
        key: t.key.clone().filter(|k| !k.is_empty()),
        operator,
        value: t.value.clone().unwrap_or_default(),
        effect,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    /// A pod in `default` named `x` with the given spec merged over one container.
    fn with_spec(spec: serde_json::Value) -> Pod {
        pod(json!({"metadata": {"name": "x", "namespace": "default"}, "spec": spec}))
    }

    fn one_container(resources: serde_json::Value) -> Pod {
        with_spec(json!({"containers": [{"name": "main", "resources": resources}]}))
    }

    fn demand(p: &Pod) -> PodDemand {
        pod_demand(p, &GpuModelRegistry::default()).unwrap()
    }

    fn error(p: &Pod) -> String {
        pod_demand(p, &GpuModelRegistry::default())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn ours_means_named_unbound_alive_and_unfinished() {
        let base = json!({
            "metadata": {"name": "x", "namespace": "ns"},
            "spec": {"schedulerName": "phalanx", "containers": []}
        });
        assert!(is_ours(&pod(base.clone()), "phalanx"));
        assert!(!is_ours(&pod(base.clone()), "default-scheduler"));
        let mut bound = base.clone();
        bound["spec"]["nodeName"] = json!("n1");
        assert!(!is_ours(&pod(bound), "phalanx"));
        let mut deleting = base.clone();
        deleting["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
        assert!(!is_ours(&pod(deleting), "phalanx"));
        for (phase, ours) in [("Pending", true), ("Succeeded", false), ("Failed", false)] {
            let mut p = base.clone();
            p["status"] = json!({"phase": phase});
            assert_eq!(is_ours(&pod(p), "phalanx"), ours, "{phase}");
        }
        assert!(!is_ours(
            &pod(json!({"metadata": {"name": "x"}})),
            "phalanx"
        ));
        assert_eq!(pod_key(&pod(base)), "ns/x");
    }

    #[test]
    fn container_requests_round_up() {
        let d = demand(&one_container(
            json!({"requests": {"cpu": "250m", "memory": "100M"}}),
        ));
        assert_eq!(d.name, "default/x");
        assert_eq!(d.cpu_milli, 250);
        assert_eq!(d.memory_mib, 96, "100 MB is 95.37 MiB, rounded up");
        assert_eq!(d.gpu, GpuDemand::None);
        assert_eq!(d.models, ModelConstraint::Any);
        assert_eq!(d.priority, 0);
        assert!(d.rules.is_empty());
        let tiny = demand(&one_container(
            json!({"requests": {"cpu": "1n", "memory": "1"}}),
        ));
        assert_eq!((tiny.cpu_milli, tiny.memory_mib), (1, 1));
    }

    #[test]
    fn limits_stand_in_for_missing_requests() {
        let d = demand(&one_container(json!({
            "requests": {"cpu": "1"},
            "limits": {"cpu": "4", "memory": "2Gi", "nvidia.com/gpu": "2"}
        })));
        assert_eq!(d.cpu_milli, 1000, "the request wins where there is one");
        assert_eq!(d.memory_mib, 2048);
        assert_eq!(d.gpu, GpuDemand::Whole { count: 2 });
    }

    #[test]
    fn init_containers_sidecars_and_overhead_follow_kube_scheduler() {
        // Mirrors kube-scheduler's computePodResourceRequest example: app 2 CPU,
        // sidecar 1 CPU started before a 5 CPU init container, then one of 2 CPU.
        let p = with_spec(json!({
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}},
                {"name": "b", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}
            ],
            "initContainers": [
                {"name": "sidecar", "restartPolicy": "Always",
                 "resources": {"requests": {"cpu": "1", "memory": "512Mi"}}},
                {"name": "migrate", "resources": {"requests": {"cpu": "5", "memory": "1Gi"}}},
                {"name": "warm", "resources": {"requests": {"cpu": "2", "memory": "4Gi"}}}
            ],
            "overhead": {"cpu": "100m", "memory": "64Mi"}
        }));
        let d = demand(&p);
        // cpu: max(2 + 1, 5 + 1, 2 + 1) + 0.1; memory: max(2.5Gi, 1.5Gi, 4.5Gi) + 64Mi.
        assert_eq!(d.cpu_milli, 6100);
        assert_eq!(d.memory_mib, 4608 + 64);
    }

    #[test]
    fn pod_level_resources_replace_the_containers_sum_for_what_they_name() {
        // After kube-scheduler's PodRequests cases: pod-level cpu and memory win
        // over the containers' sum (larger or smaller), a resource the pod level
        // does not name still comes from the containers, a pod-level limit
        // stands in for a missing pod-level request, overhead comes on top.
        let p = with_spec(json!({
            "resources": {"requests": {"cpu": "3"}, "limits": {"memory": "8Gi", "hugepages-2Mi": "64Mi"}},
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": "1"}}},
                {"name": "b", "resources": {"requests": {"cpu": "1", "ephemeral-storage": "1Gi"}}}
            ],
            "overhead": {"cpu": "100m"}
        }));
        let d = demand(&p);
        assert_eq!(d.cpu_milli, 3100, "pod-level 3 CPU, not 2, plus overhead");
        assert_eq!(
            d.memory_mib, 8192,
            "the pod-level limit defaults the request"
        );
        assert_eq!(
            d.gpu,
            GpuDemand::Whole { count: 1 },
            "GPUs from the containers"
        );
        let scalar: Vec<(String, u64)> = d
            .scalar
            .iter()
            .map(|r| (r.name.to_string(), r.amount))
            .collect();
        assert!(
            scalar.contains(&("hugepages-2Mi".to_owned(), 64 << 20)),
            "{scalar:?}"
        );
        assert!(
            scalar.contains(&("ephemeral-storage".to_owned(), 1 << 30)),
            "{scalar:?}"
        );
        let smaller = with_spec(json!({
            "resources": {"requests": {"cpu": "500m"}},
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "2"}}}]
        }));
        assert_eq!(
            demand(&smaller).cpu_milli,
            500,
            "a smaller pod-level request wins too"
        );
    }

    #[test]
    fn a_pod_level_resource_kubernetes_does_not_allow_is_refused_by_field() {
        let p = with_spec(json!({
            "resources": {"requests": {"nvidia.com/gpu": "1"}},
            "containers": [{"name": "a"}]
        }));
        let message = error(&p);
        assert!(
            message.contains(r#"spec.resources.requests["nvidia.com/gpu"]"#),
            "{message}"
        );
    }

    #[test]
    fn sidecar_started_after_an_init_container_does_not_overlap_it() {
        let p = with_spec(json!({
            "containers": [{"name": "app", "resources": {"requests": {"cpu": "1"}}}],
            "initContainers": [
                {"name": "first", "resources": {"requests": {"cpu": "3"}}},
                {"name": "sidecar", "restartPolicy": "Always",
                 "resources": {"requests": {"cpu": "1"}}}
            ]
        }));
        assert_eq!(demand(&p).cpu_milli, 3000, "max(1 + 1, 3, 1)");
    }

    #[test]
    fn gpu_resources_become_demands() {
        let gpu = |resources: serde_json::Value| demand(&one_container(resources)).gpu;
        assert_eq!(
            gpu(json!({"requests": {"nvidia.com/gpu": "4"}})),
            GpuDemand::Whole { count: 4 }
        );
        assert_eq!(
            gpu(json!({"requests": {"phalanx.dev/gpu-milli": "250"}})),
            GpuDemand::Share { milli: 250 }
        );
        assert_eq!(
            gpu(json!({"limits": {"phalanx.dev/gpu-milli": "2000"}})),
            GpuDemand::Whole { count: 2 }
        );
        assert_eq!(
            gpu(json!({"requests": {"nvidia.com/gpu": "1", "phalanx.dev/gpu-milli": "300"}})),
            GpuDemand::Share { milli: 300 }
        );
        assert_eq!(
            gpu(json!({"requests": {"nvidia.com/gpu": "2", "phalanx.dev/gpu-milli": "1000"}})),
            GpuDemand::Whole { count: 2 }
        );
        assert_eq!(
            gpu(json!({"requests": {"nvidia.com/gpu": "0"}})),
            GpuDemand::None
        );
    }

    #[test]
    fn gpu_shares_of_two_containers_add_up() {
        let p = with_spec(json!({"containers": [
            {"name": "a", "resources": {"requests": {"phalanx.dev/gpu-milli": "300"}}},
            {"name": "b", "resources": {"requests": {"phalanx.dev/gpu-milli": "200"}}}
        ]}));
        assert_eq!(demand(&p).gpu, GpuDemand::Share { milli: 500 });
    }

    #[test]
    fn bad_gpu_requests_are_errors_naming_the_field() {
        let err = error(&one_container(
            json!({"requests": {"phalanx.dev/gpu-milli": "abc"}}),
        ));
        assert_eq!(
            err,
            r#"pod default/x: spec.containers["main"].resources.requests["phalanx.dev/gpu-milli"]: "abc" is not a quantity"#
        );
        let err = error(&one_container(
            json!({"requests": {"phalanx.dev/gpu-milli": "1500"}}),
        ));
        assert!(
            err.starts_with(
                r#"pod default/x: resources.requests["phalanx.dev/gpu-milli"]: 1500 milli"#
            ),
            "{err}"
        );
        let err = error(&one_container(json!({"limits": {"nvidia.com/gpu": "-1"}})));
        assert_eq!(
            err,
            r#"pod default/x: spec.containers["main"].resources.limits["nvidia.com/gpu"]: "-1" is negative"#
        );
        let err = error(&one_container(
            json!({"requests": {"nvidia.com/gpu": "0.5"}}),
        ));
        assert!(err.ends_with(r#""0.5" is not a whole number"#), "{err}");
        let err = error(&one_container(
            json!({"requests": {"nvidia.com/gpu": "5000000000"}}),
        ));
        assert!(err.contains("more than any node has"), "{err}");
        let err = error(&one_container(
            json!({"requests": {"nvidia.com/gpu": "2", "phalanx.dev/gpu-milli": "500"}}),
        ));
        assert!(
            err.contains("shares are only supported on a single GPU"),
            "{err}"
        );
    }

    #[test]
    fn bad_cpu_memory_and_overhead_are_errors() {
        let err = error(&one_container(json!({"requests": {"cpu": "lots"}})));
        assert!(
            err.contains(r#"requests["cpu"]: "lots" is not a quantity"#),
            "{err}"
        );
        let err = error(&one_container(json!({"requests": {"memory": "-1Gi"}})));
        assert!(err.contains("is negative"), "{err}");
        let p = with_spec(json!({"containers": [], "overhead": {"memory": "1Ei0"}}));
        assert!(error(&p).contains(r#"spec.overhead["memory"]"#));
        let p = with_spec(json!({"containers": [],
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "x"}}}]}));
        assert!(error(&p).contains(r#"spec.initContainers["i"]"#));
        let err = pod_demand(
            &pod(json!({"metadata": {"name": "x", "namespace": "default"}})),
            &GpuModelRegistry::default(),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(err, "pod default/x: spec: missing");
    }

    fn with_models(models: &str) -> Pod {
        pod(json!({
            "metadata": {"name": "x", "namespace": "default",
                         "annotations": {"phalanx.dev/gpu-models": models}},
            "spec": {"containers": [{"name": "m",
                     "resources": {"requests": {"nvidia.com/gpu": "1"}}}]}
        }))
    }

    #[test]
    fn model_annotation_is_compared_in_label_form() {
        let mut reg = GpuModelRegistry::default();
        let h100 = reg.intern("NVIDIA-H100-80GB-HBM3").unwrap();
        let a100 = reg.intern("NVIDIA-A100-SXM4-80GB").unwrap();
        let t4 = reg.intern("Tesla-T4").unwrap();
        let d = pod_demand(
            &with_models("NVIDIA H100 80GB HBM3|NVIDIA-A100-SXM4-80GB"),
            &reg,
        )
        .unwrap();
        assert!(d.models.allows(h100));
        assert!(d.models.allows(a100));
        assert!(!d.models.allows(t4));
        let unknown = pod_demand(&with_models("B200"), &reg).unwrap();
        assert_eq!(
            unknown.models,
            ModelConstraint::OneOf(0),
            "fits nowhere yet"
        );
        for empty in ["", "|", " | "] {
            let err = pod_demand(&with_models(empty), &reg)
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(r#"pod default/x: metadata.annotations["phalanx.dev/gpu-models"]"#),
                "{err}"
            );
        }
    }

    #[test]
    fn placement_rules_and_priority() {
        let p = with_spec(json!({
            "containers": [],
            "priority": 1000,
            "nodeSelector": {"zone": "a"},
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [
                        {"key": "phalanx.dev/gpu-model", "operator": "In", "values": ["T4"]},
                        {"key": "spot", "operator": "DoesNotExist"},
                        {"key": "gpus", "operator": "Gt", "values": ["3"]}
                    ]},
                    {"matchFields": [
                        {"key": "metadata.name", "operator": "In", "values": ["n7"]}
                    ]}
                ]}}},
            "tolerations": [
                {"operator": "Exists"},
                {"key": "gpu", "operator": "Equal", "value": "yes", "effect": "NoSchedule"},
                {"key": "spot", "effect": "NoExecute", "tolerationSeconds": 30}
            ]
        }));
        let d = demand(&p);
        assert_eq!(d.priority, 1000);
        assert_eq!(
            d.rules.node_selector.get("zone").map(String::as_str),
            Some("a")
        );
        let req = |key: &str, operator| NodeSelectorRequirement {
            key: key.into(),
            operator,
        };
        assert_eq!(
            d.rules.required_terms,
            vec![
                vec![
                    req(
                        "phalanx.dev/gpu-model",
                        SelectorOperator::In(vec!["T4".into()])
                    ),
                    req("spot", SelectorOperator::DoesNotExist),
                    req("gpus", SelectorOperator::Gt(3)),
                ],
                vec![req(
                    NODE_NAME_FIELD_KEY,
                    SelectorOperator::In(vec!["n7".into()])
                )],
            ]
        );
        assert_eq!(
            d.rules.tolerations,
            vec![
                Toleration {
                    operator: TolerationOperator::Exists,
                    ..Default::default()
                },
                Toleration {
                    key: Some("gpu".into()),
                    operator: TolerationOperator::Equal,
                    value: "yes".into(),
                    effect: Some(phalanx_engine::TaintEffect::NoSchedule),
                },
                Toleration {
                    key: Some("spot".into()),
                    operator: TolerationOperator::Equal,
                    value: String::new(),
                    effect: Some(phalanx_engine::TaintEffect::NoExecute),
                },
            ]
        );
    }

    #[test]
    fn required_affinity_without_terms_matches_nothing() {
        let p = with_spec(json!({"containers": [], "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}}}));
        let rules = demand(&p).rules;
        assert!(!rules.selects(&BTreeMap::new()));
    }

    #[test]
    fn bad_rules_are_errors_naming_the_field() {
        let affinity = |req: serde_json::Value| {
            with_spec(json!({"containers": [], "affinity": {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [req]}]}}}}))
        };
        let err = error(&affinity(json!({"key": "k", "operator": "Near"})));
        assert!(
            err.contains("nodeSelectorTerms[0].matchExpressions[0]: unknown operator \"Near\""),
            "{err}"
        );
        let err = error(&affinity(
            json!({"key": "k", "operator": "Gt", "values": ["x"]}),
        ));
        assert!(err.contains("Gt needs an integer value"), "{err}");
        let err = error(&affinity(
            json!({"key": "k", "operator": "Lt", "values": []}),
        ));
        assert!(err.contains("Lt needs exactly one value"), "{err}");
        let p = with_spec(json!({"containers": [], "affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchFields": [{"key": "spec.podCIDR", "operator": "In", "values": ["x"]}]}
        ]}}}}));
        assert!(error(&p).contains("matchFields[0].key"));
        let p =
            with_spec(json!({"containers": [], "tolerations": [{"key": "k", "operator": "Is"}]}));
        assert!(error(&p).contains("spec.tolerations[0].operator"));
        let p =
            with_spec(json!({"containers": [], "tolerations": [{"key": "k", "effect": "Never"}]}));
        assert!(error(&p).contains("spec.tolerations[0].effect: unknown effect \"Never\""));
    }

    #[test]
    fn assignment_annotation_is_read_back() {
        let annotated = |value: &str| {
            pod(json!({"metadata": {"name": "x", "namespace": "default",
                "annotations": {"phalanx.dev/gpu-assignment": value}}}))
        };
        assert_eq!(assignment_of(&one_container(json!({}))).unwrap(), None);
        let a = assignment_of(&annotated(
            r#"{"node":"n1","gpus":[{"index":2,"uuid":"GPU-a","milli":500}]}"#,
        ))
        .unwrap()
        .unwrap();
        assert_eq!(a.node, "n1");
        assert_eq!((a.gpus[0].index, a.gpus[0].milli), (2, 500));
        let err = assignment_of(&annotated("0,1")).unwrap_err();
        assert_eq!(err.object(), "pod default/x");
        let msg = err.to_string();
        assert!(
            msg.starts_with("pod default/x: malformed phalanx.dev/gpu-assignment annotation"),
            "{msg}"
        );
    }
}
