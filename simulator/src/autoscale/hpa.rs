//! The HPA-like baseline: the Kubernetes HorizontalPodAutoscaler's algorithm with
//! its documented defaults, written from the documentation and the controller's
//! published algorithm (not from Phalanx's decision module, so that a mistake
//! there cannot flatter the comparison).
//!
//! - Formula and tolerance, for an External metric with an `AverageValue` target:
//!   `desired = ceil(value / target)` unless `|value / (target * current) - 1| <=
//!   tolerance` (default 0.1, `--horizontal-pod-autoscaler-tolerance`), see
//!   <https://kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/#algorithm-details>.
//! - Sync every 15 s (`--horizontal-pod-autoscaler-sync-period`).
//! - Default behaviour
//!   (<https://kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/#default-behavior>):
//!   scale-up with no stabilisation and the larger of +100 % and +4 pods per 15 s;
//!   scale-down stabilised over 300 s (the highest recommendation of the window)
//!   and at most -100 % per 15 s. Rate limits count the changes of the period
//!   (`periodStartReplicas = current - added + removed`); a fresh HPA seeds its
//!   scale-down window with the current replicas.
//! - Scaling is disabled while the target has 0 replicas and `minReplicas` is not 0;
//!   a target outside `[minReplicas, maxReplicas]` is moved to the bound first; a
//!   metric that cannot be read changes nothing.

/// How one HPA scaling policy counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    Pods,
    Percent,
}

/// One `HPAScalingPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub kind: PolicyKind,
    pub value: u32,
    pub period_micros: u64,
}

/// One direction's `HPAScalingRules` with `selectPolicy: Max` (the default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalingRules {
    pub stabilization_micros: u64,
    pub policies: Vec<Policy>,
}

/// An HPA object's spec, as far as the algorithm uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct HpaSpec {
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// The `AverageValue` target: the metric per replica.
    pub target_average_value: f64,
    pub tolerance: f64,
    pub sync_period_micros: u64,
    pub scale_up: ScalingRules,
    pub scale_down: ScalingRules,
}

const SECOND: u64 = 1_000_000;

impl HpaSpec {
    /// The Kubernetes defaults (see the module documentation) for these bounds and target.
    pub fn kubernetes_defaults(min_replicas: u32, max_replicas: u32, target: f64) -> Self {
        let per_15s = |kind, value| Policy {
            kind,
            value,
            period_micros: 15 * SECOND,
        };
        Self {
            min_replicas,
            max_replicas,
            target_average_value: target,
            tolerance: 0.1,
            sync_period_micros: 15 * SECOND,
            scale_up: ScalingRules {
                stabilization_micros: 0,
                policies: vec![
                    per_15s(PolicyKind::Percent, 100),
                    per_15s(PolicyKind::Pods, 4),
                ],
            },
            scale_down: ScalingRules {
                stabilization_micros: 300 * SECOND,
                policies: vec![per_15s(PolicyKind::Percent, 100)],
            },
        }
    }
}

/// One HPA: its spec and the controller's memory of it.
#[derive(Debug, Clone)]
pub struct Hpa {
    pub spec: HpaSpec,
    recommendations: Vec<(u64, u32)>,
    up_events: Vec<(u64, u32)>,
    down_events: Vec<(u64, u32)>,
    next_sync: u64,
    seeded: bool,
}

impl Hpa {
    pub fn new(spec: HpaSpec) -> Self {
        Self {
            spec,
            recommendations: Vec::new(),
            up_events: Vec::new(),
            down_events: Vec::new(),
            next_sync: 0,
            seeded: false,
        }
    }

    /// Whether a sync is due at `now`.
    pub fn due(&self, now: u64) -> bool {
        now >= self.next_sync
    }

    /// One sync with the metric's value (`None`: it could not be read). Returns the
    /// replicas to set, or `None` when the HPA leaves the target alone.
    pub fn sync(&mut self, now: u64, current: u32, metric: Option<f64>) -> Option<u32> {
        self.next_sync = now + self.spec.sync_period_micros;
        let spec = &self.spec;
        if current == 0 && spec.min_replicas != 0 {
            return None;
        }
        if current > spec.max_replicas {
            return Some(spec.max_replicas);
        }
        if current < spec.min_replicas {
            return Some(spec.min_replicas);
        }
        let value = metric?;
        let target = spec.target_average_value;
        let ratio = value / (target * f64::from(current));
        let proposal = if (1.0 - ratio).abs() > spec.tolerance {
            (value / target).ceil() as u32
        } else {
            current
        };
        if !self.seeded {
            self.seeded = true;
            if spec.scale_down.stabilization_micros > 0 {
                self.recommendations.push((now, current));
            }
        }
        let stabilized = self.stabilize(now, current, proposal);
        Some(self.limit_rate(now, current, stabilized))
    }

    /// A change that was applied.
    pub fn record(&mut self, now: u64, from: u32, to: u32) {
        if to > from {
            self.up_events.push((now, to - from));
        } else if to < from {
            self.down_events.push((now, from - to));
        }
    }

    /// `stabilizeRecommendationWithBehaviors`: up only to the lowest, down only to
    /// the highest recommendation of the windows; then remember this one.
    fn stabilize(&mut self, now: u64, current: u32, proposal: u32) -> u32 {
        let up_window = self.spec.scale_up.stabilization_micros;
        let down_window = self.spec.scale_down.stabilization_micros;
        let mut up = proposal;
        let mut down = proposal;
        for &(at, r) in &self.recommendations {
            if at + up_window > now {
                up = up.min(r);
            }
            if at + down_window > now {
                down = down.max(r);
            }
        }
        let longest = up_window.max(down_window);
        self.recommendations.retain(|(at, _)| at + longest > now);
        self.recommendations.push((now, proposal));
        let mut recommendation = current;
        if recommendation < up {
            recommendation = up;
        }
        if recommendation > down {
            recommendation = down;
        }
        recommendation
    }

    /// Replicas changed by events within `period` before `now`.
    fn changed(events: &[(u64, u32)], now: u64, period: u64) -> u32 {
        events
            .iter()
            .filter(|(at, _)| at + period > now)
            .map(|(_, n)| *n)
            .sum()
    }

    /// `convertDesiredReplicasWithBehaviorRate` with `selectPolicy: Max`.
    fn limit_rate(&self, now: u64, current: u32, desired: u32) -> u32 {
        let spec = &self.spec;
        let period_start = |period| {
            i64::from(current) - i64::from(Self::changed(&self.up_events, now, period))
                + i64::from(Self::changed(&self.down_events, now, period))
        };
        if desired > current {
            let mut limit = i64::MIN;
            for p in &spec.scale_up.policies {
                let start = period_start(p.period_micros);
                let proposed = match p.kind {
                    PolicyKind::Pods => start + i64::from(p.value),
                    PolicyKind::Percent => {
                        (start as f64 * (1.0 + f64::from(p.value) / 100.0)).ceil() as i64
                    }
                };
                limit = limit.max(proposed);
            }
            let limit = limit.max(i64::from(current));
            let allowed = limit.min(i64::from(spec.max_replicas)) as u32;
            desired.min(allowed)
        } else if desired < current {
            let mut limit = i64::MAX;
            for p in &spec.scale_down.policies {
                let start = period_start(p.period_micros);
                let proposed = match p.kind {
                    PolicyKind::Pods => start - i64::from(p.value),
                    PolicyKind::Percent => {
                        (start as f64 * (1.0 - f64::from(p.value) / 100.0)) as i64
                    }
                };
                limit = limit.min(proposed);
            }
            let limit = limit.min(i64::from(current));
            let allowed = limit.max(i64::from(spec.min_replicas)).max(0) as u32;
            desired.max(allowed)
        } else {
            desired
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_documented_defaults() {
        let mut hpa = Hpa::new(HpaSpec::kubernetes_defaults(1, 100, 10.0));
        // Within tolerance: 105 / (10 * 10) = 1.05.
        assert_eq!(hpa.sync(0, 10, Some(105.0)), Some(10));
        // Far above: +100 % or +4, the larger: 20.
        assert_eq!(hpa.sync(15 * SECOND, 10, Some(1000.0)), Some(20));
        hpa.record(15 * SECOND, 10, 20);
        // Within the same 15 s period nothing more.
        assert_eq!(hpa.sync(20 * SECOND, 20, Some(1000.0)), Some(20));
        assert_eq!(hpa.sync(30 * SECOND, 20, Some(1000.0)), Some(40));
        hpa.record(30 * SECOND, 20, 40);
        // The load vanishes: the 300 s window keeps the highest recommendation.
        assert_eq!(hpa.sync(45 * SECOND, 40, Some(10.0)), Some(40));
        assert_eq!(hpa.sync(330 * SECOND, 40, Some(10.0)), Some(1));
        // Metric missing: nothing.
        assert_eq!(hpa.sync(345 * SECOND, 1, None), None);
        // Zero replicas with minReplicas 1: disabled.
        assert_eq!(hpa.sync(360 * SECOND, 0, Some(50.0)), None);
    }
}
