//! A pod's identity and what it says about other pods: namespace, labels,
//! `spec.affinity.podAffinity`/`podAntiAffinity` and `spec.topologySpreadConstraints`,
//! as the engine's [`InterPodSpec`].
//!
//! Kubernetes' implicit meanings are made explicit here, so the engine's terms
//! mean the same whichever pod they are compared with:
//! * no `namespaces` and no `namespaceSelector` means the pod's own namespace;
//! * `matchLabelKeys` adds `key in (the pod's value)` to the selector and
//!   `mismatchLabelKeys` adds `key notin (the pod's value)`, as the API server
//!   does when the pod is created (adding them again is harmless); keys the pod
//!   does not carry are skipped, as kube-scheduler skips them.
//!
//! A `namespaceSelector` is matched against the namespaces' labels the
//! scheduler watches (`ClusterMirror::namespace_event`); a namespace it has not
//! seen has no labels.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    PodAffinityTerm as K8sTerm, PodSpec, TopologySpreadConstraint as K8sSpread,
    WeightedPodAffinityTerm as K8sWeighted,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as K8sSelector;
use phalanx_engine::{
    InterPodSpec, LabelOperator, LabelRequirement, LabelSelector, NamespaceScope,
    NodeInclusionPolicy, PodAffinityRules, PodAffinityTerm, TopologySpreadConstraint,
    WeightedPodAffinityTerm, WhenUnsatisfiable,
};

use super::TranslateError;

/// The pod as inter-pod rules see it. `object` names the pod in errors.
pub(crate) fn inter_pod_spec(
    object: &str,
    namespace: &str,
    labels: BTreeMap<String, String>,
    spec: &PodSpec,
) -> Result<InterPodSpec, TranslateError> {
    let own = Own {
        object,
        namespace,
        labels: &labels,
    };
    let affinity = spec.affinity.as_ref();
    let pod_affinity = affinity.and_then(|a| a.pod_affinity.as_ref());
    let pod_anti = affinity.and_then(|a| a.pod_anti_affinity.as_ref());
    const AFFINITY: &str = "spec.affinity.podAffinity";
    const ANTI: &str = "spec.affinity.podAntiAffinity";
    let rules = PodAffinityRules {
        required_affinity: own.terms(
            &format!("{AFFINITY}.requiredDuringSchedulingIgnoredDuringExecution"),
            pod_affinity.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_deref()
            }),
        )?,
        required_anti_affinity: own.terms(
            &format!("{ANTI}.requiredDuringSchedulingIgnoredDuringExecution"),
            pod_anti.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_deref()
            }),
        )?,
        preferred_affinity: own.weighted_terms(
            &format!("{AFFINITY}.preferredDuringSchedulingIgnoredDuringExecution"),
            pod_affinity.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_deref()
            }),
        )?,
        preferred_anti_affinity: own.weighted_terms(
            &format!("{ANTI}.preferredDuringSchedulingIgnoredDuringExecution"),
            pod_anti.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_deref()
            }),
        )?,
    };
    let spread = spec
        .topology_spread_constraints
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| own.spread(&format!("spec.topologySpreadConstraints[{i}]"), c))
        .collect::<Result<Vec<_>, _>>()?;
    // The checks above name the field; this one only re-checks what they did.
    InterPodSpec::new(object, namespace, labels, rules, spread)
        .map_err(|e| TranslateError::invalid(object, "spec.affinity", e.to_string()))
}

/// The pod whose terms are being read: they are relative to its namespace and
/// labels.
struct Own<'a> {
    object: &'a str,
    namespace: &'a str,
    labels: &'a BTreeMap<String, String>,
}

impl Own<'_> {
    fn invalid(&self, field: &str, reason: impl Into<String>) -> TranslateError {
        TranslateError::invalid(self.object, field, reason)
    }

    fn terms(
        &self,
        field: &str,
        terms: Option<&[K8sTerm]>,
    ) -> Result<Vec<PodAffinityTerm>, TranslateError> {
        terms
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(i, t)| self.term(&format!("{field}[{i}]"), t))
            .collect()
    }

    fn weighted_terms(
        &self,
        field: &str,
        terms: Option<&[K8sWeighted]>,
    ) -> Result<Vec<WeightedPodAffinityTerm>, TranslateError> {
        terms
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(i, w)| {
                let field = format!("{field}[{i}]");
                if !(1..=100).contains(&w.weight) {
                    return Err(self.invalid(
                        &format!("{field}.weight"),
                        format!("{} is not in 1..100", w.weight),
                    ));
                }
                Ok(WeightedPodAffinityTerm {
                    weight: w.weight,
                    term: self.term(&format!("{field}.podAffinityTerm"), &w.pod_affinity_term)?,
                })
            })
            .collect()
    }

    fn term(&self, field: &str, t: &K8sTerm) -> Result<PodAffinityTerm, TranslateError> {
        if t.topology_key.is_empty() {
            return Err(self.invalid(&format!("{field}.topologyKey"), "must not be empty"));
        }
        let mut selector = t
            .label_selector
            .as_ref()
            .map(|s| self.selector(&format!("{field}.labelSelector"), s))
            .transpose()?;
        let match_keys = t.match_label_keys.iter().flatten();
        let mismatch_keys = t.mismatch_label_keys.iter().flatten();
        for (key, equal, name) in match_keys
            .map(|k| (k, true, "matchLabelKeys"))
            .chain(mismatch_keys.map(|k| (k, false, "mismatchLabelKeys")))
        {
            let Some(selector) = selector.as_mut() else {
                return Err(self.invalid(
                    &format!("{field}.{name}"),
                    "needs a labelSelector to add to",
                ));
            };
            if let Some(value) = self.labels.get(key) {
                if equal {
                    selector.require_equal(key, value);
                } else {
                    selector.require_not_equal(key, value);
                }
            }
        }
        let names = t.namespaces.clone().unwrap_or_default();
        let namespace_field = format!("{field}.namespaceSelector");
        let namespace_selector = t
            .namespace_selector
            .as_ref()
            .map(|s| self.selector(&namespace_field, s))
            .transpose()?;
        let namespaces = if names.is_empty() && namespace_selector.is_none() {
            NamespaceScope::own(self.namespace)
        } else {
            NamespaceScope {
                names,
                selector: namespace_selector,
            }
        };
        Ok(PodAffinityTerm {
            selector,
            namespaces,
            topology_key: t.topology_key.clone(),
        })
    }

    fn spread(
        &self,
        field: &str,
        c: &K8sSpread,
    ) -> Result<TopologySpreadConstraint, TranslateError> {
        let max_skew = u32::try_from(c.max_skew)
            .ok()
            .filter(|s| *s >= 1)
            .ok_or_else(|| {
                self.invalid(
                    &format!("{field}.maxSkew"),
                    format!("{} is not at least 1", c.max_skew),
                )
            })?;
        if c.topology_key.is_empty() {
            return Err(self.invalid(&format!("{field}.topologyKey"), "must not be empty"));
        }
        let when_unsatisfiable = match c.when_unsatisfiable.as_str() {
            "DoNotSchedule" => WhenUnsatisfiable::DoNotSchedule,
            "ScheduleAnyway" => WhenUnsatisfiable::ScheduleAnyway,
            other => {
                return Err(self.invalid(
                    &format!("{field}.whenUnsatisfiable"),
                    format!("unknown value {other:?}; DoNotSchedule or ScheduleAnyway"),
                ))
            }
        };
        let min_domains = c
            .min_domains
            .map(|m| {
                u32::try_from(m).ok().filter(|m| *m >= 1).ok_or_else(|| {
                    self.invalid(
                        &format!("{field}.minDomains"),
                        format!("{m} is not at least 1"),
                    )
                })
            })
            .transpose()?;
        if min_domains.is_some() && when_unsatisfiable == WhenUnsatisfiable::ScheduleAnyway {
            return Err(self.invalid(
                &format!("{field}.minDomains"),
                "is only allowed with whenUnsatisfiable: DoNotSchedule",
            ));
        }
        let policy = |name: &str, value: Option<&str>, default| match value {
            None => Ok(default),
            Some("Honor") => Ok(NodeInclusionPolicy::Honor),
            Some("Ignore") => Ok(NodeInclusionPolicy::Ignore),
            Some(other) => Err(self.invalid(
                &format!("{field}.{name}"),
                format!("unknown value {other:?}; Honor or Ignore"),
            )),
        };
        let mut selector = c
            .label_selector
            .as_ref()
            .map(|s| self.selector(&format!("{field}.labelSelector"), s))
            .transpose()?;
        for key in c.match_label_keys.iter().flatten() {
            let Some(selector) = selector.as_mut() else {
                return Err(self.invalid(
                    &format!("{field}.matchLabelKeys"),
                    "needs a labelSelector to add to",
                ));
            };
            if let Some(value) = self.labels.get(key) {
                selector.require_equal(key, value);
            }
        }
        Ok(TopologySpreadConstraint {
            max_skew,
            min_domains,
            topology_key: c.topology_key.clone(),
            when_unsatisfiable,
            selector,
            node_affinity_policy: policy(
                "nodeAffinityPolicy",
                c.node_affinity_policy.as_deref(),
                NodeInclusionPolicy::Honor,
            )?,
            node_taints_policy: policy(
                "nodeTaintsPolicy",
                c.node_taints_policy.as_deref(),
                NodeInclusionPolicy::Ignore,
            )?,
        })
    }

    fn selector(&self, field: &str, s: &K8sSelector) -> Result<LabelSelector, TranslateError> {
        label_selector(self.object, field, s)
    }
}

/// A Kubernetes label selector (pod terms, a claim's `spec.selector`), its
/// errors naming `field` of `object`.
pub(crate) fn label_selector(
    object: &str,
    field: &str,
    s: &K8sSelector,
) -> Result<LabelSelector, TranslateError> {
    let invalid = |field: &str, reason: String| TranslateError::invalid(object, field, reason);
    let mut requirements = Vec::new();
    for (i, r) in s.match_expressions.iter().flatten().enumerate() {
        let values = r.values.clone().unwrap_or_default();
        let operator = match r.operator.as_str() {
            "In" => LabelOperator::In(values),
            "NotIn" => LabelOperator::NotIn(values),
            "Exists" => LabelOperator::Exists,
            "DoesNotExist" => LabelOperator::DoesNotExist,
            other => {
                return Err(invalid(
                    &format!("{field}.matchExpressions[{i}].operator"),
                    format!("unknown operator {other:?}; In, NotIn, Exists or DoesNotExist"),
                ))
            }
        };
        requirements.push(LabelRequirement {
            key: r.key.clone(),
            operator,
        });
    }
    LabelSelector::new(
        field,
        s.match_labels.clone().unwrap_or_default(),
        requirements,
    )
    .map_err(|e| match e {
        phalanx_engine::EngineError::InvalidSelector { reason, .. } => invalid(field, reason),
        other => invalid(field, other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use phalanx_engine::{ClusterSnapshot, NodeSpec};
    use serde_json::json;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn read(spec: serde_json::Value) -> Result<InterPodSpec, TranslateError> {
        let mut spec = spec;
        spec["containers"] = json!([]);
        let spec: PodSpec = serde_json::from_value(spec).unwrap();
        inter_pod_spec(
            "pod team-a/web-0",
            "team-a",
            labels(&[("app", "web"), ("rev", "7"), ("tenant", "t1")]),
            &spec,
        )
    }

    fn error(spec: serde_json::Value) -> String {
        read(spec).unwrap_err().to_string()
    }

    fn anti(term: serde_json::Value) -> serde_json::Value {
        json!({"affinity": {"podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [term]}}})
    }

    #[test]
    fn a_pod_without_terms_keeps_its_namespace_and_labels() {
        let s = read(json!({})).unwrap();
        assert_eq!(s.namespace(), "team-a");
        assert_eq!(s.labels().get("app").map(String::as_str), Some("web"));
        assert!(s.has_no_terms());
    }

    #[test]
    fn terms_default_to_the_pods_own_namespace() {
        let s = read(anti(json!({
            "labelSelector": {"matchLabels": {"app": "web"}},
            "topologyKey": "kubernetes.io/hostname"
        })))
        .unwrap();
        let term = &s.affinity().required_anti_affinity[0];
        assert_eq!(term.namespaces, NamespaceScope::own("team-a"));
        assert_eq!(term.topology_key, "kubernetes.io/hostname");
        let selector = term.selector.as_ref().unwrap();
        assert!(selector.matches(&labels(&[("app", "web")])));
        assert!(!selector.matches(&labels(&[("app", "db")])));
    }

    #[test]
    fn namespaces_and_namespace_selector_are_read() {
        let s = read(json!({"affinity": {"podAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [{
                "weight": 30,
                "podAffinityTerm": {
                    "labelSelector": {"matchExpressions": [
                        {"key": "app", "operator": "In", "values": ["cache"]}]},
                    "namespaces": ["shared"],
                    "namespaceSelector": {},
                    "topologyKey": "topology.kubernetes.io/zone"
                }
            }]
        }}}))
        .unwrap();
        let w = &s.affinity().preferred_affinity[0];
        assert_eq!(w.weight, 30);
        assert_eq!(w.term.namespaces.names, vec!["shared".to_string()]);
        assert!(
            w.term.namespaces.contains("anything", None),
            "an empty namespaceSelector selects every namespace"
        );
    }

    #[test]
    fn a_namespace_selector_with_labels_selects_namespaces_by_their_labels() {
        let s = read(anti(json!({
            "labelSelector": {"matchLabels": {"app": "web"}},
            "namespaceSelector": {"matchExpressions": [
                {"key": "team", "operator": "In", "values": ["a", "b"]}]},
            "topologyKey": "kubernetes.io/hostname"
        })))
        .unwrap();
        let scope = &s.affinity().required_anti_affinity[0].namespaces;
        assert!(scope.names.is_empty(), "not the pod's own namespace alone");
        assert!(scope.contains("other", Some(&labels(&[("team", "b")]))));
        assert!(!scope.contains("other", Some(&labels(&[("team", "c")]))));
        assert!(
            !scope.contains("team-a", None),
            "a namespace without (known) labels is not selected"
        );
    }

    #[test]
    fn a_bad_namespace_selector_is_refused_naming_the_field() {
        let err = error(anti(json!({
            "labelSelector": {"matchLabels": {"app": "web"}},
            "namespaceSelector": {"matchExpressions": [
                {"key": "team", "operator": "Gt", "values": ["1"]}]},
            "topologyKey": "kubernetes.io/hostname"
        })));
        assert!(
            err.contains("[0].namespaceSelector.matchExpressions[0].operator"),
            "{err}"
        );
    }

    #[test]
    fn match_and_mismatch_label_keys_use_the_pods_own_values() {
        let s = read(anti(json!({
            "labelSelector": {"matchLabels": {"app": "web"}},
            "matchLabelKeys": ["rev", "absent"],
            "mismatchLabelKeys": ["tenant"],
            "topologyKey": "zone"
        })))
        .unwrap();
        let sel = s.affinity().required_anti_affinity[0]
            .selector
            .clone()
            .unwrap();
        assert!(sel.matches(&labels(&[("app", "web"), ("rev", "7"), ("tenant", "t2")])));
        assert!(!sel.matches(&labels(&[("app", "web"), ("rev", "6"), ("tenant", "t2")])));
        assert!(!sel.matches(&labels(&[("app", "web"), ("rev", "7"), ("tenant", "t1")])));
    }

    #[test]
    fn topology_spread_constraints_are_read_with_kubernetes_defaults() {
        let s = read(json!({"topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
             "labelSelector": {"matchLabels": {"app": "web"}}, "minDomains": 3,
             "matchLabelKeys": ["rev"]},
            {"maxSkew": 2, "topologyKey": "kubernetes.io/hostname",
             "whenUnsatisfiable": "ScheduleAnyway",
             "nodeAffinityPolicy": "Ignore", "nodeTaintsPolicy": "Honor"}
        ]}))
        .unwrap();
        let [hard, soft] = s.spread() else {
            panic!("two constraints expected");
        };
        assert_eq!(hard.max_skew, 1);
        assert_eq!(hard.min_domains, Some(3));
        assert_eq!(hard.when_unsatisfiable, WhenUnsatisfiable::DoNotSchedule);
        assert_eq!(hard.node_affinity_policy, NodeInclusionPolicy::Honor);
        assert_eq!(hard.node_taints_policy, NodeInclusionPolicy::Ignore);
        let sel = hard.selector.as_ref().unwrap();
        assert!(!sel.matches(&labels(&[("app", "web"), ("rev", "6")])));
        assert!(sel.matches(&labels(&[("app", "web"), ("rev", "7")])));
        assert_eq!(soft.when_unsatisfiable, WhenUnsatisfiable::ScheduleAnyway);
        assert_eq!(soft.node_affinity_policy, NodeInclusionPolicy::Ignore);
        assert_eq!(soft.node_taints_policy, NodeInclusionPolicy::Honor);
        assert!(soft.selector.is_none(), "no labelSelector selects no pod");
    }

    #[test]
    fn bad_terms_are_errors_naming_the_field() {
        let cases = [
            (
                anti(json!({"labelSelector": {}, "topologyKey": ""})),
                "spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey",
            ),
            (
                anti(json!({"labelSelector": {"matchExpressions": [
                    {"key": "app", "operator": "Gt", "values": ["1"]}]},
                    "topologyKey": "zone"})),
                "requiredDuringSchedulingIgnoredDuringExecution[0].labelSelector.matchExpressions[0].operator",
            ),
            (
                anti(json!({"labelSelector": {"matchExpressions": [
                    {"key": "app", "operator": "In"}]}, "topologyKey": "zone"})),
                "[0].labelSelector: matchExpressions[0] (app): In and NotIn need at least one value",
            ),
            (
                anti(json!({"matchLabelKeys": ["rev"], "topologyKey": "zone"})),
                "[0].matchLabelKeys: needs a labelSelector",
            ),
            (
                json!({"affinity": {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 0, "podAffinityTerm": {"topologyKey": "zone"}}]}}}),
                "spec.affinity.podAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight: 0 is not in 1..100",
            ),
            (
                json!({"topologySpreadConstraints": [
                    {"maxSkew": 0, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}]}),
                "spec.topologySpreadConstraints[0].maxSkew: 0 is not at least 1",
            ),
            (
                json!({"topologySpreadConstraints": [
                    {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "Sometimes"}]}),
                "spec.topologySpreadConstraints[0].whenUnsatisfiable: unknown value \"Sometimes\"",
            ),
            (
                json!({"topologySpreadConstraints": [
                    {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway",
                     "minDomains": 2}]}),
                "spec.topologySpreadConstraints[0].minDomains: is only allowed with whenUnsatisfiable: DoNotSchedule",
            ),
            (
                json!({"topologySpreadConstraints": [
                    {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
                     "minDomains": 0}]}),
                "spec.topologySpreadConstraints[0].minDomains: 0 is not at least 1",
            ),
            (
                json!({"topologySpreadConstraints": [
                    {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
                     "nodeTaintsPolicy": "Maybe"}]}),
                "spec.topologySpreadConstraints[0].nodeTaintsPolicy: unknown value \"Maybe\"",
            ),
        ];
        for (spec, want) in cases {
            let err = error(spec);
            assert!(err.starts_with("pod team-a/web-0: "), "{err}");
            assert!(err.contains(want), "{err}\nwanted: {want}");
        }
    }

    #[test]
    fn translated_anti_affinity_keeps_replicas_apart_in_the_engine() {
        let mut snapshot = ClusterSnapshot::new();
        for name in ["n1", "n2"] {
            snapshot
                .add_node(NodeSpec {
                    name: name.into(),
                    cpu_milli: 8_000,
                    memory_mib: 8_192,
                    max_pods: 10,
                    labels: labels(&[("kubernetes.io/hostname", name)]),
                    ..NodeSpec::default()
                })
                .unwrap();
        }
        let replica = |name: &str| {
            let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "team-a", "labels": {"app": "web"}},
                "spec": {"containers": [], "affinity": {"podAntiAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [{
                        "labelSelector": {"matchLabels": {"app": "web"}},
                        "topologyKey": "kubernetes.io/hostname"}]}}}
            }))
            .unwrap();
            super::super::pod_demand(&pod, snapshot.models()).unwrap()
        };
        let first = replica("web-0");
        let placement = phalanx_engine::Placement {
            node: snapshot.node_id("n1").unwrap(),
            gpus: phalanx_engine::GpuAssignment::default(),
        };
        let second = replica("web-1");
        snapshot.place(&first, &placement).unwrap();
        assert_eq!(
            super::super::tests::best_fit_choice(&snapshot, &second),
            "n2"
        );
    }
}
