//! All or nothing: a gang that fits is placed whole, one that does not leaves the
//! snapshot as it was; impossible gangs are errors, and members are filtered
//! with kube-scheduler's wording.

use phalanx_engine::{
    place_gang, schedule_one, ClusterSnapshot, CycleOutcome, CycleScratch, GangError,
    NodePlacementRules, Taint, TaintEffect, Toleration, TolerationOperator, TopologyLevel,
};

use super::support::{accounting, cluster, domain, gang, node, policy, workers, RACK};

#[test]
fn a_32_pod_gang_fills_four_nodes_and_a_33rd_member_makes_it_fail_whole() {
    let mut c = cluster(&[(8, "a"), (8, "a"), (8, "b"), (8, "b")]);
    let members = workers(32, 1);
    let plan = place_gang(
        &mut c,
        policy().as_mut(),
        &gang(&members, 32, &[]),
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
        &gang(&members, 33, &[]),
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
        &gang(&members, 12, &[TopologyLevel::preferred(RACK)]),
        &mut CycleScratch::default(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(domain(&plan), Some((RACK, "b")));
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
        &gang(&members, 30, &[TopologyLevel::preferred(RACK)]),
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
        &gang(&members, 6, &[]),
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
        &gang(&members, 4, &[]),
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
        &gang(&members, 0, &[]),
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
