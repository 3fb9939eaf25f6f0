//! Persistent volumes, the way kube-scheduler's VolumeRestrictions,
//! NodeVolumeLimits, VolumeBinding and VolumeZone plugins see them.
//!
//! * [`objects`]: the claims, volumes, storage classes and CSI attach limits the
//!   cluster reports, already translated (no kube types).
//! * [`catalogue`]: the snapshot's copy of them, plus what placed pods hold: PVs
//!   assumed for a claim that is still unbound, CSI volumes per node, users of
//!   each claim. Updated on place and release like the rest of the snapshot.
//! * [`filter`]: the pod-level checks (claims exist, are not being deleted, no
//!   unbound Immediate claim, ReadWriteOncePod) and the per-node ones (attach
//!   limits, bound PV node affinity, a PV or provisioner for every
//!   WaitForFirstConsumer claim, PV zone labels).
//!
//! A pod without claims (`PodDemand::volumes == None`, every trace pod) takes
//! none of these paths; and when nothing feeds the catalogue (simulator,
//! autoscaler, extender mode, where kube-scheduler binds volumes itself) it is
//! not *tracked* and refuses nothing.

mod catalogue;
mod filter;
mod matching;
mod objects;

pub use catalogue::{VolumeBinding, VolumeCatalogue};
pub(crate) use filter::VolumeFilter;
pub use filter::VolumeRefusal;
pub use objects::{
    claim_key, AccessMode, BindingMode, ClaimSpec, PodVolumes, StorageClassSpec, VolumeMode,
    VolumeSpec, NO_PROVISIONER,
};
