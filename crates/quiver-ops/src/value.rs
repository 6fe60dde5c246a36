//! Values as clients send them, checked against declared types.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanBuilder, Float32Builder, Float64Builder,
    Int32Builder, Int64Builder, ListBuilder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit, TimestampNanosecondType};
use quiver_core::{KeyValue, ScalarType, TimestampUnit, ValueType, parse_time_nanos};
use quiver_online::FeatureValue;

use crate::error::{OpsError, Result};

/// A value as a client sent it, before it is checked against a declared type. Protocols turn
/// their own values (protobuf, JSON) into these.
#[derive(Debug, Clone, PartialEq)]
pub enum InputValue {
    /// No value.
    Null,
    /// A bool.
    Bool(bool),
    /// An integer (int32, int64, a JSON integer).
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// A string.
    String(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// An instant, in ns since the epoch.
    Timestamp(i64),
    /// A list.
    List(Vec<InputValue>),
}

impl InputValue {
    /// The values of an Arrow column (bools, integers, floats, strings, bytes, timestamps of
    /// any unit and lists of these), or an error naming `column` and its type.
    pub fn column_of(array: &dyn Array, column: &str) -> Result<Vec<Self>> {
        let unsupported = || {
            OpsError::InvalidRequest(format!(
                "column '{column}' is of type {}, which Quiver cannot store",
                array.data_type()
            ))
        };
        let values: Vec<Self> = match array.data_type() {
            DataType::Null => vec![Self::Null; array.len()],
            DataType::Boolean => collect(array.as_boolean().iter(), Self::Bool),
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::Int64 => {
                let a = cast(array, &DataType::Int64).map_err(|_| unsupported())?;
                collect(a.as_primitive::<Int64Type>().iter(), Self::Int)
            }
            DataType::Float16 | DataType::Float32 | DataType::Float64 => {
                let a = cast(array, &DataType::Float64).map_err(|_| unsupported())?;
                collect(a.as_primitive::<Float64Type>().iter(), Self::Float)
            }
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                let a = cast(array, &DataType::Utf8).map_err(|_| unsupported())?;
                collect(a.as_string::<i32>().iter(), |s| Self::String(s.to_owned()))
            }
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
                let a = cast(array, &DataType::Binary).map_err(|_| unsupported())?;
                collect(a.as_binary::<i32>().iter(), |b| Self::Bytes(b.to_vec()))
            }
            DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => {
                let ns = DataType::Timestamp(TimeUnit::Nanosecond, None);
                let a = cast(array, &ns).map_err(|_| unsupported())?;
                collect(
                    a.as_primitive::<TimestampNanosecondType>().iter(),
                    Self::Timestamp,
                )
            }
            DataType::List(_) | DataType::LargeList(_) => {
                let a = cast(
                    array,
                    &DataType::LargeList(match array.data_type() {
                        DataType::List(f) | DataType::LargeList(f) => f.clone(),
                        _ => return Err(unsupported()),
                    }),
                )
                .map_err(|_| unsupported())?;
                let list = a.as_list::<i64>();
                let mut out = Vec::with_capacity(list.len());
                for i in 0..list.len() {
                    out.push(if list.is_null(i) {
                        Self::Null
                    } else {
                        Self::List(Self::column_of(list.value(i).as_ref(), column)?)
                    });
                }
                out
            }
            _ => return Err(unsupported()),
        };
        Ok(values)
    }

    /// What kind of value this is, for messages ("a string").
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool(_) => "a bool",
            Self::Int(_) => "an integer",
            Self::Float(_) => "a float",
            Self::String(_) => "a string",
            Self::Bytes(_) => "bytes",
            Self::Timestamp(_) => "a timestamp",
            Self::List(_) => "a list",
        }
    }

    /// This value as a join-key value of join key `name`, entity row `row`.
    pub fn key(&self, name: &str, row: usize) -> Result<KeyValue> {
        match self {
            Self::Int(v) => Ok(KeyValue::Int(*v)),
            Self::String(s) => Ok(KeyValue::String(s.clone())),
            Self::Bytes(b) => Ok(KeyValue::Bytes(b.clone())),
            other => Err(OpsError::invalid(format!(
                "join key '{name}', row {row}: expected an integer, string or bytes, got {}",
                other.kind()
            ))),
        }
    }

    /// This value as an instant (ns): a timestamp, an RFC 3339 string, or an integer in
    /// `unit` (integers are refused without a unit: seconds and microseconds look alike).
    pub fn instant(&self, unit: Option<TimestampUnit>, what: &dyn Fn() -> String) -> Result<i64> {
        match (self, unit) {
            (Self::Timestamp(ns), _) => Ok(*ns),
            (Self::String(s), _) => {
                parse_time_nanos(s).map_err(|e| OpsError::invalid(format!("{}: {e}", what())))
            }
            (Self::Int(v), Some(unit)) => unit.to_nanos(*v).ok_or_else(|| {
                OpsError::invalid(format!(
                    "{}: {v} {unit} is outside the range Quiver stores (1677 to 2262)",
                    what()
                ))
            }),
            (Self::Int(v), None) => Err(OpsError::invalid(format!(
                "{}: the integer {v} has no unit; send a timestamp or RFC 3339 text, or say the unit of integer times (timestamp_unit: s, ms, us or ns)",
                what()
            ))),
            (other, _) => Err(OpsError::invalid(format!(
                "{}: expected a timestamp, got {}",
                what(),
                other.kind()
            ))),
        }
    }

    /// This value as a feature of type `t`, refusing values the type cannot hold exactly
    /// enough (an integer out of range, a float beyond float32's range); `what` names it.
    pub fn feature(
        &self,
        t: ValueType,
        unit: Option<TimestampUnit>,
        what: &dyn Fn() -> String,
    ) -> Result<FeatureValue<'_>> {
        match (t, self) {
            (_, Self::Null) => Ok(FeatureValue::Null),
            (ValueType::Scalar(s), v) => scalar(s, v, unit, what),
            (ValueType::List(s), Self::List(items)) => items
                .iter()
                .map(|i| scalar(s, i, unit, what))
                .collect::<Result<_>>()
                .map(FeatureValue::List),
            (ValueType::List(_), other) => Err(OpsError::invalid(format!(
                "{}: expected {t}, got {}",
                what(),
                other.kind()
            ))),
        }
    }
}

/// Each value of an Arrow iterator as an input value, nulls as [`InputValue::Null`].
fn collect<T>(
    values: impl Iterator<Item = Option<T>>,
    to: impl Fn(T) -> InputValue,
) -> Vec<InputValue> {
    values.map(|v| v.map_or(InputValue::Null, &to)).collect()
}

fn scalar<'a>(
    t: ScalarType,
    v: &'a InputValue,
    unit: Option<TimestampUnit>,
    what: &dyn Fn() -> String,
) -> Result<FeatureValue<'a>> {
    let bad = || OpsError::invalid(format!("{}: expected {t}, got {}", what(), v.kind()));
    let out_of_range =
        |shown: String| OpsError::invalid(format!("{}: {shown} does not fit in {t}", what()));
    Ok(match (t, v) {
        (ScalarType::Bool, InputValue::Bool(b)) => FeatureValue::Bool(*b),
        (ScalarType::Int32, InputValue::Int(i)) => {
            FeatureValue::Int32(i32::try_from(*i).map_err(|_| out_of_range(i.to_string()))?)
        }
        (ScalarType::Int64, InputValue::Int(i)) => FeatureValue::Int64(*i),
        (ScalarType::Float32, InputValue::Float(f)) => {
            let narrow = *f as f32;
            if f.is_finite() && !narrow.is_finite() {
                return Err(out_of_range(f.to_string()));
            }
            FeatureValue::Float32(narrow)
        }
        (ScalarType::Float32, InputValue::Int(i)) => FeatureValue::Float32(*i as f32),
        (ScalarType::Float64, InputValue::Float(f)) => FeatureValue::Float64(*f),
        (ScalarType::Float64, InputValue::Int(i)) => FeatureValue::Float64(*i as f64),
        (ScalarType::String, InputValue::String(s)) => FeatureValue::String(s),
        (ScalarType::Bytes, InputValue::Bytes(b)) => FeatureValue::Bytes(b),
        // A timestamp feature is stored in µs.
        (
            ScalarType::Timestamp,
            InputValue::Timestamp(_) | InputValue::String(_) | InputValue::Int(_),
        ) => FeatureValue::Timestamp(v.instant(unit, what)?.div_euclid(1_000)),
        _ => return Err(bad()),
    })
}

/// An Arrow array of declared type `t` holding `values` (already checked against `t`).
pub(crate) fn arrow_array(t: ValueType, values: &[FeatureValue<'_>]) -> ArrayRef {
    match t {
        ValueType::Scalar(s) => scalar_array(s, values.iter()),
        ValueType::List(s) => {
            macro_rules! list {
                ($builder:expr, $pat:pat => $e:expr) => {{
                    let mut b = ListBuilder::new($builder);
                    for v in values {
                        match v {
                            FeatureValue::List(items) => {
                                for item in items {
                                    match item {
                                        $pat => b.values().append_value($e),
                                        _ => b.values().append_null(),
                                    }
                                }
                                b.append(true);
                            }
                            _ => b.append(false),
                        }
                    }
                    Arc::new(b.finish()) as ArrayRef
                }};
            }
            match s {
                ScalarType::Bool => list!(BooleanBuilder::new(), FeatureValue::Bool(x) => *x),
                ScalarType::Int32 => list!(Int32Builder::new(), FeatureValue::Int32(x) => *x),
                ScalarType::Int64 => list!(Int64Builder::new(), FeatureValue::Int64(x) => *x),
                ScalarType::Float32 => list!(Float32Builder::new(), FeatureValue::Float32(x) => *x),
                ScalarType::Float64 => list!(Float64Builder::new(), FeatureValue::Float64(x) => *x),
                ScalarType::String => list!(StringBuilder::new(), FeatureValue::String(x) => *x),
                ScalarType::Bytes => list!(BinaryBuilder::new(), FeatureValue::Bytes(x) => *x),
                ScalarType::Timestamp => list!(
                    TimestampMicrosecondBuilder::new().with_timezone("UTC"),
                    FeatureValue::Timestamp(x) => *x
                ),
            }
        }
    }
}

fn scalar_array<'v, 'a: 'v>(
    t: ScalarType,
    values: impl Iterator<Item = &'v FeatureValue<'a>>,
) -> ArrayRef {
    macro_rules! scalar {
        ($builder:expr, $pat:pat => $e:expr) => {{
            let mut b = $builder;
            for v in values {
                match v {
                    $pat => b.append_value($e),
                    _ => b.append_null(),
                }
            }
            Arc::new(b.finish()) as ArrayRef
        }};
    }
    match t {
        ScalarType::Bool => scalar!(BooleanBuilder::new(), FeatureValue::Bool(x) => *x),
        ScalarType::Int32 => scalar!(Int32Builder::new(), FeatureValue::Int32(x) => *x),
        ScalarType::Int64 => scalar!(Int64Builder::new(), FeatureValue::Int64(x) => *x),
        ScalarType::Float32 => scalar!(Float32Builder::new(), FeatureValue::Float32(x) => *x),
        ScalarType::Float64 => scalar!(Float64Builder::new(), FeatureValue::Float64(x) => *x),
        ScalarType::String => scalar!(StringBuilder::new(), FeatureValue::String(x) => *x),
        ScalarType::Bytes => scalar!(BinaryBuilder::new(), FeatureValue::Bytes(x) => *x),
        ScalarType::Timestamp => scalar!(
            TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            FeatureValue::Timestamp(x) => *x
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn what() -> String {
        "feature 'v:f', row 0".into()
    }

    #[test]
    fn arrow_columns_become_input_values() {
        use arrow::array::{
            Float32Array, ListArray, StringArray, TimestampMicrosecondArray, UInt64Array,
        };
        use arrow::datatypes::Int32Type;
        let times = TimestampMicrosecondArray::from(vec![Some(5), None]).with_timezone("UTC");
        assert_eq!(
            InputValue::column_of(&times, "ts").unwrap(),
            vec![InputValue::Timestamp(5_000), InputValue::Null]
        );
        let floats = Float32Array::from(vec![0.5]);
        assert_eq!(
            InputValue::column_of(&floats, "f").unwrap(),
            vec![InputValue::Float(0.5)]
        );
        let strings = StringArray::from(vec![Some("a"), None]);
        assert_eq!(
            InputValue::column_of(&strings, "s").unwrap(),
            vec![InputValue::String("a".into()), InputValue::Null]
        );
        let lists = ListArray::from_iter_primitive::<Int32Type, _, _>([Some(vec![Some(1)]), None]);
        assert_eq!(
            InputValue::column_of(&lists, "l").unwrap(),
            vec![InputValue::List(vec![InputValue::Int(1)]), InputValue::Null]
        );
        // A u64 may not fit an int64: refused, naming the column.
        let err = InputValue::column_of(&UInt64Array::from(vec![1]), "big").unwrap_err();
        assert!(
            err.to_string().contains("column 'big' is of type UInt64"),
            "{err}"
        );
    }

    #[test]
    fn values_that_do_not_fit_are_refused() {
        let f32_type: ValueType = "float32".parse().unwrap();
        let err = InputValue::Float(1e308)
            .feature(f32_type, None, &what)
            .unwrap_err();
        assert!(err.to_string().contains("does not fit in float32"), "{err}");
        assert_eq!(
            InputValue::Float(0.5)
                .feature(f32_type, None, &what)
                .unwrap(),
            FeatureValue::Float32(0.5)
        );
        let i32_type: ValueType = "int32".parse().unwrap();
        assert!(
            InputValue::Int(1 << 40)
                .feature(i32_type, None, &what)
                .is_err()
        );
        let list: ValueType = "list<float32>".parse().unwrap();
        assert!(
            InputValue::List(vec![InputValue::Float(1e300)])
                .feature(list, None, &what)
                .is_err()
        );
    }

    #[test]
    fn integer_times_need_a_unit() {
        let err = InputValue::Int(1_704_067_200)
            .instant(None, &what)
            .unwrap_err();
        assert!(err.to_string().contains("timestamp_unit"), "{err}");
        assert_eq!(
            InputValue::Int(1_704_067_200)
                .instant(Some(TimestampUnit::Seconds), &what)
                .unwrap(),
            1_704_067_200_000_000_000
        );
        assert_eq!(
            InputValue::String("2024-01-01T00:00:00Z".into())
                .instant(None, &what)
                .unwrap(),
            1_704_067_200_000_000_000
        );
    }
}
