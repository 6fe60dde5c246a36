//! The newest row per key of a window, computed on the cluster for materialization.
//!
//! One SQL query per view groups the source's rows in the window by key and keeps, with
//! `max_by(row, (event_ts, created_ts, file, row in file))`, the version the native
//! materializer keeps: the same order, the same last tie-break (files numbered in
//! `quiver-source`'s listing order, `_metadata.row_index`), so the online store ends up the
//! same. Each group also counts its rows in the window and its rows without an event time, so
//! rows skipped for a null key or time are reported as the native engine reports them. The
//! answer streams back batch by batch; nothing holds the whole window.

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use arrow::compute::take;
use arrow::datatypes::Int64Type;
use quiver_core::{JoinKey, KeyColumns};
use quiver_source::VersionedRows;

use crate::error::{Result, SparkError};
use crate::source::{SourceRows, literal, sequence};

/// What the cluster counted of a window's rows, beside the newest rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NewestCounts {
    /// Rows inside the window.
    pub rows_in_window: u64,
    /// Rows in the window with a null join key (skipped).
    pub skipped_null_key: u64,
    /// Rows with a null event time (skipped).
    pub skipped_null_timestamp: u64,
}

/// The query of one view's window.
pub(crate) struct NewestPlan<'a> {
    pub(crate) rows: SourceRows<'a>,
    /// Start and end (ns, inclusive).
    pub(crate) window: (i64, i64),
}

impl NewestPlan<'_> {
    /// `k0, …, n, nts, ev, cr, s, f0, …`: per key, its rows in the window (`n`), its rows
    /// without event time (`nts`) and its newest row (null when `n` is 0); `s` is the native
    /// engine's sequence, file and row in file.
    pub(crate) fn query(&self) -> Result<String> {
        let keys = self.rows.key_names().join(", ");
        let value = format!(
            "named_struct({})",
            self.rows
                .feature_fields(&format!("'ev', ev, 'cr', cr, 's', {}", sequence("f", "r")))
        );
        let out: String = (0..self.rows.features.len())
            .map(|i| format!(", w.f{i} AS f{i}"))
            .collect();
        let (lo, hi) = self.window;
        Ok(format!(
            "SELECT {keys}, n, nts, w.ev AS ev, w.cr AS cr, w.s AS s{out} FROM (\
               SELECT {keys}, count_if(ev IS NOT NULL) AS n, count_if(ev IS NULL) AS nts, \
                 max_by({value}, CASE WHEN ev IS NOT NULL \
                   THEN named_struct('ev', ev, 'cr', cr, 'f', f, 'r', r) END) AS w \
               FROM ({source}) WHERE ev IS NULL OR (ev >= {lo} AND ev <= {hi}) GROUP BY {keys}\
             )",
            source = self.rows.sql()?,
            lo = literal(lo),
            hi = literal(hi),
        ))
    }

    /// The newest rows of one batch of the answer (`None` when it has none), counting its
    /// rows into `counts`.
    pub(crate) fn rows(
        &self,
        batch: &RecordBatch,
        counts: &mut NewestCounts,
    ) -> Result<Option<VersionedRows>> {
        let keys: Vec<JoinKey> = self.rows.scan.keys().cloned().collect();
        let bad = |message: String| SparkError::Unsupported {
            view: self.rows.view.name.clone(),
            message,
        };
        let expected = keys.len() + 5 + self.rows.features.len();
        if batch.num_columns() != expected {
            return Err(bad(format!(
                "the cluster answered {} columns, not {expected}",
                batch.num_columns()
            )));
        }
        let column = |i: usize| -> Result<&arrow::array::Int64Array> {
            batch
                .column(i)
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(|| bad(format!("column {i} is not BIGINT")))
        };
        let k = keys.len();
        let (n, nts) = (column(k)?, column(k + 1)?);
        let (ev, cr, s) = (column(k + 2)?, column(k + 3)?, column(k + 4)?);
        let mut kept = Vec::new();
        for i in 0..batch.num_rows() {
            let in_window = u64::try_from(n.value(i)).unwrap_or(0);
            counts.skipped_null_timestamp += u64::try_from(nts.value(i)).unwrap_or(0);
            if (0..k).any(|c| batch.column(c).is_null(i)) {
                counts.skipped_null_key += in_window;
            } else if in_window > 0 && !ev.is_null(i) {
                counts.rows_in_window += in_window;
                kept.push(u32::try_from(i).unwrap_or(u32::MAX));
            }
        }
        if kept.is_empty() {
            return Ok(None);
        }
        let kept = UInt32Array::from(kept);
        let pick = |c: &ArrayRef| take(c, &kept, None);
        let key_columns: Vec<ArrayRef> = (0..k)
            .map(|c| pick(batch.column(c)))
            .collect::<arrow::error::Result<_>>()?;
        let key_refs: Vec<&ArrayRef> = key_columns.iter().collect();
        let versions = kept
            .values()
            .iter()
            .map(|&i| {
                let i = i as usize;
                (
                    ev.value(i),
                    cr.value(i),
                    u64::try_from(s.value(i)).unwrap_or(0),
                )
            })
            .collect();
        let features = (0..self.rows.features.len())
            .map(|f| self.rows.declared(f, &pick(batch.column(k + 5 + f))?))
            .collect::<Result<_>>()?;
        Ok(Some(VersionedRows {
            keys: KeyColumns::new(&keys, &key_refs)?,
            versions,
            features,
        }))
    }
}
