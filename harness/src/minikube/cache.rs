//! The minikube cache shared by every environment's MINIKUBE_HOME (through a `cache/` link).
//! minikube keys its download locks by each home's own path and keeps them in each TMPDIR
//! (`pkg/util/lock/lock.go`), so two homes sharing one cache do not see each other's locks:
//! until one start has filled the cache for what it downloads (the minikube version's ISO, the
//! Kubernetes version and container runtime's preload), mkh lets one such start at a time run,
//! under a lock of its own; the others wait, then find the files there.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};

use super::contract::Version;
use crate::error::{Error, Result};

/// What a start downloads into the cache: the ISO of its minikube version, the preload and
/// images of its Kubernetes version and container runtime (`--kubernetes-version`,
/// `--container-runtime`/`-c` among the extra arguments; minikube's defaults otherwise).
pub(crate) fn download_key(version: Version, extra_args: &[String]) -> String {
    let value = |long: &str, short: Option<&str>| {
        let mut found = String::from("default");
        let mut args = extra_args.iter();
        while let Some(a) = args.next() {
            let inline = a
                .strip_prefix(&format!("--{long}="))
                .or_else(|| short.and_then(|s| a.strip_prefix(&format!("{s}="))));
            if let Some(v) = inline {
                found = v.to_owned();
            } else if a == &format!("--{long}") || short == Some(a.as_str()) {
                if let Some(v) = args.next() {
                    found = v.clone();
                }
            }
        }
        found
    };
    let key = format!(
        "{version}-{}-{}",
        value("kubernetes-version", None),
        value("container-runtime", Some("-c"))
    );
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn marker(cache: &Path, key: &str) -> PathBuf {
    cache.join(format!(".mkh-filled-by-{key}"))
}

/// Held while a start may download into a cold cache; `None` once the cache is warm for `key`.
/// Waits at most `deadline` for another start that holds it.
pub(crate) fn first_start_lock(
    cache: &Path,
    key: &str,
    deadline: Duration,
) -> Result<Option<Flock<File>>> {
    if marker(cache, key).exists() {
        return Ok(None);
    }
    let path = cache.join(".mkh-download.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    let lock = crate::wait::until(deadline, Duration::from_millis(500), || {
        let handle = file.try_clone().map_err(|e| Error::io(&path, e))?;
        match Flock::lock(handle, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(lock)),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(Error::io(&path, std::io::Error::from(e))),
        }
    })?;
    match lock {
        // Whoever held it before may have filled the cache meanwhile.
        Some(_) if marker(cache, key).exists() => Ok(None),
        Some(lock) => Ok(Some(lock)),
        None => Err(Error::Timeout {
            what: format!(
                "the first minikube start into the shared cache {} (another environment's start holds {})",
                cache.display(),
                path.display()
            ),
            after: deadline,
            last: "still held".into(),
        }),
    }
}

/// Records that a start succeeded with this cache for `key`: later such starts run at once.
pub(crate) fn mark_warm(cache: &Path, key: &str) {
    if let Err(e) = std::fs::write(marker(cache, key), b"") {
        tracing::debug!("minikube cache {}: {e}", cache.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_cold_cache_is_locked_until_one_start_filled_it() {
        let dir = tempfile::tempdir().unwrap();
        let key = download_key(Version::new(1, 38, 1), &[]);
        let long = Duration::from_secs(5);
        let held = first_start_lock(dir.path(), &key, long).unwrap();
        assert!(held.is_some());
        // A second start waits, and gives up at its deadline with what it waited for.
        let err = first_start_lock(dir.path(), &key, Duration::from_millis(600)).unwrap_err();
        assert!(err.to_string().contains(".mkh-download.lock"), "{err}");
        mark_warm(dir.path(), &key);
        drop(held);
        assert!(first_start_lock(dir.path(), &key, long).unwrap().is_none());
        // Another Kubernetes version downloads other files.
        let other = download_key(
            Version::new(1, 38, 1),
            &args(&["--kubernetes-version=v1.30.0"]),
        );
        assert!(first_start_lock(dir.path(), &other, long)
            .unwrap()
            .is_some());
    }

    #[test]
    fn the_key_names_what_a_start_downloads() {
        let v = Version::new(1, 38, 1);
        assert_eq!(download_key(v, &[]), "v1.38.1-default-default");
        assert_eq!(
            download_key(
                v,
                &args(&["--kubernetes-version", "v1.30.0", "-c", "containerd"])
            ),
            "v1.38.1-v1.30.0-containerd"
        );
        assert_eq!(
            download_key(
                v,
                &args(&["--container-runtime=cri-o", "--kubernetes-version=../x"])
            ),
            "v1.38.1-.._x-cri-o"
        );
    }
}
