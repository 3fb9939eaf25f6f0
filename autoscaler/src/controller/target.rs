//! The scale target: found by API discovery, read and scaled through its
//! `/scale` subresource, so any kind that has one works (Deployments,
//! StatefulSets, custom inference servers).

use std::collections::{HashMap, HashSet};

use k8s_openapi::api::autoscaling::v1::Scale;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::{Api, Client};
use phalanx_api::autoscaler::ScaleTargetRef;
use phalanx_kube::translate::{is_bound, is_finished};
use thiserror::Error;

/// Why the target could not be read or scaled.
#[derive(Debug, Error)]
pub enum TargetError {
    #[error("scaleTargetRef.apiVersion {0:?} is not group/version or version")]
    BadApiVersion(String),
    #[error("{kind} in {api_version} is not served by this cluster: {source}")]
    Discovery {
        api_version: String,
        kind: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("{kind} {namespace}/{name}: {what}: {source}")]
    Api {
        kind: String,
        namespace: String,
        name: String,
        what: &'static str,
        #[source]
        source: Box<kube::Error>,
    },
}

/// `apps/v1` → (`apps`, `v1`); `v1` → (``, `v1`).
pub fn group_version(api_version: &str) -> Result<(&str, &str), TargetError> {
    let bad = || TargetError::BadApiVersion(api_version.to_owned());
    let (group, version) = match api_version.split_once('/') {
        Some((group, version)) if !group.is_empty() => (group, version),
        Some(_) => return Err(bad()),
        None => ("", api_version),
    };
    if version.is_empty() || version.contains('/') {
        return Err(bad());
    }
    Ok((group, version))
}

/// Discovery answers, kept: kinds rarely change under a running autoscaler,
/// and asking every period would double the API calls.
#[derive(Debug, Default)]
pub struct Discovery {
    resources: HashMap<(String, String), ApiResource>,
}

impl Discovery {
    /// The API of `target`'s kind in `namespace`.
    pub async fn target(
        &mut self,
        client: &Client,
        namespace: &str,
        target: &ScaleTargetRef,
    ) -> Result<ScaleTarget, TargetError> {
        let key = (target.api_version.clone(), target.kind.clone());
        let resource = match self.resources.get(&key) {
            Some(resource) => resource.clone(),
            None => {
                let (group, version) = group_version(&target.api_version)?;
                let gvk = GroupVersionKind::gvk(group, version, &target.kind);
                let (resource, _) =
                    kube::discovery::pinned_kind(client, &gvk)
                        .await
                        .map_err(|source| TargetError::Discovery {
                            api_version: target.api_version.clone(),
                            kind: target.kind.clone(),
                            source: Box::new(source),
                        })?;
                self.resources.insert(key, resource.clone());
                resource
            }
        };
        Ok(ScaleTarget {
            api: Api::namespaced_with(client.clone(), namespace, &resource),
            pods: Api::namespaced(client.clone(), namespace),
            kind: target.kind.clone(),
            namespace: namespace.to_owned(),
            name: target.name.clone(),
        })
    }

    /// Forgets a kind whose API failed, so the next period asks again (the
    /// CRD may have been reinstalled at another version).
    pub fn forget(&mut self, target: &ScaleTargetRef) {
        self.resources
            .remove(&(target.api_version.clone(), target.kind.clone()));
    }
}

/// The target's pods, as far as the autoscaler cares.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodCounts {
    /// Not terminating, not finished, bound to a node.
    pub placed: u32,
    /// Of those, Ready.
    pub ready: u32,
    /// Every pod of the target, by UID: its pending ones are not "ahead" of
    /// its new replicas, they are counted as replicas themselves.
    pub uids: HashSet<String>,
    /// The priority admission resolved for its pods (that of the newest pod
    /// that has one), which new replicas will get too.
    pub priority: Option<i32>,
}

/// Counts pods: terminating and finished ones are on their way out.
pub fn count_pods(pods: &[Pod]) -> PodCounts {
    let mut counts = PodCounts::default();
    let mut newest = None;
    for pod in pods {
        if let Some(uid) = &pod.metadata.uid {
            counts.uids.insert(uid.clone());
        }
        if let Some(priority) = pod.spec.as_ref().and_then(|s| s.priority) {
            let created = pod.metadata.creation_timestamp.as_ref().map(|t| t.0);
            if newest.is_none_or(|at| created >= at) {
                newest = Some(created);
                counts.priority = Some(priority);
            }
        }
        if pod.metadata.deletion_timestamp.is_some() || is_finished(pod) || !is_bound(pod) {
            continue;
        }
        counts.placed += 1;
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if ready {
            counts.ready += 1;
        }
    }
    counts
}

/// One scale target, ready to be read and scaled.
#[allow(missing_debug_implementations)] // kube::Api holds a Client without Debug
pub struct ScaleTarget {
    api: Api<DynamicObject>,
    pods: Api<Pod>,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl ScaleTarget {
    fn error(&self, what: &'static str, source: kube::Error) -> TargetError {
        TargetError::Api {
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            what,
            source: Box::new(source),
        }
    }

    pub async fn scale(&self) -> Result<Scale, TargetError> {
        self.api
            .get_scale(&self.name)
            .await
            .map_err(|e| self.error("reading /scale", e))
    }

    /// Sets `spec.replicas` through `/scale`.
    pub async fn set_replicas(&self, replicas: u32) -> Result<Scale, TargetError> {
        let patch = serde_json::json!({ "spec": { "replicas": replicas } });
        self.api
            .patch_scale(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| self.error("patching /scale", e))
    }

    /// `spec.template`, which Deployments, StatefulSets, ReplicaSets and most
    /// custom workloads have; `None` for a kind without one.
    pub async fn pod_template(&self) -> Result<Option<PodTemplateSpec>, TargetError> {
        let object = self
            .api
            .get(&self.name)
            .await
            .map_err(|e| self.error("reading the object", e))?;
        Ok(object
            .data
            .get("spec")
            .and_then(|spec| spec.get("template"))
            .and_then(|template| serde_json::from_value(template.clone()).ok()))
    }

    /// The pods the scale's label selector matches; `None` when the kind's
    /// `/scale` reports no selector.
    pub async fn pods(&self, scale: &Scale) -> Result<Option<PodCounts>, TargetError> {
        let Some(selector) = scale
            .status
            .as_ref()
            .and_then(|s| s.selector.as_deref())
            .filter(|s| !s.is_empty())
        else {
            return Ok(None);
        };
        let pods = self
            .pods
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|e| self.error("listing its pods", e))?;
        Ok(Some(count_pods(&pods.items)))
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    use super::*;

    #[test]
    fn api_versions_split_into_group_and_version() {
        assert_eq!(group_version("apps/v1").expect("ok"), ("apps", "v1"));
        assert_eq!(group_version("v1").expect("ok"), ("", "v1"));
        for bad in ["", "/v1", "apps/", "a/b/c"] {
            assert!(group_version(bad).is_err(), "{bad:?}");
        }
    }

    fn pod(node: Option<&str>, ready: bool, phase: &str, deleting: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                deletion_timestamp: deleting
                    .then_some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(str::to_owned),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
        }
    }

    #[test]
    fn counts_bound_and_ready_pods_only() {
        let pods = [
            pod(Some("n1"), true, "Running", false),
            pod(Some("n1"), false, "Pending", false),
            pod(None, false, "Pending", false),
            pod(Some("n2"), true, "Running", true),
            pod(Some("n2"), false, "Succeeded", false),
        ];
        let counts = count_pods(&pods);
        assert_eq!((counts.placed, counts.ready), (2, 1));
    }

    #[test]
    fn remembers_every_uid_and_the_newest_resolved_priority() {
        let with = |uid: &str, created: i64, priority: Option<i32>| {
            let mut p = pod(None, false, "Pending", false);
            p.metadata.uid = Some(uid.into());
            p.metadata.creation_timestamp = Some(Time(
                k8s_openapi::jiff::Timestamp::from_second(created).expect("time"),
            ));
            if let Some(spec) = p.spec.as_mut() {
                spec.priority = priority;
            }
            p
        };
        let counts = count_pods(&[
            with("a", 10, Some(100)),
            with("b", 30, Some(1000)),
            with("c", 20, None),
        ]);
        assert_eq!(counts.uids.len(), 3);
        assert_eq!(counts.priority, Some(1000));
        assert_eq!(count_pods(&[]).priority, None);
    }
}
