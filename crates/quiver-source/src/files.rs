//! Finding a source's Parquet files: a file, a folder (searched recursively), or a glob.
//!
//! Entries whose names start with `.` or `_` are skipped (temporary files, `_SUCCESS`,
//! `_temporary`). Folders are followed through symlinks, but each folder is reached once: a
//! symlink loop, or two links to one folder, is an error naming both paths, so no file is
//! ever read twice and the walk always ends. Files are returned sorted by path: that order
//! breaks the last ties of the point-in-time join and of materialization.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use glob::{MatchOptions, Pattern};

use crate::error::{Result, SourceError};

/// Resolves a source path (file, folder of `*.parquet` files, or glob) under `data_root`.
pub fn source_files(data_root: &Path, path: &str) -> Result<Vec<PathBuf>> {
    let full = data_root.join(path);
    let not_found = |message: &str| SourceError::NotFound {
        path: full.clone(),
        message: message.to_owned(),
    };
    let mut walk = Walk::default();
    if path.contains(['*', '?', '[']) {
        // The data root is literal; only the source's own path is a pattern.
        let root = Pattern::escape(&data_root.join("").to_string_lossy());
        let pattern = Pattern::new(&format!("{root}{path}"))
            .map_err(|e| not_found(&format!("invalid glob: {e}")))?;
        let (base, depth) = glob_base(Path::new(path));
        let base = data_root.join(base);
        if base.is_dir() {
            walk.folder(&base, depth, &mut |p| {
                pattern.matches_path_with(p, GLOB_OPTIONS)
            })?;
        }
    } else if full.is_dir() {
        walk.folder(&full, usize::MAX, &mut |p| {
            p.extension().is_some_and(|e| e == "parquet")
        })?;
    } else if full.is_file() {
        walk.files.push(full.clone());
    } else {
        return Err(not_found("source path not found"));
    }
    let mut files = walk.files;
    if files.is_empty() {
        return Err(not_found("no Parquet files match this source path"));
    }
    files.sort();
    Ok(files)
}

/// `*` and `?` stay within one path component, as in a shell; `**` crosses folders.
const GLOB_OPTIONS: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: true,
};

/// The literal folder a glob starts from and how many folders deep its matches can be
/// (`usize::MAX` with `**`).
fn glob_base(pattern: &Path) -> (PathBuf, usize) {
    let mut base = PathBuf::new();
    let mut rest = Vec::new();
    for c in pattern.components() {
        let text = c.as_os_str().to_string_lossy();
        if rest.is_empty() && !text.contains(['*', '?', '[']) {
            base.push(c);
        } else {
            rest.push(c);
        }
    }
    let recursive = rest
        .iter()
        .any(|c| matches!(c, Component::Normal(n) if n.to_string_lossy() == "**"));
    let depth = if recursive {
        usize::MAX
    } else {
        rest.len().saturating_sub(1)
    };
    (base, depth)
}

/// A recursive folder walk that reaches each folder once.
#[derive(Default)]
struct Walk {
    /// Canonical folder → the path it was first reached by.
    seen: HashMap<PathBuf, PathBuf>,
    files: Vec<PathBuf>,
}

impl Walk {
    fn folder(
        &mut self,
        dir: &Path,
        depth: usize,
        keep: &mut dyn FnMut(&Path) -> bool,
    ) -> Result<()> {
        let canonical = dir.canonicalize().map_err(SourceError::io(dir))?;
        if let Some(first) = self.seen.insert(canonical, dir.to_path_buf()) {
            return Err(SourceError::FolderReachedTwice {
                path: dir.to_path_buf(),
                first,
            });
        }
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(SourceError::io(dir))?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()
            .map_err(SourceError::io(dir))?;
        entries.sort();
        for path in entries {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with('.') || name.starts_with('_') {
                continue;
            }
            if path.is_dir() {
                if depth > 0 {
                    self.folder(&path, depth.saturating_sub(1), keep)?;
                }
            } else if path.is_file() && keep(&path) {
                self.files.push(path);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"").unwrap();
    }

    #[test]
    fn folders_globs_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for f in [
            "d/a.parquet",
            "d/sub/b.parquet",
            "d/_SUCCESS",
            "d/.x.parquet",
            "d/c.csv",
        ] {
            touch(&root.join(f));
        }
        let names = |files: Vec<PathBuf>| -> Vec<String> {
            files
                .iter()
                .map(|p| p.strip_prefix(root).unwrap().display().to_string())
                .collect()
        };
        assert_eq!(
            names(source_files(root, "d").unwrap()),
            ["d/a.parquet", "d/sub/b.parquet"]
        );
        assert_eq!(
            names(source_files(root, "d/*.parquet").unwrap()),
            ["d/a.parquet"]
        );
        assert_eq!(
            names(source_files(root, "d/**/*.parquet").unwrap()),
            ["d/a.parquet", "d/sub/b.parquet"]
        );
        assert_eq!(
            names(source_files(root, "d/a.parquet").unwrap()),
            ["d/a.parquet"]
        );
        let err = source_files(root, "nope").unwrap_err().to_string();
        assert!(err.contains("source path not found"), "{err}");
        let err = source_files(root, "d/*.orc").unwrap_err().to_string();
        assert!(err.contains("no Parquet files match"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn symlink_loops_are_reported_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        touch(&root.join("d/a.parquet"));
        std::os::unix::fs::symlink(".", root.join("d/x")).unwrap();
        std::os::unix::fs::symlink(".", root.join("d/y")).unwrap();
        for path in ["d", "d/**/*.parquet"] {
            let err = source_files(root, path).unwrap_err().to_string();
            assert!(
                err.contains("d/x") && err.contains("same folder"),
                "{path}: {err}"
            );
        }
        // A link to a folder outside the source is followed once.
        touch(&root.join("e/b.parquet"));
        std::fs::remove_file(root.join("d/x")).unwrap();
        std::fs::remove_file(root.join("d/y")).unwrap();
        std::os::unix::fs::symlink(root.join("e"), root.join("d/e")).unwrap();
        assert_eq!(source_files(root, "d").unwrap().len(), 2);
    }
}
