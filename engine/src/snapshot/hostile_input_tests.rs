//! Numbers from the cluster (GpuNode telemetry, pod requests, GPU memory) are
//! untrusted: hostile values are rejected or saturate, never panic or wrap.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use super::*;
use crate::node::{GpuSpec, TelemetryRejection, MAX_TELEMETRY_CLOCK_SKEW_MS};
use crate::{ModelConstraint, MAX_UNKNOWN_GPU_MEMORY_MIB};

const MAX_AGE_MS: u64 = 10_000;
const NOW_MS: u64 = 1_000_000;
const H100_MIB: u64 = 81_559;

fn node_with_gpu_memory(memory_mib: &[u64]) -> ClusterSnapshot {
    let mut c = ClusterSnapshot::new();
    c.add_node(NodeSpec {
        name: "gpu-0".into(),
        cpu_milli: 64_000,
        memory_mib: 1 << 20,
        max_pods: 110,
        gpu_model: Some("H100".into()),
        gpus: memory_mib
            .iter()
            .enumerate()
            .map(|(i, &memory_mib)| GpuSpec {
                uuid: format!("GPU-{i}"),
                memory_mib,
            })
            .collect(),
        ..NodeSpec::default()
    })
    .unwrap();
    c
}

fn sample(used_mib: u64, utilization_percent: u32, at_ms: u64) -> GpuSample {
    GpuSample {
        memory_used_mib: used_mib,
        utilization_percent,
        observed_at_ms: at_ms,
    }
}

fn set(c: &mut ClusterSnapshot, sample: GpuSample) -> TelemetryVerdict {
    c.set_gpu_telemetry(NodeId(0), 0, sample, NOW_MS, MAX_AGE_MS)
        .unwrap()
}

fn usable(c: &ClusterSnapshot) -> u32 {
    c.node(NodeId(0)).gpus[0].usable_free()
}

#[test]
fn memory_used_beyond_the_gpu_is_rejected_not_wrapped() {
    let mut c = node_with_gpu_memory(&[H100_MIB]);
    // A busy GPU first: half its memory in use.
    assert_eq!(
        set(&mut c, sample(H100_MIB / 2, 90, NOW_MS)),
        TelemetryVerdict::Fresh
    );
    assert!(usable(&c) < 600);
    // u64::MAX * 50 wrapped (or panicked) and made the GPU look idle.
    for hostile in [u64::MAX, u64::MAX / 50 + 1, H100_MIB + 1] {
        assert_eq!(
            set(&mut c, sample(hostile, 50, NOW_MS)),
            TelemetryVerdict::Rejected(TelemetryRejection::MemoryUsed),
            "{hostile} MiB used"
        );
        assert!(c.node(NodeId(0)).gpus[0].telemetry.is_none(), "ignored");
        assert_eq!(usable(&c), MILLI_PER_GPU, "allocation accounting");
        assert_eq!(
            c.expire_telemetry(NOW_MS, MAX_AGE_MS),
            1,
            "counted as stale"
        );
    }
    // All of its memory in use is plausible, and leaves nothing.
    assert_eq!(
        set(&mut c, sample(H100_MIB, 100, NOW_MS)),
        TelemetryVerdict::Fresh
    );
    assert_eq!(usable(&c), 0);
}

#[test]
fn gpus_with_unknown_memory_have_a_sane_cap() {
    let mut c = node_with_gpu_memory(&[0]);
    assert_eq!(
        set(&mut c, sample(MAX_UNKNOWN_GPU_MEMORY_MIB, 50, NOW_MS)),
        TelemetryVerdict::Fresh
    );
    assert_eq!(usable(&c), MILLI_PER_GPU, "no memory total, no cap");
    assert_eq!(
        set(&mut c, sample(MAX_UNKNOWN_GPU_MEMORY_MIB + 1, 50, NOW_MS)),
        TelemetryVerdict::Rejected(TelemetryRejection::MemoryUsed)
    );
}

#[test]
fn huge_gpu_memory_does_not_overflow_the_cap() {
    // free_mib * 1000 overflowed u64 for a GPU claiming u64::MAX MiB.
    let mut c = node_with_gpu_memory(&[u64::MAX]);
    assert_eq!(
        set(&mut c, sample(u64::MAX / 2, 50, NOW_MS)),
        TelemetryVerdict::Fresh
    );
    assert_eq!(usable(&c), 500);
    assert_eq!(
        set(&mut c, sample(u64::MAX, 50, NOW_MS)),
        TelemetryVerdict::Fresh
    );
    assert_eq!(usable(&c), 0);
    // Just over 2 %: used * 50 overflowed and read as idle.
    assert_eq!(
        set(&mut c, sample(u64::MAX / 50 + 1, 50, NOW_MS)),
        TelemetryVerdict::Fresh
    );
    assert!(usable(&c) < MILLI_PER_GPU);
}

#[test]
fn utilisation_over_100_percent_is_rejected() {
    let mut c = node_with_gpu_memory(&[H100_MIB]);
    assert_eq!(
        set(&mut c, sample(10, 100, NOW_MS)),
        TelemetryVerdict::Fresh
    );
    for hostile in [101, 1_000, u32::MAX] {
        assert_eq!(
            set(&mut c, sample(10, hostile, NOW_MS)),
            TelemetryVerdict::Rejected(TelemetryRejection::Utilization),
            "{hostile} %"
        );
    }
}

#[test]
fn samples_from_the_future_are_rejected_beyond_the_clock_skew() {
    let mut c = node_with_gpu_memory(&[H100_MIB]);
    let skewed = NOW_MS + MAX_TELEMETRY_CLOCK_SKEW_MS;
    assert_eq!(
        set(&mut c, sample(H100_MIB, 50, skewed)),
        TelemetryVerdict::Fresh
    );
    assert_eq!(usable(&c), 0, "a little skew is tolerated");
    // Before, a far-future sample counted as fresh forever.
    for future in [skewed + 1, NOW_MS + 3_600_000, u64::MAX] {
        assert_eq!(
            set(&mut c, sample(H100_MIB, 50, future)),
            TelemetryVerdict::Rejected(TelemetryRejection::ObservedInFuture),
            "observed at {future}"
        );
        assert_eq!(usable(&c), MILLI_PER_GPU);
    }
    // The far future is also not fresh for freshness checks at a later now.
    assert!(!sample(0, 0, u64::MAX).is_fresh(NOW_MS, MAX_AGE_MS));
    // A clock near u64::MAX does not overflow the skew allowance.
    assert!(sample(0, 0, u64::MAX).check(H100_MIB, u64::MAX).is_ok());
}

#[test]
fn hostile_requests_do_not_wrap_into_fitting() {
    let mut c = node_with_gpu_memory(&[H100_MIB]);
    let small =
        PodDemand::new("small", 1_000, 1_024, GpuDemand::None, ModelConstraint::Any).unwrap();
    c.place(
        &small,
        &Placement {
            node: NodeId(0),
            gpus: GpuAssignment::default(),
        },
    )
    .unwrap();
    // used + u64::MAX overflowed (a panic in debug, "fits" in release).
    let cpu = PodDemand::new("cpu", u64::MAX, 1, GpuDemand::None, ModelConstraint::Any).unwrap();
    assert_eq!(
        c.check_fit(NodeId(0), &cpu),
        Err(UnfitReason::InsufficientCpu)
    );
    let memory =
        PodDemand::new("memory", 1, u64::MAX, GpuDemand::None, ModelConstraint::Any).unwrap();
    assert_eq!(
        c.check_fit(NodeId(0), &memory),
        Err(UnfitReason::InsufficientMemory)
    );
}
