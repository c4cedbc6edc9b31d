//! Logins, sessions and their limits over real gRPC: a service center's
//! client API on 127.0.0.1, with a real data center file. Its roaming system
//! is not running, so only this region's users are served. This file is its
//! own test process, so the memory it measures is its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use meridian_node::client::Client;
use meridian_node::limits::{LOGIN_FAILURES_PER_ADDRESS, LOGIN_FAILURES_PER_USER};
use meridian_node::mesh::MeshConfig;
use meridian_node::mesh::config::PairEndpoint;
use meridian_node::service_center::data_center::DataCenter;
use meridian_node::service_center::roaming_client::RoamingClient;
use meridian_node::service_center::{BusinessCenter, grpc};
use meridian_node::transport;
use meridian_node::trust::pki::{DEFAULT_LIFETIME, MeshCa};
use tokio::net::TcpListener;
use tonic::Code;

const PASSWORD: &str = "correct horse";
const MIB: u64 = 1024 * 1024;

/// A service center of region `eu` serving its client API in plaintext.
struct ServiceCenter {
    url: String,
    _data: tempfile::TempDir,
    _config: tokio::sync::watch::Sender<MeshConfig>,
}

async fn serve() -> ServiceCenter {
    let data = tempfile::tempdir().expect("temporary directory");
    let db = data.path().join("data-center.sqlite");
    let dc = tokio::task::spawn_blocking(move || DataCenter::open(&db))
        .await
        .expect("open task")
        .expect("data center");
    let ca = MeshCa::generate("test").expect("mesh CA");
    let credentials = ca
        .issue_region("eu", "test", &[], DEFAULT_LIFETIME)
        .and_then(|c| c.credentials(&ca.cert_pem))
        .expect("region certificate");
    let nowhere = PairEndpoint::single("https://127.0.0.1:9");
    let (config, config_rx) = tokio::sync::watch::channel(MeshConfig {
        region: "eu".into(),
        service_center: nowhere.clone(),
        roaming: nowhere,
        peers: Vec::new(),
    });
    let link = Arc::new(RoamingClient::new(config_rx, credentials));
    let center = BusinessCenter::start(dc, link)
        .await
        .expect("business center");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(
        transport::server()
            .add_service(grpc::client_service(center))
            .serve_with_incoming(transport::plain_incoming(listener)),
    );
    ServiceCenter {
        url,
        _data: data,
        _config: config,
    }
}

impl ServiceCenter {
    async fn client(&self) -> Client {
        Client::connect(&self.url, None)
            .await
            .expect("connect to the service center")
    }

    async fn register(&self, users: &[&str]) {
        let mut client = self.client().await;
        for user in users {
            client.register(user, PASSWORD).await.expect("register");
        }
    }
}

/// This process's resident memory.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_refreshed_and_logged_out_over_grpc() {
    let sc = serve().await;
    sc.register(&["ann@eu"]).await;
    let mut ann = sc.client().await;
    let login = ann.login("ann@eu", PASSWORD).await.unwrap();
    assert!(!login.refresh_token.is_empty());
    assert!(login.refresh_expires_at_ms > login.expires_at_ms);
    ann.create_group("lobby").await.unwrap();

    let renewed = ann.refresh().await.unwrap();
    assert_ne!(renewed.session, login.session);
    ann.get_group("lobby@eu").await.unwrap();
    let mut old = sc.client().await;
    old.set_session(&login.session).unwrap();
    let refused = old.get_group("lobby@eu").await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    old.set_refresh_token(&login.refresh_token);
    let spent = old.refresh().await.unwrap_err();
    assert_eq!(spent.code(), Code::Unauthenticated, "{spent:?}");

    assert!(ann.logout().await.unwrap().revoked);
    let mut after = sc.client().await;
    after.set_session(&renewed.session).unwrap();
    let revoked = after.get_group("lobby@eu").await.unwrap_err();
    assert_eq!(revoked.code(), Code::Unauthenticated);
    assert_eq!(revoked.message(), "unknown session; log in again");
    after.set_refresh_token(&renewed.refresh_token);
    assert_eq!(
        after.refresh().await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert!(!after.logout().await.unwrap().revoked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_throttled_by_the_clients_address() {
    let sc = serve().await;
    sc.register(&["ann@eu"]).await;
    let mut client = sc.client().await;
    for i in 0..LOGIN_FAILURES_PER_ADDRESS {
        let wrong = client
            .login(&format!("nobody{i}@eu"), PASSWORD)
            .await
            .unwrap_err();
        assert_eq!(wrong.code(), Code::Unauthenticated, "{wrong:?}");
    }
    let refused = client.login("ann@eu", PASSWORD).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(
        refused.message(),
        "too many failed logins from 127.0.0.1; try again in 1 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_wrong_passwords_is_refused_early_and_a_real_login_answers_within_a_second() {
    const FLOOD: usize = 120;
    let sc = serve().await;
    sc.register(&["ann@eu", "bob@eu"]).await;
    let mut clients = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        clients.push(sc.client().await);
    }
    let mut bob = sc.client().await;

    let before = rss();
    let peak = Arc::new(AtomicU64::new(before));
    let flooding = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, flooding) = (peak.clone(), flooding.clone());
        tokio::spawn(async move {
            while flooding.load(Ordering::SeqCst) {
                peak.fetch_max(rss(), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let (answered, mut answers) = tokio::sync::mpsc::unbounded_channel();
    for mut client in clients {
        let answered = answered.clone();
        tokio::spawn(async move {
            let status = client
                .login("ann@eu", "not the password")
                .await
                .expect_err("a wrong password never logs in");
            let _ = answered.send(status);
        });
    }
    drop(answered);
    // Once the flood is being answered, a real user logs in.
    let first = answers.recv().await.expect("an answer");
    let started = Instant::now();
    bob.login("bob@eu", PASSWORD).await.expect("bob logs in");
    let took = started.elapsed();

    let mut statuses = vec![first];
    while let Some(status) = answers.recv().await {
        statuses.push(status);
    }
    flooding.store(false, Ordering::SeqCst);
    sampler.await.unwrap();
    let growth = peak.load(Ordering::SeqCst).saturating_sub(before);

    assert!(took < Duration::from_secs(1), "bob's login took {took:?}");
    let count = |code| statuses.iter().filter(|s| s.code() == code).count();
    let (wrong, refused) = (count(Code::Unauthenticated), count(Code::ResourceExhausted));
    assert_eq!(wrong + refused, FLOOD, "{statuses:?}");
    assert!(
        wrong <= LOGIN_FAILURES_PER_USER as usize,
        "only {LOGIN_FAILURES_PER_USER} guesses are checked, not {wrong}"
    );
    assert!(
        statuses
            .iter()
            .filter(|s| s.code() == Code::ResourceExhausted)
            .all(|s| s.message().starts_with("too many")),
        "{statuses:?}"
    );
    assert!(growth < 200 * MIB, "RSS grew by {} MiB", growth / MIB);
    eprintln!(
        "flood of {FLOOD}: {wrong} checked, {refused} refused; bob's login took {took:?}; \
         RSS grew {} MiB",
        growth / MIB
    );
}
