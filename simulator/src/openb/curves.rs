//! Per-pod records discretised to integer "arrived %" buckets, as the paper's
//! `merge_*_discrete.py` does (spec §7.2).

/// Buckets 0..=130 % of GPU capacity.
pub const BUCKETS: usize = 131;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    events: u32,
    alloc: f64,
    frag_amount: f64,
    frag_ratio: f64,
}

/// Accumulates one record per pod attempt.
#[derive(Debug, Clone)]
pub struct CurveRecorder {
    percent_milli: f64,
    capacity_milli: u64,
    buckets: Vec<Bucket>,
}

/// The three curves of a run; `None` where no event fell near a bucket.
#[derive(Debug, Clone, Default)]
pub struct Curves {
    pub allocation: Vec<Option<f64>>,
    pub frag_amount: Vec<Option<f64>>,
    pub frag_ratio: Vec<Option<f64>>,
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

impl CurveRecorder {
    pub fn new(capacity_milli: u64) -> Self {
        CurveRecorder {
            percent_milli: capacity_milli.max(1) as f64 / 100.0,
            capacity_milli,
            buckets: vec![Bucket::default(); BUCKETS],
        }
    }

    /// Records the cluster after one pod's attempt.
    pub fn record(&mut self, arrived_milli: u64, used_milli: u64, frag_milli: f64) {
        let bucket = (arrived_milli as f64 / self.percent_milli).round_ties_even();
        if !(0.0..BUCKETS as f64).contains(&bucket) {
            return;
        }
        let idle = self.capacity_milli.saturating_sub(used_milli) as f64;
        let b = &mut self.buckets[bucket as usize];
        b.events += 1;
        b.alloc += round2(used_milli as f64 / self.percent_milli);
        b.frag_amount += frag_milli / self.percent_milli;
        b.frag_ratio += if idle > 0.0 {
            100.0 * frag_milli / idle
        } else {
            0.0
        };
    }

    /// Bucket means; an empty bucket borrows the events of its neighbours (r ± 1).
    pub fn curves(&self) -> Curves {
        let mut out = Curves::default();
        for r in 0..BUCKETS {
            let mut window = self.buckets[r];
            if window.events == 0 {
                for near in [r.wrapping_sub(1), r + 1] {
                    if let Some(b) = self.buckets.get(near) {
                        window.events += b.events;
                        window.alloc += b.alloc;
                        window.frag_amount += b.frag_amount;
                        window.frag_ratio += b.frag_ratio;
                    }
                }
            }
            let n = f64::from(window.events);
            let mean = |sum: f64| (window.events > 0).then(|| sum / n);
            out.allocation.push(mean(window.alloc).map(round2));
            out.frag_amount.push(mean(window.frag_amount).map(round2));
            out.frag_ratio.push(mean(window.frag_ratio));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_average_events_and_round_half_even() {
        let mut rec = CurveRecorder::new(10_000); // 1 % = 100 milli
        rec.record(50, 0, 0.0); // 0.5 -> bucket 0 (half to even)
        rec.record(150, 100, 0.0); // 1.5 -> bucket 2
        rec.record(250, 200, 0.0); // 2.5 -> bucket 2
        let c = rec.curves();
        assert_eq!(c.allocation[0], Some(0.0));
        assert_eq!(c.allocation[2], Some(1.5));
        // Bucket 1 is empty and borrows buckets 0 and 2: (0 + 1 + 2) / 3.
        assert_eq!(c.allocation[1], Some(1.0));
        assert_eq!(c.allocation[4], None);
    }

    #[test]
    fn fragmentation_ratio_is_of_idle_gpu() {
        let mut rec = CurveRecorder::new(10_000);
        rec.record(10_000, 6_000, 1_000.0);
        let c = rec.curves();
        assert_eq!(c.frag_amount[100], Some(10.0));
        assert!((c.frag_ratio[100].unwrap() - 25.0).abs() < 1e-9);
    }
}
