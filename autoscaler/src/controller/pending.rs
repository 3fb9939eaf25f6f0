//! The pods waiting for a node, kept from the pod watch: the capacity check
//! places those that come before new replicas first
//! ([`super::capacity::pods_ahead`]). The cluster mirror keeps only bound pods.
//! A pod with `spec.schedulingGates` is left out: it is not waiting for
//! capacity but for whoever holds the gate, so counting it would hold back
//! replicas for room nobody can use yet. It enters when the watch shows its
//! last gate gone.

use std::collections::{HashMap, HashSet};

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::Event;
use phalanx_kube::mirror::pod_uid;
use phalanx_kube::translate::{is_scheduling_gated, is_waiting_for_node};

/// Unbound, unfinished, not terminating, ungated pods by UID.
#[derive(Debug, Default)]
pub struct PendingPods {
    pods: HashMap<String, Pod>,
    /// UIDs seen since a relist began.
    relisting: Option<HashSet<String>>,
}

impl PendingPods {
    pub fn event(&mut self, event: &Event<Pod>) {
        match event {
            Event::Init => self.relisting = Some(HashSet::new()),
            Event::InitApply(pod) => {
                if let Some(seen) = &mut self.relisting {
                    seen.insert(pod_uid(pod));
                }
                self.apply(pod);
            }
            Event::Apply(pod) => self.apply(pod),
            Event::Delete(pod) => {
                self.pods.remove(&pod_uid(pod));
            }
            Event::InitDone => {
                let seen = self.relisting.take().unwrap_or_default();
                self.pods.retain(|uid, _| seen.contains(uid));
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Pod> {
        self.pods.values()
    }

    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    fn apply(&mut self, pod: &Pod) {
        let uid = pod_uid(pod);
        if is_waiting_for_node(pod) && !is_scheduling_gated(pod) {
            self.pods.insert(uid, pod.clone());
        } else {
            self.pods.remove(&uid);
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodSchedulingGate, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn pod(uid: &str, node: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                uid: Some(uid.into()),
                name: Some(uid.into()),
                namespace: Some("ml".into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(str::to_owned),
                ..PodSpec::default()
            }),
            status: None,
        }
    }

    #[test]
    fn keeps_unbound_pods_until_bound_deleted_or_missing_from_a_relist() {
        let mut pending = PendingPods::default();
        pending.event(&Event::Apply(pod("a", None)));
        pending.event(&Event::Apply(pod("b", None)));
        pending.event(&Event::Apply(pod("c", Some("n1"))));
        assert_eq!(pending.len(), 2);
        pending.event(&Event::Apply(pod("a", Some("n1"))));
        assert_eq!(pending.len(), 1, "a was bound");
        pending.event(&Event::Init);
        pending.event(&Event::InitApply(pod("d", None)));
        pending.event(&Event::InitDone);
        let left: Vec<_> = pending.iter().map(pod_uid).collect();
        assert_eq!(left, ["d"], "b vanished while the watch was down");
        pending.event(&Event::Delete(pod("d", None)));
        assert!(pending.is_empty());
    }

    #[test]
    fn a_gated_pod_is_not_pending_until_its_last_gate_is_removed() {
        let mut gated = pod("g", None);
        if let Some(spec) = gated.spec.as_mut() {
            spec.scheduling_gates = Some(vec![PodSchedulingGate {
                name: "example.com/quota".into(),
            }]);
        }
        let mut pending = PendingPods::default();
        pending.event(&Event::Apply(gated));
        assert!(
            pending.is_empty(),
            "a gated pod waits for its gate, not for capacity"
        );
        pending.event(&Event::Apply(pod("g", None)));
        assert_eq!(
            pending.len(),
            1,
            "the gate is gone: it waits for a node now"
        );
    }
}
