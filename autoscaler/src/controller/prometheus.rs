//! Reading each metric from Prometheus: instant queries, one number each.
//!
//! What comes back is judged by [`interpret`] (pure): exactly one series with
//! a finite, non-negative value is a reading; no series is *absent* (stale,
//! never zero); several series, NaN, infinities, negative numbers and range
//! vectors are *invalid* and never drive scaling. A query Prometheus rejects
//! is invalid too; Prometheus being unreachable is *unavailable*, which the
//! decision treats like absent data (hold, never scale down).

use std::time::Duration;

use prometheus_http_query::response::Data;
use prometheus_http_query::{Client, Error as PromError};

use super::serving::{size, ServingReads};
use crate::decision::{ActivationReading, MetricReading};
use crate::promql::{preset_queries, SeriesQuery};
use crate::spec::{MetricPlan, MetricSource, ServingSource};

/// What one query said.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    /// One usable number and when Prometheus sampled it (Unix time).
    Value { value: f64, sampled_at: Duration },
    /// No series matched: no data, which is stale, not zero.
    Absent,
    /// An answer that is not one usable number.
    Invalid(String),
    /// Prometheus could not be asked (down, timed out).
    Unavailable(String),
}

impl Reading {
    /// Why the reading is not used, for the status; `None` for a value.
    pub fn problem(&self) -> Option<String> {
        match self {
            Reading::Value { .. } => None,
            Reading::Absent => Some("no series: the metric is absent (stale, not zero)".into()),
            Reading::Invalid(why) => Some(why.clone()),
            Reading::Unavailable(why) => Some(format!("Prometheus unavailable: {why}")),
        }
    }
}

/// One metric's reading and the query that produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRead {
    pub name: String,
    /// The PromQL evaluated (for a preset with several candidate metrics, the
    /// one found in use; for serving series, each one's, `; `-separated).
    pub query: String,
    pub reading: Reading,
    /// For a `queueWait` metric, the series behind the replicas read.
    pub detail: Option<String>,
}

impl MetricRead {
    /// The decision module's view: `None` for absent or unavailable data;
    /// `None` (not a reading at all) for invalid answers, which the caller
    /// must keep out of the decision.
    pub fn to_decision(&self, plan: &MetricPlan) -> Option<MetricReading> {
        let (value, sampled_at) = match &self.reading {
            Reading::Value { value, sampled_at } => (Some(*value), Some(*sampled_at)),
            Reading::Absent | Reading::Unavailable(_) => (None, None),
            Reading::Invalid(_) => return None,
        };
        Some(MetricReading {
            name: self.name.clone(),
            value,
            sampled_at,
            target: plan.target,
        })
    }

    /// The activation gate's view: absent and unavailable data are both stale.
    pub fn to_activation(&self) -> ActivationReading {
        match &self.reading {
            Reading::Value { value, sampled_at } => ActivationReading::Value {
                value: *value,
                sampled_at: *sampled_at,
            },
            Reading::Absent | Reading::Unavailable(_) => ActivationReading::Absent,
            Reading::Invalid(why) => ActivationReading::Invalid(why.clone()),
        }
    }
}

/// Judges an instant query's result.
pub fn interpret(data: &Data) -> Reading {
    interpret_as(data, false)
}

/// Judges an instant query that is a mean over finished requests: NaN (0/0,
/// none finished) is no data, not garbage.
pub fn interpret_mean(data: &Data) -> Reading {
    interpret_as(data, true)
}

fn interpret_as(data: &Data, nan_is_absent: bool) -> Reading {
    let sample = match data {
        Data::Scalar(sample) => sample,
        Data::Vector(series) => match series.as_slice() {
            [] => return Reading::Absent,
            [one] => one.sample(),
            many => {
                return Reading::Invalid(format!(
                    "the query returned {} series; a scaling metric must be one number \
                     (aggregate it, e.g. sum(...) or max(...))",
                    many.len()
                ))
            }
        },
        Data::Matrix(_) => {
            return Reading::Invalid(
                "the query returned a range vector; use an instant vector (e.g. rate(x[1m]))"
                    .into(),
            )
        }
    };
    if nan_is_absent && sample.value().is_nan() {
        return Reading::Absent;
    }
    judge(sample.value(), sample.timestamp())
}

/// A single sample: usable if finite and not negative.
fn judge(value: f64, timestamp_seconds: f64) -> Reading {
    if value.is_nan() {
        return Reading::Invalid("the query returned NaN".into());
    }
    if value.is_infinite() {
        return Reading::Invalid(format!("the query returned {value}"));
    }
    if value < 0.0 {
        return Reading::Invalid(format!(
            "the query returned {value}; scaling metrics cannot be negative"
        ));
    }
    Reading::Value {
        value,
        sampled_at: unix_seconds(timestamp_seconds),
    }
}

fn unix_seconds(seconds: f64) -> Duration {
    if seconds.is_finite() && seconds > 0.0 {
        Duration::try_from_secs_f64(seconds).unwrap_or(Duration::ZERO)
    } else {
        Duration::ZERO
    }
}

/// Prometheus, asked with instant queries.
#[derive(Clone)]
pub struct MetricsReader {
    client: Client,
    timeout: Duration,
}

impl std::fmt::Debug for MetricsReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsReader")
            .field("url", &self.client.base_url().as_str())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl MetricsReader {
    /// `url` is Prometheus's base URL (`http://prometheus:9090`); `timeout`
    /// bounds each query, on the server and on the wire.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, String> {
        let client: Client = url
            .parse()
            .map_err(|e: PromError| format!("invalid Prometheus URL {url:?}: {e}"))?;
        Ok(MetricsReader { client, timeout })
    }

    /// Reads every metric of a plan, one after another. `target_ready` is the
    /// target's ready replicas, for serving series without a replica count.
    pub async fn read_all(&self, plans: &[MetricPlan], target_ready: u32) -> Vec<MetricRead> {
        let mut out = Vec::with_capacity(plans.len());
        for plan in plans {
            out.push(self.read(plan, target_ready).await);
        }
        out
    }

    /// Reads one metric. A preset with several candidate metrics uses the
    /// first one that has a series.
    pub async fn read(&self, plan: &MetricPlan, target_ready: u32) -> MetricRead {
        self.read_source(&plan.name, &plan.source, target_ready)
            .await
    }

    /// Reads `source` under `name` (a metric's, or the activation's).
    pub async fn read_source(
        &self,
        name: &str,
        source: &MetricSource,
        target_ready: u32,
    ) -> MetricRead {
        match source {
            MetricSource::Query(query) => MetricRead {
                name: name.to_owned(),
                query: query.clone(),
                reading: self.instant(query).await,
                detail: None,
            },
            MetricSource::Serving(serving) => self.read_serving(name, serving, target_ready).await,
            MetricSource::Preset { preset, matchers } => {
                let candidates = preset_queries(*preset, matchers);
                for candidate in &candidates {
                    let reading = match self.instant(&candidate.value).await {
                        Reading::Absent => continue,
                        other => self.aged(other, Some(&candidate.freshness)).await,
                    };
                    return MetricRead {
                        name: name.to_owned(),
                        query: candidate.value.clone(),
                        reading,
                        detail: None,
                    };
                }
                MetricRead {
                    name: name.to_owned(),
                    query: candidates
                        .iter()
                        .map(|c| c.value.as_str())
                        .collect::<Vec<_>>()
                        .join(" | "),
                    reading: Reading::Absent,
                    detail: None,
                }
            }
        }
    }

    /// Reads every serving series of a `queueWait` metric and sizes them into
    /// the replicas its objective needs.
    async fn read_serving(
        &self,
        name: &str,
        source: &ServingSource,
        target_ready: u32,
    ) -> MetricRead {
        let queries = source.series.queries();
        let mut shown = vec![
            queries.running.value.clone(),
            queries.waiting.value.clone(),
            queries.mean_slot_seconds.value.clone(),
        ];
        let running = self.series(&queries.running, interpret).await;
        let waiting = self.series(&queries.waiting, interpret).await;
        let mean_slot_seconds = self
            .series(&queries.mean_slot_seconds, interpret_mean)
            .await;
        // The first KV-cache candidate with a series (the gauge was renamed).
        let mut kv_cache_usage = None;
        for candidate in &queries.kv_cache_usage {
            let reading = self.series(candidate, interpret).await;
            let found = reading != Reading::Absent;
            kv_cache_usage = Some(reading);
            if found {
                shown.push(candidate.value.clone());
                break;
            }
        }
        let ready_replicas = match &queries.ready_replicas {
            Some(query) => {
                shown.push(query.value.clone());
                Some(self.series(query, interpret).await)
            }
            None => None,
        };
        let reads = ServingReads {
            running,
            waiting,
            mean_slot_seconds,
            kv_cache_usage,
            ready_replicas,
        };
        let sized = size(&reads, source, target_ready);
        MetricRead {
            name: name.to_owned(),
            query: shown.join("; "),
            reading: sized.reading,
            detail: sized.detail,
        }
    }

    /// One serving series, judged by `judge`, as old as its oldest data.
    async fn series(&self, query: &SeriesQuery, judge: fn(&Data) -> Reading) -> Reading {
        let reading = self.instant_as(&query.value, judge).await;
        self.aged(reading, query.freshness.as_deref()).await
    }

    /// A value timed by the scrape of the oldest series behind it, when a
    /// freshness query says (an aggregate's own time is the evaluation's).
    async fn aged(&self, reading: Reading, freshness: Option<&str>) -> Reading {
        match (reading, freshness) {
            (Reading::Value { value, sampled_at }, Some(freshness)) => Reading::Value {
                value,
                sampled_at: self.oldest_sample(freshness, sampled_at).await,
            },
            (other, _) => other,
        }
    }

    /// The scrape time of the oldest series behind a preset's value; the
    /// value's own time when that cannot be read (the series vanished between
    /// the two queries, say).
    async fn oldest_sample(&self, freshness: &str, fallback: Duration) -> Duration {
        match self.instant(freshness).await {
            Reading::Value { value, .. } => unix_seconds(value),
            _ => fallback,
        }
    }

    /// One instant query, judged.
    pub async fn instant(&self, query: &str) -> Reading {
        self.instant_as(query, interpret).await
    }

    /// One instant query, judged by `judge`.
    async fn instant_as(&self, query: &str, judge: fn(&Data) -> Reading) -> Reading {
        let millis = i64::try_from(self.timeout.as_millis()).unwrap_or(i64::MAX);
        let request = self.client.query(query).timeout(millis).get();
        match tokio::time::timeout(self.timeout, request).await {
            Err(_) => Reading::Unavailable(format!(
                "no answer within {:.1}s",
                self.timeout.as_secs_f64()
            )),
            Ok(Ok(result)) => judge(result.data()),
            Ok(Err(PromError::Prometheus(error))) => {
                if error.is_timeout() {
                    Reading::Unavailable(format!("query timed out: {}", error.message()))
                } else {
                    Reading::Invalid(format!("Prometheus rejected the query: {error}"))
                }
            }
            Ok(Err(error)) => Reading::Unavailable(describe(&error)),
        }
    }
}

/// The error with its causes, which is where reqwest says what went wrong.
fn describe(error: &PromError) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(json: serde_json::Value) -> Data {
        serde_json::from_value(json).expect("a Prometheus result")
    }

    fn vector(samples: &[(&str, &str)]) -> Data {
        let result: Vec<serde_json::Value> = samples
            .iter()
            .enumerate()
            .map(|(i, (ts, value))| {
                serde_json::json!({
                    "metric": { "pod": format!("p{i}") },
                    "value": [ts.parse::<f64>().expect("ts"), value],
                })
            })
            .collect();
        data(serde_json::json!({ "resultType": "vector", "result": result }))
    }

    #[test]
    fn one_series_is_a_value_with_its_timestamp() {
        assert_eq!(
            interpret(&vector(&[("1700000000.5", "12")])),
            Reading::Value {
                value: 12.0,
                sampled_at: Duration::from_millis(1_700_000_000_500),
            }
        );
    }

    #[test]
    fn no_series_is_absent_not_zero() {
        assert_eq!(interpret(&vector(&[])), Reading::Absent);
    }

    #[test]
    fn several_series_nan_inf_and_negative_are_invalid() {
        let several = interpret(&vector(&[("1", "1"), ("1", "2")]));
        assert!(
            matches!(&several, Reading::Invalid(why) if why.contains("returned 2 series")),
            "{several:?}"
        );
        for (value, words) in [("NaN", "NaN"), ("+Inf", "inf"), ("-3", "negative")] {
            let reading = interpret(&vector(&[("1", value)]));
            assert!(
                matches!(&reading, Reading::Invalid(why) if why.contains(words)),
                "{value}: {reading:?}"
            );
        }
    }

    #[test]
    fn a_mean_over_no_finished_request_is_absent_but_nan_elsewhere_is_invalid() {
        let nan = vector(&[("1", "NaN")]);
        assert_eq!(interpret_mean(&nan), Reading::Absent);
        assert!(matches!(interpret(&nan), Reading::Invalid(_)));
        assert!(matches!(
            interpret_mean(&vector(&[("1", "1"), ("1", "2")])),
            Reading::Invalid(_)
        ));
        assert!(matches!(
            interpret_mean(&vector(&[("1", "7.5")])),
            Reading::Value { value, .. } if value == 7.5
        ));
    }

    #[test]
    fn scalars_count_and_range_vectors_do_not() {
        let scalar = data(serde_json::json!({ "resultType": "scalar", "result": [5.0, "0.5"] }));
        assert!(matches!(interpret(&scalar), Reading::Value { value, .. } if value == 0.5));
        let matrix = data(serde_json::json!({
            "resultType": "matrix",
            "result": [{ "metric": {}, "values": [[1.0, "1"], [2.0, "2"]] }]
        }));
        assert!(matches!(interpret(&matrix), Reading::Invalid(_)));
    }

    #[test]
    fn invalid_answers_stay_out_of_the_decision_and_absent_ones_go_in_as_none() {
        let plan = MetricPlan {
            name: "q".into(),
            source: MetricSource::Query("x".into()),
            target: crate::decision::MetricTarget::PerReplica(1.0),
        };
        let read = |reading| MetricRead {
            name: "q".into(),
            query: "x".into(),
            reading,
            detail: None,
        };
        assert!(read(Reading::Invalid("NaN".into()))
            .to_decision(&plan)
            .is_none());
        let absent = read(Reading::Absent)
            .to_decision(&plan)
            .expect("absent is a reading");
        assert_eq!((absent.value, absent.sampled_at), (None, None));
    }

    #[test]
    fn a_bad_url_is_a_clear_error() {
        let error = MetricsReader::new("not a url", Duration::from_secs(1)).expect_err("bad url");
        assert!(error.contains("invalid Prometheus URL"), "{error}");
    }
}
