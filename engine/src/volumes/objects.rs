//! The volume objects the engine reasons about, translated from Kubernetes'
//! PersistentVolumeClaim, PersistentVolume, StorageClass and CSINode.

use std::collections::BTreeMap;

use crate::constraints::NodeSelectorRequirement;
use crate::label_selector::LabelSelector;

/// The provisioner of classes whose volumes are only ever created by hand
/// (local volumes): no dynamic provisioning to fall back on.
pub const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";

/// `namespace/name`, how claims are keyed everywhere.
pub fn claim_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AccessMode {
    ReadWriteOnce,
    ReadOnlyMany,
    ReadWriteMany,
    ReadWriteOncePod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum VolumeMode {
    #[default]
    Filesystem,
    Block,
}

/// When a class's claims are bound: at once by the PV controller, or by the
/// scheduler once a pod using them is placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BindingMode {
    #[default]
    Immediate,
    WaitForFirstConsumer,
}

/// A PersistentVolumeClaim.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClaimSpec {
    pub namespace: String,
    pub name: String,
    /// `spec.storageClassName`; empty for none.
    pub storage_class: String,
    /// `spec.volumeName`: the PV the claim is bound (or pre-bound) to.
    pub volume_name: Option<String>,
    pub access_modes: Vec<AccessMode>,
    /// `spec.resources.requests.storage`, in bytes.
    pub request_bytes: u64,
    pub volume_mode: VolumeMode,
    pub selector: Option<LabelSelector>,
    /// Has a deletionTimestamp.
    pub deleting: bool,
}

impl ClaimSpec {
    pub fn key(&self) -> String {
        claim_key(&self.namespace, &self.name)
    }

    pub fn is_bound(&self) -> bool {
        self.volume_name.is_some()
    }
}

/// A PersistentVolume.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VolumeSpec {
    pub name: String,
    pub storage_class: String,
    pub capacity_bytes: u64,
    pub access_modes: Vec<AccessMode>,
    pub volume_mode: VolumeMode,
    pub labels: BTreeMap<String, String>,
    /// `spec.nodeAffinity.required`: any term admits a node; `None` admits all.
    pub node_affinity: Option<Vec<Vec<NodeSelectorRequirement>>>,
    /// `spec.claimRef` as `namespace/name`: bound or pre-bound to that claim.
    pub claim_ref: Option<String>,
    /// `spec.csi.driver`, for attach limits.
    pub csi_driver: Option<String>,
    /// Phase Released or Failed, or being deleted: never bound to a new claim.
    pub unavailable: bool,
}

impl VolumeSpec {
    /// Whether the PV may be used from a node with these labels.
    pub fn admits(&self, node_labels: &BTreeMap<String, String>) -> bool {
        terms_admit(self.node_affinity.as_deref(), node_labels)
    }
}

/// A StorageClass.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StorageClassSpec {
    pub name: String,
    pub binding_mode: BindingMode,
    pub provisioner: String,
    /// `allowedTopologies`, as node selector terms (`In` requirements); empty
    /// allows every node.
    pub allowed_topologies: Vec<Vec<NodeSelectorRequirement>>,
}

impl StorageClassSpec {
    /// Can a volume of this class be created for a claim (not only bound)?
    pub fn provisions(&self) -> bool {
        !self.provisioner.is_empty() && self.provisioner != NO_PROVISIONER
    }
}

/// The claims a pod mounts: `spec.volumes[].persistentVolumeClaim` and the
/// claims of its generic ephemeral volumes, as `namespace/name`, each once;
/// and its inline CSI volumes (`spec.volumes[].csi`), which count against the
/// node's attach limits as kube-scheduler's NodeVolumeLimits counts them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodVolumes {
    pub claims: Vec<String>,
    /// (driver, a handle unique to this pod's volume).
    pub inline_csi: Vec<(String, String)>,
}

/// Node selector terms: any term whose requirements all match; `None` (no
/// affinity) admits every node, as does an empty list.
pub(crate) fn terms_admit(
    terms: Option<&[Vec<NodeSelectorRequirement>]>,
    labels: &BTreeMap<String, String>,
) -> bool {
    match terms {
        None | Some([]) => true,
        Some(terms) => terms
            .iter()
            .any(|term| !term.is_empty() && term.iter().all(|r| r.matches(labels))),
    }
}
