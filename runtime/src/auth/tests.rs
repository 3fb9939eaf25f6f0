//! The decision fed requests and review answers, with a fake API server.

use std::sync::atomic::{AtomicUsize, Ordering};

use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewStatus, UserInfo};
use k8s_openapi::api::authorization::v1::{SubjectAccessReview, SubjectAccessReviewStatus};

use super::*;

/// Knows one good token (`good`, user `prometheus`); allows `prometheus` and
/// CN `scraper` to get `/metrics`; fails every review while `down`.
#[derive(Debug, Default)]
pub(crate) struct FakeApiServer {
    pub(crate) down: std::sync::atomic::AtomicBool,
    token_reviews: AtomicUsize,
    access_reviews: AtomicUsize,
    last_access: Mutex<Option<SubjectAccessReview>>,
}

impl FakeApiServer {
    fn fail(&self) -> Option<ReviewError> {
        self.down
            .load(Ordering::SeqCst)
            .then(|| ReviewError("connection refused".to_owned()))
    }
}

impl Reviews for FakeApiServer {
    fn token_review(&self, review: TokenReview) -> BoxFuture<'_, Result<TokenReview, ReviewError>> {
        Box::pin(async move {
            self.token_reviews.fetch_add(1, Ordering::SeqCst);
            if let Some(error) = self.fail() {
                return Err(error);
            }
            let good = review.spec.token == "good";
            Ok(TokenReview {
                status: Some(TokenReviewStatus {
                    authenticated: Some(good),
                    user: good.then(|| UserInfo {
                        username: Some("prometheus".to_owned()),
                        groups: Some(vec!["system:serviceaccounts".to_owned()]),
                        ..UserInfo::default()
                    }),
                    error: (!good).then(|| "invalid bearer token".to_owned()),
                    audiences: None,
                }),
                ..review
            })
        })
    }

    fn access_review(
        &self,
        review: SubjectAccessReview,
    ) -> BoxFuture<'_, Result<SubjectAccessReview, ReviewError>> {
        Box::pin(async move {
            self.access_reviews.fetch_add(1, Ordering::SeqCst);
            *lock(&self.last_access) = Some(review.clone());
            if let Some(error) = self.fail() {
                return Err(error);
            }
            let spec = &review.spec;
            let path = spec
                .non_resource_attributes
                .as_ref()
                .and_then(|a| a.path.as_deref());
            let verb = spec
                .non_resource_attributes
                .as_ref()
                .and_then(|a| a.verb.as_deref());
            let user = spec.user.as_deref();
            let allowed = path == Some("/metrics")
                && verb == Some("get")
                && matches!(user, Some("prometheus" | "scraper"));
            Ok(SubjectAccessReview {
                status: Some(SubjectAccessReviewStatus {
                    allowed,
                    ..SubjectAccessReviewStatus::default()
                }),
                ..review
            })
        })
    }
}

fn auth() -> (Arc<FakeApiServer>, DelegatedAuth) {
    let api = Arc::new(FakeApiServer::default());
    let paths = ["/healthz", "/readyz", "/livez", "/debug/*"].map(str::to_owned);
    let auth = DelegatedAuth::new(api.clone(), paths.to_vec());
    (api, auth)
}

fn token(token: &str) -> Credentials<'_> {
    Credentials {
        bearer_token: Some(token),
        certificate: None,
    }
}

#[tokio::test]
async fn probe_paths_need_no_credentials() {
    let (api, auth) = auth();
    for path in ["/healthz", "/readyz", "/livez", "/debug/anything"] {
        let decision = auth
            .decide(&Method::GET, path, Credentials::default())
            .await;
        assert_eq!(decision, Decision::Allow, "{path}");
    }
    assert_eq!(api.token_reviews.load(Ordering::SeqCst), 0);
    assert_eq!(api.access_reviews.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn metrics_without_credentials_is_401() {
    let (api, auth) = auth();
    let decision = auth
        .decide(&Method::GET, "/metrics", Credentials::default())
        .await;
    assert!(
        matches!(decision, Decision::Unauthenticated(_)),
        "{decision:?}"
    );
    // A prefix of an always-allowed path is not allowed.
    let decision = auth
        .decide(&Method::GET, "/healthz/x", Credentials::default())
        .await;
    assert!(
        matches!(decision, Decision::Unauthenticated(_)),
        "{decision:?}"
    );
    assert_eq!(api.token_reviews.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_bad_token_is_401_with_the_reason() {
    let (_, auth) = auth();
    let decision = auth.decide(&Method::GET, "/metrics", token("forged")).await;
    assert_eq!(
        decision,
        Decision::Unauthenticated("invalid bearer token".to_owned())
    );
}

#[tokio::test]
async fn a_good_token_is_authorized_by_a_subject_access_review() {
    let (api, auth) = auth();
    assert_eq!(
        auth.decide(&Method::GET, "/metrics", token("good")).await,
        Decision::Allow
    );
    let review = lock(&api.last_access).clone().expect("asked");
    assert_eq!(review.spec.user.as_deref(), Some("prometheus"));
    assert_eq!(
        review.spec.groups.as_deref(),
        Some(&["system:serviceaccounts".to_owned()][..])
    );

    // The same user, another path or verb: 403.
    let decision = auth.decide(&Method::GET, "/other", token("good")).await;
    assert_eq!(
        decision,
        Decision::Forbidden("user \"prometheus\" cannot get path \"/other\"".to_owned())
    );
    let decision = auth.decide(&Method::POST, "/metrics", token("good")).await;
    assert!(matches!(decision, Decision::Forbidden(_)), "{decision:?}");
    let review = lock(&api.last_access).clone().expect("asked");
    let verb = review
        .spec
        .non_resource_attributes
        .and_then(|a| a.verb)
        .expect("verb");
    assert_eq!(verb, "post");
}

#[tokio::test]
async fn a_client_certificate_is_its_cn_and_groups_without_a_token_review() {
    let (api, auth) = auth();
    let scraper = CertificateIdentity {
        common_name: "scraper".to_owned(),
        organizations: vec!["monitoring".to_owned()],
    };
    let with_cert = Credentials {
        certificate: Some(&scraper),
        bearer_token: None,
    };
    assert_eq!(
        auth.decide(&Method::GET, "/metrics", with_cert).await,
        Decision::Allow
    );
    let review = lock(&api.last_access).clone().expect("asked");
    assert_eq!(review.spec.user.as_deref(), Some("scraper"));
    assert_eq!(review.spec.groups, Some(vec!["monitoring".to_owned()]));
    assert_eq!(api.token_reviews.load(Ordering::SeqCst), 0);

    let stranger = CertificateIdentity {
        common_name: "stranger".to_owned(),
        organizations: vec![],
    };
    let decision = auth
        .decide(
            &Method::GET,
            "/metrics",
            Credentials {
                certificate: Some(&stranger),
                bearer_token: Some("good"),
            },
        )
        .await;
    // The certificate decides who it is, as in the API server.
    assert!(matches!(decision, Decision::Forbidden(_)), "{decision:?}");
}

#[tokio::test]
async fn answers_are_cached_and_failures_are_not() {
    let (api, auth) = auth();
    for _ in 0..5 {
        assert_eq!(
            auth.decide(&Method::GET, "/metrics", token("good")).await,
            Decision::Allow
        );
        let rejected = auth.decide(&Method::GET, "/metrics", token("forged")).await;
        assert!(matches!(rejected, Decision::Unauthenticated(_)));
    }
    assert_eq!(api.token_reviews.load(Ordering::SeqCst), 2);
    assert_eq!(api.access_reviews.load(Ordering::SeqCst), 1);

    // The API server goes away: cached answers still hold, new ones fail closed.
    api.down.store(true, Ordering::SeqCst);
    assert_eq!(
        auth.decide(&Method::GET, "/metrics", token("good")).await,
        Decision::Allow
    );
    let decision = auth.decide(&Method::GET, "/metrics", token("other")).await;
    assert!(
        matches!(&decision, Decision::Unavailable(reason) if reason.contains("connection refused")),
        "{decision:?}"
    );
    let reviews_while_down = api.token_reviews.load(Ordering::SeqCst);
    let _ = auth.decide(&Method::GET, "/metrics", token("other")).await;
    assert_eq!(
        api.token_reviews.load(Ordering::SeqCst),
        reviews_while_down + 1,
        "errors are not cached"
    );
}

#[tokio::test]
async fn an_authorizer_outage_fails_closed() {
    let api = Arc::new(FakeApiServer::default());
    let auth = DelegatedAuth::with_cache(api.clone(), vec![], 16, Duration::ZERO);
    api.down.store(true, Ordering::SeqCst);
    let scraper = CertificateIdentity {
        common_name: "scraper".to_owned(),
        organizations: vec![],
    };
    let decision = auth
        .decide(
            &Method::GET,
            "/metrics",
            Credentials {
                certificate: Some(&scraper),
                bearer_token: None,
            },
        )
        .await;
    assert!(matches!(decision, Decision::Unavailable(_)), "{decision:?}");
}

#[test]
fn bearer_tokens_are_read_from_the_authorization_header() {
    let headers = |value: &str| {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().expect("header"));
        headers
    };
    assert_eq!(bearer_token(&headers("Bearer abc")), Some("abc"));
    assert_eq!(bearer_token(&headers("bearer  abc ")), Some("abc"));
    assert_eq!(bearer_token(&headers("Basic YWJj")), None);
    assert_eq!(bearer_token(&headers("Bearer ")), None);
    assert_eq!(bearer_token(&headers("Bearer")), None);
    assert_eq!(bearer_token(&HeaderMap::new()), None);
}

#[test]
fn always_allowed_paths_are_exact_or_prefixes() {
    let paths = ["/healthz".to_owned(), "/debug/*".to_owned()];
    assert!(always_allowed(&paths, "/healthz"));
    assert!(!always_allowed(&paths, "/healthz/"));
    assert!(always_allowed(&paths, "/debug/pprof"));
    assert!(!always_allowed(&paths, "/metrics"));
    assert!(!always_allowed(&[], "/healthz"));
}

#[test]
fn token_digests_differ_per_token() {
    assert_ne!(token_digest("a"), token_digest("b"));
    assert_eq!(token_digest("a"), token_digest("a"));
}
