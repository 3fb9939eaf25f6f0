//! `phalanx-device-plugin`: the DaemonSet on GPU nodes.
//!
//! Today it holds the GPU backends ([`backend`]): NVML through `nvml-wrapper`,
//! and a fake backend driven by a file or by test code (for tests and KWOK
//! nodes), behind one trait. Still to come (issue 5): the kubelet device plugin
//! API v1beta1 over gRPC, and the publisher of the per-node `GpuNode` telemetry
//! object the scheduler reads.

pub mod backend;
