//! Pod spec fields that kube-scheduler's default plugins read and Phalanx does not
//! honour yet. A pod waiting for a node with one of them is refused, naming the
//! field, instead of being placed as if the field were not there. A pod already
//! bound (by someone else, or `spec.nodeName` preset) is still accounted: where
//! it runs is decided, only what it holds matters.

use k8s_openapi::api::core::v1::PodSpec;

use super::TranslateError;

/// The first unsupported field the pod sets, as an error naming it.
pub(crate) fn refuse_unsupported(object: &str, spec: &PodSpec) -> Result<(), TranslateError> {
    let refuse = |field: String, what: &str| {
        Err(TranslateError::invalid(
            object,
            field,
            format!("{what} is not supported by Phalanx; schedule this pod with kube-scheduler"),
        ))
    };
    if spec.resource_claims.as_ref().is_some_and(|c| !c.is_empty()) {
        return refuse(
            "spec.resourceClaims".into(),
            "dynamic resource allocation (DynamicResources)",
        );
    }
    let containers = spec.containers.iter().map(|c| ("containers", c)).chain(
        spec.init_containers
            .iter()
            .flatten()
            .map(|c| ("initContainers", c)),
    );
    for (list, c) in containers {
        let claims = c.resources.as_ref().and_then(|r| r.claims.as_ref());
        if claims.is_some_and(|c| !c.is_empty()) {
            return refuse(
                format!("spec.{list}[{:?}].resources.claims", c.name),
                "dynamic resource allocation (DynamicResources)",
            );
        }
    }
    Ok(())
}
