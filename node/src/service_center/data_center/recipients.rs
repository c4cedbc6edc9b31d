//! Who a group's messages go to, kept in memory by the SQLite writer.
//!
//! Every message sequenced here reads its group's members, and where each
//! recipient of this home is attached (docs/ARCHITECTURE.md §3, flow 6:
//! a roaming recipient's deliveries follow the home-location register).
//! Both change rarely, yet were read inside every send's write, on the
//! single writer thread that all of the region's writes queue for (§12).
//! So the writer keeps what it read:
//!
//! - an entry is kept only by the writer's own transactions (readers'
//!   snapshots may be older), and is dropped by the operation that changes
//!   it (`create_group`, `join`, `leave`, `insert_user`, `attach`), before
//!   that operation runs;
//! - what a transaction read after its own change may be undone: when a
//!   job's savepoint rolls back or a batch's commit fails, the writer
//!   forgets everything ([`Recipients::forget`]).
//!
//! PostgreSQL keeps no such copy: replicas sharing it change members and
//! attachments behind each other's backs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Groups whose members are kept at most; past it the copy starts over.
const MAX_GROUPS: usize = 4096;
/// Users whose attached region is kept at most; past it the copy starts over.
const MAX_USERS: usize = 65_536;

/// The writer's copy: cheap to clone, locked only by the writer thread.
#[derive(Clone, Default)]
pub struct Recipients(Arc<Mutex<Kept>>);

#[derive(Default)]
struct Kept {
    /// Each group's member ids, as `members` holds them.
    members: HashMap<String, Vec<String>>,
    /// Where each user asked about is attached; `None`: no user of this home.
    attached: HashMap<String, Option<String>>,
}

impl Recipients {
    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        // Poisoned only by a panic on the writer thread, which stops it.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The group's member ids, if kept.
    pub fn members(&self, group: &str) -> Option<Vec<String>> {
        self.kept().members.get(group).cloned()
    }

    pub fn keep_members(&self, group: &str, ids: &[String]) {
        let mut kept = self.kept();
        if kept.members.len() >= MAX_GROUPS {
            kept.members.clear();
        }
        kept.members.insert(group.to_owned(), ids.to_vec());
    }

    /// Before the group's members change.
    pub fn drop_members(&self, group: &str) {
        self.kept().members.remove(group);
    }

    /// Of `ids`, those whose attached region is not kept.
    pub fn unknown<'a>(&self, ids: &'a [String]) -> Vec<&'a String> {
        let kept = self.kept();
        ids.iter()
            .filter(|id| !kept.attached.contains_key(id.as_str()))
            .collect()
    }

    /// Keeps where `asked` are attached: those in `found` where it says,
    /// the others nowhere (no user of this home).
    pub fn keep_attached(&self, asked: &[&String], found: &[(String, String)]) {
        let mut kept = self.kept();
        if kept.attached.len() + asked.len() > MAX_USERS {
            kept.attached.clear();
        }
        for id in asked {
            kept.attached.insert((*id).clone(), None);
        }
        for (id, region) in found {
            kept.attached.insert(id.clone(), Some(region.clone()));
        }
    }

    /// Of `ids`, those attached elsewhere than `region`, with where, from
    /// what is kept: call [`Self::keep_attached`] for the
    /// [`Self::unknown`] ones first.
    pub fn attached_elsewhere(&self, ids: &[String], region: &str) -> Vec<(String, String)> {
        let kept = self.kept();
        ids.iter()
            .filter_map(|id| match kept.attached.get(id.as_str()) {
                Some(Some(at)) if at != region => Some((id.clone(), at.clone())),
                _ => None,
            })
            .collect()
    }

    /// Before the user is created or attached elsewhere.
    pub fn drop_user(&self, id: &str) {
        self.kept().attached.remove(id);
    }

    /// Forgets everything: a transaction that read it may have been undone.
    pub fn forget(&self) {
        let mut kept = self.kept();
        kept.members.clear();
        kept.attached.clear();
    }
}

#[cfg(test)]
mod tests {
    use crate::Error;
    use crate::service_center::data_center::DataCenter;

    /// The members and attachments a write reads, as the writer keeps them.
    async fn recipients(dc: &DataCenter) -> (Vec<String>, Vec<(String, String)>) {
        dc.write(|tx| {
            let mut members = tx.member_ids("g@eu")?;
            members.sort();
            let ids: Vec<String> = ["ann@eu", "bob@eu", "cat@eu", "dan@us"]
                .map(String::from)
                .into();
            let mut elsewhere = tx.attached_elsewhere(&ids, "eu")?;
            elsewhere.sort();
            Ok((members, elsewhere))
        })
        .await
        .unwrap()
    }

    fn strings(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    /// What the writer keeps follows every change that commits, and
    /// forgets a change that was rolled back after it was read.
    #[tokio::test]
    async fn kept_recipients_follow_committed_changes_only() {
        let dir = tempfile::tempdir().unwrap();
        let dc = DataCenter::open(&dir.path().join("dc.sqlite")).unwrap();
        dc.write(|tx| {
            tx.insert_user("ann@eu", "h", 1)?;
            tx.insert_user("bob@eu", "h", 1)?;
            tx.create_group("g@eu", "g", "", "ann@eu", 1)
        })
        .await
        .unwrap();
        assert_eq!(recipients(&dc).await, (strings(&["ann@eu"]), vec![]));

        dc.write(|tx| {
            tx.join("g@eu", "bob@eu")?;
            tx.join("g@eu", "dan@us")?;
            tx.attach("bob@eu", "us")
        })
        .await
        .unwrap();
        let joined = (
            strings(&["ann@eu", "bob@eu", "dan@us"]),
            vec![("bob@eu".to_owned(), "us".to_owned())],
        );
        assert_eq!(recipients(&dc).await, joined, "kept before, changed since");

        // Read after its own changes, then undone: none of it stays.
        let undone = dc
            .write(|tx| {
                tx.insert_user("cat@eu", "h", 1)?;
                tx.attach("cat@eu", "ap")?;
                tx.join("g@eu", "cat@eu")?;
                tx.leave("g@eu", "bob@eu")?;
                tx.attach("bob@eu", "eu")?;
                let ids = strings(&["bob@eu", "cat@eu"]);
                assert_eq!(
                    tx.attached_elsewhere(&ids, "eu")?,
                    [("cat@eu".into(), "ap".into())]
                );
                assert_eq!(tx.member_ids("g@eu")?.len(), 3);
                Err::<(), _>(Error::InvalidArgument("refused".into()))
            })
            .await;
        assert!(undone.is_err());
        assert_eq!(recipients(&dc).await, joined, "the rolled-back write");
    }
}
