//! One scheduling cycle: filter, score, choose, select GPUs.

use std::collections::BTreeMap;

use super::inter_pod::{InterPodFilter, InterPodScorer};
use super::node::NodeId;
use super::pod::PodDemand;
use super::policy::PlacementPolicy;
use super::preferences::{self, NodePreferenceScores};
use super::snapshot::{self, ClusterSnapshot, FitFailure, Placement, UnfitReason};
use super::volumes::VolumeFilter;

/// What a cycle decided. It does not change the snapshot: the caller commits a
/// placement with [`ClusterSnapshot::place`] (or discards it, e.g. when a gang fails).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CycleOutcome {
    Placed(Placement),
    /// No node fits; nodes counted per first failing reason, as kube-scheduler's
    /// "0/N nodes are available: …" message reports them.
    Unschedulable {
        nodes: usize,
        reasons: BTreeMap<UnfitReason, usize>,
    },
}

/// Where [`UnfitReason::Reserved`] is counted.
const RESERVED_SLOT: usize = UnfitReason::ALL.len() - 1;

/// Reusable scratch space so that cycles allocate nothing after warm-up.
#[derive(Debug, Default)]
pub struct CycleScratch {
    feasible: Vec<NodeId>,
    /// Blended scores, for pods with preferences.
    scores: Vec<i64>,
    /// Raw NodeAffinity and TaintToleration scores.
    node_preferences: NodePreferenceScores,
    /// Nodes short of each of the pod's scalar requests (by request index).
    short_of: Vec<usize>,
}

/// Runs one cycle for `pod` against the snapshot.
pub fn schedule_one(
    snapshot: &ClusterSnapshot,
    policy: &mut dyn PlacementPolicy,
    pod: &PodDemand,
    scratch: &mut CycleScratch,
) -> CycleOutcome {
    schedule_one_among(snapshot, policy, pod, scratch, |_| true)
}

/// Runs one cycle considering only the nodes `allowed` accepts (a gang's topology
/// domain, say); the others are neither scored nor counted in the reasons.
pub fn schedule_one_among(
    snapshot: &ClusterSnapshot,
    policy: &mut dyn PlacementPolicy,
    pod: &PodDemand,
    scratch: &mut CycleScratch,
    allowed: impl Fn(NodeId) -> bool,
) -> CycleOutcome {
    schedule_cycle(snapshot, policy, pod, scratch, None, allowed)
}

/// Runs one cycle considering only `nodes` (ascending, as a walk of the whole
/// cluster meets them), walking just those: a gang tried in one rack costs the
/// rack's nodes per member, not the cluster's.
pub(crate) fn schedule_one_in(
    snapshot: &ClusterSnapshot,
    policy: &mut dyn PlacementPolicy,
    pod: &PodDemand,
    scratch: &mut CycleScratch,
    nodes: &[NodeId],
) -> CycleOutcome {
    schedule_cycle(snapshot, policy, pod, scratch, Some(nodes), |_| true)
}

/// One cycle over `nodes` (every node when `None`) that `allowed` accepts.
fn schedule_cycle(
    snapshot: &ClusterSnapshot,
    policy: &mut dyn PlacementPolicy,
    pod: &PodDemand,
    scratch: &mut CycleScratch,
    nodes: Option<&[NodeId]>,
    allowed: impl Fn(NodeId) -> bool,
) -> CycleOutcome {
    // One pass: feasible nodes are kept, the others counted by their first failing
    // check, so an unschedulable pod needs no second walk to say why.
    scratch.feasible.clear();
    // Required pod affinity and spread rules, resolved once for this cycle;
    // `None` (nothing allocated) for a pod they do not concern.
    let inter_pod = InterPodFilter::prepare(snapshot, pod);
    // Claims, likewise (`Ok(None)` for a pod without any). A pod-level refusal
    // (a missing claim, say) is every node's reason, as in kube-scheduler.
    let volumes = VolumeFilter::prepare(snapshot.volumes(), pod);
    let mut unfit = [0usize; UnfitReason::ALL.len()];
    scratch.short_of.clear();
    scratch.short_of.resize(pod.scalar.len(), 0);
    // A pod with no node rule, port, scalar, claim or inter-pod rule (every
    // trace pod) takes a loop with only the checks that can fail for it.
    let considered =
        if inter_pod.is_none() && matches!(volumes, Ok(None)) && snapshot::is_plain_for_filter(pod)
        {
            filter_nodes(snapshot, pod, nodes, &allowed, scratch, &mut unfit, |id| {
                snapshot.plain_fit_failure(id, pod)
            })
        } else {
            // The volume and inter-pod filters only answer with fixed reasons.
            let fixed = |reason: UnfitReason| FitFailure::Fixed(reason.fixed_index().unwrap_or(0));
            filter_nodes(
                snapshot,
                pod,
                nodes,
                &allowed,
                scratch,
                &mut unfit,
                |id| match &volumes {
                    Err(refusal) => Err(fixed(refusal.reason())),
                    Ok(volumes) => snapshot
                        .fit_failure(id, pod)
                        .and_then(|()| match volumes {
                            Some(filter) => filter.check(snapshot.node(id)).map_err(fixed),
                            None => Ok(()),
                        })
                        .and_then(|()| match &inter_pod {
                            Some(filter) => filter.check(snapshot.node(id)).map_err(fixed),
                            None => Ok(()),
                        }),
                },
            )
        };
    if scratch.feasible.is_empty() {
        let mut reasons = UnfitReason::ALL
            .into_iter()
            .zip(unfit)
            .filter(|(_, n)| *n > 0)
            .collect::<BTreeMap<_, _>>();
        for (k, &n) in scratch.short_of.iter().enumerate() {
            if n > 0 {
                *reasons
                    .entry(FitFailure::Resource(k).reason(pod))
                    .or_insert(0) += n;
            }
        }
        return CycleOutcome::Unschedulable {
            nodes: considered,
            reasons,
        };
    }
    policy.begin_cycle(snapshot, pod);
    let node = if scratch.feasible.len() > 1 {
        let inter_pod = InterPodScorer::prepare(snapshot, pod, &scratch.feasible);
        let node_preferences = scratch
            .node_preferences
            .compute(snapshot, pod, &scratch.feasible);
        if inter_pod.is_some() || node_preferences {
            preferences::choose_node(
                snapshot,
                policy,
                pod,
                &scratch.feasible,
                inter_pod.as_ref(),
                &scratch.node_preferences,
                &mut scratch.scores,
            )
        } else {
            policy.choose_node(snapshot, pod, &scratch.feasible)
        }
    } else {
        policy.choose_node(snapshot, pod, &scratch.feasible)
    };
    let gpus = policy.select_gpus(snapshot, node, pod);
    CycleOutcome::Placed(Placement { node, gpus })
}

/// One pass over `nodes` (every node when `None`) that `allowed` accepts:
/// feasible ones kept in the scratch, the others counted by their first failing
/// check. A node held for someone else ([`crate::NodeReservation`]) is counted
/// as reserved before any other check: only cycles honour reservations,
/// placement accounting does not. Returns how many were considered. Generic over `check` so each
/// caller's loop is compiled for it.
#[inline(always)]
fn filter_nodes(
    snapshot: &ClusterSnapshot,
    pod: &PodDemand,
    nodes: Option<&[NodeId]>,
    allowed: &impl Fn(NodeId) -> bool,
    scratch: &mut CycleScratch,
    unfit: &mut [usize; UnfitReason::ALL.len()],
    check: impl Fn(NodeId) -> Result<(), FitFailure>,
) -> usize {
    let mut considered = 0;
    let mut visit = |id: NodeId| {
        let node = snapshot.node(id);
        if node.removed || !allowed(id) {
            return;
        }
        considered += 1;
        if node.reservation.is_some_and(|r| r.excludes(node, pod)) {
            unfit[RESERVED_SLOT] += 1;
            return;
        }
        match check(id) {
            Ok(()) => scratch.feasible.push(id),
            Err(FitFailure::Fixed(slot)) => unfit[slot] += 1,
            Err(FitFailure::Resource(k)) => scratch.short_of[k] += 1,
        }
    };
    match nodes {
        None => (0..snapshot.len()).for_each(|i| visit(NodeId(i as u32))),
        Some(nodes) => nodes.iter().for_each(|&id| visit(id)),
    }
    considered
}

/// Formats an unschedulable outcome the way kube-scheduler words it.
pub fn unschedulable_message(nodes: usize, reasons: &BTreeMap<UnfitReason, usize>) -> String {
    let mut parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    format!("0/{nodes} nodes are available: {}.", parts.join(", "))
}
