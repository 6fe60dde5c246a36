//! Writing new files into a folder source, and compacting small pushed files.
//!
//! A new file is written whole under a hidden temporary name (`.push-<pid>-<n>.tmp`, skipped
//! by every listing), made durable, then published under a unique name with create-new
//! semantics (`link(2)`, which never replaces a file). Readers see a file whole or not at all.
//!
//! Compaction merges a run of small pushed files that are consecutive in the source's sorted
//! file order into one file, rows in the same order, under the name of the run's first file
//! (an atomic replace), then removes the others. Both engines break their last ties by
//! (file order, row): the merged rows keep their order relative to each other and to every
//! other file, so no training set and no materialization can change its answer, even one that
//! lists the folder half-way through (it sees a duplicate of rows that lose every tie to the
//! originals). Scans hold their files open, so one that started before is not disturbed.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use arrow::array::RecordBatch;
use arrow::datatypes::Schema;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use quiver_core::Source;
use quiver_storage::ObjectUrl;

use crate::error::{Result, SourceError};
use crate::{SourceFile, Sources, source_files};

/// Names of files written by pushes start with this.
pub const PUSH_PREFIX: &str = "push-";

/// Prefix of the hidden temporary files new files are written to.
const TMP_PREFIX: &str = ".push-";
const TMP_SUFFIX: &str = ".tmp";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// What a compaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compaction {
    /// Pushed files merged away.
    pub files_merged: usize,
    /// Files written (one per run of consecutive small files).
    pub files_written: usize,
    /// Rows rewritten.
    pub rows: u64,
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(SourceError::io(dir))
}

fn tmp_path(folder: &Path) -> PathBuf {
    folder.join(format!(
        "{TMP_PREFIX}{}-{}{TMP_SUFFIX}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Writes `batches` to a new hidden temporary file of `folder` and makes it durable; the file
/// is removed again if anything fails.
fn write_tmp(
    folder: &Path,
    schema: &Schema,
    batches: &mut dyn Iterator<Item = Result<RecordBatch>>,
) -> Result<(PathBuf, u64)> {
    let tmp = tmp_path(folder);
    let write = || -> Result<u64> {
        let io = SourceError::io(&tmp);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io)?;
        let props = props();
        let parquet_err = |e: parquet::errors::ParquetError| parquet_error(e, &tmp, folder);
        let mut writer =
            ArrowWriter::try_new(file, schema.clone().into(), Some(props)).map_err(parquet_err)?;
        let mut rows = 0;
        for batch in batches {
            let batch = batch?;
            rows += batch.num_rows() as u64;
            writer.write(&batch).map_err(parquet_err)?;
        }
        let file = writer.into_inner().map_err(parquet_err)?;
        file.sync_all().map_err(SourceError::io(&tmp))?;
        Ok(rows)
    };
    match write() {
        Ok(rows) => Ok((tmp, rows)),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Where new files of a source go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendTarget {
    /// A local folder under the data root.
    Folder(PathBuf),
    /// A prefix in object storage.
    Prefix(ObjectUrl),
}

/// How new files are written: zstd.
fn props() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build()
}

fn invalid(prefix: &ObjectUrl, e: &parquet::errors::ParquetError) -> SourceError {
    SourceError::InvalidRows {
        source_name: prefix.to_string(),
        message: e.to_string(),
    }
}

/// A Parquet writer's error as a source error: I/O failures (a full disk above all) keep
/// their kind, whether the writer kept the `io::Error` or only its message.
fn parquet_error(e: parquet::errors::ParquetError, tmp: &Path, folder: &Path) -> SourceError {
    let io = |source| SourceError::Io {
        path: tmp.to_path_buf(),
        source,
    };
    match e {
        parquet::errors::ParquetError::External(inner) => {
            match inner.downcast::<std::io::Error>() {
                Ok(e) => io(*e),
                Err(other) => io(std::io::Error::other(other.to_string())),
            }
        }
        other => {
            let message = other.to_string();
            if message.contains("No space left on device") || message.contains("os error 28") {
                io(std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    message,
                ))
            } else {
                SourceError::InvalidRows {
                    source_name: folder.display().to_string(),
                    message,
                }
            }
        }
    }
}

impl Sources {
    /// The folder that takes a source's new files and the schema they must have: that of the
    /// source's first file, so the source stays valid. A single-file or glob source cannot
    /// take new files.
    pub fn append_target(&self, source: &Source) -> Result<(AppendTarget, Schema)> {
        let not_a_folder = || SourceError::NotAFolder {
            source_name: source.name.clone(),
            path: source.path.clone(),
        };
        let target = match ObjectUrl::parse(&source.path)? {
            Some(_) if source.path.contains(['*', '?', '[']) => return Err(not_a_folder()),
            Some(url) => AppendTarget::Prefix(url),
            None => AppendTarget::Folder(self.source_folder(source)?.ok_or_else(not_a_folder)?),
        };
        let files = self.files(source)?;
        if let (AppendTarget::Prefix(url), [SourceFile::Object(only)]) = (&target, &files[..])
            && only.url == *url
        {
            // The URL names one object, not a prefix.
            return Err(not_a_folder());
        }
        let schema = self.file_schema(source, &files[0])?;
        Ok((target, schema))
    }

    /// Adds `batch` as a new file of `target` under a name no other file has, whole before it
    /// is visible: [`Sources::write_file`] in a folder; in object storage one create-if-absent
    /// `PUT` of the encoded file. Returns the new file.
    pub fn append(&self, target: &AppendTarget, batch: &RecordBatch) -> Result<SourceFile> {
        match target {
            AppendTarget::Folder(folder) => Ok(SourceFile::Local(self.write_file(folder, batch)?)),
            AppendTarget::Prefix(prefix) => {
                let mut bytes = Vec::new();
                let mut writer = ArrowWriter::try_new(&mut bytes, batch.schema(), Some(props()))
                    .map_err(|e| invalid(prefix, &e))?;
                writer.write(batch).map_err(|e| invalid(prefix, &e))?;
                writer.close().map_err(|e| invalid(prefix, &e))?;
                let bytes = bytes::Bytes::from(bytes);
                let stamp = quiver_core::now_nanos();
                loop {
                    let url = prefix.join(&format!(
                        "{PUSH_PREFIX}{stamp:020}-{}-{}.parquet",
                        std::process::id(),
                        COUNTER.fetch_add(1, Ordering::Relaxed)
                    ));
                    if self.storage().put_if_absent(&url, bytes.clone())? {
                        let size = bytes.len() as u64;
                        return Ok(SourceFile::Object(quiver_storage::ObjectFile {
                            url,
                            size,
                            etag: None,
                            modified_ms: 0,
                        }));
                    }
                }
            }
        }
    }

    /// Writes `batches` as one Parquet file at `out`, a local path (anywhere: the caller's
    /// own) or an object URL, whole before it is visible: a local file is written beside its
    /// final name and renamed over it; an object is uploaded once the file is complete (a
    /// failed or killed write leaves nothing under `out`). Returns the rows written.
    pub fn write_output(
        &self,
        out: &str,
        schema: &Schema,
        batches: &mut dyn Iterator<Item = Result<RecordBatch>>,
    ) -> Result<u64> {
        let url = ObjectUrl::parse(out)?;
        let (folder, shown) = match &url {
            Some(_) => (std::env::temp_dir(), out.to_owned()),
            None => {
                let path = Path::new(out);
                let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
                (
                    parent.unwrap_or(Path::new(".")).to_path_buf(),
                    out.to_owned(),
                )
            }
        };
        let (tmp, rows) = write_tmp(&folder, schema, batches)?;
        let published = match &url {
            Some(url) => self
                .storage()
                .upload_file(url, &tmp)
                .map_err(SourceError::from),
            None => fs::rename(&tmp, out).map_err(SourceError::io(&shown)),
        };
        let _ = fs::remove_file(&tmp);
        published.map(|()| rows)
    }

    /// Removes a file [`Sources::append`] added (when what it belonged to failed).
    pub fn remove_appended(&self, file: &SourceFile) -> Result<()> {
        match file {
            SourceFile::Local(path) => self.remove_file(path),
            SourceFile::Object(object) => Ok(self.storage().delete(&object.url)?),
        }
    }

    /// Writes `batch` as a new file of the local `folder` (from [`Sources::append_target`]), whole and
    /// durable before it is visible, under a name no other file has; returns its path.
    pub fn write_file(&self, folder: &Path, batch: &RecordBatch) -> Result<PathBuf> {
        let (tmp, _) = write_tmp(
            folder,
            &batch.schema(),
            &mut std::iter::once(Ok(batch.clone())),
        )?;
        let stamp = quiver_core::now_nanos();
        let publish = || -> Result<PathBuf> {
            loop {
                let path = folder.join(format!(
                    "{PUSH_PREFIX}{stamp:020}-{}-{}.parquet",
                    std::process::id(),
                    COUNTER.fetch_add(1, Ordering::Relaxed)
                ));
                match fs::hard_link(&tmp, &path) {
                    Ok(()) => return Ok(path),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(SourceError::Io { path, source: e }),
                }
            }
        };
        let published = publish();
        let _ = fs::remove_file(&tmp);
        let path = published?;
        if let Err(e) = sync_dir(folder) {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        Ok(path)
    }

    /// Writes `batches` as the Parquet file `path` (under the data root; missing folders are
    /// created), whole and durable before it is visible. An existing file is replaced only
    /// when `overwrite` is set, and then atomically. Returns the file's path.
    pub fn write_dataset(
        &self,
        path: &str,
        schema: &Schema,
        batches: &mut dyn Iterator<Item = Result<RecordBatch>>,
        overwrite: bool,
    ) -> Result<PathBuf> {
        let target = self.resolve(path)?;
        let folder = target.parent().unwrap_or(Path::new("."));
        if target.is_dir() {
            return Err(SourceError::OutsideDataRoot {
                path: path.to_owned(),
            });
        }
        fs::create_dir_all(folder).map_err(SourceError::io(folder))?;
        if !overwrite && target.exists() {
            return Err(SourceError::Exists {
                path: path.to_owned(),
            });
        }
        let (tmp, _) = write_tmp(folder, schema, batches)?;
        let published = if overwrite {
            fs::rename(&tmp, &target)
        } else {
            fs::hard_link(&tmp, &target)
        };
        let _ = fs::remove_file(&tmp);
        match published {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(SourceError::Exists {
                    path: path.to_owned(),
                });
            }
            Err(e) => return Err(SourceError::io(&target)(e)),
        }
        sync_dir(folder)?;
        Ok(target)
    }

    /// Removes a file published by [`Sources::write_file`] (when what it belonged to failed).
    pub fn remove_file(&self, path: &Path) -> Result<()> {
        fs::remove_file(path).map_err(SourceError::io(path))?;
        sync_dir(path.parent().unwrap_or(Path::new(".")))
    }

    /// Merges runs of small pushed files of a folder source once it holds at least
    /// `min_files` of them (files of `max_file_bytes` or more are left as they are). Returns
    /// `None` when there was nothing to do.
    pub fn compact(
        &self,
        source: &Source,
        min_files: usize,
        max_file_bytes: u64,
    ) -> Result<Option<Compaction>> {
        let Some(folder) = self.source_folder(source)? else {
            return Ok(None);
        };
        let files = source_files(&self.data_root, crate::local_or_url(&source.path))?;
        let small = |p: &Path| {
            p.parent() == Some(folder.as_path())
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(PUSH_PREFIX))
                && fs::metadata(p).is_ok_and(|m| m.len() < max_file_bytes)
        };
        let flags: Vec<bool> = files.iter().map(|p| small(p)).collect();
        if flags.iter().filter(|f| **f).count() < min_files.max(2) {
            return Ok(None);
        }
        // Maximal runs of consecutive small pushed files, in the source's file order.
        let mut runs: Vec<&[PathBuf]> = Vec::new();
        let mut i = 0;
        while i < files.len() {
            let start = i;
            while i < files.len() && flags[i] {
                i += 1;
            }
            if i - start >= 2 {
                runs.push(&files[start..i]);
            }
            i = i.max(start + 1);
        }
        let mut done = Compaction {
            files_merged: 0,
            files_written: 0,
            rows: 0,
        };
        for run in runs {
            if let Some(rows) = self.merge_run(source, &folder, run)? {
                done.files_merged += run.len();
                done.files_written += 1;
                done.rows += rows;
            }
        }
        Ok((done.files_written > 0).then_some(done))
    }

    /// Merges `run` into its first file; `None` (nothing changed) if the files do not all
    /// have the first one's schema.
    fn merge_run(&self, source: &Source, folder: &Path, run: &[PathBuf]) -> Result<Option<u64>> {
        let schema_of = |path: &PathBuf| self.file_schema(source, &SourceFile::Local(path.clone()));
        let schema = schema_of(&run[0])?;
        for path in &run[1..] {
            if schema_of(path)? != schema {
                return Ok(None);
            }
        }
        let data = |path: &Path, e: &dyn std::fmt::Display| SourceError::Data {
            source_name: source.name.clone(),
            file: path.display().to_string(),
            message: e.to_string(),
        };
        let open = |path: &Path| -> Result<ParquetRecordBatchReader> {
            let file = File::open(path).map_err(SourceError::io(path))?;
            let builder =
                ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| data(path, &e))?;
            builder.build().map_err(|e| data(path, &e))
        };
        let mut batches = run.iter().flat_map(|path| {
            let reader = open(path);
            let items: Box<dyn Iterator<Item = Result<RecordBatch>>> = match reader {
                Ok(r) => Box::new(r.map(move |b| b.map_err(|e| data(path, &e)))),
                Err(e) => Box::new(std::iter::once(Err(e))),
            };
            items
        });
        let (tmp, rows) = write_tmp(folder, &schema, &mut batches)?;
        if let Err(e) = fs::rename(&tmp, &run[0]) {
            let _ = fs::remove_file(&tmp);
            return Err(SourceError::Io {
                path: run[0].clone(),
                source: e,
            });
        }
        sync_dir(folder)?;
        for path in &run[1..] {
            fs::remove_file(path).map_err(SourceError::io(path))?;
        }
        sync_dir(folder)?;
        Ok(Some(rows))
    }
}

/// Removes the temporary files that writers of this and other processes left in `folder`
/// (a crash or a full disk mid-write): hidden files named `<prefix><pid>-...` for one of
/// `prefixes`, whose process is gone and that are older than a minute, or older than an hour
/// whoever wrote them. Returns how many were removed.
pub fn sweep_temporary_files(folder: &Path, prefixes: &[&str]) -> Result<usize> {
    let entries = match fs::read_dir(folder) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => {
            return Err(SourceError::Io {
                path: folder.to_path_buf(),
                source: e,
            });
        }
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = prefixes.iter().find_map(|p| name.strip_prefix(p)) else {
            continue;
        };
        let age = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or_default();
        let owner_gone = rest
            .split('-')
            .next()
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| !process_alive(pid));
        let stale =
            age > Duration::from_secs(3600) || (owner_gone && age > Duration::from_secs(60));
        if stale && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// Whether a process of this machine is running (always `true` where it cannot be told).
fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    if cfg!(target_os = "linux") {
        Path::new("/proc").join(pid.to_string()).exists()
    } else {
        true
    }
}

/// The prefix of [`Sources::write_file`]'s temporary files, for [`sweep_temporary_files`].
pub const TEMPORARY_PREFIX: &str = TMP_PREFIX;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::{Int64Array, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Field, TimeUnit};

    fn batch(values: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                false,
            ),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(values.to_vec())),
                Arc::new(TimestampMicrosecondArray::from(values.to_vec())),
            ],
        )
        .unwrap()
    }

    fn source() -> Source {
        serde_json_source()
    }

    fn serde_json_source() -> Source {
        Source {
            name: "s".into(),
            path: "data".into(),
            timestamp_field: "ts".into(),
            created_timestamp_column: None,
            field_mapping: Default::default(),
            description: String::new(),
            owner: String::new(),
            tags: Default::default(),
        }
    }

    fn ids(sources: &Sources) -> Vec<i64> {
        let mut out = Vec::new();
        for path in sources.files(&source()).unwrap() {
            let r = ParquetRecordBatchReaderBuilder::try_new(
                File::open(path.local_path().unwrap()).unwrap(),
            )
            .unwrap()
            .build()
            .unwrap();
            for b in r {
                let b = b.unwrap();
                let a = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                out.extend(a.values().iter().copied());
            }
        }
        out
    }

    #[test]
    fn files_are_new_whole_and_compacted_in_order() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("data")).unwrap();
        let sources = Sources::new(dir.path());
        let first = dir.path().join("data/part-0.parquet");
        let w = ArrowWriter::try_new(File::create(&first).unwrap(), batch(&[0]).schema(), None);
        let mut w = w.unwrap();
        w.write(&batch(&[0])).unwrap();
        w.close().unwrap();
        let (target, schema) = sources.append_target(&source()).unwrap();
        let AppendTarget::Folder(folder) = target else {
            panic!("a folder source appends to its folder")
        };
        assert_eq!(schema, *batch(&[0]).schema());
        let mut written = Vec::new();
        for i in 1..=10 {
            written.push(sources.write_file(&folder, &batch(&[i, i + 100])).unwrap());
        }
        assert_eq!(
            written
                .iter()
                .collect::<std::collections::HashSet<_>>()
                .len(),
            10
        );
        let before = ids(&sources);
        assert!(sources.compact(&source(), 20, 1 << 20).unwrap().is_none());
        let done = sources.compact(&source(), 4, 1 << 20).unwrap().unwrap();
        assert_eq!(
            (done.files_merged, done.files_written, done.rows),
            (10, 1, 20)
        );
        assert_eq!(sources.files(&source()).unwrap().len(), 2);
        assert_eq!(ids(&sources), before, "same rows, same order");
        // No temporary file is left behind.
        let hidden = fs::read_dir(&folder)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with('.')
            })
            .count();
        assert_eq!(hidden, 0);
    }

    #[test]
    fn stale_temporary_files_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        // A writer that is gone (pid 0 is never a user process) a while ago, and a live one.
        let dead = dir.path().join(".push-999999999-1.tmp");
        let live = dir
            .path()
            .join(format!(".push-{}-1.tmp", std::process::id()));
        fs::write(&dead, b"x").unwrap();
        fs::write(&live, b"x").unwrap();
        let old = SystemTime::now() - Duration::from_secs(120);
        File::options()
            .write(true)
            .open(&dead)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_eq!(
            sweep_temporary_files(dir.path(), &[TEMPORARY_PREFIX]).unwrap(),
            1
        );
        assert!(!dead.exists() && live.exists());
    }
}
