//! Local mode's PostgreSQL data centers: `--postgres REGION=URL` runs that
//! region's data center on the database at URL, which lets the region run
//! as many service-center replicas as its manifest asks
//! (docs/ARCHITECTURE.md §12, "Several replicas"). Local mode cannot read a
//! Kubernetes Secret, so the flag is how it learns the connection string;
//! for the manifest's rules the flag counts as `dataCenter.type: postgres`.

use std::collections::BTreeMap;
use std::io::Write;
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

/// One `--postgres REGION=URL`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostgresArg {
    pub region: String,
    pub url: String,
}

/// Parses `REGION=URL`; for clap.
pub fn parse_arg(text: &str) -> Result<PostgresArg, String> {
    let (region, url) = text
        .split_once('=')
        .ok_or_else(|| "expected REGION=URL, e.g. eu=postgresql://user:pass@host/db".to_owned())?;
    if !meridian_crds::is_region_code(region) {
        return Err(format!("{region:?} is not a region code"));
    }
    if url.trim().is_empty() {
        return Err(format!("region {region}: the connection string is empty"));
    }
    if url.len() > MAX_URL_BYTES || url.contains(['\n', '\r', '\0']) {
        return Err(format!(
            "region {region}: the connection string must be one line of at most {MAX_URL_BYTES} bytes"
        ));
    }
    Ok(PostgresArg {
        region: region.to_owned(),
        url: url.to_owned(),
    })
}

/// The connection string of each region given `--postgres`.
#[derive(Clone, Debug, Default)]
pub struct Databases(BTreeMap<String, String>);

impl Databases {
    /// Refuses a region given twice.
    pub fn new(args: Vec<PostgresArg>) -> anyhow::Result<Self> {
        let mut urls = BTreeMap::new();
        for arg in args {
            anyhow::ensure!(
                !urls.contains_key(&arg.region),
                "--postgres {}: the region is given twice",
                arg.region
            );
            urls.insert(arg.region, arg.url);
        }
        Ok(Self(urls))
    }

    /// The connection string of `region`, if it is on PostgreSQL.
    pub fn url(&self, region: &str) -> Option<&str> {
        self.0.get(region).map(String::as_str)
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
    /// every region on PostgreSQL is given.
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
        }
        Ok(())
    }
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
        Databases::new(args.iter().map(|a| parse_arg(a).unwrap()).collect()).unwrap()
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
        let twice = Databases::new(vec![parse_arg("eu=a").unwrap(), parse_arg("eu=b").unwrap()])
            .unwrap_err()
            .to_string();
        assert!(
            twice.contains("--postgres eu") && twice.contains("twice"),
            "{twice}"
        );
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
