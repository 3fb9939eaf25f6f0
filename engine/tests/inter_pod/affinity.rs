//! Required pod affinity and anti-affinity, after kube-scheduler's
//! `interpodaffinity/filtering_test.go` (TestRequiredAffinitySingleNode and
//! TestRequiredAffinityMultipleNodes): our own cases, the same outcomes.

use phalanx_engine::LabelOperator::{DoesNotExist, Exists, In, NotIn};
use phalanx_engine::{NamespaceScope, UnfitReason};

use crate::support::*;

const SECURITYSCAN: (&str, &str) = ("service", "securityscan");
const S1: (&str, &str) = ("security", "S1");

/// machine1 in region r1, zone z11, with the given pods placed on it.
fn machine1_with(existing: &[phalanx_engine::PodDemand]) -> phalanx_engine::ClusterSnapshot {
    let mut c = cluster(vec![node("machine1", &[("region", "r1"), ("zone", "z11")])]);
    for p in existing {
        place(&mut c, p, "machine1");
    }
    c
}

fn service_in(v: &[&str]) -> phalanx_engine::LabelSelector {
    expr("service", In(values(v)))
}

#[test]
fn a_pod_without_terms_fits_an_empty_node() {
    // "A pod that has no required pod affinity scheduling rules can schedule onto a
    // node with no existing pods"
    let c = machine1_with(&[]);
    assert_eq!(verdict(&c, &pod("p", &[]).build(), "machine1"), Ok(()));
}

#[test]
fn affinity_with_in_and_not_in_matching_the_existing_pod() {
    let c = machine1_with(&[pod("e", &[SECURITYSCAN]).build()]);
    // "satisfies with requiredDuringSchedulingIgnoredDuringExecution in PodAffinity
    // using In operator that matches the existing pod"
    let p = pod("p", &[S1])
        .affinity(term(service_in(&["securityscan", "value2"]), "region"))
        .build();
    assert_eq!(verdict(&c, &p, "machine1"), Ok(()));
    // "satisfies the pod with ... using not in operator in labelSelector that
    // matches the existing pod"
    let p = pod("p", &[S1])
        .affinity(term(
            expr("service", NotIn(values(&["securityscan3", "value3"]))),
            "region",
        ))
        .build();
    assert_eq!(verdict(&c, &p, "machine1"), Ok(()));
}

#[test]
fn affinity_looks_only_in_the_terms_namespaces() {
    // "Does not satisfy the PodAffinity with labelSelector because of diff Namespace"
    let c = machine1_with(&[pod("e", &[SECURITYSCAN]).namespace("ns").build()]);
    let mut t = term(service_in(&["securityscan", "value2"]), "region");
    t.namespaces = NamespaceScope::own("DiffNameSpace");
    let p = pod("p", &[S1]).affinity(t).build();
    assert_eq!(verdict(&c, &p, "machine1"), Err(UnfitReason::PodAffinity));
}

#[test]
fn affinity_with_an_unmatching_selector_fails() {
    // "Doesn't satisfy the PodAffinity because of unmatching labelSelector with the
    // existing pod"
    let c = machine1_with(&[pod("e", &[SECURITYSCAN]).build()]);
    let p = pod("p", &[SECURITYSCAN])
        .affinity(term(service_in(&["antivirusscan", "value2"]), "region"))
        .build();
    assert_eq!(verdict(&c, &p, "machine1"), Err(UnfitReason::PodAffinity));
}

#[test]
fn several_affinity_terms_are_anded() {
    let c = machine1_with(&[pod("e", &[SECURITYSCAN]).build()]);
    let first = term(
        exprs(vec![("service", Exists), ("wrongkey", DoesNotExist)]),
        "region",
    );
    // "satisfies the PodAffinity with different label Operators in multiple
    // RequiredDuringSchedulingIgnoredDuringExecution"
    let p = pod("p", &[S1])
        .affinity(first.clone())
        .affinity(term(
            exprs(vec![
                ("service", In(values(&["securityscan"]))),
                ("service", NotIn(values(&["WrongValue"]))),
            ]),
            "region",
        ))
        .build();
    assert_eq!(verdict(&c, &p, "machine1"), Ok(()));
    // "The labelSelector requirements(items of matchExpressions) are ANDed, the pod
    // cannot schedule onto the node because one of the matchExpression item don't
    // match."
    let p = pod("p", &[S1])
        .affinity(first)
        .affinity(term(
            exprs(vec![
                ("service", In(values(&["securityscan2"]))),
                ("service", NotIn(values(&["WrongValue"]))),
            ]),
            "region",
        ))
        .build();
    assert_eq!(verdict(&c, &p, "machine1"), Err(UnfitReason::PodAffinity));
}

#[test]
fn anti_affinity_and_its_symmetry() {
    let affinity = term(service_in(&["securityscan", "value2"]), "region");
    let antivirus = term(service_in(&["antivirusscan", "value2"]), "node");
    // "satisfies the PodAffinity and PodAntiAffinity with the existing pod"
    let c = machine1_with(&[pod("e", &[SECURITYSCAN]).build()]);
    let p = pod("p", &[S1])
        .affinity(affinity.clone())
        .anti(antivirus.clone())
        .build();
    assert_eq!(verdict(&c, &p, "machine1"), Ok(()));
    // "satisfies the PodAffinity and PodAntiAffinity and PodAntiAffinity symmetry
    // with the existing pod"
    let c = machine1_with(&[pod("e", &[SECURITYSCAN]).anti(antivirus.clone()).build()]);
    assert_eq!(verdict(&c, &p, "machine1"), Ok(()));
    // "satisfies the PodAffinity but doesn't satisfy the PodAntiAffinity with the
    // existing pod"
    let c = machine1_with(&[pod("e", &[SECURITYSCAN]).build()]);
    let p = pod("p", &[S1])
        .affinity(affinity.clone())
        .anti(term(service_in(&["securityscan", "value2"]), "zone"))
        .build();
    assert_eq!(
        verdict(&c, &p, "machine1"),
        Err(UnfitReason::PodAntiAffinity)
    );
    // "satisfies the PodAffinity and PodAntiAffinity but doesn't satisfy
    // PodAntiAffinity symmetry with the existing pod"
    let c = machine1_with(&[pod("e", &[SECURITYSCAN])
        .anti(term(service_in(&["securityscan", "value2"]), "zone"))
        .build()]);
    let p = pod("p", &[SECURITYSCAN])
        .affinity(affinity)
        .anti(antivirus)
        .build();
    assert_eq!(
        verdict(&c, &p, "machine1"),
        Err(UnfitReason::ExistingPodsAntiAffinity)
    );
}

#[test]
fn existing_anti_affinity_binds_pods_without_terms() {
    let existing = |op| {
        pod("e", &[SECURITYSCAN])
            .anti(term(expr("service", op), "zone"))
            .build()
    };
    let p = pod("p", &[SECURITYSCAN]).build();
    // "verify that PodAntiAffinity from existing pod is respected when pod has no
    // AntiAffinity constraints. doesn't satisfy PodAntiAffinity symmetry with the
    // existing pod"
    let c = machine1_with(&[existing(In(values(&["securityscan", "value2"])))]);
    assert_eq!(
        verdict(&c, &p, "machine1"),
        Err(UnfitReason::ExistingPodsAntiAffinity)
    );
    // "... satisfy PodAntiAffinity symmetry with the existing pod"
    let c = machine1_with(&[existing(NotIn(values(&["securityscan", "value2"])))]);
    assert_eq!(verdict(&c, &p, "machine1"), Ok(()));
}

#[test]
fn a_pod_that_does_not_match_its_own_term_needs_a_matching_pod() {
    // "pod matches its own Label in PodAffinity and that matches the existing pod
    // Labels": neither the pod nor the existing one matches the term.
    let mut c = cluster(vec![
        node("machine1", &[("region", "r1")]),
        node("machine2", &[("region", "r2")]),
    ]);
    place(&mut c, &pod("e", &[SECURITYSCAN]).build(), "machine2");
    let p = pod("p", &[SECURITYSCAN])
        .affinity(term(
            expr("service", NotIn(values(&["securityscan", "value2"]))),
            "region",
        ))
        .build();
    assert_eq!(verdict(&c, &p, "machine1"), Err(UnfitReason::PodAffinity));
}

#[test]
fn the_first_pod_of_a_self_affine_group_goes_anywhere_with_the_key() {
    // TestRequiredAffinityMultipleNodes: "The first pod of the collection can only
    // be scheduled on nodes labelled with the requested topology keys"
    let mut c = cluster(vec![
        node("machine1", &[("region", "r1"), ("zone", "z11")]),
        node("machine2", &[("zone", "z12")]),
    ]);
    let member = || {
        pod("p", &[("foo", "bar")])
            .affinity(term(sel(&[("foo", "bar")]), "region"))
            .build()
    };
    assert_eq!(verdict(&c, &member(), "machine1"), Ok(()));
    assert_eq!(
        verdict(&c, &member(), "machine2"),
        Err(UnfitReason::PodAffinity)
    );
    // Once one member is placed, later ones must join its region.
    place(&mut c, &member(), "machine1");
    c.add_node(node("machine3", &[("region", "r2")])).unwrap();
    assert_eq!(fitting(&c, &member()), vec!["machine1"]);
}

#[test]
fn affinity_to_pods_in_a_domain_admits_every_node_of_it() {
    // TestRequiredAffinityMultipleNodes: "A pod can be scheduled onto all the nodes
    // that have the same topology key & label value with one of them has an
    // existing pod that matches the affinity rules"
    let mut c = cluster(vec![
        node("machine1", &[("zone", "az1"), ("hostname", "h1")]),
        node("machine2", &[("zone", "az1"), ("hostname", "h2")]),
        node("machine3", &[("zone", "az2")]),
    ]);
    place(&mut c, &pod("e", &[("foo", "bar")]).build(), "machine1");
    let p = pod("p", &[])
        .affinity(term(sel(&[("foo", "bar")]), "zone"))
        .build();
    assert_eq!(fitting(&c, &p), vec!["machine1", "machine2"]);
}

#[test]
fn namespace_selector_follows_namespace_labels() {
    // TestRequiredAffinitySingleNode's namespaceSelector cases: a term whose
    // namespaceSelector matches the existing pod's namespace's labels.
    let mut c = machine1_with(&[]);
    place(
        &mut c,
        &pod("e", &[SECURITYSCAN]).namespace("subteam").build(),
        "machine1",
    );
    let mut t = term(service_in(&["securityscan"]), "region");
    t.namespaces = NamespaceScope {
        names: vec![],
        selector: Some(sel(&[("team", "team1")])),
    };
    let p = pod("p", &[]).affinity(t).build();
    assert_eq!(verdict(&c, &p, "machine1"), Err(UnfitReason::PodAffinity));
    c.set_namespace_labels("subteam", labels(&[("team", "team1")]));
    assert_eq!(verdict(&c, &p, "machine1"), Ok(()));
    c.remove_namespace("subteam");
    assert_eq!(verdict(&c, &p, "machine1"), Err(UnfitReason::PodAffinity));
}

#[test]
fn anti_affine_replicas_land_on_different_hosts_and_counts_follow_release() {
    let mut c = cluster(vec![
        node("a", &[("zone", "z1")]),
        node("b", &[("zone", "z1")]),
    ]);
    let replica = |i: usize| {
        pod(&format!("web-{i}"), &[("app", "web")])
            .anti(term(sel(&[("app", "web")]), HOSTNAME))
            .build()
    };
    let mut policy = policy();
    let first = chosen(&c, policy.as_mut(), &replica(0)).unwrap();
    let p0 = place(&mut c, &replica(0), &first);
    let second = chosen(&c, policy.as_mut(), &replica(1)).unwrap();
    assert_ne!(first, second);
    let p1 = place(&mut c, &replica(1), &second);
    assert_eq!(chosen(&c, policy.as_mut(), &replica(2)), None);
    let mut scratch = phalanx_engine::CycleScratch::default();
    let outcome = phalanx_engine::schedule_one(&c, policy.as_mut(), &replica(2), &mut scratch);
    let phalanx_engine::CycleOutcome::Unschedulable { nodes, reasons } = outcome else {
        panic!("placed a third anti-affine replica");
    };
    assert_eq!(
        phalanx_engine::unschedulable_message(nodes, &reasons),
        "0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules."
    );
    // Releasing one replica frees its host, and only that one.
    c.release(&replica(0), &p0).unwrap();
    assert_eq!(fitting(&c, &replica(2)), vec![first.clone()]);
    c.release(&replica(1), &p1).unwrap();
    assert_eq!(fitting(&c, &replica(2)).len(), 2);
}

#[test]
fn relabelling_or_removing_a_node_moves_its_pods_between_domains() {
    let mut c = cluster(vec![
        node("a", &[("zone", "z1")]),
        node("b", &[("zone", "z2")]),
    ]);
    let web = pod("web", &[("app", "web")])
        .anti(term(sel(&[("app", "web")]), "zone"))
        .build();
    place(&mut c, &web, "a");
    let p = pod("p", &[("app", "web")]).build();
    assert_eq!(fitting(&c, &p), vec!["b"]);
    // Node a moves to zone z2: now b shares its zone and is blocked too.
    c.upsert_node(node("a", &[("zone", "z2")])).unwrap();
    assert!(fitting(&c, &p).is_empty());
    c.remove_node("a");
    assert_eq!(fitting(&c, &p), vec!["b"]);
}
