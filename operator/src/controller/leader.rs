//! Leader election with a coordination.k8s.io Lease, so that two operator
//! replicas are safe: only the holder reconciles. Writes are server-side
//! apply carrying the resourceVersion read, so two candidates racing for an
//! expired lease cannot both win (the loser gets a conflict).
//!
//! A leader that stops (SIGTERM, as in a rolling restart) releases the
//! lease, as client-go's `ReleaseOnCancel` does: it clears the holder and
//! shortens the duration to a second, if it still holds it. A standby asks
//! every [`RETRY_PERIOD`], so it leads within about that long rather than
//! after the lease expires.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Patch, PostParams};
use kube::{Api, Client};

use super::apply;

/// How often a standby candidate tries to take the lease (client-go's
/// default retry period).
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);
/// How long releasing the lease on the way out may take.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

pub struct LeaderElection {
    api: Api<Lease>,
    name: String,
    identity: String,
    lease_duration: Duration,
}

impl LeaderElection {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        lease_duration: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            lease_duration,
        }
    }

    /// Waits until this candidate holds the lease; `health` learns when it
    /// stands by meanwhile.
    pub async fn acquire(&self, health: &super::health::Health) {
        let mut announced = false;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(lease = %self.name, identity = %self.identity, "became the leader");
                    return;
                }
                Ok(false) if !announced => {
                    tracing::info!(lease = %self.name, "another replica leads; standing by");
                    health.standing_by();
                    announced = true;
                }
                Ok(false) => {}
                Err(err) => tracing::warn!(%err, "leader election attempt failed"),
            }
            tokio::time::sleep(RETRY_PERIOD.min(self.lease_duration / 3)).await;
        }
    }

    /// Renews the lease until it is lost; returns when it is.
    pub async fn hold(&self) {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.lease_duration / 3).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => return,
                Err(err) => {
                    tracing::warn!(%err, "lease renewal failed");
                    if last_renewal.elapsed() >= self.lease_duration * 2 / 3 {
                        return;
                    }
                }
            }
        }
    }

    /// Takes or renews the lease; `false` when another holder's lease is live.
    async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let Some(lease) = self.api.get_opt(&self.name).await? else {
            let fresh = self.lease(None, now, 0, now);
            return match self.api.create(&PostParams::default(), &fresh).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(err) => Err(err),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let renewed = spec
            .renew_time
            .map(|t| t.0)
            .unwrap_or(Timestamp::UNIX_EPOCH);
        let duration =
            SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
        let expired = renewed + duration < now;
        // No holder: released by a leader that stopped.
        if !holder.is_empty() && holder != self.identity && !expired {
            return Ok(false);
        }
        let (transitions, acquired) = if holder == self.identity {
            (
                spec.lease_transitions.unwrap_or(0),
                spec.acquire_time.map(|t| t.0).unwrap_or(now),
            )
        } else {
            (spec.lease_transitions.unwrap_or(0) + 1, now)
        };
        let next = self.lease(
            lease.metadata.resource_version.clone(),
            acquired,
            transitions,
            now,
        );
        match self
            .api
            .patch(&self.name, &apply::params(), &Patch::Apply(&next))
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Gives the lease up, if this candidate still holds it, so that
    /// another takes it at once: no holder, and a duration of one second
    /// for candidates that do not know an empty holder is free. Bounded by
    /// [`RELEASE_TIMEOUT`]; returns whether it released it.
    pub async fn release(&self) -> bool {
        match tokio::time::timeout(RELEASE_TIMEOUT, self.try_release()).await {
            Ok(Ok(true)) => {
                tracing::info!(lease = %self.name, identity = %self.identity, "released the leader lease");
                true
            }
            Ok(Ok(false)) => {
                tracing::info!(lease = %self.name, "the lease is held by another; nothing to release");
                false
            }
            Ok(Err(err)) => {
                tracing::warn!(%err, lease = %self.name, "cannot release the leader lease; it expires on its own");
                false
            }
            Err(_) => {
                tracing::warn!(lease = %self.name, "releasing the leader lease timed out; it expires on its own");
                false
            }
        }
    }

    async fn try_release(&self) -> Result<bool, kube::Error> {
        let Some(lease) = self.api.get_opt(&self.name).await? else {
            return Ok(false);
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(false);
        }
        let now = Timestamp::now();
        let released = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                // Only the lease as read: a candidate that took it meanwhile wins.
                resource_version: lease.metadata.resource_version.clone(),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(String::new()),
                lease_duration_seconds: Some(1),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: spec.lease_transitions,
                ..Default::default()
            }),
        };
        match self
            .api
            .patch(&self.name, &apply::params(), &Patch::Apply(&released))
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(err) => Err(err),
        }
    }

    fn lease(
        &self,
        resource_version: Option<String>,
        acquired: Timestamp,
        transitions: i32,
        now: Timestamp,
    ) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                resource_version,
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(self.lease_duration.as_secs() as i32),
                acquire_time: Some(MicroTime(acquired)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(transitions),
                ..Default::default()
            }),
        }
    }
}
