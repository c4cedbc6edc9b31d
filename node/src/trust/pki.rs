//! The mesh CA and the identities it issues (docs/ARCHITECTURE.md §8).
//!
//! A region's certificate names it by the DNS name `<region>.region.meridian`,
//! which peers verify as the TLS server name and servers read as the client's
//! identity. A tool's certificate (the operator, `meridian mesh status`) names
//! it by `<name>.admin.meridian` and may only ask for status. Keys are ECDSA
//! P-256; the same key signs the region's origin signatures.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

use crate::Error;
use crate::ids::is_region_code;

/// How long a region's certificate lives unless told otherwise.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
/// How long the mesh CA lives.
pub const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
/// Certificates are valid from a little before they are made, so that a
/// peer whose clock is slightly behind accepts them at once.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

const REGION_SUFFIX: &str = ".region.meridian";
const ADMIN_SUFFIX: &str = ".admin.meridian";

/// The TLS server name (and DNS SAN) that identifies `region`.
pub fn region_name(region: &str) -> String {
    format!("{region}{REGION_SUFFIX}")
}

/// Who a verified certificate speaks for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    Region(String),
    Admin(String),
}

impl Identity {
    /// Reads the identity from a certificate's DNS names: exactly one must
    /// name a region or a tool.
    pub fn from_dns_names<'a>(names: impl Iterator<Item = &'a str>) -> Option<Identity> {
        let mut found = None;
        for name in names {
            let identity = if let Some(region) = name.strip_suffix(REGION_SUFFIX) {
                is_region_code(region).then(|| Identity::Region(region.to_owned()))
            } else if let Some(tool) = name.strip_suffix(ADMIN_SUFFIX) {
                is_region_code(tool).then(|| Identity::Admin(tool.to_owned()))
            } else {
                None
            };
            if let Some(identity) = identity {
                if found.is_some() {
                    return None;
                }
                found = Some(identity);
            }
        }
        found
    }

    pub fn region(&self) -> Option<&str> {
        match self {
            Identity::Region(r) => Some(r),
            Identity::Admin(_) => None,
        }
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Region(r) => write!(f, "region {r}"),
            Identity::Admin(a) => write!(f, "tool {a}"),
        }
    }
}

/// A certificate and its key, PEM-encoded.
#[derive(Clone, Debug)]
pub struct Credential {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Credential {
    /// Fixed in-memory credentials from this certificate, trusting `ca_pem`
    /// (tests and tools that need no files).
    pub fn credentials(&self, ca_pem: &str) -> Result<std::sync::Arc<super::Credentials>, Error> {
        let loaded = super::credentials::Loaded::from_pem(ca_pem, &self.cert_pem, &self.key_pem)?;
        Ok(super::Credentials::fixed(loaded))
    }
}

/// The mesh CA: issues region and tool certificates.
pub struct MeshCa {
    pub cert_pem: String,
    key: KeyPair,
    issuer: Issuer<'static, KeyPair>,
}

fn pki_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("{what}: {e}"))
}

fn validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + lifetime;
}

impl MeshCa {
    /// A new CA named `name` (the mesh, e.g. its namespace).
    pub fn generate(name: &str) -> Result<Self, Error> {
        let key = KeyPair::generate().map_err(|e| pki_error("CA key", e))?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("Meridian mesh CA {name}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, CA_LIFETIME);
        let cert = params
            .self_signed(&key)
            .map_err(|e| pki_error("CA certificate", e))?;
        Self::from_pem(&cert.pem(), &key.serialize_pem())
    }

    /// The CA from its certificate and key (PEM).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, Error> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| pki_error("CA key", e))?;
        let issuer_key = KeyPair::from_pem(key_pem).map_err(|e| pki_error("CA key", e))?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, issuer_key)
            .map_err(|e| pki_error("CA certificate", e))?;
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            key,
            issuer,
        })
    }

    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A certificate for `region` of mesh `namespace`, valid for `lifetime`.
    /// `hosts` are further DNS names or IP addresses its servers answer at
    /// (for clients that verify the host they dialled).
    pub fn issue_region(
        &self,
        region: &str,
        namespace: &str,
        hosts: &[String],
        lifetime: Duration,
    ) -> Result<Credential, Error> {
        if !is_region_code(region) {
            return Err(Error::InvalidArgument(format!(
                "{region:?} is not a region code"
            )));
        }
        let mut names = vec![region_name(region)];
        names.extend(hosts.iter().cloned());
        let mut params =
            CertificateParams::new(names).map_err(|e| pki_error("certificate names", e))?;
        let uri = format!("spiffe://meridian/ns/{namespace}/region/{region}");
        params.subject_alt_names.push(SanType::URI(
            uri.try_into()
                .map_err(|e| pki_error("certificate URI", e))?,
        ));
        params.distinguished_name.push(DnType::CommonName, region);
        params
            .distinguished_name
            .push(DnType::OrganizationName, namespace);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.sign(params, lifetime)
    }

    /// A client certificate for a tool that only reads status.
    pub fn issue_admin(&self, name: &str, lifetime: Duration) -> Result<Credential, Error> {
        let mut params = CertificateParams::new(vec![format!("{name}{ADMIN_SUFFIX}")])
            .map_err(|e| pki_error("certificate names", e))?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params, lifetime)
    }

    fn sign(&self, mut params: CertificateParams, lifetime: Duration) -> Result<Credential, Error> {
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, lifetime);
        let key = KeyPair::generate().map_err(|e| pki_error("key", e))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| pki_error("certificate", e))?;
        Ok(Credential {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A PEM certificate's validity, as Unix seconds (not before, not after).
pub fn validity_of(cert_pem: &str) -> Result<(i64, i64), Error> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| pki_error("certificate PEM", e))?;
    let cert = pem.parse_x509().map_err(|e| pki_error("certificate", e))?;
    let v = cert.validity();
    Ok((v.not_before.timestamp(), v.not_after.timestamp()))
}

/// Whether a certificate has used up `fraction` of its lifetime (renew then).
pub fn due_for_renewal(cert_pem: &str, fraction: f64) -> bool {
    let Ok((start, end)) = validity_of(cert_pem) else {
        return true;
    };
    let now = crate::now_ms() / 1000;
    now >= start + ((end - start) as f64 * fraction) as i64
}

/// Writes a file that only its owner may read, atomically.
pub fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    write_with_mode(path, contents, 0o600)
}

/// Writes a file atomically with `mode`.
pub fn write_with_mode(path: &Path, contents: &str, mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(tmp, path)
}

/// Creates a directory only its owner may enter.
pub fn private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

/// The files of one identity in a PKI directory (local mode's `DIR/pki/`).
pub struct Files {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Local mode's PKI directory: `ca.crt` and `ca.key`, and `<name>.crt` and
/// `<name>.key` per region and tool. Kept across restarts.
pub struct PkiDir {
    pub dir: PathBuf,
    ca: MeshCa,
}

impl PkiDir {
    /// Opens `dir`, creating the CA on first use.
    pub fn open(dir: &Path, mesh: &str) -> Result<Self, Error> {
        let io = |e: std::io::Error| {
            Error::FailedPrecondition(format!("PKI directory {}: {e}", dir.display()))
        };
        private_dir(dir).map_err(io)?;
        let (cert, key) = (dir.join("ca.crt"), dir.join("ca.key"));
        let ca = match (
            std::fs::read_to_string(&cert),
            std::fs::read_to_string(&key),
        ) {
            (Ok(cert_pem), Ok(key_pem)) => MeshCa::from_pem(&cert_pem, &key_pem)?,
            _ => {
                let ca = MeshCa::generate(mesh)?;
                write_private(&key, &ca.key_pem()).map_err(io)?;
                write_with_mode(&cert, &ca.cert_pem, 0o644).map_err(io)?;
                ca
            }
        };
        Ok(Self {
            dir: dir.to_owned(),
            ca,
        })
    }

    pub fn ca(&self) -> &MeshCa {
        &self.ca
    }

    pub fn files(&self, name: &str) -> Files {
        Files {
            ca: self.dir.join("ca.crt"),
            cert: self.dir.join(format!("{name}.crt")),
            key: self.dir.join(format!("{name}.key")),
        }
    }

    /// Makes sure `name` has a certificate that has used less than a third
    /// of its life; issues one with `issue` otherwise. Returns whether it did.
    pub fn ensure(
        &self,
        name: &str,
        issue: impl FnOnce(&MeshCa) -> Result<Credential, Error>,
    ) -> Result<bool, Error> {
        let files = self.files(name);
        if let Ok(pem) = std::fs::read_to_string(&files.cert)
            && files.key.exists()
            && !due_for_renewal(&pem, 1.0 / 3.0)
        {
            return Ok(false);
        }
        let credential = issue(&self.ca)?;
        let io = |e: std::io::Error| {
            Error::FailedPrecondition(format!("PKI directory {}: {e}", self.dir.display()))
        };
        // The key first: a reader that sees the new certificate finds its key.
        write_private(&files.key, &credential.key_pem).map_err(io)?;
        write_with_mode(&files.cert, &credential.cert_pem, 0o644).map_err(io)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_come_from_exactly_one_meridian_name() {
        let id = |names: &[&str]| Identity::from_dns_names(names.iter().copied());
        assert_eq!(
            id(&["eu.region.meridian", "localhost"]),
            Some(Identity::Region("eu".into()))
        );
        assert_eq!(
            id(&["operator.admin.meridian"]),
            Some(Identity::Admin("operator".into()))
        );
        assert_eq!(id(&["localhost"]), None);
        assert_eq!(id(&["eu.region.meridian", "us.region.meridian"]), None);
        assert_eq!(id(&["EU!.region.meridian"]), None);
    }

    #[test]
    fn a_pki_directory_keeps_its_ca_and_renews_only_when_due() {
        let dir = tempfile::tempdir().unwrap();
        let pki_dir = dir.path().join("pki");
        let pki = PkiDir::open(&pki_dir, "test").unwrap();
        let issue = |ca: &MeshCa| ca.issue_region("eu", "test", &[], DEFAULT_LIFETIME);
        assert!(pki.ensure("eu", issue).unwrap());
        assert!(
            !pki.ensure("eu", issue).unwrap(),
            "a fresh certificate is kept"
        );
        let ca_pem = pki.ca().cert_pem.clone();
        let again = PkiDir::open(&pki_dir, "test").unwrap();
        assert_eq!(again.ca().cert_pem, ca_pem, "the CA is reused on restart");

        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&pki_dir), 0o700);
        assert_eq!(mode(&pki_dir.join("ca.key")), 0o600);
        assert_eq!(mode(&pki_dir.join("eu.key")), 0o600);

        let short = |ca: &MeshCa| ca.issue_region("us", "test", &[], Duration::from_secs(1));
        pki.ensure("us", short).unwrap();
        let pem = std::fs::read_to_string(pki.files("us").cert).unwrap();
        assert!(
            due_for_renewal(&pem, 1.0 / 3.0),
            "backdated by minutes, a one-second certificate is due at once"
        );
    }
}
