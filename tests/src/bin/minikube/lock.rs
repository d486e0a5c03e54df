//! Blocking flocks in the lock directory (`$TMPDIR/minikube-locks-<uid>/`), keyed by name.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use crate::Failure;

/// Held until dropped.
#[derive(Debug)]
pub struct Guard {
    _lock: Flock<File>,
}

/// Waits for the exclusive lock `<lock_dir>/<name>`.
pub fn exclusive(lock_dir: &Path, name: &str) -> Result<Guard, Failure> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(lock_dir)
        .map_err(|e| Failure::error(format!("create {}: {e}", lock_dir.display())))?;
    let path = lock_dir.join(name);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Failure::error(format!("open {}: {e}", path.display())))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map(|l| Guard { _lock: l })
        .map_err(|(_, e)| Failure::error(format!("lock {}: {e}", path.display())))
}

/// A stable short key for a path (FNV-1a 64, hex): lock names keyed on a file's path.
pub fn key(path: &Path) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in path.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_distinct() {
        assert_eq!(key(Path::new("/a/b")), key(Path::new("/a/b")));
        assert_ne!(key(Path::new("/a/b")), key(Path::new("/a/c")));
        assert_eq!(key(Path::new("")), "cbf29ce484222325");
    }
}
