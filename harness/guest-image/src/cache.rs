//! The cache directory (reachable by QEMU's user), the recipe markers that
//! name the image built for a recipe, and the build lock.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::files::{io_err, make_dir_0755, set_mode, RemoveOnDrop};
use crate::{GuestImage, ImageError, Result, INITRD_FILE, KERNEL_FILE};

/// How long a process waits for another one's build before giving up.
pub(crate) const LOCK_WAIT: Duration = Duration::from_secs(15 * 60);

/// The lock file in the `guest` directory. It stays there: removing a lock
/// file that others may have open would let two processes hold "the" lock.
const LOCK_FILE: &str = ".build.lock";

/// Work directories of builds start with this (`.build-<digest16>-<pid>`).
const WORK_DIR_PREFIX: &str = ".build-";

/// Checks that QEMU's user can reach `cache_dir`, creates it and its `guest`
/// subdirectory (0755) and returns the absolute `guest` path.
pub(crate) fn prepare_cache_dir(cache_dir: &Path) -> Result<PathBuf> {
    prepare_cache_subdir(cache_dir, "guest")
}

/// [`prepare_cache_dir`] for the subdirectory `name` (`guest`, `node`).
pub(crate) fn prepare_cache_subdir(cache_dir: &Path, name: &str) -> Result<PathBuf> {
    let (abs, mut missing) = reachable_part(cache_dir)?;
    missing.reverse();
    let guest_dir = abs.join(name);
    missing.push(guest_dir.clone());
    for dir in &missing {
        make_dir_0755(dir)?;
    }
    // `guest` may predate us (made by someone else, with another umask).
    let mode = fs::metadata(&guest_dir)
        .map_err(|e| io_err("stat", &guest_dir, e))?
        .mode();
    if !qemu_can_traverse(mode) {
        return Err(ImageError::CacheNotReachable {
            path: abs,
            blocker: guest_dir,
            mode: mode & 0o7777,
        });
    }
    Ok(guest_dir)
}

/// What [`prepare_cache_dir`] would refuse, creating nothing: the existing part of the path
/// and an existing `guest` directory must be searchable by others, and where directories are
/// missing, the deepest existing one must let this user create them.
pub(crate) fn reachable_without_creating(cache_dir: &Path) -> Result<()> {
    let (abs, missing) = reachable_part(cache_dir)?;
    let guest_dir = abs.join("guest");
    if let Ok(meta) = fs::metadata(&guest_dir) {
        if !qemu_can_traverse(meta.mode()) {
            return Err(ImageError::CacheNotReachable {
                path: abs,
                blocker: guest_dir,
                mode: meta.mode() & 0o7777,
            });
        }
    }
    // `missing` runs deepest first: the last one's parent is the deepest that exists.
    if let Some(shallowest) = missing.last() {
        let parent = shallowest.parent().unwrap_or(Path::new("/"));
        nix::unistd::access(
            parent,
            nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
        )
        .map_err(|e| io_err("create directories in", parent, std::io::Error::from(e)))?;
    }
    Ok(())
}

/// Checks the part of `cache_dir`'s path that exists (through its real path: a symlink's
/// target directories are what QEMU traverses); returns the absolute path and the missing
/// directories, deepest first. Creates nothing.
pub(crate) fn reachable_part(cache_dir: &Path) -> Result<(PathBuf, Vec<PathBuf>)> {
    let abs = if cache_dir.is_absolute() {
        cache_dir.to_path_buf()
    } else {
        let cwd = std::env::current_dir()
            .map_err(|e| io_err("determine the current directory", ".", e))?;
        cwd.join(cache_dir)
    };
    let mut existing = abs.as_path();
    let mut missing = Vec::new();
    while !existing.exists() {
        missing.push(existing.to_path_buf());
        existing = existing.parent().unwrap_or(Path::new("/"));
    }
    let real = fs::canonicalize(existing).map_err(|e| io_err("resolve", existing, e))?;
    for dir in real.ancestors() {
        let meta = fs::metadata(dir).map_err(|e| io_err("stat", dir, e))?;
        if !qemu_can_traverse(meta.mode()) {
            return Err(ImageError::CacheNotReachable {
                path: abs.clone(),
                blocker: dir.to_path_buf(),
                mode: meta.mode() & 0o7777,
            });
        }
    }
    Ok((abs, missing))
}

/// QEMU runs as an unrelated user: only the "others" search bit counts. (A
/// directory owned by libvirt-qemu's group would also do; refusing it is
/// the simple, explainable rule.)
fn qemu_can_traverse(mode: u32) -> bool {
    mode & 0o001 != 0
}

pub(crate) fn recipe_marker(guest_dir: &Path, recipe: &str) -> PathBuf {
    guest_dir.join(format!("recipe-{recipe}"))
}

/// The image last built for this recipe, if its marker and files exist.
pub(crate) fn lookup_recipe(guest_dir: &Path, recipe: &str) -> Option<GuestImage> {
    let digest = fs::read_to_string(recipe_marker(guest_dir, recipe)).ok()?;
    let digest = digest.trim();
    let valid = digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit());
    if !valid {
        return None;
    }
    complete_image(guest_dir, digest)
}

/// The image `<guest_dir>/<digest>`, if both its files exist.
pub(crate) fn complete_image(guest_dir: &Path, digest: &str) -> Option<GuestImage> {
    let dir = guest_dir.join(digest);
    let image = GuestImage {
        kernel: dir.join(KERNEL_FILE),
        initrd: dir.join(INITRD_FILE),
        digest: digest.to_string(),
    };
    (image.kernel.is_file() && image.initrd.is_file()).then_some(image)
}

/// Writes the marker atomically (temp file + rename).
pub(crate) fn write_recipe_marker(guest_dir: &Path, recipe: &str, digest: &str) -> Result<()> {
    let marker = recipe_marker(guest_dir, recipe);
    let tmp = guest_dir.join(format!(".recipe-{}.{}", &recipe[..16], std::process::id()));
    fs::write(&tmp, format!("{digest}\n")).map_err(|e| io_err("write", &tmp, e))?;
    set_mode(&tmp, 0o644)?;
    fs::rename(&tmp, &marker).map_err(|e| io_err("rename into place", &marker, e))
}

/// An exclusive `flock(2)` on `<guest>/.build.lock`, held while building.
///
/// Only a courtesy against duplicate work: correctness comes from the atomic
/// rename of the finished image. The kernel releases the lock when the file
/// is closed, on drop or when the holder dies, however it dies: there is no
/// stale lock to judge. (The file is opened close-on-exec, so the build's
/// child processes do not inherit it.)
pub(crate) struct BuildLock {
    _lock: Flock<fs::File>,
    guest_dir: PathBuf,
}

impl BuildLock {
    /// Takes the lock, waiting at most `wait` for its holder, or returns
    /// `None` as soon as `done()` says the image exists (another process built
    /// it while we waited).
    pub(crate) fn acquire(
        guest_dir: &Path,
        wait: Duration,
        mut done: impl FnMut() -> bool,
    ) -> Result<Option<BuildLock>> {
        let path = guest_dir.join(LOCK_FILE);
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&path)
            .map_err(|e| io_err("open lock file", &path, e))?;
        let started = Instant::now();
        loop {
            if done() {
                return Ok(None);
            }
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => {
                    return Ok(Some(BuildLock {
                        _lock: lock,
                        guest_dir: guest_dir.to_path_buf(),
                    }))
                }
                Err((back, Errno::EWOULDBLOCK | Errno::EINTR)) => file = back,
                Err((_, errno)) => {
                    return Err(io_err("lock", &path, io::Error::from(errno)));
                }
            }
            if started.elapsed() > wait {
                return Err(ImageError::LockTimeout {
                    lock: path,
                    waited: started.elapsed(),
                });
            }
            std::thread::sleep(Duration::from_millis(250).min(wait));
        }
    }

    /// Removes every build work directory in the `guest` directory. Holding
    /// the lock proves that no build is running, so any such directory is a
    /// killed build's leftover.
    pub(crate) fn remove_work_dirs(&self) {
        let Ok(entries) = fs::read_dir(&self.guest_dir) else {
            return;
        };
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(WORK_DIR_PREFIX)
            {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }

    /// This process's work directory for a build of `digest`, made empty, after removing every
    /// leftover of killed builds; it goes when the guard drops.
    pub(crate) fn fresh_work_dir(&self, digest: &str) -> Result<(PathBuf, RemoveOnDrop)> {
        self.remove_work_dirs();
        let work = self.work_dir(digest);
        if work.exists() {
            fs::remove_dir_all(&work).map_err(|e| io_err("remove old work dir", &work, e))?;
        }
        make_dir_0755(&work)?;
        Ok((work.clone(), RemoveOnDrop(work)))
    }

    /// The work directory of this process's build of `digest` (not created).
    pub(crate) fn work_dir(&self, digest: &str) -> PathBuf {
        self.guest_dir.join(format!(
            "{WORK_DIR_PREFIX}{}-{}",
            &digest[..16],
            std::process::id()
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Command, Stdio};

    use super::*;

    /// A fresh world-searchable directory under the temp dir.
    fn test_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mkh-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn cache_dir_must_be_world_searchable() {
        assert!(qemu_can_traverse(0o755));
        assert!(qemu_can_traverse(0o1777));
        assert!(qemu_can_traverse(0o711));
        assert!(!qemu_can_traverse(0o700));
        assert!(!qemu_can_traverse(0o750));
    }

    #[test]
    fn unreachable_cache_dir_is_refused_with_the_blocking_dir() {
        let base = test_dir("image-test");
        let private = base.join("private");
        fs::create_dir_all(&private).unwrap();
        fs::set_permissions(&base, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
        let err = prepare_cache_dir(&private.join("cache")).unwrap_err();
        match &err {
            ImageError::CacheNotReachable { blocker, mode, .. } => {
                assert_eq!(blocker, &private);
                assert_eq!(*mode, 0o700);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("/var/tmp/mkh"));
        assert!(
            !private.join("cache").exists(),
            "nothing created on refusal"
        );

        // A reachable one is created 0755 with its guest subdirectory
        // (unless the temp dir itself is private: then there is nothing to see).
        let ok = base.join("open/cache");
        let guest = match prepare_cache_dir(&ok) {
            Ok(guest) => guest,
            Err(ImageError::CacheNotReachable { blocker, .. }) if !blocker.starts_with(&base) => {
                fs::remove_dir_all(&base).unwrap();
                return;
            }
            Err(e) => panic!("{e}"),
        };
        assert_eq!(guest, ok.join("guest"));
        for dir in [base.join("open"), ok.clone(), guest.clone()] {
            assert_eq!(
                fs::metadata(&dir).unwrap().mode() & 0o7777,
                0o755,
                "{}",
                dir.display()
            );
        }
        // An existing private `guest` subdirectory is refused too.
        let other = base.join("other");
        fs::create_dir_all(other.join("guest")).unwrap();
        fs::set_permissions(&other, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(other.join("guest"), fs::Permissions::from_mode(0o700)).unwrap();
        assert!(matches!(
            prepare_cache_dir(&other),
            Err(ImageError::CacheNotReachable { mode: 0o700, .. })
        ));
        // The fast path needs no apt: a marker pointing at a complete image.
        let digest = "a".repeat(64);
        fs::create_dir(guest.join(&digest)).unwrap();
        fs::write(guest.join(&digest).join(KERNEL_FILE), b"k").unwrap();
        assert_eq!(lookup_recipe(&guest, "r1"), None);
        write_recipe_marker(&guest, &"r".repeat(64), &digest).unwrap();
        assert_eq!(
            lookup_recipe(&guest, &"r".repeat(64)),
            None,
            "initrd still missing"
        );
        fs::write(guest.join(&digest).join(INITRD_FILE), b"i").unwrap();
        let image = lookup_recipe(&guest, &"r".repeat(64)).unwrap();
        assert_eq!(image.digest, digest);
        assert_eq!(image.kernel, guest.join(&digest).join(KERNEL_FILE));
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn the_check_without_creating_refuses_what_preparing_would_and_makes_nothing() {
        let base = test_dir("check-test");
        fs::set_permissions(&base, fs::Permissions::from_mode(0o755)).unwrap();
        let cache = base.join("cache");
        fs::create_dir_all(cache.join("guest")).unwrap();
        fs::set_permissions(cache.join("guest"), fs::Permissions::from_mode(0o700)).unwrap();
        match reachable_without_creating(&cache).unwrap_err() {
            ImageError::CacheNotReachable { blocker, .. } => {
                assert_eq!(blocker, cache.join("guest"))
            }
            other => panic!("unexpected {other:?}"),
        }
        let fresh = base.join("a").join("b");
        reachable_without_creating(&fresh).unwrap();
        assert!(!base.join("a").exists(), "a check created a directory");
        let _ = fs::remove_dir_all(&base);
    }

    #[test]
    fn build_lock_excludes_waits_and_times_out_naming_the_file() {
        let dir = test_dir("lock-test");
        let short = Duration::from_millis(300);
        let first = BuildLock::acquire(&dir, short, || false).unwrap().unwrap();
        // A second holder (another open file description, as another process
        // would have) waits, then gives up with the lock file in the message.
        let started = Instant::now();
        let err = BuildLock::acquire(&dir, short, || false).err().unwrap();
        assert!(started.elapsed() >= short);
        let lock = dir.join(LOCK_FILE);
        match &err {
            ImageError::LockTimeout { lock: named, .. } => assert_eq!(named, &lock),
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains(&lock.display().to_string()));
        // A waiter stops waiting once the image exists.
        assert!(BuildLock::acquire(&dir, short, || true).unwrap().is_none());
        // Released on drop; the lock file stays.
        drop(first);
        let again = BuildLock::acquire(&dir, short, || false).unwrap();
        assert!(again.is_some() && lock.is_file());
        drop(again);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn build_lock_of_a_killed_process_is_released_by_the_kernel() {
        let dir = test_dir("lock-kill-test");
        let lock = dir.join(LOCK_FILE);
        fs::write(&lock, "").unwrap();
        // util-linux flock(1) holds the same kind of lock in another process;
        // with --no-fork that process is `sleep` itself.
        let Ok(mut holder) = Command::new("flock")
            .arg("--no-fork")
            .arg(&lock)
            .args(["sleep", "60"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        else {
            eprintln!("flock(1) not installed: skipped");
            return;
        };
        let short = Duration::from_millis(300);
        let deadline = Instant::now() + Duration::from_secs(10);
        // Until flock(1) has taken it, our attempts may still succeed.
        while let Ok(Some(_)) = BuildLock::acquire(&dir, short, || false) {
            if holder.try_wait().unwrap().is_some() {
                eprintln!("flock(1) without --no-fork: skipped");
                fs::remove_dir_all(&dir).unwrap();
                return;
            }
            assert!(Instant::now() < deadline, "flock(1) never took the lock");
            std::thread::sleep(Duration::from_millis(50));
        }
        holder.kill().unwrap();
        holder.wait().unwrap();
        let mut taken = None;
        while taken.is_none() && Instant::now() < deadline {
            taken = BuildLock::acquire(&dir, short, || false).ok().flatten();
        }
        assert!(taken.is_some(), "the lock outlived its killed holder");
        drop(taken);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn lock_holder_removes_leftover_work_dirs_only() {
        let dir = test_dir("work-dir-test");
        let leftover = dir.join(".build-0123456789abcdef-999999999");
        fs::create_dir_all(leftover.join("x")).unwrap();
        let image = dir.join("b".repeat(64));
        fs::create_dir_all(&image).unwrap();
        let lock = BuildLock::acquire(&dir, Duration::ZERO, || false)
            .unwrap()
            .unwrap();
        let work = lock.work_dir(&"c".repeat(64));
        assert_eq!(
            work.file_name().unwrap().to_string_lossy(),
            format!(".build-cccccccccccccccc-{}", std::process::id())
        );
        lock.remove_work_dirs();
        assert!(!leftover.exists() && image.exists() && dir.join(LOCK_FILE).exists());
        drop(lock);
        fs::remove_dir_all(&dir).unwrap();
    }
}
