//! The Kubeflow training-operator's v1 jobs (`kubeflow.org/v1` PyTorchJob,
//! TFJob, MPIJob): the operator creates every replica's pod at once, each
//! owned by the job. Its own gang rule (the PodGroup it writes when gang
//! scheduling is on) is the minimum `spec.runPolicy.schedulingPolicy.minAvailable`,
//! else the sum of `replicas` over the replica specs (1 where unset).

use serde_json::Value;

use super::fields::{count, optional_count};
use super::{Derived, Finding, OwnerKind, OwnerRecord};

/// The spec field holding the replica specs of each kind.
fn replica_specs_field(kind: OwnerKind) -> &'static str {
    match kind {
        OwnerKind::TfJob => "tfReplicaSpecs",
        OwnerKind::MpiJob => "mpiReplicaSpecs",
        _ => "pytorchReplicaSpecs",
    }
}

/// The gang a training job's spec implies.
pub(super) fn derived(kind: OwnerKind, spec: &Value) -> Derived {
    match members(kind, spec) {
        Ok(n) => Derived::Members(n),
        Err(why) => Derived::Unusable(why),
    }
}

fn members(kind: OwnerKind, spec: &Value) -> Result<u32, String> {
    let field = replica_specs_field(kind);
    let specs = spec
        .get(field)
        .and_then(Value::as_object)
        .ok_or_else(|| format!("spec.{field} is missing or not a map"))?;
    let mut total: u32 = 0;
    for (replica_type, replica) in specs {
        let replicas = count(
            replica,
            "/replicas",
            &format!("spec.{field}.{replica_type}.replicas"),
            1,
        )?;
        total = total
            .checked_add(replicas)
            .ok_or_else(|| format!("spec.{field}: the replica count overflows"))?;
    }
    const MIN_AVAILABLE: &str = "spec.runPolicy.schedulingPolicy.minAvailable";
    match optional_count(
        spec,
        "/runPolicy/schedulingPolicy/minAvailable",
        MIN_AVAILABLE,
    )? {
        None => Ok(total),
        Some(0) => Err(format!("{MIN_AVAILABLE} is 0; it must be at least 1")),
        Some(min) if min > total => Err(format!(
            "{MIN_AVAILABLE} ({min}) is more than its {total} replicas"
        )),
        Some(min) => Ok(min),
    }
}

/// The gang of a pod whose controller is the training job `job`.
pub(super) fn find(job: &OwnerRecord) -> Finding {
    Finding {
        key: format!("{}/{}", job.id.kind, job.id.name),
        derived: job.derived.clone(),
        owner: job.id.to_string(),
        pod_min: None,
    }
}
