//! Kubernetes placement constraints that are not resources: taints and
//! tolerations, nodeSelector, required node affinity. Semantics follow
//! kube-scheduler's TaintToleration and NodeAffinity filters.

use std::collections::BTreeMap;

/// What a taint does to pods that do not tolerate it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Taint {
    pub key: String,
    pub value: String,
    pub effect: TaintEffect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TolerationOperator {
    #[default]
    Equal,
    Exists,
}

/// A pod's toleration; `key: None` with `Exists` tolerates every taint, and
/// `effect: None` matches every effect.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Toleration {
    pub key: Option<String>,
    pub operator: TolerationOperator,
    pub value: String,
    pub effect: Option<TaintEffect>,
}

impl Toleration {
    pub fn tolerates(&self, taint: &Taint) -> bool {
        self.tolerates_parts(&taint.key, &taint.value, taint.effect)
    }

    /// [`Self::tolerates`] for a taint given by its parts, so that a fixed taint
    /// (the cordon's) is checked without building one on the hot path.
    pub fn tolerates_parts(&self, key: &str, value: &str, effect: TaintEffect) -> bool {
        if self.effect.is_some_and(|e| e != effect) {
            return false;
        }
        match (&self.key, self.operator) {
            (None, TolerationOperator::Exists) => true,
            (None, TolerationOperator::Equal) => false,
            (Some(own), TolerationOperator::Exists) => own == key,
            (Some(own), TolerationOperator::Equal) => own == key && self.value == value,
        }
    }
}

/// True when every NoSchedule/NoExecute taint is tolerated (PreferNoSchedule only
/// steers scoring in kube-scheduler and never filters).
pub fn tolerates_all(taints: &[Taint], tolerations: &[Toleration]) -> bool {
    taints
        .iter()
        .filter(|t| t.effect != TaintEffect::PreferNoSchedule)
        .all(|t| tolerations.iter().any(|tol| tol.tolerates(t)))
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SelectorOperator {
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
    Gt(i64),
    Lt(i64),
}

/// One `matchExpressions` requirement on a node label.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeSelectorRequirement {
    pub key: String,
    pub operator: SelectorOperator,
}

impl NodeSelectorRequirement {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match &self.operator {
            SelectorOperator::In(values) => value.is_some_and(|v| values.contains(v)),
            SelectorOperator::NotIn(values) => value.is_none_or(|v| !values.contains(v)),
            SelectorOperator::Exists => value.is_some(),
            SelectorOperator::DoesNotExist => value.is_none(),
            SelectorOperator::Gt(n) => value
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > *n),
            SelectorOperator::Lt(n) => value
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < *n),
        }
    }
}

/// A preferred node affinity term: nodes it matches score its weight (1..100).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PreferredNodeTerm {
    pub weight: i32,
    pub requirements: Vec<NodeSelectorRequirement>,
}

impl PreferredNodeTerm {
    /// All requirements hold; an empty term matches nothing, as in Kubernetes.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.requirements.is_empty() && self.requirements.iter().all(|r| r.matches(labels))
    }
}

/// Where a pod may go: `nodeSelector` (all pairs must match) AND required node
/// affinity (any term matches; a term matches when all its requirements do; an
/// empty term matches nothing, as in Kubernetes). Tolerations filter NoSchedule
/// and NoExecute taints; they and the preferred terms also score.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct NodePlacementRules {
    pub node_selector: BTreeMap<String, String>,
    pub required_terms: Vec<Vec<NodeSelectorRequirement>>,
    pub tolerations: Vec<Toleration>,
    /// `preferredDuringSchedulingIgnoredDuringExecution`: scores, never filters.
    pub preferred_terms: Vec<PreferredNodeTerm>,
}

impl NodePlacementRules {
    /// No rule that filters (preferred terms only score).
    pub fn is_empty(&self) -> bool {
        self.node_selector.is_empty()
            && self.required_terms.is_empty()
            && self.tolerations.is_empty()
    }

    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.node_selector
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && (self.required_terms.is_empty()
                || self
                    .required_terms
                    .iter()
                    .any(|term| !term.is_empty() && term.iter().all(|r| r.matches(labels))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn taint(key: &str, value: &str, effect: TaintEffect) -> Taint {
        Taint {
            key: key.into(),
            value: value.into(),
            effect,
        }
    }

    #[test]
    fn tolerations_follow_kubernetes_semantics() {
        let gpu = taint("nvidia.com/gpu", "present", TaintEffect::NoSchedule);
        let exact = Toleration {
            key: Some("nvidia.com/gpu".into()),
            value: "present".into(),
            ..Default::default()
        };
        let wrong_value = Toleration {
            value: "absent".into(),
            ..exact.clone()
        };
        let exists = Toleration {
            key: Some("nvidia.com/gpu".into()),
            operator: TolerationOperator::Exists,
            ..Default::default()
        };
        let everything = Toleration {
            operator: TolerationOperator::Exists,
            ..Default::default()
        };
        let other_effect = Toleration {
            effect: Some(TaintEffect::NoExecute),
            ..exists.clone()
        };
        assert!(exact.tolerates(&gpu));
        assert!(!wrong_value.tolerates(&gpu));
        assert!(exists.tolerates(&gpu));
        assert!(everything.tolerates(&gpu));
        assert!(!other_effect.tolerates(&gpu));
        assert!(!tolerates_all(std::slice::from_ref(&gpu), &[]));
        assert!(
            tolerates_all(&[taint("soft", "", TaintEffect::PreferNoSchedule)], &[]),
            "PreferNoSchedule never filters"
        );
    }

    #[test]
    fn selector_and_affinity_terms() {
        let node = labels(&[("rack", "r1"), ("gpu-count", "8"), ("zone", "a")]);
        let req = |key: &str, operator| NodeSelectorRequirement {
            key: key.into(),
            operator,
        };
        let mut rules = NodePlacementRules::default();
        assert!(rules.selects(&node));
        rules.node_selector.insert("zone".into(), "a".into());
        assert!(rules.selects(&node));
        rules.required_terms = vec![
            vec![req("rack", SelectorOperator::In(vec!["r9".into()]))],
            vec![
                req("gpu-count", SelectorOperator::Gt(4)),
                req("spot", SelectorOperator::DoesNotExist),
            ],
        ];
        assert!(rules.selects(&node), "the second term matches");
        rules.required_terms[1].push(req("rack", SelectorOperator::NotIn(vec!["r1".into()])));
        assert!(!rules.selects(&node));
        rules.required_terms = vec![vec![]];
        assert!(!rules.selects(&node), "an empty term matches nothing");
        rules.required_terms = vec![vec![req("gpu-count", SelectorOperator::Lt(8))]];
        assert!(!rules.selects(&node));
        rules.required_terms = vec![vec![req("zone", SelectorOperator::Gt(1))]];
        assert!(
            !rules.selects(&node),
            "a non-numeric label never satisfies Gt"
        );
    }
}
