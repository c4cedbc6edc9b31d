//! The service center's only way out of its region: the local-pair API of
//! its own roaming system.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::Error;
use crate::limits::MAX_HOPS;
use crate::mesh::MeshConfig;
use crate::proto::pair_api::pair_client::PairClient;
use crate::proto::peer_api::{
    BusinessRequest, CarryOrder, DataReply, DataRequest, Envelope, Item, UserAssertion, Verdict,
    data_reply, data_request,
};
use crate::transport::{self, Dial};
use crate::trust::Credentials;

/// What a destination made of a carried batch.
#[derive(Debug)]
pub enum Carry {
    /// Applied, with the verdicts on the submissions among it; `ordered`
    /// when in its run's turn (a destination, or a roaming system on the
    /// way, from before runs applies a batch as it comes).
    Applied {
        verdicts: Vec<Verdict>,
        ordered: bool,
    },
    /// Not applied: not the next batch of its run there.
    OutOfOrder,
}

pub struct RoamingClient {
    config: watch::Receiver<MeshConfig>,
    credentials: Arc<Credentials>,
    /// The channel to the roaming system's pair port, and its URL.
    channel: Mutex<Option<(String, Channel)>>,
}

impl RoamingClient {
    pub fn new(config: watch::Receiver<MeshConfig>, credentials: Arc<Credentials>) -> Self {
        Self {
            config,
            credentials,
            channel: Mutex::new(None),
        }
    }

    /// The region's credentials (its key signs user assertions).
    pub fn credentials(&self) -> &Arc<Credentials> {
        &self.credentials
    }

    pub fn region(&self) -> String {
        self.config.borrow().region.clone()
    }

    /// Whether `region` is in the current mesh configuration (see
    /// [`MeshConfig::has_region`]): reachable or not, a region in it is
    /// still part of the mesh.
    pub fn in_mesh(&self, region: &str) -> bool {
        self.config.borrow().has_region(region)
    }

    fn channel(&self) -> Result<Channel, Error> {
        let endpoint = self.config.borrow().roaming.pair.clone();
        let mut cached = self.channel.lock().expect("roaming link");
        if let Some((url, channel)) = cached.as_ref()
            && *url == endpoint
        {
            return Ok(channel.clone());
        }
        let dial = Dial::Region {
            credentials: self.credentials.clone(),
            region: self.region(),
        };
        let channel = transport::channel(&endpoint, dial)?;
        *cached = Some((endpoint, channel.clone()));
        Ok(channel)
    }

    fn client(&self) -> Result<PairClient<Channel>, Error> {
        Ok(PairClient::new(self.channel()?)
            .max_decoding_message_size(crate::limits::MAX_GRPC_MESSAGE_BYTES)
            .max_encoding_message_size(crate::limits::MAX_GRPC_MESSAGE_BYTES))
    }

    /// One real call to the roaming system: the health check of its pair
    /// port, over the channel that carries this region's requests. It
    /// succeeds only when the roaming system serves and accepted this
    /// region's certificate (mutual TLS). A failure drops the channel, so
    /// that the next call dials afresh rather than reuse a connection that
    /// may lead elsewhere.
    pub async fn check(&self) -> Result<(), Error> {
        let channel = self.channel()?;
        let reply = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await;
        let failure = match reply {
            Ok(reply) if reply.get_ref().status() == ServingStatus::Serving => return Ok(()),
            Ok(reply) => format!("it reports {:?}", reply.get_ref().status()),
            Err(status) => format!("{:?}: {}", status.code(), status.message()),
        };
        self.channel.lock().expect("roaming link").take();
        Err(Error::Unavailable(format!(
            "the roaming system at {} does not answer: {failure}",
            self.config.borrow().roaming.pair
        )))
    }

    /// Returns once [`RoamingClient::check`] has succeeded, trying every
    /// `every` (each try bounded by `timeout`). Logs the wait at INFO, and
    /// once at WARN if it lasts longer than 10 s.
    pub async fn wait_until_paired(&self, every: Duration, timeout: Duration) {
        let started = tokio::time::Instant::now();
        let region = self.region();
        tracing::info!(%region, roaming = %self.config.borrow().roaming.pair,
            "service center not ready until its roaming system answers");
        let mut warned = false;
        loop {
            let err = match tokio::time::timeout(timeout, self.check()).await {
                Ok(Ok(())) => break,
                Ok(Err(err)) => err.to_string(),
                Err(_) => format!("no answer within {timeout:?}"),
            };
            if !warned && started.elapsed() >= Duration::from_secs(10) {
                tracing::warn!(%region, %err, "the service center's roaming system still does not answer; not ready");
                warned = true;
            } else {
                tracing::debug!(%region, %err, "roaming system not answering yet");
            }
            tokio::time::sleep(every).await;
        }
        tracing::info!(%region, waited_ms = started.elapsed().as_millis() as u64,
            "service center ready: its roaming system answers");
    }

    fn envelope(&self, destination: &str) -> Envelope {
        Envelope {
            source: self.region(),
            destination: destination.to_owned(),
            hops_left: MAX_HOPS,
            path: Vec::new(),
            // The roaming system signs what leaves the region.
            signature: None,
            // The span this request is sent in (the outbox's carry).
            traceparent: crate::telemetry::traces::current(),
        }
    }

    /// Asks the data center of `destination`, showing `actor_assertion`
    /// for the operation's actor; its failure becomes the error.
    pub async fn data(
        &self,
        destination: &str,
        op: data_request::Op,
        actor_assertion: Option<UserAssertion>,
    ) -> Result<data_reply::Result, Error> {
        let request = DataRequest {
            envelope: Some(self.envelope(destination)),
            actor_assertion,
            op: Some(op),
        };
        let reply: DataReply = self
            .client()?
            .data(request)
            .await
            .map_err(|status| transport::call_error(destination, status))?
            .into_inner();
        match reply.result {
            Some(data_reply::Result::Failure(failure)) => Err(failure.into()),
            Some(result) => Ok(result),
            None => Err(Error::Internal(format!(
                "region {destination} sent an empty reply"
            ))),
        }
    }

    /// Carries outbox items to `destination`; `Ok` means it acknowledged
    /// them, with its verdicts on the submissions among them.
    /// Carries `items` to `destination` as batch `order` of a run: what
    /// the destination made of it.
    pub async fn carry(
        &self,
        destination: &str,
        items: Vec<Item>,
        order: CarryOrder,
    ) -> Result<Carry, Error> {
        let request = BusinessRequest {
            envelope: Some(self.envelope(destination)),
            items,
            order: Some(order),
        };
        let reply = self
            .client()?
            .carry(request)
            .await
            .map_err(|status| transport::call_error(destination, status))?
            .into_inner();
        match reply.failure {
            Some(failure) => Err(failure.into()),
            None if reply.out_of_order => Ok(Carry::OutOfOrder),
            None => Ok(Carry::Applied {
                verdicts: reply.verdicts,
                ordered: reply.ordered,
            }),
        }
    }
}
