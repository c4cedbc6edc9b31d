//! The data center's conformance suite: what every backend of
//! [`Tx`] must do, written once over `&mut dyn Tx` and run against SQLite
//! (`tests/tests/data_center.rs`) and PostgreSQL (`tests/tests/postgres.rs`).
//! Each check gets an empty, migrated database and runs its steps in
//! transactions of the backend under test, so it also checks what a commit
//! keeps and a failed transaction leaves behind.

use std::any::Any;

use meridian_node::Error;
use meridian_node::proto::client_api::{Delivery, GroupSettings, Role, Sequenced};
use meridian_node::proto::peer_api::{Failure, Item, Submission, Verdict, item::Kind, verdict};
use meridian_node::service_center::data_center::Tx;
use meridian_node::service_center::data_center::tx::{Rotated, Tokens};

/// What a check's transaction returns, boxed so that a backend runs any.
pub type Output = Box<dyn Any + Send>;
/// One transaction's work.
pub type Job = Box<dyn FnOnce(&mut dyn Tx) -> Result<Output, Error> + Send>;

/// A backend under test, on an empty, migrated database.
pub trait Backend {
    /// Runs `job` in one transaction: committed when it returns `Ok`,
    /// rolled back otherwise.
    fn run(&self, job: Job) -> Result<Output, Error>;
}

/// Runs `f` in one transaction of `backend`.
pub fn tx<T, F>(backend: &dyn Backend, f: F) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce(&mut dyn Tx) -> Result<T, Error> + Send + 'static,
{
    let output = backend.run(Box::new(move |tx| f(tx).map(|v| Box::new(v) as Output)))?;
    Ok(*output.downcast::<T>().expect("the job's own type"))
}

/// A check of the suite, on a fresh database.
pub type Check = fn(&dyn Backend);

/// Every check, by name: run each on a fresh database.
pub const CHECKS: &[(&str, Check)] = &[
    ("group_rules", group_rules),
    ("group_settings_rules", group_settings_rules),
    (
        "seqs_have_no_gaps_and_no_duplicates",
        seqs_have_no_gaps_and_no_duplicates,
    ),
    ("idempotency_keys_are_unique", idempotency_keys_are_unique),
    ("verdicts_latest_stands", verdicts_latest_stands),
    ("pages_by_count_and_bytes", pages_by_count_and_bytes),
    ("accounts", accounts),
    ("sessions_issue_rotate_revoke", sessions_issue_rotate_revoke),
    ("outbox_order_and_clear", outbox_order_and_clear),
    ("carried_runs_take_in_order", carried_runs_take_in_order),
];

/// The message of a domain error, and that it is of the expected kind.
fn refused<T: std::fmt::Debug>(result: Result<T, Error>, kind: fn(&Error) -> bool) -> String {
    match result {
        Err(err) if kind(&err) => err.to_string(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

pub fn group_rules(b: &dyn Backend) {
    tx(b, |tx| tx.create_group("g@eu", "G", "hello", "ann@eu", 1)).unwrap();
    let taken = refused(
        tx(b, |tx| tx.create_group("g@eu", "G", "", "bob@eu", 1)),
        |e| matches!(e, Error::AlreadyExists(_)),
    );
    assert!(taken.contains("group g@eu already exists"), "{taken}");
    tx(b, |tx| {
        assert!(tx.lock_group("g@eu")?);
        assert!(!tx.lock_group("x@eu")?);
        assert!(tx.group_exists("g@eu")?);
        tx.join("g@eu", "bob@us")?;
        tx.join("g@eu", "bob@us")?; // twice: a no-op
        Ok(())
    })
    .unwrap();
    let info = tx(b, |tx| tx.group_info("g@eu")).unwrap();
    assert_eq!(
        (
            info.title.as_str(),
            info.announcement.as_str(),
            info.last_seq
        ),
        ("G", "hello", 0)
    );
    let members: Vec<_> = info
        .members
        .iter()
        .map(|m| (m.user.as_str(), m.role))
        .collect();
    assert_eq!(
        members,
        vec![
            ("ann@eu", Role::Owner as i32),
            ("bob@us", Role::Member as i32)
        ]
    );
    let roles = tx(b, |tx| {
        Ok((tx.role("g@eu", "ann@eu")?, tx.role("g@eu", "cy@eu")?))
    })
    .unwrap();
    assert_eq!(roles, (Some(Role::Owner), None));
    let owner = refused(tx(b, |tx| tx.leave("g@eu", "ann@eu")), |e| {
        matches!(e, Error::FailedPrecondition(_))
    });
    assert!(
        owner.contains("the owner cannot leave group g@eu"),
        "{owner}"
    );
    tx(b, |tx| tx.leave("g@eu", "bob@us")).unwrap();
    let gone = refused(tx(b, |tx| tx.leave("g@eu", "bob@us")), |e| {
        matches!(e, Error::NotFound(_))
    });
    assert!(
        gone.contains("bob@us is not a member of group g@eu"),
        "{gone}"
    );
    // Alone, the owner may leave.
    tx(b, |tx| tx.leave("g@eu", "ann@eu")).unwrap();
    let missing = refused(tx(b, |tx| tx.group_info("x@eu")), |e| {
        matches!(e, Error::NotFound(_))
    });
    assert!(missing.contains("group x@eu does not exist"), "{missing}");
    for result in [
        tx(b, |tx| tx.join("x@eu", "c@eu")),
        tx(b, |tx| tx.next_seq("x@eu").map(drop)),
    ] {
        let text = refused(result, |e| matches!(e, Error::NotFound(_)));
        assert!(text.contains("group x@eu does not exist"), "{text}");
    }
}

pub fn group_settings_rules(b: &dyn Backend) {
    tx(b, |tx| {
        tx.create_group("g@eu", "G", "", "ann@eu", 1)?;
        let two = GroupSettings {
            open: true,
            max_members: 2,
        };
        tx.update_group("g@eu", None, None, Some(&two))?;
        tx.join("g@eu", "b@eu")
    })
    .unwrap();
    let full = refused(tx(b, |tx| tx.join("g@eu", "c@eu")), |e| {
        matches!(e, Error::ResourceExhausted(_))
    });
    assert!(full.contains("group g@eu is full (2 members)"), "{full}");
    let below = GroupSettings {
        open: true,
        max_members: 1,
    };
    let text = refused(
        tx(b, move |tx| {
            tx.update_group("g@eu", Some("Newer"), None, Some(&below))
        }),
        |e| matches!(e, Error::FailedPrecondition(_)),
    );
    assert!(
        text.contains("settings.max_members 1 is below the 2 members group g@eu has"),
        "{text}"
    );
    let info = tx(b, |tx| tx.group_info("g@eu")).unwrap();
    assert_eq!(info.title, "G", "the refused update changed nothing");
    let closed = GroupSettings {
        open: false,
        max_members: 10,
    };
    tx(b, move |tx| {
        tx.update_group("g@eu", Some("New"), None, Some(&closed))
    })
    .unwrap();
    let text = refused(tx(b, |tx| tx.join("g@eu", "c@eu")), |e| {
        matches!(e, Error::PermissionDenied(_))
    });
    assert!(
        text.contains("group g@eu is closed to new members"),
        "{text}"
    );
    let info = tx(b, |tx| tx.group_info("g@eu")).unwrap();
    assert_eq!(info.title, "New");
    assert_eq!(info.settings, Some(closed));
    // A title alone leaves the settings.
    tx(b, |tx| tx.update_group("g@eu", None, Some("news"), None)).unwrap();
    let info = tx(b, |tx| tx.group_info("g@eu")).unwrap();
    assert_eq!(
        (info.announcement.as_str(), info.settings),
        ("news", Some(closed))
    );
}

fn delivery(group: &str, seq: u64, body: String) -> Delivery {
    Delivery {
        group: group.into(),
        seq,
        message_id: format!("{group}/m{seq}"),
        sender: "ann@eu".into(),
        body,
        sent_at_ms: 5,
    }
}

/// Sequences one message in `group` as the home does: lock, seq, insert.
pub fn sequence(tx: &mut dyn Tx, group: &str) -> Result<u64, Error> {
    if !tx.lock_group(group)? {
        return Err(meridian_node::service_center::data_center::tx::group_not_found(group));
    }
    let seq = tx.next_seq(group)?;
    assert!(tx.insert_message(&delivery(group, seq, format!("hello {seq}")))?);
    Ok(seq)
}

pub fn seqs_have_no_gaps_and_no_duplicates(b: &dyn Backend) {
    tx(b, |tx| tx.create_group("g@eu", "G", "", "ann@eu", 1)).unwrap();
    let mut seqs = Vec::new();
    for _ in 0..5 {
        seqs.push(tx(b, |tx| sequence(tx, "g@eu")).unwrap());
    }
    // Three in one transaction, then one whose transaction fails: its seq
    // is given back with it.
    seqs.extend(
        tx(b, |tx| {
            (0..3)
                .map(|_| sequence(tx, "g@eu"))
                .collect::<Result<Vec<_>, _>>()
        })
        .unwrap(),
    );
    let failed = tx(b, |tx| {
        sequence(tx, "g@eu")?;
        Err::<(), _>(Error::Internal("the flow failed after its seq".into()))
    });
    assert!(failed.is_err());
    seqs.push(tx(b, |tx| sequence(tx, "g@eu")).unwrap());
    assert_eq!(seqs, (1..=9).collect::<Vec<u64>>());
    let (last, stored) = tx(b, |tx| {
        Ok((
            tx.group_info("g@eu")?.last_seq,
            tx.page("g@eu", 0, 100, usize::MAX)?,
        ))
    })
    .unwrap();
    assert_eq!(last, 9);
    let stored: Vec<u64> = stored.messages.iter().map(|d| d.seq).collect();
    assert_eq!(stored, (1..=9).collect::<Vec<u64>>());
    // A redelivery, by seq or by message id, is not stored twice.
    let again = tx(b, |tx| {
        let by_seq = tx.insert_message(&delivery("g@eu", 3, "other".into()))?;
        let mut same_id = delivery("g@eu", 3, "x".into());
        same_id.seq = 100;
        Ok((by_seq, tx.insert_message(&same_id)?, tx.seq_of("g@eu/m3")?))
    })
    .unwrap();
    assert_eq!(again, (false, false, Some(3)));
}

pub fn idempotency_keys_are_unique(b: &dyn Backend) {
    tx(b, |tx| {
        tx.insert_accepted("m1", "g@us", "ann@eu", Some("k"), 1)?;
        // Sends without a key are never the same send.
        tx.insert_accepted("m2", "g@us", "ann@eu", None, 1)?;
        tx.insert_accepted("m3", "g@us", "ann@eu", None, 1)?;
        // The same key from another sender, or to another group, is another.
        tx.insert_accepted("m4", "g@us", "bob@eu", Some("k"), 1)?;
        tx.insert_accepted("m5", "h@us", "ann@eu", Some("k"), 1)?;
        tx.insert_sequenced_key("g@us", "ann@eu", "k", "m1")
    })
    .unwrap();
    let found = tx(b, |tx| {
        Ok((
            tx.accepted_by_key("ann@eu", "g@us", "k")?,
            tx.accepted_by_key("ann@eu", "g@us", "other")?,
            tx.sequenced_by_key("g@us", "ann@eu", "k")?,
            tx.sequenced_by_key("g@us", "bob@eu", "k")?,
        ))
    })
    .unwrap();
    assert_eq!(found, (Some("m1".into()), None, Some("m1".into()), None));
    // A second send with the key, or a second sequencing, cannot commit.
    assert!(
        tx(b, |tx| tx.insert_accepted(
            "m9",
            "g@us",
            "ann@eu",
            Some("k"),
            2
        ))
        .is_err()
    );
    assert!(tx(b, |tx| tx.insert_sequenced_key("g@us", "ann@eu", "k", "m9")).is_err());
    let kept = tx(b, |tx| {
        Ok((
            tx.accepted_by_key("ann@eu", "g@us", "k")?,
            tx.sequenced_by_key("g@us", "ann@eu", "k")?,
            tx.verdict_of("m9")?,
        ))
    })
    .unwrap();
    assert_eq!(kept, (Some("m1".into()), Some("m1".into()), None));
    // The retention prune: oldest first, a bounded number.
    tx(b, |tx| {
        tx.insert_accepted("m0", "g@us", "cy@eu", Some("k"), 0)
    })
    .unwrap();
    assert_eq!(tx(b, |tx| tx.delete_accepted_before(2, 1)).unwrap(), 1);
    assert_eq!(
        tx(b, |tx| tx.accepted_by_key("cy@eu", "g@us", "k")).unwrap(),
        None
    );
    assert_eq!(tx(b, |tx| tx.delete_accepted_before(2, 100)).unwrap(), 5);
    assert_eq!(tx(b, |tx| tx.delete_accepted_before(2, 100)).unwrap(), 0);
}

pub fn verdicts_latest_stands(b: &dyn Backend) {
    tx(b, |tx| {
        tx.insert_accepted("m1", "g@us", "ann@eu", Some("k"), 1)
    })
    .unwrap();
    assert_eq!(
        tx(b, |tx| tx.verdict_of("m1")).unwrap(),
        None,
        "not answered yet"
    );
    let refused_verdict = Verdict {
        message_id: "m1".into(),
        outcome: Some(verdict::Outcome::Refused(Failure {
            code: 3,
            message: "ann@eu is not a member of group g@us".into(),
        })),
    };
    let sequenced = Verdict {
        message_id: "m1".into(),
        outcome: Some(verdict::Outcome::Sequenced(Sequenced {
            message_id: "m0".into(),
            seq: 9,
        })),
    };
    let first = refused_verdict.clone();
    tx(b, move |tx| tx.record_verdict(&first)).unwrap();
    assert_eq!(
        tx(b, |tx| tx.verdict_of("m1")).unwrap(),
        Some(refused_verdict)
    );
    let second = sequenced.clone();
    tx(b, move |tx| tx.record_verdict(&second)).unwrap();
    assert_eq!(tx(b, |tx| tx.verdict_of("m1")).unwrap(), Some(sequenced));
}

pub fn pages_by_count_and_bytes(b: &dyn Backend) {
    use meridian_node::limits::{HISTORY_PAGE_BYTES, MAX_BODY_BYTES};
    use prost::Message;

    tx(b, |tx| {
        for seq in [3, 1, 2, 4] {
            tx.insert_message(&delivery("s@eu", seq, format!("hello {seq}")))?;
        }
        for seq in 1..=40 {
            tx.insert_message(&delivery("big@eu", seq, "x".repeat(MAX_BODY_BYTES)))?;
        }
        Ok(())
    })
    .unwrap();
    let seqs = |page: &meridian_node::service_center::data_center::tx::Page| {
        page.messages.iter().map(|d| d.seq).collect::<Vec<_>>()
    };
    let first = tx(b, |tx| tx.page("s@eu", 1, 2, usize::MAX)).unwrap();
    assert_eq!((seqs(&first), first.more), (vec![2, 3], true));
    assert_eq!(first.messages[0], delivery("s@eu", 2, "hello 2".into()));
    let last = tx(b, |tx| tx.page("s@eu", 3, 2, usize::MAX)).unwrap();
    assert_eq!((seqs(&last), last.more), (vec![4], false));
    let exact = tx(b, |tx| tx.page("s@eu", 0, 4, usize::MAX)).unwrap();
    assert_eq!((seqs(&exact), exact.more), (vec![1, 2, 3, 4], false));

    // By bytes: pages stop at the budget and cover every message once.
    let mut after = 0;
    let mut seen = Vec::new();
    loop {
        let page = tx(b, move |tx| {
            tx.page("big@eu", after, 1_000, HISTORY_PAGE_BYTES)
        })
        .unwrap();
        let bytes: usize = page
            .messages
            .iter()
            .map(|d| {
                let len = d.encoded_len();
                1 + prost::length_delimiter_len(len) + len
            })
            .sum();
        assert!(bytes <= HISTORY_PAGE_BYTES, "{bytes}");
        if page.more {
            assert!(
                bytes + MAX_BODY_BYTES > HISTORY_PAGE_BYTES,
                "one more fitted"
            );
        }
        seen.extend(seqs(&page));
        match page.messages.last() {
            Some(last) if page.more => after = last.seq,
            _ => break,
        }
    }
    assert_eq!(seen, (1..=40).collect::<Vec<u64>>());
    let tiny = tx(b, |tx| tx.page("big@eu", 7, 1_000, 1)).unwrap();
    assert_eq!((seqs(&tiny), tiny.more), (vec![8], true), "always progress");
    let none = tx(b, |tx| tx.page("big@eu", 40, 1_000, 1)).unwrap();
    assert_eq!((seqs(&none), none.more), (vec![], false));
}

pub fn accounts(b: &dyn Backend) {
    tx(b, |tx| tx.insert_user("ann@eu", "h", 1)).unwrap();
    let taken = refused(tx(b, |tx| tx.insert_user("ann@eu", "h2", 2)), |e| {
        matches!(e, Error::AlreadyExists(_))
    });
    assert!(taken.contains("user ann@eu already exists"), "{taken}");
    let read = tx(b, |tx| {
        Ok((
            tx.password_hash("ann@eu")?,
            tx.attached_region("ann@eu")?,
            tx.attached_region("bob@eu")?,
        ))
    })
    .unwrap();
    assert_eq!(read, (Some("h".into()), Some("eu".into()), None));
    tx(b, |tx| tx.attach("ann@eu", "us")).unwrap();
    assert_eq!(
        tx(b, |tx| tx.attached_region("ann@eu")).unwrap(),
        Some("us".into())
    );
    // Of a delivery's recipients, those attached elsewhere, in one read:
    // a user of another home and an unknown one are left out.
    tx(b, |tx| tx.insert_user("cat@eu", "h", 1)).unwrap();
    tx(b, |tx| tx.insert_user("dee@eu", "h", 1)).unwrap();
    tx(b, |tx| tx.attach("dee@eu", "ap")).unwrap();
    let ids: Vec<String> = ["ann@eu", "bob@eu", "cat@eu", "dee@eu", "eve@us"]
        .map(String::from)
        .into();
    let asked = ids.clone();
    let mut elsewhere = tx(b, move |tx| tx.attached_elsewhere(&asked, "eu")).unwrap();
    elsewhere.sort();
    assert_eq!(
        elsewhere,
        [
            ("ann@eu".into(), "us".into()),
            ("dee@eu".into(), "ap".into())
        ]
    );
    let from_us = tx(b, move |tx| tx.attached_elsewhere(&ids, "us")).unwrap();
    assert_eq!(
        from_us.len(),
        2,
        "cat@eu in eu and dee@eu in ap: {from_us:?}"
    );
    assert_eq!(tx(b, |tx| tx.attached_elsewhere(&[], "eu")).unwrap(), []);
    tx(b, |tx| {
        tx.put_assertion("bob@us", b"old", 100, 1)?;
        tx.put_assertion("bob@us", b"new", 200, 1)?;
        tx.put_assertion("cy@ap", b"cy", 50, 1)
    })
    .unwrap();
    assert_eq!(
        tx(b, |tx| tx.assertion("bob@us")).unwrap(),
        Some(b"new".to_vec())
    );
    // A later put forgets the assertions that expired.
    tx(b, |tx| tx.put_assertion("dan@us", b"dan", 300, 60)).unwrap();
    let left = tx(b, |tx| {
        Ok((tx.assertion("cy@ap")?, tx.assertion("bob@us")?))
    })
    .unwrap();
    assert_eq!(left, (None, Some(b"new".to_vec())));
}

fn tokens(n: u8, expires_at_ms: i64, refresh_expires_at_ms: i64) -> Tokens {
    Tokens {
        access_hash: [n; 32],
        refresh_hash: [n + 100; 32],
        expires_at_ms,
        refresh_expires_at_ms,
    }
}

pub fn sessions_issue_rotate_revoke(b: &dyn Backend) {
    tx(b, |tx| tx.insert_session("ann@eu", &tokens(1, 10, 100))).unwrap();
    let found = tx(b, |tx| {
        Ok((
            tx.session_by_access(&[1; 32])?,
            tx.refreshable(&[101; 32], 99)?,
            tx.refreshable(&[101; 32], 100)?,
        ))
    })
    .unwrap();
    assert_eq!(
        found,
        (Some(("ann@eu".into(), 10)), Some("ann@eu".into()), None)
    );
    let rotated = tx(b, |tx| {
        tx.rotate_session(&[101; 32], &tokens(2, 20, 200), 50)
    })
    .unwrap();
    assert_eq!(
        rotated,
        Some(Rotated {
            user: "ann@eu".into(),
            old_access_hash: [1; 32]
        })
    );
    let after = tx(b, |tx| {
        Ok((
            tx.session_by_access(&[1; 32])?,
            tx.session_by_access(&[2; 32])?,
            tx.rotate_session(&[101; 32], &tokens(3, 30, 300), 50)?,
        ))
    })
    .unwrap();
    assert_eq!(
        after,
        (None, Some(("ann@eu".into(), 20)), None),
        "the old refresh is spent"
    );

    tx(b, |tx| tx.insert_session("bob@us", &tokens(5, 10, 100))).unwrap();
    assert_eq!(tx(b, |tx| tx.sessions_in_force(99)).unwrap(), 2);
    let revoked = tx(b, |tx| {
        Ok((
            tx.revoke_by_access(&[2; 32])?,
            tx.revoke_by_access(&[2; 32])?,
            tx.revoke_by_refresh(&[105; 32])?,
            tx.revoke_by_refresh(&[105; 32])?,
        ))
    })
    .unwrap();
    assert_eq!(revoked, (Some([2; 32]), None, Some([5; 32]), None));
    assert_eq!(tx(b, |tx| tx.sessions_in_force(0)).unwrap(), 0);

    // The sweep: only sessions past refresh, a bounded number at a time.
    tx(b, |tx| {
        for n in 10..20 {
            tx.insert_session("ann@eu", &tokens(n, 5, 50))?;
        }
        tx.insert_session("bob@us", &tokens(60, 5, 500))
    })
    .unwrap();
    assert_eq!(tx(b, |tx| tx.delete_expired_sessions(49, 100)).unwrap(), 0);
    assert_eq!(tx(b, |tx| tx.delete_expired_sessions(50, 4)).unwrap(), 4);
    assert_eq!(tx(b, |tx| tx.delete_expired_sessions(50, 100)).unwrap(), 6);
    assert_eq!(tx(b, |tx| tx.sessions_in_force(50)).unwrap(), 1);
}

pub fn item(n: u32) -> Item {
    Item {
        kind: Some(Kind::Submission(Submission {
            message_id: format!("m{n}"),
            ..Default::default()
        })),
    }
}

pub fn outbox_order_and_clear(b: &dyn Backend) {
    let traced = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    tx(b, move |tx| {
        for n in 0..5 {
            let destination = if n % 2 == 0 { "us" } else { "ap" };
            tx.enqueue(destination, &item(n), if n == 0 { traced } else { "" }, 1)?;
        }
        Ok(())
    })
    .unwrap();
    let us = tx(b, |tx| tx.pending("us", 0, 10)).unwrap();
    let items: Vec<Item> = us.iter().map(|p| p.item.clone()).collect();
    assert_eq!(items, vec![item(0), item(2), item(4)]);
    assert_eq!(us[0].traceparent, traced);
    assert_eq!(us[1].traceparent, "");
    let first = us[0].id;
    let after_first = tx(b, move |tx| tx.pending("us", first, 1)).unwrap();
    assert_eq!(after_first.len(), 1, "bounded by the limit");
    assert_eq!(after_first[0].item, item(2));
    let carried = [us[0].id, us[1].id];
    tx(b, move |tx| tx.clear("us", &carried)).unwrap();
    let (left, depth, mut depths, mut destinations) = tx(b, |tx| {
        Ok((
            tx.pending("us", 0, 10)?,
            tx.depth()?,
            tx.depths()?,
            tx.destinations()?,
        ))
    })
    .unwrap();
    assert_eq!(
        left.iter().map(|p| p.item.clone()).collect::<Vec<_>>(),
        vec![item(4)]
    );
    assert_eq!(depth, 3);
    depths.sort();
    assert_eq!(depths, vec![("ap".into(), 2), ("us".into(), 1)]);
    destinations.sort();
    assert_eq!(destinations, vec!["ap", "us"]);
    // Discarding a departed destination: oldest first, a bounded number.
    assert_eq!(tx(b, |tx| tx.discard("ap", 1)).unwrap(), 1);
    let ap = tx(b, |tx| tx.pending("ap", 0, 10)).unwrap();
    assert_eq!(
        ap.iter().map(|p| p.item.clone()).collect::<Vec<_>>(),
        vec![item(3)]
    );
    assert_eq!(tx(b, |tx| tx.discard("ap", 10)).unwrap(), 1);
    assert_eq!(
        tx(b, |tx| tx.depth()).unwrap(),
        1,
        "other destinations stay"
    );
}

pub fn carried_runs_take_in_order(b: &dyn Backend) {
    let take = |source: &'static str, chain: i64, batch: i64| {
        tx(b, move |tx| tx.take_batch(source, chain, batch)).unwrap()
    };
    assert!(!take("eu", 7, 1), "no run started: a later batch waits");
    assert!(take("eu", 7, 0), "a run's first batch starts it");
    assert!(!take("eu", 7, 2), "one ahead of its turn is refused");
    assert!(take("eu", 7, 1));
    assert!(take("eu", 7, 1), "the last taken again: a resend");
    assert!(!take("eu", 8, 2), "another run's batch is not this run's");
    assert!(take("us", 9, 0) && take("us", 9, 1), "sources run apart");
    assert!(take("eu", 7, 2), "eu's run goes on where it was");
    assert!(take("eu", 8, 0), "a new run replaces the old");
    assert!(
        !take("eu", 7, 3),
        "the old run's batches are refused after it"
    );
    assert!(take("eu", 8, 1));
    // A failed transaction leaves the run where it was.
    let failed = tx(b, |tx| {
        assert!(tx.take_batch("eu", 8, 2)?);
        Err::<(), _>(Error::Internal("rolled back".into()))
    });
    assert!(failed.is_err());
    assert!(!take("eu", 8, 3), "the rolled-back take did not stick");
    assert!(take("eu", 8, 2));
}
