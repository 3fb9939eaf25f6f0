//! `phalanx-autoscaler`: scales inference replicas on Prometheus metrics.
//!
//! * [`decision`] (pure): the HPA formula with tolerance, a panic window for
//!   bursts, stabilisation and rate limits, and the rule that stale or missing
//!   samples never scale down.
//! * `controller` (feature `controller`): reads `InferenceAutoscaler` objects,
//!   queries Prometheus, asks the scheduler's engine how many new replicas can
//!   be placed, and patches the scale subresource.
//!
//! [`spec`] checks an `InferenceAutoscaler` spec and turns it into the decision
//! module's terms; [`promql`] holds the ready-made queries. Both are pure and
//! build without the `controller` feature.

pub mod decision;
pub mod promql;
pub mod spec;

#[cfg(feature = "controller")]
pub mod controller;
