//! Properties over random clusters and gangs: all or nothing, and a placed gang
//! inside one domain of every required level.

use phalanx_engine::{
    place_gang, schedule_one, ClusterSnapshot, CycleOutcome, CycleScratch, GpuDemand,
    ModelConstraint, PodDemand, TopologyLevel,
};
use proptest::prelude::*;

use super::support::{
    accounting, cluster, gang, labelled_node, policy, values_used, workers, CLIQUE, RACK, ZONE,
};

/// Places a few unrelated pods, so that gangs meet a partly used cluster.
fn occupy(c: &mut ClusterSnapshot, busy: Vec<u32>) {
    let mut p = policy();
    let mut scratch = CycleScratch::default();
    for (i, gpus) in busy.into_iter().enumerate() {
        let pod = PodDemand::new(
            format!("other-{i}"),
            1_000,
            1,
            GpuDemand::Whole { count: gpus.max(1) },
            ModelConstraint::Any,
        )
        .unwrap();
        if let CycleOutcome::Placed(pl) = schedule_one(c, p.as_mut(), &pod, &mut scratch) {
            c.place(&pod, &pl).unwrap();
        }
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
        occupy(&mut c, busy);
        let before = accounting(&c);
        let members = workers(size, gpus_each);
        let min_member = size.saturating_sub(slack).max(1);
        let racks_level = [TopologyLevel::preferred(RACK)];
        let topology: &[TopologyLevel<'_>] = if rack_key { &racks_level } else { &[] };
        match place_gang(&mut c, p.as_mut(), &gang(&members, min_member, topology), &mut scratch).unwrap() {
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

    /// Cliques are named without their rack, so some cross racks (the label
    /// mistake the engine must survive); racks nest in zones; some nodes have
    /// no clique label.
    #[test]
    fn a_placed_gang_lies_in_one_domain_of_every_required_level(
        nodes in prop::collection::vec((0usize..=8, 0usize..2, 0usize..2, prop::option::of(0usize..3)), 1..8),
        busy in prop::collection::vec(0u32..3, 0..6),
        size in 1usize..16,
        gpus_each in 1u32..4,
        slack in 0usize..3,
        required in (any::<bool>(), any::<bool>(), any::<bool>()),
    ) {
        let mut c = ClusterSnapshot::new();
        for (i, &(gpus, zone, rack, clique)) in nodes.iter().enumerate() {
            let zone_name = format!("z{zone}");
            let rack_name = format!("z{zone}-r{rack}");
            let clique_name = clique.map(|q| format!("c{q}"));
            let mut labels = vec![(ZONE, zone_name.as_str()), (RACK, rack_name.as_str())];
            if let Some(q) = &clique_name {
                labels.push((CLIQUE, q.as_str()));
            }
            c.add_node(labelled_node(&format!("n{i}"), gpus, &labels)).unwrap();
        }
        occupy(&mut c, busy);
        let before = accounting(&c);
        let levels = [
            TopologyLevel { key: CLIQUE, required: required.0 },
            TopologyLevel { key: RACK, required: required.1 },
            TopologyLevel { key: ZONE, required: required.2 },
        ];
        let members = workers(size, gpus_each);
        let min_member = size.saturating_sub(slack).max(1);
        match place_gang(&mut c, policy().as_mut(), &gang(&members, min_member, &levels), &mut CycleScratch::default()).unwrap() {
            Ok(plan) => {
                prop_assert!(plan.placements.len() >= min_member);
                for level in levels.iter().filter(|l| l.required) {
                    let used = values_used(&c, &plan, level.key);
                    prop_assert_eq!(used.len(), 1, "spans {} domains {:?}", level.key, used);
                    prop_assert!(!used.contains(""), "a node without {} was used", level.key);
                }
                if let Some(d) = &plan.domain {
                    let used = values_used(&c, &plan, &d.key);
                    prop_assert_eq!(used.into_iter().collect::<Vec<_>>(), vec![d.value.clone()]);
                } else {
                    prop_assert!(levels.iter().all(|l| !l.required), "no domain reported for a required level");
                }
            }
            Err(failure) => {
                prop_assert_eq!(accounting(&c), before, "failed gang changed the cluster");
                prop_assert!(failure.placeable < min_member);
                prop_assert_eq!(failure.required_key.is_some(), levels.iter().any(|l| l.required));
            }
        }
    }
}
