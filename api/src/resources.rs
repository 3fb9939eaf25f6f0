//! Names every component agrees on: extended resources, labels, annotations.

/// Extended resource for whole GPUs, the name NVIDIA's plugin uses so Phalanx can stand in for it.
pub const RESOURCE_WHOLE_GPU: &str = "nvidia.com/gpu";
/// Extended resource for shares of one GPU, in milli-GPU units.
pub const RESOURCE_GPU_MILLI: &str = "phalanx.dev/gpu-milli";
/// Milli-GPU units in one whole GPU.
pub const MILLI_PER_GPU: u32 = 1000;
/// Node label that names the node's GPU model.
pub const LABEL_GPU_MODEL: &str = "phalanx.dev/gpu-model";
/// Pod annotation in which the scheduler records the GPUs (and shares) it chose;
/// the value is a JSON [`crate::GpuAssignmentAnnotation`].
pub const ANNOTATION_GPU_ASSIGNMENT: &str = "phalanx.dev/gpu-assignment";
/// Pod annotation restricting a pod to some GPU models (`|`-separated).
pub const ANNOTATION_GPU_MODELS: &str = "phalanx.dev/gpu-models";
/// The `schedulerName` pods use to opt in.
pub const SCHEDULER_NAME: &str = "phalanx";
