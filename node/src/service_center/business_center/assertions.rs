//! User assertions at the business center (docs/ARCHITECTURE.md §8).
//!
//! - At a user's home: a login the home verifies for another region gets an
//!   assertion, signed with the region's key, that the user logged in there.
//! - At the region where the user logged in: the assertion is kept (in the
//!   data center, so a restart keeps it) and shown with every action this
//!   region takes for the user at another home.
//! - At any home: an action for a user whose home is not the requesting
//!   region is taken only with a valid assertion for that region.

use std::sync::{Arc, Mutex};

use prost::Message;

use super::bounded::BoundedMap;
use crate::Error;
use crate::ids::Id;
use crate::limits::{MAX_CACHED_SESSIONS, REFRESH_TOKEN_TTL_MS};
use crate::proto::peer_api::UserAssertion;
use crate::service_center::data_center::DataCenter;
use crate::trust::{Credentials, Verifier, assertion};

#[derive(Clone)]
pub struct Assertions {
    region: Arc<str>,
    dc: DataCenter,
    credentials: Arc<Credentials>,
    verifier: Arc<Verifier>,
    /// Assertions kept for roaming users, by user.
    cache: Arc<Mutex<BoundedMap<String, UserAssertion>>>,
}

impl Assertions {
    pub fn new(region: Arc<str>, dc: DataCenter, credentials: Arc<Credentials>) -> Self {
        Self {
            region,
            dc,
            verifier: Arc::new(Verifier::new(credentials.clone())),
            credentials,
            cache: Arc::new(Mutex::new(BoundedMap::new(MAX_CACHED_SESSIONS))),
        }
    }

    /// At `user`'s home: the assertion that `user` logged in at `region`,
    /// valid as long as a session's refresh token.
    pub fn issue(&self, user: &Id, region: &str, now_ms: i64) -> Result<UserAssertion, Error> {
        assertion::issue(
            user,
            region,
            now_ms + REFRESH_TOKEN_TTL_MS,
            &self.credentials.current(),
        )
    }

    /// Where `user` logged in here, away from home: checks the home's
    /// assertion and keeps it.
    pub async fn keep(&self, user: &Id, kept: UserAssertion, now_ms: i64) -> Result<(), Error> {
        self.check(user, &self.region, Some(&kept), now_ms)
            .map_err(|e| Error::Internal(format!("the home's assertion is not valid: {e}")))?;
        let (id, blob, expires) = (user.to_string(), kept.encode_to_vec(), kept.expires_at_ms);
        self.dc
            .write(move |tx| tx.put_assertion(&id, &blob, expires, now_ms))
            .await?;
        self.cache
            .lock()
            .expect("assertions")
            .insert(user.to_string(), kept);
        Ok(())
    }

    /// What this region shows for `actor` at another home: nothing when the
    /// actor's home is this region, else the home's assertion kept here.
    pub async fn get(&self, actor: &Id) -> Result<Option<UserAssertion>, Error> {
        if actor.home() == &*self.region {
            return Ok(None);
        }
        let key = actor.to_string();
        if let Some(found) = self.cache.lock().expect("assertions").get(&key) {
            return Ok(Some(found.clone()));
        }
        let id = key.clone();
        let stored = self.dc.read(move |tx| tx.assertion(&id)).await?;
        let Some(found) = stored.and_then(|blob| UserAssertion::decode(blob.as_slice()).ok())
        else {
            return Ok(None);
        };
        self.cache
            .lock()
            .expect("assertions")
            .insert(key, found.clone());
        Ok(Some(found))
    }

    /// Whether region `source` may act for `user` at `at_ms`.
    pub fn check(
        &self,
        user: &Id,
        source: &str,
        shown: Option<&UserAssertion>,
        at_ms: i64,
    ) -> Result<(), Error> {
        assertion::check(user, source, shown, at_ms, &self.verifier)
    }
}
