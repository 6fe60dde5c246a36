//! What the benchmark harnesses share: the synthetic features their views are made of
//! (even-numbered features float64, odd ones int64), as Arrow fields, random columns and
//! Quiver definitions.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array};
use arrow::datatypes::{DataType, Field};
use rand::Rng;
use rand::rngs::StdRng;

fn is_float(i: usize) -> bool {
    i.is_multiple_of(2)
}

/// Nullable Arrow fields of `n` features named `{prefix}{i}`.
pub fn feature_fields(prefix: &str, n: usize) -> Vec<Field> {
    (0..n)
        .map(|i| {
            let t = if is_float(i) {
                DataType::Float64
            } else {
                DataType::Int64
            };
            Field::new(format!("{prefix}{i}"), t, true)
        })
        .collect()
}

/// `rows` random values of feature `i`, each present with probability `present` (floats in
/// [0, 1), integers in [0, 1,000,000)).
pub fn feature_column(i: usize, rows: usize, present: f64, rng: &mut StdRng) -> ArrayRef {
    let some = |rng: &mut StdRng| present >= 1.0 || rng.random_bool(present);
    if is_float(i) {
        Arc::new(Float64Array::from_iter(
            (0..rows).map(|_| some(rng).then(|| rng.random::<f64>())),
        ))
    } else {
        Arc::new(Int64Array::from_iter(
            (0..rows).map(|_| some(rng).then(|| rng.random_range(0..1_000_000))),
        ))
    }
}

/// The `features:` entries of a view definition for `n` features named `{prefix}{i}`.
pub fn feature_definitions(prefix: &str, n: usize) -> String {
    (0..n)
        .map(|i| {
            let t = if is_float(i) { "float64" } else { "int64" };
            format!("      - {{name: {prefix}{i}, type: {t}}}\n")
        })
        .collect()
}
