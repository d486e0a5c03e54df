//! `mkh doctor`: what this host offers mkh, check by check, each with what was seen and, where
//! something is missing, the fix. Only what blocks every backend fails (libvirt unreachable, no
//! network can be made, no room in the pool, no dnsmasq, no virtlogd, an unusable lock
//! directory); TCG, a missing minikube or a pool with room for one environment warn.

use std::path::Path;

use serde::Serialize;

use crate::libvirt::Libvirt;
use crate::libvirt::{uri_is_local, Removal};
use crate::machine::accel::{self, Accel};
use crate::minikube::contract::{self, Version};
use crate::net::{taken_subnets, NetworkKind};
use crate::owner::{Owner, OwnerKind};
use crate::reaper::{ReapScope, Which};
use crate::Settings;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// All is well.
    Pass,
    /// Something works worse, or one backend cannot serve; mkh still can.
    Warn,
    /// Nothing of mkh's can work until this is fixed.
    Fail,
}

/// One check: its name, how it came out, what it saw and the fix.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Short name, e.g. `accelerator`.
    pub name: &'static str,
    /// Pass, warn or fail.
    pub status: Status,
    /// What was seen.
    pub seen: String,
    /// What to do, when the status is not pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// Every check, in order.
#[derive(Debug, Clone, Serialize)]
pub struct DoctorReport {
    /// The libvirt URI checked.
    pub libvirt_uri: String,
    /// The checks.
    pub checks: Vec<Check>,
}

impl DoctorReport {
    /// Whether a check failed (the `mkh doctor` exit status).
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.status == Status::Fail)
    }
}

fn check(name: &'static str, status: Status, seen: impl Into<String>, fix: Option<&str>) -> Check {
    Check {
        name,
        status,
        seen: seen.into(),
        fix: fix.map(str::to_owned),
    }
}

/// Runs every check against `settings`' libvirt and this host. Makes one network (with mkh's
/// owner record) and removes it at once; leaves nothing.
pub fn run(settings: &Settings) -> DoctorReport {
    let mut checks = Vec::new();
    let uri = &settings.libvirt_uri;
    let lv = match Libvirt::connect_to(uri) {
        Ok(lv) => {
            checks.push(check("libvirt", Status::Pass, versions(&lv), None));
            Some(lv)
        }
        Err(e) => {
            let why = match &e {
                crate::Error::Connect { source, .. } => source.to_string(),
                other => first_line(other),
            };
            checks.push(check(
                "libvirt",
                Status::Fail,
                format!("cannot connect to {uri}: {why}"),
                Some("start libvirtd (and virtlogd), check that your user may use its socket (group libvirt), or set MKH_LIBVIRT_URI to a reachable libvirt"),
            ));
            None
        }
    };
    let test_driver = uri.starts_with("test:");
    let local = uri_is_local(uri) && !test_driver;
    checks.push(accelerator(lv.as_ref(), local, settings.accel));
    checks.push(directories(settings));
    if let Some(lv) = &lv {
        if local {
            checks.push(virtlogd());
            checks.push(dnsmasq());
        } else {
            let why = if test_driver {
                "libvirt's test driver runs no daemons"
            } else {
                "a remote libvirt runs them on its own host"
            };
            for name in ["virtlogd", "dnsmasq"] {
                checks.push(check(
                    name,
                    Status::Warn,
                    format!("not checked: {why}"),
                    None,
                ));
            }
        }
        checks.push(subnets(lv, settings));
        checks.push(network_creation(lv, settings));
        checks.push(leftovers(lv, settings));
        if let Some(host) = crate::remote::SshHost::from_uri(uri) {
            checks.push(ssh_through_host(&host));
        }
    }
    checks.push(guest_image(&settings.cache_dir, local || test_driver));
    checks.push(minikube(settings));
    checks.push(stand_in_api_server(&settings.cache_dir));
    DoctorReport {
        libvirt_uri: uri.clone(),
        checks,
    }
}

fn first_line(e: &crate::Error) -> String {
    e.to_string().lines().next().unwrap_or("").to_owned()
}

fn versions(lv: &Libvirt) -> String {
    let (libvirt, hypervisor) = lv.versions();
    let mut seen = format!("libvirt {libvirt} at {}", lv.uri());
    if let Some(h) = hypervisor {
        seen += &format!(" (hypervisor {h})");
    }
    seen
}

fn accelerator(lv: Option<&Libvirt>, local: bool, forced: Option<Accel>) -> Check {
    let Some(lv) = lv else {
        return check(
            "accelerator",
            Status::Warn,
            "not checked: libvirt is unreachable, and it is what offers kvm or not",
            Some("see the `libvirt` check"),
        );
    };
    let facts = accel::facts(lv, forced);
    if forced == Some(Accel::Kvm) && !facts.libvirt_offers_kvm {
        return check(
            "accelerator",
            Status::Warn,
            "kvm forced by MKH_ACCEL, but libvirt offers no kvm domains: machines will not start",
            Some("unset MKH_ACCEL (mkh then picks TCG here), or use a host with KVM"),
        );
    }
    let (chosen, why) = accel::decide(&facts);
    let dev_kvm = Path::new("/dev/kvm").exists();
    let slower = Accel::Tcg.slowness();
    match chosen {
        Accel::Kvm => check("accelerator", Status::Pass, format!("kvm: {why}"), None),
        Accel::Tcg => {
            let what = if forced.is_some() {
                format!("tcg: {why}")
            } else if local && dev_kvm && facts.cpu_has_virt_flags == Some(false) {
                "tcg: /dev/kvm exists but libvirt's host CPU shows no vmx/svm: a PVM-only /dev/kvm, which QEMU cannot use for these guests".to_owned()
            } else if local && !dev_kvm {
                "tcg: no /dev/kvm on this host".to_owned()
            } else {
                format!("tcg: {why}")
            };
            check(
                "accelerator",
                Status::Warn,
                format!("{what}; mkh emulates instead (TCG): guests boot several times slower, and every deadline is {slower}x longer"),
                Some("for KVM, use a host or CI runner with hardware virtualisation (vmx or svm in libvirt's host CPU, `virsh capabilities`; nested virtualisation on a VM) and access to /dev/kvm; the built-in guest works under TCG meanwhile"),
            )
        }
    }
}

/// The lock directory every backend's networks are allocated under, and the state directory.
fn directories(settings: &Settings) -> Check {
    if let Err(e) = crate::config::check_writable_dir("MKH_LOCK_DIR", &settings.lock_dir) {
        return check(
            "directories",
            Status::Fail,
            first_line(&e),
            Some(
                "set MKH_LOCK_DIR to an existing directory every mkh user may write (default /tmp)",
            ),
        );
    }
    let state = &settings.state_dir;
    let existing = state
        .ancestors()
        .find(|d| d.exists())
        .unwrap_or(Path::new("/"));
    if let Err(e) = crate::config::check_writable_dir("MKH_STATE_DIR", existing) {
        return check(
            "directories",
            Status::Fail,
            format!("{} (for {})", first_line(&e), state.display()),
            Some(
                "set MKH_STATE_DIR to a directory you may write (default /var/tmp/mkh-state-<uid>)",
            ),
        );
    }
    check(
        "directories",
        Status::Pass,
        format!(
            "lock directory {} and state directory {} usable",
            settings.lock_dir.display(),
            state.display()
        ),
        None,
    )
}

fn virtlogd() -> Check {
    if Path::new("/run/libvirt/virtlogd-sock").exists() {
        check("virtlogd", Status::Pass, "virtlogd's socket is there", None)
    } else {
        check(
            "virtlogd",
            Status::Fail,
            "no /run/libvirt/virtlogd-sock: libvirt cannot start a domain that logs its console",
            Some("start virtlogd (`systemctl start virtlogd`, or `virtlogd -d` without systemd)"),
        )
    }
}

fn dnsmasq() -> Check {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = ["/usr/sbin/dnsmasq".into(), "/sbin/dnsmasq".into()]
        .into_iter()
        .chain(std::env::split_paths(&path).map(|d| d.join("dnsmasq")))
        .find(|p: &std::path::PathBuf| p.is_file());
    match found {
        Some(p) => check("dnsmasq", Status::Pass, format!("{}", p.display()), None),
        None => check(
            "dnsmasq",
            Status::Fail,
            "no dnsmasq: libvirt's networks cannot serve DHCP",
            Some("install dnsmasq-base (Debian) or dnsmasq"),
        ),
    }
}

/// Makes one isolated network as an environment's are made (under the allocator lock, in a
/// free subnet, with mkh's owner record), and removes it. Killed in between, it leaves the
/// network to the reaper (its owner is this process).
fn network_creation(lv: &Libvirt, settings: &Settings) -> Check {
    let id = crate::names::EnvId::random();
    let name = id.private_network();
    let owner = Owner::for_new_object(OwnerKind::Process, &id.env_name(), settings);
    let made = crate::net::create_one(
        lv,
        &name,
        NetworkKind::Isolated,
        &owner,
        &settings.subnet_pool,
        &settings.lock_dir,
    );
    let info = match made {
        Ok(info) => info,
        Err(e @ crate::Error::PoolExhausted { .. }) => {
            return check(
                "networks",
                Status::Fail,
                format!("not tried: {}", first_line(&e)),
                Some("see the `subnets` check"),
            )
        }
        Err(e) => {
            return check(
                "networks",
                Status::Fail,
                format!("could not make a network: {}", first_line(&e)),
                Some("use a libvirt URI whose user may create networks (qemu:///system as root or as a member of group libvirt), and check MKH_LOCK_DIR"),
            )
        }
    };
    let ours = |xml: &str| Owner::from_object_xml(xml).as_ref() == Some(&owner);
    match lv.remove_network_if(&name, ours) {
        Ok(Removal::Removed | Removal::AlreadyGone) => check(
            "networks",
            Status::Pass,
            format!(
                "made, started and removed network {name} on {}",
                info.subnet
            ),
            None,
        ),
        Ok(Removal::Changed) => check(
            "networks",
            Status::Warn,
            format!("made network {name}, but another owner holds that name now: left alone"),
            None,
        ),
        Err(e) => check(
            "networks",
            Status::Warn,
            format!(
                "made network {name}, but could not remove it: {}",
                first_line(&e)
            ),
            Some("`mkh reap` removes it once this process is gone"),
        ),
    }
}

fn subnets(lv: &Libvirt, settings: &Settings) -> Check {
    let pool = &settings.subnet_pool;
    let taken = match taken_subnets(lv) {
        Ok(t) => t,
        Err(e) => {
            return check(
                "subnets",
                Status::Warn,
                format!("could not list what is taken: {}", first_line(&e)),
                None,
            )
        }
    };
    let total = pool.candidates().count();
    let free = pool.free(&taken);
    let environments = free / 2;
    let seen = format!(
        "{free} of {total} /{} subnets of the pool {} are free: room for {environments} environment(s) (two networks each)",
        pool.prefix, pool.range
    );
    let fix = Some("widen MKH_SUBNET_POOL (or shorten MKH_SUBNET_PREFIX), or remove what holds subnets (`mkh ls`, `mkh reap`)");
    match environments {
        0 => check("subnets", Status::Fail, seen, fix),
        1 => check("subnets", Status::Warn, seen, fix),
        _ => check("subnets", Status::Pass, seen, None),
    }
}

fn leftovers(lv: &Libvirt, settings: &Settings) -> Check {
    let mut objects = match crate::inventory::claimed_objects(lv) {
        Ok(o) => o,
        Err(e) => {
            return check(
                "leftovers",
                Status::Warn,
                format!("could not list mkh's objects: {}", first_line(&e)),
                None,
            )
        }
    };
    if lv.is_local() && !lv.is_test_driver() {
        objects.extend(crate::reaper::home_objects(&settings.state_dir));
    }
    let reapable: Vec<String> =
        crate::reaper::would_reap(&objects, ReapScope::DeadOwners, Which::All)
            .into_iter()
            .map(|(o, why)| {
                format!(
                    "{} {} (environment {}: {why})",
                    o.kind.as_str(),
                    o.name,
                    o.owner.env
                )
            })
            .collect();
    let cli = crate::inventory::environments(&objects)
        .into_iter()
        .filter(|e| e.kind == OwnerKind::Cli)
        .count();
    if reapable.is_empty() {
        check(
            "leftovers",
            Status::Pass,
            format!("nothing left by dead owners; {cli} CLI environment(s) (`mkh ls`)"),
            None,
        )
    } else {
        check(
            "leftovers",
            Status::Warn,
            format!(
                "{} object(s) left by dead owners: {}",
                reapable.len(),
                reapable.join("; ")
            ),
            Some("`mkh reap` removes them (and only them)"),
        )
    }
}

/// Whether mkh can reach guests through the SSH host of the URI (what `mkh ssh` and every
/// readiness check do).
fn ssh_through_host(host: &crate::remote::SshHost) -> Check {
    match host.check_login() {
        Ok(()) => check(
            "ssh through host",
            Status::Pass,
            format!("logged in to {host}: guests are reached through it"),
            None,
        ),
        Err(e) => check(
            "ssh through host",
            Status::Fail,
            first_line(&e),
            Some("mkh logs in as libvirt's ssh transport does, without ~/.ssh/config: put the user, port and keyfile= in the URI"),
        ),
    }
}

fn guest_image(cache_dir: &Path, local: bool) -> Check {
    if !local {
        return check(
            "guest image",
            Status::Pass,
            "a remote libvirt host gets the image uploaded to mkh's pool mkh-images there, once per image (`mkh image` lists it)",
            None,
        );
    }
    if let Err(e) = crate::config::check_cache_dir(cache_dir) {
        return check(
            "guest image",
            Status::Warn,
            first_line(&e),
            Some("set MKH_CACHE_DIR as the message says; the built-in backend needs it"),
        );
    }
    if let Some(image) = mkh_guest_image::cached_guest_image(cache_dir) {
        let dir = image
            .kernel
            .parent()
            .unwrap_or(Path::new(""))
            .display()
            .to_string();
        return check(
            "guest image",
            Status::Pass,
            format!("cached in {dir}"),
            None,
        );
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let missing: Vec<&str> = ["apt-get", "apt-cache", "dpkg-deb", "ldd"]
        .into_iter()
        .filter(|tool| !std::env::split_paths(&path).any(|d| d.join(tool).is_file()))
        .collect();
    if !missing.is_empty() {
        return check(
            "guest image",
            Status::Warn,
            format!(
                "not cached, and a build needs {} (not on PATH)",
                missing.join(", ")
            ),
            Some("build it on a Debian host with `mkh image` and copy MKH_CACHE_DIR"),
        );
    }
    match mkh_guest_image::buildable_packages() {
        Ok(packages) => {
            let kernel = packages
                .iter()
                .find(|(name, _)| name.starts_with("linux-image-"))
                .map_or_else(String::new, |(n, v)| format!("; kernel {n} {v}"));
            check(
                "guest image",
                Status::Pass,
                format!(
                    "not cached in {} yet: the first environment builds it (about 10 s) from {} Debian packages apt's index offers{kernel} (`mkh image` builds it now)",
                    cache_dir.display(),
                    packages.len()
                ),
                None,
            )
        }
        Err(e) => check(
            "guest image",
            Status::Warn,
            format!("not cached, and not buildable here: {e}"),
            Some("on Debian, `apt-get update` (and install apt); or build it on a Debian host with `mkh image` and copy MKH_CACHE_DIR"),
        ),
    }
}

fn minikube(settings: &Settings) -> Check {
    let binary = match crate::minikube::find_binary(settings.minikube.as_deref()) {
        Ok(b) => b,
        Err(e) => {
            let why = match &e {
                crate::Error::MinikubeMissing { value, problem } => format!("{value}: {problem}"),
                other => first_line(other),
            };
            return check(
                "minikube",
                Status::Warn,
                format!(
                    "not usable ({why}): the minikube backend cannot run; the built-in one serves"
                ),
                Some(
                    "install minikube v1.38 or later (kvm2 built in) on PATH, or set MKH_MINIKUBE",
                ),
            );
        }
    };
    let scratch = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => return check("minikube", Status::Warn, e.to_string(), None),
    };
    let cluster = crate::minikube::MinikubeCluster::at(
        scratch.path(),
        "doctor",
        binary.clone(),
        &settings.libvirt_uri,
    );
    let version = match cluster.version() {
        Ok(v) => v,
        Err(e) => {
            return check(
                "minikube",
                Status::Warn,
                first_line(&e),
                Some("point MKH_MINIKUBE at a working minikube"),
            )
        }
    };
    let driver = if version >= Version::KVM2_BUILT_IN {
        "kvm2 built in"
    } else {
        "kvm2 from docker-machine-driver-kvm2 (before v1.38)"
    };
    let request = contract::Request {
        version,
        memory_mib: settings.memory_mib,
        cpus: settings.cpus,
        extra_args: &settings.minikube_args,
        binary: &binary,
    };
    let seen = format!("{version} at {} ({driver})", binary.display());
    match contract::check(&request, &contract::Host::current()) {
        Ok(()) => check("minikube", Status::Pass, seen, None),
        Err(crate::Error::MinikubeWouldRefuse { rule, fix, .. }) => Check {
            name: "minikube",
            status: Status::Warn,
            seen: format!("{seen}; it would refuse to start: {rule}"),
            fix: Some(fix),
        },
        Err(e) => check(
            "minikube",
            Status::Warn,
            format!("{seen}; {}", first_line(&e)),
            None,
        ),
    }
}

/// The kube-apiserver that mkh's own tests give their minikube stand-in.
fn stand_in_api_server(cache_dir: &Path) -> Check {
    let path = cache_dir
        .join("kubernetes")
        .join("current")
        .join("kube-apiserver");
    if path.is_file() {
        check(
            "stand-in API server",
            Status::Pass,
            format!("{} (for mkh's own tests)", path.display()),
            None,
        )
    } else {
        check(
            "stand-in API server",
            Status::Pass,
            format!("not built ({}): only mkh's own test suite needs it, and builds it on first use (10-15 minutes; `harness/scripts/build-kubernetes.sh` builds it now)", path.display()),
            None,
        )
    }
}
