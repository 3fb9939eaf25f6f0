//! A scripted Kubernetes API server for `kube::Client`, on `tower_test`'s mock
//! service: each expected request is checked (method, path, query, content type,
//! JSON body) and answered in turn, and any request beyond the script fails the
//! test, so a test states the exact requests the code under test makes.

#![allow(dead_code)] // each test binary uses its own part of the helper

use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tower_test::mock::{self, Handle, SendResponse};

pub type MockHandle = Handle<Request<Body>, Response<Body>>;

/// How long the script waits for the next request before failing the test.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub const JSON: &str = "application/json";
pub const MERGE_PATCH: &str = "application/merge-patch+json";

/// A client whose requests arrive at the returned handle.
pub fn mock_client() -> (kube::Client, MockHandle) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), handle)
}

type BodyCheck = Box<dyn FnOnce(&Value) + Send>;
type Responder = Box<dyn FnOnce(&Value) -> (u16, Value) + Send>;

/// The answer to one request.
pub enum Reply {
    /// This HTTP status and JSON body.
    Json(u16, Value),
    /// Computed from the request's JSON body (e.g. echo a created object).
    With(Responder),
    /// The transport fails: the API server cannot be reached.
    Unreachable,
}

/// One expected request and its answer.
pub struct Exchange {
    method: Method,
    path: String,
    query: String,
    content_type: Option<String>,
    body: Option<BodyCheck>,
    reply: Reply,
}

impl Exchange {
    pub fn new(method: Method, path: &str) -> Self {
        Exchange {
            method,
            path: path.to_owned(),
            query: String::new(),
            content_type: None,
            body: None,
            reply: Reply::Json(200, json!({})),
        }
    }

    pub fn get(path: &str) -> Self {
        Self::new(Method::GET, path)
    }

    pub fn post(path: &str) -> Self {
        Self::new(Method::POST, path)
    }

    pub fn patch(path: &str) -> Self {
        Self::new(Method::PATCH, path)
    }

    /// The exact query string (without `?`); empty unless set.
    pub fn query(mut self, query: &str) -> Self {
        self.query = query.to_owned();
        self
    }

    /// A body of exactly this JSON, sent with this content type.
    pub fn body(mut self, content_type: &str, expected: Value) -> Self {
        self.content_type = Some(content_type.to_owned());
        self.body = Some(Box::new(move |actual: &Value| {
            assert_eq!(
                actual,
                &expected,
                "request body\n actual:   {}\n expected: {}",
                pretty(actual),
                pretty(&expected)
            );
        }));
        self
    }

    /// A body with this content type that `check` accepts (it panics otherwise).
    pub fn body_with(
        mut self,
        content_type: &str,
        check: impl FnOnce(&Value) + Send + 'static,
    ) -> Self {
        self.content_type = Some(content_type.to_owned());
        self.body = Some(Box::new(check));
        self
    }

    pub fn reply(mut self, status: u16, body: Value) -> Self {
        self.reply = Reply::Json(status, body);
        self
    }

    pub fn reply_with(mut self, f: impl FnOnce(&Value) -> (u16, Value) + Send + 'static) -> Self {
        self.reply = Reply::With(Box::new(f));
        self
    }

    /// Fail the request in the transport, as when the API server is down.
    pub fn unreachable(mut self) -> Self {
        self.reply = Reply::Unreachable;
        self
    }

    async fn answer(
        self,
        index: usize,
        request: Request<Body>,
        send: SendResponse<Response<Body>>,
    ) {
        let what = format!("request #{index} ({} {})", self.method, self.path);
        let (parts, body) = request.into_parts();
        assert_eq!(
            (&parts.method, parts.uri.path()),
            (&self.method, self.path.as_str()),
            "{what}: wrong method or path (uri {})",
            parts.uri
        );
        assert_eq!(
            parts.uri.query().unwrap_or(""),
            self.query,
            "{what}: wrong query"
        );
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(
            content_type, self.content_type,
            "{what}: wrong content type"
        );
        let bytes = body.collect_bytes().await.unwrap();
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{what}: body is not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        match self.body {
            Some(check) => check(&body),
            None => assert_eq!(body, Value::Null, "{what}: expected no body"),
        }
        let (status, reply) = match self.reply {
            Reply::Json(status, reply) => (status, reply),
            Reply::With(f) => f(&body),
            Reply::Unreachable => {
                send.send_error(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "connection refused (mock API server is down)",
                ));
                return;
            }
        };
        send.send_response(json_response(status, &reply));
    }
}

pub fn json_response(status: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header(http::header::CONTENT_TYPE, JSON)
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

/// A `metav1.Status`, as the API server answers errors and subresource writes.
pub fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": if code < 400 { "Success" } else { "Failure" },
        "reason": reason,
        "message": message,
        "code": code,
    })
}

/// Serves `script` in order on `handle`, then requires that the client be
/// dropped without sending anything more. Await the returned task (after
/// dropping every clone of the client) to surface a failed expectation.
pub fn serve(mut handle: MockHandle, script: Vec<Exchange>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let expected = script.len();
        for (index, exchange) in script.into_iter().enumerate() {
            let next = tokio::time::timeout(REQUEST_TIMEOUT, handle.next_request()).await;
            let Ok(Some((request, send))) = next else {
                panic!(
                    "expected request #{index} of {expected} ({} {}), but {}",
                    exchange.method,
                    exchange.path,
                    if next.is_ok() {
                        "the client was dropped"
                    } else {
                        "none came"
                    }
                );
            };
            exchange.answer(index, request, send).await;
        }
        expect_no_more(&mut handle).await;
    })
}

/// Fails if the client sends another request before it is dropped.
pub async fn expect_no_more(handle: &mut MockHandle) {
    match tokio::time::timeout(REQUEST_TIMEOUT, handle.next_request()).await {
        Ok(None) => {}
        Ok(Some((request, _))) => {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            panic!(
                "unexpected request {} {}: {}",
                parts.method,
                parts.uri,
                String::from_utf8_lossy(&bytes)
            );
        }
        Err(_) => panic!("the client was never dropped; the test must drop it when done"),
    }
}

/// Awaits a `serve` task, re-raising its panic so the assertion message shows.
pub async fn finish(server: JoinHandle<()>) {
    if let Err(error) = server.await {
        if error.is_panic() {
            std::panic::resume_unwind(error.into_panic());
        }
        panic!("mock API server task failed: {error}");
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap()
}
