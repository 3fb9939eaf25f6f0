//! Authentication and authorization of the probe and metrics server,
//! delegated to the API server as kube-scheduler's secure port does:
//!
//! 1. A path in the always-allowed list (`/healthz`, `/readyz`, `/livez` by
//!    default) needs nothing: kubelet probes carry no credentials.
//! 2. A client certificate verified against `http.tls.clientCAFile` is the
//!    user named by its CN, in the groups named by its O values; otherwise a
//!    bearer token is the user a TokenReview says it is. Neither: 401.
//! 3. A SubjectAccessReview asks whether that user may `get` (the request's
//!    method, lowercased) the path as a non-resource URL; no: 403.
//!
//! Both answers are cached for [`CACHE_TTL`] in bounded caches. A review the
//! API server does not answer fails closed (503, logged) and is not cached.
//! [`DelegatedAuth::decide`] is the whole decision, fed the request's method,
//! path and credentials, with the API calls behind [`Reviews`].

pub mod cache;
pub mod reviews;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, Method};

use crate::tls::CertificateIdentity;
pub use cache::DecisionCache;
pub use reviews::{AccessVerdict, KubeReviews, ReviewError, Reviews, TokenVerdict, User};

/// How long an authentication or authorization answer is reused
/// (kube-scheduler's `--authentication-token-webhook-cache-ttl` and
/// `--authorization-webhook-cache-{un,}authorized-ttl` defaults).
pub const CACHE_TTL: Duration = Duration::from_secs(10);
/// Entries per cache: far more scrapers than any cluster has, small enough
/// that a flood of made-up tokens costs a bounded amount of memory.
pub const CACHE_CAPACITY: usize = 1024;

/// What the server does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// 401: no credentials, or credentials the API server does not accept.
    Unauthenticated(String),
    /// 403: a known user without the permission.
    Forbidden(String),
    /// 503: the API server could not be asked; nothing is let through.
    Unavailable(String),
}

/// The credentials a request carries.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    /// The client certificate the TLS handshake verified.
    pub certificate: Option<&'a CertificateIdentity>,
    /// From `Authorization: Bearer <token>`.
    pub bearer_token: Option<&'a str>,
}

/// The token of an `Authorization: Bearer <token>` header (scheme
/// case-insensitive); other schemes and empty tokens are no token.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Whether `path` is in `always_allow`: an exact path, or a prefix ending in `*`.
pub fn always_allowed(always_allow: &[String], path: &str) -> bool {
    always_allow
        .iter()
        .any(|allowed| match allowed.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => path == allowed,
        })
}

type TokenDigest = [u8; 32];
type AccessKey = (User, String, String);

/// The delegated authenticator and authorizer of one server.
#[derive(Debug)]
pub struct DelegatedAuth {
    reviews: Arc<dyn Reviews>,
    always_allow: Vec<String>,
    tokens: Mutex<DecisionCache<TokenDigest, TokenVerdict>>,
    access: Mutex<DecisionCache<AccessKey, AccessVerdict>>,
}

impl DelegatedAuth {
    pub fn new(reviews: Arc<dyn Reviews>, always_allow: Vec<String>) -> Self {
        Self::with_cache(reviews, always_allow, CACHE_CAPACITY, CACHE_TTL)
    }

    pub fn with_cache(
        reviews: Arc<dyn Reviews>,
        always_allow: Vec<String>,
        capacity: usize,
        ttl: Duration,
    ) -> Self {
        Self {
            reviews,
            always_allow,
            tokens: Mutex::new(DecisionCache::new(capacity, ttl)),
            access: Mutex::new(DecisionCache::new(capacity, ttl)),
        }
    }

    /// Whether a `method` request for `path` with `credentials` is served.
    pub async fn decide(
        &self,
        method: &Method,
        path: &str,
        credentials: Credentials<'_>,
    ) -> Decision {
        if always_allowed(&self.always_allow, path) {
            return Decision::Allow;
        }
        let user = match self.authenticate(credentials).await {
            Ok(user) => user,
            Err(decision) => return decision,
        };
        let verb = method.as_str().to_ascii_lowercase();
        self.authorize(user, path, verb).await
    }

    async fn authenticate(&self, credentials: Credentials<'_>) -> Result<User, Decision> {
        if let Some(certificate) = credentials.certificate {
            return Ok(User {
                name: certificate.common_name.clone(),
                uid: None,
                groups: certificate.organizations.clone(),
                extra: Default::default(),
            });
        }
        let Some(token) = credentials.bearer_token else {
            return Err(Decision::Unauthenticated(
                "no credentials: send a bearer token or a client certificate".to_owned(),
            ));
        };
        let digest = token_digest(token);
        let cached = lock(&self.tokens).get(&digest, Instant::now());
        let verdict = match cached {
            Some(verdict) => verdict,
            None => {
                let answer = self
                    .reviews
                    .token_review(reviews::token_review_request(token))
                    .await;
                let review = answer.map_err(|error| {
                    tracing::warn!(%error, "cannot authenticate a request: the TokenReview failed");
                    Decision::Unavailable(format!("authentication unavailable: {error}"))
                })?;
                let verdict = reviews::token_verdict(&review);
                lock(&self.tokens).insert(digest, verdict.clone(), Instant::now());
                verdict
            }
        };
        match verdict {
            TokenVerdict::Authenticated(user) => Ok(user),
            TokenVerdict::Rejected(reason) => Err(Decision::Unauthenticated(reason)),
        }
    }

    async fn authorize(&self, user: User, path: &str, verb: String) -> Decision {
        let key = (user, path.to_owned(), verb);
        let cached = lock(&self.access).get(&key, Instant::now());
        let verdict = match cached {
            Some(verdict) => verdict,
            None => {
                let request = reviews::access_review_request(&key.0, path, &key.2);
                let review = match self.reviews.access_review(request).await {
                    Ok(review) => review,
                    Err(error) => {
                        tracing::warn!(%error, user = %key.0.name, path, "cannot authorize a request: the SubjectAccessReview failed");
                        return Decision::Unavailable(format!(
                            "authorization unavailable: {error}"
                        ));
                    }
                };
                let verdict = reviews::access_verdict(&review, &key.0.name, path);
                lock(&self.access).insert(key, verdict.clone(), Instant::now());
                verdict
            }
        };
        match verdict {
            AccessVerdict::Allowed => Decision::Allow,
            AccessVerdict::Denied(reason) => Decision::Forbidden(reason),
        }
    }
}

fn token_digest(token: &str) -> TokenDigest {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
pub(crate) mod tests;
