//! The regions local mode runs: their ports, mesh configuration files and
//! supervised processes, reconciled against the manifests.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use meridian_crds::manifest::Manifests;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::ports::{PortBook, RegionPorts};
use super::supervisor::{ProcessSpec, supervise};
use super::{readiness, write_atomically};
use crate::mesh::{PairEndpoints, mesh_config};

fn url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

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
}

impl LocalMesh {
    pub fn new(state_dir: PathBuf, node_binary: PathBuf) -> anyhow::Result<Self> {
        Ok(Self {
            book: PortBook::load(&state_dir)?,
            state_dir,
            node_binary,
            running: BTreeMap::new(),
        })
    }

    pub fn region_count(&self) -> usize {
        self.running.len()
    }

    fn region_dir(&self, code: &str) -> PathBuf {
        self.state_dir.join(code)
    }

    /// Makes the running regions and their mesh configuration match `manifests`.
    pub fn reconcile(&mut self, manifests: &Manifests) -> anyhow::Result<()> {
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
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
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
            if !self.running.contains_key(code) {
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
        let roaming = ProcessSpec {
            name: format!("{code} roaming system"),
            program: self.node_binary.clone(),
            args: vec![
                "--role".into(),
                "roaming".into(),
                "--config".into(),
                config.clone(),
                "--listen-roaming-pair".into(),
                addr(ports.roaming_pair),
                "--listen-peer".into(),
                addr(ports.peer),
                "--listen-metrics".into(),
                addr(ports.metrics),
                "--exit-with-parent".into(),
            ],
            log: dir.join("roaming.log"),
            pid_file: dir.join("roaming.pid"),
        };
        let service_center = ProcessSpec {
            name: format!("{code} service center"),
            program: self.node_binary.clone(),
            args: vec![
                "--role".into(),
                "service-center".into(),
                "--config".into(),
                config,
                "--data-dir".into(),
                dir.join("data").display().to_string(),
                "--listen-client".into(),
                addr(ports.client),
                "--listen-pair".into(),
                addr(ports.service_center_pair),
                "--exit-with-parent".into(),
            ],
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
            readiness::wait(code, url(region.ports.client), url(region.ports.peer)).await?;
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
                    "metrics": format!("{}/metrics", url(r.ports.metrics)),
                    "dir": dir.display().to_string(),
                });
                (code.clone(), entry)
            })
            .collect();
        let text = serde_json::to_string_pretty(&json!({ "regions": regions }))?;
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
