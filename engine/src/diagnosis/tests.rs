use proptest::prelude::*;

use super::*;
use crate::constraints::{TaintEffect, Toleration, TolerationOperator};
use crate::policy::PackingPolicy;
use crate::test_support::{gpu_node, whole_pod};
use crate::{
    schedule_one, CycleOutcome, CycleScratch, GpuAssignment, ModelConstraint, NodeSpec, Placement,
};

fn cluster(specs: Vec<NodeSpec>) -> ClusterSnapshot {
    let mut snapshot = ClusterSnapshot::new();
    for spec in specs {
        snapshot.add_node(spec).unwrap();
    }
    snapshot
}

/// Takes whole GPUs of a node with a pod that asks for nothing else and
/// tolerates everything, so it lands on any node the test built.
fn take_whole(snapshot: &mut ClusterSnapshot, node: u32, gpus: &[usize]) {
    let mut pod = PodDemand::new(
        "holder",
        0,
        0,
        GpuDemand::Whole {
            count: gpus.len() as u32,
        },
        ModelConstraint::Any,
    )
    .unwrap();
    pod.rules.tolerations.push(Toleration {
        operator: TolerationOperator::Exists,
        ..Toleration::default()
    });
    let placement = Placement {
        node: NodeId(node),
        gpus: GpuAssignment::from_indices(gpus.iter().copied(), 1000),
    };
    snapshot.place(&pod, &placement).unwrap();
}

#[test]
fn a_pod_too_big_for_every_node_names_the_node_with_most_free_gpus() {
    let mut snapshot = cluster(vec![
        gpu_node("small", 64_000, 4, "A100"),
        gpu_node("big", 64_000, 8, "A100"),
    ]);
    take_whole(&mut snapshot, 1, &[0, 1]);
    let diagnosis = diagnose(&snapshot, &whole_pod("wants-eight", 8));
    assert_eq!(diagnosis.nodes, 2);
    assert_eq!(diagnosis.feasible, 0);
    assert_eq!(
        diagnosis.reasons,
        [(UnfitReason::InsufficientWholeGpus, 2)].into()
    );
    let nearest = diagnosis.nearest.unwrap();
    assert_eq!(snapshot.node(nearest.node).name, "big");
    assert_eq!(
        nearest.lacks,
        vec![Lack::WholeGpus {
            free: 6,
            requested: 8
        }]
    );
    assert_eq!(
        nearest.lacks[0].to_string(),
        "2 more whole GPU(s): 6 free, 8 requested"
    );
}

#[test]
fn every_failed_check_of_a_node_is_listed_not_only_the_first() {
    let mut tainted = gpu_node("tainted", 500, 2, "A100");
    tainted.taints.push(Taint {
        key: "gpu".into(),
        value: "reserved".into(),
        effect: TaintEffect::NoSchedule,
    });
    // PreferNoSchedule never filters, so it is not something the node lacks.
    tainted.taints.push(Taint {
        key: "soft".into(),
        value: String::new(),
        effect: TaintEffect::PreferNoSchedule,
    });
    let mut other = gpu_node("other-model", 64_000, 2, "T4");
    other.labels.insert("team".into(), "b".into());
    let snapshot = cluster(vec![tainted, other]);
    let mut pod = PodDemand::new(
        "picky",
        1000,
        1024,
        GpuDemand::Whole { count: 1 },
        snapshot.models().constraint("A100"),
    )
    .unwrap();
    pod.rules.node_selector.insert("team".into(), "b".into());
    let diagnosis = diagnose(&snapshot, &pod);
    assert_eq!(diagnosis.feasible, 0);
    assert_eq!(
        diagnosis.reasons,
        [
            (UnfitReason::UntoleratedTaint, 1),
            (UnfitReason::GpuModelMismatch, 1)
        ]
        .into()
    );
    // "tainted" lacks a toleration, the labels and CPU; "other-model" only
    // its GPU model: it is the nearer.
    let nearest = diagnosis.nearest.unwrap();
    assert_eq!(snapshot.node(nearest.node).name, "other-model");
    assert_eq!(nearest.lacks, vec![Lack::GpuModel { model: "T4".into() }]);
    let tainted_lacks = node_lacks(&snapshot, snapshot.node(NodeId(0)), &pod);
    assert_eq!(
        tainted_lacks
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        vec![
            "a toleration for taint gpu=reserved:NoSchedule",
            "labels matching the pod's nodeSelector or required node affinity",
            "500m more CPU: 500m free, 1000m requested",
        ]
    );
}

#[test]
fn a_capacity_shortfall_is_nearer_than_a_setup_mismatch() {
    let mut snapshot = cluster(vec![
        gpu_node("wrong-model", 64_000, 8, "T4"),
        gpu_node("busy", 64_000, 8, "A100"),
    ]);
    take_whole(&mut snapshot, 1, &[0, 1, 2, 3, 4, 5, 6, 7]);
    let pod = PodDemand::new(
        "a100",
        1000,
        1024,
        GpuDemand::Whole { count: 1 },
        snapshot.models().constraint("A100"),
    )
    .unwrap();
    let nearest = diagnose(&snapshot, &pod).nearest.unwrap();
    assert_eq!(snapshot.node(nearest.node).name, "busy");
}

#[test]
fn a_pod_that_fits_somewhere_has_no_nearest_node() {
    let snapshot = cluster(vec![
        gpu_node("small", 64_000, 2, "A100"),
        gpu_node("big", 64_000, 8, "A100"),
    ]);
    let diagnosis = diagnose(&snapshot, &whole_pod("four", 4));
    assert_eq!(diagnosis.feasible, 1);
    assert_eq!(
        diagnosis.reasons,
        [(UnfitReason::InsufficientWholeGpus, 1)].into()
    );
    assert_eq!(diagnosis.nearest, None);
}

#[test]
fn a_share_on_a_node_without_gpus_is_counted_as_a_share_shortfall() {
    let mut cpu_only = gpu_node("cpu", 64_000, 0, "A100");
    cpu_only.gpu_model = None;
    let snapshot = cluster(vec![cpu_only]);
    let pod = PodDemand::new(
        "share",
        1000,
        1024,
        GpuDemand::Share { milli: 300 },
        ModelConstraint::Any,
    )
    .unwrap();
    let diagnosis = diagnose(&snapshot, &pod);
    assert_eq!(
        diagnosis.reasons,
        [(UnfitReason::InsufficientGpuShare, 1)].into()
    );
    assert_eq!(
        diagnosis.nearest.unwrap().lacks,
        vec![Lack::NoGpus { share: true }]
    );
}

proptest! {
    /// The per-reason counts are the ones a cycle reports for the same pod, so
    /// the plugin's table and the event's message never disagree.
    #[test]
    fn reasons_match_the_cycle(
        nodes in prop::collection::vec(
            (0u64..8_000, 0usize..9, 0usize..9, any::<bool>(), any::<bool>(), any::<bool>()),
            1..8,
        ),
        cpu in 0u64..8_000,
        gpus in 0u32..9,
        share in 0u32..1000,
        selector in any::<bool>(),
    ) {
        let mut snapshot = ClusterSnapshot::new();
        for (i, &(node_cpu, count, _, labelled, tainted, cordoned)) in nodes.iter().enumerate() {
            let mut spec = gpu_node(&format!("n{i}"), node_cpu, count, if i % 2 == 0 { "A100" } else { "T4" });
            if count == 0 {
                spec.gpu_model = None;
            }
            if labelled {
                spec.labels.insert("team".into(), "a".into());
            }
            if tainted {
                spec.taints.push(Taint { key: "k".into(), value: String::new(), effect: TaintEffect::NoSchedule });
            }
            spec.unschedulable = cordoned;
            snapshot.add_node(spec).unwrap();
        }
        for (i, &(_, count, used, ..)) in nodes.iter().enumerate() {
            let used = used.min(count);
            if used > 0 {
                take_whole(&mut snapshot, i as u32, &(0..used).collect::<Vec<_>>());
            }
        }
        let demand = match (gpus, share) {
            (0, 0) => GpuDemand::None,
            (0, milli) => GpuDemand::Share { milli },
            (count, _) => GpuDemand::Whole { count },
        };
        let mut pod = PodDemand::new("p", cpu, 1024, demand, snapshot.models().constraint("A100")).unwrap();
        if selector {
            pod.rules.node_selector.insert("team".into(), "a".into());
        }
        let diagnosis = diagnose(&snapshot, &pod);
        let outcome = schedule_one(&snapshot, &mut PackingPolicy, &pod, &mut CycleScratch::default());
        match outcome {
            CycleOutcome::Placed(_) => {
                prop_assert!(diagnosis.feasible > 0);
                prop_assert!(diagnosis.nearest.is_none());
            }
            CycleOutcome::Unschedulable { nodes, reasons } => {
                prop_assert_eq!(diagnosis.feasible, 0);
                prop_assert_eq!(diagnosis.nodes, nodes);
                prop_assert_eq!(&diagnosis.reasons, &reasons);
                let nearest = diagnosis.nearest.unwrap();
                prop_assert!(!nearest.lacks.is_empty());
            }
        }
    }
}

/// What one diagnosis costs on 5,000 eight-GPU nodes with taints on a tenth
/// and labels the pod's selector misses on a fifth, against a schedule_one
/// of the same pod: the price of a FailedScheduling event's decision record.
/// `cargo test -p phalanx-engine --release --lib diagnosis_cost -- --ignored --nocapture`
#[test]
#[ignore = "a measurement, not a check: prints timings"]
fn diagnosis_cost_on_5000_nodes() {
    use std::time::Instant;
    let mut snapshot = ClusterSnapshot::new();
    for i in 0..5000 {
        let mut spec = gpu_node(&format!("n{i}"), 64_000, 8, "A100");
        if i % 10 == 0 {
            spec.taints.push(Taint {
                key: "reserved".into(),
                value: String::new(),
                effect: TaintEffect::NoSchedule,
            });
        }
        if i % 5 != 0 {
            spec.labels.insert("team".into(), "a".into());
        }
        snapshot.add_node(spec).unwrap();
    }
    for i in 0..5000u32 {
        take_whole(&mut snapshot, i, &[0, 1, 2, 3, 4]);
    }
    let mut pod = whole_pod("wants-four", 4);
    pod.rules.node_selector.insert("team".into(), "a".into());
    let rounds = 50u32;
    let start = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(diagnose(&snapshot, &pod));
    }
    let per_diagnosis = start.elapsed() / rounds;
    let start = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(schedule_one(
            &snapshot,
            &mut PackingPolicy,
            &pod,
            &mut CycleScratch::default(),
        ));
    }
    let per_cycle = start.elapsed() / rounds;
    println!("5000 nodes: diagnose {per_diagnosis:?}, schedule_one (unschedulable) {per_cycle:?}");
}
