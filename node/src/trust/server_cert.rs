//! A server certificate for the client API that is not the region's own
//! (for example a public one that cert-manager keeps in a Secret): read from
//! PEM files and re-read when they change, like the region's credentials.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::credentials::RELOAD_INTERVAL;
use crate::Error;

pub struct ServerCert {
    cert: PathBuf,
    key: PathBuf,
    /// The configuration, and the PEM texts it was made from.
    current: RwLock<(Arc<ServerConfig>, String, String)>,
}

fn invalid(what: &str, e: impl std::fmt::Display) -> Error {
    Error::FailedPrecondition(format!("client API certificate: {what}: {e}"))
}

/// A TLS 1.3 server configuration from a certificate chain and key (PEM),
/// asking clients for no certificate.
pub fn server_config(cert_pem: &str, key_pem: &str) -> Result<Arc<ServerConfig>, Error> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| invalid("certificate", e))?;
    if chain.is_empty() {
        return Err(invalid("certificate", "no certificate"));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| invalid("key", e))?;
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| invalid("TLS", e))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| invalid("certificate and key", e))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

impl ServerCert {
    pub fn load(cert: PathBuf, key: PathBuf) -> Result<Arc<Self>, Error> {
        let (cert_pem, key_pem) = read(&cert, &key)?;
        let config = server_config(&cert_pem, &key_pem)?;
        Ok(Arc::new(Self {
            cert,
            key,
            current: RwLock::new((config, cert_pem, key_pem)),
        }))
    }

    pub fn config(&self) -> Arc<ServerConfig> {
        self.current.read().expect("server certificate").0.clone()
    }

    /// Re-reads the files; a broken or half-written pair keeps the last
    /// good one. Returns whether they changed.
    pub fn reload(&self) -> Result<bool, Error> {
        let (cert_pem, key_pem) = read(&self.cert, &self.key)?;
        {
            let current = self.current.read().expect("server certificate");
            if current.1 == cert_pem && current.2 == key_pem {
                return Ok(false);
            }
        }
        let config = server_config(&cert_pem, &key_pem)?;
        *self.current.write().expect("server certificate") = (config, cert_pem, key_pem);
        Ok(true)
    }

    /// Re-reads the files every second while `self` is in use.
    pub fn watch(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RELOAD_INTERVAL).await;
                let Some(cert) = weak.upgrade() else {
                    return;
                };
                match cert.reload() {
                    Ok(true) => tracing::info!("client API certificate reloaded"),
                    Ok(false) => {}
                    Err(err) => tracing::warn!(%err, "client API certificate change ignored"),
                }
            }
        });
    }
}

fn read(cert: &PathBuf, key: &PathBuf) -> Result<(String, String), Error> {
    let text =
        |p: &PathBuf| std::fs::read_to_string(p).map_err(|e| invalid(&p.display().to_string(), e));
    Ok((text(cert)?, text(key)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::pki::{DEFAULT_LIFETIME, MeshCa};

    #[tokio::test]
    async fn a_renewed_certificate_is_served_to_new_connections() {
        let ca = MeshCa::generate("public").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let write = |hosts: &[String]| {
            let issued = ca.issue_region("eu", "x", hosts, DEFAULT_LIFETIME).unwrap();
            std::fs::write(&cert, issued.cert_pem).unwrap();
            std::fs::write(&key, issued.key_pem).unwrap();
        };
        write(&["chat.example.com".into()]);
        let served = ServerCert::load(cert.clone(), key.clone()).unwrap();
        assert!(!served.reload().unwrap(), "unchanged files");
        let handshake = |name: &'static str| {
            let config = served.config();
            let client = crate::trust::tls::ca_only_client(&ca.cert_pem).unwrap();
            async move {
                let (a, b) = tokio::io::duplex(64 * 1024);
                let name = rustls::pki_types::ServerName::try_from(name).unwrap();
                let (s, c) = tokio::join!(
                    tokio_rustls::TlsAcceptor::from(config).accept(a),
                    tokio_rustls::TlsConnector::from(client).connect(name, b)
                );
                s.is_ok() && c.is_ok()
            }
        };
        assert!(handshake("chat.example.com").await);
        assert!(!handshake("other.example.com").await);
        write(&["other.example.com".into()]);
        assert!(served.reload().unwrap());
        assert!(handshake("other.example.com").await);
        std::fs::write(&key, "not a key").unwrap();
        assert!(served.reload().is_err(), "a broken key is refused");
        assert!(
            handshake("other.example.com").await,
            "and the last good one kept"
        );
    }
}
