//! Server certificates for HTTPS: PEM files named in a config section, loaded
//! into a rustls server configuration (ring provider), reloaded when the files
//! change (cert-manager and kubelet rewrite a mounted Secret in place), and the
//! identity (CN, O) of a verified client certificate.
//!
//! A client CA makes the server ask for client certificates: optional where
//! other credentials (a bearer token) may come instead, required where a
//! certificate is the only credential (the extender), optionally restricted to
//! certificates whose CN is in a list, refused during the handshake.

mod reload;
mod verifier;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

pub use reload::{ReloadingTls, RELOAD_CHECK_PERIOD};

/// The PEM files of one TLS server, as written in a config section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsFiles {
    /// The server's certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// The private key of the leaf certificate (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// CA certificates that sign accepted client certificates; without it no
    /// client certificate is asked for.
    #[serde(default, rename = "clientCAFile")]
    pub client_ca_file: Option<PathBuf>,
}

/// Whether a client must present a certificate signed by the client CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCertificates {
    /// Asked for and verified when offered; clients without one get through
    /// the handshake (and must bring other credentials).
    Optional,
    /// The handshake fails without a verified certificate; with names, its
    /// CN must also be one of them.
    Required { allowed_names: Vec<String> },
}

/// Why a server's TLS configuration cannot be built; names the config key
/// and the file.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {}: {problem}", path.display())]
pub struct TlsError {
    /// Dotted config key of the file (`http.tls.certFile`).
    pub key: String,
    pub path: PathBuf,
    pub problem: String,
}

/// Where the files' keys live in the config (`http.tls`, `extender.tls`), for errors.
#[derive(Debug, Clone, Copy)]
pub struct TlsKeys {
    pub cert_file: &'static str,
    pub key_file: &'static str,
    pub client_ca_file: &'static str,
}

impl TlsKeys {
    /// The keys of the probe and metrics server's `http.tls` section.
    pub const HTTP: TlsKeys = TlsKeys {
        cert_file: "http.tls.certFile",
        key_file: "http.tls.keyFile",
        client_ca_file: "http.tls.clientCAFile",
    };
}

/// The identity a verified client certificate carries, read as Kubernetes
/// reads it: user = subject CN, groups = subject O values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateIdentity {
    pub common_name: String,
    pub organizations: Vec<String>,
}

/// The file contents a server configuration is built from; compared on
/// each reload check, so that an unchanged file costs no rebuild.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsMaterial {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl TlsMaterial {
    pub(crate) fn read(files: &TlsFiles, keys: TlsKeys) -> Result<Self, TlsError> {
        Ok(Self {
            cert: read_file(keys.cert_file, &files.cert_file)?,
            key: read_file(keys.key_file, &files.key_file)?,
            client_ca: files
                .client_ca_file
                .as_deref()
                .map(|path| read_file(keys.client_ca_file, path))
                .transpose()?,
        })
    }
}

fn read_file(key: &str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError {
        key: key.to_owned(),
        path: path.to_owned(),
        problem: format!("cannot read: {error}"),
    })
}

/// Builds the rustls configuration of one server from the files' contents.
pub(crate) fn server_config(
    files: &TlsFiles,
    keys: TlsKeys,
    material: &TlsMaterial,
    clients: &ClientCertificates,
) -> Result<ServerConfig, TlsError> {
    let error = |key: &str, path: &Path, problem: String| TlsError {
        key: key.to_owned(),
        path: path.to_owned(),
        problem,
    };
    let chain = certificates(&material.cert)
        .map_err(|problem| error(keys.cert_file, &files.cert_file, problem))?;
    let private_key = PrivateKeyDer::from_pem_slice(&material.key).map_err(|e| {
        error(
            keys.key_file,
            &files.key_file,
            format!("no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| error(keys.cert_file, &files.cert_file, e.to_string()))?;
    let builder = match (&material.client_ca, &files.client_ca_file) {
        (Some(ca), Some(ca_path)) => {
            let verifier = client_verifier(ca, provider, clients)
                .map_err(|problem| error(keys.client_ca_file, ca_path, problem))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, private_key).map_err(|e| {
        error(
            keys.key_file,
            &files.key_file,
            format!(
                "does not fit the certificate in {} ({}): {e}",
                keys.cert_file,
                files.cert_file.display()
            ),
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM certificates: {e}"))?;
    if chain.is_empty() {
        return Err("no PEM certificate (BEGIN CERTIFICATE) in the file".to_owned());
    }
    Ok(chain)
}

fn client_verifier(
    ca_pem: &[u8],
    provider: Arc<CryptoProvider>,
    clients: &ClientCertificates,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, String> {
    let mut roots = RootCertStore::empty();
    for certificate in certificates(ca_pem)? {
        roots
            .add(certificate)
            .map_err(|e| format!("not a usable CA certificate: {e}"))?;
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    match clients {
        ClientCertificates::Optional => builder
            .allow_unauthenticated()
            .build()
            .map_err(|e| e.to_string()),
        ClientCertificates::Required { allowed_names } => {
            let inner = builder.build().map_err(|e| e.to_string())?;
            if allowed_names.is_empty() {
                Ok(inner)
            } else {
                Ok(Arc::new(verifier::AllowedNames::new(
                    inner,
                    allowed_names.clone(),
                )))
            }
        }
    }
}

/// The CN and O values of a DER certificate; `None` when it cannot be parsed
/// or has no CN (never for a certificate rustls verified against our CA
/// unless the CA signs CN-less certificates).
pub fn certificate_identity(der: &[u8]) -> Option<CertificateIdentity> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = certificate.subject();
    let common_name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())?
        .to_owned();
    let organizations = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_owned))
        .collect();
    Some(CertificateIdentity {
        common_name,
        organizations,
    })
}

#[cfg(test)]
pub(crate) mod test_pki;

#[cfg(test)]
mod tests {
    use super::test_pki::{Pki, Written};
    use super::*;

    fn build(written: &Written, clients: &ClientCertificates) -> Result<ServerConfig, TlsError> {
        let material = TlsMaterial::read(&written.files, TlsKeys::HTTP)?;
        server_config(&written.files, TlsKeys::HTTP, &material, clients)
    }

    #[test]
    fn good_files_build_a_server() {
        let pki = Pki::new();
        let written = pki.write_server(true);
        build(&written, &ClientCertificates::Optional).expect("usable");
    }

    #[test]
    fn a_missing_file_names_the_key_and_path() {
        let pki = Pki::new();
        let mut written = pki.write_server(false);
        written.files.cert_file = written.dir.path().join("absent.crt");
        let error = build(&written, &ClientCertificates::Optional).expect_err("missing");
        let text = error.to_string();
        assert!(text.starts_with("http.tls.certFile: "), "{text}");
        assert!(text.contains("absent.crt: cannot read"), "{text}");
    }

    #[test]
    fn a_file_without_pem_is_refused_with_its_key() {
        let pki = Pki::new();
        let written = pki.write_server(true);
        std::fs::write(&written.files.cert_file, "not a certificate").expect("write");
        let error = build(&written, &ClientCertificates::Optional).expect_err("no PEM");
        assert_eq!(error.key, "http.tls.certFile");
        assert!(error.problem.contains("no PEM certificate"), "{error}");

        let written = pki.write_server(true);
        std::fs::write(&written.files.key_file, "garbage").expect("write");
        let error = build(&written, &ClientCertificates::Optional).expect_err("no key");
        assert_eq!(error.key, "http.tls.keyFile");

        let written = pki.write_server(true);
        let ca = written.files.client_ca_file.clone().expect("ca");
        std::fs::write(&ca, "").expect("write");
        let error = build(&written, &ClientCertificates::Optional).expect_err("no CA");
        assert_eq!(error.key, "http.tls.clientCAFile");
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let pki = Pki::new();
        let written = pki.write_server(false);
        let other = Pki::new().write_server(false);
        std::fs::copy(&other.files.key_file, &written.files.key_file).expect("copy");
        let error = build(&written, &ClientCertificates::Optional).expect_err("mismatch");
        assert_eq!(error.key, "http.tls.keyFile");
        assert!(
            error.problem.contains("does not fit the certificate"),
            "{error}"
        );
    }

    #[test]
    fn identity_is_cn_and_organizations() {
        let pki = Pki::new();
        // rcgen writes one O per certificate; the API server's groups are all of them.
        let client = pki.client("prometheus", "monitoring");
        let identity = certificate_identity(client.cert.der()).expect("parsed");
        assert_eq!(identity.common_name, "prometheus");
        assert_eq!(identity.organizations, ["monitoring"]);
        assert_eq!(certificate_identity(b"not DER"), None);
    }
}
