//! User accounts of this home region and their home-location register. The
//! sessions this region issued are in [`super::sessions`].

use rusqlite::{Connection, OptionalExtension, params};

use crate::Error;

pub fn insert_user(
    conn: &Connection,
    id: &str,
    password_hash: &str,
    now_ms: i64,
) -> Result<(), Error> {
    let home = home_of(id);
    let inserted = conn.execute(
        "INSERT OR IGNORE INTO users (id, password_hash, attached_region, created_at_ms)
         VALUES (?1, ?2, ?3, ?4)",
        params![id, password_hash, home, now_ms],
    )?;
    if inserted == 0 {
        return Err(already_exists(id));
    }
    Ok(())
}

pub fn already_exists(id: &str) -> Error {
    Error::AlreadyExists(format!("user {id} already exists"))
}

/// The region a new user's id names: their home, where they start attached.
pub fn home_of(id: &str) -> &str {
    id.rsplit('@').next().unwrap_or_default()
}

pub fn password_hash(conn: &Connection, id: &str) -> Result<Option<String>, Error> {
    Ok(conn
        .prepare_cached("SELECT password_hash FROM users WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?)
}

/// Records in the home-location register that `id` is attached at `region`.
pub fn attach(conn: &Connection, id: &str, region: &str) -> Result<(), Error> {
    conn.execute(
        "UPDATE users SET attached_region = ?2 WHERE id = ?1",
        params![id, region],
    )?;
    Ok(())
}

/// Where a user of this home is attached; `None` for an unknown user.
pub fn attached_region(conn: &Connection, id: &str) -> Result<Option<String>, Error> {
    Ok(conn
        .prepare_cached("SELECT attached_region FROM users WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?)
}

/// Where those of the users `ids` that are users of this home are
/// attached: one statement for them all. The ids go in as one JSON array,
/// so that the statement is prepared once whatever their number.
pub fn attached_regions<'a>(
    conn: &Connection,
    ids: impl Iterator<Item = &'a String>,
) -> Result<Vec<(String, String)>, Error> {
    let ids: Vec<&String> = ids.collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids = serde_json::to_string(&ids)
        .map_err(|e| Error::Internal(format!("data center: user ids as JSON: {e}")))?;
    let mut stmt = conn.prepare_cached(
        "SELECT u.id, u.attached_region FROM json_each(?1) AS j
         JOIN users AS u ON u.id = j.value",
    )?;
    let found = stmt
        .query_map([ids], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    Ok(found)
}

/// Keeps the assertion (encoded) of `id`'s home that `id` logged in here,
/// replacing an older one, and forgets up to 256 that have expired.
pub fn put_assertion(
    conn: &Connection,
    id: &str,
    assertion: &[u8],
    expires_at_ms: i64,
    now_ms: i64,
) -> Result<(), Error> {
    conn.prepare_cached(
        "INSERT INTO assertions (user_id, assertion, expires_at_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (user_id) DO UPDATE SET assertion = ?2, expires_at_ms = ?3",
    )?
    .execute(params![id, assertion, expires_at_ms])?;
    conn.prepare_cached(
        "DELETE FROM assertions WHERE user_id IN
         (SELECT user_id FROM assertions WHERE expires_at_ms <= ?1 LIMIT 256)",
    )?
    .execute([now_ms])?;
    Ok(())
}

/// The assertion (encoded) kept for `id`, if any.
pub fn assertion(conn: &Connection, id: &str) -> Result<Option<Vec<u8>>, Error> {
    Ok(conn
        .prepare_cached("SELECT assertion FROM assertions WHERE user_id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service_center::data_center::schema;

    #[test]
    fn users_are_unique_and_attach_to_where_they_log_in() {
        let mut conn = Connection::open_in_memory().unwrap();
        schema::migrate(&mut conn).unwrap();
        insert_user(&conn, "ann@eu", "h", 1).unwrap();
        assert!(matches!(
            insert_user(&conn, "ann@eu", "h2", 2),
            Err(Error::AlreadyExists(_))
        ));
        assert_eq!(
            password_hash(&conn, "ann@eu").unwrap().as_deref(),
            Some("h")
        );
        assert_eq!(
            attached_region(&conn, "ann@eu").unwrap().as_deref(),
            Some("eu")
        );
        attach(&conn, "ann@eu", "us").unwrap();
        assert_eq!(
            attached_region(&conn, "ann@eu").unwrap().as_deref(),
            Some("us")
        );
        assert_eq!(attached_region(&conn, "bob@eu").unwrap(), None);
    }
}
