//! A throw-away CA with server and client certificates for the TLS tests.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use tempfile::TempDir;

use super::TlsFiles;

/// A CA that signs a server certificate for `localhost` and client certificates.
pub(crate) struct Pki {
    issuer: Issuer<'static, KeyPair>,
    pub(crate) ca_pem: String,
}

/// A certificate and its key.
pub(crate) struct Issued {
    pub(crate) cert: rcgen::Certificate,
    pub(crate) key: KeyPair,
}

/// Server files written to a temporary directory (removed on drop).
pub(crate) struct Written {
    pub(crate) dir: TempDir,
    pub(crate) files: TlsFiles,
}

impl Pki {
    pub(crate) fn new() -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "test-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).expect("CA");
        Self {
            ca_pem: ca.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    pub(crate) fn server(&self) -> Issued {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("params");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer).expect("server");
        Issued { cert, key }
    }

    pub(crate) fn client(&self, common_name: &str, organization: &str) -> Issued {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, organization);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer).expect("client");
        Issued { cert, key }
    }

    /// A fresh server certificate, its key and (with `client_ca`) this CA.
    pub(crate) fn write_server(&self, client_ca: bool) -> Written {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = self.server();
        let files = TlsFiles {
            cert_file: dir.path().join("tls.crt"),
            key_file: dir.path().join("tls.key"),
            client_ca_file: client_ca.then(|| dir.path().join("ca.crt")),
        };
        std::fs::write(&files.cert_file, server.cert.pem()).expect("write");
        std::fs::write(&files.key_file, server.key.serialize_pem()).expect("write");
        if let Some(ca) = &files.client_ca_file {
            std::fs::write(ca, &self.ca_pem).expect("write");
        }
        Written { dir, files }
    }
}
