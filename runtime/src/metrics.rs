//! The Prometheus registry every binary serves on `/metrics`.

use prometheus_client::registry::Registry;

/// A component's metrics, rendered in the OpenMetrics text format.
pub trait MetricsText: std::fmt::Debug + Send + Sync + 'static {
    fn encode(&self) -> String;
}

/// `registry` in the OpenMetrics text format.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing to a String cannot fail and our label values always encode, so
    // an error here would be a prometheus-client bug: log it and serve what
    // was encoded rather than fail the scrape or panic.
    if let Err(error) = prometheus_client::encoding::text::encode(&mut text, registry) {
        tracing::error!(%error, "encoding metrics failed");
    }
    text
}
