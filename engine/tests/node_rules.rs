//! Node-level rules beyond CPU, memory and GPUs, after kube-scheduler's plugin
//! tests: host ports (NodePorts), ephemeral storage, huge pages and extended
//! resources (NodeResourcesFit), with property tests that no sequence of
//! placements and releases breaks them.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use phalanx_engine::policy::PolicyConfig;
use phalanx_engine::{
    build_policy, schedule_one, unschedulable_message, ClusterSnapshot, CycleOutcome, CycleScratch,
    GpuAssignment, GpuDemand, HostIp, HostPort, ModelConstraint, NodeSpec, Placement, PodDemand,
    PolicyName, PortProtocol, ScalarRequest, UnfitReason, WorkloadSource,
};
use proptest::prelude::*;

fn node(name: &str, scalar: &[(&str, u64)]) -> NodeSpec {
    NodeSpec {
        name: name.into(),
        cpu_milli: 64_000,
        memory_mib: 64 << 10,
        max_pods: 110,
        scalar_resources: scalar.iter().map(|(n, a)| (n.to_string(), *a)).collect(),
        ..NodeSpec::default()
    }
}

fn cluster(nodes: Vec<NodeSpec>) -> ClusterSnapshot {
    let mut c = ClusterSnapshot::new();
    for n in nodes {
        c.add_node(n).unwrap();
    }
    c
}

fn pod(name: &str) -> PodDemand {
    PodDemand::new(name, 100, 100, GpuDemand::None, ModelConstraint::Any).unwrap()
}

fn port(port: u16, protocol: PortProtocol, ip: &str) -> HostPort {
    HostPort {
        port,
        protocol,
        ip: if ip.is_empty() {
            HostIp::All
        } else {
            HostIp::Only(ip.into())
        },
    }
}

fn request(name: &str, amount: u64) -> ScalarRequest {
    ScalarRequest {
        name: name.into(),
        amount,
    }
}

fn schedule(c: &ClusterSnapshot, p: &PodDemand) -> CycleOutcome {
    let mut policy = build_policy(
        PolicyName::BestFit,
        &PolicyConfig {
            seed: 0,
            workload: WorkloadSource::Online,
        },
    );
    schedule_one(c, policy.as_mut(), p, &mut CycleScratch::default())
}

/// Places `p` wherever a cycle puts it; panics if it does not fit.
fn place(c: &mut ClusterSnapshot, p: &PodDemand) -> Placement {
    let CycleOutcome::Placed(placement) = schedule(c, p) else {
        panic!("{} does not fit", p.name)
    };
    c.place(p, &placement).unwrap();
    placement
}

fn message(c: &ClusterSnapshot, p: &PodDemand) -> String {
    match schedule(c, p) {
        CycleOutcome::Unschedulable { nodes, reasons } => unschedulable_message(nodes, &reasons),
        CycleOutcome::Placed(placement) => panic!("placed on {:?}", placement.node),
    }
}

#[test]
fn same_host_port_never_shares_a_node() {
    let mut c = cluster(vec![node("n1", &[])]);
    let web = |name| pod(name).with_host_ports(vec![port(8080, PortProtocol::Tcp, "")]);
    place(&mut c, &web("a"));
    assert_eq!(
        message(&c, &web("b")),
        "0/1 nodes are available: 1 node(s) didn't have free ports for the requested pod ports."
    );
    // Another protocol, or another port, still fits beside it.
    place(
        &mut c,
        &pod("udp").with_host_ports(vec![port(8080, PortProtocol::Udp, "")]),
    );
    place(
        &mut c,
        &pod("other").with_host_ports(vec![port(8081, PortProtocol::Tcp, "")]),
    );
}

#[test]
fn a_released_port_is_free_again_and_placement_moves_to_a_free_node() {
    let mut c = cluster(vec![node("n1", &[]), node("n2", &[])]);
    let dns = |name| pod(name).with_host_ports(vec![port(53, PortProtocol::Udp, "10.0.0.1")]);
    let first = place(&mut c, &dns("a"));
    let second = place(&mut c, &dns("b"));
    assert_ne!(
        first.node, second.node,
        "the second copy goes to the other node"
    );
    assert!(matches!(
        schedule(&c, &dns("c")),
        CycleOutcome::Unschedulable { .. }
    ));
    c.release(&dns("a"), &first).unwrap();
    assert_eq!(place(&mut c, &dns("c")).node, first.node);
    assert!(
        c.release(&dns("never-placed-here"), &second).is_ok(),
        "same ports, same demand"
    );
    assert!(
        c.release(
            &pod("x").with_host_ports(vec![port(9, PortProtocol::Tcp, "")]),
            &second
        )
        .is_err(),
        "releasing a port that is not held is refused"
    );
}

/// NodeResourcesFit's cases for resources other than CPU and memory.
#[test]
fn scalar_resources_fit_by_name() {
    let c = cluster(vec![node(
        "n1",
        &[
            ("example.com/aaa", 5),
            ("ephemeral-storage", 20 << 30),
            ("hugepages-2Mi", 8 << 21),
        ],
    )]);
    let cases: &[(&str, Vec<ScalarRequest>, Result<(), &str>)] = &[
        ("nothing asked", vec![], Ok(())),
        (
            "extended resource fits",
            vec![request("example.com/aaa", 5)],
            Ok(()),
        ),
        (
            "extended resource over allocatable",
            vec![request("example.com/aaa", 6)],
            Err("example.com/aaa"),
        ),
        (
            "extended resource the node lacks",
            vec![request("example.com/bbb", 1)],
            Err("example.com/bbb"),
        ),
        (
            "ephemeral storage over allocatable",
            vec![request("ephemeral-storage", 21 << 30)],
            Err("ephemeral-storage"),
        ),
        (
            "huge pages within allocatable",
            vec![request("hugepages-2Mi", 4 << 21)],
            Ok(()),
        ),
        (
            "huge pages of a size the node lacks",
            vec![request("hugepages-1Gi", 1 << 30)],
            Err("hugepages-1Gi"),
        ),
    ];
    let id = c.node_id("n1").unwrap();
    for (name, requests, want) in cases {
        let p = pod(name).with_scalar(requests.clone());
        let got = c.check_fit(id, &p);
        let want = want.map_err(|r| UnfitReason::InsufficientResource(r.into()));
        assert_eq!(got, want, "{name}");
    }
    let p = pod("x").with_scalar(vec![request("example.com/bbb", 1)]);
    assert_eq!(
        message(&c, &p),
        "0/1 nodes are available: 1 Insufficient example.com/bbb."
    );
}

#[test]
fn scalar_resources_are_taken_and_given_back() {
    let mut c = cluster(vec![node("n1", &[("rdma/hca", 3)])]);
    let p = |name| pod(name).with_scalar(vec![request("rdma/hca", 2)]);
    let first = place(&mut c, &p("a"));
    assert!(matches!(
        schedule(&c, &p("b")),
        CycleOutcome::Unschedulable { .. }
    ));
    c.release(&p("a"), &first).unwrap();
    place(&mut c, &p("b"));
    // Allocatable shrinking below what is held keeps the hold; nothing new fits.
    c.upsert_node(node("n1", &[("rdma/hca", 1)])).unwrap();
    let one = pod("c").with_scalar(vec![request("rdma/hca", 1)]);
    assert!(!c.fits(c.node_id("n1").unwrap(), &one));
}

#[test]
fn pods_without_ports_or_scalars_ignore_them() {
    let mut c = cluster(vec![node("n1", &[])]);
    place(
        &mut c,
        &pod("web").with_host_ports(vec![port(80, PortProtocol::Tcp, "")]),
    );
    place(&mut c, &pod("plain"));
}

// ---- properties -----------------------------------------------------------------

#[derive(Debug, Clone)]
enum Step {
    /// Schedule a pod with these ports (port, protocol, ip index) and `rdma/hca`.
    Add(Vec<(u16, u8, u8)>, u64),
    /// Release the placed pod at this index (modulo how many are placed).
    Remove(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (prop::collection::vec((80u16..84, 0u8..2, 0u8..3), 0..3), 0u64..3)
            .prop_map(|(ports, hca)| Step::Add(ports, hca)),
        1 => any::<usize>().prop_map(Step::Remove),
    ]
}

fn demand(i: usize, ports: &[(u16, u8, u8)], hca: u64) -> PodDemand {
    // The API server refuses a pod naming one port and protocol twice.
    let mut ports = ports.to_vec();
    ports.sort_by_key(|&(p, proto, _)| (p, proto));
    ports.dedup_by_key(|&mut (p, proto, _)| (p, proto));
    let host_ports = ports
        .iter()
        .map(|&(p, proto, ip)| {
            let protocol = if proto == 0 {
                PortProtocol::Tcp
            } else {
                PortProtocol::Udp
            };
            port(p, protocol, ["", "10.0.0.1", "10.0.0.2"][ip as usize])
        })
        .collect();
    let scalar = if hca > 0 {
        vec![request("rdma/hca", hca)]
    } else {
        vec![]
    };
    pod(&format!("p{i}"))
        .with_host_ports(host_ports)
        .with_scalar(scalar)
}

proptest! {
    /// Whatever is added and removed, no two pods on a node hold conflicting host
    /// ports, no node gives out more `rdma/hca` than it has, and the snapshot's
    /// own record matches the pods placed.
    #[test]
    fn no_port_conflict_and_no_scalar_over_commit(steps in prop::collection::vec(step(), 1..40)) {
        let mut c = cluster(vec![node("n1", &[("rdma/hca", 3)]), node("n2", &[("rdma/hca", 2)])]);
        let mut placed: Vec<(PodDemand, Placement)> = Vec::new();
        for (i, s) in steps.iter().enumerate() {
            match s {
                Step::Add(ports, hca) => {
                    let p = demand(i, ports, *hca);
                    if let CycleOutcome::Placed(placement) = schedule(&c, &p) {
                        prop_assert_eq!(placement.gpus, GpuAssignment::default());
                        c.place(&p, &placement).unwrap();
                        placed.push((p, placement));
                    }
                }
                Step::Remove(k) if !placed.is_empty() => {
                    let (p, placement) = placed.swap_remove(k % placed.len());
                    c.release(&p, &placement).unwrap();
                }
                Step::Remove(_) => {}
            }
            for node in c.nodes() {
                let id = c.node_id(&node.name).unwrap();
                let here: Vec<&PodDemand> =
                    placed.iter().filter(|(_, pl)| pl.node == id).map(|(p, _)| p).collect();
                let ports: Vec<&HostPort> = here.iter().flat_map(|p| &p.host_ports).collect();
                for (a, x) in ports.iter().enumerate() {
                    for y in &ports[a + 1..] {
                        prop_assert!(!x.conflicts_with(y), "{:?} and {:?} on {}", x, y, node.name);
                    }
                }
                let hca: u64 = here.iter().flat_map(|p| &p.scalar).map(|r| r.amount).sum();
                let offered = node.scalar_resources().iter().find(|r| &*r.name == "rdma/hca").unwrap();
                prop_assert!(hca <= offered.allocatable);
                prop_assert_eq!(hca, offered.requested);
                prop_assert_eq!(ports.len(), node.used_ports().len());
            }
        }
    }
}

// ---- preferences: NodeAffinity and TaintToleration scores ------------------------

mod preferences {
    use super::*;
    use phalanx_engine::{
        NodePlacementRules, NodeSelectorRequirement, PreferredNodeTerm, SelectorOperator, Taint,
        TaintEffect, Toleration, TolerationOperator,
    };

    fn labelled(name: &str, zone: &str, soft_taint: bool) -> NodeSpec {
        let mut spec = node(name, &[]);
        spec.labels.insert("zone".into(), zone.into());
        if soft_taint {
            spec.taints.push(Taint {
                key: "spot".into(),
                value: String::new(),
                effect: TaintEffect::PreferNoSchedule,
            });
        }
        spec
    }

    fn zone_term(weight: i32, zone: &str) -> PreferredNodeTerm {
        PreferredNodeTerm {
            weight,
            requirements: vec![NodeSelectorRequirement {
                key: "zone".into(),
                operator: SelectorOperator::In(vec![zone.into()]),
            }],
        }
    }

    /// n1 (zone a) and n2 (zone b) alike for the policy; n2 ranks first, so
    /// the policy alone picks it.
    fn two_nodes(soft_taint_on_n2: bool) -> ClusterSnapshot {
        let mut c = cluster(vec![
            labelled("n1", "a", false),
            labelled("n2", "b", soft_taint_on_n2),
        ]);
        c.set_ranks(&[1, 0]).unwrap();
        c
    }

    fn chosen(c: &ClusterSnapshot, p: &PodDemand) -> String {
        let CycleOutcome::Placed(placement) = schedule(c, p) else {
            panic!("unschedulable")
        };
        c.node(placement.node).name.clone()
    }

    fn with_rules(rules: NodePlacementRules) -> PodDemand {
        pod("p").with_rules(rules)
    }

    #[test]
    fn the_policy_alone_takes_the_first_ranked_node() {
        assert_eq!(chosen(&two_nodes(false), &pod("p")), "n2");
    }

    #[test]
    fn preferred_node_affinity_outweighs_the_policy() {
        let p = with_rules(NodePlacementRules {
            preferred_terms: vec![zone_term(1, "a")],
            ..Default::default()
        });
        assert_eq!(chosen(&two_nodes(false), &p), "n1");
    }

    #[test]
    fn the_heavier_preferred_term_wins() {
        let p = with_rules(NodePlacementRules {
            preferred_terms: vec![zone_term(10, "a"), zone_term(20, "b")],
            ..Default::default()
        });
        assert_eq!(chosen(&two_nodes(false), &p), "n2");
        let p = with_rules(NodePlacementRules {
            preferred_terms: vec![zone_term(30, "a"), zone_term(20, "b")],
            ..Default::default()
        });
        assert_eq!(chosen(&two_nodes(false), &p), "n1");
    }

    #[test]
    fn an_empty_preferred_term_matches_nothing() {
        let p = with_rules(NodePlacementRules {
            preferred_terms: vec![PreferredNodeTerm {
                weight: 50,
                requirements: vec![],
            }],
            ..Default::default()
        });
        assert_eq!(chosen(&two_nodes(false), &p), "n2");
    }

    #[test]
    fn an_intolerable_prefer_no_schedule_taint_steers_away() {
        let c = two_nodes(true);
        assert_eq!(chosen(&c, &pod("p")), "n1");
        let tolerant = with_rules(NodePlacementRules {
            tolerations: vec![Toleration {
                key: Some("spot".into()),
                operator: TolerationOperator::Exists,
                value: String::new(),
                effect: Some(TaintEffect::PreferNoSchedule),
            }],
            ..Default::default()
        });
        assert_eq!(
            chosen(&c, &tolerant),
            "n2",
            "a tolerated taint costs nothing"
        );
        let wrong_effect = with_rules(NodePlacementRules {
            tolerations: vec![Toleration {
                key: Some("spot".into()),
                operator: TolerationOperator::Exists,
                value: String::new(),
                effect: Some(TaintEffect::NoSchedule),
            }],
            ..Default::default()
        });
        assert_eq!(chosen(&c, &wrong_effect), "n1");
    }

    #[test]
    fn taint_outweighs_node_affinity() {
        // Affinity to the tainted node at full weight (2 x 100) loses to the
        // taint (3 x 100), as with kube-scheduler's default weights.
        let p = with_rules(NodePlacementRules {
            preferred_terms: vec![zone_term(100, "b")],
            ..Default::default()
        });
        let mut c = cluster(vec![labelled("n1", "a", false), labelled("n2", "b", true)]);
        assert_eq!(chosen(&c, &p), "n1");
        c.remove_node("n1");
        assert_eq!(chosen(&c, &p), "n2", "a soft taint never filters");
    }

    #[test]
    fn uniform_preferences_leave_the_policy_choice() {
        let mut c = cluster(vec![labelled("n1", "a", true), labelled("n2", "a", true)]);
        c.set_ranks(&[1, 0]).unwrap();
        let p = with_rules(NodePlacementRules {
            preferred_terms: vec![zone_term(5, "a")],
            ..Default::default()
        });
        assert_eq!(chosen(&c, &p), "n2");
        assert_eq!(chosen(&c, &pod("plain")), "n2");
    }
}
