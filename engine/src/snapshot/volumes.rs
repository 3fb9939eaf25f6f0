//! The snapshot's volume catalogue: fed by the mirror, read by the cycle and
//! the binder (see `crate::volumes`).

use super::ClusterSnapshot;
use crate::pod::PodDemand;
use crate::volumes::{VolumeBinding, VolumeCatalogue, VolumeRefusal};

impl ClusterSnapshot {
    pub fn volumes(&self) -> &VolumeCatalogue {
        &self.volumes
    }

    /// For the mirror's volume watches. Changing claims, PVs or classes
    /// touches no node's accounting (no policy cache depends on them).
    pub fn volumes_mut(&mut self) -> &mut VolumeCatalogue {
        &mut self.volumes
    }

    /// Why no node can take this pod because of its claims, in
    /// kube-scheduler's words (`persistentvolumeclaim "x" not found`).
    pub fn volume_refusal(&self, pod: &PodDemand) -> Option<VolumeRefusal> {
        self.volumes.refusal(pod.volumes.as_deref()?)
    }

    /// What must happen to a placed pod's claims before its Binding.
    pub fn volume_bindings(&self, pod: &PodDemand) -> &[VolumeBinding] {
        match pod.volumes {
            Some(_) => self.volumes.bindings_for(&pod.name),
            None => &[],
        }
    }
}
