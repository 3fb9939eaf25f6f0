//! Who owns what in the cluster day: pods to queues, QoS classes to
//! priorities, and each queue's terms.
//!
//! - **Queues**: four teams, `team-a` … `team-d`. Each trace pod is drawn into
//!   one of them by a seeded stream with weights 4 : 3 : 2 : 1 ([`QUEUE_WEIGHTS`]),
//!   so the teams are unequal but every team has work of every QoS class.
//! - **Priorities** from the trace's QoS class ([`priority_of`]): `LS` and
//!   `Guaranteed` high (1000), `Burstable` and classes openb does not use mid
//!   (500), `BE` low (0). Injected large gangs are mid (500).
//! - **Terms** ([`queue_terms`]), GPUs only (milli-GPU, whole and shared alike):
//!   guarantees in proportion to each team's share of the day's requested
//!   GPUs, together [`GUARANTEED_PERCENT`] % of the cluster's; `team-c` is
//!   limited to [`LIMIT_PERCENT_OF_GUARANTEE`] % of its guarantee; every queue has
//!   over-quota weight 1. CPU and memory are not queued (the cluster is GPU-bound).

use std::collections::BTreeMap;

use phalanx_engine::queues::{QueueResource, QueueSpec, QueueTree, QueueTreeError, Quota};
use rand::Rng;

use crate::trace::Qos;

/// The teams, in queue index order.
pub const QUEUE_NAMES: [&str; 4] = ["team-a", "team-b", "team-c", "team-d"];

/// Relative odds of a pod being drawn into each queue.
pub const QUEUE_WEIGHTS: [u32; 4] = [4, 3, 2, 1];

/// The guarantees together, in % of the cluster's GPUs; the rest is shared by
/// over-quota weight (Phalanx) or by borrowing (Kueue's cohort).
pub const GUARANTEED_PERCENT: u64 = 80;

/// The queue with a limit, and the limit in % of its guarantee.
pub const LIMITED_QUEUE: usize = 2;
pub const LIMIT_PERCENT_OF_GUARANTEE: u64 = 125;

/// Priorities from QoS classes.
pub const HIGH_PRIORITY: i32 = 1000;
pub const MID_PRIORITY: i32 = 500;
pub const LOW_PRIORITY: i32 = 0;

pub fn priority_of(qos: &Qos) -> i32 {
    match qos {
        Qos::LatencySensitive | Qos::Guaranteed => HIGH_PRIORITY,
        Qos::Burstable | Qos::Unknown | Qos::Other(_) => MID_PRIORITY,
        Qos::BestEffort => LOW_PRIORITY,
    }
}

/// Draws a queue for one pod.
pub fn draw_queue(rng: &mut impl Rng) -> usize {
    let total: u32 = QUEUE_WEIGHTS.iter().sum();
    let mut ticket = rng.random_range(0..total);
    for (queue, &weight) in QUEUE_WEIGHTS.iter().enumerate() {
        if ticket < weight {
            return queue;
        }
        ticket -= weight;
    }
    QUEUE_WEIGHTS.len() - 1
}

/// One queue's GPU terms, in milli-GPU.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QueueTerms {
    pub name: String,
    pub guaranteed_milli: u64,
    pub limit_milli: Option<u64>,
    pub over_quota_weight: u32,
}

/// The terms of every queue, from the milli-GPU each queue's jobs request
/// (summed over the day) and the cluster's capacity.
pub fn queue_terms(requested_milli: &[u64], capacity_milli: u64) -> Vec<QueueTerms> {
    let guaranteed_total = capacity_milli * GUARANTEED_PERCENT / 100;
    let requested_total: u64 = requested_milli.iter().sum();
    QUEUE_NAMES
        .iter()
        .enumerate()
        .map(|(q, name)| {
            let requested = requested_milli.get(q).copied().unwrap_or(0);
            let guaranteed = if requested_total == 0 {
                guaranteed_total / QUEUE_NAMES.len() as u64
            } else {
                // u128: a day of requests times a cluster's capacity can pass u64.
                (u128::from(guaranteed_total) * u128::from(requested) / u128::from(requested_total))
                    as u64
            };
            QueueTerms {
                name: (*name).to_owned(),
                guaranteed_milli: guaranteed,
                limit_milli: (q == LIMITED_QUEUE)
                    .then(|| guaranteed * LIMIT_PERCENT_OF_GUARANTEE / 100),
                over_quota_weight: 1,
            }
        })
        .collect()
}

/// The terms as the engine's queue hierarchy (four roots, GPU quotas only).
pub fn queue_tree(terms: &[QueueTerms]) -> Result<QueueTree, QueueTreeError> {
    QueueTree::build(
        terms
            .iter()
            .map(|t| QueueSpec {
                name: t.name.clone(),
                parent: None,
                quotas: BTreeMap::from([(
                    QueueResource::GpuMilli,
                    Quota {
                        guaranteed: t.guaranteed_milli,
                        limit: t.limit_milli,
                        over_quota_weight: t.over_quota_weight,
                    },
                )]),
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn guarantees_follow_requests_and_sum_to_the_guaranteed_part() {
        let terms = queue_terms(&[4_000, 3_000, 2_000, 1_000], 10_000);
        let guaranteed: Vec<u64> = terms.iter().map(|t| t.guaranteed_milli).collect();
        assert_eq!(guaranteed, [3_200, 2_400, 1_600, 800]);
        assert_eq!(terms[LIMITED_QUEUE].limit_milli, Some(2_000));
        assert!(terms
            .iter()
            .enumerate()
            .all(|(q, t)| (q == LIMITED_QUEUE) == t.limit_milli.is_some()));
        queue_tree(&terms).unwrap();
    }

    #[test]
    fn queues_are_drawn_by_weight() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut counts = [0u32; 4];
        for _ in 0..10_000 {
            counts[draw_queue(&mut rng)] += 1;
        }
        assert!(counts.windows(2).all(|w| w[0] > w[1]), "{counts:?}");
        assert!((3_700..4_300).contains(&counts[0]), "{counts:?}");
    }

    #[test]
    fn qos_orders_priorities() {
        assert!(priority_of(&Qos::LatencySensitive) > priority_of(&Qos::Burstable));
        assert!(priority_of(&Qos::Burstable) > priority_of(&Qos::BestEffort));
    }
}
