//! The policy of a Kubernetes gang: a `scheduling.k8s.io/v1beta1` PodGroup
//! (Kubernetes 1.37, `GenericWorkload`), and the `v1alpha3` CompositePodGroup
//! that may be its parent.
//!
//! What each field does in Phalanx:
//!
//! - `spec.schedulingPolicy.gang.minCount`: the gang's minimum, placed all or
//!   nothing; `spec.schedulingPolicy.basic`: no gang, each pod is placed alone.
//! - `spec.schedulingConstraints.topology[].key`: a required topology level:
//!   every member in one domain of that node label, or none is placed.
//! - `spec.priority`: the gang's place in the queue (higher first), as a pod's
//!   priority orders a pod.
//! - `spec.preemptionPolicy`, `spec.disruptionMode`: read, validated and carried
//!   in the gang's policy; Phalanx neither preempts nor evicts yet, so today
//!   they change nothing.
//! - `spec.parentCompositePodGroupName`: a parent with the `basic` policy leaves
//!   each child an independent gang; a parent with a gang policy
//!   (`minGroupCount`) would need sibling groups placed as one unit, which the
//!   engine's flat `min_member` cannot express exactly (each child must reach
//!   its own `minCount`), so such a child is refused with an error naming the
//!   field rather than placed alone.

use std::collections::HashMap;

use k8s_openapi::api::scheduling::v1alpha3::CompositePodGroup;
use k8s_openapi::api::scheduling::v1beta1::{DisruptionMode, PodGroup};

use super::membership::{GangKey, GangSpecError};

/// `spec.schedulingPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamPolicy {
    /// Each pod alone.
    Basic,
    /// All of `min_count` or nothing.
    Gang { min_count: u32 },
}

/// `spec.preemptionPolicy` (PodGroupPreemptionPolicy gate).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreemptionPolicy {
    PreemptLowerPriority,
    Never,
}

/// `spec.disruptionMode`: whether members may be disrupted one by one or only
/// all together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GangDisruption {
    Single,
    All,
}

/// What Phalanx reads from an upstream PodGroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamGroup {
    pub policy: UpstreamPolicy,
    /// Required topology keys, in the order given.
    pub required_topology: Vec<String>,
    pub priority: Option<i32>,
    pub preemption: Option<PreemptionPolicy>,
    pub disruption: Option<GangDisruption>,
}

/// Reads and validates the PodGroup `key`, following its parent composite.
pub fn read_pod_group(
    key: &GangKey,
    pod_groups: &HashMap<GangKey, PodGroup>,
    composites: &HashMap<GangKey, CompositePodGroup>,
) -> Result<UpstreamGroup, GangSpecError> {
    let group = pod_groups
        .get(key)
        .ok_or_else(|| GangSpecError::UpstreamPodGroupNotFound {
            pod_group: key.clone(),
        })?;
    let spec = &group.spec;
    let policy = match (&spec.scheduling_policy.gang, &spec.scheduling_policy.basic) {
        (Some(gang), None) => UpstreamPolicy::Gang {
            min_count: u32::try_from(gang.min_count)
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| {
                    invalid(
                        key,
                        "spec.schedulingPolicy.gang.minCount",
                        &format!("is {}; it must be at least 1", gang.min_count),
                    )
                })?,
        },
        (None, Some(_)) => UpstreamPolicy::Basic,
        (Some(_), Some(_)) => {
            return Err(invalid(
                key,
                "spec.schedulingPolicy",
                "sets both gang and basic; it must set one",
            ))
        }
        (None, None) => {
            return Err(invalid(
                key,
                "spec.schedulingPolicy",
                "sets neither gang nor basic",
            ))
        }
    };
    let mut required_topology = Vec::new();
    for constraint in spec
        .scheduling_constraints
        .iter()
        .flat_map(|c| c.topology.iter().flatten())
    {
        let topology_key = constraint.key.trim();
        if topology_key.is_empty() {
            return Err(invalid(
                key,
                "spec.schedulingConstraints.topology[].key",
                "is empty",
            ));
        }
        required_topology.push(topology_key.to_owned());
    }
    if required_topology.len() > 1 {
        // The API allows one today; two required keys would need nested
        // domains, which the engine does not place.
        return Err(invalid(
            key,
            "spec.schedulingConstraints.topology",
            &format!(
                "has {} entries; Phalanx honours one required topology key",
                required_topology.len()
            ),
        ));
    }
    let preemption = match spec.preemption_policy.as_deref() {
        None => None,
        Some("PreemptLowerPriority") => Some(PreemptionPolicy::PreemptLowerPriority),
        Some("Never") => Some(PreemptionPolicy::Never),
        Some(other) => {
            return Err(invalid(
                key,
                "spec.preemptionPolicy",
                &format!("is {other:?}; expected PreemptLowerPriority or Never"),
            ))
        }
    };
    let disruption = disruption_mode(key, spec.disruption_mode.as_ref())?;
    if let Some(parent) = spec.parent_composite_pod_group_name.as_deref() {
        check_parent(key, parent, composites)?;
    }
    Ok(UpstreamGroup {
        policy,
        required_topology,
        priority: spec.priority,
        preemption,
        disruption,
    })
}

fn disruption_mode(
    key: &GangKey,
    mode: Option<&DisruptionMode>,
) -> Result<Option<GangDisruption>, GangSpecError> {
    match mode.map(|m| (m.single.is_some(), m.all.is_some())) {
        None => Ok(None),
        Some((true, false)) => Ok(Some(GangDisruption::Single)),
        Some((false, true)) => Ok(Some(GangDisruption::All)),
        Some(_) => Err(invalid(
            key,
            "spec.disruptionMode",
            "must set exactly one of single and all",
        )),
    }
}

/// A child of a composite is an independent gang only when the composite's
/// policy is `basic`.
fn check_parent(
    key: &GangKey,
    parent: &str,
    composites: &HashMap<GangKey, CompositePodGroup>,
) -> Result<(), GangSpecError> {
    let composite_key = GangKey::new(key.namespace.clone(), parent);
    let composite =
        composites
            .get(&composite_key)
            .ok_or_else(|| GangSpecError::CompositeNotFound {
                pod_group: key.clone(),
                composite: parent.to_owned(),
            })?;
    let composite_invalid = |field, problem: &str| GangSpecError::CompositeInvalid {
        composite: composite_key.clone(),
        field,
        problem: problem.to_owned(),
    };
    let spec = &composite.spec;
    match (&spec.scheduling_policy.gang, &spec.scheduling_policy.basic) {
        (None, Some(_)) => Ok(()),
        (Some(gang), None) => Err(GangSpecError::CompositeGangUnsupported {
            pod_group: key.clone(),
            composite: parent.to_owned(),
            min_group_count: gang.min_group_count,
        }),
        _ => Err(composite_invalid(
            "spec.schedulingPolicy",
            "must set exactly one of gang and basic",
        )),
    }
}

fn invalid(key: &GangKey, field: &'static str, problem: &str) -> GangSpecError {
    GangSpecError::UpstreamInvalid {
        pod_group: key.clone(),
        field,
        problem: problem.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn key() -> GangKey {
        GangKey::new("ml", "train")
    }

    fn groups(spec: Value) -> HashMap<GangKey, PodGroup> {
        let group: PodGroup = serde_json::from_value(json!({
            "apiVersion": "scheduling.k8s.io/v1beta1",
            "kind": "PodGroup",
            "metadata": { "name": "train", "namespace": "ml" },
            "spec": spec,
        }))
        .unwrap();
        HashMap::from([(key(), group)])
    }

    fn composites(policy: Value) -> HashMap<GangKey, CompositePodGroup> {
        let composite: CompositePodGroup = serde_json::from_value(json!({
            "apiVersion": "scheduling.k8s.io/v1alpha3",
            "kind": "CompositePodGroup",
            "metadata": { "name": "job", "namespace": "ml" },
            "spec": { "schedulingPolicy": policy, "workloadRef": { "name": "w" } },
        }))
        .unwrap();
        HashMap::from([(GangKey::new("ml", "job"), composite)])
    }

    fn read(spec: Value) -> Result<UpstreamGroup, GangSpecError> {
        read_pod_group(&key(), &groups(spec), &HashMap::new())
    }

    #[test]
    fn gang_policy_gives_min_count_and_the_rest() {
        let group = read(json!({
            "schedulingPolicy": { "gang": { "minCount": 4 } },
            "schedulingConstraints": { "topology": [{ "key": "example.com/rack" }] },
            "priority": 1000,
            "preemptionPolicy": "Never",
            "disruptionMode": { "all": {} },
        }))
        .unwrap();
        assert_eq!(
            group,
            UpstreamGroup {
                policy: UpstreamPolicy::Gang { min_count: 4 },
                required_topology: vec!["example.com/rack".to_owned()],
                priority: Some(1000),
                preemption: Some(PreemptionPolicy::Never),
                disruption: Some(GangDisruption::All),
            }
        );
    }

    #[test]
    fn basic_policy_is_no_gang() {
        let group = read(json!({ "schedulingPolicy": { "basic": {} } })).unwrap();
        assert_eq!(group.policy, UpstreamPolicy::Basic);
        assert_eq!(group.priority, None);
    }

    #[test]
    fn missing_group_names_it() {
        let err = read_pod_group(&key(), &HashMap::new(), &HashMap::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "scheduling.k8s.io PodGroup ml/train not found"
        );
        assert!(!err.is_invalid_group());
    }

    #[test]
    fn invalid_groups_name_the_field() {
        let cases = [
            (
                json!({ "schedulingPolicy": { "gang": { "minCount": 0 } } }),
                "spec.schedulingPolicy.gang.minCount is 0",
            ),
            (
                json!({ "schedulingPolicy": {} }),
                "spec.schedulingPolicy sets neither",
            ),
            (
                json!({ "schedulingPolicy": { "basic": {}, "gang": { "minCount": 2 } } }),
                "spec.schedulingPolicy sets both",
            ),
            (
                json!({ "schedulingPolicy": { "gang": { "minCount": 2 } },
                        "schedulingConstraints": { "topology": [{ "key": " " }] } }),
                "spec.schedulingConstraints.topology[].key is empty",
            ),
            (
                json!({ "schedulingPolicy": { "gang": { "minCount": 2 } },
                        "schedulingConstraints": { "topology": [{ "key": "a" }, { "key": "b" }] } }),
                "has 2 entries",
            ),
            (
                json!({ "schedulingPolicy": { "gang": { "minCount": 2 } }, "preemptionPolicy": "Sometimes" }),
                "spec.preemptionPolicy is \"Sometimes\"",
            ),
            (
                json!({ "schedulingPolicy": { "gang": { "minCount": 2 } }, "disruptionMode": {} }),
                "spec.disruptionMode must set exactly one",
            ),
        ];
        for (spec, expected) in cases {
            let err = read(spec).unwrap_err();
            let message = err.to_string();
            assert!(message.contains("PodGroup ml/train"), "{message}");
            assert!(message.contains(expected), "{message} lacks {expected}");
            assert!(err.is_invalid_group(), "{message}");
        }
    }

    #[test]
    fn a_basic_composite_leaves_each_child_its_own_gang() {
        let spec = json!({
            "schedulingPolicy": { "gang": { "minCount": 2 } },
            "parentCompositePodGroupName": "job",
        });
        let group =
            read_pod_group(&key(), &groups(spec), &composites(json!({ "basic": {} }))).unwrap();
        assert_eq!(group.policy, UpstreamPolicy::Gang { min_count: 2 });
    }

    #[test]
    fn a_gang_composite_is_refused_naming_the_field() {
        let spec = json!({
            "schedulingPolicy": { "gang": { "minCount": 2 } },
            "parentCompositePodGroupName": "job",
        });
        let err = read_pod_group(
            &key(),
            &groups(spec.clone()),
            &composites(json!({ "gang": { "minGroupCount": 3 } })),
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("spec.parentCompositePodGroupName")
                && message.contains("minGroupCount 3"),
            "{message}"
        );
        assert!(err.is_invalid_group());
        let err = read_pod_group(&key(), &groups(spec), &HashMap::new()).unwrap_err();
        assert!(
            matches!(err, GangSpecError::CompositeNotFound { .. }),
            "{err}"
        );
        assert!(!err.is_invalid_group());
    }
}
