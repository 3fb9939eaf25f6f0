//! Gangs: every member placed on one snapshot, or none (DESIGN.md "Gangs").
//!
//! A gang is placed as a transaction: members are placed tentatively, largest
//! first, each preferring nodes the gang already uses (fewer nodes, less network).
//! With a topology (label keys, tightest first: NVLink clique, rack, zone) the
//! gang is tried one domain at a time, tightest level first and, inside a level,
//! the domain with the least free capacity that still holds it first
//! ([`topology`]); a required level confines it to one of its domains, and
//! without one the whole cluster is tried last. If fewer than `min_member` fit,
//! every tentative placement is released and the snapshot is as before.

mod topology;

use thiserror::Error;

use super::cycle::{
    schedule_one, schedule_one_in, unschedulable_message, CycleOutcome, CycleScratch,
};
use super::node::NodeId;
use super::pod::PodDemand;
use super::policy::PlacementPolicy;
use super::snapshot::{ClusterSnapshot, Placement};
use super::EngineError;
pub use topology::TopologyLevel;
use topology::{candidates, Need};

/// What a gang asks for.
#[derive(Debug, Clone, Copy, Default)]
pub struct GangSpec<'a> {
    pub name: &'a str,
    pub members: &'a [PodDemand],
    /// Members that must be placed together (scheduler-plugins `minMember`).
    pub min_member: usize,
    /// Node label keys whose values are topology domains, tightest first
    /// (e.g. NVLink clique, rack, zone). Empty: the gang may land anywhere.
    pub topology: &'a [TopologyLevel<'a>],
    /// Which domain of a level is tried first.
    pub domain_order: DomainOrder,
}

/// The order in which the domains of one topology level are tried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DomainOrder {
    /// Least free capacity that can still hold the gang first (GPU, then CPU,
    /// then memory; ties by label value): packs gangs and keeps big domains whole.
    #[default]
    TightestFit,
    /// Most free GPU first (ties by label value): spreads gangs over domains.
    /// Kept to measure what tightest fit gains (`phalanx-sim openb --gangs`).
    Emptiest,
}

/// A topology domain: the label key of a level and one of its values.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GangDomain {
    pub key: String,
    pub value: String,
}

/// A gang that fitted: placements (committed to the snapshot) by member index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GangPlan {
    pub placements: Vec<(usize, Placement)>,
    /// Members beyond `min_member` that did not fit (they stay pending).
    pub unplaced: Vec<usize>,
    /// The tightest topology domain the whole gang landed in; `None` when it
    /// spans the domains of every level.
    pub domain: Option<GangDomain>,
}

impl GangPlan {
    pub fn nodes_used(&self) -> usize {
        let mut nodes: Vec<NodeId> = self.placements.iter().map(|(_, p)| p.node).collect();
        nodes.sort();
        nodes.dedup();
        nodes.len()
    }
}

/// Why a gang was not placed; the snapshot is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "gang {gang}: only {placeable} of the {needed} required members fit{}; {first_failure}",
    within(.required_key)
)]
pub struct GangUnschedulable {
    pub gang: String,
    pub needed: usize,
    /// Most members that fitted in any attempt.
    pub placeable: usize,
    /// The required topology level whose domains were each too small, if any.
    pub required_key: Option<String>,
    /// kube-scheduler style message for the first member that did not fit.
    pub first_failure: String,
}

fn within(required_key: &Option<String>) -> String {
    required_key
        .as_ref()
        .map(|key| format!(" in any one domain of the required topology level {key}"))
        .unwrap_or_default()
}

/// A gang that can never be placed as written.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GangError {
    #[error("gang {gang}: minMember {min_member} is more than its {members} member pods")]
    MinMemberExceedsMembers {
        gang: String,
        min_member: usize,
        members: usize,
    },
    #[error("gang {gang}: minMember must be at least 1")]
    ZeroMinMember { gang: String },
    #[error("gang {gang}: topology level {index} has an empty label key")]
    EmptyTopologyKey { gang: String, index: usize },
    #[error("gang {gang}: topology key {key} is listed twice")]
    DuplicateTopologyKey { gang: String, key: String },
    #[error("gang {gang}: {source}")]
    Engine { gang: String, source: EngineError },
}

/// Places the gang on the snapshot or changes nothing.
pub fn place_gang(
    snapshot: &mut ClusterSnapshot,
    policy: &mut dyn PlacementPolicy,
    gang: &GangSpec<'_>,
    scratch: &mut CycleScratch,
) -> Result<Result<GangPlan, GangUnschedulable>, GangError> {
    if gang.min_member == 0 {
        return Err(GangError::ZeroMinMember {
            gang: gang.name.into(),
        });
    }
    if gang.min_member > gang.members.len() {
        return Err(GangError::MinMemberExceedsMembers {
            gang: gang.name.into(),
            min_member: gang.min_member,
            members: gang.members.len(),
        });
    }
    check_topology(gang)?;
    // Largest demands first: they are the hardest to fit once others are placed.
    let mut order: Vec<usize> = (0..gang.members.len()).collect();
    order.sort_by_key(|&i| {
        let m = &gang.members[i];
        std::cmp::Reverse((m.gpu.total_milli(), m.cpu_milli, m.memory_mib))
    });

    let candidates = candidates(snapshot, gang, &Need::of(gang));
    let mut best_failure: Option<GangUnschedulable> = None;
    for candidate in candidates.list {
        match attempt(
            snapshot,
            policy,
            gang,
            &order,
            scratch,
            candidate.nodes.as_deref(),
        )? {
            Ok((placements, unplaced)) => {
                return Ok(Ok(GangPlan {
                    placements,
                    unplaced,
                    domain: candidate.domain,
                }))
            }
            Err(failure) => {
                if best_failure
                    .as_ref()
                    .is_none_or(|b| failure.placeable > b.placeable)
                {
                    best_failure = Some(failure);
                }
            }
        }
    }
    let required_key = candidates.required_key;
    Ok(Err(match best_failure {
        Some(failure) => GangUnschedulable {
            required_key,
            ..failure
        },
        None => GangUnschedulable {
            gang: gang.name.into(),
            needed: gang.min_member,
            placeable: 0,
            first_failure: match (&required_key, candidates.required_too_small) {
                (Some(key), 0) => format!("no node has the label {key}"),
                (Some(key), small) => format!(
                    "each of the {small} {key} domains has too little free GPU, CPU or \
                     memory for {} members",
                    gang.min_member
                ),
                (None, _) => "no nodes".into(),
            },
            required_key,
        },
    }))
}

/// Refuses a topology no placement could honour as written.
fn check_topology(gang: &GangSpec<'_>) -> Result<(), GangError> {
    for (index, level) in gang.topology.iter().enumerate() {
        if level.key.is_empty() {
            return Err(GangError::EmptyTopologyKey {
                gang: gang.name.into(),
                index,
            });
        }
        if gang.topology[..index].iter().any(|l| l.key == level.key) {
            return Err(GangError::DuplicateTopologyKey {
                gang: gang.name.into(),
                key: level.key.into(),
            });
        }
    }
    Ok(())
}

type Attempt = Result<(Vec<(usize, Placement)>, Vec<usize>), GangUnschedulable>;

fn attempt(
    snapshot: &mut ClusterSnapshot,
    policy: &mut dyn PlacementPolicy,
    gang: &GangSpec<'_>,
    order: &[usize],
    scratch: &mut CycleScratch,
    nodes: Option<&[NodeId]>,
) -> Result<Attempt, GangError> {
    let mut placed: Vec<(usize, Placement)> = Vec::new();
    let mut unplaced = Vec::new();
    let mut first_failure = None;
    for (position, &member) in order.iter().enumerate() {
        let pod = &gang.members[member];
        let mut used: Vec<NodeId> = placed.iter().map(|(_, p)| p.node).collect();
        used.sort();
        used.dedup();
        // The gang's nodes lie in the candidate's, so only they are walked first.
        let on_used = schedule_one_in(snapshot, policy, pod, scratch, &used);
        let outcome = match (on_used, nodes) {
            (placed @ CycleOutcome::Placed(_), _) => placed,
            (CycleOutcome::Unschedulable { .. }, Some(nodes)) => {
                schedule_one_in(snapshot, policy, pod, scratch, nodes)
            }
            (CycleOutcome::Unschedulable { .. }, None) => {
                schedule_one(snapshot, policy, pod, scratch)
            }
        };
        match outcome {
            CycleOutcome::Placed(placement) => {
                if let Err(source) = snapshot.place(pod, &placement) {
                    rollback(snapshot, gang, &placed)?;
                    return Err(GangError::Engine {
                        gang: gang.name.into(),
                        source,
                    });
                }
                placed.push((member, placement));
            }
            CycleOutcome::Unschedulable { nodes, reasons } => {
                first_failure.get_or_insert_with(|| {
                    format!("{}: {}", pod.name, unschedulable_message(nodes, &reasons))
                });
                unplaced.push(member);
                let remaining = order.len() - position - 1;
                if placed.len() + remaining < gang.min_member {
                    break;
                }
            }
        }
    }
    if placed.len() >= gang.min_member {
        // The loop only stops early on failure, so every member is placed or in `unplaced`.
        return Ok(Ok((placed, unplaced)));
    }
    let placeable = placed.len();
    rollback(snapshot, gang, &placed)?;
    Ok(Err(GangUnschedulable {
        gang: gang.name.into(),
        needed: gang.min_member,
        placeable,
        required_key: None,
        first_failure: first_failure.unwrap_or_default(),
    }))
}

fn rollback(
    snapshot: &mut ClusterSnapshot,
    gang: &GangSpec<'_>,
    placed: &[(usize, Placement)],
) -> Result<(), GangError> {
    for (member, placement) in placed.iter().rev() {
        snapshot
            .release(&gang.members[*member], placement)
            .map_err(|source| GangError::Engine {
                gang: gang.name.into(),
                source,
            })?;
    }
    Ok(())
}
