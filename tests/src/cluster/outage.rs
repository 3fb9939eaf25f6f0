//! Faults injected into the control plane itself, for the fault suite
//! (`tests/tests/faults.rs`):
//!
//! * kube-apiserver stopped, then started again with the same flags on the same
//!   port, as a restarted static pod or an upgraded control-plane node is;
//! * a second kube-apiserver on the same etcd (a highly available control
//!   plane), through which a test changes the cluster while the first is down,
//!   so that clients of the first come back to a history they missed;
//! * etcd compacted to its current revision, so that a watch resumed from an
//!   older resourceVersion gets 410 Gone and must relist.

use std::net::SocketAddr;
use std::time::Duration;

use super::{single_port, ControlPlane, APISERVER};
use crate::error::{HarnessError, Result};
use crate::janitor;
use crate::probe;
use crate::process::Component;

/// The second apiserver's component name.
const SECOND_APISERVER: &str = "kube-apiserver-b";

impl ControlPlane {
    /// Stops kube-apiserver (SIGTERM, SIGKILL after a grace period) and waits
    /// for it to exit. etcd and every client keep running; clients see
    /// refused connections until [`ControlPlane::restart_apiserver`].
    pub fn stop_apiserver(&mut self) -> Result<()> {
        self.stop_component(APISERVER)
    }

    /// Starts kube-apiserver again with its original flags (same port, same
    /// certificates, same etcd) and waits until `/readyz` answers.
    pub async fn restart_apiserver(&mut self, timeout: Duration) -> Result<()> {
        let args = self.apiserver_args.clone();
        let client = self.client.clone();
        self.start_apiserver_process(APISERVER, &args, client, timeout)
            .await
    }

    /// Starts a second kube-apiserver on the same etcd and returns an admin
    /// client for it. It keeps serving while the first is stopped.
    pub async fn start_second_apiserver(&mut self, timeout: Duration) -> Result<kube::Client> {
        let port = single_port()?;
        let server = format!("https://127.0.0.1:{port}");
        let cert_dir = self.dir().join("apiserver-b-certs");
        let args: Vec<String> = self
            .apiserver_args
            .iter()
            .map(|arg| {
                if arg.starts_with("--secure-port=") {
                    format!("--secure-port={port}")
                } else if arg.starts_with("--cert-dir=") {
                    format!("--cert-dir={}", cert_dir.display())
                } else {
                    arg.clone()
                }
            })
            .collect();
        let kubeconfig = self.dir().join("admin-b.kubeconfig");
        let client = super::admin_client(&self.pki, &kubeconfig, &server).await?;
        self.start_apiserver_process(SECOND_APISERVER, &args, client.clone(), timeout)
            .await?;
        Ok(client)
    }

    /// Stops the second apiserver started by [`ControlPlane::start_second_apiserver`].
    pub fn stop_second_apiserver(&mut self) -> Result<()> {
        self.stop_component(SECOND_APISERVER)
    }

    /// Compacts etcd's history up to its current revision (physically, so the
    /// old revisions are gone when this returns) and returns that revision.
    /// A watch resumed from any older resourceVersion then gets 410 Gone.
    pub async fn compact_etcd(&self) -> Result<i64> {
        let addr = self.etcd_address()?;
        // etcd's JSON gateway takes keys in base64; "/" is "Lw==". A range
        // with limit 1 is the cheapest call whose header carries the revision.
        let (status, body) =
            probe::http_post_json(addr, "/v3/kv/range", r#"{"key":"Lw==","limit":1}"#)
                .await
                .map_err(|message| etcd_error("reading the revision", message))?;
        let revision = parse_revision(status, &body)
            .map_err(|message| etcd_error("reading the revision", message))?;
        let request = format!(r#"{{"revision":"{revision}","physical":true}}"#);
        let (status, body) = probe::http_post_json(addr, "/v3/kv/compaction", &request)
            .await
            .map_err(|message| etcd_error("compacting", message))?;
        if status != 200 {
            return Err(etcd_error("compacting", format!("status {status}: {body}")));
        }
        Ok(revision)
    }

    fn etcd_address(&self) -> Result<SocketAddr> {
        self.etcd_url
            .strip_prefix("http://")
            .and_then(|host_port| host_port.parse().ok())
            .ok_or_else(|| {
                etcd_error(
                    "finding etcd",
                    format!("{} is not http://<ip>:<port>", self.etcd_url),
                )
            })
    }

    fn stop_component(&mut self, name: &str) -> Result<()> {
        let index = self
            .components
            .iter()
            .position(|c| c.name() == name)
            .ok_or_else(|| {
                HarnessError::io(
                    format!("stopping {name}"),
                    std::io::Error::new(std::io::ErrorKind::NotFound, "not running"),
                )
            })?;
        let mut component = self.components.remove(index);
        component.terminate();
        component.reap();
        Ok(())
    }

    async fn start_apiserver_process(
        &mut self,
        name: &str,
        args: &[String],
        client: kube::Client,
        timeout: Duration,
    ) -> Result<()> {
        // A fresh log per start: the earlier one explains what happened before.
        let starts = std::fs::read_dir(self.dir())
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().starts_with(name))
                    .count()
            })
            .unwrap_or(0);
        let log = self.dir().join(format!("{name}.{starts}.log"));
        let program = self.binaries.kube_apiserver();
        let mut apiserver = Component::spawn(name, &program, args, log)?;
        janitor::record_group(self.dir(), apiserver.pid())?;
        apiserver
            .wait_ready(timeout, || {
                let client = client.clone();
                async move { probe::kube_get_ok(&client, "/readyz").await }
            })
            .await?;
        self.components.push(apiserver);
        Ok(())
    }
}

/// The revision in the header of an etcd gateway response (int64s come as
/// JSON strings).
fn parse_revision(status: u16, body: &str) -> std::result::Result<i64, String> {
    if status != 200 {
        return Err(format!("status {status}: {body}"));
    }
    let value: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("{e}: {body}"))?;
    let revision = &value["header"]["revision"];
    revision
        .as_str()
        .and_then(|r| r.parse().ok())
        .or_else(|| revision.as_i64())
        .ok_or_else(|| format!("no header.revision in {body}"))
}

fn etcd_error(what: &str, message: String) -> HarnessError {
    HarnessError::io(format!("etcd: {what}"), std::io::Error::other(message))
}

#[cfg(test)]
mod tests {
    use super::parse_revision;

    #[test]
    fn the_revision_is_read_from_the_gateway_header() {
        let body = r#"{"header":{"cluster_id":"1","member_id":"2","revision":"4711","raft_term":"3"},"kvs":[]}"#;
        assert_eq!(parse_revision(200, body), Ok(4711));
    }

    #[test]
    fn a_failed_or_odd_gateway_answer_is_an_error_not_a_revision() {
        assert!(parse_revision(503, "unavailable").is_err());
        assert!(parse_revision(200, "not json").is_err());
        assert!(parse_revision(200, r#"{"header":{}}"#).is_err());
    }
}
