//! What the simulation asks of an autoscaler, and the three it compares.

use std::time::Duration;

use phalanx_autoscaler::decision::{
    replicas_for_objective, Behavior, InvalidBehavior, MetricReading, MetricTarget, Observation,
    QueueObjective, ReplicaDecider, ReplicaShape, ServingSignals,
};

use super::hpa::{Hpa, HpaSpec};
use super::prometheus::{Prometheus, Scrape};

/// The scale target as the autoscaler sees it at a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetView {
    /// Microseconds since the trace began.
    pub now: u64,
    /// `spec.replicas`.
    pub spec_replicas: u32,
    pub ready_replicas: u32,
}

/// One autoscaler under test.
pub trait Autoscaler {
    /// Its name in tables and JSON (`phalanx`, `hpa`, `keda`).
    fn name(&self) -> &'static str;
    /// Replicas at time zero (ready).
    fn initial_replicas(&self) -> u32;
    /// Called every simulated second, after Prometheus scraped (if it did);
    /// returns the replicas wanted when the autoscaler acted.
    fn tick(&mut self, view: &TargetView, prometheus: &Prometheus) -> Option<u32>;
    /// A change that was applied (after the capacity cap).
    fn applied(&mut self, at: u64, from: u32, to: u32);
    /// Its scale-down stabilisation window: direction reversals closer than this count.
    fn stabilization_window(&self) -> Duration;
}

/// What Phalanx's decider reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PhalanxSignal {
    /// HPA-compatible: requests in flight against a per-replica target.
    InFlight { per_replica: f64 },
    /// The queueing-delay objective, sized from the serving series
    /// ([`replicas_for_objective`]): requests running and waiting and KV-cache
    /// use from the newest scrape, the mean slot time over `slot_time_window`.
    QueueWait {
        objective: QueueObjective,
        shape: ReplicaShape,
        slot_time_window: Duration,
    },
}

/// The Phalanx autoscaler, driven as its controller drives it: every control
/// period, the newest scraped samples (with their own timestamp).
#[derive(Debug)]
pub struct PhalanxScaler {
    decider: ReplicaDecider,
    period_micros: u64,
    next: u64,
    signal: PhalanxSignal,
}

impl PhalanxScaler {
    pub fn new(
        behavior: Behavior,
        period: Duration,
        signal: PhalanxSignal,
    ) -> Result<Self, InvalidBehavior> {
        Ok(Self {
            decider: ReplicaDecider::new(behavior)?,
            period_micros: period.as_micros().max(1) as u64,
            next: 0,
            signal,
        })
    }

    /// The reading this period: its value, and the target it is compared with.
    fn reading(&self, now: u64, prometheus: &Prometheus) -> MetricReading {
        let sample = prometheus.latest();
        let (name, value, target) = match self.signal {
            PhalanxSignal::InFlight { per_replica } => (
                "in-flight",
                sample.map(|(_, s)| s.in_flight()),
                MetricTarget::PerReplica(per_replica),
            ),
            PhalanxSignal::QueueWait {
                objective,
                shape,
                slot_time_window,
            } => {
                let window = slot_time_window.as_micros() as u64;
                let finished = prometheus.increase(now, window, |s| s.inference_count);
                let slot_seconds = prometheus.increase(now, window, |s| s.inference_seconds_sum);
                let mean_slot_seconds = match (slot_seconds, finished) {
                    (Some(seconds), Some(count)) if count > 0.0 => Some(seconds / count),
                    _ => None,
                };
                let value = sample.map(|(_, s)| {
                    let signals = ServingSignals {
                        running: s.running,
                        waiting: s.waiting,
                        mean_slot_seconds,
                        kv_cache_usage: Some(s.kv_cache_usage),
                        ready_replicas: s.ready as u32,
                    };
                    // A refused sizing is an invalid reading: it never scales.
                    replicas_for_objective(&signals, &shape, &objective).unwrap_or(f64::NAN)
                });
                ("queue-wait", value, MetricTarget::PerReplica(1.0))
            }
        };
        MetricReading {
            name: name.into(),
            value,
            sampled_at: sample.map(|(t, _)| Duration::from_micros(t)),
            target,
        }
    }
}

impl Autoscaler for PhalanxScaler {
    fn name(&self) -> &'static str {
        "phalanx"
    }

    fn initial_replicas(&self) -> u32 {
        self.decider.behavior().min_replicas
    }

    fn tick(&mut self, view: &TargetView, prometheus: &Prometheus) -> Option<u32> {
        if view.now < self.next {
            return None;
        }
        self.next = view.now + self.period_micros;
        let observation = Observation {
            now: Duration::from_micros(view.now),
            current_replicas: view.spec_replicas,
            ready_replicas: view.ready_replicas,
            metrics: vec![self.reading(view.now, prometheus)],
        };
        Some(self.decider.decide(&observation).desired_replicas)
    }

    fn applied(&mut self, at: u64, from: u32, to: u32) {
        self.decider
            .record_scale(Duration::from_micros(at), from, to);
    }

    fn stabilization_window(&self) -> Duration {
        self.decider.behavior().scale_down_stabilization
    }
}

/// The HPA-like baseline: [`Hpa`] with its defaults, reading the query
/// `avg_over_time(in_flight[window])` through a metrics adapter at each sync.
#[derive(Debug)]
pub struct HpaScaler {
    hpa: Hpa,
    query_window_micros: u64,
}

impl HpaScaler {
    pub fn new(spec: HpaSpec, query_window: Duration) -> Self {
        Self {
            hpa: Hpa::new(spec),
            query_window_micros: query_window.as_micros() as u64,
        }
    }
}

impl Autoscaler for HpaScaler {
    fn name(&self) -> &'static str {
        "hpa"
    }

    fn initial_replicas(&self) -> u32 {
        self.hpa.spec.min_replicas
    }

    fn tick(&mut self, view: &TargetView, prometheus: &Prometheus) -> Option<u32> {
        if !self.hpa.due(view.now) {
            return None;
        }
        let value = prometheus.avg_over_time(view.now, self.query_window_micros, Scrape::in_flight);
        self.hpa.sync(view.now, view.spec_replicas, value)
    }

    fn applied(&mut self, at: u64, from: u32, to: u32) {
        self.hpa.record(at, from, to);
    }

    fn stabilization_window(&self) -> Duration {
        Duration::from_micros(self.hpa.spec.scale_down.stabilization_micros)
    }
}

/// The KEDA-like baseline, from the `ScaledObject` reference
/// (<https://keda.sh/docs/latest/reference/scaledobject-spec/>) and KEDA's
/// concepts page (<https://keda.sh/docs/latest/concepts/scaling-deployments/>):
/// - the operator polls the trigger every `pollingInterval` (default 30 s); when
///   the trigger is active (value above `activationThreshold`, default 0) it
///   records the time, and scales a target at zero to `max(minReplicaCount, 1)`;
///   when inactive for `cooldownPeriod` (default 300 s) and `minReplicaCount` is
///   0 (the default), it scales to zero;
/// - between 1 and `maxReplicaCount` an HPA that KEDA creates does the scaling,
///   with the Kubernetes defaults and `minReplicas = max(minReplicaCount, 1)`; it
///   reads the trigger as an External metric with an `AverageValue` target, and
///   with `useCachedMetrics` false (the default) each HPA sync queries
///   Prometheus afresh.
#[derive(Debug)]
pub struct KedaScaler {
    hpa: Hpa,
    query_window_micros: u64,
    polling_micros: u64,
    cooldown_micros: u64,
    min_replica_count: u32,
    next_poll: u64,
    last_active: Option<u64>,
    /// The change being applied is the operator's (0 <-> 1), not the HPA's.
    operator_scaled: bool,
}

impl KedaScaler {
    /// KEDA's defaults (`minReplicaCount` 0, polling 30 s, cooldown 300 s) up to
    /// `max_replicas`, with the trigger's `threshold` per replica.
    pub fn with_defaults(max_replicas: u32, threshold: f64, query_window: Duration) -> Self {
        let min_replica_count = 0;
        Self {
            hpa: Hpa::new(HpaSpec::kubernetes_defaults(
                min_replica_count.max(1),
                max_replicas,
                threshold,
            )),
            query_window_micros: query_window.as_micros() as u64,
            polling_micros: 30_000_000,
            cooldown_micros: 300_000_000,
            min_replica_count,
            next_poll: 0,
            last_active: None,
            operator_scaled: false,
        }
    }
}

impl Autoscaler for KedaScaler {
    fn name(&self) -> &'static str {
        "keda"
    }

    fn initial_replicas(&self) -> u32 {
        self.min_replica_count
    }

    fn tick(&mut self, view: &TargetView, prometheus: &Prometheus) -> Option<u32> {
        self.operator_scaled = false;
        let window = self.query_window_micros;
        let query = || prometheus.avg_over_time(view.now, window, Scrape::in_flight);
        if view.now >= self.next_poll {
            self.next_poll = view.now + self.polling_micros;
            let active = query().is_some_and(|v| v > 0.0);
            if active {
                self.last_active = Some(view.now);
                if view.spec_replicas == 0 {
                    self.operator_scaled = true;
                    return Some(self.min_replica_count.max(1));
                }
            } else if view.spec_replicas > 0
                && self.min_replica_count == 0
                && self
                    .last_active
                    .is_none_or(|at| view.now >= at + self.cooldown_micros)
            {
                self.operator_scaled = true;
                return Some(0);
            }
        }
        if !self.hpa.due(view.now) {
            return None;
        }
        let value = query();
        self.hpa.sync(view.now, view.spec_replicas, value)
    }

    fn applied(&mut self, at: u64, from: u32, to: u32) {
        // The HPA's rate limits count only its own scale events.
        if !std::mem::take(&mut self.operator_scaled) {
            self.hpa.record(at, from, to);
        }
    }

    fn stabilization_window(&self) -> Duration {
        Duration::from_micros(self.hpa.spec.scale_down.stabilization_micros)
    }
}
