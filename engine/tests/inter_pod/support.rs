//! Builders for nodes, pods and terms, and a per-node verdict, shared by the cases.

use std::collections::BTreeMap;

use phalanx_engine::policy::PolicyConfig;
use phalanx_engine::{
    build_policy, schedule_one, schedule_one_among, ClusterSnapshot, CycleOutcome, CycleScratch,
    GpuAssignment, GpuDemand, InterPodSpec, LabelOperator, LabelRequirement, LabelSelector,
    ModelConstraint, NamespaceScope, NodeInclusionPolicy, NodeSpec, Placement, PodAffinityRules,
    PodAffinityTerm, PodDemand, PolicyName, TopologySpreadConstraint, UnfitReason,
    WeightedPodAffinityTerm, WhenUnsatisfiable, WorkloadSource,
};

pub const HOSTNAME: &str = "kubernetes.io/hostname";

pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A CPU-only node with ample room, labelled with `pairs` and its hostname.
pub fn node(name: &str, pairs: &[(&str, &str)]) -> NodeSpec {
    let mut l = labels(pairs);
    l.insert(HOSTNAME.into(), name.into());
    NodeSpec {
        name: name.into(),
        cpu_milli: 64_000,
        memory_mib: 1 << 20,
        max_pods: 110,
        labels: l,
        ..NodeSpec::default()
    }
}

pub fn cluster(nodes: Vec<NodeSpec>) -> ClusterSnapshot {
    let mut c = ClusterSnapshot::new();
    for n in nodes {
        c.add_node(n).unwrap();
    }
    c
}

/// `matchLabels` only.
pub fn sel(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector::new("test", labels(pairs), vec![]).unwrap()
}

pub fn expr(key: &str, operator: LabelOperator) -> LabelSelector {
    exprs(vec![(key, operator)])
}

pub fn exprs(reqs: Vec<(&str, LabelOperator)>) -> LabelSelector {
    let reqs = reqs
        .into_iter()
        .map(|(key, operator)| LabelRequirement {
            key: key.into(),
            operator,
        })
        .collect();
    LabelSelector::new("test", BTreeMap::new(), reqs).unwrap()
}

pub fn values(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A term over the `default` namespace.
pub fn term(selector: LabelSelector, topology_key: &str) -> PodAffinityTerm {
    PodAffinityTerm {
        selector: Some(selector),
        namespaces: NamespaceScope::own("default"),
        topology_key: topology_key.into(),
    }
}

pub fn spread(
    max_skew: u32,
    topology_key: &str,
    when: WhenUnsatisfiable,
    selector: LabelSelector,
) -> TopologySpreadConstraint {
    TopologySpreadConstraint {
        max_skew,
        min_domains: None,
        topology_key: topology_key.into(),
        when_unsatisfiable: when,
        selector: Some(selector),
        node_affinity_policy: NodeInclusionPolicy::Honor,
        node_taints_policy: NodeInclusionPolicy::Ignore,
    }
}

/// A pod being built: name, namespace, labels and terms.
#[derive(Debug, Clone)]
pub struct PodBuilder {
    name: String,
    namespace: String,
    labels: BTreeMap<String, String>,
    rules: PodAffinityRules,
    spread: Vec<TopologySpreadConstraint>,
    cpu_milli: u64,
}

pub fn pod(name: &str, pairs: &[(&str, &str)]) -> PodBuilder {
    PodBuilder {
        name: name.into(),
        namespace: "default".into(),
        labels: labels(pairs),
        rules: PodAffinityRules::default(),
        spread: Vec::new(),
        cpu_milli: 100,
    }
}

impl PodBuilder {
    pub fn namespace(mut self, ns: &str) -> Self {
        self.namespace = ns.into();
        self
    }
    pub fn cpu(mut self, milli: u64) -> Self {
        self.cpu_milli = milli;
        self
    }
    pub fn affinity(mut self, t: PodAffinityTerm) -> Self {
        self.rules.required_affinity.push(t);
        self
    }
    pub fn anti(mut self, t: PodAffinityTerm) -> Self {
        self.rules.required_anti_affinity.push(t);
        self
    }
    pub fn preferred(mut self, weight: i32, term: PodAffinityTerm) -> Self {
        self.rules
            .preferred_affinity
            .push(WeightedPodAffinityTerm { weight, term });
        self
    }
    pub fn preferred_anti(mut self, weight: i32, term: PodAffinityTerm) -> Self {
        self.rules
            .preferred_anti_affinity
            .push(WeightedPodAffinityTerm { weight, term });
        self
    }
    pub fn spread(mut self, c: TopologySpreadConstraint) -> Self {
        self.spread.push(c);
        self
    }
    pub fn build(self) -> PodDemand {
        let spec = InterPodSpec::new(
            &self.name,
            self.namespace,
            self.labels,
            self.rules,
            self.spread,
        )
        .unwrap();
        PodDemand::new(
            self.name,
            self.cpu_milli,
            0,
            GpuDemand::None,
            ModelConstraint::Any,
        )
        .unwrap()
        .with_inter_pod(spec)
    }
}

/// Places `pod` on the named node (no GPUs).
pub fn place(c: &mut ClusterSnapshot, pod: &PodDemand, node: &str) -> Placement {
    let placement = Placement {
        node: c.node_id(node).unwrap(),
        gpus: GpuAssignment::default(),
    };
    c.place(pod, &placement).unwrap();
    placement
}

pub fn policy() -> Box<dyn phalanx_engine::PlacementPolicy> {
    build_policy(
        PolicyName::BestFit,
        &PolicyConfig {
            seed: 1,
            workload: WorkloadSource::Fixed(vec![]),
        },
    )
}

/// What one cycle says of `pod` on the named node alone: Ok, or its one reason.
pub fn verdict(c: &ClusterSnapshot, pod: &PodDemand, node: &str) -> Result<(), UnfitReason> {
    let id = c.node_id(node).unwrap();
    let mut scratch = CycleScratch::default();
    match schedule_one_among(c, policy().as_mut(), pod, &mut scratch, |n| n == id) {
        CycleOutcome::Placed(_) => Ok(()),
        CycleOutcome::Unschedulable { reasons, .. } => {
            assert_eq!(reasons.len(), 1, "{reasons:?}");
            Err(reasons.keys().next().unwrap().clone())
        }
    }
}

/// The verdict on every node, in node order.
pub fn verdicts(c: &ClusterSnapshot, pod: &PodDemand) -> Vec<(String, Result<(), UnfitReason>)> {
    c.nodes()
        .iter()
        .filter(|n| !n.removed)
        .map(|n| (n.name.clone(), verdict(c, pod, &n.name)))
        .collect()
}

/// Names of the nodes where `pod` may go.
pub fn fitting(c: &ClusterSnapshot, pod: &PodDemand) -> Vec<String> {
    verdicts(c, pod)
        .into_iter()
        .filter(|(_, v)| v.is_ok())
        .map(|(n, _)| n)
        .collect()
}

/// Where one full cycle puts `pod` (with the given policy), by node name.
pub fn chosen(
    c: &ClusterSnapshot,
    policy: &mut dyn phalanx_engine::PlacementPolicy,
    pod: &PodDemand,
) -> Option<String> {
    let mut scratch = CycleScratch::default();
    match schedule_one(c, policy, pod, &mut scratch) {
        CycleOutcome::Placed(p) => Some(c.node(p.node).name.clone()),
        CycleOutcome::Unschedulable { .. } => None,
    }
}
