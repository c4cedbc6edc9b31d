//! Where a cross-region delivery's time goes: each measured message's
//! spans (its `send` at the sender's region, the `outbox.carry` that took
//! it, the two `roaming.carry` hops, the `receive` at the member's region
//! and its `deliver` there), matched by group and seq, and cut into the
//! stretches between one hop's start and the next's. The stretches of one
//! message add up to its send-to-deliver latency.

use std::collections::HashMap;

use hdrhistogram::Histogram;

use super::collector::{Span, SpanKey};
use crate::bench::deliver::Receipt;
use crate::bench::report::{histogram, record_micros};

/// The stretches on a message's path, in order: each runs from the
/// previous one's end to the named point.
pub const STRETCHES: [&str; 8] = [
    "client -> sender's Send starts (pacer, client, HTTP/2)",
    "Send starts -> its reply, or its carry if sooner (checks, commit)",
    "-> its outbox carry starts (the batch ahead, reading the outbox)",
    "pair hop: sender's service center -> its roaming system",
    "peer hop: sender's roaming system -> member's roaming system",
    "pair hop: member's roaming system -> its service center",
    "receive starts -> deliver (store, commit, push)",
    "deliver -> the subscriber has it (stream, HTTP/2, client)",
];

/// Off the path, for context.
pub const ASIDES: [&str; 3] = [
    "the Send call, start to its reply (the sender's ack, server side)",
    "the carry attempt, whole (until the member's region acked)",
    "messages per carry",
];

pub struct Breakdown {
    /// One histogram per [`STRETCHES`] entry, µs.
    pub stretches: Vec<Histogram<u64>>,
    /// Send-to-deliver of the matched messages, µs.
    pub total: Histogram<u64>,
    /// One histogram per [`ASIDES`] entry (µs, or a count).
    pub asides: Vec<Histogram<u64>>,
    pub matched: u64,
    /// Receipts whose spans were not all found.
    pub unmatched: u64,
}

/// The spans of one region's service center and roaming system, indexed.
struct Index<'a> {
    children: HashMap<SpanKey, Vec<&'a Span>>,
    sends: HashMap<u64, &'a Span>,
    delivers: HashMap<u64, &'a Span>,
    /// The carry attempt that took each send: the last one that did.
    carry_of: HashMap<SpanKey, &'a Span>,
}

impl<'a> Index<'a> {
    fn new(spans: &'a [Span], group: &str, local: &str, remote: &str) -> Self {
        let mut index = Index {
            children: HashMap::new(),
            sends: HashMap::new(),
            delivers: HashMap::new(),
            carry_of: HashMap::new(),
        };
        let seq_of = |span: &Span| {
            (span.attribute("group") == Some(group))
                .then(|| span.attribute("seq")?.parse::<u64>().ok())
                .flatten()
        };
        for span in spans {
            if let Some(parent) = span.parent_key() {
                index.children.entry(parent).or_default().push(span);
            }
            match (span.name.as_str(), span.region.as_str()) {
                ("send", r) if r == local => {
                    if let Some(seq) = seq_of(span) {
                        index.sends.insert(seq, span);
                    }
                }
                ("deliver", r) if r == remote => {
                    if let Some(seq) = seq_of(span) {
                        index.delivers.insert(seq, span);
                    }
                }
                ("outbox.carry", r)
                    if r == local && span.attribute("destination") == Some(remote) =>
                {
                    for item in span
                        .parent_key()
                        .into_iter()
                        .chain(span.links.iter().copied())
                    {
                        let later = index
                            .carry_of
                            .get(&item)
                            .is_none_or(|c| c.start_ns < span.start_ns);
                        if later {
                            index.carry_of.insert(item, span);
                        }
                    }
                }
                _ => {}
            }
        }
        index
    }

    fn child(&self, of: &Span, name: &str) -> Option<&'a Span> {
        self.children
            .get(&of.key)?
            .iter()
            .copied()
            .find(|s| s.name == name)
    }

    /// The points on `receipt`'s path, in µs of wall clock, and its asides.
    fn path(&self, receipt: &Receipt) -> Option<([u64; 9], [u64; 3])> {
        let send = self.sends.get(&receipt.seq)?;
        let deliver = self.delivers.get(&receipt.seq)?;
        let carry = self.carry_of.get(&send.key)?;
        let first_hop = self.child(carry, "roaming.carry")?;
        let second_hop = self.child(first_hop, "roaming.carry")?;
        let receive = self.child(second_hop, "receive")?;
        let us = |ns: u64| ns / 1000;
        let points = [
            receipt.intended_micros,
            us(send.start_ns),
            us(send.end_ns.min(carry.start_ns)),
            us(carry.start_ns),
            us(first_hop.start_ns),
            us(second_hop.start_ns),
            us(receive.start_ns),
            us(deliver.start_ns),
            receipt.received_micros,
        ];
        let items = 1 + carry.links.len() as u64;
        let asides = [
            us(send.end_ns).saturating_sub(us(send.start_ns)),
            us(carry.end_ns).saturating_sub(us(carry.start_ns)),
            items,
        ];
        Some((points, asides))
    }
}

/// The breakdown of `receipts`, the messages of `group` sent at `local`
/// and delivered at `remote`, from the spans the nodes exported.
pub fn of(
    spans: &[Span],
    group: &str,
    local: &str,
    remote: &str,
    receipts: &[Receipt],
) -> Breakdown {
    let index = Index::new(spans, group, local, remote);
    let mut breakdown = Breakdown {
        stretches: STRETCHES.iter().map(|_| histogram()).collect(),
        total: histogram(),
        asides: ASIDES.iter().map(|_| histogram()).collect(),
        matched: 0,
        unmatched: 0,
    };
    for receipt in receipts {
        let Some((points, asides)) = index.path(receipt) else {
            breakdown.unmatched += 1;
            continue;
        };
        breakdown.matched += 1;
        for (i, pair) in points.windows(2).enumerate() {
            record_micros(&mut breakdown.stretches[i], pair[1].saturating_sub(pair[0]));
        }
        record_micros(
            &mut breakdown.total,
            receipt
                .received_micros
                .saturating_sub(receipt.intended_micros),
        );
        for (histogram, value) in breakdown.asides.iter_mut().zip(asides) {
            record_micros(histogram, value);
        }
    }
    breakdown
}

impl Breakdown {
    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &Breakdown) {
        for (mine, theirs) in self.stretches.iter_mut().zip(&other.stretches) {
            mine.add(theirs).expect("same bounds");
        }
        for (mine, theirs) in self.asides.iter_mut().zip(&other.asides) {
            mine.add(theirs).expect("same bounds");
        }
        self.total.add(&other.total).expect("same bounds");
        self.matched += other.matched;
        self.unmatched += other.unmatched;
    }

    /// A table of p50, p90 and p99 per stretch, in ms (a count for the
    /// messages per carry).
    pub fn print(&self, title: &str) {
        println!(
            "\n{title}: {} messages matched to their spans, {} not",
            self.matched, self.unmatched
        );
        println!("| stretch | p50 | p90 | p99 | share of the p50 sum |");
        println!("|---|---|---|---|---|");
        let p50s: Vec<u64> = self
            .stretches
            .iter()
            .map(|h| h.value_at_quantile(0.5))
            .collect();
        let sum: u64 = p50s.iter().sum::<u64>().max(1);
        let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        for ((name, h), p50) in STRETCHES.iter().zip(&self.stretches).zip(&p50s) {
            println!(
                "| {name} | {:.3} | {:.3} | {:.3} | {:.0} % |",
                ms(h, 0.5),
                ms(h, 0.9),
                ms(h, 0.99),
                *p50 as f64 * 100.0 / sum as f64
            );
        }
        println!(
            "| **send to deliver** | {:.3} | {:.3} | {:.3} | |",
            ms(&self.total, 0.5),
            ms(&self.total, 0.9),
            ms(&self.total, 0.99)
        );
        for (name, h) in ASIDES.iter().zip(&self.asides) {
            if name.starts_with("messages") {
                let n = |q| h.value_at_quantile(q);
                println!(
                    "| aside: {name} | {} | {} | {} | |",
                    n(0.5),
                    n(0.9),
                    n(0.99)
                );
            } else {
                println!(
                    "| aside: {name} | {:.3} | {:.3} | {:.3} | |",
                    ms(h, 0.5),
                    ms(h, 0.9),
                    ms(h, 0.99)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: u8, parent: u8, name: &str, region: &str, start_us: u64, end_us: u64) -> Span {
        Span {
            key: ([1; 16], [id; 8]),
            parent: [parent; 8],
            name: name.to_owned(),
            region: region.to_owned(),
            start_ns: start_us * 1000,
            end_ns: end_us * 1000,
            ..Span::default()
        }
    }

    fn with(mut span: Span, attributes: &[(&str, &str)]) -> Span {
        for (k, v) in attributes {
            span.attributes.insert((*k).to_owned(), (*v).to_owned());
        }
        span
    }

    /// Two messages carried in one batch: the first's send is the carry's
    /// parent, the second's a link; each stretch is cut where the next hop
    /// starts, and the stretches add up to the latency.
    #[test]
    fn a_batch_carries_both_its_messages_and_each_path_adds_up() {
        let g = [("group", "g@eu")];
        let spans = vec![
            with(
                span(1, 0, "send", "eu", 1_000, 1_900),
                &[("group", "g@eu"), ("seq", "1")],
            ),
            with(
                span(2, 0, "send", "eu", 1_100, 2_000),
                &[("group", "g@eu"), ("seq", "2")],
            ),
            {
                let mut carry = with(
                    span(3, 1, "outbox.carry", "eu", 2_100, 4_000),
                    &[("destination", "us")],
                );
                carry.links.push(([1; 16], [2; 8]));
                carry
            },
            span(4, 3, "roaming.carry", "eu", 2_200, 3_900),
            span(5, 4, "roaming.carry", "us", 2_400, 3_800),
            span(6, 5, "receive", "us", 2_500, 3_700),
            with(
                span(7, 6, "deliver", "us", 3_000, 3_010),
                &[g[0], ("seq", "1")],
            ),
            with(
                span(8, 6, "deliver", "us", 3_020, 3_030),
                &[g[0], ("seq", "2")],
            ),
            // Another group's delivery is not taken for ours.
            with(
                span(9, 6, "deliver", "us", 3_050, 3_060),
                &[("group", "h@eu"), ("seq", "3")],
            ),
        ];
        let receipts = [
            Receipt {
                seq: 1,
                intended_micros: 900,
                received_micros: 3_500,
            },
            Receipt {
                seq: 2,
                intended_micros: 1_000,
                received_micros: 3_600,
            },
            Receipt {
                seq: 3,
                intended_micros: 1_000,
                received_micros: 3_600,
            },
        ];
        let b = of(&spans, "g@eu", "eu", "us", &receipts);
        assert_eq!((b.matched, b.unmatched), (2, 1));
        // Message 1: 900 -> 1000 -> 1900 -> 2100 -> 2200 -> 2400 -> 2500 -> 3000 -> 3500;
        // message 2: 1000 -> 1100 -> 2000 -> 2100 -> 2200 -> 2400 -> 2500 -> 3020 -> 3600.
        let shortest: Vec<u64> = b.stretches.iter().map(|h| h.min()).collect();
        assert_eq!(shortest, [100, 900, 100, 100, 200, 100, 500, 500]);
        let longest: Vec<u64> = b.stretches.iter().map(|h| h.max()).collect();
        assert_eq!(longest, [100, 900, 200, 100, 200, 100, 520, 580]);
        assert_eq!(
            (b.total.min(), b.total.len()),
            (2_600, 2),
            "both took 2.6 ms"
        );
        assert_eq!(b.asides[2].max(), 2, "two messages in the carry");
    }

    /// A retried carry: the later attempt, which succeeded, is the one on
    /// the path.
    #[test]
    fn the_last_attempt_of_a_retried_carry_is_on_the_path() {
        let g = ("group", "g@eu");
        let spans = vec![
            with(span(1, 0, "send", "eu", 0, 100), &[g, ("seq", "1")]),
            with(
                span(2, 1, "outbox.carry", "eu", 200, 500),
                &[("destination", "us")],
            ),
            with(
                span(3, 1, "outbox.carry", "eu", 1_500, 2_000),
                &[("destination", "us")],
            ),
            span(4, 3, "roaming.carry", "eu", 1_600, 1_990),
            span(5, 4, "roaming.carry", "us", 1_700, 1_980),
            span(6, 5, "receive", "us", 1_800, 1_970),
            with(
                span(7, 6, "deliver", "us", 1_900, 1_910),
                &[g, ("seq", "1")],
            ),
        ];
        let receipt = Receipt {
            seq: 1,
            intended_micros: 0,
            received_micros: 1_950,
        };
        let b = of(&spans, "g@eu", "eu", "us", &[receipt]);
        assert_eq!(b.matched, 1);
        assert_eq!(b.stretches[1].max(), 100, "the send's own time");
        assert_eq!(
            b.stretches[2].max(),
            1_400,
            "its reply to the second attempt"
        );
    }
}
