//! HTTPS endpoints of Phalanx's components: throw-away certificates (a CA
//! that signs a serving certificate for loopback and client certificates),
//! GETs over TLS with a bearer token or a client certificate, ServiceAccount
//! tokens, and `phalanx-scheduler run` with its probe and metrics port on
//! HTTPS with authentication delegated to the API server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::PostParams;
use kube::Api;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{HarnessError, Result};
use crate::phalanx::{ensure_namespace, PhalanxHandle, PhalanxOptions};
use crate::tokens::{request_token, token_request};
use crate::ControlPlane;

/// A CA, a serving certificate for `localhost` and `127.0.0.1` it signed,
/// and client certificates on demand, as PEM files in one directory.
pub struct EndpointPki {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate: clients trust it, servers verify clients with it.
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl std::fmt::Debug for EndpointPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointPki")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// A client certificate and its key.
#[derive(Debug, Clone)]
pub struct ClientCertificate {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl EndpointPki {
    /// Generates the CA and the serving certificate into `dir` (created).
    pub fn generate(dir: &Path, ca_name: &str) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| HarnessError::io(format!("creating {}", dir.display()), e))?;
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, ca_name);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate()?;
        let mut server =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        server
            .distinguished_name
            .push(DnType::CommonName, "phalanx");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server.signed_by(&server_key, &issuer)?;

        let pki = Self {
            dir: dir.to_owned(),
            issuer,
            ca: dir.join("ca.crt"),
            server_cert: dir.join("tls.crt"),
            server_key: dir.join("tls.key"),
        };
        write(&pki.ca, &ca_cert.pem())?;
        write(&pki.server_cert, &server_cert.pem())?;
        write(&pki.server_key, &server_key.serialize_pem())?;
        Ok(pki)
    }

    /// A client certificate for user `common_name` in group `organization`.
    pub fn client(
        &self,
        common_name: &str,
        organization: Option<&str>,
    ) -> Result<ClientCertificate> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        if let Some(organization) = organization {
            params
                .distinguished_name
                .push(DnType::OrganizationName, organization);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer)?;
        let client = ClientCertificate {
            cert: self.dir.join(format!("{common_name}.crt")),
            key: self.dir.join(format!("{common_name}.key")),
        };
        write(&client.cert, &cert.pem())?;
        write(&client.key, &key.serialize_pem())?;
        Ok(client)
    }

    /// The `tls` section of a Phalanx config (`http.tls`, `extender.tls`)
    /// serving this PKI's certificate and verifying clients against its CA.
    pub fn tls_section(&self) -> serde_json::Value {
        serde_json::json!({
            "certFile": self.server_cert,
            "keyFile": self.server_key,
            "clientCAFile": self.ca,
        })
    }
}

fn write(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents)
        .map_err(|e| HarnessError::io(format!("writing {}", path.display()), e))
}

/// How a [`https_get`] authenticates.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    pub bearer_token: Option<&'a str>,
    pub certificate: Option<&'a ClientCertificate>,
}

/// GETs `path` over TLS from `addr`, trusting `ca`; returns the status and
/// the body. `Err` when the connection, the TLS handshake or the first read
/// fails (a server that refuses the client certificate ends the connection
/// during or just after the handshake).
pub async fn https_get(
    addr: SocketAddr,
    ca: &Path,
    path: &str,
    credentials: Credentials<'_>,
) -> std::result::Result<(u16, String), String> {
    let config = client_config(ca, credentials.certificate)?;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    let name = ServerName::IpAddress(addr.ip().into());
    let mut stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
    let authorization = credentials
        .bearer_token
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{authorization}Connection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("writing to {addr}: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .map_err(|e| format!("reading from {addr}: {e}"))?;
    crate::probe::parse_response(&response, &format!("GET https://{addr}{path}"))
}

fn client_config(
    ca: &Path,
    certificate: Option<&ClientCertificate>,
) -> std::result::Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))? {
        let cert = cert.map_err(|e| format!("{}: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match certificate {
        None => Ok(builder.with_no_client_auth()),
        Some(client) => {
            let chain = CertificateDer::pem_file_iter(&client.cert)
                .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
                .map_err(|e| format!("{}: {e}", client.cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(&client.key)
                .map_err(|e| format!("{}: {e}", client.key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| e.to_string())
        }
    }
}

/// Creates ServiceAccount `namespace/name` (if missing) and returns a token
/// for it from the TokenRequest API, valid for an hour.
pub async fn service_account_token(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<String> {
    ensure_namespace(client, namespace).await?;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let account = ServiceAccount {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        ..Default::default()
    };
    match accounts.create(&PostParams::default(), &account).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => return Err(error.into()),
    }
    request_token(client, namespace, name, &token_request(None)).await
}

impl ControlPlane {
    /// Starts `phalanx-scheduler run` with the admin kubeconfig and its
    /// probe and metrics port on HTTPS (`pki`'s certificate, client
    /// certificates of `pki`'s CA accepted) with `http.authentication:
    /// delegated`, and waits until `/readyz` answers 200 over TLS without
    /// credentials. The CRDs must be installed first.
    pub async fn start_phalanx_scheduler_https(
        &mut self,
        options: &PhalanxOptions,
        pki: &EndpointPki,
    ) -> Result<PhalanxHandle> {
        let secure = serde_json::json!({
            "http": { "tls": pki.tls_section(), "authentication": "delegated" },
        });
        let ca = pki.ca.clone();
        self.spawn_phalanx_probed(options, "run", secure, move |http| {
            let ca = ca.clone();
            async move {
                match https_get(http, &ca, "/readyz", Credentials::default()).await? {
                    (200, _) => Ok(()),
                    (status, body) => Err(format!("GET /readyz: {status} {body}")),
                }
            }
        })
        .await
    }
}

/// How often [`wait_status`] asks again.
pub const STATUS_POLL: Duration = Duration::from_millis(200);

/// GETs `path` until it answers `status` (RBAC changes reach the API
/// server's authorizer and our decision cache within seconds), up to
/// `deadline`; returns the last answer either way.
pub async fn wait_status(
    addr: SocketAddr,
    ca: &Path,
    path: &str,
    credentials: Credentials<'_>,
    status: u16,
    deadline: Duration,
) -> std::result::Result<(u16, String), String> {
    let end = tokio::time::Instant::now() + deadline;
    loop {
        let answer = https_get(addr, ca, path, credentials).await;
        let done = matches!(&answer, Ok((got, _)) if *got == status);
        if done || tokio::time::Instant::now() >= end {
            return answer;
        }
        tokio::time::sleep(STATUS_POLL).await;
    }
}
