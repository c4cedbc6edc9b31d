//! The business center: login, query and store group data, send and deliver
//! group messages. Each flow is served here when this region is the home of
//! the record, and otherwise asked of the home through the roaming system.
//! It knows nothing of gRPC; `service_center::grpc` adapts it.

mod accounts;
mod authority;
mod groups;
mod inbound;
mod messages;
mod subscribe;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::data_center::DataCenter;
use super::hub::Hub;
use super::outbox::Outbox;
use super::roaming_link::RoamingLink;
use crate::Error;
use crate::ids::Id;
use crate::proto::peer_api::{data_reply, data_request};

pub use subscribe::DeliveryStream;

#[derive(Clone)]
pub struct BusinessCenter {
    region: Arc<str>,
    dc: DataCenter,
    hub: Hub,
    link: Arc<RoamingLink>,
    outbox: Outbox,
    sessions: Arc<Mutex<HashMap<String, (Id, i64)>>>,
}

impl BusinessCenter {
    /// A business center over `dc` that reaches other regions through `link`.
    pub async fn start(dc: DataCenter, link: Arc<RoamingLink>) -> Result<Self, Error> {
        let outbox = Outbox::new(dc.clone(), link.clone());
        outbox.resume().await?;
        Ok(Self {
            region: link.region().into(),
            dc,
            hub: Hub::default(),
            link,
            outbox,
            sessions: Arc::default(),
        })
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    fn is_local(&self, id: &Id) -> bool {
        id.home() == &*self.region
    }

    /// Asks the home region of a record.
    async fn ask_home(
        &self,
        home: &str,
        op: data_request::Op,
    ) -> Result<data_reply::Result, Error> {
        self.link.data(home, op).await
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
