//! The stored row: every feature of one view's row with its timestamps, in one value.
//!
//! ```text
//! offset  size      field
//! 0       1         format version (1)
//! 1       4         layout fingerprint of the view's features (u32 LE)
//! 5       8         event timestamp, ns since the epoch (i64 LE)
//! 13      8         created timestamp, ns (i64 LE; i64::MIN when the source has none)
//! 21      8         tie-break sequence (u64 LE; source file and row, or a push counter)
//! 29      2         feature count n (u16 LE)
//! 31      ⌈n/8⌉     null bitmap, bit i set = feature i is null
//! ..      4(n+1)    end offsets of each feature's bytes in the data area (u32 LE), after a 0
//! ..      ..        data area
//! ```
//!
//! Feature bytes: bool 1 byte; int32/float32 4 bytes LE; int64/float64/timestamp (µs) 8 bytes
//! LE; string/bytes the raw bytes; a list is a `u32` count then its elements, strings and
//! bytes each prefixed by a `u32` length. Reading feature `i` is two offset loads and a slice:
//! no allocation, no scan over the other features.

use quiver_core::{Feature, ScalarType, ValueType};

use crate::error::{OnlineError, Result};

/// Why a stored row cannot be decoded: a small error, so the per-cell decoding path returns
/// in registers; it becomes [`OnlineError::CorruptRow`] at the public functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Corrupt(pub(crate) &'static str);

impl From<Corrupt> for OnlineError {
    #[cold]
    fn from(c: Corrupt) -> Self {
        OnlineError::CorruptRow(c.0.to_owned())
    }
}

/// The format version in byte 0 of every row.
pub const FORMAT_VERSION: u8 = 2;
const VERSION: u8 = FORMAT_VERSION;
/// Bytes before the null bitmap.
pub const HEADER: usize = 31;
/// Offsets of the newest-wins order's fields (8 bytes LE each): event time and created time
/// (signed), then the tie-break sequence (unsigned). Stores that compare versions without
/// decoding rows (a Redis script) read these.
pub const VERSION_FIELDS: [(usize, bool); 3] =
    [(EVENT_AT, true), (CREATED_AT, true), (SEQUENCE_AT, false)];
const EVENT_AT: usize = 5;
const CREATED_AT: usize = 13;
const SEQUENCE_AT: usize = 21;

pub use quiver_source::RowVersion;

/// A fingerprint of a view's feature layout (names and types, in order). Rows written under
/// another layout are not decoded.
pub fn layout_fingerprint(features: &[Feature]) -> u32 {
    // FNV-1a: stable across processes and releases, unlike `DefaultHasher`.
    let mut h: u32 = 0x811c_9dc5;
    for f in features {
        for b in f
            .name
            .bytes()
            .chain([0])
            .chain(f.value_type.to_string().bytes())
            .chain([0])
        {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
    }
    h
}

/// Builds one stored row. Push feature bytes in view order with [`RowWriter::value`] /
/// [`RowWriter::null`], then [`RowWriter::finish`].
#[derive(Debug)]
pub struct RowWriter {
    buf: Vec<u8>,
    n: usize,
    next: usize,
    data_start: usize,
}

impl RowWriter {
    /// Starts a row of `n` features.
    pub fn new(fingerprint: u32, version: RowVersion, n: usize) -> Self {
        let bitmap = n.div_ceil(8);
        let data_start = HEADER + bitmap + 4 * (n + 1);
        let mut buf = Vec::with_capacity(data_start + 8 * n);
        buf.push(VERSION);
        buf.extend_from_slice(&fingerprint.to_le_bytes());
        buf.extend_from_slice(&version.0.to_le_bytes());
        buf.extend_from_slice(&version.1.to_le_bytes());
        buf.extend_from_slice(&version.2.to_le_bytes());
        buf.extend_from_slice(&u16::try_from(n).unwrap_or(u16::MAX).to_le_bytes());
        buf.resize(data_start, 0);
        Self {
            buf,
            n,
            next: 0,
            data_start,
        }
    }

    fn close_feature(&mut self) {
        let end = u32::try_from(self.buf.len() - self.data_start).unwrap_or(u32::MAX);
        let at = HEADER + self.n.div_ceil(8) + 4 * (self.next + 1);
        self.buf[at..at + 4].copy_from_slice(&end.to_le_bytes());
        self.next += 1;
    }

    /// The next feature is null.
    pub fn null(&mut self) {
        self.buf[HEADER + self.next / 8] |= 1 << (self.next % 8);
        self.close_feature();
    }

    /// The next feature's bytes, written by `write` into the data area.
    pub fn value(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        write(&mut self.buf);
        self.close_feature();
    }

    /// The encoded row.
    pub fn finish(self) -> Vec<u8> {
        debug_assert_eq!(self.next, self.n, "every feature must be written");
        self.buf
    }
}

/// A stored row, decoded lazily from its bytes.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    bytes: &'a [u8],
    n: usize,
}

impl<'a> Row<'a> {
    /// Checks the header and wraps the bytes.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        Ok(Self::check(bytes)?)
    }

    /// [`Row::parse`] with the small error of the per-cell path.
    #[inline]
    pub(crate) fn check(bytes: &'a [u8]) -> Result<Self, Corrupt> {
        if bytes.len() < HEADER || bytes[0] != VERSION {
            return Err(Corrupt("bad header"));
        }
        let n = usize::from(u16::from_le_bytes([bytes[29], bytes[30]]));
        if bytes.len() < HEADER + n.div_ceil(8) + 4 * (n + 1) {
            return Err(Corrupt("truncated offsets"));
        }
        Ok(Self { bytes, n })
    }

    fn u64_at(&self, at: usize) -> u64 {
        let mut b = [0; 8];
        b.copy_from_slice(&self.bytes[at..at + 8]);
        u64::from_le_bytes(b)
    }

    /// Layout fingerprint the row was written with.
    pub fn fingerprint(&self) -> u32 {
        u32::from_le_bytes([self.bytes[1], self.bytes[2], self.bytes[3], self.bytes[4]])
    }

    /// Event timestamp, ns.
    pub fn event_ts(&self) -> i64 {
        self.u64_at(EVENT_AT) as i64
    }

    /// Created timestamp, ns (`i64::MIN` when absent).
    pub fn created_ts(&self) -> i64 {
        self.u64_at(CREATED_AT) as i64
    }

    /// `(event, created, sequence)`, the newest-wins order.
    pub fn version(&self) -> RowVersion {
        (self.event_ts(), self.created_ts(), self.u64_at(SEQUENCE_AT))
    }

    /// Number of features.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether the row has no features.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The raw bytes of feature `i`, or `None` if it is null.
    pub fn feature_bytes(&self, i: usize) -> Result<Option<&'a [u8]>> {
        Ok(self.field(i)?)
    }

    /// [`Row::feature_bytes`] with the small error of the per-cell path.
    #[inline]
    pub(crate) fn field(&self, i: usize) -> Result<Option<&'a [u8]>, Corrupt> {
        if i >= self.n {
            return Err(Corrupt("feature index past the row's features"));
        }
        let bitmap = HEADER + self.n.div_ceil(8);
        if self.bytes[HEADER + i / 8] & (1 << (i % 8)) != 0 {
            return Ok(None);
        }
        let off = |j: usize| {
            let at = bitmap + 4 * j;
            u32::from_le_bytes([
                self.bytes[at],
                self.bytes[at + 1],
                self.bytes[at + 2],
                self.bytes[at + 3],
            ]) as usize
        };
        let data = bitmap + 4 * (self.n + 1);
        let (start, end) = (data + off(i), data + off(i + 1));
        self.bytes
            .get(start..end)
            .map(Some)
            .ok_or(Corrupt("feature bytes out of bounds"))
    }
}

/// A decoded feature value, borrowing strings and bytes from the stored row.
#[derive(Debug, Clone, PartialEq)]
pub enum FeatureValue<'a> {
    /// Null (the row exists, the feature has no value).
    Null,
    /// bool
    Bool(bool),
    /// int32
    Int32(i32),
    /// int64
    Int64(i64),
    /// float32
    Float32(f32),
    /// float64
    Float64(f64),
    /// string
    String(&'a str),
    /// bytes
    Bytes(&'a [u8]),
    /// timestamp, µs since the epoch
    Timestamp(i64),
    /// A list of scalar values.
    List(Vec<FeatureValue<'a>>),
}

#[inline]
fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], Corrupt> {
    if bytes.len() < n {
        return Err(Corrupt("value truncated"));
    }
    let (head, tail) = bytes.split_at(n);
    *bytes = tail;
    Ok(head)
}

#[inline]
fn take_u32(bytes: &mut &[u8]) -> Result<u32, Corrupt> {
    let b = take(bytes, 4)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

// Always inlined: a call returns the value through memory, and reading it back right after
// stalls the per-cell read path.
#[inline(always)]
fn decode_scalar<'a>(
    t: ScalarType,
    bytes: &mut &'a [u8],
    in_list: bool,
) -> Result<FeatureValue<'a>, Corrupt> {
    let arr8 = |b: &[u8]| {
        let mut a = [0; 8];
        a.copy_from_slice(b);
        a
    };
    Ok(match t {
        ScalarType::Bool => FeatureValue::Bool(take(bytes, 1)?[0] != 0),
        ScalarType::Int32 => FeatureValue::Int32(i32::from_le_bytes(arr8_4(take(bytes, 4)?))),
        ScalarType::Float32 => FeatureValue::Float32(f32::from_le_bytes(arr8_4(take(bytes, 4)?))),
        ScalarType::Int64 => FeatureValue::Int64(i64::from_le_bytes(arr8(take(bytes, 8)?))),
        ScalarType::Float64 => FeatureValue::Float64(f64::from_le_bytes(arr8(take(bytes, 8)?))),
        ScalarType::Timestamp => FeatureValue::Timestamp(i64::from_le_bytes(arr8(take(bytes, 8)?))),
        ScalarType::String | ScalarType::Bytes => {
            let len = if in_list {
                take_u32(bytes)? as usize
            } else {
                bytes.len()
            };
            let raw = take(bytes, len)?;
            if t == ScalarType::String {
                FeatureValue::String(
                    std::str::from_utf8(raw).map_err(|_| Corrupt("invalid UTF-8"))?,
                )
            } else {
                FeatureValue::Bytes(raw)
            }
        }
    })
}

fn arr8_4(b: &[u8]) -> [u8; 4] {
    [b[0], b[1], b[2], b[3]]
}

/// Decodes feature bytes (from [`Row::feature_bytes`]) of a feature of type `t`.
pub fn decode_value(t: ValueType, bytes: Option<&[u8]>) -> Result<FeatureValue<'_>> {
    Ok(decode(t, bytes)?)
}

/// [`decode_value`] with the small error of the per-cell path.
#[inline]
pub(crate) fn decode(t: ValueType, bytes: Option<&[u8]>) -> Result<FeatureValue<'_>, Corrupt> {
    let Some(mut bytes) = bytes else {
        return Ok(FeatureValue::Null);
    };
    match t {
        ValueType::Scalar(s) => decode_scalar(s, &mut bytes, false),
        ValueType::List(s) => {
            let count = take_u32(&mut bytes)? as usize;
            let mut items = Vec::with_capacity(count.min(bytes.len()));
            for _ in 0..count {
                items.push(decode_scalar(s, &mut bytes, true)?);
            }
            Ok(FeatureValue::List(items))
        }
    }
}

/// Appends the bytes of one scalar value in a list (strings and bytes length-prefixed).
pub fn push_list_item(t: ScalarType, item: &FeatureValue<'_>, out: &mut Vec<u8>) {
    match (t, item) {
        (ScalarType::String | ScalarType::Bytes, FeatureValue::String(s)) => {
            push_prefixed(s.as_bytes(), out);
        }
        (ScalarType::String | ScalarType::Bytes, FeatureValue::Bytes(b)) => push_prefixed(b, out),
        _ => push_scalar(item, out),
    }
}

fn push_prefixed(b: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(b);
}

/// Appends the bytes of one scalar value (strings and bytes raw: the offsets give the length).
pub fn push_scalar(v: &FeatureValue<'_>, out: &mut Vec<u8>) {
    match v {
        FeatureValue::Null | FeatureValue::List(_) => {}
        FeatureValue::Bool(b) => out.push(u8::from(*b)),
        FeatureValue::Int32(x) => out.extend_from_slice(&x.to_le_bytes()),
        FeatureValue::Int64(x) | FeatureValue::Timestamp(x) => {
            out.extend_from_slice(&x.to_le_bytes());
        }
        FeatureValue::Float32(x) => out.extend_from_slice(&x.to_le_bytes()),
        FeatureValue::Float64(x) => out.extend_from_slice(&x.to_le_bytes()),
        FeatureValue::String(s) => out.extend_from_slice(s.as_bytes()),
        FeatureValue::Bytes(b) => out.extend_from_slice(b),
    }
}

/// Encodes a whole row from decoded values (used by pushes and tests; materialization encodes
/// straight from Arrow columns).
pub fn encode_row(
    features: &[Feature],
    version: RowVersion,
    values: &[FeatureValue<'_>],
) -> Vec<u8> {
    let mut w = RowWriter::new(layout_fingerprint(features), version, features.len());
    for (f, v) in features.iter().zip(values) {
        match (f.value_type, v) {
            (_, FeatureValue::Null) => w.null(),
            (ValueType::List(s), FeatureValue::List(items)) => w.value(|out| {
                out.extend_from_slice(
                    &u32::try_from(items.len()).unwrap_or(u32::MAX).to_le_bytes(),
                );
                for item in items {
                    push_list_item(s, item, out);
                }
            }),
            (_, v) => w.value(|out| push_scalar(v, out)),
        }
    }
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feature(name: &str, t: &str) -> Feature {
        Feature {
            name: name.into(),
            value_type: t.parse().unwrap(),
            description: String::new(),
        }
    }

    #[test]
    fn round_trips_every_type_with_nulls() {
        let features = vec![
            feature("a", "bool"),
            feature("b", "int32"),
            feature("c", "int64"),
            feature("d", "float32"),
            feature("e", "float64"),
            feature("f", "string"),
            feature("g", "bytes"),
            feature("h", "timestamp"),
            feature("i", "list<string>"),
            feature("j", "list<int64>"),
            feature("k", "float64"),
        ];
        let values = vec![
            FeatureValue::Bool(true),
            FeatureValue::Int32(-7),
            FeatureValue::Int64(1 << 40),
            FeatureValue::Float32(0.5),
            FeatureValue::Float64(-2.25),
            FeatureValue::String("héllo"),
            FeatureValue::Bytes(&[0, 1, 2]),
            FeatureValue::Timestamp(1_700_000_000_000_000),
            FeatureValue::List(vec![FeatureValue::String("x"), FeatureValue::String("")]),
            FeatureValue::List(vec![]),
            FeatureValue::Null,
        ];
        let bytes = encode_row(&features, (10, 20, 30), &values);
        let row = Row::parse(&bytes).unwrap();
        assert_eq!(row.version(), (10, 20, 30));
        assert_eq!(row.fingerprint(), layout_fingerprint(&features));
        assert_eq!(row.len(), features.len());
        for (i, (f, v)) in features.iter().zip(&values).enumerate() {
            assert_eq!(
                &decode_value(f.value_type, row.feature_bytes(i).unwrap()).unwrap(),
                v,
                "{}",
                f.name
            );
        }
    }

    #[test]
    fn fingerprint_changes_with_names_and_types() {
        let a = layout_fingerprint(&[feature("x", "int64")]);
        assert_ne!(a, layout_fingerprint(&[feature("x", "int32")]));
        assert_ne!(a, layout_fingerprint(&[feature("y", "int64")]));
        assert_eq!(a, layout_fingerprint(&[feature("x", "int64")]));
    }

    #[test]
    fn corrupt_rows_are_errors_not_panics() {
        assert!(Row::parse(&[]).is_err());
        assert!(Row::parse(&[9; 40]).is_err());
        let bytes = encode_row(
            &[feature("s", "string")],
            (0, 0, 0),
            &[FeatureValue::String("abc")],
        );
        assert!(Row::parse(&bytes[..bytes.len() - 10]).is_err());
        let row = Row::parse(&bytes[..bytes.len() - 1]).unwrap();
        assert!(row.feature_bytes(0).is_err());
    }
}
