//! What a pod asks of a node.

use std::sync::Arc;

use super::constraints::NodePlacementRules;
use super::host_ports::HostPort;
use super::inter_pod::InterPodSpec;
use super::model::ModelConstraint;
use super::node::GpuPodTag;
use super::scalar_resources::ScalarRequest;
use super::volumes::PodVolumes;
use super::{EngineError, MILLI_PER_GPU};

/// GPU part of a pod's demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum GpuDemand {
    #[default]
    None,
    /// A share of one GPU, in milli (1..=999).
    Share { milli: u32 },
    /// `count` whole GPUs.
    Whole { count: u32 },
}

impl GpuDemand {
    /// From the trace/Kubernetes pair (GPU count, milli per GPU), normalised as the
    /// FGD spec §1.2 does: milli above 1000 means a whole GPU, milli ≤ 0 means none.
    pub fn from_count_and_milli(count: u32, milli_per_gpu: i64) -> Result<Self, String> {
        if count == 0 || milli_per_gpu <= 0 {
            return Ok(GpuDemand::None);
        }
        let milli = milli_per_gpu.min(i64::from(MILLI_PER_GPU)) as u32;
        match (count, milli) {
            (1, m) if m < MILLI_PER_GPU => Ok(GpuDemand::Share { milli: m }),
            (k, MILLI_PER_GPU) => Ok(GpuDemand::Whole { count: k }),
            (k, m) => Err(format!(
                "asks for {k} GPUs at {m} milli each; shares are only supported on a single GPU"
            )),
        }
    }

    /// Number of GPUs touched (`k` in the spec).
    pub fn gpu_count(self) -> u32 {
        match self {
            GpuDemand::None => 0,
            GpuDemand::Share { .. } => 1,
            GpuDemand::Whole { count } => count,
        }
    }

    /// Milli taken from each touched GPU (`m` in the spec).
    pub fn milli_per_gpu(self) -> u32 {
        match self {
            GpuDemand::None => 0,
            GpuDemand::Share { milli } => milli,
            GpuDemand::Whole { .. } => MILLI_PER_GPU,
        }
    }

    /// Total milli-GPU requested (`k·m`).
    pub fn total_milli(self) -> u64 {
        u64::from(self.gpu_count()) * u64::from(self.milli_per_gpu())
    }

    pub fn is_share(self) -> bool {
        matches!(self, GpuDemand::Share { .. })
    }

    pub(crate) fn tag(self) -> Option<GpuPodTag> {
        match self {
            GpuDemand::None => None,
            GpuDemand::Share { .. } => Some(GpuPodTag::Share),
            GpuDemand::Whole { count } => Some(GpuPodTag::Whole(count.min(255) as u8)),
        }
    }
}

/// The part of a demand that placement scores depend on (memory only filters).
/// Policies cache scores per shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PodShape {
    pub cpu_milli: u64,
    pub gpu: GpuDemand,
    pub models: ModelConstraint,
}

/// A pod's resource demand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodDemand {
    pub name: String,
    pub cpu_milli: u64,
    pub memory_mib: u64,
    pub gpu: GpuDemand,
    pub models: ModelConstraint,
    /// nodeSelector, required node affinity, tolerations.
    pub rules: NodePlacementRules,
    /// Higher goes first in the scheduler's queue.
    pub priority: i32,
    /// Namespace, labels, pod (anti-)affinity and topology spread. `None` for a
    /// pod no term can select and that has none (trace pods): the plain path.
    pub inter_pod: Option<Arc<InterPodSpec>>,
    /// The PersistentVolumeClaims it mounts; `None` for a pod without any
    /// (the plain path).
    pub volumes: Option<Arc<PodVolumes>>,
    /// Host ports its containers open (NodePorts). Empty for most pods, and then
    /// costs nothing.
    pub host_ports: Vec<HostPort>,
    /// Ephemeral storage, huge pages and extended resources it requests, none
    /// zero. Empty for most pods.
    pub scalar: Vec<ScalarRequest>,
    /// The reservation token ([`crate::NodeReservation::holder`]) whose held
    /// nodes this pod may use; `None` for every pod that holds none.
    pub reservation: Option<u64>,
}

impl PodDemand {
    pub fn new(
        name: impl Into<String>,
        cpu_milli: u64,
        memory_mib: u64,
        gpu: GpuDemand,
        models: ModelConstraint,
    ) -> Result<Self, EngineError> {
        let name = name.into();
        if let GpuDemand::Share { milli } = gpu {
            if milli == 0 || milli >= MILLI_PER_GPU {
                return Err(EngineError::InvalidPod {
                    pod: name,
                    reason: format!("a GPU share must be 1..999 milli, got {milli}"),
                });
            }
        }
        if let GpuDemand::Whole { count: 0 } = gpu {
            return Err(EngineError::InvalidPod {
                pod: name,
                reason: "asks for 0 whole GPUs".into(),
            });
        }
        Ok(PodDemand {
            name,
            cpu_milli,
            memory_mib,
            gpu,
            models,
            rules: NodePlacementRules::default(),
            priority: 0,
            inter_pod: None,
            volumes: None,
            host_ports: Vec::new(),
            scalar: Vec::new(),
            reservation: None,
        })
    }

    pub fn with_rules(mut self, rules: NodePlacementRules) -> Self {
        self.rules = rules;
        self
    }

    pub fn with_inter_pod(mut self, spec: InterPodSpec) -> Self {
        self.inter_pod = Some(Arc::new(spec));
        self
    }

    pub fn with_volumes(mut self, volumes: PodVolumes) -> Self {
        self.volumes = Some(Arc::new(volumes));
        self
    }

    pub fn with_host_ports(mut self, ports: Vec<HostPort>) -> Self {
        self.host_ports = ports;
        self
    }

    pub fn with_scalar(mut self, requests: Vec<ScalarRequest>) -> Self {
        self.scalar = requests;
        self
    }

    pub fn shape(&self) -> PodShape {
        PodShape {
            cpu_milli: self.cpu_milli,
            gpu: self.gpu,
            models: self.models,
        }
    }
}
