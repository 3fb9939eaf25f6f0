//! Why pods and gangs wait, in the few words an operator alerts on
//! (`phalanx_scheduler_pending_pods_by_reason{reason}`, `pending_gangs{reason}`), and
//! the counts of them the scheduler exports every cycle.
//!
//! Pure: the loop records each pod's and gang's last reason as it fails, and
//! [`PendingCounts::count`] adds them up.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use phalanx_engine::UnfitReason;

/// Why a pod or gang is not placed, as exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WaitReason {
    /// Some node lacks the GPUs (whole or a share) the pod asks for: more
    /// free GPUs would place it.
    InsufficientGpu,
    /// Every node was ruled out by what the pod requires of a node (cordon,
    /// taint, node or pod affinity, spread, GPU model, volumes, host ports).
    Constraint,
    /// Its queue's limit (queues enabled) refused it.
    Quota,
    /// It still has `spec.schedulingGates`.
    Gated,
    /// It waits for its gang's members, or for a placement of its whole gang.
    Gang,
    /// Anything else: not yet attempted, CPU or memory short, nodes held for
    /// a preemptor, an invalid spec, no nodes at all.
    Other,
}

impl WaitReason {
    pub const ALL: [WaitReason; 6] = [
        WaitReason::InsufficientGpu,
        WaitReason::Constraint,
        WaitReason::Quota,
        WaitReason::Gated,
        WaitReason::Gang,
        WaitReason::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WaitReason::InsufficientGpu => "insufficient_gpu",
            WaitReason::Constraint => "constraint",
            WaitReason::Quota => "quota",
            WaitReason::Gated => "gated",
            WaitReason::Gang => "gang",
            WaitReason::Other => "other",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The reason of a cycle that found no node: the engine's per-reason node
    /// counts (`nodes` considered) and whether a volume refused the pod before
    /// any node was looked at. A GPU shortage on any node wins (GPUs freed
    /// there would place the pod); then any other shortage (CPU, memory, pod
    /// slots, extended resources, nodes held for another pod) is `other`;
    /// only nodes all ruled out by the pod's own requirements is `constraint`.
    pub fn of_unfit(
        nodes: usize,
        reasons: &BTreeMap<UnfitReason, usize>,
        volume_refused: bool,
    ) -> Self {
        if volume_refused && nodes > 0 {
            return WaitReason::Constraint;
        }
        if nodes == 0 || reasons.is_empty() {
            return WaitReason::Other;
        }
        let mut shortage = false;
        for reason in reasons.keys() {
            match reason {
                UnfitReason::InsufficientWholeGpus | UnfitReason::InsufficientGpuShare => {
                    return WaitReason::InsufficientGpu;
                }
                UnfitReason::InsufficientCpu
                | UnfitReason::InsufficientMemory
                | UnfitReason::TooManyPods
                | UnfitReason::InsufficientResource(_)
                | UnfitReason::Reserved => shortage = true,
                UnfitReason::Unschedulable
                | UnfitReason::UntoleratedTaint
                | UnfitReason::NodeAffinityMismatch
                | UnfitReason::HostPortConflict
                | UnfitReason::GpuModelMismatch
                | UnfitReason::TopologySpreadMissingLabel
                | UnfitReason::TopologySpreadSkew
                | UnfitReason::PodAffinity
                | UnfitReason::PodAntiAffinity
                | UnfitReason::ExistingPodsAntiAffinity
                | UnfitReason::VolumeClaimUnusable
                | UnfitReason::UnboundImmediateClaims
                | UnfitReason::ReadWriteOncePodConflict
                | UnfitReason::ExceedMaxVolumeCount
                | UnfitReason::VolumeNodeAffinityConflict
                | UnfitReason::NoAvailableVolumes
                | UnfitReason::VolumeZoneConflict => {}
            }
        }
        if shortage {
            WaitReason::Other
        } else {
            WaitReason::Constraint
        }
    }
}

/// One pod waiting for this scheduler, as the counts see it.
#[derive(Debug, Clone, Copy)]
pub struct WaitingPod {
    pub first_seen: Instant,
    pub gated: bool,
    /// The reason its last attempt recorded, if it was attempted (`gang` for
    /// a member of a gang placed as one).
    pub last: Option<WaitReason>,
}

impl WaitingPod {
    /// Gates first (nothing is attempted while they are there), then the
    /// last attempt.
    pub fn reason(&self) -> WaitReason {
        if self.gated {
            WaitReason::Gated
        } else {
            self.last.unwrap_or(WaitReason::Other)
        }
    }
}

/// One gang with members still waiting.
#[derive(Debug, Clone, Copy)]
pub struct WaitingGang {
    /// A member still has scheduling gates.
    pub gated: bool,
    /// The reason its last attempt recorded, if it was attempted.
    pub last: Option<WaitReason>,
}

impl WaitingGang {
    pub fn reason(&self) -> WaitReason {
        if self.gated {
            WaitReason::Gated
        } else {
            self.last.unwrap_or(WaitReason::Other)
        }
    }
}

/// Pending pods and gangs by reason, and the oldest pending pod's age.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PendingCounts {
    pods: [u64; WaitReason::ALL.len()],
    gangs: [u64; WaitReason::ALL.len()],
    pub oldest: Duration,
}

impl PendingCounts {
    pub fn count(
        pods: impl IntoIterator<Item = WaitingPod>,
        gangs: impl IntoIterator<Item = WaitingGang>,
        now: Instant,
    ) -> Self {
        let mut counts = PendingCounts::default();
        for pod in pods {
            counts.pods[pod.reason().index()] += 1;
            counts.oldest = counts
                .oldest
                .max(now.saturating_duration_since(pod.first_seen));
        }
        for gang in gangs {
            counts.gangs[gang.reason().index()] += 1;
        }
        counts
    }

    pub fn pods(&self, reason: WaitReason) -> u64 {
        self.pods[reason.index()]
    }

    pub fn gangs(&self, reason: WaitReason) -> u64 {
        self.gangs[reason.index()]
    }
}

#[cfg(test)]
mod tests {
    use phalanx_engine::ResourceName;

    use super::*;

    fn unfit(reasons: &[(UnfitReason, usize)]) -> WaitReason {
        let map: BTreeMap<UnfitReason, usize> = reasons.iter().cloned().collect();
        WaitReason::of_unfit(map.values().sum(), &map, false)
    }

    #[test]
    fn a_gpu_shortage_on_any_node_is_insufficient_gpu() {
        assert_eq!(
            unfit(&[
                (UnfitReason::UntoleratedTaint, 7),
                (UnfitReason::InsufficientGpuShare, 1)
            ]),
            WaitReason::InsufficientGpu
        );
        assert_eq!(
            unfit(&[
                (UnfitReason::InsufficientCpu, 3),
                (UnfitReason::InsufficientWholeGpus, 2)
            ]),
            WaitReason::InsufficientGpu
        );
    }

    #[test]
    fn nodes_all_ruled_out_by_requirements_is_constraint() {
        assert_eq!(
            unfit(&[
                (UnfitReason::UntoleratedTaint, 2),
                (UnfitReason::NodeAffinityMismatch, 3),
                (UnfitReason::GpuModelMismatch, 1),
                (UnfitReason::VolumeZoneConflict, 1),
                (UnfitReason::HostPortConflict, 1),
            ]),
            WaitReason::Constraint
        );
        let none = BTreeMap::new();
        assert_eq!(
            WaitReason::of_unfit(4, &none, true),
            WaitReason::Constraint,
            "a volume refusal before any node"
        );
    }

    #[test]
    fn other_shortages_and_no_nodes_are_other() {
        assert_eq!(
            unfit(&[
                (UnfitReason::UntoleratedTaint, 2),
                (UnfitReason::InsufficientMemory, 1)
            ]),
            WaitReason::Other
        );
        assert_eq!(unfit(&[(UnfitReason::Reserved, 3)]), WaitReason::Other);
        assert_eq!(
            unfit(&[(
                UnfitReason::InsufficientResource(ResourceName::from("example.com/fpga")),
                1
            )]),
            WaitReason::Other
        );
        assert_eq!(
            WaitReason::of_unfit(0, &BTreeMap::new(), false),
            WaitReason::Other
        );
    }

    #[test]
    fn gates_come_before_the_last_attempt() {
        let now = Instant::now();
        let pod = |gated, last| WaitingPod {
            first_seen: now,
            gated,
            last,
        };
        assert_eq!(
            pod(true, Some(WaitReason::Gang)).reason(),
            WaitReason::Gated
        );
        assert_eq!(
            pod(false, Some(WaitReason::Gang)).reason(),
            WaitReason::Gang
        );
        assert_eq!(
            pod(false, Some(WaitReason::Quota)).reason(),
            WaitReason::Quota
        );
        assert_eq!(pod(false, None).reason(), WaitReason::Other);
    }

    #[test]
    fn counts_by_reason_and_the_oldest_age() {
        let now = Instant::now();
        let ago = |s| now - Duration::from_secs(s);
        let pods = [
            WaitingPod {
                first_seen: ago(5),
                gated: false,
                last: Some(WaitReason::InsufficientGpu),
            },
            WaitingPod {
                first_seen: ago(90),
                gated: false,
                last: Some(WaitReason::InsufficientGpu),
            },
            WaitingPod {
                first_seen: ago(30),
                gated: true,
                last: None,
            },
        ];
        let gangs = [
            WaitingGang {
                gated: false,
                last: Some(WaitReason::Gang),
            },
            WaitingGang {
                gated: true,
                last: Some(WaitReason::Quota),
            },
        ];

        let counts = PendingCounts::count(pods, gangs, now);

        assert_eq!(counts.pods(WaitReason::InsufficientGpu), 2);
        assert_eq!(counts.pods(WaitReason::Gated), 1);
        assert_eq!(counts.pods(WaitReason::Constraint), 0);
        assert_eq!(counts.gangs(WaitReason::Gang), 1);
        assert_eq!(counts.gangs(WaitReason::Gated), 1);
        assert_eq!(counts.gangs(WaitReason::Quota), 0);
        assert_eq!(counts.oldest, Duration::from_secs(90));
        assert_eq!(
            PendingCounts::count([], [], now).oldest,
            Duration::ZERO,
            "no pod pending"
        );
    }
}
