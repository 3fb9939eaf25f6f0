//! Topology spread as a filter (DoNotSchedule), after kube-scheduler's
//! `podtopologyspread/filtering_test.go` (TestSingleConstraint,
//! TestMultipleConstraints, and the minDomains and node inclusion policy cases).

use phalanx_engine::LabelOperator::Exists;
use phalanx_engine::WhenUnsatisfiable::DoNotSchedule;
use phalanx_engine::{
    ClusterSnapshot, NodeInclusionPolicy, NodePlacementRules, NodeSelectorRequirement,
    SelectorOperator, Taint, TaintEffect, Toleration, TolerationOperator, UnfitReason,
};

use crate::support::*;

/// node-a and node-b in zone1, node-x and node-y in zone2, each labelled `node`.
fn four_nodes() -> ClusterSnapshot {
    cluster(
        [
            ("node-a", "zone1"),
            ("node-b", "zone1"),
            ("node-x", "zone2"),
            ("node-y", "zone2"),
        ]
        .into_iter()
        .map(|(n, z)| node(n, &[("zone", z), ("node", n)]))
        .collect(),
    )
}

/// Places `count` pods labelled foo on each named node.
fn foo_pods(c: &mut ClusterSnapshot, spread: &[(&str, usize)]) {
    for &(n, count) in spread {
        for i in 0..count {
            place(c, &pod(&format!("{n}-{i}"), &[("foo", "")]).build(), n);
        }
    }
}

fn foo_exists() -> phalanx_engine::LabelSelector {
    expr("foo", Exists)
}

fn incoming(max_skew: u32, key: &str) -> PodBuilder {
    pod("p", &[("foo", "")]).spread(spread(max_skew, key, DoNotSchedule, foo_exists()))
}

fn skew() -> Result<(), UnfitReason> {
    Err(UnfitReason::TopologySpreadSkew)
}

#[test]
fn no_existing_pods_every_node_fits() {
    // "no existing pods" and "no existing pods, incoming pod doesn't match itself"
    let c = four_nodes();
    assert_eq!(fitting(&c, &incoming(1, "zone").build()).len(), 4);
    let p = pod("p", &[("foo", "")])
        .spread(spread(1, "zone", DoNotSchedule, expr("bar", Exists)))
        .build();
    assert_eq!(fitting(&c, &p).len(), 4);
}

#[test]
fn pods_in_other_namespaces_do_not_count() {
    // "existing pods in a different namespace do not count"
    let mut c = four_nodes();
    place(
        &mut c,
        &pod("a1", &[("foo", "")]).namespace("ns1").build(),
        "node-a",
    );
    place(
        &mut c,
        &pod("b1", &[("foo", "")]).namespace("ns2").build(),
        "node-a",
    );
    foo_pods(&mut c, &[("node-x", 1), ("node-y", 1)]);
    let v = verdicts(&c, &incoming(1, "zone").build());
    assert_eq!(v[0].1, Ok(()));
    assert_eq!(v[1].1, Ok(()));
    assert_eq!(v[2].1, skew());
    assert_eq!(v[3].1, skew());
}

#[test]
fn zones_three_and_three_all_fit() {
    // "pods spread across zones as 3/3, all nodes fit"
    let mut c = four_nodes();
    foo_pods(&mut c, &[("node-a", 2), ("node-b", 1), ("node-y", 3)]);
    assert_eq!(fitting(&c, &incoming(1, "zone").build()).len(), 4);
}

#[test]
fn a_node_missing_the_key_is_neither_a_domain_nor_a_candidate() {
    // "pods spread across zones as 1/2 due to absence of label 'zone' on node-b"
    let mut c = cluster(vec![
        node("node-a", &[("zone", "zone1")]),
        node("node-b", &[("zon", "zone1")]),
        node("node-x", &[("zone", "zone2")]),
        node("node-y", &[("zone", "zone2")]),
    ]);
    foo_pods(
        &mut c,
        &[("node-a", 1), ("node-b", 1), ("node-x", 1), ("node-y", 1)],
    );
    let v = verdicts(&c, &incoming(1, "zone").build());
    assert_eq!(v[0].1, Ok(()));
    assert_eq!(v[1].1, Err(UnfitReason::TopologySpreadMissingLabel));
    assert_eq!(v[2].1, skew());
    assert_eq!(v[3].1, skew());
    // "pod cannot be scheduled as all nodes don't have label 'rack'"
    let mut scratch = phalanx_engine::CycleScratch::default();
    let outcome = phalanx_engine::schedule_one(
        &c,
        policy().as_mut(),
        &incoming(1, "rack").build(),
        &mut scratch,
    );
    let phalanx_engine::CycleOutcome::Unschedulable { nodes, reasons } = outcome else {
        panic!("placed without the key");
    };
    assert_eq!(
        phalanx_engine::unschedulable_message(nodes, &reasons),
        "0/4 nodes are available: 4 node(s) didn't match pod topology spread constraints (missing required label)."
    );
}

#[test]
fn nodes_two_one_zero_three() {
    let spread_2103 = |c: &mut ClusterSnapshot| {
        foo_pods(c, &[("node-a", 2), ("node-b", 1), ("node-y", 3)]);
    };
    // "pods spread across nodes as 2/1/0/3, only node-x fits"
    let mut c = four_nodes();
    spread_2103(&mut c);
    assert_eq!(fitting(&c, &incoming(1, "node").build()), vec!["node-x"]);
    // "pods spread across nodes as 2/1/0/3, maxSkew is 2, node-b and node-x fit"
    assert_eq!(
        fitting(&c, &incoming(2, "node").build()),
        vec!["node-b", "node-x"]
    );
    // "pods spread across nodes as 2/1/0/3, but pod doesn't match itself"
    let p = pod("p", &[("bar", "")])
        .spread(spread(1, "node", DoNotSchedule, foo_exists()))
        .build();
    assert_eq!(fitting(&c, &p), vec!["node-b", "node-x"]);
}

#[test]
fn node_affinity_policy_decides_which_nodes_are_domains() {
    // "incoming pod has nodeAffinity, pods spread as 2/~1~/~0~/3, hence node-a
    // fits": with the policy honoured only node-a and node-y are domains.
    let mut c = four_nodes();
    foo_pods(&mut c, &[("node-a", 2), ("node-b", 1), ("node-y", 3)]);
    let rules = NodePlacementRules {
        required_terms: vec![vec![NodeSelectorRequirement {
            key: "node".into(),
            operator: SelectorOperator::In(values(&["node-a", "node-y"])),
        }]],
        ..NodePlacementRules::default()
    };
    let p = incoming(1, "node").build().with_rules(rules.clone());
    let v = verdicts(&c, &p);
    assert_eq!(v[0].1, Ok(()));
    assert_eq!(v[3].1, skew());
    // Ignored: every node is a domain and node-x (0 pods) sets the minimum.
    let mut ignored = spread(1, "node", DoNotSchedule, foo_exists());
    ignored.node_affinity_policy = NodeInclusionPolicy::Ignore;
    let p = pod("p", &[("foo", "")])
        .spread(ignored)
        .build()
        .with_rules(rules);
    assert_eq!(verdicts(&c, &p)[0].1, skew());
}

#[test]
fn node_taints_policy_decides_whether_tainted_nodes_are_domains() {
    // "NodeTaintsPolicy honored with tolerated taints" and its ignored and
    // untolerated variants: node-b is tainted and empty.
    let mut c = cluster(vec![node("node-a", &[("node", "node-a")])]);
    let mut tainted = node("node-b", &[("node", "node-b")]);
    tainted.taints = vec![Taint {
        key: "dedicated".into(),
        value: String::new(),
        effect: TaintEffect::NoSchedule,
    }];
    c.add_node(tainted).unwrap();
    c.add_node(node("node-c", &[("node", "node-c")])).unwrap();
    foo_pods(&mut c, &[("node-a", 1), ("node-c", 1)]);
    let honoured = || {
        let mut s = spread(1, "node", DoNotSchedule, foo_exists());
        s.node_taints_policy = NodeInclusionPolicy::Honor;
        s
    };
    // Honoured and not tolerated: node-b is no domain, the minimum is 1, a fits.
    let p = pod("p", &[("foo", "")]).spread(honoured()).build();
    assert_eq!(verdict(&c, &p, "node-a"), Ok(()));
    // Honoured and tolerated: node-b's 0 is the minimum, a is skewed.
    let toleration = Toleration {
        key: Some("dedicated".into()),
        operator: TolerationOperator::Exists,
        ..Toleration::default()
    };
    let p = pod("p", &[("foo", "")])
        .spread(honoured())
        .build()
        .with_rules(NodePlacementRules {
            tolerations: vec![toleration],
            ..NodePlacementRules::default()
        });
    assert_eq!(verdict(&c, &p, "node-a"), skew());
    // Ignored (the default): node-b counts although the pod cannot go there.
    assert_eq!(verdict(&c, &incoming(1, "node").build(), "node-a"), skew());
}

#[test]
fn min_domains_counts_missing_domains_as_empty() {
    // minDomains cases of TestSingleConstraint: two zones with 1 pod each; with
    // minDomains 3 the global minimum is 0, so skew 1+1-0 = 2 > 1 everywhere.
    let mut c = four_nodes();
    foo_pods(&mut c, &[("node-a", 1), ("node-x", 1)]);
    assert_eq!(fitting(&c, &incoming(1, "zone").build()).len(), 4);
    let mut constraint = spread(1, "zone", DoNotSchedule, foo_exists());
    constraint.min_domains = Some(3);
    let p = pod("p", &[("foo", "")]).spread(constraint.clone()).build();
    assert!(fitting(&c, &p).is_empty());
    // minDomains met (2 ≤ 2): the usual minimum applies.
    constraint.min_domains = Some(2);
    let p = pod("p", &[("foo", "")]).spread(constraint).build();
    assert_eq!(fitting(&c, &p).len(), 4);
}

#[test]
fn two_constraints_must_both_hold() {
    // TestMultipleConstraints: "two Constraints on zone and node, spreads = [3/3,
    // 2/1/0/3]" -> only node-x.
    let mut c = four_nodes();
    foo_pods(&mut c, &[("node-a", 2), ("node-b", 1), ("node-y", 3)]);
    let p = pod("p", &[("foo", "")])
        .spread(spread(1, "zone", DoNotSchedule, foo_exists()))
        .spread(spread(1, "node", DoNotSchedule, foo_exists()))
        .build();
    assert_eq!(fitting(&c, &p), vec!["node-x"]);
}

#[test]
fn replicas_spread_evenly_across_three_zones() {
    let mut c = cluster(
        (0..6)
            .map(|i| node(&format!("n{i}"), &[("zone", ["z1", "z2", "z3"][i % 3])]))
            .collect(),
    );
    let mut policy = policy();
    let replica = |i: usize| {
        pod(&format!("r{i}"), &[("app", "web")])
            .spread(spread(1, "zone", DoNotSchedule, sel(&[("app", "web")])))
            .build()
    };
    let mut per_zone = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..9 {
        let p = replica(i);
        let n = chosen(&c, policy.as_mut(), &p).unwrap();
        *per_zone
            .entry(c.node(c.node_id(&n).unwrap()).labels["zone"].clone())
            .or_default() += 1;
        place(&mut c, &p, &n);
    }
    assert_eq!(
        per_zone.values().copied().collect::<Vec<_>>(),
        vec![3, 3, 3]
    );
}
