//! PersistentVolumeClaims, PersistentVolumes, StorageClasses and CSINodes in,
//! the engine's volume catalogue entries out; and the claims a pod mounts.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{
    NodeSelectorTerm, PersistentVolume, PersistentVolumeClaim, Pod, PodSpec,
};
use k8s_openapi::api::storage::v1::{CSINode, StorageClass};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use kube::ResourceExt;
use phalanx_engine::{
    claim_key, AccessMode, BindingMode, ClaimSpec, NodeSelectorRequirement, PodVolumes,
    SelectorOperator, StorageClassSpec, VolumeMode, VolumeSpec,
};

use super::inter_pod::label_selector;
use super::pod::selector_term;
use super::{convert_quantity, TranslateError};

/// The annotation that asks a claim's provisioner for a volume on one node.
pub const ANNOTATION_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

/// The claims of `spec.volumes[]`: `persistentVolumeClaim.claimName`, and
/// `<pod>-<volume>` for a generic ephemeral volume (the claim
/// kube-controller-manager creates for it). `None` when there are none.
pub(crate) fn pod_volumes(
    object: &str,
    pod: &Pod,
    spec: &PodSpec,
) -> Result<Option<PodVolumes>, TranslateError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    let mut claims = Vec::new();
    let mut inline_csi = Vec::new();
    for (i, volume) in spec.volumes.iter().flatten().enumerate() {
        let name = if let Some(source) = &volume.persistent_volume_claim {
            if source.claim_name.is_empty() {
                return Err(TranslateError::invalid(
                    object,
                    format!("spec.volumes[{i}].persistentVolumeClaim.claimName"),
                    "is empty",
                ));
            }
            source.claim_name.clone()
        } else if volume.ephemeral.is_some() {
            format!("{pod_name}-{}", volume.name)
        } else if let Some(csi) = &volume.csi {
            // kube-scheduler counts these per pod (its UID and the volume's
            // name); the pod's key is as unique and known before creation.
            inline_csi.push((
                csi.driver.clone(),
                format!("{namespace}/{pod_name}/{}", volume.name),
            ));
            continue;
        } else {
            continue;
        };
        let key = claim_key(namespace, &name);
        if !claims.contains(&key) {
            claims.push(key);
        }
    }
    Ok((!claims.is_empty() || !inline_csi.is_empty()).then_some(PodVolumes { claims, inline_csi }))
}

pub fn claim_spec(claim: &PersistentVolumeClaim) -> Result<ClaimSpec, TranslateError> {
    let object = format!(
        "persistentvolumeclaim {}/{}",
        claim.namespace().unwrap_or_default(),
        claim.name_any()
    );
    let spec = claim
        .spec
        .as_ref()
        .ok_or_else(|| TranslateError::invalid(&object, "spec", "missing"))?;
    let request_bytes = match spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
    {
        Some(q) => bytes(&object, "spec.resources.requests[\"storage\"]", q)?,
        None => 0,
    };
    Ok(ClaimSpec {
        namespace: claim.namespace().unwrap_or_default(),
        name: claim.name_any(),
        storage_class: spec.storage_class_name.clone().unwrap_or_default(),
        volume_name: spec.volume_name.clone().filter(|v| !v.is_empty()),
        access_modes: access_modes(&object, spec.access_modes.as_deref())?,
        request_bytes,
        volume_mode: volume_mode(&object, spec.volume_mode.as_deref())?,
        selector: spec
            .selector
            .as_ref()
            .map(|s| label_selector(&object, "spec.selector", s))
            .transpose()?,
        deleting: claim.metadata.deletion_timestamp.is_some(),
    })
}

pub fn volume_spec(volume: &PersistentVolume) -> Result<VolumeSpec, TranslateError> {
    let object = format!("persistentvolume {}", volume.name_any());
    let spec = volume
        .spec
        .as_ref()
        .ok_or_else(|| TranslateError::invalid(&object, "spec", "missing"))?;
    let capacity_bytes = match spec.capacity.as_ref().and_then(|c| c.get("storage")) {
        Some(q) => bytes(&object, "spec.capacity[\"storage\"]", q)?,
        None => 0,
    };
    let node_affinity = spec
        .node_affinity
        .as_ref()
        .and_then(|a| a.required.as_ref())
        .map(|selector| {
            selector
                .node_selector_terms
                .iter()
                .enumerate()
                .map(|(i, term)| affinity_term(&object, i, term))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let phase = volume.status.as_ref().and_then(|s| s.phase.as_deref());
    Ok(VolumeSpec {
        name: volume.name_any(),
        storage_class: spec.storage_class_name.clone().unwrap_or_default(),
        capacity_bytes,
        access_modes: access_modes(&object, spec.access_modes.as_deref())?,
        volume_mode: volume_mode(&object, spec.volume_mode.as_deref())?,
        labels: volume.labels().clone(),
        node_affinity,
        claim_ref: spec.claim_ref.as_ref().and_then(|r| {
            Some(claim_key(
                r.namespace.as_deref().unwrap_or("default"),
                r.name.as_deref()?,
            ))
        }),
        csi_driver: spec.csi.as_ref().map(|c| c.driver.clone()),
        unavailable: matches!(phase, Some("Released" | "Failed"))
            || volume.metadata.deletion_timestamp.is_some(),
    })
}

pub fn storage_class_spec(class: &StorageClass) -> Result<StorageClassSpec, TranslateError> {
    let object = format!("storageclass {}", class.name_any());
    let binding_mode = match class.volume_binding_mode.as_deref() {
        None | Some("Immediate") => BindingMode::Immediate,
        Some("WaitForFirstConsumer") => BindingMode::WaitForFirstConsumer,
        Some(other) => {
            return Err(TranslateError::invalid(
                &object,
                "volumeBindingMode",
                format!("unknown mode {other:?}; Immediate or WaitForFirstConsumer"),
            ))
        }
    };
    let allowed_topologies = class
        .allowed_topologies
        .iter()
        .flatten()
        .map(|term| {
            term.match_label_expressions
                .iter()
                .flatten()
                .map(|r| NodeSelectorRequirement {
                    key: r.key.clone(),
                    operator: SelectorOperator::In(r.values.clone()),
                })
                .collect()
        })
        .collect();
    Ok(StorageClassSpec {
        name: class.name_any(),
        binding_mode,
        provisioner: class.provisioner.clone(),
        allowed_topologies,
    })
}

/// A CSINode's node name and its drivers' attach limits (drivers without
/// `allocatable.count` have none).
pub fn attach_limits(csi_node: &CSINode) -> (String, HashMap<String, u32>) {
    let limits = csi_node
        .spec
        .drivers
        .iter()
        .filter_map(|d| {
            let count = d.allocatable.as_ref()?.count?;
            Some((d.name.clone(), u32::try_from(count).unwrap_or(0)))
        })
        .collect();
    (csi_node.name_any(), limits)
}

fn bytes(object: &str, field: &str, q: &K8sQuantity) -> Result<u64, TranslateError> {
    convert_quantity(object, field.to_owned(), q, |q| q.value_up())
}

fn access_modes(object: &str, modes: Option<&[String]>) -> Result<Vec<AccessMode>, TranslateError> {
    modes
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, m)| match m.as_str() {
            "ReadWriteOnce" => Ok(AccessMode::ReadWriteOnce),
            "ReadOnlyMany" => Ok(AccessMode::ReadOnlyMany),
            "ReadWriteMany" => Ok(AccessMode::ReadWriteMany),
            "ReadWriteOncePod" => Ok(AccessMode::ReadWriteOncePod),
            other => Err(TranslateError::invalid(
                object,
                format!("spec.accessModes[{i}]"),
                format!("unknown access mode {other:?}"),
            )),
        })
        .collect()
}

fn volume_mode(object: &str, mode: Option<&str>) -> Result<VolumeMode, TranslateError> {
    match mode {
        None | Some("Filesystem") => Ok(VolumeMode::Filesystem),
        Some("Block") => Ok(VolumeMode::Block),
        Some(other) => Err(TranslateError::invalid(
            object,
            "spec.volumeMode",
            format!("unknown volume mode {other:?}; Filesystem or Block"),
        )),
    }
}

/// One term of a PV's `spec.nodeAffinity.required`: read as a pod's required
/// node affinity term is.
fn affinity_term(
    object: &str,
    index: usize,
    term: &NodeSelectorTerm,
) -> Result<Vec<NodeSelectorRequirement>, TranslateError> {
    let path = format!("spec.nodeAffinity.required.nodeSelectorTerms[{index}]");
    selector_term(object, &path, term)
}

#[cfg(test)]
mod tests;
