//! batch/v1 Job: an indexed Job whose parallelism equals its completions runs
//! all its indexes at once, so its pods are a gang of `parallelism`. Other Jobs
//! (work queues, one pod after another) are not. A Job that a JobSet owns
//! follows the JobSet's rule instead (`jobset.rs`).

use k8s_openapi::api::batch::v1::Job;

use super::{Derived, Finding, OwnerRecord};

/// The gang a Job's spec implies.
pub(super) fn derived(job: &Job) -> Derived {
    let Some(spec) = job.spec.as_ref() else {
        return Derived::NotAGang;
    };
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    // The API server defaults parallelism to 1 and validates both as >= 0.
    let parallelism = spec.parallelism.unwrap_or(1);
    match (indexed, spec.completions) {
        (true, Some(completions)) if completions == parallelism && parallelism > 1 => {
            Derived::Members(u32::try_from(parallelism).unwrap_or(u32::MAX))
        }
        _ => Derived::NotAGang,
    }
}

/// The gang of a pod whose controller is `job` (not owned by a JobSet).
pub(super) fn find(job: &OwnerRecord) -> Option<Finding> {
    Some(Finding {
        key: format!("Job/{}", job.id.name),
        derived: job.derived.clone(),
        owner: job.id.to_string(),
        pod_min: None,
    })
}
