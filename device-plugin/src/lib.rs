//! `phalanx-device-plugin`: the DaemonSet on GPU nodes.
//!
//! It will hold (issue 5) GPU backends behind one trait (NVML through
//! `nvml-wrapper`, and a fake backend for tests and KWOK nodes), the kubelet
//! device plugin API v1beta1 over gRPC, and the publisher of the per-node
//! `GpuNode` telemetry object the scheduler reads.
