//! The volume filters: pod-level checks once per cycle (kube-scheduler's
//! PreFilter of VolumeBinding and VolumeRestrictions), then per node in
//! kube-scheduler's order: attach limits, bound PVs' node affinity, a PV or
//! provisioner for each WaitForFirstConsumer claim, PV zone labels.

use std::collections::BTreeMap;
use std::fmt;

use super::catalogue::VolumeCatalogue;
use super::matching::match_claims;
use super::objects::{AccessMode, BindingMode, PodVolumes, VolumeSpec};
use crate::node::NodeState;
use crate::pod::PodDemand;
use crate::snapshot::UnfitReason;

/// Zone and region labels VolumeZone compares between a PV and a node.
const ZONE_LABELS: [&str; 4] = [
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
];

/// Why no node can take the pod, whatever the node: kube-scheduler's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeRefusal {
    ClaimNotFound {
        claim: String,
    },
    ClaimBeingDeleted {
        claim: String,
    },
    /// The claim says it is bound to a PV the cluster does not have (yet).
    VolumeNotFound {
        volume: String,
    },
    ClassNotFound {
        class: String,
    },
    UnboundImmediateClaims,
    ReadWriteOncePodInUse,
}

impl VolumeRefusal {
    /// How the cycle counts it, per node.
    pub fn reason(&self) -> UnfitReason {
        match self {
            VolumeRefusal::ReadWriteOncePodInUse => UnfitReason::ReadWriteOncePodConflict,
            VolumeRefusal::UnboundImmediateClaims => UnfitReason::UnboundImmediateClaims,
            _ => UnfitReason::VolumeClaimUnusable,
        }
    }
}

impl fmt::Display for VolumeRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VolumeRefusal::ClaimNotFound { claim } => {
                write!(f, "persistentvolumeclaim \"{claim}\" not found")
            }
            VolumeRefusal::ClaimBeingDeleted { claim } => {
                write!(f, "persistentvolumeclaim \"{claim}\" is being deleted")
            }
            VolumeRefusal::VolumeNotFound { volume } => {
                write!(f, "persistentvolume \"{volume}\" not found")
            }
            VolumeRefusal::ClassNotFound { class } => {
                write!(f, "storageclass.storage.k8s.io \"{class}\" not found")
            }
            VolumeRefusal::UnboundImmediateClaims | VolumeRefusal::ReadWriteOncePodInUse => {
                write!(f, "{}", self.reason())
            }
        }
    }
}

impl VolumeCatalogue {
    /// The pod-level checks. `None` when the pod may go on to the node filters
    /// (always, when volumes are not tracked).
    pub fn refusal(&self, volumes: &PodVolumes) -> Option<VolumeRefusal> {
        if !self.is_tracked() {
            return None;
        }
        for key in &volumes.claims {
            let name = key.split_once('/').map_or(key.as_str(), |(_, n)| n);
            let Some(claim) = self.claims.get(key) else {
                return Some(VolumeRefusal::ClaimNotFound { claim: name.into() });
            };
            if claim.deleting {
                return Some(VolumeRefusal::ClaimBeingDeleted { claim: name.into() });
            }
            if claim.access_modes.contains(&AccessMode::ReadWriteOncePod)
                && self.claim_users.contains_key(key)
            {
                return Some(VolumeRefusal::ReadWriteOncePodInUse);
            }
            match &claim.volume_name {
                Some(volume) if !self.volumes.contains_key(volume) => {
                    return Some(VolumeRefusal::VolumeNotFound {
                        volume: volume.clone(),
                    })
                }
                Some(_) => {}
                None => match self.classes.get(&claim.storage_class) {
                    Some(class) if class.binding_mode == BindingMode::WaitForFirstConsumer => {}
                    // A claim without a class, or with an Immediate one, is
                    // the PV controller's to bind first.
                    Some(_) => return Some(VolumeRefusal::UnboundImmediateClaims),
                    None if claim.storage_class.is_empty() => {
                        return Some(VolumeRefusal::UnboundImmediateClaims)
                    }
                    None => {
                        return Some(VolumeRefusal::ClassNotFound {
                            class: claim.storage_class.clone(),
                        })
                    }
                },
            }
        }
        None
    }
}

/// The per-node volume checks for one pod in one cycle; `None` from
/// [`VolumeFilter::prepare`] when there is nothing to check.
#[derive(Debug)]
pub(crate) struct VolumeFilter<'a> {
    catalogue: &'a VolumeCatalogue,
    volumes: &'a PodVolumes,
    /// PVs of its bound claims.
    bound: Vec<&'a VolumeSpec>,
    /// CSI volumes the pod would attach.
    attachments: Vec<(String, String)>,
}

impl<'a> VolumeFilter<'a> {
    /// `Ok(None)`: the pod has no claims or volumes are not tracked;
    /// `Err`: no node can take it.
    pub(crate) fn prepare(
        catalogue: &'a VolumeCatalogue,
        pod: &'a PodDemand,
    ) -> Result<Option<Self>, VolumeRefusal> {
        let Some(volumes) = pod.volumes.as_deref() else {
            return Ok(None);
        };
        if !catalogue.is_tracked() {
            return Ok(None);
        }
        if let Some(refusal) = catalogue.refusal(volumes) {
            return Err(refusal);
        }
        let bound = volumes
            .claims
            .iter()
            .filter_map(|key| catalogue.claims.get(key)?.volume_name.as_ref())
            .filter_map(|name| catalogue.volumes.get(name))
            .collect();
        Ok(Some(VolumeFilter {
            catalogue,
            volumes,
            bound,
            attachments: catalogue.csi_volumes_of(volumes),
        }))
    }

    pub(crate) fn check(&self, node: &NodeState) -> Result<(), UnfitReason> {
        if !self.within_attach_limits(&node.name) {
            return Err(UnfitReason::ExceedMaxVolumeCount);
        }
        if !self.bound.iter().all(|pv| pv.admits(&node.labels)) {
            return Err(UnfitReason::VolumeNodeAffinityConflict);
        }
        if !match_claims(
            self.catalogue,
            &self.volumes.claims,
            &node.labels,
            &mut Vec::new(),
        ) {
            return Err(UnfitReason::NoAvailableVolumes);
        }
        if !self.bound.iter().all(|pv| zone_admits(pv, &node.labels)) {
            return Err(UnfitReason::VolumeZoneConflict);
        }
        Ok(())
    }

    /// For each driver with a limit on the node: volumes already attached
    /// there plus the pod's new ones, counted once each.
    fn within_attach_limits(&self, node: &str) -> bool {
        let Some(limits) = self.catalogue.attach_limits.get(node) else {
            return true;
        };
        let attached = self.catalogue.attachments.get(node);
        limits.iter().all(|(driver, &limit)| {
            let mut new = 0usize;
            for pair in self.attachments.iter().filter(|(d, _)| d == driver) {
                if attached.is_none_or(|a| !a.contains_key(pair)) {
                    new += 1;
                }
            }
            if new == 0 {
                return true;
            }
            let existing = attached.map_or(0, |a| a.keys().filter(|(d, _)| d == driver).count());
            existing + new <= limit as usize
        })
    }
}

/// VolumeZone: a node with any zone or region label must carry each such
/// label of the PV, with one of its values (`a__b` lists several).
fn zone_admits(pv: &VolumeSpec, node_labels: &BTreeMap<String, String>) -> bool {
    if !ZONE_LABELS.iter().any(|l| node_labels.contains_key(*l)) {
        return true;
    }
    ZONE_LABELS.iter().all(|label| match pv.labels.get(*label) {
        None => true,
        Some(values) => node_labels
            .get(*label)
            .is_some_and(|v| values.split("__").any(|z| z == v)),
    })
}
