//! Choosing among feasible nodes when the pod or the cluster has preferences:
//! the GPU policy's score blended with kube-scheduler's preference scores, each
//! normalised to 0..=100 the way its plugin does and weighted by the plugin's
//! default weight in kube-scheduler:
//!
//! | score | weight | normalised |
//! |---|---|---|
//! | GPU policy (stands in for NodeResourcesFit) | [`POLICY_SCORE_WEIGHT`] 1 | min-max |
//! | InterPodAffinity, PodTopologySpread | [`INTER_POD_SCORE_WEIGHT`] 2 each | see `inter_pod::score` |
//! | NodeAffinity (preferred terms) | [`NODE_AFFINITY_SCORE_WEIGHT`] 2 | sum of matching weights / max |
//! | TaintToleration (PreferNoSchedule) | [`TAINT_TOLERATION_SCORE_WEIGHT`] 3 | intolerable count, reversed |
//!
//! A preference therefore outweighs the GPU policy, as it does in kube-scheduler,
//! and the GPU policy decides among nodes the preferences rate alike. When no
//! preference tells the feasible nodes apart (every trace pod), the policy's own
//! choice stands unchanged and nothing is allocated.

use crate::constraints::{Taint, TaintEffect, Toleration};
use crate::inter_pod::InterPodScorer;
use crate::node::{NodeId, NodeState};
use crate::pod::PodDemand;
use crate::policy::PlacementPolicy;
use crate::snapshot::ClusterSnapshot;

/// kube-scheduler's `MaxNodeScore`.
const MAX_NODE_SCORE: i64 = 100;

/// Weight of the GPU policy's score: kube-scheduler's weight for
/// NodeResourcesFit, the plugin the GPU policy stands in for.
pub const POLICY_SCORE_WEIGHT: i64 = 1;

/// Weight of InterPodAffinity's and of PodTopologySpread's score (each 0..=100).
pub const INTER_POD_SCORE_WEIGHT: i64 = 2;

/// Weight of NodeAffinity's score (preferred node affinity terms).
pub const NODE_AFFINITY_SCORE_WEIGHT: i64 = 2;

/// Weight of TaintToleration's score (PreferNoSchedule taints).
pub const TAINT_TOLERATION_SCORE_WEIGHT: i64 = 3;

/// Raw NodeAffinity and TaintToleration scores of the feasible nodes, kept in the
/// cycle's scratch so that a warm cycle allocates nothing.
#[derive(Debug, Default)]
pub(crate) struct NodePreferenceScores {
    /// Sum of the weights of the pod's preferred terms each node matches; empty
    /// when they rate every feasible node alike.
    affinity: Vec<i64>,
    /// PreferNoSchedule taints each node has that the pod does not tolerate;
    /// empty when every feasible node has as many.
    taints: Vec<i64>,
}

impl NodePreferenceScores {
    /// Computes the raw scores; true when any of them tells feasible nodes apart.
    /// A pod without preferred terms in a cluster without PreferNoSchedule taints
    /// returns at once.
    pub fn compute(
        &mut self,
        snapshot: &ClusterSnapshot,
        pod: &PodDemand,
        feasible: &[NodeId],
    ) -> bool {
        self.affinity.clear();
        self.taints.clear();
        if !pod.rules.preferred_terms.is_empty() {
            self.affinity.extend(
                feasible
                    .iter()
                    .map(|&id| affinity_raw(pod, snapshot.node(id))),
            );
            if all_equal(&self.affinity) {
                self.affinity.clear();
            }
        }
        if snapshot.has_prefer_no_schedule_taints() {
            self.taints.extend(
                feasible
                    .iter()
                    .map(|&id| intolerable_soft_taints(&snapshot.node(id).taints, pod)),
            );
            if all_equal(&self.taints) {
                self.taints.clear();
            }
        }
        !self.affinity.is_empty() || !self.taints.is_empty()
    }

    /// Adds the weighted, normalised scores to `out` (one slot per feasible node).
    fn add_to(&self, out: &mut [i64]) {
        if let Some(max) = self.affinity.iter().copied().max().filter(|m| *m > 0) {
            for (slot, raw) in out.iter_mut().zip(&self.affinity) {
                *slot += NODE_AFFINITY_SCORE_WEIGHT * (MAX_NODE_SCORE * raw.max(&0) / max);
            }
        }
        if let Some(max) = self.taints.iter().copied().max().filter(|m| *m > 0) {
            for (slot, raw) in out.iter_mut().zip(&self.taints) {
                *slot +=
                    TAINT_TOLERATION_SCORE_WEIGHT * (MAX_NODE_SCORE - MAX_NODE_SCORE * raw / max);
            }
        }
    }
}

/// NodeAffinity's raw score: the weights of the preferred terms the node matches.
fn affinity_raw(pod: &PodDemand, node: &NodeState) -> i64 {
    pod.rules
        .preferred_terms
        .iter()
        .filter(|t| t.matches(&node.labels))
        .map(|t| i64::from(t.weight))
        .sum()
}

/// TaintToleration's raw score: PreferNoSchedule taints no toleration covers.
fn intolerable_soft_taints(taints: &[Taint], pod: &PodDemand) -> i64 {
    taints
        .iter()
        .filter(|t| t.effect == TaintEffect::PreferNoSchedule)
        .filter(|t| {
            !pod.rules
                .tolerations
                .iter()
                .any(|tol: &Toleration| tol.tolerates(t))
        })
        .count() as i64
}

fn all_equal(values: &[i64]) -> bool {
    values.windows(2).all(|w| w[0] == w[1])
}

/// Chooses among `feasible` (two or more) by the blended score; ties go to the
/// lowest rank. `scores` is scratch space reused across cycles.
pub(crate) fn choose_node(
    snapshot: &ClusterSnapshot,
    policy: &mut dyn PlacementPolicy,
    pod: &PodDemand,
    feasible: &[NodeId],
    inter_pod: Option<&InterPodScorer<'_>>,
    node_preferences: &NodePreferenceScores,
    scores: &mut Vec<i64>,
) -> NodeId {
    scores.clear();
    scores.extend(feasible.iter().map(|&id| policy.score(snapshot, id, pod)));
    let (min, max) = scores
        .iter()
        .fold((i64::MAX, i64::MIN), |(lo, hi), &s| (lo.min(s), hi.max(s)));
    for s in scores.iter_mut() {
        // In i128: raw policy scores may use the whole i64 range (phalanx packs
        // a lexicographic key into one).
        *s = if max > min {
            (i128::from(MAX_NODE_SCORE) * (i128::from(*s) - i128::from(min))
                / (i128::from(max) - i128::from(min))) as i64
                * POLICY_SCORE_WEIGHT
        } else {
            0
        };
    }
    if let Some(scorer) = inter_pod {
        scorer.add_scores(snapshot, feasible, INTER_POD_SCORE_WEIGHT, scores);
    }
    node_preferences.add_to(scores);
    let mut best = feasible[0];
    let mut best_key = (i64::MIN, u32::MAX);
    for (&id, &score) in feasible.iter().zip(scores.iter()) {
        let rank = snapshot.node(id).rank;
        if score > best_key.0 || (score == best_key.0 && rank < best_key.1) {
            best = id;
            best_key = (score, rank);
        }
    }
    best
}
