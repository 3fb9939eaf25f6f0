//! Topology: levels tightest first, the tightest domain that holds the gang
//! first, required levels never spanned.

use phalanx_engine::{
    DomainOrder, GangError, GpuAssignment, GpuDemand, ModelConstraint, NodeId, Placement,
    PodDemand, TopologyLevel,
};

use super::support::{
    accounting, cluster, domain, gang, labelled_cluster, labelled_node, place, values_used,
    workers, CLIQUE, RACK, ZONE,
};

const PREFERRED_RACK: [TopologyLevel<'static>; 1] = [TopologyLevel {
    key: RACK,
    required: false,
}];
const REQUIRED_RACK: [TopologyLevel<'static>; 1] = [TopologyLevel {
    key: RACK,
    required: true,
}];

#[test]
fn the_tightest_rack_that_fits_is_chosen_over_the_emptiest() {
    // Free GPUs: rack a 16, rack b 8, rack c 32. Six one-GPU workers.
    let racks = [
        (8, "a"),
        (8, "a"),
        (8, "b"),
        (8, "c"),
        (8, "c"),
        (8, "c"),
        (8, "c"),
    ];
    let members = workers(6, 1);

    let mut c = cluster(&racks);
    let plan = place(&mut c, &gang(&members, 6, &PREFERRED_RACK)).unwrap();
    assert_eq!(
        domain(&plan),
        Some((RACK, "b")),
        "8 free GPUs is the tightest fit"
    );

    let mut c = cluster(&racks);
    let emptiest = phalanx_engine::GangSpec {
        domain_order: DomainOrder::Emptiest,
        ..gang(&members, 6, &PREFERRED_RACK)
    };
    let plan = place(&mut c, &emptiest).unwrap();
    assert_eq!(
        domain(&plan),
        Some((RACK, "c")),
        "the old order, kept on request"
    );
}

#[test]
fn a_domain_too_small_is_skipped_for_gpus_or_for_cpu() {
    // Rack a has 4 free GPUs: too few for 6 workers, however tight.
    let mut c = cluster(&[(4, "a"), (8, "b"), (8, "b"), (8, "c"), (8, "c"), (8, "c")]);
    let members = workers(6, 1);
    let plan = place(&mut c, &gang(&members, 6, &PREFERRED_RACK)).unwrap();
    assert_eq!(domain(&plan), Some((RACK, "b")));

    // Rack a has the GPUs but 16 cores, and six workers ask for 24.
    let mut c = cluster(&[(8, "b"), (8, "b")]);
    let mut starved = labelled_node("starved", 8, &[(RACK, "a")]);
    starved.cpu_milli = 16_000;
    c.add_node(starved).unwrap();
    let plan = place(&mut c, &gang(&members, 6, &PREFERRED_RACK)).unwrap();
    assert_eq!(domain(&plan), Some((RACK, "b")), "GPU first, then CPU");

    // Rack a has 4,000 free milli-GPU, but in halves: no whole GPU for a worker.
    let mut c = cluster(&[(8, "a"), (8, "b")]);
    let half = PodDemand::new(
        "half",
        1_000,
        1,
        GpuDemand::Share { milli: 500 },
        ModelConstraint::Any,
    )
    .unwrap();
    for g in 0..8 {
        let gpus = GpuAssignment::from_indices([g], 500);
        c.place(
            &half,
            &Placement {
                node: NodeId(0),
                gpus,
            },
        )
        .unwrap();
    }
    let members = workers(2, 1);
    let plan = place(&mut c, &gang(&members, 2, &PREFERRED_RACK)).unwrap();
    assert_eq!(
        domain(&plan),
        Some((RACK, "b")),
        "whole GPUs for whole-GPU members"
    );
}

#[test]
fn a_required_rack_is_never_spanned() {
    // Two workers of 5 GPUs: rack a (three 4-GPU nodes) has 12 free GPUs but no
    // node with 5; racks b and c have one 8-GPU node each. The whole cluster
    // could take the gang (one on b, one on c); no single rack can.
    let racks = [(4, "a"), (4, "a"), (4, "a"), (8, "b"), (8, "c")];
    let members = workers(2, 5);

    let mut c = cluster(&racks);
    let before = accounting(&c);
    let failure = place(&mut c, &gang(&members, 2, &REQUIRED_RACK)).unwrap_err();
    assert_eq!(
        accounting(&c),
        before,
        "a gang that does not fit holds nothing"
    );
    assert_eq!(failure.required_key.as_deref(), Some(RACK));
    assert_eq!(
        failure.to_string(),
        "gang job: only 0 of the 2 required members fit in any one domain of the required \
         topology level topology.phalanx.dev/rack; worker-0: 0/3 nodes are available: \
         3 Insufficient nvidia.com/gpu."
    );

    // With every rack too small for the pre-check, the message says so.
    let mut c = cluster(&[(4, "a"), (4, "b")]);
    let members = workers(6, 1);
    let failure = place(&mut c, &gang(&members, 6, &REQUIRED_RACK)).unwrap_err();
    assert!(
        failure.to_string().ends_with(
            "topology.phalanx.dev/rack; each of the 2 topology.phalanx.dev/rack domains has \
             too little free GPU, CPU or memory for 6 members"
        ),
        "{failure}"
    );

    // A node without the label can take no member of a required-rack gang.
    let mut c = labelled_cluster(&[(8, &[][..])]);
    let failure = place(&mut c, &gang(&members, 6, &REQUIRED_RACK)).unwrap_err();
    assert!(
        failure
            .to_string()
            .ends_with("no node has the label topology.phalanx.dev/rack"),
        "{failure}"
    );
}

#[test]
fn a_preferred_rack_is_spanned_when_no_single_rack_fits() {
    let mut c = cluster(&[(4, "a"), (4, "a"), (4, "a"), (8, "b"), (8, "c")]);
    let members = workers(2, 5);
    let plan = place(&mut c, &gang(&members, 2, &PREFERRED_RACK)).unwrap();
    assert_eq!(plan.domain, None);
    assert_eq!(
        values_used(&c, &plan, RACK),
        ["b", "c"].map(String::from).into()
    );
}

/// Zone z1: rack r1 (cliques c1, c2 of one 8-GPU node each) and rack r2
/// (clique c3, two nodes); zone z2: rack r3 (cliques c4, c5, two nodes each).
fn three_levels() -> phalanx_engine::ClusterSnapshot {
    let n = |clique, rack, zone| [(CLIQUE, clique), (RACK, rack), (ZONE, zone)];
    labelled_cluster(&[
        (8, &n("c1", "r1", "z1")),
        (8, &n("c2", "r1", "z1")),
        (8, &n("c3", "r2", "z1")),
        (8, &n("c3", "r2", "z1")),
        (8, &n("c4", "r3", "z2")),
        (8, &n("c4", "r3", "z2")),
        (8, &n("c5", "r3", "z2")),
        (8, &n("c5", "r3", "z2")),
    ])
}

#[test]
fn cliques_nest_in_racks_in_zones() {
    let levels = [
        TopologyLevel::preferred(CLIQUE),
        TopologyLevel::preferred(RACK),
        TopologyLevel::required(ZONE),
    ];
    // (workers, where they land): the tightest clique that holds them, ties
    // broken by name.
    for (size, expected) in [(4, "c1"), (12, "c3")] {
        let mut c = three_levels();
        let members = workers(size, 1);
        let plan = place(&mut c, &gang(&members, size, &levels)).unwrap();
        assert_eq!(domain(&plan), Some((CLIQUE, expected)), "{size} workers");
    }
    // 20 workers: no clique holds them, rack r3 (32) and zone z1 (32) do; the
    // rack level comes first.
    let mut c = three_levels();
    let members = workers(20, 1);
    let plan = place(&mut c, &gang(&members, 20, &levels)).unwrap();
    assert_eq!(domain(&plan), Some((RACK, "r3")));
    // 40 workers: no zone holds them, and the zone is required.
    let mut c = three_levels();
    let members = workers(40, 1);
    let failure = place(&mut c, &gang(&members, 40, &levels)).unwrap_err();
    assert_eq!(failure.required_key.as_deref(), Some(ZONE));
    // Only preferred, the gang spans zones.
    let preferred = levels.map(|l| TopologyLevel::preferred(l.key));
    let mut c = three_levels();
    let plan = place(&mut c, &gang(&members, 40, &preferred)).unwrap();
    assert_eq!(plan.domain, None);
    assert_eq!(values_used(&c, &plan, ZONE).len(), 2);
}

#[test]
fn a_clique_label_across_two_required_racks_is_split_not_spanned() {
    // Clique cx is mislabelled across racks r1 and r2 (4 GPUs in each).
    let nodes = [
        (4, &[(CLIQUE, "cx"), (RACK, "r1")][..]),
        (4, &[(CLIQUE, "cx"), (RACK, "r2")][..]),
    ];
    let members = workers(6, 1);
    let mut c = labelled_cluster(&nodes);
    let required = [
        TopologyLevel::preferred(CLIQUE),
        TopologyLevel::required(RACK),
    ];
    let failure = place(&mut c, &gang(&members, 6, &required)).unwrap_err();
    assert_eq!(failure.required_key.as_deref(), Some(RACK));

    // Each half of the clique holds 4 workers, and is tried on its own.
    let members = workers(4, 1);
    let plan = place(&mut c, &gang(&members, 4, &required)).unwrap();
    assert_eq!(domain(&plan), Some((CLIQUE, "cx")));
    assert_eq!(values_used(&c, &plan, RACK).len(), 1);

    // With the rack only preferred, the clique is one domain across both racks.
    let mut c = labelled_cluster(&nodes);
    let members = workers(6, 1);
    let preferred = [
        TopologyLevel::preferred(CLIQUE),
        TopologyLevel::preferred(RACK),
    ];
    let plan = place(&mut c, &gang(&members, 6, &preferred)).unwrap();
    assert_eq!(domain(&plan), Some((CLIQUE, "cx")));
}

#[test]
fn min_member_below_members_prefers_a_domain_that_holds_every_member() {
    // Rack a: 4 free GPUs, rack b: 8, rack c: 16. Ten workers, six required.
    let racks = [(4, "a"), (8, "b"), (8, "c"), (8, "c")];
    let members = workers(10, 1);
    let mut c = cluster(&racks);
    let plan = place(&mut c, &gang(&members, 6, &REQUIRED_RACK)).unwrap();
    assert_eq!(
        domain(&plan),
        Some((RACK, "c")),
        "c is the tightest that holds all ten"
    );
    assert_eq!((plan.placements.len(), plan.unplaced.len()), (10, 0));

    // Without rack c, no rack holds all ten: the roomiest that holds six.
    let mut c = cluster(&racks[..2]);
    let plan = place(&mut c, &gang(&members, 6, &REQUIRED_RACK)).unwrap();
    assert_eq!(domain(&plan), Some((RACK, "b")));
    assert_eq!((plan.placements.len(), plan.unplaced.len()), (8, 2));
}

#[test]
fn a_topology_that_cannot_be_honoured_is_an_error() {
    let mut c = cluster(&[(8, "a")]);
    let members = workers(2, 1);
    let empty = [TopologyLevel::preferred("")];
    let err = phalanx_engine::place_gang(
        &mut c,
        super::support::policy().as_mut(),
        &gang(&members, 2, &empty),
        &mut Default::default(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "gang job: topology level 0 has an empty label key"
    );
    let twice = [
        TopologyLevel::preferred(RACK),
        TopologyLevel::required(RACK),
    ];
    let err = phalanx_engine::place_gang(
        &mut c,
        super::support::policy().as_mut(),
        &gang(&members, 2, &twice),
        &mut Default::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, GangError::DuplicateTopologyKey { .. }),
        "{err}"
    );
}
