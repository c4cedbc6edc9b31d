//! The interface the flows see: one transaction of the data center, with
//! typed operations grouped by what they keep. Both backends implement it
//! (docs/ARCHITECTURE.md, "Data center backends"); a flow is a closure over
//! `&mut dyn Tx` and never names a backend. Every operation takes
//! `&mut self` because a PostgreSQL transaction needs it, and returns the
//! domain [`Error`], never a backend's.

use crate::Error;
use crate::proto::client_api::{Delivery, GroupInfo, GroupSettings, Role};
use crate::proto::peer_api::{Item, Verdict};

pub use super::groups::not_found as group_not_found;
pub use super::messages::Page;
pub use super::outbox::Pending;
pub use super::sessions::{Rotated, TokenHash, Tokens};

/// User accounts of this home region, their home-location register, and
/// the assertions of their homes that roaming users logged in here.
pub trait Accounts {
    /// `ALREADY_EXISTS` when the user exists.
    fn insert_user(&mut self, id: &str, password_hash: &str, now_ms: i64) -> Result<(), Error>;
    fn password_hash(&mut self, id: &str) -> Result<Option<String>, Error>;
    /// Records that `id` is attached at `region`.
    fn attach(&mut self, id: &str, region: &str) -> Result<(), Error>;
    /// Where a user of this home is attached; `None` for an unknown user.
    fn attached_region(&mut self, id: &str) -> Result<Option<String>, Error>;
    /// Of the users `ids`, those of this home attached at a region other
    /// than `region`, with where: one statement for all the recipients of a
    /// delivery, which runs in the sending write (on SQLite, on the single
    /// writer thread), rather than one [`Accounts::attached_region`] each.
    /// Ids that are not users of this home are left out.
    fn attached_elsewhere(
        &mut self,
        ids: &[String],
        region: &str,
    ) -> Result<Vec<(String, String)>, Error>;
    /// Keeps the encoded assertion, replacing an older one, and forgets a
    /// bounded number that have expired.
    fn put_assertion(
        &mut self,
        id: &str,
        assertion: &[u8],
        expires_at_ms: i64,
        now_ms: i64,
    ) -> Result<(), Error>;
    fn assertion(&mut self, id: &str) -> Result<Option<Vec<u8>>, Error>;
}

/// The sessions this region issued, by the hashes of their tokens.
pub trait Sessions {
    fn insert_session(&mut self, user: &str, tokens: &Tokens) -> Result<(), Error>;
    /// The user and access expiry of the session with this access token.
    fn session_by_access(&mut self, access: &TokenHash) -> Result<Option<(String, i64)>, Error>;
    /// The user of the session whose refresh token this is, if current.
    fn refreshable(&mut self, refresh: &TokenHash, now_ms: i64) -> Result<Option<String>, Error>;
    /// Gives the session of a current refresh token new tokens.
    fn rotate_session(
        &mut self,
        refresh: &TokenHash,
        tokens: &Tokens,
        now_ms: i64,
    ) -> Result<Option<Rotated>, Error>;
    /// Deletes the session; its access hash if it existed.
    fn revoke_by_access(&mut self, access: &TokenHash) -> Result<Option<TokenHash>, Error>;
    fn revoke_by_refresh(&mut self, refresh: &TokenHash) -> Result<Option<TokenHash>, Error>;
    /// Deletes at most `limit` sessions past refresh; how many.
    fn delete_expired_sessions(&mut self, now_ms: i64, limit: usize) -> Result<usize, Error>;
    /// Sessions that can still be used or refreshed at `now_ms`.
    fn sessions_in_force(&mut self, now_ms: i64) -> Result<i64, Error>;
}

/// Groups homed in this region, their members and their order.
pub trait Groups {
    /// `ALREADY_EXISTS` when the group exists.
    fn create_group(
        &mut self,
        id: &str,
        title: &str,
        announcement: &str,
        owner: &str,
        now_ms: i64,
    ) -> Result<(), Error>;
    /// The group with its members, or `NOT_FOUND`.
    fn group_info(&mut self, id: &str) -> Result<GroupInfo, Error>;
    /// Holds the group until the transaction ends, so that another
    /// replica's transaction cannot sequence in it, or change its members,
    /// in between; whether it exists. Take it before reading what a
    /// sequencing decides on.
    fn lock_group(&mut self, id: &str) -> Result<bool, Error>;
    fn group_exists(&mut self, id: &str) -> Result<bool, Error>;
    /// The role of `user` in the group; `None` when not a member.
    fn role(&mut self, group: &str, user: &str) -> Result<Option<Role>, Error>;
    fn update_group(
        &mut self,
        group: &str,
        title: Option<&str>,
        announcement: Option<&str>,
        settings: Option<&GroupSettings>,
    ) -> Result<(), Error>;
    /// Joining twice is a no-op; refuses a full or closed group.
    fn join(&mut self, group: &str, user: &str) -> Result<(), Error>;
    /// The owner cannot leave while others remain.
    fn leave(&mut self, group: &str, user: &str) -> Result<(), Error>;
    fn member_ids(&mut self, group: &str) -> Result<Vec<String>, Error>;
    /// Takes the group's next seq, in this transaction: no gaps, no
    /// duplicates.
    fn next_seq(&mut self, group: &str) -> Result<u64, Error>;
}

/// The message log, the sends accepted here and the keys sequenced here.
pub trait Messages {
    /// A send accepted here earlier with the same idempotency key.
    fn accepted_by_key(
        &mut self,
        sender: &str,
        group: &str,
        key: &str,
    ) -> Result<Option<String>, Error>;
    fn insert_accepted(
        &mut self,
        message_id: &str,
        group: &str,
        sender: &str,
        key: Option<&str>,
        now_ms: i64,
    ) -> Result<(), Error>;
    /// The home's verdict recorded on a send accepted here.
    fn verdict_of(&mut self, message_id: &str) -> Result<Option<Verdict>, Error>;
    /// Records the home's verdict; the latest one stands.
    fn record_verdict(&mut self, verdict: &Verdict) -> Result<(), Error>;
    /// The message a sender's key was sequenced as, at the group's home.
    fn sequenced_by_key(
        &mut self,
        group: &str,
        sender: &str,
        key: &str,
    ) -> Result<Option<String>, Error>;
    fn insert_sequenced_key(
        &mut self,
        group: &str,
        sender: &str,
        key: &str,
        message_id: &str,
    ) -> Result<(), Error>;
    /// The seq a message was given, if this region has it.
    fn seq_of(&mut self, message_id: &str) -> Result<Option<u64>, Error>;
    /// Stores a sequenced message; `false` when it was already stored.
    fn insert_message(&mut self, message: &Delivery) -> Result<bool, Error>;
    /// Messages after `after_seq`, at most `limit` and `max_bytes` of them
    /// (always at least one).
    fn page(
        &mut self,
        group: &str,
        after_seq: u64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Page, Error>;
    /// Deletes at most `limit` accepted sends older than `cutoff_ms`.
    fn delete_accepted_before(&mut self, cutoff_ms: i64, limit: usize) -> Result<usize, Error>;
}

/// The durable outbox: cross-region work, in order per destination.
pub trait Outbox {
    fn enqueue(
        &mut self,
        destination: &str,
        item: &Item,
        traceparent: &str,
        now_ms: i64,
    ) -> Result<(), Error>;
    /// Up to `limit` items after `after_id`, oldest first.
    fn pending(
        &mut self,
        destination: &str,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<Pending>, Error>;
    /// Removes the items `ids` of `destination`, which it acknowledged.
    /// By id rather than up to the last one: on a shared data center ids
    /// come from a sequence, so an item can commit after items with higher
    /// ids were read and carried, and must stay until it is carried too.
    fn clear(&mut self, destination: &str, ids: &[i64]) -> Result<(), Error>;
    /// Deletes at most `limit` of a departed destination's items, unsent.
    fn discard(&mut self, destination: &str, limit: usize) -> Result<usize, Error>;
    fn destinations(&mut self) -> Result<Vec<String>, Error>;
    /// Items waiting, over all destinations.
    fn depth(&mut self) -> Result<u64, Error>;
    /// Items waiting, per destination.
    fn depths(&mut self) -> Result<Vec<(String, i64)>, Error>;
    /// Takes or renews, for `ttl_ms`, the right to carry `destination`'s
    /// items, unless another holder's lease runs; whether `holder` holds
    /// it now. One holder at a time keeps a destination's items in order
    /// and sent once while several replicas share the outbox.
    fn lease(&mut self, destination: &str, holder: &str, ttl_ms: i64) -> Result<bool, Error>;
    /// Gives up every lease `holder` holds, so that another replica takes
    /// its destinations over at once rather than when the leases expire.
    fn release_leases(&mut self, holder: &str) -> Result<(), Error>;
}

/// Where each sending region's run of carried batches stands at this
/// destination (`CarryOrder` in peer.proto): a sender keeps several batches
/// in flight, and they apply here in the order it sent them.
pub trait Runs {
    /// Takes batch `batch` of run `chain` from `source` when it is the
    /// run's first (which starts a new run), the one right after the last
    /// taken, or the last taken again (a resend, applied idempotently);
    /// whether it was taken. Concurrent takes from one source serialize:
    /// the loser sees the winner's.
    fn take_batch(&mut self, source: &str, chain: i64, batch: i64) -> Result<bool, Error>;
}

/// Word to the region's other service-center replicas that share this data
/// center: heard once the transaction commits, never if it rolls back.
pub trait Replicas {
    /// Announces `notice`, at most [`MAX_NOTICE_BYTES`].
    fn announce(&mut self, notice: &str) -> Result<(), Error>;
}

/// The longest notice: PostgreSQL's NOTIFY takes under 8000 bytes.
pub const MAX_NOTICE_BYTES: usize = 7900;

/// One transaction of the data center: everything a flow may do in it.
pub trait Tx: Accounts + Sessions + Groups + Messages + Outbox + Runs + Replicas {}

impl<T: Accounts + Sessions + Groups + Messages + Outbox + Runs + Replicas + ?Sized> Tx for T {}
