//! `minikube`: a stand-in for `minikube --driver=kvm2`, for mkh's own tests on machines where the
//! real binary (and its ISO) cannot be downloaded. It leaves in libvirt and in MINIKUBE_HOME what
//! kvm2 leaves there, boots a real VM, and serves a REAL kube-apiserver (with etcd). It is
//! written from the contract in `shared/docs/minikube-kvm2.md`, not from mkh's code, so that it
//! can catch mkh's mistakes about minikube.
//!
//! # Commands
//!
//! `start`, `stop`, `delete`, `ip`, `status [-o json]`, `ssh-key`, `logs [--file] [-n]`,
//! `profile list [-o json]`, `version [--short] [-o json]`; `-p/--profile` anywhere (default
//! `minikube`). See [`cli`] for the flags and [`commands`] for what each one does.
//!
//! # What the stand-in does as kvm2 does (what a test against it proves)
//!
//! - Networks: the NAT network (`--kvm-network`, default `default`) must exist and is started
//!   and autostarted if inactive, never created or deleted. The private network (`--network`,
//!   else `mk-<profile>`) is used as it is if it exists ("found existing private KVM network ...
//!   skipping creation"); else it is created from kvm2's template (isolated, `<dns enable='no'/>`,
//!   DHCP range = client range minus its last address) on minikube's subnet choice (192.168.39.0/24,
//!   third octet +11 up to 248; taken = an address on a host interface or a flock reservation in
//!   `$TMPDIR/minikube-locks-<uid>/`; inactive libvirt networks are not looked at), autostart on.
//! - The domain is named after the profile; the private NIC first (PrivateMAC), then the NAT NIC
//!   (MAC); random locally administered MACs, recorded in `machines/<p>/config.json`; serial
//!   console on a pty (logged to `machines/<p>/console.log`); virtio-rng; guest hostname
//!   `minikube`; user `docker` with `machines/<p>/id_rsa` (RSA 2048).
//! - Start waits for the domain to run (30 s), polls the private network's leases by PrivateMAC
//!   every 2 s (90 s), pins the address with a DHCP host entry (`virNetworkUpdate`), waits for
//!   SSH. Deadlines x4 under TCG.
//! - `ip` asks libvirt every time (lease by PrivateMAC) and refuses on a stopped VM (exit 83).
//!   `stop` is an ACPI shutdown with a 90 s deadline, then destroy; the domain stays defined.
//!   `delete` deletes the private network unless it is `default` or another domain uses it
//!   (also a network the caller created and passed with `--network`, as minikube does), then
//!   destroys and undefines the domain, removes `profiles/<p>`, `machines/<p>` and the
//!   kubeconfig entries. Deleting a profile that does not exist succeeds.
//! - MINIKUBE_HOME (`.minikube` appended unless already the basename), KUBECONFIG (first
//!   non-empty entry), TMPDIR (lock directory) are honoured; `profiles/<p>/config.json`
//!   (ClusterConfig) and `machines/<p>/config.json` (libmachine Host) carry minikube's field
//!   names; the kubeconfig gets cluster, user and context named after the profile, merged into
//!   the existing file under a flock, by path unless `--embed-certs`, current context switched
//!   unless `--keep-context`.
//! - A real kube-apiserver answers on port 8443 with client-certificate auth and RBAC; Services
//!   get ClusterIPs from 10.96.0.0/12 (`kubernetes` is 10.96.0.1); objects survive stop/start
//!   (etcd keeps its data dir). Exit codes: 83 guest not running, 85 profile not found, 7 for
//!   `status` of a stopped profile, 1 for a bad command line.
//!
//! # Where it differs (what only a run against real minikube proves)
//!
//! - The guest is mkh's tiny initramfs guest booted directly (`<kernel>`/`<initrd>`/`<cmdline>`
//!   with the authorised key and the host key on the command line), not minikube's ISO + raw
//!   disk: no disk, no Docker, no kubelet, no pods ever run. `DiskPath`, `ISO` and the
//!   AuthOptions certificate paths are recorded as kvm2 would but the files are not created.
//!   Default memory/CPUs are 256 MiB / 1 (real minikube: 2-6 GiB / 2). Cold start is much
//!   faster than kvm2's 43-52 s, so timing assumptions are not tested.
//! - The API server (Kubernetes 1.20.2, whatever `--kubernetes-version` says) and etcd run ON THE
//!   HOST, bound to the private network's host-side address (`https://<gateway>:8443`), not in
//!   the VM at its private IP. The kubeconfig's server is that host-side address; the serving
//!   certificate also names the VM's IP. There is no scheduler, controller manager, CoreDNS or
//!   kube-proxy: namespaces never finish terminating, Services have no endpoints.
//! - Because of that, two profiles whose VMs share one private network cannot run at the same
//!   time (both API servers would need `<gateway>:8443`): `start` refuses with a clear message
//!   before creating anything. Real minikube runs them side by side (each VM has its own IP).
//!   Clients of the stand-in pin the profile's serving key (`profiles/<p>/apiserver.pub`), since
//!   all profiles of a home share the CA.
//! - Host-side processes are detached (setsid) and outlive the `minikube` process, as the real
//!   VM's do; they are stopped by `stop`/`delete` (pid + start time checked, plus any etcd or
//!   kube-apiserver whose command line names the profile's directory) and name files in
//!   MINIKUBE_HOME on their command lines (`processes.json` records pid, start time, command).
//!   While the guest boots, etcd and the certificates that do not name the guest's address are
//!   already being prepared; the API server starts once the address is known, in parallel with
//!   the wait for SSH.
//! - Progress lines are minikube's (emoji + text, stdout); klog-style `I file.go:N] ...` lines
//!   (found existing private network, chosen subnet) go to stderr always, not only with
//!   `--alsologtostderr`. Error reasons and exit codes follow minikube's table, but the exact
//!   wording of minikube's messages is not reproduced everywhere.
//! - `status` prints `kubelet: Stopped` (true: none runs); its exit code counts the kubelet bit
//!   only when the host is down (0 running, 7 stopped), where real minikube would add 2.
//! - Under TCG the domain is `type='qemu'` without host-passthrough (kvm2 always asks for KVM
//!   and host-passthrough). The libvirt URI is always `qemu:///system` (`--kvm-qemu-uri` with
//!   another value is refused).
//! - Not imitated: the machines lock that serialises parallel kvm2 starts in released versions,
//!   ARP fallback for the IP, `events.json`, ISO/preload caches, `--subnet`, `--static-ip`,
//!   multi-node, addons, `minikube ssh`, `delete --all/--purge`, klog output.

mod certs;
mod cli;
mod commands;
mod config;
mod control_plane;
mod keys;
mod kubeconfig;
mod libvirt;
mod lock;
mod paths;
mod preflight;
mod subnet;
mod xml;

use std::process::ExitCode;

/// The release whose behaviour the stand-in imitates, and what `version` prints (its commit
/// is `stand-in`).
pub const VERSION: &str = "v1.38.1";
pub const VERSION_BASE: &str = VERSION;

// minikube's exit codes (pkg/minikube/reason/exitcodes.go).
pub const EX_FAILURE: u8 = 1;
pub const EX_PROGRAM_USAGE: u8 = 14;
pub const EX_PROGRAM_CONFIG: u8 = 18;
pub const EX_DRIVER_UNSUPPORTED: u8 = 56;
pub const EX_GUEST_ERROR: u8 = 80;
pub const EX_GUEST_TIMEOUT: u8 = 82;
pub const EX_GUEST_NOT_RUNNING: u8 = 83;
pub const EX_GUEST_NOT_FOUND: u8 = 85;
pub const EX_CONTROL_PLANE_ERROR: u8 = 100;
pub const EX_CONTROL_PLANE_TIMEOUT: u8 = 102;

/// Why a command failed: its exit status and the lines for stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: u8,
    pub lines: Vec<String>,
    /// A low-level error without a minikube reason yet (see [`Failure::in_command`]).
    generic: Option<String>,
}

impl Failure {
    /// A command-line mistake, printed as cobra does.
    pub fn usage(msg: impl std::fmt::Display, command: &str) -> Failure {
        let help = if command.is_empty() {
            "minikube --help".to_string()
        } else {
            format!("minikube {command} --help")
        };
        Failure {
            code: EX_FAILURE,
            lines: vec![format!("Error: {msg}"), format!("See '{help}' for usage.")],
            generic: None,
        }
    }

    /// `❌  Exiting due to REASON: message`.
    pub fn exit(code: u8, reason: &str, msg: impl std::fmt::Display) -> Failure {
        Failure {
            code,
            lines: vec![
                String::new(),
                format!("❌  Exiting due to {reason}: {msg}"),
                String::new(),
            ],
            generic: None,
        }
    }

    /// Pre-formatted lines (minikube's 🤷 / 👉 messages).
    pub fn styled(code: u8, lines: Vec<String>) -> Failure {
        Failure {
            code,
            lines,
            generic: None,
        }
    }

    /// A low-level error; the command gives it its reason.
    pub fn error(msg: impl Into<String>) -> Failure {
        let msg = msg.into();
        Failure {
            code: EX_GUEST_ERROR,
            lines: vec![msg.clone()],
            generic: Some(msg),
        }
    }

    /// Gives a low-level error the reason minikube would report for this command.
    pub fn in_command(self, reason: &str) -> Failure {
        match self.generic {
            Some(msg) => Failure::exit(EX_GUEST_ERROR, reason, msg),
            None => self,
        }
    }
}

impl From<String> for Failure {
    fn from(msg: String) -> Failure {
        Failure::error(msg)
    }
}

/// A progress line on stdout, minikube style (`emoji` + two spaces).
pub fn step(emoji: &str, msg: impl std::fmt::Display) {
    println!("{emoji}  {msg}");
}

/// A warning on stderr.
pub fn warn(msg: impl std::fmt::Display) {
    eprintln!("❗  {msg}");
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let inv = match cli::parse(&args, &|name| std::env::var(name).ok()) {
        Ok(inv) => inv,
        Err(e) => {
            let command = args
                .iter()
                .find(|a| !a.starts_with('-'))
                .map(String::as_str)
                .filter(|c| ["start", "stop", "delete", "ip", "status", "logs"].contains(c))
                .unwrap_or("");
            return report(Failure::usage(e, command));
        }
    };
    match commands::run(&inv) {
        Ok(code) => ExitCode::from(code),
        Err(f) => report(f),
    }
}

fn report(f: Failure) -> ExitCode {
    for line in &f.lines {
        eprintln!("{line}");
    }
    ExitCode::from(f.code)
}
