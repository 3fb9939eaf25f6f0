//! Never more replicas than the cluster can place.
//!
//! Before a scale-up, the target's pod template is translated exactly as the
//! scheduler translates a pod (requests, GPU demand, GPU model, affinity,
//! tolerations) and placed into the current cluster snapshot as many times as
//! needed, each copy seeing the ones before it. The target's pods already on
//! nodes are in the snapshot; its pods still pending are not, so they need a
//! place too. The scale-up goes only as far as the copies that fit.

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use phalanx_scheduler::controller::translate;
use phalanx_scheduler::engine::{
    replicas_that_fit, ClusterSnapshot, CycleScratch, PlacementPolicy,
};

/// What the capacity check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapacityCheck {
    /// Replicas the metrics ask for.
    pub wanted: u32,
    /// The target's replicas now.
    pub current: u32,
    /// The target's pods on nodes now (already in the snapshot).
    pub placed: u32,
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

/// How far a scale-up from `current` to `wanted` can go on `snapshot`, with
/// `placed` of the target's pods already on nodes. `snapshot` is as before on
/// return. An error names what in the template could not be read.
pub fn check_scale_up(
    snapshot: &mut ClusterSnapshot,
    policy: &mut dyn PlacementPolicy,
    template: &Pod,
    current: u32,
    wanted: u32,
    placed: u32,
) -> Result<CapacityCheck, String> {
    let demand = translate::pod_demand(template, snapshot.models()).map_err(|e| e.to_string())?;
    let placed = placed.min(current);
    let needed = wanted.saturating_sub(placed);
    let mut scratch = CycleScratch::default();
    let answer = replicas_that_fit(snapshot, policy, &demand, needed, &mut scratch)
        .map_err(|e| format!("placing the pod template failed: {e}"))?;
    let placeable = placed + answer.fitted;
    Ok(CapacityCheck {
        wanted,
        current,
        placed,
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
    use phalanx_scheduler::engine::{
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
        check_scale_up(snapshot, policy.as_mut(), &pod, current, wanted, placed)
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
