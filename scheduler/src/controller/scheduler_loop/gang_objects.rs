//! The gang objects (PodGroups of either API, CompositePodGroups) as their
//! watches last showed them, by namespace and name.

use std::collections::{HashMap, HashSet};

use kube::runtime::watcher::Event;
use kube::ResourceExt;

use crate::controller::gangs::GangKey;

/// Objects of one kind by key. A relist (`Init`…`InitDone`) drops those it
/// did not show, so a deletion missed while the watch was down (or a kind no
/// longer served, cleared by an empty relist) leaves nothing stale.
#[derive(Debug)]
pub(super) struct ObjectsByKey<T> {
    objects: HashMap<GangKey, T>,
    relisting: Option<HashSet<GangKey>>,
}

impl<T> Default for ObjectsByKey<T> {
    fn default() -> Self {
        Self {
            objects: HashMap::new(),
            relisting: None,
        }
    }
}

impl<T: kube::Resource> ObjectsByKey<T> {
    /// Folds in a watch event; returns the keys whose object appeared, went
    /// away or changed as `same` judges (e.g. its spec).
    pub(super) fn apply(&mut self, event: Event<T>, same: impl Fn(&T, &T) -> bool) -> Vec<GangKey> {
        match event {
            Event::Init => {
                self.relisting = Some(HashSet::new());
                Vec::new()
            }
            Event::InitApply(object) => {
                let key = key_of(&object);
                if let Some(seen) = self.relisting.as_mut() {
                    seen.insert(key.clone());
                }
                self.insert(key, object, &same)
            }
            Event::Apply(object) => {
                let key = key_of(&object);
                self.insert(key, object, &same)
            }
            Event::Delete(object) => {
                let key = key_of(&object);
                self.objects.remove(&key).map(|_| key).into_iter().collect()
            }
            Event::InitDone => {
                let Some(seen) = self.relisting.take() else {
                    return Vec::new();
                };
                let gone: Vec<GangKey> = self
                    .objects
                    .keys()
                    .filter(|key| !seen.contains(*key))
                    .cloned()
                    .collect();
                for key in &gone {
                    self.objects.remove(key);
                }
                gone
            }
        }
    }

    fn insert(&mut self, key: GangKey, object: T, same: impl Fn(&T, &T) -> bool) -> Vec<GangKey> {
        let changed = self.objects.get(&key).is_none_or(|old| !same(old, &object));
        self.objects.insert(key.clone(), object);
        if changed {
            vec![key]
        } else {
            Vec::new()
        }
    }

    pub(super) fn get(&self, key: &GangKey) -> Option<&T> {
        self.objects.get(key)
    }

    /// All of them, for the pure gang rules.
    pub(super) fn as_map(&self) -> &HashMap<GangKey, T> {
        &self.objects
    }
}

fn key_of<T: kube::Resource>(object: &T) -> GangKey {
    GangKey::new(object.namespace().unwrap_or_default(), object.name_any())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::scheduling::v1beta1::PodGroup;
    use serde_json::json;

    fn group(name: &str, min_count: i32) -> PodGroup {
        serde_json::from_value(json!({
            "metadata": { "name": name, "namespace": "ml" },
            "spec": { "schedulingPolicy": { "gang": { "minCount": min_count } } },
        }))
        .unwrap()
    }

    fn same_spec(a: &PodGroup, b: &PodGroup) -> bool {
        a.spec == b.spec
    }

    #[test]
    fn changes_are_reported_once_and_a_relist_drops_the_unseen() {
        let mut objects = ObjectsByKey::default();
        let a = GangKey::new("ml", "a");
        assert_eq!(
            objects.apply(Event::Apply(group("a", 2)), same_spec),
            std::slice::from_ref(&a)
        );
        assert!(objects
            .apply(Event::Apply(group("a", 2)), same_spec)
            .is_empty());
        assert_eq!(
            objects.apply(Event::Apply(group("a", 3)), same_spec),
            std::slice::from_ref(&a)
        );
        objects.apply(Event::Apply(group("b", 2)), same_spec);
        objects.apply(Event::Init, same_spec);
        objects.apply(Event::InitApply(group("a", 3)), same_spec);
        assert_eq!(
            objects.apply(Event::InitDone, same_spec),
            [GangKey::new("ml", "b")]
        );
        assert!(objects.get(&a).is_some());
        assert_eq!(objects.as_map().len(), 1);
        assert_eq!(objects.apply(Event::Delete(group("a", 3)), same_spec), [a]);
        assert!(objects.as_map().is_empty());
    }
}
