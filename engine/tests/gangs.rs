//! Gang placement is a transaction: all of `minMember` on one snapshot, or nothing.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use std::collections::BTreeMap;

use phalanx_engine::policy::PolicyConfig;
use phalanx_engine::{
    build_policy, place_gang, schedule_one, ClusterSnapshot, CycleOutcome, CycleScratch, GangError,
    GangSpec, GpuDemand, GpuSpec, ModelConstraint, NodePlacementRules, NodeSpec, PodDemand,
    PolicyName, Taint, TaintEffect, Toleration, TolerationOperator, WorkloadSource,
};
use proptest::prelude::*;

fn node(name: &str, gpus: usize, rack: &str) -> NodeSpec {
    NodeSpec {
        name: name.into(),
        cpu_milli: 96_000,
        memory_mib: 1 << 20,
        max_pods: 110,
        gpu_model: Some("H100".into()),
        gpus: vec![GpuSpec::default(); gpus],
        labels: BTreeMap::from([("topology.phalanx.dev/rack".to_string(), rack.to_string())]),
        ..NodeSpec::default()
    }
}

fn cluster(nodes: &[(usize, &str)]) -> ClusterSnapshot {
    let mut c = ClusterSnapshot::new();
    for (i, (gpus, rack)) in nodes.iter().enumerate() {
        c.add_node(node(&format!("n{i}"), *gpus, rack)).unwrap();
    }
    c
}

fn workers(n: usize, gpus: u32) -> Vec<PodDemand> {
    (0..n)
        .map(|i| {
            PodDemand::new(
                format!("worker-{i}"),
                4_000,
                1_024,
                GpuDemand::Whole { count: gpus },
                ModelConstraint::Any,
            )
            .unwrap()
        })
        .collect()
}

fn policy() -> Box<dyn phalanx_engine::PlacementPolicy> {
    build_policy(
        PolicyName::Phalanx,
        &PolicyConfig {
            seed: 1,
            workload: WorkloadSource::Online,
        },
    )
}

/// The accounting that must be exactly restored when a gang does not fit.
fn accounting(c: &ClusterSnapshot) -> Vec<(u64, u64, u32, Vec<u32>)> {
    c.nodes()
        .iter()
        .map(|n| {
            (
                n.cpu_milli_used,
                n.memory_mib_used,
                n.pods,
                n.gpus.iter().map(|g| g.milli_free).collect(),
            )
        })
        .collect()
}

fn gang<'a>(
    members: &'a [PodDemand],
    min_member: usize,
    topology_key: Option<&'a str>,
) -> GangSpec<'a> {
    GangSpec {
        name: "job",
        members,
        min_member,
        topology_key,
    }
}

#[test]
fn a_32_pod_gang_fills_four_nodes_and_a_33rd_member_makes_it_fail_whole() {
    let mut c = cluster(&[(8, "a"), (8, "a"), (8, "b"), (8, "b")]);
    let members = workers(32, 1);
    let plan = place_gang(
        &mut c,
        policy().as_mut(),
        &gang(&members, 32, None),
        &mut CycleScratch::default(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(plan.placements.len(), 32);
    assert_eq!(plan.nodes_used(), 4);
    assert!(c.nodes().iter().all(|n| n.fully_free_gpus() == 0));

    let mut c = cluster(&[(8, "a"), (8, "a"), (8, "b"), (8, "b")]);
    let before = accounting(&c);
    let members = workers(33, 1);
    let failure = place_gang(
        &mut c,
        policy().as_mut(),
        &gang(&members, 33, None),
        &mut CycleScratch::default(),
    )
    .unwrap()
    .unwrap_err();
    assert_eq!(
        accounting(&c),
        before,
        "a gang that does not fit holds nothing"
    );
    assert_eq!((failure.placeable, failure.needed), (32, 33));
    let msg = failure.to_string();
    assert!(
        msg.contains("only 32 of the 33")
            && msg.contains("0/4 nodes are available: 4 Insufficient nvidia.com/gpu"),
        "{msg}"
    );
}

#[test]
fn a_gang_prefers_one_rack_and_few_nodes() {
    // Rack a: 2 nodes × 4 GPUs; rack b: 3 nodes × 8 GPUs. 12 single-GPU workers fit only in b.
    let mut c = cluster(&[(4, "a"), (4, "a"), (8, "b"), (8, "b"), (8, "b")]);
    let members = workers(12, 1);
    let plan = place_gang(
        &mut c,
        policy().as_mut(),
        &gang(&members, 12, Some("topology.phalanx.dev/rack")),
        &mut CycleScratch::default(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(plan.domain.as_deref(), Some("b"));
    assert_eq!(
        plan.nodes_used(),
        2,
        "12 GPUs need two 8-GPU nodes, not three"
    );

    // 30 workers fit in no single rack: the gang spans racks rather than failing.
    let mut c = cluster(&[(4, "a"), (4, "a"), (8, "b"), (8, "b"), (8, "b")]);
    let members = workers(30, 1);
    let plan = place_gang(
        &mut c,
        policy().as_mut(),
        &gang(&members, 30, Some("topology.phalanx.dev/rack")),
        &mut CycleScratch::default(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(plan.domain, None);
    assert_eq!(plan.placements.len(), 30);
}

#[test]
fn members_beyond_min_member_may_stay_pending() {
    let mut c = cluster(&[(8, "a")]);
    let members = workers(10, 1);
    let plan = place_gang(
        &mut c,
        policy().as_mut(),
        &gang(&members, 6, None),
        &mut CycleScratch::default(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(plan.placements.len(), 8);
    assert_eq!(plan.unplaced.len(), 2);
}

#[test]
fn impossible_pod_groups_are_errors_not_waits() {
    let mut c = cluster(&[(8, "a")]);
    let members = workers(3, 1);
    let err = place_gang(
        &mut c,
        policy().as_mut(),
        &gang(&members, 4, None),
        &mut CycleScratch::default(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        GangError::MinMemberExceedsMembers {
            gang: "job".into(),
            min_member: 4,
            members: 3
        }
    );
    assert!(err
        .to_string()
        .contains("minMember 4 is more than its 3 member pods"));
    let err = place_gang(
        &mut c,
        policy().as_mut(),
        &gang(&members, 0, None),
        &mut CycleScratch::default(),
    )
    .unwrap_err();
    assert!(matches!(err, GangError::ZeroMinMember { .. }));
}

#[test]
fn taints_cordons_and_affinity_filter_with_kube_scheduler_wording() {
    let mut c = ClusterSnapshot::new();
    let mut tainted = node("tainted", 8, "a");
    tainted.taints.push(Taint {
        key: "nvidia.com/gpu".into(),
        value: "present".into(),
        effect: TaintEffect::NoSchedule,
    });
    c.add_node(tainted).unwrap();
    let mut cordoned = node("cordoned", 8, "a");
    cordoned.unschedulable = true;
    c.add_node(cordoned).unwrap();
    c.add_node(node("rack-b", 8, "b")).unwrap();

    let mut rules = NodePlacementRules::default();
    rules
        .node_selector
        .insert("topology.phalanx.dev/rack".into(), "a".into());
    let pod = workers(1, 1).remove(0).with_rules(rules.clone());
    match schedule_one(&c, policy().as_mut(), &pod, &mut CycleScratch::default()) {
        CycleOutcome::Unschedulable { nodes, reasons } => assert_eq!(
            phalanx_engine::unschedulable_message(nodes, &reasons),
            "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, \
             1 node(s) had untolerated taint, 1 node(s) were unschedulable."
        ),
        other => panic!("{other:?}"),
    }
    rules.tolerations.push(Toleration {
        key: Some("nvidia.com/gpu".into()),
        operator: TolerationOperator::Exists,
        ..Default::default()
    });
    let pod = workers(1, 1).remove(0).with_rules(rules);
    match schedule_one(&c, policy().as_mut(), &pod, &mut CycleScratch::default()) {
        CycleOutcome::Placed(p) => assert_eq!(c.node(p.node).name, "tainted"),
        other => panic!("{other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn all_or_nothing_holds_for_any_cluster_and_gang(
        nodes in prop::collection::vec((0usize..=8, 0usize..3), 1..6),
        busy in prop::collection::vec(0u32..3, 0..6),
        size in 1usize..20,
        gpus_each in 1u32..4,
        slack in 0usize..3,
        rack_key in any::<bool>(),
    ) {
        let racks = ["a", "b", "c"];
        let spec: Vec<(usize, &str)> = nodes.iter().map(|&(g, r)| (g, racks[r])).collect();
        let mut c = cluster(&spec);
        let mut p = policy();
        let mut scratch = CycleScratch::default();
        // Some unrelated pods first, so the gang meets a partly used cluster.
        for (i, gpus) in busy.into_iter().enumerate() {
            let pod = PodDemand::new(format!("other-{i}"), 1_000, 1, GpuDemand::Whole { count: gpus.max(1) }, ModelConstraint::Any).unwrap();
            if let CycleOutcome::Placed(pl) = schedule_one(&c, p.as_mut(), &pod, &mut scratch) {
                c.place(&pod, &pl).unwrap();
            }
        }
        let before = accounting(&c);
        let members = workers(size, gpus_each);
        let min_member = size.saturating_sub(slack).max(1);
        let key = rack_key.then_some("topology.phalanx.dev/rack");
        match place_gang(&mut c, p.as_mut(), &gang(&members, min_member, key), &mut scratch).unwrap() {
            Ok(plan) => {
                prop_assert!(plan.placements.len() >= min_member);
                prop_assert_eq!(plan.placements.len() + plan.unplaced.len(), size);
                let placed_gpus: u32 = plan.placements.iter().map(|(_, pl)| pl.gpus.len() as u32).sum();
                let free_before: u32 = before.iter().flat_map(|n| n.3.iter()).filter(|&&f| f == 1000).count() as u32;
                let free_after: u32 = c.nodes().iter().map(|n| n.fully_free_gpus()).sum();
                prop_assert_eq!(free_before - free_after, placed_gpus);
            }
            Err(failure) => {
                prop_assert_eq!(accounting(&c), before, "failed gang changed the cluster");
                prop_assert!(failure.placeable < min_member);
            }
        }
    }
}
