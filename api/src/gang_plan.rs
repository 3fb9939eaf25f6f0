//! The gang plan annotation: a gang's whole placement, written on every member
//! before the first of them is bound, so that a leader taking over after a crash
//! can finish the gang or undo it instead of leaving it partly bound (see
//! ARCHITECTURE.md, "Gangs across a leader change").

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::AssignedGpu;

/// Value of [`ANNOTATION_GANG_PLAN`], as JSON.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GangPlanAnnotation {
    /// `<leader identity>@<unix ms when it became leader>#<sequence>`: unique per
    /// decision, and its prefix names the leadership term that wrote it.
    pub plan: String,
    /// The gang, `namespace/name`, for events and logs.
    pub gang: String,
    /// How many pods the plan placed: a plan with fewer carriers lost a member.
    pub members: u32,
    /// The node this member goes to.
    pub node: String,
    /// The GPUs this member gets there (empty for a member without GPUs).
    #[serde(default)]
    pub gpus: Vec<AssignedGpu>,
}

/// On a pod: its part of a gang's placement, recorded before any Binding.
pub const ANNOTATION_GANG_PLAN: &str = "phalanx.dev/gang-plan";

#[derive(Debug, Error)]
#[error("malformed {annotation} annotation {value:?}: {source}")]
pub struct GangPlanParseError {
    annotation: &'static str,
    value: String,
    source: serde_json::Error,
}

impl GangPlanAnnotation {
    pub fn to_json(&self) -> String {
        // Serialising plain strings and integers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn parse(value: &str) -> Result<Self, GangPlanParseError> {
        serde_json::from_str(value).map_err(|source| GangPlanParseError {
            annotation: ANNOTATION_GANG_PLAN,
            value: value.to_owned(),
            source,
        })
    }

    /// The leadership term that wrote the plan (everything before `#`).
    pub fn term(&self) -> &str {
        self.plan
            .rsplit_once('#')
            .map_or(self.plan.as_str(), |(term, _)| term)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_names_its_term_and_rejects_garbage() {
        let plan = GangPlanAnnotation {
            plan: "phalanx-0@1700000000000#7".into(),
            gang: "ml/train".into(),
            members: 4,
            node: "gpu-1".into(),
            gpus: vec![AssignedGpu {
                index: 2,
                uuid: String::new(),
                milli: 1000,
            }],
        };
        let json = plan.to_json();
        assert_eq!(
            json,
            r#"{"plan":"phalanx-0@1700000000000#7","gang":"ml/train","members":4,"node":"gpu-1","gpus":[{"index":2,"milli":1000}]}"#
        );
        assert_eq!(GangPlanAnnotation::parse(&json).unwrap(), plan);
        assert_eq!(plan.term(), "phalanx-0@1700000000000");
        let err = GangPlanAnnotation::parse("{}").unwrap_err().to_string();
        assert!(err.contains("phalanx.dev/gang-plan"), "{err}");
    }
}
