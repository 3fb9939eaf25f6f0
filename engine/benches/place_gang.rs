//! Gang placement (every member or none) with the default policy: gangs of 8, 64
//! and 1,000 one-GPU workers at 1,000 and 5,000 nodes, with no topology and with
//! racks of 32 nodes as a preferred level (`members=N,rack`). A 1,000-member gang
//! fits in no rack: the capacity pre-check skips every rack without an attempt
//! and the gang is placed over the whole cluster.
//!
//! Only `place_gang` is timed. After each one the gang's placements are released
//! outside the timed part, so every iteration starts from the same pods; the
//! released nodes have new generations, as a fresh cluster would have for the
//! policy's caches.

mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use phalanx_engine::{place_gang, CycleScratch, GangSpec, TopologyLevel};

const GANG_SIZES: [usize; 3] = [8, 64, 1_000];

fn place_gang_bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("place_gang");
    // A 1,000-member gang is a thousand cycles; ten samples keep the run short.
    group.sample_size(10);
    for nodes in support::SIZES {
        let mut snapshot = support::cluster(nodes);
        let mut policy = support::default_policy(&snapshot);
        let mut scratch = CycleScratch::default();
        let racks = [TopologyLevel::preferred(support::RACK_LABEL)];
        for (size, topology, suffix) in GANG_SIZES
            .into_iter()
            .flat_map(|size| [(size, &[][..], ""), (size, &racks[..], ",rack")])
        {
            let members = support::gang_members(size);
            let gang = GangSpec {
                name: "bench-gang",
                members: &members,
                min_member: size,
                topology,
                ..GangSpec::default()
            };
            group.throughput(Throughput::Elements(size as u64));
            let id = BenchmarkId::new(format!("members={size}{suffix}"), nodes);
            group.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    let mut timed = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        let outcome =
                            place_gang(&mut snapshot, policy.as_mut(), &gang, &mut scratch);
                        timed += start.elapsed();
                        let plan = black_box(outcome)
                            .expect("a valid gang")
                            .expect("the benchmark clusters have room for every gang");
                        for (member, placement) in plan.placements.iter().rev() {
                            snapshot
                                .release(&members[*member], placement)
                                .expect("what the gang placed releases");
                        }
                    }
                    timed
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, place_gang_bench);
criterion_main!(benches);
