//! What a fault test checks after the fault: every node each pod was ever seen
//! bound to (from a watch that runs through the whole test), and the rules no
//! fault may break — no pod bound twice, no GPU promised twice, no pod lost.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;

use crate::nodes::node_facts;
use crate::pods::{assignment_violations, node_of};

/// One pod as the watch saw it bound.
#[derive(Debug, Clone, Default)]
pub struct BoundRecord {
    pub name: String,
    /// Every node the pod was seen on; more than one means it was bound twice.
    pub nodes: BTreeSet<String>,
    /// When the watch first saw it bound (test clock).
    pub first_bound: Option<Instant>,
}

/// Records, per pod UID, every `spec.nodeName` a watch of `api` shows. The
/// watch relists through API server outages (kube-runtime's watcher), so a
/// binding made while it was cut off is still seen afterwards.
#[derive(Debug)]
pub struct BindingLedger {
    seen: Arc<Mutex<BTreeMap<String, BoundRecord>>>,
    task: tokio::task::JoinHandle<()>,
}

impl BindingLedger {
    /// Starts watching `api`'s pods.
    pub fn watch(api: Api<Pod>) -> Self {
        let seen = Arc::new(Mutex::new(BTreeMap::<String, BoundRecord>::new()));
        let task = {
            let seen = seen.clone();
            let stream = watcher(api, watcher::Config::default())
                .default_backoff()
                .applied_objects();
            tokio::spawn(async move {
                let mut stream = stream.boxed();
                loop {
                    match stream.try_next().await {
                        Ok(Some(pod)) => record(&seen, &pod),
                        Ok(None) => return,
                        // The apiserver is down or the watch expired: the
                        // backoff retries and the relist re-reads every pod.
                        Err(_) => continue,
                    }
                }
            })
        };
        BindingLedger { seen, task }
    }

    /// What the watch has seen so far, by pod UID.
    pub fn records(&self) -> BTreeMap<String, BoundRecord> {
        self.seen
            .lock()
            .map(|seen| seen.clone())
            .unwrap_or_default()
    }

    /// Pods seen bound to more than one node, as messages.
    pub fn bound_twice(&self) -> Vec<String> {
        self.records()
            .values()
            .filter(|r| r.nodes.len() > 1)
            .map(|r| format!("{} was bound to {:?}", r.name, r.nodes))
            .collect()
    }

    /// The nodes the pod with this UID was seen on.
    pub fn nodes_of(&self, uid: &str) -> BTreeSet<String> {
        self.records()
            .get(uid)
            .map(|r| r.nodes.clone())
            .unwrap_or_default()
    }

    /// Pods first seen bound to `node` at or after `since`.
    pub fn bound_to_since(&self, node: &str, since: Instant) -> Vec<String> {
        self.records()
            .values()
            .filter(|r| r.nodes.contains(node) && r.first_bound.is_some_and(|t| t >= since))
            .map(|r| r.name.clone())
            .collect()
    }

    /// Waits `settle` for late watch events, then stops watching.
    pub async fn finish(self, settle: Duration) -> BTreeMap<String, BoundRecord> {
        tokio::time::sleep(settle).await;
        self.task.abort();
        self.records()
    }
}

impl Drop for BindingLedger {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn record(seen: &Mutex<BTreeMap<String, BoundRecord>>, pod: &Pod) {
    let (Some(uid), Some(node)) = (pod.metadata.uid.clone(), node_of(pod)) else {
        return;
    };
    let Ok(mut seen) = seen.lock() else { return };
    let entry = seen.entry(uid).or_insert_with(|| BoundRecord {
        name: pod.metadata.name.clone().unwrap_or_default(),
        ..BoundRecord::default()
    });
    entry.first_bound.get_or_insert_with(Instant::now);
    entry.nodes.insert(node.to_owned());
}

/// Every rule `pods` (the live pods of a test) break, as messages: GPU
/// assignments that do not match their node or promise a GPU twice, and pods
/// bound to a node that no longer exists.
pub async fn invariant_violations(
    client: &kube::Client,
    pods: &[Pod],
) -> crate::Result<Vec<String>> {
    let facts = node_facts(client).await?;
    let mut problems = assignment_violations(pods, &facts.gpus);
    for pod in pods {
        if let Some(node) = node_of(pod) {
            if !facts.gpus.contains_key(node) {
                problems.push(format!(
                    "{} is bound to {node}, which does not exist",
                    pod.metadata.name.as_deref().unwrap_or_default()
                ));
            }
        }
    }
    Ok(problems)
}
