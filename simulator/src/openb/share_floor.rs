//! A second, honest floor under unallocated GPU (issue 19): the fewest GPUs
//! the arrived shares of one GPU can occupy when every one of them is placed.
//!
//! [`super::bound`] reaches its bound partly by leaving shares unplaced (each
//! 810-milli share left out frees a GPU for a whole-GPU pod). A scheduler that
//! places each pod that fits when it arrives places nearly every share, so this
//! floor asks a narrower question: for placements that place *every* arrived
//! share, how much GPU must stay unallocated?
//!
//! # The reasoning
//!
//! Let `C` be the cluster's GPU milli, `D` the arrived GPU demand in milli,
//! `S` the milli of the arrived shares and `G` a lower bound on the GPUs any
//! packing of those shares occupies (each GPU holds shares summing to at most
//! 1000 milli). A whole-GPU pod takes only GPUs no share is on, so in any
//! placement that places every share, at most `C − 1000·G` milli is left for
//! whole-GPU pods, which ask for `D − S` in all. Hence
//!
//! ```text
//! allocated ≤ S + min(D − S, C − 1000·G) = min(D, S + C − 1000·G)  (≤ C, as S ≤ 1000·G)
//! unallocated % ≥ 100 · (C − allocated) / C
//! ```
//!
//! for every such placement, whichever whole-GPU pods fail. If `1000·G > C`,
//! no placement places every share: the floor holds vacuously and says
//! nothing, so [`ShareFloor::unallocated_percent`] gives none.
//!
//! `G` is the Gilmore–Gomory linear relaxation of the bin-packing problem,
//! rounded up: one variable per maximal packing pattern (a multiset of share
//! sizes summing to at most 1000 milli, no size used more often than it
//! arrived, to which no remaining size can be added); minimise the patterns
//! used, each size covered at least as often as it arrived. Every GPU of a
//! real packing holds a sub-multiset of some maximal pattern, so a packing on
//! `k` GPUs is a feasible point of value `k`: the LP optimum, and its ceiling,
//! is at most the integer optimum.
//!
//! # What it bounds, and what it does not
//!
//! Only placements that place *every* arrived share. The one-at-a-time
//! policies do not: by 100 % arrived the cluster is nearly full and shares fail
//! too (FGD places about 95 % of the arrived shares on the default trace,
//! 87 % on `gpushare100`, where no placement fits them all). So the floor is
//! not a floor under their figures. For them, [`PlacedShares`] and
//! [`run_share_gap`] compare the GPUs a run's own shares sit on with the
//! floor for those same shares: what a better packing of what the run placed
//! could at most free.
//!
//! The openb traces have 17–20 share sizes, the smallest 50 milli, and 600–1,900
//! maximal patterns: the program is small and solves in milliseconds, so the
//! patterns are enumerated, not generated.
//!
//! # Relaxations (each keeps the floor valid, none makes it tighter)
//!
//! - Only GPU milli counts: CPU, memory and pod slots are ignored, and so is
//!   which node a share's GPU is on.
//! - GPU models are ignored: a share restricted to models only some nodes have
//!   is packed as if any GPU would do. None of the 19 shipped openb traces
//!   restricts a share's model, so there this costs nothing.
//! - Whole-GPU pods are counted in milli only (not whether `k` free GPUs sit
//!   on one node of an allowed model).

use std::collections::BTreeMap;

use good_lp::{constraint, variable, Expression, ProblemVariables, Solution, SolverModel};
use phalanx_engine::{ClusterSnapshot, GpuDemand};

use super::bound::arrived_prefix;
use super::run::PreparedTrace;
use crate::trace::TracePod;

const MILLI_PER_GPU: u64 = 1000;

/// More maximal patterns than this and the linear program is not built: the
/// openb traces have about 1,900 (20 share sizes, the smallest 50 milli).
pub const MAX_PATTERNS: usize = 100_000;

/// Leaves the pattern search may visit (maximal or not) before it gives up:
/// a guard against inputs whose patterns are mostly not maximal.
const MAX_SEARCH_LEAVES: usize = 50 * MAX_PATTERNS;

/// Slack for the solver's floating point before rounding the LP optimum up:
/// an optimum of 3.0000001 still means 3 GPUs.
const LP_TOLERANCE: f64 = 1e-6;

/// The floor for one arrival list.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShareFloor {
    /// Arrived shares of one GPU, and how many distinct sizes they have.
    pub shares: usize,
    pub sizes: usize,
    /// Maximal packing patterns the linear program had.
    pub patterns: usize,
    /// The LP optimum, and `G`: the fewest GPUs any packing of the shares
    /// occupies is at least its ceiling.
    pub lp_gpus: f64,
    pub gpus: u64,
    /// `S`, `D` and `C` of the module's reasoning, in milli.
    pub share_milli: u64,
    pub demand_milli: u64,
    pub capacity_milli: u64,
}

impl ShareFloor {
    /// Whether the cluster has the `G` GPUs the shares need at least.
    pub fn all_shares_fit(&self) -> bool {
        self.gpus * MILLI_PER_GPU <= self.capacity_milli
    }

    /// The most GPU milli any placement that places every arrived share can
    /// allocate: `min(D, S + C − 1000·G)`.
    pub fn allocated_max_milli(&self) -> u64 {
        let left_for_whole =
            (self.share_milli + self.capacity_milli).saturating_sub(self.gpus * MILLI_PER_GPU);
        self.demand_milli.min(left_for_whole)
    }

    /// Unallocated GPU % that every placement placing every arrived share
    /// leaves at least; `None` when no placement places every arrived share
    /// (the shares need more GPUs than the cluster has), as on `gpushare100`
    /// at 100 % arrived, where the floor says nothing.
    pub fn unallocated_percent(&self) -> Option<f64> {
        self.all_shares_fit().then(|| {
            let idle = self.capacity_milli - self.allocated_max_milli().min(self.capacity_milli);
            100.0 * idle as f64 / self.capacity_milli as f64
        })
    }

    /// `1000·G − S` as % of the cluster: the free parts of share-holding GPUs
    /// no packing of these shares avoids.
    pub fn share_waste_percent(&self) -> f64 {
        let waste = (self.gpus * MILLI_PER_GPU).saturating_sub(self.share_milli);
        100.0 * waste as f64 / self.capacity_milli as f64
    }
}

/// The fewest GPUs a multiset of shares occupies, by the LP relaxation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SharePacking {
    pub patterns: usize,
    pub lp_gpus: f64,
    pub gpus: u64,
}

/// Why no floor came back.
#[derive(Debug, thiserror::Error)]
pub enum ShareFloorError {
    #[error("the cluster has no GPU capacity")]
    NoCapacity,
    #[error("a share of {milli} milli is not a share of one GPU (1..=999 milli)")]
    NotAShare { milli: u32 },
    #[error(
        "the shares have more than {limit} maximal packing patterns ({sizes} sizes); \
         the pattern linear program would be too large"
    )]
    TooManyPatterns { sizes: usize, limit: usize },
    #[error("the linear program could not be solved: {0}")]
    Solver(String),
}

/// The floor for the arrived `pods` on a cluster of `capacity_milli` GPU milli.
pub fn share_floor(pods: &[&TracePod], capacity_milli: u64) -> Result<ShareFloor, ShareFloorError> {
    if capacity_milli == 0 {
        return Err(ShareFloorError::NoCapacity);
    }
    let mut counts: BTreeMap<u32, u64> = BTreeMap::new();
    for pod in pods {
        if let GpuDemand::Share { milli } = pod.gpu {
            *counts.entry(milli).or_default() += 1;
        }
    }
    let packing = fewest_gpus_for_shares(&counts)?;
    Ok(ShareFloor {
        shares: counts.values().sum::<u64>() as usize,
        sizes: counts.len(),
        patterns: packing.patterns,
        lp_gpus: packing.lp_gpus,
        gpus: packing.gpus,
        share_milli: counts.iter().map(|(m, n)| u64::from(*m) * n).sum(),
        demand_milli: pods.iter().map(|p| p.gpu.total_milli()).sum(),
        capacity_milli,
    })
}

/// The LP lower bound on the GPUs that hold `counts[milli]` shares of each
/// size. Public so that a run's own placed shares can be measured alike.
pub fn fewest_gpus_for_shares(
    counts: &BTreeMap<u32, u64>,
) -> Result<SharePacking, ShareFloorError> {
    if let Some(&milli) = counts
        .keys()
        .find(|&&m| m == 0 || u64::from(m) >= MILLI_PER_GPU)
    {
        return Err(ShareFloorError::NotAShare { milli });
    }
    let sizes: Vec<(u32, u64)> = counts
        .iter()
        .rev()
        .filter(|(_, &n)| n > 0)
        .map(|(&m, &n)| (m, n))
        .collect();
    if sizes.is_empty() {
        return Ok(SharePacking {
            patterns: 0,
            lp_gpus: 0.0,
            gpus: 0,
        });
    }
    let patterns = maximal_patterns(&sizes)?;

    let mut vars = ProblemVariables::new();
    let x: Vec<good_lp::Variable> = patterns
        .iter()
        .map(|_| vars.add(variable().min(0.0)))
        .collect();
    let objective: Expression = x.iter().copied().sum();
    let mut model = vars.minimise(objective.clone()).using(good_lp::microlp);
    for (i, (_, count)) in sizes.iter().enumerate() {
        let covered: Expression = patterns
            .iter()
            .zip(&x)
            .filter(|(p, _)| p[i] > 0)
            .map(|(p, v)| f64::from(p[i]) * *v)
            .sum();
        model = model.with(constraint!(covered >= *count as f64));
    }
    let solution = model
        .solve()
        .map_err(|e| ShareFloorError::Solver(e.to_string()))?;
    let lp_gpus = solution.eval(&objective);
    Ok(SharePacking {
        patterns: patterns.len(),
        lp_gpus,
        gpus: (lp_gpus - LP_TOLERANCE).ceil().max(0.0) as u64,
    })
}

/// Every maximal pattern over `sizes` (milli, count; largest first): how many
/// of each size one GPU holds, no size above its count, and no size with
/// copies left that would still fit.
fn maximal_patterns(sizes: &[(u32, u64)]) -> Result<Vec<Vec<u32>>, ShareFloorError> {
    struct Search<'a> {
        sizes: &'a [(u32, u64)],
        current: Vec<u32>,
        found: Vec<Vec<u32>>,
        leaves: usize,
    }
    impl Search<'_> {
        fn extend(&mut self, i: usize, free: u64) -> bool {
            if i == self.sizes.len() {
                self.leaves += 1;
                if self.leaves > MAX_SEARCH_LEAVES {
                    return false;
                }
                let room_left = self
                    .sizes
                    .iter()
                    .zip(&self.current)
                    .any(|((m, n), used)| u64::from(*used) < *n && u64::from(*m) <= free);
                if !room_left {
                    if self.found.len() == MAX_PATTERNS {
                        return false;
                    }
                    self.found.push(self.current.clone());
                }
                return true;
            }
            let (milli, count) = self.sizes[i];
            let most = (free / u64::from(milli)).min(count) as u32;
            for k in (0..=most).rev() {
                self.current[i] = k;
                if !self.extend(i + 1, free - u64::from(k) * u64::from(milli)) {
                    return false;
                }
            }
            self.current[i] = 0;
            true
        }
    }
    let mut search = Search {
        sizes,
        current: vec![0; sizes.len()],
        found: Vec::new(),
        leaves: 0,
    };
    if search.extend(0, MILLI_PER_GPU) {
        Ok(search.found)
    } else {
        Err(ShareFloorError::TooManyPatterns {
            sizes: sizes.len(),
            limit: MAX_PATTERNS,
        })
    }
}

/// The shares one run placed, by size, and how many GPUs they sat on: the
/// policy's own packing, to hold against the best packing of the same shares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlacedShares {
    pub by_milli: BTreeMap<u32, u64>,
    /// GPUs holding at least one share.
    pub gpus: u64,
}

impl PlacedShares {
    /// A share of `milli` was placed (the GPUs they sit on are counted off
    /// the cluster when the figures are taken).
    pub fn record(&mut self, milli: u32) {
        *self.by_milli.entry(milli).or_default() += 1;
    }
}

/// A run's packing of the shares it placed beside the fewest GPUs those same
/// shares could occupy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunShareGap {
    /// GPUs the run's shares sat on.
    pub run_gpus: u64,
    /// The LP floor for the same shares.
    pub floor: SharePacking,
}

impl RunShareGap {
    /// GPUs the run's packing used beyond the floor, as % of a cluster of
    /// `capacity_milli`: what a better packing of the same shares could at
    /// most free for whole-GPU pods.
    pub fn excess_percent(&self, capacity_milli: u64) -> f64 {
        let excess = self.run_gpus.saturating_sub(self.floor.gpus) * MILLI_PER_GPU;
        100.0 * excess as f64 / capacity_milli.max(1) as f64
    }
}

/// The floor for the shares a run placed (see [`PlacedShares`]).
pub fn run_share_gap(placed: &PlacedShares) -> Result<RunShareGap, ShareFloorError> {
    Ok(RunShareGap {
        run_gpus: placed.gpus,
        floor: fewest_gpus_for_shares(&placed.by_milli)?,
    })
}

/// The floor at 100 % arrived for each seed's arrival list (from
/// [`super::arrivals::seed_arrivals`], as [`super::bound::seed_bounds`] takes).
pub fn seed_share_floors(
    cluster: &ClusterSnapshot,
    trace: &PreparedTrace,
    arrivals: &[Vec<usize>],
) -> Result<Vec<ShareFloor>, ShareFloorError> {
    let capacity = cluster.gpu_milli_capacity();
    arrivals
        .iter()
        .map(|arrived| {
            let prefix = arrived_prefix(&trace.pods, arrived, capacity, 100.0);
            share_floor(&prefix, capacity)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;

    fn pod(gpu: GpuDemand, spec: &str) -> TracePod {
        TracePod {
            name: "p".into(),
            cpu_milli: 1_000,
            memory_mib: 1,
            gpu,
            spec: spec.into(),
            qos: Default::default(),
            times: Default::default(),
        }
    }

    fn shares(milli: &[u32]) -> Vec<TracePod> {
        milli
            .iter()
            .map(|&milli| pod(GpuDemand::Share { milli }, ""))
            .collect()
    }

    fn floor(pods: &[TracePod], capacity_milli: u64) -> ShareFloor {
        let refs: Vec<&TracePod> = pods.iter().collect();
        share_floor(&refs, capacity_milli).unwrap()
    }

    fn packing(milli: &[u32]) -> SharePacking {
        let mut counts = BTreeMap::new();
        for &m in milli {
            *counts.entry(m).or_default() += 1;
        }
        fewest_gpus_for_shares(&counts).unwrap()
    }

    /// The fewest GPUs that hold `items`, by trying every assignment.
    fn exact_bins(items: &[u32]) -> u64 {
        fn place(items: &[u32], bins: &mut Vec<u32>, best: &mut usize) {
            if bins.len() >= *best {
                return;
            }
            let Some((&item, rest)) = items.split_first() else {
                *best = bins.len();
                return;
            };
            for b in 0..bins.len() {
                if bins[b] + item <= 1000 {
                    bins[b] += item;
                    place(rest, bins, best);
                    bins[b] -= item;
                }
            }
            bins.push(item);
            place(rest, bins, best);
            bins.pop();
        }
        let mut best = items.len();
        place(items, &mut Vec::new(), &mut best);
        best as u64
    }

    fn percent(f: &ShareFloor) -> f64 {
        f.unallocated_percent().unwrap()
    }

    #[test]
    fn complementary_shares_pair_perfectly() {
        let p = packing(&[810, 190, 810, 190, 810, 190]);
        assert_eq!(p.gpus, 3);
        assert!((p.lp_gpus - 3.0).abs() < 1e-6, "{p:?}");
    }

    #[test]
    fn a_fractional_optimum_rounds_up() {
        // Two 400s share a GPU, a third does not fit beside them: the LP
        // covers three with 1.5 patterns of two; one GPU is never enough.
        let p = packing(&[400, 400, 400]);
        assert!((p.lp_gpus - 1.5).abs() < 1e-6, "{p:?}");
        assert_eq!(p.gpus, 2);
        // Shares above half a GPU each need their own.
        assert_eq!(packing(&[600, 600]).gpus, 2);
        // 0.9 GPU of shares in all still needs two GPUs when none pair up.
        assert_eq!(packing(&[300, 300, 300, 300, 300]).gpus, 2);
        assert_eq!(packing(&[510, 510, 510, 480]).gpus, 3);
    }

    #[test]
    fn the_floor_leaves_share_gpus_to_shares_and_the_rest_to_whole_pods() {
        // Four GPUs; three 400s (1,200 milli on two GPUs at best) and three
        // one-GPU pods: at most two whole pods fit beside the shares, so at
        // most 3,200 of 4,000 milli is allocated.
        let mut pods = shares(&[400, 400, 400]);
        pods.extend((0..3).map(|_| pod(GpuDemand::Whole { count: 1 }, "")));
        pods.push(pod(GpuDemand::None, ""));
        let f = floor(&pods, 4_000);
        assert_eq!((f.shares, f.sizes, f.gpus), (3, 1, 2));
        assert_eq!((f.share_milli, f.demand_milli), (1_200, 4_200));
        assert_eq!(f.allocated_max_milli(), 3_200);
        assert!((percent(&f) - 20.0).abs() < 1e-9);
        assert!((f.share_waste_percent() - 20.0).abs() < 1e-9);
        assert!(f.all_shares_fit());
        // With demand below what fits, the demand is the limit.
        let f = floor(&shares(&[400, 400, 400]), 4_000);
        assert_eq!(f.allocated_max_milli(), 1_200);
        assert!((percent(&f) - 70.0).abs() < 1e-9);
    }

    #[test]
    fn models_are_relaxed_and_too_few_gpus_is_said() {
        // A share restricted to a model still counts (the floor ignores
        // models); two shares above half a GPU on a one-GPU cluster cannot
        // all be placed.
        let pods = vec![
            pod(GpuDemand::Share { milli: 700 }, "T4"),
            pod(GpuDemand::Share { milli: 700 }, ""),
        ];
        let f = floor(&pods, 1_000);
        assert_eq!(f.gpus, 2);
        assert!(!f.all_shares_fit());
        assert_eq!(f.unallocated_percent(), None);
    }

    #[test]
    fn no_shares_no_gpus_and_bad_input_is_an_error() {
        let f = floor(&[pod(GpuDemand::Whole { count: 2 }, "")], 4_000);
        assert_eq!((f.gpus, f.patterns), (0, 0));
        assert!((percent(&f) - 50.0).abs() < 1e-9);
        assert!(matches!(
            share_floor(&[], 0),
            Err(ShareFloorError::NoCapacity)
        ));
        let counts = BTreeMap::from([(1_000, 1)]);
        assert!(matches!(
            fewest_gpus_for_shares(&counts),
            Err(ShareFloorError::NotAShare { milli: 1_000 })
        ));
    }

    #[test]
    fn too_many_patterns_is_an_error_not_a_hang() {
        // Every size from 1 to 120 milli, plenty of each: far more than the
        // limit of ways to fill one GPU.
        let counts: BTreeMap<u32, u64> = (1..=120).map(|m| (m, 1_000)).collect();
        assert!(matches!(
            fewest_gpus_for_shares(&counts),
            Err(ShareFloorError::TooManyPatterns { sizes: 120, .. })
        ));
    }

    /// The figures for the report: `cargo test --release -p phalanx-sim
    /// share_floor -- --ignored --nocapture`. Traces other than the embedded
    /// default are read from `$PHALANX_OPENB_TRACES` (default
    /// `/work/shared/traces/openb`); missing ones are skipped.
    #[test]
    #[ignore = "measurement; prints figures"]
    fn measure_share_floors() {
        use crate::openb::arrivals::seed_arrivals;
        use crate::trace::{build_cluster, read_nodes, read_pods, CsvSource};
        let nodes = read_nodes(&CsvSource::embedded("nodes", crate::EMBEDDED_NODES)).unwrap();
        let cluster = build_cluster(&nodes).unwrap();
        let dir = std::env::var("PHALANX_OPENB_TRACES")
            .unwrap_or_else(|_| "/work/shared/traces/openb".into());
        let mut sources = vec![CsvSource::embedded(
            "openb_pod_list_default",
            crate::EMBEDDED_PODS,
        )];
        for name in ["gpushare40", "gpushare100", "multigpu50", "cpu250"] {
            let path = std::path::PathBuf::from(&dir).join(format!("openb_pod_list_{name}.csv"));
            match CsvSource::read(&path) {
                Ok(src) => sources.push(src),
                Err(e) => println!("skipped {}: {e}", path.display()),
            }
        }
        let seeds: Vec<u64> = (42..=51).collect();
        for src in &sources {
            let trace = PreparedTrace::new(
                src.workload_name(),
                src.name.clone(),
                read_pods(src).unwrap(),
                &cluster,
            );
            println!("{}:", trace.workload);
            let mut floors = Vec::new();
            for &seed in &seeds {
                let started = std::time::Instant::now();
                let arrivals = seed_arrivals(&trace.pods, &cluster, &[seed], 1.3);
                let f = seed_share_floors(&cluster, &trace, &arrivals).unwrap()[0];
                let seconds = started.elapsed().as_secs_f64();
                let floor = f.unallocated_percent().map_or(
                    "none (the shares need more GPUs than the cluster's)".into(),
                    |p| format!("{p:.3} %"),
                );
                println!(
                    "  seed {seed}: unallocated ≥ {floor}, G {} of {} GPUs (LP {:.3}), share waste {:.3} %, \
                     {} shares in {} sizes, {} patterns, {:.3} s",
                    f.gpus,
                    f.capacity_milli / MILLI_PER_GPU,
                    f.lp_gpus,
                    f.share_waste_percent(),
                    f.shares,
                    f.sizes,
                    f.patterns,
                    seconds
                );
                floors.push(f);
            }
            let mean =
                |v: fn(&ShareFloor) -> f64| floors.iter().map(v).sum::<f64>() / floors.len() as f64;
            let fit: Vec<f64> = floors
                .iter()
                .filter_map(ShareFloor::unallocated_percent)
                .collect();
            let floor_mean = if fit.is_empty() {
                "none".to_string()
            } else {
                format!("{:.3} %", fit.iter().sum::<f64>() / fit.len() as f64)
            };
            println!(
                "  mean: unallocated ≥ {floor_mean} ({} of {} seeds with a floor), share waste {:.3} %, G {:.1}",
                fit.len(),
                floors.len(),
                mean(|f| f.share_waste_percent()),
                mean(|f| f.gpus as f64)
            );
            // Each policy's own packing of the shares it placed, against the
            // best packing of those same shares.
            for policy in [
                phalanx_engine::PolicyName::Fgd,
                phalanx_engine::PolicyName::Phalanx,
            ] {
                let mut lines = (0.0, 0.0, 0.0, 0.0, 0.0);
                for (&seed, floor) in seeds.iter().zip(&floors) {
                    let spec = super::super::run::RunSpec {
                        policy,
                        seed,
                        tune: 1.3,
                        workload: super::super::run::WorkloadMode::Trace,
                        batching: super::super::run::Batching::ONE_AT_A_TIME,
                    };
                    let run = super::super::run::run_once(&cluster, &trace, spec).unwrap();
                    let gap = run_share_gap(&run.shares_at_full).unwrap();
                    let capacity = cluster.gpu_milli_capacity();
                    lines.0 += run.unallocated_at(100).unwrap_or(f64::NAN);
                    lines.1 += gap.run_gpus as f64;
                    lines.2 += gap.floor.gpus as f64;
                    lines.3 += gap.excess_percent(capacity);
                    let placed: u64 = run.shares_at_full.by_milli.values().sum();
                    lines.4 += 100.0 * placed as f64 / floor.shares.max(1) as f64;
                }
                let n = seeds.len() as f64;
                println!(
                    "  {policy:?}: unallocated {:.3} %; placed {:.2} % of arrived shares, on {:.1} GPUs, best packing of them {:.1}: {:.3} % of capacity lost to share packing",
                    lines.0 / n,
                    lines.4 / n,
                    lines.1 / n,
                    lines.2 / n,
                    lines.3 / n
                );
            }
        }
    }

    #[test]
    fn a_runs_loose_packing_is_measured_against_the_best_one() {
        // A run put four 500s on four GPUs (each the first share there): two
        // would do, so it used two GPUs too many, 50 % of four.
        let mut placed = PlacedShares {
            gpus: 4,
            ..PlacedShares::default()
        };
        for _ in 0..4 {
            placed.record(500);
        }
        let gap = run_share_gap(&placed).unwrap();
        assert_eq!((gap.run_gpus, gap.floor.gpus), (4, 2));
        assert!((gap.excess_percent(4_000) - 50.0).abs() < 1e-9);
        // Packed pairwise, nothing is lost.
        let mut tight = PlacedShares {
            gpus: 2,
            ..PlacedShares::default()
        };
        for _ in 0..4 {
            tight.record(500);
        }
        assert_eq!(run_share_gap(&tight).unwrap().excess_percent(4_000), 0.0);
    }

    #[test]
    fn a_run_records_the_shares_it_placed_and_the_gpus_they_sit_on() {
        use crate::trace::build_cluster;
        use phalanx_engine::PolicyName;

        use super::super::run::{run_once, Batching, RunSpec, WorkloadMode};

        // One node of two GPUs; tuning clones one 400-milli share up to the
        // 2,000 milli of capacity: five arrive, two fit on each GPU, one fails.
        let cluster =
            build_cluster(&[crate::openb::test_gpu_node("a", 64_000, 2, "V100")]).unwrap();
        let trace = PreparedTrace::new("t".into(), "t".into(), shares(&[400]), &cluster);
        for policy in PolicyName::ALL {
            let spec = RunSpec {
                policy,
                seed: 1,
                tune: 1.0,
                workload: WorkloadMode::Trace,
                batching: Batching::ONE_AT_A_TIME,
            };
            let run = run_once(&cluster, &trace, spec).unwrap();
            assert_eq!((run.pods_arrived, run.pods_failed), (5, 1), "{policy:?}");
            assert_eq!(run.shares_at_full.by_milli, BTreeMap::from([(400, 4)]));
            assert_eq!(run.shares_at_full.gpus, 2, "{policy:?}");
            let gap = run_share_gap(&run.shares_at_full).unwrap();
            assert_eq!(gap.floor.gpus, 2);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// The floor never passes the best packing, and never falls below
        /// the two obvious bounds (milli in all; shares above half a GPU).
        #[test]
        fn the_floor_is_at_most_the_best_packing(
            items in proptest::collection::vec(
                prop_oneof![Just(190u32), Just(230), Just(320), Just(470), Just(650), Just(810), 1u32..1000],
                1..8,
            )
        ) {
            let p = packing(&items);
            let exact = exact_bins(&items);
            prop_assert!(p.gpus <= exact, "floor {} above best packing {exact}: {p:?}", p.gpus);
            let milli: u64 = items.iter().map(|&m| u64::from(m)).sum();
            prop_assert!(p.gpus >= milli.div_ceil(1000));
            prop_assert!(p.gpus >= items.iter().filter(|&&m| m > 500).count() as u64);
        }
    }
}
