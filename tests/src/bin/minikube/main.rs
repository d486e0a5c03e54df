//! `minikube`: a stand-in for `minikube --driver=kvm2`, for mkh's own tests on machines where the
//! real binary (and its ISO) cannot be downloaded. It leaves in libvirt and in MINIKUBE_HOME what
//! kvm2 leaves there, boots real VMs, and serves a REAL kube-apiserver (with etcd). It is
//! written from minikube's source, not from mkh's code, so that it can catch mkh's mistakes
//! about minikube.
//!
//! # Commands
//!
//! `start`, `stop`, `delete`, `ip [-n NODE]`, `status [-o json]`, `ssh-key [-n NODE]`,
//! `logs [--file] [-n]`, `image load ARCHIVE...`,
//! `profile list [-o json]`, `version [--short] [-o json]`; `-p/--profile` anywhere (default
//! `minikube`). See [`cli`] for the flags and [`commands`] for what each one does.
//!
//! # The rules it keeps, and where it cannot
//!
//! Written from minikube v1.38.1's source (commit c93a4cb9; paths in kubernetes/minikube);
//! `version --short` prints `v1.38.1`, `version` adds `commit: stand-in`. "Same" means the
//! stand-in does what that source does, with its reason and exit code; "Deviation" says what
//! it does instead, and why.
//!
//! | # | Rule | minikube source | Stand-in |
//! |---|------|-----------------|----------|
//! | 1 | Profile names: DNS labels of letters, digits and `-` joined by dots, each starting and ending with a letter or digit, longer than one character; checked first; exit 14. Command-line mistakes (unknown flags or commands) exit 14 too | `pkg/minikube/config/profile.go` (`ProfileNameValid`), `cmd/minikube/cmd/start.go`, `root.go` | Same |
//! | 2 | Every flag of `start` and the global ones may come from `MINIKUBE_<FLAG>` (`-` as `_`) when the command line leaves it out; empty counts as unset | `cmd/minikube/cmd/root.go`, `start_flags.go` (viper `AutomaticEnv`) | Same (`MINIKUBE_DRIVER`, `MINIKUBE_NODES`, `MINIKUBE_FORCE`, `MINIKUBE_PROFILE`, ...) |
//! | 3 | `-d` is `--driver`, `-n` is `--nodes` (for `ip`/`ssh-key`: `--node`), `-m` is `--memory`, `-c` is `--container-runtime`, `-p` is `--profile` | `start_flags.go`, `root.go` | Same |
//! | 4 | Driver other than kvm2 | `start.go` (`selectDriver`) | Deviation: refused, exit 56 (the stand-in has no other driver; minikube would use it) |
//! | 5 | kvm2 health check: `virsh` on PATH, else exit 65 even with `--force`; `virsh domcapabilities --virttype kvm` against `LIBVIRT_DEFAULT_URI` = `--kvm-qemu-uri` within 6 s; on a failure or timeout, a user (by the user database) in no `libvirt*` group: exit 67; else exit 63 (timeout) or 69; then `virsh list` (exit 69); all but 65 force-able | `pkg/minikube/registry/drvs/kvm2/kvm2.go` (`status()`), `start.go` (`validateDriver`) | Same. master's group check before `virsh` (exit 65 even with `--force`) is not imitated: mkh checks it for later releases |
//! | 6 | CPUs: fewer than 2 on the host (logical CPUs), fewer than 2 asked, more than the host has: exit 29; default `--cpus` 2; `max` = the host's; `no-limit`: exit 14; not a number reads as 0 | `start.go` (`validateCPUCount`), `start_flags.go` (`minimumCPUS`, `getCPUCount`) | Same |
//! | 7 | Memory: a host under 1800 MB, or under 1800 MB asked: exit 23; more than the host: exit 10; under 1900, or within 1024 MB of the host's: a warning; plain numbers are MB; `max` = the host's less 1024; `no-limit`, or what does not parse: exit 14; checked again when an existing profile starts | `start.go` (`validateRequestedMemorySize`, `validateFlags`), `start_flags.go` (`minUsableMem`, `getMemorySize`) | Same, except that an unparsable size is not force-able here |
//! | 8 | Default memory: a quarter of the host's, in 100 MB steps, split over the nodes, clamped to 3072-6144 (the whole memory under 3072) | `start.go` (`suggestMemoryAllocation`) | Same |
//! | 9 | Root (uid 0) without `--force`: exit 57 `DRV_AS_ROOT`, after the messages on stderr; `--force` turns 5-7 into printed errors | `start.go` (`validateUser`, `exitIfNotForced`) | Same |
//! | 10 | `--ha`: 3 control-plane nodes (fewer `--nodes` with it: exit 14, checked after the user, for a new profile; an existing one keeps its nodes, changes only warn); `--nodes N`: domains `<p>`, `<p>-m02`, ..., started one after the other; `Nodes[]` named `""`, `m02`, ... | `start_flags.go` (`validateHANodeCount`, `generateNewConfigFromFlags`), `start.go` (`startWithDriver`), `config/profile.go` (`MachineName`) | Same; nodes after the first join nothing (deviation: no kubelet, see 20), no HA VIP is served |
//! | 11 | `--delete-on-failure`: a start that failed once its hosts were being made deletes the whole profile (its private network too) and tries once more | `start.go` (`maybeDeleteAndRetry`) | Same |
//! | 12 | The NAT network (`--kvm-network`, default `default`) must exist (never created, exit 60); the private network (`--network`, else `mk-<profile>`) is used if it exists, else made from kvm2's template (isolated, `<dns enable='no'/>`, DHCP range = client range minus its last address) on minikube's subnet choice (192.168.39.0/24, third octet +11; taken = a host address or a flock in `$TMPDIR/minikube-locks-<uid>/`; inactive libvirt networks not looked at) | `pkg/drivers/kvm/network.go` (`createNetwork`), `pkg/network/network.go` | Same |
//! | 13 | Every start: both networks autostarted and started; a private network that cannot start is deleted (unless another domain uses it) and made anew under the same name | `network.go` (`ensureNetwork`, `setupNetwork`) | Same |
//! | 14 | Each machine: private NIC first (PrivateMAC) then NAT (MAC), random MACs recorded in `machines/<m>/config.json`, its own `machines/<m>/id_rsa` (RSA 2048), user `docker`, hostname the machine's name (`<p>`, `<p>-m02`, set by the provisioner: `pkg/provision/buildroot.go`, `Provision`); serial console a pty with no log file; virtio-rng. A machine whose domain is gone is demolished and made anew: kvm2's `Remove` (the private network too, unless another domain uses it) and the machine's directory, then a new host: a new private network under the same name on minikube's subnet choice, new MACs, a new key | `pkg/drivers/kvm/domain_definition_x86.go`, `domain.go`, `pkg/drivers/common/common.go`, `pkg/minikube/machine/fix.go` (`recreateIfNeeded`), `delete.go` (`demolish`) | Same (random MACs are the stand-in's, not libvirt's `52:54:00` ones; the hostname is given at boot, where minikube sets it over SSH) |
//! | 15 | The guest's SSH host key is new on every boot (root file system in RAM); host keys are never checked | `pkg/libmachine/ssh/client.go` (`InsecureIgnoreHostKey`), issue #5666 | Same (the guest makes its key at boot) |
//! | 16 | Start waits 30 s for the domain to run, polls the private lease by PrivateMAC every 2 s for 90 s, pins it with a DHCP host entry named after the machine (a failure to pin is logged, not fatal), waits for SSH | `pkg/drivers/kvm/kvm.go` (`waitForStaticIP`, `addStaticIP`) | Same, deadlines x4 under TCG |
//! | 17 | `ip [-n NODE]`: the IP recorded in `Nodes[]` once the control plane's host runs; stopped: on stdout `The control-plane node <m> host is not running: state=Stopped` and the start hint, exit 83; no machine: exit 85; domain gone: exit 80; no profile (every command): on stdout, exit 85 | `cmd/minikube/cmd/ip.go`, `pkg/minikube/mustload/mustload.go` | Same |
//! | 18 | `stop`: node by node, the primary last; ACPI shutdown, 90 s, then destroy; then the profile's cluster, user and context leave the kubeconfig (current-context emptied if it was the profile's) unless `--keep-context-active`; `start` writes them again | `pkg/drivers/kvm/kvm.go` (`Stop`), `cmd/minikube/cmd/stop.go` (`stopProfile`), `pkg/minikube/kubeconfig/context.go` (`DeleteContext`) | Same; `--keep-context-active` is not imitated (refused as an unknown flag) |
//! | 19 | `delete`: node by node; a node whose domain is gone is assumed deleted (its network is left); else Remove(): the private network first (unless `default` or used by another domain), then the domain, then its DHCP host entry; then the profile, machine dirs and kubeconfig entries | `cmd/minikube/cmd/delete.go`, `pkg/minikube/machine/delete.go`, `kvm.go` (`Remove`, `delStaticIP`) | Same; older preloads are not pruned (no preloads) |
//! | 20 | The ISO + raw disk, Docker, kubelet, pods | `kvm2.go`, the ISO | Deviation: mkh's tiny initramfs guest booted directly (`<kernel>`/`<initrd>`, the key on the command line). By default the VM is a Kubernetes node (see 22): the raw disk at `DiskPath` (sparse, the disk size; the guest makes ext4 on the whole disk at first boot, where the ISO makes `vda1`) and mkh's node bundle as a second, read-only disk shared by every node VM (Debian's docker.io 20.10, containerd, runc, CNI plugins, etcd 3.4, iptables, kubectl, and Kubernetes 1.20.2 built from Debian's source); with `MK_STANDIN_CONTROL_PLANE=host`, `DiskPath` is recorded but not created, and no pod runs |
//! | 21 | `<domain type='kvm'>` with `host-passthrough`, always | `domain_definition_x86.go` | Deviation: under TCG (no vmx/svm, as on these machines) `type='qemu'` without passthrough, or nothing would boot; and the node's raw disk with `cache='unsafe'` instead of kvm2's `default` (flushes return at once: etcd's fsync per write would cost the emulated control plane seconds); and under TCG a node's kernel runs with `norandmaps` (no address space randomisation: a program sits at the same addresses in every process, so QEMU reuses what it translated for the program's last run; about 20% off a node's time to Ready here) |
//! | 22 | The control plane in the VM: kubeadm's static pods `etcd-<node>`, `kube-apiserver-<node>` (on the VM's private IP, port 8443), `kube-controller-manager-<node>`, `kube-scheduler-<node>` in kube-system; the kubelet with the docker runtime; kube-proxy (a DaemonSet); the pod network minikube picks for the version (from 1.24 the bridge CNI named `bridge` on bridge `bridge`, 10.244.0.0/16; before, dockershim without CNI: docker0, 172.17.0.0/16); the kubeconfig's server the VM's private IP | the ISO, `pkg/minikube/bootstrapper/bsutil/kubeadm.go` and its templates, `pkg/minikube/cni/cni.go` (`chooseDefault`), `cni/bridge.go` | By default the same, with these deviations: the programs are Kubernetes 1.20.2 whatever `--kubernetes-version` says (the version picks the pod network only); several nodes: the others join as workers (their kubelet and kube-proxy, their own certificates, the control plane's IP), and, as minikube picks kindnet for every cluster of more than one node, each node's pods get the node's /24 of 10.244.0.0/16 (the controller manager's allocation, in the order the nodes join) with routes on every node to the others' ranges, written by the stand-in instead of kindnet's DaemonSet (no kindnet pods, a bridge CNI per node where kindnet uses ptp; its test is ignored without KVM and passed by hand here); `--ha` is refused (exit 18: one control plane); no kubeadm: the stand-in writes kubeadm's files itself and sends them over SSH as one archive to a root agent in the guest (the guest has no sudo); the control plane's images are one small preloaded base image (also `k8s.gcr.io/pause:3.2`) whose programs come from the node's `/usr`, mounted read-only; etcd serves plain HTTP on 127.0.0.1; the controller manager's and the scheduler's manifests are written once the API server answers (kubeadm writes all four at once; under emulation the controller manager would crash-loop, backing off for minutes, through the API server's slow start); the API server's serving key and the node components' client keys are P-256, not RSA 2048 (an RSA signature per TLS handshake starves an emulated control plane); no leader election; the controller manager runs kubeadm's controllers less those of quotas, autoscaling, certificate requests, volumes, cron jobs and disruption budgets (each costs seconds to start under emulation); the API server serves no beta API group but the three a 1.20 node's own components read (`discovery.k8s.io`, `policy` and `node.k8s.io` v1beta1; from 1.24 Kubernetes serves none by default) and runs without priority and fairness (about 40% less work before it is ready); the controller manager and scheduler run without delegated authentication; kube-proxy authenticates with a client certificate, not a service account; no CoreDNS, so no cluster DNS (`kube-dns` does not exist); one more preloaded image, `mkh.local/busybox:test`, for tests. One named setting, `MK_STANDIN_CONTROL_PLANE=host` (the faster mode, used only by tests that need an API server and no pods, each saying why), is a deviation: a real kube-apiserver 1.20.2 (whatever `--kubernetes-version` says) and etcd run on the host at the private network's host address, port 8443; the serving certificate also names the VM's IP; no scheduler, controller manager, CoreDNS or kube-proxy (Services get ClusterIPs from 10.96.0.0/12, no endpoints). So two profiles on one private network cannot run at once (refused before anything is made); clients pin `profiles/<p>/apiserver.pub`, since a home's profiles share the CA. The host-side processes are detached and outlive `minikube`, as a VM would; `stop`/`delete` end them (pid + start time, or a command line naming the profile's directory) |
//! | 23 | `--kvm-qemu-uri` other than `qemu:///system` | `kvm2.go` | Deviation: refused (exit 56) |
//! | 24 | Every command (`version` too) first makes MINIKUBE_HOME's `certs`, `machines`, `cache`, `config`, `addons`, `files`, `logs` | `cmd/minikube/cmd/root.go` (`PersistentPreRun`) | Same |
//! | 25 | A new host whose start fails is deleted (`DeleteHost`: kvm2's `Remove`, the private network first unless another domain uses it, then the domain, its DHCP host entry and the machine's directory) and, after `StartHost failed, but will try again` and 5 s, made once more, with or without `--delete-on-failure`; so its private network is made again under the same name on minikube's subnet choice, without metadata, and `start` exits 0. An existing host is tried again without the delete. `MINIKUBE_IN_STYLE` picks emoji or ASCII prefixes | `pkg/minikube/node/start.go` (`startHostInternal`), `pkg/minikube/machine/delete.go` (`DeleteHost`), `pkg/minikube/out/out.go` | Same for failures up to the private IP (SSH and the control plane are not retried); the stand-in setting `MK_STANDIN_FAIL_FIRST_BOOT=<machine>[,...]` (`*`: all) fails the first creation of those machines once their domain runs, as a VM without an IP; emoji always |
//! | 26 | Timings (43-52 s cold start), the machines lock serialising kvm2 starts, ARP fallback for the IP, `events.json`, ISO and preload downloads and their locks, `--subnet`, `--static-ip`, addons, `minikube ssh`, `delete --all/--purge`, klog output | various | Deviation: not imitated; klog-style `I file.go:N]` lines for a few events go to stderr always; `status` counts the kubelet bit only with the host down |
//! | 27 | `--kubernetes-version`: the flag, else the profile's, else the default v1.35.1 (`stable` too; `latest`/`newest` the newest, v1.35.1); `1.N` is that minor's newest release in the version list (none: exit 14 `MK_PATCH_NOT_FOUND`); what does not parse: exit 14; older than v1.28.0: exit 106 `K8S_OLD_UNSUPPORTED` unless `--force`; newer than v1.35.1 and not in the list: GitHub's releases are searched, and without `--force` a failed search exits 40; an existing cluster is never downgraded (exit 106, even forced); checked before the driver's health | `cmd/minikube/cmd/start.go` (`getKubernetesVersion`, `validateKubernetesVersion`), `pkg/minikube/constants` | Same, except that the stand-in is offline: a version newer than the list is refused as a failed search (exit 40) unless `--force`; the programs are Kubernetes 1.20.2 whatever the version (see 22) |
//! | 28 | `image load ARG...`: `-` (standard input, saved to a file first), or a path (starts with `/` or `.`, or exists) is an archive copied to `/var/lib/minikube/images/` of every running node and given to `docker load`; other words are images of the host's docker daemon or a registry; no profile: exit 14; the command exits 0 even when the file is missing or a node fails (klog only); stopped nodes are skipped | `cmd/minikube/cmd/image.go`, `pkg/minikube/machine/cache_images.go` (`DoLoadImages`, `transferAndLoadImage`) | Same for archives (as user `docker`, in the group of the guest's dockerd, where minikube uses sudo); image names are refused (exit 80): the stand-in has no daemon or registry to take them from; the klog lines go to stderr |
//! | 29 | `--no-kubernetes`: every node's VM and its container runtime, no bootstrap and no kubeconfig entry (`Done! minikube is ready without Kubernetes!`); the profile records v0.0.0, which later starts keep (`profile list` shows `N/A`) until a version is asked; with `--kubernetes-version`: exit 14; on an existing cluster it stops the node's Kubernetes | `cmd/minikube/cmd/start.go` (`getKubernetesVersion`, `validateKubernetesVersion`), `pkg/minikube/node/start.go` (`handleNoKubernetes`), `cmd/minikube/cmd/config/profile_list.go`, `test/integration/no_kubernetes_test.go` | Same (the wait for the runtime is a wait for `docker version` as user docker), except that on a running node whose cluster had Kubernetes it is refused (exit 18: the stand-in cannot stop a running kubelet; stop the cluster first); v1.38.1's `getKubernetesVersion` falls back to the default version for a new profile, and the stand-in records v0.0.0 as the integration test expects. `--addons` does not exist here (refused as an unknown flag) |
//!
//! Progress lines are minikube's (emoji + text, stdout); error reasons and exit codes follow
//! minikube's table (`pkg/minikube/reason`), not always its exact wording.

mod certs;
mod cli;
mod commands;
mod config;
mod control_plane;
mod keys;
mod kubeconfig;
mod libvirt;
mod lock;
mod node;
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
    /// A command-line mistake, printed as cobra does; minikube exits 14 (`root.go`).
    pub fn usage(msg: impl std::fmt::Display, command: &str) -> Failure {
        let help = if command.is_empty() {
            "minikube --help".to_string()
        } else {
            format!("minikube {command} --help")
        };
        Failure {
            code: EX_PROGRAM_USAGE,
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
