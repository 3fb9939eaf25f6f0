//! kube-scheduler's VolumeBinding PreBind: before a pod's Binding, give each
//! of its unbound WaitForFirstConsumer claims what the engine chose for it,
//! then wait until every one is Bound.
//!
//! * A static PV: its `spec.claimRef` is set to the claim (an update with the
//!   PV's resourceVersion, so a PV claimed meanwhile is never taken over); the
//!   PV controller in kube-controller-manager then binds the claim.
//! * Dynamic provisioning: the claim is annotated
//!   `volume.kubernetes.io/selected-node: <node>`; its provisioner creates a
//!   volume there and the PV controller binds it.
//!
//! Only Binding follows, so a pod never runs without its volumes. A failure or
//! a timeout is the caller's to undo (release the assumption, retry later).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume, PersistentVolumeClaim};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use phalanx_engine::VolumeBinding;
use phalanx_kube::translate::ANNOTATION_SELECTED_NODE;
use thiserror::Error;

/// The PV controller's mark of a binding it did not start itself (set, as
/// kube-scheduler sets it, on a PV the scheduler pre-binds).
const ANNOTATION_BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// How often a claim is looked at while waiting for it to be Bound.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

#[derive(Debug, Error)]
pub enum VolumeBindError {
    #[error("persistentvolumeclaim \"{claim}\" not found")]
    ClaimGone { claim: String },
    #[error("persistentvolume \"{volume}\" is already bound to claim {other}")]
    VolumeTaken { volume: String, other: String },
    #[error("persistentvolumeclaim \"{claim}\" is already bound to persistentvolume \"{volume}\"")]
    ClaimBoundElsewhere { claim: String, volume: String },
    #[error("timed out waiting for PersistentVolumeClaims {claims} to be bound")]
    Timeout { claims: String },
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
}

/// Whom a PV's `claimRef` names, against the claim the engine chose it for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimRefState {
    Free,
    Ours,
    Other(String),
}

pub fn claim_ref_state(volume: &PersistentVolume, namespace: &str, name: &str) -> ClaimRefState {
    let Some(claim_ref) = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return ClaimRefState::Free;
    };
    let (ref_ns, ref_name) = (
        claim_ref.namespace.as_deref().unwrap_or_default(),
        claim_ref.name.as_deref().unwrap_or_default(),
    );
    if ref_ns == namespace && ref_name == name {
        ClaimRefState::Ours
    } else {
        ClaimRefState::Other(format!("{ref_ns}/{ref_name}"))
    }
}

/// The PV with `claimRef` naming `claim` (and its UID, so a claim recreated
/// under the same name is not bound to it), marked as the PV controller
/// expects of a scheduler's pre-binding.
pub fn pre_bound(mut volume: PersistentVolume, claim: &PersistentVolumeClaim) -> PersistentVolume {
    let spec = volume.spec.get_or_insert_with(Default::default);
    spec.claim_ref = Some(ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        namespace: claim.namespace(),
        name: Some(claim.name_any()),
        uid: claim.metadata.uid.clone(),
        resource_version: claim.metadata.resource_version.clone(),
        ..ObjectReference::default()
    });
    volume
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(ANNOTATION_BOUND_BY_CONTROLLER.into(), "yes".into());
    volume
}

/// Bound, and (for a static match) to the PV chosen.
pub fn is_bound(claim: &PersistentVolumeClaim, volume: Option<&str>) -> bool {
    let phase = claim.status.as_ref().and_then(|s| s.phase.as_deref());
    let volume_name = claim.spec.as_ref().and_then(|s| s.volume_name.as_deref());
    phase == Some("Bound") && volume.is_none_or(|v| volume_name == Some(v))
}

/// Writes the pre-bindings and waits for the claims; what the loop's binding
/// tasks call before the Binding.
#[derive(Clone)]
#[allow(missing_debug_implementations)] // kube::Client has no Debug
pub struct VolumeBinder {
    client: Client,
    timeout: Duration,
}

impl VolumeBinder {
    pub fn new(client: Client, timeout: Duration) -> Self {
        VolumeBinder { client, timeout }
    }

    pub async fn bind(&self, bindings: &[VolumeBinding]) -> Result<(), VolumeBindError> {
        for binding in bindings {
            match binding {
                VolumeBinding::PreBind {
                    claim_namespace,
                    claim_name,
                    volume,
                } => self.pre_bind(claim_namespace, claim_name, volume).await?,
                VolumeBinding::Provision {
                    claim_namespace,
                    claim_name,
                    node,
                } => self.select_node(claim_namespace, claim_name, node).await?,
            }
        }
        self.wait_bound(bindings).await
    }

    async fn claim(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<PersistentVolumeClaim, VolumeBindError> {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), namespace);
        api.get_opt(name)
            .await
            .map_err(|source| VolumeBindError::Api {
                what: format!("reading persistentvolumeclaim {namespace}/{name}"),
                source,
            })?
            .ok_or_else(|| VolumeBindError::ClaimGone { claim: name.into() })
    }

    async fn pre_bind(
        &self,
        namespace: &str,
        name: &str,
        volume: &str,
    ) -> Result<(), VolumeBindError> {
        let claim = self.claim(namespace, name).await?;
        if is_bound(&claim, Some(volume)) {
            return Ok(());
        }
        let bound_to = claim.spec.as_ref().and_then(|s| s.volume_name.as_deref());
        if let Some(other) = bound_to.filter(|v| !v.is_empty() && *v != volume) {
            // Bound meanwhile to another PV: the next attempt sees it bound.
            return Err(VolumeBindError::ClaimBoundElsewhere {
                claim: name.into(),
                volume: other.into(),
            });
        }
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        let api_error = |what: &str, source| VolumeBindError::Api {
            what: format!("{what} persistentvolume {volume}"),
            source,
        };
        let current = api.get(volume).await.map_err(|e| api_error("reading", e))?;
        match claim_ref_state(&current, namespace, name) {
            ClaimRefState::Ours => Ok(()),
            ClaimRefState::Other(other) => Err(VolumeBindError::VolumeTaken {
                volume: volume.into(),
                other,
            }),
            ClaimRefState::Free => {
                // A replace carries the resourceVersion read above: if anyone
                // claimed the PV since, the API server answers 409.
                api.replace(volume, &PostParams::default(), &pre_bound(current, &claim))
                    .await
                    .map(drop)
                    .map_err(|e| api_error("pre-binding", e))
            }
        }
    }

    async fn select_node(
        &self,
        namespace: &str,
        name: &str,
        node: &str,
    ) -> Result<(), VolumeBindError> {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), namespace);
        let patch = serde_json::json!({
            "metadata": {"annotations": {ANNOTATION_SELECTED_NODE: node}}
        });
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(drop)
            .map_err(|source| VolumeBindError::Api {
                what: format!("annotating persistentvolumeclaim {namespace}/{name}"),
                source,
            })
    }

    async fn wait_bound(&self, bindings: &[VolumeBinding]) -> Result<(), VolumeBindError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut waiting: Vec<(&str, &str, Option<&str>)> = bindings
            .iter()
            .map(|b| match b {
                VolumeBinding::PreBind {
                    claim_namespace,
                    claim_name,
                    volume,
                } => (
                    claim_namespace.as_str(),
                    claim_name.as_str(),
                    Some(volume.as_str()),
                ),
                VolumeBinding::Provision {
                    claim_namespace,
                    claim_name,
                    ..
                } => (claim_namespace.as_str(), claim_name.as_str(), None),
            })
            .collect();
        loop {
            let mut still = Vec::new();
            for (namespace, name, volume) in waiting {
                if !is_bound(&self.claim(namespace, name).await?, volume) {
                    still.push((namespace, name, volume));
                }
            }
            if still.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                let claims = still
                    .iter()
                    .map(|(ns, name, _)| format!("{ns}/{name}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(VolumeBindError::Timeout { claims });
            }
            waiting = still;
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn from<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
        serde_json::from_value(value).expect("valid object")
    }

    fn claim() -> PersistentVolumeClaim {
        from(
            json!({"metadata": {"name": "db", "namespace": "shop", "uid": "c-1", "resourceVersion": "7"}}),
        )
    }

    #[test]
    fn a_pre_bound_pv_names_the_claim_and_its_uid() {
        let volume: PersistentVolume =
            from(json!({"metadata": {"name": "pv", "resourceVersion": "3"}, "spec": {}}));
        assert_eq!(claim_ref_state(&volume, "shop", "db"), ClaimRefState::Free);
        let bound = pre_bound(volume, &claim());
        let claim_ref = bound
            .spec
            .as_ref()
            .and_then(|s| s.claim_ref.as_ref())
            .expect("claimRef");
        assert_eq!(claim_ref.uid.as_deref(), Some("c-1"));
        assert_eq!(claim_ref.kind.as_deref(), Some("PersistentVolumeClaim"));
        assert_eq!(
            bound.metadata.resource_version.as_deref(),
            Some("3"),
            "kept as the precondition"
        );
        assert_eq!(claim_ref_state(&bound, "shop", "db"), ClaimRefState::Ours);
        assert_eq!(
            claim_ref_state(&bound, "shop", "other"),
            ClaimRefState::Other("shop/db".into())
        );
    }

    #[test]
    fn a_claim_counts_as_bound_only_in_phase_bound_to_the_chosen_pv() {
        let mut c = claim();
        assert!(!is_bound(&c, None));
        c.spec = Some(from(json!({"volumeName": "pv-2"})));
        c.status = Some(from(json!({"phase": "Bound"})));
        assert!(is_bound(&c, None));
        assert!(is_bound(&c, Some("pv-2")));
        assert!(!is_bound(&c, Some("pv-1")));
    }
}
