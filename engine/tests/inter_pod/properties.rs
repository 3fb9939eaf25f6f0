//! Properties: whatever sequence of arrivals and departures, no placement breaks
//! a required (anti-)affinity term or a DoNotSchedule skew, checked against a
//! brute-force reading of the rules; and the incrementally kept counts decide
//! exactly as counts rebuilt from scratch.

use std::collections::BTreeMap;

use phalanx_engine::WhenUnsatisfiable::DoNotSchedule;
use phalanx_engine::{ClusterSnapshot, PodDemand};
use proptest::prelude::*;

use crate::support::*;

const APPS: [&str; 3] = ["web", "db", "cache"];
const ZONES: [&str; 3] = ["z1", "z2", "z3"];

/// What an arriving pod carries: its app, and one rule kind (0 none, 1 anti on
/// hostname, 2 anti on zone, 3 affinity on zone, 4 spread on zone, 5 spread on
/// hostname with maxSkew 2).
#[derive(Debug, Clone, Copy)]
struct Arrival {
    app: usize,
    rule: u8,
    target: usize,
}

fn arrival() -> impl Strategy<Value = Arrival> {
    (0..APPS.len(), 0u8..6, 0..APPS.len()).prop_map(|(app, rule, target)| Arrival {
        app,
        rule,
        target,
    })
}

fn build_pod(i: usize, a: Arrival) -> PodDemand {
    let target = sel(&[("app", APPS[a.target])]);
    let p = pod(&format!("p{i}"), &[("app", APPS[a.app])]);
    match a.rule {
        1 => p.anti(term(target, HOSTNAME)),
        2 => p.anti(term(target, "zone")),
        3 => p.affinity(term(target, "zone")),
        4 => p.spread(spread(1, "zone", DoNotSchedule, target)),
        5 => p.spread(spread(2, HOSTNAME, DoNotSchedule, target)),
        _ => p,
    }
    .build()
}

fn nodes(count: usize) -> ClusterSnapshot {
    cluster(
        (0..count)
            .map(|i| node(&format!("n{i}"), &[("zone", ZONES[i % ZONES.len()])]))
            .collect(),
    )
}

/// A placed pod as the oracle sees it.
#[derive(Debug, Clone)]
struct Placed {
    arrival: Arrival,
    node: String,
    zone: String,
}

fn domain<'a>(p: &'a Placed, key: &str) -> &'a str {
    if key == "zone" {
        &p.zone
    } else {
        &p.node
    }
}

/// Would the brute-force rules allow `a` on `node` (in `zone`) among `placed`, in
/// a cluster of `all` (name, zone) nodes?
fn oracle_allows(
    all: &[(String, String)],
    placed: &[Placed],
    a: Arrival,
    node: &str,
    zone: &str,
) -> bool {
    let here = Placed {
        arrival: a,
        node: node.into(),
        zone: zone.into(),
    };
    // Existing pods' anti-affinity (symmetry) against the newcomer.
    for p in placed {
        let key = match p.arrival.rule {
            1 => HOSTNAME,
            2 => "zone",
            _ => continue,
        };
        if p.arrival.target == a.app && domain(p, key) == domain(&here, key) {
            return false;
        }
    }
    let same = |p: &Placed, key| domain(p, key) == domain(&here, key);
    let selected = |p: &&Placed| p.arrival.app == a.target;
    match a.rule {
        1 => !placed.iter().filter(selected).any(|p| same(p, HOSTNAME)),
        2 => !placed.iter().filter(selected).any(|p| same(p, "zone")),
        3 => {
            placed.iter().filter(selected).any(|p| same(p, "zone"))
                || (!placed.iter().any(|p| selected(&p)) && a.app == a.target)
        }
        4 | 5 => {
            let (key, max_skew) = if a.rule == 4 {
                ("zone", 1)
            } else {
                (HOSTNAME, 2)
            };
            let of = |name: &str, zone: &str| {
                if key == "zone" {
                    zone.to_owned()
                } else {
                    name.to_owned()
                }
            };
            let mut counts: BTreeMap<String, i64> =
                all.iter().map(|(n, z)| (of(n, z), 0)).collect();
            for p in placed.iter().filter(selected) {
                *counts.get_mut(&of(&p.node, &p.zone)).unwrap() += 1;
            }
            let min = counts.values().copied().min().unwrap_or(0);
            let self_match = i64::from(a.app == a.target);
            counts[&of(node, zone)] + self_match - min <= max_skew
        }
        _ => true,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn placements_never_break_a_required_rule(
        node_count in 3usize..8,
        arrivals in prop::collection::vec((arrival(), any::<bool>(), any::<prop::sample::Index>()), 1..40),
    ) {
        let mut c = nodes(node_count);
        let mut policy = policy();
        let mut placed: Vec<(PodDemand, phalanx_engine::Placement, Placed)> = Vec::new();
        for (i, (a, depart, which)) in arrivals.into_iter().enumerate() {
            if depart && !placed.is_empty() {
                let (pod, placement, _) = placed.remove(which.index(placed.len()));
                c.release(&pod, &placement).unwrap();
            }
            let pod = build_pod(i, a);
            let oracle: Vec<Placed> = placed.iter().map(|(_, _, p)| p.clone()).collect();
            let all: Vec<(String, String)> = c
                .nodes()
                .iter()
                .map(|n| (n.name.clone(), n.labels["zone"].clone()))
                .collect();
            let allowed: Vec<String> = all
                .iter()
                .filter(|(n, z)| oracle_allows(&all, &oracle, a, n, z))
                .map(|(n, _)| n.clone())
                .collect();
            let Some(name) = chosen(&c, policy.as_mut(), &pod) else {
                prop_assert!(allowed.is_empty(), "refused {a:?} though {allowed:?} allow it");
                continue;
            };
            prop_assert!(allowed.contains(&name), "{a:?} placed on {name}, oracle allows {allowed:?}");
            let zone = c.node(c.node_id(&name).unwrap()).labels["zone"].clone();
            let placement = place(&mut c, &pod, &name);
            placed.push((pod, placement, Placed { arrival: a, node: name, zone }));
        }
    }

    #[test]
    fn incremental_counts_decide_as_counts_rebuilt_from_scratch(
        node_count in 3usize..7,
        arrivals in prop::collection::vec((arrival(), any::<bool>(), any::<prop::sample::Index>()), 1..30),
        probe in arrival(),
    ) {
        let mut c = nodes(node_count);
        let mut policy = policy();
        let mut placed: Vec<(PodDemand, phalanx_engine::Placement)> = Vec::new();
        for (i, (a, depart, which)) in arrivals.into_iter().enumerate() {
            if depart && !placed.is_empty() {
                let (pod, placement) = placed.remove(which.index(placed.len()));
                c.release(&pod, &placement).unwrap();
            }
            let pod = build_pod(i, a);
            if let Some(name) = chosen(&c, policy.as_mut(), &pod) {
                let placement = place(&mut c, &pod, &name);
                placed.push((pod, placement));
            }
        }
        let mut fresh = nodes(node_count);
        for (pod, placement) in &placed {
            fresh.place(pod, placement).unwrap();
        }
        let probe = build_pod(1000, probe);
        prop_assert_eq!(verdicts(&c, &probe), verdicts(&fresh, &probe));
        prop_assert_eq!(chosen(&c, policy.as_mut(), &probe), chosen(&fresh, policy.as_mut(), &probe));
    }
}
