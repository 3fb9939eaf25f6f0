//! `phalanx-device-plugin`: the DaemonSet on GPU nodes.
//!
//! * [`backend`]: GPUs through NVML (`nvml-wrapper`), or a fake node driven by
//!   a file or by test code, behind one trait.
//! * [`kubelet`]: the kubelet device plugin API v1beta1 (gRPC over Unix sockets,
//!   code generated from our own `.proto` files by `protox` + tonic): whole GPUs
//!   and milli-GPU shares, registration, kubelet restarts, health on the stream.
//! * [`allocation`] (pure): which devices a container gets, following the
//!   scheduler's annotation ([`pods`] finds the pod), and its environment;
//!   [`assignment_lookup`] (pure): how long to wait for an unreachable API
//!   server before refusing, rather than ignoring the scheduler's choice.
//! * [`telemetry`]: the node's `GpuNode` object, kept current and rate-limited.
//! * [`metrics`]: `/metrics` and `/healthz`.
//! * [`daemon`]: all of it as one process; [`fake_kubelet`]: kubelet's side,
//!   for tests.

pub mod allocation;
pub mod assignment_lookup;
pub mod backend;
pub mod daemon;
pub mod fake_kubelet;
pub mod health;
pub mod kubelet;
pub mod metrics;
pub mod pods;
pub mod proto;
pub mod resources;
pub mod socket;
pub mod telemetry;
