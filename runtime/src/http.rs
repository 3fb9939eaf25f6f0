//! Health probes and the Prometheus endpoint, on `http.bindAddress`.
//!
//! * `/healthz` (liveness): 200 `ok` while the scheduling loop keeps beating
//!   and leader election works; 503 with the reason otherwise, so that the
//!   kubelet restarts a scheduler that is stuck rather than one that is only
//!   waiting for the Lease.
//! * `/readyz` (readiness): 200 once the informer caches have synced; before
//!   that the scheduler's view of the cluster is partial.
//! * `/livez`: the same as `/healthz`, under the name kube-scheduler's secure
//!   port also serves.
//! * `/metrics`: the component's metrics (any [`MetricsText`]) in the
//!   OpenMetrics text format.
//!
//! Plain HTTP by default; with `http.tls` the server speaks HTTPS
//! ([`crate::https`]), and with `http.authentication: delegated` every path
//! but the always-allowed ones (the probes) needs credentials the API server
//! accepts and RBAC that allows `get` on the path ([`crate::auth`]), as on
//! kube-scheduler's port 10259. [`ServerSecurity`] is built from the section.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::auth::{self, Credentials, Decision, DelegatedAuth, KubeReviews};
use crate::config::{ControllerDefaults, HttpAuthentication, HttpConfig};
use crate::metrics::MetricsText;
use crate::tls::{CertificateIdentity, ClientCertificates, ReloadingTls, TlsError, TlsKeys};

/// The content type of the OpenMetrics text format, which Prometheus asks for.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the probes report, updated by the tasks that know it.
///
/// The scheduling loop must call [`Health::heartbeat`] at least once per
/// `stall_limit`, also while idle or standing by for the Lease (from its idle
/// timer), so that a missing heartbeat means the loop is stuck.
#[derive(Debug)]
pub struct Health {
    /// What beats, for the liveness message ("scheduling loop").
    loop_name: &'static str,
    /// Heartbeats are stored as milliseconds since this, to fit an atomic.
    started: Instant,
    stall_limit: Duration,
    caches_synced: AtomicBool,
    /// Leading or standing by normally; false when the election itself failed
    /// (e.g. the Lease could not be read or renewed and the task gave up).
    election_ok: AtomicBool,
    last_heartbeat_ms: AtomicU64,
}

impl Health {
    /// A process that just started: not synced, election fine, heartbeat now
    /// (so the loop has one `stall_limit` to start).
    pub fn new(stall_limit: Duration) -> Self {
        Self {
            loop_name: "scheduling loop",
            started: Instant::now(),
            stall_limit,
            caches_synced: AtomicBool::new(false),
            election_ok: AtomicBool::new(true),
            last_heartbeat_ms: AtomicU64::new(0),
        }
    }

    /// Names what beats in the liveness message (`control loop`).
    pub fn named(mut self, loop_name: &'static str) -> Self {
        self.loop_name = loop_name;
        self
    }

    pub fn set_synced(&self, synced: bool) {
        self.caches_synced.store(synced, Ordering::Release);
    }

    pub fn is_synced(&self) -> bool {
        self.caches_synced.load(Ordering::Acquire)
    }

    pub fn set_election_ok(&self, ok: bool) {
        self.election_ok.store(ok, Ordering::Release);
    }

    /// The scheduling loop is alive now.
    pub fn heartbeat(&self) {
        self.heartbeat_at(Instant::now());
    }

    /// The scheduling loop was alive at `at`. An older heartbeat than the
    /// latest (from a racing task) never moves the latest back.
    pub fn heartbeat_at(&self, at: Instant) {
        self.last_heartbeat_ms
            .fetch_max(self.millis_since_start(at), Ordering::AcqRel);
    }

    /// `Err(reason)` when the process should be restarted.
    pub fn liveness(&self) -> Result<(), String> {
        self.liveness_at(Instant::now())
    }

    pub fn liveness_at(&self, now: Instant) -> Result<(), String> {
        if !self.election_ok.load(Ordering::Acquire) {
            return Err("leader election failed".to_owned());
        }
        let last = self.last_heartbeat_ms.load(Ordering::Acquire);
        let silent = Duration::from_millis(self.millis_since_start(now).saturating_sub(last));
        if silent > self.stall_limit {
            return Err(format!(
                "{} stuck: no heartbeat for {:.1}s (limit {:.1}s)",
                self.loop_name,
                silent.as_secs_f64(),
                self.stall_limit.as_secs_f64()
            ));
        }
        Ok(())
    }

    /// `Err(reason)` while the scheduler should get no traffic.
    pub fn readiness(&self) -> Result<(), String> {
        if self.is_synced() {
            Ok(())
        } else {
            Err("caches not synced".to_owned())
        }
    }

    fn millis_since_start(&self, at: Instant) -> u64 {
        let millis = at.saturating_duration_since(self.started).as_millis();
        u64::try_from(millis).unwrap_or(u64::MAX)
    }
}

#[derive(Debug, Clone)]
struct AppState {
    health: Arc<Health>,
    metrics: Arc<dyn MetricsText>,
}

/// `/healthz`, `/readyz` and `/metrics`.
pub fn router(health: Arc<Health>, metrics: Arc<dyn MetricsText>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AppState { health, metrics })
}

async fn healthz(State(state): State<AppState>) -> Response {
    probe(state.health.liveness())
}

async fn readyz(State(state): State<AppState>) -> Response {
    probe(state.health.readiness())
}

fn probe(result: Result<(), String>) -> Response {
    match result {
        Ok(()) => (StatusCode::OK, "ok").into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason).into_response(),
    }
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)],
        state.metrics.encode(),
    )
        .into_response()
}

/// Binds `addr` and serves `router` until `shutdown` completes, then finishes
/// the requests in flight.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = bind(addr).await?;
    serve_listener(listener, router, shutdown).await
}

/// [`serve`] in its own task; a server that stops with an error (the address
/// is taken) is logged, and the component goes on without its probes.
pub fn spawn_serve(
    addr: SocketAddr,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    spawn_serve_secured(addr, router, ServerSecurity::plain(), shutdown)
}

/// [`serve`] on a listener already bound (e.g. to port 0, to learn the port).
pub async fn serve_listener(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving /healthz, /readyz and /metrics");
    }
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// How a server is reached: over TLS or not, and whether requests need
/// credentials the API server accepts.
#[derive(Debug, Clone, Default)]
pub struct ServerSecurity {
    tls: Option<Arc<ReloadingTls>>,
    auth: Option<Arc<DelegatedAuth>>,
}

impl ServerSecurity {
    /// Plain HTTP, no authentication.
    pub fn plain() -> Self {
        Self::default()
    }

    /// From the `http` section: reads the TLS files now (an error names the
    /// key and the file) and, for `authentication: delegated`, asks the API
    /// server `client` talks to about every request.
    pub fn from_config<C: ControllerDefaults>(
        config: &HttpConfig<C>,
        client: &kube::Client,
    ) -> Result<Self, TlsError> {
        let tls = config
            .tls
            .clone()
            .map(|files| ReloadingTls::load(files, TlsKeys::HTTP, ClientCertificates::Optional))
            .transpose()?;
        let auth = match config.authentication {
            HttpAuthentication::None => None,
            HttpAuthentication::Delegated => Some(Arc::new(DelegatedAuth::new(
                Arc::new(KubeReviews::new(client.clone())),
                config.always_allow_paths.clone(),
            ))),
        };
        Ok(Self { tls, auth })
    }

    /// Serves over `tls`.
    pub fn with_tls(mut self, tls: Arc<ReloadingTls>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Lets only what `auth` allows through.
    pub fn with_auth(mut self, auth: Arc<DelegatedAuth>) -> Self {
        self.auth = Some(auth);
        self
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// `router` behind the authorizer, if there is one.
    pub fn protect(&self, router: Router) -> Router {
        match &self.auth {
            Some(auth) => router.layer(axum::middleware::from_fn_with_state(
                Arc::clone(auth),
                authorize,
            )),
            None => router,
        }
    }
}

/// The authorizer in front of every route: 401, 403 or 503 with the reason
/// as the body, or the route's own answer.
async fn authorize(
    State(auth): State<Arc<DelegatedAuth>>,
    request: Request,
    next: Next,
) -> Response {
    // Owned copies: the request body is not `Sync`, so no borrow of the
    // request may live across the review's await.
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let token = auth::bearer_token(request.headers()).map(str::to_owned);
    let certificate = request.extensions().get::<CertificateIdentity>().cloned();
    let credentials = Credentials {
        certificate: certificate.as_ref(),
        bearer_token: token.as_deref(),
    };
    match auth.decide(&method, &path, credentials).await {
        Decision::Allow => next.run(request).await,
        Decision::Unauthenticated(reason) => {
            (StatusCode::UNAUTHORIZED, format!("unauthorized: {reason}")).into_response()
        }
        Decision::Forbidden(reason) => {
            (StatusCode::FORBIDDEN, format!("forbidden: {reason}")).into_response()
        }
        Decision::Unavailable(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason).into_response(),
    }
}

/// [`serve_listener`] secured as `security` says.
pub async fn serve_secured(
    listener: TcpListener,
    router: Router,
    security: ServerSecurity,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = security.protect(router);
    match security.tls {
        Some(tls) => {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, authenticated = security.auth.is_some(), "serving /healthz, /readyz and /metrics over HTTPS");
            }
            crate::https::serve_tls(listener, tls, router, shutdown).await
        }
        None => serve_listener(listener, router, shutdown).await,
    }
}

/// Binds `addr` and runs [`serve_secured`] in its own task; a server that
/// stops with an error (the address is taken) is logged, and the component
/// goes on without its probes.
pub fn spawn_serve_secured(
    addr: SocketAddr,
    router: Router,
    security: ServerSecurity,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let served = match bind(addr).await {
            Ok(listener) => serve_secured(listener, router, security, shutdown).await,
            Err(error) => Err(error),
        };
        if let Err(error) = served {
            tracing::error!(%error, %addr, "health and metrics server stopped");
        }
    })
}

async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|error| {
        // The bare "address in use" does not say which of our listeners failed.
        std::io::Error::new(error.kind(), format!("cannot listen on {addr}: {error}"))
    })
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use http::Request;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tower::ServiceExt;

    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::registry::Registry;

    use super::*;

    const LIMIT: Duration = Duration::from_secs(30);

    /// A component with one counter.
    #[derive(Debug)]
    struct TestMetrics {
        registry: Registry,
        attempts: Counter,
    }

    impl TestMetrics {
        fn new() -> Self {
            let mut registry = Registry::with_prefix("phalanx_test");
            let attempts = Counter::default();
            registry.register("attempts", "Attempts", attempts.clone());
            Self { registry, attempts }
        }
    }

    impl MetricsText for TestMetrics {
        fn encode(&self) -> String {
            crate::metrics::encode(&self.registry)
        }
    }

    fn app(health: &Arc<Health>) -> Router {
        router(Arc::clone(health), Arc::new(TestMetrics::new()))
    }

    async fn get_path(router: Router, path: &str) -> (StatusCode, Option<String>, String) {
        let request = Request::builder()
            .uri(path)
            .body(Body::empty())
            .expect("request");
        let response = router.oneshot(request).await.expect("infallible");
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (
            status,
            content_type,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    #[tokio::test]
    async fn healthz_is_ok_while_the_loop_beats() {
        let health = Arc::new(Health::new(LIMIT));
        let (status, _, body) = get_path(app(&health), "/healthz").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
        health.heartbeat();
        let (status, _, _) = get_path(app(&health), "/healthz").await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn healthz_fails_when_the_loop_is_stuck() {
        let health = Arc::new(Health::new(Duration::from_millis(20)));
        tokio::time::sleep(Duration::from_millis(60)).await;
        let (status, _, body) = get_path(app(&health), "/healthz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            body.starts_with("scheduling loop stuck: no heartbeat for"),
            "{body}"
        );
        // A heartbeat revives it.
        health.heartbeat();
        let (status, _, _) = get_path(app(&health), "/healthz").await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn healthz_fails_when_leader_election_failed() {
        let health = Arc::new(Health::new(LIMIT));
        health.set_election_ok(false);
        let (status, _, body) = get_path(app(&health), "/healthz").await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "leader election failed")
        );
    }

    #[tokio::test]
    async fn readyz_waits_for_synced_caches() {
        let health = Arc::new(Health::new(LIMIT));
        let (status, _, body) = get_path(app(&health), "/readyz").await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
        );
        health.set_synced(true);
        let (status, _, body) = get_path(app(&health), "/readyz").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
        health.set_synced(false);
        let (status, _, _) = get_path(app(&health), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn metrics_serves_openmetrics_text() {
        let metrics = Arc::new(TestMetrics::new());
        metrics.attempts.inc();
        let router = router(Arc::new(Health::new(LIMIT)), metrics.clone());
        let (status, content_type, body) = get_path(router, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type.as_deref(), Some(OPENMETRICS_CONTENT_TYPE));
        assert!(body.contains("phalanx_test_attempts_total 1"), "{body}");
        assert!(body.ends_with("# EOF\n"), "{body}");
    }

    #[test]
    fn a_named_loop_is_named_in_the_liveness_message() {
        let health = Health::new(LIMIT).named("control loop");
        let start = health.started;
        let reason = health
            .liveness_at(start + Duration::from_secs(31))
            .expect_err("stuck");
        assert!(reason.starts_with("control loop stuck"), "{reason}");
    }

    #[tokio::test]
    async fn unknown_path_is_404() {
        let (status, _, _) = get_path(app(&Arc::new(Health::new(LIMIT))), "/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn heartbeat_never_moves_back_and_stall_is_measured_from_it() {
        let health = Health::new(LIMIT);
        let start = health.started;
        health.heartbeat_at(start + Duration::from_secs(100));
        health.heartbeat_at(start + Duration::from_secs(50));
        assert!(health.liveness_at(start + Duration::from_secs(129)).is_ok());
        let reason = health
            .liveness_at(start + Duration::from_secs(131))
            .expect_err("stuck");
        assert_eq!(
            reason,
            "scheduling loop stuck: no heartbeat for 31.0s (limit 30.0s)"
        );
        // A clock reading before the start is "no time has passed", not a panic.
        assert!(health.liveness_at(start).is_ok());
    }

    #[tokio::test]
    async fn serve_answers_real_requests_and_shuts_down() {
        let health = Arc::new(Health::new(LIMIT));
        health.set_synced(true);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_listener(listener, app(&health), async {
            let _ = stopped.await;
        }));

        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.ends_with("ok"), "{response}");

        stop.send(()).expect("server still running");
        let result = tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("server stopped")
            .expect("server task");
        result.expect("served without error");
    }

    #[tokio::test]
    async fn serve_binds_the_address_and_stops_on_shutdown() {
        let router = app(&Arc::new(Health::new(LIMIT)));
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        tokio::time::timeout(Duration::from_secs(5), serve(addr, router, async {}))
            .await
            .expect("stopped")
            .expect("served");
    }

    #[tokio::test]
    async fn serve_names_an_address_it_cannot_bind() {
        let taken = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = taken.local_addr().expect("addr");
        let router = app(&Arc::new(Health::new(LIMIT)));
        let error = serve(addr, router, async {}).await.expect_err("port taken");
        assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse);
        assert!(error.to_string().contains(&addr.to_string()), "{error}");
    }
}
