//! The replica decider: one call per control period turns an observation into the
//! replicas wanted now, remembering what it needs from earlier periods (samples
//! for the averaging windows, recommendations for stabilisation, applied scale
//! changes for rate limits, and whether it is panicking).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt;
use std::time::Duration;

use super::behavior::{Behavior, InvalidBehavior, RateAmount, RateLimit};
use super::metrics::{assess, ceil_replicas, replicas_for, Assessed, MetricProblem, MetricReading};

/// What the caller sees at the start of a control period.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub now: Duration,
    /// The target's `spec.replicas` now.
    pub current_replicas: u32,
    /// Of those, ready; the rest are starting.
    pub ready_replicas: u32,
    pub metrics: Vec<MetricReading>,
}

/// Why the decision is what it is (for events and the `ScalingActive` condition).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecisionReason {
    /// The load needs more replicas.
    ScaleUp,
    /// A burst: the short window needs at least `panic_threshold` times the ready
    /// replicas.
    PanicScaleUp,
    /// The load needs fewer replicas, and has for the whole scale-down window.
    ScaleDown,
    /// Every metric is within the tolerance of its target.
    WithinTolerance,
    /// The load wants a change that the stabilisation windows hold back.
    Stabilized,
    /// The change was cut short by a rate limit.
    RateLimited,
    /// Panicking: the load fell, but no scale-down happens until the burst is over.
    PanicHold,
    /// Held at (or raised to) `min_replicas`.
    AtMin,
    /// Held at (or lowered to) `max_replicas`.
    AtMax,
    /// A metric is stale or absent (or invalid), so no scale-down.
    MetricsStale,
    /// No metric gave a usable reading.
    NoValidMetric,
    /// Replicas of the last scale-up are still starting and the need has not grown
    /// to `panic_threshold` times the replicas on the way: they will carry it.
    ReplicasStarting,
}

impl DecisionReason {
    /// The reason as an event reason (`UpperCamelCase`).
    pub fn as_str(&self) -> &'static str {
        match self {
            DecisionReason::ScaleUp => "ScaleUp",
            DecisionReason::PanicScaleUp => "PanicScaleUp",
            DecisionReason::ScaleDown => "ScaleDown",
            DecisionReason::WithinTolerance => "WithinTolerance",
            DecisionReason::Stabilized => "Stabilized",
            DecisionReason::RateLimited => "RateLimited",
            DecisionReason::PanicHold => "PanicHold",
            DecisionReason::AtMin => "AtMin",
            DecisionReason::AtMax => "AtMax",
            DecisionReason::MetricsStale => "MetricsStale",
            DecisionReason::NoValidMetric => "NoValidMetric",
            DecisionReason::ReplicasStarting => "ReplicasStarting",
        }
    }
}

impl fmt::Display for DecisionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of one control period.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// What the autoscaler wants now (before the capacity check).
    pub desired_replicas: u32,
    /// The metric whose need was the largest, if any metric was usable.
    pub deciding_metric: Option<String>,
    pub reason: DecisionReason,
    pub panicking: bool,
    /// Metrics absent, without a timestamp, or older than `max_sample_age`.
    pub stale_metrics: Vec<String>,
    /// Metrics that could not be used, and why.
    pub invalid_metrics: Vec<MetricProblem>,
    /// The metrics' own wish this period, before stabilisation, rate limits and
    /// bounds (`None` when no metric was usable).
    pub recommended_replicas: Option<u32>,
}

/// A scale change that was applied.
#[derive(Debug, Clone, Copy)]
struct ScaleEvent {
    at: Duration,
    from: u32,
    to: u32,
}

/// Decides replica counts, one control period at a time. Pure: it is handed the
/// time and the readings, and never reads a clock.
#[derive(Debug, Clone)]
pub struct ReplicaDecider {
    behavior: Behavior,
    /// Per metric: (sample timestamp, replicas needed), oldest first.
    samples: BTreeMap<String, VecDeque<(Duration, f64)>>,
    /// (decision time, recommendation, the short window's need then), oldest first.
    recommendations: VecDeque<(Duration, u32, u32)>,
    scale_events: VecDeque<ScaleEvent>,
    panic: Option<Panic>,
    started: bool,
    last_scale_up: Option<Duration>,
    /// The first scale-down since the last scale-up, and the latest.
    first_scale_down: Option<Duration>,
    last_scale_down: Option<Duration>,
    /// The scale-down window in force: the behaviour's, stretched each time a
    /// scale-up undoes a scale-down within it (the load came back: it comes in
    /// bursts with longer gaps), halved back after a quiet hour.
    down_window: Duration,
    last_flap: Option<Duration>,
}

/// The longest a flapping load stretches the scale-down window.
const MAX_ADAPTED_DOWN_WINDOW: Duration = Duration::from_secs(600);
/// After this long without a flap the stretched window halves (once per spell).
const FLAP_MEMORY: Duration = Duration::from_secs(3600);

/// Panic mode: since when, the last time the trigger held, and the highest
/// panic recommendation so far (never lowered while panicking).
#[derive(Debug, Clone, Copy)]
struct Panic {
    last_trigger: Duration,
    highest: u32,
}

/// `at` lies within `window` before `now` (strictly: a window of zero holds nothing).
fn within(at: Duration, now: Duration, window: Duration) -> bool {
    now.saturating_sub(at) < window
}

impl ReplicaDecider {
    pub fn new(behavior: Behavior) -> Result<Self, InvalidBehavior> {
        behavior.validate()?;
        let down_window = behavior.scale_down_stabilization;
        Ok(Self {
            behavior,
            samples: BTreeMap::new(),
            recommendations: VecDeque::new(),
            scale_events: VecDeque::new(),
            panic: None,
            started: false,
            last_scale_up: None,
            first_scale_down: None,
            last_scale_down: None,
            down_window,
            last_flap: None,
        })
    }

    pub fn behavior(&self) -> &Behavior {
        &self.behavior
    }

    /// One control period: the replicas wanted now.
    pub fn decide(&mut self, observation: &Observation) -> Decision {
        let now = observation.now;
        let current = observation.current_replicas;
        let ready = observation.ready_replicas.min(current);
        let b = self.behavior.clone();
        // A stretched scale-down window relaxes once the flapping has stopped.
        if self.down_window > b.scale_down_stabilization
            && self
                .last_flap
                .is_some_and(|flap| !within(flap, now, FLAP_MEMORY))
        {
            self.down_window = (self.down_window / 2).max(b.scale_down_stabilization);
            self.last_flap = Some(now);
        }
        // A decider that has just started (a restarted controller) has no memory of
        // the load: it counts the current replicas as recommended now, so nothing
        // scales down before a whole scale-down window has been seen.
        if !self.started {
            self.started = true;
            self.recommendations.push_back((now, current, current));
        }

        // 1. Check every reading; remember fresh samples.
        let mut stale_metrics = Vec::new();
        let mut invalid_metrics = Vec::new();
        // A metric that cannot be read might be the one that needs the replicas:
        // the others alone never justify a scale-down.
        let mut hold_down = false;
        let mut fresh: Vec<&str> = Vec::new();
        let mut seen = HashSet::new();
        for reading in &observation.metrics {
            if !seen.insert(reading.name.as_str()) {
                invalid_metrics.push(MetricProblem {
                    metric: reading.name.clone(),
                    problem: "the name appears more than once; only the first is used".into(),
                });
                hold_down = true;
                continue;
            }
            match assess(reading, now, b.max_sample_age, ready) {
                Assessed::Need {
                    sampled_at,
                    replicas,
                } => {
                    let history = self.samples.entry(reading.name.clone()).or_default();
                    // The same sample read twice is one sample.
                    if history.back().is_none_or(|(at, _)| *at < sampled_at) {
                        history.push_back((sampled_at, replicas));
                    }
                    fresh.push(reading.name.as_str());
                }
                Assessed::Stale => {
                    stale_metrics.push(reading.name.clone());
                    hold_down = true;
                }
                Assessed::Invalid(problem) => {
                    invalid_metrics.push(MetricProblem {
                        metric: reading.name.clone(),
                        problem,
                    });
                    hold_down = true;
                }
                Assessed::NoBasis => hold_down = true,
            }
        }
        self.prune(now, &seen);

        // 2. Each fresh metric's need, averaged over the stable and the short window.
        let mut needs: Vec<(&str, f64, f64)> = Vec::new();
        for name in &fresh {
            let Some(history) = self.samples.get(*name) else {
                continue;
            };
            // A fresh sample older than the windows (a long max_sample_age) still
            // counts: it is the newest there is.
            let latest = history.back().map(|(_, need)| *need);
            let (Some(stable), Some(short)) = (
                mean_within(history, now, b.stable_window).or(latest),
                mean_within(history, now, b.panic_window).or(latest),
            ) else {
                continue;
            };
            needs.push((name, stable, short));
        }
        if needs.is_empty() {
            return self.hold(
                observation,
                stale_metrics,
                invalid_metrics,
                DecisionReason::NoValidMetric,
            );
        }

        // 3. Panic mode (Knative's KPA): entered when the short window needs
        // panic_threshold times the ready replicas; left a stable window after the
        // last trigger. In it the short window counts too, and nothing scales down.
        // The short window's need: panic's trigger, and what the scale-down
        // window remembers beside the recommendation.
        let short_need = needs.iter().map(|n| n.2).fold(0.0, f64::max);
        if short_need >= b.panic_threshold * f64::from(ready.max(1)) {
            let highest = self.panic.map_or(0, |p| p.highest);
            self.panic = Some(Panic {
                last_trigger: now,
                highest,
            });
        } else if self
            .panic
            .is_some_and(|p| !within(p.last_trigger, now, b.stable_window))
        {
            self.panic = None;
        }
        let panicking = self.panic.is_some();

        // The HPA formula per metric; the largest decides.
        let mut deciding: Option<(u32, &str)> = None;
        for &(name, stable, short) in &needs {
            let mut wanted = replicas_for(stable, current, b.tolerance);
            if panicking {
                wanted = wanted.max(replicas_for(short, current, b.tolerance));
            }
            if deciding.is_none_or(|(best, _)| wanted > best) {
                deciding = Some((wanted, name));
            }
        }
        let Some((mut recommendation, deciding_name)) = deciding else {
            return self.hold(
                observation,
                stale_metrics,
                invalid_metrics,
                DecisionReason::NoValidMetric,
            );
        };
        let deciding_metric = Some(deciding_name.to_string());
        // Beyond the bounds no recommendation means more: a burst that wants 40 of
        // at most 16 must not keep 16 held longer than one that wants 16.
        let unclamped = recommendation;
        recommendation = recommendation.clamp(b.min_replicas, b.max_replicas);
        let wanted = recommendation;

        // Capacity on the way: while the replicas of the last scale-up are still
        // starting, the load they were started for, and the backlog it builds until
        // they serve, is not new load; only a need of panic_threshold times the
        // replicas on the way scales up again before they are ready.
        let largest_need = needs.iter().map(|n| n.1.max(n.2)).fold(0.0, f64::max);
        let starting = current > ready
            && self
                .last_scale_up
                .is_some_and(|at| within(at, now, b.startup));
        let carried = starting && largest_need < b.panic_threshold * f64::from(current);
        if let Some(panic) = &mut self.panic {
            // A need the replicas on the way will carry is not a panic level to
            // hold: remembered, it would scale up again the moment they are ready.
            if !carried {
                panic.highest = panic.highest.max(recommendation);
            }
            recommendation = panic.highest.max(current);
        }
        let on_the_way = carried && recommendation.max(wanted) > current;
        if on_the_way {
            recommendation = current;
        }

        // 4. Stabilisation (HPA): up to the lowest recommendation of the scale-up
        // window, down to the highest of the scale-down window.
        // Panic's own hold (never down) ends with the panic: the window remembers
        // what the metrics wanted, unless panic is scaling up now.
        let remembered = if recommendation > current {
            recommendation
        } else {
            wanted.min(recommendation)
        };
        // What the short window needed is remembered beside it: a load that comes
        // in bursts shorter than the stable window needs the bursts' replicas in
        // the gaps too, or every burst meets too few and waits for a cold start.
        let short_replicas = ceil_replicas(short_need).clamp(b.min_replicas, b.max_replicas);
        let peak = remembered.max(short_replicas);
        self.recommendations.push_back((now, remembered, peak));
        let mut up = remembered;
        let mut down = peak;
        for &(at, r, peak) in &self.recommendations {
            if within(at, now, b.scale_up_stabilization) {
                up = up.min(r);
            }
            if within(at, now, self.down_window) {
                down = down.max(peak);
            }
        }
        let mut desired = current;
        if desired < up {
            desired = up;
        }
        if desired > down {
            desired = down;
        }
        let stabilized = desired;

        // 5. Rate limits (HPA, selectPolicy Max: the most permissive).
        if desired > current {
            desired = desired.min(self.scale_up_limit(current, now));
        } else if desired < current {
            desired = desired.max(self.scale_down_limit(current, now));
        }
        let rate_limited = desired != stabilized;

        // 6. Holds, then bounds (bounds win: max_replicas is a promise).
        let mut held_by = None;
        if desired < current && current <= b.max_replicas && (panicking || hold_down) {
            desired = current;
        }
        if desired == current && wanted < current {
            if panicking {
                held_by = Some(DecisionReason::PanicHold);
            } else if hold_down {
                held_by = Some(DecisionReason::MetricsStale);
            }
        }
        let unbounded = desired;
        desired = desired.clamp(b.min_replicas, b.max_replicas);

        let at_max =
            desired == b.max_replicas && (unclamped > b.max_replicas || unbounded > b.max_replicas);
        let at_min =
            desired == b.min_replicas && (unclamped < b.min_replicas || unbounded < b.min_replicas);
        let reason = if at_max {
            DecisionReason::AtMax
        } else if at_min {
            DecisionReason::AtMin
        } else if let Some(held_by) = held_by {
            held_by
        } else if on_the_way && desired == current {
            DecisionReason::ReplicasStarting
        } else if rate_limited {
            DecisionReason::RateLimited
        } else if desired > current {
            if panicking {
                DecisionReason::PanicScaleUp
            } else {
                DecisionReason::ScaleUp
            }
        } else if desired < current {
            DecisionReason::ScaleDown
        } else if recommendation != current {
            DecisionReason::Stabilized
        } else {
            DecisionReason::WithinTolerance
        };

        Decision {
            desired_replicas: desired,
            deciding_metric,
            reason,
            panicking,
            stale_metrics,
            invalid_metrics,
            recommended_replicas: Some(recommendation),
        }
    }

    /// What was actually applied (after the capacity cap); feeds rate limits and
    /// "replicas on the way".
    pub fn record_scale(&mut self, at: Duration, from: u32, to: u32) {
        if from != to {
            self.scale_events.push_back(ScaleEvent { at, from, to });
        }
        if to > from {
            self.last_scale_up = Some(at);
            // One stretch per scale-down undone: the steps of one scale-up
            // after it are the same flap.
            let undone = self.last_scale_down.is_some_and(|down| {
                within(down, at, self.down_window) && self.last_flap.is_none_or(|flap| down > flap)
            });
            if let (true, Some(down)) = (undone, self.first_scale_down) {
                // The load came back about a window plus this long after it was
                // last high (the first step down came a window after that):
                // cover the gap with half again to spare, and at least double.
                let gap = self.down_window + at.saturating_sub(down);
                self.down_window = (self.down_window * 2)
                    .max(gap.mul_f64(1.5))
                    .min(MAX_ADAPTED_DOWN_WINDOW.max(self.behavior.scale_down_stabilization));
                self.last_flap = Some(at);
            }
            self.first_scale_down = None;
        } else if to < from {
            self.first_scale_down.get_or_insert(at);
            self.last_scale_down = Some(at);
        }
    }

    /// No metric could be used: keep the replicas (within bounds) and say why.
    fn hold(
        &mut self,
        observation: &Observation,
        stale_metrics: Vec<String>,
        invalid_metrics: Vec<MetricProblem>,
        fallback: DecisionReason,
    ) -> Decision {
        let b = &self.behavior;
        let current = observation.current_replicas;
        // Holding counts as recommending the current count: a scale-down right
        // after the metrics return still waits out the stabilisation window.
        self.recommendations
            .push_back((observation.now, current, current));
        let desired = current.clamp(b.min_replicas, b.max_replicas);
        let reason = if desired > current {
            DecisionReason::AtMin
        } else if desired < current {
            DecisionReason::AtMax
        } else if !stale_metrics.is_empty() {
            DecisionReason::MetricsStale
        } else {
            fallback
        };
        Decision {
            desired_replicas: desired,
            deciding_metric: None,
            reason,
            panicking: self.panic.is_some(),
            stale_metrics,
            invalid_metrics,
            recommended_replicas: None,
        }
    }

    /// Forgets what no window can see any more, and metrics no longer configured.
    fn prune(&mut self, now: Duration, configured: &HashSet<&str>) {
        let b = &self.behavior;
        let sample_window = b.stable_window.max(b.panic_window);
        self.samples
            .retain(|name, _| configured.contains(name.as_str()));
        for history in self.samples.values_mut() {
            while history
                .front()
                .is_some_and(|(at, _)| !within(*at, now, sample_window))
            {
                history.pop_front();
            }
        }
        let rec_window = b.scale_up_stabilization.max(self.down_window);
        while self
            .recommendations
            .front()
            .is_some_and(|(at, _, _)| !within(*at, now, rec_window))
        {
            self.recommendations.pop_front();
        }
        let rate_window = b
            .scale_up_limits
            .iter()
            .chain(&b.scale_down_limits)
            .map(|l| l.period)
            .max()
            .unwrap_or(Duration::ZERO);
        while self
            .scale_events
            .front()
            .is_some_and(|e| !within(e.at, now, rate_window))
        {
            self.scale_events.pop_front();
        }
    }

    /// The replicas there were when the period before `now` began: the current
    /// count less what was added in it, plus what was removed (as the HPA counts).
    fn period_start(&self, current: u32, now: Duration, period: Duration) -> u32 {
        current
            .saturating_add(self.change_within(now, period, false))
            .saturating_sub(self.change_within(now, period, true))
    }

    /// Replicas added (or removed) by applied changes within `period` before `now`.
    fn change_within(&self, now: Duration, period: Duration, up: bool) -> u32 {
        self.scale_events
            .iter()
            .filter(|e| within(e.at, now, period))
            .map(|e| {
                if up {
                    e.to.saturating_sub(e.from)
                } else {
                    e.from.saturating_sub(e.to)
                }
            })
            .fold(0u32, u32::saturating_add)
    }

    /// The highest count any scale-up limit allows now (HPA
    /// `calculateScaleUpLimitWithScalingRules`); never below `current`.
    fn scale_up_limit(&self, current: u32, now: Duration) -> u32 {
        let limits: &[RateLimit] = &self.behavior.scale_up_limits;
        if limits.is_empty() {
            return u32::MAX;
        }
        let mut best = current;
        for limit in limits {
            let start = self.period_start(current, now, limit.period);
            let allowed = match limit.amount {
                RateAmount::Pods(n) => start.saturating_add(n),
                RateAmount::Percent(p) => {
                    // From zero no percentage grows; any scale-up policy allows the
                    // first replica (the HPA never scales from zero at all).
                    let grown = (f64::from(start) * (1.0 + f64::from(p) / 100.0)).ceil();
                    (grown.min(f64::from(u32::MAX)) as u32).max(1)
                }
            };
            best = best.max(allowed);
        }
        best
    }

    /// The lowest count any scale-down limit allows now (HPA
    /// `calculateScaleDownLimitWithBehaviors`); never above `current`.
    fn scale_down_limit(&self, current: u32, now: Duration) -> u32 {
        let limits: &[RateLimit] = &self.behavior.scale_down_limits;
        if limits.is_empty() {
            return 0;
        }
        let mut best = current;
        for limit in limits {
            let start = self.period_start(current, now, limit.period);
            let allowed = match limit.amount {
                RateAmount::Pods(n) => start.saturating_sub(n),
                RateAmount::Percent(p) => {
                    let kept = (f64::from(start) * (1.0 - f64::from(p) / 100.0)).ceil();
                    if kept <= 0.0 {
                        0
                    } else {
                        kept.min(f64::from(u32::MAX)) as u32
                    }
                }
            };
            best = best.min(allowed);
        }
        best
    }
}

/// The mean need of the samples within `window` before `now`; None if there are none.
fn mean_within(
    history: &VecDeque<(Duration, f64)>,
    now: Duration,
    window: Duration,
) -> Option<f64> {
    let (sum, count) = history
        .iter()
        .filter(|(at, _)| within(*at, now, window))
        .fold((0.0, 0u32), |(s, c), (_, need)| (s + need, c + 1));
    (count > 0).then(|| sum / f64::from(count))
}
