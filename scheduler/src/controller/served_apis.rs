//! Which optional API resources the server serves.
//!
//! Gangs can be declared in objects that only some clusters serve: the
//! scheduler-plugins `PodGroup` CRD, Kubernetes' own `scheduling.k8s.io` gang
//! objects (beta and alpha in 1.37, off by default), and the custom resources
//! of training and serving operators. The scheduler asks the server once which
//! of them exist ([`ServedApis::discover`]) and watches only those, so that a
//! cluster without them is scheduled as before instead of failing its watches.
//!
//! The question and its answer are plain data ([`OptionalKind`], [`ServedApis`]),
//! so the decisions made from them are tested without a server.

use std::collections::BTreeSet;

use kube::discovery::{ApiResource, Discovery};
use kube::Client;

/// A resource the scheduler uses only where the server serves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OptionalKind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// The resource's plural name (its URL segment).
    pub plural: &'static str,
}

impl OptionalKind {
    /// `group/version`, as in an object's `apiVersion`.
    pub fn api_version(&self) -> String {
        format!("{}/{}", self.group, self.version)
    }

    /// The resource descriptor for a dynamic `Api` of this kind.
    pub fn api_resource(&self) -> ApiResource {
        ApiResource {
            group: self.group.to_owned(),
            version: self.version.to_owned(),
            api_version: self.api_version(),
            kind: self.kind.to_owned(),
            plural: self.plural.to_owned(),
        }
    }
}

impl std::fmt::Display for OptionalKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}/{}", self.plural, self.group, self.version)
    }
}

/// The optional kinds the server serves, out of those asked about.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServedApis {
    served: BTreeSet<OptionalKind>,
}

impl ServedApis {
    /// Asks the server which of `kinds` it serves: one aggregated-discovery
    /// request (Kubernetes 1.30+), or the per-group requests of older servers
    /// when that fails. Only the groups of `kinds` are looked at.
    pub async fn discover(client: &Client, kinds: &[OptionalKind]) -> Result<Self, kube::Error> {
        let mut groups: Vec<&str> = kinds.iter().map(|k| k.group).collect();
        groups.sort_unstable();
        groups.dedup();
        let discovery = match Discovery::new(client.clone())
            .filter(&groups)
            .run_aggregated()
            .await
        {
            Ok(discovery) => discovery,
            Err(error) => {
                tracing::debug!(%error, "aggregated discovery failed; asking each group");
                Discovery::new(client.clone()).filter(&groups).run().await?
            }
        };
        let served = kinds.iter().copied().filter(|kind| {
            discovery.get(kind.group).is_some_and(|group| {
                group
                    .versioned_resources(kind.version)
                    .iter()
                    .any(|(resource, _)| resource.plural == kind.plural)
            })
        });
        Ok(Self::from_kinds(served))
    }

    /// The answer for a server that serves exactly `kinds` (tests, and the
    /// result of [`Self::discover`]).
    pub fn from_kinds(kinds: impl IntoIterator<Item = OptionalKind>) -> Self {
        Self {
            served: kinds.into_iter().collect(),
        }
    }

    pub fn serves(&self, kind: &OptionalKind) -> bool {
        self.served.contains(kind)
    }

    /// The served kinds, in a stable order.
    pub fn iter(&self) -> impl Iterator<Item = &OptionalKind> {
        self.served.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD_GROUP: OptionalKind = OptionalKind {
        group: "scheduling.k8s.io",
        version: "v1beta1",
        kind: "PodGroup",
        plural: "podgroups",
    };
    const RAY_CLUSTER: OptionalKind = OptionalKind {
        group: "ray.io",
        version: "v1",
        kind: "RayCluster",
        plural: "rayclusters",
    };

    #[test]
    fn a_kind_is_served_only_when_listed() {
        let served = ServedApis::from_kinds([POD_GROUP]);
        assert!(served.serves(&POD_GROUP));
        assert!(!served.serves(&RAY_CLUSTER));
        assert_eq!(served.iter().count(), 1);
    }

    #[test]
    fn api_resource_names_group_version_and_plural() {
        let resource = RAY_CLUSTER.api_resource();
        assert_eq!(resource.api_version, "ray.io/v1");
        assert_eq!(resource.plural, "rayclusters");
        assert_eq!(RAY_CLUSTER.to_string(), "rayclusters.ray.io/v1");
    }
}
