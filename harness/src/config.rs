//! Local directories mkh creates, and how long it waits. Where they are comes from
//! [`crate::Settings`].

use std::path::Path;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::machine::accel::Accel;

/// Creates `dir` (and parents) with mode 0755 where missing.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| Error::io(dir, e))
}

/// Checks a directory setting before anything is made: it exists, is a directory, and this
/// user may create files in it.
pub fn check_writable_dir(setting: &'static str, dir: &Path) -> Result<()> {
    let problem = match std::fs::metadata(dir) {
        Err(e) => format!("it cannot be used: {e}"),
        Ok(m) if !m.is_dir() => "it is not a directory".into(),
        Ok(_) => match nix::unistd::access(
            dir,
            nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
        ) {
            Ok(()) => return Ok(()),
            Err(e) => format!("this user may not create files in it ({e})"),
        },
    };
    Err(Error::InvalidInput {
        what: setting,
        value: dir.display().to_string(),
        problem,
        fix: "point it at an existing directory you may write, or unset it for the default",
    })
}

/// Checks `MKH_CACHE_DIR` for the built-in guest before anything is made, creating nothing:
/// QEMU's user must reach the images in it.
pub fn check_cache_dir(dir: &Path) -> Result<()> {
    match mkh_guest_image::cache_dir_reachable(dir) {
        Ok(()) => Ok(()),
        Err(mkh_guest_image::ImageError::CacheNotReachable { blocker, mode, .. }) => {
            Err(Error::InvalidInput {
                what: "MKH_CACHE_DIR",
                value: dir.display().to_string(),
                problem: format!(
                    "QEMU's user (libvirt-qemu) cannot traverse {} (mode {mode:04o}, needs o+x), so it could not open the guest image",
                    blocker.display()
                ),
                fix: "set MKH_CACHE_DIR to a directory every parent of which is world-searchable, e.g. /var/tmp/mkh-cache (not under /root), or unset it",
            })
        }
        Err(e) => Err(Error::InvalidInput {
            what: "MKH_CACHE_DIR",
            value: dir.display().to_string(),
            problem: e.to_string(),
            fix: "point it at a directory you may write, or unset it",
        }),
    }
}

/// Deadlines, scaled by the accelerator (TCG is several times slower than KVM) and by
/// `MKH_TIMEOUT_SCALE`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    pub scale: f64,
}

impl Timeouts {
    /// `scale` is the user's (`MKH_TIMEOUT_SCALE`, validated finite and positive).
    pub fn new(accel: Accel, scale: f64) -> Timeouts {
        Timeouts {
            scale: accel.slowness() * scale,
        }
    }

    fn scaled(&self, kvm_secs: u64) -> Duration {
        Duration::from_secs_f64(kvm_secs as f64 * self.scale)
    }

    /// From start to a DHCP lease on every NIC.
    pub fn lease(&self) -> Duration {
        self.scaled(30)
    }

    /// From the leases to sshd answering.
    pub fn ssh(&self) -> Duration {
        self.scaled(30)
    }

    /// For `minikube start` (also `stop`) of a cluster of `nodes` nodes: see
    /// [`minikube_start_secs`].
    pub fn minikube_start(&self, nodes: u32) -> Duration {
        self.scaled(minikube_start_secs(nodes))
    }

    /// For an ACPI shutdown before the machine is powered off hard.
    pub fn shutdown(&self) -> Duration {
        self.scaled(5)
    }
}

/// `minikube start`'s deadline under KVM, in seconds, for `nodes` nodes: a kvm2 cold start
/// takes 45-50 s, more when the ISO is first downloaded, and a new host that fails is deleted
/// and made once more (`startHostInternal`); minikube adds the nodes one after the other
/// (`startWithDriver`'s loop over `node.Add`, `cmd/minikube/cmd/start.go`), each a VM to boot
/// and join. So 300 s for the first node, 150 s more for each further one.
pub(crate) fn minikube_start_secs(nodes: u32) -> u64 {
    300 + 150 * u64::from(nodes.max(1) - 1)
}

/// `minikube delete`'s deadline for `nodes` nodes: it deletes them one after the other
/// (`deleteHosts`, `cmd/minikube/cmd/delete.go`), each a destroy and an undefine (no VM boots:
/// not scaled by the accelerator). 20 s a node: one node's fits nextest's grace period (30 s)
/// with room for mkh's own removals after it; beyond that, a teardown that nextest cuts short
/// with SIGKILL leaves the rest to the watchdog.
pub(crate) fn minikube_delete_deadline(nodes: u32) -> Duration {
    Duration::from_secs(20 * u64::from(nodes.max(1)))
}

/// Removes the oldest entries of `dir` that `counted` picks (by modification time; files or
/// directories) until at most `keep - 1` remain, making room for one more. Best effort.
pub(crate) fn prune_oldest(dir: &Path, keep: usize, counted: impl Fn(&std::fs::DirEntry) -> bool) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut found: Vec<(std::time::SystemTime, std::path::PathBuf)> = entries
        .flatten()
        .filter(|e| counted(e))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    found.sort();
    let excess = (found.len() + 1).saturating_sub(keep);
    for (_, path) in found.into_iter().take(excess) {
        let _ = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn minikube_deadlines_grow_with_the_nodes() {
        use super::{minikube_delete_deadline, minikube_start_secs, Timeouts};
        use std::time::Duration;
        assert_eq!(minikube_start_secs(1), 300);
        assert_eq!(minikube_start_secs(0), 300);
        assert_eq!(minikube_start_secs(3), 600);
        assert!(minikube_start_secs(9) > minikube_start_secs(8));
        let t = Timeouts { scale: 2.0 };
        assert_eq!(t.minikube_start(2), Duration::from_secs(900));
        assert_eq!(minikube_delete_deadline(1), Duration::from_secs(20));
        assert_eq!(minikube_delete_deadline(4), Duration::from_secs(80));
    }

    use super::*;

    #[test]
    fn pruning_keeps_the_newest_and_makes_room_for_one() {
        let tmp = tempfile::tempdir().unwrap();
        for i in 0..5 {
            let d = tmp.path().join(format!("b{i}"));
            std::fs::create_dir(&d).unwrap();
            let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000 + i);
            std::fs::File::open(&d).unwrap().set_modified(t).unwrap();
        }
        prune_oldest(tmp.path(), 3, |e| e.path().is_dir());
        let mut left: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["b3", "b4"]);
        prune_oldest(&tmp.path().join("none"), 3, |_| true);
    }
}
