//! Canonical entity keys of Arrow rows, for hashing and comparing keys by value.

use arrow::array::{Array, ArrayRef, AsArray};
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

/// The join-key columns of a batch, converted to their declared types and sorted by key name
/// (the canonical order).
pub(crate) struct KeyColumns {
    columns: Vec<(KeyType, ArrayRef)>,
}

impl KeyColumns {
    /// `columns[i]` holds the values of `keys[i]`; both in canonical (name) order.
    pub(crate) fn new(keys: &[JoinKey], columns: &[&ArrayRef]) -> arrow::error::Result<Self> {
        let columns = keys
            .iter()
            .zip(columns)
            .map(|(k, a)| Ok((k.key_type, cast(a, &k.key_type.value_type().to_arrow())?)))
            .collect::<arrow::error::Result<_>>()?;
        Ok(Self { columns })
    }

    /// Appends row `i`'s canonical key to `out`; returns false (leaving `out` as it was) if a
    /// part of the key is null, since a null key matches nothing.
    pub(crate) fn encode(&self, i: usize, out: &mut Vec<u8>) -> bool {
        let start = out.len();
        for (t, a) in &self.columns {
            if a.is_null(i) {
                out.truncate(start);
                return false;
            }
            match t {
                KeyType::Int32 => push_int32_key(a.as_primitive::<Int32Type>().value(i), out),
                KeyType::Int64 => push_int64_key(a.as_primitive::<Int64Type>().value(i), out),
                KeyType::String => {
                    let ok = push_bytes_key(a.as_string::<i32>().value(i).as_bytes(), out, "");
                    debug_assert!(ok.is_ok(), "i32 offsets bound lengths");
                }
                KeyType::Bytes => {
                    let ok = push_bytes_key(a.as_binary::<i32>().value(i), out, "");
                    debug_assert!(ok.is_ok(), "i32 offsets bound lengths");
                }
            }
        }
        true
    }
}

/// A view's join keys in canonical (name) order.
pub(crate) fn sorted_keys(mut keys: Vec<JoinKey>) -> Vec<JoinKey> {
    keys.sort_by(|a, b| a.name.cmp(&b.name));
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, Int64Array, StringArray};
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
