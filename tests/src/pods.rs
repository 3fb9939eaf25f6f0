//! Pods for the end-to-end tests and the benchmark: containers asking for
//! GPUs, a [`PodBuilder`] for the rest of a pod, [`PodSelector`] to find pods
//! again, and checks of the GPU assignments the scheduler wrote.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Container, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    PersistentVolumeClaimVolumeSource, Pod, PodAffinity, PodAffinityTerm, PodAntiAffinity,
    PodSchedulingGroup, PodSpec, PodTemplateSpec, ResourceRequirements, TopologySpreadConstraint,
    Volume,
};
use k8s_openapi::api::scheduling::v1beta1::{
    GangSchedulingPolicy, PodGroup as UpstreamPodGroup, PodGroupSchedulingConstraints,
    PodGroupSchedulingPolicy, PodGroupSpec as UpstreamPodGroupSpec, TopologyConstraint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::Api;
use phalanx_api::{
    GpuAssignmentAnnotation, ANNOTATION_GPU_ASSIGNMENT, MILLI_PER_GPU, RESOURCE_GPU_MILLI,
    RESOURCE_WHOLE_GPU,
};

/// A pod affinity term for [`PodBuilder::required_pod_affinity`] and
/// [`PodBuilder::required_pod_anti_affinity`]: pods labelled `key: value` in
/// the pod's own namespace, per value of the node label `topology_key`. Set
/// `namespaces` or `namespace_selector` on it to look elsewhere.
pub fn pod_term((key, value): (&str, &str), topology_key: &str) -> PodAffinityTerm {
    PodAffinityTerm {
        label_selector: Some(match_labels(key, value)),
        topology_key: topology_key.to_owned(),
        ..PodAffinityTerm::default()
    }
}

/// The label selector `key: value`.
pub fn match_labels(key: &str, value: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(key.to_owned(), value.to_owned())])),
        ..LabelSelector::default()
    }
}

/// Creates `pods` one by one; returns their names in order, as the API server
/// gave them (so a pod made with `generateName` is returned with its name).
pub async fn create_pods(api: &Api<Pod>, pods: Vec<Pod>) -> crate::Result<Vec<String>> {
    let mut names = Vec::new();
    for pod in pods {
        let created = api.create(&PostParams::default(), &pod).await?;
        names.push(created.metadata.name.unwrap_or_default());
    }
    Ok(names)
}

/// A container asking for `gpus` whole GPUs (request = limit). Its image never runs:
/// KWOK nodes only pretend to start it.
pub fn gpu_worker_container(gpus: u32) -> Container {
    let gpu = BTreeMap::from([(RESOURCE_WHOLE_GPU.to_owned(), Quantity(gpus.to_string()))]);
    Container {
        name: "worker".to_owned(),
        image: Some("example.invalid/worker:1".to_owned()),
        resources: Some(ResourceRequirements {
            requests: Some(gpu.clone()),
            limits: Some(gpu),
            ..ResourceRequirements::default()
        }),
        ..Container::default()
    }
}

/// A container asking for `milli` thousandths of one GPU
/// (`phalanx.dev/gpu-milli`, request = limit).
pub fn gpu_share_container(milli: u32) -> Container {
    let share = BTreeMap::from([(RESOURCE_GPU_MILLI.to_owned(), Quantity(milli.to_string()))]);
    Container {
        name: "worker".to_owned(),
        image: Some("example.invalid/worker:1".to_owned()),
        resources: Some(ResourceRequirements {
            requests: Some(share.clone()),
            limits: Some(share),
            ..ResourceRequirements::default()
        }),
        ..Container::default()
    }
}

/// A pod named `name` with one container, for `scheduler_name`.
pub fn pod_for(name: &str, scheduler_name: &str, container: Container) -> Pod {
    PodBuilder::new(name, scheduler_name, container).build()
}

/// A pod built option by option, for the shapes real workloads have: a name
/// or a `generateName` prefix (as Deployments and operators create them),
/// labels, annotations, node selectors and required node affinity, a
/// PriorityClass.
///
/// ```
/// # use phalanx_e2e::{gpu_worker_container, PodBuilder};
/// let pod = PodBuilder::generated("trainer-", "phalanx", gpu_worker_container(1))
///     .label("app", "trainer")
///     .node_selector("topology.kubernetes.io/zone", "zone-b")
///     .priority_class("high")
///     .build();
/// assert_eq!(pod.metadata.generate_name.as_deref(), Some("trainer-"));
/// ```
#[derive(Debug, Clone)]
pub struct PodBuilder {
    pod: Pod,
}

impl PodBuilder {
    /// A pod named `name` with one container, for `scheduler_name`.
    pub fn new(name: &str, scheduler_name: &str, container: Container) -> Self {
        let mut builder = Self::unnamed(scheduler_name, container);
        builder.pod.metadata.name = Some(name.to_owned());
        builder
    }

    /// A pod the API server names: `prefix` followed by a random suffix, as
    /// a ReplicaSet's or an operator's pods are. [`create_pods`] returns the
    /// names given; [`PodSelector::name_prefix`] finds them again.
    pub fn generated(prefix: &str, scheduler_name: &str, container: Container) -> Self {
        let mut builder = Self::unnamed(scheduler_name, container);
        builder.pod.metadata.generate_name = Some(prefix.to_owned());
        builder
    }

    /// A pod without a name, to be the template of a workload
    /// ([`PodBuilder::deployment`]).
    pub fn template(scheduler_name: &str, container: Container) -> Self {
        Self::unnamed(scheduler_name, container)
    }

    fn unnamed(scheduler_name: &str, container: Container) -> Self {
        Self {
            pod: Pod {
                metadata: ObjectMeta::default(),
                spec: Some(PodSpec {
                    scheduler_name: Some(scheduler_name.to_owned()),
                    containers: vec![container],
                    ..PodSpec::default()
                }),
                ..Pod::default()
            },
        }
    }

    /// In `namespace` (otherwise the namespace of the `Api` it is created with).
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.pod.metadata.namespace = Some(namespace.to_owned());
        self
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.pod
            .metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(key.to_owned(), value.to_owned());
        self
    }

    /// Joins the Kubernetes (`scheduling.k8s.io/v1beta1`) PodGroup `name`
    /// through `spec.schedulingGroup.podGroupName`.
    pub fn scheduling_group(mut self, name: &str) -> Self {
        if let Some(spec) = self.pod.spec.as_mut() {
            spec.scheduling_group = Some(PodSchedulingGroup {
                pod_group_name: Some(name.to_owned()),
            });
        }
        self
    }

    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.pod
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(key.to_owned(), value.to_owned());
        self
    }

    /// Adds `key: value` to `spec.nodeSelector`.
    pub fn node_selector(mut self, key: &str, value: &str) -> Self {
        self.spec()
            .node_selector
            .get_or_insert_with(BTreeMap::new)
            .insert(key.to_owned(), value.to_owned());
        self
    }

    /// Adds a required node-affinity term: the node's label `key` is one of
    /// `values`. Terms are ORed, as Kubernetes reads them.
    pub fn required_node_label_in(mut self, key: &str, values: &[&str]) -> Self {
        let term = NodeSelectorTerm {
            match_expressions: Some(vec![NodeSelectorRequirement {
                key: key.to_owned(),
                operator: "In".to_owned(),
                values: Some(values.iter().map(|v| (*v).to_owned()).collect()),
            }]),
            ..NodeSelectorTerm::default()
        };
        self.spec()
            .affinity
            .get_or_insert_with(Affinity::default)
            .node_affinity
            .get_or_insert_with(NodeAffinity::default)
            .required_during_scheduling_ignored_during_execution
            .get_or_insert_with(NodeSelector::default)
            .node_selector_terms
            .push(term);
        self
    }

    /// Adds a required pod affinity term: the pod goes only where `term`'s
    /// pods are (per its topology key). See [`pod_term`].
    pub fn required_pod_affinity(mut self, term: PodAffinityTerm) -> Self {
        self.spec()
            .affinity
            .get_or_insert_with(Affinity::default)
            .pod_affinity
            .get_or_insert_with(PodAffinity::default)
            .required_during_scheduling_ignored_during_execution
            .get_or_insert_with(Vec::new)
            .push(term);
        self
    }

    /// Adds a required pod anti-affinity term: the pod never shares a
    /// topology domain with `term`'s pods. See [`pod_term`].
    pub fn required_pod_anti_affinity(mut self, term: PodAffinityTerm) -> Self {
        self.spec()
            .affinity
            .get_or_insert_with(Affinity::default)
            .pod_anti_affinity
            .get_or_insert_with(PodAntiAffinity::default)
            .required_during_scheduling_ignored_during_execution
            .get_or_insert_with(Vec::new)
            .push(term);
        self
    }

    /// Adds a `spec.topologySpreadConstraints` entry: pods labelled
    /// `key: value` spread over the values of the node label `topology_key`,
    /// at most `max_skew` apart; `hard` is DoNotSchedule, otherwise
    /// ScheduleAnyway.
    pub fn spread(
        mut self,
        (key, value): (&str, &str),
        topology_key: &str,
        max_skew: i32,
        hard: bool,
    ) -> Self {
        let when = if hard {
            "DoNotSchedule"
        } else {
            "ScheduleAnyway"
        };
        self.spec()
            .topology_spread_constraints
            .get_or_insert_with(Vec::new)
            .push(TopologySpreadConstraint {
                label_selector: Some(match_labels(key, value)),
                max_skew,
                topology_key: topology_key.to_owned(),
                when_unsatisfiable: when.to_owned(),
                ..TopologySpreadConstraint::default()
            });
        self
    }

    /// `spec.priorityClassName`. The PriorityClass must exist when the pod is
    /// created: the API server's Priority admission copies its value into
    /// `spec.priority` then, and refuses a pod naming an unknown class (see
    /// [`crate::priority::create_priority_class`]).
    /// Mounts the PersistentVolumeClaim `claim` as volume `volume`.
    pub fn claim_volume(mut self, volume: &str, claim: &str) -> Self {
        let spec = self.pod.spec.get_or_insert_with(Default::default);
        spec.volumes.get_or_insert_with(Vec::new).push(Volume {
            name: volume.to_owned(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.to_owned(),
                read_only: None,
            }),
            ..Volume::default()
        });
        self
    }

    pub fn priority_class(mut self, name: &str) -> Self {
        self.spec().priority_class_name = Some(name.to_owned());
        self
    }

    /// `spec.terminationGracePeriodSeconds`; 0 makes deletion immediate.
    pub fn termination_grace_seconds(mut self, seconds: i64) -> Self {
        self.spec().termination_grace_period_seconds = Some(seconds);
        self
    }

    pub fn build(self) -> Pod {
        self.pod
    }

    /// A Deployment `name` of `replicas` pods like this one, which become
    /// its template: labels and annotations, plus `app: name`, which the
    /// Deployment selects by; its own name and namespace are not used.
    /// kube-controller-manager creates the pods, named `name-<hash>-<suffix>`.
    pub fn deployment(self, name: &str, replicas: i32) -> Deployment {
        let labels = BTreeMap::from([("app".to_owned(), name.to_owned())]);
        let pod = self.label("app", name).pod;
        Deployment {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            spec: DeploymentSpec {
                replicas: Some(replicas),
                selector: LabelSelector {
                    match_labels: Some(labels),
                    ..LabelSelector::default()
                },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: pod.metadata.labels,
                        annotations: pod.metadata.annotations,
                        ..ObjectMeta::default()
                    }),
                    spec: pod.spec,
                },
                ..DeploymentSpec::default()
            },
            ..Deployment::default()
        }
    }

    fn spec(&mut self) -> &mut PodSpec {
        self.pod.spec.get_or_insert_with(PodSpec::default)
    }
}

/// Which pods a helper looks at: by name, by name prefix (pods made with
/// `generateName`, or by a controller) or by label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodSelector {
    Names(Vec<String>),
    NamePrefix(String),
    /// A label selector as `kubectl -l` takes it (`app=web,tier!=db`).
    Labels(String),
}

impl PodSelector {
    pub fn names(names: &[String]) -> Self {
        Self::Names(names.to_vec())
    }

    pub fn name_prefix(prefix: &str) -> Self {
        Self::NamePrefix(prefix.to_owned())
    }

    pub fn labels(selector: &str) -> Self {
        Self::Labels(selector.to_owned())
    }

    /// The selected pods that exist, in the order the API server lists them.
    pub async fn list(&self, api: &Api<Pod>) -> crate::Result<Vec<Pod>> {
        let params = match self {
            Self::Labels(selector) => ListParams::default().labels(selector),
            Self::Names(_) | Self::NamePrefix(_) => ListParams::default(),
        };
        let mut pods = api.list(&params).await?.items;
        pods.retain(|pod| self.matches_name(pod.metadata.name.as_deref().unwrap_or_default()));
        Ok(pods)
    }

    /// How many pods the selector names, when it names them.
    pub fn named_count(&self) -> Option<usize> {
        match self {
            Self::Names(names) => Some(names.len()),
            Self::NamePrefix(_) | Self::Labels(_) => None,
        }
    }

    fn matches_name(&self, name: &str) -> bool {
        match self {
            Self::Names(names) => names.iter().any(|n| n == name),
            Self::NamePrefix(prefix) => name.starts_with(prefix.as_str()),
            Self::Labels(_) => true,
        }
    }
}

impl std::fmt::Display for PodSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Names(names) => write!(f, "pods {names:?}"),
            Self::NamePrefix(prefix) => write!(f, "pods named {prefix}*"),
            Self::Labels(selector) => write!(f, "pods labelled {selector}"),
        }
    }
}

/// The pods among `names` that exist.
/// A scheduler-plugins PodGroup `name` in `namespace` asking for `min_member`
/// members; pods join it with the `scheduling.x-k8s.io/pod-group` label.
pub fn pod_group(namespace: &str, name: &str, min_member: i32) -> phalanx_api::PodGroup {
    phalanx_api::PodGroup {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        spec: phalanx_api::PodGroupSpec {
            min_member,
            ..phalanx_api::PodGroupSpec::default()
        },
        status: None,
    }
}

/// A Kubernetes (`scheduling.k8s.io/v1beta1`) PodGroup `name` in `namespace`
/// with the gang policy `minCount: min_count` and, when given, the required
/// topology key; pods join it with [`PodBuilder::scheduling_group`].
pub fn upstream_pod_group(
    namespace: &str,
    name: &str,
    min_count: i32,
    topology_key: Option<&str>,
) -> UpstreamPodGroup {
    UpstreamPodGroup {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        spec: UpstreamPodGroupSpec {
            scheduling_policy: PodGroupSchedulingPolicy {
                gang: Some(GangSchedulingPolicy { min_count }),
                basic: None,
            },
            scheduling_constraints: topology_key.map(|key| PodGroupSchedulingConstraints {
                topology: Some(vec![TopologyConstraint {
                    key: key.to_owned(),
                }]),
            }),
            ..UpstreamPodGroupSpec::default()
        },
        status: None,
    }
}

pub async fn pods_named(api: &Api<Pod>, names: &[String]) -> crate::Result<Vec<Pod>> {
    PodSelector::names(names).list(api).await
}

/// The pods whose name starts with `prefix`.
pub async fn pods_with_prefix(api: &Api<Pod>, prefix: &str) -> crate::Result<Vec<Pod>> {
    PodSelector::name_prefix(prefix).list(api).await
}

/// Whether the pod is being deleted.
pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// The pod's name, or "" for one not yet created.
pub fn name_of(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or_default()
}

/// What a pod asks of GPUs: whole GPUs and thousandths of one, summed over
/// its containers' requests.
pub fn gpu_request(pod: &Pod) -> (u32, u32) {
    let mut whole = 0;
    let mut milli = 0;
    for container in pod.spec.iter().flat_map(|s| &s.containers) {
        let Some(requests) = container
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
        else {
            continue;
        };
        let get = |key: &str| {
            requests
                .get(key)
                .and_then(|q| q.0.parse::<u32>().ok())
                .unwrap_or(0)
        };
        whole += get(RESOURCE_WHOLE_GPU);
        milli += get(RESOURCE_GPU_MILLI);
    }
    (whole, milli)
}

/// The node a pod is bound to.
pub fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.node_name.as_deref()
}

/// The pod's `phalanx.dev/gpu-assignment` annotation: `None` when absent.
pub fn assignment_of(pod: &Pod) -> Option<Result<GpuAssignmentAnnotation, String>> {
    let value = pod
        .metadata
        .annotations
        .as_ref()?
        .get(ANNOTATION_GPU_ASSIGNMENT)?;
    Some(GpuAssignmentAnnotation::parse(value).map_err(|e| e.to_string()))
}

/// Every way the bound pods' GPU assignments break the rules, as messages
/// (empty when all is well): each bound pod has an assignment naming its node;
/// it gives a whole-GPU pod that many distinct GPUs of 1000 and a share pod
/// one GPU with its share; indexes exist on the node (`gpus_per_node`, when
/// the node is listed); and no GPU is promised more than 1000 milli in total.
pub fn assignment_violations(pods: &[Pod], gpus_per_node: &HashMap<String, u32>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut per_gpu: BTreeMap<(String, u32), Vec<(String, u32)>> = BTreeMap::new();
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let Some(node) = node_of(pod) else { continue };
        let assignment = match assignment_of(pod) {
            None => {
                problems.push(format!("{name} is bound to {node} without an assignment"));
                continue;
            }
            Some(Err(e)) => {
                problems.push(format!("{name}: {e}"));
                continue;
            }
            Some(Ok(a)) => a,
        };
        if assignment.node != node {
            problems.push(format!(
                "{name} is bound to {node} but its assignment names {}",
                assignment.node
            ));
        }
        let (whole, milli) = gpu_request(pod);
        let indexes: HashSet<u32> = assignment.gpus.iter().map(|g| g.index).collect();
        if indexes.len() != assignment.gpus.len() {
            problems.push(format!("{name} names a GPU twice: {assignment:?}"));
        }
        if whole > 0 {
            let all_full = assignment.gpus.iter().all(|g| g.milli == MILLI_PER_GPU);
            if assignment.gpus.len() != whole as usize || !all_full {
                problems.push(format!(
                    "{name} asks {whole} whole GPUs but was given {assignment:?}"
                ));
            }
        } else if milli > 0 {
            let total: u32 = assignment.gpus.iter().map(|g| g.milli).sum();
            if assignment.gpus.len() != 1 || total != milli {
                problems.push(format!(
                    "{name} asks {milli} milli of one GPU but was given {assignment:?}"
                ));
            }
        }
        for gpu in &assignment.gpus {
            if let Some(&count) = gpus_per_node.get(node) {
                if gpu.index >= count {
                    problems.push(format!(
                        "{name} was given GPU {} of {node}, which has {count}",
                        gpu.index
                    ));
                }
            }
            per_gpu
                .entry((node.to_owned(), gpu.index))
                .or_default()
                .push((name.clone(), gpu.milli));
        }
    }
    for ((node, index), holders) in per_gpu {
        let total: u32 = holders.iter().map(|(_, m)| m).sum();
        if total > MILLI_PER_GPU {
            problems.push(format!(
                "GPU {index} of {node} is over-committed ({total} milli): {holders:?}"
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use phalanx_api::AssignedGpu;

    fn bound(name: &str, node: &str, container: Container, gpus: &[(u32, u32)]) -> Pod {
        let mut pod = pod_for(name, "phalanx", container);
        if let Some(spec) = pod.spec.as_mut() {
            spec.node_name = Some(node.to_owned());
        }
        let assignment = GpuAssignmentAnnotation {
            node: node.to_owned(),
            gpus: gpus
                .iter()
                .map(|&(index, milli)| AssignedGpu {
                    index,
                    uuid: String::new(),
                    milli,
                })
                .collect(),
        };
        pod.metadata.annotations = Some(BTreeMap::from([(
            ANNOTATION_GPU_ASSIGNMENT.to_owned(),
            assignment.to_json(),
        )]));
        pod
    }

    #[test]
    fn accepts_a_valid_packing_and_names_an_overcommitted_gpu() {
        let nodes = HashMap::from([("n".to_owned(), 2)]);
        let ok = vec![
            bound("a", "n", gpu_worker_container(1), &[(0, 1000)]),
            bound("b", "n", gpu_share_container(600), &[(1, 600)]),
            bound("c", "n", gpu_share_container(400), &[(1, 400)]),
        ];
        assert!(assignment_violations(&ok, &nodes).is_empty());
        let mut bad = ok;
        bad.push(bound("d", "n", gpu_share_container(100), &[(1, 100)]));
        bad.push(bound("e", "n", gpu_worker_container(1), &[(2, 1000)]));
        let problems = assignment_violations(&bad, &nodes);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("over-committed")));
        assert!(problems.iter().any(|p| p.contains("GPU 2 of n")));
    }

    #[test]
    fn the_builder_sets_each_option_where_kubernetes_reads_it() {
        let pod = PodBuilder::generated("web-", "phalanx", gpu_share_container(250))
            .namespace("serving")
            .label("app", "web")
            .annotation("note", "x")
            .node_selector("topology.kubernetes.io/zone", "b")
            .required_node_label_in("example.com/rack", &["r1", "r2"])
            .required_node_label_in("example.com/rack", &["r9"])
            .priority_class("high")
            .termination_grace_seconds(0)
            .build();
        let meta = &pod.metadata;
        assert_eq!(meta.name, None);
        assert_eq!(meta.generate_name.as_deref(), Some("web-"));
        assert_eq!(meta.namespace.as_deref(), Some("serving"));
        assert_eq!(meta.labels.as_ref().unwrap()["app"], "web");
        assert_eq!(meta.annotations.as_ref().unwrap()["note"], "x");
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.scheduler_name.as_deref(), Some("phalanx"));
        assert_eq!(
            spec.node_selector.as_ref().unwrap()["topology.kubernetes.io/zone"],
            "b"
        );
        let terms = &spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| {
                n.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .unwrap()
            .node_selector_terms;
        assert_eq!(terms.len(), 2, "one term per call, ORed");
        let first = &terms[0].match_expressions.as_ref().unwrap()[0];
        assert_eq!(
            (first.key.as_str(), first.operator.as_str()),
            ("example.com/rack", "In")
        );
        assert_eq!(
            first.values.as_deref(),
            Some(&["r1".to_owned(), "r2".to_owned()][..])
        );
        assert_eq!(spec.priority_class_name.as_deref(), Some("high"));
        assert_eq!(spec.termination_grace_period_seconds, Some(0));
        assert_eq!(gpu_request(&pod), (0, 250));
        assert_eq!(
            pod_for("a", "s", gpu_worker_container(1))
                .metadata
                .name
                .as_deref(),
            Some("a")
        );
    }

    #[test]
    fn a_deployment_selects_its_template_by_app() {
        let deployment = PodBuilder::template("default-scheduler", gpu_worker_container(1))
            .label("tier", "gpu")
            .termination_grace_seconds(0)
            .deployment("llm", 3);
        assert_eq!(deployment.metadata.name.as_deref(), Some("llm"));
        let spec = deployment.spec;
        assert_eq!(spec.replicas, Some(3));
        let selected = spec.selector.match_labels.unwrap();
        let labels = spec.template.metadata.unwrap().labels.unwrap();
        assert!(selected.iter().all(|(k, v)| labels.get(k) == Some(v)));
        assert_eq!(labels["tier"], "gpu");
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.termination_grace_period_seconds, Some(0));
        assert_eq!(pod.scheduler_name.as_deref(), Some("default-scheduler"));
    }

    #[test]
    fn selectors_match_by_name_prefix_or_leave_it_to_labels() {
        let names = PodSelector::names(&["a-1".to_owned(), "b".to_owned()]);
        assert!(names.matches_name("a-1") && names.matches_name("b"));
        assert!(!names.matches_name("a-10"));
        assert_eq!(names.named_count(), Some(2));
        let prefix = PodSelector::name_prefix("web-");
        assert!(prefix.matches_name("web-x7k2p") && !prefix.matches_name("db-1"));
        assert_eq!(prefix.named_count(), None);
        assert!(PodSelector::labels("app=web").matches_name("anything"));
        assert_eq!(prefix.to_string(), "pods named web-*");
    }
}
