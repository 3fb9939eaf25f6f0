//! Property tests of the engine's invariants: whatever the policy and whatever
//! sequence of placements, releases and hostile placement attempts, no node's CPU,
//! memory or any GPU's milli capacity is over-committed, and every GPU a pod gets is
//! of a model it accepts.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use phalanx_engine::policy::PolicyConfig;
use phalanx_engine::{
    build_policy, schedule_one, ClusterSnapshot, CycleOutcome, CycleScratch, GpuAssignment,
    GpuDemand, GpuShare, GpuSpec, ModelConstraint, NodeId, NodeSpec, Placement, PodDemand,
    PolicyName, WorkloadSource, MILLI_PER_GPU,
};
use proptest::prelude::*;

const MODELS: [&str; 3] = ["A100", "T4", "V100"];

fn node_strategy() -> impl Strategy<Value = (u64, u64, usize, usize)> {
    (
        1_000u64..64_000,
        1_000u64..64_000,
        0usize..=8,
        0usize..MODELS.len(),
    )
}

fn pod_strategy() -> impl Strategy<Value = (u64, u64, u32, u32, u8)> {
    // cpu, memory, kind (0 none, 1 share, 2 whole), amount, allowed-model mask
    (0u64..20_000, 0u64..20_000, 0u32..3, 1u32..1000, 0u8..8)
}

fn build(nodes: &[(u64, u64, usize, usize)]) -> ClusterSnapshot {
    let mut c = ClusterSnapshot::new();
    for (i, &(cpu, mem, gpus, model)) in nodes.iter().enumerate() {
        c.add_node(NodeSpec {
            name: format!("n{i}"),
            cpu_milli: cpu,
            memory_mib: mem,
            max_pods: 6,
            gpu_model: (gpus > 0).then(|| MODELS[model].to_string()),
            gpus: vec![GpuSpec::default(); gpus],
            ..NodeSpec::default()
        })
        .unwrap();
    }
    c
}

fn demand(
    c: &ClusterSnapshot,
    i: usize,
    (cpu, mem, kind, amount, mask): (u64, u64, u32, u32, u8),
) -> PodDemand {
    let gpu = match kind {
        0 => GpuDemand::None,
        1 => GpuDemand::Share { milli: amount },
        _ => GpuDemand::Whole {
            count: 1 + amount % 4,
        },
    };
    let spec: Vec<&str> = MODELS
        .iter()
        .enumerate()
        .filter(|(b, _)| mask & (1 << b) != 0)
        .map(|(_, m)| *m)
        .collect();
    let models = c.models().constraint(&spec.join("|"));
    PodDemand::new(format!("p{i}"), cpu, mem, gpu, models).unwrap()
}

/// Every invariant, checked against an independent ledger of what was placed.
fn check_invariants(
    c: &ClusterSnapshot,
    placed: &[(PodDemand, Placement)],
) -> Result<(), TestCaseError> {
    for (i, node) in c.nodes().iter().enumerate() {
        let mine: Vec<&(PodDemand, Placement)> =
            placed.iter().filter(|(_, p)| p.node.index() == i).collect();
        let cpu: u64 = mine.iter().map(|(d, _)| d.cpu_milli).sum();
        let mem: u64 = mine.iter().map(|(d, _)| d.memory_mib).sum();
        prop_assert!(
            cpu <= node.cpu_milli_cap,
            "CPU over-committed on {}",
            node.name
        );
        prop_assert!(
            mem <= node.memory_mib_cap,
            "memory over-committed on {}",
            node.name
        );
        prop_assert_eq!(cpu, node.cpu_milli_used);
        prop_assert!(mine.len() as u32 <= node.max_pods);
        for (g, gpu) in node.gpus.iter().enumerate() {
            let taken: u32 = mine
                .iter()
                .flat_map(|(_, p)| p.gpus.as_slice().iter())
                .filter(|s| s.index as usize == g)
                .map(|s| s.milli)
                .sum();
            prop_assert!(
                taken <= MILLI_PER_GPU,
                "GPU {g} of {} over-committed: {taken}",
                node.name
            );
            prop_assert_eq!(gpu.milli_free, MILLI_PER_GPU - taken);
        }
        for (d, p) in &mine {
            prop_assert_eq!(p.gpus.len() as u32, d.gpu.gpu_count());
            if d.gpu != GpuDemand::None {
                let model = node.model.expect("a GPU pod landed on a node without GPUs");
                prop_assert!(
                    d.models.allows(model),
                    "{} got a model it does not accept",
                    d.name
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn no_policy_and_no_sequence_over_commits(
        nodes in prop::collection::vec(node_strategy(), 1..6),
        pods in prop::collection::vec(pod_strategy(), 1..40),
        policy in 0usize..PolicyName::ALL.len(),
        releases in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
        seed in any::<u64>(),
    ) {
        let mut c = build(&nodes);
        let name = PolicyName::ALL[policy];
        let mut policy = build_policy(name, &PolicyConfig { seed, workload: WorkloadSource::Online });
        let mut scratch = CycleScratch::default();
        let mut placed: Vec<(PodDemand, Placement)> = Vec::new();
        let mut releases = releases.into_iter();
        for (i, raw) in pods.into_iter().enumerate() {
            let d = demand(&c, i, raw);
            policy.observe_arrival(&d);
            match schedule_one(&c, policy.as_mut(), &d, &mut scratch) {
                CycleOutcome::Placed(p) => {
                    prop_assert!(c.fits(p.node, &d), "{name} chose a node the filter rejects");
                    c.place(&d, &p).map_err(|e| TestCaseError::fail(format!("{name}: {e}")))?;
                    placed.push((d, p));
                }
                CycleOutcome::Unschedulable { reasons, nodes } => {
                    prop_assert_eq!(reasons.values().sum::<usize>(), nodes);
                    for n in 0..c.len() {
                        prop_assert!(!c.fits(NodeId(n as u32), &d));
                    }
                }
            }
            if i % 4 == 3 {
                if let (Some(ix), false) = (releases.next(), placed.is_empty()) {
                    let (d, p) = placed.swap_remove(ix.index(placed.len()));
                    c.release(&d, &p).map_err(|e| TestCaseError::fail(e.to_string()))?;
                }
            }
            check_invariants(&c, &placed)?;
        }
    }

    #[test]
    fn hostile_placements_are_refused_without_changing_anything(
        nodes in prop::collection::vec(node_strategy(), 1..4),
        attempts in prop::collection::vec((pod_strategy(), 0usize..4, prop::collection::vec((0u8..10, 0u32..1200), 0..4)), 1..30),
    ) {
        let mut c = build(&nodes);
        let mut placed: Vec<(PodDemand, Placement)> = Vec::new();
        for (i, (raw, node, shares)) in attempts.into_iter().enumerate() {
            let d = demand(&c, i, raw);
            let mut gpus = GpuAssignment::default();
            for (index, milli) in shares {
                gpus.push(GpuShare { index, milli });
            }
            let p = Placement { node: NodeId(node as u32), gpus };
            let before = format!("{:?}", c.nodes());
            if node < c.len() && c.place(&d, &p).is_ok() {
                placed.push((d, p));
            } else {
                prop_assert_eq!(before, format!("{:?}", c.nodes()), "a refused placement changed state");
            }
            check_invariants(&c, &placed)?;
        }
    }

    #[test]
    fn release_restores_the_node_exactly(
        nodes in prop::collection::vec(node_strategy(), 1..4),
        pods in prop::collection::vec(pod_strategy(), 1..12),
    ) {
        let mut c = build(&nodes);
        let mut fgd = build_policy(PolicyName::BestFit, &PolicyConfig { seed: 0, workload: WorkloadSource::Online });
        let mut scratch = CycleScratch::default();
        for (i, raw) in pods.into_iter().enumerate() {
            let d = demand(&c, i, raw);
            if let CycleOutcome::Placed(p) = schedule_one(&c, fgd.as_mut(), &d, &mut scratch) {
                let n = c.node(p.node).clone();
                c.place(&d, &p).unwrap();
                c.release(&d, &p).unwrap();
                let after = c.node(p.node);
                prop_assert_eq!((after.cpu_milli_used, after.memory_mib_used, after.pods), (n.cpu_milli_used, n.memory_mib_used, n.pods));
                prop_assert_eq!(&after.gpus, &n.gpus);
                // The snapshot accounts aggregates (pod identity is the controller's):
                // a second release is refused when nothing else on the node covers it.
                let alone = n.pods == 0;
                let second = c.release(&d, &p);
                if alone {
                    prop_assert!(second.is_err(), "releasing an empty node must be refused");
                } else if second.is_ok() {
                    c.place(&d, &p).unwrap();
                }
                c.place(&d, &p).unwrap();
            }
        }
    }
}

#[test]
fn a_pod_asking_for_a_model_nobody_has_fits_nowhere_and_says_why() {
    let c = build(&[(8_000, 8_000, 2, 0), (8_000, 8_000, 2, 1)]);
    let d = PodDemand::new(
        "p",
        1_000,
        1,
        GpuDemand::Whole { count: 1 },
        c.models().constraint("H100"),
    )
    .unwrap();
    let mut policy = build_policy(
        PolicyName::Phalanx,
        &PolicyConfig {
            seed: 0,
            workload: WorkloadSource::Online,
        },
    );
    match schedule_one(&c, policy.as_mut(), &d, &mut CycleScratch::default()) {
        CycleOutcome::Unschedulable { nodes, reasons } => {
            let msg = phalanx_engine::unschedulable_message(nodes, &reasons);
            assert_eq!(
                msg,
                "0/2 nodes are available: 2 node(s) didn't have the requested GPU model."
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(ModelConstraint::OneOf(0), c.models().constraint("H100"));
}
