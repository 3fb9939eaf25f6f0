//! RayCluster (`ray.io/v1`), also the one a RayJob creates: the head and the
//! workers, all owned by the cluster. KubeRay's own gang rule (its Volcano
//! and scheduler-plugins integrations) is 1 (the head) plus, over the worker
//! groups that are not suspended, `numOfHosts` times the group's desired
//! replicas (`replicas` clamped to `[minReplicas, maxReplicas]`), or times
//! `minReplicas` when the autoscaler is on (it adds workers later, one by one).
//! A RayJob's submitter pod is owned by a batch Job, not by the cluster, so it
//! is not a member.

use serde_json::Value;

use super::fields::{count, flag, list, optional_count};
use super::{Derived, Finding, OwnerKind, OwnerRecord};

/// The gang a RayCluster's spec implies.
pub(super) fn derived(spec: &Value) -> Derived {
    match members(spec) {
        Ok(n) => Derived::Members(n),
        Err(why) => Derived::Unusable(why),
    }
}

fn members(spec: &Value) -> Result<u32, String> {
    let autoscaling = flag(
        spec,
        "/enableInTreeAutoscaling",
        "spec.enableInTreeAutoscaling",
    )?;
    let groups = list(spec, "/workerGroupSpecs", "spec.workerGroupSpecs")?;
    let mut total: u32 = 1;
    for (i, group) in groups.iter().enumerate() {
        let at = format!("spec.workerGroupSpecs[{i}]");
        if flag(group, "/suspend", &format!("{at}.suspend"))? {
            continue;
        }
        let min = count(group, "/minReplicas", &format!("{at}.minReplicas"), 0)?;
        let max = count(
            group,
            "/maxReplicas",
            &format!("{at}.maxReplicas"),
            i32::MAX.unsigned_abs(),
        )?;
        let replicas = optional_count(group, "/replicas", &format!("{at}.replicas"))?;
        let hosts = count(group, "/numOfHosts", &format!("{at}.numOfHosts"), 1)?;
        let per_host = if autoscaling {
            min
        } else if min > max {
            max
        } else {
            replicas.unwrap_or(min).clamp(min, max)
        };
        total = per_host
            .checked_mul(hosts)
            .and_then(|n| total.checked_add(n))
            .ok_or_else(|| format!("{at}: replicas × numOfHosts overflows"))?;
    }
    Ok(total)
}

/// The gang of a pod whose controller is the RayCluster `cluster`.
pub(super) fn find(cluster: &OwnerRecord) -> Finding {
    let mut owner = cluster.id.to_string();
    if let Some(parent) = cluster.controller.as_ref().filter(|c| c.kind == "RayJob") {
        owner.push_str(&format!(" of RayJob {}", parent.name));
    }
    Finding {
        key: format!("{}/{}", OwnerKind::RayCluster, cluster.id.name),
        derived: cluster.derived.clone(),
        owner,
        pod_min: None,
    }
}
