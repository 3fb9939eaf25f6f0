//! How the autoscaler may move: bounds, tolerance, windows, rate limits, and
//! the checks that refuse a behaviour that cannot work.

use std::time::Duration;

/// How far one rate limit lets the replica count move within its period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateAmount {
    /// At most this many replicas per period.
    Pods(u32),
    /// At most this percentage of the replicas there were when the period began.
    Percent(u32),
}

/// One rate limit (an HPA `HPAScalingPolicy`): `amount` per `period`, counted over
/// the scale changes actually applied (`ReplicaDecider::record_scale`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub amount: RateAmount,
    pub period: Duration,
}

/// Everything that shapes decisions besides the metrics themselves.
#[derive(Debug, Clone, PartialEq)]
pub struct Behavior {
    /// 0 allows scaling to zero when the load is zero.
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// A metric within this relative distance of its target changes nothing (HPA: 0.1).
    pub tolerance: f64,
    /// Averaging window for normal decisions (and how long panic lasts after its
    /// last trigger).
    pub stable_window: Duration,
    /// Short averaging window that lets bursts scale up at once.
    pub panic_window: Duration,
    /// Panic when the short window wants at least this many times the ready replicas.
    pub panic_threshold: f64,
    /// A scale-up goes only as high as the lowest recommendation in this window (HPA: 0).
    pub scale_up_stabilization: Duration,
    /// A scale-down goes only as low as the highest recommendation in this window
    /// (HPA: 300 s).
    pub scale_down_stabilization: Duration,
    /// The most permissive of these applies (HPA `selectPolicy: Max`); empty: no limit.
    pub scale_up_limits: Vec<RateLimit>,
    /// The most permissive of these applies (HPA `selectPolicy: Max`); empty: no limit.
    pub scale_down_limits: Vec<RateLimit>,
    /// How long a new replica takes to become ready.
    pub startup: Duration,
    /// Samples older than this (by their own timestamp) are stale.
    pub max_sample_age: Duration,
}

/// The Phalanx defaults, tuned in `phalanx-sim autoscale` on the Azure LLM trace.
pub mod defaults {
    use std::time::Duration;

    /// The HPA's tolerance.
    pub const TOLERANCE: f64 = 0.1;
    /// Knative's 60 s. A longer window (90 s was the default before the load
    /// suite) smooths a conversation trace better but lags every ramp.
    pub const STABLE_WINDOW: Duration = Duration::from_secs(60);
    /// Two control periods of 5 s.
    pub const PANIC_WINDOW: Duration = Duration::from_secs(10);
    /// Knative's panic threshold (200 %).
    pub const PANIC_THRESHOLD: f64 = 2.0;
    /// Scale-ups are never delayed: starting replicas already count as capacity on
    /// the way, which is what keeps a burst from being answered twice.
    pub const SCALE_UP_STABILIZATION: Duration = Duration::ZERO;
    /// Shorter than the HPA's 300 s: the stable window already smooths the load
    /// over a minute, and the window remembers what the short window needed, so
    /// 70 s more is enough to hold through noise without paying five minutes of
    /// idle GPUs after every burst. A load that comes back within it after a
    /// scale-down doubles it (up to 10 min) until it has been quiet for an hour.
    pub const SCALE_DOWN_STABILIZATION: Duration = Duration::from_secs(70);
    /// A cold start of a large model.
    pub const STARTUP: Duration = Duration::from_secs(60);
    /// Three scrapes of 10 s may be missed before a sample counts as stale.
    pub const MAX_SAMPLE_AGE: Duration = Duration::from_secs(30);
}

impl Behavior {
    /// The Phalanx defaults between these bounds.
    pub fn with_bounds(min_replicas: u32, max_replicas: u32) -> Self {
        use self::defaults::*;
        Self {
            min_replicas,
            max_replicas,
            tolerance: TOLERANCE,
            stable_window: STABLE_WINDOW,
            panic_window: PANIC_WINDOW,
            panic_threshold: PANIC_THRESHOLD,
            scale_up_stabilization: SCALE_UP_STABILIZATION,
            scale_down_stabilization: SCALE_DOWN_STABILIZATION,
            // Double, or add four, every 15 s: the HPA's scale-up default.
            scale_up_limits: vec![
                RateLimit {
                    amount: RateAmount::Percent(100),
                    period: Duration::from_secs(15),
                },
                RateLimit {
                    amount: RateAmount::Pods(4),
                    period: Duration::from_secs(15),
                },
            ],
            // Shed at most half the replicas per minute (or one, if more).
            scale_down_limits: vec![
                RateLimit {
                    amount: RateAmount::Percent(50),
                    period: Duration::from_secs(60),
                },
                RateLimit {
                    amount: RateAmount::Pods(1),
                    period: Duration::from_secs(60),
                },
            ],
            startup: STARTUP,
            max_sample_age: MAX_SAMPLE_AGE,
        }
    }

    /// Refuses a behaviour that cannot work, naming the field that is wrong.
    pub fn validate(&self) -> Result<(), InvalidBehavior> {
        if self.min_replicas > self.max_replicas {
            return Err(InvalidBehavior::MinAboveMax {
                min: self.min_replicas,
                max: self.max_replicas,
            });
        }
        if self.max_replicas == 0 {
            return Err(InvalidBehavior::MaxZero);
        }
        if !(self.tolerance.is_finite() && (0.0..1.0).contains(&self.tolerance)) {
            return Err(InvalidBehavior::Tolerance(self.tolerance));
        }
        if !(self.panic_threshold.is_finite() && self.panic_threshold > 1.0) {
            return Err(InvalidBehavior::PanicThreshold(self.panic_threshold));
        }
        for (name, window) in [
            ("stable_window", self.stable_window),
            ("panic_window", self.panic_window),
            ("max_sample_age", self.max_sample_age),
        ] {
            if window.is_zero() {
                return Err(InvalidBehavior::ZeroWindow { name });
            }
        }
        if self.panic_window > self.stable_window {
            return Err(InvalidBehavior::PanicWindowLongerThanStable {
                panic: self.panic_window,
                stable: self.stable_window,
            });
        }
        for (direction, limits) in [
            ("scale_up_limits", &self.scale_up_limits),
            ("scale_down_limits", &self.scale_down_limits),
        ] {
            for (index, limit) in limits.iter().enumerate() {
                if limit.period.is_zero() {
                    return Err(InvalidBehavior::ZeroRatePeriod { direction, index });
                }
                let amount = match limit.amount {
                    RateAmount::Pods(n) | RateAmount::Percent(n) => n,
                };
                if amount == 0 {
                    return Err(InvalidBehavior::ZeroRateAmount { direction, index });
                }
            }
        }
        Ok(())
    }
}

/// Why a [`Behavior`] was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidBehavior {
    #[error("min_replicas ({min}) is above max_replicas ({max})")]
    MinAboveMax { min: u32, max: u32 },
    #[error("max_replicas is 0: the target could never run")]
    MaxZero,
    #[error("tolerance must be a number in [0, 1), got {0}")]
    Tolerance(f64),
    #[error("panic_threshold must be a number above 1, got {0}")]
    PanicThreshold(f64),
    #[error("{name} must be longer than zero")]
    ZeroWindow { name: &'static str },
    #[error("panic_window ({panic:?}) must not be longer than stable_window ({stable:?})")]
    PanicWindowLongerThanStable { panic: Duration, stable: Duration },
    #[error("{direction}[{index}]: the period must be longer than zero")]
    ZeroRatePeriod {
        direction: &'static str,
        index: usize,
    },
    #[error("{direction}[{index}]: the amount must be above zero (remove the limit instead)")]
    ZeroRateAmount {
        direction: &'static str,
        index: usize,
    },
}
