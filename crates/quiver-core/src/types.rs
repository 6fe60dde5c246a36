//! Value types of features and join keys, and how they map to Arrow.

use std::fmt;
use std::str::FromStr;

use arrow::datatypes::{DataType, Field, TimeUnit};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{CoreError, Result};

/// A scalar value type. Every feature has a [`ValueType`], which is a scalar or a list of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScalarType {
    /// `bool`
    Bool,
    /// `int32`
    Int32,
    /// `int64`
    Int64,
    /// `float32`
    Float32,
    /// `float64`
    Float64,
    /// `string` (UTF-8)
    String,
    /// `bytes`
    Bytes,
    /// `timestamp`: an instant, UTC.
    Timestamp,
}

impl ScalarType {
    /// Every scalar type, in declaration order.
    pub const ALL: [ScalarType; 8] = [
        Self::Bool,
        Self::Int32,
        Self::Int64,
        Self::Float32,
        Self::Float64,
        Self::String,
        Self::Bytes,
        Self::Timestamp,
    ];

    /// The name used in definition files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bool => "bool",
            Self::Int32 => "int32",
            Self::Int64 => "int64",
            Self::Float32 => "float32",
            Self::Float64 => "float64",
            Self::String => "string",
            Self::Bytes => "bytes",
            Self::Timestamp => "timestamp",
        }
    }

    /// The Arrow type Quiver produces for this scalar type.
    pub fn to_arrow(self) -> DataType {
        match self {
            Self::Bool => DataType::Boolean,
            Self::Int32 => DataType::Int32,
            Self::Int64 => DataType::Int64,
            Self::Float32 => DataType::Float32,
            Self::Float64 => DataType::Float64,
            Self::String => DataType::Utf8,
            Self::Bytes => DataType::Binary,
            Self::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        }
    }

    /// Whether a source column of Arrow type `source` can be read as this type without loss.
    pub fn accepts(self, source: &DataType) -> bool {
        use DataType as D;
        match self {
            Self::Bool => matches!(source, D::Boolean),
            Self::Int32 => matches!(source, D::Int8 | D::Int16 | D::Int32 | D::UInt8 | D::UInt16),
            Self::Int64 => matches!(
                source,
                D::Int8 | D::Int16 | D::Int32 | D::Int64 | D::UInt8 | D::UInt16 | D::UInt32
            ),
            Self::Float32 => matches!(source, D::Float16 | D::Float32),
            Self::Float64 => matches!(source, D::Float16 | D::Float32 | D::Float64),
            Self::String => matches!(source, D::Utf8 | D::LargeUtf8 | D::Utf8View),
            Self::Bytes => matches!(
                source,
                D::Binary | D::LargeBinary | D::BinaryView | D::FixedSizeBinary(_)
            ),
            Self::Timestamp => matches!(source, D::Timestamp(_, _)),
        }
    }
}

impl fmt::Display for ScalarType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The type of a feature: a scalar, or a list of a scalar (`list<int64>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ValueType {
    /// A single value.
    Scalar(ScalarType),
    /// A list of values of one scalar type.
    List(ScalarType),
}

impl ValueType {
    /// The Arrow type Quiver produces for this type.
    pub fn to_arrow(self) -> DataType {
        match self {
            Self::Scalar(s) => s.to_arrow(),
            Self::List(s) => DataType::List(Field::new_list_field(s.to_arrow(), true).into()),
        }
    }

    /// Whether a source column of Arrow type `source` can be read as this type without loss.
    pub fn accepts(self, source: &DataType) -> bool {
        match (self, source) {
            (Self::Scalar(s), _) => s.accepts(source),
            (
                Self::List(s),
                DataType::List(f)
                | DataType::LargeList(f)
                | DataType::ListView(f)
                | DataType::LargeListView(f)
                | DataType::FixedSizeList(f, _),
            ) => s.accepts(f.data_type()),
            (Self::List(_), _) => false,
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Scalar(s) => write!(f, "{s}"),
            Self::List(s) => write!(f, "list<{s}>"),
        }
    }
}

impl FromStr for ScalarType {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.name() == s.trim())
            .ok_or_else(|| CoreError::InvalidType(s.to_owned()))
    }
}

impl FromStr for ValueType {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim();
        if let Some(inner) = t.strip_prefix("list<").and_then(|r| r.strip_suffix('>')) {
            return inner
                .parse()
                .map(Self::List)
                .map_err(|_| CoreError::InvalidType(s.to_owned()));
        }
        t.parse().map(Self::Scalar)
    }
}

/// The type of a join key. Keys are compared by value with their declared type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyType {
    /// `int32`
    Int32,
    /// `int64`
    Int64,
    /// `string`
    String,
    /// `bytes`
    Bytes,
}

impl KeyType {
    /// The value type this key type corresponds to.
    pub fn value_type(self) -> ValueType {
        ValueType::Scalar(match self {
            Self::Int32 => ScalarType::Int32,
            Self::Int64 => ScalarType::Int64,
            Self::String => ScalarType::String,
            Self::Bytes => ScalarType::Bytes,
        })
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value_type().fmt(f)
    }
}

impl FromStr for KeyType {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "int32" => Ok(Self::Int32),
            "int64" => Ok(Self::Int64),
            "string" => Ok(Self::String),
            "bytes" => Ok(Self::Bytes),
            _ => Err(CoreError::InvalidKeyType(s.to_owned())),
        }
    }
}

macro_rules! serde_via_str {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}
serde_via_str!(ValueType, KeyType);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scalar_and_list_type() {
        for s in ScalarType::ALL {
            assert_eq!(s.name().parse::<ValueType>().unwrap(), ValueType::Scalar(s));
            let list = format!("list<{s}>");
            assert_eq!(list.parse::<ValueType>().unwrap(), ValueType::List(s));
            assert_eq!(ValueType::List(s).to_string(), list);
        }
    }

    #[test]
    fn rejects_unknown_types_by_name() {
        for bad in ["int", "list<list<int64>>", "list<>", "float", "Int64"] {
            let err = bad.parse::<ValueType>().unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
        assert!("float64".parse::<KeyType>().is_err());
    }

    #[test]
    fn compatibility_is_lossless_only() {
        let int64 = ValueType::Scalar(ScalarType::Int64);
        assert!(int64.accepts(&DataType::Int32));
        assert!(!int64.accepts(&DataType::UInt64));
        assert!(!int64.accepts(&DataType::Float64));
        let f32 = ValueType::Scalar(ScalarType::Float32);
        assert!(!f32.accepts(&DataType::Float64));
        let list = ValueType::List(ScalarType::Float64);
        assert!(list.accepts(&DataType::LargeList(
            Field::new_list_field(DataType::Float32, true).into()
        )));
        assert!(!list.accepts(&DataType::Float64));
        assert!(
            ValueType::Scalar(ScalarType::Timestamp)
                .accepts(&DataType::Timestamp(TimeUnit::Nanosecond, None))
        );
    }
}
