//! The business center: login, query and store group data, send and deliver
//! group messages. Each flow is served here when this region is the home of
//! the record, and otherwise asked of the home through the roaming system.
//! It knows nothing of gRPC; `service_center::grpc` adapts it.

mod accounts;
mod assertions;
mod authority;
mod bounded;
mod effects;
mod groups;
mod heard;
mod inbound;
mod messages;
mod passwords;
mod sessions;
mod subscribe;
mod throttle;
mod turns;

use std::sync::Arc;

use super::data_center::DataCenter;
use super::data_center::postgres::listen::Heard;
use super::hub::Hub;
use super::outbox::Outbox;
use super::replicas::Replica;
use super::roaming_client::RoamingClient;
use super::verdicts::Verdicts;
use crate::Error;
use crate::ids::Id;
use crate::limits::{MAX_SUBSCRIPTIONS, MAX_THROTTLED_KEYS};
use crate::proto::peer_api::{data_reply, data_request};
use crate::tasks::Tasks;
use crate::telemetry::ServiceCenterMetrics;

#[derive(Clone)]
pub struct BusinessCenter {
    region: Arc<str>,
    dc: DataCenter,
    hub: Hub,
    /// The `Send` calls waiting for a home's verdict.
    verdicts: Verdicts,
    link: Arc<RoamingClient>,
    outbox: Outbox,
    /// This replica, as the others sharing the data center know it.
    replica: Replica,
    /// Whether other replicas share the data center (PostgreSQL).
    replicated: bool,
    sessions: sessions::Sessions,
    throttle: throttle::LoginThrottle,
    passwords: passwords::PasswordPool,
    assertions: assertions::Assertions,
    clock: Clock,
    metrics: ServiceCenterMetrics,
    /// Pushes the deliveries of committed writes in commit order.
    in_order: effects::InOrder,
    /// Where each source's run of carried batches stands here.
    turns: Arc<turns::Turns>,
    /// Outbox workers and subscriptions: stopped by [`Self::shutdown`].
    tasks: Tasks,
}

/// The bounds a region's operator may set on its service center (the node's
/// flags); every other bound is fixed in [`crate::limits`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Live subscriptions held at once (`--max-subscriptions`): each costs
    /// the process memory, so this sizes it.
    pub max_subscriptions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_subscriptions: MAX_SUBSCRIPTIONS,
        }
    }
}

/// How long a starting service center waits to hear the other replicas.
const FIRST_LISTEN: std::time::Duration = std::time::Duration::from_secs(10);

/// Where logins and sessions read the time, in milliseconds since the Unix
/// epoch: the system clock, or a clock a test moves by hand.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> i64 + Send + Sync>);

impl Clock {
    pub fn system() -> Self {
        Clock(Arc::new(crate::now_ms))
    }

    pub fn new(now_ms: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        Clock(Arc::new(now_ms))
    }

    pub fn now_ms(&self) -> i64 {
        (self.0)()
    }
}

impl BusinessCenter {
    /// A business center over `dc` that reaches other regions through
    /// `link`, within the default [`Limits`].
    pub async fn start(dc: DataCenter, link: Arc<RoamingClient>) -> Result<Self, Error> {
        Self::start_with(dc, link, Limits::default()).await
    }

    /// As [`BusinessCenter::start`], within `limits`.
    pub async fn start_with(
        dc: DataCenter,
        link: Arc<RoamingClient>,
        limits: Limits,
    ) -> Result<Self, Error> {
        let metrics = ServiceCenterMetrics::new(dc.commits().clone());
        let hub = Hub::with_max_subscriptions(metrics.clone(), limits.max_subscriptions);
        let verdicts = Verdicts::new(hub.clone());
        let tasks = Tasks::new();
        let replica = Replica::new(dc.is_shared());
        let outbox = Outbox::new(
            dc.clone(),
            link.clone(),
            tasks.clone(),
            metrics.clone(),
            verdicts.clone(),
            replica.clone(),
        );
        // Listen before serving, so that nothing another replica commits
        // goes unheard by a subscription here. If the first LISTEN takes
        // too long, the service center serves anyway, and the listener's
        // `Listening` then cuts what subscribed meanwhile (found by the
        // fault schedules: a restarted replica's subscriber missed a
        // delivery the other replica committed before the LISTEN).
        let heard = match dc.listen() {
            Some(mut heard) => {
                match tokio::time::timeout(FIRST_LISTEN, heard.recv()).await {
                    Ok(Some(Heard::Listening)) => {}
                    _ => tracing::warn!("not yet listening to the other replicas; serving anyway"),
                }
                Some(heard)
            }
            None => None,
        };
        outbox.resume().await?;
        // Expired sessions and accepted sends past their retention.
        tasks.spawn_until_stopped(crate::service_center::retention::run(dc.clone()));
        let assertions = assertions::Assertions::new(
            link.region().into(),
            dc.clone(),
            link.credentials().clone(),
        );
        let in_order = effects::InOrder::start(hub.clone(), &tasks);
        let center = Self {
            region: link.region().into(),
            sessions: sessions::Sessions::new(dc.clone(), replica.clone()),
            replica,
            replicated: heard.is_some(),
            dc,
            hub,
            verdicts,
            link,
            outbox,
            throttle: throttle::LoginThrottle::new(MAX_THROTTLED_KEYS),
            passwords: passwords::PasswordPool::for_this_machine(),
            assertions,
            clock: Clock::system(),
            metrics,
            in_order,
            turns: Arc::default(),
            tasks,
        };
        if let Some(heard) = heard {
            let hearing = center.clone();
            center
                .tasks
                .spawn_until_stopped(async move { hearing.hear(heard).await });
        }
        Ok(center)
    }

    /// Stops every task this business center started and waits for them,
    /// so that none of them holds the data center any longer.
    pub async fn shutdown(&self) {
        self.tasks.shutdown().await;
        self.outbox.release().await;
    }

    /// Outbox items dropped since this process started because their
    /// destination left the mesh.
    pub fn outbox_dropped_total(&self) -> u64 {
        self.outbox.dropped_total()
    }

    /// What this business center counts, for the node's `/metrics`.
    pub fn metrics(&self) -> &ServiceCenterMetrics {
        &self.metrics
    }

    /// This business center reading the time from `clock` (for tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    fn is_local(&self, id: &Id) -> bool {
        id.home() == &*self.region
    }

    /// Asks the home region of a record, for no particular user.
    async fn ask_home(
        &self,
        home: &str,
        op: data_request::Op,
    ) -> Result<data_reply::Result, Error> {
        self.link.data(home, op, None).await
    }

    /// Asks the home region of a record for `actor`, with the assertion of
    /// the actor's home that the actor logged in here.
    async fn ask_home_as(
        &self,
        home: &str,
        actor: &Id,
        op: data_request::Op,
    ) -> Result<data_reply::Result, Error> {
        let assertion = self.assertions.get(actor).await?;
        self.link.data(home, op, assertion).await
    }
}

/// The error for a reply of the wrong kind from another region.
fn unexpected(region: &str) -> Error {
    Error::Internal(format!("region {region} sent an unexpected reply"))
}

/// Checks a string field's size.
fn check_len(field: &str, value: &str, max: usize) -> Result<(), Error> {
    if value.len() > max {
        return Err(Error::InvalidArgument(format!(
            "{field} is {} bytes; at most {max} are allowed",
            value.len()
        )));
    }
    Ok(())
}

/// eu's business center for unit tests, with group `g@eu` that `ann@eu`
/// created and `bob@us` joined: what submissions carried from us go to.
/// Also returns ann.
#[cfg(test)]
pub(crate) async fn with_group_joined_from_us() -> (tempfile::TempDir, BusinessCenter, Id) {
    let (dir, center) = for_tests("eu").await;
    let ann = Id::parse("user", "ann@eu").unwrap();
    let bob = Id::parse("user", "bob@us").unwrap();
    let request = crate::proto::client_api::CreateGroupRequest {
        name: "g".into(),
        ..Default::default()
    };
    center.create_group(&ann, request).await.unwrap();
    center.join_group(&bob, "g@eu").await.unwrap();
    (dir, center, ann)
}

/// A business center for unit tests: a fresh data center, and a roaming
/// system that is not running (so only this region's records are served).
#[cfg(test)]
pub(crate) async fn for_tests(region: &str) -> (tempfile::TempDir, BusinessCenter) {
    use crate::mesh::MeshConfig;
    use crate::mesh::config::PairEndpoint;
    use crate::trust::pki::{DEFAULT_LIFETIME, MeshCa};

    let dir = tempfile::tempdir().expect("temporary directory");
    let dc = DataCenter::open(&dir.path().join("data-center.sqlite")).expect("data center");
    let ca = MeshCa::generate("test").expect("mesh CA");
    let credentials = ca
        .issue_region(region, "test", &[], DEFAULT_LIFETIME)
        .and_then(|c| c.credentials(&ca.cert_pem))
        .expect("region certificate");
    let nowhere = PairEndpoint::single("https://127.0.0.1:9");
    let config = MeshConfig {
        region: region.into(),
        service_center: nowhere.clone(),
        roaming: nowhere,
        peers: Vec::new(),
    };
    let (_config, config_rx) = tokio::sync::watch::channel(config);
    let link = Arc::new(RoamingClient::new(config_rx, credentials));
    let center = BusinessCenter::start(dc, link)
        .await
        .expect("business center");
    (dir, center)
}
