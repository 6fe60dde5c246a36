//! Quiver's Parquet sources: everything that reads or writes a source's files.
//!
//! [`Sources`] is the handle (the data root and a cache of decoded footers) that validation,
//! materialization, the point-in-time join and offline pushes share:
//! - [`files`]: a source path (a file, a folder, or a glob) to its sorted files, each folder
//!   reached once (symlink loops are reported, never followed);
//! - `objects`: the same for a source URL in object storage (`s3://bucket/prefix/`), and its
//!   objects read with concurrent ranged GETs;
//! - [`schema`]: a source's schema after `field_mapping` ([`SourceSchema`]) and the check
//!   that a file has every column a view reads ([`check_view_columns`]);
//! - [`scan`]: one view's source opened for reading ([`SourceScan`]): file handles held for
//!   the whole scan, row groups pruned by event time, projected readers, the canonical key
//!   columns, and the work pool both engines run on ([`in_parallel`]);
//! - [`newest`]: the newest version of every key of a scan, and where those rows are;
//! - [`append`]: new files written whole with create-new semantics, and the compaction of
//!   many small pushed files into one without changing any answer.
//!
//! ```no_run
//! use quiver_source::Sources;
//! # fn f(source: &quiver_core::Source) -> quiver_source::Result<()> {
//! let sources = Sources::new("my_repo");
//! let schema = sources.schema(source)?;
//! println!("{} columns in {}", schema.schema.fields().len(), schema.describe_files());
//! # Ok(()) }
//! ```

pub mod append;
mod cache;
pub mod error;
pub mod files;
pub mod newest;
mod objects;
pub mod scan;
pub mod schema;
pub mod time;

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::Schema;
use parquet::arrow::arrow_reader::ArrowReaderMetadata;
use quiver_core::{Feature, JoinKey, Source};
use quiver_storage::{ObjectFile, ObjectStorage, ObjectUrl};

pub use append::{AppendTarget, Compaction, PUSH_PREFIX, TEMPORARY_PREFIX, sweep_temporary_files};
pub use error::{Result, SourceError};
pub use files::source_files;
pub use newest::{NewestVersions, RowVersion, VersionedRows, merge_version, winners_by_task};
pub use scan::{BATCH_ROWS, KeyAndTimes, ROW_BITS, SourceScan, Task, in_parallel};
pub use schema::{SourceSchema, check_view_columns};
pub use time::nanos;

use crate::cache::FooterCache;
use crate::scan::{FileReader, SharedFile};

/// One file of a source: on local disk, or an object as listed (with its size and entity
/// tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceFile {
    /// A local file (resolved under the data root).
    Local(PathBuf),
    /// An object in object storage.
    Object(ObjectFile),
}

impl SourceFile {
    /// The local path, for a local file.
    pub fn local_path(&self) -> Option<&Path> {
        match self {
            Self::Local(p) => Some(p),
            Self::Object(_) => None,
        }
    }

    /// What identifies this version of the file: size and modification time on disk, size and
    /// entity tag in object storage.
    pub fn fingerprint(&self) -> std::io::Result<String> {
        match self {
            Self::Local(p) => {
                let m = std::fs::metadata(p)?;
                let modified = m
                    .modified()?
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                Ok(format!("{}:{modified}", m.len()))
            }
            Self::Object(o) => Ok(format!(
                "{}:{}:{}",
                o.size,
                o.etag.as_deref().unwrap_or(""),
                o.modified_ms
            )),
        }
    }
}

impl fmt::Display for SourceFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local(p) => write!(f, "{}", p.display()),
            Self::Object(o) => write!(f, "{}", o.url),
        }
    }
}

/// `path` without a `file://` scheme: a local path, or an object URL as it is.
pub(crate) fn local_or_url(path: &str) -> &str {
    path.strip_prefix("file://").unwrap_or(path)
}

/// The sources of one repository: where their paths are resolved, the object storage that
/// URLs are read from, and decoded footers shared by every read.
#[derive(Debug)]
pub struct Sources {
    data_root: PathBuf,
    storage: Arc<ObjectStorage>,
    footers: FooterCache,
}

impl Sources {
    /// Sources whose paths are relative to `data_root` (URLs read with default object storage
    /// settings).
    pub fn new(data_root: impl Into<PathBuf>) -> Self {
        Self::with_storage(data_root, Arc::default())
    }

    /// Sources whose paths are relative to `data_root` and whose URLs are read through
    /// `storage`.
    pub fn with_storage(data_root: impl Into<PathBuf>, storage: Arc<ObjectStorage>) -> Self {
        Self {
            data_root: data_root.into(),
            storage,
            footers: FooterCache::default(),
        }
    }

    /// The folder source paths are relative to.
    pub fn data_root(&self) -> &Path {
        &self.data_root
    }

    /// The object storage URLs are read through.
    pub fn storage(&self) -> &Arc<ObjectStorage> {
        &self.storage
    }

    /// The files of a source path or URL, sorted (`file://` names a local path).
    pub fn files_at(&self, path: &str) -> Result<Vec<SourceFile>> {
        let path = local_or_url(path);
        match ObjectUrl::parse(path)? {
            Some(url) => Ok(objects::object_files(&self.storage, &url)?
                .into_iter()
                .map(SourceFile::Object)
                .collect()),
            None => Ok(source_files(&self.data_root, path)?
                .into_iter()
                .map(SourceFile::Local)
                .collect()),
        }
    }

    /// The source's files, sorted.
    pub fn files(&self, source: &Source) -> Result<Vec<SourceFile>> {
        self.files_at(&source.path)
    }

    /// `path` (relative to the data root, or absolute inside it) resolved with every symlink
    /// followed, refused unless it stays under the data root; see [`files::resolve_beneath`].
    pub fn resolve(&self, path: &str) -> Result<PathBuf> {
        let root = files::canonical_root(&self.data_root)?;
        files::resolve_beneath(&root, Path::new(path), path)
    }

    /// A Parquet file a client names (an entity table on the server): a regular file under
    /// the data root, or an error that says nothing about anything outside it.
    pub fn client_file(&self, path: &str) -> Result<PathBuf> {
        let resolved = self.resolve(path)?;
        match std::fs::metadata(&resolved) {
            Ok(m) if m.is_file() => Ok(resolved),
            Ok(_) => Err(SourceError::OutsideDataRoot {
                path: path.to_owned(),
            }),
            Err(_) => Err(SourceError::NotFound {
                path: path.to_owned(),
                message: "no such file under the data root".into(),
            }),
        }
    }

    /// The local folder of a folder source (under the data root), or `None` when its path is
    /// a file, a glob or a URL.
    pub fn source_folder(&self, source: &Source) -> Result<Option<PathBuf>> {
        if ObjectUrl::is_url(&source.path) {
            return Ok(None);
        }
        let folder = self.resolve(local_or_url(&source.path))?;
        Ok(folder.is_dir().then_some(folder))
    }

    /// The Arrow schema of one file (unmapped column names).
    pub fn file_schema(&self, source: &Source, file: &SourceFile) -> Result<Schema> {
        let (_, footer) = self.open(source, file)?;
        Ok(footer.schema().as_ref().clone())
    }

    /// Finds a source's files, reads their schemas, checks they agree, and applies
    /// `field_mapping`.
    pub fn schema(&self, source: &Source) -> Result<SourceSchema> {
        let opened = self.open_all(source)?;
        let schema_of = |i: usize| opened[i].2.schema();
        let first = schema_of(0);
        let data = |file: &SourceFile, message: String| SourceError::Data {
            source_name: source.name.clone(),
            file: file.to_string(),
            message,
        };
        for (i, (file, _, _)) in opened.iter().enumerate().skip(1) {
            let other = schema_of(i);
            for field in first.fields() {
                match other.field_with_name(field.name()) {
                    Ok(f) if f.data_type() == field.data_type() => {}
                    Ok(f) => {
                        return Err(data(
                            file,
                            format!(
                                "column '{}' is {} here but {} in {}",
                                field.name(),
                                f.data_type(),
                                field.data_type(),
                                opened[0].0
                            ),
                        ));
                    }
                    Err(_) => {
                        return Err(data(
                            file,
                            format!(
                                "column '{}' of {} is missing here",
                                field.name(),
                                opened[0].0
                            ),
                        ));
                    }
                }
            }
        }
        if let Some(from) = source
            .field_mapping
            .keys()
            .find(|from| first.field_with_name(from).is_err())
        {
            return Err(data(
                &opened[0].0,
                format!("field_mapping names column '{from}', which this file does not have"),
            ));
        }
        Ok(SourceSchema {
            schema: schema::mapped_schema(source, first),
            files: opened.into_iter().map(|(file, _, _)| file).collect(),
            path: source.path.clone(),
        })
    }

    /// Opens the source of a view for a scan: every file, with the view's join `keys` and the
    /// `features` it will read checked in each.
    pub fn scan(
        &self,
        source: &Source,
        keys: Vec<JoinKey>,
        features: &[&Feature],
    ) -> Result<SourceScan> {
        SourceScan::open(source, self.open_all(source)?, keys, features)
    }

    /// Every file of a source opened, with its footer. A local file can be replaced or
    /// removed between listing and opening (a compaction of pushed files): the source is
    /// listed again once before giving up.
    fn open_all(
        &self,
        source: &Source,
    ) -> Result<Vec<(SourceFile, FileReader, ArrowReaderMetadata)>> {
        match self.try_open_all(source) {
            Err(SourceError::Io { source: e, .. }) if e.kind() == std::io::ErrorKind::NotFound => {
                self.try_open_all(source)
            }
            other => other,
        }
    }

    fn try_open_all(
        &self,
        source: &Source,
    ) -> Result<Vec<(SourceFile, FileReader, ArrowReaderMetadata)>> {
        let files = self.files(source)?;
        // Footers of objects not in the cache are fetched all at once.
        let objects: Vec<&ObjectFile> = files
            .iter()
            .filter_map(|f| match f {
                SourceFile::Object(o) if self.footers.get_object(o).is_none() => Some(o),
                _ => None,
            })
            .collect();
        for (object, footer) in objects
            .iter()
            .zip(objects::load_footers(&self.storage, &objects))
        {
            let footer = footer.map_err(|message| SourceError::Data {
                source_name: source.name.clone(),
                file: object.url.to_string(),
                message,
            })?;
            self.footers.put_object(object, footer);
        }
        files
            .into_iter()
            .map(|file| {
                let (reader, footer) = self.open(source, &file)?;
                Ok((file, reader, footer))
            })
            .collect()
    }

    /// One file opened for reading, with its footer (decoded now or earlier).
    fn open(
        &self,
        source: &Source,
        file: &SourceFile,
    ) -> Result<(FileReader, ArrowReaderMetadata)> {
        let data = |message| SourceError::Data {
            source_name: source.name.clone(),
            file: file.to_string(),
            message,
        };
        match file {
            SourceFile::Local(path) => {
                let shared = File::open(path)
                    .and_then(SharedFile::new)
                    .map_err(SourceError::io(path))?;
                let footer = self.footers.get(path, &shared).map_err(data)?;
                Ok((FileReader::Local(shared), footer))
            }
            SourceFile::Object(object) => {
                let footer = match self.footers.get_object(object) {
                    Some(footer) => footer,
                    None => {
                        let footer = objects::load_footers(&self.storage, &[object])
                            .pop()
                            .unwrap_or_else(|| Err("no footer".into()))
                            .map_err(data)?;
                        self.footers.put_object(object, footer.clone());
                        footer
                    }
                };
                let reader = objects::ObjectReader::new(Arc::clone(&self.storage), object.clone());
                Ok((FileReader::Object(reader), footer))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls_are_local_paths() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir(dir.path().join("data")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("data/a.parquet"), b"").unwrap_or_else(|e| panic!("{e}"));
        let sources = Sources::new(dir.path());
        let url = format!("file://{}", dir.path().join("data").display());
        for path in ["data", url.as_str()] {
            let files = sources.files_at(path).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(files.len(), 1, "{path}");
            assert!(files[0].local_path().is_some());
        }
    }
}
