//! What each queue holds and waits for, kept current as pods are placed and
//! leave, and the three questions asked of it on every turn: may this queue
//! take this much more (limits, its ancestors' included), whose turn is it
//! (distance below fair share), and may it take back what others borrowed
//! (reclaim up to its guarantee).
//!
//! Usage is kept per queue and per subtree (a queue with its descendants), so
//! a limit check walks only the ancestors, and fair shares are recomputed only
//! when asked ([`QueueLedger::refresh_fair_shares`]): the scheduler does it once
//! per cycle, not per pod.

use std::collections::BTreeMap;

use thiserror::Error;

use super::fair_share::{dominant_share_ratio, fair_shares, ResourceAmounts};
use super::tree::{QueueId, QueueResource, QueueTree};
use crate::pod::PodDemand;
use crate::snapshot::ClusterSnapshot;

/// Why a queue may not take more: it or an ancestor would pass its limit.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error(
    "queue {queue} would use {would_use} {resource}, over its limit {limit}{}",
    via(.limited_by, .queue)
)]
pub struct OverLimit {
    /// The queue the pod belongs to.
    pub queue: String,
    /// The queue whose limit it would pass (the pod's queue or an ancestor).
    pub limited_by: String,
    pub resource: QueueResource,
    pub limit: u64,
    pub would_use: u64,
}

fn via(limited_by: &str, queue: &str) -> String {
    if limited_by == queue {
        String::new()
    } else {
        format!(" (the limit of its parent queue {limited_by})")
    }
}

/// Usage, waiting demand and fair shares of every queue of one tree.
#[derive(Clone, Debug)]
pub struct QueueLedger {
    tree: QueueTree,
    /// Placed in the queue itself.
    usage: Vec<ResourceAmounts>,
    /// Placed in the queue or any descendant: what its limit bounds.
    subtree_usage: Vec<ResourceAmounts>,
    /// Waiting in the queue itself.
    pending: Vec<ResourceAmounts>,
    fair: Vec<ResourceAmounts>,
    capacity: ResourceAmounts,
}

impl QueueLedger {
    pub fn new(tree: QueueTree) -> Self {
        let n = tree.len();
        Self {
            tree,
            usage: vec![ResourceAmounts::new(); n],
            subtree_usage: vec![ResourceAmounts::new(); n],
            pending: vec![ResourceAmounts::new(); n],
            fair: vec![ResourceAmounts::new(); n],
            capacity: ResourceAmounts::new(),
        }
    }

    pub fn tree(&self) -> &QueueTree {
        &self.tree
    }

    /// What one pod counts against its queue: CPU, memory, GPU (milli) and,
    /// when it is known where the pod runs, GPU of that node's model.
    pub fn pod_amounts(pod: &PodDemand, model: Option<&str>) -> ResourceAmounts {
        let mut amounts = ResourceAmounts::new();
        add_nonzero(&mut amounts, QueueResource::CpuMilli, pod.cpu_milli);
        add_nonzero(&mut amounts, QueueResource::MemoryMib, pod.memory_mib);
        let gpu = pod.gpu.total_milli();
        add_nonzero(&mut amounts, QueueResource::GpuMilli, gpu);
        if let Some(model) = model {
            add_nonzero(
                &mut amounts,
                QueueResource::ModelGpuMilli(model.to_owned()),
                gpu,
            );
        }
        amounts
    }

    /// The amounts of `pod` placed on `node` of `snapshot` (its model known).
    pub fn placed_amounts(
        snapshot: &ClusterSnapshot,
        pod: &PodDemand,
        node: crate::NodeId,
    ) -> ResourceAmounts {
        let model = snapshot
            .model_of(node)
            .filter(|_| pod.gpu.total_milli() > 0)
            .map(|m| snapshot.models().name(m));
        Self::pod_amounts(pod, model)
    }

    /// What the cluster offers, per queue resource: CPU and memory of every
    /// present node, healthy GPUs in total and per model.
    pub fn capacity_of(snapshot: &ClusterSnapshot) -> ResourceAmounts {
        let mut capacity = ResourceAmounts::new();
        for node in snapshot.nodes().iter().filter(|n| !n.removed) {
            add(&mut capacity, QueueResource::CpuMilli, node.cpu_milli_cap);
            add(&mut capacity, QueueResource::MemoryMib, node.memory_mib_cap);
            let gpu = node.gpus.iter().filter(|g| g.healthy).count() as u64
                * u64::from(crate::MILLI_PER_GPU);
            add(&mut capacity, QueueResource::GpuMilli, gpu);
            if let Some(model) = node.model {
                let name = snapshot.models().name(model).to_owned();
                add(&mut capacity, QueueResource::ModelGpuMilli(name), gpu);
            }
        }
        capacity
    }

    /// A pod of `queue` was placed (or was found running).
    pub fn add_usage(&mut self, queue: QueueId, amounts: &ResourceAmounts) {
        merge(&mut self.usage[queue.index()], amounts, true);
        self.for_self_and_ancestors(queue, |ledger, id| {
            merge(&mut ledger.subtree_usage[id.index()], amounts, true)
        });
    }

    /// A pod of `queue` left (finished, deleted or evicted).
    pub fn remove_usage(&mut self, queue: QueueId, amounts: &ResourceAmounts) {
        merge(&mut self.usage[queue.index()], amounts, false);
        self.for_self_and_ancestors(queue, |ledger, id| {
            merge(&mut ledger.subtree_usage[id.index()], amounts, false)
        });
    }

    pub fn add_pending(&mut self, queue: QueueId, amounts: &ResourceAmounts) {
        merge(&mut self.pending[queue.index()], amounts, true);
    }

    pub fn remove_pending(&mut self, queue: QueueId, amounts: &ResourceAmounts) {
        merge(&mut self.pending[queue.index()], amounts, false);
    }

    /// Recomputes every queue's fair share of `capacity` from current usage
    /// and waiting demand.
    pub fn refresh_fair_shares(&mut self, capacity: ResourceAmounts) {
        let demand: Vec<ResourceAmounts> = self
            .usage
            .iter()
            .zip(&self.pending)
            .map(|(used, waiting)| {
                let mut d = used.clone();
                merge(&mut d, waiting, true);
                d
            })
            .collect();
        // Resources no queue names and no pod asks for need no share.
        self.fair = fair_shares(&self.tree, &capacity, &demand);
        self.capacity = capacity;
    }

    /// Placed in the queue and its descendants.
    pub fn usage(&self, queue: QueueId) -> &ResourceAmounts {
        &self.subtree_usage[queue.index()]
    }

    /// Placed in the queue itself (not its descendants).
    pub fn own_usage(&self, queue: QueueId) -> &ResourceAmounts {
        &self.usage[queue.index()]
    }

    pub fn pending(&self, queue: QueueId) -> &ResourceAmounts {
        &self.pending[queue.index()]
    }

    /// As of the last [`Self::refresh_fair_shares`].
    pub fn fair_share(&self, queue: QueueId) -> &ResourceAmounts {
        &self.fair[queue.index()]
    }

    pub fn capacity(&self) -> &ResourceAmounts {
        &self.capacity
    }

    /// The queue's guarantee of every resource it names.
    pub fn guaranteed(&self, queue: QueueId) -> ResourceAmounts {
        self.tree
            .spec(queue)
            .quotas
            .iter()
            .filter(|(_, q)| q.guaranteed > 0)
            .map(|(r, q)| (r.clone(), q.guaranteed))
            .collect()
    }

    /// Whether `queue` may take `amounts` more without it or any ancestor
    /// passing a limit.
    pub fn check_limit(&self, queue: QueueId, amounts: &ResourceAmounts) -> Result<(), OverLimit> {
        let mut at = Some(queue);
        while let Some(id) = at {
            for (resource, &more) in amounts {
                if let Some(limit) = self.tree.quota(id, resource).limit {
                    let would_use = self.subtree_usage[id.index()]
                        .get(resource)
                        .copied()
                        .unwrap_or(0)
                        .saturating_add(more);
                    if would_use > limit {
                        return Err(OverLimit {
                            queue: self.tree.spec(queue).name.clone(),
                            limited_by: self.tree.spec(id).name.clone(),
                            resource: resource.clone(),
                            limit,
                            would_use,
                        });
                    }
                }
            }
            at = self.tree.parent(id);
        }
        Ok(())
    }

    /// The order of turns: the queue whose key is least goes next. The key is
    /// the dominant-share ratio of each queue on the path from its root down
    /// to it, compared root first: roots take turns among themselves by how
    /// far each is into its fair share, and inside the root that goes, its
    /// children do likewise (KAI-Scheduler's and Volcano's hierarchical
    /// order).
    pub fn turn_key(&self, queue: QueueId) -> TurnKey {
        let mut path = Vec::new();
        let mut at = Some(queue);
        while let Some(id) = at {
            path.push(dominant_share_ratio(
                &self.subtree_usage[id.index()],
                &self.fair[id.index()],
            ));
            at = self.tree.parent(id);
        }
        path.reverse();
        TurnKey(path)
    }

    /// Whether `queue` may reclaim for a pod asking `amounts`: only while what
    /// it would then use stays within its guarantee for every guaranteed
    /// resource the pod asks for (and the pod asks for at least one), at every
    /// level up to the root. Beyond its guarantee a queue waits for idle
    /// capacity like anyone else.
    pub fn may_reclaim(&self, queue: QueueId, amounts: &ResourceAmounts) -> bool {
        let mut at = Some(queue);
        let mut any = false;
        while let Some(id) = at {
            for (resource, &more) in amounts {
                let guaranteed = self.tree.quota(id, resource).guaranteed;
                if guaranteed == 0 {
                    continue;
                }
                let would_use = self.subtree_usage[id.index()]
                    .get(resource)
                    .copied()
                    .unwrap_or(0)
                    .saturating_add(more);
                if would_use > guaranteed {
                    return false;
                }
                any = true;
            }
            at = self.tree.parent(id);
        }
        any
    }

    /// Whether `amounts` may be taken back from `victim_queue` for a queue
    /// reclaiming: the victim's queue (and each ancestor that is not also the
    /// reclaimer's) must still hold at least its guarantee of every resource
    /// afterwards; reclaim takes only what was borrowed.
    pub fn reclaimable_from(
        &self,
        victim_queue: QueueId,
        reclaimer: QueueId,
        amounts: &ResourceAmounts,
    ) -> bool {
        let reclaimer_line: Vec<QueueId> = self.self_and_ancestors(reclaimer);
        let mut at = Some(victim_queue);
        while let Some(id) = at {
            if reclaimer_line.contains(&id) {
                // A shared ancestor: usage moves inside it, it loses nothing.
                break;
            }
            for (resource, &less) in amounts {
                let guaranteed = self.tree.quota(id, resource).guaranteed;
                let used = self.subtree_usage[id.index()]
                    .get(resource)
                    .copied()
                    .unwrap_or(0);
                if used.saturating_sub(less) < guaranteed {
                    return false;
                }
            }
            at = self.tree.parent(id);
        }
        true
    }

    /// Whether the queue (or one of its ancestors) holds less than its
    /// guarantee of a resource while its demand asks for more.
    pub fn below_guarantee(&self, queue: QueueId) -> bool {
        let spec = self.tree.spec(queue);
        spec.quotas.iter().any(|(resource, quota)| {
            let used = self.subtree_usage[queue.index()]
                .get(resource)
                .copied()
                .unwrap_or(0);
            let waiting = self.pending[queue.index()]
                .get(resource)
                .copied()
                .unwrap_or(0);
            used < quota.guaranteed && waiting > 0
        })
    }

    fn self_and_ancestors(&self, queue: QueueId) -> Vec<QueueId> {
        let mut line = Vec::new();
        let mut at = Some(queue);
        while let Some(id) = at {
            line.push(id);
            at = self.tree.parent(id);
        }
        line
    }

    fn for_self_and_ancestors(&mut self, queue: QueueId, mut f: impl FnMut(&mut Self, QueueId)) {
        let mut at = Some(queue);
        while let Some(id) = at {
            f(self, id);
            at = self.tree.parent(id);
        }
    }
}

/// Hierarchical order of turns; see [`QueueLedger::turn_key`]. Ratios are
/// never NaN (usage and shares are finite or the ratio is infinite), so the
/// order is total.
#[derive(Clone, Debug, PartialEq)]
pub struct TurnKey(pub Vec<f64>);

impl Eq for TurnKey {}

impl PartialOrd for TurnKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TurnKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        for (a, b) in self.0.iter().zip(&other.0) {
            match a.total_cmp(b) {
                std::cmp::Ordering::Equal => continue,
                unequal => return unequal,
            }
        }
        self.0.len().cmp(&other.0.len())
    }
}

fn add(amounts: &mut ResourceAmounts, resource: QueueResource, amount: u64) {
    let entry = amounts.entry(resource).or_default();
    *entry = entry.saturating_add(amount);
}

fn add_nonzero(amounts: &mut ResourceAmounts, resource: QueueResource, amount: u64) {
    if amount > 0 {
        add(amounts, resource, amount);
    }
}

/// Adds (or, with `plus` false, takes away, never below 0) `delta` into `into`,
/// dropping entries that reach 0 so equal amounts compare equal.
fn merge(into: &mut ResourceAmounts, delta: &ResourceAmounts, plus: bool) {
    for (resource, &amount) in delta {
        let entry = into.entry(resource.clone()).or_default();
        *entry = if plus {
            entry.saturating_add(amount)
        } else {
            entry.saturating_sub(amount)
        };
        if *entry == 0 {
            into.remove(resource);
        }
    }
}

/// Sums amounts (used by callers that total a gang or a victim set).
pub fn sum_amounts<'a>(amounts: impl IntoIterator<Item = &'a ResourceAmounts>) -> ResourceAmounts {
    let mut total: ResourceAmounts = BTreeMap::new();
    for a in amounts {
        merge(&mut total, a, true);
    }
    total
}
