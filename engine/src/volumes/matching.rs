//! Finding a PV (or a provisioner) for each unbound WaitForFirstConsumer
//! claim of a pod, on one node: kube-scheduler's FindPodVolumes.

use std::collections::BTreeMap;

use super::catalogue::VolumeCatalogue;
use super::objects::{terms_admit, BindingMode, ClaimSpec, VolumeSpec};

/// How one unbound claim would be satisfied on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClaimMatch {
    /// An existing PV, bound to the claim before the pod.
    Static { claim: String, volume: String },
    /// A new volume from the class's provisioner.
    Provision { claim: String },
}

impl ClaimMatch {
    pub(crate) fn claim(&self) -> &str {
        match self {
            ClaimMatch::Static { claim, .. } | ClaimMatch::Provision { claim } => claim,
        }
    }
}

/// Matches every unbound WaitForFirstConsumer claim among `claims` on a node
/// with `node_labels`, appending to `out`; false as soon as one cannot be
/// satisfied. Distinct claims get distinct PVs; PVs assumed for other claims
/// or bound to other claims are never offered.
pub(crate) fn match_claims(
    catalogue: &VolumeCatalogue,
    claims: &[String],
    node_labels: &BTreeMap<String, String>,
    out: &mut Vec<ClaimMatch>,
) -> bool {
    for key in claims {
        let Some(claim) = catalogue.claims.get(key) else {
            continue;
        };
        if claim.is_bound() {
            continue;
        }
        let Some(class) = catalogue.classes.get(&claim.storage_class) else {
            continue;
        };
        if class.binding_mode != BindingMode::WaitForFirstConsumer {
            continue;
        }
        let taken = |name: &str| {
            out.iter()
                .any(|m| matches!(m, ClaimMatch::Static { volume, .. } if volume == name))
        };
        let found = best_volume(catalogue, key, claim, node_labels, &taken);
        match found {
            Some(volume) => out.push(ClaimMatch::Static {
                claim: key.clone(),
                volume: volume.name.clone(),
            }),
            None if class.provisions()
                && terms_admit(Some(&class.allowed_topologies), node_labels) =>
            {
                out.push(ClaimMatch::Provision { claim: key.clone() })
            }
            None => return false,
        }
    }
    true
}

/// The PV for a claim on this node: one already (pre-)bound or assumed for it,
/// else the smallest available one that fits; ties go to the first by name.
fn best_volume<'a>(
    catalogue: &'a VolumeCatalogue,
    key: &str,
    claim: &ClaimSpec,
    node_labels: &BTreeMap<String, String>,
    taken: &dyn Fn(&str) -> bool,
) -> Option<&'a VolumeSpec> {
    let mut best: Option<&VolumeSpec> = None;
    for volume in catalogue.volumes.values() {
        if taken(&volume.name) || !satisfies(volume, claim) || !volume.admits(node_labels) {
            continue;
        }
        // An assumption lapses once its claim is bound (to this PV or,
        // should the PV controller have chosen otherwise, to another).
        let assumed_for = catalogue
            .assumed
            .get(&volume.name)
            .map(String::as_str)
            .filter(|c| catalogue.claims.get(*c).is_none_or(|c| !c.is_bound()));
        let ours = volume.claim_ref.as_deref() == Some(key) || assumed_for == Some(key);
        if ours {
            return Some(volume);
        }
        if volume.claim_ref.is_some() || assumed_for.is_some() || volume.unavailable {
            continue;
        }
        if best.is_none_or(|b| volume.capacity_bytes < b.capacity_bytes) {
            best = Some(volume);
        }
    }
    best
}

/// Class, volume mode, access modes, size and selector: what the PV
/// controller also demands of a PV for a claim.
fn satisfies(volume: &VolumeSpec, claim: &ClaimSpec) -> bool {
    volume.storage_class == claim.storage_class
        && volume.volume_mode == claim.volume_mode
        && claim
            .access_modes
            .iter()
            .all(|m| volume.access_modes.contains(m))
        && volume.capacity_bytes >= claim.request_bytes
        && claim
            .selector
            .as_ref()
            .is_none_or(|s| s.matches(&volume.labels))
}
