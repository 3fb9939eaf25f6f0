//! The PromQL behind each preset, and label matchers rendered safely.
//!
//! Pure text: [`preset_queries`] says what to ask Prometheus; the controller's
//! reader asks it. Every preset aggregates (`sum`, `avg`, a ratio of sums), so
//! it comes back as one series however many pods export the metric, and as no
//! series at all when none does: absent data, which the autoscaler treats as
//! stale, never as zero.
//!
//! Each preset also has a freshness query, `min(timestamp(selector))`: the
//! scrape time of the oldest series behind the value. An aggregate's own
//! sample carries the evaluation time, which says nothing about how old the
//! data is.

use std::collections::BTreeMap;

use phalanx_api::autoscaler::MetricPreset;

/// vLLM: requests waiting to be scheduled, per engine.
pub const VLLM_QUEUE: &str = "vllm:num_requests_waiting";
/// vLLM ≥ 0.8 (V1 engine): KV-cache use, 0..1.
pub const VLLM_KV_CACHE: &str = "vllm:kv_cache_usage_perc";
/// Older vLLM: the same gauge under its former name.
pub const VLLM_KV_CACHE_OLD: &str = "vllm:gpu_cache_usage_perc";
/// Triton: requests waiting, per model.
pub const TRITON_PENDING: &str = "nv_inference_pending_request_count";
/// Text Generation Inference: requests waiting.
pub const TGI_QUEUE: &str = "tgi_queue_size";
/// vLLM: requests running (holding a slot), per engine.
pub const VLLM_RUNNING: &str = "vllm:num_requests_running";
/// vLLM: histogram of the time requests spent running (`_sum`, `_count`).
pub const VLLM_INFERENCE_TIME: &str = "vllm:request_inference_time_seconds";
/// Text Generation Inference: requests in the current batch.
pub const TGI_BATCH: &str = "tgi_batch_current_size";
/// Text Generation Inference: histogram of request inference time, seconds.
pub const TGI_INFERENCE_DURATION: &str = "tgi_request_inference_duration";
/// Triton: cumulative compute time of inferences, microseconds (a counter).
pub const TRITON_COMPUTE_INFER_US: &str = "nv_inference_compute_infer_duration_us";
/// Triton: inference requests that succeeded (a counter).
pub const TRITON_SUCCESS: &str = "nv_inference_request_success";
/// DCGM exporter: framebuffer memory used and free, MiB, per GPU.
pub const DCGM_FB_USED: &str = "DCGM_FI_DEV_FB_USED";
pub const DCGM_FB_FREE: &str = "DCGM_FI_DEV_FB_FREE";

/// Equality matchers (`label="value"`) added to a preset's selectors.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Matchers(BTreeMap<String, String>);

impl Matchers {
    /// Label names must have passed [`label_name_problem`].
    pub fn new(labels: BTreeMap<String, String>) -> Self {
        Matchers(labels)
    }

    /// The value required of label `name`, if any.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Requires label `name` to equal `value` (replacing what was required).
    /// `name` must have passed [`label_name_problem`].
    pub fn insert(&mut self, name: &str, value: &str) {
        self.0.insert(name.to_owned(), value.to_owned());
    }

    /// `a="x",b="y"`, values escaped as PromQL string literals.
    pub fn render(&self) -> String {
        self.0
            .iter()
            .map(|(name, value)| format!("{name}=\"{}\"", escape(value)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `metric{a="x"}`, or the bare name without matchers.
    pub fn selector(&self, metric: &str) -> String {
        if self.0.is_empty() {
            metric.to_owned()
        } else {
            format!("{metric}{{{}}}", self.render())
        }
    }
}

/// Why `name` cannot be a Prometheus label name (`[a-zA-Z_][a-zA-Z0-9_]*`,
/// not starting with the reserved `__`), or `None` if it can.
pub fn label_name_problem(name: &str) -> Option<String> {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    let rest_ok = bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !(first_ok && rest_ok) {
        Some(
            "is not a Prometheus label name (letters, digits and '_', not starting with a digit)"
                .to_owned(),
        )
    } else if name.starts_with("__") {
        Some("names starting with \"__\" are reserved by Prometheus".to_owned())
    } else {
        None
    }
}

/// A PromQL string literal's content: backslash, quote and newline escaped,
/// so a value can never end the literal and inject PromQL.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// One way to read a preset: the value and the age of the data behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresetQuery {
    /// The metric whose presence this candidate needs (the name detected).
    pub metric: &'static str,
    /// Evaluates to one number, or to nothing when the metric is absent.
    pub value: String,
    /// Scrape time of the oldest series behind the value (Unix seconds).
    pub freshness: String,
}

/// The candidates for `preset`, preferred first; the reader uses the first one
/// whose metric exists. Only the vLLM KV-cache preset has two: the metric was
/// renamed, and a fleet mid-upgrade may export either name.
pub fn preset_queries(preset: MetricPreset, matchers: &Matchers) -> Vec<PresetQuery> {
    let sum = |metric: &'static str| PresetQuery {
        metric,
        value: format!("sum({})", matchers.selector(metric)),
        freshness: freshness(matchers, metric),
    };
    let avg = |metric: &'static str| PresetQuery {
        metric,
        value: format!("avg({})", matchers.selector(metric)),
        freshness: freshness(matchers, metric),
    };
    match preset {
        MetricPreset::VllmQueueDepth => vec![sum(VLLM_QUEUE)],
        MetricPreset::VllmKvCacheUsage => vec![avg(VLLM_KV_CACHE), avg(VLLM_KV_CACHE_OLD)],
        MetricPreset::TritonQueueDepth => vec![sum(TRITON_PENDING)],
        MetricPreset::TgiQueueSize => vec![sum(TGI_QUEUE)],
        // A set of series, read by `serving_preset_queries`; as one number
        // there is nothing to read (the spec never plans it so).
        MetricPreset::VllmServing | MetricPreset::TritonServing | MetricPreset::TgiServing => {
            Vec::new()
        }
        MetricPreset::DcgmGpuMemory => {
            let used = format!("sum({})", matchers.selector(DCGM_FB_USED));
            let free = format!("sum({})", matchers.selector(DCGM_FB_FREE));
            vec![PresetQuery {
                metric: DCGM_FB_USED,
                value: format!("{used} / ({used} + {free})"),
                freshness: format!(
                    "min(timestamp({}) or timestamp({}))",
                    matchers.selector(DCGM_FB_USED),
                    matchers.selector(DCGM_FB_FREE)
                ),
            }]
        }
    }
}

/// One serving series: its value and, for a preset, the age of its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesQuery {
    pub value: String,
    /// `None` for the user's own PromQL: the value's sample time is used.
    pub freshness: Option<String>,
}

impl SeriesQuery {
    /// The user's PromQL, as written.
    pub fn raw(query: &str) -> Self {
        SeriesQuery {
            value: query.to_owned(),
            freshness: None,
        }
    }
}

/// The series a `queueWait` target sizes on (see
/// [`crate::decision::ServingSignals`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServingQueries {
    /// Requests holding a slot, summed over the replicas.
    pub running: SeriesQuery,
    /// Requests waiting for one.
    pub waiting: SeriesQuery,
    /// Mean seconds a finished request held its slot over the slot-time
    /// window; NaN or absent when none finished.
    pub mean_slot_seconds: SeriesQuery,
    /// KV-cache use, 0..1: the first candidate that has a series is used.
    pub kv_cache_usage: Vec<SeriesQuery>,
    /// Replicas exporting the series; `None`: the target's ready replicas.
    pub ready_replicas: Option<SeriesQuery>,
}

impl ServingQueries {
    /// Each query under its field name in a `serving` block (`running`,
    /// `kvCacheUsage`, …), for rewriting and for naming a series in errors.
    pub fn series_mut(&mut self) -> Vec<(&'static str, &mut SeriesQuery)> {
        let mut out = vec![
            ("running", &mut self.running),
            ("waiting", &mut self.waiting),
            ("meanSlotSeconds", &mut self.mean_slot_seconds),
        ];
        out.extend(self.kv_cache_usage.iter_mut().map(|q| ("kvCacheUsage", q)));
        out.extend(self.ready_replicas.as_mut().map(|q| ("readyReplicas", q)));
        out
    }
}

/// A preset that is a set of serving series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServingPreset {
    Vllm,
    Triton,
    Tgi,
}

impl ServingPreset {
    /// `None` for a preset of one number.
    pub fn of(preset: MetricPreset) -> Option<Self> {
        match preset {
            MetricPreset::VllmServing => Some(ServingPreset::Vllm),
            MetricPreset::TritonServing => Some(ServingPreset::Triton),
            MetricPreset::TgiServing => Some(ServingPreset::Tgi),
            MetricPreset::VllmQueueDepth
            | MetricPreset::VllmKvCacheUsage
            | MetricPreset::TritonQueueDepth
            | MetricPreset::TgiQueueSize
            | MetricPreset::DcgmGpuMemory => None,
        }
    }

    /// The preset as the CRD names it.
    pub fn preset(self) -> MetricPreset {
        match self {
            ServingPreset::Vllm => MetricPreset::VllmServing,
            ServingPreset::Triton => MetricPreset::TritonServing,
            ServingPreset::Tgi => MetricPreset::TgiServing,
        }
    }
}

/// The serving series of a serving preset. Every selector is narrowed by
/// `matchers`; every series has a freshness query on the metrics it reads.
pub fn serving_preset_queries(preset: ServingPreset, matchers: &Matchers) -> ServingQueries {
    let sel = |metric: &str| matchers.selector(metric);
    let fresh = |metric: &str| Some(freshness(matchers, metric));
    let aggregate = |op: &str, metric: &str| SeriesQuery {
        value: format!("{op}({})", sel(metric)),
        freshness: fresh(metric),
    };
    let window = slot_time_window();
    // Mean of a histogram over the window: rate of its sum over rate of its
    // count, 0/0 = NaN when nothing finished (the sizing then falls back).
    let histogram_mean = |histogram: &str| {
        let (sum, count) = (format!("{histogram}_sum"), format!("{histogram}_count"));
        SeriesQuery {
            value: format!(
                "sum(rate({}[{window}])) / sum(rate({}[{window}]))",
                sel(&sum),
                sel(&count)
            ),
            freshness: fresh(&count),
        }
    };
    match preset {
        ServingPreset::Vllm => ServingQueries {
            running: aggregate("sum", VLLM_RUNNING),
            waiting: aggregate("sum", VLLM_QUEUE),
            mean_slot_seconds: histogram_mean(VLLM_INFERENCE_TIME),
            kv_cache_usage: vec![
                aggregate("avg", VLLM_KV_CACHE),
                aggregate("avg", VLLM_KV_CACHE_OLD),
            ],
            ready_replicas: Some(aggregate("count", VLLM_RUNNING)),
        },
        ServingPreset::Tgi => ServingQueries {
            running: aggregate("sum", TGI_BATCH),
            waiting: aggregate("sum", TGI_QUEUE),
            mean_slot_seconds: histogram_mean(TGI_INFERENCE_DURATION),
            kv_cache_usage: Vec::new(),
            ready_replicas: Some(aggregate("count", TGI_BATCH)),
        },
        ServingPreset::Triton => {
            // Triton has no gauge of requests executing: by Little's law the
            // compute seconds spent per second are the requests in flight.
            let compute = sel(TRITON_COMPUTE_INFER_US);
            ServingQueries {
                running: SeriesQuery {
                    value: format!("sum(rate({compute}[1m])) / 1e6"),
                    freshness: fresh(TRITON_COMPUTE_INFER_US),
                },
                waiting: aggregate("sum", TRITON_PENDING),
                mean_slot_seconds: SeriesQuery {
                    value: format!(
                        "sum(rate({compute}[{window}])) / sum(rate({}[{window}])) / 1e6",
                        sel(TRITON_SUCCESS)
                    ),
                    freshness: fresh(TRITON_SUCCESS),
                },
                kv_cache_usage: Vec::new(),
                ready_replicas: Some(aggregate("count", TRITON_PENDING)),
            }
        }
    }
}

/// The slot-time window as a PromQL duration, e.g. `5m` (`300s` when not
/// whole minutes).
fn slot_time_window() -> String {
    let seconds = crate::decision::objective_defaults::SLOT_TIME_WINDOW.as_secs();
    if seconds.is_multiple_of(60) {
        format!("{}m", seconds / 60)
    } else {
        format!("{seconds}s")
    }
}

fn freshness(matchers: &Matchers, metric: &str) -> String {
    format!("min(timestamp({}))", matchers.selector(metric))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matchers(pairs: &[(&str, &str)]) -> Matchers {
        Matchers::new(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn presets_aggregate_the_documented_metrics() {
        let none = Matchers::default();
        let q = |p| preset_queries(p, &none);
        assert_eq!(
            q(MetricPreset::VllmQueueDepth)[0].value,
            "sum(vllm:num_requests_waiting)"
        );
        assert_eq!(
            q(MetricPreset::TritonQueueDepth)[0].value,
            "sum(nv_inference_pending_request_count)"
        );
        assert_eq!(
            q(MetricPreset::TgiQueueSize)[0].value,
            "sum(tgi_queue_size)"
        );
        let kv = q(MetricPreset::VllmKvCacheUsage);
        assert_eq!(
            kv.iter().map(|c| c.value.as_str()).collect::<Vec<_>>(),
            [
                "avg(vllm:kv_cache_usage_perc)",
                "avg(vllm:gpu_cache_usage_perc)"
            ]
        );
        assert_eq!(
            q(MetricPreset::DcgmGpuMemory)[0].value,
            "sum(DCGM_FI_DEV_FB_USED) / (sum(DCGM_FI_DEV_FB_USED) + sum(DCGM_FI_DEV_FB_FREE))"
        );
        assert_eq!(
            q(MetricPreset::TgiQueueSize)[0].freshness,
            "min(timestamp(tgi_queue_size))"
        );
    }

    #[test]
    fn matchers_narrow_every_selector() {
        let m = matchers(&[("namespace", "serving"), ("model_name", "llama")]);
        let q = &preset_queries(MetricPreset::VllmQueueDepth, &m)[0];
        assert_eq!(
            q.value,
            r#"sum(vllm:num_requests_waiting{model_name="llama",namespace="serving"})"#
        );
        assert_eq!(
            q.freshness,
            r#"min(timestamp(vllm:num_requests_waiting{model_name="llama",namespace="serving"}))"#
        );
    }

    #[test]
    fn serving_presets_read_the_documented_series_narrowed_and_with_freshness() {
        let m = matchers(&[("namespace", "serving")]);
        let vllm = serving_preset_queries(ServingPreset::Vllm, &m);
        let ns = r#"{namespace="serving"}"#;
        assert_eq!(
            vllm.running.value,
            format!("sum(vllm:num_requests_running{ns})")
        );
        assert_eq!(
            vllm.waiting.value,
            format!("sum(vllm:num_requests_waiting{ns})")
        );
        assert_eq!(
            vllm.mean_slot_seconds.value,
            format!(
                "sum(rate(vllm:request_inference_time_seconds_sum{ns}[5m])) / \
                 sum(rate(vllm:request_inference_time_seconds_count{ns}[5m]))"
            )
        );
        assert_eq!(
            vllm.mean_slot_seconds.freshness,
            Some(format!(
                "min(timestamp(vllm:request_inference_time_seconds_count{ns}))"
            ))
        );
        assert_eq!(
            vllm.kv_cache_usage
                .iter()
                .map(|q| q.value.as_str())
                .collect::<Vec<_>>(),
            [
                format!("avg(vllm:kv_cache_usage_perc{ns})"),
                format!("avg(vllm:gpu_cache_usage_perc{ns})")
            ]
        );
        assert_eq!(
            vllm.ready_replicas.map(|q| q.value),
            Some(format!("count(vllm:num_requests_running{ns})"))
        );

        let tgi = serving_preset_queries(ServingPreset::Tgi, &Matchers::default());
        assert_eq!(tgi.running.value, "sum(tgi_batch_current_size)");
        assert_eq!(tgi.waiting.value, "sum(tgi_queue_size)");
        assert!(tgi.kv_cache_usage.is_empty());
        assert!(tgi
            .mean_slot_seconds
            .value
            .contains("tgi_request_inference_duration_count[5m]"));

        let triton = serving_preset_queries(ServingPreset::Triton, &Matchers::default());
        assert_eq!(
            triton.running.value,
            "sum(rate(nv_inference_compute_infer_duration_us[1m])) / 1e6"
        );
        assert_eq!(
            triton.mean_slot_seconds.value,
            "sum(rate(nv_inference_compute_infer_duration_us[5m])) / \
             sum(rate(nv_inference_request_success[5m])) / 1e6"
        );
        assert_eq!(
            triton.waiting.value,
            "sum(nv_inference_pending_request_count)"
        );

        for preset in MetricPreset::ALL {
            let serving = ServingPreset::of(preset);
            assert_eq!(serving.is_some(), preset.is_serving(), "{preset:?}");
            assert!(serving.is_none_or(|s| s.preset() == preset), "{preset:?}");
            assert_eq!(
                preset_queries(preset, &m).is_empty(),
                preset.is_serving(),
                "{preset:?}"
            );
        }
    }

    #[test]
    fn values_cannot_break_out_of_the_string_literal() {
        let m = matchers(&[("pod", "a\"}) or vector(1e9) #\\\n")]);
        assert_eq!(m.render(), r#"pod="a\"}) or vector(1e9) #\\\n""#);
    }

    #[test]
    fn label_names_follow_prometheus_rules() {
        for ok in ["namespace", "_x", "model_name2"] {
            assert_eq!(label_name_problem(ok), None, "{ok}");
        }
        for bad in ["", "2x", "model-name", "a b", "ü"] {
            assert!(label_name_problem(bad).is_some(), "{bad:?}");
        }
        assert!(label_name_problem("__name__")
            .expect("reserved")
            .contains("reserved"));
    }
}
