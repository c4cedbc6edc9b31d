//! The SQLite backend of [`Tx`]: a transaction is the writer's savepoint or
//! a reader's deferred transaction, and each operation is the SQL of its
//! table's module. One writer per file serializes every write, so
//! [`Groups::lock_group`] has nothing to hold.

use rusqlite::Connection;

use super::recipients::Recipients;
use super::tx::{
    Accounts, Groups, Messages, Outbox, Page, Pending, Replicas, Rotated, Runs, Sessions,
};
use super::tx::{TokenHash, Tokens};
use super::{accounts, census, groups, messages, outbox, retention, runs, sessions};
use crate::Error;
use crate::proto::client_api::{Delivery, GroupInfo, GroupSettings, Role};
use crate::proto::peer_api::{Item, Verdict};

/// SQLite's errors stop here: above the data center they are the domain's.
/// The writer retries nothing, so each is internal (and transient: the
/// outbox retries it, a client may).
impl From<rusqlite::Error> for Error {
    fn from(err: rusqlite::Error) -> Self {
        Error::Internal(format!("data center: {err}"))
    }
}

/// A transaction on one SQLite connection.
pub struct SqliteTx<'c> {
    conn: &'c Connection,
    /// The writer's copy of who messages go to; `None` on a reader.
    recipients: Option<&'c Recipients>,
}

impl<'c> SqliteTx<'c> {
    pub fn new(conn: &'c Connection) -> Self {
        Self {
            conn,
            recipients: None,
        }
    }

    /// A transaction of the writer, which keeps `recipients` (see
    /// [`super::recipients`]): every change to what it keeps must go
    /// through this writer's transactions.
    pub fn of_writer(conn: &'c Connection, recipients: &'c Recipients) -> Self {
        Self {
            conn,
            recipients: Some(recipients),
        }
    }
}

impl Accounts for SqliteTx<'_> {
    fn insert_user(&mut self, id: &str, password_hash: &str, now_ms: i64) -> Result<(), Error> {
        if let Some(kept) = self.recipients {
            kept.drop_user(id);
        }
        accounts::insert_user(self.conn, id, password_hash, now_ms)
    }
    fn password_hash(&mut self, id: &str) -> Result<Option<String>, Error> {
        accounts::password_hash(self.conn, id)
    }
    fn attach(&mut self, id: &str, region: &str) -> Result<(), Error> {
        if let Some(kept) = self.recipients {
            kept.drop_user(id);
        }
        accounts::attach(self.conn, id, region)
    }
    fn attached_region(&mut self, id: &str) -> Result<Option<String>, Error> {
        accounts::attached_region(self.conn, id)
    }
    fn attached_elsewhere(
        &mut self,
        ids: &[String],
        region: &str,
    ) -> Result<Vec<(String, String)>, Error> {
        let Some(kept) = self.recipients else {
            let mut found = accounts::attached_regions(self.conn, ids.iter())?;
            found.retain(|(_, at)| at != region);
            return Ok(found);
        };
        let unknown = kept.unknown(ids);
        if !unknown.is_empty() {
            let found = accounts::attached_regions(self.conn, unknown.iter().copied())?;
            kept.keep_attached(&unknown, &found);
        }
        Ok(kept.attached_elsewhere(ids, region))
    }
    fn put_assertion(
        &mut self,
        id: &str,
        assertion: &[u8],
        expires_at_ms: i64,
        now_ms: i64,
    ) -> Result<(), Error> {
        accounts::put_assertion(self.conn, id, assertion, expires_at_ms, now_ms)
    }
    fn assertion(&mut self, id: &str) -> Result<Option<Vec<u8>>, Error> {
        accounts::assertion(self.conn, id)
    }
}

impl Sessions for SqliteTx<'_> {
    fn insert_session(&mut self, user: &str, tokens: &Tokens) -> Result<(), Error> {
        sessions::insert(self.conn, user, tokens)
    }
    fn session_by_access(&mut self, access: &TokenHash) -> Result<Option<(String, i64)>, Error> {
        sessions::by_access(self.conn, access)
    }
    fn refreshable(&mut self, refresh: &TokenHash, now_ms: i64) -> Result<Option<String>, Error> {
        sessions::refreshable(self.conn, refresh, now_ms)
    }
    fn rotate_session(
        &mut self,
        refresh: &TokenHash,
        tokens: &Tokens,
        now_ms: i64,
    ) -> Result<Option<Rotated>, Error> {
        sessions::rotate(self.conn, refresh, tokens, now_ms)
    }
    fn revoke_by_access(&mut self, access: &TokenHash) -> Result<Option<TokenHash>, Error> {
        sessions::revoke_by_access(self.conn, access)
    }
    fn revoke_by_refresh(&mut self, refresh: &TokenHash) -> Result<Option<TokenHash>, Error> {
        sessions::revoke_by_refresh(self.conn, refresh)
    }
    fn delete_expired_sessions(&mut self, now_ms: i64, limit: usize) -> Result<usize, Error> {
        sessions::delete_expired(self.conn, now_ms, limit)
    }
    fn sessions_in_force(&mut self, now_ms: i64) -> Result<i64, Error> {
        census::sessions_in_force(self.conn, now_ms)
    }
}

impl Groups for SqliteTx<'_> {
    fn create_group(
        &mut self,
        id: &str,
        title: &str,
        announcement: &str,
        owner: &str,
        now_ms: i64,
    ) -> Result<(), Error> {
        if let Some(kept) = self.recipients {
            kept.drop_members(id);
        }
        groups::create(self.conn, id, title, announcement, owner, now_ms)
    }
    fn group_info(&mut self, id: &str) -> Result<GroupInfo, Error> {
        groups::info(self.conn, id)
    }
    fn lock_group(&mut self, id: &str) -> Result<bool, Error> {
        groups::exists(self.conn, id)
    }
    fn group_exists(&mut self, id: &str) -> Result<bool, Error> {
        groups::exists(self.conn, id)
    }
    fn role(&mut self, group: &str, user: &str) -> Result<Option<Role>, Error> {
        groups::role(self.conn, group, user)
    }
    fn update_group(
        &mut self,
        group: &str,
        title: Option<&str>,
        announcement: Option<&str>,
        settings: Option<&GroupSettings>,
    ) -> Result<(), Error> {
        groups::update(self.conn, group, title, announcement, settings)
    }
    fn join(&mut self, group: &str, user: &str) -> Result<(), Error> {
        if let Some(kept) = self.recipients {
            kept.drop_members(group);
        }
        groups::join(self.conn, group, user)
    }
    fn leave(&mut self, group: &str, user: &str) -> Result<(), Error> {
        if let Some(kept) = self.recipients {
            kept.drop_members(group);
        }
        groups::leave(self.conn, group, user)
    }
    fn member_ids(&mut self, group: &str) -> Result<Vec<String>, Error> {
        let Some(kept) = self.recipients else {
            return groups::member_ids(self.conn, group);
        };
        if let Some(ids) = kept.members(group) {
            return Ok(ids);
        }
        let ids = groups::member_ids(self.conn, group)?;
        kept.keep_members(group, &ids);
        Ok(ids)
    }
    fn next_seq(&mut self, group: &str) -> Result<u64, Error> {
        groups::next_seq(self.conn, group)
    }
}

impl Messages for SqliteTx<'_> {
    fn accepted_by_key(
        &mut self,
        sender: &str,
        group: &str,
        key: &str,
    ) -> Result<Option<String>, Error> {
        messages::accepted_by_key(self.conn, sender, group, key)
    }
    fn insert_accepted(
        &mut self,
        message_id: &str,
        group: &str,
        sender: &str,
        key: Option<&str>,
        now_ms: i64,
    ) -> Result<(), Error> {
        messages::insert_accepted(self.conn, message_id, group, sender, key, now_ms)
    }
    fn verdict_of(&mut self, message_id: &str) -> Result<Option<Verdict>, Error> {
        messages::verdict_of(self.conn, message_id)
    }
    fn record_verdict(&mut self, verdict: &Verdict) -> Result<(), Error> {
        messages::record_verdict(self.conn, verdict)
    }
    fn sequenced_by_key(
        &mut self,
        group: &str,
        sender: &str,
        key: &str,
    ) -> Result<Option<String>, Error> {
        messages::sequenced_by_key(self.conn, group, sender, key)
    }
    fn insert_sequenced_key(
        &mut self,
        group: &str,
        sender: &str,
        key: &str,
        message_id: &str,
    ) -> Result<(), Error> {
        messages::insert_sequenced_key(self.conn, group, sender, key, message_id)
    }
    fn seq_of(&mut self, message_id: &str) -> Result<Option<u64>, Error> {
        messages::seq_of(self.conn, message_id)
    }
    fn insert_message(&mut self, message: &Delivery) -> Result<bool, Error> {
        messages::insert(self.conn, message)
    }
    fn page(
        &mut self,
        group: &str,
        after_seq: u64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Page, Error> {
        messages::page(self.conn, group, after_seq, limit, max_bytes)
    }
    fn delete_accepted_before(&mut self, cutoff_ms: i64, limit: usize) -> Result<usize, Error> {
        retention::delete_accepted_before(self.conn, cutoff_ms, limit)
    }
}

impl Outbox for SqliteTx<'_> {
    fn enqueue(
        &mut self,
        destination: &str,
        item: &Item,
        traceparent: &str,
        now_ms: i64,
    ) -> Result<(), Error> {
        outbox::enqueue(self.conn, destination, item, traceparent, now_ms)
    }
    fn pending(
        &mut self,
        destination: &str,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<Pending>, Error> {
        outbox::pending(self.conn, destination, after_id, limit)
    }
    fn clear(&mut self, destination: &str, ids: &[i64]) -> Result<(), Error> {
        outbox::clear(self.conn, destination, ids)
    }
    fn discard(&mut self, destination: &str, limit: usize) -> Result<usize, Error> {
        outbox::discard(self.conn, destination, limit)
    }
    fn destinations(&mut self) -> Result<Vec<String>, Error> {
        outbox::destinations(self.conn)
    }
    fn depth(&mut self) -> Result<u64, Error> {
        outbox::depth(self.conn)
    }
    fn depths(&mut self) -> Result<Vec<(String, i64)>, Error> {
        census::outbox_depths(self.conn)
    }
    /// The file is locked by one process (see `lock`): its only replica
    /// holds every destination.
    fn lease(&mut self, _destination: &str, _holder: &str, _ttl_ms: i64) -> Result<bool, Error> {
        Ok(true)
    }
    fn release_leases(&mut self, _holder: &str) -> Result<(), Error> {
        Ok(())
    }
}

impl Runs for SqliteTx<'_> {
    fn take_batch(&mut self, source: &str, chain: i64, batch: i64) -> Result<bool, Error> {
        runs::take_batch(self.conn, source, chain, batch)
    }
}

/// A SQLite data center has one replica, so nobody hears a notice.
impl Replicas for SqliteTx<'_> {
    fn announce(&mut self, _notice: &str) -> Result<(), Error> {
        Ok(())
    }
}
