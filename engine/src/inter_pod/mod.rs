//! Pod affinity, anti-affinity and topology spread (kube-scheduler's
//! InterPodAffinity and PodTopologySpread plugins) in the engine.
//!
//! * [`terms`]: what a pod says (its namespace and labels, its terms), built once
//!   per pod and carried by its [`crate::PodDemand`] as an `Arc`.
//! * `index`: per-domain counts of placed pods for every term a placed pod
//!   carries, updated by the snapshot on place and release.
//! * `filter`: the required rules, per node, after the resource filters.
//! * `score`: the preferred rules, blended with the GPU policy's score by
//!   [`choose_node`].
//!
//! A pod without an [`InterPodSpec`] (every trace pod) takes none of these paths:
//! its cycle is the plain filter and the policy's own choice, allocation-free.

mod domain_hash;
mod filter;
mod index;
mod score;
mod terms;

pub(crate) use filter::InterPodFilter;
pub(crate) use index::{same_pod, NamespaceLabels, TermIndex};
pub(crate) use score::InterPodScorer;
pub use terms::{
    InterPodSpec, NamespaceScope, NodeInclusionPolicy, PodAffinityRules, PodAffinityTerm,
    TopologySpreadConstraint, WeightedPodAffinityTerm, WhenUnsatisfiable,
};

use crate::node::NodeId;
use crate::pod::PodDemand;
use crate::policy::PlacementPolicy;
use crate::snapshot::ClusterSnapshot;

/// Weight of the GPU policy's score (min-max normalised to 0..=100 over the
/// feasible nodes) when preferred inter-pod rules apply: kube-scheduler's weight
/// for NodeResourcesFit, the plugin the GPU policy stands in for.
pub const POLICY_SCORE_WEIGHT: i64 = 1;

/// Weight of InterPodAffinity's and of PodTopologySpread's score (each 0..=100):
/// kube-scheduler's default weight for both plugins. A preference therefore
/// outweighs the GPU policy's choice, as it does in kube-scheduler, and the GPU
/// policy decides among nodes the preferences rate alike.
pub const INTER_POD_SCORE_WEIGHT: i64 = 2;

/// Chooses among `feasible` for a pod with preferred rules: policy score and
/// inter-pod scores blended with the weights above; ties to the lowest rank.
/// `scores` is scratch space reused across cycles.
pub(crate) fn choose_node(
    snapshot: &ClusterSnapshot,
    policy: &mut dyn PlacementPolicy,
    pod: &PodDemand,
    feasible: &[NodeId],
    scorer: &InterPodScorer<'_>,
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
            (i128::from(score::MAX_NODE_SCORE) * (i128::from(*s) - i128::from(min))
                / (i128::from(max) - i128::from(min))) as i64
                * POLICY_SCORE_WEIGHT
        } else {
            0
        };
    }
    scorer.add_scores(snapshot, feasible, INTER_POD_SCORE_WEIGHT, scores);
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
