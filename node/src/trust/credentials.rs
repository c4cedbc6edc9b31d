//! A process's credentials: the mesh CA it trusts, its own certificate and
//! key. They are read from PEM files and re-read when the files change, so a
//! renewed certificate is used for new handshakes while established
//! connections carry on.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, TrustAnchor};

use super::pki::Identity;
use crate::Error;

/// How often the files are checked for a renewed certificate.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// Where a process's credentials live.
#[derive(Clone, Debug)]
pub struct CredentialFiles {
    /// The mesh CA bundle (one or more certificates, during a CA rotation).
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// One consistent set of credentials.
pub struct Loaded {
    pub identity: Identity,
    pub roots: Arc<RootCertStore>,
    pub anchors: Vec<TrustAnchor<'static>>,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: Arc<PrivateKeyDer<'static>>,
    /// The same key, for origin signatures.
    pub signer: Arc<EcdsaKeyPair>,
    pub configs: super::tls::Configs,
    /// The PEM texts they were read from, to notice a change.
    source: (String, String, String),
}

/// The current credentials of this process.
pub struct Credentials {
    files: Option<CredentialFiles>,
    current: RwLock<Arc<Loaded>>,
    /// Bumped on every reload, so that caches of verified peers start over.
    generation: std::sync::atomic::AtomicU64,
}

fn invalid(what: &str, e: impl std::fmt::Display) -> Error {
    Error::FailedPrecondition(format!("credentials: {what}: {e}"))
}

impl Loaded {
    /// Parses the three PEM texts and checks that they belong together.
    pub fn from_pem(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<Self, Error> {
        let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(ca_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| invalid("CA bundle", e))?;
        if cas.is_empty() {
            return Err(invalid("CA bundle", "no certificate"));
        }
        let mut roots = RootCertStore::empty();
        let mut anchors = Vec::new();
        for ca in &cas {
            roots.add(ca.clone()).map_err(|e| invalid("CA", e))?;
            anchors.push(
                webpki::anchor_from_trusted_cert(ca)
                    .map_err(|e| invalid("CA", e))?
                    .to_owned(),
            );
        }
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| invalid("certificate", e))?;
        let leaf = chain
            .first()
            .ok_or_else(|| invalid("certificate", "no certificate"))?;
        let identity = super::verify::identity_of(leaf)?;
        let key =
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| invalid("key", e))?;
        let PrivateKeyDer::Pkcs8(pkcs8) = &key else {
            return Err(invalid("key", "not a PKCS#8 key"));
        };
        let signer = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_ASN1_SIGNING,
            pkcs8.secret_pkcs8_der(),
            &ring::rand::SystemRandom::new(),
        )
        .map_err(|e| invalid("key (ECDSA P-256 expected)", e))?;
        let probe = b"meridian key check";
        let signature = super::verify::sign(&signer, probe)?;
        super::verify::check_signature(leaf, probe, &signature)
            .map_err(|_| invalid("key", "it does not belong to the certificate"))?;
        let roots = Arc::new(roots);
        let configs = super::tls::Configs::new(&roots, &chain, &key)?;
        Ok(Self {
            identity,
            roots,
            anchors,
            chain,
            key: Arc::new(key),
            signer: Arc::new(signer),
            configs,
            source: (ca_pem.to_owned(), cert_pem.to_owned(), key_pem.to_owned()),
        })
    }

    /// This process's certificate (PEM), as read.
    pub fn certificate_pem(&self) -> &str {
        &self.source.1
    }

    /// This process's certificate (DER), carried with its origin signatures.
    pub fn certificate(&self) -> &[u8] {
        self.chain[0].as_ref()
    }
}

impl Credentials {
    /// Reads the files once; [`Credentials::watch`] keeps them current.
    /// A renewal replaces the certificate and the key one file at a time,
    /// so a set that does not hold together is read again, for at most
    /// [`LOAD_ATTEMPTS`] tries [`LOAD_RETRY`] apart, before it is refused.
    pub fn load(files: CredentialFiles) -> Result<Arc<Self>, Error> {
        let mut attempt = 1;
        let loaded = loop {
            match read(&files) {
                Ok(loaded) => break loaded,
                Err(err) if attempt < LOAD_ATTEMPTS => {
                    tracing::debug!(%err, attempt, "credentials unreadable; reading again");
                    attempt += 1;
                    std::thread::sleep(LOAD_RETRY);
                }
                Err(err) => return Err(err),
            }
        };
        Ok(Arc::new(Self {
            files: Some(files),
            current: RwLock::new(Arc::new(loaded)),
            generation: Default::default(),
        }))
    }

    /// Fixed credentials (tests and tools).
    pub fn fixed(loaded: Loaded) -> Arc<Self> {
        Arc::new(Self {
            files: None,
            current: RwLock::new(Arc::new(loaded)),
            generation: Default::default(),
        })
    }

    pub fn current(&self) -> Arc<Loaded> {
        self.current.read().expect("credentials").clone()
    }

    pub fn identity(&self) -> Identity {
        self.current().identity.clone()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Re-reads the files; returns whether they changed. A broken or
    /// half-written set keeps the last good one.
    pub fn reload(&self) -> Result<bool, Error> {
        let Some(files) = &self.files else {
            return Ok(false);
        };
        let texts = read_texts(files)?;
        if texts == self.current().source {
            return Ok(false);
        }
        let loaded = Loaded::from_pem(&texts.0, &texts.1, &texts.2)?;
        if loaded.identity != self.current().identity {
            return Err(invalid(
                "certificate",
                format!("it names {}, not {}", loaded.identity, self.identity()),
            ));
        }
        *self.current.write().expect("credentials") = Arc::new(loaded);
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(true)
    }

    /// Re-reads the files every [`RELOAD_INTERVAL`] while `self` is in use,
    /// on a task of its own.
    pub fn watch(self: &Arc<Self>) {
        tokio::spawn(self.reloads());
    }

    /// The reload loop itself, for an owner that runs it as one of its
    /// tasks: it re-reads the files every [`RELOAD_INTERVAL`], and ends
    /// once `self` is no longer in use (or at once, with no files).
    pub fn reloads(self: &Arc<Self>) -> impl std::future::Future<Output = ()> + Send + 'static {
        let weak = Arc::downgrade(self);
        let files = self.files.is_some();
        async move {
            if !files {
                return;
            }
            loop {
                tokio::time::sleep(RELOAD_INTERVAL).await;
                let Some(credentials) = weak.upgrade() else {
                    return;
                };
                match credentials.reload() {
                    Ok(true) => {
                        tracing::info!(identity = %credentials.identity(), "credentials reloaded")
                    }
                    Ok(false) => {}
                    Err(err) => tracing::warn!(%err, "credentials change ignored"),
                }
            }
        }
    }
}

fn read_texts(files: &CredentialFiles) -> Result<(String, String, String), Error> {
    let read = |path: &PathBuf| {
        std::fs::read_to_string(path).map_err(|e| invalid(&path.display().to_string(), e))
    };
    Ok((read(&files.ca)?, read(&files.cert)?, read(&files.key)?))
}

/// How often [`Credentials::load`] reads a set that does not hold together.
const LOAD_ATTEMPTS: u32 = 5;
/// How long it waits between those reads: a renewal writes its files within
/// milliseconds of each other.
const LOAD_RETRY: std::time::Duration = std::time::Duration::from_millis(50);

fn read(files: &CredentialFiles) -> Result<Loaded, Error> {
    let (ca, cert, key) = read_texts(files)?;
    Loaded::from_pem(&ca, &cert, &key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::pki::{DEFAULT_LIFETIME, MeshCa};

    fn files(dir: &std::path::Path) -> CredentialFiles {
        CredentialFiles {
            ca: dir.join("ca.crt"),
            cert: dir.join("eu.crt"),
            key: dir.join("eu.key"),
        }
    }

    #[test]
    fn a_set_caught_mid_renewal_is_read_again_and_a_broken_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = MeshCa::generate("test").unwrap();
        let old = ca
            .issue_region("eu", "test", &[], DEFAULT_LIFETIME)
            .unwrap();
        let new = ca
            .issue_region("eu", "test", &[], DEFAULT_LIFETIME)
            .unwrap();
        let f = files(dir.path());
        std::fs::write(&f.ca, &ca.cert_pem).unwrap();
        // The new certificate is written, the old key is still there.
        std::fs::write(&f.cert, &new.cert_pem).unwrap();
        std::fs::write(&f.key, &old.key_pem).unwrap();
        let (key, key_pem) = (f.key.clone(), new.key_pem.clone());
        let renewal = std::thread::spawn(move || {
            std::thread::sleep(LOAD_RETRY / 2);
            std::fs::write(key, key_pem).unwrap();
        });
        let loaded = Credentials::load(files(dir.path())).expect("read once the key is in");
        renewal.join().unwrap();
        assert_eq!(loaded.current().certificate_pem(), new.cert_pem);

        std::fs::write(&f.key, &old.key_pem).unwrap();
        let err = Credentials::load(files(dir.path()))
            .err()
            .expect("a key that never matches is refused");
        assert!(err.to_string().contains("does not belong"), "{err}");
    }
}
