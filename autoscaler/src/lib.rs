//! `phalanx-autoscaler`: scales inference replicas on Prometheus metrics.
//!
//! * [`decision`] (pure): the HPA formula with tolerance, a panic window for
//!   bursts, stabilisation and rate limits, and the rule that stale or missing
//!   samples never scale down.
//! * `controller` (feature `controller`): reads `InferenceAutoscaler` objects,
//!   queries Prometheus, asks the scheduler's engine how many new replicas can
//!   be placed, and patches the scale subresource.
//!
//! `spec` checks an `InferenceAutoscaler` spec and turns it into the decision
//! module's terms; `promql` holds the ready-made queries. Both are pure and
//! build with the `spec` feature alone, without the controller; they are left
//! out of a build with no features, which has no Kubernetes types at all.

pub mod decision;
#[cfg(feature = "spec")]
pub mod promql;
#[cfg(feature = "spec")]
pub mod spec;

#[cfg(feature = "controller")]
pub mod controller;
