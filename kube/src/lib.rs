//! `phalanx-kube`: Kubernetes objects in, engine state out.
//!
//! * [`translate`]: Pods, Nodes and `GpuNode`s into the engine's inputs
//!   (demands, node specs, live GPU state), quantities parsed as the API
//!   server does, GPU assignment annotations both ways. Every bad field is a
//!   [`translate::TranslateError`] naming the object and field, never a panic.
//! * [`cluster_state`]: the engine's snapshot kept in step with the cluster,
//!   and the pods holding resources in it (assumed or bound).
//! * [`mirror`]: watch events folded into the cluster state, relists included.
//! * [`decision`]: an engine diagnosis as the published `SchedulingDecision`.
//!
//! All of it is pure: fed objects, it makes no API call, spawns nothing and
//! reads no clock, so the scheduler, its extender and the autoscaler's
//! capacity check share one view of the cluster, and tests feed it objects
//! directly. It does link kube-runtime (and so kube-client and tokio), only for
//! the watcher's `Event` type that the mirror is fed.

pub mod cluster_state;
pub mod decision;
pub mod mirror;
pub mod translate;
