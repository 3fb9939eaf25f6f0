//! PriorityClasses, as clusters running training next to inference define
//! them: a name, a value, and whether pods of the class may preempt others.
//! Pods use one with [`crate::PodBuilder::priority_class`].

use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{ObjectMeta, PostParams};
use kube::Api;

use crate::error::Result;

/// `preemptionPolicy` of a PriorityClass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PreemptionPolicy {
    /// Pods of the class may preempt pods of lower priority (the default).
    #[default]
    PreemptLowerPriority,
    /// Pods of the class wait ahead of lower ones but never preempt them.
    Never,
}

impl PreemptionPolicy {
    /// The value the API takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PreemptLowerPriority => "PreemptLowerPriority",
            Self::Never => "Never",
        }
    }
}

/// The PriorityClass object `name` with `value` and `policy`.
pub fn priority_class(name: &str, value: i32, policy: PreemptionPolicy) -> PriorityClass {
    PriorityClass {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        value: Some(value),
        preemption_policy: Some(policy.as_str().to_owned()),
        ..PriorityClass::default()
    }
}

/// Creates the PriorityClass `name` (cluster-scoped) and returns it as
/// stored. Create it before the pods that name it: admission resolves the
/// class when a pod is created.
pub async fn create_priority_class(
    client: &kube::Client,
    name: &str,
    value: i32,
    policy: PreemptionPolicy,
) -> Result<PriorityClass> {
    let api: Api<PriorityClass> = Api::all(client.clone());
    Ok(api
        .create(&PostParams::default(), &priority_class(name, value, policy))
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_object_carries_value_and_policy() {
        let class = priority_class("batch", -10, PreemptionPolicy::Never);
        assert_eq!(class.metadata.name.as_deref(), Some("batch"));
        assert_eq!(class.value, Some(-10));
        assert_eq!(class.preemption_policy.as_deref(), Some("Never"));
        assert_eq!(class.global_default, None);
    }
}
