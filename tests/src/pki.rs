//! Throw-away credentials for one control plane: a CA, the apiserver's
//! serving certificate, an admin client certificate in `system:masters`, the
//! service-account signing key, and an admin kubeconfig that uses them.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::error::{HarnessError, Result};

/// Names the apiserver's certificate must cover: loopback, and the in-cluster
/// names of the `kubernetes` service (first address of the service range).
const APISERVER_SANS: [&str; 7] = [
    "127.0.0.1",
    "localhost",
    "10.0.0.1",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

/// Paths of the generated files.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca_cert: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    pub service_account_key: PathBuf,
    pub service_account_pub: PathBuf,
}

impl Pki {
    /// Generates everything into `dir`.
    pub fn generate(dir: &Path) -> Result<Self> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "phalanx-e2e-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let serving_key = KeyPair::generate()?;
        let mut serving = CertificateParams::new(
            APISERVER_SANS
                .iter()
                .map(|s| (*s).to_owned())
                .collect::<Vec<_>>(),
        )?;
        serving
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_cert = serving.signed_by(&serving_key, &issuer)?;

        // system:masters is bound to cluster-admin by the bootstrap RBAC policy.
        let admin_key = KeyPair::generate()?;
        let mut admin = CertificateParams::new(Vec::<String>::new())?;
        admin
            .distinguished_name
            .push(DnType::CommonName, "phalanx-e2e-admin");
        admin
            .distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_cert = admin.signed_by(&admin_key, &issuer)?;

        let sa_key = KeyPair::generate()?;

        let pki = Self {
            ca_cert: dir.join("ca.crt"),
            serving_cert: dir.join("apiserver.crt"),
            serving_key: dir.join("apiserver.key"),
            admin_cert: dir.join("admin.crt"),
            admin_key: dir.join("admin.key"),
            service_account_key: dir.join("sa.key"),
            service_account_pub: dir.join("sa.pub"),
        };
        write(&pki.ca_cert, &ca_cert.pem())?;
        write(&pki.serving_cert, &serving_cert.pem())?;
        write(&pki.serving_key, &serving_key.serialize_pem())?;
        write(&pki.admin_cert, &admin_cert.pem())?;
        write(&pki.admin_key, &admin_key.serialize_pem())?;
        write(&pki.service_account_key, &sa_key.serialize_pem())?;
        write(&pki.service_account_pub, &sa_key.public_key_pem())?;
        Ok(pki)
    }

    /// Writes an admin kubeconfig for `server` (JSON, which every YAML
    /// reader accepts) and returns its path.
    pub fn write_kubeconfig(&self, path: &Path, server: &str) -> Result<PathBuf> {
        let config = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{
                "name": "phalanx-e2e",
                "cluster": { "server": server, "certificate-authority": self.ca_cert },
            }],
            "users": [{
                "name": "admin",
                "user": {
                    "client-certificate": self.admin_cert,
                    "client-key": self.admin_key,
                },
            }],
            "contexts": [{
                "name": "phalanx-e2e",
                "context": { "cluster": "phalanx-e2e", "user": "admin" },
            }],
            "current-context": "phalanx-e2e",
        });
        write(path, &config.to_string())?;
        Ok(path.to_owned())
    }
}

fn write(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents)
        .map_err(|e| HarnessError::io(format!("writing {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_pem_files_and_a_kubeconfig() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::generate(dir.path()).expect("generate");
        for cert in [&pki.ca_cert, &pki.serving_cert, &pki.admin_cert] {
            let text = std::fs::read_to_string(cert).expect("read");
            assert!(text.starts_with("-----BEGIN CERTIFICATE-----"), "{text}");
        }
        let key = std::fs::read_to_string(&pki.service_account_key).expect("read");
        assert!(key.contains("PRIVATE KEY"));
        let path = pki
            .write_kubeconfig(&dir.path().join("kubeconfig"), "https://127.0.0.1:6443")
            .expect("kubeconfig");
        let config = kube::config::Kubeconfig::read_from(path).expect("parses");
        assert_eq!(config.current_context.as_deref(), Some("phalanx-e2e"));
    }
}
