//! Every CustomResourceDefinition the project defines, and their YAML as the
//! Helm chart ships it.
//!
//! The chart's CRD files (`deploy/helm/phalanx/files/crds/`) are generated from
//! these types by `cargo run -p phalanx-api --bin phalanx-crds -- write`, and a
//! test fails when the checked-in files drift from the types.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::{GpuNode, InferenceAutoscaler, PodGroup, Queue};

/// The chart directory that holds the generated CRD files, relative to the
/// workspace root.
pub const CHART_CRD_DIR: &str = "deploy/helm/phalanx/files/crds";

/// The command that regenerates the chart's CRD files (run from the workspace root).
pub const REGENERATE_COMMAND: &str = "cargo run -p phalanx-api --bin phalanx-crds -- write";

/// One CRD with the file name it is shipped under.
#[derive(Debug, Clone)]
pub struct GeneratedCrd {
    /// `<plural>.<group>.yaml`, e.g. `gpunodes.phalanx.dev.yaml`.
    pub file_name: String,
    pub crd: CustomResourceDefinition,
}

/// Every CRD type the project defines or reads, in a stable order.
pub fn all_crds() -> Vec<GeneratedCrd> {
    [
        GpuNode::crd(),
        InferenceAutoscaler::crd(),
        PodGroup::crd(),
        Queue::crd(),
    ]
    .into_iter()
    .map(|crd| GeneratedCrd {
        file_name: format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed")),
        crd,
    })
    .collect()
}

/// The file's text: a header saying it is generated, then the CRD as YAML.
pub fn crd_file_text(crd: &CustomResourceDefinition) -> Result<String, serde_yaml_ng::Error> {
    let body = serde_yaml_ng::to_string(crd)?;
    Ok(format!(
        "# Generated from the Rust types in api/ by `{REGENERATE_COMMAND}`; do not edit.\n{body}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_crd_has_a_distinct_file_named_after_it() {
        let crds = all_crds();
        let mut names: Vec<&str> = crds.iter().map(|c| c.file_name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), crds.len());
        assert!(names.contains(&"gpunodes.phalanx.dev.yaml"), "{names:?}");
        assert!(
            names.contains(&"podgroups.scheduling.x-k8s.io.yaml"),
            "{names:?}"
        );
        assert!(names.contains(&"queues.phalanx.dev.yaml"), "{names:?}");
    }

    #[test]
    fn file_text_starts_with_the_regenerate_command_and_parses_back() {
        let crd = GpuNode::crd();
        let text = crd_file_text(&crd).expect("yaml");
        assert!(text.starts_with("# Generated"), "{text}");
        assert!(text.contains(REGENERATE_COMMAND));
        let back: CustomResourceDefinition = serde_yaml_ng::from_str(&text).expect("parse back");
        assert_eq!(back, crd);
    }
}
