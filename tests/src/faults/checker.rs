//! The invariant checker. Clients record what the service acknowledged and
//! what each member session received; [`check`] verifies docs/ARCHITECTURE.md §4:
//!
//! - every acknowledged message reaches every member session of its group
//!   exactly once after dedupe by `(group, seq)` (else *lost* or
//!   *duplicated*);
//! - in `seq` order (else *out of order*);
//! - with no gap in the `seq`s a session saw (else a *gap*);
//! - every session sees the same message at a given `(group, seq)`, and a
//!   retry with one idempotency key acknowledges one message id (else a
//!   *conflict*).
//!
//! It also counts *redelivered*: the same `(group, seq)` twice on one
//! session's streams. A client that dedupes hides those, but the server
//! promises each stream exactly once, so the scenarios require 0 too.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

/// A send the service acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    pub group: String,
    /// The client's idempotency key ("" for none).
    pub key: String,
    pub message_id: String,
    /// The `seq` in the reply; 0 until the home has sequenced it.
    pub seq: u64,
}

/// A message a member session received, in arrival order per session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    pub session: String,
    pub group: String,
    pub seq: u64,
    pub message_id: String,
}

/// Everything the clients recorded.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub acks: Vec<Ack>,
    pub deliveries: Vec<Delivered>,
    /// Group to its member sessions: who must receive each message.
    pub members: BTreeMap<String, BTreeSet<String>>,
    /// `(session, group)` to the cursor the session subscribed from (0 when
    /// not listed): it must receive everything after it.
    pub cursors: BTreeMap<(String, String), u64>,
}

impl History {
    pub fn member(&mut self, group: &str, session: &str) {
        self.members
            .entry(group.to_owned())
            .or_default()
            .insert(session.to_owned());
    }

    pub fn ack(&mut self, group: &str, key: &str, message_id: &str, seq: u64) {
        self.acks.push(Ack {
            group: group.to_owned(),
            key: key.to_owned(),
            message_id: message_id.to_owned(),
            seq,
        });
    }

    pub fn delivered(&mut self, session: &str, group: &str, seq: u64, message_id: &str) {
        self.deliveries.push(Delivered {
            session: session.to_owned(),
            group: group.to_owned(),
            seq,
            message_id: message_id.to_owned(),
        });
    }
}

/// What the checker found. [`Report::is_clean`] is the verdict.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Distinct acknowledged messages.
    pub acknowledged: usize,
    /// Distinct `(session, group, seq)` received.
    pub delivered: usize,
    /// `(session, acknowledged message)` pairs never received.
    pub lost: usize,
    /// Messages received at more than one `seq` by a session (extra copies),
    /// plus idempotency keys acknowledged with more than one message id.
    pub duplicated: usize,
    /// Deliveries that arrived after a higher `seq` of the same group.
    pub out_of_order: usize,
    /// `seq`s missing below the highest one a session received.
    pub gaps: usize,
    /// A `(group, seq)` carrying different messages, or an acknowledged
    /// `seq` that differs from the delivered one.
    pub conflicts: usize,
    /// The same `(group, seq)` received again by a session.
    pub redelivered: usize,
    /// Up to a few examples of each violation, for the failure message.
    pub examples: Vec<String>,
}

impl Report {
    /// No loss, duplicate, reordering, gap, conflict or redelivery.
    pub fn is_clean(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.out_of_order == 0
            && self.gaps == 0
            && self.conflicts == 0
            && self.redelivered == 0
    }

    fn example(&mut self, text: String) {
        if self.examples.len() < 12 {
            self.examples.push(text);
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "acknowledged {}, delivered {}, lost {}, duplicated {}, out of order {}, gaps {}, \
             conflicts {}, redelivered {}",
            self.acknowledged,
            self.delivered,
            self.lost,
            self.duplicated,
            self.out_of_order,
            self.gaps,
            self.conflicts,
            self.redelivered
        )?;
        for example in &self.examples {
            write!(f, "\n  - {example}")?;
        }
        Ok(())
    }
}

/// Checks the recorded history against the invariants.
pub fn check(history: &History) -> Report {
    let mut report = Report::default();

    // Acknowledged messages per group; one id per idempotency key.
    let mut acked: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
    let mut keys: HashMap<(&str, &str), &str> = HashMap::new();
    for ack in &history.acks {
        let ids = acked.entry(&ack.group).or_default();
        let seq = ids.entry(&ack.message_id).or_insert(ack.seq);
        if *seq == 0 {
            *seq = ack.seq;
        }
        if ack.key.is_empty() {
            continue;
        }
        match keys.get(&(ack.group.as_str(), ack.key.as_str())) {
            Some(id) if *id != ack.message_id => {
                report.duplicated += 1;
                report.example(format!(
                    "key {} in {} acknowledged as {} and as {}",
                    ack.key, ack.group, id, ack.message_id
                ));
            }
            Some(_) => {}
            None => {
                keys.insert((&ack.group, &ack.key), &ack.message_id);
            }
        }
    }
    report.acknowledged = acked.values().map(BTreeMap::len).sum();

    // Every session's deliveries per group, in arrival order.
    let mut streams: BTreeMap<(&str, &str), Vec<&Delivered>> = BTreeMap::new();
    for d in &history.deliveries {
        streams
            .entry((d.session.as_str(), d.group.as_str()))
            .or_default()
            .push(d);
    }

    // One message per (group, seq) across all sessions, and the acked seq.
    let mut at_seq: HashMap<(&str, u64), &str> = HashMap::new();
    for d in &history.deliveries {
        match at_seq.get(&(d.group.as_str(), d.seq)) {
            Some(id) if *id != d.message_id => {
                report.conflicts += 1;
                report.example(format!(
                    "{} seq {} is {} for {} but {} elsewhere",
                    d.group, d.seq, d.message_id, d.session, id
                ));
            }
            Some(_) => {}
            None => {
                at_seq.insert((&d.group, d.seq), &d.message_id);
            }
        }
        if let Some(&seq) = acked
            .get(d.group.as_str())
            .and_then(|ids| ids.get(d.message_id.as_str()))
            && seq != 0
            && seq != d.seq
        {
            report.conflicts += 1;
            report.example(format!(
                "{} was acknowledged at seq {seq} but delivered to {} at seq {}",
                d.message_id, d.session, d.seq
            ));
        }
    }

    let no_acks = BTreeMap::new();
    for (group, sessions) in &history.members {
        for session in sessions {
            let start = history
                .cursors
                .get(&(session.clone(), group.clone()))
                .copied()
                .unwrap_or(0);
            let stream = streams
                .get(&(session.as_str(), group.as_str()))
                .map(Vec::as_slice)
                .unwrap_or_default();
            let mut seen: BTreeMap<u64, &str> = BTreeMap::new();
            let mut ids: HashMap<&str, u64> = HashMap::new();
            let mut highest = start;
            for d in stream {
                if d.seq <= start {
                    continue;
                }
                if seen.contains_key(&d.seq) {
                    // A differing id was counted as a conflict above.
                    if seen[&d.seq] == d.message_id {
                        report.redelivered += 1;
                        report.example(format!("{session} received {group} seq {} again", d.seq));
                    }
                    continue;
                }
                if d.seq < highest {
                    report.out_of_order += 1;
                    report.example(format!(
                        "{session} received {group} seq {} after seq {highest}",
                        d.seq
                    ));
                }
                highest = highest.max(d.seq);
                seen.insert(d.seq, &d.message_id);
                if let Some(first) = ids.insert(&d.message_id, d.seq) {
                    report.duplicated += 1;
                    report.example(format!(
                        "{session} received {} at {group} seq {first} and seq {}",
                        d.message_id, d.seq
                    ));
                }
            }
            report.delivered += seen.len();
            let missing = (start + 1..=highest)
                .filter(|s| !seen.contains_key(s))
                .collect::<Vec<_>>();
            if !missing.is_empty() {
                report.gaps += missing.len();
                report.example(format!(
                    "{session} never received {group} seq {:?}{}",
                    &missing[..missing.len().min(5)],
                    if missing.len() > 5 { " …" } else { "" }
                ));
            }
            let received: HashSet<&str> = ids.keys().copied().collect();
            for (id, &seq) in acked.get(group.as_str()).unwrap_or(&no_acks) {
                // A message sequenced at or before the cursor was not owed.
                if seq != 0 && seq <= start {
                    continue;
                }
                if !received.contains(id) {
                    report.lost += 1;
                    report.example(format!("{session} never received {id} of {group}"));
                }
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two sessions in group g, three acknowledged messages, all delivered.
    fn clean() -> History {
        let mut h = History::default();
        h.member("g", "s1");
        h.member("g", "s2");
        for i in 1..=3 {
            h.ack("g", &format!("k{i}"), &format!("m{i}"), 0);
        }
        for session in ["s1", "s2"] {
            for i in 1..=3 {
                h.delivered(session, "g", i, &format!("m{i}"));
            }
        }
        h
    }

    #[test]
    fn a_clean_history_passes() {
        let report = check(&clean());
        assert!(report.is_clean(), "{report}");
        assert_eq!(report.acknowledged, 3);
        assert_eq!(report.delivered, 6);
    }

    #[test]
    fn retries_of_one_key_count_once_and_unacknowledged_deliveries_are_fine() {
        let mut h = clean();
        h.ack("g", "k2", "m2", 2); // a retry, acknowledged again with its seq
        h.delivered("s1", "g", 4, "m4"); // sent, but the ack was lost
        h.delivered("s2", "g", 4, "m4");
        let report = check(&h);
        assert!(report.is_clean(), "{report}");
        assert_eq!(report.acknowledged, 3);
        assert_eq!(report.delivered, 8);
    }

    #[test]
    fn catches_a_lost_message() {
        let mut h = clean();
        h.ack("g", "k4", "m4", 0);
        h.delivered("s1", "g", 4, "m4");
        let report = check(&h);
        assert_eq!(report.lost, 1, "{report}");
        assert!(!report.is_clean());
        assert!(report.examples[0].contains("s2 never received m4"));
    }

    #[test]
    fn catches_a_message_sequenced_twice() {
        let mut h = clean();
        for session in ["s1", "s2"] {
            h.delivered(session, "g", 4, "m3");
        }
        let report = check(&h);
        assert_eq!(report.duplicated, 2, "{report}");
        assert!(!report.is_clean());
    }

    #[test]
    fn catches_one_key_acknowledged_as_two_messages() {
        let mut h = clean();
        h.ack("g", "k1", "m1-again", 0);
        let report = check(&h);
        assert_eq!(report.duplicated, 1, "{report}");
        // ...and m1-again never arrived.
        assert_eq!(report.lost, 2);
    }

    #[test]
    fn catches_a_redelivery() {
        let mut h = clean();
        h.delivered("s1", "g", 2, "m2");
        let report = check(&h);
        assert_eq!(report.redelivered, 1, "{report}");
        assert_eq!(report.duplicated, 0);
        assert!(!report.is_clean());
    }

    #[test]
    fn catches_out_of_order_delivery() {
        let mut h = clean();
        h.deliveries.retain(|d| d.session != "s2");
        for i in [1, 3, 2] {
            h.delivered("s2", "g", i, &format!("m{i}"));
        }
        let report = check(&h);
        assert_eq!(report.out_of_order, 1, "{report}");
        assert_eq!(report.gaps, 0);
        assert_eq!(report.lost, 0);
        assert!(!report.is_clean());
    }

    #[test]
    fn catches_a_gap_even_of_an_unacknowledged_message() {
        let mut h = clean();
        // seq 4 (never acknowledged to anyone) is skipped by s1.
        h.delivered("s1", "g", 5, "m5");
        h.delivered("s2", "g", 4, "m4");
        h.delivered("s2", "g", 5, "m5");
        let report = check(&h);
        assert_eq!(report.gaps, 1, "{report}");
        assert_eq!(report.lost, 0);
        assert!(!report.is_clean());
    }

    #[test]
    fn catches_sessions_that_disagree_on_a_seq() {
        let mut h = clean();
        h.deliveries.retain(|d| !(d.session == "s2" && d.seq == 3));
        h.delivered("s2", "g", 3, "m-other");
        let report = check(&h);
        assert!(report.conflicts >= 1, "{report}");
        assert_eq!(report.lost, 1, "s2 never got m3");
        assert!(!report.is_clean());
    }

    #[test]
    fn catches_a_delivery_at_another_seq_than_acknowledged() {
        let mut h = clean();
        h.ack("g", "k1", "m1", 2);
        let report = check(&h);
        assert_eq!(report.conflicts, 2, "{report}");
    }

    #[test]
    fn a_session_that_subscribed_later_owes_nothing_before_its_cursor() {
        let mut h = clean();
        h.member("g", "late");
        h.cursors.insert(("late".into(), "g".into()), 2);
        h.delivered("late", "g", 3, "m3");
        let mut report = check(&h);
        // m1 and m2 were acknowledged without a seq, so they are owed to
        // `late` as far as the checker knows...
        assert_eq!(report.lost, 2, "{report}");
        // ...unless the acks carried their seq.
        h.ack("g", "k1", "m1", 1);
        h.ack("g", "k2", "m2", 2);
        report = check(&h);
        assert!(report.is_clean(), "{report}");
    }
}
