//! Warm starts of the built-in guest: booted once to the point where nothing in it belongs to one
//! machine, saved by libvirt, and restored for every later machine on that machine's own
//! networks.
//!
//! The saved guest has set up what every machine shares (mounts, modules, NICs found) and waits
//! on its second serial port (ttyS1). mkh defines the machine's domain as for a cold boot, copies
//! the save image with that domain's XML in its header (`save_image`), restores the copy (libvirt
//! makes it the defined domain's running state) and writes the machine's identity to ttyS1: its
//! hostname, login key, host key, MACs and the time. Only then does the guest bring its links up
//! and ask for leases, so it never held one on another machine's networks. A later stop and start
//! boots the domain cold, from its own definition.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::libvirt::Libvirt;
use crate::machine::image::{self, BootParams, GuestImage};
use crate::machine::save_image;
use crate::machine::spec::{derive_mac, Boot, MachineSpec};
use crate::wait::until;

/// Bump when what the saved guest is, or how it is made, changes.
const FORMAT: &str = "mkh-warm/3";

/// The console line after which the guest may be saved.
const WAITING: &str = "mkh-guest: warm: waiting";

/// Where the saved guest for `spec`'s image, sizes and accelerator lives on this hypervisor:
/// `<cache>/warm/<digest>.save`.
pub(crate) fn saved_guest_path(
    cache_dir: &Path,
    lv: &Libvirt,
    spec: &MachineSpec,
    image: &GuestImage,
) -> PathBuf {
    let (libvirt, hypervisor) = lv.versions();
    let key = format!(
        "{FORMAT}\n{}\n{}\n{}\n{}\n{}\n{libvirt}\n{}\n",
        image.kernel.display(),
        image.initrd.display(),
        spec.memory_mib,
        spec.vcpus,
        spec.accel.as_str(),
        hypervisor.unwrap_or_default()
    );
    use sha2::{Digest, Sha256};
    let digest: String = Sha256::digest(key.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    cache_dir.join("warm").join(format!("{digest}.save"))
}

/// The saved guest for `spec`, booting and saving it first when there is none. The guest that is
/// saved runs as `<machine>~warm` on the machine's networks (no environment's name has a `~`,
/// so no other environment's domain has that name) and is gone once saved; `on_define` hears of
/// it first (teardown removes it if mkh is stopped half-way). On a failure, it is removed only
/// if this call created it and it still carries this environment's owner record.
pub(crate) fn ensure_saved_guest(
    lv: &Libvirt,
    spec: &MachineSpec,
    image: &GuestImage,
    cache_dir: &Path,
    console_dir: &Path,
    deadline: Duration,
    on_define: &mut dyn FnMut(&str),
) -> Result<PathBuf> {
    let path = saved_guest_path(cache_dir, lv, spec, image);
    if path.is_file() {
        return Ok(path);
    }
    crate::progress::phase("booting the guest once to save it for warm starts");
    let dir = path.parent().expect("a file in the cache");
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = format!("{}~warm", spec.name);
    let console_log = console_dir.join(format!("{name}.console.log"));
    let template = MachineSpec {
        name: name.clone(),
        boot: Boot::Kernel {
            kernel: image.kernel.clone(),
            initrd: image.initrd.clone(),
            cmdline: image::warm_cmdline(),
        },
        // Replaced by each machine's own (mkh.macs); never used on a network.
        nics: spec
            .nics
            .iter()
            .map(|n| crate::machine::spec::Nic {
                mac: derive_mac("mkh-warm", n.role),
                ..n.clone()
            })
            .collect(),
        console_log: console_log.clone(),
        identity_port: Some(identity_port_path(console_dir, &name)),
        ..spec.clone()
    };
    on_define(&name);
    let partial = path.with_extension(format!("save.partial-{}", std::process::id()));
    remove_partials_of_dead_processes(dir);
    let mut created = false;
    // Signals wait only while libvirt makes something (the domain, the save file), not during
    // the boot between: teardown may then remove the template, and the save fails.
    let saved =
        crate::teardown::while_creating(|| lv.create_transient_domain(&name, &template.to_xml()))
            .and_then(|()| {
                created = true;
                wait_for_console_line(&console_log, WAITING, deadline, &name)?;
                crate::teardown::while_creating(|| lv.save_domain(&name, &partial))
            });
    if let Err(e) = saved {
        if created {
            let ours = |xml: &str| {
                crate::owner::Owner::from_object_xml(xml).as_ref() == Some(&template.owner)
            };
            let _ = lv.remove_domain_if(&name, ours);
        }
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    // Another process may have saved one at the same time: either is good.
    std::fs::rename(&partial, &path).map_err(|e| Error::io(&path, e))?;
    Ok(path)
}

/// Removes `*.save.partial-<pid>` files of processes that are gone (killed while saving).
fn remove_partials_of_dead_processes(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .rsplit_once(".save.partial-")
            .and_then(|(_, pid)| pid.parse::<i32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Whether a warm start can work for a machine whose home is `home` on the libvirt at `uri`:
/// checked before anything is made.
pub(crate) fn check_possible(uri: &str, home: &Path) -> Result<()> {
    if !crate::libvirt::uri_is_local(uri) {
        return Err(Error::InvalidInput {
            what: "warm start",
            value: uri.to_owned(),
            problem: "a warm start hands the guest its identity through a UNIX socket on the \
                      libvirt host, and this libvirt is remote"
                .into(),
            fix: "start cold (MKH_WARM=0, no --warm) on a remote libvirt",
        });
    }
    let port = identity_port_path(home, "any machine");
    if port.as_os_str().len() > crate::machine::spec::SOCKET_PATH_MAX {
        return Err(Error::InvalidInput {
            what: "MKH_STATE_DIR",
            value: home.display().to_string(),
            problem: format!(
                "a warm machine's socket there ({}) would be longer than the {} bytes a UNIX \
                 socket path holds",
                port.display(),
                crate::machine::spec::SOCKET_PATH_MAX
            ),
            fix: "set MKH_STATE_DIR to a shorter directory, or start cold (MKH_WARM=0)",
        });
    }
    Ok(())
}

/// The UNIX socket of `machine`'s second serial port, in the environment's home: short, since
/// a socket path holds at most 107 bytes.
pub(crate) fn identity_port_path(home: &Path, machine: &str) -> PathBuf {
    use sha2::{Digest, Sha256};
    let tag: String = Sha256::digest(machine.as_bytes())[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    home.join(format!("s1-{tag}"))
}

/// Restores the saved guest as the defined domain `name` (its persistent XML, read back from
/// libvirt, goes into a copy of the save image in `work_dir`, removed afterwards).
pub(crate) fn restore_as(lv: &Libvirt, saved: &Path, name: &str, work_dir: &Path) -> Result<()> {
    let xml = lv.domain_xml_inactive(name)?;
    let copy = work_dir.join(format!("{name}.restore.save"));
    let started = Instant::now();
    let restored = save_image::copy_with_xml(saved, &copy, &xml)
        .and_then(|()| {
            tracing::debug!(machine = name, took = ?started.elapsed(), "save image copied");
            lv.restore_domain(&copy)
        })
        .map_err(|e| Error::WarmStart {
            saved: saved.to_owned(),
            source: Box::new(e),
        });
    let _ = std::fs::remove_file(&copy);
    restored
}

/// Hands the restored guest its identity on its second serial port (`port`, the UNIX socket
/// libvirt listens on), and waits until its console (`console_log`) says it took it.
pub(crate) fn hand_identity(
    port: &Path,
    console_log: &Path,
    params: &BootParams<'_>,
    macs: &[&str],
    deadline: Duration,
) -> Result<()> {
    use std::io::Write;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let line = image::warm_identity_line(params, macs, now)?;
    let restored = format!("mkh-guest: warm: restored as {} ", params.hostname);
    let started = Instant::now();
    // Only what the console says from now on: the log is appended to on every boot of the
    // machine, and an earlier boot's line must not count.
    let before = std::fs::metadata(console_log).map_or(0, |m| m.len() as usize);
    let mut socket =
        std::os::unix::net::UnixStream::connect(port).map_err(|e| Error::io(port, e))?;
    socket
        .write_all(line.as_bytes())
        .map_err(|e| Error::io(port, e))?;
    let taken = until(deadline, Duration::from_millis(10), || {
        Ok(std::fs::read(console_log)
            .is_ok_and(|t| String::from_utf8_lossy(&t[before.min(t.len())..]).contains(&restored))
            .then_some(()))
    })?;
    if taken.is_some() {
        tracing::debug!(port = %port.display(), took = ?started.elapsed(), "identity taken");
        return Ok(());
    }
    Err(Error::Timeout {
        what: format!(
            "the restored guest to take its identity (console: {})",
            console_log.display()
        ),
        after: started.elapsed(),
        last: last_console_line(console_log),
    })
}

fn last_console_line(log: &Path) -> String {
    std::fs::read_to_string(log)
        .ok()
        .and_then(|t| t.lines().last().map(str::to_owned))
        .unwrap_or_else(|| "nothing on its console".into())
}

fn wait_for_console_line(log: &Path, line: &str, deadline: Duration, name: &str) -> Result<()> {
    let started = Instant::now();
    let seen = until(deadline, Duration::from_millis(50), || {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        Ok(text.lines().any(|l| l.trim_end() == line).then_some(()))
    })?;
    seen.ok_or_else(|| Error::Timeout {
        what: format!(
            "the guest {name} to be ready for saving (console: {})",
            log.display()
        ),
        after: started.elapsed(),
        last: last_console_line(log),
    })
}
