//! Which nodes exist right now, shared with the binding tasks.
//!
//! A pod is placed (and assumed) in the loop, but its Binding is written later
//! by a task that may wait for a slot and for the rate limiter. If the node is
//! deleted meanwhile, the API server still accepts the Binding (it does not
//! check that the node exists): the pod would be bound to a node that is gone,
//! and stay there until the controller manager's pod garbage collector deletes
//! it — a bare pod is then lost. So the task asks this set, right before
//! writing, whether its node still exists, and gives the pod back to the queue
//! if not.
//!
//! The loop keeps it in step with the Node watch, relists included: a node
//! deleted while the watch was down shows up only as missing from the relist.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use kube::runtime::watcher::Event;
use kube::ResourceExt;

/// Node names the Node watch shows, cheap to clone into binding tasks.
#[derive(Debug, Clone, Default)]
pub struct NodePresence {
    inner: Arc<RwLock<Presence>>,
}

#[derive(Debug, Default)]
struct Presence {
    present: HashSet<String>,
    /// Names listed so far by a relist in progress.
    relisted: Option<HashSet<String>>,
}

impl NodePresence {
    /// Follows one event of the Node watch.
    pub fn observe<K: kube::Resource>(&self, event: &Event<K>) {
        let Ok(mut presence) = self.inner.write() else {
            return;
        };
        match event {
            Event::Apply(node) => {
                presence.present.insert(node.name_any());
            }
            Event::Delete(node) => {
                presence.present.remove(&node.name_any());
            }
            Event::Init => presence.relisted = Some(HashSet::new()),
            Event::InitApply(node) => {
                let name = node.name_any();
                presence.present.insert(name.clone());
                if let Some(relisted) = presence.relisted.as_mut() {
                    relisted.insert(name);
                }
            }
            Event::InitDone => {
                if let Some(relisted) = presence.relisted.take() {
                    presence.present = relisted;
                }
            }
        }
    }

    /// Whether the node exists as far as the watch knows. A poisoned lock
    /// (a panicking writer) answers yes: the API server then decides, as it
    /// did before this check existed.
    pub fn contains(&self, node: &str) -> bool {
        self.inner
            .read()
            .map(|presence| presence.present.contains(node))
            .unwrap_or(true)
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Node;
    use kube::api::ObjectMeta;

    use super::*;

    fn node(name: &str) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            ..Node::default()
        }
    }

    #[test]
    fn a_deleted_node_is_absent_until_it_is_added_again() {
        let presence = NodePresence::default();
        presence.observe(&Event::Apply(node("a")));
        assert!(presence.contains("a"));
        presence.observe(&Event::Delete(node("a")));
        assert!(!presence.contains("a"));
        presence.observe(&Event::Apply(node("a")));
        assert!(presence.contains("a"));
    }

    #[test]
    fn a_node_missing_from_a_relist_is_absent_once_the_relist_is_done() {
        let presence = NodePresence::default();
        presence.observe(&Event::Apply(node("a")));
        presence.observe(&Event::Apply(node("b")));
        presence.observe(&Event::<Node>::Init);
        presence.observe(&Event::InitApply(node("b")));
        // Until the relist completes, what was known stands.
        assert!(presence.contains("a"));
        presence.observe(&Event::<Node>::InitDone);
        assert!(!presence.contains("a"));
        assert!(presence.contains("b"));
    }

    #[test]
    fn clones_share_one_view() {
        let presence = NodePresence::default();
        let in_a_task = presence.clone();
        presence.observe(&Event::Apply(node("a")));
        assert!(in_a_task.contains("a"));
    }
}
