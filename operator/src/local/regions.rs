//! The regions local mode runs: their ports, mesh configuration files and
//! supervised processes, reconciled against the manifests.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use meridian_crds::manifest::Manifests;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use meridian_node::trust::pki::{self, PkiDir};
use meridian_node::trust::{CredentialFiles, Credentials};

use super::ports::{PortBook, RegionPorts};
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

struct RunningRegion {
    ports: RegionPorts,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
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
}

impl LocalMesh {
    pub fn new(
        state_dir: PathBuf,
        node_binary: PathBuf,
        lifetime: std::time::Duration,
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
    /// `None` until both have started.
    pub fn pids(&self, code: &str) -> Option<[u32; 2]> {
        let dir = self.region_dir(code);
        let pid = |name: &str| -> Option<u32> {
            std::fs::read_to_string(dir.join(name))
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        Some([pid("roaming.pid")?, pid("service-center.pid")?])
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
            let _ = region.stop.send(true);
            tokio::spawn(futures_join(region.tasks));
        }
        let mut ports = BTreeMap::new();
        for code in &codes {
            let p = match self.running.get(code) {
                Some(running) => running.ports,
                None => self.book.ports(code)?,
            };
            ports.insert(code.clone(), p);
        }
        for code in &codes {
            let dir = self.region_dir(code);
            pki::private_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            self.issue(code)?;
            let own = ports[code];
            let pair = PairEndpoints {
                service_center: url(own.service_center_pair),
                roaming: url(own.roaming_pair),
            };
            let config = mesh_config(code, pair, &manifests.regions, &manifests.links, |peer| {
                peer.metadata
                    .name
                    .as_ref()
                    .and_then(|name| ports.get(name))
                    .map(|p| url(p.peer))
            });
            let path = dir.join("mesh.yaml");
            if std::fs::read_to_string(&path).ok().as_deref() != Some(config.to_yaml().as_str()) {
                config
                    .store(&path)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                tracing::info!(region = %code, path = %path.display(), "mesh configuration written");
            }
            if !self.running.contains_key(code) && may_start > 0 {
                may_start -= 1;
                let running = self.start(code, own);
                self.running.insert(code.clone(), running);
            }
        }
        Ok(())
    }

    fn start(&self, code: &str, ports: RegionPorts) -> RunningRegion {
        let dir = self.region_dir(code);
        let config = dir.join("mesh.yaml").display().to_string();
        let (stop, stop_rx) = watch::channel(false);
        let addr = |port: u16| format!("127.0.0.1:{port}");
        let files = self.pki.files(code);
        let common = node_command::Common {
            config,
            identity: node_command::Identity {
                ca: files.ca.display().to_string(),
                cert: files.cert.display().to_string(),
                key: files.key.display().to_string(),
            },
            listen_probe: None,
            exit_with_parent: true,
        };
        let roaming = ProcessSpec {
            name: format!("{code} roaming system"),
            program: self.node_binary.clone(),
            args: node_command::Roaming {
                listen_pair: addr(ports.roaming_pair),
                listen_peer: addr(ports.peer),
                listen_metrics: addr(ports.metrics),
            }
            .args(&common),
            log: dir.join("roaming.log"),
            pid_file: dir.join("roaming.pid"),
        };
        let service_center = ProcessSpec {
            name: format!("{code} service center"),
            program: self.node_binary.clone(),
            args: node_command::ServiceCenter {
                // Local mode runs every data center on SQLite, one process each.
                data_center: node_command::DataCenter::Sqlite {
                    data_dir: dir.join("data").display().to_string(),
                },
                listen_client: addr(ports.client),
                listen_pair: addr(ports.service_center_pair),
                listen_metrics: None,
                client_tls: node_command::ClientTls::RegionCertificate,
            }
            .args(&common),
            log: dir.join("service-center.log"),
            pid_file: dir.join("service-center.pid"),
        };
        tracing::info!(
            region = %code, client = %url(ports.client), peer = %url(ports.peer),
            data = %dir.join("data").display(), "starting region"
        );
        let tasks = vec![
            supervise(roaming, stop_rx.clone()),
            supervise(service_center, stop_rx),
        ];
        RunningRegion { ports, stop, tasks }
    }

    /// Waits until every region's service center and roaming system answer.
    pub async fn wait_ready(&self) -> anyhow::Result<()> {
        for (code, region) in &self.running {
            readiness::wait(
                code,
                url(region.ports.client),
                url(region.ports.peer),
                &self.access,
            )
            .await?;
            tracing::info!(region = %code, client = %url(region.ports.client), "region serves");
        }
        Ok(())
    }

    /// Writes `DIR/endpoints.json`, which the CLI reads.
    pub fn write_endpoints(&self) -> anyhow::Result<()> {
        let regions: serde_json::Map<String, serde_json::Value> = self
            .running
            .iter()
            .map(|(code, r)| {
                let dir = self.region_dir(code);
                let entry = json!({
                    "client": url(r.ports.client),
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
            let _ = region.stop.send(true);
            tasks.extend(region.tasks);
        }
        futures_join(tasks).await;
    }
}

async fn futures_join(tasks: Vec<JoinHandle<()>>) {
    for task in tasks {
        let _ = task.await;
    }
}
