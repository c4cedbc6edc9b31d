//! A mesh of regions as real processes: each region's service center and
//! roaming system are separate `meridian-node` processes on the region's host
//! (see [`super::hosts`]), so that each can be killed, stopped and restarted
//! on its own.
//!
//! Wiring, per region `x`:
//! - the service center and the roaming system talk over `x`'s own loopback
//!   (the local pair);
//! - the roaming system's peer API listens on every address of `x`'s host;
//! - for each other region `y` there is a [`Proxy`] for the directed link
//!   `x→y`: it listens on `x`'s loopback, and its upstream connections are
//!   made on `x`'s host to `y`'s address on the `x`–`y` veth (loopback mode:
//!   to `y`'s peer port on 127.0.0.1). `x`'s mesh.yaml names the proxy as
//!   `y`'s endpoint. So a cut veth breaks the link, and the proxy can add
//!   delay or cut it too;
//! - the test (the clients) reaches `x`'s client API and admin API through
//!   bridges on the test's own 127.0.0.1 whose upstream sockets are made in
//!   `x`'s namespace (loopback mode: directly).
//!
//! On [`Backend::Postgres`], each region's data center is a database of its
//! own on one real PostgreSQL server that the test starts (in the test's
//! own network namespace, reached from each region's host through a
//! bridge), and each region runs two service-center replicas
//! ([`Process::ServiceCenter`] and [`Process::Replica`]).
//!
//! Logs: one file per process in the cluster's temporary directory. When the
//! test panics, the tail of each is printed and the directory is kept
//! (`MERIDIAN_FAULTS_KEEP=1` keeps it always). Node log level:
//! `MERIDIAN_FAULTS_LOG` (default `info`).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_node::client::Client;
use meridian_node::mesh::MeshConfig;
use meridian_node::mesh::config::{PairEndpoint, Peer};
use meridian_node::proto::peer_api::admin_client::AdminClient;
use meridian_node::proto::peer_api::{
    LinkCondition, LinkStatus, MeshStatusReply, MeshStatusRequest,
};
use meridian_node::transport::{self, Dial};
use meridian_node::trust::pki::{DEFAULT_LIFETIME, PkiDir};
use meridian_node::trust::{CredentialFiles, Credentials};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::net::TcpListener;
use tokio::time::Instant;

use super::Serial;
use super::hosts::{Hosts, Mode};
use super::proxy::Proxy;
use crate::in_process::PASSWORD;
use crate::local_mode::binary;

/// One of a region's processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Process {
    ServiceCenter,
    Roaming,
    /// The second service-center replica (on [`Backend::Postgres`] only).
    Replica,
}

impl fmt::Display for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Process::ServiceCenter => "service-center",
            Process::Roaming => "roaming",
            Process::Replica => "service-center-2",
        })
    }
}

/// Where the regions keep their data centers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file each, one service center per region.
    Sqlite,
    /// A database each on one PostgreSQL server, two service-center
    /// replicas per region.
    Postgres,
}

/// How long a process may take to listen after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Where one region's processes listen, on the region's host.
#[derive(Clone, Debug)]
struct Addresses {
    client: SocketAddr,
    sc_pair: SocketAddr,
    /// The second replica's client and pair ports (on PostgreSQL).
    replica: Option<(SocketAddr, SocketAddr)>,
    roaming_pair: SocketAddr,
    /// What the peer API binds.
    peer_listen: SocketAddr,
    /// Where the peer (and admin) API is reached on the host itself.
    peer: SocketAddr,
}

struct Node {
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

pub struct RegionHost {
    pub code: String,
    pub dir: PathBuf,
    addresses: Addresses,
    /// The client API, as the test reaches it.
    pub client_url: String,
    /// Every service-center replica's client API (the first is
    /// `client_url`), as the test reaches them.
    pub client_urls: Vec<String>,
    /// The roaming system's admin API, as the test reaches it.
    pub admin_url: String,
    _bridges: Vec<Proxy>,
}

pub struct Cluster {
    regions: BTreeMap<String, RegionHost>,
    /// The mesh CA and every region's certificate, as local mode keeps them.
    pki: PkiDir,
    /// The test's tool certificate, for the admin API.
    tool: Arc<Credentials>,
    nodes: Mutex<BTreeMap<(String, Process), Node>>,
    /// The proxy of each directed link `(from, to)`.
    links: BTreeMap<(String, String), Proxy>,
    /// Dropped after the processes and the proxies: the namespaces go last.
    hosts: Hosts,
    dir: Option<tempfile::TempDir>,
    log_level: String,
    /// The regions' PostgreSQL server, on [`Backend::Postgres`].
    database: Option<Arc<Mutex<crate::postgres::Postgres>>>,
    /// Bridges from each region's host to the database.
    _database_bridges: Vec<Proxy>,
    _serial: Serial,
}

async fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local address")
        .port()
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

impl Cluster {
    /// Starts every region's two processes, fully meshed, and waits until
    /// every link has answered a heartbeat.
    pub async fn start(codes: &[&str]) -> Cluster {
        Self::start_on(codes, Backend::Sqlite).await
    }

    /// Starts the regions with their data centers on `backend`.
    pub async fn start_on(codes: &[&str], backend: Backend) -> Cluster {
        let serial = Serial::acquire().await;
        let replicated = backend == Backend::Postgres;
        let hosts = Hosts::create(codes);
        let dir = tempfile::Builder::new()
            .prefix("meridian-faults-")
            .tempdir()
            .expect("temporary directory");
        eprintln!(
            "faults: {} regions {codes:?} in {:?} mode; logs in {}",
            codes.len(),
            hosts.mode(),
            dir.path().display()
        );

        let mut addresses = BTreeMap::new();
        for code in codes {
            let a = match hosts.mode() {
                Mode::Namespaces => Addresses {
                    client: local(7400),
                    sc_pair: local(7401),
                    replica: replicated.then(|| (local(7404), local(7405))),
                    roaming_pair: local(7402),
                    peer_listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 7443),
                    peer: local(7443),
                },
                Mode::Loopback => {
                    let peer = local(free_port().await);
                    let replica = if replicated {
                        Some((local(free_port().await), local(free_port().await)))
                    } else {
                        None
                    };
                    Addresses {
                        client: local(free_port().await),
                        sc_pair: local(free_port().await),
                        replica,
                        roaming_pair: local(free_port().await),
                        peer_listen: peer,
                        peer,
                    }
                }
            };
            addresses.insert(code.to_string(), a);
        }

        // A proxy per directed link, listening on the source's loopback.
        let mut links = BTreeMap::new();
        for from in codes {
            for to in codes.iter().filter(|to| *to != from) {
                let listener = hosts.bind(from, local(0)).expect("a link proxy's listener");
                let upstream = SocketAddr::new(
                    hosts.peer_address(from, to),
                    addresses[*to].peer_listen.port(),
                );
                let proxy = Proxy::start(listener, hosts.connector(from, upstream));
                links.insert((from.to_string(), to.to_string()), proxy);
            }
        }

        let pki = PkiDir::open(&dir.path().join("pki"), "faults").expect("PKI directory");
        pki.ensure("tests", |ca| ca.issue_admin("tests", DEFAULT_LIFETIME))
            .expect("tool certificate");
        let files = pki.files("tests");
        let tool = Credentials::load(CredentialFiles {
            ca: files.ca,
            cert: files.cert,
            key: files.key,
        })
        .expect("tool credentials");
        let database = replicated.then(|| {
            let server = crate::postgres::Postgres::start().expect("start PostgreSQL");
            Arc::new(Mutex::new(server))
        });
        let mut database_bridges = Vec::new();
        let mut regions = BTreeMap::new();
        let mut nodes = BTreeMap::new();
        let log_level = std::env::var("MERIDIAN_FAULTS_LOG").unwrap_or_else(|_| "info".into());
        for code in codes {
            let a = addresses[*code].clone();
            let region_dir = dir.path().join(code);
            std::fs::create_dir_all(&region_dir).expect("region directory");
            pki.ensure(code, |ca| {
                ca.issue_region(code, "faults", &[], DEFAULT_LIFETIME)
            })
            .expect("region certificate");
            let tls = pki.files(code);
            let service_center = match a.replica {
                Some((_, pair)) => PairEndpoint {
                    pair: format!("https://{}", a.sc_pair),
                    replicas: vec![format!("https://{}", a.sc_pair), format!("https://{pair}")],
                    dns: None,
                },
                None => PairEndpoint::single(format!("https://{}", a.sc_pair)),
            };
            let config = MeshConfig {
                region: code.to_string(),
                service_center,
                roaming: PairEndpoint::single(format!("https://{}", a.roaming_pair)),
                peers: codes
                    .iter()
                    .filter(|other| *other != code)
                    .map(|other| Peer {
                        region: other.to_string(),
                        endpoint: format!(
                            "https://{}",
                            links[&(code.to_string(), other.to_string())].addr()
                        ),
                        enabled: true,
                        cost: None,
                    })
                    .collect(),
            };
            let mesh = region_dir.join("mesh.yaml");
            config.store(&mesh).expect("write mesh.yaml");
            let common = |role: &str, data: &str| {
                vec![
                    format!("--role={role}"),
                    format!("--config={}", mesh.display()),
                    format!("--data-dir={}", region_dir.join(data).display()),
                    "--exit-with-parent".to_owned(),
                    format!("--tls-ca={}", tls.ca.display()),
                    format!("--tls-cert={}", tls.cert.display()),
                    format!("--tls-key={}", tls.key.display()),
                ]
            };
            let mut sc = common("service-center", "data");
            if let Some(server) = &database {
                let url_file = region_dir.join("postgres.url");
                let url = database_url(server, code, &hosts, &mut database_bridges);
                std::fs::write(&url_file, url).expect("write the connection string");
                sc.push(format!("--postgres-url-file={}", url_file.display()));
            }
            let replica_sc = a.replica.map(|(client, pair)| {
                let mut args = sc.clone();
                args.push(format!("--listen-client={client}"));
                args.push(format!("--listen-pair={pair}"));
                args
            });
            sc.push(format!("--listen-client={}", a.client));
            sc.push(format!("--listen-pair={}", a.sc_pair));
            let mut roaming = common("roaming", "roaming-data");
            roaming.push(format!("--listen-roaming-pair={}", a.roaming_pair));
            roaming.push(format!("--listen-peer={}", a.peer_listen));
            let processes = [
                Some((Process::ServiceCenter, sc)),
                Some((Process::Roaming, roaming)),
                replica_sc.map(|args| (Process::Replica, args)),
            ];
            for (process, args) in processes.into_iter().flatten() {
                nodes.insert(
                    (code.to_string(), process),
                    Node {
                        args,
                        log: dir.path().join(format!("{code}-{process}.log")),
                        child: None,
                    },
                );
            }

            let clients: Vec<SocketAddr> = std::iter::once(a.client)
                .chain(a.replica.map(|(client, _)| client))
                .collect();
            let (client_urls, admin_url, bridges) = match hosts.mode() {
                Mode::Namespaces => {
                    let mut bridges = Vec::new();
                    let mut client_urls = Vec::new();
                    for client in &clients {
                        let bridge = Proxy::start(
                            TcpListener::bind(local(0)).await.expect("a client bridge"),
                            hosts.connector(code, *client),
                        );
                        client_urls.push(format!("http://{}", bridge.addr()));
                        bridges.push(bridge);
                    }
                    let admin = Proxy::start(
                        TcpListener::bind(local(0)).await.expect("an admin bridge"),
                        hosts.connector(code, a.peer),
                    );
                    let admin_url = format!("https://{}", admin.addr());
                    bridges.push(admin);
                    (client_urls, admin_url, bridges)
                }
                Mode::Loopback => (
                    clients.iter().map(|c| format!("http://{c}")).collect(),
                    format!("https://{}", a.peer),
                    Vec::new(),
                ),
            };
            let client_url = client_urls[0].clone();
            regions.insert(
                code.to_string(),
                RegionHost {
                    code: code.to_string(),
                    dir: region_dir,
                    addresses: a,
                    client_url,
                    client_urls,
                    admin_url,
                    _bridges: bridges,
                },
            );
        }

        let cluster = Cluster {
            regions,
            pki,
            tool,
            nodes: Mutex::new(nodes),
            links,
            hosts,
            dir: Some(dir),
            log_level,
            database,
            _database_bridges: database_bridges,
            _serial: serial,
        };
        let keys: Vec<(String, Process)> = cluster.lock().keys().cloned().collect();
        for (code, process) in &keys {
            cluster.spawn(code, *process);
        }
        for (code, process) in &keys {
            cluster.wait_listening(code, *process).await;
        }
        cluster.wait_heartbeats(Duration::from_secs(20)).await;
        cluster
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, Process), Node>> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn mode(&self) -> Mode {
        self.hosts.mode()
    }

    /// The mesh CA and the regions' credentials (to make certificates that
    /// a test needs, such as forged ones).
    pub fn pki(&self) -> &PkiDir {
        &self.pki
    }

    pub fn hosts(&self) -> &Hosts {
        &self.hosts
    }

    pub fn region(&self, code: &str) -> &RegionHost {
        &self.regions[code]
    }

    pub fn codes(&self) -> Vec<String> {
        self.regions.keys().cloned().collect()
    }

    /// The temporary directory holding data and logs.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("the cluster's directory").path()
    }

    fn spawn(&self, code: &str, process: Process) {
        let mut nodes = self.lock();
        let node = nodes
            .get_mut(&(code.to_owned(), process))
            .expect("a known process");
        assert!(node.child.is_none(), "{code} {process} is running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("process log");
        let mut command = self.hosts.command(code, binary("meridian-node"));
        let child = command
            .args(&node.args)
            .env("RUST_LOG", &self.log_level)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {code} {process}: {e}"));
        node.child = Some(child);
    }

    fn pid(&self, code: &str, process: Process) -> Option<Pid> {
        self.lock()
            .get(&(code.to_owned(), process))
            .and_then(|n| n.child.as_ref())
            .map(|c| Pid::from_raw(c.id() as i32))
    }

    fn signal(&self, code: &str, process: Process, signal: Signal) {
        let pid = self
            .pid(code, process)
            .unwrap_or_else(|| panic!("{code} {process} is not running"));
        kill(pid, signal).unwrap_or_else(|e| panic!("{signal} to {code} {process}: {e}"));
    }

    /// Waits until the process listens on its main port.
    pub async fn wait_listening(&self, code: &str, process: Process) {
        let a = &self.regions[code].addresses;
        let addr = match process {
            Process::ServiceCenter => a.client,
            Process::Roaming => a.peer,
            Process::Replica => a.replica.expect("a second replica").0,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.hosts.connect(code, addr).await.is_ok() {
                return;
            }
            {
                let mut nodes = self.lock();
                let node = nodes.get_mut(&(code.to_owned(), process)).expect("known");
                if let Some(status) = node
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten())
                {
                    drop(nodes);
                    panic!("{code} {process} exited early with {status}");
                }
            }
            assert!(
                Instant::now() < deadline,
                "{code} {process} did not listen on {addr} within {START_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every link of every region has answered a heartbeat and
    /// is Up.
    pub async fn wait_heartbeats(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for code in self.regions.keys() {
            loop {
                let ready = self.try_mesh_status(code).await.is_some_and(|s| {
                    s.links.len() + 1 == self.regions.len()
                        && s.links
                            .iter()
                            .all(|l| l.condition() == LinkCondition::Up && l.rtt_millis.is_some())
                });
                if ready {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{code}: links not all Up within {timeout:?}: {:?}",
                    self.try_mesh_status(code).await
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// `kill -9`: the process dies at once, without any cleanup.
    pub fn kill9(&self, code: &str, process: Process) {
        self.signal(code, process, Signal::SIGKILL);
        let mut nodes = self.lock();
        let node = nodes.get_mut(&(code.to_owned(), process)).expect("known");
        if let Some(mut child) = node.child.take() {
            let _ = child.wait();
        }
        eprintln!("faults: kill -9 {code} {process}");
    }

    /// `SIGSTOP`: the process freezes; its sockets stay open.
    pub fn stop(&self, code: &str, process: Process) {
        self.signal(code, process, Signal::SIGSTOP);
        eprintln!("faults: SIGSTOP {code} {process}");
    }

    /// `SIGCONT`: a stopped process runs on.
    pub fn cont(&self, code: &str, process: Process) {
        self.signal(code, process, Signal::SIGCONT);
        eprintln!("faults: SIGCONT {code} {process}");
    }

    /// Starts the process again with the same arguments and data directory
    /// (killing it first if it still runs), and waits until it listens.
    pub async fn restart(&self, code: &str, process: Process) {
        if self.pid(code, process).is_some() {
            self.kill9(code, process);
        }
        self.spawn(code, process);
        self.wait_listening(code, process).await;
        eprintln!("faults: restarted {code} {process}");
    }

    /// The processes that exited on their own (none the faults killed and
    /// have not restarted yet): each is a failure of the system.
    pub fn exited(&self) -> Vec<String> {
        let mut nodes = self.lock();
        nodes
            .iter_mut()
            .filter_map(|((code, process), node)| {
                let status = node.child.as_mut()?.try_wait().ok().flatten()?;
                Some(format!("{code} {process} exited with {status}"))
            })
            .collect()
    }

    /// Whether the process runs (a stopped one counts).
    pub fn running(&self, code: &str, process: Process) -> bool {
        let mut nodes = self.lock();
        let node = nodes.get_mut(&(code.to_owned(), process)).expect("known");
        node.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// The proxy on the directed link `from→to`.
    pub fn link(&self, from: &str, to: &str) -> &Proxy {
        &self.links[&(from.to_owned(), to.to_owned())]
    }

    /// Adds `one_way` delay to both directions of the link `a`–`b`.
    pub fn delay(&self, a: &str, b: &str, one_way: Duration) {
        self.link(a, b).set_delay(one_way);
        self.link(b, a).set_delay(one_way);
    }

    /// Cuts the link `a`–`b`: its veth goes down at both ends (loopback
    /// mode: both directions of its proxy stall).
    pub fn cut(&self, a: &str, b: &str) {
        match self.mode() {
            Mode::Namespaces => self
                .hosts
                .cut(a, b)
                .unwrap_or_else(|e| panic!("cut {a}-{b}: {e}")),
            Mode::Loopback => {
                self.link(a, b).stall(true);
                self.link(b, a).stall(true);
            }
        }
    }

    /// Heals the link `a`–`b`.
    pub fn heal(&self, a: &str, b: &str) {
        match self.mode() {
            Mode::Namespaces => self
                .hosts
                .heal(a, b)
                .unwrap_or_else(|e| panic!("heal {a}-{b}: {e}")),
            Mode::Loopback => {
                self.link(a, b).stall(false);
                self.link(b, a).stall(false);
            }
        }
    }

    /// Cuts every link of `code`.
    pub fn isolate(&self, code: &str) {
        for other in self.codes().iter().filter(|o| *o != code) {
            self.cut(code, other);
        }
    }

    /// Heals every link of `code`.
    pub fn rejoin(&self, code: &str) {
        for other in self.codes().iter().filter(|o| *o != code) {
            self.heal(code, other);
        }
    }

    /// Whether the regions run two service-center replicas each.
    pub fn replicated(&self) -> bool {
        self.database.is_some()
    }

    /// Restarts the regions' PostgreSQL server as after a crash (`SIGQUIT`,
    /// then a start that recovers from its WAL), down for at least `down`.
    pub async fn restart_database(&self, down: Duration) {
        let server = self.database.clone().expect("the regions' PostgreSQL");
        let stopped = {
            let server = server.clone();
            tokio::task::spawn_blocking(move || {
                server
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .stop(crate::postgres::Stop::Immediate)
            })
        };
        stopped.await.expect("stop").expect("PostgreSQL stops");
        eprintln!("faults: PostgreSQL stopped (immediate)");
        tokio::time::sleep(down).await;
        tokio::task::spawn_blocking(move || {
            server.lock().unwrap_or_else(|e| e.into_inner()).relaunch()
        })
        .await
        .expect("start")
        .expect("PostgreSQL starts again");
        eprintln!("faults: PostgreSQL restarted");
    }

    /// `client` (logged in at `code`) and a client of each further replica
    /// of `code`'s service center with its session, for failing over.
    pub async fn replicas_of(&self, code: &str, client: &Client) -> Vec<Client> {
        let mut clients = vec![client.clone()];
        for url in &self.regions[code].client_urls[1..] {
            clients.push(
                client
                    .connect_as(url, None)
                    .await
                    .unwrap_or_else(|e| panic!("connect to {code}'s replica at {url}: {e}")),
            );
        }
        clients
    }

    /// A client of `code`'s service center, not logged in.
    pub async fn client(&self, code: &str) -> Client {
        Client::connect(&self.regions[code].client_url, None)
            .await
            .unwrap_or_else(|e| panic!("connect to {code}'s service center: {e}"))
    }

    /// Registers `user` at its home and returns a client logged in at `at`.
    pub async fn user(&self, user: &str, at: &str) -> Client {
        let home = user.rsplit('@').next().expect("user@home");
        self.client(home)
            .await
            .register(user, PASSWORD)
            .await
            .unwrap_or_else(|e| panic!("register {user}: {e}"));
        let mut client = self.client(at).await;
        client
            .login(user, PASSWORD)
            .await
            .unwrap_or_else(|e| panic!("log {user} in at {at}: {e}"));
        client
    }

    /// What `code`'s roaming system reports, or `None` if it does not answer.
    pub async fn try_mesh_status(&self, code: &str) -> Option<MeshStatusReply> {
        let url = self.regions[code].admin_url.clone();
        let dial = Dial::Region {
            credentials: self.tool.clone(),
            region: code.to_owned(),
        };
        let call = async move {
            let mut admin = AdminClient::new(transport::channel(&url, dial).ok()?);
            admin
                .mesh_status(MeshStatusRequest {})
                .await
                .ok()
                .map(|r| r.into_inner())
        };
        tokio::time::timeout(Duration::from_secs(2), call)
            .await
            .ok()
            .flatten()
    }

    pub async fn mesh_status(&self, code: &str) -> MeshStatusReply {
        self.try_mesh_status(code)
            .await
            .unwrap_or_else(|| panic!("{code}'s roaming system does not answer mesh status"))
    }

    /// The link from `code` to `peer` as `code` reports it.
    pub async fn link_status(&self, code: &str, peer: &str) -> Option<LinkStatus> {
        self.try_mesh_status(code)
            .await?
            .links
            .into_iter()
            .find(|l| l.peer == peer)
    }

    /// Polls `code`'s view of `peer` every 50 ms until `accept` holds;
    /// returns it and how long it took, or `None` after `timeout`.
    pub async fn wait_link(
        &self,
        code: &str,
        peer: &str,
        timeout: Duration,
        accept: impl Fn(&LinkStatus) -> bool,
    ) -> Option<(LinkStatus, Duration)> {
        let started = Instant::now();
        loop {
            if let Some(link) = self.link_status(code, peer).await
                && accept(&link)
            {
                return Some((link, started.elapsed()));
            }
            if started.elapsed() >= timeout {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last `lines` lines of a process's log.
    pub fn log_tail(&self, code: &str, process: Process, lines: usize) -> String {
        let path = self.dir().join(format!("{code}-{process}.log"));
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Prints the tail of every process's log.
    pub fn print_logs(&self, lines: usize) {
        let keys: Vec<(String, Process)> = self.lock().keys().cloned().collect();
        for (code, process) in keys {
            eprintln!(
                "----- {code} {process} (last {lines} lines) -----\n{}",
                self.log_tail(&code, process, lines)
            );
        }
    }
}

/// The URL by which `code`'s service centers reach their database on
/// `server`: a database of the region's own, through a bridge on the
/// region's host to the server (in loopback mode, directly).
fn database_url(
    server: &Mutex<crate::postgres::Postgres>,
    code: &str,
    hosts: &Hosts,
    bridges: &mut Vec<Proxy>,
) -> String {
    let server = server.lock().unwrap_or_else(|e| e.into_inner());
    let url = server
        .create_database(&code.replace('-', "_"))
        .expect("create the region's database");
    if hosts.mode() == Mode::Loopback {
        return url;
    }
    let listener = hosts.bind(code, local(0)).expect("a database bridge");
    let upstream = local(server.port());
    let connect: super::proxy::Connector =
        Arc::new(move || Box::pin(tokio::net::TcpStream::connect(upstream)));
    let bridge = Proxy::start(listener, connect);
    let url = url.replace(
        &format!(":{}/", server.port()),
        &format!(":{}/", bridge.addr().port()),
    );
    bridges.push(bridge);
    url
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        if failed {
            self.print_logs(30);
        }
        for node in self.lock().values_mut() {
            if let Some(mut child) = node.child.take() {
                let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
                let _ = child.wait();
            }
        }
        self.links.clear();
        if let Some(dir) = self.dir.take()
            && (failed || std::env::var_os("MERIDIAN_FAULTS_KEEP").is_some())
        {
            eprintln!("faults: kept {}", dir.keep().display());
        }
    }
}
