//! Canonical entity keys → dense group numbers, for probing source rows against entity rows.

/// Canonical keys → dense group numbers, built once per join side and probed once per source
/// row. Keys live in one arena and the table maps a 64-bit hash to a group, so a probe is one
/// hash, one table slot and one comparison against the arena (no pointer per key). Distinct
/// keys with equal hashes go to a small fallback map.
pub(crate) struct KeyIndex {
    hasher: foldhash::fast::FixedState,
    by_hash: std::collections::HashMap<u64, u32, IdentityHash>,
    /// Keys whose hash is shared by another key.
    collided: std::collections::HashMap<Box<[u8]>, u32, foldhash::fast::FixedState>,
    arena: Vec<u8>,
    /// Group `g`'s key is `arena[ends[g - 1]..ends[g]]`.
    ends: Vec<usize>,
}

/// The hash map's own hasher for keys that are already hashes.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdentityHash;

impl std::hash::BuildHasher for IdentityHash {
    type Hasher = IdentityHasher;
    fn build_hasher(&self) -> IdentityHasher {
        IdentityHasher(0)
    }
}

/// See [`IdentityHash`].
#[derive(Default)]
pub(crate) struct IdentityHasher(u64);

impl std::hash::Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// Marks a hash shared by several keys (look in `collided`).
const SHARED: u32 = u32::MAX;

impl KeyIndex {
    pub(crate) fn new() -> Self {
        Self {
            hasher: foldhash::fast::FixedState::with_seed(0x5155_4956),
            by_hash: std::collections::HashMap::default(),
            collided: std::collections::HashMap::default(),
            arena: Vec::new(),
            ends: Vec::new(),
        }
    }

    /// Number of distinct keys.
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    fn key(&self, g: u32) -> &[u8] {
        let g = g as usize;
        let start = if g == 0 { 0 } else { self.ends[g - 1] };
        &self.arena[start..self.ends[g]]
    }

    fn hash(&self, key: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(key)
    }

    /// The group of `key`, adding it if it is new.
    pub(crate) fn insert(&mut self, key: &[u8]) -> u32 {
        if let Some(g) = self.get(key) {
            return g;
        }
        let g = u32::try_from(self.ends.len()).unwrap_or(SHARED - 1);
        self.arena.extend_from_slice(key);
        self.ends.push(self.arena.len());
        let h = self.hash(key);
        match self.by_hash.get(&h).copied() {
            None => {
                self.by_hash.insert(h, g);
            }
            Some(SHARED) => {
                self.collided.insert(key.into(), g);
            }
            Some(other) => {
                let other_key: Box<[u8]> = self.key(other).into();
                self.collided.insert(other_key, other);
                self.collided.insert(key.into(), g);
                self.by_hash.insert(h, SHARED);
            }
        }
        g
    }

    /// The group of `key`, if it was inserted.
    #[inline]
    pub(crate) fn get(&self, key: &[u8]) -> Option<u32> {
        match *self.by_hash.get(&self.hash(key))? {
            SHARED => self.collided.get(key).copied(),
            g => (self.key(g) == key).then_some(g),
        }
    }
}
