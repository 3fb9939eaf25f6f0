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

/// What `build_valid` kept, by name, and each left-out queue's error text.
fn kept_and_refused(specs: Vec<QueueSpec>) -> (Vec<String>, Vec<String>) {
    let (tree, errors) = QueueTree::build_valid(specs);
    let mut kept: Vec<String> = tree.ids().map(|id| tree.spec(id).name.clone()).collect();
    kept.sort();
    (kept, errors.iter().map(ToString::to_string).collect())
}

#[test]
fn build_valid_leaves_out_a_bad_queue_and_its_subtree_only() {
    let (kept, refused) = kept_and_refused(vec![
        queue("root", None, quota(0, None)),
        queue("good", Some("root"), quota(2, None)),
        queue("bad", Some("root"), quota(8, Some(4))),
        queue("under-bad", Some("bad"), quota(0, None)),
        queue("deeper", Some("under-bad"), quota(0, None)),
        queue("orphan", Some("nowhere"), quota(0, None)),
        queue("a", Some("b"), quota(0, None)),
        queue("b", Some("a"), quota(0, None)),
        queue("off-cycle", Some("a"), quota(0, None)),
    ]);
    assert_eq!(kept, ["good", "root"]);
    assert_eq!(
        refused,
        [
            "queue bad: gpu limit 4 is below its guarantee 8",
            "queue under-bad: its ancestor bad is not valid",
            "queue deeper: its ancestor bad is not valid",
            "queue orphan: parent nowhere does not exist",
            "queue a: its parents form a cycle (a -> b -> a)",
            "queue b: its parents form a cycle (b -> a -> b)",
            "queue off-cycle: its ancestor a is not valid",
        ]
    );
}

#[test]
fn build_valid_leaves_out_the_parent_that_cannot_back_its_children() {
    let (kept, refused) = kept_and_refused(vec![
        queue("root", None, quota(0, None)),
        queue("org", Some("root"), quota(4, None)),
        queue("team-a", Some("org"), quota(3, None)),
        queue("team-b", Some("org"), quota(3, None)),
        queue("other", Some("root"), quota(1, None)),
    ]);
    assert_eq!(kept, ["other", "root"]);
    assert_eq!(
        refused,
        [
            "queue org: its children are guaranteed 6 gpu, more than its own guarantee 4",
            "queue team-a: its ancestor org is not valid",
            "queue team-b: its ancestor org is not valid",
        ]
    );
}

#[test]
fn build_valid_counts_only_valid_children_against_their_parent() {
    // team-b is left out for its own limit, so org backs team-a alone.
    let (kept, refused) = kept_and_refused(vec![
        queue("root", None, quota(0, None)),
        queue("org", Some("root"), quota(4, None)),
        queue("team-a", Some("org"), quota(3, None)),
        queue("team-b", Some("org"), quota(3, Some(1))),
    ]);
    assert_eq!(kept, ["org", "root", "team-a"]);
    assert_eq!(
        refused,
        ["queue team-b: gpu limit 1 is below its guarantee 3"]
    );
}

#[test]
fn build_valid_keeps_the_first_of_a_duplicated_name() {
    let (tree, errors) = QueueTree::build_valid(vec![
        queue("a", None, quota(1, None)),
        queue("a", None, quota(2, None)),
    ]);
    assert_eq!(tree.len(), 1);
    let a = tree.id("a").unwrap();
    assert_eq!(tree.quota(a, &QueueResource::GpuMilli).guaranteed, 1);
    assert_eq!(errors, [QueueTreeError::Duplicate { name: "a".into() }]);
}

/// Arbitrary specs, bad ones included: names from a small pool (so some
/// repeat), parents from the pool, an unknown name or none (so cycles and
/// orphans occur), and limits that may be below guarantees.
fn arbitrary_specs() -> impl Strategy<Value = Vec<QueueSpec>> {
    let name = (0usize..6).prop_map(|i| format!("q{i}"));
    let parent = prop::option::of(prop_oneof![
        4 => (0usize..6).prop_map(|i| format!("q{i}")),
        1 => Just("nowhere".to_owned()),
    ]);
    let terms = (0u64..20, prop::option::of(0u64..30), 0u32..3).prop_map(
        |(guaranteed, limit, over_quota_weight)| Quota {
            guaranteed,
            limit,
            over_quota_weight,
        },
    );
    let resource = prop_oneof![
        Just(QueueResource::GpuMilli),
        Just(QueueResource::CpuMilli),
        Just(QueueResource::ModelGpuMilli("H100".into())),
    ];
    let spec = (
        name,
        parent,
        prop::collection::btree_map(resource, terms, 0..3),
    )
        .prop_map(|(name, parent, quotas)| QueueSpec {
            name,
            parent,
            quotas,
        });
    prop::collection::vec(spec, 0..10)
}

proptest! {
    #[test]
    fn build_valid_keeps_a_valid_tree_and_accounts_for_every_queue(specs in arbitrary_specs()) {
        let (tree, errors) = QueueTree::build_valid(specs.clone());
        let kept: Vec<QueueSpec> = tree.ids().map(|id| tree.spec(id).clone()).collect();
        // What is kept is a tree `build` accepts, specs unchanged.
        prop_assert!(QueueTree::build(kept.clone()).is_ok(), "{kept:?}");
        for spec in &kept {
            prop_assert!(specs.contains(spec));
        }
        // Every input queue is kept or has exactly one error.
        prop_assert_eq!(kept.len() + errors.len(), specs.len());
        let mut names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            let inputs = specs.iter().filter(|s| s.name == name).count();
            let kept = kept.iter().filter(|s| s.name == name).count();
            let refused = errors.iter().filter(|e| e.queue() == name).count();
            prop_assert_eq!(kept + refused, inputs, "{}: {:?}", name, errors);
        }
        // Valid input loses nothing.
        if QueueTree::build(specs.clone()).is_ok() {
            prop_assert!(errors.is_empty(), "{errors:?}");
        }
    }
}
