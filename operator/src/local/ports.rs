//! Ports for each region's four listeners on 127.0.0.1. They are kept in
//! `DIR/ports.json`, so a restart with the same state directory reuses them
//! (when they are still free) and clients' endpoints stay the same.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegionPorts {
    pub client: u16,
    pub service_center_pair: u16,
    pub roaming_pair: u16,
    pub peer: u16,
    /// The roaming system's /metrics; 0 in files from before it existed.
    #[serde(default)]
    pub metrics: u16,
}

impl RegionPorts {
    fn all(&self) -> [u16; 4] {
        [
            self.client,
            self.service_center_pair,
            self.roaming_pair,
            self.peer,
        ]
    }
}

pub struct PortBook {
    path: PathBuf,
    ports: BTreeMap<String, RegionPorts>,
}

fn free_now(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A port the kernel says is free now.
fn fresh() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind a port on 127.0.0.1")?;
    Ok(listener.local_addr()?.port())
}

impl PortBook {
    pub fn load(state_dir: &Path) -> anyhow::Result<Self> {
        let path = state_dir.join("ports.json");
        let ports = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).with_context(|| {
                format!("{} is malformed; delete it to start afresh", path.display())
            })?,
            Err(_) => BTreeMap::new(),
        };
        Ok(Self { path, ports })
    }

    /// The ports of `region`: the recorded ones if all are free, else new ones.
    pub fn ports(&mut self, region: &str) -> anyhow::Result<RegionPorts> {
        if let Some(known) = self.ports.get(region)
            && known.all().iter().all(|p| *p != 0 && free_now(*p))
        {
            return Ok(*known);
        }
        let taken: Vec<u16> = self.ports.values().flat_map(|p| p.all()).collect();
        let pick = || -> anyhow::Result<u16> {
            loop {
                let port = fresh()?;
                if !taken.contains(&port) {
                    return Ok(port);
                }
            }
        };
        let mut ports = RegionPorts {
            client: pick()?,
            service_center_pair: pick()?,
            roaming_pair: pick()?,
            peer: pick()?,
            metrics: pick()?,
        };
        // The kernel may hand out the same free port twice in a row.
        while ports
            .all()
            .iter()
            .enumerate()
            .any(|(i, p)| ports.all()[..i].contains(p))
        {
            ports = RegionPorts {
                client: pick()?,
                service_center_pair: pick()?,
                roaming_pair: pick()?,
                peer: pick()?,
                metrics: pick()?,
            };
        }
        self.ports.insert(region.to_owned(), ports);
        let text = serde_json::to_string_pretty(&self.ports)?;
        crate::local::write_atomically(&self.path, text.as_bytes())?;
        Ok(ports)
    }
}
