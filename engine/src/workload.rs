//! The workload model FGD measures fragmentation against: the "typical pods" set T
//! (spec §5.1), built either from a whole trace or learned online from pods seen.

use std::collections::HashMap;

use super::pod::PodShape;

/// One typical pod type with its weight (Σ weights = 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TypicalPod {
    pub shape: PodShape,
    pub weight: f64,
}

/// The key a pod type is counted under: the shape plus the model spec *string*,
/// because the spec orders and distinguishes types bytewise (§1.2), even where two
/// strings allow the same models.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TypeKey {
    shape: PodShape,
    spec: String,
}

/// Pods an online workload model must have seen before it is trusted. Until then T
/// is empty, every node scores alike, and placement is first-fit by node rank; a
/// distribution guessed from a few dozen pods did measurably worse (see README).
pub const ONLINE_MIN_SAMPLES: u64 = 256;

/// A [`WorkloadModel`] learned from arriving pods, with the schedule on which
/// T is rebuilt: first at [`ONLINE_MIN_SAMPLES`] pods, then every 25 % more
/// (a few dozen times over a cluster's life). Shared by the online policies
/// and the scheduler's gauges; each decides what a rebuilt T changes.
#[derive(Debug, Clone, Default)]
pub struct OnlineWorkload {
    model: WorkloadModel,
    next_refresh_at: u64,
}

impl OnlineWorkload {
    pub fn new() -> Self {
        OnlineWorkload {
            model: WorkloadModel::new(),
            next_refresh_at: ONLINE_MIN_SAMPLES,
        }
    }

    /// Counts an arriving pod; the rebuilt T when one is due.
    pub fn observe(&mut self, shape: PodShape) -> Option<Vec<TypicalPod>> {
        self.model.observe(shape, "");
        let seen = self.model.pods_observed();
        if seen < self.next_refresh_at {
            return None;
        }
        self.next_refresh_at = (seen + seen / 4).max(seen + 16);
        Some(self.model.typical_pods())
    }
}

/// Counts pod types and turns the counts into the typical set T.
#[derive(Debug, Clone, Default)]
pub struct WorkloadModel {
    counts: HashMap<TypeKey, u64>,
    total: u64,
    /// Share of all pods that T must cover (FGD: 95 %).
    coverage_percent: u64,
}

impl WorkloadModel {
    /// FGD's `podPopularityThreshold`.
    pub const FGD_COVERAGE_PERCENT: u64 = 95;

    pub fn new() -> Self {
        Self::with_coverage(Self::FGD_COVERAGE_PERCENT)
    }

    pub fn with_coverage(coverage_percent: u64) -> Self {
        WorkloadModel {
            counts: HashMap::new(),
            total: 0,
            coverage_percent: coverage_percent.clamp(1, 100),
        }
    }

    /// Counts one pod of this shape (`spec` is its allowed-models string, "" for any).
    pub fn observe(&mut self, shape: PodShape, spec: &str) {
        *self
            .counts
            .entry(TypeKey {
                shape,
                spec: spec.to_owned(),
            })
            .or_insert(0) += 1;
        self.total += 1;
    }

    pub fn pods_observed(&self) -> u64 {
        self.total
    }

    pub fn distinct_types(&self) -> usize {
        self.counts.len()
    }

    /// T: types by count descending (ties by key descending: cpu, milli, count,
    /// spec), the shortest prefix covering the coverage share, weights renormalised.
    pub fn typical_pods(&self) -> Vec<TypicalPod> {
        let mut types: Vec<(&TypeKey, u64)> = self.counts.iter().map(|(k, n)| (k, *n)).collect();
        types.sort_by(|(a, na), (b, nb)| {
            nb.cmp(na)
                .then_with(|| b.shape.cpu_milli.cmp(&a.shape.cpu_milli))
                .then_with(|| {
                    b.shape
                        .gpu
                        .milli_per_gpu()
                        .cmp(&a.shape.gpu.milli_per_gpu())
                })
                .then_with(|| b.shape.gpu.gpu_count().cmp(&a.shape.gpu.gpu_count()))
                .then_with(|| b.spec.as_bytes().cmp(a.spec.as_bytes()))
        });
        let needed = self.total * self.coverage_percent;
        let mut covered = 0u64;
        let mut chosen = Vec::new();
        for (key, n) in types {
            if covered * 100 >= needed {
                break;
            }
            covered += n;
            chosen.push((key.shape, n));
        }
        let sum: u64 = chosen.iter().map(|(_, n)| n).sum();
        chosen
            .into_iter()
            .map(|(shape, n)| TypicalPod {
                shape,
                weight: n as f64 / sum as f64,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GpuDemand, ModelConstraint};

    fn shape(cpu: u64, gpu: GpuDemand) -> PodShape {
        PodShape {
            cpu_milli: cpu,
            gpu,
            models: ModelConstraint::Any,
        }
    }

    #[test]
    fn typical_set_is_the_shortest_prefix_covering_the_threshold() {
        let mut w = WorkloadModel::new();
        for _ in 0..60 {
            w.observe(shape(1000, GpuDemand::Whole { count: 1 }), "");
        }
        for _ in 0..36 {
            w.observe(shape(2000, GpuDemand::Share { milli: 500 }), "");
        }
        for _ in 0..4 {
            w.observe(shape(500, GpuDemand::None), "");
        }
        let t = w.typical_pods();
        // 60 + 36 = 96 ≥ 95: the CPU-only type is left out, weights renormalised.
        assert_eq!(t.len(), 2);
        assert!((t[0].weight - 60.0 / 96.0).abs() < 1e-12);
        assert!((t[1].weight - 36.0 / 96.0).abs() < 1e-12);
    }

    #[test]
    fn equal_counts_order_by_key_descending() {
        let mut w = WorkloadModel::with_coverage(100);
        w.observe(shape(1000, GpuDemand::None), "");
        w.observe(shape(3000, GpuDemand::None), "");
        w.observe(shape(3000, GpuDemand::Share { milli: 200 }), "");
        let t = w.typical_pods();
        assert_eq!(t[0].shape.gpu, GpuDemand::Share { milli: 200 });
        assert_eq!(t[1].shape.cpu_milli, 3000);
        assert_eq!(t[2].shape.cpu_milli, 1000);
    }

    #[test]
    fn same_shape_with_different_spec_strings_are_different_types() {
        let mut w = WorkloadModel::with_coverage(100);
        w.observe(shape(1000, GpuDemand::Whole { count: 1 }), "A|B");
        w.observe(shape(1000, GpuDemand::Whole { count: 1 }), "A|B|B");
        assert_eq!(w.distinct_types(), 2);
    }
}
