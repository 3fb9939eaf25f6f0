//! Cluster-wide default topology spread constraints (kube-scheduler's
//! `PodTopologySpreadArgs` `defaultConstraints` / `defaultingType`), for pods
//! that have no `spec.topologySpreadConstraints` of their own.
//!
//! Which pods a default constraint counts: kube-scheduler ANDs the selectors of
//! the Services, ReplicationControllers, ReplicaSets and StatefulSets that
//! select the pod. Phalanx counts the pods with the same controller instead
//! (the ownerReference with `controller: true`), when that controller is a
//! ReplicaSet, StatefulSet or ReplicationController. Why:
//! * the workload's selector is what picks its pods, and its controller adopts
//!   exactly the pods that selector picks, so both count the same replicas (a
//!   ReplicaSet's selector includes `pod-template-hash`, so old and new
//!   revisions of a Deployment are spread separately either way);
//! * ANDed with a Service's selector, the workload's selector still decides:
//!   a Service only narrows what the workload selects;
//! * it needs no watch of ReplicaSets, StatefulSets, ReplicationControllers
//!   and Services (memory, RBAC) and cannot act on a stale copy of them.
//!
//! What differs: a pod that only a Service selects (no such controller) gets
//! no defaults, where kube-scheduler would spread it with the Service's other
//! pods. Jobs and other controllers get none either, as in kube-scheduler.
//!
//! The controller is matched through [`LABEL_CONTROLLER_UID`], a label that
//! translation adds to every such pod's labels as the engine sees them (never
//! written to the API server), so bound and pending pods are counted alike.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use phalanx_engine::{
    ClusterSnapshot, InterPodSpec, LabelSelector, NodeInclusionPolicy, PodDemand,
    TopologySpreadConstraint, WhenUnsatisfiable,
};

use super::TranslateError;

/// The engine-side label holding the UID of a pod's ReplicaSet, StatefulSet or
/// ReplicationController: what a default spread constraint selects by.
pub const LABEL_CONTROLLER_UID: &str = "phalanx.dev/controller-uid";

/// The node labels of kube-scheduler's System defaults.
const HOSTNAME: &str = "kubernetes.io/hostname";
const ZONE: &str = "topology.kubernetes.io/zone";

/// The defaults applied to pods without spread constraints of their own. Empty
/// (Phalanx's default) applies nothing and costs nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DefaultSpread {
    /// Without selectors: each pod's is its controller's.
    constraints: Vec<TopologySpreadConstraint>,
    /// kube-scheduler's System defaults, which do not require nodes to carry
    /// their topology keys (see [`Self::pod_demand`]).
    system: bool,
}

/// One default constraint as configured: kube-scheduler's fields that a
/// default may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultConstraint<'a> {
    pub max_skew: u32,
    pub topology_key: &'a str,
    pub when_unsatisfiable: WhenUnsatisfiable,
}

impl DefaultSpread {
    /// The given defaults (kube-scheduler's `defaultingType: List`).
    pub fn list<'a>(constraints: impl IntoIterator<Item = DefaultConstraint<'a>>) -> Self {
        DefaultSpread {
            constraints: constraints
                .into_iter()
                .map(|c| TopologySpreadConstraint {
                    max_skew: c.max_skew,
                    min_domains: None,
                    topology_key: c.topology_key.to_owned(),
                    when_unsatisfiable: c.when_unsatisfiable,
                    selector: None,
                    node_affinity_policy: NodeInclusionPolicy::Honor,
                    node_taints_policy: NodeInclusionPolicy::Ignore,
                })
                .collect(),
            system: false,
        }
    }

    /// kube-scheduler's `defaultingType: System`: replicas spread softly over
    /// nodes (maxSkew 3) and zones (maxSkew 5).
    pub fn system() -> Self {
        let defaults = Self::list([
            DefaultConstraint {
                max_skew: 3,
                topology_key: HOSTNAME,
                when_unsatisfiable: WhenUnsatisfiable::ScheduleAnyway,
            },
            DefaultConstraint {
                max_skew: 5,
                topology_key: ZONE,
                when_unsatisfiable: WhenUnsatisfiable::ScheduleAnyway,
            },
        ]);
        DefaultSpread {
            system: true,
            ..defaults
        }
    }

    pub fn is_empty(&self) -> bool {
        self.constraints.is_empty()
    }

    pub fn constraints(&self) -> &[TopologySpreadConstraint] {
        &self.constraints
    }

    /// [`pod_demand`](super::pod_demand) with the defaults applied: what the
    /// scheduler places.
    ///
    /// The engine leaves a node without every spread key out of a pod's spread
    /// score, as kube-scheduler does for a pod's own constraints and listed
    /// defaults. Its System defaults do not require the keys; the closest the
    /// engine allows is to drop a System default whose key no node carries, so
    /// that a cluster without zone labels is still spread over hostnames.
    pub fn pod_demand(
        &self,
        pod: &Pod,
        snapshot: &ClusterSnapshot,
    ) -> Result<PodDemand, TranslateError> {
        let mut demand = super::pod_demand(pod, snapshot.models())?;
        if self.system {
            let carried = |key: &str| {
                snapshot
                    .nodes()
                    .iter()
                    .any(|n| !n.removed && n.labels.contains_key(key))
            };
            if !self.constraints.iter().all(|c| carried(&c.topology_key)) {
                let somewhere = DefaultSpread {
                    constraints: self
                        .constraints
                        .iter()
                        .filter(|c| carried(&c.topology_key))
                        .cloned()
                        .collect(),
                    system: true,
                };
                somewhere.apply(pod, &mut demand)?;
                return Ok(demand);
            }
        }
        self.apply(pod, &mut demand)?;
        Ok(demand)
    }

    /// Gives `demand` (translated from `pod`) the defaults, selecting the pods
    /// of its controller, unless the pod has constraints of its own or no
    /// ReplicaSet, StatefulSet or ReplicationController controls it.
    pub fn apply(&self, pod: &Pod, demand: &mut PodDemand) -> Result<(), TranslateError> {
        if self.constraints.is_empty() {
            return Ok(());
        }
        let own = pod
            .spec
            .as_ref()
            .and_then(|s| s.topology_spread_constraints.as_ref())
            .is_some_and(|c| !c.is_empty());
        if own {
            return Ok(());
        }
        let (Some(uid), Some(spec)) = (workload_controller_uid(pod), demand.inter_pod.as_deref())
        else {
            return Ok(());
        };
        let mut selector = LabelSelector::everything();
        selector.require_equal(LABEL_CONTROLLER_UID, uid);
        let spread = self
            .constraints
            .iter()
            .map(|c| TopologySpreadConstraint {
                selector: Some(selector.clone()),
                ..c.clone()
            })
            .collect();
        let object = format!("pod {}", demand.name);
        let with_defaults = InterPodSpec::new(
            &object,
            spec.namespace(),
            spec.labels().clone(),
            spec.affinity().clone(),
            spread,
        )
        .map_err(|e| {
            TranslateError::invalid(
                &object,
                "(default topologySpreadConstraints)",
                e.to_string(),
            )
        })?;
        demand.inter_pod = Some(Arc::new(with_defaults));
        Ok(())
    }
}

/// The pod's labels as inter-pod rules see them: its own, plus
/// [`LABEL_CONTROLLER_UID`] when a workload controller owns it.
pub(crate) fn labels_for_matching(pod: &Pod) -> BTreeMap<String, String> {
    let mut labels = pod.metadata.labels.clone().unwrap_or_default();
    if let Some(uid) = workload_controller_uid(pod) {
        labels.insert(LABEL_CONTROLLER_UID.to_owned(), uid.to_owned());
    }
    labels
}

/// The UID of the ReplicaSet, StatefulSet or ReplicationController that
/// controls the pod: the workloads whose selectors kube-scheduler's defaults use.
fn workload_controller_uid(pod: &Pod) -> Option<&str> {
    let owner = pod
        .metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))?;
    let workload = matches!(
        (owner.api_version.as_str(), owner.kind.as_str()),
        ("apps/v1", "ReplicaSet" | "StatefulSet") | ("v1", "ReplicationController")
    );
    (workload && !owner.uid.is_empty()).then_some(owner.uid.as_str())
}

#[cfg(test)]
mod tests {
    use phalanx_engine::{ClusterSnapshot, NodeSpec, Placement};
    use serde_json::json;

    use super::super::pod_demand;
    use super::*;

    /// A pod of `owner` (`(kind, uid)`), with `spread` as its own constraints.
    fn pod(name: &str, owner: Option<(&str, &str)>, spread: serde_json::Value) -> Pod {
        let owners: Vec<serde_json::Value> = owner
            .map(|(kind, uid)| {
                let api_version = if kind == "ReplicationController" {
                    "v1"
                } else {
                    "apps/v1"
                };
                json!({"apiVersion": api_version, "kind": kind, "name": "owner",
                       "uid": uid, "controller": true})
            })
            .into_iter()
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ml", "labels": {"app": "web"},
                         "ownerReferences": owners},
            "spec": {"containers": [], "topologySpreadConstraints": spread},
        }))
        .unwrap()
    }

    fn demand_with(defaults: &DefaultSpread, pod: &Pod) -> PodDemand {
        let mut demand = pod_demand(pod, &Default::default()).unwrap();
        defaults.apply(pod, &mut demand).unwrap();
        demand
    }

    fn node(name: &str, labels: &[(&str, &str)]) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            cpu_milli: 8_000,
            memory_mib: 8_192,
            max_pods: 10,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..NodeSpec::default()
        }
    }

    fn spread_of(demand: &PodDemand) -> &[TopologySpreadConstraint] {
        demand.inter_pod.as_ref().unwrap().spread()
    }

    #[test]
    fn system_defaults_are_kube_schedulers() {
        let system = DefaultSpread::system();
        let keys: Vec<_> = system
            .constraints()
            .iter()
            .map(|c| (c.topology_key.as_str(), c.max_skew, c.when_unsatisfiable))
            .collect();
        assert_eq!(
            keys,
            [
                (HOSTNAME, 3, WhenUnsatisfiable::ScheduleAnyway),
                (ZONE, 5, WhenUnsatisfiable::ScheduleAnyway)
            ]
        );
    }

    #[test]
    fn defaults_select_the_pods_of_the_same_workload_controller() {
        let defaults = DefaultSpread::system();
        for kind in ["ReplicaSet", "StatefulSet", "ReplicationController"] {
            let replica = pod("web-1", Some((kind, "rs-1")), json!(null));
            let demand = demand_with(&defaults, &replica);
            let spread = spread_of(&demand);
            assert_eq!(spread.len(), 2, "{kind}");
            let selector = spread[0].selector.as_ref().unwrap();
            let sibling = labels_for_matching(&pod("web-2", Some((kind, "rs-1")), json!(null)));
            let stranger = labels_for_matching(&pod("web-3", Some((kind, "rs-2")), json!(null)));
            assert!(selector.matches(&sibling), "{kind}");
            assert!(!selector.matches(&stranger), "another revision or workload");
            assert_eq!(
                demand
                    .inter_pod
                    .as_ref()
                    .unwrap()
                    .labels()
                    .get(LABEL_CONTROLLER_UID),
                Some(&"rs-1".to_owned()),
                "the pod counts for its siblings too"
            );
        }
    }

    #[test]
    fn defaults_leave_pods_with_their_own_constraints_or_no_workload_alone() {
        let defaults = DefaultSpread::system();
        let own = pod(
            "own",
            Some(("ReplicaSet", "rs-1")),
            json!([{"maxSkew": 1, "topologyKey": "rack", "whenUnsatisfiable": "DoNotSchedule",
                    "labelSelector": {"matchLabels": {"app": "web"}}}]),
        );
        let spread = spread_of(&demand_with(&defaults, &own)).to_vec();
        assert_eq!(spread.len(), 1);
        assert_eq!(spread[0].topology_key, "rack");

        for (name, owner) in [("bare", None), ("job", Some(("Job", "job-1")))] {
            let mut p = pod(name, owner, json!(null));
            if name == "job" {
                p.metadata.owner_references.as_mut().unwrap()[0].api_version = "batch/v1".into();
            }
            assert!(spread_of(&demand_with(&defaults, &p)).is_empty(), "{name}");
        }
    }

    #[test]
    fn no_defaults_change_nothing() {
        let replica = pod("web-1", Some(("ReplicaSet", "rs-1")), json!(null));
        let plain = pod_demand(&replica, &Default::default()).unwrap();
        let mut demand = plain.clone();
        DefaultSpread::default()
            .apply(&replica, &mut demand)
            .unwrap();
        assert!(
            Arc::ptr_eq(
                plain.inter_pod.as_ref().unwrap(),
                demand.inter_pod.as_ref().unwrap()
            ),
            "the translated spec is kept as it is"
        );
        assert!(spread_of(&demand).is_empty());
    }

    #[test]
    fn a_hard_default_spreads_replicas_of_one_workload_in_the_engine() {
        let mut snapshot = ClusterSnapshot::new();
        for (name, zone) in [("a1", "a"), ("a2", "a"), ("b1", "b")] {
            snapshot.add_node(node(name, &[(ZONE, zone)])).unwrap();
        }
        let defaults = DefaultSpread::list([DefaultConstraint {
            max_skew: 1,
            topology_key: ZONE,
            when_unsatisfiable: WhenUnsatisfiable::DoNotSchedule,
        }]);
        // One replica in zone a already, and a pod of another workload there.
        for (name, owner, node) in [("web-0", "rs-1", "a1"), ("db-0", "rs-2", "a2")] {
            let p = pod(name, Some(("ReplicaSet", owner)), json!(null));
            let d = demand_with(&defaults, &p);
            let placement = Placement {
                node: snapshot.node_id(node).unwrap(),
                gpus: Default::default(),
            };
            snapshot.place(&d, &placement).unwrap();
        }
        // Zone a may only take web-1 if zone b has one too: the only node left
        // for it is b1. The db pod does not count.
        let next = demand_with(
            &defaults,
            &pod("web-1", Some(("ReplicaSet", "rs-1")), json!(null)),
        );
        assert_eq!(super::super::tests::best_fit_choice(&snapshot, &next), "b1");
    }

    #[test]
    fn a_system_default_whose_key_no_node_carries_is_dropped() {
        let mut snapshot = ClusterSnapshot::new();
        snapshot.add_node(node("n1", &[(HOSTNAME, "n1")])).unwrap();
        let replica = pod("web-1", Some(("ReplicaSet", "rs-1")), json!(null));
        let demand = DefaultSpread::system()
            .pod_demand(&replica, &snapshot)
            .unwrap();
        let keys: Vec<_> = spread_of(&demand)
            .iter()
            .map(|c| c.topology_key.as_str())
            .collect();
        assert_eq!(
            keys,
            [HOSTNAME],
            "no node has a zone: spread over hostnames"
        );

        snapshot
            .add_node(node("n2", &[(HOSTNAME, "n2"), (ZONE, "a")]))
            .unwrap();
        let demand = DefaultSpread::system()
            .pod_demand(&replica, &snapshot)
            .unwrap();
        assert_eq!(spread_of(&demand).len(), 2);

        let listed = DefaultSpread::list([DefaultConstraint {
            max_skew: 1,
            topology_key: "rack",
            when_unsatisfiable: WhenUnsatisfiable::ScheduleAnyway,
        }]);
        let demand = listed.pod_demand(&replica, &snapshot).unwrap();
        assert_eq!(
            spread_of(&demand).len(),
            1,
            "a listed default is kept, as kube-scheduler keeps it"
        );
    }
}
