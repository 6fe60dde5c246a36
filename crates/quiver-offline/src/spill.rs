//! Spilled partition results: written as Arrow IPC streams to anonymous temporary files (the
//! OS removes them when they are closed, even after a crash) and merged back in input order.

use std::fs::File;
use std::io::{BufReader, BufWriter, Seek};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use arrow::compute::interleave;
use arrow::datatypes::{DataType, Field, Schema, UInt32Type};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;

use crate::error::{OfflineError, Result};

const ROW: &str = "__row";

/// Writes one partition's result: entity row numbers and feature columns.
pub(crate) struct SpillWriter {
    dir: PathBuf,
    file: File,
}

impl SpillWriter {
    pub(crate) fn create(dir: &Path) -> Result<Self> {
        let file = tempfile::tempfile_in(dir).map_err(|source| OfflineError::Spill {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            file,
        })
    }

    fn io(&self) -> impl FnOnce(std::io::Error) -> OfflineError + '_ {
        |source| OfflineError::Spill {
            path: self.dir.clone(),
            source,
        }
    }

    /// Writes `rows` (ascending entity row numbers) with their `columns`, in batches.
    pub(crate) fn write(
        &mut self,
        rows: &[u32],
        columns: &[ArrayRef],
        batch_rows: usize,
    ) -> Result<()> {
        let mut fields = vec![Field::new(ROW, DataType::UInt32, false)];
        fields.extend(
            columns
                .iter()
                .enumerate()
                .map(|(i, c)| Field::new(format!("f{i}"), c.data_type().clone(), true)),
        );
        let schema = Arc::new(Schema::new(fields));
        let file = self.file.try_clone().map_err(self.io())?;
        let mut writer = StreamWriter::try_new(BufWriter::new(file), &schema)?;
        let mut from = 0;
        while from < rows.len() {
            let len = batch_rows.max(1).min(rows.len() - from);
            let mut batch: Vec<ArrayRef> =
                vec![Arc::new(UInt32Array::from(rows[from..from + len].to_vec()))];
            batch.extend(columns.iter().map(|c| c.slice(from, len)));
            writer.write(&RecordBatch::try_new(schema.clone(), batch)?)?;
            from += len;
        }
        writer.finish()?;
        writer.into_inner()?.into_inner().map_err(|e| {
            let source = e.into_error();
            OfflineError::Spill {
                path: self.dir.clone(),
                source,
            }
        })?;
        Ok(())
    }

    /// The written partition, ready to be read back.
    pub(crate) fn finish(mut self) -> Result<SpilledPartition> {
        self.file.rewind().map_err(self.io())?;
        let reader = StreamReader::try_new(BufReader::new(self.file), None)?;
        Ok(SpilledPartition {
            reader,
            batch: None,
            pos: 0,
        })
    }
}

/// A spilled partition being read back, a batch at a time.
pub(crate) struct SpilledPartition {
    reader: StreamReader<BufReader<File>>,
    batch: Option<RecordBatch>,
    pos: usize,
}

impl SpilledPartition {
    /// The current batch, reading the next one when it is used up.
    fn current(&mut self) -> Result<&RecordBatch> {
        if self.batch.as_ref().is_none_or(|b| self.pos >= b.num_rows()) {
            let next = self.reader.next().ok_or_else(ended_early)??;
            self.batch = Some(next);
            self.pos = 0;
        }
        self.batch.as_ref().ok_or_else(ended_early)
    }
}

/// A view's result spilled by partition, read back in input order.
pub(crate) struct SpilledColumns {
    parts: Vec<SpilledPartition>,
    partition_of_row: Vec<u32>,
}

impl SpilledColumns {
    pub(crate) fn new(parts: Vec<SpilledPartition>, partition_of_row: Vec<u32>) -> Self {
        Self {
            parts,
            partition_of_row,
        }
    }

    /// The feature columns of rows `from..from + len`; must be called in row order.
    pub(crate) fn next_rows(&mut self, from: usize, len: usize) -> Result<Vec<ArrayRef>> {
        let mut sources: Vec<RecordBatch> = Vec::new();
        // For each partition, its current batch's index in `sources`.
        let mut slot: Vec<Option<usize>> = vec![None; self.parts.len()];
        let mut picks = Vec::with_capacity(len);
        for r in from..from + len {
            let p = self.partition_of_row[r] as usize;
            let part = &mut self.parts[p];
            let before = part.batch.as_ref().map(RecordBatch::num_rows);
            let fresh = before.is_none_or(|n| part.pos >= n);
            let batch = part.current()?.clone();
            if fresh || slot[p].is_none() {
                slot[p] = Some(sources.len());
                sources.push(batch.clone());
            }
            let row = batch.column(0).as_primitive::<UInt32Type>().value(part.pos);
            if row as usize != r {
                return Err(OfflineError::Arrow(arrow::error::ArrowError::IpcError(
                    format!("spill file out of order: expected row {r}, found {row}"),
                )));
            }
            picks.push((slot[p].unwrap_or(0), part.pos));
            part.pos += 1;
        }
        let columns = sources.first().map_or(0, |b| b.num_columns() - 1);
        (1..=columns)
            .map(|c| {
                let arrays: Vec<&dyn Array> =
                    sources.iter().map(|b| b.column(c).as_ref()).collect();
                Ok(interleave(&arrays, &picks)?)
            })
            .collect()
    }
}

fn ended_early() -> OfflineError {
    OfflineError::Arrow(arrow::error::ArrowError::IpcError(
        "spill file ended early".into(),
    ))
}
