//! The order in which pods that wait together are tried.
//!
//! A real cluster rarely has one pod pending: a scheduler that sees several
//! at once may try them in an order that packs better than arrival, as bin
//! packing's "largest first" does. The simulator's batch methodology
//! (`phalanx-sim openb --batch N`) measures whether that wins on the openb
//! traces; the README has the figures (it does not, beyond seed noise, so the
//! scheduler's queue keeps kube-scheduler's priority-then-arrival order).

use std::cmp::Reverse;

use crate::pod::{GpuDemand, PodDemand};

/// How a batch of pending pods is ordered before each is placed in turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum BatchOrder {
    /// As they arrived (higher priority first): the one-at-a-time order.
    #[default]
    Arrival,
    /// Higher priority first; then pods of whole GPUs (more GPUs first), then
    /// shares of one GPU (larger first), then pods without GPUs; arrival order
    /// within each. Whole GPUs go before shares so that shares fill the gaps
    /// other shares left instead of opening GPUs a whole-GPU pod of the same
    /// batch needed; large shares before small so that a small one can fill
    /// the sliver a large one leaves (an 810-milli share's 190).
    LargestFirst,
}

impl BatchOrder {
    pub const ALL: [BatchOrder; 2] = [BatchOrder::Arrival, BatchOrder::LargestFirst];

    pub fn as_str(self) -> &'static str {
        match self {
            BatchOrder::Arrival => "arrival",
            BatchOrder::LargestFirst => "largest-first",
        }
    }
}

/// Indices into `pods` in the order `order` tries them. Stable: pods that
/// compare equal keep their places.
pub fn batch_order(pods: &[&PodDemand], order: BatchOrder) -> Vec<usize> {
    let mut indices: Vec<usize> = (0..pods.len()).collect();
    match order {
        BatchOrder::Arrival => indices.sort_by_key(|&i| Reverse(pods[i].priority)),
        BatchOrder::LargestFirst => indices.sort_by_key(|&i| {
            let pod = pods[i];
            // (class, size within the class): whole GPUs 0, shares 1, none 2.
            let (class, size) = match pod.gpu {
                GpuDemand::Whole { count } => (0u8, u64::from(count)),
                GpuDemand::Share { milli } => (1, u64::from(milli)),
                GpuDemand::None => (2, 0),
            };
            (Reverse(pod.priority), class, Reverse(size))
        }),
    }
    indices
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]

    use super::*;
    use crate::ModelConstraint;

    fn pod(name: &str, gpu: GpuDemand, priority: i32) -> PodDemand {
        let mut pod =
            PodDemand::new(name, 1_000, 1_024, gpu, ModelConstraint::Any).expect("a valid pod");
        pod.priority = priority;
        pod
    }

    fn names(pods: &[PodDemand], order: BatchOrder) -> Vec<String> {
        let refs: Vec<&PodDemand> = pods.iter().collect();
        batch_order(&refs, order)
            .into_iter()
            .map(|i| pods[i].name.clone())
            .collect()
    }

    #[test]
    fn largest_first_puts_whole_gpus_then_larger_shares_then_cpu_only() {
        let pods = [
            pod("small", GpuDemand::Share { milli: 160 }, 0),
            pod("cpu", GpuDemand::None, 0),
            pod("one", GpuDemand::Whole { count: 1 }, 0),
            pod("big", GpuDemand::Share { milli: 810 }, 0),
            pod("eight", GpuDemand::Whole { count: 8 }, 0),
            pod("big-later", GpuDemand::Share { milli: 810 }, 0),
        ];
        assert_eq!(
            names(&pods, BatchOrder::LargestFirst),
            ["eight", "one", "big", "big-later", "small", "cpu"]
        );
        assert_eq!(
            names(&pods, BatchOrder::Arrival),
            ["small", "cpu", "one", "big", "eight", "big-later"]
        );
    }

    #[test]
    fn priority_goes_first_in_either_order() {
        let pods = [
            pod("whole", GpuDemand::Whole { count: 4 }, 0),
            pod("urgent-share", GpuDemand::Share { milli: 100 }, 10),
            pod("urgent-cpu", GpuDemand::None, 10),
        ];
        assert_eq!(
            names(&pods, BatchOrder::LargestFirst),
            ["urgent-share", "urgent-cpu", "whole"]
        );
        assert_eq!(
            names(&pods, BatchOrder::Arrival),
            ["urgent-share", "urgent-cpu", "whole"]
        );
    }
}
