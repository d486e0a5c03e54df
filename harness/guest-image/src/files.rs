//! File system helpers: every error names its path and what was being done.

use std::fs;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::{ImageError, Result};

/// An [`ImageError::Io`] for `action` on `path`.
pub(crate) fn io_err(
    action: &'static str,
    path: impl Into<PathBuf>,
    source: io::Error,
) -> ImageError {
    ImageError::Io {
        action,
        path: path.into(),
        source,
    }
}

/// Creates `dir` with mode 0755; an existing directory is fine.
pub(crate) fn make_dir_0755(dir: &Path) -> Result<()> {
    match fs::create_dir(dir) {
        Ok(()) => set_mode(dir, 0o755),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(io_err("create directory", dir, e)),
    }
}

/// Creates `dir` (which must not exist) with exactly `mode`, umask aside.
pub(crate) fn make_dir_with_mode(dir: &Path, mode: u32) -> Result<()> {
    fs::create_dir(dir).map_err(|e| io_err("create", dir, e))?;
    set_mode(dir, mode)
}

/// Creates the missing parent directories of `path`.
pub(crate) fn create_parents(path: &Path) -> Result<()> {
    match path.parent() {
        Some(parent) => fs::create_dir_all(parent).map_err(|e| io_err("create", parent, e)),
        None => Ok(()),
    }
}

/// chmod.
pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| io_err("chmod", path, e))
}

/// Copies `src` to `dst` (following symlinks) and gives `dst` `mode`;
/// `action` describes the copy in errors ("copy binary to").
pub(crate) fn copy_with_mode(
    src: &Path,
    dst: &Path,
    mode: u32,
    action: &'static str,
) -> Result<()> {
    fs::copy(src, dst).map_err(|e| io_err(action, dst, e))?;
    set_mode(dst, mode)
}

/// Writes `content` to `dst` and gives it `mode`.
pub(crate) fn write_with_mode(dst: &Path, content: impl AsRef<[u8]>, mode: u32) -> Result<()> {
    fs::write(dst, content).map_err(|e| io_err("write", dst, e))?;
    set_mode(dst, mode)
}

/// Creates the symlink `link` -> `target`.
pub(crate) fn make_symlink(target: &str, link: &Path) -> Result<()> {
    symlink(target, link).map_err(|e| io_err("create symlink", link, e))
}

/// Whether `path` ends in `.<ext>`.
pub(crate) fn has_ext(path: &Path, ext: &str) -> bool {
    path.extension().is_some_and(|e| e == ext)
}

/// The entries of `dir`, sorted by path.
pub(crate) fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io_err("list", dir, e))? {
        entries.push(entry.map_err(|e| io_err("list", dir, e))?.path());
    }
    entries.sort();
    Ok(entries)
}

/// Removes a directory tree when dropped (the build's work dir, on every path).
pub(crate) struct RemoveOnDrop(pub(crate) PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
