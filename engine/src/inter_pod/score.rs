//! The preferred rules as scores over the feasible nodes, each normalised to
//! 0..=100 the way kube-scheduler's plugins normalise theirs:
//! * InterPodAffinity: the pod's preferred terms (+weight per matching placed pod
//!   in the node's domain, −weight for anti-affinity) plus existing pods' terms
//!   that select this pod (symmetry: their preferred terms ±weight, their required
//!   affinity at hardPodAffinityWeight 1); min-max normalised.
//! * PodTopologySpread (ScheduleAnyway): fewer matching pods in the node's domain
//!   score higher; each constraint weighted by ln(domains + 2); nodes without a
//!   constraint's key score 0.
//!
//! How they blend with the GPU policy's score is `crate::preferences`' business.

use std::borrow::Cow;

use super::domain_hash::DomainMap;
use super::filter::counts_for;
use super::index::{scan, Matching};
use super::terms::WhenUnsatisfiable;
use crate::node::{NodeId, NodeState};
use crate::pod::PodDemand;
use crate::snapshot::ClusterSnapshot;

/// kube-scheduler's `MaxNodeScore`.
pub(crate) const MAX_NODE_SCORE: i64 = 100;

/// A preferred term of the pod, or an existing pod's term selecting it.
#[derive(Debug)]
enum Weighted<'a> {
    Own {
        topology_key: &'a str,
        weight: i64,
        matching: Cow<'a, Matching>,
    },
    Existing {
        topology_key: &'a str,
        per_domain: &'a DomainMap<String, i64>,
    },
}

/// One ScheduleAnyway constraint, resolved for this cycle.
#[derive(Debug)]
struct SoftSpread<'a> {
    topology_key: &'a str,
    max_skew: i64,
    weight: f64,
    per_domain: DomainMap<&'a str, i64>,
}

/// The per-cycle state of the preferred inter-pod rules for one pod.
#[derive(Debug)]
pub(crate) struct InterPodScorer<'a> {
    affinity: Vec<Weighted<'a>>,
    spread: Vec<SoftSpread<'a>>,
}

impl<'a> InterPodScorer<'a> {
    /// `None` when no preferred rule concerns the pod: the policy alone decides.
    pub fn prepare(
        snapshot: &'a ClusterSnapshot,
        pod: &'a PodDemand,
        feasible: &[NodeId],
    ) -> Option<Self> {
        let spec = pod.inter_pod.as_deref()?;
        let index = snapshot.inter_pod_index();
        let namespaces = snapshot.namespace_labels();
        let counts = |term| match index.find(term) {
            Some(entry) => Cow::Borrowed(&entry.matching),
            None => Cow::Owned(scan(term, snapshot.nodes(), namespaces)),
        };
        let rules = spec.affinity();
        let own = rules
            .preferred_affinity
            .iter()
            .map(|w| (w, 1))
            .chain(rules.preferred_anti_affinity.iter().map(|w| (w, -1)))
            .map(|(w, sign)| Weighted::Own {
                topology_key: &w.term.topology_key,
                weight: sign * i64::from(w.weight),
                matching: counts(&w.term),
            });
        let existing = index
            .entries
            .iter()
            .filter(|e| {
                !e.score_carriers.is_empty() && e.term.selects(spec, |ns| namespaces.get(ns))
            })
            .map(|e| Weighted::Existing {
                topology_key: &e.term.topology_key,
                per_domain: &e.score_carriers,
            });
        let affinity: Vec<_> = own.chain(existing).collect();
        let spread = soft_spread(snapshot, pod, feasible);
        if affinity.is_empty() && spread.is_empty() {
            return None;
        }
        Some(InterPodScorer { affinity, spread })
    }

    /// InterPodAffinity's raw score of a node.
    fn affinity_raw(&self, node: &NodeState) -> i64 {
        let mut score = 0;
        for w in &self.affinity {
            match w {
                Weighted::Own {
                    topology_key,
                    weight,
                    matching,
                } => {
                    if let Some(domain) = node.labels.get(*topology_key) {
                        score += weight * i64::from(matching.in_domain(domain));
                    }
                }
                Weighted::Existing {
                    topology_key,
                    per_domain,
                } => {
                    if let Some(domain) = node.labels.get(*topology_key) {
                        score += per_domain.get(domain).copied().unwrap_or(0);
                    }
                }
            }
        }
        score
    }

    /// PodTopologySpread's raw score, or `None` for a node it ignores (one missing
    /// a constraint's key).
    fn spread_raw(&self, node: &NodeState) -> Option<i64> {
        let mut score = 0.0;
        for c in &self.spread {
            let domain = node.labels.get(c.topology_key)?;
            let count = c.per_domain.get(domain.as_str()).copied().unwrap_or(0);
            score += count as f64 * c.weight + (c.max_skew - 1) as f64;
        }
        // Truncated, as kube-scheduler's int64(score) does.
        Some(score as i64)
    }

    /// Both plugins' normalised scores (0..=100) for each of `feasible`, added
    /// with weight `weight` each into `out` (one slot per feasible node).
    pub fn add_scores(
        &self,
        snapshot: &ClusterSnapshot,
        feasible: &[NodeId],
        weight: i64,
        out: &mut [i64],
    ) {
        if !self.affinity.is_empty() {
            let raw: Vec<i64> = feasible
                .iter()
                .map(|&id| self.affinity_raw(snapshot.node(id)))
                .collect();
            let (min, max) = min_max(raw.iter().copied());
            for (slot, r) in out.iter_mut().zip(&raw) {
                if max > min {
                    *slot += weight * (MAX_NODE_SCORE * (r - min) / (max - min));
                }
            }
        }
        if !self.spread.is_empty() {
            let raw: Vec<Option<i64>> = feasible
                .iter()
                .map(|&id| self.spread_raw(snapshot.node(id)))
                .collect();
            let (min, max) = min_max(raw.iter().flatten().copied());
            let max = max.max(0);
            for (slot, r) in out.iter_mut().zip(&raw) {
                let normalised = match r {
                    None => 0,
                    Some(_) if max == 0 => MAX_NODE_SCORE,
                    Some(s) => MAX_NODE_SCORE * (max + min - s) / max,
                };
                *slot += weight * normalised;
            }
        }
    }
}

fn min_max(values: impl Iterator<Item = i64>) -> (i64, i64) {
    values.fold((i64::MAX, i64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

/// kube-scheduler's PodTopologySpread PreScore: domains are those of the feasible
/// nodes that carry every ScheduleAnyway key; pods are counted on every node that
/// carries them all and passes the constraint's inclusion policies.
fn soft_spread<'a>(
    snapshot: &'a ClusterSnapshot,
    pod: &'a PodDemand,
    feasible: &[NodeId],
) -> Vec<SoftSpread<'a>> {
    let Some(spec) = pod.inter_pod.as_deref() else {
        return Vec::new();
    };
    let soft: Vec<_> = spec
        .spread_with_terms()
        .filter(|(c, _)| c.when_unsatisfiable == WhenUnsatisfiable::ScheduleAnyway)
        .collect();
    if soft.is_empty() {
        return Vec::new();
    }
    let has_all_keys = |n: &NodeState| {
        soft.iter()
            .all(|(c, _)| n.labels.contains_key(&c.topology_key))
    };
    let index = snapshot.inter_pod_index();
    let namespaces = snapshot.namespace_labels();
    let nodes = snapshot.nodes();
    let mut out = Vec::with_capacity(soft.len());
    for &(c, term) in &soft {
        let mut per_domain: DomainMap<&'a str, i64> = DomainMap::default();
        for &id in feasible {
            let node = snapshot.node(id);
            if has_all_keys(node) {
                per_domain.insert(node.labels[&c.topology_key].as_str(), 0);
            }
        }
        let matching = match index.find(term) {
            Some(entry) => Cow::Borrowed(&entry.matching),
            None => Cow::Owned(scan(term, nodes, namespaces)),
        };
        for (i, node) in nodes.iter().enumerate() {
            if node.removed || !has_all_keys(node) || !counts_for(c, pod, node) {
                continue;
            }
            if let Some(n) = per_domain.get_mut(node.labels[&c.topology_key].as_str()) {
                *n += i64::from(matching.on_node(i));
            }
        }
        out.push(SoftSpread {
            topology_key: &c.topology_key,
            max_skew: i64::from(c.max_skew),
            weight: ((per_domain.len() + 2) as f64).ln(),
            per_domain,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::label_selector::{LabelOperator, LabelRequirement, LabelSelector};
    use crate::{
        GpuAssignment, GpuDemand, InterPodSpec, ModelConstraint, NodeInclusionPolicy, NodeSpec,
        Placement, PodAffinityRules, TopologySpreadConstraint,
    };

    const HOST: &str = "kubernetes.io/hostname";

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn foo_pod(name: &str, spread: Vec<TopologySpreadConstraint>) -> PodDemand {
        let spec = InterPodSpec::new(
            name,
            "default",
            labels(&[("foo", "")]),
            PodAffinityRules::default(),
            spread,
        )
        .unwrap();
        PodDemand::new(name, 0, 0, GpuDemand::None, ModelConstraint::Any)
            .unwrap()
            .with_inter_pod(spec)
    }

    fn soft(max_skew: u32, key: &str) -> TopologySpreadConstraint {
        let exists = LabelRequirement {
            key: "foo".into(),
            operator: LabelOperator::Exists,
        };
        TopologySpreadConstraint {
            max_skew,
            min_domains: None,
            topology_key: key.into(),
            when_unsatisfiable: WhenUnsatisfiable::ScheduleAnyway,
            selector: Some(LabelSelector::new("t", BTreeMap::new(), vec![exists]).unwrap()),
            node_affinity_policy: NodeInclusionPolicy::Honor,
            node_taints_policy: NodeInclusionPolicy::Ignore,
        }
    }

    /// Nodes (name, zone, matching pods on it); the normalised PodTopologySpread
    /// scores of the first `candidates` nodes for a pod with `constraint`.
    fn spread_scores(
        nodes: &[(&str, &str, usize)],
        candidates: usize,
        constraint: TopologySpreadConstraint,
    ) -> Vec<i64> {
        let mut c = ClusterSnapshot::new();
        for &(name, zone, pods) in nodes {
            let id = c
                .add_node(NodeSpec {
                    name: name.into(),
                    cpu_milli: 1_000,
                    memory_mib: 1_000,
                    max_pods: 100,
                    labels: labels(&[(HOST, name), ("zone", zone)]),
                    ..NodeSpec::default()
                })
                .unwrap();
            for i in 0..pods {
                let placement = Placement {
                    node: id,
                    gpus: GpuAssignment::default(),
                };
                c.place(&foo_pod(&format!("{name}-{i}"), vec![]), &placement)
                    .unwrap();
            }
        }
        let pod = foo_pod("p", vec![constraint]);
        let feasible: Vec<NodeId> = (0..candidates as u32).map(NodeId).collect();
        let scorer = InterPodScorer::prepare(&c, &pod, &feasible).unwrap();
        let mut out = vec![0; feasible.len()];
        scorer.add_scores(&c, &feasible, 1, &mut out);
        out
    }

    #[test]
    fn spread_scores_match_kube_scheduler() {
        // podtopologyspread/scoring_test.go TestPodTopologySpreadScore: "one
        // constraint on node, all 4 nodes are candidates" (2/1/0/3).
        let nodes = [
            ("a", "z1", 2),
            ("b", "z1", 1),
            ("c", "z2", 0),
            ("d", "z2", 3),
        ];
        assert_eq!(
            spread_scores(&nodes, 4, soft(1, HOST)),
            vec![40, 80, 100, 0]
        );
        // "... all 4 nodes are candidates, maxSkew=2"
        assert_eq!(
            spread_scores(&nodes, 4, soft(2, HOST)),
            vec![50, 83, 100, 16]
        );
        // "one constraint on zone, 3 out of 4 nodes are candidates" (4/2/1/~3~):
        // the fourth node is no candidate, but its pods count for its zone.
        let nodes = [
            ("a", "z1", 4),
            ("b", "z1", 2),
            ("x", "z2", 1),
            ("y", "z2", 3),
        ];
        assert_eq!(spread_scores(&nodes, 3, soft(1, "zone")), vec![62, 62, 100]);
    }

    fn security(value: &str, rules: PodAffinityRules) -> PodDemand {
        let spec = InterPodSpec::new(
            "p",
            "default",
            labels(&[("security", value)]),
            rules,
            vec![],
        )
        .unwrap();
        PodDemand::new("p", 0, 0, GpuDemand::None, ModelConstraint::Any)
            .unwrap()
            .with_inter_pod(spec)
    }

    /// kube-scheduler's `stayWithS1InRegion` / `stayWithS2InRegion`: a preferred
    /// affinity to `security in (value)` by region.
    fn stay_with_in_region(value: &str, weight: i32) -> PodAffinityRules {
        let selector = LabelSelector::new(
            "t",
            BTreeMap::new(),
            vec![LabelRequirement {
                key: "security".into(),
                operator: LabelOperator::In(vec![value.into()]),
            }],
        )
        .unwrap();
        PodAffinityRules {
            preferred_affinity: vec![crate::WeightedPodAffinityTerm {
                weight,
                term: crate::PodAffinityTerm {
                    selector: Some(selector),
                    namespaces: crate::NamespaceScope::own("default"),
                    topology_key: "region".into(),
                },
            }],
            ..PodAffinityRules::default()
        }
    }

    /// A node's labels and the pods placed on it.
    type NodeWithPods<'a> = (&'a [(&'a str, &'a str)], Vec<PodDemand>);

    /// The normalised InterPodAffinity scores of every node for `pod`.
    fn affinity_scores(nodes: Vec<NodeWithPods<'_>>, pod: &PodDemand) -> Vec<i64> {
        let mut c = ClusterSnapshot::new();
        for (i, (node_labels, pods)) in nodes.into_iter().enumerate() {
            let id = c
                .add_node(NodeSpec {
                    name: format!("node{}", i + 1),
                    cpu_milli: 1_000,
                    memory_mib: 1_000,
                    max_pods: 100,
                    labels: labels(node_labels),
                    ..NodeSpec::default()
                })
                .unwrap();
            for p in pods {
                let placement = Placement {
                    node: id,
                    gpus: GpuAssignment::default(),
                };
                c.place(&p, &placement).unwrap();
            }
        }
        let feasible: Vec<NodeId> = (0..c.len() as u32).map(NodeId).collect();
        let scorer = InterPodScorer::prepare(&c, pod, &feasible).unwrap();
        let mut out = vec![0; feasible.len()];
        scorer.add_scores(&c, &feasible, 1, &mut out);
        out
    }

    #[test]
    fn affinity_scores_match_kube_scheduler() {
        let china: &[(&str, &str)] = &[("region", "China")];
        let india: &[(&str, &str)] = &[("region", "India")];
        let none = PodAffinityRules::default;
        let s2 = || security("S2", none());
        // interpodaffinity/scoring_test.go TestPreferredAffinity: "Affinity: nodes
        // in one region has more matching pods comparing to other region, so the
        // region which has more matches will get high score"
        let scores = affinity_scores(
            vec![
                (china, vec![s2(), s2()]),
                (india, vec![s2()]),
                (china, vec![s2()]),
                (china, vec![s2()]),
                (india, vec![s2()]),
            ],
            &security("S1", stay_with_in_region("S2", 6)),
        );
        assert_eq!(scores, vec![100, 0, 100, 100, 0]);
        // "Affinity symmetry: considered only the preferredDuringScheduling...
        // in pod affinity symmetry": the existing pods' preferences score.
        let scores = affinity_scores(
            vec![
                (china, vec![security("S1", stay_with_in_region("S1", 5))]),
                (india, vec![security("S2", stay_with_in_region("S2", 6))]),
                (&[("az", "az1")], vec![]),
            ],
            &s2(),
        );
        assert_eq!(scores, vec![0, 100, 0]);
    }
}
