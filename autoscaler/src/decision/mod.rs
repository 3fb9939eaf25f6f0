//! How many replicas an inference target should have: pure, with no clock, no I/O
//! and no Kubernetes. The controller and the simulator drive it the same way: one
//! [`ReplicaDecider::decide`] per control period with the time and the metric
//! readings, and one [`ReplicaDecider::record_scale`] for each change applied.
//!
//! The core is the HPA's: per metric `ceil(value / target)` replicas, nothing
//! within the tolerance, and the largest of several metrics. Replicas that are
//! still starting count as capacity on the way, so a burst is answered once.
//! Around the core:
//! - a stable window (normal decisions) and a short panic window (bursts), both
//!   averaged over the decider's own samples, as Knative's KPA does;
//! - panic mode, entered when the short window needs `panic_threshold` times the
//!   ready replicas and left a stable window after its last trigger: while it
//!   lasts the short window scales up too, and nothing scales down;
//! - while the replicas of the last scale-up are starting (within `startup`),
//!   the backlog they will drain is not new load: only a need of
//!   `panic_threshold` times the replicas on the way scales up again;
//! - the HPA's stabilisation windows (scale down only to the highest
//!   recommendation of the window, or what the short window needed then; up
//!   only to the lowest) and rate limits (the most permissive policy applies);
//! - a scale-down window that doubles (up to 10 min) when a scale-up undoes a
//!   scale-down within it, and halves after a quiet hour: bursts with
//!   gaps longer than the window are held through after the first;
//! - optionally, replicas sized for a queue-wait objective from the serving
//!   series ([`replicas_for_objective`]) instead of a per-replica target;
//! - bounds, with scale-to-zero when `min_replicas` is 0 and the load is zero;
//! - metrics that are stale, absent, not a number or compared with a target of
//!   zero are reported and never drive scaling; while any is, nothing scales down.
//!
//! After the decider, [`ActivationGate`] (KEDA-style activation) decides the
//! steps to and from zero replicas on a metric that exists at zero.

mod activation;
mod behavior;
mod decider;
mod metrics;
mod objective;

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;

pub use activation::{
    Activation, ActivationGate, ActivationReading, ActivationReason, ActivationState, GateInput,
    Gated, InvalidActivation,
};
pub use behavior::{defaults, Behavior, InvalidBehavior, RateAmount, RateLimit};
pub use decider::{Decision, DecisionReason, Observation, ReplicaDecider};
pub use metrics::{MetricProblem, MetricReading, MetricTarget};
pub use objective::{
    defaults as objective_defaults, replicas_for_objective, ObjectiveError, QueueObjective,
    ReplicaShape, ServingSignals,
};
