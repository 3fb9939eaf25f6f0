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
