//! The minikube cache shared by every environment's MINIKUBE_HOME (through a `cache/` link).
//! minikube keys its download locks by each home's own path and keeps them in each TMPDIR
//! (`pkg/util/lock/lock.go`), so two homes sharing one cache do not see each other's locks:
//! until one start has filled the cache for a minikube version, mkh lets one start at a time
//! download, under a lock of its own; the others wait, then find the files there.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use super::contract::Version;
use crate::error::{Error, Result};

fn marker(cache: &Path, version: Version) -> PathBuf {
    cache.join(format!(".mkh-filled-by-{version}"))
}

/// Held while a start may download into a cold cache; `None` once the cache is warm.
pub(crate) fn first_start_lock(cache: &Path, version: Version) -> Result<Option<Flock<File>>> {
    if marker(cache, version).exists() {
        return Ok(None);
    }
    let path = cache.join(".mkh-download.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    let lock = Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::io(&path, std::io::Error::from(e)))?;
    // Whoever held it before may have filled the cache meanwhile.
    if marker(cache, version).exists() {
        return Ok(None);
    }
    Ok(Some(lock))
}

/// Records that a start of `version` succeeded with this cache: later starts run at once.
pub(crate) fn mark_warm(cache: &Path, version: Version) {
    if let Err(e) = std::fs::write(marker(cache, version), b"") {
        tracing::debug!("minikube cache {}: {e}", cache.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cold_cache_is_locked_until_one_start_filled_it() {
        let dir = tempfile::tempdir().unwrap();
        let v = Version::new(1, 38, 1);
        let held = first_start_lock(dir.path(), v).unwrap();
        assert!(held.is_some());
        // A second start waits: try without blocking.
        let file = File::options()
            .write(true)
            .open(dir.path().join(".mkh-download.lock"))
            .unwrap();
        assert!(Flock::lock(file, FlockArg::LockExclusiveNonblock).is_err());
        mark_warm(dir.path(), v);
        drop(held);
        assert!(first_start_lock(dir.path(), v).unwrap().is_none());
        // Another version fills its own files.
        assert!(first_start_lock(dir.path(), Version::new(1, 39, 0))
            .unwrap()
            .is_some());
    }
}
