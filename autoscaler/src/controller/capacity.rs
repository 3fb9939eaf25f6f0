//! Never more replicas than the cluster can place.
//!
//! Before a scale-up, the target's pod template is translated exactly as the
//! scheduler translates a pod (requests, GPU demand, GPU model, affinity,
//! tolerations) and placed into the current cluster snapshot as many times as
//! needed, each copy seeing the ones before it. The target's pods already on
//! nodes are in the snapshot; its pods still pending are not, so they need a
//! place too. Other pending pods that the scheduler will take before new
//! replicas (of higher or equal priority: they are older) are placed first,
//! so that no replica counts a GPU one of them is about to get. The scale-up
//! goes only as far as the copies that fit.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use phalanx_engine::{
    replicas_that_fit, ClusterSnapshot, CycleScratch, GpuModelRegistry, PlacementPolicy, PodDemand,
};
use phalanx_kube::translate;

/// What the capacity check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapacityCheck {
    /// Replicas the metrics ask for.
    pub wanted: u32,
    /// The target's replicas now.
    pub current: u32,
    /// The target's pods on nodes now (already in the snapshot).
    pub placed: u32,
    /// Other pending pods placed ahead of the new replicas.
    pub ahead: u32,
    /// Further copies of the template that fit.
    pub fit: u32,
    /// Replicas to scale to: as many as are placed or fit, never fewer than
    /// now (capacity never scales down) and never more than wanted.
    pub allowed: u32,
    /// Why the next copy did not fit, in kube-scheduler's words.
    pub first_failure: Option<String>,
}

impl CapacityCheck {
    pub fn limited(&self) -> bool {
        self.allowed < self.wanted
    }

    /// The condition message, with the numbers.
    pub fn message(&self) -> String {
        let mut text = format!(
            "wanted {} replicas but the cluster can place only {}: {} placed now and room for {} more",
            self.wanted,
            self.placed + self.fit,
            self.placed,
            self.fit
        );
        if self.ahead > 0 {
            text.push_str(&format!(
                " after {} pending pods of other workloads that come first",
                self.ahead
            ));
        }
        if self.allowed > self.current {
            text.push_str(&format!("; scaling to {}", self.allowed));
        } else {
            text.push_str(&format!("; holding at {}", self.current));
        }
        if let Some(why) = &self.first_failure {
            text.push_str(&format!(" ({why})"));
        }
        text
    }
}

/// A pod as the template would create it in `namespace`, named for messages.
pub fn pod_from_template(template: &PodTemplateSpec, namespace: &str, name: &str) -> Pod {
    let mut metadata: ObjectMeta = template.metadata.clone().unwrap_or_default();
    metadata.namespace = Some(namespace.to_owned());
    metadata.name = Some(format!("{name}-replica"));
    Pod {
        metadata,
        spec: template.spec.clone(),
        status: None,
    }
}

/// The priority new replicas will get: what admission resolved for the
/// target's pods, else the template's own; `None` when the template names a
/// PriorityClass whose value is unknown here.
pub fn replica_priority(template: &Pod, resolved: Option<i32>) -> Option<i32> {
    let spec = template.spec.as_ref();
    resolved
        .or_else(|| spec.and_then(|s| s.priority))
        .or_else(|| {
            let named = spec.is_some_and(|s| s.priority_class_name.is_some());
            (!named).then_some(0)
        })
}

/// The pending pods the scheduler takes before new replicas of `priority`, in
/// the order it takes them (priority, then age): all but the target's own
/// (`own`, by UID) whose priority is at least `priority` (all of them when it
/// is unknown: better too few replicas than replicas with nowhere to run).
/// A pod that cannot be translated is left out; it cannot be placed either.
pub fn pods_ahead<'a>(
    pending: impl IntoIterator<Item = &'a Pod>,
    own: &HashSet<String>,
    priority: Option<i32>,
    models: &GpuModelRegistry,
) -> Vec<PodDemand> {
    let mut ahead: Vec<(&Pod, PodDemand)> = pending
        .into_iter()
        .filter(|pod| {
            !pod.metadata
                .uid
                .as_ref()
                .is_some_and(|uid| own.contains(uid))
        })
        .filter_map(|pod| Some((pod, translate::pod_demand(pod, models).ok()?)))
        .filter(|(_, demand)| priority.is_none_or(|p| demand.priority >= p))
        .collect();
    ahead.sort_by(|(a, da), (b, db)| {
        let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
        db.priority
            .cmp(&da.priority)
            .then_with(|| created(a).cmp(&created(b)))
    });
    ahead.into_iter().map(|(_, demand)| demand).collect()
}

/// How far a scale-up from `current` to `wanted` can go on `snapshot`, with
/// `placed` of the target's pods already on nodes and `ahead` (see
/// [`pods_ahead`]) served first. `snapshot` is as before on return. An error
/// names what in the template could not be read.
pub fn check_scale_up(
    snapshot: &mut ClusterSnapshot,
    policy: &mut dyn PlacementPolicy,
    template: &Pod,
    ahead: &[PodDemand],
    current: u32,
    wanted: u32,
    placed: u32,
) -> Result<CapacityCheck, String> {
    let demand = translate::pod_demand(template, snapshot.models()).map_err(|e| e.to_string())?;
    let placed = placed.min(current);
    let needed = wanted.saturating_sub(placed);
    let mut scratch = CycleScratch::default();
    let answer = replicas_that_fit(snapshot, policy, ahead, &demand, needed, &mut scratch)
        .map_err(|e| format!("placing the pod template failed: {e}"))?;
    let placeable = placed + answer.fitted;
    Ok(CapacityCheck {
        wanted,
        current,
        placed,
        ahead: answer.ahead_placed,
        fit: answer.fitted,
        allowed: wanted.min(placeable).max(current),
        first_failure: answer.first_failure,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{Container, PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use phalanx_engine::{
        build_policy, GpuSpec, NodeSpec, PolicyConfig, PolicyName, WorkloadSource,
    };

    use super::*;

    fn snapshot(nodes: usize, gpus: usize) -> ClusterSnapshot {
        let mut snapshot = ClusterSnapshot::new();
        for i in 0..nodes {
            snapshot
                .add_node(NodeSpec {
                    name: format!("gpu-{i}"),
                    cpu_milli: 64_000,
                    memory_mib: 1 << 20,
                    max_pods: 110,
                    gpu_model: Some("A100".into()),
                    gpus: vec![GpuSpec::default(); gpus],
                    ..NodeSpec::default()
                })
                .expect("node");
        }
        snapshot
    }

    fn template(gpus: &str) -> PodTemplateSpec {
        let requests = BTreeMap::from([
            ("cpu".to_owned(), Quantity("1".into())),
            ("nvidia.com/gpu".to_owned(), Quantity(gpus.into())),
        ]);
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(BTreeMap::from([("app".into(), "llm".into())])),
                ..ObjectMeta::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "server".into(),
                    resources: Some(ResourceRequirements {
                        requests: Some(requests.clone()),
                        limits: Some(requests),
                        ..ResourceRequirements::default()
                    }),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
        }
    }

    fn check(
        snapshot: &mut ClusterSnapshot,
        gpus: &str,
        current: u32,
        wanted: u32,
        placed: u32,
    ) -> Result<CapacityCheck, String> {
        let mut policy = build_policy(
            PolicyName::Phalanx,
            &PolicyConfig {
                seed: 0,
                workload: WorkloadSource::Online,
            },
        );
        let pod = pod_from_template(&template(gpus), "serving", "llm");
        check_scale_up(
            snapshot,
            policy.as_mut(),
            &pod,
            &[],
            current,
            wanted,
            placed,
        )
    }

    #[test]
    fn scales_only_as_far_as_gpus_are_free() {
        // 2 nodes × 2 GPUs, nothing running yet.
        let mut snapshot = snapshot(2, 2);
        let answer = check(&mut snapshot, "1", 1, 6, 0).expect("readable");
        assert_eq!((answer.fit, answer.allowed), (4, 4));
        assert!(answer.limited());
        let message = answer.message();
        assert!(
            message.starts_with("wanted 6 replicas but the cluster can place only 4: 0 placed now and room for 4 more; scaling to 4"),
            "{message}"
        );
        assert!(message.contains("Insufficient nvidia.com/gpu"), "{message}");
        assert_eq!(
            snapshot.gpu_milli_allocated(),
            0,
            "the check placed nothing for good"
        );
    }

    #[test]
    fn pending_replicas_need_room_too_and_capacity_never_scales_down() {
        let mut snapshot = snapshot(1, 2);
        // 3 replicas exist, 1 is on a node (not in this bare snapshot, so 2 GPUs
        // are free): the 2 pending ones take them, none is left for more.
        let answer = check(&mut snapshot, "1", 3, 5, 1).expect("readable");
        assert_eq!((answer.placed, answer.fit, answer.allowed), (1, 2, 3));
        assert!(answer.limited());
        assert!(
            answer.message().contains("holding at 3"),
            "{}",
            answer.message()
        );
    }

    fn pending(uid: &str, created: i64, priority: Option<i32>, gpus: &str) -> Pod {
        let mut pod = pod_from_template(&template(gpus), "batch", uid);
        pod.metadata.uid = Some(uid.to_owned());
        pod.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::from_second(created).expect("time"),
            ));
        if let Some(spec) = pod.spec.as_mut() {
            spec.priority = priority;
        }
        pod
    }

    #[test]
    fn pending_pods_of_other_workloads_that_come_first_take_their_gpus() {
        // 2 nodes × 2 GPUs. Pending: a 2-GPU job of equal priority, a 1-GPU pod
        // of lower priority, and one of the target's own replicas.
        let pods = [
            pending("job", 10, Some(100), "2"),
            pending("low", 5, Some(10), "1"),
            pending("own", 20, Some(100), "1"),
        ];
        let own = HashSet::from(["own".to_owned()]);
        let models = GpuModelRegistry::default();
        let ahead = pods_ahead(&pods, &own, Some(100), &models);
        assert_eq!(ahead.len(), 1, "only the job comes before the replicas");

        let mut snapshot = snapshot(2, 2);
        let mut policy = build_policy(
            PolicyName::Phalanx,
            &PolicyConfig {
                seed: 0,
                workload: WorkloadSource::Online,
            },
        );
        let pod = pod_from_template(&template("1"), "serving", "llm");
        let answer =
            check_scale_up(&mut snapshot, policy.as_mut(), &pod, &ahead, 1, 6, 0).expect("ok");
        // The job takes 2 GPUs: the pending replica and one more fit.
        assert_eq!((answer.ahead, answer.fit, answer.allowed), (1, 2, 2));
        assert!(
            answer.message().contains(
                "0 placed now and room for 2 more after 1 pending pods of other workloads that come first"
            ),
            "{}",
            answer.message()
        );
        assert_eq!(snapshot.gpu_milli_allocated(), 0);

        // Unknown replica priority: every other pending pod counts, highest first.
        let ahead = pods_ahead(&pods, &own, None, &models);
        assert_eq!(
            ahead.iter().map(|d| d.priority).collect::<Vec<_>>(),
            [100, 10]
        );
    }

    #[test]
    fn the_replica_priority_is_the_resolved_one_else_the_templates() {
        let mut pod = pod_from_template(&template("1"), "serving", "llm");
        assert_eq!(replica_priority(&pod, Some(7)), Some(7));
        assert_eq!(replica_priority(&pod, None), Some(0), "no class: 0");
        if let Some(spec) = pod.spec.as_mut() {
            spec.priority_class_name = Some("inference".into());
        }
        assert_eq!(replica_priority(&pod, None), None, "a class we cannot read");
        if let Some(spec) = pod.spec.as_mut() {
            spec.priority = Some(1000);
        }
        assert_eq!(replica_priority(&pod, None), Some(1000));
    }

    #[test]
    fn enough_room_is_not_limited() {
        let mut snapshot = snapshot(2, 8);
        let answer = check(&mut snapshot, "2", 2, 5, 2).expect("readable");
        assert_eq!((answer.fit, answer.allowed), (3, 5));
        assert!(!answer.limited());
    }

    #[test]
    fn an_unreadable_template_is_an_error_naming_the_field() {
        let mut snapshot = snapshot(1, 2);
        let error = check(&mut snapshot, "one", 1, 2, 1).expect_err("bad quantity");
        assert!(error.contains("nvidia.com/gpu"), "{error}");
    }
}
