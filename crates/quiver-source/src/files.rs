//! Finding a source's Parquet files: a file, a folder (searched recursively), or a glob.
//!
//! Entries whose names start with `.` or `_` are skipped (temporary files, `_SUCCESS`,
//! `_temporary`). Folders are followed through symlinks, but each folder is reached once: a
//! symlink loop, or two links to one folder, is an error naming both paths, so no file is
//! ever read twice and the walk always ends. Files are returned sorted by path: that order
//! breaks the last ties of the point-in-time join and of materialization.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::path::{Component, Path, PathBuf};

use glob::{MatchOptions, Pattern};

use crate::error::{Result, SourceError};

/// Resolves a source path (file, folder of `*.parquet` files, or glob) under `data_root`.
/// Every file and folder it reaches is under the data root (see [`resolve_beneath`]).
pub fn source_files(data_root: &Path, path: &str) -> Result<Vec<PathBuf>> {
    let root = canonical_root(data_root)?;
    let shown = data_root.join(path);
    let not_found = |message: &str| SourceError::NotFound {
        path: shown.display().to_string(),
        message: message.to_owned(),
    };
    let mut walk = Walk::new(&root, path);
    if path.contains(['*', '?', '[']) {
        let (base, rest, depth) = glob_base(Path::new(path));
        let base = resolve_beneath(&root, &base, path)?;
        // The base is literal; only the rest of the source's path is a pattern.
        let pattern = Pattern::new(&format!(
            "{}{rest}",
            Pattern::escape(&base.join("").to_string_lossy())
        ))
        .map_err(|e| not_found(&format!("invalid glob: {e}")))?;
        if base.is_dir() {
            walk.folder(&base, depth, &mut |p| {
                pattern.matches_path_with(p, GLOB_OPTIONS)
            })?;
        }
    } else {
        let full = resolve_beneath(&root, Path::new(path), path)?;
        match fs::metadata(&full) {
            Ok(m) if m.is_dir() => walk.folder(&full, usize::MAX, &mut |p| {
                p.extension().is_some_and(|e| e == "parquet")
            })?,
            Ok(m) if m.is_file() => walk.files.push(full),
            Ok(_) => return Err(outside(path)),
            Err(_) => return Err(not_found("source path not found")),
        }
    }
    let mut files = walk.files;
    if files.is_empty() {
        return Err(not_found("no Parquet files match this source path"));
    }
    files.sort();
    Ok(files)
}

/// The data root with every symlink resolved: what confined paths must stay under.
pub(crate) fn canonical_root(data_root: &Path) -> Result<PathBuf> {
    data_root.canonicalize().map_err(SourceError::io(data_root))
}

fn outside(given: &str) -> SourceError {
    SourceError::OutsideDataRoot {
        path: given.to_owned(),
    }
}

/// Most symlinks followed while resolving one path (Linux's limit).
const MAX_LINKS: usize = 40;

/// Resolves `path` (relative to `root`, or absolute and inside it) with every symlink
/// followed, one component at a time, refusing as soon as a `..`, a link or an absolute path
/// would leave `root` (canonical). Nothing outside `root` is ever looked at, so the answer
/// reveals nothing about it. The resolved path may not exist; `given` is what errors show.
pub fn resolve_beneath(root: &Path, path: &Path, given: &str) -> Result<PathBuf> {
    let relative = |p: &Path| -> Result<Vec<OsString>> {
        let p = if p.is_absolute() {
            p.strip_prefix(root).map_err(|_| outside(given))?
        } else {
            p
        };
        // A stack: the next component last.
        let mut parts: Vec<OsString> = p
            .components()
            .map(|c| c.as_os_str().to_os_string())
            .collect();
        parts.reverse();
        Ok(parts)
    };
    let mut pending = relative(path)?;
    let mut resolved = root.to_path_buf();
    let mut depth = 0usize;
    let mut links = 0usize;
    let mut exists = true;
    while let Some(part) = pending.pop() {
        match Path::new(&part).components().next() {
            None | Some(Component::CurDir) => continue,
            Some(Component::ParentDir) => {
                if depth == 0 {
                    return Err(outside(given));
                }
                resolved.pop();
                depth -= 1;
                continue;
            }
            Some(Component::Normal(_)) => {}
            Some(_) => return Err(outside(given)),
        }
        resolved.push(&part);
        depth += 1;
        if !exists {
            continue;
        }
        match fs::symlink_metadata(&resolved) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(outside(given));
                }
                let target = fs::read_link(&resolved).map_err(|_| outside(given))?;
                resolved.pop();
                depth -= 1;
                if target.is_absolute() {
                    resolved = root.to_path_buf();
                    depth = 0;
                }
                // The target's components come next (the stack's top is its end).
                pending.extend(relative(&target)?);
            }
            Ok(_) => {}
            Err(_) => exists = false,
        }
    }
    Ok(resolved)
}

/// `*` and `?` stay within one path component, as in a shell; `**` crosses folders.
pub(crate) const GLOB_OPTIONS: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: true,
};

/// The literal folder a glob starts from, the pattern of the rest, and how many folders deep
/// its matches can be (`usize::MAX` with `**`).
fn glob_base(pattern: &Path) -> (PathBuf, String, usize) {
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
    let rest = rest
        .iter()
        .collect::<PathBuf>()
        .to_string_lossy()
        .into_owned();
    (base, rest, depth)
}

/// A recursive folder walk that reaches each folder once and never leaves the data root.
struct Walk<'a> {
    root: &'a Path,
    given: &'a str,
    /// Canonical folder → the path it was first reached by.
    seen: HashMap<PathBuf, PathBuf>,
    files: Vec<PathBuf>,
}

impl<'a> Walk<'a> {
    fn new(root: &'a Path, given: &'a str) -> Self {
        Self {
            root,
            given,
            seen: HashMap::new(),
            files: Vec::new(),
        }
    }

    fn folder(
        &mut self,
        dir: &Path,
        depth: usize,
        keep: &mut dyn FnMut(&Path) -> bool,
    ) -> Result<()> {
        let canonical = resolve_beneath(self.root, dir, self.given)?;
        if let Some(first) = self.seen.insert(canonical, dir.to_path_buf()) {
            return Err(SourceError::FolderReachedTwice {
                path: dir.to_path_buf(),
                first,
            });
        }
        let mut entries: Vec<(PathBuf, fs::FileType)> = fs::read_dir(dir)
            .map_err(SourceError::io(dir))?
            .map(|e| e.and_then(|e| Ok((e.path(), e.file_type()?))))
            .collect::<std::io::Result<_>>()
            .map_err(SourceError::io(dir))?;
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (path, file_type) in entries {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with('.') || name.starts_with('_') {
                continue;
            }
            // A link is followed only while it stays under the data root (and only when it
            // could be part of the source).
            if file_type.is_symlink() && depth == 0 && !keep(&path) {
                continue;
            }
            let file_type = if file_type.is_symlink() {
                let target = resolve_beneath(self.root, &path, self.given)?;
                match fs::metadata(target) {
                    Ok(m) => m.file_type(),
                    Err(_) => continue,
                }
            } else {
                file_type
            };
            if file_type.is_dir() {
                if depth > 0 {
                    self.folder(&path, depth.saturating_sub(1), keep)?;
                }
            } else if file_type.is_file() && keep(&path) {
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
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, b"").unwrap();
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
        fs::remove_file(root.join("d/x")).unwrap();
        fs::remove_file(root.join("d/y")).unwrap();
        std::os::unix::fs::symlink(root.join("e"), root.join("d/e")).unwrap();
        assert_eq!(source_files(root, "d").unwrap().len(), 2);
    }

    #[cfg(unix)]
    #[test]
    fn paths_never_leave_the_data_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let secret = dir.path().join("secret");
        touch(&secret.join("s.parquet"));
        touch(&root.join("d/a.parquet"));
        let link =
            |target: &Path, at: &str| std::os::unix::fs::symlink(target, root.join(at)).unwrap();
        link(&secret, "out");
        link(&secret.join("s.parquet"), "d/out.parquet");
        link(Path::new("../../secret"), "rel");
        link(&root.join("d"), "in");
        let refused = |path: &str| {
            let err = source_files(&root, path).unwrap_err();
            assert!(
                matches!(err, SourceError::OutsideDataRoot { .. }),
                "{path}: {err}"
            );
            assert!(!err.to_string().contains("os error"), "{path}: {err}");
        };
        for path in [
            secret.join("s.parquet").to_str().unwrap(),
            "../secret/s.parquet",
            "../secret",
            "d/../../secret",
            "out",
            "out/s.parquet",
            "rel/s.parquet",
            "out/*.parquet",
            "../*/s.parquet",
            "d",
            "d/*.parquet",
            "/etc/shadow",
            "/nonexistent/x.parquet",
        ] {
            refused(path);
        }
        // Links and `..` that stay inside are followed.
        fs::remove_file(root.join("d/out.parquet")).unwrap();
        assert_eq!(source_files(&root, "in").unwrap().len(), 1);
        assert_eq!(source_files(&root, "d/../in/a.parquet").unwrap().len(), 1);
        let absolute = root.canonicalize().unwrap().join("d/a.parquet");
        assert_eq!(
            source_files(&root, absolute.to_str().unwrap())
                .unwrap()
                .len(),
            1
        );
        // Something other than a file or folder (a FIFO) is refused without being opened.
        assert!(
            std::process::Command::new("mkfifo")
                .arg(root.join("fifo.parquet"))
                .status()
                .unwrap()
                .success()
        );
        refused("fifo.parquet");
        // A glob skips it.
        let err = source_files(&root, "*.parquet").unwrap_err().to_string();
        assert!(err.contains("no Parquet files"), "{err}");
    }
}
