//! Live GPU telemetry in placement: memory that allocations do not account for
//! keeps new work away, and samples older than the limit are ignored and counted.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use phalanx_engine::policy::PolicyConfig;
use phalanx_engine::{
    build_policy, schedule_one, ClusterSnapshot, CycleOutcome, CycleScratch, GpuDemand, GpuSample,
    GpuSpec, ModelConstraint, NodeId, NodeSpec, PodDemand, PolicyName, WorkloadSource,
};

const MAX_AGE_MS: u64 = 10_000;

fn h100_node() -> ClusterSnapshot {
    let mut c = ClusterSnapshot::new();
    c.add_node(NodeSpec {
        name: "gpu-0".into(),
        cpu_milli: 64_000,
        memory_mib: 1 << 20,
        max_pods: 110,
        gpu_model: Some("H100".into()),
        gpus: vec![
            GpuSpec {
                uuid: "GPU-a".into(),
                memory_mib: 81_559,
            },
            GpuSpec {
                uuid: "GPU-b".into(),
                memory_mib: 81_559,
            },
        ],
        ..NodeSpec::default()
    })
    .unwrap();
    c
}

fn place(c: &ClusterSnapshot, gpu: GpuDemand) -> Option<usize> {
    let pod = PodDemand::new("p", 1_000, 1, gpu, ModelConstraint::Any).unwrap();
    let mut policy = build_policy(
        PolicyName::BestFit,
        &PolicyConfig {
            seed: 0,
            workload: WorkloadSource::Online,
        },
    );
    match schedule_one(c, policy.as_mut(), &pod, &mut CycleScratch::default()) {
        CycleOutcome::Placed(p) => Some(p.gpus.as_slice()[0].index as usize),
        CycleOutcome::Unschedulable { .. } => None,
    }
}

fn sample(used_mib: u64, at_ms: u64) -> GpuSample {
    GpuSample {
        memory_used_mib: used_mib,
        utilization_percent: 50,
        observed_at_ms: at_ms,
    }
}

#[test]
fn unaccounted_memory_steers_shares_and_whole_gpus_away() {
    let mut c = h100_node();
    assert_eq!(
        place(&c, GpuDemand::Share { milli: 600 }),
        Some(0),
        "best fit takes GPU 0 on an idle node"
    );
    // Something outside Kubernetes' accounting holds half of GPU 0.
    c.set_gpu_telemetry(NodeId(0), 0, sample(40_000, 1_000), 1_000, MAX_AGE_MS)
        .unwrap();
    assert_eq!(place(&c, GpuDemand::Share { milli: 600 }), Some(1));
    assert_eq!(
        place(&c, GpuDemand::Share { milli: 400 }),
        Some(0),
        "a share that fits the rest may still go there"
    );
    assert_eq!(place(&c, GpuDemand::Whole { count: 1 }), Some(1));
    assert_eq!(place(&c, GpuDemand::Whole { count: 2 }), None);
}

#[test]
fn a_little_memory_in_use_does_not_make_a_gpu_busy() {
    let mut c = h100_node();
    c.set_gpu_telemetry(NodeId(0), 0, sample(600, 1_000), 1_000, MAX_AGE_MS)
        .unwrap();
    c.set_gpu_telemetry(NodeId(0), 1, sample(600, 1_000), 1_000, MAX_AGE_MS)
        .unwrap();
    assert_eq!(place(&c, GpuDemand::Whole { count: 2 }), Some(0));
}

#[test]
fn stale_samples_are_ignored_and_counted() {
    let mut c = h100_node();
    c.set_gpu_telemetry(NodeId(0), 0, sample(80_000, 1_000), 1_000, MAX_AGE_MS)
        .unwrap();
    assert_eq!(place(&c, GpuDemand::Whole { count: 2 }), None);
    // GPU 1 never reported; GPU 0 is fresh until 11 s.
    assert_eq!(c.expire_telemetry(5_000, MAX_AGE_MS), 1);
    assert_eq!(place(&c, GpuDemand::Whole { count: 2 }), None);
    assert_eq!(c.expire_telemetry(11_001, MAX_AGE_MS), 2);
    assert_eq!(
        place(&c, GpuDemand::Whole { count: 2 }),
        Some(0),
        "fell back to allocation accounting"
    );
    // A sample that arrives already stale changes nothing.
    c.set_gpu_telemetry(NodeId(0), 1, sample(80_000, 0), 20_000, MAX_AGE_MS)
        .unwrap();
    assert_eq!(place(&c, GpuDemand::Whole { count: 2 }), Some(0));
    assert!(
        c.set_gpu_telemetry(NodeId(0), 7, sample(0, 0), 0, MAX_AGE_MS)
            .is_err(),
        "no GPU 7"
    );
}
