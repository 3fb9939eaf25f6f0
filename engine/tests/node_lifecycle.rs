#![allow(clippy::unwrap_used)]
//! Nodes come, change and go while pods hold resources on them: the snapshot keeps
//! allocations across updates, refuses updates that would lose them, and a removed
//! node is neither chosen nor counted.

use phalanx_engine::{
    build_policy, schedule_one, ClusterSnapshot, CycleOutcome, CycleScratch, GpuAssignment,
    GpuDemand, GpuSpec, ModelConstraint, NodeSpec, Placement, PodDemand, PolicyConfig, PolicyName,
    Taint, TaintEffect, WorkloadSource,
};

fn node(name: &str, gpus: usize) -> NodeSpec {
    NodeSpec {
        name: name.into(),
        cpu_milli: 64_000,
        memory_mib: 256 << 10,
        max_pods: 110,
        gpu_model: Some("H100".into()),
        gpus: (0..gpus)
            .map(|i| GpuSpec {
                uuid: format!("GPU-{name}-{i}"),
                memory_mib: 81_559,
            })
            .collect(),
        ..NodeSpec::default()
    }
}

fn share(milli: u32) -> PodDemand {
    PodDemand::new(
        "p",
        1000,
        1024,
        GpuDemand::Share { milli },
        ModelConstraint::Any,
    )
    .unwrap()
}

#[test]
fn update_keeps_allocations_and_applies_taints() {
    let mut snap = ClusterSnapshot::new();
    let id = snap.upsert_node(node("a", 2)).unwrap();
    let pod = share(600);
    let placement = Placement {
        node: id,
        gpus: GpuAssignment::from_indices([1], 600),
    };
    snap.place(&pod, &placement).unwrap();

    let mut tainted = node("a", 4);
    tainted.taints.push(Taint {
        key: "maintenance".into(),
        value: String::new(),
        effect: TaintEffect::NoSchedule,
    });
    assert_eq!(snap.upsert_node(tainted).unwrap(), id);
    let state = snap.node(id);
    assert_eq!(state.gpus.len(), 4);
    assert_eq!(
        state.gpus[1].milli_free, 400,
        "allocation survives the update"
    );
    assert_eq!(state.cpu_milli_used, 1000);
    assert!(
        snap.check_fit(id, &share(100)).is_err(),
        "new taint applies"
    );
    // And the allocation can still be released exactly.
    snap.release(&pod, &placement).unwrap();
    assert_eq!(snap.node(id).gpus[1].milli_free, 1000);
}

#[test]
fn shrinking_under_an_allocation_is_refused() {
    let mut snap = ClusterSnapshot::new();
    let id = snap.upsert_node(node("a", 2)).unwrap();
    let placement = Placement {
        node: id,
        gpus: GpuAssignment::from_indices([1], 500),
    };
    snap.place(&share(500), &placement).unwrap();
    let err = snap.upsert_node(node("a", 1)).unwrap_err().to_string();
    assert!(err.contains("inventory changed"), "{err}");
    assert_eq!(snap.node(id).gpus.len(), 2, "nothing changed");
}

#[test]
fn removed_node_is_skipped_and_comes_back_empty() {
    let mut snap = ClusterSnapshot::new();
    let a = snap.upsert_node(node("a", 1)).unwrap();
    snap.upsert_node(node("b", 1)).unwrap();
    snap.place(
        &share(500),
        &Placement {
            node: a,
            gpus: GpuAssignment::from_indices([0], 500),
        },
    )
    .unwrap();
    assert!(snap.remove_node("a"));
    assert!(!snap.remove_node("nope"));
    assert_eq!(snap.present_nodes(), 1);

    let mut policy = build_policy(
        PolicyName::BestFit,
        &PolicyConfig {
            seed: 0,
            workload: WorkloadSource::Online,
        },
    );
    let whole = PodDemand::new(
        "w",
        1000,
        1024,
        GpuDemand::Whole { count: 1 },
        ModelConstraint::Any,
    )
    .unwrap();
    let mut scratch = CycleScratch::default();
    let CycleOutcome::Placed(p) = schedule_one(&snap, policy.as_mut(), &whole, &mut scratch) else {
        panic!("b has a free GPU");
    };
    assert_eq!(snap.node(p.node).name, "b");
    snap.place(&whole, &p).unwrap();
    match schedule_one(&snap, policy.as_mut(), &whole, &mut scratch) {
        CycleOutcome::Unschedulable { nodes, .. } => {
            assert_eq!(nodes, 1, "removed node not counted")
        }
        other => panic!("{other:?}"),
    }

    assert_eq!(snap.upsert_node(node("a", 1)).unwrap(), a);
    assert_eq!(snap.node(a).gpus[0].milli_free, 1000, "returns empty");
    assert_eq!(snap.present_nodes(), 2);
}
