//! Where mkh keeps files on this host, and how long it waits. Everything local lives in these two
//! directories (plus the allocator's lock file, see [`crate::net::lock_path`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::machine::accel::Accel;

fn uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

/// Caches (the guest image): `MKH_CACHE_DIR`, else `/var/tmp/mkh-cache-<uid>`. It lies outside
/// home directories because QEMU (user `libvirt-qemu` under `qemu:///system`) must traverse every
/// directory down to the images it boots.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("MKH_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("/var/tmp/mkh-cache-{}", uid())))
}

/// Environment homes (keys, known hosts, console logs): `MKH_STATE_DIR`, else
/// `/var/tmp/mkh-state-<uid>`.
pub fn state_dir() -> PathBuf {
    std::env::var_os("MKH_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("/var/tmp/mkh-state-{}", uid())))
}

/// Creates `dir` (and parents) with mode 0755 where missing.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| Error::io(dir, e))
}

/// Deadlines, scaled by the accelerator (TCG is several times slower than KVM) and by
/// `MKH_TIMEOUT_SCALE`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    pub scale: f64,
}

impl Timeouts {
    pub fn new(accel: Accel) -> Result<Timeouts> {
        let user = match std::env::var("MKH_TIMEOUT_SCALE") {
            Ok(v) => v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|s| *s > 0.0)
                .ok_or_else(|| Error::InvalidInput {
                    what: "timeout scale (MKH_TIMEOUT_SCALE)",
                    value: v.clone(),
                    problem: "it is not a positive number".into(),
                    fix: "set it to e.g. 2 to double every deadline, or unset it",
                })?,
            Err(_) => 1.0,
        };
        Ok(Timeouts {
            scale: accel.slowness() * user,
        })
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

    /// For `minikube start` (also `stop`): real kvm2 cold starts take 45-50 s under KVM, more
    /// when the ISO is first downloaded.
    pub fn minikube_start(&self) -> Duration {
        self.scaled(300)
    }

    /// For `minikube delete` during teardown: it must fit nextest's grace period with room for
    /// mkh's own removals after it.
    pub fn minikube_delete(&self) -> Duration {
        Duration::from_secs(20)
    }

    /// For an ACPI shutdown before the machine is powered off hard.
    pub fn shutdown(&self) -> Duration {
        self.scaled(5)
    }
}
