//! Several regions in one process, each a real node (service center and
//! roaming system) serving gRPC on `127.0.0.1:0`, wired as a full mesh.
//!
//! Each region's data center is a SQLite file, or, with
//! `MERIDIAN_TEST_DATA_CENTER=postgres`, a database of its own on one real
//! PostgreSQL server that the test process starts (see [`crate::postgres`]):
//! so the same flow tests run against both backends.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use meridian_node::client::Client;
use meridian_node::mesh::MeshConfig;
use meridian_node::mesh::config::{PairEndpoint, Peer};
use meridian_node::mesh::health::HealthPolicy;
use meridian_node::server::{Node, RoamingListeners, ServiceCenterListeners};
use meridian_node::service_center::data_center::postgres::Settings;
use meridian_node::transport::{self, Dial};
use meridian_node::trust::Credentials;
use meridian_node::trust::pki::{DEFAULT_LIFETIME, MeshCa};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// Which backend [`Mesh::start`] gives the regions' data centers.
pub const DATA_CENTER_ENV: &str = "MERIDIAN_TEST_DATA_CENTER";

/// The PostgreSQL server the regions of this test process share, started
/// at first use; its watchdog stops it when the process exits.
static POSTGRES: std::sync::OnceLock<std::sync::Mutex<crate::postgres::Postgres>> =
    std::sync::OnceLock::new();

/// Whether the regions' data centers are on PostgreSQL in this run.
pub fn on_postgres() -> bool {
    match std::env::var(DATA_CENTER_ENV).as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Err(_) => false,
        Ok(other) => panic!("{DATA_CENTER_ENV}={other}: use sqlite or postgres"),
    }
}

/// A fresh database on this process's PostgreSQL server, and the settings
/// a service center reaches it with (its URL in a file under `dir`).
pub fn postgres_database(dir: &std::path::Path, name: &str) -> Settings {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let server = POSTGRES.get_or_init(|| {
        std::sync::Mutex::new(crate::postgres::Postgres::start().expect("start PostgreSQL"))
    });
    let database = format!(
        "{}_{}",
        name.replace('-', "_"),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let url = server
        .lock()
        .expect("postgres server")
        .create_database(&database)
        .expect("create a database");
    std::fs::create_dir_all(dir).expect("data directory");
    let url_file = dir.join(format!("{database}.url"));
    std::fs::write(&url_file, url).expect("write the connection string");
    Settings {
        url_file,
        ca_file: None,
    }
}

/// The password every harness user gets.
pub const PASSWORD: &str = "correct horse";

struct Ports {
    client: TcpListener,
    sc_pair: TcpListener,
    roaming_pair: TcpListener,
    peer: TcpListener,
    metrics: TcpListener,
    /// The client and pair ports of each further service-center replica.
    replicas: Vec<(TcpListener, TcpListener)>,
}

/// A further service-center replica of a region: a node that runs only a
/// service center, on the region's PostgreSQL database.
pub struct Replica {
    pub client_url: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// Runs `node` until its stop is sent.
fn spawn(node: Node) -> (oneshot::Sender<()>, JoinHandle<()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        node.run(async move {
            let _ = stopped.await;
        })
        .await
        .expect("node runs");
    });
    (stop, task)
}

async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0")
}

fn url(listener: &TcpListener) -> String {
    format!("https://{}", listener.local_addr().expect("local address"))
}

/// The client API here is served in plaintext (TLS on it is local mode's
/// and the fault harness's to prove).
fn plain_url(listener: &TcpListener) -> String {
    format!("http://{}", listener.local_addr().expect("local address"))
}

pub struct Region {
    pub code: String,
    pub client_url: String,
    /// The roaming system's peer API (also serving the admin API).
    pub peer_url: String,
    /// The node's `/metrics` and `/mesh` (plain HTTP), as `127.0.0.1:port`.
    pub metrics_addr: std::net::SocketAddr,
    pub mesh: watch::Sender<MeshConfig>,
    /// The service-center replicas beyond the first (the node above).
    pub replicas: Vec<Replica>,
    /// Where its data center is, when on PostgreSQL.
    pub postgres: Option<Settings>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// A mesh of regions running in this process.
pub struct Mesh {
    pub regions: BTreeMap<String, Region>,
    /// The mesh CA every region's certificate comes from.
    pub ca: MeshCa,
    /// A tool certificate of that CA, for the admin API.
    pub tool: Arc<Credentials>,
    data: tempfile::TempDir,
}

/// Heartbeats as in production, but judged leniently: many nodes share this
/// one test process and its two cores, so a slow answer is not a cut here.
/// Links in these tests go down by configuration (`set_link`), at once.
fn lenient_health() -> HealthPolicy {
    HealthPolicy {
        timeout: Duration::from_secs(3),
        down_after: 10,
        ..HealthPolicy::default()
    }
}

impl Mesh {
    /// Starts one node per region code, fully meshed.
    pub async fn start(codes: &[&str]) -> Mesh {
        Self::start_with_replicas(codes, &[]).await
    }

    /// Starts one node per region code, fully meshed; each `(code, n)` of
    /// `replicas` runs `n` service-center replicas on one PostgreSQL
    /// database (whatever [`DATA_CENTER_ENV`] says): its node, and `n - 1`
    /// nodes that run only a service center.
    pub async fn start_with_replicas(codes: &[&str], replicas: &[(&str, usize)]) -> Mesh {
        // Logs show with `RUST_LOG=meridian_node=info cargo test -- --nocapture`.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let data = tempfile::tempdir().expect("temporary directory");
        let ca = MeshCa::generate("test").expect("mesh CA");
        let tool = ca
            .issue_admin("tests", DEFAULT_LIFETIME)
            .and_then(|c| c.credentials(&ca.cert_pem))
            .expect("tool certificate");
        let mut ports = BTreeMap::new();
        for code in codes {
            ports.insert(
                code.to_string(),
                Ports {
                    client: bind().await,
                    sc_pair: bind().await,
                    roaming_pair: bind().await,
                    peer: bind().await,
                    metrics: bind().await,
                    replicas: Vec::new(),
                },
            );
        }
        for (code, n) in replicas {
            let p = ports
                .get_mut(*code)
                .expect("a replicated region is started");
            for _ in 1..*n {
                p.replicas.push((bind().await, bind().await));
            }
        }
        let peer_urls: BTreeMap<String, String> = ports
            .iter()
            .map(|(code, p)| (code.clone(), url(&p.peer)))
            .collect();
        let mut regions = BTreeMap::new();
        for (code, mut p) in ports {
            let replicated = !p.replicas.is_empty();
            let service_center = if replicated {
                PairEndpoint {
                    pair: url(&p.sc_pair),
                    replicas: std::iter::once(&p.sc_pair)
                        .chain(p.replicas.iter().map(|(_, pair)| pair))
                        .map(url)
                        .collect(),
                    dns: None,
                }
            } else {
                PairEndpoint::single(url(&p.sc_pair))
            };
            let config = MeshConfig {
                region: code.clone(),
                service_center,
                roaming: PairEndpoint::single(url(&p.roaming_pair)),
                peers: peer_urls
                    .iter()
                    .filter(|(other, _)| **other != code)
                    .map(|(other, endpoint)| Peer {
                        region: other.clone(),
                        endpoint: endpoint.clone(),
                        enabled: true,
                        cost: None,
                    })
                    .collect(),
            };
            let (mesh_tx, mesh_rx) = watch::channel(config);
            let client_url = plain_url(&p.client);
            let credentials = ca
                .issue_region(&code, "test", &["127.0.0.1".into()], DEFAULT_LIFETIME)
                .and_then(|c| c.credentials(&ca.cert_pem))
                .expect("region certificate");
            let peer_url = url(&p.peer);
            let metrics_addr = p.metrics.local_addr().expect("local address");
            let postgres =
                (replicated || on_postgres()).then(|| postgres_database(data.path(), &code));
            let replica_nodes: Vec<Replica> = std::mem::take(&mut p.replicas)
                .into_iter()
                .map(|(client, pair)| {
                    let client_url = plain_url(&client);
                    let (stop, task) = spawn(Node {
                        mesh: mesh_rx.clone(),
                        data_dir: data.path().join(&code),
                        postgres: postgres.clone(),
                        service_center: Some(ServiceCenterListeners { client, pair }),
                        roaming: None,
                        health: lenient_health(),
                        credentials: credentials.clone(),
                        client_tls: None,
                        probe: None,
                        metrics: None,
                        limits: Default::default(),
                    });
                    Replica {
                        client_url,
                        stop: Some(stop),
                        task: Some(task),
                    }
                })
                .collect();
            let region_postgres = postgres.clone();
            let node = Node {
                mesh: mesh_rx,
                data_dir: data.path().join(&code),
                postgres,
                service_center: Some(ServiceCenterListeners {
                    client: p.client,
                    pair: p.sc_pair,
                }),
                roaming: Some(RoamingListeners {
                    pair: p.roaming_pair,
                    peer: p.peer,
                }),
                health: lenient_health(),
                credentials,
                client_tls: None,
                probe: None,
                metrics: Some(p.metrics),
                limits: Default::default(),
            };
            let (stop, task) = spawn(node);
            regions.insert(
                code.clone(),
                Region {
                    code,
                    client_url,
                    peer_url,
                    metrics_addr,
                    mesh: mesh_tx,
                    replicas: replica_nodes,
                    postgres: region_postgres,
                    stop: Some(stop),
                    task: Some(task),
                },
            );
        }
        Mesh {
            regions,
            ca,
            tool,
            data,
        }
    }

    pub fn region(&self, code: &str) -> &Region {
        &self.regions[code]
    }

    /// A client connected to `code`'s service center, not logged in.
    pub async fn client(&self, code: &str) -> Client {
        Client::connect(&self.region(code).client_url, None)
            .await
            .expect("connect to the service center")
    }

    /// A client connected to service-center replica `index` of `code` (0
    /// is the region's node), not logged in.
    pub async fn replica_client(&self, code: &str, index: usize) -> Client {
        let region = self.region(code);
        let url = match index {
            0 => &region.client_url,
            i => &region.replicas[i - 1].client_url,
        };
        Client::connect(url, None)
            .await
            .expect("connect to the service-center replica")
    }

    /// Stops service-center replica `index` (at least 1) of `code` and
    /// waits for it.
    pub async fn stop_replica(&mut self, code: &str, index: usize) {
        let replica = &mut self.regions.get_mut(code).expect("a region").replicas[index - 1];
        if let Some(stop) = replica.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = replica.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }

    /// Registers `user` (at its home) and returns a client logged in at `at`.
    pub async fn user(&self, user: &str, at: &str) -> Client {
        let home = user.rsplit('@').next().expect("user@home");
        self.client(home)
            .await
            .register(user, PASSWORD)
            .await
            .expect("register");
        self.login(user, at).await
    }

    /// A client of `user` logged in at region `at`.
    pub async fn login(&self, user: &str, at: &str) -> Client {
        let mut client = self.client(at).await;
        client.login(user, PASSWORD).await.expect("login");
        client
    }

    /// Takes the direct link between `a` and `b` down (or up) at both ends.
    pub fn set_link(&self, a: &str, b: &str, enabled: bool) {
        for (from, to) in [(a, b), (b, a)] {
            self.region(from).mesh.send_modify(|config| {
                for peer in config.peers.iter_mut().filter(|p| p.region == to) {
                    peer.enabled = enabled;
                }
            });
        }
    }

    /// What `code`'s roaming system reports of its links.
    pub async fn mesh_status(&self, code: &str) -> meridian_node::proto::peer_api::MeshStatusReply {
        use meridian_node::proto::peer_api::{MeshStatusRequest, admin_client::AdminClient};
        let dial = Dial::Region {
            credentials: self.tool.clone(),
            region: code.to_owned(),
        };
        let channel = transport::channel(&self.region(code).peer_url, dial).expect("admin API");
        let mut admin = AdminClient::new(channel);
        admin
            .mesh_status(MeshStatusRequest {})
            .await
            .expect("mesh status")
            .into_inner()
    }

    /// Waits until `code` reports the link to `peer` in `condition`.
    pub async fn wait_link(
        &self,
        code: &str,
        peer: &str,
        condition: meridian_node::proto::peer_api::LinkCondition,
    ) -> meridian_node::proto::peer_api::LinkStatus {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let status = self.mesh_status(code).await;
            if let Some(link) = status
                .links
                .into_iter()
                .find(|l| l.peer == peer && l.condition() == condition)
            {
                return link;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{code}: link to {peer} never became {condition:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Where `code`'s service center keeps its data center.
    pub fn data_dir(&self, code: &str) -> std::path::PathBuf {
        self.data.path().join(code)
    }

    /// Stops every node and waits for them.
    pub async fn stop(mut self) {
        self.stop_regions().await;
    }

    /// Stops every node and waits for each to return from `Node::run`,
    /// keeping their data directories.
    pub async fn stop_regions(&mut self) {
        for region in self.regions.values_mut() {
            if let Some(stop) = region.stop.take() {
                let _ = stop.send(());
            }
            for replica in &mut region.replicas {
                if let Some(stop) = replica.stop.take() {
                    let _ = stop.send(());
                }
            }
        }
        for region in self.regions.values_mut() {
            let replicas = region.replicas.iter_mut().filter_map(|r| r.task.take());
            for task in region.task.take().into_iter().chain(replicas) {
                let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
            }
        }
    }
}
