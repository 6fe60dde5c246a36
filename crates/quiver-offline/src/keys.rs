//! Canonical entity keys → dense group numbers, for probing source rows against entity rows.

use std::hash::BuildHasher;

use foldhash::fast::FixedState;
use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

/// Canonical keys → dense group numbers, built once per view and probed once per source row.
/// Keys live in one arena and the table holds only group numbers (4 bytes a slot), found by
/// their key's hash and checked against the arena: a probe is one hash, one table slot and
/// one comparison, with no pointer per key.
pub(crate) struct KeyIndex {
    hasher: FixedState,
    table: HashTable<u32>,
    arena: Vec<u8>,
    /// Group `g`'s key is `arena[ends[g - 1]..ends[g]]`.
    ends: Vec<usize>,
}

/// The key of group `g` in `arena`, whose keys end at `ends`.
fn key_in<'a>(arena: &'a [u8], ends: &[usize], g: u32) -> &'a [u8] {
    let g = g as usize;
    let start = if g == 0 { 0 } else { ends[g - 1] };
    &arena[start..ends[g]]
}

impl KeyIndex {
    pub(crate) fn new() -> Self {
        Self {
            hasher: FixedState::with_seed(0x5155_4956),
            table: HashTable::new(),
            arena: Vec::new(),
            ends: Vec::new(),
        }
    }

    /// Number of distinct keys.
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// The key of group `g`.
    pub(crate) fn key(&self, g: u32) -> &[u8] {
        key_in(&self.arena, &self.ends, g)
    }

    /// Bytes held for the keys: the arena, its offsets and the table's slots.
    pub(crate) fn bytes(&self) -> usize {
        self.arena.len() + self.ends.len() * 8 + self.table.capacity() * 5
    }

    /// The group of `key`, adding it if it is new.
    #[cfg(test)]
    pub(crate) fn insert(&mut self, key: &[u8]) -> u32 {
        self.insert_hashed(self.hash(key), key)
    }

    /// The group of `key` whose [`hash`](Self::hash) is `hash`, adding it if it is new.
    pub(crate) fn insert_hashed(&mut self, hash: u64, key: &[u8]) -> u32 {
        let Self {
            hasher,
            table,
            arena,
            ends,
        } = self;
        let entry = table.entry(
            hash,
            |&g| key_in(arena, ends, g) == key,
            |&g| hasher.hash_one(key_in(arena, ends, g)),
        );
        match entry {
            Entry::Occupied(e) => *e.get(),
            Entry::Vacant(e) => {
                let g = u32::try_from(ends.len()).unwrap_or(u32::MAX);
                e.insert(g);
                arena.extend_from_slice(key);
                ends.push(arena.len());
                g
            }
        }
    }

    /// The hash `key` is found by.
    #[inline]
    pub(crate) fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The group of `key`, if it was inserted.
    #[cfg(test)]
    pub(crate) fn get(&self, key: &[u8]) -> Option<u32> {
        self.get_hashed(self.hash(key), key)
    }

    /// The group of `key` whose [`hash`](Self::hash) is `hash`, if it was inserted.
    #[inline]
    pub(crate) fn get_hashed(&self, hash: u64, key: &[u8]) -> Option<u32> {
        self.table.find(hash, |&g| self.key(g) == key).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_dense_and_found_again_after_the_table_grows() {
        let mut index = KeyIndex::new();
        let keys: Vec<Vec<u8>> = (0u32..50_000)
            .map(|i| i.to_le_bytes()[..(i % 4 + 1) as usize].to_vec())
            .collect();
        let mut distinct = std::collections::HashMap::new();
        for key in &keys {
            let next = u32::try_from(distinct.len()).unwrap_or(u32::MAX);
            let expected = *distinct.entry(key.clone()).or_insert(next);
            assert_eq!(index.insert(key), expected);
        }
        assert_eq!(index.len(), distinct.len());
        for (key, &g) in &distinct {
            assert_eq!(index.get(key), Some(g));
            assert_eq!(index.key(g), key.as_slice());
        }
        assert_eq!(index.get(&[0xff; 5]), None);
        assert_eq!(index.get(&[]), None);
    }
}
