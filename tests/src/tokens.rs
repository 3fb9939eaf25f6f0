//! Service-account tokens from the TokenRequest API, as kubelet (bound to a
//! pod) and `kubectl create token` (bound to nothing) get them.

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::PostParams;
use kube::Api;

use crate::error::{HarnessError, Result};

/// How long the tokens tests ask for are valid.
pub const TOKEN_SECONDS: i64 = 3600;

/// A TokenRequest valid for [`TOKEN_SECONDS`], bound to `bound` (a pod: the
/// token then carries the pod's node) or to nothing.
pub fn token_request(bound: Option<BoundObjectReference>) -> TokenRequest {
    TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(TOKEN_SECONDS),
            bound_object_ref: bound,
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    }
}

/// A token for `namespace/service_account` made from `request`; an answer
/// without a token is an error.
pub async fn request_token(
    client: &kube::Client,
    namespace: &str,
    service_account: &str,
    request: &TokenRequest,
) -> Result<String> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let token = accounts
        .create_token_request(service_account, &PostParams::default(), request)
        .await?
        .status
        .and_then(|s| s.token)
        .unwrap_or_default();
    if token.is_empty() {
        return Err(HarnessError::io(
            format!("the TokenRequest for {namespace}/{service_account}"),
            std::io::Error::new(std::io::ErrorKind::InvalidData, "no token in the answer"),
        ));
    }
    Ok(token)
}
