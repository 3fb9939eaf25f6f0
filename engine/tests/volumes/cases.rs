//! One case per rule, named the way kube-scheduler's tests read.

use std::collections::{BTreeMap, HashMap};

use phalanx_engine::{
    AccessMode, BindingMode, ClaimSpec, NodeSelectorRequirement, PodVolumes, SelectorOperator,
    UnfitReason, VolumeBinding, VolumeRefusal, VolumeSpec,
};

use super::support::*;

struct Case {
    name: &'static str,
    claims: Vec<ClaimSpec>,
    volumes: Vec<VolumeSpec>,
    pod_claims: &'static [&'static str],
    /// The node it lands on, or the reason every node gives.
    want: Result<&'static str, UnfitReason>,
}

fn cases() -> Vec<Case> {
    use UnfitReason::*;
    vec![
        Case {
            name: "pod without claims goes anywhere",
            claims: vec![],
            volumes: vec![],
            pod_claims: &[],
            want: Ok("a"),
        },
        Case {
            name: "claim not found",
            claims: vec![],
            volumes: vec![],
            pod_claims: &["data"],
            want: Err(VolumeClaimUnusable),
        },
        Case {
            name: "claim being deleted",
            claims: vec![ClaimSpec {
                deleting: true,
                ..bound_claim("data", "wait", "pv-b")
            }],
            volumes: vec![pv("pv-b", "wait", 1, Some("b"))],
            pod_claims: &["data"],
            want: Err(VolumeClaimUnusable),
        },
        Case {
            name: "bound claim whose PV is missing",
            claims: vec![bound_claim("data", "wait", "gone")],
            volumes: vec![],
            pod_claims: &["data"],
            want: Err(VolumeClaimUnusable),
        },
        Case {
            name: "unbound immediate claim",
            claims: vec![claim("data", "immediate")],
            volumes: vec![pv("pv-b", "immediate", 1, Some("b"))],
            pod_claims: &["data"],
            want: Err(UnboundImmediateClaims),
        },
        Case {
            name: "unbound claim without a class is immediate",
            claims: vec![claim("data", "")],
            volumes: vec![],
            pod_claims: &["data"],
            want: Err(UnboundImmediateClaims),
        },
        Case {
            name: "bound claim follows its PV's node affinity",
            claims: vec![bound_claim("data", "wait", "pv-c")],
            volumes: vec![pv("pv-c", "wait", 1, Some("c"))],
            pod_claims: &["data"],
            want: Ok("c"),
        },
        Case {
            name: "bound claim, PV affinity admits no node",
            claims: vec![bound_claim("data", "wait", "pv-z")],
            volumes: vec![pv("pv-z", "wait", 1, Some("z"))],
            pod_claims: &["data"],
            want: Err(VolumeNodeAffinityConflict),
        },
        Case {
            name: "wait for first consumer: static PV on one node",
            claims: vec![claim("data", "wait")],
            volumes: vec![pv("pv-b", "wait", 1, Some("b"))],
            pod_claims: &["data"],
            want: Ok("b"),
        },
        Case {
            name: "wait for first consumer: PV too small",
            claims: vec![claim("data", "wait")],
            volumes: vec![VolumeSpec {
                capacity_bytes: GI / 2,
                ..pv("pv-b", "wait", 1, Some("b"))
            }],
            pod_claims: &["data"],
            want: Err(NoAvailableVolumes),
        },
        Case {
            name: "wait for first consumer: PV of another class",
            claims: vec![claim("data", "wait")],
            volumes: vec![pv("pv-b", "other", 1, Some("b"))],
            pod_claims: &["data"],
            want: Err(NoAvailableVolumes),
        },
        Case {
            name: "wait for first consumer: PV lacks the access mode",
            claims: vec![ClaimSpec {
                access_modes: vec![AccessMode::ReadWriteMany],
                ..claim("data", "wait")
            }],
            volumes: vec![pv("pv-b", "wait", 1, Some("b"))],
            pod_claims: &["data"],
            want: Err(NoAvailableVolumes),
        },
        Case {
            name: "wait for first consumer: PV claimed by another claim",
            claims: vec![claim("data", "wait")],
            volumes: vec![VolumeSpec {
                claim_ref: Some("default/other".into()),
                ..pv("pv-b", "wait", 1, Some("b"))
            }],
            pod_claims: &["data"],
            want: Err(NoAvailableVolumes),
        },
        Case {
            name: "wait for first consumer: PV pre-bound to this claim",
            claims: vec![claim("data", "wait")],
            volumes: vec![VolumeSpec {
                claim_ref: Some("default/data".into()),
                ..pv("pv-c", "wait", 1, Some("c"))
            }],
            pod_claims: &["data"],
            want: Ok("c"),
        },
        Case {
            name: "two claims need two PVs on the same node",
            claims: vec![claim("one", "wait"), claim("two", "wait")],
            volumes: vec![
                pv("pv-a", "wait", 1, Some("a")),
                pv("pv-c1", "wait", 1, Some("c")),
                pv("pv-c2", "wait", 1, Some("c")),
            ],
            pod_claims: &["one", "two"],
            want: Ok("c"),
        },
        Case {
            name: "two claims, one PV",
            claims: vec![claim("one", "wait"), claim("two", "wait")],
            volumes: vec![pv("pv-b", "wait", 1, Some("b"))],
            pod_claims: &["one", "two"],
            want: Err(NoAvailableVolumes),
        },
        Case {
            name: "dynamic provisioning when no PV matches",
            claims: vec![claim("data", "dynamic")],
            volumes: vec![],
            pod_claims: &["data"],
            want: Ok("a"),
        },
        Case {
            name: "bound PV zone label excludes nodes of other zones",
            claims: vec![bound_claim("data", "wait", "pv-zoned")],
            volumes: vec![VolumeSpec {
                labels: BTreeMap::from([(
                    "topology.kubernetes.io/zone".to_owned(),
                    "z2__z3".to_owned(),
                )]),
                ..pv("pv-zoned", "wait", 1, None)
            }],
            pod_claims: &["data"],
            want: Ok("b"),
        },
    ]
}

#[test]
fn volume_filter_cases() {
    for case in cases() {
        let mut c = cluster(&["a", "b", "c"]);
        // Zones for the zone case; nodes without the PV's label conflict.
        for (node, zone) in [("a", "z1"), ("b", "z2")] {
            let mut spec = node_spec(&c, node);
            spec.labels
                .insert("topology.kubernetes.io/zone".into(), zone.into());
            c.upsert_node(spec).unwrap();
        }
        for claim in case.claims {
            c.volumes_mut().upsert_claim(claim);
        }
        for volume in case.volumes {
            c.volumes_mut().upsert_volume(volume);
        }
        let pod = pod("p", case.pod_claims);
        let got = schedule(&c, &pod);
        match case.want {
            Ok(node) => assert_eq!(got.as_deref(), Ok(node), "{}", case.name),
            Err(reason) => {
                let reasons = got.expect_err(case.name);
                assert_eq!(
                    reasons.keys().collect::<Vec<_>>(),
                    vec![&reason],
                    "{}",
                    case.name
                );
            }
        }
    }
}

fn node_spec(c: &phalanx_engine::ClusterSnapshot, name: &str) -> phalanx_engine::NodeSpec {
    let node = c.node(c.node_id(name).unwrap());
    phalanx_engine::NodeSpec {
        name: name.into(),
        cpu_milli: node.cpu_milli_cap,
        memory_mib: node.memory_mib_cap,
        max_pods: node.max_pods,
        labels: node.labels.clone(),
        ..phalanx_engine::NodeSpec::default()
    }
}

#[test]
fn refusals_name_the_claim_as_kube_scheduler_does() {
    let mut c = cluster(&["a"]);
    let p = pod("p", &["data"]);
    assert_eq!(
        c.volume_refusal(&p).unwrap().to_string(),
        "persistentvolumeclaim \"data\" not found"
    );
    c.volumes_mut().upsert_claim(claim("data", "immediate"));
    assert_eq!(
        c.volume_refusal(&p),
        Some(VolumeRefusal::UnboundImmediateClaims)
    );
    assert_eq!(
        c.volume_refusal(&p).unwrap().to_string(),
        "pod has unbound immediate PersistentVolumeClaims"
    );
    c.volumes_mut().upsert_claim(claim("data", "missing-class"));
    assert_eq!(
        c.volume_refusal(&p).unwrap().to_string(),
        "storageclass.storage.k8s.io \"missing-class\" not found"
    );
}

#[test]
fn untracked_volumes_refuse_nothing() {
    // The simulator, the autoscaler and extender mode feed no volume state:
    // a pod's claims must not make it unschedulable there.
    let mut c = cluster(&["a"]);
    c.volumes_mut().set_tracked(false);
    let p = pod("p", &["missing"]);
    assert_eq!(c.volume_refusal(&p), None);
    assert_eq!(schedule(&c, &p).as_deref(), Ok("a"));
    assert!(schedule_and_place(&mut c, &p).is_some());
    assert!(c.volume_bindings(&p).is_empty());
}

#[test]
fn a_placed_pod_assumes_its_pv_and_a_release_gives_it_back() {
    let mut c = cluster(&["a", "b"]);
    c.volumes_mut().upsert_claim(claim("one", "wait"));
    c.volumes_mut().upsert_claim(claim("two", "wait"));
    c.volumes_mut()
        .upsert_volume(pv("pv-b", "wait", 1, Some("b")));
    let first = pod("first", &["one"]);
    let second = pod("second", &["two"]);
    let mut policy = phalanx_engine::build_policy(
        phalanx_engine::PolicyName::Phalanx,
        &phalanx_engine::PolicyConfig {
            seed: 1,
            workload: phalanx_engine::WorkloadSource::Online,
        },
    );
    let phalanx_engine::CycleOutcome::Placed(placement) = phalanx_engine::schedule_one(
        &c,
        policy.as_mut(),
        &first,
        &mut phalanx_engine::CycleScratch::default(),
    ) else {
        panic!("first pod must fit")
    };
    c.place(&first, &placement).unwrap();
    assert_eq!(
        c.volume_bindings(&first),
        &[VolumeBinding::PreBind {
            claim_namespace: "default".into(),
            claim_name: "one".into(),
            volume: "pv-b".into(),
        }]
    );
    assert_eq!(c.volumes().assumed_for("default/one"), Some("pv-b"));
    assert_eq!(
        schedule(&c, &second)
            .unwrap_err()
            .keys()
            .collect::<Vec<_>>(),
        vec![&UnfitReason::NoAvailableVolumes],
        "the PV is assumed for the first claim"
    );
    c.release(&first, &placement).unwrap();
    assert_eq!(c.volumes().assumed_for("default/one"), None);
    assert_eq!(schedule(&c, &second).as_deref(), Ok("b"));
}

#[test]
fn an_assumption_lapses_once_its_claim_is_bound_elsewhere() {
    let mut c = cluster(&["a", "b"]);
    c.volumes_mut().upsert_claim(claim("one", "wait"));
    c.volumes_mut().upsert_claim(claim("two", "wait"));
    c.volumes_mut()
        .upsert_volume(pv("pv-b", "wait", 1, Some("b")));
    let first = pod("first", &["one"]);
    assert_eq!(schedule_and_place(&mut c, &first).as_deref(), Some("b"));
    let second = pod("second", &["two"]);
    assert!(schedule(&c, &second).is_err(), "pv-b is assumed for one");
    // The PV controller bound `one` to a PV of its own choosing: pv-b is free.
    c.volumes_mut()
        .upsert_claim(bound_claim("one", "wait", "pv-elsewhere"));
    c.volumes_mut()
        .upsert_volume(pv("pv-elsewhere", "wait", 1, None));
    assert_eq!(schedule(&c, &second).as_deref(), Ok("b"));
}

#[test]
fn dynamic_provisioning_selects_the_node_within_allowed_topologies() {
    let mut c = cluster(&["a", "b"]);
    let mut zoned = class(
        "zoned",
        BindingMode::WaitForFirstConsumer,
        "csi.example.com",
    );
    zoned.allowed_topologies = vec![vec![NodeSelectorRequirement {
        key: HOSTNAME.into(),
        operator: SelectorOperator::In(vec!["b".into()]),
    }]];
    c.volumes_mut().upsert_class(zoned);
    c.volumes_mut().upsert_claim(claim("data", "zoned"));
    let p = pod("p", &["data"]);
    assert_eq!(schedule_and_place(&mut c, &p).as_deref(), Some("b"));
    assert_eq!(
        c.volume_bindings(&p),
        &[VolumeBinding::Provision {
            claim_namespace: "default".into(),
            claim_name: "data".into(),
            node: "b".into(),
        }]
    );
}

#[test]
fn read_write_once_pod_claim_in_use_refuses_a_second_pod() {
    let mut c = cluster(&["a", "b"]);
    c.volumes_mut().upsert_claim(ClaimSpec {
        access_modes: vec![AccessMode::ReadWriteOncePod],
        ..bound_claim("data", "wait", "pv")
    });
    c.volumes_mut().upsert_volume(VolumeSpec {
        access_modes: vec![AccessMode::ReadWriteOncePod],
        ..pv("pv", "wait", 1, None)
    });
    let first = pod("first", &["data"]);
    assert!(schedule_and_place(&mut c, &first).is_some());
    let second = pod("second", &["data"]);
    assert_eq!(
        c.volume_refusal(&second),
        Some(VolumeRefusal::ReadWriteOncePodInUse)
    );
    assert_eq!(
        schedule(&c, &second).unwrap_err(),
        BTreeMap::from([(UnfitReason::ReadWriteOncePodConflict, 2)])
    );
}

#[test]
fn csi_attach_limits_count_distinct_volumes_per_driver() {
    let mut c = cluster(&["a", "b"]);
    for node in ["a", "b"] {
        c.volumes_mut()
            .set_attach_limits(node, HashMap::from([("csi.example.com".to_owned(), 1)]));
    }
    for name in ["v1", "v2"] {
        c.volumes_mut().upsert_volume(VolumeSpec {
            csi_driver: Some("csi.example.com".into()),
            ..pv(name, "wait", 1, Some("a"))
        });
        c.volumes_mut()
            .upsert_claim(bound_claim(&format!("c-{name}"), "wait", name));
    }
    let first = pod("first", &["c-v1"]);
    assert_eq!(schedule_and_place(&mut c, &first).as_deref(), Some("a"));
    // The same volume again is no new attachment.
    let shares = pod("shares", &["c-v1"]);
    assert_eq!(schedule(&c, &shares).as_deref(), Ok("a"));
    let second = pod("second", &["c-v2"]);
    assert_eq!(
        schedule(&c, &second).unwrap_err(),
        BTreeMap::from([
            (UnfitReason::ExceedMaxVolumeCount, 1),
            (UnfitReason::VolumeNodeAffinityConflict, 1),
        ])
    );
}

#[test]
fn inline_csi_volumes_count_against_attach_limits_like_claimed_ones() {
    let mut c = cluster(&["a", "b"]);
    c.volumes_mut()
        .set_attach_limits("a", HashMap::from([("csi.example.com".to_owned(), 1)]));
    let inline = |name: &str| {
        let mut p = pod(name, &[]);
        p.volumes = Some(std::sync::Arc::new(PodVolumes {
            claims: Vec::new(),
            inline_csi: vec![("csi.example.com".to_owned(), format!("default/{name}/data"))],
        }));
        p
    };
    // "a" is full after one inline volume of the driver; "b" has no limit yet.
    let first = inline("first");
    let landed = schedule_and_place(&mut c, &first).expect("first fits");
    let second = inline("second");
    if landed == "a" {
        assert_eq!(schedule(&c, &second).as_deref(), Ok("b"));
    }
    // Limit "b" to one too and fill whichever node still has room: nothing is left.
    c.volumes_mut()
        .set_attach_limits("b", HashMap::from([("csi.example.com".to_owned(), 1)]));
    schedule_and_place(&mut c, &inline("another")).expect("one node has room");
    assert_eq!(
        schedule(&c, &inline("third")).unwrap_err(),
        BTreeMap::from([(UnfitReason::ExceedMaxVolumeCount, 2)])
    );
}
