//! A sorted-vector map for the per-store module registry.
//!
//! A store registers a handful of code objects and modules (a component
//! with its core modules is one code object and a few modules), and a
//! `TryBTreeMap` spends about a kilobyte on its first entry (a 16-entry slab
//! and a node forest). Each store has three of these maps, so that was
//! about 3 KiB per store. A sorted vector holds what is there and nothing
//! more; lookups are binary searches, and inserts stay cheap at this size.

use crate::OutOfMemory;
use alloc::vec::Vec;

/// A map from `K` to `V` kept as a vector sorted by key, with fallible
/// inserts.
pub struct SmallMap<K, V> {
    entries: Vec<(K, V)>,
}

impl<K, V> Default for SmallMap<K, V> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl<K: Copy + Ord, V> SmallMap<K, V> {
    fn search(&self, key: K) -> Result<usize, usize> {
        self.entries.binary_search_by(|(k, _)| k.cmp(&key))
    }

    /// The value for `key`.
    pub fn get(&self, key: K) -> Option<&V> {
        let i = self.search(key).ok()?;
        Some(&self.entries[i].1)
    }

    /// The value for `key`, mutably.
    pub fn get_mut(&mut self, key: K) -> Option<&mut V> {
        let i = self.search(key).ok()?;
        Some(&mut self.entries[i].1)
    }

    /// Whether `key` has a value.
    pub fn contains_key(&self, key: K) -> bool {
        self.search(key).is_ok()
    }

    /// Inserts `value` for `key`, returning the value it replaced.
    pub fn insert(&mut self, key: K, value: V) -> Result<Option<V>, OutOfMemory> {
        match self.search(key) {
            Ok(i) => Ok(Some(core::mem::replace(&mut self.entries[i].1, value))),
            Err(i) => {
                self.reserve_one()?;
                self.entries.insert(i, (key, value));
                Ok(None)
            }
        }
    }

    /// The value for `key`, inserting `make()` first if there is none.
    pub fn get_or_insert_with(
        &mut self,
        key: K,
        make: impl FnOnce() -> V,
    ) -> Result<&mut V, OutOfMemory> {
        let i = match self.search(key) {
            Ok(i) => i,
            Err(i) => {
                self.reserve_one()?;
                self.entries.insert(i, (key, make()));
                i
            }
        };
        Ok(&mut self.entries[i].1)
    }

    /// Room for one more entry: exactly one for the first (most stores never
    /// get a second), doubling after that.
    fn reserve_one(&mut self) -> Result<(), OutOfMemory> {
        let additional = self.entries.len().max(1);
        if self.entries.len() < self.entries.capacity() {
            return Ok(());
        }
        self.entries
            .try_reserve_exact(additional)
            .map_err(|_| OutOfMemory::new(additional * core::mem::size_of::<(K, V)>()))
    }

    /// The entry with the greatest key `<= key`.
    pub fn last_at_or_below(&self, key: K) -> Option<(K, &V)> {
        let end = match self.search(key) {
            Ok(i) => i + 1,
            Err(i) => i,
        };
        let (k, v) = self.entries[..end].last()?;
        Some((*k, v))
    }

    /// The entry with the greatest key `< key`.
    pub fn last_below(&self, key: K) -> Option<(K, &V)> {
        let end = match self.search(key) {
            Ok(i) | Err(i) => i,
        };
        let (k, v) = self.entries[..end].last()?;
        Some((*k, v))
    }

    fn first_at_or_above_index(&self, key: K) -> Option<usize> {
        let i = match self.search(key) {
            Ok(i) | Err(i) => i,
        };
        (i < self.entries.len()).then_some(i)
    }

    /// The entry with the least key `>= key`.
    pub fn first_at_or_above(&self, key: K) -> Option<(K, &V)> {
        let (k, v) = &self.entries[self.first_at_or_above_index(key)?];
        Some((*k, v))
    }

    /// The entry with the least key `>= key`, mutably.
    pub fn first_at_or_above_mut(&mut self, key: K) -> Option<(K, &mut V)> {
        let i = self.first_at_or_above_index(key)?;
        let (k, v) = &mut self.entries[i];
        Some((*k, v))
    }

    /// The entries in key order.
    #[cfg_attr(
        not(any(feature = "coredump", feature = "debug", feature = "gc")),
        allow(dead_code, reason = "used by optional features")
    )]
    pub fn iter(&self) -> impl Iterator<Item = (K, &V)> + '_ {
        self.entries.iter().map(|(k, v)| (*k, v))
    }

    /// The values in key order.
    pub fn values(&self) -> impl Iterator<Item = &V> + '_ {
        self.entries.iter().map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::SmallMap;

    #[test]
    fn keeps_keys_sorted_and_answers_range_queries() {
        let mut m = SmallMap::default();
        for k in [30u32, 10, 20] {
            assert!(m.insert(k, k * 2).unwrap().is_none());
        }
        assert_eq!(m.insert(20, 41).unwrap(), Some(40));
        assert_eq!(m.iter().map(|(k, _)| k).collect::<Vec<_>>(), [10, 20, 30]);
        assert_eq!(m.get(20), Some(&41));
        assert!(m.get(25).is_none());
        assert_eq!(m.last_at_or_below(20).map(|(k, _)| k), Some(20));
        assert_eq!(m.last_at_or_below(25).map(|(k, _)| k), Some(20));
        assert!(m.last_at_or_below(5).is_none());
        assert_eq!(m.last_below(20).map(|(k, _)| k), Some(10));
        assert!(m.last_below(10).is_none());
        assert_eq!(m.first_at_or_above(11).map(|(k, _)| k), Some(20));
        assert_eq!(m.first_at_or_above(30).map(|(k, _)| k), Some(30));
        assert!(m.first_at_or_above(31).is_none());
        *m.get_or_insert_with(5, || 0).unwrap() += 1;
        *m.get_or_insert_with(5, || 100).unwrap() += 1;
        assert_eq!(m.get(5), Some(&2));
    }

    #[test]
    fn the_first_entry_allocates_room_for_one() {
        let mut m = SmallMap::default();
        m.insert(1u64, [0u8; 64]).unwrap();
        assert_eq!(m.entries.capacity(), 1);
        m.insert(2, [0; 64]).unwrap();
        m.insert(3, [0; 64]).unwrap();
        assert!(m.entries.capacity() >= 3);
    }
}
