//! A server configuration that follows its files: cert-manager renews a
//! certificate into the same Secret and kubelet swaps the mounted files, so
//! a long-running server rereads them and new connections get the new
//! certificate. A bad rewrite (half-written, a key of another certificate)
//! keeps the last good configuration and is logged.

use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use rustls::ServerConfig;

use super::{server_config, ClientCertificates, TlsError, TlsFiles, TlsKeys, TlsMaterial};

/// How often the files are compared with what is in use. kubelet refreshes a
/// mounted Secret about once a minute, so a renewal is served within about
/// a minute and a half.
pub const RELOAD_CHECK_PERIOD: Duration = Duration::from_secs(30);

/// The current configuration of one TLS server, rebuilt when its files change.
#[derive(Debug)]
pub struct ReloadingTls {
    files: TlsFiles,
    keys: TlsKeys,
    clients: ClientCertificates,
    in_use: RwLock<(TlsMaterial, Arc<ServerConfig>)>,
}

impl ReloadingTls {
    /// Reads and checks the files now; an error names the key and the file.
    pub fn load(
        files: TlsFiles,
        keys: TlsKeys,
        clients: ClientCertificates,
    ) -> Result<Arc<Self>, TlsError> {
        let material = TlsMaterial::read(&files, keys)?;
        let config = server_config(&files, keys, &material, &clients)?;
        Ok(Arc::new(Self {
            files,
            keys,
            clients,
            in_use: RwLock::new((material, Arc::new(config))),
        }))
    }

    /// The configuration for the next connection.
    pub fn current(&self) -> Arc<ServerConfig> {
        let in_use = self.in_use.read().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(&in_use.1)
    }

    /// Rereads the files: `Ok(true)` when they changed and the new
    /// configuration is in use, `Ok(false)` when nothing changed; on `Err`
    /// the previous configuration stays in use.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let material = TlsMaterial::read(&self.files, self.keys)?;
        if self.in_use.read().unwrap_or_else(PoisonError::into_inner).0 == material {
            return Ok(false);
        }
        let config = server_config(&self.files, self.keys, &material, &self.clients)?;
        *self.in_use.write().unwrap_or_else(PoisonError::into_inner) = (material, Arc::new(config));
        Ok(true)
    }

    /// Checks the files every `period` until the last other holder drops
    /// this configuration.
    pub fn spawn_reloader(self: &Arc<Self>, period: Duration) -> tokio::task::JoinHandle<()> {
        let this: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(tls) = this.upgrade() else { return };
                let cert_file = tls.files.cert_file.clone();
                match tokio::task::spawn_blocking(move || tls.reload()).await {
                    Ok(Ok(true)) => {
                        tracing::info!(cert_file = %cert_file.display(), "TLS certificate reloaded")
                    }
                    Ok(Ok(false)) => {}
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "TLS files changed but cannot be used; keeping the previous certificate")
                    }
                    Err(error) => tracing::warn!(%error, "TLS reload task failed"),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_pki::Pki;
    use super::*;

    #[test]
    fn a_renewed_certificate_is_picked_up_and_a_bad_one_keeps_the_old() {
        let pki = Pki::new();
        let written = pki.write_server(false);
        let tls = ReloadingTls::load(
            written.files.clone(),
            TlsKeys::HTTP,
            ClientCertificates::Optional,
        )
        .expect("loads");
        let first = tls.current();
        assert!(!tls.reload().expect("unchanged"), "nothing changed");
        assert!(Arc::ptr_eq(&first, &tls.current()));

        let renewed = pki.server();
        std::fs::write(&written.files.cert_file, renewed.cert.pem()).expect("write");
        std::fs::write(&written.files.key_file, renewed.key.serialize_pem()).expect("write");
        assert!(tls.reload().expect("renewed"));
        let second = tls.current();
        assert!(!Arc::ptr_eq(&first, &second));

        // Half a renewal: a new certificate with the old key.
        std::fs::write(&written.files.cert_file, pki.server().cert.pem()).expect("write");
        let error = tls.reload().expect_err("mismatch");
        assert_eq!(error.key, "http.tls.keyFile");
        assert!(
            Arc::ptr_eq(&second, &tls.current()),
            "the last good one stays"
        );
    }
}
