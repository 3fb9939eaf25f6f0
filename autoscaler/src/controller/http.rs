//! `/healthz`, `/readyz` and `/metrics` on `http.bindAddress`, over HTTPS
//! with delegated authentication when `http.tls` and `http.authentication`
//! say so (the runtime's [`ServerSecurity`]).
//!
//! The probes' state is the runtime's [`Health`]: liveness fails when the
//! control loop stops beating or leader election fails, readiness waits for
//! the watches to sync.

pub use phalanx_runtime::http::{
    router, serve, serve_listener, serve_secured, Health, ServerSecurity,
};
use phalanx_runtime::metrics::MetricsText;

use super::telemetry::AutoscalerMetrics;

impl MetricsText for AutoscalerMetrics {
    fn encode(&self) -> String {
        AutoscalerMetrics::encode(self)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::Router;
    use http::Request;
    use tower::ServiceExt;

    use super::*;

    async fn get_path(router: Router, path: &str) -> (StatusCode, String) {
        let request = Request::builder()
            .uri(path)
            .body(Body::empty())
            .expect("request");
        let response = router.oneshot(request).await.expect("infallible");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn probes_and_metrics_answer() {
        let health = Arc::new(Health::new(Duration::from_secs(30)));
        let metrics = Arc::new(AutoscalerMetrics::new());
        let app = || router(health.clone(), metrics.clone());
        assert_eq!(get_path(app(), "/healthz").await.0, StatusCode::OK);
        let (status, body) = get_path(app(), "/readyz").await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
        );
        health.set_synced(true);
        assert_eq!(get_path(app(), "/readyz").await.0, StatusCode::OK);
        let (status, body) = get_path(app(), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.contains("phalanx_autoscaler_control_periods_total"),
            "{body}"
        );
        assert!(body.ends_with("# EOF\n"), "{body}");
    }
}
