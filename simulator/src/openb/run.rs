//! One run: one trace × one policy × one seed.

use std::time::Instant;

use phalanx_engine::policy::PolicyConfig;
use phalanx_engine::{
    batch_order, build_policy, node_fragmentation, schedule_one, BatchOrder, ClusterSnapshot,
    CycleOutcome, CycleScratch, EngineError, GpuDemand, NodeId, PlacementPolicy, PodDemand,
    PolicyName, TypicalPod, WorkloadModel, WorkloadSource,
};

use super::arrivals::{seeded_run, SeededRun};
use super::curves::{CurveRecorder, Curves};
use super::idle::{idle_breakdown, IdleBreakdown};
use super::share_floor::PlacedShares;
use crate::trace::TracePod;

/// A pod list resolved against the cluster, ready to be replayed many times.
#[derive(Debug, Clone)]
pub struct PreparedTrace {
    /// The workload key the paper's result files use (file stem).
    pub workload: String,
    /// The file as given (or the embedded name).
    pub pods_file: String,
    pub pods: Vec<TracePod>,
    pub demands: Vec<PodDemand>,
    /// FGD's typical-pod set from the whole original list (§5.1).
    pub typical: Vec<TypicalPod>,
}

impl PreparedTrace {
    pub fn new(
        workload: String,
        pods_file: String,
        pods: Vec<TracePod>,
        cluster: &ClusterSnapshot,
    ) -> Self {
        let demands: Vec<PodDemand> = pods.iter().map(|p| p.demand(cluster)).collect();
        let mut model = WorkloadModel::new();
        for (pod, demand) in pods.iter().zip(&demands) {
            model.observe(demand.shape(), &pod.spec);
        }
        PreparedTrace {
            workload,
            pods_file,
            typical: model.typical_pods(),
            pods,
            demands,
        }
    }
}

/// How FGD-style policies learn the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadMode {
    /// The whole trace's pod-shape distribution is known in advance (FGD's setting).
    #[default]
    Trace,
    /// Learned online from the pods that have arrived so far (a live cluster's setting).
    Online,
}

/// How arrivals reach the scheduler: one at a time (the paper's methodology,
/// `window` 1), or in windows of `window` consecutive arrivals that wait
/// together and are placed in one go, tried in `order`. Every pod of a window
/// that fits is placed before the next window arrives, so nothing is held back;
/// the curves count a window's pods in the order they are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    pub window: usize,
    pub order: BatchOrder,
}

impl Batching {
    pub const ONE_AT_A_TIME: Batching = Batching {
        window: 1,
        order: BatchOrder::Arrival,
    };
}

#[derive(Debug, Clone, Copy)]
pub struct RunSpec {
    pub policy: PolicyName,
    pub seed: u64,
    pub tune: f64,
    pub workload: WorkloadMode,
    pub batching: Batching,
}

#[derive(Debug, Clone)]
pub struct RunResult {
    pub policy: PolicyName,
    pub seed: u64,
    pub workload: String,
    pub pods_file: String,
    pub curves: Curves,
    pub pods_arrived: usize,
    pub pods_failed: usize,
    pub wall_seconds: f64,
    /// Where the unallocated GPU sat at 100 % arrived.
    pub idle_at_full: IdleBreakdown,
    /// The shares placed by 100 % arrived, and the GPUs they sat on.
    pub shares_at_full: PlacedShares,
}

impl RunResult {
    /// Unallocated GPU % when `percent` % of capacity has arrived (`100 − alloc[r]`).
    pub fn unallocated_at(&self, percent: usize) -> Option<f64> {
        self.curves
            .allocation
            .get(percent)
            .copied()
            .flatten()
            .map(|a| 100.0 - a)
    }
}

/// Σ_n F(n) of the cluster, kept current one node at a time.
pub(crate) struct FragmentationMeter<'a> {
    typical: &'a [TypicalPod],
    per_node: Vec<f64>,
    total: f64,
}

impl<'a> FragmentationMeter<'a> {
    pub(crate) fn new(typical: &'a [TypicalPod], cluster: &ClusterSnapshot) -> Self {
        let mut meter = FragmentationMeter {
            typical,
            per_node: vec![0.0; cluster.len()],
            total: 0.0,
        };
        for i in 0..cluster.len() {
            meter.update(cluster, NodeId(i as u32));
        }
        meter
    }

    pub(crate) fn update(&mut self, cluster: &ClusterSnapshot, node: NodeId) {
        let n = cluster.node(node);
        let f = node_fragmentation(
            self.typical,
            n.cpu_milli_free(),
            n.model,
            n.free_list().as_slice(),
        );
        self.total += f - self.per_node[node.index()];
        self.per_node[node.index()] = f;
    }
}

/// One replay in progress: the cluster with the seed's node ranks, the seed's
/// arrivals, the policy built with the seed's policy seed, and what is measured
/// as pods arrive. The plain run and the gang run step through it alike.
pub(crate) struct Replay<'t> {
    pub cluster: ClusterSnapshot,
    pub seeded: SeededRun,
    pub policy: Box<dyn PlacementPolicy>,
    pub scratch: CycleScratch,
    meter: FragmentationMeter<'t>,
    recorder: CurveRecorder,
    arrived: u64,
    used: u64,
    failed: usize,
    /// Arrived milli at which the 100 % bucket ends, and where the idle GPU
    /// sat at its last event.
    full_milli: u64,
    idle_at_full: Option<IdleBreakdown>,
    /// The shares placed so far, and as they were at 100 % arrived.
    shares: PlacedShares,
    shares_at_full: Option<PlacedShares>,
}

impl<'t> Replay<'t> {
    pub(crate) fn new(
        empty: &ClusterSnapshot,
        trace: &'t PreparedTrace,
        seed: u64,
        tune: f64,
        workload: WorkloadMode,
        policy: PolicyName,
    ) -> Result<Self, EngineError> {
        let mut cluster = empty.clone();
        let capacity = cluster.gpu_milli_capacity();
        let names: Vec<String> = cluster.nodes().iter().map(|n| n.name.clone()).collect();
        let seeded = seeded_run(&trace.pods, &names, capacity, tune, seed);
        cluster.set_ranks(&seeded.node_ranks)?;
        let workload = match workload {
            WorkloadMode::Trace => WorkloadSource::Fixed(trace.typical.clone()),
            WorkloadMode::Online => WorkloadSource::Online,
        };
        let policy = build_policy(
            policy,
            &PolicyConfig {
                seed: seeded.policy_seed,
                workload,
            },
        );
        let meter = FragmentationMeter::new(&trace.typical, &cluster);
        Ok(Replay {
            cluster,
            seeded,
            policy,
            scratch: CycleScratch::default(),
            meter,
            recorder: CurveRecorder::new(capacity),
            arrived: 0,
            used: 0,
            failed: 0,
            // The curve's 100 % bucket holds arrivals below 100.5 %.
            full_milli: capacity + capacity / 200,
            idle_at_full: None,
            shares: PlacedShares::default(),
            shares_at_full: None,
        })
    }

    /// `pod` arrives and is scheduled on its own; one point on the curves.
    pub(crate) fn schedule_pod(&mut self, pod: &PodDemand) -> Result<(), EngineError> {
        self.schedule_window(&[pod], BatchOrder::Arrival)
    }

    /// `pods`, consecutive arrivals, wait together and are placed in `order`,
    /// each counted as arrived when it is tried: the window arrives as one, and
    /// counting in arrival order instead would credit a later pod's GPUs to
    /// the curve point of an earlier one that failed for them. The idle
    /// breakdown at 100 % is read before the window that crosses it.
    pub(crate) fn schedule_window(
        &mut self,
        pods: &[&PodDemand],
        order: BatchOrder,
    ) -> Result<(), EngineError> {
        let window_milli: u64 = pods.iter().map(|p| p.gpu.total_milli()).sum();
        if self.idle_at_full.is_none() && self.arrived + window_milli >= self.full_milli {
            self.idle_at_full = Some(idle_breakdown(&self.cluster, self.meter.typical));
            self.shares_at_full = Some(self.shares_now());
        }
        for pod in pods {
            self.policy.observe_arrival(pod);
        }
        for i in batch_order(pods, order) {
            let pod = pods[i];
            let placed = if let CycleOutcome::Placed(placement) =
                schedule_one(&self.cluster, self.policy.as_mut(), pod, &mut self.scratch)
            {
                if let GpuDemand::Share { milli } = pod.gpu {
                    self.shares.record(milli);
                }
                self.cluster.place(pod, &placement)?;
                self.meter.update(&self.cluster, placement.node);
                true
            } else {
                false
            };
            self.record_arrival(pod, placed);
        }
        Ok(())
    }

    /// `node` changed outside [`Self::schedule_pod`] (a gang placed on it).
    pub(crate) fn node_changed(&mut self, node: NodeId) {
        self.meter.update(&self.cluster, node);
    }

    /// `pod` arrived and was placed or not; one point on the curves.
    pub(crate) fn record_arrival(&mut self, pod: &PodDemand, placed: bool) {
        self.arrived += pod.gpu.total_milli();
        if placed {
            self.used += pod.gpu.total_milli();
        } else {
            self.failed += 1;
        }
        self.recorder
            .record(self.arrived, self.used, self.meter.total);
    }

    pub(crate) fn failed(&self) -> usize {
        self.failed
    }

    /// Where the idle GPU sat at 100 % arrived (or at the end, if the
    /// arrivals never got past it).
    pub(crate) fn idle_at_full(&self) -> IdleBreakdown {
        self.idle_at_full
            .unwrap_or_else(|| idle_breakdown(&self.cluster, self.meter.typical))
    }

    /// The shares placed by 100 % arrived (or by the end).
    pub(crate) fn shares_at_full(&self) -> PlacedShares {
        self.shares_at_full
            .clone()
            .unwrap_or_else(|| self.shares_now())
    }

    /// The shares placed so far, with the GPUs they sit on read off the
    /// cluster (no pod leaves, so a shared GPU holds only these shares).
    fn shares_now(&self) -> PlacedShares {
        let gpus = self
            .cluster
            .nodes()
            .iter()
            .filter(|n| !n.removed)
            .flat_map(|n| &n.gpus)
            .filter(|gpu| gpu.is_shared())
            .count();
        PlacedShares {
            gpus: gpus as u64,
            ..self.shares.clone()
        }
    }

    pub(crate) fn curves(&self) -> Curves {
        self.recorder.curves()
    }
}

/// Replays the trace through the engine under one policy and seed.
pub fn run_once(
    empty: &ClusterSnapshot,
    trace: &PreparedTrace,
    spec: RunSpec,
) -> Result<RunResult, EngineError> {
    let started = Instant::now();
    let mut replay = Replay::new(
        empty,
        trace,
        spec.seed,
        spec.tune,
        spec.workload,
        spec.policy,
    )?;
    let arrivals = std::mem::take(&mut replay.seeded.arrivals);
    let mut pods: Vec<&PodDemand> = Vec::with_capacity(spec.batching.window);
    for window in arrivals.chunks(spec.batching.window.max(1)) {
        pods.clear();
        pods.extend(window.iter().map(|&i| &trace.demands[i]));
        replay.schedule_window(&pods, spec.batching.order)?;
    }

    Ok(RunResult {
        policy: spec.policy,
        seed: spec.seed,
        workload: trace.workload.clone(),
        pods_file: trace.pods_file.clone(),
        curves: replay.curves(),
        pods_arrived: arrivals.len(),
        pods_failed: replay.failed(),
        wall_seconds: started.elapsed().as_secs_f64(),
        idle_at_full: replay.idle_at_full(),
        shares_at_full: replay.shares_at_full(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::trace::build_cluster;

    fn trace_pod(name: &str, gpu: GpuDemand) -> TracePod {
        TracePod {
            name: name.into(),
            cpu_milli: 1_000,
            memory_mib: 1,
            gpu,
            spec: String::new(),
            qos: Default::default(),
            times: Default::default(),
        }
    }

    /// One GPU, and a window of a 300-milli share that arrived before a
    /// whole-GPU pod: GPU milli placed and pods failed.
    fn one_gpu_window(order: BatchOrder) -> (u64, usize) {
        let cluster = build_cluster(&[crate::openb::test_gpu_node("n", 8_000, 1, "V100")]).unwrap();
        let pods = vec![
            trace_pod("share", GpuDemand::Share { milli: 300 }),
            trace_pod("whole", GpuDemand::Whole { count: 1 }),
        ];
        let trace = PreparedTrace::new("t".into(), "t.csv".into(), pods, &cluster);
        let mut replay = Replay::new(
            &cluster,
            &trace,
            42,
            1.0,
            WorkloadMode::Trace,
            PolicyName::Phalanx,
        )
        .unwrap();
        let window: Vec<&PodDemand> = trace.demands.iter().collect();
        replay.schedule_window(&window, order).unwrap();
        let used = replay.cluster.gpu_milli_capacity()
            - u64::from(replay.cluster.node(NodeId(0)).gpu_milli_free());
        (used, replay.failed())
    }

    #[test]
    fn windows_tried_in_arrival_order_are_the_one_at_a_time_run() {
        use crate::trace::{read_nodes, read_pods, CsvSource};
        let nodes = read_nodes(&CsvSource::embedded("nodes", crate::EMBEDDED_NODES)).unwrap();
        let cluster = build_cluster(&nodes).unwrap();
        let pods = read_pods(&CsvSource::embedded("pods", crate::EMBEDDED_PODS)).unwrap();
        let trace = PreparedTrace::new("default".into(), "default".into(), pods, &cluster);
        let run = |batching| {
            let spec = RunSpec {
                policy: PolicyName::Phalanx,
                seed: 42,
                tune: 1.3,
                workload: WorkloadMode::Trace,
                batching,
            };
            run_once(&cluster, &trace, spec).unwrap()
        };
        let one = run(Batching::ONE_AT_A_TIME);
        let windows = run(Batching {
            window: 7,
            order: BatchOrder::Arrival,
        });
        assert_eq!(one.curves.allocation, windows.curves.allocation);
        assert_eq!(one.pods_failed, windows.pods_failed);
        let largest_first = run(Batching {
            window: 7,
            order: BatchOrder::LargestFirst,
        });
        assert_ne!(one.curves.allocation, largest_first.curves.allocation);
    }

    #[test]
    fn a_window_tried_largest_first_places_the_whole_gpu_pod() {
        // In arrival order the share opens the GPU and the whole-GPU pod fails.
        assert_eq!(one_gpu_window(BatchOrder::Arrival), (300, 1));
        assert_eq!(one_gpu_window(BatchOrder::LargestFirst), (1_000, 1));
    }
}
