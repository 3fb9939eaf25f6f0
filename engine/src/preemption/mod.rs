//! Preemption and reclaim: which running pods must leave so that a waiting pod
//! or gang fits, disturbing as little as possible (DESIGN.md "Queues and
//! preemption").
//!
//! The unit of eviction is a lone pod or a whole gang (every running member of
//! it): a gang is never left below its minimum, because none of it stays.
//! A unit may go for the preemptor when every one of its pods
//!
//! - has run at least the minimum runtime,
//! - keeps every PodDisruptionBudget that selects it within its allowed
//!   disruptions (counted over every victim chosen so far), and
//! - is either **preempted** (the preemptor's queue, or no queues at all, and a
//!   priority strictly below the preemptor's) or **reclaimed** (another queue,
//!   while the preemptor's queue stays within its guarantee after placing it
//!   and the victim's queue keeps at least its own guarantee without the unit:
//!   only borrowed capacity is taken back, whatever its priority).
//!
//! A preemptor whose `preemptionPolicy` is `Never` preempts nothing. Pods
//! already leaving (being deleted or evicted for an earlier preemptor) are
//! counted as room that frees up, at no cost, and are never victims again:
//! a second preemptor does not evict more for room that is already coming.
//!
//! Among units that may go, the least valuable go first: lowest priority, then
//! fewest pods, then the least GPU-time lost (GPU milli × time run, which an
//! evicted pod loses because it restarts). The choice is made member by
//! member, kube-scheduler's way: for each node, every unit with a pod there
//! that may go is taken off, and if the member then fits, units are put back
//! most valuable first as long as it still fits; the node whose remaining
//! victims are least valuable wins. A gang's members are placed this way one
//! after another (largest first), each on the snapshot the earlier ones left;
//! then every victim unit is offered back, most valuable first, and stays if
//! the gang still fits without its room (checked with [`place_gang`], so the
//! gang's topology is honoured). So no victim is one the preemptor could do
//! without.
//!
//! The snapshot is left exactly as it was: the caller evicts the victims and
//! holds the planned nodes for the preemptor ([`crate::NodeReservation`]).

mod units;

use thiserror::Error;

use crate::cycle::{schedule_one, schedule_one_in, CycleOutcome, CycleScratch};
use crate::gang::{place_gang, GangError, GangSpec};
use crate::node::NodeId;
use crate::policy::PlacementPolicy;
use crate::queues::{QueueId, QueueLedger};
use crate::snapshot::{ClusterSnapshot, Placement};
use units::Units;

/// A pod that holds resources and might be evicted.
#[derive(Debug, Clone)]
pub struct RunningPod {
    pub demand: crate::PodDemand,
    pub placement: Placement,
    pub priority: i32,
    /// Its queue; `None` when queues are not in use.
    pub queue: Option<QueueId>,
    /// Running pods with the same gang number are evicted together.
    pub gang: Option<u64>,
    /// When it started running, on the caller's clock (milliseconds).
    pub started_ms: u64,
    /// The PodDisruptionBudgets that select it, as indices into
    /// [`PreemptionRules::budgets`].
    pub budgets: Vec<usize>,
    /// Already on its way out (being deleted or evicted, still holding its
    /// room): its room counts as free for the preemptor at no cost, and it is
    /// never reported as a victim.
    pub leaving: bool,
}

/// Whether a pod may preempt others (`spec.preemptionPolicy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PreemptionPolicy {
    #[default]
    PreemptLowerPriority,
    Never,
}

/// The pod or gang that waits. A lone pod is a gang of one.
#[derive(Debug, Clone, Copy)]
pub struct Preemptor<'a> {
    pub gang: GangSpec<'a>,
    pub priority: i32,
    pub queue: Option<QueueId>,
    pub policy: PreemptionPolicy,
}

/// What bounds the choice of victims.
#[derive(Debug, Clone, Copy)]
pub struct PreemptionRules<'a> {
    pub now_ms: u64,
    /// A pod that has run less than this is not evicted.
    pub min_runtime_ms: u64,
    /// Queue usage and guarantees, for reclaim; `None` when queues are off
    /// (then only priority preemption applies).
    pub ledger: Option<&'a QueueLedger>,
    /// Disruptions each PodDisruptionBudget still allows.
    pub budgets: &'a [u32],
}

/// Why a victim goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EvictionReason {
    /// A higher-priority pod of its own queue needs the room.
    Preemption,
    /// Its queue borrowed beyond its guarantee, and a queue below its own
    /// guarantee takes the room back.
    Reclaim,
}

/// One pod to evict (an index into the pool) and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Victim {
    pub pod: usize,
    pub reason: EvictionReason,
}

/// The victims, and where the preemptor's members fit once they are gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreemptionPlan {
    pub victims: Vec<Victim>,
    /// By member index, on the snapshot without the victims.
    pub placements: Vec<(usize, Placement)>,
}

impl PreemptionPlan {
    /// The distinct nodes the preemptor will use: the ones to hold for it.
    pub fn nodes(&self) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = self.placements.iter().map(|(_, p)| p.node).collect();
        nodes.sort();
        nodes.dedup();
        nodes
    }

    /// The room to hold on each node: what the members planned there take
    /// (`members` as given to [`plan_preemption`]).
    pub fn held_rooms(&self, members: &[crate::PodDemand]) -> Vec<(NodeId, crate::HeldRoom)> {
        let mut rooms: Vec<(NodeId, crate::HeldRoom)> = Vec::new();
        for (member, placement) in &self.placements {
            let Some(pod) = members.get(*member) else {
                continue;
            };
            match rooms.iter_mut().find(|(node, _)| *node == placement.node) {
                Some((_, room)) => room.add(pod),
                None => {
                    let mut room = crate::HeldRoom::default();
                    room.add(pod);
                    rooms.push((placement.node, room));
                }
            }
        }
        rooms.sort_by_key(|(node, _)| *node);
        rooms
    }
}

/// Why nothing can be preempted for the preemptor.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NoPreemption {
    #[error("its preemptionPolicy is Never")]
    PolicyNever,
    #[error("{0}")]
    Invalid(#[from] GangError),
    #[error(
        "no running pod may be evicted for it: {not_lower_priority} of equal or higher \
         priority in its queue, {not_reclaimable} in other queues that are not over their \
         guarantee (or its own queue would pass its guarantee), {too_young} younger than the \
         minimum runtime, {budget_exhausted} protected by a PodDisruptionBudget"
    )]
    NoCandidates {
        not_lower_priority: usize,
        not_reclaimable: usize,
        too_young: usize,
        budget_exhausted: usize,
    },
    #[error("evicting every pod it may preempt would still not make room for it")]
    DoesNotFit,
}

/// Chooses the victims for `preemptor` among `pool`; see the module
/// documentation. The snapshot is as before when this returns.
pub fn plan_preemption(
    snapshot: &mut ClusterSnapshot,
    policy: &mut dyn PlacementPolicy,
    preemptor: &Preemptor<'_>,
    pool: &[RunningPod],
    rules: &PreemptionRules<'_>,
    scratch: &mut CycleScratch,
) -> Result<PreemptionPlan, NoPreemption> {
    if preemptor.policy == PreemptionPolicy::Never {
        return Err(NoPreemption::PolicyNever);
    }
    let gang = &preemptor.gang;
    if gang.min_member == 0 {
        return Err(GangError::ZeroMinMember {
            gang: gang.name.into(),
        }
        .into());
    }
    if gang.min_member > gang.members.len() {
        return Err(GangError::MinMemberExceedsMembers {
            gang: gang.name.into(),
            min_member: gang.min_member,
            members: gang.members.len(),
        }
        .into());
    }
    let mut units = Units::eligible(snapshot, preemptor, pool, rules);
    if units.is_empty() {
        return Err(units.refusal());
    }
    let mut search = Search {
        snapshot,
        policy,
        pool,
        gang,
        scratch,
        placed: Vec::new(),
    };
    let outcome = search
        .choose(&mut units)
        .and_then(|()| search.reprieve(&mut units));
    search.restore(&mut units);
    let placements = outcome?;
    let victims = units
        .taken()
        .filter(|unit| !unit.leaving)
        .flat_map(|unit| {
            unit.pods.iter().map(move |&pod| Victim {
                pod,
                reason: unit.reason,
            })
        })
        .collect();
    Ok(PreemptionPlan {
        victims,
        placements,
    })
}

/// How many nodes that could take a member once victims leave are compared
/// before the cheapest of them is chosen: kube-scheduler's bound (10 % of the
/// nodes, at least 100), so a member costs a sample of a large cluster, not
/// all of it.
fn candidate_nodes_wanted(nodes: usize) -> usize {
    (nodes / 10).max(100)
}

/// The working state of one search: members placed tentatively, so that
/// [`Search::restore`] can undo them (units taken are kept in [`Units`]).
struct Search<'s, 'p> {
    snapshot: &'s mut ClusterSnapshot,
    policy: &'s mut dyn PlacementPolicy,
    pool: &'p [RunningPod],
    gang: &'p GangSpec<'p>,
    scratch: &'s mut CycleScratch,
    placed: Vec<(usize, Placement)>,
}

impl Search<'_, '_> {
    /// Places the members one by one (largest first), taking units off where
    /// a member does not fit as things stand.
    fn choose(&mut self, units: &mut Units) -> Result<(), NoPreemption> {
        let members = self.gang.members;
        let mut order: Vec<usize> = (0..members.len()).collect();
        order.sort_by_key(|&i| {
            let m = &members[i];
            std::cmp::Reverse((m.gpu.total_milli(), m.cpu_milli, m.memory_mib))
        });
        let mut failures = 0;
        for member in order {
            let pod = &members[member];
            let mut outcome = schedule_one(self.snapshot, self.policy, pod, self.scratch);
            if matches!(outcome, CycleOutcome::Unschedulable { .. }) {
                if let Some(victims) = self.cheapest_victims_for(pod, units) {
                    for unit in victims {
                        self.take(units, unit);
                    }
                    outcome = schedule_one(self.snapshot, self.policy, pod, self.scratch);
                }
            }
            match outcome {
                CycleOutcome::Placed(placement) => {
                    if self.snapshot.place(pod, &placement).is_ok() {
                        self.placed.push((member, placement));
                    } else {
                        failures += 1;
                    }
                }
                CycleOutcome::Unschedulable { .. } => failures += 1,
            }
            if members.len() - failures < self.gang.min_member {
                return Err(NoPreemption::DoesNotFit);
            }
        }
        Ok(())
    }

    /// For one member that does not fit: on each node where some unit may go,
    /// the least valuable set of units whose leaving lets it fit there; the
    /// cheapest set over a sample of such nodes wins.
    fn cheapest_victims_for(
        &mut self,
        pod: &crate::PodDemand,
        units: &Units,
    ) -> Option<Vec<usize>> {
        let wanted = candidate_nodes_wanted(self.snapshot.present_nodes());
        let mut found = 0;
        let mut best: Option<(units::Cost, Vec<usize>)> = None;
        for (&node, on_node) in units.by_node() {
            // Cheapest first, as `by_node` keeps them.
            let candidates = units.may_go_together(on_node);
            if candidates.is_empty()
                || !units.could_fit_without(self.snapshot, node, &candidates, pod, self.pool)
            {
                continue;
            }
            for &u in &candidates {
                self.release_on(units, u, node);
            }
            let mut out = vec![true; candidates.len()];
            if self.fits_on(pod, node) {
                found += 1;
                // Put back the most valuable first while it still fits.
                for (k, &u) in candidates.iter().enumerate().rev() {
                    self.place_back_on(units, u, node);
                    if self.fits_on(pod, node) {
                        out[k] = false;
                    } else {
                        self.release_on(units, u, node);
                    }
                }
                let victims: Vec<usize> = candidates
                    .iter()
                    .zip(&out)
                    .filter(|(_, out)| **out)
                    .map(|(u, _)| *u)
                    .collect();
                let cost = units.cost_of(&victims);
                if best.as_ref().is_none_or(|(c, _)| cost < *c) {
                    best = Some((cost, victims));
                }
            }
            // Back as it was.
            for (&u, out) in candidates.iter().zip(&out) {
                if *out {
                    self.place_back_on(units, u, node);
                }
            }
            if found >= wanted {
                break;
            }
        }
        best.map(|(_, victims)| victims)
    }

    /// Whether `pod` fits `node` now, by the filter cycles use.
    fn fits_on(&mut self, pod: &crate::PodDemand, node: NodeId) -> bool {
        matches!(
            schedule_one_in(self.snapshot, self.policy, pod, self.scratch, &[node]),
            CycleOutcome::Placed(_)
        )
    }

    fn release_on(&mut self, units: &Units, unit: usize, node: NodeId) {
        for pod in units.pods_on(unit, node, self.pool) {
            let running = &self.pool[pod];
            // Cannot fail: the pod is placed (the pool matches the snapshot).
            let _ = self.snapshot.release(&running.demand, &running.placement);
        }
    }

    fn place_back_on(&mut self, units: &Units, unit: usize, node: NodeId) {
        for pod in units.pods_on(unit, node, self.pool) {
            let running = &self.pool[pod];
            // Cannot fail: it is going back where it was, onto room it left.
            let _ = self.snapshot.place(&running.demand, &running.placement);
        }
    }

    /// Takes a unit off the snapshot (every node it is on) until restored.
    fn take(&mut self, units: &mut Units, unit: usize) {
        for &pod in &units.unit(unit).pods {
            let running = &self.pool[pod];
            let _ = self.snapshot.release(&running.demand, &running.placement);
        }
        units.mark_taken(unit, true);
    }

    fn put_back(&mut self, units: &mut Units, unit: usize) {
        for &pod in &units.unit(unit).pods {
            let running = &self.pool[pod];
            let _ = self.snapshot.place(&running.demand, &running.placement);
        }
        units.mark_taken(unit, false);
    }

    fn release_members(&mut self) {
        for (member, placement) in self.placed.drain(..).rev() {
            let _ = self
                .snapshot
                .release(&self.gang.members[member], &placement);
        }
    }

    /// Offers every victim unit back, most valuable first; a unit stays if the
    /// gang still fits without its room. Returns the gang's placements on the
    /// snapshot without the victims that remain.
    fn reprieve(&mut self, units: &mut Units) -> Result<Vec<(usize, Placement)>, NoPreemption> {
        self.release_members();
        let mut taken: Vec<usize> = units.taken_ids().collect();
        taken.sort_by_key(|&u| std::cmp::Reverse(units.unit(u).cost));
        for unit in taken {
            self.put_back(units, unit);
            if self.gang_fits()?.is_none() {
                self.take(units, unit);
            }
        }
        self.gang_fits()?.ok_or(NoPreemption::DoesNotFit)
    }

    /// The gang's placements if it fits as things stand (the snapshot is left
    /// unchanged).
    fn gang_fits(&mut self) -> Result<Option<Vec<(usize, Placement)>>, NoPreemption> {
        let plan = match place_gang(self.snapshot, self.policy, self.gang, self.scratch)? {
            Ok(plan) => plan,
            Err(_) => return Ok(None),
        };
        for (member, placement) in plan.placements.iter().rev() {
            let _ = self
                .snapshot
                .release(&self.gang.members[*member], placement);
        }
        Ok(Some(plan.placements))
    }

    /// Undoes everything: members released, units placed back.
    fn restore(&mut self, units: &mut Units) {
        self.release_members();
        let taken: Vec<usize> = units.taken_ids().collect();
        for unit in taken {
            for &pod in &units.unit(unit).pods {
                let running = &self.pool[pod];
                let _ = self.snapshot.place(&running.demand, &running.placement);
            }
        }
    }
}
