//! The autoscaler's own Prometheus metrics (prefix `phalanx_autoscaler_`).
//!
//! One [`AutoscalerMetrics`] per process, shared as an `Arc`; every metric is
//! atomic inside. Per-autoscaler series carry `namespace` and `name` labels
//! (and `metric` for readings), so a dashboard can show each workload's
//! replicas next to the signal that moved them.

use std::fmt::{self, Write as _};
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// How one control period of one autoscaler ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeriodResult {
    /// Metrics read and a decision applied (which may be "no change").
    Decided,
    /// The spec is invalid; nothing was done.
    InvalidSpec,
    /// A metric answered garbage (several series, NaN, …); replicas held.
    InvalidMetric,
    /// The target or the API server failed.
    Error,
}

impl PeriodResult {
    pub const ALL: [PeriodResult; 4] = [
        PeriodResult::Decided,
        PeriodResult::InvalidSpec,
        PeriodResult::InvalidMetric,
        PeriodResult::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PeriodResult::Decided => "decided",
            PeriodResult::InvalidSpec => "invalid_spec",
            PeriodResult::InvalidMetric => "invalid_metric",
            PeriodResult::Error => "error",
        }
    }
}

/// Which way a scale change went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Up,
    Down,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }
}

macro_rules! label_value_by_name {
    ($($ty:ty),*) => {$(
        impl EncodeLabelValue for $ty {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
                encoder.write_str(self.as_str())
            }
        }
    )*};
}
label_value_by_name!(PeriodResult, Direction);

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabel {
    result: PeriodResult,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ScaleLabels {
    namespace: String,
    name: String,
    direction: Direction,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ObjectLabels {
    namespace: String,
    name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MetricLabels {
    namespace: String,
    name: String,
    metric: String,
}

type CountGauge = Gauge<u64, AtomicU64>;
type ValueGauge = Gauge<f64, AtomicU64>;

/// Every metric the autoscaler exports.
#[derive(Debug)]
pub struct AutoscalerMetrics {
    registry: Registry,
    periods: Family<ResultLabel, Counter>,
    period_duration: Histogram,
    scale_changes: Family<ScaleLabels, Counter>,
    current_replicas: Family<ObjectLabels, CountGauge>,
    desired_replicas: Family<ObjectLabels, CountGauge>,
    capacity_limited: Family<ObjectLabels, CountGauge>,
    metric_value: Family<MetricLabels, ValueGauge>,
    stale_readings: Family<MetricLabels, Counter>,
    invalid_readings: Family<MetricLabels, Counter>,
    leader: CountGauge,
    autoscalers: CountGauge,
}

impl Default for AutoscalerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl AutoscalerMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("phalanx_autoscaler");
        let periods = Family::<ResultLabel, Counter>::default();
        registry.register(
            "control_periods",
            "Control periods of one autoscaler, by result (decided, invalid_spec, invalid_metric, error)",
            periods.clone(),
        );
        for result in PeriodResult::ALL {
            let _ = periods.get_or_create(&ResultLabel { result });
        }
        // 1 ms doubling to ~16 s: a few Prometheus queries and API calls.
        let period_duration = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register_with_unit(
            "control_period_duration",
            "Time to read one autoscaler's metrics, decide and apply",
            Unit::Seconds,
            period_duration.clone(),
        );
        let scale_changes = Family::<ScaleLabels, Counter>::default();
        registry.register(
            "scale_changes",
            "Replica changes written to a target's scale subresource, by direction",
            scale_changes.clone(),
        );
        let current_replicas = Family::<ObjectLabels, CountGauge>::default();
        registry.register(
            "current_replicas",
            "The target's replicas when last looked at",
            current_replicas.clone(),
        );
        let desired_replicas = Family::<ObjectLabels, CountGauge>::default();
        registry.register(
            "desired_replicas",
            "Replicas the metrics ask for, before the capacity cap",
            desired_replicas.clone(),
        );
        let capacity_limited = Family::<ObjectLabels, CountGauge>::default();
        registry.register(
            "capacity_limited",
            "1 while the autoscaler wants more replicas than the cluster can place",
            capacity_limited.clone(),
        );
        let metric_value = Family::<MetricLabels, ValueGauge>::default();
        registry.register(
            "metric_value",
            "The last usable value read for each scaling metric",
            metric_value.clone(),
        );
        let stale_readings = Family::<MetricLabels, Counter>::default();
        registry.register(
            "stale_readings",
            "Readings that were absent, unavailable or older than the allowed sample age",
            stale_readings.clone(),
        );
        let invalid_readings = Family::<MetricLabels, Counter>::default();
        registry.register(
            "invalid_readings",
            "Readings refused as garbage (several series, NaN, infinite or negative)",
            invalid_readings.clone(),
        );
        let leader = CountGauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease and scales, else 0",
            leader.clone(),
        );
        let autoscalers = CountGauge::default();
        registry.register(
            "autoscalers",
            "InferenceAutoscaler objects watched",
            autoscalers.clone(),
        );
        Self {
            registry,
            periods,
            period_duration,
            scale_changes,
            current_replicas,
            desired_replicas,
            capacity_limited,
            metric_value,
            stale_readings,
            invalid_readings,
            leader,
            autoscalers,
        }
    }

    pub fn record_period(&self, result: PeriodResult, took: Duration) {
        self.periods.get_or_create(&ResultLabel { result }).inc();
        self.period_duration.observe(took.as_secs_f64());
    }

    pub fn record_scale(&self, namespace: &str, name: &str, from: u32, to: u32) {
        let direction = if to > from {
            Direction::Up
        } else {
            Direction::Down
        };
        self.scale_changes
            .get_or_create(&ScaleLabels {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                direction,
            })
            .inc();
    }

    pub fn set_replicas(&self, namespace: &str, name: &str, current: u32, desired: u32) {
        let labels = object(namespace, name);
        self.current_replicas
            .get_or_create(&labels)
            .set(u64::from(current));
        self.desired_replicas
            .get_or_create(&labels)
            .set(u64::from(desired));
    }

    pub fn set_capacity_limited(&self, namespace: &str, name: &str, limited: bool) {
        self.capacity_limited
            .get_or_create(&object(namespace, name))
            .set(u64::from(limited));
    }

    pub fn set_metric_value(&self, namespace: &str, name: &str, metric: &str, value: f64) {
        self.metric_value
            .get_or_create(&labels(namespace, name, metric))
            .set(value);
    }

    pub fn count_stale(&self, namespace: &str, name: &str, metric: &str) {
        self.stale_readings
            .get_or_create(&labels(namespace, name, metric))
            .inc();
    }

    pub fn count_invalid(&self, namespace: &str, name: &str, metric: &str) {
        self.invalid_readings
            .get_or_create(&labels(namespace, name, metric))
            .inc();
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(u64::from(leading));
    }

    pub fn set_autoscalers(&self, count: usize) {
        self.autoscalers.set(count as u64);
    }

    /// Drops an autoscaler's series once its object is gone.
    pub fn forget(&self, namespace: &str, name: &str) {
        let labels = object(namespace, name);
        self.current_replicas.remove(&labels);
        self.desired_replicas.remove(&labels);
        self.capacity_limited.remove(&labels);
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        phalanx_runtime::metrics::encode(&self.registry)
    }
}

fn object(namespace: &str, name: &str) -> ObjectLabels {
    ObjectLabels {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    }
}

fn labels(namespace: &str, name: &str, metric: &str) -> MetricLabels {
    MetricLabels {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        metric: metric.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_carry_their_object_and_metric() {
        let metrics = AutoscalerMetrics::new();
        metrics.record_period(PeriodResult::Decided, Duration::from_millis(5));
        metrics.record_scale("serving", "llm", 1, 3);
        metrics.set_replicas("serving", "llm", 3, 5);
        metrics.set_capacity_limited("serving", "llm", true);
        metrics.set_metric_value("serving", "llm", "queue", 12.5);
        metrics.count_stale("serving", "llm", "kv");
        let text = metrics.encode();
        for line in [
            "phalanx_autoscaler_control_periods_total{result=\"decided\"} 1",
            "phalanx_autoscaler_control_periods_total{result=\"invalid_metric\"} 0",
            "phalanx_autoscaler_scale_changes_total{namespace=\"serving\",name=\"llm\",direction=\"up\"} 1",
            "phalanx_autoscaler_desired_replicas{namespace=\"serving\",name=\"llm\"} 5",
            "phalanx_autoscaler_capacity_limited{namespace=\"serving\",name=\"llm\"} 1",
            "phalanx_autoscaler_metric_value{namespace=\"serving\",name=\"llm\",metric=\"queue\"} 12.5",
            "phalanx_autoscaler_stale_readings_total{namespace=\"serving\",name=\"llm\",metric=\"kv\"} 1",
        ] {
            assert!(text.contains(line), "missing {line}:\n{text}");
        }
        metrics.forget("serving", "llm");
        assert!(!metrics
            .encode()
            .contains("desired_replicas{namespace=\"serving\""));
    }
}
