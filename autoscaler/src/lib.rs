//! `phalanx-autoscaler`: scales inference replicas on Prometheus metrics.
//!
//! It will hold (issue 6) a pure `decision` module (the HPA formula with
//! tolerance, a panic window for bursts, stabilisation and rate limits, and the
//! rule that stale or missing samples never scale down) and a `controller` that
//! reads `InferenceAutoscaler` objects, queries Prometheus and patches the scale
//! subresource, asking the scheduler's engine how many new replicas can be
//! placed before it scales up.
//!
//! [`spec`] checks an `InferenceAutoscaler` spec and turns it into the decision
//! module's terms; [`promql`] holds the ready-made queries. Both are pure and
//! build without the `controller` feature.

pub mod decision;
pub mod promql;
pub mod spec;

#[cfg(feature = "controller")]
pub mod controller;
