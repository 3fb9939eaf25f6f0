//! The GPU assignment annotation: which GPUs (and what share of each) the
//! scheduler gave a pod. The device plugin steers kubelet's allocation to these
//! devices, and the scheduler reads it back to rebuild its accounting.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Value of [`crate::ANNOTATION_GPU_ASSIGNMENT`], as JSON.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GpuAssignmentAnnotation {
    /// The node the GPUs are on; an annotation naming another node than the pod's
    /// is stale and ignored.
    pub node: String,
    pub gpus: Vec<AssignedGpu>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AssignedGpu {
    pub index: u32,
    /// Empty when the scheduler did not know the UUID (no `GpuNode` yet).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uuid: String,
    pub milli: u32,
}

#[derive(Debug, Error)]
#[error("malformed {annotation} annotation {value:?}: {source}")]
pub struct AssignmentParseError {
    annotation: &'static str,
    value: String,
    source: serde_json::Error,
}

impl GpuAssignmentAnnotation {
    pub fn to_json(&self) -> String {
        // Serialising plain strings and integers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn parse(value: &str) -> Result<Self, AssignmentParseError> {
        serde_json::from_str(value).map_err(|source| AssignmentParseError {
            annotation: crate::ANNOTATION_GPU_ASSIGNMENT,
            value: value.to_owned(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let a = GpuAssignmentAnnotation {
            node: "gpu-1".into(),
            gpus: vec![AssignedGpu {
                index: 3,
                uuid: "GPU-x".into(),
                milli: 500,
            }],
        };
        let json = a.to_json();
        assert_eq!(
            json,
            r#"{"node":"gpu-1","gpus":[{"index":3,"uuid":"GPU-x","milli":500}]}"#
        );
        assert_eq!(GpuAssignmentAnnotation::parse(&json).unwrap(), a);
        let err = GpuAssignmentAnnotation::parse("0,1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("phalanx.dev/gpu-assignment"), "{err}");
    }
}
