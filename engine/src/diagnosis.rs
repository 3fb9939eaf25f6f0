//! Why a pod fits nowhere, node by node.
//!
//! A cycle stops at each node's first failing check, which is all the
//! "0/N nodes are available" message needs. An operator asking why a pod
//! waits wants more: which node comes closest, and everything it lacks
//! ("2 more whole GPUs" and "a toleration for taint gpu=reserved"). This walk
//! runs every check on every node and keeps all failures. It costs a cycle's
//! filter plus the checks a cycle skips, so the scheduler runs it only when it
//! reports a failure (at most once per pod per event interval), never on the
//! scheduling path.

use std::collections::BTreeMap;
use std::fmt;

use super::constraints::{tolerates_all, Taint};
use super::host_ports::ports_free;
use super::inter_pod::InterPodFilter;
use super::node::{NodeId, NodeState};
use super::pod::{GpuDemand, PodDemand};
use super::scalar_resources;
use super::snapshot::{tolerates_unschedulable, ClusterSnapshot, UnfitReason};
use super::volumes::VolumeFilter;

/// What one node lacks for the pod, with the amounts where there are any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lack {
    /// Held for a preempting pod or a waiting gang.
    Held,
    /// Cordoned, and the pod does not tolerate it.
    Cordoned,
    /// A NoSchedule or NoExecute taint the pod does not tolerate.
    Taint(Taint),
    /// Its labels fail the pod's nodeSelector or required node affinity.
    NodeAffinity,
    /// A host port the pod wants is taken.
    HostPorts,
    Cpu {
        free_milli: u64,
        requested_milli: u64,
    },
    Memory {
        free_mib: u64,
        requested_mib: u64,
    },
    PodSlots {
        max: u32,
    },
    /// Ephemeral storage, huge pages or an extended resource.
    Resource {
        name: String,
        free: u64,
        requested: u64,
    },
    /// The node has no GPUs at all (`share`: the pod asks for a share).
    NoGpus {
        share: bool,
    },
    /// Its GPU model is not one the pod accepts.
    GpuModel {
        model: String,
    },
    WholeGpus {
        free: u32,
        requested: u32,
    },
    GpuShare {
        largest_free_milli: u32,
        requested_milli: u32,
    },
    /// A rule between pods or a volume rule, in kube-scheduler's words.
    Rule(UnfitReason),
}

impl Lack {
    /// The reason a cycle counts a node under when this is its first failure.
    pub fn reason(&self) -> UnfitReason {
        match self {
            Lack::Held => UnfitReason::Reserved,
            Lack::Cordoned => UnfitReason::Unschedulable,
            Lack::Taint(_) => UnfitReason::UntoleratedTaint,
            Lack::NodeAffinity => UnfitReason::NodeAffinityMismatch,
            Lack::HostPorts => UnfitReason::HostPortConflict,
            Lack::Cpu { .. } => UnfitReason::InsufficientCpu,
            Lack::Memory { .. } => UnfitReason::InsufficientMemory,
            Lack::PodSlots { .. } => UnfitReason::TooManyPods,
            Lack::Resource { name, .. } => UnfitReason::InsufficientResource(name.as_str().into()),
            Lack::NoGpus { share: true } | Lack::GpuShare { .. } => {
                UnfitReason::InsufficientGpuShare
            }
            Lack::NoGpus { share: false } | Lack::WholeGpus { .. } => {
                UnfitReason::InsufficientWholeGpus
            }
            Lack::GpuModel { .. } => UnfitReason::GpuModelMismatch,
            Lack::Rule(reason) => reason.clone(),
        }
    }

    /// How much of the request is missing, in thousandths (a fixed rule
    /// counts as all of it): what ranks two nodes that each lack one thing.
    fn shortfall_permille(&self) -> u64 {
        fn part(missing: u64, requested: u64) -> u64 {
            (missing.saturating_mul(1000) / requested.max(1)).min(1000)
        }
        match *self {
            Lack::Cpu {
                free_milli,
                requested_milli,
            } => part(requested_milli.saturating_sub(free_milli), requested_milli),
            Lack::Memory {
                free_mib,
                requested_mib,
            } => part(requested_mib.saturating_sub(free_mib), requested_mib),
            Lack::Resource {
                free, requested, ..
            } => part(requested.saturating_sub(free), requested),
            Lack::WholeGpus { free, requested } => part(
                u64::from(requested.saturating_sub(free)),
                u64::from(requested),
            ),
            Lack::GpuShare {
                largest_free_milli,
                requested_milli,
            } => part(
                u64::from(requested_milli.saturating_sub(largest_free_milli)),
                u64::from(requested_milli),
            ),
            _ => 1000,
        }
    }

    /// Freed by pods finishing, not by changing the pod or the node's setup.
    fn is_capacity(&self) -> bool {
        matches!(
            self,
            Lack::Cpu { .. }
                | Lack::Memory { .. }
                | Lack::PodSlots { .. }
                | Lack::Resource { .. }
                | Lack::WholeGpus { .. }
                | Lack::GpuShare { .. }
                | Lack::Held
        )
    }
}

impl fmt::Display for Lack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lack::Held => f.write_str("it is held for a preempting pod or a waiting gang"),
            Lack::Cordoned => f.write_str("it is cordoned (spec.unschedulable)"),
            Lack::Taint(taint) => {
                let value = if taint.value.is_empty() {
                    String::new()
                } else {
                    format!("={}", taint.value)
                };
                write!(
                    f,
                    "a toleration for taint {}{value}:{:?}",
                    taint.key, taint.effect
                )
            }
            Lack::NodeAffinity => {
                f.write_str("labels matching the pod's nodeSelector or required node affinity")
            }
            Lack::HostPorts => f.write_str("a free host port the pod asks for"),
            Lack::Cpu {
                free_milli,
                requested_milli,
            } => write!(
                f,
                "{}m more CPU: {free_milli}m free, {requested_milli}m requested",
                requested_milli.saturating_sub(*free_milli)
            ),
            Lack::Memory {
                free_mib,
                requested_mib,
            } => write!(
                f,
                "{}Mi more memory: {free_mib}Mi free, {requested_mib}Mi requested",
                requested_mib.saturating_sub(*free_mib)
            ),
            Lack::PodSlots { max } => write!(f, "a free pod slot: it runs its maximum of {max}"),
            Lack::Resource {
                name,
                free,
                requested,
            } => write!(
                f,
                "{} more {name}: {free} free, {requested} requested",
                requested.saturating_sub(*free)
            ),
            Lack::NoGpus { .. } => f.write_str("GPUs: it has none"),
            Lack::GpuModel { model } => {
                write!(f, "a GPU model the pod accepts: it has {model}")
            }
            Lack::WholeGpus { free, requested } => write!(
                f,
                "{} more whole GPU(s): {free} free, {requested} requested",
                requested.saturating_sub(*free)
            ),
            Lack::GpuShare {
                largest_free_milli,
                requested_milli,
            } => write!(
                f,
                "a GPU with {requested_milli} milli free: the freest has {largest_free_milli}"
            ),
            Lack::Rule(reason) => write!(f, "to pass a rule: {reason}"),
        }
    }
}

/// The node that comes closest to fitting the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NearMiss {
    pub node: NodeId,
    /// Every check it fails, in filter order; never empty.
    pub lacks: Vec<Lack>,
}

/// Every node checked against the pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnosis {
    /// Nodes checked (present ones).
    pub nodes: usize,
    /// Nodes the pod fits on now.
    pub feasible: usize,
    /// Nodes per first failing check, as a cycle counts them.
    pub reasons: BTreeMap<UnfitReason, usize>,
    /// When it fits nowhere: the node failing the fewest checks (ties: more
    /// of them capacity rather than setup, then the smaller shortfall, then
    /// the node's rank).
    pub nearest: Option<NearMiss>,
}

/// Checks `pod` against every present node, keeping all failures.
pub fn diagnose(snapshot: &ClusterSnapshot, pod: &PodDemand) -> Diagnosis {
    let inter_pod = InterPodFilter::prepare(snapshot, pod);
    let volumes = VolumeFilter::prepare(snapshot.volumes(), pod);
    let mut diagnosis = Diagnosis::default();
    let mut nearest: Option<((usize, usize, u64, u32), NearMiss)> = None;
    for index in 0..snapshot.len() {
        let id = NodeId(index as u32);
        let node = snapshot.node(id);
        if node.removed {
            continue;
        }
        diagnosis.nodes += 1;
        let mut lacks = node_lacks(snapshot, node, pod);
        match &volumes {
            Err(refusal) => lacks.push(Lack::Rule(refusal.reason())),
            Ok(Some(filter)) => lacks.extend(filter.check(node).err().map(Lack::Rule)),
            Ok(None) => {}
        }
        if let Some(filter) = &inter_pod {
            lacks.extend(filter.check(node).err().map(Lack::Rule));
        }
        let Some(first) = lacks.first() else {
            diagnosis.feasible += 1;
            continue;
        };
        *diagnosis.reasons.entry(first.reason()).or_insert(0) += 1;
        let rank = (
            lacks.len(),
            lacks.iter().filter(|l| !l.is_capacity()).count(),
            lacks.iter().map(Lack::shortfall_permille).sum::<u64>(),
            node.rank,
        );
        if nearest.as_ref().is_none_or(|(best, _)| rank < *best) {
            nearest = Some((rank, NearMiss { node: id, lacks }));
        }
    }
    if diagnosis.feasible == 0 {
        diagnosis.nearest = nearest.map(|(_, miss)| miss);
    }
    diagnosis
}

/// The node-level checks of a cycle's filter, in its order, all of them.
fn node_lacks(snapshot: &ClusterSnapshot, node: &NodeState, pod: &PodDemand) -> Vec<Lack> {
    let mut lacks = Vec::new();
    if node.reservation.is_some_and(|r| r.excludes(node, pod)) {
        lacks.push(Lack::Held);
    }
    let tolerations = &pod.rules.tolerations;
    if node.unschedulable && !tolerates_unschedulable(tolerations) {
        lacks.push(Lack::Cordoned);
    }
    lacks.extend(
        node.taints
            .iter()
            .filter(|t| !tolerates_all(std::slice::from_ref(*t), tolerations))
            .cloned()
            .map(Lack::Taint),
    );
    if !pod.rules.is_empty() && !pod.rules.selects(&node.labels) {
        lacks.push(Lack::NodeAffinity);
    }
    if !pod.host_ports.is_empty() && !ports_free(&node.extra.used_ports, &pod.host_ports) {
        lacks.push(Lack::HostPorts);
    }
    if node.cpu_milli_free() < pod.cpu_milli {
        lacks.push(Lack::Cpu {
            free_milli: node.cpu_milli_free(),
            requested_milli: pod.cpu_milli,
        });
    }
    if node.memory_mib_free() < pod.memory_mib {
        lacks.push(Lack::Memory {
            free_mib: node.memory_mib_free(),
            requested_mib: pod.memory_mib,
        });
    }
    if node.pods >= node.max_pods {
        lacks.push(Lack::PodSlots { max: node.max_pods });
    }
    for request in &pod.scalar {
        let free = scalar_resources::free(&node.extra.scalar, &request.name);
        if request.amount > free {
            lacks.push(Lack::Resource {
                name: request.name.to_string(),
                free,
                requested: request.amount,
            });
        }
    }
    if pod.gpu != GpuDemand::None {
        match node.model {
            None => lacks.push(Lack::NoGpus {
                share: matches!(pod.gpu, GpuDemand::Share { .. }),
            }),
            Some(model) if !pod.models.allows(model) => lacks.push(Lack::GpuModel {
                model: snapshot.models().name(model).to_owned(),
            }),
            Some(_) => match pod.gpu {
                GpuDemand::Whole { count } if node.fully_free_gpus < count => {
                    lacks.push(Lack::WholeGpus {
                        free: node.fully_free_gpus,
                        requested: count,
                    })
                }
                GpuDemand::Share { milli } if node.max_gpu_free < milli => {
                    lacks.push(Lack::GpuShare {
                        largest_free_milli: node.max_gpu_free,
                        requested_milli: milli,
                    })
                }
                _ => {}
            },
        }
    }
    lacks
}

#[cfg(test)]
mod tests;
