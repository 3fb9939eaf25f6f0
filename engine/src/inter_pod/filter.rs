//! The required rules, checked per node after the resource filters, in
//! kube-scheduler's plugin order: PodTopologySpread (DoNotSchedule), then
//! InterPodAffinity (the pod's affinity, its anti-affinity, then existing pods'
//! anti-affinity). Everything that does not depend on the node is worked out once
//! per cycle in [`InterPodFilter::prepare`], from the snapshot's per-domain counts.

use std::borrow::Cow;

use super::domain_hash::DomainMap;
use super::index::{scan, Matching, NamespaceLabels};
use super::terms::{
    InterPodSpec, NodeInclusionPolicy, TopologySpreadConstraint, WhenUnsatisfiable,
};
use crate::constraints::tolerates_all;
use crate::node::NodeState;
use crate::pod::PodDemand;
use crate::snapshot::{ClusterSnapshot, UnfitReason};

/// One DoNotSchedule constraint, resolved for this cycle.
#[derive(Debug)]
struct SpreadCheck<'a> {
    topology_key: &'a str,
    max_skew: i64,
    /// 1 when the pod itself matches the constraint's selector.
    self_match: i64,
    /// Matching pods per eligible domain (eligible domains with none are present).
    per_domain: DomainMap<&'a str, i64>,
    /// The global minimum the skew is measured from.
    min: i64,
}

/// A required term of the pod with the counts it is checked against.
#[derive(Debug)]
struct TermCheck<'a> {
    topology_key: &'a str,
    matching: Cow<'a, Matching>,
}

/// Existing pods' required anti-affinity that selects this pod: their domains.
#[derive(Debug)]
struct ExistingAnti<'a> {
    topology_key: &'a str,
    carriers: &'a DomainMap<String, u32>,
}

/// The per-cycle state of the required inter-pod rules for one pod.
#[derive(Debug)]
pub(crate) struct InterPodFilter<'a> {
    spread: Vec<SpreadCheck<'a>>,
    affinity: Vec<TermCheck<'a>>,
    /// No placed pod matches all the pod's required affinity terms anywhere.
    no_affinity_match_anywhere: bool,
    /// The pod matches all its own required affinity terms.
    self_affine: bool,
    anti_affinity: Vec<TermCheck<'a>>,
    existing_anti: Vec<ExistingAnti<'a>>,
}

impl<'a> InterPodFilter<'a> {
    /// `None` when no required rule concerns the pod (the plain path: nothing is
    /// allocated and nodes are checked for resources only).
    pub fn prepare(snapshot: &'a ClusterSnapshot, pod: &'a PodDemand) -> Option<Self> {
        let spec = pod.inter_pod.as_deref()?;
        let index = snapshot.inter_pod_index();
        let namespaces = snapshot.namespace_labels();
        let existing_anti: Vec<ExistingAnti<'a>> = index
            .entries
            .iter()
            .filter(|e| {
                !e.anti_carriers.is_empty() && e.term.selects(spec, |ns| namespaces.get(ns))
            })
            .map(|e| ExistingAnti {
                topology_key: &e.term.topology_key,
                carriers: &e.anti_carriers,
            })
            .collect();
        let rules = spec.affinity();
        let hard_spread = spec
            .spread()
            .iter()
            .any(|c| c.when_unsatisfiable == WhenUnsatisfiable::DoNotSchedule);
        if existing_anti.is_empty()
            && rules.required_affinity.is_empty()
            && rules.required_anti_affinity.is_empty()
            && !hard_spread
        {
            return None;
        }
        let counts = |term| match index.find(term) {
            Some(entry) => Cow::Borrowed(&entry.matching),
            None => Cow::Owned(scan(term, snapshot.nodes(), namespaces)),
        };
        let anti_affinity = rules
            .required_anti_affinity
            .iter()
            .map(|t| TermCheck {
                topology_key: &t.topology_key,
                matching: counts(t),
            })
            .collect();
        // kube-scheduler counts, per term's domain, the pods that match *all* the
        // required affinity terms; with one term that is the term's own count.
        let affinity: Vec<TermCheck<'a>> = match rules.required_affinity.as_slice() {
            [] => Vec::new(),
            [term] => vec![TermCheck {
                topology_key: &term.topology_key,
                matching: counts(term),
            }],
            terms => scan_matching_all(terms, snapshot.nodes(), namespaces)
                .into_iter()
                .zip(terms)
                .map(|(m, t)| TermCheck {
                    topology_key: &t.topology_key,
                    matching: Cow::Owned(m),
                })
                .collect(),
        };
        let no_affinity_match_anywhere = affinity.iter().all(|t| t.matching.per_domain.is_empty());
        let self_affine = rules
            .required_affinity
            .iter()
            .all(|t| t.selects(spec, |ns| namespaces.get(ns)));
        let spread = spread_checks(snapshot, pod, spec);
        Some(InterPodFilter {
            spread,
            affinity,
            no_affinity_match_anywhere,
            self_affine,
            anti_affinity,
            existing_anti,
        })
    }

    /// The first required rule `node` breaks, if any.
    pub fn check(&self, node: &NodeState) -> Result<(), UnfitReason> {
        for c in &self.spread {
            let Some(domain) = node.labels.get(c.topology_key) else {
                return Err(UnfitReason::TopologySpreadMissingLabel);
            };
            let here = c.per_domain.get(domain.as_str()).copied().unwrap_or(0);
            if here + c.self_match - c.min > c.max_skew {
                return Err(UnfitReason::TopologySpreadSkew);
            }
        }
        if !self.affinity.is_empty() {
            let mut pods_exist = true;
            for t in &self.affinity {
                match node.labels.get(t.topology_key) {
                    Some(domain) if t.matching.in_domain(domain) > 0 => {}
                    Some(_) => pods_exist = false,
                    // A node without the topology label can never satisfy the term.
                    None => return Err(UnfitReason::PodAffinity),
                }
            }
            // The first pod of a group that is affine to itself goes anywhere.
            let first_of_group = self.no_affinity_match_anywhere && self.self_affine;
            if !pods_exist && !first_of_group {
                return Err(UnfitReason::PodAffinity);
            }
        }
        for t in &self.anti_affinity {
            if let Some(domain) = node.labels.get(t.topology_key) {
                if t.matching.in_domain(domain) > 0 {
                    return Err(UnfitReason::PodAntiAffinity);
                }
            }
        }
        for e in &self.existing_anti {
            if let Some(domain) = node.labels.get(e.topology_key) {
                if e.carriers.get(domain).is_some_and(|n| *n > 0) {
                    return Err(UnfitReason::ExistingPodsAntiAffinity);
                }
            }
        }
        Ok(())
    }
}

/// Does `node` count for `constraint` of `pod` (nodeAffinityPolicy and
/// nodeTaintsPolicy)? Shared by the filter and the score.
pub(crate) fn counts_for(
    constraint: &TopologySpreadConstraint,
    pod: &PodDemand,
    node: &NodeState,
) -> bool {
    (constraint.node_affinity_policy == NodeInclusionPolicy::Ignore
        || pod.rules.selects(&node.labels))
        && (constraint.node_taints_policy == NodeInclusionPolicy::Ignore
            || tolerates_all(&node.taints, &pod.rules.tolerations))
}

/// kube-scheduler's PodTopologySpread PreFilter: per constraint, matching pods
/// per domain over the nodes that count (they carry every DoNotSchedule
/// constraint's key and pass its inclusion policies), and the global minimum.
fn spread_checks<'a>(
    snapshot: &'a ClusterSnapshot,
    pod: &'a PodDemand,
    spec: &'a InterPodSpec,
) -> Vec<SpreadCheck<'a>> {
    let hard: Vec<_> = spec
        .spread_with_terms()
        .filter(|(c, _)| c.when_unsatisfiable == WhenUnsatisfiable::DoNotSchedule)
        .collect();
    if hard.is_empty() {
        return Vec::new();
    }
    let index = snapshot.inter_pod_index();
    let namespaces = snapshot.namespace_labels();
    let nodes = snapshot.nodes();
    let mut checks = Vec::with_capacity(hard.len());
    for &(c, term) in &hard {
        let matching = match index.find(term) {
            Some(entry) => Cow::Borrowed(&entry.matching),
            None => Cow::Owned(scan(term, nodes, namespaces)),
        };
        let mut per_domain: DomainMap<&'a str, i64> = DomainMap::default();
        for (i, node) in nodes.iter().enumerate() {
            if node.removed
                || !hard
                    .iter()
                    .all(|(h, _)| node.labels.contains_key(&h.topology_key))
                || !counts_for(c, pod, node)
            {
                continue;
            }
            let domain = node.labels[&c.topology_key].as_str();
            *per_domain.entry(domain).or_insert(0) += i64::from(matching.on_node(i));
        }
        let too_few_domains = c
            .min_domains
            .is_some_and(|min| (per_domain.len() as u64) < u64::from(min));
        let min = if too_few_domains {
            0
        } else {
            // No eligible domain: nothing to be skewed against.
            per_domain.values().copied().min().unwrap_or(i64::MAX / 2)
        };
        let self_match = term.selects(spec, |ns| namespaces.get(ns));
        checks.push(SpreadCheck {
            topology_key: &c.topology_key,
            max_skew: i64::from(c.max_skew),
            self_match: i64::from(self_match),
            per_domain,
            min,
        });
    }
    checks
}

/// Per term, placed pods matching every term, in that term's domains.
fn scan_matching_all(
    terms: &[super::terms::PodAffinityTerm],
    nodes: &[NodeState],
    namespaces: &NamespaceLabels,
) -> Vec<Matching> {
    let mut out = vec![Matching::default(); terms.len()];
    for (i, node) in nodes.iter().enumerate() {
        for pod in &node.inter_pod {
            if !terms
                .iter()
                .all(|t| t.selects(pod, |ns| namespaces.get(ns)))
            {
                continue;
            }
            for (m, t) in out.iter_mut().zip(terms) {
                if let Some(domain) = node.labels.get(&t.topology_key) {
                    if m.per_node.len() <= i {
                        m.per_node.resize(i + 1, 0);
                    }
                    m.per_node[i] += 1;
                    *m.per_domain.entry(domain.clone()).or_insert(0) += 1;
                }
            }
        }
    }
    out
}
