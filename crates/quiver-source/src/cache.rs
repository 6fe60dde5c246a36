//! Parquet footers decoded once per file version and shared by every scan.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::scan::SharedFile;
use std::sync::Mutex;
use std::time::SystemTime;

use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use quiver_storage::ObjectFile;

/// Files whose footers are kept; beyond this the cache starts over.
const CAPACITY: usize = 16 * 1024;

/// What identifies one version of a file: a file rewritten or replaced gets a new stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    #[cfg(unix)]
    inode: u64,
}

impl Stamp {
    fn of(file: &File) -> std::io::Result<Self> {
        let m = file.metadata()?;
        Ok(Self {
            len: m.len(),
            modified: m.modified().ok(),
            #[cfg(unix)]
            inode: std::os::unix::fs::MetadataExt::ino(&m),
        })
    }
}

/// Decoded footers by path, valid while the file's length, modification time and inode match;
/// and by object URL, valid while its size and entity tag match.
#[derive(Debug, Default)]
pub(crate) struct FooterCache {
    entries: Mutex<HashMap<PathBuf, (Stamp, ArrowReaderMetadata)>>,
    objects: Mutex<HashMap<String, ObjectEntry>>,
}

/// An object's identity (size, entity tag) and its footer.
type ObjectEntry = ((u64, Option<String>), ArrowReaderMetadata);

impl FooterCache {
    /// The footer of `object` if it was decoded for this version of it.
    pub(crate) fn get_object(&self, object: &ObjectFile) -> Option<ArrowReaderMetadata> {
        let objects = self.objects.lock().ok()?;
        let (stamp, footer) = objects.get(&object.url.to_string())?;
        (stamp.0 == object.size && stamp.1 == object.etag).then(|| footer.clone())
    }

    /// Keeps the footer of `object`.
    pub(crate) fn put_object(&self, object: &ObjectFile, footer: ArrowReaderMetadata) {
        if let Ok(mut objects) = self.objects.lock() {
            if objects.len() >= CAPACITY {
                objects.clear();
            }
            objects.insert(
                object.url.to_string(),
                ((object.size, object.etag.clone()), footer),
            );
        }
    }

    /// The footer of the open `file` at `path`, decoded now or earlier.
    pub(crate) fn get(
        &self,
        path: &Path,
        file: &SharedFile,
    ) -> Result<ArrowReaderMetadata, String> {
        let stamp = Stamp::of(file.handle()).map_err(|e| e.to_string())?;
        if let Ok(entries) = self.entries.lock()
            && let Some((s, footer)) = entries.get(path)
            && *s == stamp
        {
            return Ok(footer.clone());
        }
        let footer = ArrowReaderMetadata::load(file, ArrowReaderOptions::default())
            .map_err(|e| format!("not a readable Parquet file: {e}"))?;
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= CAPACITY {
                entries.clear();
            }
            entries.insert(path.to_path_buf(), (stamp, footer.clone()));
        }
        Ok(footer)
    }
}
