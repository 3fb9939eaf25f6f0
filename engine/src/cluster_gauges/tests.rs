use proptest::prelude::*;

use super::*;
use crate::test_support::{gpu_node, share_pod, whole_pod};
use crate::workload::ONLINE_MIN_SAMPLES;
use crate::{GpuAssignment, GpuDemand, ModelConstraint, NodeId, Placement, PodShape};

const POOL: &str = "phalanx.dev/pool";

fn share_type(milli: u32, weight: f64) -> TypicalPod {
    TypicalPod {
        shape: PodShape {
            cpu_milli: 1000,
            gpu: GpuDemand::Share { milli },
            models: ModelConstraint::Any,
        },
        weight,
    }
}

fn pooled(name: &str, gpus: usize, model: &str, pool: Option<&str>) -> crate::NodeSpec {
    let mut spec = gpu_node(name, 64_000, gpus, model);
    if let Some(pool) = pool {
        spec.labels.insert(POOL.into(), pool.into());
    }
    spec
}

fn on(node: u32, gpus: &[usize], milli: u32) -> Placement {
    Placement {
        node: NodeId(node),
        gpus: GpuAssignment::from_indices(gpus.iter().copied(), milli),
    }
}

fn group(model: &str, pool: &str) -> GaugeGroup {
    GaugeGroup {
        model: model.into(),
        pool: pool.into(),
    }
}

fn find(tallies: &[(GaugeGroup, GpuTally)], model: &str, pool: &str) -> GpuTally {
    tallies
        .iter()
        .find(|(g, _)| *g == group(model, pool))
        .map(|(_, t)| *t)
        .unwrap_or_else(|| panic!("no group {model}/{pool} in {tallies:?}"))
}

fn assert_close(actual: f64, expected: f64, what: &str) {
    assert!(
        (actual - expected).abs() < 1e-9,
        "{what}: {actual} != {expected}"
    );
}

#[test]
fn a_share_of_0_9_leaves_0_1_fragmented_for_typical_halves() {
    let mut cluster = ClusterSnapshot::new();
    cluster
        .add_node(pooled("a", 1, "A100", Some("train")))
        .unwrap();
    cluster
        .place(&share_pod("p", 900), &on(0, &[0], 900))
        .unwrap();
    let mut gauges = ClusterGauges::with_typical(POOL, vec![share_type(500, 1.0)]);

    let t = find(&gauges.tally(&cluster), "A100", "train");

    assert_close(t.capacity_gpus(), 1.0, "capacity");
    assert_close(t.allocated_gpus(), 0.9, "allocated");
    assert_close(t.idle_gpus(), 0.1, "idle");
    assert_close(t.fragmented_gpus(), 0.1, "fragmented");
    assert_eq!(t.shared_gpus, 1);
}

#[test]
fn idle_that_a_typical_pod_can_use_is_not_fragmented() {
    let mut cluster = ClusterSnapshot::new();
    cluster.add_node(pooled("a", 2, "A100", None)).unwrap();
    cluster
        .place(&share_pod("p", 400), &on(0, &[0], 400))
        .unwrap();
    let mut gauges = ClusterGauges::with_typical(POOL, vec![share_type(500, 1.0)]);

    let t = find(&gauges.tally(&cluster), "A100", "");

    // GPU 0 keeps 0.6 (a half fits), GPU 1 is whole: nothing is stranded.
    assert_close(t.idle_gpus(), 1.6, "idle");
    assert_close(t.fragmented_gpus(), 0.0, "fragmented");
}

#[test]
fn gauges_are_grouped_by_model_and_pool() {
    let mut cluster = ClusterSnapshot::new();
    cluster
        .add_node(pooled("a", 4, "A100", Some("train")))
        .unwrap();
    cluster.add_node(pooled("b", 2, "A100", None)).unwrap();
    cluster
        .add_node(pooled("c", 8, "H100", Some("train")))
        .unwrap();
    cluster
        .add_node(pooled("d", 8, "H100", Some("train")))
        .unwrap();
    let cpu_only = crate::NodeSpec {
        name: "cpu".into(),
        cpu_milli: 8000,
        memory_mib: 1 << 16,
        max_pods: 10,
        ..crate::NodeSpec::default()
    };
    cluster.add_node(cpu_only).unwrap();
    cluster
        .place(&whole_pod("w", 2), &on(0, &[0, 1], 1000))
        .unwrap();
    cluster
        .place(&whole_pod("x", 3), &on(3, &[0, 1, 2], 1000))
        .unwrap();
    let mut gauges = ClusterGauges::with_typical(POOL, Vec::new());

    let tallies = gauges.tally(&cluster);

    let groups: Vec<GaugeGroup> = tallies.iter().map(|(g, _)| g.clone()).collect();
    assert_eq!(
        groups,
        vec![
            group("", ""),
            group("A100", ""),
            group("A100", "train"),
            group("H100", "train"),
        ]
    );
    let a100_train = find(&tallies, "A100", "train");
    assert_close(a100_train.capacity_gpus(), 4.0, "A100/train capacity");
    assert_close(a100_train.allocated_gpus(), 2.0, "A100/train allocated");
    let h100 = find(&tallies, "H100", "train");
    assert_close(h100.capacity_gpus(), 16.0, "H100 capacity");
    assert_close(h100.allocated_gpus(), 3.0, "H100 allocated");
    assert_close(h100.idle_gpus(), 13.0, "H100 idle");
    assert_close(find(&tallies, "A100", "").idle_gpus(), 2.0, "A100 idle");
    assert_eq!(find(&tallies, "", ""), GpuTally::default());
}

#[test]
fn two_halves_filling_a_gpu_still_count_it_shared_until_both_leave() {
    let mut cluster = ClusterSnapshot::new();
    cluster.add_node(pooled("a", 2, "A100", None)).unwrap();
    let (p, q) = (share_pod("p", 500), share_pod("q", 500));
    cluster.place(&p, &on(0, &[0], 500)).unwrap();
    cluster.place(&q, &on(0, &[0], 500)).unwrap();
    cluster
        .place(&whole_pod("w", 1), &on(0, &[1], 1000))
        .unwrap();
    let mut gauges = ClusterGauges::with_typical(POOL, Vec::new());
    assert_eq!(find(&gauges.tally(&cluster), "A100", "").shared_gpus, 1);

    cluster.release(&p, &on(0, &[0], 500)).unwrap();
    assert_eq!(find(&gauges.tally(&cluster), "A100", "").shared_gpus, 1);
    cluster.release(&q, &on(0, &[0], 500)).unwrap();
    assert_eq!(find(&gauges.tally(&cluster), "A100", "").shared_gpus, 0);
}

#[test]
fn a_placement_recomputes_only_its_node_and_a_release_restores_the_gauges() {
    let mut cluster = ClusterSnapshot::new();
    for i in 0..10 {
        cluster
            .add_node(pooled(&format!("n{i}"), 8, "A100", None))
            .unwrap();
    }
    let mut gauges = ClusterGauges::with_typical(POOL, vec![share_type(500, 1.0)]);
    let before = gauges.tally(&cluster);
    assert_eq!(gauges.recomputed(), 10);

    let pod = share_pod("p", 700);
    cluster.place(&pod, &on(4, &[2], 700)).unwrap();
    let placed = find(&gauges.tally(&cluster), "A100", "");
    assert_eq!(gauges.recomputed(), 1);
    assert_close(placed.allocated_gpus(), 0.7, "allocated");
    assert_close(placed.fragmented_gpus(), 0.3, "fragmented");
    assert_eq!(placed.shared_gpus, 1);

    cluster.release(&pod, &on(4, &[2], 700)).unwrap();
    assert_eq!(gauges.tally(&cluster), before);
    assert_eq!(gauges.recomputed(), 1);
}

#[test]
fn an_unhealthy_gpu_leaves_capacity() {
    let mut cluster = ClusterSnapshot::new();
    let id = cluster.add_node(pooled("a", 4, "A100", None)).unwrap();
    let mut gauges = ClusterGauges::with_typical(POOL, Vec::new());
    cluster.set_gpu_health(id, 3, false).unwrap();

    let t = find(&gauges.tally(&cluster), "A100", "");

    assert_close(t.capacity_gpus(), 3.0, "capacity");
    assert_close(t.idle_gpus(), 3.0, "idle");
}

#[test]
fn a_removed_node_leaves_its_group_at_zero() {
    let mut cluster = ClusterSnapshot::new();
    cluster.add_node(pooled("a", 4, "A100", Some("x"))).unwrap();
    let mut gauges = ClusterGauges::with_typical(POOL, Vec::new());
    gauges.tally(&cluster);
    assert!(cluster.remove_node("a"));

    assert_eq!(
        gauges.tally(&cluster),
        vec![(group("A100", "x"), GpuTally::default())]
    );
}

#[test]
fn a_relabelled_node_moves_to_its_new_pool() {
    let mut cluster = ClusterSnapshot::new();
    cluster.add_node(pooled("a", 4, "A100", Some("x"))).unwrap();
    let mut gauges = ClusterGauges::with_typical(POOL, Vec::new());
    gauges.tally(&cluster);
    cluster
        .upsert_node(pooled("a", 4, "A100", Some("y")))
        .unwrap();

    let tallies = gauges.tally(&cluster);

    assert_close(find(&tallies, "A100", "x").capacity_gpus(), 0.0, "old pool");
    assert_close(find(&tallies, "A100", "y").capacity_gpus(), 4.0, "new pool");
}

#[test]
fn online_gauges_count_nothing_fragmented_until_the_workload_is_learned() {
    let mut cluster = ClusterSnapshot::new();
    cluster.add_node(pooled("a", 1, "A100", None)).unwrap();
    cluster
        .place(&share_pod("p", 900), &on(0, &[0], 900))
        .unwrap();
    let mut gauges = ClusterGauges::online(POOL);
    let half = share_pod("half", 500);
    for _ in 1..ONLINE_MIN_SAMPLES {
        gauges.observe(&half);
    }
    assert_close(
        find(&gauges.tally(&cluster), "A100", "").fragmented_gpus(),
        0.0,
        "before",
    );

    gauges.observe(&half);

    assert_eq!(gauges.typical().len(), 1);
    assert_close(
        find(&gauges.tally(&cluster), "A100", "").fragmented_gpus(),
        0.1,
        "after",
    );
}

/// One step of a random history: a share or whole-GPU pod placed where it
/// fits, the oldest placed pod released, or a GPU's health flipped.
#[derive(Debug, Clone)]
enum Step {
    Place {
        node: u32,
        milli: u32,
    },
    Release,
    Health {
        node: u32,
        gpu: usize,
        healthy: bool,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0u32..6, prop_oneof![1u32..1000, Just(1000u32)])
            .prop_map(|(node, milli)| Step::Place { node, milli }),
        1 => Just(Step::Release),
        1 => (0u32..6, 0usize..4, any::<bool>())
            .prop_map(|(node, gpu, healthy)| Step::Health { node, gpu, healthy }),
    ]
}

proptest! {
    /// The cached gauges always equal gauges computed afresh, and every
    /// group's fragmentation is a part of its idle GPUs.
    #[test]
    fn cached_gauges_equal_fresh_ones(steps in prop::collection::vec(step(), 0..60)) {
        let mut cluster = ClusterSnapshot::new();
        for i in 0..6 {
            let pool = if i % 2 == 0 { Some("even") } else { None };
            let model = if i < 3 { "A100" } else { "H100" };
            cluster.add_node(pooled(&format!("n{i}"), 4, model, pool)).unwrap();
        }
        let typical = vec![share_type(500, 0.6), share_type(250, 0.3), share_type(1000, 0.1)];
        let mut cached = ClusterGauges::with_typical(POOL, typical.clone());
        let mut placed: Vec<(PodDemand, Placement)> = Vec::new();
        for (i, step) in steps.into_iter().enumerate() {
            match step {
                Step::Place { node, milli } => {
                    let free = cluster.node(NodeId(node)).free_list();
                    if let Some(gpu) = free.as_slice().iter().position(|&f| f >= milli) {
                        let pod = if milli == 1000 {
                            whole_pod(&format!("p{i}"), 1)
                        } else {
                            share_pod(&format!("p{i}"), milli)
                        };
                        let placement = on(node, &[gpu], milli);
                        if cluster.place(&pod, &placement).is_ok() {
                            placed.push((pod, placement));
                        }
                    }
                }
                Step::Release => {
                    if !placed.is_empty() {
                        let (pod, placement) = placed.remove(0);
                        cluster.release(&pod, &placement).unwrap();
                    }
                }
                Step::Health { node, gpu, healthy } => {
                    cluster.set_gpu_health(NodeId(node), gpu, healthy).unwrap();
                }
            }
            let incremental = cached.tally(&cluster);
            let fresh = ClusterGauges::with_typical(POOL, typical.clone()).tally(&cluster);
            prop_assert_eq!(&incremental, &fresh);
            for (group, tally) in &incremental {
                prop_assert!(tally.allocated_milli <= tally.capacity_milli, "{:?}", group);
                prop_assert!(
                    tally.fragmented_milli <= (tally.capacity_milli - tally.allocated_milli) as f64 + 1e-6,
                    "{:?}: {:?}", group, tally
                );
            }
        }
    }
}

/// The cost of one cycle's gauges on 5,000 eight-GPU nodes: the first tally
/// (every node computed) and a tally after one placement (one node).
/// `cargo test -p phalanx-engine --release cluster_gauges_cost -- --ignored --nocapture`
#[test]
#[ignore = "a measurement, not a check: prints timings"]
fn cluster_gauges_cost_on_5000_nodes() {
    use std::time::Instant;
    let mut cluster = ClusterSnapshot::new();
    for i in 0..5000 {
        let model = if i % 3 == 0 { "H100" } else { "A100" };
        let pool = format!("pool-{}", i % 10);
        cluster
            .add_node(pooled(&format!("n{i}"), 8, model, Some(&pool)))
            .unwrap();
    }
    for i in 0..5000u32 {
        cluster
            .place(
                &share_pod(&format!("s{i}"), 300 + i % 600),
                &on(i, &[0], 300 + i % 600),
            )
            .unwrap();
        cluster
            .place(&whole_pod(&format!("w{i}"), 2), &on(i, &[2, 3], 1000))
            .unwrap();
    }
    let typical = vec![
        share_type(500, 0.4),
        share_type(250, 0.2),
        TypicalPod {
            shape: whole_pod("t1", 1).shape(),
            weight: 0.2,
        },
        TypicalPod {
            shape: whole_pod("t8", 8).shape(),
            weight: 0.2,
        },
    ];
    let mut gauges = ClusterGauges::with_typical(POOL, typical);

    let start = Instant::now();
    gauges.tally(&cluster);
    let full = start.elapsed();

    let rounds = 200u32;
    let start = Instant::now();
    for i in 0..rounds {
        let pod = share_pod("p", 100);
        let placement = on(i * 7 % 5000, &[5], 100);
        cluster.place(&pod, &placement).unwrap();
        gauges.tally(&cluster);
        cluster.release(&pod, &placement).unwrap();
    }
    let per_cycle = start.elapsed() / rounds;
    println!(
        "5000 nodes, 40000 GPUs, 40 groups: first tally {full:?}; \
         a cycle after one placement {per_cycle:?} ({} node recomputed)",
        gauges.recomputed()
    );
}
