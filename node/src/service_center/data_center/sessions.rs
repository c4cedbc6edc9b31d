//! The sessions this region issued (to local and roaming users). A session
//! is stored by the SHA-256 hashes of its access and refresh tokens: the
//! tokens themselves are never written, so a copy of the database does not
//! let anyone use them.

use rusqlite::{Connection, OptionalExtension, params};

use crate::Error;

/// The SHA-256 of a token.
pub type TokenHash = [u8; 32];

/// A session's current tokens (by hash) and their expiries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tokens {
    pub access_hash: TokenHash,
    pub refresh_hash: TokenHash,
    pub expires_at_ms: i64,
    pub refresh_expires_at_ms: i64,
}

pub fn insert(conn: &Connection, user: &str, tokens: &Tokens) -> Result<(), Error> {
    conn.prepare_cached(
        "INSERT INTO sessions
             (access_hash, refresh_hash, user_id, expires_at_ms, refresh_expires_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        tokens.access_hash,
        tokens.refresh_hash,
        user,
        tokens.expires_at_ms,
        tokens.refresh_expires_at_ms
    ])?;
    Ok(())
}

/// The user and the access token's expiry of the session with this access
/// token, expired or not.
pub fn by_access(
    conn: &Connection,
    access_hash: &TokenHash,
) -> Result<Option<(String, i64)>, Error> {
    Ok(conn
        .prepare_cached("SELECT user_id, expires_at_ms FROM sessions WHERE access_hash = ?1")?
        .query_row([access_hash], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

/// The user of the session whose refresh token this is, if it is current.
pub fn refreshable(
    conn: &Connection,
    refresh_hash: &TokenHash,
    now_ms: i64,
) -> Result<Option<String>, Error> {
    Ok(conn
        .prepare_cached(
            "SELECT user_id FROM sessions
             WHERE refresh_hash = ?1 AND refresh_expires_at_ms > ?2",
        )?
        .query_row(params![refresh_hash, now_ms], |r| r.get(0))
        .optional()?)
}

/// A session whose tokens were replaced.
#[derive(Debug, PartialEq, Eq)]
pub struct Rotated {
    pub user: String,
    /// The access token that stopped working.
    pub old_access_hash: TokenHash,
}

/// Gives the session whose current refresh token is `refresh_hash` the new
/// `tokens`; the old ones stop working. `None` when there is no such
/// current session (expired, revoked, or already refreshed).
pub fn rotate(
    conn: &Connection,
    refresh_hash: &TokenHash,
    tokens: &Tokens,
    now_ms: i64,
) -> Result<Option<Rotated>, Error> {
    let found: Option<(i64, String, TokenHash)> = conn
        .prepare_cached(
            "SELECT id, user_id, access_hash FROM sessions
             WHERE refresh_hash = ?1 AND refresh_expires_at_ms > ?2",
        )?
        .query_row(params![refresh_hash, now_ms], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let Some((id, user, old_access_hash)) = found else {
        return Ok(None);
    };
    conn.prepare_cached(
        "UPDATE sessions SET access_hash = ?2, refresh_hash = ?3, expires_at_ms = ?4,
             refresh_expires_at_ms = ?5
         WHERE id = ?1",
    )?
    .execute(params![
        id,
        tokens.access_hash,
        tokens.refresh_hash,
        tokens.expires_at_ms,
        tokens.refresh_expires_at_ms
    ])?;
    Ok(Some(Rotated {
        user,
        old_access_hash,
    }))
}

/// Deletes the session with this access token; its access hash if it
/// existed.
pub fn revoke_by_access(
    conn: &Connection,
    access_hash: &TokenHash,
) -> Result<Option<TokenHash>, Error> {
    Ok(conn
        .prepare_cached("DELETE FROM sessions WHERE access_hash = ?1 RETURNING access_hash")?
        .query_row([access_hash], |r| r.get(0))
        .optional()?)
}

/// Deletes the session with this refresh token; its access hash if it
/// existed.
pub fn revoke_by_refresh(
    conn: &Connection,
    refresh_hash: &TokenHash,
) -> Result<Option<TokenHash>, Error> {
    Ok(conn
        .prepare_cached("DELETE FROM sessions WHERE refresh_hash = ?1 RETURNING access_hash")?
        .query_row([refresh_hash], |r| r.get(0))
        .optional()?)
}

/// Deletes at most `limit` sessions that can no longer be used or
/// refreshed; how many it deleted.
pub fn delete_expired(conn: &Connection, now_ms: i64, limit: usize) -> Result<usize, Error> {
    Ok(conn
        .prepare_cached(
            "DELETE FROM sessions WHERE id IN
                 (SELECT id FROM sessions WHERE refresh_expires_at_ms <= ?1 LIMIT ?2)",
        )?
        .execute(params![now_ms, limit as i64])?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service_center::data_center::schema;

    fn db() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        schema::migrate(&mut conn).unwrap();
        conn
    }

    fn tokens(n: u8, expires_at_ms: i64, refresh_expires_at_ms: i64) -> Tokens {
        Tokens {
            access_hash: [n; 32],
            refresh_hash: [n + 100; 32],
            expires_at_ms,
            refresh_expires_at_ms,
        }
    }

    fn count(conn: &Connection) -> i64 {
        conn.query_row("SELECT count(*) FROM sessions", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_rotated_session_answers_only_to_its_new_tokens() {
        let conn = db();
        insert(&conn, "ann@eu", &tokens(1, 10, 100)).unwrap();
        assert_eq!(
            by_access(&conn, &[1; 32]).unwrap(),
            Some(("ann@eu".into(), 10))
        );
        assert_eq!(
            refreshable(&conn, &[101; 32], 99).unwrap().as_deref(),
            Some("ann@eu")
        );
        assert_eq!(
            refreshable(&conn, &[101; 32], 100).unwrap(),
            None,
            "expired"
        );

        let rotated = rotate(&conn, &[101; 32], &tokens(2, 20, 200), 50).unwrap();
        assert_eq!(
            rotated,
            Some(Rotated {
                user: "ann@eu".into(),
                old_access_hash: [1; 32]
            })
        );
        assert_eq!(by_access(&conn, &[1; 32]).unwrap(), None);
        assert_eq!(
            by_access(&conn, &[2; 32]).unwrap(),
            Some(("ann@eu".into(), 20))
        );
        assert_eq!(
            rotate(&conn, &[101; 32], &tokens(3, 30, 300), 50).unwrap(),
            None,
            "an old refresh token is spent"
        );
        assert_eq!(count(&conn), 1);
    }

    #[test]
    fn revoking_by_either_token_deletes_the_session() {
        let conn = db();
        insert(&conn, "ann@eu", &tokens(1, 10, 100)).unwrap();
        insert(&conn, "bob@us", &tokens(2, 10, 100)).unwrap();
        assert_eq!(revoke_by_access(&conn, &[1; 32]).unwrap(), Some([1; 32]));
        assert_eq!(revoke_by_access(&conn, &[1; 32]).unwrap(), None);
        assert_eq!(revoke_by_refresh(&conn, &[102; 32]).unwrap(), Some([2; 32]));
        assert_eq!(count(&conn), 0);
    }

    #[test]
    fn the_sweep_deletes_only_sessions_past_refresh_and_a_bounded_number() {
        let conn = db();
        for n in 0..10 {
            insert(&conn, "ann@eu", &tokens(n, 5, 50)).unwrap();
        }
        insert(&conn, "bob@us", &tokens(50, 5, 500)).unwrap();
        assert_eq!(delete_expired(&conn, 49, 100).unwrap(), 0);
        assert_eq!(delete_expired(&conn, 50, 4).unwrap(), 4);
        assert_eq!(delete_expired(&conn, 50, 100).unwrap(), 6);
        assert_eq!(count(&conn), 1, "bob's session can still be refreshed");
    }
}
