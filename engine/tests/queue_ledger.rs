//! The queue ledger: limits (a queue's and its ancestors'), the order of
//! turns, and node reservations that hold freed room for a preemptor.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use std::collections::BTreeMap;

use phalanx_engine::queues::{
    QueueLedger, QueueResource, QueueSpec, QueueTree, Quota, ResourceAmounts,
};
use phalanx_engine::{
    build_policy, schedule_one, ClusterSnapshot, CycleOutcome, CycleScratch, GpuDemand, GpuSpec,
    HeldRoom, ModelConstraint, NodeId, NodeReservation, NodeSpec, PodDemand, PolicyConfig,
    PolicyName, UnfitReason, WorkloadSource,
};
use proptest::prelude::*;

fn gpu(milli: u64) -> ResourceAmounts {
    ResourceAmounts::from([(QueueResource::GpuMilli, milli)])
}

fn spec(name: &str, parent: Option<&str>, guaranteed: u64, limit: Option<u64>) -> QueueSpec {
    QueueSpec {
        name: name.into(),
        parent: parent.map(str::to_owned),
        quotas: BTreeMap::from([(
            QueueResource::GpuMilli,
            Quota {
                guaranteed,
                limit,
                over_quota_weight: 1,
            },
        )]),
    }
}

#[test]
fn a_parent_limit_binds_its_children_and_says_so() {
    let tree = QueueTree::build(vec![
        spec("org", None, 0, Some(4_000)),
        spec("team-a", Some("org"), 0, None),
        spec("team-b", Some("org"), 0, Some(8_000)),
    ])
    .unwrap();
    let (a, b) = (tree.id("team-a").unwrap(), tree.id("team-b").unwrap());
    let mut ledger = QueueLedger::new(tree);
    ledger.add_usage(a, &gpu(3_000));
    assert!(ledger.check_limit(b, &gpu(1_000)).is_ok());
    let refusal = ledger.check_limit(b, &gpu(2_000)).unwrap_err();
    assert_eq!(
        refusal.to_string(),
        "queue team-b would use 5000 gpu, over its limit 4000 (the limit of its parent queue org)"
    );
    ledger.remove_usage(a, &gpu(3_000));
    assert!(ledger.check_limit(b, &gpu(2_000)).is_ok(), "usage released");
}

#[test]
fn the_queue_furthest_below_its_fair_share_goes_first() {
    let tree = QueueTree::build(vec![
        spec("a", None, 4_000, None),
        spec("b", None, 4_000, None),
    ])
    .unwrap();
    let (a, b) = (tree.id("a").unwrap(), tree.id("b").unwrap());
    let mut ledger = QueueLedger::new(tree);
    ledger.add_usage(a, &gpu(3_000));
    ledger.add_usage(b, &gpu(1_000));
    ledger.add_pending(a, &gpu(4_000));
    ledger.add_pending(b, &gpu(4_000));
    ledger.refresh_fair_shares(gpu(8_000));
    assert!(ledger.turn_key(b) < ledger.turn_key(a));
    assert_eq!(ledger.fair_share(a), &gpu(4_000));
    assert!(ledger.below_guarantee(b));
}

#[test]
fn a_reserved_node_is_kept_for_its_holder() {
    let mut snapshot = ClusterSnapshot::new();
    snapshot
        .add_node(NodeSpec {
            name: "n0".into(),
            cpu_milli: 8_000,
            memory_mib: 8_000,
            max_pods: 10,
            gpu_model: Some("A100".into()),
            gpus: vec![GpuSpec::default(); 2],
            ..NodeSpec::default()
        })
        .unwrap();
    let mut policy = build_policy(
        PolicyName::Phalanx,
        &PolicyConfig {
            seed: 0,
            workload: WorkloadSource::Online,
        },
    );
    assert!(snapshot.reserve(
        NodeId(0),
        NodeReservation {
            holder: 7,
            priority: 5,
            held: HeldRoom {
                cpu_milli: 100,
                memory_mib: 100,
                gpu_milli: 1000,
                whole_gpus: 1,
            },
        }
    ));
    let pod = |priority: i32, reservation: Option<u64>| PodDemand {
        priority,
        reservation,
        ..PodDemand::new(
            "p",
            100,
            100,
            GpuDemand::Whole { count: 1 },
            ModelConstraint::Any,
        )
        .unwrap()
    };
    let mut scratch = CycleScratch::default();
    // One of the two GPUs is held: an equal-priority pod still gets the other.
    assert!(matches!(
        schedule_one(&snapshot, policy.as_mut(), &pod(5, None), &mut scratch),
        CycleOutcome::Placed(_)
    ));
    let two = |priority, reservation| PodDemand {
        gpu: GpuDemand::Whole { count: 2 },
        ..pod(priority, reservation)
    };
    match schedule_one(&snapshot, policy.as_mut(), &two(5, None), &mut scratch) {
        CycleOutcome::Unschedulable { reasons, .. } => {
            assert_eq!(reasons, BTreeMap::from([(UnfitReason::Reserved, 1)]))
        }
        placed => panic!("an equal-priority pod took a reserved node: {placed:?}"),
    }
    for (priority, token) in [(5, Some(7)), (6, None)] {
        assert!(matches!(
            schedule_one(
                &snapshot,
                policy.as_mut(),
                &pod(priority, token),
                &mut scratch
            ),
            CycleOutcome::Placed(_)
        ));
    }
    assert_eq!(snapshot.release_reservations(7), 1);
    assert!(matches!(
        schedule_one(&snapshot, policy.as_mut(), &two(5, None), &mut scratch),
        CycleOutcome::Placed(_)
    ));
}

proptest! {
    /// Admitting only what `check_limit` allows, no queue or ancestor ever
    /// holds more than its limit, whatever the hierarchy and the order.
    #[test]
    fn no_queue_ever_passes_its_limit(
        limits in prop::collection::vec(prop::option::of(0u64..10), 1..6),
        parents in prop::collection::vec(0usize..6, 6),
        asks in prop::collection::vec((0usize..6, 1u64..4, any::<bool>()), 0..60),
    ) {
        let n = limits.len();
        let specs: Vec<QueueSpec> = (0..n)
            .map(|i| {
                // Each queue's parent is an earlier one, or none.
                let parent = (i > 0 && parents[i] % (i + 1) != i).then(|| format!("q{}", parents[i] % i));
                spec(&format!("q{i}"), parent.as_deref(), 0, limits[i].map(|l| l * 1_000))
            })
            .collect();
        let tree = QueueTree::build(specs).unwrap();
        let ids: Vec<_> = (0..n).map(|i| tree.id(&format!("q{i}")).unwrap()).collect();
        let mut ledger = QueueLedger::new(tree.clone());
        let mut held: Vec<(usize, u64)> = Vec::new();
        for (queue, gpus, release) in asks {
            let queue = queue % n;
            if release {
                if let Some(k) = held.iter().position(|(q, _)| *q == queue) {
                    let (q, amount) = held.remove(k);
                    ledger.remove_usage(ids[q], &gpu(amount));
                }
                continue;
            }
            let amount = gpus * 1_000;
            if ledger.check_limit(ids[queue], &gpu(amount)).is_ok() {
                ledger.add_usage(ids[queue], &gpu(amount));
                held.push((queue, amount));
            }
            for id in tree.ids() {
                if let Some(limit) = tree.quota(id, &QueueResource::GpuMilli).limit {
                    let used = ledger.usage(id).get(&QueueResource::GpuMilli).copied().unwrap_or(0);
                    prop_assert!(used <= limit, "{} holds {used} over {limit}", tree.spec(id).name);
                }
            }
        }
    }
}
