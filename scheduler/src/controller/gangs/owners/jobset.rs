//! JobSet (`jobset.x-k8s.io/v1alpha2`) and the Kubeflow TrainJob
//! (`trainer.kubeflow.org/v1alpha1`) that creates one.
//!
//! The JobSet controller creates `replicas` Jobs from each of
//! `spec.replicatedJobs[]` at once; each Job runs `parallelism` pods. Its pods
//! carry the JobSet's name and its restart attempt
//! (`jobset.sigs.k8s.io/restart-attempt`): a restart recreates every Job, and
//! the new pods are a new gang rather than joining what is left of the old
//! one. The gang's minimum is Σ replicas × parallelism, which is also what
//! the Kubeflow Trainer writes in the PodGroup of its coscheduling plugin (the
//! sum of its pod sets' counts).
//!
//! The count is unknowable, and the pods are scheduled one by one, when jobs
//! do not all start at once (`dependsOn`, `startupPolicyOrder: InOrder`: a gang
//! would wait for pods that are only created after the first ones finish or are
//! ready) or when a Job's parallelism differs from its completions (its pods
//! come in waves).

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use super::fields::{count, list, optional_count, text};
use super::{found, label, Derived, Finding, OwnerKind, OwnerLink, Stop, Walk};

/// Pod label: the JobSet's restart attempt its Job was created in.
pub const LABEL_RESTART_ATTEMPT: &str = "jobset.sigs.k8s.io/restart-attempt";

/// The gang a JobSet's spec implies.
pub(super) fn derived(spec: &Value) -> Derived {
    match members(spec) {
        Ok(n) => Derived::Members(n),
        Err(why) => Derived::Unusable(why),
    }
}

fn members(spec: &Value) -> Result<u32, String> {
    let order = text(
        spec,
        "/startupPolicy/startupPolicyOrder",
        "spec.startupPolicy.startupPolicyOrder",
    )?;
    if order == Some("InOrder") {
        return Err(
            "spec.startupPolicy.startupPolicyOrder is InOrder: its replicated jobs start one after another"
                .to_owned(),
        );
    }
    let jobs = list(spec, "/replicatedJobs", "spec.replicatedJobs")?;
    let mut total: u32 = 0;
    for (i, job) in jobs.iter().enumerate() {
        let at = format!("spec.replicatedJobs[{i}]");
        let depends_on = list(job, "/dependsOn", &format!("{at}.dependsOn"))?;
        if !depends_on.is_empty() {
            return Err(format!(
                "{at}.dependsOn is set: that job starts only after another one has"
            ));
        }
        let replicas = count(job, "/replicas", &format!("{at}.replicas"), 1)?;
        let parallelism = count(
            job,
            "/template/spec/parallelism",
            &format!("{at}.template.spec.parallelism"),
            1,
        )?;
        let completions = optional_count(
            job,
            "/template/spec/completions",
            &format!("{at}.template.spec.completions"),
        )?;
        if let Some(completions) = completions.filter(|c| *c != parallelism) {
            return Err(format!(
                "{at}.template.spec.parallelism ({parallelism}) differs from its completions \
                 ({completions}): its pods do not all run at once"
            ));
        }
        total = replicas
            .checked_mul(parallelism)
            .and_then(|n| total.checked_add(n))
            .ok_or_else(|| format!("{at}: replicas × parallelism overflows"))?;
    }
    Ok(total)
}

/// The gang of a pod whose Job's controller is the JobSet `jobset`.
pub(super) fn find(
    pod: &Pod,
    jobset: &OwnerLink,
    walk: &mut Walk<'_>,
) -> Result<Option<Finding>, Stop> {
    let record = found(walk.follow(OwnerKind::JobSet, jobset))?;
    let attempt = label(pod, LABEL_RESTART_ATTEMPT).unwrap_or("0");
    let trainjob = record
        .controller
        .as_ref()
        .filter(|c| OwnerKind::of_reference(c) == Some(OwnerKind::TrainJob));
    let (key, owner) = match trainjob {
        Some(trainjob) => {
            // Consulted for its annotations only: a missing TrainJob (not
            // served, or not seen yet) does not hold the JobSet's pods back.
            if walk.index.watches(OwnerKind::TrainJob) {
                let _ = walk.by_name(OwnerKind::TrainJob, &trainjob.name, Some(&trainjob.uid));
            }
            (
                format!("TrainJob/{}/attempt-{attempt}", trainjob.name),
                format!(
                    "TrainJob {}/{} (JobSet {})",
                    record.id.namespace, trainjob.name, record.id.name
                ),
            )
        }
        None => (
            format!("JobSet/{}/attempt-{attempt}", record.id.name),
            record.id.to_string(),
        ),
    };
    Ok(Some(Finding {
        key,
        derived: record.derived.clone(),
        owner,
        pod_min: None,
    }))
}
