//! A map with a fixed capacity: inserting into a full map evicts the entry
//! used longest ago (written, or read with [`BoundedMap::get_recent`]). The
//! session cache and the login throttle use it, so that no client can make
//! the service center remember without limit.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

pub(super) struct BoundedMap<K, V> {
    capacity: usize,
    /// Each entry with the write that placed it in `order`.
    entries: HashMap<K, (V, u64)>,
    /// Writes, oldest first; a write that a later one superseded is skipped.
    order: VecDeque<(K, u64)>,
    writes: u64,
}

impl<K: Clone + Eq + Hash, V> BoundedMap<K, V> {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            order: VecDeque::new(),
            writes: 0,
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.entries.get(key).map(|(value, _)| value)
    }

    /// The value under `key`, which becomes the most recently used entry:
    /// what is read often stays, however long ago it was written.
    pub fn get_recent(&mut self, key: &K) -> Option<&V> {
        self.writes += 1;
        let write = self.writes;
        let (_, used) = self.entries.get_mut(key)?;
        *used = write;
        self.order.push_back((key.clone(), write));
        if self.order.len() > 2 * self.capacity + 16 {
            self.compact();
        }
        self.entries.get(key).map(|(value, _)| value)
    }

    /// Writes `value` under `key`, as the newest entry.
    pub fn insert(&mut self, key: K, value: V) {
        self.writes += 1;
        let write = self.writes;
        if let Some(entry) = self.entries.get_mut(&key) {
            *entry = (value, write);
        } else {
            while self.entries.len() >= self.capacity {
                self.evict_oldest();
            }
            self.entries.insert(key.clone(), (value, write));
        }
        self.order.push_back((key, write));
        if self.order.len() > 2 * self.capacity + 16 {
            self.compact();
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        self.entries.remove(key).map(|(value, _)| value)
    }

    fn evict_oldest(&mut self) {
        while let Some((key, write)) = self.order.pop_front() {
            if self.entries.get(&key).is_some_and(|(_, w)| *w == write) {
                self.entries.remove(&key);
                return;
            }
        }
    }

    /// Drops the superseded writes from `order`.
    fn compact(&mut self) {
        let entries = &self.entries;
        self.order
            .retain(|(key, write)| entries.get(key).is_some_and(|(_, w)| w == write));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_map_evicts_the_entry_written_longest_ago() {
        let mut map = BoundedMap::new(3);
        for key in ["a", "b", "c"] {
            map.insert(key, ());
        }
        map.insert("a", ()); // rewritten: now the newest
        map.insert("d", ());
        assert_eq!(map.len(), 3);
        assert!(map.get(&"b").is_none(), "b was written longest ago");
        for key in ["a", "c", "d"] {
            assert!(map.get(&key).is_some(), "{key} is kept");
        }
    }

    #[test]
    fn a_full_map_keeps_the_entry_read_most_recently() {
        let mut map = BoundedMap::new(3);
        for key in ["a", "b", "c"] {
            map.insert(key, ());
        }
        assert!(map.get_recent(&"a").is_some()); // read: now the most recent
        assert!(map.get_recent(&"x").is_none());
        map.insert("d", ());
        assert!(
            map.get(&"a").is_some(),
            "a was read after b and c were written"
        );
        assert!(map.get(&"b").is_none(), "b was used longest ago");
        for i in 0..1_000 {
            map.get_recent(&"a");
            map.insert(["e", "f"][i % 2], ());
            assert!(
                map.order.len() <= 2 * 3 + 16,
                "reads keep the bookkeeping bounded"
            );
        }
        assert!(
            map.get(&"a").is_some(),
            "a is read between writes, so it stays"
        );
    }

    #[test]
    fn many_rewrites_keep_the_bookkeeping_bounded() {
        let mut map = BoundedMap::new(4);
        for i in 0..10_000u32 {
            map.insert(i % 6, i);
            assert!(map.len() <= 4);
            assert!(map.order.len() <= 2 * 4 + 16);
        }
        map.compact();
        assert_eq!(map.order.len(), map.len());
        for i in 0..6 {
            map.remove(&i);
        }
        assert_eq!(map.len(), 0);
    }
}
