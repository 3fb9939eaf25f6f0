//! Scale from zero and back (KEDA-style activation): pure, with no clock and no
//! I/O.
//!
//! Serving metrics (a vLLM queue, KV-cache use) vanish with the last replica,
//! so at zero replicas the decider only ever sees absent data and holds. The
//! activation metric is one that exists at zero (a gateway's or router's
//! queue). [`ActivationGate::apply`] runs after the decider each period:
//!
//! - at zero replicas the activation decides alone: a fresh value above the
//!   threshold wakes the workload (to 1, or `ceil(value / per_replica)` when
//!   set, or what the decider wants if that is more); anything else (at or
//!   below the threshold, stale, absent, invalid) stays at zero;
//! - above zero the decider's choice stands, except a step to zero: that needs
//!   the activation to have read fresh and at or below the threshold in every
//!   period for the whole cooldown (a stale or invalid read, or one above the
//!   threshold, starts the wait again); until then the last replica stays.
//!
//! Bounds win over both: the result is always within `[min, max]`, so with a
//! `min_replicas` of 1 or more the gate never changes anything.

use std::fmt;
use std::time::Duration;

use super::metrics::ceil_replicas;

/// How the activation metric is judged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Activation {
    /// Active when the value is above this.
    pub threshold: f64,
    /// On wake-up, one replica per this much of the value (at least one).
    pub per_replica: Option<f64>,
    /// How long the value must have been quiet before the last replica goes.
    pub cooldown: Duration,
    /// Samples older than this are stale (the behaviour's `max_sample_age`).
    pub max_sample_age: Duration,
}

/// An [`Activation`] the gate cannot work with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidActivation {
    #[error("threshold must be a number of at least 0, got {0}")]
    Threshold(f64),
    #[error("per_replica must be a number above 0, got {0}")]
    PerReplica(f64),
    #[error("max_sample_age must be above 0")]
    MaxSampleAge,
}

impl Activation {
    pub fn validate(&self) -> Result<(), InvalidActivation> {
        if !(self.threshold.is_finite() && self.threshold >= 0.0) {
            return Err(InvalidActivation::Threshold(self.threshold));
        }
        if let Some(per_replica) = self.per_replica {
            if !(per_replica.is_finite() && per_replica > 0.0) {
                return Err(InvalidActivation::PerReplica(per_replica));
            }
        }
        if self.max_sample_age.is_zero() {
            return Err(InvalidActivation::MaxSampleAge);
        }
        Ok(())
    }
}

/// The activation query as the caller read it.
#[derive(Debug, Clone, PartialEq)]
pub enum ActivationReading {
    /// One number and when it was sampled (Unix time).
    Value { value: f64, sampled_at: Duration },
    /// No series, or Prometheus could not be asked: stale.
    Absent,
    /// An answer that is not one usable number (several series, NaN).
    Invalid(String),
}

/// What one reading says once checked.
#[derive(Debug, Clone, PartialEq)]
pub enum ActivationState {
    /// Fresh and above the threshold.
    Active { value: f64 },
    /// Fresh and at or below the threshold.
    Quiet { value: f64 },
    /// Absent, or older than the maximum sample age.
    Stale,
    /// Not a usable number.
    Invalid(String),
}

impl ActivationState {
    pub fn is_active(&self) -> bool {
        matches!(self, ActivationState::Active { .. })
    }
}

/// Why the gate changed (or kept) what the decider wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActivationReason {
    /// At zero, the activation is active: the workload wakes.
    Activated,
    /// At zero, the activation is quiet: it stays at zero.
    Idle,
    /// At zero, the activation could not be read fresh (or was invalid): it
    /// stays at zero, and says so.
    ActivationUnreadable,
    /// The metrics allow zero, but the activation has not been quiet (fresh)
    /// for the whole cooldown: the last replica stays.
    ActivationCooldown,
    /// The metrics allow zero and the activation has been quiet for the
    /// cooldown: the last replica goes.
    ScaledToZero,
}

impl ActivationReason {
    /// The reason as an event or condition reason (`UpperCamelCase`).
    pub fn as_str(&self) -> &'static str {
        match self {
            ActivationReason::Activated => "Activated",
            ActivationReason::Idle => "Idle",
            ActivationReason::ActivationUnreadable => "ActivationUnreadable",
            ActivationReason::ActivationCooldown => "ActivationCooldown",
            ActivationReason::ScaledToZero => "ScaledToZero",
        }
    }
}

impl fmt::Display for ActivationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One period, as the gate sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct GateInput {
    pub now: Duration,
    /// The target's replicas now.
    pub current_replicas: u32,
    /// What the decider wants this period.
    pub decided: u32,
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub reading: ActivationReading,
}

/// The gate's answer for one period.
#[derive(Debug, Clone, PartialEq)]
pub struct Gated {
    /// The replicas wanted now, within `[min, max]`.
    pub desired_replicas: u32,
    /// Why, when the activation decided; `None` when the decider's choice
    /// stands untouched.
    pub reason: Option<ActivationReason>,
    pub state: ActivationState,
    /// Since when the activation has been quiet, read fresh every period.
    pub quiet_since: Option<Duration>,
}

/// Wakes a workload at zero and guards its last replica; remembers since when
/// the activation has been quiet.
#[derive(Debug, Clone)]
pub struct ActivationGate {
    activation: Activation,
    quiet_since: Option<Duration>,
}

impl ActivationGate {
    pub fn new(activation: Activation) -> Result<Self, InvalidActivation> {
        activation.validate()?;
        Ok(Self {
            activation,
            quiet_since: None,
        })
    }

    pub fn activation(&self) -> &Activation {
        &self.activation
    }

    /// One period: the replicas wanted after the activation has had its say.
    pub fn apply(&mut self, input: &GateInput) -> Gated {
        let state = self.assess(&input.reading, input.now);
        // The quiet time counts periods read quiet and fresh, back to back.
        self.quiet_since = match state {
            ActivationState::Quiet { .. } => Some(self.quiet_since.unwrap_or(input.now)),
            _ => None,
        };
        let max = input.max_replicas.max(input.min_replicas);
        // With a minimum of one or more the workload never reaches zero: the
        // decider's choice stands.
        let (wanted, reason) = if input.min_replicas > 0 {
            (input.decided, None)
        } else if input.current_replicas == 0 {
            self.at_zero(input, &state)
        } else if input.decided == 0 {
            if self.cooled_down(input.now) {
                (0, Some(ActivationReason::ScaledToZero))
            } else {
                (1, Some(ActivationReason::ActivationCooldown))
            }
        } else {
            (input.decided, None)
        };
        Gated {
            desired_replicas: wanted.clamp(input.min_replicas, max),
            reason,
            state,
            quiet_since: self.quiet_since,
        }
    }

    /// At zero replicas the activation alone decides whether to wake.
    fn at_zero(
        &self,
        input: &GateInput,
        state: &ActivationState,
    ) -> (u32, Option<ActivationReason>) {
        match *state {
            ActivationState::Active { value } => {
                let size = self
                    .activation
                    .per_replica
                    .map_or(1, |per| ceil_replicas(value / per))
                    .max(1)
                    .max(input.decided);
                (size, Some(ActivationReason::Activated))
            }
            ActivationState::Quiet { .. } => (0, Some(ActivationReason::Idle)),
            ActivationState::Stale | ActivationState::Invalid(_) => {
                (0, Some(ActivationReason::ActivationUnreadable))
            }
        }
    }

    /// Quiet, read fresh every period, for at least the cooldown.
    fn cooled_down(&self, now: Duration) -> bool {
        self.quiet_since
            .is_some_and(|since| now.saturating_sub(since) >= self.activation.cooldown)
    }

    fn assess(&self, reading: &ActivationReading, now: Duration) -> ActivationState {
        match *reading {
            ActivationReading::Absent => ActivationState::Stale,
            ActivationReading::Invalid(ref why) => ActivationState::Invalid(why.clone()),
            ActivationReading::Value { value, sampled_at } => {
                if !value.is_finite() {
                    ActivationState::Invalid(format!("value {value} is not a finite number"))
                } else if value < 0.0 {
                    ActivationState::Invalid(format!("value {value} is negative"))
                } else if now.saturating_sub(sampled_at) > self.activation.max_sample_age {
                    // A sample from the future (clock skew) is as fresh as can be.
                    ActivationState::Stale
                } else if value > self.activation.threshold {
                    ActivationState::Active { value }
                } else {
                    ActivationState::Quiet { value }
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "activation_tests.rs"]
mod tests;
