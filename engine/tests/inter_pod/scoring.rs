//! Preferred terms and ScheduleAnyway spread as scores, blended with the GPU
//! policy's (here BestFit, which prefers the busier node) at the documented
//! weights; and pods without terms scored as before.

use phalanx_engine::LabelOperator::Exists;
use phalanx_engine::WhenUnsatisfiable::ScheduleAnyway;
use phalanx_engine::{ClusterSnapshot, GpuDemand, ModelConstraint, PodDemand};

use crate::support::*;

/// Node `busy` (zone z1) already runs a large plain pod, so BestFit prefers it;
/// node `idle` is in zone z2.
fn busy_and_idle() -> ClusterSnapshot {
    let mut c = cluster(vec![
        node("busy", &[("zone", "z1")]),
        node("idle", &[("zone", "z2")]),
    ]);
    let filler =
        PodDemand::new("filler", 32_000, 0, GpuDemand::None, ModelConstraint::Any).unwrap();
    place(&mut c, &filler, "busy");
    c
}

#[test]
fn the_policy_alone_prefers_the_busy_node() {
    let c = busy_and_idle();
    let plain = PodDemand::new("p", 100, 0, GpuDemand::None, ModelConstraint::Any).unwrap();
    assert_eq!(
        chosen(&c, policy().as_mut(), &plain).as_deref(),
        Some("busy")
    );
    // A pod with labels but no terms, and nothing selecting it: the same choice.
    assert_eq!(
        chosen(&c, policy().as_mut(), &pod("p", &[("app", "x")]).build()).as_deref(),
        Some("busy")
    );
}

#[test]
fn preferred_affinity_outweighs_the_policy() {
    // interpodaffinity/scoring_test.go: "Affinity: pod that matches topology key &
    // pods in nodes will get high score comparing to others"
    let mut c = busy_and_idle();
    place(&mut c, &pod("cache", &[("app", "cache")]).build(), "idle");
    let p = pod("p", &[])
        .preferred(5, term(sel(&[("app", "cache")]), "zone"))
        .build();
    assert_eq!(chosen(&c, policy().as_mut(), &p).as_deref(), Some("idle"));
}

#[test]
fn preferred_anti_affinity_pushes_away() {
    // scoring_test.go: "Anti Affinity: pod that does match existing pods in same
    // topology gets low score"
    let mut c = cluster(vec![
        node("busy", &[("zone", "z1")]),
        node("idle", &[("zone", "z2")]),
    ]);
    place(
        &mut c,
        &pod("noisy", &[("app", "noisy")]).cpu(32_000).build(),
        "busy",
    );
    let p = pod("p", &[])
        .preferred_anti(10, term(sel(&[("app", "noisy")]), "zone"))
        .build();
    assert_eq!(chosen(&c, policy().as_mut(), &p).as_deref(), Some("idle"));
}

#[test]
fn existing_pods_preferred_terms_attract_matching_pods() {
    // scoring_test.go's symmetry cases: "Affinity symmetry: considered only the
    // preferredDuringSchedulingIgnoredDuringExecution in pod affinity symmetry"
    let mut c = busy_and_idle();
    let client = pod("client", &[])
        .preferred(50, term(sel(&[("app", "server")]), "zone"))
        .build();
    place(&mut c, &client, "idle");
    let server = pod("server", &[("app", "server")]).build();
    assert_eq!(
        chosen(&c, policy().as_mut(), &server).as_deref(),
        Some("idle")
    );
    // Once the client is gone, so is the pull.
    let placement = phalanx_engine::Placement {
        node: c.node_id("idle").unwrap(),
        gpus: phalanx_engine::GpuAssignment::default(),
    };
    c.release(&client, &placement).unwrap();
    assert_eq!(
        chosen(&c, policy().as_mut(), &server).as_deref(),
        Some("busy")
    );
}

#[test]
fn schedule_anyway_spread_prefers_the_emptier_domain_but_never_refuses() {
    // podtopologyspread/scoring_test.go: "one constraint on node, all 4 nodes are
    // candidates" in miniature: fewer matching pods score higher.
    let mut c = busy_and_idle();
    for i in 0..2 {
        place(
            &mut c,
            &pod(&format!("w{i}"), &[("app", "web")]).build(),
            "busy",
        );
    }
    let p = pod("p", &[("app", "web")])
        .spread(spread(1, "zone", ScheduleAnyway, expr("app", Exists)))
        .build();
    assert_eq!(chosen(&c, policy().as_mut(), &p).as_deref(), Some("idle"));
    // The emptier node cannot take it: it still goes, skewed.
    let big = pod("p", &[("app", "web")])
        .cpu(40_000)
        .spread(spread(1, "zone", ScheduleAnyway, expr("app", Exists)))
        .build();
    let mut c2 = busy_and_idle();
    place(&mut c2, &pod("hog", &[]).cpu(60_000).build(), "idle");
    assert_eq!(
        chosen(&c2, policy().as_mut(), &big),
        None,
        "fits nowhere by CPU"
    );
    let small = pod("p", &[("app", "web")])
        .cpu(1_000)
        .spread(spread(1, "zone", ScheduleAnyway, expr("app", Exists)))
        .build();
    for i in 0..3 {
        place(
            &mut c2,
            &pod(&format!("w{i}"), &[("app", "web")]).build(),
            "busy",
        );
    }
    place(&mut c2, &pod("filler2", &[]).cpu(3_900).build(), "idle");
    assert_eq!(
        chosen(&c2, policy().as_mut(), &small).as_deref(),
        Some("busy")
    );
}
