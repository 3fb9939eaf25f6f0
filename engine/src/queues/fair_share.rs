//! Each queue's fair share of the cluster, resource by resource, and the
//! order in which queues take turns.
//!
//! The rule (KAI-Scheduler's and Volcano's proportion plugin share its shape):
//! the cluster's capacity is divided among the root queues, and each queue's
//! share among its children, level by level. At each level a queue first gets
//! its guarantee (up to what it asks for), then what is left is shared by
//! over-quota weight among the queues that still ask for more, never beyond a
//! queue's limit or its demand (water-filling: what one queue cannot take goes
//! back to the others). When the guarantees of one level exceed what that level
//! has (the cluster shrank), they are cut in proportion to the guarantees.
//! A queue's demand is what it uses plus what waits in it, its children's
//! included; work placed directly in a queue with children gets what its
//! children leave.
//!
//! Everything is integer arithmetic, so a share never exceeds what it is cut
//! from by rounding; remainders go one unit at a time in queue order.

use std::collections::BTreeMap;

use super::tree::{QueueId, QueueResource, QueueTree};

/// An amount of each resource (absent: 0).
pub type ResourceAmounts = BTreeMap<QueueResource, u64>;

/// The fair share of every queue (indexed by [`QueueId`]), for each resource
/// named in `capacity`.
///
/// `demand[q]` is what queue `q` itself uses plus what waits in it (its
/// children's demand is added here).
pub fn fair_shares(
    tree: &QueueTree,
    capacity: &ResourceAmounts,
    demand: &[ResourceAmounts],
) -> Vec<ResourceAmounts> {
    let mut shares = vec![ResourceAmounts::new(); tree.len()];
    for (resource, &total) in capacity {
        let subtree = subtree_demand(tree, resource, demand);
        let roots: Vec<QueueId> = tree.roots().collect();
        let given = divide(tree, resource, total, &roots, &subtree);
        let mut share_of = vec![0u64; tree.len()];
        for (id, amount) in roots.iter().zip(given) {
            share_of[id.0] = amount;
        }
        // Parents come before children in `ids()`: each level splits what
        // its parent got.
        for id in tree.ids() {
            let children = tree.children(id);
            if children.is_empty() {
                continue;
            }
            let given = divide(tree, resource, share_of[id.0], children, &subtree);
            for (child, amount) in children.iter().zip(given) {
                share_of[child.0] = amount;
            }
        }
        for id in tree.ids() {
            if share_of[id.0] > 0 {
                shares[id.0].insert(resource.clone(), share_of[id.0]);
            }
        }
    }
    shares
}

/// Each queue's demand for `resource` with its descendants', capped by its
/// limit (a queue never holds more than its limit, whatever its children ask).
fn subtree_demand(
    tree: &QueueTree,
    resource: &QueueResource,
    demand: &[ResourceAmounts],
) -> Vec<u64> {
    let mut total: Vec<u64> = tree
        .ids()
        .map(|id| {
            demand
                .get(id.0)
                .and_then(|d| d.get(resource))
                .copied()
                .unwrap_or(0)
        })
        .collect();
    // Children after parents in `ids()`: walk backwards to add upwards.
    let ids: Vec<QueueId> = tree.ids().collect();
    for id in ids.iter().rev() {
        if let Some(limit) = tree.quota(*id, resource).limit {
            total[id.0] = total[id.0].min(limit);
        }
        if let Some(parent) = tree.parent(*id) {
            total[parent.0] = total[parent.0].saturating_add(total[id.0]);
        }
    }
    total
}

/// Splits `amount` among `siblings`: guarantees first, then the rest by weight.
fn divide(
    tree: &QueueTree,
    resource: &QueueResource,
    amount: u64,
    siblings: &[QueueId],
    subtree: &[u64],
) -> Vec<u64> {
    let quotas: Vec<_> = siblings
        .iter()
        .map(|id| tree.quota(*id, resource))
        .collect();
    let caps: Vec<u64> = siblings.iter().map(|id| subtree[id.0]).collect();
    let guaranteed: Vec<u64> = quotas
        .iter()
        .zip(&caps)
        .map(|(q, cap)| q.guaranteed.min(*cap))
        .collect();
    let sum_guaranteed = guaranteed.iter().fold(0u64, |a, g| a.saturating_add(*g));
    if sum_guaranteed >= amount {
        // Not even the guarantees fit: cut them in proportion (each
        // guarantee is both the cap and the weight).
        return water_fill(amount, &guaranteed, &guaranteed, &vec![0; siblings.len()]);
    }
    let weights: Vec<u64> = quotas
        .iter()
        .map(|q| u64::from(q.over_quota_weight))
        .collect();
    water_fill(amount - sum_guaranteed, &caps, &weights, &guaranteed)
}

/// Adds `amount` to `start` by weight, each entry up to its cap; what an entry
/// cannot take goes to the others. Returns the totals (start included).
fn water_fill(amount: u64, caps: &[u64], weights: &[u64], start: &[u64]) -> Vec<u64> {
    let mut got: Vec<u64> = start.to_vec();
    let mut left = amount;
    loop {
        let active: Vec<usize> = (0..got.len())
            .filter(|&i| weights[i] > 0 && got[i] < caps[i])
            .collect();
        if left == 0 || active.is_empty() {
            return got;
        }
        let total_weight: u128 = active.iter().map(|&i| u128::from(weights[i])).sum();
        let mut handed = 0u64;
        for &i in &active {
            let portion = u128::from(left) * u128::from(weights[i]) / total_weight;
            let portion = u64::try_from(portion).unwrap_or(u64::MAX);
            let take = portion.min(caps[i] - got[i]);
            got[i] += take;
            handed += take;
        }
        if handed == 0 {
            // Less left than the weights can split: one unit each, in order.
            for &i in &active {
                if left == 0 {
                    break;
                }
                got[i] += 1;
                left -= 1;
            }
            continue;
        }
        left -= handed;
    }
}

/// How far a queue is into its fair share, by its dominant resource: the
/// largest of usage / fair share over the resources it uses. The queue with
/// the lowest ratio takes the next turn. A queue using a resource it has no
/// share of is at infinity (it is borrowing what no rule gave it); one using
/// nothing is at 0.
pub fn dominant_share_ratio(usage: &ResourceAmounts, fair: &ResourceAmounts) -> f64 {
    usage
        .iter()
        .filter(|(_, used)| **used > 0)
        .map(|(resource, used)| match fair.get(resource) {
            Some(&share) if share > 0 => *used as f64 / share as f64,
            _ => f64::INFINITY,
        })
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::super::tree::{QueueSpec, Quota};
    use super::*;

    fn gpu(amount: u64) -> ResourceAmounts {
        ResourceAmounts::from([(QueueResource::GpuMilli, amount)])
    }

    fn queue(
        name: &str,
        parent: Option<&str>,
        guaranteed: u64,
        limit: Option<u64>,
        weight: u32,
    ) -> QueueSpec {
        QueueSpec {
            name: name.into(),
            parent: parent.map(str::to_owned),
            quotas: BTreeMap::from([(
                QueueResource::GpuMilli,
                Quota {
                    guaranteed,
                    limit,
                    over_quota_weight: weight,
                },
            )]),
        }
    }

    fn shares_by_name(tree: &QueueTree, shares: &[ResourceAmounts]) -> BTreeMap<String, u64> {
        tree.ids()
            .map(|id| {
                (
                    tree.spec(id).name.clone(),
                    shares[id.0]
                        .get(&QueueResource::GpuMilli)
                        .copied()
                        .unwrap_or(0),
                )
            })
            .collect()
    }

    fn demands(tree: &QueueTree, by_name: &[(&str, u64)]) -> Vec<ResourceAmounts> {
        let mut out = vec![ResourceAmounts::new(); tree.len()];
        for (name, amount) in by_name {
            out[tree.id(name).unwrap().0] = gpu(*amount);
        }
        out
    }

    #[test]
    fn guarantees_first_then_idle_capacity_by_weight() {
        let tree = QueueTree::build(vec![
            queue("a", None, 20_000, None, 1),
            queue("b", None, 20_000, None, 3),
        ])
        .unwrap();
        // 80 GPUs; both want everything: 20 each, then 40 split 1:3.
        let shares = fair_shares(
            &tree,
            &gpu(80_000),
            &demands(&tree, &[("a", 80_000), ("b", 80_000)]),
        );
        let by_name = shares_by_name(&tree, &shares);
        assert_eq!(by_name["a"], 30_000);
        assert_eq!(by_name["b"], 50_000);
    }

    #[test]
    fn what_one_queue_does_not_ask_for_goes_to_the_others() {
        let tree = QueueTree::build(vec![
            queue("a", None, 20_000, None, 1),
            queue("b", None, 20_000, None, 1),
            queue("c", None, 0, Some(10_000), 1),
        ])
        .unwrap();
        let shares = fair_shares(
            &tree,
            &gpu(80_000),
            &demands(&tree, &[("a", 5_000), ("b", 80_000), ("c", 80_000)]),
        );
        let by_name = shares_by_name(&tree, &shares);
        assert_eq!(by_name["a"], 5_000, "no more than it asks for");
        assert_eq!(by_name["c"], 10_000, "no more than its limit");
        assert_eq!(by_name["b"], 65_000, "the rest");
    }

    #[test]
    fn a_parent_share_is_split_among_its_children() {
        let tree = QueueTree::build(vec![
            queue("org", None, 40_000, None, 1),
            queue("other", None, 40_000, None, 1),
            queue("team-a", Some("org"), 30_000, None, 1),
            queue("team-b", Some("org"), 10_000, None, 1),
        ])
        .unwrap();
        let shares = fair_shares(
            &tree,
            &gpu(80_000),
            &demands(
                &tree,
                &[("team-a", 80_000), ("team-b", 80_000), ("other", 0)],
            ),
        );
        let by_name = shares_by_name(&tree, &shares);
        assert_eq!(by_name["other"], 0, "asks for nothing");
        assert_eq!(by_name["org"], 80_000, "borrows what other leaves idle");
        assert_eq!(by_name["team-a"] + by_name["team-b"], 80_000);
        assert_eq!(by_name["team-a"], 30_000 + 20_000);
    }

    #[test]
    fn guarantees_larger_than_the_cluster_are_cut_in_proportion() {
        let tree = QueueTree::build(vec![
            queue("a", None, 60_000, None, 1),
            queue("b", None, 20_000, None, 1),
        ])
        .unwrap();
        let shares = fair_shares(
            &tree,
            &gpu(40_000),
            &demands(&tree, &[("a", 60_000), ("b", 20_000)]),
        );
        let by_name = shares_by_name(&tree, &shares);
        assert_eq!((by_name["a"], by_name["b"]), (30_000, 10_000));
    }

    #[test]
    fn remainders_are_handed_out_not_lost() {
        let tree = QueueTree::build(vec![
            queue("a", None, 0, None, 1),
            queue("b", None, 0, None, 1),
            queue("c", None, 0, None, 1),
        ])
        .unwrap();
        let shares = fair_shares(
            &tree,
            &gpu(10),
            &demands(&tree, &[("a", 10), ("b", 10), ("c", 10)]),
        );
        let by_name = shares_by_name(&tree, &shares);
        assert_eq!(by_name.values().sum::<u64>(), 10);
        assert!(by_name.values().all(|s| (3..=4).contains(s)), "{by_name:?}");
    }

    #[test]
    fn the_dominant_resource_decides_the_turn() {
        let fair = ResourceAmounts::from([
            (QueueResource::GpuMilli, 8_000),
            (QueueResource::CpuMilli, 64_000),
        ]);
        let light = ResourceAmounts::from([
            (QueueResource::GpuMilli, 2_000),
            (QueueResource::CpuMilli, 48_000),
        ]);
        let heavy = ResourceAmounts::from([
            (QueueResource::GpuMilli, 6_000),
            (QueueResource::CpuMilli, 8_000),
        ]);
        assert_eq!(dominant_share_ratio(&light, &fair), 0.75, "cpu dominates");
        assert_eq!(dominant_share_ratio(&heavy, &fair), 0.75, "gpu dominates");
        assert_eq!(dominant_share_ratio(&ResourceAmounts::new(), &fair), 0.0);
        assert!(dominant_share_ratio(&gpu(1), &ResourceAmounts::new()).is_infinite());
    }
}
