//! The snapshot's copy of the cluster's volume objects, and what placed pods
//! hold of them.

use std::collections::{BTreeMap, HashMap};

use super::matching::{match_claims, ClaimMatch};
use super::objects::{ClaimSpec, PodVolumes, StorageClassSpec, VolumeSpec};

/// What the binder must do for one claim of a placed pod before its Binding
/// (kube-scheduler's PreBind), then wait until the claim is Bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeBinding {
    /// Set the PV's `spec.claimRef` to the claim; the PV controller binds it.
    PreBind {
        claim_namespace: String,
        claim_name: String,
        volume: String,
    },
    /// Annotate the claim `volume.kubernetes.io/selected-node: <node>` so that
    /// its provisioner creates a volume there.
    Provision {
        claim_namespace: String,
        claim_name: String,
        node: String,
    },
}

/// What one placed pod took, to be given back on release.
#[derive(Debug, Clone, Default)]
struct PlacedVolumes {
    node: String,
    claims: Vec<String>,
    /// PVs chosen for its unbound WaitForFirstConsumer claims.
    assumed: Vec<String>,
    /// CSI volumes it counts against the node's attach limits.
    attachments: Vec<(String, String)>,
    bindings: Vec<VolumeBinding>,
}

/// Claims, PVs, classes and CSI limits as the watches last showed them, plus
/// the claims and PVs placed pods hold.
#[derive(Debug, Clone, Default)]
pub struct VolumeCatalogue {
    /// Fed by watches. When false (nothing reports volumes) no pod is refused.
    tracked: bool,
    pub(crate) claims: HashMap<String, ClaimSpec>,
    /// By name; ordered, so that equal candidates are matched the same way
    /// every time.
    pub(crate) volumes: BTreeMap<String, VolumeSpec>,
    pub(crate) classes: HashMap<String, StorageClassSpec>,
    /// CSINode `drivers[].allocatable.count` per node and driver.
    pub(crate) attach_limits: HashMap<String, HashMap<String, u32>>,
    /// PV → claim (`namespace/name`) it was chosen for, until the claim binds.
    pub(crate) assumed: HashMap<String, String>,
    /// Node → (driver, volume) → placed pods using it.
    pub(crate) attachments: HashMap<String, HashMap<(String, String), u32>>,
    /// Claim → placed pods using it (ReadWriteOncePod).
    pub(crate) claim_users: HashMap<String, u32>,
    /// By pod name (`PodDemand::name`).
    placed: HashMap<String, PlacedVolumes>,
}

impl VolumeCatalogue {
    /// Says that the cluster's volume objects are fed in: from now on pods are
    /// held to their claims.
    pub fn set_tracked(&mut self, tracked: bool) {
        self.tracked = tracked;
    }

    pub fn is_tracked(&self) -> bool {
        self.tracked
    }

    pub fn upsert_claim(&mut self, claim: ClaimSpec) {
        self.claims.insert(claim.key(), claim);
    }

    pub fn remove_claim(&mut self, key: &str) {
        self.claims.remove(key);
    }

    pub fn claim(&self, key: &str) -> Option<&ClaimSpec> {
        self.claims.get(key)
    }

    pub fn upsert_volume(&mut self, volume: VolumeSpec) {
        self.volumes.insert(volume.name.clone(), volume);
    }

    pub fn remove_volume(&mut self, name: &str) {
        self.volumes.remove(name);
    }

    pub fn volume(&self, name: &str) -> Option<&VolumeSpec> {
        self.volumes.get(name)
    }

    pub fn upsert_class(&mut self, class: StorageClassSpec) {
        self.classes.insert(class.name.clone(), class);
    }

    pub fn remove_class(&mut self, name: &str) {
        self.classes.remove(name);
    }

    /// A node's CSI attach limits (driver → most volumes); empty removes them.
    pub fn set_attach_limits(&mut self, node: &str, limits: HashMap<String, u32>) {
        if limits.is_empty() {
            self.attach_limits.remove(node);
        } else {
            self.attach_limits.insert(node.to_owned(), limits);
        }
    }

    /// Keys of every claim, PV, class and node with attach limits, for a
    /// relist to find what disappeared.
    pub fn claim_keys(&self) -> impl Iterator<Item = &String> {
        self.claims.keys()
    }

    pub fn volume_names(&self) -> impl Iterator<Item = &String> {
        self.volumes.keys()
    }

    pub fn class_names(&self) -> impl Iterator<Item = &String> {
        self.classes.keys()
    }

    pub fn limited_nodes(&self) -> impl Iterator<Item = &String> {
        self.attach_limits.keys()
    }

    /// The PV assumed for a claim, if any.
    pub fn assumed_for(&self, claim: &str) -> Option<&str> {
        self.assumed
            .iter()
            .find(|(_, c)| c.as_str() == claim)
            .map(|(pv, _)| pv.as_str())
    }

    /// What the binder must do before binding `pod` (empty when all its
    /// claims were bound, or it has none).
    pub fn bindings_for(&self, pod: &str) -> &[VolumeBinding] {
        self.placed.get(pod).map_or(&[], |p| p.bindings.as_slice())
    }

    /// Records what a pod placed on `node` takes: its claims, a PV for each
    /// unbound WaitForFirstConsumer claim (the same choice the filter made),
    /// its CSI volumes. Never refuses: a pod the cluster has already bound is
    /// accounted whatever the catalogue says.
    pub(crate) fn on_place(
        &mut self,
        pod: &str,
        node: &str,
        node_labels: &BTreeMap<String, String>,
        volumes: &PodVolumes,
    ) {
        if self.placed.contains_key(pod) {
            self.on_release(pod);
        }
        let mut placed = PlacedVolumes {
            node: node.to_owned(),
            claims: volumes.claims.clone(),
            ..PlacedVolumes::default()
        };
        if self.tracked {
            let mut matches = Vec::new();
            // A claim without a match is left alone; the binder only acts on
            // what matched.
            let _ = match_claims(self, &volumes.claims, node_labels, &mut matches);
            for m in matches {
                let (namespace, name) = split_key(m.claim());
                placed.bindings.push(match &m {
                    ClaimMatch::Static { volume, .. } => VolumeBinding::PreBind {
                        claim_namespace: namespace.to_owned(),
                        claim_name: name.to_owned(),
                        volume: volume.clone(),
                    },
                    ClaimMatch::Provision { .. } => VolumeBinding::Provision {
                        claim_namespace: namespace.to_owned(),
                        claim_name: name.to_owned(),
                        node: node.to_owned(),
                    },
                });
                if let ClaimMatch::Static { claim, volume } = m {
                    self.assumed.insert(volume.clone(), claim);
                    placed.assumed.push(volume);
                }
            }
        }
        placed.attachments = self.csi_volumes_of(volumes);
        let on_node = self.attachments.entry(node.to_owned()).or_default();
        for attachment in &placed.attachments {
            *on_node.entry(attachment.clone()).or_default() += 1;
        }
        for claim in &placed.claims {
            *self.claim_users.entry(claim.clone()).or_default() += 1;
        }
        self.placed.insert(pod.to_owned(), placed);
    }

    /// Gives back what [`Self::on_place`] recorded for the pod.
    pub(crate) fn on_release(&mut self, pod: &str) {
        let Some(placed) = self.placed.remove(pod) else {
            return;
        };
        for volume in &placed.assumed {
            self.assumed.remove(volume);
        }
        if let Some(on_node) = self.attachments.get_mut(&placed.node) {
            for attachment in &placed.attachments {
                if let Some(n) = on_node.get_mut(attachment) {
                    *n -= 1;
                    if *n == 0 {
                        on_node.remove(attachment);
                    }
                }
            }
        }
        for claim in &placed.claims {
            if let Some(n) = self.claim_users.get_mut(claim) {
                *n -= 1;
                if *n == 0 {
                    self.claim_users.remove(claim);
                }
            }
        }
    }

    /// The (driver, volume) pairs a pod counts against attach limits: a bound
    /// claim's CSI PV, an unbound claim (by its own key) whose class is
    /// provisioned by a CSI driver, and its inline CSI volumes.
    pub(crate) fn csi_volumes_of(&self, volumes: &PodVolumes) -> Vec<(String, String)> {
        let mut out = volumes.inline_csi.clone();
        for key in &volumes.claims {
            let Some(claim) = self.claims.get(key) else {
                continue;
            };
            let pair = match self.bound_or_assumed_volume(key, claim) {
                Some(pv) => pv
                    .csi_driver
                    .clone()
                    .map(|driver| (driver, pv.name.clone())),
                None if !claim.is_bound() => self
                    .classes
                    .get(&claim.storage_class)
                    .filter(|c| c.provisions())
                    .map(|c| (c.provisioner.clone(), key.clone())),
                None => None,
            };
            if let Some(pair) = pair {
                if !out.contains(&pair) {
                    out.push(pair);
                }
            }
        }
        out
    }

    fn bound_or_assumed_volume(&self, key: &str, claim: &ClaimSpec) -> Option<&VolumeSpec> {
        let name = claim
            .volume_name
            .as_deref()
            .or_else(|| self.assumed_for(key))?;
        self.volumes.get(name)
    }
}

fn split_key(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}
