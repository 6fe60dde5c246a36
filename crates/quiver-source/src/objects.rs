//! Sources in object storage: listing a URL (an object, a prefix or a glob) and reading
//! Parquet objects with ranged GETs.
//!
//! A scan reads an object's footer once (the last 64 KiB in one request, for every file of
//! the source at once), then, per row group, the byte ranges of exactly the column chunks it
//! projects, fetched concurrently before decoding starts: a row group costs one round trip,
//! not one per page. Every read is conditional on the entity tag the object was listed with,
//! so an object replaced while a scan runs fails the scan instead of mixing two versions.

use std::io::Cursor;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use glob::Pattern;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::errors::ParquetError;
use parquet::file::metadata::ParquetMetaDataReader;
use parquet::file::reader::{ChunkReader, Length};
use quiver_storage::{ObjectFile, ObjectStorage, ObjectUrl};

use crate::error::{Result, SourceError};

/// Bytes read from an object's end in the first request for its footer.
const FOOTER_GUESS: u64 = 64 * 1024;

/// The Parquet objects of a source URL, sorted by key as paths sort: the object itself, every `*.parquet`
/// under it taken as a folder, or the keys a glob in it matches. Names starting with `.` or
/// `_` are skipped, as on disk.
pub(crate) fn object_files(storage: &ObjectStorage, url: &ObjectUrl) -> Result<Vec<ObjectFile>> {
    let key = url.key();
    let not_found = |message: &str| SourceError::NotFound {
        path: url.to_string(),
        message: message.to_owned(),
    };
    let hidden = |relative: &str| {
        relative
            .split('/')
            .any(|part| part.starts_with('.') || part.starts_with('_'))
    };
    let files = if let Some(glob_at) = key.find(['*', '?', '[']) {
        let base = key[..glob_at].rfind('/').map_or("", |i| &key[..=i]);
        let pattern = Pattern::new(key).map_err(|e| not_found(&format!("invalid glob: {e}")))?;
        storage
            .list(&url.with_key(base))?
            .into_iter()
            .filter(|f| {
                pattern.matches_with(f.url.key(), crate::files::GLOB_OPTIONS)
                    && !hidden(&f.url.key()[base.len()..])
            })
            .collect()
    } else if let Some(object) = (!key.is_empty() && !key.ends_with('/'))
        .then(|| storage.head(url))
        .transpose()?
        .flatten()
    {
        vec![object]
    } else {
        let prefix = url.folder_prefix();
        storage
            .list(url)?
            .into_iter()
            .filter(|f| {
                let relative = &f.url.key()[prefix.len()..];
                relative.ends_with(".parquet") && !hidden(relative)
            })
            .collect::<Vec<_>>()
    };
    if files.is_empty() {
        return Err(not_found("no Parquet objects match this source URL"));
    }
    let mut files = files;
    files.sort_by(|a, b| path_order(a.url.key(), b.url.key()));
    Ok(files)
}

/// Keys compared component by component, as local paths sort: the same tree gives the same
/// file order (the last tie-break) on disk and in a bucket ("a/b" before "a-c").
fn path_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.split('/').cmp(b.split('/'))
}

/// The footers of `objects`, all requested at once; each entry is the footer or why it
/// could not be read.
pub(crate) fn load_footers(
    storage: &ObjectStorage,
    objects: &[&ObjectFile],
) -> Vec<Result<ArrowReaderMetadata, String>> {
    let asked: Vec<(ObjectUrl, u64)> = objects.iter().map(|o| (o.url.clone(), o.size)).collect();
    let tails = storage.get_suffixes(&asked, FOOTER_GUESS);
    objects
        .iter()
        .zip(tails)
        .map(|(object, tail)| {
            let tail = tail.map_err(|e| e.to_string())?;
            decode_footer(storage, object, &tail)
        })
        .collect()
}

fn decode_footer(
    storage: &ObjectStorage,
    object: &ObjectFile,
    tail: &Bytes,
) -> Result<ArrowReaderMetadata, String> {
    let unreadable = |e: &dyn std::fmt::Display| format!("not a readable Parquet file: {e}");
    let mut reader = ParquetMetaDataReader::new();
    let tail = match reader.try_parse_sized(tail, object.size) {
        Ok(()) => None,
        Err(ParquetError::NeedMoreData(needed)) => Some(needed as u64),
        Err(e) => return Err(unreadable(&e)),
    };
    if let Some(needed) = tail {
        let start = object.size.saturating_sub(needed);
        let footer = start..object.size;
        let bytes = storage
            .get_ranges_if(&object.url, object.etag.as_deref(), vec![footer])
            .map_err(|e| e.to_string())?
            .pop()
            .unwrap_or_default();
        reader = ParquetMetaDataReader::new();
        reader
            .try_parse_sized(&bytes, object.size)
            .map_err(|e| unreadable(&e))?;
    }
    let metadata = reader.finish().map_err(|e| unreadable(&e))?;
    ArrowReaderMetadata::try_new(Arc::new(metadata), ArrowReaderOptions::default())
        .map_err(|e| unreadable(&e))
}

/// A Parquet object read with ranged GETs conditional on its listed entity tag.
#[derive(Debug, Clone)]
pub(crate) struct ObjectReader {
    storage: Arc<ObjectStorage>,
    object: ObjectFile,
}

impl ObjectReader {
    pub(crate) fn new(storage: Arc<ObjectStorage>, object: ObjectFile) -> Self {
        Self { storage, object }
    }

    fn fetch(&self, ranges: Vec<Range<u64>>) -> parquet::errors::Result<Vec<Bytes>> {
        self.storage
            .get_ranges_if(&self.object.url, self.object.etag.as_deref(), ranges)
            .map_err(|e| ParquetError::External(Box::new(e)))
    }

    /// The column chunks of `row_group` that `mask` projects, fetched concurrently.
    pub(crate) fn prefetch(
        &self,
        footer: &ArrowReaderMetadata,
        row_group: usize,
        mask: &ProjectionMask,
    ) -> parquet::errors::Result<Prefetched> {
        let group = footer.metadata().row_group(row_group);
        let ranges: Vec<Range<u64>> = group
            .columns()
            .iter()
            .enumerate()
            .filter(|(leaf, _)| mask.leaf_included(*leaf))
            .map(|(_, c)| {
                let (start, len) = c.byte_range();
                start..start + len
            })
            .collect();
        let chunks = self.fetch(ranges.clone())?;
        Ok(Prefetched {
            object: self.clone(),
            chunks: ranges.into_iter().map(|r| r.start).zip(chunks).collect(),
        })
    }
}

/// The column chunks of one row group in memory, read by the synchronous Parquet decoder;
/// anything else it asks for is fetched on demand.
#[derive(Debug)]
pub(crate) struct Prefetched {
    object: ObjectReader,
    /// (start offset, bytes) of each fetched chunk.
    chunks: Vec<(u64, Bytes)>,
}

impl Prefetched {
    fn cached(&self, start: u64, len: u64) -> Option<Bytes> {
        self.chunks.iter().find_map(|(at, bytes)| {
            let offset = start.checked_sub(*at)?;
            (offset + len <= bytes.len() as u64)
                .then(|| bytes.slice(offset as usize..(offset + len) as usize))
        })
    }
}

impl Length for Prefetched {
    fn len(&self) -> u64 {
        self.object.object.size
    }
}

impl ChunkReader for Prefetched {
    type T = Cursor<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        let rest = self
            .chunks
            .iter()
            .find(|(at, bytes)| start >= *at && start < at + bytes.len() as u64)
            .map(|(at, bytes)| bytes.slice((start - at) as usize..));
        match rest {
            Some(bytes) => Ok(Cursor::new(bytes)),
            None => Ok(Cursor::new(self.get_bytes(
                start,
                usize::try_from(self.len().saturating_sub(start)).unwrap_or(usize::MAX),
            )?)),
        }
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        if let Some(bytes) = self.cached(start, length as u64) {
            return Ok(bytes);
        }
        let range = start..start + length as u64;
        Ok(self.object.fetch(vec![range])?.pop().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_sort_component_by_component_as_paths_do() {
        let mut keys = vec!["a-c.parquet", "a/b.parquet", "a.parquet"];
        keys.sort_by(|a, b| super::path_order(a, b));
        let mut paths: Vec<&std::path::Path> = keys.iter().map(std::path::Path::new).collect();
        paths.sort();
        let paths: Vec<&str> = paths.iter().map(|p| p.to_str().unwrap_or("")).collect();
        assert_eq!(keys, paths);
        assert_eq!(keys, ["a/b.parquet", "a-c.parquet", "a.parquet"]);
    }
}
