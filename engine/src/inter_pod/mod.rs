//! Pod affinity, anti-affinity and topology spread (kube-scheduler's
//! InterPodAffinity and PodTopologySpread plugins) in the engine.
//!
//! * [`terms`]: what a pod says (its namespace and labels, its terms), built once
//!   per pod and carried by its [`crate::PodDemand`] as an `Arc`.
//! * `index`: per-domain counts of placed pods for every term a placed pod
//!   carries, updated by the snapshot on place and release.
//! * `filter`: the required rules, per node, after the resource filters.
//! * `score`: the preferred rules, blended with the GPU policy's score by
//!   `crate::preferences::choose_node`.
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
