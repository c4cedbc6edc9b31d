//! Groups homed in this region: their data and their members.

use rusqlite::{Connection, OptionalExtension, params};

use crate::Error;
use crate::proto::client_api::{GroupInfo, GroupSettings, Member, Role};

pub fn create(
    conn: &Connection,
    id: &str,
    title: &str,
    announcement: &str,
    owner: &str,
    now_ms: i64,
) -> Result<(), Error> {
    let inserted = conn.execute(
        "INSERT OR IGNORE INTO groups (id, title, announcement, open, max_members, last_seq, created_at_ms)
         VALUES (?1, ?2, ?3, 1, ?4, 0, ?5)",
        params![id, title, announcement, crate::limits::DEFAULT_GROUP_MEMBERS, now_ms],
    )?;
    if inserted == 0 {
        return Err(already_exists(id));
    }
    conn.execute(
        "INSERT INTO members (group_id, user_id, role) VALUES (?1, ?2, ?3)",
        params![id, owner, Role::Owner as i32],
    )?;
    Ok(())
}

/// The group's data with its members, or `NOT_FOUND`.
pub fn info(conn: &Connection, id: &str) -> Result<GroupInfo, Error> {
    let mut info = conn
        .prepare_cached(
            "SELECT title, announcement, open, max_members, last_seq FROM groups WHERE id = ?1",
        )?
        .query_row([id], |r| {
            Ok(GroupInfo {
                id: id.to_owned(),
                title: r.get(0)?,
                announcement: r.get(1)?,
                settings: Some(GroupSettings {
                    open: r.get(2)?,
                    max_members: r.get(3)?,
                }),
                members: Vec::new(),
                last_seq: r.get(4)?,
                members_hidden: false,
            })
        })
        .optional()?
        .ok_or_else(|| not_found(id))?;
    let mut stmt = conn
        .prepare_cached("SELECT user_id, role FROM members WHERE group_id = ?1 ORDER BY user_id")?;
    info.members = stmt
        .query_map([id], |r| {
            Ok(Member {
                user: r.get(0)?,
                role: r.get(1)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(info)
}

pub fn not_found(id: &str) -> Error {
    Error::NotFound(format!("group {id} does not exist"))
}

pub fn already_exists(id: &str) -> Error {
    Error::AlreadyExists(format!("group {id} already exists"))
}

/// Lowering max_members below the members the group has would leave it
/// over its own limit; refuse, and let the owner remove members first.
/// Shared by both backends, so they refuse alike.
pub fn check_max_members(group: &str, settings: &GroupSettings, count: u32) -> Result<(), Error> {
    if settings.max_members < count {
        return Err(Error::FailedPrecondition(format!(
            "settings.max_members {} is below the {count} members group {group} has",
            settings.max_members
        )));
    }
    Ok(())
}

/// Whether a non-member may join a group with these settings and `count`
/// members.
pub fn check_join(group: &str, open: bool, max_members: u32, count: u32) -> Result<(), Error> {
    if !open {
        return Err(Error::PermissionDenied(format!(
            "group {group} is closed to new members"
        )));
    }
    if count >= max_members {
        return Err(Error::ResourceExhausted(format!(
            "group {group} is full ({max_members} members)"
        )));
    }
    Ok(())
}

/// Whether `user`, of `role` in a group of `members` members, may leave.
pub fn check_leave(
    group: &str,
    user: &str,
    role: Option<Role>,
    members: usize,
) -> Result<(), Error> {
    match role {
        None => Err(Error::NotFound(format!(
            "{user} is not a member of group {group}"
        ))),
        Some(Role::Owner) if members > 1 => Err(Error::FailedPrecondition(format!(
            "the owner cannot leave group {group} while it has other members"
        ))),
        Some(_) => Ok(()),
    }
}

/// The role of `user` in the group; `None` when not a member.
pub fn role(conn: &Connection, group: &str, user: &str) -> Result<Option<Role>, Error> {
    let role: Option<i32> = conn
        .prepare_cached("SELECT role FROM members WHERE group_id = ?1 AND user_id = ?2")?
        .query_row([group, user], |r| r.get(0))
        .optional()?;
    Ok(role.map(|r| Role::try_from(r).unwrap_or(Role::Member)))
}

pub fn exists(conn: &Connection, group: &str) -> Result<bool, Error> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM groups WHERE id = ?1")?
        .query_row([group], |_| Ok(()))
        .optional()?
        .is_some())
}

pub fn update(
    conn: &Connection,
    group: &str,
    title: Option<&str>,
    announcement: Option<&str>,
    settings: Option<&GroupSettings>,
) -> Result<(), Error> {
    if let Some(settings) = settings {
        let count: u32 = conn
            .prepare_cached("SELECT count(*) FROM members WHERE group_id = ?1")?
            .query_row([group], |r| r.get(0))?;
        check_max_members(group, settings, count)?;
    }
    conn.execute(
        "UPDATE groups SET title = coalesce(?2, title), announcement = coalesce(?3, announcement),
                open = coalesce(?4, open), max_members = coalesce(?5, max_members)
         WHERE id = ?1",
        params![
            group,
            title,
            announcement,
            settings.map(|s| s.open),
            settings.map(|s| s.max_members)
        ],
    )?;
    Ok(())
}

/// Adds a member; joining twice is a no-op. Refuses a full or closed group.
pub fn join(conn: &Connection, group: &str, user: &str) -> Result<(), Error> {
    if role(conn, group, user)?.is_some() {
        return Ok(());
    }
    let (open, max_members, count): (bool, u32, u32) = conn
        .query_row(
            "SELECT open, max_members, (SELECT count(*) FROM members WHERE group_id = ?1)
         FROM groups WHERE id = ?1",
            [group],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?
        .ok_or_else(|| not_found(group))?;
    check_join(group, open, max_members, count)?;
    conn.execute(
        "INSERT INTO members (group_id, user_id, role) VALUES (?1, ?2, ?3)",
        params![group, user, Role::Member as i32],
    )?;
    Ok(())
}

/// Removes a member. The owner cannot leave while others remain.
pub fn leave(conn: &Connection, group: &str, user: &str) -> Result<(), Error> {
    let role = role(conn, group, user)?;
    let members = match role {
        Some(Role::Owner) => member_ids(conn, group)?.len(),
        _ => 0,
    };
    check_leave(group, user, role, members)?;
    conn.execute(
        "DELETE FROM members WHERE group_id = ?1 AND user_id = ?2",
        params![group, user],
    )?;
    Ok(())
}

pub fn member_ids(conn: &Connection, group: &str) -> Result<Vec<String>, Error> {
    let mut stmt = conn.prepare_cached("SELECT user_id FROM members WHERE group_id = ?1")?;
    let ids = stmt
        .query_map([group], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(ids)
}

/// Takes the group's next sequence number.
pub fn next_seq(conn: &Connection, group: &str) -> Result<u64, Error> {
    conn.prepare_cached(
        "UPDATE groups SET last_seq = last_seq + 1 WHERE id = ?1 RETURNING last_seq",
    )?
    .query_row([group], |r| r.get(0))
    .optional()?
    .ok_or_else(|| not_found(group))
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

    #[test]
    fn the_creator_owns_the_group_and_members_come_and_go() {
        let conn = db();
        create(&conn, "g@eu", "G", "hello", "ann@eu", 1).unwrap();
        assert!(matches!(
            create(&conn, "g@eu", "G", "", "bob@eu", 1),
            Err(Error::AlreadyExists(_))
        ));
        join(&conn, "g@eu", "bob@us").unwrap();
        join(&conn, "g@eu", "bob@us").unwrap();
        let info = info(&conn, "g@eu").unwrap();
        assert_eq!(info.members.len(), 2);
        assert_eq!(role(&conn, "g@eu", "ann@eu").unwrap(), Some(Role::Owner));
        assert!(matches!(
            leave(&conn, "g@eu", "ann@eu"),
            Err(Error::FailedPrecondition(_))
        ));
        leave(&conn, "g@eu", "bob@us").unwrap();
        assert!(matches!(
            leave(&conn, "g@eu", "bob@us"),
            Err(Error::NotFound(_))
        ));
    }

    #[test]
    fn full_and_closed_groups_refuse_joins() {
        let conn = db();
        create(&conn, "g@eu", "G", "", "ann@eu", 1).unwrap();
        let settings = GroupSettings {
            open: true,
            max_members: 2,
        };
        update(&conn, "g@eu", None, None, Some(&settings)).unwrap();
        join(&conn, "g@eu", "b@eu").unwrap();
        assert!(matches!(
            join(&conn, "g@eu", "c@eu"),
            Err(Error::ResourceExhausted(_))
        ));
        let closed = GroupSettings {
            open: false,
            max_members: 10,
        };
        update(&conn, "g@eu", Some("New"), None, Some(&closed)).unwrap();
        // Two members: max_members cannot go below 2, and nothing changes.
        let below = GroupSettings {
            open: true,
            max_members: 1,
        };
        match update(&conn, "g@eu", Some("Newer"), None, Some(&below)) {
            Err(Error::FailedPrecondition(message)) => {
                assert!(message.contains("max_members"), "{message}");
                assert!(message.contains("2 members"), "{message}");
            }
            other => panic!("expected FAILED_PRECONDITION, got {other:?}"),
        }
        let exact = GroupSettings {
            open: false,
            max_members: 2,
        };
        update(&conn, "g@eu", None, None, Some(&exact)).unwrap();
        update(&conn, "g@eu", None, None, Some(&closed)).unwrap();
        assert!(matches!(
            join(&conn, "g@eu", "c@eu"),
            Err(Error::PermissionDenied(_))
        ));
        assert_eq!(info(&conn, "g@eu").unwrap().title, "New");
        assert!(matches!(
            join(&conn, "x@eu", "c@eu"),
            Err(Error::NotFound(_))
        ));
    }

    #[test]
    fn sequence_numbers_have_no_gaps() {
        let conn = db();
        create(&conn, "g@eu", "G", "", "ann@eu", 1).unwrap();
        let seqs: Vec<u64> = (0..5).map(|_| next_seq(&conn, "g@eu").unwrap()).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
        assert!(matches!(next_seq(&conn, "x@eu"), Err(Error::NotFound(_))));
    }
}
