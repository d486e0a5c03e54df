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

    /// For `minikube start` (also `stop`): real kvm2 cold starts take 45-50 s under KVM, more
    /// when the ISO is first downloaded.
    pub fn minikube_start(&self) -> Duration {
        self.scaled(300)
    }

    /// For an ACPI shutdown before the machine is powered off hard.
    pub fn shutdown(&self) -> Duration {
        self.scaled(5)
    }
}
