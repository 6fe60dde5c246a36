//! Canonical entity keys of Arrow rows, for hashing and comparing keys by value.

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, Int32Array, Int64Array, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int32Type, Int64Type};
use quiver_core::{JoinKey, KeyType, push_bytes_key, push_int32_key, push_int64_key};

/// Whether a column of type `t` can carry values of a join key of type `key`.
///
/// Any integer column serves an int32 or int64 key (a pandas entity table has int64 columns
/// even for int32 keys): values are compared after conversion to the declared type, and a
/// value out of its range matches nothing.
pub(crate) fn column_fits_key(key: KeyType, t: &DataType) -> bool {
    match key {
        KeyType::Int32 | KeyType::Int64 => t.is_integer(),
        _ => key.value_type().accepts(t),
    }
}

/// One join-key column, converted to its declared type and downcast once.
enum KeyArray {
    Int32(Int32Array),
    Int64(Int64Array),
    String(StringArray),
    Bytes(BinaryArray),
}

/// The join-key columns of a batch, converted to their declared types and sorted by key name
/// (the canonical order).
pub(crate) struct KeyColumns {
    columns: Vec<KeyArray>,
}

impl KeyColumns {
    /// `columns[i]` holds the values of `keys[i]`; both in canonical (name) order.
    pub(crate) fn new(keys: &[JoinKey], columns: &[&ArrayRef]) -> arrow::error::Result<Self> {
        let columns = keys
            .iter()
            .zip(columns)
            .map(|(k, a)| {
                let a = cast(a, &k.key_type.value_type().to_arrow())?;
                Ok(match k.key_type {
                    KeyType::Int32 => KeyArray::Int32(a.as_primitive::<Int32Type>().clone()),
                    KeyType::Int64 => KeyArray::Int64(a.as_primitive::<Int64Type>().clone()),
                    KeyType::String => KeyArray::String(a.as_string::<i32>().clone()),
                    KeyType::Bytes => KeyArray::Bytes(a.as_binary::<i32>().clone()),
                })
            })
            .collect::<arrow::error::Result<_>>()?;
        Ok(Self { columns })
    }

    /// Appends row `i`'s canonical key to `out`; returns false (leaving `out` as it was) if a
    /// part of the key is null, since a null key matches nothing.
    pub(crate) fn encode(&self, i: usize, out: &mut Vec<u8>) -> bool {
        let start = out.len();
        for a in &self.columns {
            let ok = match a {
                KeyArray::Int32(a) => {
                    a.is_valid(i) && {
                        push_int32_key(a.value(i), out);
                        true
                    }
                }
                KeyArray::Int64(a) => {
                    a.is_valid(i) && {
                        push_int64_key(a.value(i), out);
                        true
                    }
                }
                // i32 offsets bound lengths, so these never fail.
                KeyArray::String(a) => {
                    a.is_valid(i) && push_bytes_key(a.value(i).as_bytes(), out, "").is_ok()
                }
                KeyArray::Bytes(a) => a.is_valid(i) && push_bytes_key(a.value(i), out, "").is_ok(),
            };
            if !ok {
                out.truncate(start);
                return false;
            }
        }
        true
    }

    /// Row `i`'s key as an integer when the key is a single int32 or int64 column (`None` for
    /// a null); `None` always for other keys.
    #[inline]
    pub(crate) fn int(&self, i: usize) -> Option<i64> {
        match self.columns.as_slice() {
            [KeyArray::Int64(a)] => a.is_valid(i).then(|| a.value(i)),
            [KeyArray::Int32(a)] => a.is_valid(i).then(|| i64::from(a.value(i))),
            _ => None,
        }
    }
}

/// Whether a view's keys are a single integer (probed by value, not by encoded bytes).
pub(crate) fn is_single_int(keys: &[JoinKey]) -> bool {
    matches!(keys, [k] if matches!(k.key_type, KeyType::Int32 | KeyType::Int64))
}

/// A view's join keys in canonical (name) order.
pub(crate) fn sorted_keys(mut keys: Vec<JoinKey>) -> Vec<JoinKey> {
    keys.sort_by(|a, b| a.name.cmp(&b.name));
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn key(name: &str, t: KeyType) -> JoinKey {
        JoinKey {
            name: name.into(),
            key_type: t,
        }
    }

    #[test]
    fn int32_and_int64_columns_encode_alike() {
        let k = [key("id", KeyType::Int64)];
        let a: ArrayRef = Arc::new(Int32Array::from(vec![1001]));
        let b: ArrayRef = Arc::new(Int64Array::from(vec![1001]));
        let (mut x, mut y) = (Vec::new(), Vec::new());
        assert!(KeyColumns::new(&k, &[&a]).unwrap().encode(0, &mut x));
        assert!(KeyColumns::new(&k, &[&b]).unwrap().encode(0, &mut y));
        assert_eq!(x, y);
    }

    #[test]
    fn null_parts_do_not_encode() {
        let k = [key("a", KeyType::Int64), key("b", KeyType::String)];
        let a: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), Some(2)]));
        let b: ArrayRef = Arc::new(StringArray::from(vec![Some("x"), None]));
        let cols = KeyColumns::new(&k, &[&a, &b]).unwrap();
        let mut out = Vec::new();
        assert!(cols.encode(0, &mut out));
        let len = out.len();
        assert!(!cols.encode(1, &mut out));
        assert_eq!(out.len(), len);
        assert!(column_fits_key(KeyType::Int32, &DataType::Int64));
        assert!(!column_fits_key(KeyType::Int64, &DataType::Utf8));
    }
}

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
