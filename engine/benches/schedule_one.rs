//! One scheduling cycle per built-in policy at 1,000 and 5,000 nodes.
//!
//! Each iteration takes the next pod of a fixed stream drawn from the benchmark
//! mix (whole GPUs, shares, CPU-only, model-pinned) and runs the cycle as the
//! scheduler does: `schedule_one`, then commit the placement. The commit is
//! undone inside the iteration (a place and a release cost O(GPUs of one node)),
//! so every iteration sees the same pods on the same cluster, and the node it
//! touched has a new generation, as after a real placement: the policy rescores
//! that node next time instead of reading its cache. The time is per pod.

mod support;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use phalanx_engine::{CycleScratch, PolicyName};

fn schedule_one(c: &mut Criterion) {
    let mut group = c.benchmark_group("schedule_one");
    group.throughput(Throughput::Elements(1));
    for nodes in support::SIZES {
        let mut snapshot = support::cluster(nodes);
        let pods = support::pod_stream(&snapshot, support::STREAM_LEN);
        for name in PolicyName::ALL {
            let mut policy = support::policy(name, &snapshot);
            let mut scratch = CycleScratch::default();
            let mut next = 0;
            group.bench_function(BenchmarkId::new(name.as_str(), nodes), |b| {
                b.iter(|| {
                    let pod = &pods[next % pods.len()];
                    next += 1;
                    black_box(support::cycle(
                        &mut snapshot,
                        policy.as_mut(),
                        pod,
                        &mut scratch,
                    ))
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, schedule_one);
criterion_main!(benches);
