//! The service center's only way out of its region: the local-pair API of
//! its own roaming system.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tonic::transport::Channel;

use crate::Error;
use crate::limits::MAX_HOPS;
use crate::mesh::MeshConfig;
use crate::proto::pair_api::pair_client::PairClient;
use crate::proto::peer_api::{
    BusinessRequest, DataReply, DataRequest, Envelope, Item, UserAssertion, data_reply,
    data_request,
};
use crate::transport::{self, Dial};
use crate::trust::Credentials;

pub struct RoamingLink {
    config: watch::Receiver<MeshConfig>,
    credentials: Arc<Credentials>,
    client: Mutex<Option<(String, PairClient<Channel>)>>,
}

impl RoamingLink {
    pub fn new(config: watch::Receiver<MeshConfig>, credentials: Arc<Credentials>) -> Self {
        Self {
            config,
            credentials,
            client: Mutex::new(None),
        }
    }

    /// The region's credentials (its key signs user assertions).
    pub fn credentials(&self) -> &Arc<Credentials> {
        &self.credentials
    }

    pub fn region(&self) -> String {
        self.config.borrow().region.clone()
    }

    fn client(&self) -> Result<PairClient<Channel>, Error> {
        let endpoint = self.config.borrow().roaming.pair.clone();
        let mut cached = self.client.lock().expect("roaming link");
        if let Some((url, client)) = cached.as_ref()
            && *url == endpoint
        {
            return Ok(client.clone());
        }
        let dial = Dial::Region {
            credentials: self.credentials.clone(),
            region: self.region(),
        };
        let client = PairClient::new(transport::channel(&endpoint, dial)?)
            .max_decoding_message_size(crate::limits::MAX_GRPC_MESSAGE_BYTES)
            .max_encoding_message_size(crate::limits::MAX_GRPC_MESSAGE_BYTES);
        *cached = Some((endpoint, client.clone()));
        Ok(client)
    }

    fn envelope(&self, destination: &str) -> Envelope {
        Envelope {
            source: self.region(),
            destination: destination.to_owned(),
            hops_left: MAX_HOPS,
            path: Vec::new(),
            // The roaming system signs what leaves the region.
            signature: None,
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

    /// Carries outbox items to `destination`; `Ok` means it acknowledged them.
    pub async fn carry(&self, destination: &str, items: Vec<Item>) -> Result<(), Error> {
        let request = BusinessRequest {
            envelope: Some(self.envelope(destination)),
            items,
        };
        let reply = self
            .client()?
            .carry(request)
            .await
            .map_err(|status| transport::call_error(destination, status))?
            .into_inner();
        match reply.failure {
            Some(failure) => Err(failure.into()),
            None => Ok(()),
        }
    }
}
