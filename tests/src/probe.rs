//! Readiness probes. etcd and KWOK serve plain HTTP health endpoints; the
//! Kubernetes components serve HTTPS with self-signed certificates and are
//! probed through a kube client that skips verification (loopback only).

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// GETs `path` over plain HTTP and succeeds when the status is 200 and the
/// body contains `expect`.
pub async fn http_ok(addr: SocketAddr, path: &str, expect: &str) -> Result<(), String> {
    let (status, body) = http_get(addr, path).await?;
    if status == 200 && body.contains(expect) {
        Ok(())
    } else {
        Err(format!("GET http://{addr}{path}: status {status}"))
    }
}

/// GETs `path` over plain HTTP; returns the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    exchange(addr, &request, &format!("GET http://{addr}{path}")).await
}

/// POSTs `body` as JSON to `path` over plain HTTP; returns the status code
/// and the body.
pub async fn http_post_json(
    addr: SocketAddr,
    path: &str,
    body: &str,
) -> Result<(u16, String), String> {
    let request = format!(
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    exchange(addr, &request, &format!("POST http://{addr}{path}")).await
}

/// Sends one HTTP/1.0 request and reads the whole response: status and body.
async fn exchange(addr: SocketAddr, request: &str, what: &str) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("writing to {addr}: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .map_err(|e| format!("reading from {addr}: {e}"))?;
    parse_response(&response, what)
}

/// The status code and the body of a whole HTTP/1 response; `what` (the
/// request) heads the error when there is no status line.
pub(crate) fn parse_response(raw: &[u8], what: &str) -> Result<(u16, String), String> {
    let response = String::from_utf8_lossy(raw);
    let status = response
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("{what}: no status line in {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// GETs `path` from an HTTPS endpoint through `client` and succeeds on 2xx.
pub async fn kube_get_ok(client: &kube::Client, path: &str) -> Result<(), String> {
    let request = http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    client
        .request_text(request)
        .await
        .map(|_| ())
        .map_err(|e| format!("GET {path}: {e}"))
}

/// A client for a component's own HTTPS port (healthz), which presents a
/// self-signed certificate nobody can verify.
pub fn insecure_client(port: u16) -> Result<kube::Client, String> {
    let url = format!("https://127.0.0.1:{port}")
        .parse()
        .map_err(|e| format!("{e}"))?;
    let mut config = kube::Config::new(url);
    config.accept_invalid_certs = true;
    kube::Client::try_from(config).map_err(|e| e.to_string())
}
