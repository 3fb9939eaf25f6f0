//! Nodes as the engine sees them: capacity, usage, and each GPU as its own record.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::constraints::Taint;
use super::host_ports::HostPort;
use super::inter_pod::InterPodSpec;
use super::model::GpuModelId;
use super::scalar_resources::NodeScalar;

/// Index of a node in its [`super::ClusterSnapshot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

impl NodeId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// What a node is, as read from the cluster (or a trace) before anything runs on it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeSpec {
    pub name: String,
    pub cpu_milli: u64,
    pub memory_mib: u64,
    pub max_pods: u32,
    /// GPU model name; `None` for a node without GPUs.
    pub gpu_model: Option<String>,
    pub gpus: Vec<GpuSpec>,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    /// Cordoned (`spec.unschedulable`).
    pub unschedulable: bool,
    /// Allocatable ephemeral storage, huge pages and extended resources by name
    /// (bytes for the first two). A resource not listed counts as 0.
    pub scalar_resources: Vec<(String, u64)>,
}

/// One GPU device of a node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GpuSpec {
    /// Stable device ID (the NVML UUID in a cluster; synthetic in traces).
    pub uuid: String,
    pub memory_mib: u64,
}

/// One GPU with its accounting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpu {
    pub uuid: String,
    pub memory_mib: u64,
    /// Milli-GPU not yet allocated to pods (0..=1000).
    pub milli_free: u32,
    /// An unhealthy GPU is never chosen and counts as having nothing free.
    pub healthy: bool,
    /// The latest live sample from the device plugin, if any.
    pub telemetry: Option<GpuSample>,
    /// Milli the live memory use still leaves (1000 without fresh telemetry).
    pub(crate) telemetry_cap: u32,
    /// Placements holding a share (less than a whole GPU) of this GPU: two
    /// half shares fill a GPU, so `milli_free` alone cannot tell it is shared.
    pub(crate) shares_held: u16,
}

/// Live state of one GPU as the device plugin last saw it. Memory use below 2 % of
/// the GPU's memory counts as idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuSample {
    pub memory_used_mib: u64,
    pub utilization_percent: u32,
    /// When it was observed, in milliseconds on the caller's clock.
    pub observed_at_ms: u64,
}

/// How far a sample's `observed_at_ms` may run ahead of the caller's clock (clock
/// skew between the device plugin's node and the scheduler). A sample further in the
/// future is rejected: otherwise it would count as fresh until the clock caught up.
pub const MAX_TELEMETRY_CLOCK_SKEW_MS: u64 = 5_000;

/// Upper bound on the memory used by a GPU whose total memory is unknown (0): 1 TiB,
/// several times the largest GPU sold today.
pub const MAX_UNKNOWN_GPU_MEMORY_MIB: u64 = 1 << 20;

/// Why a telemetry sample was rejected. Telemetry comes from the device plugin through
/// a `GpuNode` status anyone with write access can set, so it is checked, not trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TelemetryRejection {
    /// More memory used than the GPU has (or than [`MAX_UNKNOWN_GPU_MEMORY_MIB`]).
    MemoryUsed,
    /// Utilisation above 100 %.
    Utilization,
    /// Observed more than [`MAX_TELEMETRY_CLOCK_SKEW_MS`] in the future.
    ObservedInFuture,
}

impl TelemetryRejection {
    /// The `GpuNode` status field at fault, as users see it.
    pub fn field(self) -> &'static str {
        match self {
            TelemetryRejection::MemoryUsed => "memoryUsedMib",
            TelemetryRejection::Utilization => "utilizationPercent",
            TelemetryRejection::ObservedInFuture => "observedAt",
        }
    }

    /// A short metric label value.
    pub fn reason(self) -> &'static str {
        match self {
            TelemetryRejection::MemoryUsed => "memory_used",
            TelemetryRejection::Utilization => "utilization",
            TelemetryRejection::ObservedInFuture => "observed_in_future",
        }
    }
}

impl std::fmt::Display for TelemetryRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self {
            TelemetryRejection::MemoryUsed => "exceeds the GPU's memory",
            TelemetryRejection::Utilization => "exceeds 100 %",
            TelemetryRejection::ObservedInFuture => {
                "is in the future beyond the allowed clock skew"
            }
        };
        write!(f, "{} {what}", self.field())
    }
}

/// What became of a sample given to `ClusterSnapshot::set_gpu_telemetry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TelemetryVerdict {
    /// Fresh and plausible: it caps the GPU.
    Fresh,
    /// Plausible but older than the limit: recorded, with no effect.
    Stale,
    /// Implausible: ignored, and the GPU falls back to allocation accounting as if
    /// its telemetry were stale.
    Rejected(TelemetryRejection),
}

impl GpuSample {
    /// Checks the sample against the GPU's memory (`memory_mib`, 0 when unknown) and
    /// the caller's clock.
    pub fn check(&self, memory_mib: u64, now_ms: u64) -> Result<(), TelemetryRejection> {
        let memory_bound = if memory_mib == 0 {
            MAX_UNKNOWN_GPU_MEMORY_MIB
        } else {
            memory_mib
        };
        if self.memory_used_mib > memory_bound {
            return Err(TelemetryRejection::MemoryUsed);
        }
        if self.utilization_percent > 100 {
            return Err(TelemetryRejection::Utilization);
        }
        if self.observed_at_ms > now_ms.saturating_add(MAX_TELEMETRY_CLOCK_SKEW_MS) {
            return Err(TelemetryRejection::ObservedInFuture);
        }
        Ok(())
    }

    /// At most `max_age_ms` old at `now_ms`, and not too far in the future.
    pub(crate) fn is_fresh(&self, now_ms: u64, max_age_ms: u64) -> bool {
        now_ms.saturating_sub(self.observed_at_ms) <= max_age_ms
            && self.observed_at_ms <= now_ms.saturating_add(MAX_TELEMETRY_CLOCK_SKEW_MS)
    }
}

impl Gpu {
    /// A GPU with nothing allocated, healthy, and no telemetry yet.
    pub(crate) fn unallocated(spec: &GpuSpec) -> Self {
        Gpu {
            uuid: spec.uuid.clone(),
            memory_mib: spec.memory_mib,
            milli_free: super::MILLI_PER_GPU,
            healthy: true,
            telemetry: None,
            telemetry_cap: super::MILLI_PER_GPU,
            shares_held: 0,
        }
    }

    /// Whether at least one placement holds a share (a fraction) of this GPU.
    pub fn is_shared(&self) -> bool {
        self.shares_held > 0
    }

    /// Free milli that a new pod could actually use: what allocations leave, capped
    /// by what live memory use leaves when that is known and fresh.
    pub fn usable_free(&self) -> u32 {
        if self.healthy {
            self.milli_free.min(self.telemetry_cap)
        } else {
            0
        }
    }

    /// The cap live memory use puts on new shares, if the sample is fresh.
    pub(crate) fn cap_from(&self, now_ms: u64, max_age_ms: u64) -> u32 {
        match self.telemetry {
            Some(sample) if self.memory_mib > 0 && sample.is_fresh(now_ms, max_age_ms) => {
                // Driver contexts and monitoring hold a little memory on idle GPUs.
                // used * 50 <= memory, divided rather than multiplied: a hostile
                // sample must not wrap into "idle".
                if sample.memory_used_mib <= self.memory_mib / 50 {
                    return super::MILLI_PER_GPU;
                }
                let free_mib = self.memory_mib.saturating_sub(sample.memory_used_mib);
                // In u128: free_mib * 1000 overflows u64 for a huge (hostile) memory_mib.
                // free_mib <= memory_mib, so the quotient is at most 1000.
                let milli = u128::from(free_mib) * u128::from(super::MILLI_PER_GPU)
                    / u128::from(self.memory_mib);
                u32::try_from(milli).unwrap_or(super::MILLI_PER_GPU)
            }
            _ => super::MILLI_PER_GPU,
        }
    }
}

/// Affinity tag of a GPU pod, used by the GpuClustering policy (spec §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GpuPodTag {
    Share,
    Whole(u8),
}

/// What a node holds beyond CPU, memory, pods and GPUs.
#[derive(Debug, Clone, Default)]
pub struct NodeExtras {
    /// Host ports of the pods placed here (one entry per port per pod).
    pub(crate) used_ports: Vec<HostPort>,
    /// Ephemeral storage, huge pages and extended resources: offered and taken.
    pub(crate) scalar: Vec<NodeScalar>,
}

/// Room on a node held for one pod or gang (a preemptor whose victims are
/// leaving, or a gang that has waited too long): what the holder's members
/// will take there is kept from every other pod of the holder's priority or
/// lower, so the room that frees up goes to the holder; what the node has
/// beyond it stays usable. Pods of higher priority may use it all (they could
/// preempt the holder anyway). Placement accounting ignores it: a pod bound
/// by someone else is still counted; only cycles respect it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeReservation {
    /// Who may use the node: the pods whose demand carries this token.
    pub holder: u64,
    pub priority: i32,
    /// What the holder's members will take on this node.
    pub held: HeldRoom,
}

/// An amount of a node's room: CPU, memory, GPU milli and whole GPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeldRoom {
    pub cpu_milli: u64,
    pub memory_mib: u64,
    pub gpu_milli: u32,
    pub whole_gpus: u32,
}

impl HeldRoom {
    /// Adds one pod's demand.
    pub fn add(&mut self, pod: &crate::PodDemand) {
        self.cpu_milli += pod.cpu_milli;
        self.memory_mib += pod.memory_mib;
        self.gpu_milli += u32::try_from(pod.gpu.total_milli()).unwrap_or(u32::MAX);
        if let crate::GpuDemand::Whole { count } = pod.gpu {
            self.whole_gpus += count;
        }
    }
}

impl NodeReservation {
    /// Whether the reservation keeps `pod` off `node`: a pod that is not the
    /// holder's and not of higher priority, for which the node's free room
    /// beyond what is held is too small.
    #[inline]
    pub fn excludes(&self, node: &NodeState, pod: &crate::PodDemand) -> bool {
        if pod.priority > self.priority || pod.reservation == Some(self.holder) {
            return false;
        }
        let held = &self.held;
        let gpu_room = match pod.gpu {
            crate::GpuDemand::None => true,
            crate::GpuDemand::Whole { count } => node.fully_free_gpus >= held.whole_gpus + count,
            crate::GpuDemand::Share { milli } => node.gpu_free_total >= held.gpu_milli + milli,
        };
        !(gpu_room
            && node.cpu_milli_free() >= held.cpu_milli + pod.cpu_milli
            && node.memory_mib_free() >= held.memory_mib + pod.memory_mib)
    }
}

/// A node with its current accounting.
#[derive(Debug, Clone)]
pub struct NodeState {
    pub name: String,
    pub cpu_milli_cap: u64,
    pub cpu_milli_used: u64,
    pub memory_mib_cap: u64,
    pub memory_mib_used: u64,
    pub max_pods: u32,
    pub pods: u32,
    pub model: Option<GpuModelId>,
    pub gpus: Vec<Gpu>,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    /// The node left the cluster; its slot stays (node ids are indices) until a node
    /// of the same name returns, and cycles skip it without counting it.
    pub removed: bool,
    /// Tie-break rank: among equally scored nodes the lowest rank wins (spec §3.3).
    pub rank: u32,
    /// Held for a preemptor or a starving gang ([`NodeReservation`]).
    pub reservation: Option<NodeReservation>,
    /// Changes whenever anything a policy could read changes; policies cache against it.
    pub generation: u32,
    /// Placed pods that inter-pod terms can see (those with an `InterPodSpec`).
    pub(crate) inter_pod: Vec<Arc<InterPodSpec>>,
    /// Host ports and scalar resources, boxed: most pods never look at them,
    /// and keeping them out of line keeps the filter's per-node reads compact.
    pub(crate) extra: Box<NodeExtras>,
    /// Count of bound GPU pods per affinity tag.
    pub(crate) gpu_pod_tags: Vec<(GpuPodTag, u32)>,
    // Summaries kept current on every change so the filter stays O(1) per node.
    pub(crate) fully_free_gpus: u32,
    pub(crate) max_gpu_free: u32,
    pub(crate) gpu_free_total: u32,
}

impl NodeState {
    pub fn cpu_milli_free(&self) -> u64 {
        self.cpu_milli_cap.saturating_sub(self.cpu_milli_used)
    }

    pub fn memory_mib_free(&self) -> u64 {
        self.memory_mib_cap.saturating_sub(self.memory_mib_used)
    }

    /// Sum of usable free milli over the node's GPUs.
    pub fn gpu_milli_free(&self) -> u32 {
        self.gpu_free_total
    }

    /// GPUs that are healthy and entirely unallocated.
    pub fn fully_free_gpus(&self) -> u32 {
        self.fully_free_gpus
    }

    /// The largest usable free milli on any one GPU.
    pub fn max_gpu_free(&self) -> u32 {
        self.max_gpu_free
    }

    pub fn gpu_count(&self) -> usize {
        self.gpus.len()
    }

    /// Host ports taken by the pods placed here.
    pub fn used_ports(&self) -> &[HostPort] {
        &self.extra.used_ports
    }

    /// Ephemeral storage, huge pages and extended resources: offered and taken.
    pub fn scalar_resources(&self) -> &[NodeScalar] {
        &self.extra.scalar
    }

    /// Bound GPU pods carrying `tag`.
    pub fn gpu_pods_tagged(&self, tag: GpuPodTag) -> u32 {
        self.gpu_pod_tags
            .iter()
            .find(|(t, _)| *t == tag)
            .map_or(0, |(_, n)| *n)
    }

    /// Distinct tags among bound GPU pods.
    pub fn distinct_gpu_pod_tags(&self) -> usize {
        self.gpu_pod_tags.iter().filter(|(_, n)| *n > 0).count()
    }

    /// Usable free milli per GPU, in device index order.
    pub fn free_list(&self) -> FreeList {
        let mut list = FreeList::default();
        for gpu in &self.gpus {
            list.push(gpu.usable_free());
        }
        list
    }

    pub(crate) fn refresh_summaries(&mut self) {
        let mut fully = 0;
        let mut max = 0;
        let mut total = 0;
        for gpu in &self.gpus {
            let free = gpu.usable_free();
            if gpu.healthy && free == super::MILLI_PER_GPU {
                fully += 1;
            }
            max = max.max(free);
            total += free;
        }
        self.fully_free_gpus = fully;
        self.max_gpu_free = max;
        self.gpu_free_total = total;
        self.generation = self.generation.wrapping_add(1);
    }
}

/// Most GPUs one node may have; hypothetical node states live on the stack.
pub const MAX_GPUS_PER_NODE: usize = 16;

/// Free milli per GPU of one node, on the stack, for "what if" evaluations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FreeList {
    len: u8,
    free: [u32; MAX_GPUS_PER_NODE],
}

impl FreeList {
    pub fn push(&mut self, milli: u32) {
        if (self.len as usize) < MAX_GPUS_PER_NODE {
            self.free[self.len as usize] = milli;
            self.len += 1;
        }
    }

    pub fn as_slice(&self) -> &[u32] {
        &self.free[..self.len as usize]
    }

    pub fn as_mut_slice(&mut self) -> &mut [u32] {
        &mut self.free[..self.len as usize]
    }

    pub fn total(&self) -> u32 {
        self.as_slice().iter().sum()
    }
}
