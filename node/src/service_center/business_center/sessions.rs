//! Sessions: issued where the user logs in, and used, refreshed and revoked
//! there. A session has an access token (the bearer `session`, short-lived)
//! and a refresh token (longer-lived, traded for a new pair and spent).
//!
//! Only the SHA-256 of a token is kept, in the data center and in memory;
//! the token itself exists only in the reply to its client. The memory
//! holds at most [`MAX_CACHED_SESSIONS`] sessions, evicting the one used
//! longest ago; an evicted one is read from the data center when next used.
//! This process is the only writer of its data center, and a session read
//! from it is cached only if no session was revoked or rotated meanwhile
//! (see [`SessionCache`]), so the cache never disagrees with it.

use std::sync::{Arc, Mutex};

use rand::RngCore;

use super::bounded::BoundedMap;
use crate::Error;
use crate::ids::Id;
use crate::limits::{
    ACCESS_TOKEN_TTL_MS, MAX_CACHED_SESSIONS, REFRESH_TOKEN_TTL_MS, SESSION_SWEEP_BATCH,
};
use crate::service_center::data_center::tx::{TokenHash, Tokens};
use crate::service_center::data_center::{DataCenter, Tx};
use crate::service_center::replicas::{Notice, Replica};

/// The SHA-256 of a token, as stored.
pub(super) fn hash(token: &str) -> TokenHash {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut hash = [0u8; 32];
    hash.copy_from_slice(digest.as_ref());
    hash
}

/// 256 random bits, in hex.
fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A session's tokens as its client gets them, once.
pub(super) struct Issued {
    pub user: Id,
    pub access: String,
    pub refresh: String,
    pub expires_at_ms: i64,
    pub refresh_expires_at_ms: i64,
}

/// Never shows the tokens.
impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("user", &self.user)
            .field("expires_at_ms", &self.expires_at_ms)
            .field("refresh_expires_at_ms", &self.refresh_expires_at_ms)
            .finish_non_exhaustive()
    }
}

impl Issued {
    /// New tokens for `user`, and what is stored of them.
    fn new(user: Id, now_ms: i64) -> (Self, Tokens) {
        let issued = Issued {
            user,
            access: new_token(),
            refresh: new_token(),
            expires_at_ms: now_ms + ACCESS_TOKEN_TTL_MS,
            refresh_expires_at_ms: now_ms + REFRESH_TOKEN_TTL_MS,
        };
        let tokens = Tokens {
            access_hash: hash(&issued.access),
            refresh_hash: hash(&issued.refresh),
            expires_at_ms: issued.expires_at_ms,
            refresh_expires_at_ms: issued.refresh_expires_at_ms,
        };
        (issued, tokens)
    }
}

#[derive(Clone)]
pub(super) struct Sessions {
    dc: DataCenter,
    /// Tells the other replicas of each revocation and rotation.
    replica: Replica,
    cache: Arc<Mutex<SessionCache>>,
}

/// Sessions by access-token hash: the user and when the access token
/// expires.
///
/// A cache miss reads the data center and then fills the cache. A revoke or
/// a rotation can commit between that read and the fill, and its `forget`
/// would then run before the fill: the stale session would be cached and
/// answer until it expires. So every `forget` counts, and a fill is dropped
/// when any forget happened since its read began.
struct SessionCache {
    entries: BoundedMap<TokenHash, (Id, i64)>,
    forgets: u64,
}

/// A session read from the data center, with the count of forgets when
/// the read began.
struct Loaded {
    access_hash: TokenHash,
    user: Id,
    expires_at_ms: i64,
    forgets: u64,
}

impl Sessions {
    pub fn new(dc: DataCenter, replica: Replica) -> Self {
        Self::with_capacity(dc, replica, MAX_CACHED_SESSIONS)
    }

    pub fn with_capacity(dc: DataCenter, replica: Replica, cached: usize) -> Self {
        Self {
            dc,
            replica,
            cache: Arc::new(Mutex::new(SessionCache {
                entries: BoundedMap::new(cached),
                forgets: 0,
            })),
        }
    }

    /// Caches a session this process has just written.
    fn remember(&self, access_hash: TokenHash, user: Id, expires_at_ms: i64) {
        self.cache
            .lock()
            .expect("session cache")
            .entries
            .insert(access_hash, (user, expires_at_ms));
    }

    /// Drops every cached session: notices of revocations may have been
    /// missed, so each is read from the data center again.
    pub fn forget_all(&self) {
        let mut cache = self.cache.lock().expect("session cache");
        cache.forgets += 1;
        cache.entries.clear();
    }

    /// Drops one cached session (revoked or rotated here or elsewhere).
    pub fn forget(&self, access_hash: &TokenHash) {
        let mut cache = self.cache.lock().expect("session cache");
        cache.forgets += 1;
        cache.entries.remove(access_hash);
    }

    /// The cached session of this access token, now the most recently used.
    fn cached_session(&self, access_hash: &TokenHash) -> Option<(Id, i64)> {
        self.cache
            .lock()
            .expect("session cache")
            .entries
            .get_recent(access_hash)
            .cloned()
    }

    /// Reads the session of this access token from the data center.
    async fn load(&self, access_hash: TokenHash) -> Result<Loaded, Error> {
        let forgets = self.cache.lock().expect("session cache").forgets;
        let (user, expires_at_ms) = self
            .dc
            .read(move |tx| tx.session_by_access(&access_hash))
            .await?
            .ok_or_else(|| Error::Unauthenticated("unknown session; log in again".into()))?;
        Ok(Loaded {
            access_hash,
            user: Id::parse("user", &user)?,
            expires_at_ms,
            forgets,
        })
    }

    /// Caches a session read from the data center, unless a session was
    /// forgotten since the read began (it may be this one).
    fn fill(&self, loaded: &Loaded) {
        let mut cache = self.cache.lock().expect("session cache");
        if cache.forgets == loaded.forgets {
            cache.entries.insert(
                loaded.access_hash,
                (loaded.user.clone(), loaded.expires_at_ms),
            );
        }
    }

    /// Issues a session to `user`. Also deletes a bounded number of
    /// sessions that can no longer be used.
    pub async fn issue(&self, user: &Id, now_ms: i64) -> Result<Issued, Error> {
        let (issued, tokens) = Issued::new(user.clone(), now_ms);
        let owner = user.to_string();
        self.dc
            .write(move |tx| {
                sweep(tx, now_ms)?;
                tx.insert_session(&owner, &tokens)
            })
            .await?;
        self.remember(tokens.access_hash, user.clone(), tokens.expires_at_ms);
        Ok(issued)
    }

    /// The user whose current access token this is.
    pub async fn authenticate(&self, access: &str, now_ms: i64) -> Result<Id, Error> {
        let access_hash = hash(access);
        let (user, expires_at_ms) = match self.cached_session(&access_hash) {
            Some(found) => found,
            None => {
                let loaded = self.load(access_hash).await?;
                self.fill(&loaded);
                (loaded.user, loaded.expires_at_ms)
            }
        };
        if expires_at_ms <= now_ms {
            self.forget(&access_hash);
            return Err(Error::Unauthenticated(
                "session expired; refresh it or log in again".into(),
            ));
        }
        Ok(user)
    }

    /// Trades a current refresh token for new tokens; the old access and
    /// refresh tokens stop working.
    pub async fn refresh(&self, refresh: &str, now_ms: i64) -> Result<Issued, Error> {
        let spent =
            || Error::Unauthenticated("unknown or expired refresh token; log in again".into());
        let refresh_hash = hash(refresh);
        // A read first, so that unknown tokens never occupy the writer.
        let user = self
            .dc
            .read(move |tx| tx.refreshable(&refresh_hash, now_ms))
            .await?
            .ok_or_else(spent)?;
        let (issued, tokens) = Issued::new(Id::parse("user", &user)?, now_ms);
        let replica = self.replica.clone();
        let rotated = self
            .dc
            .write(move |tx| {
                sweep(tx, now_ms)?;
                let rotated = tx.rotate_session(&refresh_hash, &tokens, now_ms)?;
                if let Some(r) = &rotated {
                    let access_hash = r.old_access_hash;
                    replica.announce(tx, &Notice::Revoked { access_hash })?;
                }
                Ok(rotated)
            })
            .await?
            // Refreshed or revoked since the read.
            .ok_or_else(spent)?;
        self.forget(&rotated.old_access_hash);
        self.remember(
            tokens.access_hash,
            issued.user.clone(),
            tokens.expires_at_ms,
        );
        Ok(issued)
    }

    /// Revokes the session of an access token or a refresh token, expired
    /// or not; whether there was one.
    pub async fn revoke(&self, token: SessionToken<'_>) -> Result<bool, Error> {
        let (by_access, token_hash) = match token {
            SessionToken::Access(token) => (true, hash(token)),
            SessionToken::Refresh(token) => (false, hash(token)),
        };
        if by_access {
            self.forget(&token_hash);
        }
        // A read first, so that unknown tokens never occupy the writer.
        let exists = self
            .dc
            .read(move |tx| {
                Ok(if by_access {
                    tx.session_by_access(&token_hash)?.is_some()
                } else {
                    tx.refreshable(&token_hash, i64::MIN)?.is_some()
                })
            })
            .await?;
        if !exists {
            return Ok(false);
        }
        let replica = self.replica.clone();
        let revoked = self
            .dc
            .write(move |tx| {
                let revoked = if by_access {
                    tx.revoke_by_access(&token_hash)?
                } else {
                    tx.revoke_by_refresh(&token_hash)?
                };
                if let Some(access_hash) = revoked {
                    replica.announce(tx, &Notice::Revoked { access_hash })?;
                }
                Ok(revoked)
            })
            .await?;
        if let Some(access_hash) = &revoked {
            self.forget(access_hash);
        }
        Ok(revoked.is_some())
    }

    #[cfg(test)]
    fn cached(&self) -> usize {
        self.cache.lock().expect("session cache").entries.len()
    }

    #[cfg(test)]
    fn is_cached(&self, access: &str) -> bool {
        let cache = self.cache.lock().expect("session cache");
        cache.entries.get(&hash(access)).is_some()
    }
}

fn sweep(tx: &mut dyn Tx, now_ms: i64) -> Result<(), Error> {
    let deleted = tx.delete_expired_sessions(now_ms, SESSION_SWEEP_BATCH)?;
    if deleted > 0 {
        tracing::debug!(deleted, "expired sessions deleted");
    }
    Ok(())
}

/// A token that names a session.
#[derive(Clone, Copy, Debug)]
pub(super) enum SessionToken<'a> {
    /// The bearer `session` token.
    Access(&'a str),
    Refresh(&'a str),
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60 * 1000;

    fn open() -> (tempfile::TempDir, DataCenter, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data-center.sqlite");
        let dc = DataCenter::open(&path).unwrap();
        (dir, dc, path)
    }

    fn ann() -> Id {
        Id::parse("user", "ann@eu").unwrap()
    }

    fn unauthenticated(result: Result<impl std::fmt::Debug, Error>) -> String {
        match result {
            Err(Error::Unauthenticated(message)) => message,
            other => panic!("expected UNAUTHENTICATED, got {other:?}"),
        }
    }

    /// Every byte the data center has written: the database and its WAL.
    fn on_disk(path: &std::path::Path) -> Vec<u8> {
        let mut bytes = std::fs::read(path).unwrap();
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        bytes.extend(std::fs::read(wal).unwrap_or_default());
        bytes
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[tokio::test]
    async fn tokens_are_stored_only_as_their_sha256() {
        let (_dir, dc, path) = open();
        let sessions = Sessions::new(dc.clone(), Replica::default());
        let issued = sessions.issue(&ann(), 0).await.unwrap();
        let renewed = sessions.refresh(&issued.refresh, 1).await.unwrap();

        let stored: Vec<(Vec<u8>, Vec<u8>)> = dc
            .read_sqlite(|conn| {
                let mut statement =
                    conn.prepare("SELECT access_hash, refresh_hash FROM sessions")?;
                let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
            .unwrap();
        assert_eq!(
            stored,
            [(
                hash(&renewed.access).to_vec(),
                hash(&renewed.refresh).to_vec()
            )]
        );
        assert_eq!(
            hex(&hash("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "SHA-256"
        );
        // Read while open: whatever was written is in the file or its WAL.
        let bytes = on_disk(&path);
        for token in [
            &issued.access,
            &issued.refresh,
            &renewed.access,
            &renewed.refresh,
        ] {
            assert!(
                !contains(&bytes, token.as_bytes()),
                "plaintext token on disk"
            );
            let raw: Vec<u8> = (0..token.len() / 2)
                .map(|i| u8::from_str_radix(&token[2 * i..2 * i + 2], 16).unwrap())
                .collect();
            assert!(!contains(&bytes, &raw), "raw token bytes on disk");
        }
        assert!(
            contains(&bytes, &hash(&renewed.access)),
            "the hash is what is stored"
        );
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[tokio::test]
    async fn an_access_token_expires_and_a_refresh_renews_the_session() {
        let (_dir, dc, _path) = open();
        let sessions = Sessions::new(dc, Replica::default());
        let issued = sessions.issue(&ann(), 0).await.unwrap();
        assert_eq!(issued.expires_at_ms, ACCESS_TOKEN_TTL_MS);
        assert_eq!(issued.refresh_expires_at_ms, REFRESH_TOKEN_TTL_MS);
        assert_eq!(issued.expires_at_ms, 15 * MINUTE, "15 minutes by default");
        assert_eq!(
            sessions
                .authenticate(&issued.access, 14 * MINUTE)
                .await
                .unwrap(),
            ann()
        );
        let expired = unauthenticated(sessions.authenticate(&issued.access, 15 * MINUTE).await);
        assert_eq!(expired, "session expired; refresh it or log in again");
        assert_eq!(sessions.cached(), 0, "an expired session leaves the cache");

        let renewed = sessions
            .refresh(&issued.refresh, 20 * MINUTE)
            .await
            .unwrap();
        assert_eq!(renewed.user, ann());
        assert_eq!(renewed.expires_at_ms, 35 * MINUTE);
        assert_eq!(
            sessions
                .authenticate(&renewed.access, 30 * MINUTE)
                .await
                .unwrap(),
            ann()
        );
        let message = unauthenticated(sessions.refresh(&issued.refresh, 21 * MINUTE).await);
        assert_eq!(
            message, "unknown or expired refresh token; log in again",
            "spent"
        );
        unauthenticated(sessions.authenticate(&issued.access, 0).await);

        let late = renewed.refresh_expires_at_ms;
        unauthenticated(sessions.refresh(&renewed.refresh, late).await);
    }

    #[tokio::test]
    async fn logout_revokes_both_tokens_at_once() {
        let (_dir, dc, _path) = open();
        let sessions = Sessions::new(dc, Replica::default());
        let first = sessions.issue(&ann(), 0).await.unwrap();
        let second = sessions.issue(&ann(), 0).await.unwrap();
        sessions.authenticate(&first.access, 1).await.unwrap();

        assert!(
            sessions
                .revoke(SessionToken::Access(&first.access))
                .await
                .unwrap()
        );
        unauthenticated(sessions.authenticate(&first.access, 1).await);
        unauthenticated(sessions.refresh(&first.refresh, 1).await);
        assert!(
            !sessions
                .revoke(SessionToken::Access(&first.access))
                .await
                .unwrap()
        );

        assert!(
            sessions
                .revoke(SessionToken::Refresh(&second.refresh))
                .await
                .unwrap()
        );
        let message = unauthenticated(sessions.authenticate(&second.access, 1).await);
        assert_eq!(message, "unknown session; log in again");
        assert!(
            !sessions
                .revoke(SessionToken::Refresh("nonsense"))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn the_cache_is_bounded_and_evicted_sessions_still_work() {
        let (_dir, dc, _path) = open();
        let sessions = Sessions::with_capacity(dc, Replica::default(), 3);
        let mut issued = Vec::new();
        for _ in 0..10 {
            issued.push(sessions.issue(&ann(), 0).await.unwrap());
            assert!(sessions.cached() <= 3);
        }
        for session in &issued {
            assert_eq!(
                sessions.authenticate(&session.access, 1).await.unwrap(),
                ann()
            );
        }
        assert_eq!(sessions.cached(), 3);
    }

    #[tokio::test]
    async fn a_session_in_use_stays_cached_while_new_logins_churn() {
        let (_dir, dc, _path) = open();
        let sessions = Sessions::with_capacity(dc, Replica::default(), 3);
        let busy = sessions.issue(&ann(), 0).await.unwrap();
        for _ in 0..10 {
            sessions.authenticate(&busy.access, 1).await.unwrap();
            sessions.issue(&ann(), 0).await.unwrap();
            assert!(
                sessions.is_cached(&busy.access),
                "a new login evicts a session used longer ago, not the one just used"
            );
        }
        assert_eq!(sessions.cached(), 3);
    }

    #[tokio::test]
    async fn a_revoke_during_a_cache_miss_is_not_undone_by_the_fill() {
        let (_dir, dc, _path) = open();
        let sessions = Sessions::with_capacity(dc, Replica::default(), 1);
        let first = sessions.issue(&ann(), 0).await.unwrap();
        sessions.issue(&ann(), 0).await.unwrap(); // evicts the first
        assert!(!sessions.is_cached(&first.access));

        // A cache miss reads the session; a logout commits before the fill.
        let loaded = sessions.load(hash(&first.access)).await.unwrap();
        assert!(
            sessions
                .revoke(SessionToken::Access(&first.access))
                .await
                .unwrap()
        );
        sessions.fill(&loaded);
        assert!(
            !sessions.is_cached(&first.access),
            "the stale read is not cached"
        );
        let message = unauthenticated(sessions.authenticate(&first.access, 1).await);
        assert_eq!(message, "unknown session; log in again");

        // With no forget in between, the fill caches what it read.
        let later = sessions.issue(&ann(), 0).await.unwrap();
        sessions.issue(&ann(), 0).await.unwrap(); // evicts it
        let loaded = sessions.load(hash(&later.access)).await.unwrap();
        sessions.fill(&loaded);
        assert!(sessions.is_cached(&later.access));
    }

    #[tokio::test]
    async fn logging_in_sweeps_sessions_that_can_no_longer_be_refreshed() {
        let (_dir, dc, _path) = open();
        let sessions = Sessions::new(dc.clone(), Replica::default());
        for _ in 0..SESSION_SWEEP_BATCH + 10 {
            sessions.issue(&ann(), 0).await.unwrap();
        }
        let count = || {
            // Every session, whatever its expiry.
            dc.read(|tx| tx.sessions_in_force(i64::MIN))
        };
        let later = REFRESH_TOKEN_TTL_MS;
        sessions.issue(&ann(), later).await.unwrap();
        assert_eq!(
            count().await.unwrap(),
            11,
            "one batch swept, and the new one"
        );
        sessions.issue(&ann(), later).await.unwrap();
        assert_eq!(count().await.unwrap(), 2);
    }
}
