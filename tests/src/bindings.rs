//! Every node each pod is ever seen bound to, from a watch running beside a
//! test: a pod seen on two nodes was bound twice (or replaced under the same
//! name, which a test that means it can tell apart by UID).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use tokio::task::JoinHandle;

use crate::node_of;

/// By pod UID: the pod's name and every node it was seen bound to.
type Seen = Arc<Mutex<HashMap<String, (String, BTreeSet<String>)>>>;

/// The watch and what it has seen, keyed by pod UID.
#[derive(Debug)]
pub struct BindingHistory {
    seen: Seen,
    task: JoinHandle<()>,
}

impl BindingHistory {
    /// Starts watching the pods of `api`.
    pub fn watch(api: Api<Pod>) -> Self {
        let seen: Seen = Arc::default();
        let task = {
            let seen = seen.clone();
            let stream = watcher(api, watcher::Config::default()).applied_objects();
            tokio::spawn(async move {
                let mut stream = stream.boxed();
                while let Ok(Some(pod)) = stream.try_next().await {
                    let (Some(uid), Some(node)) = (pod.metadata.uid.clone(), node_of(&pod)) else {
                        continue;
                    };
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    if let Ok(mut seen) = seen.lock() {
                        seen.entry(uid)
                            .or_insert_with(|| (name, BTreeSet::new()))
                            .1
                            .insert(node.to_owned());
                    }
                }
            })
        };
        BindingHistory { seen, task }
    }

    /// Pods (by name) seen on more than one node, with the nodes.
    pub fn bound_twice(&self) -> Vec<(String, BTreeSet<String>)> {
        self.seen
            .lock()
            .map(|seen| {
                seen.values()
                    .filter(|(_, nodes)| nodes.len() > 1)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The nodes the pod with this UID was seen on.
    pub fn nodes_of(&self, uid: &str) -> BTreeSet<String> {
        self.seen
            .lock()
            .ok()
            .and_then(|seen| seen.get(uid).map(|(_, nodes)| nodes.clone()))
            .unwrap_or_default()
    }
}

impl Drop for BindingHistory {
    fn drop(&mut self) {
        self.task.abort();
    }
}
