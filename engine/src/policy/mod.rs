//! Placement policies: how feasible nodes are scored and GPUs chosen inside one.
//!
//! The baselines and FGD follow `shared/specs/fgd.md` exactly (integer scores in
//! 0..=100, ties to the lowest node rank); `phalanx` is our default.

mod baselines;
mod fgd;
mod gradient;
mod phalanx;
mod random;

use std::fmt;
use std::str::FromStr;

use super::node::NodeId;
use super::pod::PodDemand;
use super::snapshot::{ClusterSnapshot, GpuAssignment};
use super::workload::TypicalPod;

pub use baselines::{BestFitPolicy, ClusteringPolicy, DotProdPolicy, PackingPolicy};
pub use fgd::FgdPolicy;
pub use gradient::WorkloadSource;
pub use phalanx::PhalanxPolicy;
pub use random::RandomPolicy;

/// A way of choosing a node and the GPUs on it. `Sync` as well as `Send`, so
/// that a controller loop that owns one is a `Send` future (`tokio::spawn`).
pub trait PlacementPolicy: Send + Sync + fmt::Debug {
    fn name(&self) -> &'static str;

    /// A pod arrived (once per pod, however many cycles it takes): policies that learn
    /// the workload online count it here.
    fn observe_arrival(&mut self, _pod: &PodDemand) {}

    /// Called once per scheduling cycle before any node is scored, so that per-pod
    /// work (resolving the pod's shape, learning the workload) is done once.
    fn begin_cycle(&mut self, _snapshot: &ClusterSnapshot, _pod: &PodDemand) {}

    /// Score of a node on which `pod` fits; higher is better.
    fn score(&mut self, snapshot: &ClusterSnapshot, node: NodeId, pod: &PodDemand) -> i64;

    /// Picks one of `feasible` (never empty). The default takes the highest score and
    /// breaks ties by the lowest node rank; a single feasible node is taken unscored.
    fn choose_node(
        &mut self,
        snapshot: &ClusterSnapshot,
        pod: &PodDemand,
        feasible: &[NodeId],
    ) -> NodeId {
        if feasible.len() == 1 {
            return feasible[0];
        }
        let mut best = feasible[0];
        let mut best_key = (i64::MIN, u32::MAX);
        for &node in feasible {
            let score = self.score(snapshot, node, pod);
            let rank = snapshot.node(node).rank;
            if score > best_key.0 || (score == best_key.0 && rank < best_key.1) {
                best = node;
                best_key = (score, rank);
            }
        }
        best
    }

    /// The GPUs `pod` takes on `node` (where it fits). The default is the FGD paper's
    /// `best` selector: a share to the tightest GPU that holds it, whole GPUs to the
    /// lowest-indexed free ones.
    fn select_gpus(
        &mut self,
        snapshot: &ClusterSnapshot,
        node: NodeId,
        pod: &PodDemand,
    ) -> GpuAssignment {
        crate::gpu_select::best_fit_gpus(snapshot.node(node), pod.gpu)
    }
}

/// The built-in policies by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyName {
    Random,
    DotProd,
    Clustering,
    Packing,
    BestFit,
    Fgd,
    Phalanx,
}

impl PolicyName {
    pub const ALL: [PolicyName; 7] = [
        PolicyName::Random,
        PolicyName::DotProd,
        PolicyName::Clustering,
        PolicyName::Packing,
        PolicyName::BestFit,
        PolicyName::Fgd,
        PolicyName::Phalanx,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PolicyName::Random => "random",
            PolicyName::DotProd => "dotprod",
            PolicyName::Clustering => "clustering",
            PolicyName::Packing => "packing",
            PolicyName::BestFit => "bestfit",
            PolicyName::Fgd => "fgd",
            PolicyName::Phalanx => "phalanx",
        }
    }

    /// The FGD paper's label for this policy in its result files (`01-Random` …).
    pub fn paper_label(self) -> Option<&'static str> {
        match self {
            PolicyName::Random => Some("01-Random"),
            PolicyName::DotProd => Some("02-DotProd"),
            PolicyName::Clustering => Some("03-GpuClustering"),
            PolicyName::Packing => Some("04-GpuPacking"),
            PolicyName::BestFit => Some("05-BestFit"),
            PolicyName::Fgd => Some("06-FGD"),
            PolicyName::Phalanx => None,
        }
    }
}

impl fmt::Display for PolicyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown policy name; the message lists the valid ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown policy {given:?}; valid policies: {}", PolicyName::ALL.map(PolicyName::as_str).join(", "))]
pub struct UnknownPolicy {
    pub given: String,
}

impl FromStr for PolicyName {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        PolicyName::ALL
            .into_iter()
            .find(|p| p.as_str() == lower)
            .ok_or_else(|| UnknownPolicy {
                given: s.to_owned(),
            })
    }
}

/// What a policy may be given when it is built.
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    /// Seed for policies that draw random numbers (only `random`).
    pub seed: u64,
    /// The workload FGD-style policies measure fragmentation against.
    pub workload: WorkloadSource,
}

/// Builds a policy by name.
pub fn build_policy(name: PolicyName, config: &PolicyConfig) -> Box<dyn PlacementPolicy> {
    match name {
        PolicyName::Random => Box::new(RandomPolicy::new(config.seed)),
        PolicyName::DotProd => Box::new(DotProdPolicy),
        PolicyName::Clustering => Box::new(ClusteringPolicy),
        PolicyName::Packing => Box::new(PackingPolicy),
        PolicyName::BestFit => Box::new(BestFitPolicy),
        PolicyName::Fgd => Box::new(FgdPolicy::new(config.workload.clone())),
        PolicyName::Phalanx => Box::new(PhalanxPolicy::new(config.workload.clone())),
    }
}

/// Shorthand used by tests: a fixed workload.
pub fn fixed_workload(typical: Vec<TypicalPod>) -> WorkloadSource {
    WorkloadSource::Fixed(typical)
}

pub use PolicyConfig as Config;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_policy_lists_the_valid_ones() {
        let err = "tetris".parse::<PolicyName>().unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("\"tetris\""), "{msg}");
        for p in PolicyName::ALL {
            assert!(msg.contains(p.as_str()), "{msg}");
        }
        assert_eq!("FGD".parse::<PolicyName>(), Ok(PolicyName::Fgd));
    }
}
