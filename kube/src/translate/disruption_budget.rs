//! PodDisruptionBudgets as preemption reads them: which pods each one guards
//! and how many more of them may be disrupted now. The disruption controller
//! keeps `status.disruptionsAllowed` current; the Eviction API refuses an
//! eviction beyond it, so the scheduler must not choose such a victim.

use std::collections::BTreeMap;

use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use phalanx_engine::LabelSelector;

use super::inter_pod::label_selector;
use super::TranslateError;

/// One PodDisruptionBudget: the pods of its namespace it selects and the
/// disruptions it still allows.
#[derive(Debug, Clone)]
pub struct DisruptionBudget {
    pub namespace: String,
    pub name: String,
    /// `None`: a budget without a selector, which selects nothing (policy/v1).
    selector: Option<LabelSelector>,
    pub disruptions_allowed: u32,
}

impl DisruptionBudget {
    /// A budget that could not be read: it guards every pod of its namespace
    /// and allows nothing, so no pod it may have meant is preempted.
    pub fn protecting_namespace(namespace: String, name: String) -> Self {
        Self {
            namespace,
            name,
            selector: Some(LabelSelector::everything()),
            disruptions_allowed: 0,
        }
    }

    /// Whether it guards a pod of `namespace` with `labels`.
    pub fn selects(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        self.namespace == namespace && self.selector.as_ref().is_some_and(|s| s.matches(labels))
    }
}

/// Reads a PodDisruptionBudget. A budget whose status has not been computed
/// yet allows no disruption (the Eviction API treats it the same way).
pub fn disruption_budget(pdb: &PodDisruptionBudget) -> Result<DisruptionBudget, TranslateError> {
    let namespace = pdb.metadata.namespace.clone().unwrap_or_default();
    let name = pdb.metadata.name.clone().unwrap_or_default();
    let object = format!("poddisruptionbudget {namespace}/{name}");
    let selector = pdb
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .map(|s| label_selector(&object, "spec.selector", s))
        .transpose()?;
    let disruptions_allowed = pdb
        .status
        .as_ref()
        .and_then(|s| s.disruptions_allowed)
        .map_or(0, |allowed| u32::try_from(allowed.max(0)).unwrap_or(0));
    Ok(DisruptionBudget {
        namespace,
        name,
        selector,
        disruptions_allowed,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pdb(value: serde_json::Value) -> PodDisruptionBudget {
        serde_json::from_value(value).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn a_budget_guards_the_pods_it_selects_in_its_namespace() {
        let budget = disruption_budget(&pdb(json!({
            "metadata": {"namespace": "ml", "name": "train"},
            "spec": {"selector": {"matchLabels": {"app": "train"}}, "minAvailable": 1},
            "status": {"disruptionsAllowed": 2, "currentHealthy": 3, "desiredHealthy": 1,
                       "expectedPods": 3}
        })))
        .unwrap();
        assert_eq!(budget.disruptions_allowed, 2);
        assert!(budget.selects("ml", &labels(&[("app", "train")])));
        assert!(!budget.selects("other", &labels(&[("app", "train")])));
        assert!(!budget.selects("ml", &labels(&[("app", "serve")])));
    }

    #[test]
    fn an_empty_selector_selects_every_pod_and_a_missing_one_none() {
        let all = disruption_budget(&pdb(json!({
            "metadata": {"namespace": "ml", "name": "all"},
            "spec": {"selector": {}},
        })))
        .unwrap();
        assert!(all.selects("ml", &labels(&[])));
        assert_eq!(all.disruptions_allowed, 0, "no status yet: nothing allowed");
        let none = disruption_budget(&pdb(json!({
            "metadata": {"namespace": "ml", "name": "none"},
            "spec": {},
        })))
        .unwrap();
        assert!(!none.selects("ml", &labels(&[("app", "x")])));
    }

    #[test]
    fn a_bad_selector_is_refused_naming_the_field() {
        let error = disruption_budget(&pdb(json!({
            "metadata": {"namespace": "ml", "name": "bad"},
            "spec": {"selector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}},
        })))
        .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("poddisruptionbudget ml/bad: spec.selector.matchExpressions[0].operator"),
            "{error}"
        );
    }
}
