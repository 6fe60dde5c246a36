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

use crate::error::{CoreError, Result};
use crate::model::JoinKey;
use crate::types::KeyType;

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
    let mut by_name: Vec<(&JoinKey, Option<&KeyValue>)> = keys.iter().map(|k| (k, None)).collect();
    by_name.sort_by(|a, b| a.0.name.cmp(&b.0.name));
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
