//! The regions local mode runs: their ports, mesh configuration files and
//! supervised processes, reconciled against the manifests. A region is a
//! roaming system and its service center's replicas: one on SQLite, as
//! many as `spec.serviceCenter.replicas` on PostgreSQL (`--postgres`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use meridian_crds::manifest::Manifests;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use meridian_node::trust::pki::{self, PkiDir};
use meridian_node::trust::{CredentialFiles, Credentials};

use super::links;
use super::ports::{PortBook, RegionPorts, ReplicaPorts};
use super::postgres::{self, Databases};
use super::readiness::{self, Access};
use super::supervisor::{ProcessSpec, supervise};
use super::write_atomically;
use crate::mesh::{PairEndpoints, mesh_config};
use crate::node_command;

/// Every port local mode runs speaks TLS.
fn url(port: u16) -> String {
    format!("https://127.0.0.1:{port}")
}

/// The plain HTTP metrics endpoint.
fn metrics_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}/metrics")
}

/// The name of local mode's own tool certificate, in `DIR/pki/`.
const TOOL: &str = "admin";

/// One supervised process and the switch that stops it.
struct Supervised {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Supervised {
    /// Stops the process; the task ends once it has.
    fn stop(self) -> JoinHandle<()> {
        let _ = self.stop.send(true);
        self.task
    }
}

struct RunningRegion {
    ports: RegionPorts,
    roaming: Supervised,
    /// The service-center replicas, the first first.
    service_centers: Vec<Supervised>,
    /// The `spec.serviceCenter.maxSubscriptions` they were started with.
    max_subscriptions: Option<i32>,
}

impl RunningRegion {
    fn stop(self) -> Vec<JoinHandle<()>> {
        std::iter::once(self.roaming)
            .chain(self.service_centers)
            .map(Supervised::stop)
            .collect()
    }
}

/// The name, in logs, and the file stem (`.pid`, `.log`) of replica `i` of
/// a region's service center: the first keeps the names of a region with
/// one, so that a person or a test finds it where it always was.
fn service_center_names(code: &str, i: usize) -> (String, String) {
    match i {
        0 => (
            format!("{code} service center"),
            "service-center".to_owned(),
        ),
        i => (
            format!("{code} service center {i}"),
            format!("service-center-{i}"),
        ),
    }
}

/// How many service-center processes `code`'s manifest asks for.
fn replicas_of(manifests: &Manifests, code: &str) -> usize {
    manifests
        .regions
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(code))
        .and_then(|r| usize::try_from(r.spec.service_center.replicas).ok())
        .unwrap_or(1)
        .max(1)
}

/// `code`'s `spec.serviceCenter.maxSubscriptions`, if its manifest sets it.
fn max_subscriptions_of(manifests: &Manifests, code: &str) -> Option<i32> {
    manifests
        .regions
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(code))
        .and_then(|r| r.spec.service_center.max_subscriptions)
}

pub struct LocalMesh {
    state_dir: PathBuf,
    node_binary: PathBuf,
    book: PortBook,
    running: BTreeMap<String, RunningRegion>,
    pki: PkiDir,
    /// How long the certificates it issues live.
    lifetime: std::time::Duration,
    access: Access,
    /// The regions whose data center is on PostgreSQL.
    databases: Databases,
}

impl LocalMesh {
    pub fn new(
        state_dir: PathBuf,
        node_binary: PathBuf,
        lifetime: std::time::Duration,
        databases: Databases,
    ) -> anyhow::Result<Self> {
        let pki = PkiDir::open(&state_dir.join("pki"), "local")?;
        pki.ensure(TOOL, |ca| ca.issue_admin(TOOL, lifetime))?;
        let files = pki.files(TOOL);
        let ca_pem = std::fs::read_to_string(&files.ca)?;
        let tool = Credentials::load(CredentialFiles {
            ca: files.ca,
            cert: files.cert,
            key: files.key,
        })?;
        tool.watch();
        let access = Access {
            client_tls: meridian_node::trust::tls::ca_only_client(&ca_pem)?,
            tool,
        };
        Ok(Self {
            book: PortBook::load(&state_dir)?,
            state_dir,
            node_binary,
            running: BTreeMap::new(),
            pki,
            lifetime,
            access,
            databases,
        })
    }

    /// Renews every certificate that has used a third of its life; the
    /// processes pick the new files up without a restart.
    pub fn renew(&self) -> anyhow::Result<()> {
        let lifetime = self.lifetime;
        if self.pki.ensure(TOOL, |ca| ca.issue_admin(TOOL, lifetime))? {
            tracing::info!("tool certificate renewed");
        }
        for code in self.running.keys() {
            if self.issue(code)? {
                tracing::info!(region = %code, "region certificate renewed");
            }
        }
        Ok(())
    }

    /// Issues `code`'s certificate if it has none or it is due.
    fn issue(&self, code: &str) -> anyhow::Result<bool> {
        let hosts = ["127.0.0.1".to_owned(), "localhost".to_owned()];
        let lifetime = self.lifetime;
        Ok(self
            .pki
            .ensure(code, |ca| ca.issue_region(code, "local", &hosts, lifetime))?)
    }

    pub fn region_count(&self) -> usize {
        self.running.len()
    }

    /// The codes of the running regions.
    pub fn running(&self) -> impl Iterator<Item = &str> {
        self.running.keys().map(String::as_str)
    }

    /// The pids of a running region's processes, from their pid files;
    /// `None` until all have started.
    pub fn pids(&self, code: &str) -> Option<Vec<u32>> {
        let dir = self.region_dir(code);
        let pid = |stem: &str| -> Option<u32> {
            std::fs::read_to_string(dir.join(format!("{stem}.pid")))
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        let replicas = self.running.get(code)?.service_centers.len();
        std::iter::once("roaming".to_owned())
            .chain((0..replicas).map(|i| service_center_names(code, i).1))
            .map(|stem| pid(&stem))
            .collect()
    }

    fn region_dir(&self, code: &str) -> PathBuf {
        self.state_dir.join(code)
    }

    /// Makes the running regions and their mesh configuration match `manifests`.
    pub fn reconcile(&mut self, manifests: &Manifests) -> anyhow::Result<()> {
        self.reconcile_some(manifests, usize::MAX)
    }

    /// Like [`LocalMesh::reconcile`], but starts at most `start` regions
    /// that are not running yet (the first in the manifests' order); every
    /// region's mesh configuration is written all the same.
    pub fn reconcile_some(&mut self, manifests: &Manifests, start: usize) -> anyhow::Result<()> {
        let mut may_start = start;
        let codes: Vec<String> = manifests
            .regions
            .iter()
            .filter_map(|r| r.metadata.name.clone())
            .collect();
        let removed: Vec<String> = self
            .running
            .keys()
            .filter(|c| !codes.contains(c))
            .cloned()
            .collect();
        for code in removed {
            let region = self.running.remove(&code).expect("listed as running");
            tracing::info!(region = %code, "region removed from the manifests; stopping it");
            tokio::spawn(futures_join(region.stop()));
        }
        let mut ports = BTreeMap::new();
        for code in &codes {
            let replicas = replicas_of(manifests, code);
            let p = match self.running.get(code) {
                Some(running) => self.book.resize(code, &running.ports, replicas)?,
                None => self.book.ports(code, replicas)?,
            };
            ports.insert(code.clone(), p);
        }
        for code in &codes {
            let dir = self.region_dir(code);
            pki::private_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            self.issue(code)?;
            if let Some(database) = self.databases.url(code) {
                postgres::write_url_file(&dir, database)?;
            }
            let own = ports[code].clone();
            let pair = PairEndpoints {
                service_center: url(own.service_center_pair),
                roaming: url(own.roaming_pair),
            };
            let mut config =
                mesh_config(code, pair, &manifests.regions, &manifests.links, |peer| {
                    peer.metadata
                        .name
                        .as_ref()
                        .and_then(|name| ports.get(name))
                        .map(|p| url(p.peer))
                });
            if !own.replicas.is_empty() {
                config.service_center.replicas =
                    own.service_centers().iter().map(|r| url(r.pair)).collect();
            }
            let path = dir.join("mesh.yaml");
            if std::fs::read_to_string(&path).ok().as_deref() != Some(config.to_yaml().as_str()) {
                config
                    .store(&path)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                tracing::info!(region = %code, path = %path.display(), "mesh configuration written");
            }
            let replicas = own.service_centers().len();
            let max_subscriptions = max_subscriptions_of(manifests, code);
            if let Some(running) = self.running.get(code) {
                // A changed bound is a new command line: restart every
                // replica with it, as a changed pod template rolls the pods.
                if running.max_subscriptions != max_subscriptions {
                    tracing::info!(region = %code, ?max_subscriptions,
                        "spec.serviceCenter.maxSubscriptions changed; restarting the service centers");
                    self.restart_service_centers(code, max_subscriptions);
                }
                // A running region whose replica count changed: start the
                // new ones, stop those past the count (last first).
                let running = &self.running[code];
                let have = running.service_centers.len();
                let added: Vec<Supervised> = (have..replicas)
                    .map(|i| self.start_service_center(code, &own, i, max_subscriptions))
                    .collect();
                let running = self.running.get_mut(code).expect("running");
                while running.service_centers.len() > replicas {
                    let gone = running.service_centers.pop().expect("more than wanted");
                    tracing::info!(region = %code, replicas, "stopping a service-center replica");
                    tokio::spawn(futures_join(vec![gone.stop()]));
                }
                running.service_centers.extend(added);
                running.ports = own;
            } else if may_start > 0 {
                may_start -= 1;
                let running = self.start(code, own, max_subscriptions);
                self.running.insert(code.clone(), running);
            }
        }
        Ok(())
    }

    /// What both of a region's kinds of process are given.
    fn common(&self, code: &str) -> node_command::Common {
        let files = self.pki.files(code);
        node_command::Common {
            config: self
                .region_dir(code)
                .join("mesh.yaml")
                .display()
                .to_string(),
            identity: node_command::Identity {
                ca: files.ca.display().to_string(),
                cert: files.cert.display().to_string(),
                key: files.key.display().to_string(),
            },
            listen_probe: None,
            exit_with_parent: true,
        }
    }

    fn start(
        &self,
        code: &str,
        ports: RegionPorts,
        max_subscriptions: Option<i32>,
    ) -> RunningRegion {
        let dir = self.region_dir(code);
        let roaming = ProcessSpec {
            name: format!("{code} roaming system"),
            program: self.node_binary.clone(),
            args: node_command::Roaming {
                listen_pair: addr(ports.roaming_pair),
                listen_peer: addr(ports.peer),
                listen_metrics: addr(ports.metrics),
            }
            .args(&self.common(code)),
            log: dir.join("roaming.log"),
            pid_file: dir.join("roaming.pid"),
        };
        let data = match self.databases.url(code) {
            Some(_) => "postgres".to_owned(),
            None => dir.join("data").display().to_string(),
        };
        tracing::info!(
            region = %code, client = %url(ports.client), peer = %url(ports.peer),
            replicas = ports.service_centers().len(), %data, "starting region"
        );
        let service_centers = (0..ports.service_centers().len())
            .map(|i| self.start_service_center(code, &ports, i, max_subscriptions))
            .collect();
        RunningRegion {
            roaming: start_supervised(roaming),
            service_centers,
            ports,
            max_subscriptions,
        }
    }

    /// Restarts every service-center replica of running region `code` with
    /// `max_subscriptions`, each once the old process on its ports has
    /// stopped (it holds the ports and, on SQLite, the data center's lock).
    fn restart_service_centers(&mut self, code: &str, max_subscriptions: Option<i32>) {
        let running = self.running.get_mut(code).expect("running");
        running.max_subscriptions = max_subscriptions;
        let old = std::mem::take(&mut running.service_centers);
        let ports = running.ports.clone();
        let restarted = old
            .into_iter()
            .enumerate()
            .map(|(i, old)| {
                let spec = self.service_center_spec(code, &ports, i, max_subscriptions);
                start_supervised_after(spec, old.stop())
            })
            .collect();
        self.running.get_mut(code).expect("running").service_centers = restarted;
    }

    /// Starts replica `i` of `code`'s service center, on its own ports,
    /// holding at most `max_subscriptions` subscriptions when that is set.
    fn start_service_center(
        &self,
        code: &str,
        ports: &RegionPorts,
        i: usize,
        max_subscriptions: Option<i32>,
    ) -> Supervised {
        start_supervised(self.service_center_spec(code, ports, i, max_subscriptions))
    }

    /// The process of replica `i` of `code`'s service center.
    fn service_center_spec(
        &self,
        code: &str,
        ports: &RegionPorts,
        i: usize,
        max_subscriptions: Option<i32>,
    ) -> ProcessSpec {
        let dir = self.region_dir(code);
        let own = ports.service_centers()[i];
        let (name, stem) = service_center_names(code, i);
        let replica = Replica {
            own,
            max_subscriptions,
        };
        ProcessSpec {
            name,
            program: self.node_binary.clone(),
            args: service_center_args(&self.databases, code, &dir, replica, &self.common(code)),
            log: dir.join(format!("{stem}.log")),
            pid_file: dir.join(format!("{stem}.pid")),
        }
    }

    /// Waits until every region's service-center replicas and roaming
    /// system answer.
    pub async fn wait_ready(&self) -> anyhow::Result<()> {
        for (code, region) in &self.running {
            for replica in region.ports.service_centers() {
                readiness::wait(
                    code,
                    url(replica.client),
                    url(region.ports.peer),
                    &self.access,
                )
                .await?;
            }
            tracing::info!(region = %code, client = %url(region.ports.client),
                replicas = region.service_centers.len(), "region serves");
        }
        Ok(())
    }

    /// Waits (at most `deadline`) until every running region's roaming
    /// system has its enabled links to every other running region Up, so
    /// that a first cross-region call finds its peer reachable; returns the
    /// links still not Up at the deadline (see [`links`]).
    pub async fn wait_linked(&self, deadline: std::time::Duration) -> Vec<links::NotUp> {
        let codes: Vec<String> = self.running.keys().cloned().collect();
        let codes = &codes;
        let probe = move || async move {
            let mut left = Vec::new();
            for (code, region) in &self.running {
                let status =
                    readiness::mesh_status(code, &url(region.ports.peer), &self.access).await;
                left.extend(links::not_up(
                    code,
                    status.as_ref().map_err(Clone::clone),
                    codes,
                ));
            }
            left
        };
        links::wait(deadline, probe).await
    }

    /// Writes `DIR/endpoints.json`, which the CLI reads.
    pub fn write_endpoints(&self) -> anyhow::Result<()> {
        let regions: serde_json::Map<String, serde_json::Value> = self
            .running
            .iter()
            .map(|(code, r)| {
                let dir = self.region_dir(code);
                let clients: Vec<String> = r
                    .ports
                    .service_centers()
                    .iter()
                    .map(|sc| url(sc.client))
                    .collect();
                let entry = json!({
                    "client": url(r.ports.client),
                    "clients": clients,
                    "serviceCenterPair": url(r.ports.service_center_pair),
                    "roamingPair": url(r.ports.roaming_pair),
                    "peer": url(r.ports.peer),
                    "metrics": metrics_url(r.ports.metrics),
                    "dir": dir.display().to_string(),
                });
                (code.clone(), entry)
            })
            .collect();
        let tool = self.pki.files(TOOL);
        let text = serde_json::to_string_pretty(&json!({
            "regions": regions,
            "ca": tool.ca,
            "admin": {"cert": tool.cert, "key": tool.key},
        }))?;
        write_atomically(&self.state_dir.join("endpoints.json"), text.as_bytes())?;
        Ok(())
    }

    /// Stops every region and waits for its processes.
    pub async fn stop(self) {
        let mut tasks = Vec::new();
        for (_, region) in self.running {
            tasks.extend(region.stop());
        }
        futures_join(tasks).await;
    }
}

/// One service-center replica's own part of its command line: its ports,
/// and the region's `spec.serviceCenter.maxSubscriptions`.
#[derive(Clone, Copy, Debug)]
struct Replica {
    own: ReplicaPorts,
    max_subscriptions: Option<i32>,
}

/// The command line of the service-center `replica` of region `code`,
/// whose directory is `dir`. On SQLite there is one replica, with the data
/// in `DIR/<region>/data`; on PostgreSQL each reads the connection string
/// from the region's file and, given `--postgres-ca`, requires TLS checked
/// against that CA. The manifest's `maxSubscriptions`, when set, is passed
/// as `--max-subscriptions`, which wins over a `MERIDIAN_MAX_SUBSCRIPTIONS`
/// in local mode's environment (the nodes inherit it).
fn service_center_args(
    databases: &Databases,
    code: &str,
    dir: &Path,
    replica: Replica,
    common: &node_command::Common,
) -> Vec<String> {
    let Replica {
        own,
        max_subscriptions,
    } = replica;
    let data_center = match databases.url(code) {
        Some(_) => node_command::DataCenter::Postgres {
            url_file: postgres::url_file(dir).display().to_string(),
            ca_file: databases.ca_file(code).map(|f| f.display().to_string()),
        },
        None => node_command::DataCenter::Sqlite {
            data_dir: dir.join("data").display().to_string(),
        },
    };
    node_command::ServiceCenter {
        data_center,
        listen_client: addr(own.client),
        listen_pair: addr(own.pair),
        listen_metrics: None,
        client_tls: node_command::ClientTls::RegionCertificate,
        max_subscriptions,
    }
    .args(common)
}

/// `127.0.0.1:port`, for a listener.
fn addr(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// Supervises `spec` until its switch is thrown.
fn start_supervised(spec: ProcessSpec) -> Supervised {
    let (stop, stop_rx) = watch::channel(false);
    Supervised {
        task: supervise(spec, stop_rx),
        stop,
    }
}

/// Supervises `spec` once `before` (the task of the process it replaces)
/// has ended, until its own switch is thrown.
fn start_supervised_after(spec: ProcessSpec, before: JoinHandle<()>) -> Supervised {
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        let _ = before.await;
        let _ = supervise(spec, stop_rx).await;
    });
    Supervised { task, stop }
}

async fn futures_join(tasks: Vec<JoinHandle<()>>) {
    for task in tasks {
        let _ = task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::postgres::{parse_arg, parse_ca_arg};

    fn common() -> node_command::Common {
        node_command::Common {
            config: "/s/eu/mesh.yaml".into(),
            identity: node_command::Identity {
                ca: "/s/pki/ca.crt".into(),
                cert: "/s/pki/eu.crt".into(),
                key: "/s/pki/eu.key".into(),
            },
            listen_probe: None,
            exit_with_parent: true,
        }
    }

    /// A replica on ports `own` with the node's default bound.
    fn replica(own: ReplicaPorts) -> Replica {
        Replica {
            own,
            max_subscriptions: None,
        }
    }

    /// The value following `flag` in `args`, if `flag` is there.
    fn value_of<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
        let at = args.iter().position(|a| a == flag)?;
        args.get(at + 1).map(String::as_str)
    }

    #[test]
    fn the_postgres_ca_reaches_every_service_center_of_its_region_alone() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("db-ca.crt");
        let pem = meridian_node::trust::pki::MeshCa::generate("db")
            .unwrap()
            .cert_pem;
        std::fs::write(&ca, pem).unwrap();
        let databases = Databases::new(
            vec![
                parse_arg("eu=postgresql://x/eu").unwrap(),
                parse_arg("us=postgresql://x/us").unwrap(),
            ],
            vec![parse_ca_arg(&format!("eu={}", ca.display())).unwrap()],
        )
        .unwrap();
        let region_dir = Path::new("/s/eu");
        for own in [
            ReplicaPorts { client: 1, pair: 2 },
            ReplicaPorts { client: 3, pair: 4 },
        ] {
            let args = service_center_args(&databases, "eu", region_dir, replica(own), &common());
            assert_eq!(
                value_of(&args, "--postgres-ca-file"),
                Some(ca.to_str().unwrap()),
                "{args:?}"
            );
            assert_eq!(
                value_of(&args, "--postgres-url-file"),
                Some("/s/eu/postgres-url"),
                "{args:?}"
            );
            assert_eq!(
                value_of(&args, "--listen-client"),
                Some(addr(own.client).as_str())
            );
        }

        let us = ReplicaPorts { client: 5, pair: 6 };
        let args =
            service_center_args(&databases, "us", Path::new("/s/us"), replica(us), &common());
        assert_eq!(
            value_of(&args, "--postgres-url-file"),
            Some("/s/us/postgres-url")
        );
        assert!(!args.iter().any(|a| a == "--postgres-ca-file"), "{args:?}");

        let args =
            service_center_args(&databases, "ap", Path::new("/s/ap"), replica(us), &common());
        assert_eq!(value_of(&args, "--data-dir"), Some("/s/ap/data"));
        assert!(
            !args.iter().any(|a| a.starts_with("--postgres")),
            "{args:?}"
        );
    }

    #[test]
    fn the_manifests_max_subscriptions_reaches_the_service_centers_of_its_region_alone() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("m.yaml");
        std::fs::write(
            &manifest,
            "---\napiVersion: meridian.dev/v1alpha1\nkind: Region\n\
             metadata: {name: eu}\nspec: {cluster: c, serviceCenter: {maxSubscriptions: 250}}\n\
             ---\napiVersion: meridian.dev/v1alpha1\nkind: Region\n\
             metadata: {name: us}\nspec: {cluster: c}\n",
        )
        .unwrap();
        let manifests = Databases::default().load(&[manifest]).unwrap();
        assert_eq!(max_subscriptions_of(&manifests, "eu"), Some(250));
        assert_eq!(max_subscriptions_of(&manifests, "us"), None);

        let databases = Databases::default();
        let own = ReplicaPorts { client: 1, pair: 2 };
        let args = |code: &str| {
            let replica = Replica {
                own,
                max_subscriptions: max_subscriptions_of(&manifests, code),
            };
            service_center_args(&databases, code, Path::new("/s"), replica, &common())
        };
        assert_eq!(value_of(&args("eu"), "--max-subscriptions"), Some("250"));
        let us = args("us");
        assert!(
            !us.iter().any(|a| a == "--max-subscriptions"),
            "unset: the node's default (or its MERIDIAN_MAX_SUBSCRIPTIONS): {us:?}"
        );
    }
}
