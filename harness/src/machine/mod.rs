//! Machines: the built-in test guest booted on an environment's networks, its IPs read from the
//! DHCP leases (matched by MAC, never by hostname), SSH into it, and its lifecycle.

pub mod accel;
pub mod image;
pub mod spec;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::Timeouts;
use crate::error::{Error, NoLease, Result};
use crate::libvirt::{DomainState, Lease, Libvirt};
use crate::net::NetworkPair;
use crate::owner::Owner;
use crate::ssh::{self, KeyPair, SshSession, SshTarget};
use crate::xml::elements;
use accel::{Accel, AccelFacts};
pub use spec::{derive_mac, Boot, MachineSpec, NetworkRole, Nic};

/// The guest's login user, as on minikube's ISO.
pub const SSH_USER: &str = "docker";

/// What a test may choose about its machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineOptions {
    /// Domain names are global in libvirt, so a machine is always named after its environment:
    /// `<env>` by default (as minikube names the domain after the profile), `<env>-<suffix>`
    /// with a suffix (as minikube's `<profile>-m02`).
    pub suffix: Option<String>,
    /// The guest's hostname; default: the machine's name.
    pub hostname: Option<String>,
    pub memory_mib: u32,
    pub vcpus: u32,
}

impl Default for MachineOptions {
    fn default() -> Self {
        MachineOptions {
            suffix: None,
            hostname: None,
            memory_mib: 256,
            vcpus: 1,
        }
    }
}

/// A machine's address on each network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Ips {
    pub nat: Ipv4Addr,
    pub private: Ipv4Addr,
}

impl Ips {
    pub fn get(&self, role: NetworkRole) -> Ipv4Addr {
        match role {
            NetworkRole::Nat => self.nat,
            NetworkRole::Private => self.private,
        }
    }
}

/// A machine that exists in libvirt, and the files mkh uses to reach it.
#[derive(Debug, Clone)]
pub struct Machine {
    name: String,
    uri: String,
    accel: Accel,
    nics: Vec<Nic>,
    files: MachineFiles,
    timeouts: Timeouts,
}

/// Where a machine's login key, recorded host key and console log are. The backends differ
/// here: the built-in guest keeps them in the environment's home, minikube in its machine dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineFiles {
    /// The private key for user `docker` (its `.pub` beside it).
    pub key: PathBuf,
    /// mkh's record of host keys (see [`crate::ssh`]).
    pub known_hosts: PathBuf,
    pub console_log: PathBuf,
}

impl MachineFiles {
    /// The built-in guest's files in environment home `home`.
    pub fn builtin(home: &Path, machine: &str) -> MachineFiles {
        MachineFiles {
            key: key_path(home),
            known_hosts: home.join("known_hosts"),
            console_log: console_log_path(home, machine),
        }
    }
}

/// Picks the accelerator for a libvirt host, logging the choice and the reason.
pub fn choose_accel(lv: &Libvirt) -> Result<Accel> {
    let facts = AccelFacts {
        forced: std::env::var("MKH_ACCEL").ok(),
        libvirt_offers_kvm: lv
            .domain_capabilities("kvm")
            .is_some_and(|xml| accel::domain_capabilities_offer_kvm(&xml)),
        cpu_has_virt_flags: lv.is_local().then(accel::local_cpu_has_virt_flags),
    };
    let (accel, why) = accel::decide(&facts)?;
    tracing::info!(accel = accel.as_str(), "accelerator: {why}");
    Ok(accel)
}

fn existing_or_new_key(path: &Path, comment: &str) -> Result<KeyPair> {
    let pair = KeyPair::at(path);
    if pair.private.exists() && pair.public.exists() {
        Ok(pair)
    } else {
        KeyPair::generate(path, comment)
    }
}

/// Files of one machine inside its environment's home.
fn key_path(home: &Path) -> PathBuf {
    home.join("id_ed25519")
}

fn host_key_path(home: &Path, machine: &str) -> PathBuf {
    home.join(format!("{machine}.host_ed25519"))
}

pub fn console_log_path(home: &Path, machine: &str) -> PathBuf {
    home.join(format!("{machine}.console.log"))
}

impl Machine {
    /// Defines and starts the built-in guest on `networks`. `on_defined` hears of the domain as
    /// soon as libvirt has it (for teardown). Returns once the domain runs; see
    /// [`Machine::wait_ready`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn boot_builtin(
        lv: &Libvirt,
        accel: Accel,
        options: &MachineOptions,
        name: &str,
        networks: &NetworkPair,
        home: &Path,
        owner: &Owner,
        on_defined: &mut dyn FnMut(&str),
    ) -> Result<Machine> {
        let image = image::ensure_guest_image(&crate::config::cache_dir())?;
        let key = existing_or_new_key(&key_path(home), "mkh")?;
        // The same host key on every boot of this machine: its fingerprint survives restarts.
        let host_key = existing_or_new_key(&host_key_path(home, name), name)?;
        let hostname = options.hostname.as_deref().unwrap_or(name);
        let cmdline = image::kernel_cmdline(&image::BootParams {
            hostname,
            authorized_key: &key.public_line()?,
            host_key: Some(&host_key.private_text()?),
        })?;
        let nics = vec![
            Nic {
                role: NetworkRole::Private,
                network: networks.private.name.clone(),
                mac: derive_mac(name, NetworkRole::Private),
            },
            Nic {
                role: NetworkRole::Nat,
                network: networks.nat.name.clone(),
                mac: derive_mac(name, NetworkRole::Nat),
            },
        ];
        let console_log = console_log_path(home, name);
        let spec = MachineSpec {
            name: name.to_owned(),
            memory_mib: options.memory_mib,
            vcpus: options.vcpus,
            accel,
            boot: Boot::Kernel {
                kernel: image.kernel.clone(),
                initrd: image.initrd.clone(),
                cmdline,
            },
            nics: nics.clone(),
            console_log: console_log.clone(),
            owner: owner.clone(),
        };
        spec.validate()?;
        lv.define_domain(name, &spec.to_xml())?;
        on_defined(name);
        lv.start_domain(name)?;
        let files = MachineFiles {
            key: key.private,
            ..MachineFiles::builtin(home, name)
        };
        debug_assert_eq!(files.console_log, console_log);
        Ok(Machine {
            name: name.to_owned(),
            uri: lv.uri().to_owned(),
            accel,
            nics,
            files,
            timeouts: Timeouts::new(accel)?,
        })
    }

    /// A handle on an existing machine (made by mkh or by minikube), its NICs and accelerator
    /// read back from its domain XML.
    pub fn attach(lv: &Libvirt, name: &str, files: MachineFiles) -> Result<Machine> {
        let xml = lv.domain_xml(name)?;
        let (accel, nics) = parse_domain(&xml).map_err(|problem| Error::BadXml {
            object: format!("domain {name}"),
            problem,
        })?;
        Ok(Machine {
            name: name.to_owned(),
            uri: lv.uri().to_owned(),
            accel,
            nics,
            files,
            timeouts: Timeouts::new(accel)?,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn accel(&self) -> Accel {
        self.accel
    }

    pub fn nics(&self) -> &[Nic] {
        &self.nics
    }

    /// The private key that logs in as `docker`.
    pub fn key(&self) -> &Path {
        &self.files.key
    }

    pub fn console_log(&self) -> &Path {
        &self.files.console_log
    }

    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    fn libvirt(&self) -> Result<Libvirt> {
        Libvirt::connect_to(&self.uri)
    }

    fn nic(&self, role: NetworkRole) -> &Nic {
        self.nics
            .iter()
            .find(|n| n.role == role)
            .expect("a machine has a NIC per role")
    }

    pub fn state(&self) -> Result<DomainState> {
        self.libvirt()?.domain_state(&self.name)
    }

    fn require_running(&self, lv: &Libvirt) -> Result<()> {
        match lv.domain_state(&self.name)? {
            DomainState::Running => Ok(()),
            DomainState::Stopped => Err(Error::MachineNotRunning {
                machine: self.name.clone(),
                state: "stopped",
            }),
            DomainState::Missing => Err(Error::MachineNotRunning {
                machine: self.name.clone(),
                state: "gone",
            }),
        }
    }

    /// The machine's address on one network, waiting for its lease up to the lease deadline.
    /// Fails at once when the machine is not running.
    pub fn ip(&self, role: NetworkRole) -> Result<Ipv4Addr> {
        let lv = self.libvirt()?;
        self.require_running(&lv)?;
        let nic = self.nic(role);
        let deadline = self.timeouts.lease();
        let start = Instant::now();
        loop {
            let leases = lv.network_leases(&nic.network)?;
            if let Some(ip) = lease_for_mac(&leases, &nic.mac) {
                return Ok(ip);
            }
            if start.elapsed() >= deadline {
                return Err(Error::NoLease(Box::new(NoLease {
                    machine: self.name.clone(),
                    network: nic.network.clone(),
                    mac: nic.mac.clone(),
                    after: deadline,
                    seen: describe_leases(&leases),
                    console: self.files.console_log.clone(),
                })));
            }
            self.require_running(&lv)?;
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    pub fn ips(&self) -> Result<Ips> {
        Ok(Ips {
            private: self.ip(NetworkRole::Private)?,
            nat: self.ip(NetworkRole::Nat)?,
        })
    }

    pub fn ssh_target(&self, role: NetworkRole) -> Result<SshTarget> {
        Ok(self.ssh_target_at(self.ip(role)?))
    }

    fn ssh_target_at(&self, ip: Ipv4Addr) -> SshTarget {
        SshTarget {
            machine: self.name.clone(),
            ip,
            port: 22,
            user: SSH_USER.to_owned(),
            key: self.files.key.clone(),
            known_hosts: self.files.known_hosts.clone(),
        }
    }

    /// An SSH session over one network, retried until sshd answers (SSH deadline).
    pub fn ssh(&self, role: NetworkRole) -> Result<SshSession> {
        ssh::connect(&self.ssh_target(role)?, self.timeouts.ssh())
    }

    /// Writes an OpenSSH known_hosts file holding the host key mkh recorded for this machine,
    /// for handing a session over to the `ssh` command.
    pub fn pin_host_key_for_openssh(&self, target: &SshTarget) -> Result<PathBuf> {
        let line = ssh::openssh_known_hosts_line(&target.known_hosts, &self.name, target.ip)?;
        let path = target
            .known_hosts
            .with_file_name(format!("{}.openssh_known_hosts", self.name));
        std::fs::write(&path, line).map_err(|e| Error::io(&path, e))?;
        Ok(path)
    }

    /// Waits until the machine has both leases and SSH answers on both networks. The
    /// addresses are read once; the private network goes first (its connection records the host
    /// key, as minikube's does), and once sshd answers there the NAT one answers at once.
    pub fn wait_ready(&self) -> Result<Ips> {
        let ips = self.ips()?;
        let deadline = self.timeouts.ssh();
        ssh::connect(&self.ssh_target_at(ips.private), deadline)?;
        ssh::connect(&self.ssh_target_at(ips.nat), deadline)?;
        Ok(ips)
    }

    /// Stops the machine: ACPI shutdown, then power-off once the shutdown deadline passes.
    pub fn stop(&self) -> Result<()> {
        let lv = self.libvirt()?;
        if lv.domain_state(&self.name)? != DomainState::Running {
            return Ok(());
        }
        lv.shutdown_domain(&self.name)?;
        let start = Instant::now();
        while start.elapsed() < self.timeouts.shutdown() {
            if lv.domain_state(&self.name)? != DomainState::Running {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        lv.destroy_domain(&self.name)
    }

    /// Starts a stopped machine and waits until it is ready again (IPs re-read).
    pub fn start(&self) -> Result<Ips> {
        let lv = self.libvirt()?;
        if lv.domain_state(&self.name)? != DomainState::Running {
            lv.start_domain(&self.name)?;
        }
        self.wait_ready()
    }

    pub fn restart(&self) -> Result<Ips> {
        self.stop()?;
        self.start()
    }

    /// Sets one NIC's link up or down, as pulling a cable would.
    pub fn set_link(&self, role: NetworkRole, up: bool) -> Result<()> {
        let lv = self.libvirt()?;
        self.require_running(&lv)?;
        lv.update_live_device(&self.name, &spec::link_state_xml(self.nic(role), up))
    }
}

/// The newest lease of `mac` (leases of earlier boots may linger next to it).
pub fn lease_for_mac(leases: &[Lease], mac: &str) -> Option<Ipv4Addr> {
    leases
        .iter()
        .filter(|l| l.mac.eq_ignore_ascii_case(mac))
        .max_by_key(|l| l.expiry)
        .and_then(|l| l.ip.parse().ok())
}

fn describe_leases(leases: &[Lease]) -> String {
    if leases.is_empty() {
        return "none".into();
    }
    leases
        .iter()
        .map(|l| {
            format!(
                "{} {} ({})",
                l.mac,
                l.ip,
                l.hostname.as_deref().unwrap_or("no hostname")
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads accelerator and NICs (with their roles) back from a domain's XML.
fn parse_domain(xml: &str) -> Result<(Accel, Vec<Nic>), String> {
    let els = elements(xml)?;
    let accel = match els.first().and_then(|e| e.attr("type")) {
        Some("kvm") => Accel::Kvm,
        _ => Accel::Tcg,
    };
    let mut nics = Vec::new();
    let mut current: Option<(Option<String>, Option<String>)> = None;
    for e in &els {
        if e.is_at(&["domain", "devices", "interface"]) {
            if let Some((Some(network), Some(mac))) = current.take() {
                nics.push((network, mac));
            }
            current = Some((None, None));
        }
        if let Some((network, mac)) = current.as_mut() {
            if e.is_at(&["domain", "devices", "interface", "source"]) {
                *network = e.attr("network").map(str::to_owned);
            }
            if e.is_at(&["domain", "devices", "interface", "mac"]) {
                *mac = e.attr("address").map(str::to_owned);
            }
        }
    }
    if let Some((Some(network), Some(mac))) = current.take() {
        nics.push((network, mac));
    }
    // The built-in guest has the private NIC first, as kvm2's template.
    let roles = [NetworkRole::Private, NetworkRole::Nat];
    if nics.len() != 2 {
        return Err(format!(
            "expected 2 network interfaces, found {}",
            nics.len()
        ));
    }
    Ok((
        accel,
        nics.into_iter()
            .zip(roles)
            .map(|((network, mac), role)| Nic { role, network, mac })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(mac: &str, ip: &str, host: &str, expiry: i64) -> Lease {
        Lease {
            mac: mac.into(),
            ip: ip.into(),
            prefix: 24,
            hostname: Some(host.into()),
            expiry,
        }
    }

    #[test]
    fn leases_match_by_mac_never_by_hostname() {
        let leases = [
            // A stale lease of an earlier VM with the same hostname and a later expiry.
            lease("52:00:00:00:00:01", "10.0.0.5", "minikube", 2000),
            lease("52:00:00:00:00:02", "10.0.0.9", "minikube", 1000),
        ];
        assert_eq!(
            lease_for_mac(&leases, "52:00:00:00:00:02"),
            Some("10.0.0.9".parse().unwrap())
        );
        assert_eq!(lease_for_mac(&leases, "52:00:00:00:00:0A"), None);
        assert_eq!(
            lease_for_mac(&leases, "52:00:00:00:00:01".to_uppercase().as_str()),
            Some("10.0.0.5".parse().unwrap())
        );
    }

    #[test]
    fn the_newest_lease_of_a_mac_wins() {
        let leases = [
            lease("52:00:00:00:00:01", "10.0.0.5", "a", 1000),
            lease("52:00:00:00:00:01", "10.0.0.6", "a", 3000),
        ];
        assert_eq!(
            lease_for_mac(&leases, "52:00:00:00:00:01"),
            Some("10.0.0.6".parse().unwrap())
        );
        assert!(describe_leases(&leases).contains("10.0.0.6"));
        assert_eq!(describe_leases(&[]), "none");
    }

    #[test]
    fn machines_are_read_back_from_their_domain_xml() {
        let spec = MachineSpec {
            name: "m".into(),
            memory_mib: 256,
            vcpus: 1,
            accel: Accel::Tcg,
            boot: Boot::Disk { path: "/d".into() },
            nics: vec![
                Nic {
                    role: NetworkRole::Private,
                    network: "p".into(),
                    mac: derive_mac("m", NetworkRole::Private),
                },
                Nic {
                    role: NetworkRole::Nat,
                    network: "n".into(),
                    mac: derive_mac("m", NetworkRole::Nat),
                },
            ],
            console_log: "/c".into(),
            owner: Owner::for_new_object(crate::owner::OwnerKind::Process, "e"),
        };
        let (accel, nics) = parse_domain(&spec.to_xml()).unwrap();
        assert_eq!(accel, Accel::Tcg);
        assert_eq!(nics, spec.nics);
    }
}
