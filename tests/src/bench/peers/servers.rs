//! A NATS supercluster on loopback, the peer the side-by-side scenario
//! measures Meridian against: three single-server clusters C0, C1, C2
//! joined by gateways (as Meridian's three regions are joined by their
//! peer links), bound to 127.0.0.1 with loopback advertise addresses, on
//! free ports, in a temporary directory, JetStream on every server with
//! file storage and `sync_interval: always` (an fsync per message, the
//! durability a Meridian send has when it is acked).
//!
//! nats-server 2.15.2 refuses JetStream on a gateway-connected server that
//! has no cluster routes, so each server also gets a cluster block with a
//! route to a loopback port nobody listens on (it logs failed route
//! attempts, harmlessly).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// The clusters, one server each; gateway names are cluster names.
pub const CLUSTERS: [&str; 3] = ["C0", "C1", "C2"];

/// The loopback ports of one server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    pub client: u16,
    /// Monitoring (HTTP): /healthz, /gatewayz, /jsz.
    pub http: u16,
    pub cluster: u16,
    pub gateway: u16,
    /// The route nobody answers (see the module's doc).
    pub unused_route: u16,
}

/// The configuration file of server `i` of the supercluster `all`.
pub fn config(i: usize, all: &[Ports; 3], store_dir: &Path) -> String {
    let p = all[i];
    let name = CLUSTERS[i];
    let mut gateways = String::new();
    for (other, ports) in CLUSTERS.iter().zip(all) {
        let _ = writeln!(
            gateways,
            "    {{name: {other}, urls: [\"nats://127.0.0.1:{}\"]}}",
            ports.gateway
        );
    }
    format!(
        r#"server_name: s{i}
listen: "127.0.0.1:{client}"
client_advertise: "127.0.0.1:{client}"
http: "127.0.0.1:{http}"
jetstream {{
  store_dir: "{store}"
  sync_interval: always
}}
cluster {{
  name: {name}
  listen: "127.0.0.1:{cluster}"
  advertise: "127.0.0.1:{cluster}"
  routes: ["nats-route://127.0.0.1:{unused}"]
}}
gateway {{
  name: {name}
  listen: "127.0.0.1:{gateway}"
  advertise: "127.0.0.1:{gateway}"
  gateways: [
{gateways}  ]
}}
"#,
        client = p.client,
        http = p.http,
        store = store_dir.display(),
        cluster = p.cluster,
        unused = p.unused_route,
        gateway = p.gateway,
    )
}

/// Free loopback ports for three servers, all distinct: every listener is
/// held until all are chosen, then released for the servers to bind.
fn free_ports() -> anyhow::Result<[Ports; 3]> {
    let listeners = (0..15)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("cannot bind a free loopback port")?;
    let ports = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(std::array::from_fn(|i| {
        let p = &ports[i * 5..i * 5 + 5];
        Ports {
            client: p[0],
            http: p[1],
            cluster: p[2],
            gateway: p[3],
            unused_route: p[4],
        }
    }))
}

/// The running supercluster. Dropping it kills the servers (also on an
/// error or an interrupt), then removes their directory; `kill_on_drop`
/// covers a server whose start failed half-way.
pub struct Supercluster {
    // Fields drop in order: the servers before their directory.
    servers: Vec<Child>,
    pub ports: [Ports; 3],
    logs: Vec<PathBuf>,
    pub dir: tempfile::TempDir,
}

impl Supercluster {
    /// Starts the three servers of `nats_server` and waits until each is
    /// healthy (JetStream current with its meta leader), has gateways out
    /// to both other clusters, and runs JetStream with `sync_always`.
    pub async fn start(nats_server: &Path, timeout: Duration) -> anyhow::Result<Self> {
        if !nats_server.is_file() {
            bail!(
                "no nats-server at {} (benches/peers/run installs it; or pass --nats-server PATH)",
                nats_server.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("meridian-bench-nats-")
            .tempdir()
            .context("cannot create the NATS servers' directory")?;
        let ports = free_ports()?;
        let mut cluster = Self {
            servers: Vec::new(),
            ports,
            logs: Vec::new(),
            dir,
        };
        for i in 0..CLUSTERS.len() {
            let home = cluster.dir.path().join(format!("s{i}"));
            std::fs::create_dir_all(&home)?;
            let conf = home.join("nats.conf");
            std::fs::write(&conf, config(i, &ports, &home.join("jetstream")))?;
            let log = home.join("nats.log");
            let out = std::fs::File::create(&log)?;
            let child = Command::new(nats_server)
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out)
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("cannot start {}", nats_server.display()))?;
            cluster.servers.push(child);
            cluster.logs.push(log);
        }
        cluster.wait_ready(timeout).await?;
        Ok(cluster)
    }

    /// `nats://127.0.0.1:<port>` of cluster `i`'s server.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.ports[i].client)
    }

    pub fn pids(&self) -> Vec<u32> {
        self.servers.iter().filter_map(Child::id).collect()
    }

    async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        for i in 0..self.servers.len() {
            let http = self.ports[i].http;
            loop {
                if let Some(status) = self.servers[i].try_wait()? {
                    bail!("nats-server s{i} exited ({status})\n{}", self.log_tail(i));
                }
                let problem = match ready(http).await {
                    Ok(()) => break,
                    Err(e) => e,
                };
                if Instant::now() >= deadline {
                    bail!(
                        "nats-server s{i} not ready within {} s: {problem:#}\n{}",
                        timeout.as_secs(),
                        self.log_tail(i)
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(&self.logs[i]).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        format!("--- last lines of {} ---\n{tail}", self.logs[i].display())
    }
}

impl Drop for Supercluster {
    /// SIGKILL to every server, and a short wait for each to be gone, so
    /// that none still writes into the directory being removed.
    fn drop(&mut self) {
        for child in &mut self.servers {
            let _ = child.start_kill();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        for child in &mut self.servers {
            while !matches!(child.try_wait(), Ok(Some(_)) | Err(_))
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// One server is ready: /healthz is ok, /gatewayz has outbound gateways
/// connected to both other clusters, /jsz says every write is synced.
async fn ready(http: u16) -> anyhow::Result<()> {
    let (status, body) = get(http, "/healthz").await?;
    anyhow::ensure!(status == 200, "/healthz answered {status}: {}", body.trim());
    let (_, body) = get(http, "/gatewayz").await?;
    let gatewayz: serde_json::Value = serde_json::from_str(&body).context("/gatewayz")?;
    let missing = missing_gateways(&gatewayz);
    anyhow::ensure!(
        missing.is_empty(),
        "gateways not connected yet to {}",
        missing.join(", ")
    );
    let (_, body) = get(http, "/jsz").await?;
    let jsz: serde_json::Value = serde_json::from_str(&body).context("/jsz")?;
    anyhow::ensure!(
        jsz.pointer("/config/sync_always") == Some(&serde_json::Value::Bool(true)),
        "/jsz does not show sync_always: true (config {})",
        jsz.get("config").cloned().unwrap_or_default()
    );
    Ok(())
}

/// The other clusters that a server's /gatewayz shows no outbound
/// connection to.
fn missing_gateways(gatewayz: &serde_json::Value) -> Vec<String> {
    let own = gatewayz.get("name").and_then(|n| n.as_str()).unwrap_or("");
    CLUSTERS
        .iter()
        .filter(|c| **c != own)
        .filter(|c| {
            gatewayz
                .pointer(&format!("/outbound_gateways/{c}/connection"))
                .is_none()
        })
        .map(|c| (*c).to_owned())
        .collect()
}

/// A GET on the monitoring port: (status, body). HTTP/1.0, so the server
/// closes the connection after its answer.
async fn get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .with_context(|| format!("GET {path}: no answer within 5 s"))??;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("GET {path}: no HTTP status in {head:?}"))?;
    Ok((status, body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports(base: u16) -> Ports {
        Ports {
            client: base,
            http: base + 1,
            cluster: base + 2,
            gateway: base + 3,
            unused_route: base + 4,
        }
    }

    #[test]
    fn each_server_is_on_loopback_with_jetstream_synced_and_gateways_to_all() {
        let all = [ports(4000), ports(5000), ports(6000)];
        let text = config(1, &all, Path::new("/tmp/x/s1/jetstream"));
        for line in [
            "server_name: s1",
            "listen: \"127.0.0.1:5000\"",
            "client_advertise: \"127.0.0.1:5000\"",
            "http: \"127.0.0.1:5001\"",
            "store_dir: \"/tmp/x/s1/jetstream\"",
            "sync_interval: always",
            "name: C1",
            "listen: \"127.0.0.1:5002\"",
            "advertise: \"127.0.0.1:5002\"",
            "routes: [\"nats-route://127.0.0.1:5004\"]",
            "listen: \"127.0.0.1:5003\"",
            "advertise: \"127.0.0.1:5003\"",
            "{name: C0, urls: [\"nats://127.0.0.1:4003\"]}",
            "{name: C1, urls: [\"nats://127.0.0.1:5003\"]}",
            "{name: C2, urls: [\"nats://127.0.0.1:6003\"]}",
        ] {
            assert!(
                text.lines().any(|l| l.trim() == line),
                "no line {line:?} in\n{text}"
            );
        }
        assert!(!text.contains("0.0.0.0"), "{text}");
    }

    #[test]
    fn free_ports_are_distinct() {
        let all = free_ports().unwrap();
        let mut seen: Vec<u16> = all
            .iter()
            .flat_map(|p| [p.client, p.http, p.cluster, p.gateway, p.unused_route])
            .collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 15);
    }

    #[test]
    fn a_gateway_without_a_connection_is_missing() {
        let gatewayz = serde_json::json!({
            "name": "C0",
            "outbound_gateways": {
                "C1": {"configured": true, "connection": {"port": 1}},
                "C2": {"configured": true}
            }
        });
        assert_eq!(missing_gateways(&gatewayz), ["C2"]);
        let none = serde_json::json!({"name": "C2"});
        assert_eq!(missing_gateways(&none), ["C0", "C1"]);
    }
}
