//! The mesh configuration a node reads from a file: the region itself, its
//! pair's endpoints and every other region as a peer. The operator (or local
//! mode) writes it; nodes pick up changes without a restart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::Error;
use crate::ids::is_region_code;

/// How often the file is checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshConfig {
    /// This region's code.
    pub region: String,
    pub service_center: PairEndpoint,
    pub roaming: PairEndpoint,
    #[serde(default)]
    pub peers: Vec<Peer>,
}

/// The most service-center replicas one region's mesh configuration may
/// list (`serviceCenter.replicas`): a bound on the channels the roaming
/// system keeps and on the replicas one call may try.
pub const MAX_PAIR_REPLICAS: usize = 16;

/// The longest pair URL accepted.
const MAX_URL_LEN: usize = 256;

/// Where one half of the local pair is reached by the other half.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PairEndpoint {
    /// `http://host:port` of the local-pair API.
    pub pair: String,
    /// Every replica's pair URL, when the half runs as several processes
    /// (service-center replicas on one shared data center,
    /// docs/ARCHITECTURE.md §12); `pair` is one of them, so a reader that
    /// knows only `pair` still reaches one. Empty: `pair` is the only one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<String>,
    /// A URL whose host name resolves to the address of every replica (a
    /// headless Service on Kubernetes), instead of a list: the roaming
    /// system looks it up every few seconds and dials each address with
    /// this URL's scheme and port, because one Service address would take
    /// every call to one replica (docs/ARCHITECTURE.md §12, "Reaching the
    /// replicas"). While the name resolves to nothing, `pair` serves. Only
    /// the service center's, and never with `replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<String>,
}

/// The parts of a `dns` URL: the scheme to dial each address with, the
/// host name to look up, and the port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsName<'a> {
    pub scheme: &'a str,
    pub host: &'a str,
    pub port: u16,
}

impl<'a> DnsName<'a> {
    /// `url` taken apart, if it is `http://` or `https://`, a host name
    /// (not an address: there would be nothing to look up) and a port.
    pub fn parse(url: &'a str) -> Option<Self> {
        if !is_pair_url(url) {
            return None;
        }
        let (scheme, rest) = url.split_once("://")?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = authority.rsplit_once(':')?;
        let port = port.parse().ok().filter(|p| *p != 0)?;
        let name = !host.is_empty()
            && host.parse::<std::net::Ipv4Addr>().is_err()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        name.then_some(Self { scheme, host, port })
    }
}

impl PairEndpoint {
    /// One process at `pair`.
    pub fn single(pair: impl Into<String>) -> Self {
        Self {
            pair: pair.into(),
            replicas: Vec::new(),
            dns: None,
        }
    }

    /// The URLs of every replica: `replicas`, or `pair` alone.
    pub fn urls(&self) -> &[String] {
        if self.replicas.is_empty() {
            std::slice::from_ref(&self.pair)
        } else {
            &self.replicas
        }
    }

    /// Checks the replica list and the name; `field` names the endpoint in
    /// messages (`serviceCenter`), and `found_by_name` says whether its
    /// replicas may be found by name (only the service center's are).
    fn validate(&self, field: &str, found_by_name: bool) -> Result<(), String> {
        if let Some(dns) = &self.dns {
            if !found_by_name {
                return Err(format!(
                    "{field}.dns: only the service center's replicas are found by name"
                ));
            }
            if !self.replicas.is_empty() {
                return Err(format!(
                    "{field}.dns: not with {field}.replicas (the replicas are either listed or found by name)"
                ));
            }
            if DnsName::parse(dns).is_none() {
                return Err(format!(
                    "{field}.dns: {dns:?} is not an http:// or https:// URL of a host name and port"
                ));
            }
        }
        if self.replicas.is_empty() {
            return Ok(());
        }
        if self.replicas.len() > MAX_PAIR_REPLICAS {
            return Err(format!(
                "{field}.replicas: {} URLs, at most {MAX_PAIR_REPLICAS}",
                self.replicas.len()
            ));
        }
        for (i, url) in self.replicas.iter().enumerate() {
            if !is_pair_url(url) {
                return Err(format!(
                    "{field}.replicas[{i}]: {url:?} is not an http:// or https:// URL of a host and port"
                ));
            }
            if self.replicas[..i].contains(url) {
                return Err(format!("{field}.replicas[{i}]: {url} is listed twice"));
            }
        }
        if !self.replicas.contains(&self.pair) {
            return Err(format!(
                "{field}.pair: {:?} is not one of {field}.replicas",
                self.pair
            ));
        }
        Ok(())
    }
}

/// Whether `url` looks like a pair URL: `http://` or `https://`, then a
/// host (and port), nothing more and nothing odd.
fn is_pair_url(url: &str) -> bool {
    let Some(authority) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    else {
        return false;
    };
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    url.len() <= MAX_URL_LEN
        && !authority.is_empty()
        && authority
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']' | '_'))
}

/// Another region of the mesh and the link to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Peer {
    pub region: String,
    /// `http://host:port` of that region's roaming system's peer API.
    pub endpoint: String,
    /// `false` takes the link down.
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// Route weight; unset means measured round-trip time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<u32>,
}

fn enabled() -> bool {
    true
}

impl MeshConfig {
    /// Parses and validates the YAML form.
    pub fn from_yaml(text: &str) -> Result<Self, Error> {
        let config: MeshConfig = serde_yaml::from_str(text)
            .map_err(|e| Error::InvalidArgument(format!("mesh configuration: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("a mesh configuration serializes")
    }

    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |m: String| Err(Error::InvalidArgument(format!("mesh configuration: {m}")));
        if !is_region_code(&self.region) {
            return invalid(format!("region: {:?} is not a region code", self.region));
        }
        self.service_center
            .validate("serviceCenter", true)
            .or_else(invalid)?;
        self.roaming.validate("roaming", false).or_else(invalid)?;
        let mut seen = std::collections::BTreeSet::new();
        for (i, peer) in self.peers.iter().enumerate() {
            if !is_region_code(&peer.region) {
                return invalid(format!(
                    "peers[{i}].region: {:?} is not a region code",
                    peer.region
                ));
            }
            if peer.region == self.region {
                return invalid(format!("peers[{i}].region: a region is not its own peer"));
            }
            if !seen.insert(&peer.region) {
                return invalid(format!(
                    "peers[{i}].region: {} is listed twice",
                    peer.region
                ));
            }
        }
        Ok(())
    }

    pub fn peer(&self, region: &str) -> Option<&Peer> {
        self.peers.iter().find(|p| p.region == region)
    }

    /// Whether `region` is in the mesh: this region or one of its peers,
    /// whether its link is up, down or disabled. A region that is not is
    /// one that left the mesh (or never was in it).
    pub fn has_region(&self, region: &str) -> bool {
        self.region == region || self.peer(region).is_some()
    }

    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::InvalidArgument(format!("mesh configuration {}: {e}", path.display()))
        })?;
        Self::from_yaml(&text)
            .map_err(|e| Error::InvalidArgument(format!("{}: {e}", path.display())))
    }

    /// Writes the file atomically (a reader never sees half of it).
    pub fn store(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("yaml.tmp");
        std::fs::write(&tmp, self.to_yaml())?;
        std::fs::rename(tmp, path)
    }
}

/// Loads the file, then watches it: the receiver sees every valid change.
/// An invalid change is logged and ignored, so the node keeps its last good
/// configuration.
pub fn watch_file(path: PathBuf) -> Result<watch::Receiver<MeshConfig>, Error> {
    let first = MeshConfig::load(&path)?;
    let (tx, rx) = watch::channel(first);
    tokio::spawn(async move {
        let mut last_text = std::fs::read_to_string(&path).unwrap_or_default();
        loop {
            tokio::time::sleep(RELOAD_INTERVAL).await;
            if tx.is_closed() {
                return;
            }
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            if text == last_text {
                continue;
            }
            last_text = text;
            match MeshConfig::from_yaml(&last_text) {
                Ok(config) if config.region != tx.borrow().region => {
                    tracing::error!(path = %path.display(), "mesh configuration names another region; ignored");
                }
                Ok(config) => {
                    tracing::info!(path = %path.display(), peers = config.peers.len(), "mesh configuration reloaded");
                    tx.send_replace(config);
                }
                Err(err) => tracing::error!(%err, "mesh configuration change ignored"),
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "
region: eu
serviceCenter: {pair: 'http://127.0.0.1:1'}
roaming: {pair: 'http://127.0.0.1:2'}
peers:
  - {region: us, endpoint: 'http://127.0.0.1:3', cost: 10}
  - {region: ap, endpoint: 'http://127.0.0.1:4', enabled: false}
";

    #[test]
    fn parses_the_yaml_form_and_round_trips() {
        let config = MeshConfig::from_yaml(EXAMPLE).unwrap();
        assert_eq!(config.region, "eu");
        assert_eq!(config.peer("us").unwrap().cost, Some(10));
        assert!(config.peer("us").unwrap().enabled);
        assert!(!config.peer("ap").unwrap().enabled);
        assert_eq!(MeshConfig::from_yaml(&config.to_yaml()).unwrap(), config);
        for region in ["eu", "us", "ap"] {
            assert!(config.has_region(region), "{region}: itself, or a peer");
        }
        assert!(!config.has_region("sa"), "not in the mesh");
    }

    #[test]
    fn refuses_bad_configuration_naming_the_field() {
        let twice = EXAMPLE.replace("region: ap", "region: us");
        let err = MeshConfig::from_yaml(&twice).unwrap_err().to_string();
        assert!(err.contains("peers[1].region"), "{err}");
        let own = EXAMPLE.replace("region: ap", "region: eu");
        assert!(
            MeshConfig::from_yaml(&own)
                .unwrap_err()
                .to_string()
                .contains("own peer")
        );
        let unknown = format!("{EXAMPLE}\nextra: 1\n");
        assert!(
            MeshConfig::from_yaml(&unknown)
                .unwrap_err()
                .to_string()
                .contains("extra")
        );
    }

    #[test]
    fn service_center_replicas_are_listed_checked_and_optional() {
        let config = MeshConfig::from_yaml(EXAMPLE).unwrap();
        assert_eq!(config.service_center.urls(), ["http://127.0.0.1:1"]);
        assert!(
            !config.to_yaml().contains("replicas"),
            "an empty list is left out"
        );

        let two = EXAMPLE.replace(
            "serviceCenter: {pair: 'http://127.0.0.1:1'}",
            "serviceCenter: {pair: 'http://127.0.0.1:1', replicas: ['http://127.0.0.1:1', 'https://localhost:5']}",
        );
        let config = MeshConfig::from_yaml(&two).unwrap();
        assert_eq!(
            config.service_center.urls(),
            ["http://127.0.0.1:1", "https://localhost:5"]
        );
        assert_eq!(MeshConfig::from_yaml(&config.to_yaml()).unwrap(), config);

        let refused = |replicas: &str, field: &str| {
            let text = EXAMPLE.replace(
                "serviceCenter: {pair: 'http://127.0.0.1:1'}",
                &format!("serviceCenter: {{pair: 'http://127.0.0.1:1', replicas: {replicas}}}"),
            );
            let err = MeshConfig::from_yaml(&text).unwrap_err().to_string();
            assert!(err.contains(field), "{replicas}: {err}");
        };
        refused("['http://127.0.0.1:2']", "serviceCenter.pair");
        refused(
            "['http://127.0.0.1:1', 'ftp://x:1']",
            "serviceCenter.replicas[1]",
        );
        refused(
            "['http://127.0.0.1:1', 'http://a b:1']",
            "serviceCenter.replicas[1]",
        );
        refused(
            "['http://127.0.0.1:1', 'http://']",
            "serviceCenter.replicas[1]",
        );
        refused(
            "['http://127.0.0.1:1', 'http://127.0.0.1:1']",
            "listed twice",
        );
        let many: Vec<String> = (1..=MAX_PAIR_REPLICAS + 1)
            .map(|p| format!("'http://127.0.0.1:{p}'"))
            .collect();
        refused(&format!("[{}]", many.join(", ")), "at most 16");
        let most: Vec<String> = (1..=MAX_PAIR_REPLICAS)
            .map(|p| format!("'http://127.0.0.1:{p}'"))
            .collect();
        let text = EXAMPLE.replace(
            "serviceCenter: {pair: 'http://127.0.0.1:1'}",
            &format!(
                "serviceCenter: {{pair: 'http://127.0.0.1:1', replicas: [{}]}}",
                most.join(", ")
            ),
        );
        assert!(MeshConfig::from_yaml(&text).is_ok(), "16 replicas are fine");
    }

    #[test]
    fn service_center_replicas_may_be_found_by_a_checked_name() {
        let with = |sc: &str| {
            EXAMPLE.replace(
                "serviceCenter: {pair: 'http://127.0.0.1:1'}",
                &format!("serviceCenter: {sc}"),
            )
        };
        let text = with("{pair: 'https://sc.chat.svc:7401', dns: 'https://sc-pods.chat.svc:7401'}");
        let config = MeshConfig::from_yaml(&text).unwrap();
        let dns = config.service_center.dns.as_deref().unwrap();
        assert_eq!(
            DnsName::parse(dns),
            Some(DnsName {
                scheme: "https",
                host: "sc-pods.chat.svc",
                port: 7401
            })
        );
        assert_eq!(
            config.service_center.urls(),
            ["https://sc.chat.svc:7401"],
            "pair, until the name is resolved"
        );
        assert_eq!(MeshConfig::from_yaml(&config.to_yaml()).unwrap(), config);
        assert!(
            !MeshConfig::from_yaml(EXAMPLE)
                .unwrap()
                .to_yaml()
                .contains("dns"),
            "left out when unset"
        );

        let refused = |text: &str, field: &str| {
            let err = MeshConfig::from_yaml(text).unwrap_err().to_string();
            assert!(err.contains(field), "{text}: {err}");
        };
        for bad in [
            "ftp://sc-pods:7401",
            "https://sc-pods",
            "https://sc-pods:0",
            "https://sc-pods:x",
            "https://10.0.0.1:7401",
            "https://[::1]:7401",
            "https://:7401",
        ] {
            refused(
                &with(&format!("{{pair: 'https://sc:1', dns: '{bad}'}}")),
                "serviceCenter.dns",
            );
        }
        refused(
            &with("{pair: 'https://a:1', replicas: ['https://a:1'], dns: 'https://sc-pods:1'}"),
            "not with serviceCenter.replicas",
        );
        refused(
            &EXAMPLE.replace(
                "roaming: {pair: 'http://127.0.0.1:2'}",
                "roaming: {pair: 'http://127.0.0.1:2', dns: 'https://r-pods:7402'}",
            ),
            "roaming.dns",
        );
    }

    #[tokio::test]
    async fn a_watched_file_delivers_changes_and_ignores_broken_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mesh.yaml");
        let mut config = MeshConfig::from_yaml(EXAMPLE).unwrap();
        config.store(&path).unwrap();
        let mut rx = watch_file(path.clone()).unwrap();

        std::fs::write(&path, "region: [").unwrap();
        tokio::time::sleep(RELOAD_INTERVAL * 3).await;
        assert_eq!(
            *rx.borrow(),
            config,
            "a broken file keeps the last good configuration"
        );

        config.peers[1].enabled = true;
        config.store(&path).unwrap();
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .unwrap()
            .unwrap();
        assert!(rx.borrow().peer("ap").unwrap().enabled);
    }
}
