//! Gangs: every member placed on one snapshot, or none (DESIGN.md "Gangs").
//!
//! A gang is placed as a transaction: members are placed tentatively, largest
//! first, each preferring nodes the gang already uses (fewer nodes, less network);
//! with a topology key, one domain (rack, NVLink clique) is tried at a time, the
//! emptiest first, before the gang may span domains. If fewer than `min_member`
//! fit, every tentative placement is released and the snapshot is as before.

use std::collections::BTreeMap;

use thiserror::Error;

use super::cycle::{schedule_one_among, unschedulable_message, CycleOutcome, CycleScratch};
use super::node::NodeId;
use super::pod::PodDemand;
use super::policy::PlacementPolicy;
use super::snapshot::{ClusterSnapshot, Placement};
use super::EngineError;

/// What a gang asks for.
#[derive(Debug, Clone, Copy)]
pub struct GangSpec<'a> {
    pub name: &'a str,
    pub members: &'a [PodDemand],
    /// Members that must be placed together (scheduler-plugins `minMember`).
    pub min_member: usize,
    /// Node label whose values are topology domains (e.g. a rack label).
    pub topology_key: Option<&'a str>,
}

/// A gang that fitted: placements (committed to the snapshot) by member index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GangPlan {
    pub placements: Vec<(usize, Placement)>,
    /// Members beyond `min_member` that did not fit (they stay pending).
    pub unplaced: Vec<usize>,
    /// The topology domain the whole gang landed in, if it fitted in one.
    pub domain: Option<String>,
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
#[error("gang {gang}: only {placeable} of the {needed} required members fit; {first_failure}")]
pub struct GangUnschedulable {
    pub gang: String,
    pub needed: usize,
    /// Most members that fitted in any attempt.
    pub placeable: usize,
    /// kube-scheduler style message for the first member that did not fit.
    pub first_failure: String,
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
    // Largest demands first: they are the hardest to fit once others are placed.
    let mut order: Vec<usize> = (0..gang.members.len()).collect();
    order.sort_by_key(|&i| {
        let m = &gang.members[i];
        std::cmp::Reverse((m.gpu.total_milli(), m.cpu_milli, m.memory_mib))
    });

    let mut best_failure: Option<GangUnschedulable> = None;
    for (domain, nodes) in domains(snapshot, gang.topology_key) {
        let allowed = |id: NodeId| {
            nodes
                .as_ref()
                .is_none_or(|set| set.binary_search(&id).is_ok())
        };
        match attempt(snapshot, policy, gang, &order, scratch, &allowed)? {
            Ok((placements, unplaced)) => {
                return Ok(Ok(GangPlan {
                    placements,
                    unplaced,
                    domain,
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
    Ok(Err(best_failure.unwrap_or_else(|| GangUnschedulable {
        gang: gang.name.into(),
        needed: gang.min_member,
        placeable: 0,
        first_failure: "no nodes".into(),
    })))
}

/// The node sets to try, in order: each domain of the topology key (emptiest
/// first), then the whole cluster (`None`).
fn domains(
    snapshot: &ClusterSnapshot,
    key: Option<&str>,
) -> Vec<(Option<String>, Option<Vec<NodeId>>)> {
    let mut out = Vec::new();
    if let Some(key) = key {
        let mut by_value: BTreeMap<&str, (u64, Vec<NodeId>)> = BTreeMap::new();
        for (i, node) in snapshot.nodes().iter().enumerate() {
            if node.removed {
                continue;
            }
            if let Some(value) = node.labels.get(key) {
                let entry = by_value.entry(value).or_default();
                entry.0 += u64::from(node.gpu_milli_free());
                entry.1.push(NodeId(i as u32));
            }
        }
        let mut ranked: Vec<_> = by_value.into_iter().collect();
        ranked.sort_by(|(a, (fa, _)), (b, (fb, _))| fb.cmp(fa).then_with(|| a.cmp(b)));
        out.extend(
            ranked
                .into_iter()
                .map(|(value, (_, nodes))| (Some(value.to_owned()), Some(nodes))),
        );
    }
    out.push((None, None));
    out
}

type Attempt = Result<(Vec<(usize, Placement)>, Vec<usize>), GangUnschedulable>;

fn attempt(
    snapshot: &mut ClusterSnapshot,
    policy: &mut dyn PlacementPolicy,
    gang: &GangSpec<'_>,
    order: &[usize],
    scratch: &mut CycleScratch,
    allowed: &dyn Fn(NodeId) -> bool,
) -> Result<Attempt, GangError> {
    let mut placed: Vec<(usize, Placement)> = Vec::new();
    let mut unplaced = Vec::new();
    let mut first_failure = None;
    for (position, &member) in order.iter().enumerate() {
        let pod = &gang.members[member];
        let mut used: Vec<NodeId> = placed.iter().map(|(_, p)| p.node).collect();
        used.sort();
        used.dedup();
        let on_used = schedule_one_among(snapshot, policy, pod, scratch, |id| {
            allowed(id) && used.binary_search(&id).is_ok()
        });
        let outcome = match on_used {
            placed @ CycleOutcome::Placed(_) => placed,
            CycleOutcome::Unschedulable { .. } => {
                schedule_one_among(snapshot, policy, pod, scratch, allowed)
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
