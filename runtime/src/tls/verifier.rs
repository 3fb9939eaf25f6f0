//! A client certificate verifier that also restricts the subject CN, so that
//! a certificate from the right CA but for another client (the CA of a
//! cluster signs many) is refused during the handshake.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};

use super::certificate_identity;

/// [`ClientCertVerifier`] of `inner`, then: the CN is one of `allowed_names`.
#[derive(Debug)]
pub(super) struct AllowedNames {
    inner: Arc<dyn ClientCertVerifier>,
    allowed_names: Vec<String>,
}

impl AllowedNames {
    pub(super) fn new(inner: Arc<dyn ClientCertVerifier>, allowed_names: Vec<String>) -> Self {
        Self {
            inner,
            allowed_names,
        }
    }
}

impl ClientCertVerifier for AllowedNames {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let name = certificate_identity(end_entity).map(|identity| identity.common_name);
        match name {
            Some(name) if self.allowed_names.contains(&name) => Ok(verified),
            name => {
                tracing::warn!(
                    common_name = name.as_deref().unwrap_or("(none)"),
                    allowed = ?self.allowed_names,
                    "client certificate refused: its CN is not an allowed client name"
                );
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::ApplicationVerificationFailure,
                ))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
