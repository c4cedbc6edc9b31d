//! Ports for each region's listeners on 127.0.0.1: the first service
//! center's client and pair ports, the roaming system's pair, peer and
//! metrics ports, and a client and a pair port for each further
//! service-center replica. They are kept in `DIR/ports.json`, so a restart
//! with the same state directory reuses them (when they are still free) and
//! clients' endpoints stay the same.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegionPorts {
    pub client: u16,
    pub service_center_pair: u16,
    pub roaming_pair: u16,
    pub peer: u16,
    /// The roaming system's /metrics; 0 in files from before it existed.
    #[serde(default)]
    pub metrics: u16,
    /// The service-center replicas after the first (a region on
    /// PostgreSQL may run several); none in files from before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<ReplicaPorts>,
}

/// A further service-center replica's own client and pair ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaPorts {
    pub client: u16,
    pub pair: u16,
}

impl RegionPorts {
    /// The ports of the region's processes other than further replicas.
    fn base(&self) -> [u16; 5] {
        [
            self.client,
            self.service_center_pair,
            self.roaming_pair,
            self.peer,
            self.metrics,
        ]
    }

    fn all(&self) -> Vec<u16> {
        let mut all = self.base().to_vec();
        all.extend(self.replicas.iter().flat_map(|r| [r.client, r.pair]));
        all
    }

    /// Every service-center replica's (client, pair) ports, the first first.
    pub fn service_centers(&self) -> Vec<ReplicaPorts> {
        let first = ReplicaPorts {
            client: self.client,
            pair: self.service_center_pair,
        };
        std::iter::once(first)
            .chain(self.replicas.iter().copied())
            .collect()
    }
}

pub struct PortBook {
    path: PathBuf,
    ports: BTreeMap<String, RegionPorts>,
}

fn free_now(port: u16) -> bool {
    port != 0 && TcpListener::bind(("127.0.0.1", port)).is_ok()
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

    /// The ports of `region`, not running, with `service_centers` replicas:
    /// the recorded ones where they are free, else new ones.
    pub fn ports(&mut self, region: &str, service_centers: usize) -> anyhow::Result<RegionPorts> {
        let known = self.ports.get(region);
        let base_free = known.is_some_and(|k| k.base().iter().all(|p| free_now(*p)));
        let replicas: Vec<ReplicaPorts> = known
            .map(|k| k.replicas.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|r| free_now(r.client) && free_now(r.pair))
            .collect();
        let mut ports = match known {
            Some(known) if base_free => RegionPorts {
                replicas,
                ..known.clone()
            },
            _ => {
                let mut taken = self.taken();
                taken.extend(replicas.iter().flat_map(|r| [r.client, r.pair]));
                RegionPorts {
                    client: pick(&mut taken)?,
                    service_center_pair: pick(&mut taken)?,
                    roaming_pair: pick(&mut taken)?,
                    peer: pick(&mut taken)?,
                    metrics: pick(&mut taken)?,
                    replicas,
                }
            }
        };
        self.fit(region, &mut ports, service_centers)?;
        Ok(ports)
    }

    /// Gives `ports`, a running region's, ports for `service_centers`
    /// replicas: it keeps the ones it has (they are in use by the region's
    /// own processes), drops those past the count, and adds new ones.
    pub fn resize(
        &mut self,
        region: &str,
        ports: &RegionPorts,
        service_centers: usize,
    ) -> anyhow::Result<RegionPorts> {
        let mut ports = ports.clone();
        self.fit(region, &mut ports, service_centers)?;
        Ok(ports)
    }

    /// Sizes `ports.replicas` to `service_centers - 1` and records the
    /// region's ports.
    fn fit(
        &mut self,
        region: &str,
        ports: &mut RegionPorts,
        service_centers: usize,
    ) -> anyhow::Result<()> {
        let further = service_centers.saturating_sub(1);
        ports.replicas.truncate(further);
        if ports.replicas.len() < further {
            let mut taken = self.taken();
            taken.extend(ports.all());
            while ports.replicas.len() < further {
                ports.replicas.push(ReplicaPorts {
                    client: pick(&mut taken)?,
                    pair: pick(&mut taken)?,
                });
            }
        }
        if self.ports.get(region) != Some(ports) {
            self.ports.insert(region.to_owned(), ports.clone());
            let text = serde_json::to_string_pretty(&self.ports)?;
            crate::local::write_atomically(&self.path, text.as_bytes())?;
        }
        Ok(())
    }

    /// Every port recorded for any region.
    fn taken(&self) -> Vec<u16> {
        self.ports.values().flat_map(RegionPorts::all).collect()
    }
}

/// A free port not in `taken`, which it joins (the kernel may hand out the
/// same free port twice in a row).
fn pick(taken: &mut Vec<u16>) -> anyhow::Result<u16> {
    loop {
        let port = fresh()?;
        if !taken.contains(&port) {
            taken.push(port);
            return Ok(port);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn distinct(ports: &RegionPorts) -> bool {
        let all = ports.all();
        all.iter()
            .enumerate()
            .all(|(i, p)| *p != 0 && !all[..i].contains(p))
    }

    #[test]
    fn replicas_get_ports_of_their_own_that_a_restart_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let mut book = PortBook::load(dir.path()).unwrap();
        let one = book.ports("eu", 1).unwrap();
        assert!(one.replicas.is_empty());
        assert_eq!(one.service_centers().len(), 1);

        let three = book.ports("eu", 3).unwrap();
        assert_eq!(
            three.base(),
            one.base(),
            "the first replica keeps its ports"
        );
        assert_eq!(three.replicas.len(), 2);
        assert!(distinct(&three), "{three:?}");
        let us = book.ports("us", 2).unwrap();
        assert!(
            us.all().iter().all(|p| !three.all().contains(p)),
            "regions share no port"
        );

        let again = PortBook::load(dir.path()).unwrap().ports("eu", 3).unwrap();
        assert_eq!(again, three, "recorded and reused");
        let text = std::fs::read_to_string(dir.path().join("ports.json")).unwrap();
        assert!(text.contains("\"replicas\""), "{text}");
    }

    #[test]
    fn a_running_region_keeps_its_ports_when_resized() {
        let dir = tempfile::tempdir().unwrap();
        let mut book = PortBook::load(dir.path()).unwrap();
        let two = book.ports("eu", 2).unwrap();
        // Its processes hold the ports now, so they are not free.
        let _held: Vec<TcpListener> = two
            .all()
            .iter()
            .map(|p| TcpListener::bind(("127.0.0.1", *p)).unwrap())
            .collect();
        let four = book.resize("eu", &two, 4).unwrap();
        assert_eq!(four.service_centers()[..2], two.service_centers()[..]);
        assert_eq!(four.replicas.len(), 3);
        assert!(distinct(&four), "{four:?}");
        let one = book.resize("eu", &four, 1).unwrap();
        assert_eq!(one.base(), two.base());
        assert!(one.replicas.is_empty());
    }

    #[test]
    fn files_from_before_replicas_still_load() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("ports.json"),
            r#"{"eu": {"client": 1, "serviceCenterPair": 2, "roamingPair": 3, "peer": 4}}"#,
        )
        .unwrap();
        let book = PortBook::load(dir.path()).unwrap();
        assert!(book.ports["eu"].replicas.is_empty());
        assert_eq!(book.ports["eu"].metrics, 0);
    }
}
