//! Canonical entity-key encoding.
//!
//! A key is encoded from its join keys sorted by name, so the order in which a request lists
//! them does not matter, and each value is first converted to the key's *declared* type, so
//! `1001` sent as int32, int64 or a JSON number finds the same row of an int64 key.
//!
//! Byte layout, per join key in name order (no type tags: the view fixes the types):
//!
//! | declared type | bytes                                                        |
//! |---------------|--------------------------------------------------------------|
//! | int32         | 4 bytes big-endian, sign bit flipped (sorts like the number) |
//! | int64         | 8 bytes big-endian, sign bit flipped                         |
//! | string, bytes | `u32` big-endian length, then the UTF-8 or raw bytes         |
//!
//! [`encode_entity_key`] encodes one key from request values; [`KeyColumns`] encodes the rows
//! of Arrow key columns (sources, entity tables) the same way. [`canonical_order`] is the one
//! place that decides the order of a view's join keys.

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, Int32Array, Int64Array, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int32Type, Int64Type};

use crate::error::{CoreError, Result};
use crate::model::JoinKey;
use crate::types::KeyType;

/// A view's join keys in canonical order (by name): the order their values are encoded in.
pub fn canonical_order(mut keys: Vec<JoinKey>) -> Vec<JoinKey> {
    keys.sort_by(|a, b| a.name.cmp(&b.name));
    keys
}

/// A join-key value as a caller sent it, before conversion to the declared type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyValue {
    /// Any integer (int32, int64 or a JSON number).
    Int(i64),
    /// A string.
    String(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
}

impl KeyValue {
    fn kind(&self) -> &'static str {
        match self {
            Self::Int(_) => "integer",
            Self::String(_) => "string",
            Self::Bytes(_) => "bytes",
        }
    }
}

/// Encodes one entity key of a view with join keys `keys`, given values by join-key name.
///
/// Every join key must have exactly one value; values for unknown names are an error.
pub fn encode_entity_key<'a>(
    keys: &[JoinKey],
    values: impl IntoIterator<Item = (&'a str, &'a KeyValue)>,
) -> Result<Vec<u8>> {
    let ordered = canonical_order(keys.to_vec());
    let mut by_name: Vec<(&JoinKey, Option<&KeyValue>)> =
        ordered.iter().map(|k| (k, None)).collect();
    for (name, value) in values {
        let slot = by_name
            .iter_mut()
            .find(|(k, _)| k.name == name)
            .ok_or_else(|| CoreError::UnknownJoinKey(name.to_owned()))?;
        if slot.1.replace(value).is_some() {
            return Err(CoreError::DuplicateJoinKey(name.to_owned()));
        }
    }
    let mut out = Vec::with_capacity(8 * by_name.len());
    for (key, value) in by_name {
        let value = value.ok_or_else(|| CoreError::MissingJoinKey(key.name.clone()))?;
        encode_value(key, value, &mut out)?;
    }
    Ok(out)
}

fn encode_value(key: &JoinKey, value: &KeyValue, out: &mut Vec<u8>) -> Result<()> {
    let mismatch = || CoreError::JoinKeyType {
        key: key.name.clone(),
        expected: key.key_type,
        got: value.kind().to_owned(),
    };
    match (key.key_type, value) {
        (KeyType::Int32, KeyValue::Int(v)) => {
            let v = i32::try_from(*v).map_err(|_| CoreError::JoinKeyType {
                key: key.name.clone(),
                expected: key.key_type,
                got: format!("{v} (out of range)"),
            })?;
            push_int32_key(v, out);
        }
        (KeyType::Int64, KeyValue::Int(v)) => push_int64_key(*v, out),
        (KeyType::String, KeyValue::String(s)) => push_bytes_key(s.as_bytes(), out, &key.name)?,
        (KeyType::Bytes, KeyValue::Bytes(b)) => push_bytes_key(b, out, &key.name)?,
        _ => return Err(mismatch()),
    }
    Ok(())
}

/// Appends the encoding of an int32 join-key value.
pub fn push_int32_key(v: i32, out: &mut Vec<u8>) {
    out.extend_from_slice(&((v as u32) ^ (1 << 31)).to_be_bytes());
}

/// Appends the encoding of an int64 join-key value.
pub fn push_int64_key(v: i64, out: &mut Vec<u8>) {
    out.extend_from_slice(&((v as u64) ^ (1 << 63)).to_be_bytes());
}

/// Appends the encoding of a string or bytes join-key value (`key` names it in errors).
pub fn push_bytes_key(bytes: &[u8], out: &mut Vec<u8>, key: &str) -> Result<()> {
    let len = u32::try_from(bytes.len()).map_err(|_| CoreError::JoinKeyTooLong(key.to_owned()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

/// Whether a column of type `t` can carry values of a join key of type `key`.
///
/// Any integer column serves an int32 or int64 key (a pandas entity table has int64 columns
/// even for int32 keys): values are compared after conversion to the declared type, and a
/// value out of its range matches nothing.
pub fn column_fits_key(key: KeyType, t: &DataType) -> bool {
    match key {
        KeyType::Int32 | KeyType::Int64 => t.is_integer(),
        _ => key.value_type().accepts(t),
    }
}

/// One join-key column, converted to its declared type and downcast once.
#[derive(Debug)]
enum KeyArray {
    Int32(Int32Array),
    Int64(Int64Array),
    String(StringArray),
    Bytes(BinaryArray),
}

/// The join-key columns of a batch, converted to their declared types and put in canonical
/// order, encoding each row's key exactly as [`encode_entity_key`] encodes request values.
#[derive(Debug)]
pub struct KeyColumns {
    columns: Vec<KeyArray>,
}

impl KeyColumns {
    /// `columns[i]` holds the values of `keys[i]`; both in canonical order (see
    /// [`canonical_order`]).
    pub fn new(keys: &[JoinKey], columns: &[&ArrayRef]) -> arrow::error::Result<Self> {
        debug_assert!(keys.windows(2).all(|w| w[0].name < w[1].name));
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
    pub fn encode(&self, i: usize, out: &mut Vec<u8>) -> bool {
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
    pub fn int(&self, i: usize) -> Option<i64> {
        match self.columns.as_slice() {
            [KeyArray::Int64(a)] => a.is_valid(i).then(|| a.value(i)),
            [KeyArray::Int32(a)] => a.is_valid(i).then(|| i64::from(a.value(i))),
            _ => None,
        }
    }
}

/// Whether a view's keys are a single integer (probed by value, not by encoded bytes).
pub fn is_single_int(keys: &[JoinKey]) -> bool {
    matches!(keys, [k] if matches!(k.key_type, KeyType::Int32 | KeyType::Int64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    #[test]
    fn int32_and_int64_columns_encode_like_request_values() {
        let k = [key("id", KeyType::Int64)];
        let a: ArrayRef = Arc::new(Int32Array::from(vec![1001]));
        let b: ArrayRef = Arc::new(Int64Array::from(vec![1001]));
        let (mut x, mut y) = (Vec::new(), Vec::new());
        assert!(KeyColumns::new(&k, &[&a]).unwrap().encode(0, &mut x));
        assert!(KeyColumns::new(&k, &[&b]).unwrap().encode(0, &mut y));
        assert_eq!(x, y);
        assert_eq!(
            x,
            encode_entity_key(&k, [("id", &KeyValue::Int(1001))]).unwrap()
        );
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

    fn key(name: &str, key_type: KeyType) -> JoinKey {
        JoinKey {
            name: name.into(),
            key_type,
        }
    }

    #[test]
    fn request_order_does_not_matter() {
        let keys = [
            key("driver_id", KeyType::Int64),
            key("customer_id", KeyType::String),
        ];
        let d = KeyValue::Int(1001);
        let c = KeyValue::String("C7".into());
        let a = encode_entity_key(&keys, [("driver_id", &d), ("customer_id", &c)]).unwrap();
        let b = encode_entity_key(&keys, [("customer_id", &c), ("driver_id", &d)]).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn wrong_missing_and_unknown_keys_are_named() {
        let keys = [key("driver_id", KeyType::Int32)];
        let big = KeyValue::Int(i64::from(i32::MAX) + 1);
        let err = encode_entity_key(&keys, [("driver_id", &big)]).unwrap_err();
        assert!(err.to_string().contains("driver_id"), "{err}");
        let s = KeyValue::String("1".into());
        let err = encode_entity_key(&keys, [("driver_id", &s)]).unwrap_err();
        assert!(err.to_string().contains("expected int32"), "{err}");
        let err = encode_entity_key(&keys, []).unwrap_err();
        assert!(
            err.to_string().contains("missing join key 'driver_id'"),
            "{err}"
        );
        let err = encode_entity_key(&keys, [("rider_id", &s)]).unwrap_err();
        assert!(err.to_string().contains("'rider_id'"), "{err}");
    }

    proptest! {
        #[test]
        fn int64_encoding_preserves_order(a: i64, b: i64) {
            let keys = [key("k", KeyType::Int64)];
            let (va, vb) = (KeyValue::Int(a), KeyValue::Int(b));
            let ea = encode_entity_key(&keys, [("k", &va)]).unwrap();
            let eb = encode_entity_key(&keys, [("k", &vb)]).unwrap();
            prop_assert_eq!(a.cmp(&b), ea.cmp(&eb));
        }

        #[test]
        fn distinct_composite_keys_encode_distinctly(a: (String, String), b: (String, String)) {
            let keys = [key("x", KeyType::String), key("y", KeyType::String)];
            let enc = |(x, y): &(String, String)| {
                let (x, y) = (KeyValue::String(x.clone()), KeyValue::String(y.clone()));
                encode_entity_key(&keys, [("x", &x), ("y", &y)]).unwrap()
            };
            prop_assert_eq!(a == b, enc(&a) == enc(&b));
        }
    }
}
