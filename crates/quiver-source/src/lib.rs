//! Quiver's Parquet sources: everything that reads or writes a source's files.
//!
//! [`Sources`] is the handle (the data root and a cache of decoded footers) that validation,
//! materialization, the point-in-time join and offline pushes share:
//! - [`files`]: a source path (a file, a folder, or a glob) to its sorted files, each folder
//!   reached once (symlink loops are reported, never followed);
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
pub mod scan;
pub mod schema;
pub mod time;

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::datatypes::Schema;
use parquet::arrow::arrow_reader::ArrowReaderMetadata;
use quiver_core::{Feature, JoinKey, Source};

pub use append::{Compaction, PUSH_PREFIX, TEMPORARY_PREFIX, sweep_temporary_files};
pub use error::{Result, SourceError};
pub use files::source_files;
pub use newest::{NewestVersions, RowVersion, merge_version, winners_by_task};
pub use scan::{BATCH_ROWS, KeyAndTimes, ROW_BITS, SourceScan, Task, in_parallel};
pub use schema::{SourceSchema, check_view_columns};
pub use time::nanos;

use crate::cache::FooterCache;
use crate::scan::SharedFile;

/// The sources of one repository: where their paths are resolved, and decoded footers shared
/// by every read.
#[derive(Debug)]
pub struct Sources {
    data_root: PathBuf,
    footers: FooterCache,
}

impl Sources {
    /// Sources whose paths are relative to `data_root`.
    pub fn new(data_root: impl Into<PathBuf>) -> Self {
        Self {
            data_root: data_root.into(),
            footers: FooterCache::default(),
        }
    }

    /// The folder source paths are relative to.
    pub fn data_root(&self) -> &Path {
        &self.data_root
    }

    /// The source's files, sorted.
    pub fn files(&self, source: &Source) -> Result<Vec<PathBuf>> {
        source_files(&self.data_root, &source.path)
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
                path: PathBuf::from(path),
                message: "no such file under the data root".into(),
            }),
        }
    }

    /// The folder of a folder source (under the data root), or `None` when its path is a file
    /// or a glob.
    pub fn source_folder(&self, source: &Source) -> Result<Option<PathBuf>> {
        let folder = self.resolve(&source.path)?;
        Ok(folder.is_dir().then_some(folder))
    }

    /// The Arrow schema of one file (unmapped column names).
    pub fn file_schema(&self, source: &Source, path: &Path) -> Result<Schema> {
        let file = self.open_file(path)?;
        let footer = self.footer(source, path, &file)?;
        Ok(footer.schema().as_ref().clone())
    }

    /// Finds a source's files, reads their schemas, checks they agree, and applies
    /// `field_mapping`.
    pub fn schema(&self, source: &Source) -> Result<SourceSchema> {
        let files = self.files(source)?;
        let first = self.file_schema(source, &files[0])?;
        let data = |path: &Path, message: String| SourceError::Data {
            source_name: source.name.clone(),
            path: path.to_path_buf(),
            message,
        };
        for file in &files[1..] {
            let other = self.file_schema(source, file)?;
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
                                files[0].display()
                            ),
                        ));
                    }
                    Err(_) => {
                        return Err(data(
                            file,
                            format!(
                                "column '{}' of {} is missing here",
                                field.name(),
                                files[0].display()
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
                &files[0],
                format!("field_mapping names column '{from}', which this file does not have"),
            ));
        }
        Ok(SourceSchema {
            schema: schema::mapped_schema(source, &first),
            files,
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
        // A file can be replaced or removed between listing and opening (a compaction of
        // pushed files): list again once before giving up.
        let files = match self.open_all(source) {
            Err(SourceError::Io { source: e, .. }) if e.kind() == std::io::ErrorKind::NotFound => {
                self.open_all(source)?
            }
            other => other?,
        };
        SourceScan::open(source, files, keys, features)
    }

    fn open_all(&self, source: &Source) -> Result<Vec<(PathBuf, SharedFile, ArrowReaderMetadata)>> {
        self.files(source)?
            .into_iter()
            .map(|path| {
                let file = self.open_file(&path)?;
                let footer = self.footer(source, &path, &file)?;
                Ok((path, file, footer))
            })
            .collect()
    }

    fn open_file(&self, path: &Path) -> Result<SharedFile> {
        File::open(path)
            .and_then(SharedFile::new)
            .map_err(SourceError::io(path))
    }

    fn footer(
        &self,
        source: &Source,
        path: &Path,
        file: &SharedFile,
    ) -> Result<ArrowReaderMetadata> {
        self.footers
            .get(path, file)
            .map_err(|message| SourceError::Data {
                source_name: source.name.clone(),
                path: path.to_path_buf(),
                message,
            })
    }
}
