//! Live cluster gauges: what the cluster's GPUs are doing now, by GPU model
//! and node pool, for the scheduler to export every cycle.
//!
//! Fragmentation is the simulator's measure (FGD's F(n) of each node against
//! the typical pods, [`node_fragmentation`]), so a dashboard and a replay of
//! the same cluster state agree. It is the costly part, so each node's figures
//! are cached against the node's generation counter and the typical set's
//! epoch: a cycle recomputes only the nodes that changed and adds up the rest.

use std::collections::HashMap;

use crate::fragmentation::node_fragmentation;
use crate::node::NodeState;
use crate::workload::{OnlineWorkload, TypicalPod};
use crate::{ClusterSnapshot, PodDemand, MILLI_PER_GPU};

/// The nodes one set of gauges adds up: one GPU model in one pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GaugeGroup {
    /// The nodes' GPU model, "" for nodes without GPUs.
    pub model: String,
    /// The value of the pool label on the nodes, "" where it is not set.
    pub pool: String,
}

/// GPU figures of a set of nodes. Every figure counts healthy GPUs only, so
/// `idle = capacity − allocated` holds and an unhealthy GPU (whatever it still
/// holds) leaves the gauges as the engine stops placing on it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GpuTally {
    /// Healthy GPUs, in milli.
    pub capacity_milli: u64,
    /// Milli allocated to pods on healthy GPUs.
    pub allocated_milli: u64,
    /// Milli of idle GPU that the typical pods cannot use (F(n), a part of idle).
    pub fragmented_milli: f64,
    /// Healthy GPUs holding at least one share (a fraction of one GPU).
    pub shared_gpus: u64,
}

impl GpuTally {
    fn of_node(node: &NodeState, typical: &[TypicalPod]) -> Self {
        let mut tally = GpuTally::default();
        for gpu in node.gpus.iter().filter(|g| g.healthy) {
            tally.capacity_milli += u64::from(MILLI_PER_GPU);
            tally.allocated_milli += u64::from(MILLI_PER_GPU - gpu.milli_free);
            tally.shared_gpus += u64::from(gpu.is_shared());
        }
        tally.fragmented_milli = node_fragmentation(
            typical,
            node.cpu_milli_free(),
            node.model,
            node.free_list().as_slice(),
        );
        tally
    }

    fn add(&mut self, other: &GpuTally) {
        self.capacity_milli += other.capacity_milli;
        self.allocated_milli += other.allocated_milli;
        self.fragmented_milli += other.fragmented_milli;
        self.shared_gpus += other.shared_gpus;
    }

    /// Healthy GPUs.
    pub fn capacity_gpus(&self) -> f64 {
        milli_to_gpus(self.capacity_milli)
    }

    /// GPUs allocated to pods (shares add up to fractions).
    pub fn allocated_gpus(&self) -> f64 {
        milli_to_gpus(self.allocated_milli)
    }

    /// GPUs not allocated: capacity − allocated.
    pub fn idle_gpus(&self) -> f64 {
        milli_to_gpus(self.capacity_milli - self.allocated_milli)
    }

    /// Idle GPUs that the typical pods cannot use.
    pub fn fragmented_gpus(&self) -> f64 {
        self.fragmented_milli / f64::from(MILLI_PER_GPU)
    }
}

fn milli_to_gpus(milli: u64) -> f64 {
    milli as f64 / f64::from(MILLI_PER_GPU)
}

/// One node's figures as of its generation and the typical set's epoch.
#[derive(Debug, Clone)]
struct CachedNode {
    name: String,
    generation: u32,
    epoch: u32,
    group: usize,
    tally: GpuTally,
}

/// Computes the gauges of a [`ClusterSnapshot`] cycle after cycle, caching
/// each node's figures until it changes.
#[derive(Debug, Clone)]
pub struct ClusterGauges {
    pool_label: String,
    /// Learns the typical pods from the pods observed, as the online policies
    /// do; `None` when the typical set was given.
    online: Option<OnlineWorkload>,
    typical: Vec<TypicalPod>,
    /// Bumped whenever `typical` changes; every cached figure carries it.
    epoch: u32,
    nodes: Vec<Option<CachedNode>>,
    /// Every group seen so far: one that empties is reported at zero rather
    /// than dropped, so its series falls to 0 instead of freezing.
    groups: Vec<GaugeGroup>,
    group_ids: HashMap<GaugeGroup, usize>,
    /// Nodes whose figures the last [`Self::tally`] recomputed.
    recomputed: usize,
}

impl ClusterGauges {
    /// Gauges that learn the typical pods online from [`Self::observe`]: until
    /// 256 (`ONLINE_MIN_SAMPLES`) pods are seen the set is empty and nothing counts
    /// as fragmented, as the online policies treat an unknown workload.
    pub fn online(pool_label: impl Into<String>) -> Self {
        Self::build(pool_label.into(), Some(OnlineWorkload::new()), Vec::new())
    }

    /// Gauges measured against a fixed typical set (a replay's trace).
    pub fn with_typical(pool_label: impl Into<String>, typical: Vec<TypicalPod>) -> Self {
        Self::build(pool_label.into(), None, typical)
    }

    fn build(pool_label: String, online: Option<OnlineWorkload>, typical: Vec<TypicalPod>) -> Self {
        ClusterGauges {
            pool_label,
            online,
            typical,
            epoch: 1,
            nodes: Vec::new(),
            groups: Vec::new(),
            group_ids: HashMap::new(),
            recomputed: 0,
        }
    }

    /// The typical pods fragmentation is measured against.
    pub fn typical(&self) -> &[TypicalPod] {
        &self.typical
    }

    /// Learns from an arriving pod (online gauges only). The typical set is
    /// rebuilt on the online policies' schedule ([`OnlineWorkload`]), so its
    /// epoch, and with it every node's figures, changes rarely.
    pub fn observe(&mut self, pod: &PodDemand) {
        let Some(learned) = self.online.as_mut().and_then(|o| o.observe(pod.shape())) else {
            return;
        };
        if learned != self.typical {
            self.typical = learned;
            self.epoch = self.epoch.wrapping_add(1).max(1);
        }
    }

    /// Nodes the last [`Self::tally`] had to recompute (the others were cached).
    pub fn recomputed(&self) -> usize {
        self.recomputed
    }

    /// The figures of every group seen so far, sorted by model then pool.
    pub fn tally(&mut self, snapshot: &ClusterSnapshot) -> Vec<(GaugeGroup, GpuTally)> {
        let mut totals = vec![GpuTally::default(); self.groups.len()];
        self.nodes.resize(snapshot.len(), None);
        self.recomputed = 0;
        for (index, node) in snapshot.nodes().iter().enumerate() {
            if node.removed {
                self.nodes[index] = None;
                continue;
            }
            let fresh = self.nodes[index].as_ref().is_some_and(|c| {
                c.generation == node.generation && c.epoch == self.epoch && c.name == node.name
            });
            if !fresh {
                let group = self.group_of(snapshot, node);
                self.nodes[index] = Some(CachedNode {
                    name: node.name.clone(),
                    generation: node.generation,
                    epoch: self.epoch,
                    group,
                    tally: GpuTally::of_node(node, &self.typical),
                });
                self.recomputed += 1;
            }
            if let Some(cached) = &self.nodes[index] {
                if totals.len() <= cached.group {
                    totals.resize(cached.group + 1, GpuTally::default());
                }
                totals[cached.group].add(&cached.tally);
            }
        }
        totals.resize(self.groups.len(), GpuTally::default());
        let mut out: Vec<(GaugeGroup, GpuTally)> =
            self.groups.iter().cloned().zip(totals).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn group_of(&mut self, snapshot: &ClusterSnapshot, node: &NodeState) -> usize {
        let group = GaugeGroup {
            model: node
                .model
                .map(|m| snapshot.models().name(m).to_owned())
                .unwrap_or_default(),
            pool: node
                .labels
                .get(&self.pool_label)
                .cloned()
                .unwrap_or_default(),
        };
        if let Some(&id) = self.group_ids.get(&group) {
            return id;
        }
        let id = self.groups.len();
        self.groups.push(group.clone());
        self.group_ids.insert(group, id);
        id
    }
}

#[cfg(test)]
mod tests;
