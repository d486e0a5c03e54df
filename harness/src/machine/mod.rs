//! Machines: the built-in test guest booted on an environment's networks, its IPs read from the
//! DHCP leases (matched by MAC, never by hostname), SSH into it, and its lifecycle.

pub(crate) mod accel;
pub(crate) mod image;
pub(crate) mod pool;
mod save_image;
pub(crate) mod spec;
pub(crate) mod warm;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::config::Timeouts;
use crate::error::{Error, NoLease, Result};
use crate::libvirt::{DomainState, Lease, Libvirt};
use crate::net::NetworkPair;
use crate::owner::Owner;
use crate::ssh::{self, KeyPair, SshSession, SshTarget};
use crate::wait::{off_thread, until};
use crate::xml::elements;
pub use accel::Accel;
pub use spec::NetworkRole;
use spec::{derive_mac, Boot, MachineSpec, Nic};

/// The guest's login user, as on minikube's ISO.
pub(crate) const SSH_USER: &str = "docker";

/// What a test may choose about its machine.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MachineOptions {
    /// Domain names are global in libvirt, so a machine is always named after its environment:
    /// `<env>` by default (as minikube names the domain after the profile), `<env>-<suffix>`
    /// with a suffix (as minikube's `<profile>-m02`).
    pub suffix: Option<String>,
    /// The guest's hostname; default: the machine's name.
    pub hostname: Option<String>,
    /// Memory in MiB (default 256).
    pub memory_mib: u32,
    /// vCPUs (default 1).
    pub vcpus: u32,
    /// Restore the guest from one saved after boot instead of booting it (default off; the
    /// first warm start of an image and size boots and saves it). See `machine::warm`.
    pub warm_start: bool,
}

impl Default for MachineOptions {
    fn default() -> Self {
        MachineOptions {
            suffix: None,
            hostname: None,
            memory_mib: 256,
            vcpus: 1,
            warm_start: false,
        }
    }
}

impl MachineOptions {
    /// A machine named `<env>-<suffix>`, for a second machine in one environment.
    pub fn with_suffix(mut self, suffix: impl Into<String>) -> Self {
        self.suffix = Some(suffix.into());
        self
    }

    /// Memory in MiB.
    pub fn with_memory_mib(mut self, memory_mib: u32) -> Self {
        self.memory_mib = memory_mib;
        self
    }

    /// vCPUs.
    pub fn with_vcpus(mut self, vcpus: u32) -> Self {
        self.vcpus = vcpus;
        self
    }

    /// The guest's hostname.
    pub fn with_hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = Some(hostname.into());
        self
    }

    /// Whether the guest is restored from a saved one (a warm start) instead of booted.
    pub fn with_warm_start(mut self, warm: bool) -> Self {
        self.warm_start = warm;
        self
    }
}

/// A machine's address on each network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Ips {
    /// On the NAT network.
    pub nat: Ipv4Addr,
    /// On the isolated private network.
    pub private: Ipv4Addr,
}

impl Ips {
    /// The address on the network of `role`.
    pub fn get(&self, role: NetworkRole) -> Ipv4Addr {
        match role {
            NetworkRole::Nat => self.nat,
            NetworkRole::Private => self.private,
        }
    }
}

/// A machine of an environment: a libvirt domain on both of its networks, reached as `docker`
/// over SSH. Every call that waits is `async` and leaves the runtime thread free;
/// [`crate::blocking::Machine`] offers the same calls for code without a runtime.
#[derive(Debug, Clone)]
pub struct Machine {
    name: String,
    lv: Arc<Libvirt>,
    accel: Accel,
    nics: Vec<Nic>,
    files: MachineFiles,
    timeouts: Timeouts,
}

/// Where a machine's login key, recorded host key and console log are, and how far its host
/// key is trusted. The backends differ here: the built-in guest keeps them in the environment's
/// home, minikube in its machine dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MachineFiles {
    /// The private key for user `docker` (its `.pub` beside it).
    pub key: PathBuf,
    /// mkh's record of host keys (see [`crate::ssh`]).
    pub known_hosts: PathBuf,
    /// The serial console's log, where the backend keeps one (kvm2's console is a bare pty).
    pub console_log: Option<PathBuf>,
    pub host_keys: HostKeys,
}

/// How long a machine's SSH host key stays the same, and so how long mkh holds it to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HostKeys {
    /// mkh chose the key and gives it on every boot: a different key is refused for good.
    Pinned,
    /// The guest makes a new key on every boot (minikube's ISO keeps its root file system in
    /// RAM): the first key seen in a boot is held for the rest of that boot.
    PerBoot,
}

impl MachineFiles {
    /// The built-in guest's files in environment home `home`. On a remote libvirt host the
    /// console log is there, not here (see `pool::console_text`).
    pub fn builtin(lv: &Libvirt, home: &Path, machine: &str) -> MachineFiles {
        MachineFiles {
            key: key_path(home),
            known_hosts: home.join("known_hosts"),
            console_log: lv.is_local().then(|| console_log_path(home, machine)),
            host_keys: HostKeys::Pinned,
        }
    }
}

/// Picks the accelerator for a libvirt host, logging the choice and the reason.
pub(crate) fn choose_accel(lv: &Libvirt, forced: Option<Accel>) -> Accel {
    let (accel, why) = accel::decide(&accel::facts(lv, forced));
    tracing::info!(accel = accel.as_str(), "accelerator: {why}");
    accel
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

pub(crate) fn console_log_path(home: &Path, machine: &str) -> PathBuf {
    home.join(format!("{machine}.console.log"))
}

/// What booting the built-in guest needs besides its options.
pub(crate) struct BootContext<'a> {
    pub lv: &'a Arc<Libvirt>,
    pub accel: Accel,
    pub networks: &'a NetworkPair,
    pub home: &'a Path,
    pub owner: &'a Owner,
    pub cache_dir: &'a Path,
    pub timeouts: Timeouts,
    /// How many times a machine of this name was made before in this environment: each time
    /// gets new MACs.
    pub generation: u32,
}

impl Machine {
    /// Defines and starts the built-in guest on the environment's networks. `on_define` hears
    /// of the domain's name just before libvirt is asked to define it (for teardown: a signal
    /// at any instant still removes it). Returns once the domain runs; see
    /// [`Machine::wait_ready_now`].
    pub(crate) fn boot_builtin(
        ctx: &BootContext<'_>,
        options: &MachineOptions,
        name: &str,
        on_define: &mut dyn FnMut(&str),
    ) -> Result<Machine> {
        let _span = tracing::info_span!("boot", machine = name).entered();
        let image = image::find_or_build(ctx.cache_dir)?;
        crate::progress::phase(format!("booting {name} ({})", ctx.accel.as_str()));
        let key = existing_or_new_key(&key_path(ctx.home), "mkh")?;
        // The same host key on every boot of this machine: its fingerprint survives restarts.
        let host_key = existing_or_new_key(&host_key_path(ctx.home, name), name)?;
        let hostname = options.hostname.as_deref().unwrap_or(name);
        let (public_line, host_key_text) = (key.public_line()?, host_key.private_text()?);
        let params = image::BootParams {
            hostname,
            authorized_key: &public_line,
            host_key: Some(&host_key_text),
        };
        let cmdline = image::kernel_cmdline(&params)?;
        let nics: Vec<Nic> = NetworkRole::ALL
            .iter()
            .map(|&role| Nic {
                role,
                network: ctx.networks.get(role).name.clone(),
                mac: match ctx.generation {
                    0 => derive_mac(name, role),
                    g => derive_mac(&format!("{name}/{g}"), role),
                },
            })
            .collect();
        let files = MachineFiles {
            key: key.private,
            ..MachineFiles::builtin(ctx.lv, ctx.home, name)
        };
        ssh::pin_host_key(&files.known_hosts, name, &host_key.public_line()?)?;
        // A remote libvirt host reads nothing of this machine's: the image is uploaded to its
        // pool (once per digest), and virtlogd writes the console log there.
        let ((kernel, initrd), console_log) = if ctx.lv.is_local() {
            (
                (image.kernel.clone(), image.initrd.clone()),
                console_log_path(ctx.home, name),
            )
        } else {
            (
                pool::image_on_host(ctx.lv, &image)?,
                pool::console_path_on_host(ctx.lv, name)?,
            )
        };
        let spec = MachineSpec {
            name: name.to_owned(),
            memory_mib: options.memory_mib,
            vcpus: options.vcpus,
            accel: ctx.accel,
            boot: Boot::Kernel {
                kernel,
                initrd,
                cmdline,
            },
            nics: nics.clone(),
            console_log,
            identity_port: options
                .warm_start
                .then(|| warm::identity_port_path(ctx.home, name)),
            owner: ctx.owner.clone(),
        };
        spec.validate()?;
        if options.warm_start {
            warm::check_possible(ctx.lv.uri(), ctx.home)?;
            let saved = warm::ensure_saved_guest(
                ctx.lv,
                &spec,
                &image,
                ctx.cache_dir,
                ctx.home,
                ctx.timeouts.lease(),
                on_define,
            )?;
            crate::progress::phase(format!("restoring {name} from the saved guest"));
            on_define(name);
            crate::teardown::while_creating(|| {
                ctx.lv.define_domain(name, &spec.to_xml())?;
                warm::restore_as(ctx.lv, &saved, name, ctx.home)
            })?;
            let macs: Vec<&str> = nics.iter().map(|n| n.mac.as_str()).collect();
            let port = spec
                .identity_port
                .as_deref()
                .expect("a warm machine's port");
            warm::hand_identity(
                port,
                &spec.console_log,
                &params,
                &macs,
                ctx.timeouts.lease(),
            )?;
        } else {
            on_define(name);
            crate::teardown::while_creating(|| {
                ctx.lv.define_domain(name, &spec.to_xml())?;
                ctx.lv.start_domain(name)
            })?;
        }
        Ok(Machine {
            name: name.to_owned(),
            lv: ctx.lv.clone(),
            accel: ctx.accel,
            nics,
            files,
            timeouts: ctx.timeouts,
        })
    }

    /// A handle on an existing machine (made by mkh or by minikube) on `networks`: its
    /// accelerator and NICs read back from its domain XML, each NIC's role from the network it
    /// sits on.
    pub(crate) fn attach(
        lv: &Arc<Libvirt>,
        name: &str,
        networks: &NetworkPair,
        files: MachineFiles,
        timeout_scale: f64,
    ) -> Result<Machine> {
        let xml = lv.domain_xml(name)?;
        let (accel, nics) = parse_domain(&xml, networks).map_err(|problem| Error::BadXml {
            object: format!("domain {name}"),
            problem,
        })?;
        Ok(Machine {
            name: name.to_owned(),
            lv: lv.clone(),
            accel,
            nics,
            files,
            timeouts: Timeouts::new(accel, timeout_scale),
        })
    }

    /// The domain's name in libvirt.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The accelerator it runs under.
    pub fn accel(&self) -> Accel {
        self.accel
    }

    /// The MAC address of its NIC on the network of `role`.
    pub fn mac(&self, role: NetworkRole) -> &str {
        &self.nic(role).mac
    }

    /// The private key that logs in as `docker`.
    pub fn key(&self) -> &Path {
        &self.files.key
    }

    /// The serial console's log file, where the backend keeps one (the built-in guest does;
    /// minikube's kvm2 leaves its console a bare pty).
    pub fn console_log(&self) -> Option<&Path> {
        self.files.console_log.as_deref()
    }

    fn nic(&self, role: NetworkRole) -> &Nic {
        self.nics
            .iter()
            .find(|n| n.role == role)
            .expect("a machine has a NIC per role")
    }

    /// Whether the machine runs.
    pub async fn is_running(&self) -> Result<bool> {
        let m = self.clone();
        off_thread(move || Ok(m.state_now()? == DomainState::Running)).await
    }

    /// The machine's address on one network, waiting for its lease up to the lease deadline.
    /// Fails at once when the machine is not running.
    pub async fn ip(&self, role: NetworkRole) -> Result<Ipv4Addr> {
        let m = self.clone();
        off_thread(move || m.ip_now(role)).await
    }

    /// Its IP on `role`'s network as [`Machine::ip`] finds it, waiting at most `deadline` for a
    /// lease (an error naming the leases seen after that).
    pub async fn ip_within(&self, role: NetworkRole, deadline: Duration) -> Result<Ipv4Addr> {
        let m = self.clone();
        off_thread(move || m.ip_within_now(role, deadline)).await
    }

    /// Both addresses (see [`Machine::ip`]).
    pub async fn ips(&self) -> Result<Ips> {
        let m = self.clone();
        off_thread(move || m.ips_now()).await
    }

    /// An SSH session as `docker` over one network, retried until sshd answers (SSH deadline).
    pub async fn ssh(&self, role: NetworkRole) -> Result<SshSession> {
        let m = self.clone();
        off_thread(move || m.ssh_now(role)).await
    }

    /// Stops the machine: ACPI shutdown, then power-off once the shutdown deadline passes.
    pub async fn stop(&self) -> Result<()> {
        let m = self.clone();
        off_thread(move || m.stop_now()).await
    }

    /// Starts a stopped machine and waits until SSH answers on both networks (IPs re-read).
    pub async fn start(&self) -> Result<Ips> {
        let m = self.clone();
        off_thread(move || m.start_now()).await
    }

    /// Stops, then starts the machine.
    pub async fn restart(&self) -> Result<Ips> {
        let m = self.clone();
        off_thread(move || m.restart_now()).await
    }

    /// Sets one NIC's link up or down, as pulling a cable would.
    pub async fn set_link(&self, role: NetworkRole, up: bool) -> Result<()> {
        let m = self.clone();
        off_thread(move || m.set_link_now(role, up)).await
    }

    pub(crate) fn state_now(&self) -> Result<DomainState> {
        self.lv.domain_state(&self.name)
    }

    fn require_running(&self) -> Result<()> {
        match self.state_now()? {
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

    pub(crate) fn ip_now(&self, role: NetworkRole) -> Result<Ipv4Addr> {
        self.ip_within_now(role, self.timeouts.lease())
    }

    /// [`Machine::ip_now`], waiting at most `deadline` for a lease.
    pub(crate) fn ip_within_now(&self, role: NetworkRole, deadline: Duration) -> Result<Ipv4Addr> {
        self.require_running()?;
        let nic = self.nic(role);
        let mut seen = Vec::new();
        let mut first = true;
        let ip = until(deadline, Duration::from_millis(250), || {
            if !std::mem::take(&mut first) {
                self.require_running()?;
            }
            seen = self.lv.network_leases(&nic.network)?;
            Ok(lease_for_mac(&seen, &nic.mac))
        })?;
        ip.ok_or_else(|| self.no_lease(role, deadline, &seen))
    }

    fn no_lease(&self, role: NetworkRole, after: Duration, seen: &[Lease]) -> Error {
        let nic = self.nic(role);
        Error::NoLease(Box::new(NoLease {
            machine: self.name.clone(),
            network: nic.network.clone(),
            mac: nic.mac.clone(),
            after,
            seen: describe_leases(seen),
            console: self.files.console_log.clone(),
        }))
    }

    pub(crate) fn ips_now(&self) -> Result<Ips> {
        self.ips_timed().map(|(ips, _)| ips)
    }

    /// Waits for a lease on both networks, polling both at once; returns the addresses and
    /// when the first of them was seen.
    pub(crate) fn ips_timed(&self) -> Result<(Ips, Duration)> {
        let started = std::time::Instant::now();
        let mut first = None;
        let mut found = [None, None];
        let deadline = self.timeouts.lease();
        let all = until(deadline, Duration::from_millis(100), || {
            self.require_running()?;
            for (slot, role) in found.iter_mut().zip(NetworkRole::ALL) {
                if slot.is_none() {
                    let nic = self.nic(role);
                    *slot = lease_for_mac(&self.lv.network_leases(&nic.network)?, &nic.mac);
                    if slot.is_some() {
                        first.get_or_insert_with(|| started.elapsed());
                    }
                }
            }
            Ok(found.iter().all(Option::is_some).then_some(()))
        })?;
        let ips = match (all, found) {
            (Some(()), [Some(private), Some(nat)]) => Ips { private, nat },
            // The missing one's error, with what its network does list.
            _ => {
                let (role, _) = NetworkRole::ALL
                    .into_iter()
                    .zip(found)
                    .find(|(_, ip)| ip.is_none())
                    .expect("a lease is missing");
                let seen = self.lv.network_leases(&self.nic(role).network)?;
                return Err(self.no_lease(role, deadline, &seen));
            }
        };
        Ok((ips, first.unwrap_or_else(|| started.elapsed())))
    }

    pub(crate) fn ssh_target(&self, role: NetworkRole) -> Result<SshTarget> {
        self.ssh_target_at(self.ip_now(role)?)
    }

    fn ssh_target_at(&self, ip: Ipv4Addr) -> Result<SshTarget> {
        Ok(SshTarget {
            machine: self.name.clone(),
            host_key_label: self.host_key_label()?,
            ip,
            port: 22,
            user: SSH_USER.to_owned(),
            key: self.files.key.clone(),
            known_hosts: self.files.known_hosts.clone(),
            via: crate::remote::SshHost::from_uri(self.lv.uri()),
        })
    }

    /// Forgets the host keys of earlier boots of a machine whose key is new on every boot; mkh
    /// calls it when it stops or starts such a machine. A pinned key is kept.
    pub(crate) fn forget_boot_host_keys(&self) -> Result<()> {
        match self.files.host_keys {
            HostKeys::Pinned => Ok(()),
            HostKeys::PerBoot => ssh::forget_host_keys(&self.files.known_hosts, &self.name),
        }
    }

    /// What the host key is recorded under: the machine, or for a key made anew on every boot,
    /// the machine in this boot (libvirt's domain id changes with every start).
    fn host_key_label(&self) -> Result<String> {
        match self.files.host_keys {
            HostKeys::Pinned => Ok(self.name.clone()),
            HostKeys::PerBoot => match self.lv.domain_boot_id(&self.name)? {
                Some(id) => Ok(format!("{}@boot-{id}", self.name)),
                None => Err(Error::MachineNotRunning {
                    machine: self.name.clone(),
                    state: "stopped",
                }),
            },
        }
    }

    pub(crate) fn ssh_now(&self, role: NetworkRole) -> Result<SshSession> {
        ssh::connect(&self.ssh_target(role)?, self.timeouts.ssh())
    }

    /// Writes an OpenSSH known_hosts file holding the host key mkh recorded for this machine,
    /// for handing a session over to the `ssh` command.
    #[cfg_attr(not(feature = "admin"), allow(dead_code))] // The `mkh` command's.
    pub(crate) fn pin_host_key_for_openssh(&self, target: &SshTarget) -> Result<PathBuf> {
        let line =
            ssh::openssh_known_hosts_line(&target.known_hosts, &target.host_key_label, target.ip)?;
        let path = target
            .known_hosts
            .with_file_name(format!("{}.openssh_known_hosts", self.name));
        std::fs::write(&path, line).map_err(|e| Error::io(&path, e))?;
        Ok(path)
    }

    /// Waits until the machine has both leases and SSH answers on both networks. The
    /// addresses are read once.
    pub(crate) fn wait_ready_now(&self) -> Result<Ips> {
        let ips = self.ips_now()?;
        self.wait_ssh_on(ips)?;
        Ok(ips)
    }

    /// Waits until SSH answers on both addresses. With a host key mkh pinned, both at once;
    /// otherwise the private network first (its connection records the key, as minikube's
    /// does), and once sshd answers there the NAT one answers at once.
    pub(crate) fn wait_ssh_on(&self, ips: Ips) -> Result<()> {
        self.wait_guest_has(ips);
        let deadline = self.timeouts.ssh();
        let private = self.ssh_target_at(ips.private)?;
        let nat = self.ssh_target_at(ips.nat)?;
        match self.files.host_keys {
            HostKeys::Pinned => std::thread::scope(|s| {
                let other = s.spawn(|| ssh::connect(&nat, deadline).map(drop));
                let first = ssh::connect(&private, deadline).map(drop);
                let second = other.join().expect("SSH wait thread panicked");
                first.and(second)
            }),
            HostKeys::PerBoot => {
                ssh::connect(&private, deadline)?;
                ssh::connect(&nat, deadline).map(drop)
            }
        }
    }

    /// Waits (a few seconds at most) until the guest's console says it set both addresses up.
    /// dnsmasq lists a lease when it sends it, before the guest has the address: a connection
    /// tried then waits for the host's next ARP retry, a second later. Only for a guest that says
    /// so (the built-in one) on a local libvirt; otherwise, and on a console that stays silent,
    /// SSH's own retries serve.
    fn wait_guest_has(&self, ips: Ips) {
        let Some(log) = self.files.console_log.as_deref() else {
            return;
        };
        if !self.lv.is_local() {
            return;
        }
        let wanted: Vec<String> = [ips.private, ips.nat]
            .iter()
            .map(|ip| format!(" {ip} "))
            .collect();
        let _ = until(Duration::from_secs(5), Duration::from_millis(20), || {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            Ok(guest_has_addresses(&text, &wanted).then_some(()))
        });
    }

    pub(crate) fn stop_now(&self) -> Result<()> {
        if self.state_now()? != DomainState::Running {
            return Ok(());
        }
        self.lv.shutdown_domain(&self.name)?;
        let stopped = until(self.timeouts.shutdown(), Duration::from_millis(200), || {
            Ok((self.state_now()? != DomainState::Running).then_some(()))
        })?;
        match stopped {
            Some(()) => Ok(()),
            None => self.lv.destroy_domain(&self.name),
        }
    }

    pub(crate) fn start_now(&self) -> Result<Ips> {
        if self.state_now()? != DomainState::Running {
            self.lv.start_domain(&self.name)?;
        }
        self.wait_ready_now()
    }

    pub(crate) fn restart_now(&self) -> Result<Ips> {
        self.stop_now()?;
        self.start_now()
    }

    pub(crate) fn set_link_now(&self, role: NetworkRole, up: bool) -> Result<()> {
        self.require_running()?;
        self.lv
            .update_live_device(&self.name, &spec::link_state_xml(self.nic(role), up))
    }
}

/// Whether the guest's console, in its latest boot or restore, says it set up every address in
/// `wanted` (each ` <ip> `, as in `mkh-guest: lease eth0 <ip> <mac> at 3.2s`).
fn guest_has_addresses(console: &str, wanted: &[String]) -> bool {
    let latest = ["mkh-guest: init started", "mkh-guest: warm: restored"]
        .iter()
        .filter_map(|m| console.rfind(m))
        .max()
        .map_or(console, |i| &console[i..]);
    let leases: Vec<&str> = latest
        .lines()
        .filter(|l| l.starts_with("mkh-guest: lease "))
        .collect();
    wanted
        .iter()
        .all(|ip| leases.iter().any(|l| l.contains(ip.as_str())))
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

/// Reads the accelerator and the NICs back from a domain's XML; a NIC's role is the role of the
/// network it sits on (never its position). Both networks must have exactly one NIC.
fn parse_domain(xml: &str, networks: &NetworkPair) -> Result<(Accel, Vec<Nic>), String> {
    let els = elements(xml)?;
    let accel = match els.first().and_then(|e| e.attr("type")) {
        Some("kvm") => Accel::Kvm,
        _ => Accel::Tcg,
    };
    let mut found: Vec<(Option<String>, Option<String>)> = Vec::new();
    for e in &els {
        if e.is_at(&["domain", "devices", "interface"]) {
            found.push((None, None));
        }
        if let Some((network, mac)) = found.last_mut() {
            if e.is_at(&["domain", "devices", "interface", "source"]) {
                *network = e.attr("network").map(str::to_owned);
            }
            if e.is_at(&["domain", "devices", "interface", "mac"]) {
                *mac = e.attr("address").map(str::to_owned);
            }
        }
    }
    let mut nics = Vec::new();
    for role in NetworkRole::ALL {
        let net = &networks.get(role).name;
        let on_it: Vec<&String> = found
            .iter()
            .filter(|(n, _)| n.as_deref() == Some(net.as_str()))
            .filter_map(|(_, mac)| mac.as_ref())
            .collect();
        match on_it.as_slice() {
            [mac] => nics.push(Nic {
                role,
                network: net.clone(),
                mac: (*mac).clone(),
            }),
            [] => return Err(format!("no network interface on network {net} ({role})")),
            _ => {
                return Err(format!(
                    "{} network interfaces on network {net} ({role}); expected one",
                    on_it.len()
                ))
            }
        }
    }
    Ok((accel, nics))
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
    fn the_guest_has_its_addresses_once_its_latest_boot_says_so() {
        let wanted = [" 10.0.0.5 ".to_owned(), " 10.0.1.5 ".to_owned()];
        let old_boot = "mkh-guest: init started, kernel 6.1, at 2.0s\n\
            mkh-guest: lease eth0 10.0.0.5 52:00:00:00:00:01 at 3.0s\n\
            mkh-guest: lease eth1 10.0.1.5 52:00:00:00:00:02 at 3.1s\n";
        assert!(guest_has_addresses(old_boot, &wanted));
        let restarted = format!(
            "{old_boot}mkh-guest: init started, kernel 6.1, at 2.0s\n\
            mkh-guest: lease eth0 10.0.0.5 52:00:00:00:00:01 at 3.0s\n"
        );
        assert!(!guest_has_addresses(&restarted, &wanted));
        let restored = format!(
            "{restarted}mkh-guest: warm: restored as m at 9.0s\n\
            mkh-guest: lease eth0 10.0.0.5 52:00:00:00:00:01 at 9.3s\n\
            mkh-guest: lease eth1 10.0.1.5 52:00:00:00:00:02 at 9.4s\n"
        );
        assert!(guest_has_addresses(&restored, &wanted));
        // 10.0.0.50 is not 10.0.0.5.
        let other = "mkh-guest: lease eth0 10.0.0.50 52:00:00:00:00:01 at 3.0s\n\
            mkh-guest: lease eth1 10.0.1.5 52:00:00:00:00:02 at 3.1s\n";
        assert!(!guest_has_addresses(other, &wanted));
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
            identity_port: None,
            owner: crate::owner::tests::sample_owner(),
        };
        let pair = crate::net::tests::pair("n", "p");
        let (accel, nics) = parse_domain(&spec.to_xml(), &pair).unwrap();
        assert_eq!(accel, Accel::Tcg);
        assert_eq!(nics, spec.nics);
        // Roles come from the networks, whatever the order of the interfaces.
        let swapped = crate::net::tests::pair("p", "n");
        let (_, nics) = parse_domain(&spec.to_xml(), &swapped).unwrap();
        assert_eq!(nics[0].role, NetworkRole::Private);
        assert_eq!(nics[0].network, "n");
        assert_eq!(nics[0].mac, derive_mac("m", NetworkRole::Nat));
        let other = crate::net::tests::pair("x", "p");
        let err = parse_domain(&spec.to_xml(), &other).unwrap_err();
        assert!(err.contains("network x"), "{err}");
    }
}
