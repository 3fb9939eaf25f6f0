//! Live GPU state for the scheduler: the `GpuNode` object of this node.
//!
//! [`status`] builds the object's spec and status and decides when a write is
//! worth it (pure); [`holders`] reads which pods hold which GPU out of kubelet's
//! PodResources answer (pure); [`publisher`] samples, decides and writes.

pub mod holders;
pub mod publisher;
pub mod status;

pub use publisher::{PublisherConfig, TelemetryPublisher};
