//! The PostgreSQL backend of [`Tx`](super::super::Tx): one `READ COMMITTED`
//! transaction of the synchronous `postgres` client. The domain's refusals
//! come from the same shared checks as SQLite's (`groups::check_join`, ...),
//! so both backends answer alike; what differs is that [`Groups::lock_group`]
//! holds the group's row (`SELECT ... FOR UPDATE`), because several
//! replicas write at once (docs/ARCHITECTURE.md §12).

use postgres::types::ToSql;
use postgres::{Statement, Transaction};

use super::error;
use crate::Error;
use crate::proto::client_api::{Delivery, GroupInfo, GroupSettings, Member, Role};
use crate::proto::peer_api::{Item, Verdict};
use crate::service_center::data_center::tx::{
    Accounts, Groups, MAX_NOTICE_BYTES, Messages, Outbox, Page, Pending, Replicas, Rotated, Runs,
    Sessions, TokenHash, Tokens,
};
use crate::service_center::data_center::{accounts, groups, messages};

/// A transaction on one PostgreSQL connection.
pub struct PgTx<'a> {
    tx: Transaction<'a>,
    /// The connection's prepared statements, when it keeps them.
    statements: Option<&'a mut Statements>,
}

/// Statements prepared on one connection, by their SQL: each is then one
/// round trip to run rather than two (prepare, then run). Prepared
/// statements outlive transactions, rolled back or not.
#[derive(Default)]
pub struct Statements(std::collections::HashMap<String, Statement>);

/// Statements one connection keeps at most (the data center has fewer).
const MAX_STATEMENTS: usize = 256;

/// Rows of a page fetched from the server at a time.
const PAGE_ROWS: i32 = 16;

type Params<'p> = [&'p (dyn ToSql + Sync)];

impl<'a> PgTx<'a> {
    pub fn new(tx: Transaction<'a>) -> Self {
        Self {
            tx,
            statements: None,
        }
    }

    /// A transaction that prepares each statement once per connection, in
    /// `statements`.
    pub fn cached(tx: Transaction<'a>, statements: &'a mut Statements) -> Self {
        Self {
            tx,
            statements: Some(statements),
        }
    }

    fn statement(&mut self, context: &str, sql: &str) -> Result<Statement, Error> {
        if let Some(known) = self.statements.as_ref().and_then(|s| s.0.get(sql)) {
            return Ok(known.clone());
        }
        let statement = self.tx.prepare(sql).map_err(|e| error(context, e))?;
        if let Some(cache) = self.statements.as_deref_mut() {
            if cache.0.len() >= MAX_STATEMENTS {
                cache.0.clear();
            }
            cache.0.insert(sql.to_owned(), statement.clone());
        }
        Ok(statement)
    }

    /// Makes the transaction's work durable.
    pub fn commit(self) -> Result<(), Error> {
        self.tx.commit().map_err(|e| error("commit", e))
    }

    fn execute(&mut self, context: &str, sql: &str, params: &Params) -> Result<u64, Error> {
        let statement = self.statement(context, sql)?;
        self.tx
            .execute(&statement, params)
            .map_err(|e| error(context, e))
    }

    fn query(
        &mut self,
        context: &str,
        sql: &str,
        params: &Params,
    ) -> Result<Vec<postgres::Row>, Error> {
        let statement = self.statement(context, sql)?;
        self.tx
            .query(&statement, params)
            .map_err(|e| error(context, e))
    }

    fn query_opt(
        &mut self,
        context: &str,
        sql: &str,
        params: &Params,
    ) -> Result<Option<postgres::Row>, Error> {
        let statement = self.statement(context, sql)?;
        self.tx
            .query_opt(&statement, params)
            .map_err(|e| error(context, e))
    }

    fn count(&mut self, context: &str, sql: &str, params: &Params) -> Result<i64, Error> {
        let statement = self.statement(context, sql)?;
        Ok(self
            .tx
            .query_one(&statement, params)
            .map_err(|e| error(context, e))?
            .get(0))
    }
}

/// A 32-byte hash as stored in a `BYTEA`.
fn hash(context: &str, bytes: Vec<u8>) -> Result<TokenHash, Error> {
    bytes
        .try_into()
        .map_err(|_| Error::Internal(format!("data center: {context}: a hash is not 32 bytes")))
}

fn seq(value: i64) -> u64 {
    u64::try_from(value).unwrap_or_default()
}

fn limit(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Groups for PgTx<'_> {
    fn create_group(
        &mut self,
        id: &str,
        title: &str,
        announcement: &str,
        owner: &str,
        now_ms: i64,
    ) -> Result<(), Error> {
        let max = crate::limits::DEFAULT_GROUP_MEMBERS as i32;
        let inserted = self.execute(
            "creating a group",
            "INSERT INTO groups (id, title, announcement, open, max_members, last_seq, created_at_ms)
             VALUES ($1, $2, $3, TRUE, $4, 0, $5) ON CONFLICT (id) DO NOTHING",
            &[&id, &title, &announcement, &max, &now_ms],
        )?;
        if inserted == 0 {
            return Err(groups::already_exists(id));
        }
        self.execute(
            "creating a group",
            "INSERT INTO members (group_id, user_id, role) VALUES ($1, $2, $3)",
            &[&id, &owner, &(Role::Owner as i32)],
        )?;
        Ok(())
    }

    fn group_info(&mut self, id: &str) -> Result<GroupInfo, Error> {
        let context = "reading a group";
        let row = self
            .query_opt(
                context,
                "SELECT title, announcement, open, max_members, last_seq FROM groups WHERE id = $1",
                &[&id],
            )?
            .ok_or_else(|| groups::not_found(id))?;
        let members = self
            .query(
                context,
                "SELECT user_id, role FROM members WHERE group_id = $1 ORDER BY user_id",
                &[&id],
            )?
            .into_iter()
            .map(|r| Member {
                user: r.get(0),
                role: r.get(1),
            })
            .collect();
        Ok(GroupInfo {
            id: id.to_owned(),
            title: row.get(0),
            announcement: row.get(1),
            settings: Some(GroupSettings {
                open: row.get(2),
                max_members: row.get::<_, i32>(3) as u32,
            }),
            members,
            last_seq: seq(row.get(4)),
            members_hidden: false,
        })
    }

    fn lock_group(&mut self, id: &str) -> Result<bool, Error> {
        Ok(self
            .query_opt(
                "locking a group",
                "SELECT 1 FROM groups WHERE id = $1 FOR UPDATE",
                &[&id],
            )?
            .is_some())
    }

    fn group_exists(&mut self, id: &str) -> Result<bool, Error> {
        Ok(self
            .query_opt(
                "reading a group",
                "SELECT 1 FROM groups WHERE id = $1",
                &[&id],
            )?
            .is_some())
    }

    fn role(&mut self, group: &str, user: &str) -> Result<Option<Role>, Error> {
        let row = self.query_opt(
            "reading a role",
            "SELECT role FROM members WHERE group_id = $1 AND user_id = $2",
            &[&group, &user],
        )?;
        Ok(row.map(|r| Role::try_from(r.get::<_, i32>(0)).unwrap_or(Role::Member)))
    }

    fn update_group(
        &mut self,
        group: &str,
        title: Option<&str>,
        announcement: Option<&str>,
        settings: Option<&GroupSettings>,
    ) -> Result<(), Error> {
        let context = "updating a group";
        if let Some(settings) = settings {
            // The row first, then the count: a join cannot slip in between.
            self.lock_group(group)?;
            let count = self.count(
                context,
                "SELECT count(*) FROM members WHERE group_id = $1",
                &[&group],
            )?;
            groups::check_max_members(group, settings, count as u32)?;
        }
        let open = settings.map(|s| s.open);
        let max = settings.map(|s| s.max_members as i32);
        self.execute(
            context,
            "UPDATE groups SET title = coalesce($2, title), announcement = coalesce($3, announcement),
                    open = coalesce($4, open), max_members = coalesce($5, max_members)
             WHERE id = $1",
            &[&group, &title, &announcement, &open, &max],
        )?;
        Ok(())
    }

    fn join(&mut self, group: &str, user: &str) -> Result<(), Error> {
        let context = "joining a group";
        // Held until the end, so two replicas cannot both take the last place.
        let row = self
            .query_opt(
                context,
                "SELECT open, max_members FROM groups WHERE id = $1 FOR UPDATE",
                &[&group],
            )?
            .ok_or_else(|| groups::not_found(group))?;
        if self.role(group, user)?.is_some() {
            return Ok(());
        }
        let count = self.count(
            context,
            "SELECT count(*) FROM members WHERE group_id = $1",
            &[&group],
        )?;
        groups::check_join(group, row.get(0), row.get::<_, i32>(1) as u32, count as u32)?;
        self.execute(
            context,
            "INSERT INTO members (group_id, user_id, role) VALUES ($1, $2, $3)",
            &[&group, &user, &(Role::Member as i32)],
        )?;
        Ok(())
    }

    fn leave(&mut self, group: &str, user: &str) -> Result<(), Error> {
        let context = "leaving a group";
        self.lock_group(group)?;
        let role = self.role(group, user)?;
        let members = match role {
            Some(Role::Owner) => self.member_ids(group)?.len(),
            _ => 0,
        };
        groups::check_leave(group, user, role, members)?;
        self.execute(
            context,
            "DELETE FROM members WHERE group_id = $1 AND user_id = $2",
            &[&group, &user],
        )?;
        Ok(())
    }

    fn member_ids(&mut self, group: &str) -> Result<Vec<String>, Error> {
        Ok(self
            .query(
                "reading members",
                "SELECT user_id FROM members WHERE group_id = $1",
                &[&group],
            )?
            .into_iter()
            .map(|r| r.get(0))
            .collect())
    }

    fn next_seq(&mut self, group: &str) -> Result<u64, Error> {
        let row = self
            .query_opt(
                "taking a seq",
                "UPDATE groups SET last_seq = last_seq + 1 WHERE id = $1 RETURNING last_seq",
                &[&group],
            )?
            .ok_or_else(|| groups::not_found(group))?;
        Ok(seq(row.get(0)))
    }
}

impl Messages for PgTx<'_> {
    fn accepted_by_key(
        &mut self,
        sender: &str,
        group: &str,
        key: &str,
    ) -> Result<Option<String>, Error> {
        Ok(self
            .query_opt(
                "reading an accepted send",
                "SELECT message_id FROM accepted
                 WHERE sender = $1 AND group_id = $2 AND idempotency_key = $3",
                &[&sender, &group, &key],
            )?
            .map(|r| r.get(0)))
    }

    fn insert_accepted(
        &mut self,
        message_id: &str,
        group: &str,
        sender: &str,
        key: Option<&str>,
        now_ms: i64,
    ) -> Result<(), Error> {
        self.execute(
            "recording an accepted send",
            "INSERT INTO accepted (message_id, group_id, sender, idempotency_key, accepted_at_ms)
             VALUES ($1, $2, $3, $4, $5)",
            &[&message_id, &group, &sender, &key, &now_ms],
        )?;
        Ok(())
    }

    fn verdict_of(&mut self, message_id: &str) -> Result<Option<Verdict>, Error> {
        let row = self.query_opt(
            "reading a verdict",
            "SELECT verdict FROM accepted WHERE message_id = $1",
            &[&message_id],
        )?;
        row.and_then(|r| r.get::<_, Option<Vec<u8>>>(0))
            .map(|bytes| messages::decode_verdict(message_id, &bytes))
            .transpose()
    }

    fn record_verdict(&mut self, verdict: &Verdict) -> Result<(), Error> {
        use prost::Message;
        self.execute(
            "recording a verdict",
            "UPDATE accepted SET verdict = $2 WHERE message_id = $1",
            &[&verdict.message_id, &verdict.encode_to_vec()],
        )?;
        Ok(())
    }

    fn sequenced_by_key(
        &mut self,
        group: &str,
        sender: &str,
        key: &str,
    ) -> Result<Option<String>, Error> {
        Ok(self
            .query_opt(
                "reading a sequenced key",
                "SELECT message_id FROM sequenced_keys
                 WHERE group_id = $1 AND sender = $2 AND idempotency_key = $3",
                &[&group, &sender, &key],
            )?
            .map(|r| r.get(0)))
    }

    fn insert_sequenced_key(
        &mut self,
        group: &str,
        sender: &str,
        key: &str,
        message_id: &str,
    ) -> Result<(), Error> {
        self.execute(
            "recording a sequenced key",
            "INSERT INTO sequenced_keys (group_id, sender, idempotency_key, message_id)
             VALUES ($1, $2, $3, $4)",
            &[&group, &sender, &key, &message_id],
        )?;
        Ok(())
    }

    fn seq_of(&mut self, message_id: &str) -> Result<Option<u64>, Error> {
        Ok(self
            .query_opt(
                "reading a seq",
                "SELECT seq FROM messages WHERE message_id = $1",
                &[&message_id],
            )?
            .map(|r| seq(r.get(0))))
    }

    fn insert_message(&mut self, message: &Delivery) -> Result<bool, Error> {
        let seq = i64::try_from(message.seq)
            .map_err(|_| Error::InvalidArgument(format!("seq {} is too large", message.seq)))?;
        // Either key (the group's seq or the message id) makes it a
        // redelivery, as SQLite's INSERT OR IGNORE does.
        let inserted = self.execute(
            "storing a message",
            "INSERT INTO messages (group_id, seq, message_id, sender, body, sent_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            &[
                &message.group,
                &seq,
                &message.message_id,
                &message.sender,
                &message.body,
                &message.sent_at_ms,
            ],
        )?;
        Ok(inserted == 1)
    }

    fn page(
        &mut self,
        group: &str,
        after_seq: u64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Page, Error> {
        let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
        // One more than the limit tells whether more follow; rows past the
        // byte budget are bounded by the limit the callers cap.
        let take = i64::from(limit) + 1;
        let context = "reading a page";
        // A portal read a few rows at a time, as SQLite steps its rows: a
        // page that stops at the byte budget never holds the rows past it.
        let statement = self.statement(
            context,
            "SELECT seq, message_id, sender, body, sent_at_ms FROM messages
             WHERE group_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )?;
        let portal = self
            .tx
            .bind(&statement, &[&group, &after, &take])
            .map_err(|e| error(context, e))?;
        let mut page = Page::default();
        let mut bytes = 0;
        loop {
            let rows = self
                .tx
                .query_portal(&portal, PAGE_ROWS)
                .map_err(|e| error(context, e))?;
            if rows.is_empty() {
                return Ok(page);
            }
            for r in rows {
                if page.is_full(limit) {
                    return Ok(page);
                }
                let delivery = Delivery {
                    group: group.to_owned(),
                    seq: seq(r.get(0)),
                    message_id: r.get(1),
                    sender: r.get(2),
                    body: r.get(3),
                    sent_at_ms: r.get(4),
                };
                if !page.add(delivery, &mut bytes, max_bytes) {
                    return Ok(page);
                }
            }
        }
    }

    fn delete_accepted_before(&mut self, cutoff_ms: i64, count: usize) -> Result<usize, Error> {
        let deleted = self.execute(
            "pruning accepted sends",
            "DELETE FROM accepted WHERE message_id IN
                 (SELECT message_id FROM accepted WHERE accepted_at_ms < $1
                  ORDER BY accepted_at_ms LIMIT $2)",
            &[&cutoff_ms, &limit(count)],
        )?;
        Ok(deleted as usize)
    }
}

impl Accounts for PgTx<'_> {
    fn insert_user(&mut self, id: &str, password_hash: &str, now_ms: i64) -> Result<(), Error> {
        let inserted = self.execute(
            "creating a user",
            "INSERT INTO users (id, password_hash, attached_region, created_at_ms)
             VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
            &[&id, &password_hash, &accounts::home_of(id), &now_ms],
        )?;
        if inserted == 0 {
            return Err(accounts::already_exists(id));
        }
        Ok(())
    }

    fn password_hash(&mut self, id: &str) -> Result<Option<String>, Error> {
        Ok(self
            .query_opt(
                "reading a user",
                "SELECT password_hash FROM users WHERE id = $1",
                &[&id],
            )?
            .map(|r| r.get(0)))
    }

    fn attach(&mut self, id: &str, region: &str) -> Result<(), Error> {
        self.execute(
            "attaching a user",
            "UPDATE users SET attached_region = $2 WHERE id = $1",
            &[&id, &region],
        )?;
        Ok(())
    }

    fn attached_region(&mut self, id: &str) -> Result<Option<String>, Error> {
        Ok(self
            .query_opt(
                "reading a user",
                "SELECT attached_region FROM users WHERE id = $1",
                &[&id],
            )?
            .map(|r| r.get(0)))
    }

    fn attached_elsewhere(
        &mut self,
        ids: &[String],
        region: &str,
    ) -> Result<Vec<(String, String)>, Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self
            .query(
                "reading where users are attached",
                "SELECT id, attached_region FROM users
                 WHERE id = ANY($1) AND attached_region <> $2",
                &[&ids, &region],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    fn put_assertion(
        &mut self,
        id: &str,
        assertion: &[u8],
        expires_at_ms: i64,
        now_ms: i64,
    ) -> Result<(), Error> {
        let context = "keeping an assertion";
        self.execute(
            context,
            "INSERT INTO assertions (user_id, assertion, expires_at_ms) VALUES ($1, $2, $3)
             ON CONFLICT (user_id) DO UPDATE SET assertion = $2, expires_at_ms = $3",
            &[&id, &assertion, &expires_at_ms],
        )?;
        self.execute(
            context,
            "DELETE FROM assertions WHERE user_id IN
             (SELECT user_id FROM assertions WHERE expires_at_ms <= $1 LIMIT 256)",
            &[&now_ms],
        )?;
        Ok(())
    }

    fn assertion(&mut self, id: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self
            .query_opt(
                "reading an assertion",
                "SELECT assertion FROM assertions WHERE user_id = $1",
                &[&id],
            )?
            .map(|r| r.get(0)))
    }
}

impl Sessions for PgTx<'_> {
    fn insert_session(&mut self, user: &str, tokens: &Tokens) -> Result<(), Error> {
        self.execute(
            "creating a session",
            "INSERT INTO sessions
                 (access_hash, refresh_hash, user_id, expires_at_ms, refresh_expires_at_ms)
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &&tokens.access_hash[..],
                &&tokens.refresh_hash[..],
                &user,
                &tokens.expires_at_ms,
                &tokens.refresh_expires_at_ms,
            ],
        )?;
        Ok(())
    }

    fn session_by_access(&mut self, access: &TokenHash) -> Result<Option<(String, i64)>, Error> {
        Ok(self
            .query_opt(
                "reading a session",
                "SELECT user_id, expires_at_ms FROM sessions WHERE access_hash = $1",
                &[&&access[..]],
            )?
            .map(|r| (r.get(0), r.get(1))))
    }

    fn refreshable(&mut self, refresh: &TokenHash, now_ms: i64) -> Result<Option<String>, Error> {
        Ok(self
            .query_opt(
                "reading a session",
                "SELECT user_id FROM sessions
                 WHERE refresh_hash = $1 AND refresh_expires_at_ms > $2",
                &[&&refresh[..], &now_ms],
            )?
            .map(|r| r.get(0)))
    }

    fn rotate_session(
        &mut self,
        refresh: &TokenHash,
        tokens: &Tokens,
        now_ms: i64,
    ) -> Result<Option<Rotated>, Error> {
        let context = "rotating a session";
        // FOR UPDATE: two replicas refreshing with one token at once; the
        // second waits, then finds the token spent.
        let Some(row) = self.query_opt(
            context,
            "SELECT id, user_id, access_hash FROM sessions
             WHERE refresh_hash = $1 AND refresh_expires_at_ms > $2 FOR UPDATE",
            &[&&refresh[..], &now_ms],
        )?
        else {
            return Ok(None);
        };
        let id: i64 = row.get(0);
        let user: String = row.get(1);
        let old_access_hash = hash(context, row.get(2))?;
        self.execute(
            context,
            "UPDATE sessions SET access_hash = $2, refresh_hash = $3, expires_at_ms = $4,
                 refresh_expires_at_ms = $5
             WHERE id = $1",
            &[
                &id,
                &&tokens.access_hash[..],
                &&tokens.refresh_hash[..],
                &tokens.expires_at_ms,
                &tokens.refresh_expires_at_ms,
            ],
        )?;
        Ok(Some(Rotated {
            user,
            old_access_hash,
        }))
    }

    fn revoke_by_access(&mut self, access: &TokenHash) -> Result<Option<TokenHash>, Error> {
        let context = "revoking a session";
        self.query_opt(
            context,
            "DELETE FROM sessions WHERE access_hash = $1 RETURNING access_hash",
            &[&&access[..]],
        )?
        .map(|r| hash(context, r.get(0)))
        .transpose()
    }

    fn revoke_by_refresh(&mut self, refresh: &TokenHash) -> Result<Option<TokenHash>, Error> {
        let context = "revoking a session";
        self.query_opt(
            context,
            "DELETE FROM sessions WHERE refresh_hash = $1 RETURNING access_hash",
            &[&&refresh[..]],
        )?
        .map(|r| hash(context, r.get(0)))
        .transpose()
    }

    fn delete_expired_sessions(&mut self, now_ms: i64, count: usize) -> Result<usize, Error> {
        let deleted = self.execute(
            "sweeping sessions",
            "DELETE FROM sessions WHERE id IN
                 (SELECT id FROM sessions WHERE refresh_expires_at_ms <= $1 LIMIT $2)",
            &[&now_ms, &limit(count)],
        )?;
        Ok(deleted as usize)
    }

    fn sessions_in_force(&mut self, now_ms: i64) -> Result<i64, Error> {
        self.count(
            "counting sessions",
            "SELECT count(*) FROM sessions WHERE refresh_expires_at_ms > $1",
            &[&now_ms],
        )
    }
}

impl Outbox for PgTx<'_> {
    fn enqueue(
        &mut self,
        destination: &str,
        item: &Item,
        traceparent: &str,
        now_ms: i64,
    ) -> Result<(), Error> {
        use prost::Message;
        let traceparent = (!traceparent.is_empty()).then_some(traceparent);
        self.execute(
            "writing to the outbox",
            "INSERT INTO outbox (destination, item, created_at_ms, traceparent)
             VALUES ($1, $2, $3, $4)",
            &[&destination, &item.encode_to_vec(), &now_ms, &traceparent],
        )?;
        Ok(())
    }

    fn pending(
        &mut self,
        destination: &str,
        after_id: i64,
        count: usize,
    ) -> Result<Vec<Pending>, Error> {
        self.query(
            "reading the outbox",
            "SELECT id, item, traceparent FROM outbox
             WHERE destination = $1 AND id > $2 ORDER BY id LIMIT $3",
            &[&destination, &after_id, &limit(count)],
        )?
        .into_iter()
        .map(|r| Pending::decode(r.get(0), r.get::<_, &[u8]>(1), r.get(2)))
        .collect()
    }

    fn clear(&mut self, destination: &str, ids: &[i64]) -> Result<(), Error> {
        self.execute(
            "clearing the outbox",
            "DELETE FROM outbox WHERE destination = $1 AND id = ANY($2)",
            &[&destination, &ids],
        )?;
        Ok(())
    }

    fn discard(&mut self, destination: &str, count: usize) -> Result<usize, Error> {
        let deleted = self.execute(
            "discarding from the outbox",
            "DELETE FROM outbox WHERE id IN
                 (SELECT id FROM outbox WHERE destination = $1 ORDER BY id LIMIT $2)",
            &[&destination, &limit(count)],
        )?;
        Ok(deleted as usize)
    }

    fn destinations(&mut self) -> Result<Vec<String>, Error> {
        Ok(self
            .query(
                "reading the outbox",
                "SELECT DISTINCT destination FROM outbox",
                &[],
            )?
            .into_iter()
            .map(|r| r.get(0))
            .collect())
    }

    fn depth(&mut self) -> Result<u64, Error> {
        let count = self.count("counting the outbox", "SELECT count(*) FROM outbox", &[])?;
        Ok(count as u64)
    }

    fn depths(&mut self) -> Result<Vec<(String, i64)>, Error> {
        Ok(self
            .query(
                "counting the outbox",
                "SELECT destination, count(*) FROM outbox GROUP BY destination",
                &[],
            )?
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    /// By the server's clock, so that replicas' clocks need not agree.
    fn lease(&mut self, destination: &str, holder: &str, ttl_ms: i64) -> Result<bool, Error> {
        let held = self.query_opt(
            "leasing an outbox destination",
            "INSERT INTO outbox_leases (destination, holder, expires_at_ms)
             VALUES ($1, $2, (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT + $3)
             ON CONFLICT (destination) DO UPDATE
                SET holder = EXCLUDED.holder, expires_at_ms = EXCLUDED.expires_at_ms
                WHERE outbox_leases.holder = EXCLUDED.holder
                   OR outbox_leases.expires_at_ms
                      < (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT
             RETURNING holder",
            &[&destination, &holder, &ttl_ms],
        )?;
        Ok(held.is_some())
    }

    fn release_leases(&mut self, holder: &str) -> Result<(), Error> {
        self.execute(
            "releasing outbox leases",
            "DELETE FROM outbox_leases WHERE holder = $1",
            &[&holder],
        )?;
        Ok(())
    }
}

/// A later batch locks its source's row before it looks: a take of the
/// batch before it that another replica has made but not committed holds
/// the lock, so this one waits for that commit and then sees it (READ
/// COMMITTED reads the row anew). One that arrives before the batch before
/// it has begun is refused, and the receiver tries it again shortly
/// (`business_center::turns`).
impl Runs for PgTx<'_> {
    fn take_batch(&mut self, source: &str, chain: i64, batch: i64) -> Result<bool, Error> {
        if batch == 0 {
            self.execute(
                "starting a carried run",
                "INSERT INTO carried_runs (source, chain, batch) VALUES ($1, $2, 0)
                 ON CONFLICT (source) DO UPDATE SET chain = EXCLUDED.chain, batch = 0",
                &[&source, &chain],
            )?;
            return Ok(true);
        }
        let row = self.query_opt(
            "locking a carried run",
            "SELECT chain, batch FROM carried_runs WHERE source = $1 FOR UPDATE",
            &[&source],
        )?;
        let in_turn = row.is_some_and(|row| {
            let (at_chain, at_batch): (i64, i64) = (row.get(0), row.get(1));
            at_chain == chain && (at_batch == batch - 1 || at_batch == batch)
        });
        if in_turn {
            self.execute(
                "taking a carried batch",
                "UPDATE carried_runs SET batch = $2 WHERE source = $1",
                &[&source, &batch],
            )?;
        }
        Ok(in_turn)
    }
}

/// NOTIFY on [`CHANNEL`](super::CHANNEL), which every replica LISTENs on.
impl Replicas for PgTx<'_> {
    fn announce(&mut self, notice: &str) -> Result<(), Error> {
        if notice.len() > MAX_NOTICE_BYTES {
            return Err(Error::Internal(format!(
                "a notice to the replicas of {} bytes, more than {MAX_NOTICE_BYTES}",
                notice.len()
            )));
        }
        self.query(
            "announcing to the replicas",
            "SELECT pg_notify($1, $2)",
            &[&super::CHANNEL, &notice],
        )?;
        Ok(())
    }
}
