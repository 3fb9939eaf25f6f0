//! A `queueWait` metric's serving series, each read on its own, made into the
//! one reading the decider works with: the replicas the queueing objective
//! needs ([`replicas_for_objective`]), compared with a `perReplica` target of 1.
//!
//! Pure: the reader reads the series, [`size`] judges them together.
//!
//! * Garbage in any series (several series, a negative number, a query
//!   Prometheus rejects) makes the metric invalid, naming the series.
//! * Requests running or waiting absent makes the metric absent (stale:
//!   never a scale-down); Prometheus unreachable for any series makes it
//!   unavailable.
//! * The mean slot time absent (or NaN: no request finished in the window,
//!   a rate of 0/0) and the KV-cache use absent are `None`: the sizing
//!   knows what to do without them.
//! * The reading is as old as its oldest series.

use std::time::Duration;

use super::prometheus::Reading;
use crate::decision::{replicas_for_objective, ServingSignals};
use crate::spec::ServingSource;

/// Each serving series as read. `kv_cache_usage` and `ready_replicas` are
/// `None` where the source has no such series.
#[derive(Debug, Clone, PartialEq)]
pub struct ServingReads {
    pub running: Reading,
    pub waiting: Reading,
    /// NaN already read as [`Reading::Absent`].
    pub mean_slot_seconds: Reading,
    pub kv_cache_usage: Option<Reading>,
    pub ready_replicas: Option<Reading>,
}

impl ServingReads {
    /// Every series that was read, under its `serving` field name.
    fn named(&self) -> Vec<(&'static str, &Reading)> {
        let mut out = vec![
            ("running", &self.running),
            ("waiting", &self.waiting),
            ("meanSlotSeconds", &self.mean_slot_seconds),
        ];
        out.extend(self.kv_cache_usage.iter().map(|r| ("kvCacheUsage", r)));
        out.extend(self.ready_replicas.iter().map(|r| ("readyReplicas", r)));
        out
    }
}

/// The replicas needed, or why there is no number; and what they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Sized {
    pub reading: Reading,
    /// "running 12, waiting 3, slot 7.6 s, KV 0.41, ready 2 -> 3.2 replicas",
    /// when the series gave a number.
    pub detail: Option<String>,
}

/// The replicas `reads` need for `source`'s objective. `target_ready` is the
/// target's ready replicas, used when the source has no replica series or it
/// is absent.
pub fn size(reads: &ServingReads, source: &ServingSource, target_ready: u32) -> Sized {
    let named = reads.named();
    let invalid: Vec<String> = named
        .iter()
        .filter_map(|(name, reading)| match reading {
            Reading::Invalid(why) => Some(format!("{name}: {why}")),
            _ => None,
        })
        .collect();
    if !invalid.is_empty() {
        return no_need(Reading::Invalid(invalid.join("; ")));
    }
    if let Some((name, Reading::Unavailable(why))) = named
        .iter()
        .find(|(_, r)| matches!(r, Reading::Unavailable(_)))
    {
        return no_need(Reading::Unavailable(format!("{name}: {why}")));
    }
    let (Some(running), Some(waiting)) = (value(&reads.running), value(&reads.waiting)) else {
        return no_need(Reading::Absent);
    };
    let sampled_at = named
        .iter()
        .filter_map(|(_, reading)| match reading {
            Reading::Value { sampled_at, .. } => Some(*sampled_at),
            _ => None,
        })
        .min()
        .unwrap_or(Duration::ZERO);
    let ready_replicas = reads
        .ready_replicas
        .as_ref()
        .and_then(value)
        .map_or(target_ready, whole);
    let signals = ServingSignals {
        running,
        waiting,
        mean_slot_seconds: value(&reads.mean_slot_seconds),
        kv_cache_usage: reads.kv_cache_usage.as_ref().and_then(value),
        ready_replicas,
    };
    match replicas_for_objective(&signals, &source.shape, &source.objective) {
        Ok(replicas) => Sized {
            reading: Reading::Value {
                value: replicas,
                sampled_at,
            },
            detail: Some(describe(&signals, replicas)),
        },
        Err(error) => no_need(Reading::Invalid(format!(
            "the queue-wait sizing refused the series: {error}"
        ))),
    }
}

fn no_need(reading: Reading) -> Sized {
    Sized {
        reading,
        detail: None,
    }
}

fn value(reading: &Reading) -> Option<f64> {
    match reading {
        Reading::Value { value, .. } => Some(*value),
        _ => None,
    }
}

/// A count of replicas from a (non-negative, finite) sample.
fn whole(value: f64) -> u32 {
    // Saturating float-to-int cast: the reading was judged finite and >= 0.
    value.round() as u32
}

/// The signals and the need, in a short line for the metric's status.
fn describe(signals: &ServingSignals, replicas: f64) -> String {
    let slot = signals
        .mean_slot_seconds
        .map_or("slot unknown (none finished)".to_owned(), |s| {
            format!("slot {} s", round(s))
        });
    let kv = signals
        .kv_cache_usage
        .map(|u| format!(", KV {}", round(u)))
        .unwrap_or_default();
    format!(
        "running {}, waiting {}, {slot}{kv}, ready {} -> {} replicas",
        round(signals.running),
        round(signals.waiting),
        signals.ready_replicas,
        round(replicas)
    )
}

/// Two decimals at most, for reading.
fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::promql::{Matchers, ServingPreset};
    use crate::spec::ServingSeries;

    fn source() -> ServingSource {
        ServingSource::for_tests(ServingSeries::Preset {
            preset: ServingPreset::Vllm,
            matchers: Matchers::default(),
        })
    }

    fn at(value: f64, seconds: u64) -> Reading {
        Reading::Value {
            value,
            sampled_at: Duration::from_secs(seconds),
        }
    }

    fn reads() -> ServingReads {
        ServingReads {
            running: at(12.0, 100),
            waiting: at(3.0, 101),
            mean_slot_seconds: at(7.6, 98),
            kv_cache_usage: Some(at(0.41, 102)),
            ready_replicas: Some(at(2.0, 100)),
        }
    }

    #[test]
    fn the_series_become_the_sizing_of_the_objective_as_old_as_the_oldest() {
        let sized = size(&reads(), &source(), 9);
        let want = replicas_for_objective(
            &ServingSignals {
                running: 12.0,
                waiting: 3.0,
                mean_slot_seconds: Some(7.6),
                kv_cache_usage: Some(0.41),
                ready_replicas: 2,
            },
            &source().shape,
            &source().objective,
        )
        .expect("sized");
        assert_eq!(
            sized.reading,
            Reading::Value {
                value: want,
                sampled_at: Duration::from_secs(98),
            }
        );
        let detail = sized.detail.expect("detail");
        assert!(
            detail.starts_with("running 12, waiting 3, slot 7.6 s, KV 0.41, ready 2 -> "),
            "{detail}"
        );
    }

    #[test]
    fn running_or_waiting_absent_is_absent_and_unreachable_is_unavailable() {
        for absent in [
            ServingReads {
                running: Reading::Absent,
                ..reads()
            },
            ServingReads {
                waiting: Reading::Absent,
                ..reads()
            },
        ] {
            assert_eq!(size(&absent, &source(), 2).reading, Reading::Absent);
        }
        let down = ServingReads {
            kv_cache_usage: Some(Reading::Unavailable("refused".into())),
            ..reads()
        };
        assert_eq!(
            size(&down, &source(), 2).reading,
            Reading::Unavailable("kvCacheUsage: refused".into())
        );
    }

    #[test]
    fn garbage_in_any_series_is_invalid_naming_each() {
        let garbage = ServingReads {
            waiting: Reading::Invalid("the query returned 2 series".into()),
            mean_slot_seconds: Reading::Invalid("the query returned -1".into()),
            ..reads()
        };
        assert_eq!(
            size(&garbage, &source(), 2).reading,
            Reading::Invalid(
                "waiting: the query returned 2 series; \
                 meanSlotSeconds: the query returned -1"
                    .into()
            )
        );
    }

    #[test]
    fn no_slot_time_kv_or_replica_series_falls_back() {
        let sparse = ServingReads {
            mean_slot_seconds: Reading::Absent,
            kv_cache_usage: None,
            ready_replicas: Some(Reading::Absent),
            ..reads()
        };
        let sized = size(&sparse, &source(), 5);
        // No time scale: every request gets a slot, ceil(15 / 8).
        assert!(
            matches!(sized.reading, Reading::Value { value, .. } if value == 2.0),
            "{sized:?}"
        );
        let detail = sized.detail.expect("detail");
        assert!(detail.contains("slot unknown"), "{detail}");
        assert!(detail.contains("ready 5 "), "{detail}");
        assert!(!detail.contains("KV"), "{detail}");
    }

    #[test]
    fn a_sizing_error_is_invalid_naming_it() {
        let mut bad = source();
        bad.shape.slots = 0;
        let sized = size(&reads(), &bad, 2);
        assert!(
            matches!(&sized.reading, Reading::Invalid(why) if why.contains("slot")),
            "{sized:?}"
        );
    }
}
