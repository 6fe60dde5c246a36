//! Event times as nanoseconds since the Unix epoch, whatever the column's unit.
//!
//! Arrow timestamps store UTC instants whether or not they carry a time zone, and a naive
//! timestamp is read as UTC, so the stored values are converted by unit only (never through a
//! time zone). Instants outside the `i64` nanosecond range (before 1677 or after 2262) become
//! null: such rows match nothing.

use arrow::array::{Array, AsArray, Int64Array};
use arrow::datatypes::{
    DataType, Int64Type, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};

/// The instants of a timestamp column in nanoseconds, or `None` if it is not a timestamp.
pub fn nanos(array: &dyn Array) -> Option<Int64Array> {
    let DataType::Timestamp(unit, _) = array.data_type() else {
        return None;
    };
    let scaled = |factor: i64| move |v: i64| v.checked_mul(factor);
    Some(match unit {
        TimeUnit::Second => array
            .as_primitive::<TimestampSecondType>()
            .unary_opt::<_, Int64Type>(scaled(1_000_000_000)),
        TimeUnit::Millisecond => array
            .as_primitive::<TimestampMillisecondType>()
            .unary_opt::<_, Int64Type>(scaled(1_000_000)),
        TimeUnit::Microsecond => array
            .as_primitive::<TimestampMicrosecondType>()
            .unary_opt::<_, Int64Type>(scaled(1_000)),
        TimeUnit::Nanosecond => array
            .as_primitive::<TimestampNanosecondType>()
            .reinterpret_cast::<Int64Type>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{TimestampMillisecondArray, TimestampSecondArray};

    #[test]
    fn converts_units_and_ignores_time_zones() {
        let ms = TimestampMillisecondArray::from(vec![Some(1_500), None]).with_timezone("+02:00");
        let n = nanos(&ms).unwrap();
        assert_eq!(n.value(0), 1_500_000_000);
        assert!(n.is_null(1));
    }

    #[test]
    fn out_of_range_instants_become_null() {
        let s = TimestampSecondArray::from(vec![i64::MAX / 10]);
        assert!(nanos(&s).unwrap().is_null(0));
        assert!(nanos(&Int64Array::from(vec![1])).is_none());
    }
}
