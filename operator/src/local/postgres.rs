//! Local mode's PostgreSQL data centers: `--postgres REGION=URL` runs that
//! region's data center on the database at URL, which lets the region run
//! as many service-center replicas as its manifest asks
//! (docs/ARCHITECTURE.md §12, "Several replicas"). Local mode cannot read a
//! Kubernetes Secret, so the flag is how it learns the connection string;
//! for the manifest's rules the flag counts as `dataCenter.type: postgres`.
//! `--postgres REGION=@FILE` reads the string from FILE instead, so that
//! its password is not on the command line for `ps` to show, and
//! `--postgres-ca REGION=FILE` is the server's CA, with which every
//! service-center replica of the region requires TLS and checks the server.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use meridian_crds::Region;
use meridian_crds::manifest::{self, Manifests};
use meridian_crds::region::{DEFAULT_POSTGRES_KEY, DataCenterSpec, DataCenterType, PostgresSpec};
use meridian_node::mesh::config::MAX_PAIR_REPLICAS;

/// The longest connection string accepted.
const MAX_URL_BYTES: usize = 4096;

/// The file in a region's directory that holds its connection string.
const URL_FILE: &str = "postgres-url";

/// One `--postgres REGION=URL` or `--postgres REGION=@FILE`, with FILE read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostgresArg {
    pub region: String,
    pub url: String,
}

/// Parses `REGION=URL`, or `REGION=@FILE` whose FILE holds the URL; for
/// clap.
pub fn parse_arg(text: &str) -> Result<PostgresArg, String> {
    let (region, value) = text.split_once('=').ok_or_else(|| {
        "expected REGION=URL or REGION=@FILE, e.g. eu=postgresql://user:pass@host/db".to_owned()
    })?;
    if !meridian_crds::is_region_code(region) {
        return Err(format!("{region:?} is not a region code"));
    }
    let url = match value.strip_prefix('@') {
        Some(file) => read_url(file)
            .and_then(|url| check_url(&url).map(|()| url))
            .map_err(|err| format!("--postgres {region}=@{file}: {err}"))?,
        None => {
            check_url(value).map_err(|err| format!("region {region}: {err}"))?;
            value.to_owned()
        }
    };
    Ok(PostgresArg {
        region: region.to_owned(),
        url,
    })
}

/// The connection string in `file`: its whole content, less one trailing
/// line end.
fn read_url(file: &str) -> Result<String, String> {
    if file.is_empty() {
        return Err("no file is named after the @".to_owned());
    }
    let mut bytes = Vec::new();
    // A line end more than the longest string, so that a longer one is seen.
    let most = MAX_URL_BYTES as u64 + 3;
    std::fs::File::open(file)
        .and_then(|f| f.take(most).read_to_end(&mut bytes))
        .map_err(|err| format!("cannot read the connection string: {err}"))?;
    let line = bytes
        .strip_suffix(b"\n")
        .map(|b| b.strip_suffix(b"\r").unwrap_or(b))
        .unwrap_or(&bytes);
    if line.len() > MAX_URL_BYTES {
        return Err(format!(
            "the connection string must be one line of at most {MAX_URL_BYTES} bytes"
        ));
    }
    String::from_utf8(line.to_vec()).map_err(|_| "the file is not UTF-8 text".to_owned())
}

/// A connection string local mode accepts: not blank, one line, short.
fn check_url(url: &str) -> Result<(), String> {
    if url.trim().is_empty() {
        return Err("the connection string is empty".to_owned());
    }
    if url.len() > MAX_URL_BYTES || url.contains(['\n', '\r', '\0']) {
        return Err(format!(
            "the connection string must be one line of at most {MAX_URL_BYTES} bytes"
        ));
    }
    Ok(())
}

/// One `--postgres-ca REGION=FILE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaArg {
    pub region: String,
    pub file: PathBuf,
}

/// Parses `REGION=FILE`; for clap. [`Databases::new`] checks the file.
pub fn parse_ca_arg(text: &str) -> Result<CaArg, String> {
    let (region, file) = text
        .split_once('=')
        .ok_or_else(|| "expected REGION=FILE, e.g. eu=/etc/meridian/db-ca.crt".to_owned())?;
    if !meridian_crds::is_region_code(region) {
        return Err(format!("{region:?} is not a region code"));
    }
    if file.is_empty() {
        return Err(format!("region {region}: no CA file is named"));
    }
    Ok(CaArg {
        region: region.to_owned(),
        file: file.into(),
    })
}

/// A region's PostgreSQL database: how to reach it and, if given, the CA
/// its server's certificate is checked against.
#[derive(Clone, Debug)]
struct Database {
    url: String,
    /// Absolute, so that it means the same to the service-center processes.
    ca_file: Option<PathBuf>,
}

/// The database of each region given `--postgres`.
#[derive(Clone, Debug, Default)]
pub struct Databases(BTreeMap<String, Database>);

impl Databases {
    /// Refuses a region given twice to either flag, a CA for a region with
    /// no `--postgres`, and a CA file that cannot be read or holds no
    /// certificate. A relative CA path is taken from the current directory.
    pub fn new(args: Vec<PostgresArg>, cas: Vec<CaArg>) -> anyhow::Result<Self> {
        let mut databases = BTreeMap::new();
        for arg in args {
            anyhow::ensure!(
                !databases.contains_key(&arg.region),
                "--postgres {}: the region is given twice",
                arg.region
            );
            let database = Database {
                url: arg.url,
                ca_file: None,
            };
            databases.insert(arg.region, database);
        }
        for ca in cas {
            let region = &ca.region;
            let Some(database) = databases.get_mut(region) else {
                anyhow::bail!(
                    "--postgres-ca {region}: region {region} is not given --postgres \
                     (the CA is its PostgreSQL server's)"
                );
            };
            anyhow::ensure!(
                database.ca_file.is_none(),
                "--postgres-ca {region}: the region is given twice"
            );
            database.ca_file = Some(
                check_ca(&ca.file)
                    .with_context(|| format!("--postgres-ca {region}={}", ca.file.display()))?,
            );
        }
        Ok(Self(databases))
    }

    /// The connection string of `region`, if it is on PostgreSQL.
    pub fn url(&self, region: &str) -> Option<&str> {
        self.0.get(region).map(|d| d.url.as_str())
    }

    /// The absolute path of the CA file `region`'s server is checked
    /// against, if it was given one.
    pub fn ca_file(&self, region: &str) -> Option<&Path> {
        self.0.get(region)?.ca_file.as_deref()
    }

    /// Reads the manifests as a region given `--postgres` would be read
    /// with `dataCenter.type: postgres`, and checks the flags against them.
    pub fn load(&self, files: &[PathBuf]) -> anyhow::Result<Manifests> {
        let manifests =
            manifest::load_files_with(files, &|region| self.prepare(region)).map_err(|err| {
                let mut message = err.to_string();
                if message.contains("spec.serviceCenter.replicas") {
                    message.push_str(
                        "\n(local mode: a region runs several service-center replicas only on \
                         PostgreSQL; pass --postgres REGION=URL for it)",
                    );
                }
                anyhow::anyhow!(message)
            })?;
        self.check(&manifests)?;
        Ok(manifests)
    }

    /// A region given `--postgres` whose manifest names no data center gets
    /// a PostgreSQL one; the Secret it names is never read.
    fn prepare(&self, region: &mut Region) {
        let given = region
            .metadata
            .name
            .as_deref()
            .is_some_and(|name| self.0.contains_key(name));
        let sc = &mut region.spec.service_center;
        if given && sc.data_center.is_none() {
            sc.data_center = Some(DataCenterSpec {
                type_: DataCenterType::Postgres,
                postgres: Some(PostgresSpec {
                    secret_name: "local-mode".into(),
                    key: DEFAULT_POSTGRES_KEY.into(),
                    tls: None,
                }),
            });
        }
    }

    /// Every region given `--postgres` is in the manifests, on PostgreSQL;
    /// every region on PostgreSQL is given, and given `--postgres-ca` when
    /// its manifest asks for TLS (`postgres.tls`).
    fn check(&self, manifests: &Manifests) -> anyhow::Result<()> {
        let named = |r: &Region| r.metadata.name.clone().unwrap_or_default();
        for code in self.0.keys() {
            let Some(region) = manifests.regions.iter().find(|r| named(r) == *code) else {
                let known: Vec<String> = manifests.regions.iter().map(named).collect();
                anyhow::bail!(
                    "--postgres {code}: region {code} is not in the manifests (regions: {})",
                    known.join(", ")
                );
            };
            anyhow::ensure!(
                region.spec.service_center.on_postgres(),
                "--postgres {code}: region {code}'s manifest says \
                 spec.serviceCenter.dataCenter.type sqlite"
            );
        }
        for region in &manifests.regions {
            let code = named(region);
            let replicas = region.spec.service_center.replicas;
            anyhow::ensure!(
                usize::try_from(replicas).is_ok_and(|n| n <= MAX_PAIR_REPLICAS),
                "region {code}: spec.serviceCenter.replicas: {replicas} is more than local mode \
                 runs (at most {MAX_PAIR_REPLICAS})"
            );
            anyhow::ensure!(
                !region.spec.service_center.on_postgres() || self.0.contains_key(&code),
                "region {code}: spec.serviceCenter.dataCenter.type is postgres, whose \
                 connection string local mode cannot read from a Secret: pass \
                 --postgres {code}=URL"
            );
            // The manifest asks for a verified TLS connection; running
            // without the CA would quietly connect as the URL says, perhaps
            // in plaintext, so the region is refused rather than weakened.
            let tls = region
                .spec
                .service_center
                .postgres()
                .and_then(|pg| pg.tls.as_ref());
            if let Some(tls) = tls {
                anyhow::ensure!(
                    self.ca_file(&code).is_some(),
                    "region {code}: spec.serviceCenter.dataCenter.postgres.tls asks for TLS \
                     verified against the CA in Secret {:?}, which local mode cannot read: \
                     pass --postgres-ca {code}=FILE with that CA's PEM certificates",
                    tls.ca_secret_name
                );
            }
        }
        Ok(())
    }
}

/// `file` as an absolute path, once it is seen to be a readable file of
/// PEM certificates: a service center would otherwise fail on it only
/// after local mode had started it.
fn check_ca(file: &Path) -> anyhow::Result<PathBuf> {
    let path = std::path::absolute(file).context("cannot make the path absolute")?;
    let shown = path.display();
    let meta = match std::fs::metadata(&path) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            anyhow::bail!("{shown} does not exist")
        }
        meta => meta.with_context(|| format!("cannot read {shown}"))?,
    };
    anyhow::ensure!(meta.is_file(), "{shown} is not a file");
    let pem = std::fs::read_to_string(&path).with_context(|| format!("cannot read {shown}"))?;
    meridian_node::trust::tls::database_client(&pem)
        .map_err(|err| anyhow::anyhow!("{shown}: {err}"))?;
    Ok(path)
}

/// The file in `region_dir` that [`write_url_file`] writes.
pub fn url_file(region_dir: &Path) -> PathBuf {
    region_dir.join(URL_FILE)
}

/// Writes `url` to the region directory's connection-string file, readable
/// by its owner alone (it holds a password), replacing it atomically;
/// returns the file's path.
pub fn write_url_file(region_dir: &Path, url: &str) -> anyhow::Result<PathBuf> {
    let path = url_file(region_dir);
    if std::fs::read_to_string(&path).ok().as_deref() == Some(url) {
        return Ok(path);
    }
    let tmp = region_dir.join(format!("{URL_FILE}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(url.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const PG: &str = "postgresql://meridian:pw@127.0.0.1:5432/eu";

    fn manifests(dir: &Path, text: &str) -> Vec<PathBuf> {
        let path = dir.join("m.yaml");
        std::fs::write(&path, text).unwrap();
        vec![path]
    }

    fn region(name: &str, service_center: &str) -> String {
        format!(
            "---\napiVersion: meridian.dev/v1alpha1\nkind: Region\n\
             metadata: {{name: {name}}}\nspec: {{cluster: c, serviceCenter: {service_center}}}\n"
        )
    }

    fn databases(args: &[&str]) -> Databases {
        Databases::new(args.iter().map(|a| parse_arg(a).unwrap()).collect(), vec![]).unwrap()
    }

    /// A PEM file of one CA certificate, in `dir`.
    fn ca_pem(dir: &Path) -> PathBuf {
        let ca = meridian_node::trust::pki::MeshCa::generate("db").unwrap();
        let path = dir.join("ca.crt");
        std::fs::write(&path, ca.cert_pem).unwrap();
        path
    }

    /// `Databases::new` of `--postgres` and `--postgres-ca` values.
    fn with_cas(args: &[&str], cas: &[String]) -> anyhow::Result<Databases> {
        Databases::new(
            args.iter().map(|a| parse_arg(a).unwrap()).collect(),
            cas.iter().map(|a| parse_ca_arg(a).unwrap()).collect(),
        )
    }

    #[test]
    fn the_flag_is_region_equals_url() {
        let arg = parse_arg(&format!("eu={PG}")).unwrap();
        assert_eq!((arg.region.as_str(), arg.url.as_str()), ("eu", PG));
        // The URL may itself hold '=' (key=value connection strings).
        let kv = parse_arg("eu=host=127.0.0.1 dbname=eu").unwrap();
        assert_eq!(kv.url, "host=127.0.0.1 dbname=eu");
        for (bad, says) in [
            ("eu", "REGION=URL"),
            ("EU=x", "not a region code"),
            ("eu=", "empty"),
            ("eu=a\nb", "one line"),
        ] {
            let err = parse_arg(bad).unwrap_err();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
        let twice = with_cas(&["eu=a", "eu=b"], &[]).unwrap_err().to_string();
        assert!(
            twice.contains("--postgres eu") && twice.contains("twice"),
            "{twice}"
        );
    }

    #[test]
    fn at_file_reads_the_url_from_the_file_less_its_line_end() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        for (name, text) in [
            ("plain", PG.to_owned()),
            ("lf", format!("{PG}\n")),
            ("crlf", format!("{PG}\r\n")),
        ] {
            let path = file(name, text.as_bytes());
            let arg = parse_arg(&format!("eu=@{path}")).unwrap();
            assert_eq!(
                (arg.region.as_str(), arg.url.as_str()),
                ("eu", PG),
                "{name}"
            );
        }
        let longest = "p".repeat(MAX_URL_BYTES);
        let path = file("longest", format!("{longest}\n").as_bytes());
        assert_eq!(parse_arg(&format!("eu=@{path}")).unwrap().url, longest);

        let missing = dir.path().join("missing").display().to_string();
        for (bad, says) in [
            (missing.clone(), "cannot read the connection string"),
            (file("empty", b""), "the connection string is empty"),
            (file("blank", b"  \n"), "the connection string is empty"),
            (file("lines", b"a\nb\n"), "one line"),
            (file("nul", b"a\0b"), "one line"),
            (file("two-ends", b"a\n\n"), "one line"),
            (
                file("long", format!("{longest}p\n").as_bytes()),
                "at most 4096 bytes",
            ),
            (
                file("huge", "p".repeat(3 * MAX_URL_BYTES).as_bytes()),
                "at most 4096 bytes",
            ),
            (file("binary", b"\xff\xfe"), "not UTF-8"),
        ] {
            let err = parse_arg(&format!("eu=@{bad}")).unwrap_err();
            assert!(
                err.starts_with(&format!("--postgres eu=@{bad}: ")) && err.contains(says),
                "{bad}: {err}"
            );
        }
        let err = parse_arg("eu=@").unwrap_err();
        assert!(
            err.contains("--postgres eu=@") && err.contains("no file"),
            "{err}"
        );
    }

    #[test]
    fn the_ca_flag_needs_the_regions_database_once_and_a_file_of_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca_pem(dir.path());
        let given = with_cas(
            &["eu=postgresql://x/eu", "us=postgresql://x/us"],
            &[format!("eu={}", ca.display())],
        )
        .unwrap();
        assert_eq!(given.ca_file("eu"), Some(ca.as_path()));
        assert_eq!(given.ca_file("us"), None, "us has no CA");
        assert_eq!(given.ca_file("ap"), None);

        for (bad, says) in [
            ("eu", "REGION=FILE"),
            ("EU=x", "not a region code"),
            ("eu=", "no CA file"),
        ] {
            let err = parse_ca_arg(bad).unwrap_err();
            assert!(err.contains(says), "{bad:?}: {err}");
        }

        let not_pem = dir.path().join("not.pem");
        std::fs::write(&not_pem, "not a certificate").unwrap();
        let ca_arg = format!("eu={}", ca.display());
        for (cas, says) in [
            (
                vec![format!("ap={}", ca.display())],
                "--postgres-ca ap: region ap is not given --postgres".to_owned(),
            ),
            (
                vec![ca_arg.clone(), ca_arg.clone()],
                "--postgres-ca eu: the region is given twice".to_owned(),
            ),
            (
                vec![format!("eu={}/missing.crt", dir.path().display())],
                format!("{}/missing.crt does not exist", dir.path().display()),
            ),
            (
                vec![format!("eu={}", dir.path().display())],
                format!("{} is not a file", dir.path().display()),
            ),
            (
                vec![format!("eu={}", not_pem.display())],
                "no certificate".to_owned(),
            ),
        ] {
            let err = format!(
                "{:#}",
                with_cas(&["eu=postgresql://x/eu"], &cas).unwrap_err()
            );
            assert!(err.contains(&says), "{cas:?}: {err}");
            assert!(
                err.starts_with(&format!("--postgres-ca {}", &cas[0][..2])),
                "{err}"
            );
        }
    }

    #[test]
    fn a_relative_ca_path_is_taken_from_the_current_directory() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca_pem(dir.path());
        // The same file, named from the current directory.
        let cwd = std::env::current_dir().unwrap();
        let up = "../".repeat(cwd.components().count() - 1);
        let relative = format!("{up}{}", ca.display().to_string().trim_start_matches('/'));
        assert!(Path::new(&relative).is_relative());
        let databases = with_cas(&["eu=postgresql://x/eu"], &[format!("eu={relative}")]).unwrap();
        let absolute = databases.ca_file("eu").unwrap();
        assert_eq!(absolute, cwd.join(&relative));
        assert_eq!(absolute.canonicalize().unwrap(), ca.canonicalize().unwrap());
    }

    #[test]
    fn several_replicas_need_the_flag_and_the_flag_needs_the_region() {
        let dir = tempfile::tempdir().unwrap();
        let files = manifests(
            dir.path(),
            &(region("eu", "{replicas: 2}") + &region("us", "{}")),
        );

        let loaded = databases(&[&format!("eu={PG}")]).load(&files).unwrap();
        let eu = &loaded.regions[0].spec.service_center;
        assert_eq!(eu.replicas, 2);
        assert!(eu.on_postgres(), "the flag counts as postgres");
        assert!(!loaded.regions[1].spec.service_center.on_postgres());

        let without = databases(&[]).load(&files).unwrap_err().to_string();
        assert!(
            without.contains("spec.serviceCenter.replicas") && without.contains("--postgres"),
            "{without}"
        );

        let elsewhere = databases(&[&format!("eu={PG}"), "ap=postgresql://x/ap"])
            .load(&files)
            .unwrap_err()
            .to_string();
        assert!(
            elsewhere.contains("--postgres ap: region ap is not in the manifests"),
            "{elsewhere}"
        );
    }

    #[test]
    fn at_most_16_replicas_run_in_local_mode() {
        let dir = tempfile::tempdir().unwrap();
        let files = manifests(dir.path(), &region("eu", "{replicas: 17}"));
        let err = databases(&["eu=postgresql://x/eu"])
            .load(&files)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("spec.serviceCenter.replicas: 17") && err.contains("at most 16"),
            "{err}"
        );
        let files = manifests(dir.path(), &region("eu", "{replicas: 16}"));
        assert!(databases(&["eu=postgresql://x/eu"]).load(&files).is_ok());
    }

    #[test]
    fn a_manifest_on_postgres_needs_the_flag_and_one_on_sqlite_refuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let on_pg = manifests(
            dir.path(),
            &region(
                "eu",
                "{dataCenter: {type: postgres, postgres: {secretName: eu-db}}}",
            ),
        );
        let err = databases(&[]).load(&on_pg).unwrap_err().to_string();
        assert!(err.contains("pass --postgres eu=URL"), "{err}");
        assert!(databases(&["eu=postgresql://x/eu"]).load(&on_pg).is_ok());

        let on_sqlite = manifests(dir.path(), &region("eu", "{dataCenter: {type: sqlite}}"));
        let err = databases(&["eu=postgresql://x/eu"])
            .load(&on_sqlite)
            .unwrap_err()
            .to_string();
        assert!(err.contains("dataCenter.type sqlite"), "{err}");
    }

    #[test]
    fn a_manifest_asking_for_tls_needs_the_ca_flag() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca_pem(dir.path());
        let files = manifests(
            dir.path(),
            &region(
                "eu",
                "{replicas: 2, dataCenter: {type: postgres, postgres: \
                 {secretName: eu-db, tls: {caSecretName: eu-db-ca}}}}",
            ),
        );
        let err = databases(&["eu=postgresql://x/eu"])
            .load(&files)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("region eu: spec.serviceCenter.dataCenter.postgres.tls")
                && err.contains("\"eu-db-ca\"")
                && err.contains("pass --postgres-ca eu=FILE"),
            "{err}"
        );
        let with_ca = with_cas(&["eu=postgresql://x/eu"], &[format!("eu={}", ca.display())])
            .unwrap()
            .load(&files)
            .unwrap();
        assert!(with_ca.regions[0].spec.service_center.on_postgres());

        // Without `tls` the CA stays optional (the URL says what TLS is).
        let plain = manifests(
            dir.path(),
            &region(
                "eu",
                "{dataCenter: {type: postgres, postgres: {secretName: eu-db}}}",
            ),
        );
        assert!(databases(&["eu=postgresql://x/eu"]).load(&plain).is_ok());
    }

    #[test]
    fn the_url_file_is_the_owners_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_url_file(dir.path(), PG).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), PG);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        write_url_file(dir.path(), "postgresql://other/eu").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "postgresql://other/eu"
        );
        assert!(!dir.path().join("postgres-url.tmp").exists());
    }
}
