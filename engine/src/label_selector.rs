//! Kubernetes label selectors (`matchLabels` and `matchExpressions`), as pod
//! affinity terms, topology spread constraints and namespace selectors use them.
//! Unlike node selectors they have no `Gt`/`Lt`.

use std::collections::BTreeMap;

use super::EngineError;

/// How one `matchExpressions` requirement compares a label.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LabelOperator {
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
}

/// One `matchExpressions` requirement.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LabelRequirement {
    pub key: String,
    pub operator: LabelOperator,
}

impl LabelRequirement {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match &self.operator {
            LabelOperator::In(values) => value.is_some_and(|v| values.contains(v)),
            LabelOperator::NotIn(values) => value.is_none_or(|v| !values.contains(v)),
            LabelOperator::Exists => value.is_some(),
            LabelOperator::DoesNotExist => value.is_none(),
        }
    }
}

/// A present label selector: every `matchLabels` pair and every requirement must
/// hold, so an empty selector matches everything. (An absent selector, which
/// matches nothing, is spelled `Option::None` by the types that hold one.)
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct LabelSelector {
    match_labels: BTreeMap<String, String>,
    requirements: Vec<LabelRequirement>,
}

impl LabelSelector {
    /// Checks what the API server's validation checks: `In` and `NotIn` need at
    /// least one value, `Exists` and `DoesNotExist` none, and keys are not empty.
    /// `what` names the selector in the error (`pod default/x: ...labelSelector`).
    pub fn new(
        what: &str,
        match_labels: BTreeMap<String, String>,
        requirements: Vec<LabelRequirement>,
    ) -> Result<Self, EngineError> {
        let invalid = |reason: String| EngineError::InvalidSelector {
            selector: what.to_owned(),
            reason,
        };
        if match_labels.keys().any(String::is_empty) {
            return Err(invalid("a matchLabels key is empty".into()));
        }
        for (i, r) in requirements.iter().enumerate() {
            if r.key.is_empty() {
                return Err(invalid(format!("matchExpressions[{i}] has an empty key")));
            }
            match &r.operator {
                LabelOperator::In(v) | LabelOperator::NotIn(v) if v.is_empty() => {
                    return Err(invalid(format!(
                        "matchExpressions[{i}] ({}): In and NotIn need at least one value",
                        r.key
                    )))
                }
                _ => {}
            }
        }
        Ok(LabelSelector {
            match_labels,
            requirements,
        })
    }

    /// The selector that matches every label set (`{}`).
    pub fn everything() -> Self {
        Self::default()
    }

    /// `key` must equal `value` (how `matchLabelKeys` adds to a selector).
    pub fn require_equal(&mut self, key: &str, value: &str) {
        self.requirements.push(LabelRequirement {
            key: key.to_owned(),
            operator: LabelOperator::In(vec![value.to_owned()]),
        });
    }

    /// `key` must not equal `value` (how `mismatchLabelKeys` adds to a selector).
    pub fn require_not_equal(&mut self, key: &str, value: &str) {
        self.requirements.push(LabelRequirement {
            key: key.to_owned(),
            operator: LabelOperator::NotIn(vec![value.to_owned()]),
        });
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.requirements.iter().all(|r| r.matches(labels))
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

    fn req(key: &str, operator: LabelOperator) -> LabelRequirement {
        LabelRequirement {
            key: key.into(),
            operator,
        }
    }

    #[test]
    fn labels_and_expressions_must_all_hold() {
        let pod = labels(&[("app", "web"), ("tier", "front")]);
        assert!(LabelSelector::everything().matches(&pod));
        assert!(LabelSelector::everything().matches(&BTreeMap::new()));
        let sel = LabelSelector::new(
            "s",
            labels(&[("app", "web")]),
            vec![
                req(
                    "tier",
                    LabelOperator::In(vec!["front".into(), "mid".into()]),
                ),
                req("canary", LabelOperator::DoesNotExist),
            ],
        )
        .unwrap();
        assert!(sel.matches(&pod));
        assert!(!sel.matches(&labels(&[("app", "web"), ("tier", "back")])));
        assert!(!sel.matches(&labels(&[("app", "web")])), "In needs the key");
        let not_in = LabelSelector::new(
            "s",
            BTreeMap::new(),
            vec![req("tier", LabelOperator::NotIn(vec!["front".into()]))],
        )
        .unwrap();
        assert!(!not_in.matches(&pod));
        assert!(
            not_in.matches(&BTreeMap::new()),
            "NotIn holds without the key"
        );
        let exists = LabelSelector::new(
            "s",
            BTreeMap::new(),
            vec![req("app", LabelOperator::Exists)],
        )
        .unwrap();
        assert!(exists.matches(&pod));
        assert!(!exists.matches(&labels(&[("other", "x")])));
    }

    #[test]
    fn match_label_keys_add_equal_and_not_equal_requirements() {
        let mut sel = LabelSelector::everything();
        sel.require_equal("rev", "1");
        sel.require_not_equal("team", "a");
        assert!(sel.matches(&labels(&[("rev", "1"), ("team", "b")])));
        assert!(!sel.matches(&labels(&[("rev", "2")])));
        assert!(!sel.matches(&labels(&[("rev", "1"), ("team", "a")])));
    }

    #[test]
    fn invalid_selectors_are_refused_with_their_name() {
        let err = LabelSelector::new(
            "pod default/x: labelSelector",
            BTreeMap::new(),
            vec![req("app", LabelOperator::In(vec![]))],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("pod default/x: labelSelector"), "{err}");
        assert!(err.contains("matchExpressions[0] (app)"), "{err}");
        assert!(LabelSelector::new("s", labels(&[("", "v")]), vec![]).is_err());
        assert!(
            LabelSelector::new("s", BTreeMap::new(), vec![req("", LabelOperator::Exists)]).is_err()
        );
    }
}
