//! A view's source as Spark SQL: every file its own numbered relation, so the cluster sees
//! the rows, times and last tie-break exactly as `quiver-source` does.

use arrow::array::{ArrayRef, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type, TimeUnit, TimestampNanosecondType};
use quiver_core::{Feature, FeatureView, JoinKey};
use quiver_source::{ROW_BITS, SourceFile, SourceScan};

use crate::error::{Result, SparkError};

/// One view's source rows on the cluster.
pub(crate) struct SourceRows<'a> {
    pub(crate) view: &'a FeatureView,
    pub(crate) scan: &'a SourceScan,
    pub(crate) features: &'a [&'a Feature],
}

impl SourceRows<'_> {
    /// Every file of the source as its own relation, numbered in listing order: keys as
    /// `k<i>` in their declared types, `ev` and `cr` in ns, `f` and `r` (file and row), the
    /// features as `f<i>`.
    pub(crate) fn sql(&self) -> Result<String> {
        let (ts, created) = self.scan.time_columns();
        let mut parts = Vec::with_capacity(self.scan.file_count());
        for file in 0..self.scan.file_count() {
            let mut select: Vec<String> = self
                .scan
                .keys()
                .zip(self.scan.key_columns())
                .enumerate()
                .map(|(i, (k, c))| format!("TRY_CAST({} AS {}) AS k{i}", ident(c), key_sql_type(k)))
                .collect();
            select.push(format!("{} AS ev", self.time(file, ts)?));
            select.push(match created {
                Some(c) => format!(
                    "COALESCE({}, {}) AS cr",
                    self.time(file, c)?,
                    literal(i64::MIN)
                ),
                None => format!("{} AS cr", literal(i64::MIN)),
            });
            select.push(format!("{file} AS f"));
            select.push("_metadata.row_index AS r".to_owned());
            for (i, f) in self.features.iter().enumerate() {
                select.push(format!("{} AS f{i}", ident(self.scan.feature_column(f))));
            }
            parts.push(format!(
                "SELECT {} FROM parquet.{}",
                select.join(", "),
                ident(&self.location(file)?)
            ));
        }
        Ok(parts.join(" UNION ALL "))
    }

    /// The key columns `k0, k1, …` (the view's keys in canonical order).
    pub(crate) fn key_names(&self) -> Vec<String> {
        (0..self.scan.keys().count())
            .map(|i| format!("k{i}"))
            .collect()
    }

    /// The view's ttl in ns, if it has one.
    pub(crate) fn ttl(&self) -> Option<i64> {
        self.view
            .ttl
            .limit()
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }

    /// `named_struct('f0', f0, …)` fields of the features, after `first`.
    pub(crate) fn feature_fields(&self, first: &str) -> String {
        let mut fields = vec![first.to_owned()];
        fields.extend((0..self.features.len()).map(|i| format!("'f{i}', f{i}")));
        fields.join(", ")
    }

    /// Spark's column of feature `i` in the feature's declared type.
    pub(crate) fn declared(&self, i: usize, column: &ArrayRef) -> Result<ArrayRef> {
        let declared = self.features[i].value_type.to_arrow();
        if self.nanosecond_feature(i) && column.data_type() == &DataType::Int64 {
            let ns = column
                .as_primitive::<Int64Type>()
                .reinterpret_cast::<TimestampNanosecondType>()
                .with_timezone("UTC");
            Ok(cast(&ns, &declared)?)
        } else {
            Ok(cast(column, &declared)?)
        }
    }

    /// A time column of one file as nanoseconds.
    fn time(&self, file: usize, column: &str) -> Result<String> {
        match self.scan.column_type(file, column) {
            // Read as its raw values (`nanosAsLong`).
            Some(DataType::Timestamp(TimeUnit::Nanosecond, _)) => Ok(ident(column)),
            Some(DataType::Timestamp(_, _)) => Ok(format!(
                "unix_micros(CAST({} AS TIMESTAMP)) * 1000",
                ident(column)
            )),
            other => Err(SparkError::Unsupported {
                view: self.view.name.clone(),
                message: format!("time column '{column}' has type {other:?}"),
            }),
        }
    }

    /// Where the cluster reads file `file`, as a Hadoop path with glob characters escaped.
    fn location(&self, file: usize) -> Result<String> {
        let url = match self.scan.file(file) {
            SourceFile::Local(path) => format!("file://{}", path.display()),
            SourceFile::Object(o) => {
                let url = o.url.to_string();
                match url.strip_prefix("s3://") {
                    Some(rest) => format!("s3a://{rest}"),
                    None if url.starts_with("gs://") => url,
                    None => {
                        return Err(SparkError::Unsupported {
                            view: self.view.name.clone(),
                            message: format!("Spark cannot read {url} (only s3:// and gs://)"),
                        });
                    }
                }
            }
        };
        Ok(url
            .chars()
            .flat_map(|c| {
                let escape = matches!(c, '\\' | '*' | '?' | '[' | ']' | '{' | '}' | '^');
                escape.then_some('\\').into_iter().chain([c])
            })
            .collect())
    }

    /// The feature whose Parquet column is nanosecond times (read by Spark as integers).
    fn nanosecond_feature(&self, i: usize) -> bool {
        let column = self.scan.feature_column(self.features[i]);
        (0..self.scan.file_count()).any(|f| {
            matches!(
                self.scan.column_type(f, column),
                Some(DataType::Timestamp(TimeUnit::Nanosecond, _))
            )
        })
    }
}

/// `c IS NOT NULL AND …` over `columns`.
pub(crate) fn not_null(columns: impl Iterator<Item = String>) -> String {
    columns
        .map(|c| format!("{c} IS NOT NULL"))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// A source row's sequence as one BIGINT, from its file number and row in file: the native
/// engine's last tie-break, in its order (`quiver_source::ROW_BITS`).
pub(crate) fn sequence(file: &str, row: &str) -> String {
    format!("shiftleft(CAST({file} AS BIGINT), {ROW_BITS}) | {row}")
}

/// A Spark SQL identifier, quoted.
pub(crate) fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A BIGINT literal (the least one is not writable as a literal).
pub(crate) fn literal(v: i64) -> String {
    if v == i64::MIN {
        format!("({} - 1)", i64::MIN + 1)
    } else {
        format!("CAST({v} AS BIGINT)")
    }
}

/// The Spark type of a declared key type.
fn key_sql_type(k: &JoinKey) -> &'static str {
    match k.key_type {
        quiver_core::KeyType::Int32 => "INT",
        quiver_core::KeyType::Int64 => "BIGINT",
        quiver_core::KeyType::String => "STRING",
        quiver_core::KeyType::Bytes => "BINARY",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(ident("a`b"), "`a``b`");
        assert_eq!(literal(i64::MIN), "(-9223372036854775807 - 1)");
        assert_eq!(literal(5), "CAST(5 AS BIGINT)");
        assert_eq!(
            not_null(["k0".to_owned(), "k2".to_owned()].into_iter()),
            "k0 IS NOT NULL AND k2 IS NOT NULL"
        );
    }
}
