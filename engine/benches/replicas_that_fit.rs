//! The autoscaler's capacity check with the default policy at 1,000 and 5,000
//! nodes: how many more replicas fit behind the pods already queued.
//!
//! * `gpu1-x64`: up to 64 one-GPU inference replicas behind 16 pending pods of
//!   the mix, a scale-up that fits;
//! * `gpu8-until-full`: 8-GPU replicas with no limit, so it places one on every
//!   node that can take it and ends on the unschedulable path.
//!
//! `replicas_that_fit` leaves the snapshot as it found it, so it is timed as is.

mod support;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use phalanx_engine::{
    replicas_that_fit, CycleScratch, GpuDemand, ModelConstraint, PodDemand, ReplicaFit,
};

const AHEAD: usize = 16;

fn replica(gpus: u32) -> PodDemand {
    PodDemand::new(
        format!("replica-gpu{gpus}"),
        8_000 * u64::from(gpus),
        32 * 1024 * u64::from(gpus),
        GpuDemand::Whole { count: gpus },
        ModelConstraint::Any,
    )
    .expect("a valid replica")
}

fn replicas_that_fit_bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("replicas_that_fit");
    group.sample_size(10);
    for nodes in support::SIZES {
        let mut snapshot = support::cluster(nodes);
        let mut policy = support::default_policy(&snapshot);
        let mut scratch = CycleScratch::default();
        let ahead = support::pod_stream(&snapshot, AHEAD);
        let cases = [
            ("gpu1-x64", replica(1), 64, &ahead[..]),
            ("gpu8-until-full", replica(8), u32::MAX, &[][..]),
        ];
        for (case, pod, limit, ahead) in &cases {
            group.bench_function(BenchmarkId::new(*case, nodes), |b| {
                b.iter(|| {
                    let fit: ReplicaFit = replicas_that_fit(
                        &mut snapshot,
                        policy.as_mut(),
                        ahead,
                        pod,
                        *limit,
                        &mut scratch,
                    )
                    .expect("the check leaves the snapshot consistent");
                    black_box(fit)
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, replicas_that_fit_bench);
criterion_main!(benches);
