//! One metric reading, checked: is it fresh, is it a number, and how many
//! replicas does the load it shows need?

use std::time::Duration;

/// What a metric's value is compared with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MetricTarget {
    /// The reading is a total over all replicas (e.g. sum of queue depth); desired =
    /// ceil(value / per_replica).
    PerReplica(f64),
    /// The reading is a level that should sit at this value (e.g. mean KV-cache use
    /// 0.8); desired = ceil(replicas * value / target), over the ready replicas (the
    /// ones that report the level).
    Total(f64),
}

impl MetricTarget {
    /// The target's number, whichever kind it is.
    pub fn value(&self) -> f64 {
        match *self {
            MetricTarget::PerReplica(v) | MetricTarget::Total(v) => v,
        }
    }
}

/// One metric as the caller read it.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricReading {
    /// The metric's name in the CRD, e.g. "queue".
    pub name: String,
    /// None: the series is absent.
    pub value: Option<f64>,
    /// The sample's own timestamp; None counts as stale (its age is unknown).
    pub sampled_at: Option<Duration>,
    pub target: MetricTarget,
}

/// A metric that could not be used, and why (for status conditions and events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricProblem {
    pub metric: String,
    pub problem: String,
}

/// What one reading says once checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Assessed {
    /// Fresh and valid: the replicas this load needs, before rounding.
    Need { sampled_at: Duration, replicas: f64 },
    /// Absent, without a timestamp, or older than the maximum sample age.
    Stale,
    /// Not a usable number, or compared with an unusable target.
    Invalid(String),
    /// A level with no ready replica to measure it over: says nothing either way.
    NoBasis,
}

/// Checks one reading at `now`. `ready` is the basis of [`MetricTarget::Total`].
pub(crate) fn assess(
    reading: &MetricReading,
    now: Duration,
    max_sample_age: Duration,
    ready: u32,
) -> Assessed {
    let target = reading.target.value();
    if !(target.is_finite() && target > 0.0) {
        return Assessed::Invalid(format!(
            "target {target} is not a positive number; the metric is ignored"
        ));
    }
    let Some(value) = reading.value else {
        return Assessed::Stale;
    };
    if !value.is_finite() {
        return Assessed::Invalid(format!("value {value} is not a finite number"));
    }
    if value < 0.0 {
        return Assessed::Invalid(format!("value {value} is negative"));
    }
    let Some(sampled_at) = reading.sampled_at else {
        return Assessed::Stale;
    };
    // A sample from the future (clock skew) is as fresh as can be.
    if now.saturating_sub(sampled_at) > max_sample_age {
        return Assessed::Stale;
    }
    let replicas = match reading.target {
        MetricTarget::PerReplica(per_replica) => value / per_replica,
        MetricTarget::Total(level) => {
            if ready == 0 {
                return Assessed::NoBasis;
            }
            f64::from(ready) * value / level
        }
    };
    if !replicas.is_finite() {
        return Assessed::Invalid(format!(
            "value {value} over target {target} is too large to count replicas"
        ));
    }
    Assessed::Need {
        sampled_at,
        replicas,
    }
}

/// The HPA formula with its tolerance: within `tolerance` of the `current` replicas
/// nothing changes; otherwise as many replicas as the load needs, rounded up.
/// `current` includes replicas still starting: they are capacity on the way.
pub(crate) fn replicas_for(need: f64, current: u32, tolerance: f64) -> u32 {
    if current > 0 && (need / f64::from(current) - 1.0).abs() <= tolerance {
        return current;
    }
    ceil_replicas(need)
}

/// Rounds a need up to whole replicas; a hair above an integer (float noise from
/// averaging) does not buy a whole replica.
pub(crate) fn ceil_replicas(need: f64) -> u32 {
    let rounded = (need - 1e-9).ceil();
    if rounded.is_nan() || rounded <= 0.0 {
        0
    } else if rounded >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        rounded as u32
    }
}
