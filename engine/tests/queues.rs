//! Queues: the hierarchy's checks and the fair-share rule's invariants over
//! generated hierarchies (no queue above its limit or its demand, children
//! never given more than their parent, guarantees honoured when they fit, and
//! nothing left idle that a queue could take).

use std::collections::BTreeMap;

use phalanx_engine::queues::{
    fair_shares, QueueResource, QueueSpec, QueueTree, QueueTreeError, Quota, ResourceAmounts,
};
use proptest::prelude::*;

fn queue(name: &str, parent: Option<&str>, quota: Quota) -> QueueSpec {
    QueueSpec {
        name: name.into(),
        parent: parent.map(str::to_owned),
        quotas: BTreeMap::from([(QueueResource::GpuMilli, quota)]),
    }
}

fn quota(guaranteed: u64, limit: Option<u64>) -> Quota {
    Quota {
        guaranteed,
        limit,
        over_quota_weight: 1,
    }
}

#[test]
fn bad_hierarchies_are_refused_naming_the_queue() {
    let cases: Vec<(Vec<QueueSpec>, &str)> = vec![
        (
            vec![queue("a", None, quota(8, Some(4)))],
            "queue a: gpu limit 4 is below its guarantee 8",
        ),
        (
            vec![queue("a", Some("nowhere"), quota(0, None))],
            "queue a: parent nowhere does not exist",
        ),
        (
            vec![
                queue("a", Some("b"), quota(0, None)),
                queue("b", Some("a"), quota(0, None)),
            ],
            "queue a: its parents form a cycle (a -> b -> a)",
        ),
        (
            vec![
                queue("a", None, quota(0, None)),
                queue("a", None, quota(0, None)),
            ],
            "queue a is defined twice",
        ),
        (
            vec![
                queue("root", None, quota(0, None)),
                queue("org", Some("root"), quota(4, None)),
                queue("team", Some("org"), quota(8, None)),
            ],
            "queue org: its children are guaranteed 8 gpu, more than its own guarantee 4",
        ),
    ];
    for (specs, message) in cases {
        let error: QueueTreeError = QueueTree::build(specs).unwrap_err();
        assert_eq!(error.to_string(), message);
    }
}

#[test]
fn a_self_parent_is_a_cycle() {
    let error = QueueTree::build(vec![queue("a", Some("a"), quota(0, None))]).unwrap_err();
    assert!(
        matches!(error, QueueTreeError::ParentCycle { .. }),
        "{error}"
    );
}

/// A generated hierarchy: each queue's parent (an earlier queue or none), its
/// quota and its demand.
fn hierarchy() -> impl Strategy<Value = (Vec<QueueSpec>, Vec<u64>, u64)> {
    let one = (
        any::<prop::sample::Index>(),
        any::<bool>(),
        0u64..50,
        prop::option::of(0u64..100),
        0u32..4,
        0u64..120,
    );
    (prop::collection::vec(one, 1..8), 0u64..300).prop_map(|(queues, capacity)| {
        let mut specs = Vec::new();
        let mut demand = Vec::new();
        for (i, (parent, rooted, guaranteed, extra, weight, wants)) in
            queues.into_iter().enumerate()
        {
            let parent = (i > 0 && !rooted).then(|| format!("q{}", parent.index(i)));
            specs.push(QueueSpec {
                name: format!("q{i}"),
                parent,
                quotas: BTreeMap::from([(
                    QueueResource::GpuMilli,
                    Quota {
                        guaranteed,
                        limit: extra.map(|e| guaranteed + e),
                        over_quota_weight: weight,
                    },
                )]),
            });
            demand.push(wants);
        }
        (specs, demand, capacity)
    })
}

proptest! {
    #[test]
    fn fair_shares_respect_limits_demands_parents_and_guarantees(
        (specs, demand, capacity) in hierarchy()
    ) {
        let Ok(tree) = QueueTree::build(specs) else {
            // Children guaranteed more than their parent: refused, tested above.
            return Ok(());
        };
        let gpu = QueueResource::GpuMilli;
        let demands: Vec<ResourceAmounts> = tree
            .ids()
            .map(|id| {
                let i: usize = tree.spec(id).name[1..].parse().unwrap();
                ResourceAmounts::from([(gpu.clone(), demand[i])])
            })
            .collect();
        let shares = fair_shares(&tree, &ResourceAmounts::from([(gpu.clone(), capacity)]), &demands);
        let share = |id: phalanx_engine::queues::QueueId| shares[id.index()].get(&gpu).copied().unwrap_or(0);
        // What each queue could use at most: its subtree's demand within limits.
        let mut cap = vec![0u64; tree.len()];
        let ids: Vec<_> = tree.ids().collect();
        for id in ids.iter().rev() {
            let own = demands[id.index()][&gpu];
            let children: u64 = tree.children(*id).iter().map(|c| cap[c.index()]).sum();
            let mut c = own + children;
            if let Some(limit) = tree.quota(*id, &gpu).limit {
                c = c.min(limit);
            }
            cap[id.index()] = c;
        }
        let check_level = |siblings: &[phalanx_engine::queues::QueueId], given: u64| -> Result<(), TestCaseError> {
            let total: u64 = siblings.iter().map(|s| share(*s)).sum();
            prop_assert!(total <= given, "siblings got {} of {}", total, given);
            let guarantees: u64 = siblings
                .iter()
                .map(|s| tree.quota(*s, &gpu).guaranteed.min(cap[s.index()]))
                .sum();
            for s in siblings {
                let q = tree.quota(*s, &gpu);
                prop_assert!(share(*s) <= cap[s.index()], "{} above its limit or demand", tree.spec(*s).name);
                if guarantees <= given {
                    prop_assert!(
                        share(*s) >= q.guaranteed.min(cap[s.index()]),
                        "{} below its guarantee", tree.spec(*s).name
                    );
                }
                if total < given && q.over_quota_weight > 0 {
                    prop_assert_eq!(share(*s), cap[s.index()], "{} left wanting while capacity is idle", tree.spec(*s).name.clone());
                }
            }
            Ok(())
        };
        let roots: Vec<_> = tree.roots().collect();
        check_level(&roots, capacity)?;
        for id in tree.ids() {
            let children = tree.children(id);
            if !children.is_empty() {
                check_level(children, share(id))?;
            }
        }
    }
}
