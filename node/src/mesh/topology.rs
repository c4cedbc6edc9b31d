//! Link state shared across the mesh, and the lowest-cost loop-free routes
//! computed from it.
//!
//! Each region advertises its own links (up or down, and their cost) with a
//! sequence number, and every heartbeat carries every advertisement the
//! sender knows, so the newest of each region's advertisements floods the
//! mesh within a heartbeat per hop. Link state (rather than path vector)
//! fits a mesh of tens of regions: every region sees the whole graph, so a
//! detour is computed locally, is loop-free by construction, and changes at
//! once when a link does, with no count-to-infinity.

use std::collections::{BTreeMap, BTreeSet};

/// An origin re-advertises its links at least this often (in microseconds,
/// the unit of seq), even when nothing changed.
pub const REFRESH_MICROS: u64 = 10 * 60 * 1_000_000;
/// A record older than this is forgotten, so one that its origin no longer
/// refreshes (or a replayed one) cannot steer routes for long.
pub const MAX_AGE_MICROS: u64 = 60 * 60 * 1_000_000;
/// A record whose seq is further ahead of the receiver's clock is refused,
/// so no record can claim every later seq of its origin.
pub const MAX_AHEAD_MICROS: u64 = 60 * 1_000_000;

/// One region's view of its links.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advert {
    pub origin: String,
    /// Newer advertisements of the same origin have larger numbers.
    pub seq: u64,
    /// Peer region → (up, cost).
    pub links: BTreeMap<String, (bool, u32)>,
    /// The origin's signature, opaque here, passed on with the record.
    pub proof: Vec<u8>,
}

/// The lowest-cost path to a region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Path {
    /// The regions after this one, ending with the destination.
    pub hops: Vec<String>,
    pub cost: u64,
}

impl Path {
    pub fn next_hop(&self) -> &str {
        &self.hops[0]
    }
}

#[derive(Clone, Debug, Default)]
pub struct LinkStateDb {
    adverts: BTreeMap<String, Advert>,
}

impl LinkStateDb {
    /// Keeps `advert` if it is newer than what is known of its origin.
    pub fn merge(&mut self, advert: Advert) -> bool {
        match self.adverts.get(&advert.origin) {
            Some(known) if known.seq >= advert.seq => false,
            _ => {
                self.adverts.insert(advert.origin.clone(), advert);
                true
            }
        }
    }

    /// Whether `advert` is newer than what is known of its origin.
    pub fn is_newer(&self, advert: &Advert) -> bool {
        self.adverts
            .get(&advert.origin)
            .is_none_or(|known| known.seq < advert.seq)
    }

    /// Forgets records made before `oldest` (a seq).
    pub fn expire(&mut self, oldest: u64) {
        self.adverts.retain(|_, advert| advert.seq >= oldest);
    }

    /// Forgets regions that are no longer in the mesh.
    pub fn retain(&mut self, regions: &BTreeSet<String>) {
        self.adverts.retain(|origin, _| regions.contains(origin));
    }

    pub fn adverts(&self) -> impl Iterator<Item = &Advert> {
        self.adverts.values()
    }

    pub fn get(&self, origin: &str) -> Option<&Advert> {
        self.adverts.get(origin)
    }

    /// Whether the link a→b can carry traffic: a says it is up, and b does
    /// not say otherwise. Its cost is the larger of the two views.
    fn edge(&self, a: &str, b: &str) -> Option<u32> {
        let (up, cost) = *self.adverts.get(a)?.links.get(b)?;
        if !up {
            return None;
        }
        match self.adverts.get(b).and_then(|adv| adv.links.get(a)) {
            Some((false, _)) => None,
            Some((true, back)) => Some(cost.max(*back)),
            None => Some(cost),
        }
    }

    /// The lowest-cost path from `from` to every region it can reach
    /// (Dijkstra; ties go to the fewest hops, then the smaller names).
    pub fn routes(&self, from: &str) -> BTreeMap<String, Path> {
        let mut best: BTreeMap<String, (u64, Vec<String>)> = BTreeMap::new();
        let mut done: BTreeSet<String> = BTreeSet::new();
        best.insert(from.to_owned(), (0, Vec::new()));
        loop {
            let next = best
                .iter()
                .filter(|(region, _)| !done.contains(*region))
                .min_by(|a, b| (a.1.0, a.1.1.len(), &a.1.1).cmp(&(b.1.0, b.1.1.len(), &b.1.1)))
                .map(|(region, (cost, hops))| (region.clone(), *cost, hops.clone()));
            let Some((region, cost, hops)) = next else {
                break;
            };
            done.insert(region.clone());
            let Some(advert) = self.adverts.get(&region) else {
                continue;
            };
            for peer in advert.links.keys() {
                if done.contains(peer) {
                    continue;
                }
                let Some(edge) = self.edge(&region, peer) else {
                    continue;
                };
                let mut path = hops.clone();
                path.push(peer.clone());
                let candidate = (cost + u64::from(edge), path);
                let better = match best.get(peer) {
                    None => true,
                    Some(current) => {
                        (candidate.0, candidate.1.len(), &candidate.1)
                            < (current.0, current.1.len(), &current.1)
                    }
                };
                if better {
                    best.insert(peer.clone(), candidate);
                }
            }
        }
        best.into_iter()
            .filter(|(region, _)| region != from)
            .map(|(region, (cost, hops))| (region, Path { hops, cost }))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn advert(origin: &str, seq: u64, links: &[(&str, bool, u32)]) -> Advert {
        Advert {
            origin: origin.into(),
            seq,
            links: links
                .iter()
                .map(|(p, up, c)| (p.to_string(), (*up, *c)))
                .collect(),
            proof: Vec::new(),
        }
    }

    /// A full mesh of `regions` with every link up at `cost`.
    fn full_mesh(regions: &[&str], cost: u32) -> LinkStateDb {
        let mut db = LinkStateDb::default();
        for r in regions {
            let links: Vec<(&str, bool, u32)> = regions
                .iter()
                .filter(|p| *p != r)
                .map(|p| (*p, true, cost))
                .collect();
            db.merge(advert(r, 1, &links));
        }
        db
    }

    fn cut(db: &mut LinkStateDb, a: &str, b: &str, seq: u64) {
        for (x, y) in [(a, b), (b, a)] {
            let mut adv = db.get(x).unwrap().clone();
            adv.links.insert(y.into(), (false, 1));
            adv.seq = seq;
            db.merge(adv);
        }
    }

    #[test]
    fn direct_links_are_used_when_up() {
        let db = full_mesh(&["a", "b", "c"], 5);
        let routes = db.routes("a");
        assert_eq!(routes["b"].hops, vec!["b"]);
        assert_eq!(routes["c"].cost, 5);
    }

    #[test]
    fn a_cut_link_detours_through_a_third_region() {
        let mut db = full_mesh(&["a", "b", "c"], 5);
        cut(&mut db, "a", "b", 2);
        assert_eq!(db.routes("a")["b"].hops, vec!["c", "b"]);
        assert_eq!(db.routes("b")["a"].hops, vec!["c", "a"]);
    }

    #[test]
    fn with_two_cuts_the_remaining_path_is_found() {
        let mut db = full_mesh(&["a", "b", "c", "d"], 5);
        cut(&mut db, "a", "b", 2);
        cut(&mut db, "a", "c", 3);
        let path = &db.routes("a")["b"];
        assert_eq!(path.hops, vec!["d", "b"]);
        assert_eq!(path.cost, 10);
    }

    #[test]
    fn one_side_saying_down_is_enough() {
        let mut db = full_mesh(&["a", "b", "c"], 5);
        let mut b = db.get("b").unwrap().clone();
        b.links.insert("a".into(), (false, 5));
        b.seq = 9;
        db.merge(b);
        assert_eq!(db.routes("a")["b"].hops, vec!["c", "b"]);
    }

    #[test]
    fn costs_choose_the_cheaper_detour_and_older_adverts_are_ignored() {
        let mut db = full_mesh(&["a", "b", "c", "d"], 5);
        let mut a = db.get("a").unwrap().clone();
        a.links.insert("b".into(), (true, 100));
        a.seq = 2;
        assert!(db.merge(a.clone()));
        assert_eq!(
            db.routes("a")["b"].hops,
            vec!["c", "b"],
            "two hops of 5 beat one of 100"
        );
        a.seq = 1;
        assert!(!db.merge(a));
    }

    #[test]
    fn an_isolated_region_has_no_routes() {
        let mut db = full_mesh(&["a", "b", "c"], 5);
        cut(&mut db, "a", "b", 2);
        cut(&mut db, "a", "c", 3);
        assert!(db.routes("a").is_empty());
        assert_eq!(db.routes("b")["c"].hops, vec!["c"]);
    }
}
