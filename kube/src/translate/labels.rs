//! The vocabulary Nodes and Pods share: label keys, label values made from GPU
//! product names, taint effects. Both sides of a match (a node's labels and
//! taints, a pod's selectors and tolerations) read it from here, so neither
//! translation depends on the other.

use phalanx_engine::TaintEffect;

/// The GPU product label NVIDIA GPU feature discovery puts on nodes.
pub const LABEL_GPU_PRODUCT: &str = "nvidia.com/gpu.product";

/// Pseudo-label every translated node carries with its own name, so that
/// `matchFields` on `metadata.name` can be a plain label requirement. The colon
/// makes it an invalid label key: no real label or nodeSelector can collide with it.
pub const NODE_NAME_FIELD_KEY: &str = "field:metadata.name";

/// A label value for a GPU product name: characters outside `[A-Za-z0-9._-]`
/// become `-`, the ends are trimmed to alphanumerics, and at most 63 characters
/// remain. `NVIDIA H100 80GB HBM3` → `NVIDIA-H100-80GB-HBM3`. Idempotent, so label
/// values (e.g. from GPU feature discovery) pass through unchanged.
pub fn model_label_value(product: &str) -> String {
    let mapped: String = product
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = mapped.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    // Every character is ASCII now, so byte slicing is char slicing.
    let capped = &trimmed[..trimmed.len().min(63)];
    capped
        .trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

/// A taint effect by its API name; `None` for one the API does not define.
pub fn parse_taint_effect(effect: &str) -> Option<TaintEffect> {
    match effect {
        "NoSchedule" => Some(TaintEffect::NoSchedule),
        "PreferNoSchedule" => Some(TaintEffect::PreferNoSchedule),
        "NoExecute" => Some(TaintEffect::NoExecute),
        _ => None,
    }
}
