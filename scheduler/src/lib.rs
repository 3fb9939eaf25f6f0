//! `phalanx-scheduler`: the GPU-aware Kubernetes scheduler.
//!
//! [`engine`] is the pure placement core shared by the scheduler, the
//! autoscaler's capacity check and the offline simulator: no Kubernetes client,
//! no async runtime, no clock, and no randomness that is not handed to it.
//! [`controller`] (feature `controller`, on by default) turns it into a
//! scheduler for a cluster: watches, queue, gangs, binding, events, metrics and
//! leader election; [`extender`] serves the same engine as a kube-scheduler
//! HTTP extender.

pub mod engine;

#[cfg(feature = "controller")]
pub mod controller;
#[cfg(feature = "controller")]
pub mod extender;
