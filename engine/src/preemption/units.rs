//! The units that may be evicted for one preemptor: lone pods and whole gangs,
//! each with why it may go and what it costs, and the running tallies
//! (disruption budgets spent, capacity taken back from each queue) that decide
//! whether one more may go.

use std::collections::BTreeMap;

use super::{EvictionReason, NoPreemption, PreemptionRules, Preemptor, RunningPod};
use crate::node::NodeId;
use crate::pod::{GpuDemand, PodDemand};
use crate::queues::{sum_amounts, QueueId, QueueLedger, ResourceAmounts};
use crate::snapshot::ClusterSnapshot;

/// What evicting a set of units disturbs, compared field by field: the least
/// is chosen. Fewest pods first (a gang of sixteen is a last resort next to a
/// lone pod), then the highest priority among them (never a higher priority
/// when a lower one would do), then the GPU time their restart throws away.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Cost {
    pods: usize,
    max_priority: i64,
    /// Milli-GPU × milliseconds run.
    gpu_time: u128,
}

impl Cost {
    fn add(self, other: Cost) -> Cost {
        Cost {
            max_priority: self.max_priority.max(other.max_priority),
            pods: self.pods + other.pods,
            gpu_time: self.gpu_time + other.gpu_time,
        }
    }
}

/// A lone pod or every running member of one gang.
#[derive(Debug, Clone)]
pub(super) struct Unit {
    /// Indices into the pool.
    pub pods: Vec<usize>,
    pub reason: EvictionReason,
    pub cost: Cost,
    queue: Option<QueueId>,
    /// What it holds, by queue resource (for reclaim's running tally).
    amounts: ResourceAmounts,
    /// How many of its pods each disruption budget selects.
    budgets: BTreeMap<usize, u32>,
    nodes: Vec<NodeId>,
    /// Every pod of it is already leaving: free room, not a victim.
    pub leaving: bool,
}

/// Every unit that may go, and the tallies of those taken.
pub(super) struct Units<'r> {
    units: Vec<Unit>,
    /// Units with a pod on each node, cheapest first.
    by_node: BTreeMap<NodeId, Vec<usize>>,
    taken: Vec<bool>,
    budgets_left: Vec<u32>,
    /// Taken back from each queue so far.
    reclaimed: BTreeMap<QueueId, ResourceAmounts>,
    ledger: Option<&'r QueueLedger>,
    reclaimer: Option<QueueId>,
    refused: Refused,
}

#[derive(Debug, Default)]
struct Refused {
    not_lower_priority: usize,
    not_reclaimable: usize,
    too_young: usize,
    budget_exhausted: usize,
}

impl<'r> Units<'r> {
    /// The units of `pool` that may go for `preemptor` under `rules`.
    pub fn eligible(
        snapshot: &ClusterSnapshot,
        preemptor: &Preemptor<'_>,
        pool: &[RunningPod],
        rules: &PreemptionRules<'r>,
    ) -> Self {
        let mut groups: BTreeMap<Option<u64>, Vec<usize>> = BTreeMap::new();
        let mut lone = Vec::new();
        let mut outranking = 0;
        for (i, pod) in pool.iter().enumerate() {
            match pod.gang {
                Some(g) => groups.entry(Some(g)).or_default().push(i),
                // Most running pods of a busy cluster may not go: a lone pod
                // of the preemptor's queue (or any, without queues) at its
                // priority or above is counted and passed over here, before
                // anything is built for it.
                None if !pod.leaving
                    && pod.priority >= preemptor.priority
                    && (rules.ledger.is_none() || pod.queue == preemptor.queue) =>
                {
                    outranking += 1;
                }
                None => lone.push(vec![i]),
            }
        }
        let reclaimer_may_reclaim = match (rules.ledger, preemptor.queue) {
            (Some(ledger), Some(queue)) => {
                let asked: Vec<ResourceAmounts> = preemptor
                    .gang
                    .members
                    .iter()
                    .take(preemptor.gang.min_member)
                    .map(|m| QueueLedger::pod_amounts(m, None))
                    .collect();
                ledger.may_reclaim(queue, &sum_amounts(&asked))
            }
            _ => false,
        };
        let mut units = Units {
            units: Vec::new(),
            by_node: BTreeMap::new(),
            taken: Vec::new(),
            budgets_left: rules.budgets.to_vec(),
            reclaimed: BTreeMap::new(),
            ledger: rules.ledger,
            reclaimer: preemptor.queue,
            refused: Refused {
                not_lower_priority: outranking,
                ..Refused::default()
            },
        };
        for pods in groups.into_values().chain(lone) {
            if let Some(unit) = units.unit_of(
                snapshot,
                preemptor,
                pool,
                rules,
                pods,
                reclaimer_may_reclaim,
            ) {
                units.units.push(unit);
            }
        }
        units.taken = vec![false; units.units.len()];
        for (id, unit) in units.units.iter().enumerate() {
            for node in &unit.nodes {
                units.by_node.entry(*node).or_default().push(id);
            }
        }
        let costs: Vec<Cost> = units.units.iter().map(|u| u.cost).collect();
        for list in units.by_node.values_mut() {
            list.sort_by_key(|&u| (costs[u], u));
        }
        units
    }

    /// One unit, or `None` (counted in the refusal) if it may not go.
    fn unit_of(
        &mut self,
        snapshot: &ClusterSnapshot,
        preemptor: &Preemptor<'_>,
        pool: &[RunningPod],
        rules: &PreemptionRules<'_>,
        pods: Vec<usize>,
        reclaimer_may_reclaim: bool,
    ) -> Option<Unit> {
        let first = &pool[pods[0]];
        let nodes = |pods: &[usize]| {
            let mut nodes: Vec<NodeId> = pods.iter().map(|&p| pool[p].placement.node).collect();
            nodes.sort();
            nodes.dedup();
            nodes
        };
        if pods.iter().all(|&p| pool[p].leaving) {
            return Some(Unit {
                queue: first.queue,
                nodes: nodes(&pods),
                pods,
                reason: EvictionReason::Preemption,
                cost: Cost {
                    max_priority: i64::MIN,
                    ..Cost::default()
                },
                amounts: ResourceAmounts::new(),
                budgets: BTreeMap::new(),
                leaving: true,
            });
        }
        // The cheap refusals first: a busy cluster has tens of thousands of
        // running pods, most of which may not go.
        let other_queue = match (rules.ledger, preemptor.queue, first.queue) {
            (Some(_), Some(mine), Some(theirs)) => mine != theirs,
            _ => false,
        };
        if other_queue && !reclaimer_may_reclaim {
            self.refused.not_reclaimable += 1;
            return None;
        }
        if !other_queue && pods.iter().any(|&p| pool[p].priority >= preemptor.priority) {
            self.refused.not_lower_priority += 1;
            return None;
        }
        if pods
            .iter()
            .any(|&p| pool[p].started_ms.saturating_add(rules.min_runtime_ms) > rules.now_ms)
        {
            self.refused.too_young += 1;
            return None;
        }
        let mut budgets: BTreeMap<usize, u32> = BTreeMap::new();
        for &p in &pods {
            for &b in &pool[p].budgets {
                *budgets.entry(b).or_default() += 1;
            }
        }
        if budgets
            .iter()
            .any(|(&b, &n)| rules.budgets.get(b).copied().unwrap_or(0) < n)
        {
            self.refused.budget_exhausted += 1;
            return None;
        }
        // What it holds by queue resource matters only to reclaim's tally.
        let (reason, amounts) = if other_queue {
            let amounts = sum_amounts(
                &pods
                    .iter()
                    .map(|&p| {
                        QueueLedger::placed_amounts(
                            snapshot,
                            &pool[p].demand,
                            pool[p].placement.node,
                        )
                    })
                    .collect::<Vec<_>>(),
            );
            let (ledger, reclaimer, victim_queue) = (rules.ledger?, preemptor.queue?, first.queue?);
            if !ledger.reclaimable_from(victim_queue, reclaimer, &amounts) {
                self.refused.not_reclaimable += 1;
                return None;
            }
            (EvictionReason::Reclaim, amounts)
        } else {
            (EvictionReason::Preemption, ResourceAmounts::new())
        };
        let nodes = nodes(&pods);
        let cost = pods
            .iter()
            .map(|&p| {
                let pod = &pool[p];
                let ran = u128::from(rules.now_ms.saturating_sub(pod.started_ms));
                Cost {
                    max_priority: i64::from(pod.priority),
                    pods: 1,
                    gpu_time: u128::from(pod.demand.gpu.total_milli()) * ran,
                }
            })
            .fold(
                Cost {
                    max_priority: i64::MIN,
                    ..Cost::default()
                },
                Cost::add,
            );
        Some(Unit {
            queue: first.queue,
            pods,
            reason,
            cost,
            amounts,
            budgets,
            nodes,
            leaving: false,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    pub fn refusal(&self) -> NoPreemption {
        NoPreemption::NoCandidates {
            not_lower_priority: self.refused.not_lower_priority,
            not_reclaimable: self.refused.not_reclaimable,
            too_young: self.refused.too_young,
            budget_exhausted: self.refused.budget_exhausted,
        }
    }

    pub fn unit(&self, id: usize) -> &Unit {
        &self.units[id]
    }

    pub fn by_node(&self) -> &BTreeMap<NodeId, Vec<usize>> {
        &self.by_node
    }

    /// The unit's pods on one node.
    pub fn pods_on(&self, unit: usize, node: NodeId, pool: &[RunningPod]) -> Vec<usize> {
        self.units[unit]
            .pods
            .iter()
            .copied()
            .filter(|&p| pool[p].placement.node == node)
            .collect()
    }

    /// Of `candidates` (cheapest first), those that may go together with the
    /// units already taken: not taken yet, their disruption budgets not spent
    /// by the others, and (for reclaim) each victim queue still at its
    /// guarantee with everything taken back from it. Cheaper units are
    /// admitted first.
    pub fn may_go_together(&self, candidates: &[usize]) -> Vec<usize> {
        let mut budgets_left = self.budgets_left.clone();
        let mut reclaimed = self.reclaimed.clone();
        let mut chosen = Vec::new();
        for &id in candidates {
            if self.taken[id] {
                continue;
            }
            let unit = &self.units[id];
            if unit
                .budgets
                .iter()
                .any(|(&b, &n)| budgets_left.get(b).copied().unwrap_or(0) < n)
            {
                continue;
            }
            if let (EvictionReason::Reclaim, Some(ledger), Some(queue), Some(reclaimer)) =
                (unit.reason, self.ledger, unit.queue, self.reclaimer)
            {
                let mut total = reclaimed.get(&queue).cloned().unwrap_or_default();
                for (r, a) in &unit.amounts {
                    *total.entry(r.clone()).or_default() += a;
                }
                if !ledger.reclaimable_from(queue, reclaimer, &total) {
                    continue;
                }
                reclaimed.insert(queue, total);
            }
            for (&b, &n) in &unit.budgets {
                if let Some(left) = budgets_left.get_mut(b) {
                    *left -= n;
                }
            }
            chosen.push(id);
        }
        chosen
    }

    /// Records the unit as taken (or, with `taken` false, put back) and
    /// updates the tallies.
    pub fn mark_taken(&mut self, id: usize, taken: bool) {
        if self.taken[id] == taken {
            return;
        }
        self.taken[id] = taken;
        let unit = &self.units[id];
        for (&b, &n) in &unit.budgets {
            if let Some(left) = self.budgets_left.get_mut(b) {
                *left = if taken { *left - n } else { *left + n };
            }
        }
        if unit.reason == EvictionReason::Reclaim {
            if let Some(queue) = unit.queue {
                let tally = self.reclaimed.entry(queue).or_default();
                for (r, a) in &unit.amounts {
                    let e = tally.entry(r.clone()).or_default();
                    *e = if taken { *e + a } else { *e - a };
                }
            }
        }
    }

    pub fn taken_ids(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.units.len()).filter(|&u| self.taken[u])
    }

    pub fn taken(&self) -> impl Iterator<Item = &Unit> + '_ {
        self.taken_ids().map(|u| &self.units[u])
    }

    pub fn cost_of(&self, ids: &[usize]) -> Cost {
        ids.iter().fold(
            Cost {
                max_priority: i64::MIN,
                ..Cost::default()
            },
            |c, &u| c.add(self.units[u].cost),
        )
    }

    /// A necessary condition, cheap to check before trying: the node's free
    /// room plus what `units` hold on it covers the pod's CPU, memory and GPU.
    pub fn could_fit_without(
        &self,
        snapshot: &ClusterSnapshot,
        node: NodeId,
        units: &[usize],
        pod: &PodDemand,
        pool: &[RunningPod],
    ) -> bool {
        let state = snapshot.node(node);
        let (mut cpu, mut memory) = (state.cpu_milli_free(), state.memory_mib_free());
        let (mut gpu, mut whole) = (u64::from(state.gpu_milli_free()), state.fully_free_gpus());
        for &u in units {
            for p in self.pods_on(u, node, pool) {
                let d = &pool[p].demand;
                cpu += d.cpu_milli;
                memory += d.memory_mib;
                gpu += d.gpu.total_milli();
                if let GpuDemand::Whole { count } = d.gpu {
                    whole += count;
                }
            }
        }
        let gpu_ok = match pod.gpu {
            GpuDemand::None => true,
            GpuDemand::Share { milli } => gpu >= u64::from(milli),
            // Shares freed may complete a whole GPU, so only the milli total is
            // a safe bound; whole GPUs freed are counted to say yes early.
            GpuDemand::Whole { count } => whole >= count || gpu >= u64::from(count) * 1000,
        };
        cpu >= pod.cpu_milli && memory >= pod.memory_mib && gpu_ok
    }
}
