//! The two questions delegated to the API server, as kube-scheduler asks
//! them: a TokenReview ("whose is this bearer token?") and a
//! SubjectAccessReview ("may this user `get` this non-resource path?").
//! Building the requests and reading the answers is pure; [`Reviews`] is the
//! I/O, with [`KubeReviews`] the real one.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::{Api, Client};

/// Who a request is from, as the API server's authorizer sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct User {
    pub name: String,
    pub uid: Option<String>,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

/// What a TokenReview said about a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenVerdict {
    Authenticated(User),
    /// Not a token the API server accepts (unknown, expired, wrong audience).
    Rejected(String),
}

/// What a SubjectAccessReview said about a user and a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessVerdict {
    Allowed,
    /// Denied, or no authorizer had an opinion: the reason, for the 403.
    Denied(String),
}

/// A review the API server did not answer (unreachable, 5xx, forbidden to us).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ReviewError(pub String);

/// Sends reviews to the API server.
pub trait Reviews: Send + Sync + std::fmt::Debug {
    fn token_review(&self, review: TokenReview) -> BoxFuture<'_, Result<TokenReview, ReviewError>>;
    fn access_review(
        &self,
        review: SubjectAccessReview,
    ) -> BoxFuture<'_, Result<SubjectAccessReview, ReviewError>>;
}

/// The TokenReview for `token`, for the API server's own audiences (as
/// kube-scheduler sends it: ServiceAccount tokens and any token the API
/// server's authenticators accept).
pub fn token_review_request(token: &str) -> TokenReview {
    TokenReview {
        spec: TokenReviewSpec {
            token: token.to_owned(),
            audiences: None,
        },
        ..TokenReview::default()
    }
}

/// Reads the answer to [`token_review_request`].
pub fn token_verdict(review: &TokenReview) -> TokenVerdict {
    let Some(status) = &review.status else {
        return TokenVerdict::Rejected("the TokenReview has no status".to_owned());
    };
    let user = status.user.as_ref();
    let name = user.and_then(|u| u.username.clone()).unwrap_or_default();
    if status.authenticated != Some(true) || name.is_empty() {
        let reason = status
            .error
            .clone()
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| "the token is not valid".to_owned());
        return TokenVerdict::Rejected(reason);
    }
    TokenVerdict::Authenticated(User {
        name,
        uid: user.and_then(|u| u.uid.clone()).filter(|u| !u.is_empty()),
        groups: user.and_then(|u| u.groups.clone()).unwrap_or_default(),
        extra: user.and_then(|u| u.extra.clone()).unwrap_or_default(),
    })
}

/// The SubjectAccessReview of `user` doing `verb` on the non-resource `path`.
pub fn access_review_request(user: &User, path: &str, verb: &str) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.name.clone()),
            uid: user.uid.clone(),
            groups: Some(user.groups.clone()),
            extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
            non_resource_attributes: Some(NonResourceAttributes {
                path: Some(path.to_owned()),
                verb: Some(verb.to_owned()),
            }),
            resource_attributes: None,
        },
        ..SubjectAccessReview::default()
    }
}

/// Reads the answer to [`access_review_request`]: allowed only when the API
/// server says so.
pub fn access_verdict(review: &SubjectAccessReview, user: &str, path: &str) -> AccessVerdict {
    let Some(status) = &review.status else {
        return AccessVerdict::Denied("the SubjectAccessReview has no status".to_owned());
    };
    if status.allowed && status.denied != Some(true) {
        return AccessVerdict::Allowed;
    }
    let mut reason = format!("user {user:?} cannot get path {path:?}");
    if let Some(why) = status.reason.as_deref().filter(|r| !r.is_empty()) {
        reason.push_str(": ");
        reason.push_str(why);
    }
    if let Some(error) = status.evaluation_error.as_deref().filter(|e| !e.is_empty()) {
        reason.push_str(" (evaluation error: ");
        reason.push_str(error);
        reason.push(')');
    }
    AccessVerdict::Denied(reason)
}

/// Reviews by the API server `client` talks to; the component's
/// ServiceAccount needs `create` on `tokenreviews` and
/// `subjectaccessreviews` (ClusterRole `system:auth-delegator`).
#[derive(Clone)]
pub struct KubeReviews {
    client: Client,
}

impl std::fmt::Debug for KubeReviews {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeReviews").finish_non_exhaustive()
    }
}

impl KubeReviews {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

impl Reviews for KubeReviews {
    fn token_review(&self, review: TokenReview) -> BoxFuture<'_, Result<TokenReview, ReviewError>> {
        Box::pin(async move {
            Api::<TokenReview>::all(self.client.clone())
                .create(&PostParams::default(), &review)
                .await
                .map_err(|e| ReviewError(format!("TokenReview: {e}")))
        })
    }

    fn access_review(
        &self,
        review: SubjectAccessReview,
    ) -> BoxFuture<'_, Result<SubjectAccessReview, ReviewError>> {
        Box::pin(async move {
            Api::<SubjectAccessReview>::all(self.client.clone())
                .create(&PostParams::default(), &review)
                .await
                .map_err(|e| ReviewError(format!("SubjectAccessReview: {e}")))
        })
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::authentication::v1::{TokenReviewStatus, UserInfo};
    use k8s_openapi::api::authorization::v1::SubjectAccessReviewStatus;

    use super::*;

    fn answered(
        authenticated: Option<bool>,
        user: Option<UserInfo>,
        error: Option<&str>,
    ) -> TokenReview {
        TokenReview {
            status: Some(TokenReviewStatus {
                authenticated,
                user,
                error: error.map(str::to_owned),
                audiences: None,
            }),
            ..token_review_request("t")
        }
    }

    #[test]
    fn the_token_review_carries_the_token_and_no_audience() {
        let review = token_review_request("abc");
        assert_eq!(review.spec.token, "abc");
        assert_eq!(review.spec.audiences, None);
        let json = serde_json::to_value(&review).expect("json");
        assert_eq!(json["apiVersion"], "authentication.k8s.io/v1");
        assert_eq!(json["kind"], "TokenReview");
    }

    #[test]
    fn an_authenticated_token_gives_its_user() {
        let user = UserInfo {
            username: Some("system:serviceaccount:monitoring:prometheus".to_owned()),
            uid: Some("u-1".to_owned()),
            groups: Some(vec!["system:serviceaccounts".to_owned()]),
            extra: None,
        };
        let verdict = token_verdict(&answered(Some(true), Some(user), None));
        assert_eq!(
            verdict,
            TokenVerdict::Authenticated(User {
                name: "system:serviceaccount:monitoring:prometheus".to_owned(),
                uid: Some("u-1".to_owned()),
                groups: vec!["system:serviceaccounts".to_owned()],
                extra: BTreeMap::new(),
            })
        );
    }

    #[test]
    fn a_bad_token_is_rejected_with_the_api_servers_reason() {
        let verdict = token_verdict(&answered(Some(false), None, Some("token has expired")));
        assert_eq!(
            verdict,
            TokenVerdict::Rejected("token has expired".to_owned())
        );
        let verdict = token_verdict(&answered(None, None, None));
        assert_eq!(
            verdict,
            TokenVerdict::Rejected("the token is not valid".to_owned())
        );
        // Authenticated but nameless is not a user anyone can authorize.
        let verdict = token_verdict(&answered(Some(true), Some(UserInfo::default()), None));
        assert!(matches!(verdict, TokenVerdict::Rejected(_)));
        let verdict = token_verdict(&token_review_request("t"));
        assert!(matches!(verdict, TokenVerdict::Rejected(_)));
    }

    #[test]
    fn the_access_review_asks_about_the_path_and_verb() {
        let user = User {
            name: "alice".to_owned(),
            uid: None,
            groups: vec!["team".to_owned()],
            extra: BTreeMap::new(),
        };
        let review = access_review_request(&user, "/metrics", "get");
        let json = serde_json::to_value(&review).expect("json");
        assert_eq!(json["kind"], "SubjectAccessReview");
        assert_eq!(json["spec"]["user"], "alice");
        assert_eq!(json["spec"]["groups"][0], "team");
        assert_eq!(json["spec"]["nonResourceAttributes"]["path"], "/metrics");
        assert_eq!(json["spec"]["nonResourceAttributes"]["verb"], "get");
        assert!(json["spec"].get("resourceAttributes").is_none());
    }

    fn decided(
        allowed: bool,
        denied: Option<bool>,
        reason: Option<&str>,
        error: Option<&str>,
    ) -> SubjectAccessReview {
        SubjectAccessReview {
            status: Some(SubjectAccessReviewStatus {
                allowed,
                denied,
                reason: reason.map(str::to_owned),
                evaluation_error: error.map(str::to_owned),
            }),
            ..SubjectAccessReview::default()
        }
    }

    #[test]
    fn only_an_explicit_allow_allows() {
        assert_eq!(
            access_verdict(&decided(true, None, None, None), "a", "/metrics"),
            AccessVerdict::Allowed
        );
        assert_eq!(
            access_verdict(&decided(false, None, None, None), "a", "/metrics"),
            AccessVerdict::Denied("user \"a\" cannot get path \"/metrics\"".to_owned())
        );
        let AccessVerdict::Denied(reason) = access_verdict(
            &decided(false, Some(true), Some("no rule"), Some("webhook down")),
            "a",
            "/metrics",
        ) else {
            panic!("denied")
        };
        assert!(
            reason.ends_with(": no rule (evaluation error: webhook down)"),
            "{reason}"
        );
        // Contradictory answers deny.
        assert!(matches!(
            access_verdict(&decided(true, Some(true), None, None), "a", "/m"),
            AccessVerdict::Denied(_)
        ));
        assert!(matches!(
            access_verdict(&SubjectAccessReview::default(), "a", "/m"),
            AccessVerdict::Denied(_)
        ));
    }
}
