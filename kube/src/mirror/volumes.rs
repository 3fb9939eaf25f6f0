//! Claims, PVs, StorageClasses and CSINodes folded into the snapshot's volume
//! catalogue. Only a mirror told to [`ClusterMirror::track_volumes`] (the
//! scheduler, which binds volumes itself) holds pods to their claims; the
//! others never see these kinds and refuse nothing for them.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::{CSINode, StorageClass};
use kube::runtime::watcher::Event;
use kube::ResourceExt;

use super::{ClusterMirror, MirrorChange, WatchedKind};
use crate::translate;

const VOLUME_KINDS: [WatchedKind; 4] = [
    WatchedKind::PersistentVolumeClaim,
    WatchedKind::PersistentVolume,
    WatchedKind::StorageClass,
    WatchedKind::CsiNode,
];

impl ClusterMirror {
    /// From now on pods are held to their claims, and the mirror is synced
    /// only once the four volume kinds have been listed too.
    pub fn track_volumes(&mut self) {
        self.state.snapshot_mut().volumes_mut().set_tracked(true);
    }

    pub(super) fn volumes_synced(&self) -> bool {
        !self.state.snapshot().volumes().is_tracked()
            || VOLUME_KINDS.iter().all(|k| self.synced.contains(k))
    }

    pub fn claim_event(&mut self, event: &Event<PersistentVolumeClaim>) -> MirrorChange {
        let key = |c: &PersistentVolumeClaim| {
            phalanx_engine::claim_key(&c.namespace().unwrap_or_default(), &c.name_any())
        };
        self.volume_kind_event(
            WatchedKind::PersistentVolumeClaim,
            event,
            key,
            |mirror, claim| {
                let catalogue = mirror.state.snapshot_mut().volumes_mut();
                match translate::claim_spec(claim) {
                    Ok(spec) => {
                        catalogue.upsert_claim(spec);
                        None
                    }
                    Err(error) => {
                        catalogue.remove_claim(&key(claim));
                        Some(error.to_string())
                    }
                }
            },
            |mirror, key| mirror.state.snapshot_mut().volumes_mut().remove_claim(key),
            |mirror| {
                mirror
                    .state
                    .snapshot()
                    .volumes()
                    .claim_keys()
                    .cloned()
                    .collect()
            },
        )
    }

    pub fn volume_event(&mut self, event: &Event<PersistentVolume>) -> MirrorChange {
        self.volume_kind_event(
            WatchedKind::PersistentVolume,
            event,
            |v: &PersistentVolume| v.name_any(),
            |mirror, volume| {
                let catalogue = mirror.state.snapshot_mut().volumes_mut();
                match translate::volume_spec(volume) {
                    Ok(spec) => {
                        catalogue.upsert_volume(spec);
                        None
                    }
                    Err(error) => {
                        catalogue.remove_volume(&volume.name_any());
                        Some(error.to_string())
                    }
                }
            },
            |mirror, name| {
                mirror
                    .state
                    .snapshot_mut()
                    .volumes_mut()
                    .remove_volume(name)
            },
            |mirror| {
                mirror
                    .state
                    .snapshot()
                    .volumes()
                    .volume_names()
                    .cloned()
                    .collect()
            },
        )
    }

    pub fn storage_class_event(&mut self, event: &Event<StorageClass>) -> MirrorChange {
        self.volume_kind_event(
            WatchedKind::StorageClass,
            event,
            |c: &StorageClass| c.name_any(),
            |mirror, class| {
                let catalogue = mirror.state.snapshot_mut().volumes_mut();
                match translate::storage_class_spec(class) {
                    Ok(spec) => {
                        catalogue.upsert_class(spec);
                        None
                    }
                    Err(error) => {
                        catalogue.remove_class(&class.name_any());
                        Some(error.to_string())
                    }
                }
            },
            |mirror, name| mirror.state.snapshot_mut().volumes_mut().remove_class(name),
            |mirror| {
                mirror
                    .state
                    .snapshot()
                    .volumes()
                    .class_names()
                    .cloned()
                    .collect()
            },
        )
    }

    pub fn csi_node_event(&mut self, event: &Event<CSINode>) -> MirrorChange {
        self.volume_kind_event(
            WatchedKind::CsiNode,
            event,
            |n: &CSINode| n.name_any(),
            |mirror, csi_node| {
                let (node, limits) = translate::attach_limits(csi_node);
                mirror
                    .state
                    .snapshot_mut()
                    .volumes_mut()
                    .set_attach_limits(&node, limits);
                None
            },
            |mirror, node| {
                mirror
                    .state
                    .snapshot_mut()
                    .volumes_mut()
                    .set_attach_limits(node, Default::default())
            },
            |mirror| {
                mirror
                    .state
                    .snapshot()
                    .volumes()
                    .limited_nodes()
                    .cloned()
                    .collect()
            },
        )
    }

    /// One watch event of a volume kind: apply (an error is reported and the
    /// object forgotten, so that nothing stale is trusted), delete, or a
    /// relist's end, which deletes what the list no longer had. Every change
    /// may make an unschedulable pod fit.
    fn volume_kind_event<K>(
        &mut self,
        kind: WatchedKind,
        event: &Event<K>,
        key: impl Fn(&K) -> String,
        apply: impl Fn(&mut Self, &K) -> Option<String>,
        delete: impl Fn(&mut Self, &str),
        known: impl Fn(&Self) -> Vec<String>,
    ) -> MirrorChange {
        let mut change = MirrorChange {
            cluster_changed: true,
            ..MirrorChange::default()
        };
        match event {
            Event::Init => return self.begin_relist(kind),
            Event::InitApply(object) => {
                self.seen(kind, key(object));
                change.errors.extend(apply(self, object));
            }
            Event::Apply(object) => change.errors.extend(apply(self, object)),
            Event::Delete(object) => delete(self, &key(object)),
            Event::InitDone => {
                let known = known(self);
                for gone in self.end_relist(kind, known.iter()) {
                    delete(self, &gone);
                }
            }
        }
        change
    }
}

#[cfg(test)]
mod tests;
