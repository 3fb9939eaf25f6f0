//! Real TLS connections to a served router: the probe server's delegated
//! auth, and a server that requires client certificates (the extender's).

use std::net::SocketAddr;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;

use super::*;
use crate::auth::tests::FakeApiServer;
use crate::auth::DelegatedAuth;
use crate::http::{router, serve_secured, Health, ServerSecurity};
use crate::metrics::MetricsText;
use crate::tls::test_pki::{Issued, Pki, Written};
use crate::tls::{ClientCertificates, TlsKeys};

#[derive(Debug)]
struct NoMetrics;

impl MetricsText for NoMetrics {
    fn encode(&self) -> String {
        "# EOF\n".to_owned()
    }
}

/// A server on a loopback port, stopped when dropped.
struct Served {
    addr: SocketAddr,
    tls: Arc<ReloadingTls>,
    _stop: oneshot::Sender<()>,
    files: Written,
}

async fn start(pki: &Pki, clients: ClientCertificates, delegated: bool) -> Served {
    let written = pki.write_server(true);
    let tls = ReloadingTls::load(written.files.clone(), TlsKeys::HTTP, clients).expect("tls");
    let mut security = ServerSecurity::plain().with_tls(Arc::clone(&tls));
    if delegated {
        let paths = vec!["/healthz".to_owned(), "/readyz".to_owned()];
        let auth = DelegatedAuth::new(Arc::new(FakeApiServer::default()), paths);
        security = security.with_auth(Arc::new(auth));
    }
    let health = Arc::new(Health::new(Duration::from_secs(30)));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve_secured(
        listener,
        router(health, Arc::new(NoMetrics)),
        security,
        async {
            let _ = stopped.await;
        },
    ));
    Served {
        addr,
        tls,
        _stop: stop,
        files: written,
    }
}

/// The DER of the certificate the server at `addr` presents.
async fn served_certificate(addr: SocketAddr, ca_pem: &str) -> Vec<u8> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let stream = TlsConnector::from(Arc::new(client_config(ca_pem, None)))
        .connect(name, tcp)
        .await
        .expect("handshake");
    let chain = stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("a certificate");
    chain[0].as_ref().to_vec()
}

fn client_config(ca_pem: &str, client: Option<&Issued>) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(certificate.expect("pem")).expect("root");
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
    match client {
        Some(issued) => builder
            .with_client_auth_cert(
                vec![issued.cert.der().clone()],
                PrivateKeyDer::from_pem_slice(issued.key.serialize_pem().as_bytes()).expect("key"),
            )
            .expect("client auth"),
        None => builder.with_no_client_auth(),
    }
}

/// The status line and body of one GET, or the error of the TLS handshake
/// or of the first read (TLS 1.3 reports a refused client certificate there).
async fn get(
    addr: SocketAddr,
    config: ClientConfig,
    path: &str,
    token: Option<&str>,
) -> Result<String, std::io::Error> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("name");
    let mut stream = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}

fn status(response: &str) -> &str {
    response.split(' ').nth(1).unwrap_or("")
}

#[tokio::test]
async fn probes_are_open_and_metrics_need_an_authorized_user() {
    let pki = Pki::new();
    let server = start(&pki, ClientCertificates::Optional, true).await;
    let anonymous = || client_config(&pki.ca_pem, None);

    let response = get(server.addr, anonymous(), "/healthz", None)
        .await
        .expect("served");
    assert_eq!(status(&response), "200", "{response}");
    let response = get(server.addr, anonymous(), "/metrics", None)
        .await
        .expect("served");
    assert_eq!(status(&response), "401", "{response}");
    let response = get(server.addr, anonymous(), "/metrics", Some("forged"))
        .await
        .expect("served");
    assert_eq!(status(&response), "401", "{response}");
    assert!(
        response.ends_with("unauthorized: invalid bearer token"),
        "{response}"
    );
    let response = get(server.addr, anonymous(), "/metrics", Some("good"))
        .await
        .expect("served");
    assert_eq!(status(&response), "200", "{response}");

    // Client certificates: CN "scraper" is allowed by the fake RBAC, another CN is not.
    let scraper = pki.client("scraper", "monitoring");
    let response = get(
        server.addr,
        client_config(&pki.ca_pem, Some(&scraper)),
        "/metrics",
        None,
    )
    .await
    .expect("served");
    assert_eq!(status(&response), "200", "{response}");
    let stranger = pki.client("stranger", "nobody");
    let response = get(
        server.addr,
        client_config(&pki.ca_pem, Some(&stranger)),
        "/metrics",
        None,
    )
    .await
    .expect("served");
    assert_eq!(status(&response), "403", "{response}");
    assert!(
        response.contains("forbidden: user \"stranger\" cannot get path \"/metrics\""),
        "{response}"
    );

    // A certificate of another CA fails the handshake.
    let other = Pki::new().client("scraper", "monitoring");
    let refused = get(
        server.addr,
        client_config(&pki.ca_pem, Some(&other)),
        "/metrics",
        None,
    )
    .await;
    assert!(refused.is_err(), "{refused:?}");
}

#[tokio::test]
async fn plain_http_to_a_tls_port_gets_no_answer() {
    let pki = Pki::new();
    let server = start(&pki, ClientCertificates::Optional, false).await;
    let mut tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut response = Vec::new();
    let _ = tcp.read_to_end(&mut response).await;
    assert!(!String::from_utf8_lossy(&response).contains("200 OK"));
}

#[tokio::test]
async fn a_required_client_certificate_is_checked_in_the_handshake() {
    let pki = Pki::new();
    let clients = ClientCertificates::Required {
        allowed_names: vec!["kube-scheduler".to_owned()],
    };
    let server = start(&pki, clients, false).await;

    let scheduler = pki.client("kube-scheduler", "");
    let response = get(
        server.addr,
        client_config(&pki.ca_pem, Some(&scheduler)),
        "/readyz",
        None,
    )
    .await
    .expect("served");
    assert_eq!(
        status(&response),
        "503",
        "not synced yet, but answered: {response}"
    );

    let refused = get(
        server.addr,
        client_config(&pki.ca_pem, None),
        "/readyz",
        None,
    )
    .await;
    assert!(refused.is_err(), "no certificate: {refused:?}");
    let other_name = pki.client("someone-else", "");
    let refused = get(
        server.addr,
        client_config(&pki.ca_pem, Some(&other_name)),
        "/readyz",
        None,
    )
    .await;
    assert!(refused.is_err(), "CN not allowed: {refused:?}");
}

#[tokio::test]
async fn a_renewed_certificate_is_served_to_new_connections() {
    let pki = Pki::new();
    let server = start(&pki, ClientCertificates::Optional, false).await;
    let before = served_certificate(server.addr, &pki.ca_pem).await;

    let renewed = pki.server();
    std::fs::write(&server.files.files.cert_file, renewed.cert.pem()).expect("write");
    std::fs::write(&server.files.files.key_file, renewed.key.serialize_pem()).expect("write");
    // What the reloader task does on its next tick.
    assert!(server.tls.reload().expect("reloaded"));

    let after = served_certificate(server.addr, &pki.ca_pem).await;
    assert_ne!(before, after);
    assert_eq!(after, renewed.cert.der().as_ref());
}
