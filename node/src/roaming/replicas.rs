//! The service center's replicas as its roaming system reaches them. A
//! region may run several service-center processes on one shared data
//! center (docs/ARCHITECTURE.md §12, "Several replicas"); the mesh
//! configuration lists their pair URLs (`serviceCenter.replicas`). Calls are
//! spread over them in turn, and a call that a replica could not take is
//! tried on the next one, within the call's deadline.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::time::Instant;
use tonic::{Code, Status};

/// Whose turn it is: the replica a call starts at. Each call takes the next
/// one, so that calls spread evenly over the replicas.
#[derive(Debug, Default)]
pub(super) struct Turns(AtomicUsize);

impl Turns {
    /// The indices of `count` replicas in the order one call tries them:
    /// every replica once, starting at the next in turn.
    pub(super) fn order(&self, count: usize) -> Vec<usize> {
        if count == 0 {
            return Vec::new();
        }
        let first = self.0.fetch_add(1, Ordering::Relaxed) % count;
        (0..count).map(|i| (first + i) % count).collect()
    }
}

/// How a request may be repeated on another replica after a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Repeat {
    /// Doing it twice has the effect of doing it once, so any replica that
    /// was unavailable may be followed by the next.
    Idempotent,
    /// Doing it twice could answer differently (a second registration of
    /// the same user is refused), so it moves on only from a replica that
    /// never received it.
    OnlyIfNeverSent,
}

/// Whether a failed attempt may be made again on the next replica.
///
/// A failure to connect (the replica's port refuses, its TLS handshake
/// fails, or connecting takes longer than `transport::CONNECT_TIMEOUT`, as
/// with a hung process) means the request never left this process, so any
/// request may move on. Any other
/// `Unavailable` (the connection broke during the call, the replica is
/// shutting down, its data center was briefly unavailable) may come after
/// the replica applied the request, so only an idempotent one moves on.
pub(super) fn may_try_next(status: &Status, repeat: Repeat) -> bool {
    if never_sent(status) {
        return true;
    }
    repeat == Repeat::Idempotent && status.code() == Code::Unavailable
}

/// Whether the call failed while connecting, before sending anything:
/// tonic's `ConnectError` is in the status's source chain (refused, or the
/// TLS handshake failed), or the connect timeout's: an I/O `TimedOut`
/// made of tokio's `Elapsed`. Channels set no read or write timeouts, and
/// a call's own timeout is tonic's `TimeoutExpired`, so only connecting
/// makes that one.
pub(super) fn never_sent(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        if err.is::<tonic::ConnectError>() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
            && io
                .get_ref()
                .is_some_and(|inner| inner.is::<tokio::time::error::Elapsed>())
        {
            return true;
        }
        source = err.source();
    }
    false
}

/// Makes `attempt` on each replica in `replicas`, in order, until one
/// answers, one fails in a way that may not be repeated elsewhere, or
/// `deadline` passes. Returns the last answer.
pub(super) async fn call<C, T, F, Fut>(
    replicas: Vec<C>,
    repeat: Repeat,
    deadline: Instant,
    mut attempt: F,
) -> Result<T, Status>
where
    F: FnMut(C) -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let mut last = Status::unavailable("no service-center replica is configured");
    for replica in replicas {
        let answer = match tokio::time::timeout_at(deadline, attempt(replica)).await {
            Ok(answer) => answer,
            Err(_) => return Err(Status::deadline_exceeded("the call's deadline passed")),
        };
        match answer {
            Ok(reply) => return Ok(reply),
            Err(status) if may_try_next(&status, repeat) && Instant::now() < deadline => {
                tracing::info!(code = ?status.code(), message = status.message(),
                    "a service-center replica did not take the call; trying the next");
                last = status;
            }
            Err(status) => return Err(status),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU32;
    use std::time::Duration;

    use tonic::transport::{Channel, Endpoint};
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    use super::*;

    #[test]
    fn calls_take_turns_and_each_tries_every_replica_once() {
        let turns = Turns::default();
        assert_eq!(turns.order(3), [0, 1, 2]);
        assert_eq!(turns.order(3), [1, 2, 0]);
        assert_eq!(turns.order(3), [2, 0, 1]);
        assert_eq!(turns.order(3), [0, 1, 2]);
        assert_eq!(turns.order(1), [0]);
        assert!(turns.order(0).is_empty());
    }

    /// A port that refuses connections: bound, then closed.
    fn dead_url() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        format!("http://127.0.0.1:{port}")
    }

    /// A live gRPC server (the health service) and its URL.
    async fn live_url() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (_reporter, health) = tonic_health::server::health_reporter();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming(crate::transport::plain_incoming(listener)),
        );
        url
    }

    fn lazy(url: &str) -> Channel {
        Endpoint::from_shared(url.to_owned())
            .unwrap()
            .connect_timeout(Duration::from_secs(1))
            .connect_lazy()
    }

    /// Calls the replicas at `urls` in order; returns the answer and the
    /// number of attempts made.
    async fn check(urls: &[String], repeat: Repeat) -> (Result<(), Status>, u32) {
        let attempts = Arc::new(AtomicU32::new(0));
        let channels: Vec<Channel> = urls.iter().map(|u| lazy(u)).collect();
        let deadline = Instant::now() + Duration::from_secs(5);
        let counted = attempts.clone();
        let answer = call(channels, repeat, deadline, |channel| {
            counted.fetch_add(1, Ordering::Relaxed);
            async move {
                HealthClient::new(channel)
                    .check(HealthCheckRequest::default())
                    .await
                    .map(|_| ())
            }
        })
        .await;
        (answer, attempts.load(Ordering::Relaxed))
    }

    #[tokio::test]
    async fn a_refused_connection_moves_any_call_to_the_next_replica() {
        let (dead, live) = (dead_url(), live_url().await);
        for repeat in [Repeat::Idempotent, Repeat::OnlyIfNeverSent] {
            let (answer, attempts) = check(&[dead.clone(), live.clone()], repeat).await;
            assert!(answer.is_ok(), "{repeat:?}: {answer:?}");
            assert_eq!(attempts, 2, "{repeat:?}: the dead one, then the live one");
        }
        let (answer, attempts) = check(&[live.clone(), dead.clone()], Repeat::Idempotent).await;
        assert!(answer.is_ok(), "{answer:?}");
        assert_eq!(attempts, 1, "the first that answers is the last tried");
    }

    #[tokio::test]
    async fn when_every_replica_is_down_the_call_is_unavailable() {
        let (answer, attempts) = check(&[dead_url(), dead_url()], Repeat::Idempotent).await;
        let status = answer.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(never_sent(&status), "a refused connection: {status:?}");
        assert_eq!(attempts, 2);
        let (answer, _) = check(&[], Repeat::Idempotent).await;
        assert_eq!(answer.unwrap_err().code(), Code::Unavailable);
    }

    #[tokio::test]
    async fn a_replica_that_may_have_applied_a_call_ends_a_non_idempotent_one() {
        let attempts = AtomicU32::new(0);
        let deadline = Instant::now() + Duration::from_secs(5);
        let unavailable = || async { Err::<(), _>(Status::unavailable("shutting down")) };
        let once = call(vec![1, 2], Repeat::OnlyIfNeverSent, deadline, |_| {
            attempts.fetch_add(1, Ordering::Relaxed);
            unavailable()
        })
        .await;
        assert_eq!(once.unwrap_err().message(), "shutting down");
        assert_eq!(attempts.swap(0, Ordering::Relaxed), 1, "not repeated");

        let repeated = call(vec![1, 2], Repeat::Idempotent, deadline, |_| {
            attempts.fetch_add(1, Ordering::Relaxed);
            unavailable()
        })
        .await;
        assert_eq!(repeated.unwrap_err().code(), Code::Unavailable);
        assert_eq!(
            attempts.swap(0, Ordering::Relaxed),
            2,
            "idempotent: repeated"
        );

        // A refusal of the request itself is the answer, from any replica.
        let refused = call(vec![1, 2], Repeat::Idempotent, deadline, |_| {
            attempts.fetch_add(1, Ordering::Relaxed);
            async { Err::<(), _>(Status::not_found("no such group")) }
        })
        .await;
        assert_eq!(refused.unwrap_err().code(), Code::NotFound);
        assert_eq!(attempts.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn the_deadline_bounds_the_whole_call() {
        let deadline = Instant::now() + Duration::from_millis(100);
        let started = Instant::now();
        let answer = call(vec![1, 2], Repeat::Idempotent, deadline, |_| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok::<(), Status>(())
        })
        .await;
        assert_eq!(answer.unwrap_err().code(), Code::DeadlineExceeded);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}

/// The roaming system's whole path to its service center: a data request
/// signed at admission, routed locally, and carried over mutual TLS to
/// service-center replicas (fakes of the pair API), one of them dead.
#[cfg(test)]
mod roaming_tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use tonic::{Request, Response, Status};

    use crate::mesh::MeshConfig;
    use crate::mesh::config::PairEndpoint;
    use crate::mesh::health::HealthPolicy;
    use crate::proto::client_api::GroupInfo;
    use crate::proto::pair_api::pair_server::{Pair, PairServer};
    use crate::proto::peer_api::data_request::Op;
    use crate::proto::peer_api::{
        BusinessReply, BusinessRequest, DataReply, DataRequest, Envelope, GetGroup, Leave,
        data_reply,
    };
    use std::net::SocketAddr;
    use std::time::Duration;

    use crate::roaming::resolve::{Lookup, Resolver, Resolving};
    use crate::roaming::{Roaming, Sender};
    use crate::transport::{self, ClientAuth, ServerTls};
    use crate::trust::Credentials;
    use crate::trust::pki::{DEFAULT_LIFETIME, MeshCa};

    /// A service-center replica that answers every data request with a
    /// group named after itself, and counts them.
    struct Fake {
        name: &'static str,
        calls: Arc<AtomicU32>,
    }

    #[tonic::async_trait]
    impl Pair for Fake {
        async fn data(&self, _: Request<DataRequest>) -> Result<Response<DataReply>, Status> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            Ok(Response::new(DataReply {
                result: Some(data_reply::Result::Group(GroupInfo {
                    id: self.name.into(),
                    ..Default::default()
                })),
            }))
        }

        async fn carry(
            &self,
            _: Request<BusinessRequest>,
        ) -> Result<Response<BusinessReply>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
    }

    async fn serve(name: &'static str, credentials: Arc<Credentials>) -> (String, Arc<AtomicU32>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let calls = Arc::new(AtomicU32::new(0));
        let fake = Fake {
            name,
            calls: calls.clone(),
        };
        let incoming = transport::incoming(
            listener,
            ServerTls::Region(credentials, ClientAuth::Required),
        );
        tokio::spawn(
            transport::server()
                .add_service(PairServer::new(fake))
                .serve_with_incoming(incoming),
        );
        (url, calls)
    }

    fn dead_url() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        format!("https://127.0.0.1:{port}")
    }

    fn request(op: Op) -> DataRequest {
        DataRequest {
            envelope: Some(Envelope {
                destination: "eu".into(),
                hops_left: 4,
                ..Default::default()
            }),
            actor_assertion: None,
            op: Some(op),
        }
    }

    fn get_group() -> DataRequest {
        request(Op::GetGroup(GetGroup {
            actor: "ann@eu".into(),
            group: "g@eu".into(),
        }))
    }

    /// Which fake answered, or the failure.
    fn answered(reply: DataReply) -> Result<String, String> {
        match reply.result {
            Some(data_reply::Result::Group(group)) => Ok(group.id),
            other => Err(format!("{other:?}")),
        }
    }

    #[tokio::test]
    async fn calls_spread_over_the_replicas_and_skip_a_dead_one() {
        let ca = MeshCa::generate("test").unwrap();
        let credentials = ca
            .issue_region("eu", "test", &[], DEFAULT_LIFETIME)
            .and_then(|c| c.credentials(&ca.cert_pem))
            .unwrap();
        let (a, a_calls) = serve("a", credentials.clone()).await;
        let (b, b_calls) = serve("b", credentials.clone()).await;
        let dead = dead_url();
        let config = MeshConfig {
            region: "eu".into(),
            service_center: PairEndpoint {
                pair: a.clone(),
                replicas: vec![a.clone(), dead.clone(), b.clone()],
                dns: None,
            },
            roaming: PairEndpoint::single(dead_url()),
            peers: Vec::new(),
        };
        config.validate().unwrap();
        let (_config, config_rx) = tokio::sync::watch::channel(config);
        let roaming = Roaming::start(config_rx, HealthPolicy::default(), credentials);

        let mut answers = Vec::new();
        for _ in 0..6 {
            let reply = roaming.route_data(get_group(), Sender::ServiceCenter).await;
            answers.push(answered(reply).expect("a live replica answers"));
        }
        // Turns start at a, the dead one, b: the dead one's turn goes to b.
        assert_eq!(answers, ["a", "b", "b", "a", "b", "b"]);
        assert_eq!(a_calls.load(Ordering::Relaxed), 2);
        assert_eq!(b_calls.load(Ordering::Relaxed), 4);

        // A change that never reached the dead replica moves on too.
        let leave = request(Op::Leave(Leave {
            actor: "ann@eu".into(),
            group: "g@eu".into(),
        }));
        let mut leaves = Vec::new();
        for _ in 0..3 {
            let reply = roaming
                .route_data(leave.clone(), Sender::ServiceCenter)
                .await;
            leaves.push(answered(reply).expect("a live replica answers"));
        }
        leaves.sort();
        assert_eq!(leaves, ["a", "b", "b"]);
        roaming.shutdown().await;
    }

    #[tokio::test]
    async fn a_hung_replica_passes_even_a_change_on_once_connecting_times_out() {
        let ca = MeshCa::generate("test").unwrap();
        let credentials = ca
            .issue_region("eu", "test", &[], DEFAULT_LIFETIME)
            .and_then(|c| c.credentials(&ca.cert_pem))
            .unwrap();
        let (live, calls) = serve("live", credentials.clone()).await;
        // Bound, never accepting: connections wait in the backlog and no
        // TLS handshake is ever answered, as with a stopped process.
        let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let hung = format!("https://{}", hung.local_addr().unwrap());
        let config = MeshConfig {
            region: "eu".into(),
            service_center: PairEndpoint {
                pair: hung.clone(),
                replicas: vec![hung, live],
                dns: None,
            },
            roaming: PairEndpoint::single(dead_url()),
            peers: Vec::new(),
        };
        let (_config, config_rx) = tokio::sync::watch::channel(config);
        let roaming = Roaming::start(config_rx, HealthPolicy::default(), credentials);
        let leave = request(Op::Leave(Leave {
            actor: "ann@eu".into(),
            group: "g@eu".into(),
        }));
        let started = std::time::Instant::now();
        let reply = roaming.route_data(leave, Sender::ServiceCenter).await;
        assert_eq!(answered(reply), Ok("live".to_owned()));
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        assert!(
            started.elapsed() >= transport::CONNECT_TIMEOUT,
            "the hung one was tried first, for its connect timeout"
        );
        roaming.shutdown().await;
    }

    #[tokio::test]
    async fn with_every_replica_dead_the_region_is_unreachable() {
        let ca = MeshCa::generate("test").unwrap();
        let credentials = ca
            .issue_region("eu", "test", &[], DEFAULT_LIFETIME)
            .and_then(|c| c.credentials(&ca.cert_pem))
            .unwrap();
        let (first, second) = (dead_url(), dead_url());
        let config = MeshConfig {
            region: "eu".into(),
            service_center: PairEndpoint {
                pair: first.clone(),
                replicas: vec![first, second],
                dns: None,
            },
            roaming: PairEndpoint::single(dead_url()),
            peers: Vec::new(),
        };
        let (_config, config_rx) = tokio::sync::watch::channel(config);
        let roaming = Roaming::start(config_rx, HealthPolicy::default(), credentials);
        let failure = answered(roaming.route_data(get_group(), Sender::ServiceCenter).await)
            .expect_err("nothing answers");
        assert!(failure.contains("unreachable"), "{failure}");
        roaming.shutdown().await;
    }

    /// Answers a lookup of a name with the addresses the test set for it;
    /// a name without any fails.
    #[derive(Default)]
    struct Names(std::sync::Mutex<std::collections::HashMap<String, Vec<SocketAddr>>>);

    impl Names {
        fn set(&self, host: &str, addrs: &[SocketAddr]) {
            self.0.lock().unwrap().insert(host.into(), addrs.to_vec());
        }
    }

    impl Resolver for Names {
        fn lookup<'a>(&'a self, host: &'a str, _port: u16) -> Lookup<'a> {
            let answer = self.0.lock().unwrap().get(host).cloned();
            Box::pin(async move { answer.ok_or_else(|| std::io::Error::other("no such name")) })
        }
    }

    fn addr_of(url: &str) -> SocketAddr {
        url.trim_start_matches("https://").parse().unwrap()
    }

    /// Calls until `want` answers, within a deadline far shorter than the
    /// resolver's interval; returns every answer on the way.
    async fn until_answered_by(roaming: &Roaming, want: &str) -> Vec<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut answers = Vec::new();
        loop {
            let reply = roaming.route_data(get_group(), Sender::ServiceCenter).await;
            let answer = answered(reply).expect("a replica answers");
            let done = answer == want;
            answers.push(answer);
            if done {
                return answers;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{want} never answered: {answers:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn replicas_found_by_name_take_turns_are_looked_up_again_after_a_refusal_and_pair_serves_without_them()
     {
        let ca = MeshCa::generate("test").unwrap();
        let credentials = ca
            .issue_region("eu", "test", &[], DEFAULT_LIFETIME)
            .and_then(|c| c.credentials(&ca.cert_pem))
            .unwrap();
        let (a, a_calls) = serve("a", credentials.clone()).await;
        let (b, b_calls) = serve("b", credentials.clone()).await;
        let (pair, pair_calls) = serve("pair", credentials.clone()).await;
        let dead = addr_of(&dead_url());
        let (a, b) = (addr_of(&a), addr_of(&b));
        let names = Arc::new(Names::default());
        names.set("eu-service-center-pods.chat.svc", &[dead, a]);
        let config = MeshConfig {
            region: "eu".into(),
            service_center: PairEndpoint {
                dns: Some("https://eu-service-center-pods.chat.svc:7401".into()),
                ..PairEndpoint::single(pair)
            },
            roaming: PairEndpoint::single(dead_url()),
            peers: Vec::new(),
        };
        config.validate().unwrap();
        let (config_tx, config_rx) = tokio::sync::watch::channel(config.clone());
        let resolving = Resolving {
            resolver: names.clone(),
            // Long: every lookup the test waits for is made at once.
            interval: Duration::from_secs(600),
        };
        let roaming =
            Roaming::start_with(config_rx, HealthPolicy::default(), credentials, resolving);

        // Found: the dead address and a (until the first lookup, pair
        // serves). Every call ends at a, the dead one's turns too.
        let first = until_answered_by(&roaming, "a").await;
        assert!(first.iter().all(|n| n == "pair" || n == "a"), "{first:?}");
        let pair_before = pair_calls.load(Ordering::Relaxed);
        names.set("eu-service-center-pods.chat.svc", &[a, b]);
        for _ in 0..2 {
            let reply = roaming.route_data(get_group(), Sender::ServiceCenter).await;
            assert_eq!(answered(reply), Ok("a".to_owned()));
        }
        // One of those two calls started at the dead address, whose refusal
        // had the name looked up again at once: b joins, the dead one goes.
        until_answered_by(&roaming, "b").await;
        let (before_a, before_b) = (
            a_calls.load(Ordering::Relaxed),
            b_calls.load(Ordering::Relaxed),
        );
        for _ in 0..4 {
            let reply = roaming.route_data(get_group(), Sender::ServiceCenter).await;
            answered(reply).expect("a or b answers");
        }
        assert_eq!(
            (
                a_calls.load(Ordering::Relaxed) - before_a,
                b_calls.load(Ordering::Relaxed) - before_b
            ),
            (2, 2),
            "turns over the two found"
        );
        assert_eq!(
            pair_calls.load(Ordering::Relaxed),
            pair_before,
            "pair, while replicas are found: never"
        );

        // A name that resolves to nothing: pair serves.
        let mut unknown = config;
        unknown.service_center.dns = Some("https://nowhere.chat.svc:7401".into());
        config_tx.send_replace(unknown);
        until_answered_by(&roaming, "pair").await;
        roaming.shutdown().await;
    }
}
