//! `phalanx-autoscaler`: scales inference replicas on Prometheus metrics.
//!
//! It will hold (issue 6) a pure `decision` module (the HPA formula with
//! tolerance, a panic window for bursts, stabilisation and rate limits, and the
//! rule that stale or missing samples never scale down) and a `controller` that
//! reads `InferenceAutoscaler` objects, queries Prometheus and patches the scale
//! subresource, asking the scheduler's engine how many new replicas can be
//! placed before it scales up.

pub mod decision;
