//! What a pod says about other pods: its identity (namespace, labels), its pod
//! affinity and anti-affinity terms, and its topology spread constraints, with
//! kube-scheduler's meaning. Built once per pod (the translation layer does it)
//! and shared by `Arc` between the pod's demand and the snapshot's record of it.

use std::collections::BTreeMap;

use crate::label_selector::LabelSelector;
use crate::EngineError;

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

/// Which namespaces a term looks at: those named, plus those whose labels match
/// the selector. Kubernetes' "neither given means the pod's own namespace" is
/// resolved when the term is built ([`NamespaceScope::own`]), so a term means the
/// same whichever pod it is compared with.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct NamespaceScope {
    pub names: Vec<String>,
    /// `Some(everything)` for `namespaceSelector: {}` (all namespaces).
    pub selector: Option<LabelSelector>,
}

impl NamespaceScope {
    /// Only `namespace`.
    pub fn own(namespace: &str) -> Self {
        NamespaceScope {
            names: vec![namespace.to_owned()],
            selector: None,
        }
    }

    /// `labels` are the namespace's labels, `None` when the snapshot does not know
    /// the namespace (then only a selector matching no labels takes it).
    pub fn contains(&self, namespace: &str, labels: Option<&BTreeMap<String, String>>) -> bool {
        self.names.iter().any(|n| n == namespace)
            || self
                .selector
                .as_ref()
                .is_some_and(|s| s.matches(labels.unwrap_or(&NO_LABELS)))
    }
}

/// One pod affinity or anti-affinity term: pods matching `selector` in `namespaces`,
/// counted per value of the node label `topology_key`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodAffinityTerm {
    /// `None` (no `labelSelector`) matches no pod, as in Kubernetes.
    pub selector: Option<LabelSelector>,
    pub namespaces: NamespaceScope,
    pub topology_key: String,
}

impl PodAffinityTerm {
    /// Does the term select `pod`? `namespace_labels` looks up a namespace's labels.
    pub fn selects<'a>(
        &self,
        pod: &InterPodSpec,
        namespace_labels: impl Fn(&str) -> Option<&'a BTreeMap<String, String>>,
    ) -> bool {
        self.selector
            .as_ref()
            .is_some_and(|s| s.matches(&pod.labels))
            && self
                .namespaces
                .contains(&pod.namespace, namespace_labels(&pod.namespace))
    }
}

/// A preferred term and its weight (1..=100).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WeightedPodAffinityTerm {
    pub weight: i32,
    pub term: PodAffinityTerm,
}

/// `spec.affinity.podAffinity` and `podAntiAffinity`, required and preferred.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct PodAffinityRules {
    pub required_affinity: Vec<PodAffinityTerm>,
    pub required_anti_affinity: Vec<PodAffinityTerm>,
    pub preferred_affinity: Vec<WeightedPodAffinityTerm>,
    pub preferred_anti_affinity: Vec<WeightedPodAffinityTerm>,
}

impl PodAffinityRules {
    pub fn is_empty(&self) -> bool {
        self.required_affinity.is_empty()
            && self.required_anti_affinity.is_empty()
            && self.preferred_affinity.is_empty()
            && self.preferred_anti_affinity.is_empty()
    }
}

/// `whenUnsatisfiable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WhenUnsatisfiable {
    /// A filter: no placement may raise the skew above `maxSkew`.
    DoNotSchedule,
    /// A score: nodes in emptier domains score higher.
    ScheduleAnyway,
}

/// `nodeAffinityPolicy` / `nodeTaintsPolicy`: whether nodes the pod could not go
/// to (by its node affinity, or by taints it does not tolerate) count as domains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeInclusionPolicy {
    Honor,
    Ignore,
}

/// One `topologySpreadConstraints` entry. `matchLabelKeys` is folded into the
/// selector when the pod is translated (as the API server does).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopologySpreadConstraint {
    pub max_skew: u32,
    /// Only with `DoNotSchedule`; when fewer eligible domains exist, the global
    /// minimum counts as 0.
    pub min_domains: Option<u32>,
    pub topology_key: String,
    pub when_unsatisfiable: WhenUnsatisfiable,
    /// `None` matches no pod.
    pub selector: Option<LabelSelector>,
    /// Kubernetes' default: `Honor`.
    pub node_affinity_policy: NodeInclusionPolicy,
    /// Kubernetes' default: `Ignore`.
    pub node_taints_policy: NodeInclusionPolicy,
}

/// A pod as other pods' terms see it, with its own terms. Pods without one (trace
/// pods) are invisible to every term and carry none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterPodSpec {
    namespace: String,
    labels: BTreeMap<String, String>,
    affinity: PodAffinityRules,
    spread: Vec<TopologySpreadConstraint>,
    /// Per spread constraint, the pods it counts: its selector in the pod's own
    /// namespace (spread never crosses namespaces).
    spread_terms: Vec<PodAffinityTerm>,
}

impl InterPodSpec {
    /// Checks what the API server checks (weights 1..=100, topology keys set,
    /// `maxSkew` ≥ 1, `minDomains` ≥ 1 and only with `DoNotSchedule`); `pod`
    /// names the pod in the error.
    pub fn new(
        pod: &str,
        namespace: impl Into<String>,
        labels: BTreeMap<String, String>,
        affinity: PodAffinityRules,
        spread: Vec<TopologySpreadConstraint>,
    ) -> Result<Self, EngineError> {
        let invalid = |reason: String| EngineError::InvalidPod {
            pod: pod.to_owned(),
            reason,
        };
        let all_terms = affinity
            .required_affinity
            .iter()
            .chain(&affinity.required_anti_affinity)
            .chain(affinity.preferred_affinity.iter().map(|w| &w.term))
            .chain(affinity.preferred_anti_affinity.iter().map(|w| &w.term));
        if all_terms.into_iter().any(|t| t.topology_key.is_empty()) {
            return Err(invalid(
                "a pod affinity term has an empty topologyKey".into(),
            ));
        }
        let weights = affinity
            .preferred_affinity
            .iter()
            .chain(&affinity.preferred_anti_affinity);
        if let Some(w) = weights.into_iter().find(|w| !(1..=100).contains(&w.weight)) {
            return Err(invalid(format!(
                "a preferred pod affinity term has weight {}; it must be 1..100",
                w.weight
            )));
        }
        for (i, c) in spread.iter().enumerate() {
            if c.max_skew == 0 {
                return Err(invalid(format!(
                    "topologySpreadConstraints[{i}]: maxSkew must be at least 1"
                )));
            }
            if c.topology_key.is_empty() {
                return Err(invalid(format!(
                    "topologySpreadConstraints[{i}]: topologyKey is empty"
                )));
            }
            match (c.min_domains, c.when_unsatisfiable) {
                (Some(0), _) => {
                    return Err(invalid(format!(
                        "topologySpreadConstraints[{i}]: minDomains must be at least 1"
                    )))
                }
                (Some(_), WhenUnsatisfiable::ScheduleAnyway) => {
                    return Err(invalid(format!(
                    "topologySpreadConstraints[{i}]: minDomains is only allowed with DoNotSchedule"
                )))
                }
                _ => {}
            }
        }
        let namespace = namespace.into();
        let spread_terms = spread
            .iter()
            .map(|c| PodAffinityTerm {
                selector: c.selector.clone(),
                namespaces: NamespaceScope::own(&namespace),
                topology_key: c.topology_key.clone(),
            })
            .collect();
        Ok(InterPodSpec {
            namespace,
            labels,
            affinity,
            spread,
            spread_terms,
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }

    pub fn affinity(&self) -> &PodAffinityRules {
        &self.affinity
    }

    pub fn spread(&self) -> &[TopologySpreadConstraint] {
        &self.spread
    }

    /// Each spread constraint with the term that counts its pods.
    pub(crate) fn spread_with_terms(
        &self,
    ) -> impl Iterator<Item = (&TopologySpreadConstraint, &PodAffinityTerm)> {
        self.spread.iter().zip(&self.spread_terms)
    }

    /// True when the pod has no term of any kind (it only needs to be seen).
    pub fn has_no_terms(&self) -> bool {
        self.affinity.is_empty() && self.spread.is_empty()
    }

    /// Every term this pod carries, with the role it plays for pods placed later.
    pub(crate) fn carried_terms(&self) -> impl Iterator<Item = (&PodAffinityTerm, CarriedRole)> {
        let a = &self.affinity;
        a.required_affinity
            .iter()
            .map(|t| (t, CarriedRole::RequiredAffinity))
            .chain(
                a.required_anti_affinity
                    .iter()
                    .map(|t| (t, CarriedRole::RequiredAntiAffinity)),
            )
            .chain(
                a.preferred_affinity
                    .iter()
                    .map(|w| (&w.term, CarriedRole::Score(i64::from(w.weight)))),
            )
            .chain(
                a.preferred_anti_affinity
                    .iter()
                    .map(|w| (&w.term, CarriedRole::Score(-i64::from(w.weight)))),
            )
            .chain(self.spread_terms.iter().map(|t| (t, CarriedRole::Spread)))
    }
}

/// What a placed pod's term does to pods placed after it (kube-scheduler's
/// symmetry): required anti-affinity keeps matching pods out of its domain;
/// required affinity (at hardPodAffinityWeight 1) and preferred terms (±weight)
/// add to the scores of nodes in its domain; spread terms only need counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CarriedRole {
    RequiredAffinity,
    RequiredAntiAffinity,
    Score(i64),
    Spread,
}

/// kube-scheduler's default `hardPodAffinityWeight`: what an existing pod's
/// required affinity term adds to the score of a matching incoming pod.
pub(crate) const HARD_POD_AFFINITY_WEIGHT: i64 = 1;
