//! Whatever claims, PVs and pods: no pod lands where its bound PV's node
//! affinity excludes it, and no PV is ever assumed for two claims.

use std::collections::HashMap;

use phalanx_engine::{ClaimSpec, VolumeBinding};
use proptest::prelude::*;

use super::support::*;

const NODES: [&str; 4] = ["a", "b", "c", "d"];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn placements_respect_pv_affinity_and_never_share_a_pv(
        volumes in prop::collection::vec((0usize..NODES.len(), 1u64..4), 1..8),
        pods in prop::collection::vec((prop::collection::vec(0usize..10, 1..3), any::<bool>()), 1..12),
        bound in prop::collection::vec(prop::option::of(0usize..8), 10),
    ) {
        let mut c = cluster(&NODES);
        for (i, (node, gib)) in volumes.iter().enumerate() {
            c.volumes_mut().upsert_volume(pv(&format!("pv{i}"), "wait", *gib, Some(NODES[*node])));
        }
        // Ten claims; some bound to a PV (then that PV is theirs), the others
        // waiting for their first consumer.
        let mut owner: HashMap<usize, usize> = HashMap::new();
        for (i, b) in bound.iter().enumerate() {
            let spec = match b {
                Some(v) if *v < volumes.len() && !owner.contains_key(v) => {
                    owner.insert(*v, i);
                    let mut spec = bound_claim(&format!("c{i}"), "wait", &format!("pv{v}"));
                    spec.request_bytes = 1;
                    spec
                }
                _ => claim(&format!("c{i}"), "wait"),
            };
            c.volumes_mut().upsert_claim(spec);
        }
        for (v, i) in &owner {
            let mut spec = c.volumes().volume(&format!("pv{v}")).unwrap().clone();
            spec.claim_ref = Some(format!("default/c{i}"));
            c.volumes_mut().upsert_volume(spec);
        }
        let mut placed = Vec::new();
        for (n, (claims, _)) in pods.iter().enumerate() {
            let names: Vec<String> = claims.iter().map(|i| format!("c{i}")).collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let p = pod(&format!("p{n}"), &refs);
            if let Some(node) = schedule_and_place(&mut c, &p) {
                placed.push((p, node));
            }
        }
        // Release some, as failed bindings would.
        for ((p, _), (_, release)) in placed.iter().zip(&pods) {
            if *release {
                let id = c.node_id(&placed.iter().find(|(q, _)| q.name == p.name).unwrap().1).unwrap();
                let placement = phalanx_engine::Placement { node: id, gpus: Default::default() };
                c.release(p, &placement).unwrap();
            }
        }
        let mut chosen: HashMap<String, String> = HashMap::new();
        for ((p, node), (_, released)) in placed.iter().zip(&pods) {
            let labels = &c.node(c.node_id(node).unwrap()).labels;
            for key in &p.volumes.as_ref().unwrap().claims {
                let claim: &ClaimSpec = c.volumes().claim(key).unwrap();
                if let Some(v) = &claim.volume_name {
                    prop_assert!(c.volumes().volume(v).unwrap().admits(labels),
                        "{} on {node} but its PV {v} excludes it", p.name);
                }
            }
            if *released {
                continue;
            }
            for binding in c.volume_bindings(p) {
                if let VolumeBinding::PreBind { claim_name, volume, .. } = binding {
                    prop_assert!(c.volumes().volume(volume).unwrap().admits(labels));
                    if let Some(other) = chosen.insert(volume.clone(), claim_name.clone()) {
                        prop_assert_eq!(&other, claim_name, "PV {} matched to two claims", volume);
                    }
                }
            }
        }
    }
}
