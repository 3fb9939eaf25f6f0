//! `phalanx-scheduler`: the GPU-aware Kubernetes scheduler.
//!
//! The placement decisions are `phalanx-engine`'s (pure, shared with the
//! simulator and the autoscaler); Kubernetes objects become engine inputs in
//! `phalanx-kube`. [`controller`] turns them into a scheduler for a cluster:
//! queue, gangs, binding, events and metrics around one loop; [`extender`]
//! serves the same engine as a kube-scheduler HTTP extender.

pub mod controller;
pub mod extender;
