//! `phalanx-scheduler`: the GPU-aware Kubernetes scheduler.
//!
//! [`engine`] is the pure placement core shared by the scheduler, the
//! autoscaler's capacity check and the offline simulator: no Kubernetes client,
//! no async runtime, no clock, and no randomness that is not handed to it.
//! The cluster controller (watching, queueing, binding, gangs, HA) will live in
//! a `controller` module beside it (issue 4).

pub mod engine;
