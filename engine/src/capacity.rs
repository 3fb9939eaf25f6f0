//! How many copies of one pod the cluster can take as it stands: the
//! autoscaler's check before it adds replicas that would have nowhere to run.

use super::cycle::{schedule_one, unschedulable_message, CycleOutcome, CycleScratch};
use super::pod::PodDemand;
use super::policy::PlacementPolicy;
use super::snapshot::{ClusterSnapshot, Placement};
use super::EngineError;

/// The answer of [`replicas_that_fit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaFit {
    /// Copies placed (at most the limit asked for).
    pub fitted: u32,
    /// Pods ahead in the queue that were placed before the copies (those that
    /// did not fit are left out: they would stay pending).
    pub ahead_placed: u32,
    /// Why the next copy did not fit, in kube-scheduler's words; `None` when the
    /// limit was reached.
    pub first_failure: Option<String>,
}

/// Places copies of `pod` one after another as the scheduler would (each copy
/// sees the ones before it, so two replicas never count the same free GPU),
/// up to `limit`, then releases them all: on return the snapshot holds exactly
/// what it held before, also on error.
///
/// `ahead` are pending pods the scheduler will take first (higher priority, or
/// the same and older), in that order: they are placed before the copies, so
/// that no copy counts a GPU one of them is about to get.
pub fn replicas_that_fit(
    snapshot: &mut ClusterSnapshot,
    policy: &mut dyn PlacementPolicy,
    ahead: &[PodDemand],
    pod: &PodDemand,
    limit: u32,
    scratch: &mut CycleScratch,
) -> Result<ReplicaFit, EngineError> {
    let mut placed: Vec<(&PodDemand, Placement)> = Vec::new();
    let outcome = place_in_order(snapshot, policy, ahead, pod, limit, scratch, &mut placed);
    for (demand, placement) in placed.iter().rev() {
        snapshot.release(demand, placement)?;
    }
    outcome
}

/// The placing half of [`replicas_that_fit`]; everything it placed is in
/// `placed` for the caller to release, whatever it returns.
fn place_in_order<'a>(
    snapshot: &mut ClusterSnapshot,
    policy: &mut dyn PlacementPolicy,
    ahead: &'a [PodDemand],
    pod: &'a PodDemand,
    limit: u32,
    scratch: &mut CycleScratch,
    placed: &mut Vec<(&'a PodDemand, Placement)>,
) -> Result<ReplicaFit, EngineError> {
    let mut ahead_placed = 0;
    for other in ahead {
        if let CycleOutcome::Placed(placement) = schedule_one(snapshot, policy, other, scratch) {
            snapshot.place(other, &placement)?;
            placed.push((other, placement));
            ahead_placed += 1;
        }
    }
    let mut fitted = 0;
    let mut first_failure = None;
    while fitted < limit {
        match schedule_one(snapshot, policy, pod, scratch) {
            CycleOutcome::Placed(placement) => {
                snapshot.place(pod, &placement)?;
                placed.push((pod, placement));
                fitted += 1;
            }
            CycleOutcome::Unschedulable { nodes, reasons } => {
                first_failure = Some(unschedulable_message(nodes, &reasons));
                break;
            }
        }
    }
    Ok(ReplicaFit {
        fitted,
        ahead_placed,
        first_failure,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{build_policy, PolicyConfig, PolicyName, WorkloadSource};
    use crate::test_support::gpu_node;
    use crate::{GpuDemand, ModelConstraint};

    fn cluster(nodes: usize, gpus: usize) -> ClusterSnapshot {
        let mut snapshot = ClusterSnapshot::new();
        for i in 0..nodes {
            snapshot
                .add_node(gpu_node(&format!("n{i}"), 32_000, gpus, "A100"))
                .expect("valid node");
        }
        snapshot
    }

    fn policy() -> Box<dyn PlacementPolicy> {
        build_policy(
            PolicyName::Phalanx,
            &PolicyConfig {
                seed: 0,
                workload: WorkloadSource::Online,
            },
        )
    }

    fn replica(gpu: GpuDemand) -> PodDemand {
        PodDemand::new("serving/llm", 1000, 1024, gpu, ModelConstraint::Any).expect("valid pod")
    }

    fn fit(snapshot: &mut ClusterSnapshot, pod: &PodDemand, limit: u32) -> ReplicaFit {
        let mut scratch = CycleScratch::default();
        replicas_that_fit(snapshot, policy().as_mut(), &[], pod, limit, &mut scratch).expect("fits")
    }

    #[test]
    fn counts_whole_gpu_replicas_up_to_what_is_free_and_changes_nothing() {
        let mut snapshot = cluster(2, 2);
        let pod = replica(GpuDemand::Whole { count: 1 });
        let answer = fit(&mut snapshot, &pod, 10);
        assert_eq!(answer.fitted, 4);
        let reason = answer.first_failure.expect("the fifth did not fit");
        assert_eq!(
            reason,
            "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
        );
        assert_eq!(snapshot.gpu_milli_allocated(), 0, "every copy released");
        assert_eq!(fit(&mut snapshot, &pod, 10).fitted, 4, "and again");
    }

    #[test]
    fn stops_at_the_limit_without_a_failure() {
        let mut snapshot = cluster(2, 2);
        let answer = fit(&mut snapshot, &replica(GpuDemand::Whole { count: 1 }), 3);
        assert_eq!(
            answer,
            ReplicaFit {
                fitted: 3,
                ahead_placed: 0,
                first_failure: None
            }
        );
        assert_eq!(fit(&mut snapshot, &replica(GpuDemand::None), 0).fitted, 0);
    }

    #[test]
    fn counts_what_is_already_allocated() {
        let mut snapshot = cluster(2, 2);
        let pod = replica(GpuDemand::Whole { count: 1 });
        let mut scratch = CycleScratch::default();
        let mut policy = policy();
        let CycleOutcome::Placed(placement) =
            schedule_one(&snapshot, policy.as_mut(), &pod, &mut scratch)
        else {
            panic!("an empty cluster takes one pod");
        };
        snapshot.place(&pod, &placement).expect("place");
        assert_eq!(fit(&mut snapshot, &pod, 10).fitted, 3);
        assert_eq!(snapshot.gpu_milli_allocated(), 1000, "only the real pod");
    }

    #[test]
    fn multi_gpu_replicas_need_the_gpus_on_one_node() {
        // 2 nodes × 2 free GPUs: no node can take a 3-GPU replica.
        let mut snapshot = cluster(2, 2);
        let answer = fit(&mut snapshot, &replica(GpuDemand::Whole { count: 3 }), 5);
        assert_eq!(answer.fitted, 0);
        assert!(answer.first_failure.is_some());
        let answer = fit(&mut snapshot, &replica(GpuDemand::Whole { count: 2 }), 5);
        assert_eq!(answer.fitted, 2);
    }

    #[test]
    fn pods_ahead_in_the_queue_take_their_gpus_first() {
        // 2 nodes × 2 GPUs; pending ahead: a 2-GPU job, a 1-GPU pod, and a
        // 3-GPU job that fits nowhere (it stays pending and takes nothing).
        let mut snapshot = cluster(2, 2);
        let ahead = [
            replica(GpuDemand::Whole { count: 2 }),
            replica(GpuDemand::Whole { count: 3 }),
            replica(GpuDemand::Whole { count: 1 }),
        ];
        let pod = replica(GpuDemand::Whole { count: 1 });
        let mut scratch = CycleScratch::default();
        let answer = replicas_that_fit(
            &mut snapshot,
            policy().as_mut(),
            &ahead,
            &pod,
            10,
            &mut scratch,
        )
        .expect("fits");
        assert_eq!((answer.ahead_placed, answer.fitted), (2, 1));
        assert!(answer.first_failure.is_some());
        assert_eq!(snapshot.gpu_milli_allocated(), 0, "everything released");
    }

    #[test]
    fn gpu_shares_pack_onto_gpus() {
        let mut snapshot = cluster(1, 2);
        let answer = fit(
            &mut snapshot,
            &replica(GpuDemand::Share { milli: 400 }),
            100,
        );
        assert_eq!(answer.fitted, 4, "two 400-milli shares per GPU");
    }
}
