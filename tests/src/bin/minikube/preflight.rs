//! What `minikube start` checks before it makes anything (`runStart` and
//! `provisionWithDriver`, `cmd/minikube/cmd/start.go`, v1.38.1), called by `commands::start`
//! in minikube's order: the driver's health, the CPU count, the requested memory, the user;
//! then, for a new profile, the HA node count and the default memory. Each refusal has
//! minikube's reason and exit code; those minikube lets `--force` override (`exitIfNotForced`)
//! are printed as errors and the start goes on.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cli::Amount;
use crate::{Failure, EX_PROGRAM_USAGE};

/// `minUsableMem`, `minRecommendedMem`, `minimumCPUS` (`cmd/minikube/cmd/start_flags.go`).
pub const MIN_USABLE_MEM: u32 = 1800;
pub const MIN_RECOMMENDED_MEM: u32 = 1900;
pub const MIN_CPUS: u32 = 2;

const EX_RSRC_OVER_ALLOC_MEM: u8 = 10;
const EX_INSUFFICIENT_MEMORY: u8 = 23;
const EX_INSUFFICIENT_CORES: u8 = 29;
const EX_DRV_AS_ROOT: u8 = 57;
const EX_PROVIDER_NOT_RUNNING: u8 = 63;
const EX_PROVIDER_NOT_FOUND: u8 = 65;
const EX_KVM_USER_PERMISSION: u8 = 67;
const EX_PROVIDER_ERROR: u8 = 69;

/// The host as minikube sees it.
#[derive(Debug, Clone)]
pub struct Host {
    pub uid: u32,
    pub groups: Vec<String>,
    /// MiB (`machine/info.go`).
    pub memory_mib: u32,
    /// Logical CPUs (`cpu.Counts(true)`).
    pub cpus: u32,
}

impl Host {
    pub fn current() -> Host {
        // `user.GroupIds()`: the user database's groups, not the process's.
        let uid = nix::unistd::getuid();
        let groups = nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .and_then(|u| {
                let name = std::ffi::CString::new(u.name).ok()?;
                nix::unistd::getgrouplist(&name, u.gid).ok()
            })
            .unwrap_or_default()
            .into_iter()
            .filter_map(|g| nix::unistd::Group::from_gid(g).ok().flatten())
            .map(|g| g.name)
            .collect();
        let memory_mib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            })
            .map_or(0, |kib| (kib / 1024) as u32);
        Host {
            uid: uid.as_raw(),
            groups,
            memory_mib,
            // `cpu.Counts(true)`: every logical processor, whatever the affinity.
            cpus: std::fs::read_to_string("/proc/cpuinfo")
                .map(|t| t.lines().filter(|l| l.starts_with("processor")).count() as u32)
                .unwrap_or(1)
                .max(1),
        }
    }
}

/// A refusal minikube lets `--force` override: with it, printed (without "Exiting due to")
/// and the start goes on.
fn unless_forced(force: bool, f: Failure) -> Result<(), Failure> {
    if force {
        for line in f.lines.iter().filter(|l| !l.is_empty()) {
            eprintln!("{}", line.replacen("Exiting due to ", "", 1));
        }
        Ok(())
    } else {
        Err(f)
    }
}

/// kvm2's health check (`status()` in `pkg/minikube/registry/drvs/kvm2/kvm2.go`): `virsh` on
/// PATH (not force-able), then `virsh domcapabilities --virttype kvm` against `uri` within
/// 6 s (start sets `LIBVIRT_DEFAULT_URI` to `--kvm-qemu-uri` first); only when that fails is
/// the group looked at.
pub fn driver_health(uri: &str, host: &Host, force: bool) -> Result<(), Failure> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    if !std::env::split_paths(&path).any(|d| d.join("virsh").is_file()) {
        return Err(Failure::styled(
            EX_PROVIDER_NOT_FOUND,
            vec![
                String::new(),
                "❌  Exiting due to PROVIDER_KVM2_NOT_FOUND: The 'kvm2' provider was not found: exec: \"virsh\": executable file not found in $PATH".into(),
                "💡  Suggestion: Install libvirt".into(),
                "📘  Documentation: https://minikube.sigs.k8s.io/docs/reference/drivers/kvm2/".into(),
                String::new(),
            ],
        ));
    }
    let check = run_with_deadline(
        Command::new("virsh")
            .args(["domcapabilities", "--virttype", "kvm"])
            .env("LIBVIRT_DEFAULT_URI", uri),
        Duration::from_secs(6),
    );
    let failure = match check {
        Some((true, _)) => None,
        // A failure or a timeout: first the group (`status()` looks at it on any error).
        _ if !host.groups.iter().any(|g| g.starts_with("libvirt")) => Some(Failure::styled(
            EX_KVM_USER_PERMISSION,
            vec![
                String::new(),
                "🚫  Exiting due to PR_KVM_USER_PERMISSION: libvirt group membership check failed:".into(),
                "user is not a member of the appropriate libvirt group".into(),
                "💡  Suggestion: Ensure that you are a member of the appropriate libvirt group (remember to relogin for group changes to take effect!)".into(),
                String::new(),
            ],
        )),
        None => Some(Failure::exit(
            EX_PROVIDER_NOT_RUNNING,
            "PROVIDER_KVM2_NOT_RUNNING",
            "The 'kvm2' provider was not found: virsh domcapabilities --virttype kvm timed out",
        )),
        Some((false, output)) => Some(Failure::exit(
            EX_PROVIDER_ERROR,
            "PROVIDER_KVM2_ERROR",
            format!(
                "The 'kvm2' provider returned an error: virsh domcapabilities --virttype kvm failed:\n{}",
                output.trim()
            ),
        )),
    };
    if let Some(f) = failure {
        return unless_forced(force, f);
    }
    // Then `virsh list`.
    let list = run_with_deadline(
        Command::new("virsh")
            .arg("list")
            .env("LIBVIRT_DEFAULT_URI", uri),
        Duration::from_secs(6),
    );
    match list {
        Some((true, _)) => Ok(()),
        other => unless_forced(
            force,
            Failure::exit(
                EX_PROVIDER_ERROR,
                "PROVIDER_KVM2_ERROR",
                format!(
                    "The 'kvm2' provider returned an error: virsh list failed:\n{}",
                    other
                        .map(|(_, o)| o)
                        .unwrap_or_else(|| "timed out".into())
                        .trim()
                ),
            ),
        ),
    }
}

fn run_with_deadline(cmd: &mut Command, deadline: Duration) -> Option<(bool, String)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let end = Instant::now() + deadline;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            return Some((status.success(), err));
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `validateHANodeCount` (`cmd/minikube/cmd/start_flags.go`): the nodes this start asks for.
pub fn node_count(nodes: Option<u32>, ha: bool) -> Result<u32, Failure> {
    match (ha, nodes) {
        (true, None) => Ok(3),
        (true, Some(n)) if n < 3 => Err(Failure::exit(
            EX_PROGRAM_USAGE,
            "MK_USAGE",
            "HA (multi-control plane) clusters require 3 or more control-plane nodes",
        )),
        (_, n) => Ok(n.unwrap_or(1)),
    }
}

/// `--cpus` as `getCPUCount` reads it (`cmd/minikube/cmd/start_flags.go`): `max` is every
/// logical CPU; `no-limit` is for Docker and Podman only (exit 14).
pub fn resolve_cpus(amount: &Amount, host: &Host) -> Result<u32, Failure> {
    match amount {
        Amount::Value(n) => Ok(*n),
        Amount::Max => Ok(host.cpus),
        Amount::NoLimit => Err(Failure::exit(
            EX_PROGRAM_USAGE,
            "MK_USAGE",
            "The 'kvm2' driver does not support --cpus=no-limit",
        )),
        Amount::Unparsable(_) => Ok(0),
    }
}

/// `--memory` as minikube reads it: `max` is the host's memory less 1024 MB; `no-limit` is
/// for Docker and Podman only; what does not parse exits 14 (`validateFlags`).
pub fn resolve_memory(amount: &Amount, host: &Host) -> Result<u32, Failure> {
    match amount {
        Amount::Value(n) => Ok(*n),
        Amount::Max => Ok(host.memory_mib.saturating_sub(1024)),
        Amount::NoLimit => Err(Failure::exit(
            EX_PROGRAM_USAGE,
            "MK_USAGE",
            "The 'kvm2' driver does not support --memory=no-limit",
        )),
        Amount::Unparsable(text) => Err(Failure::exit(
            EX_PROGRAM_USAGE,
            "MK_USAGE",
            format!("Unable to parse memory '{text}': invalid size: '{text}'"),
        )),
    }
}

/// `validateCPUCount` (`cmd/minikube/cmd/start.go`); `requested` defaults to the flag's "2".
pub fn cpus(requested: u32, host: &Host, force: bool) -> Result<(), Failure> {
    let refuse = |msg: String| Failure::exit(EX_INSUFFICIENT_CORES, "RSRC_INSUFFICIENT_CORES", msg);
    if host.cpus < MIN_CPUS {
        return unless_forced(force, refuse("kvm2 has less than 2 CPUs available, but Kubernetes requires at least 2 to be available".into()));
    }
    if requested < MIN_CPUS {
        return unless_forced(
            force,
            refuse(format!(
                "Requested cpu count {requested} is less than the minimum allowed of {MIN_CPUS}"
            )),
        );
    }
    if requested > host.cpus {
        return unless_forced(
            force,
            refuse(format!(
                "Requested cpu count {requested} is greater than the available cpus of {}",
                host.cpus
            )),
        );
    }
    Ok(())
}

/// `validateRequestedMemorySize` (`cmd/minikube/cmd/start.go`), for a VM driver.
pub fn memory(requested: u32, host: &Host, force: bool) -> Result<(), Failure> {
    if host.memory_mib < MIN_USABLE_MEM {
        return unless_forced(
            force,
            Failure::exit(
                EX_INSUFFICIENT_MEMORY,
                "RSRC_INSUFFICIENT_SYS_MEMORY",
                format!(
                    "System only has {}MiB available, less than the required {MIN_USABLE_MEM}MiB for Kubernetes",
                    host.memory_mib
                ),
            ),
        );
    }
    if requested < MIN_USABLE_MEM {
        return unless_forced(
            force,
            Failure::exit(
                EX_INSUFFICIENT_MEMORY,
                "RSRC_INSUFFICIENT_REQ_MEMORY",
                format!("Requested memory allocation {requested}MiB is less than the usable minimum of {MIN_USABLE_MEM}MB"),
            ),
        );
    }
    if requested < MIN_RECOMMENDED_MEM {
        crate::warn(format!("Requested memory allocation ({requested}MB) is less than the recommended minimum {MIN_RECOMMENDED_MEM}MB. Deployments may fail."));
    }
    if requested + 1024 > host.memory_mib && requested <= host.memory_mib {
        crate::warn(format!("The requested memory allocation of {requested}MiB does not leave room for system overhead (total system memory: {}MiB). You may face stability issues.", host.memory_mib));
    }
    if requested > host.memory_mib {
        return unless_forced(
            force,
            Failure::exit(
                EX_RSRC_OVER_ALLOC_MEM,
                "RSRC_OVER_ALLOC_MEM",
                format!(
                    "Requested memory allocation {requested}MB is more than your system limit {}MB.",
                    host.memory_mib
                ),
            ),
        );
    }
    Ok(())
}

/// `validateUser` (`cmd/minikube/cmd/start.go`): root needs `--force`.
pub fn user(
    host: &Host,
    force: bool,
    profile_exists: bool,
    delete_hint: &str,
) -> Result<(), Failure> {
    if host.uid != 0 {
        return Ok(());
    }
    eprintln!("🛑  The \"kvm2\" driver should not be used with root privileges. If you wish to continue as root, use --force.");
    eprintln!("💡  If you are running minikube within a VM, consider using --driver=none:");
    eprintln!("📘    https://minikube.sigs.k8s.io/docs/reference/drivers/none/");
    if profile_exists {
        eprintln!("💡  Tip: To remove this root owned cluster, run: sudo {delete_hint}");
    }
    if force {
        return Ok(());
    }
    Err(Failure::exit(
        EX_DRV_AS_ROOT,
        "DRV_AS_ROOT",
        "The \"kvm2\" driver should not be used with root privileges.",
    ))
}

/// `suggestMemoryAllocation` (`cmd/minikube/cmd/start.go`) for a VM driver: a quarter of the
/// host's memory in steps of 100 MB, split over the nodes, between 3072 and 6144 (the whole
/// memory under 3072).
pub fn suggested_memory(host_mib: u32, nodes: u32) -> u32 {
    const FALLBACK: u32 = 3072;
    const MAXIMUM: u32 = 6144;
    if host_mib > 0 && host_mib < FALLBACK {
        return host_mib;
    }
    let mut suggested = host_mib / 400 * 100;
    if nodes > 1 {
        suggested /= nodes;
    }
    suggested.clamp(FALLBACK, MAXIMUM)
}

/// minikube's default Kubernetes version (`constants.DefaultKubernetesVersion`, the newest).
pub const DEFAULT_K8S_VERSION: &str = "v1.35.1";
/// A cluster without Kubernetes (`constants.NoKubernetesVersion`, `--no-kubernetes`).
pub const NO_KUBERNETES_VERSION: &str = "v0.0.0";
/// The oldest version minikube starts without `--force` (`constants.OldestKubernetesVersion`).
const OLDEST_K8S_VERSION: (u64, u64, u64) = (1, 28, 0);
const NEWEST_K8S_VERSION: (u64, u64, u64) = (1, 35, 1);
/// The newest release of each minor version in v1.38.1's `ValidKubernetesVersions`: what
/// `--kubernetes-version=1.N` means (`getLatestPatch`).
const LATEST_PATCHES: &[&str] = &[
    "v1.36.0-alpha.1",
    "v1.35.1",
    "v1.34.4",
    "v1.33.8",
    "v1.32.12",
    "v1.31.14",
    "v1.30.14",
    "v1.29.15",
    "v1.28.15",
    "v1.27.16",
    "v1.26.15",
    "v1.25.16",
    "v1.24.17",
    "v1.23.17",
    "v1.22.17",
    "v1.21.14",
    "v1.20.15",
    "v1.19.16",
    "v1.18.20",
    "v1.17.17",
    "v1.16.15",
];
const EX_INTERNET_ERROR: u8 = 40;
const EX_CONTROL_PLANE_UNSUPPORTED: u8 = 106;

/// `major.minor.patch` and whether a pre-release follows, of a version without its `v`.
fn parse_version(text: &str) -> Option<((u64, u64, u64), bool)> {
    let (core, pre) = match text.split_once('-') {
        Some((core, pre)) => (core, !pre.is_empty()),
        None => (text, false),
    };
    let number = |p: &str| {
        (!p.is_empty()
            && p.bytes().all(|b| b.is_ascii_digit())
            && (p == "0" || !p.starts_with('0')))
        .then(|| p.parse().ok())
        .flatten()
    };
    let mut parts = core.split('.');
    let v = (
        number(parts.next()?)?,
        number(parts.next()?)?,
        number(parts.next()?)?,
    );
    parts.next().is_none().then_some((v, pre))
}

/// The Kubernetes version a start asks for, checked as minikube checks it
/// (`getKubernetesVersion`, `validateKubernetesVersion` in `cmd/minikube/cmd/start.go`): the
/// flag, else the profile's, else the default (`stable` too; `latest`, `newest`: the newest);
/// `1.N` is that minor's newest release; what does not parse is refused; older than v1.28.0 or
/// newer than the newest only with `--force`; an existing cluster is never downgraded.
/// `--no-kubernetes` (never with a version) and v0.0.0 mean no Kubernetes, and no check.
pub fn kubernetes_version(
    flag: Option<&str>,
    existing: Option<&str>,
    force: bool,
    no_kubernetes: bool,
) -> Result<String, Failure> {
    let flag = flag.filter(|f| !f.is_empty());
    if no_kubernetes {
        if flag.is_some() {
            return Err(Failure::exit(
                EX_PROGRAM_USAGE,
                "MK_USAGE",
                "cannot specify --kubernetes-version with --no-kubernetes,\nto unset a global config run:\n\n$ minikube config unset kubernetes-version",
            ));
        }
        return Ok(NO_KUBERNETES_VERSION.into());
    }
    let asked = flag.or(existing.filter(|e| !e.is_empty()));
    let text = match asked {
        None => DEFAULT_K8S_VERSION,
        Some(a) if a.eq_ignore_ascii_case("stable") => DEFAULT_K8S_VERSION,
        Some(a) if a.eq_ignore_ascii_case("latest") || a.eq_ignore_ascii_case("newest") => {
            DEFAULT_K8S_VERSION
        }
        Some(a) => a,
    };
    let bare = text.to_ascii_lowercase();
    let bare = bare.trim_start_matches('v');
    let two_digits = bare.split('.').count() == 2
        && bare
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let full = if two_digits {
        let prefix = format!("v{bare}.");
        match LATEST_PATCHES.iter().find(|v| v.starts_with(&prefix)) {
            Some(v) => {
                println!("💡  Using Kubernetes {} since patch version was unspecified", &v[1..]);
                v.trim_start_matches('v').to_owned()
            }
            None => {
                return Err(Failure::exit(
                    EX_PROGRAM_USAGE,
                    "MK_PATCH_NOT_FOUND",
                    format!("Unable to detect the latest patch release for specified major.minor version v{bare}"),
                ))
            }
        }
    } else {
        bare.to_owned()
    };
    let Some((v, _)) = parse_version(&full) else {
        return Err(Failure::exit(
            EX_PROGRAM_USAGE,
            "MK_USAGE",
            format!("Unable to parse {text:?}: No Major.Minor.Patch elements found"),
        ));
    };
    let shown = format!("{}.{}.{}", v.0, v.1, v.2);
    if v == (0, 0, 0) {
        return Ok(NO_KUBERNETES_VERSION.into());
    }
    if v > NEWEST_K8S_VERSION && !LATEST_PATCHES.contains(&format!("v{full}").as_str()) {
        // minikube then searches GitHub's releases; the stand-in is offline.
        unless_forced(
            force,
            Failure::exit(
                EX_INTERNET_ERROR,
                "K8S_FAIL_CONNECT",
                format!("error fetching Kubernetes version list from GitHub: the stand-in cannot look v{shown} up"),
            ),
        )?;
    }
    if v < OLDEST_K8S_VERSION {
        unless_forced(
            force,
            Failure::exit(
                EX_CONTROL_PLANE_UNSUPPORTED,
                "K8S_OLD_UNSUPPORTED",
                format!("Kubernetes v{shown} is not supported by this release of minikube"),
            ),
        )?;
    }
    if let Some((old, _)) = existing
        .map(|e| e.to_ascii_lowercase())
        .and_then(|e| parse_version(e.trim_start_matches('v')))
    {
        if v < old {
            return Err(Failure::exit(
                EX_CONTROL_PLANE_UNSUPPORTED,
                "K8S_DOWNGRADE_UNSUPPORTED",
                format!(
                    "Unable to safely downgrade existing Kubernetes v{}.{}.{} cluster to v{shown}",
                    old.0, old.1, old.2
                ),
            ));
        }
    }
    Ok(format!("v{full}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Host {
        Host {
            uid: 1000,
            groups: vec!["libvirt".into()],
            memory_mib: 24000,
            cpus: 2,
        }
    }

    #[test]
    fn sizes_follow_minikube_s_minimums_and_force() {
        assert_eq!(memory(1799, &host(), false).unwrap_err().code, 23);
        assert_eq!(memory(30000, &host(), false).unwrap_err().code, 10);
        memory(1800, &host(), false).unwrap();
        memory(256, &host(), true).unwrap();
        assert_eq!(cpus(1, &host(), false).unwrap_err().code, 29);
        assert_eq!(cpus(4, &host(), false).unwrap_err().code, 29);
        cpus(2, &host(), false).unwrap();
        cpus(1, &host(), true).unwrap();
    }

    #[test]
    fn max_and_no_limit_read_as_minikube_reads_them() {
        assert_eq!(resolve_cpus(&Amount::Max, &host()).unwrap(), 2);
        assert_eq!(resolve_memory(&Amount::Max, &host()).unwrap(), 22976);
        assert_eq!(
            resolve_cpus(&Amount::NoLimit, &host()).unwrap_err().code,
            14
        );
        assert_eq!(
            resolve_memory(&Amount::NoLimit, &host()).unwrap_err().code,
            14
        );
        assert_eq!(
            resolve_memory(&Amount::Unparsable("lots".into()), &host())
                .unwrap_err()
                .code,
            14
        );
        assert_eq!(
            cpus(
                resolve_cpus(&Amount::Value(0), &host()).unwrap(),
                &host(),
                false
            )
            .unwrap_err()
            .code,
            29
        );
    }

    #[test]
    fn root_needs_force() {
        let root = Host { uid: 0, ..host() };
        assert_eq!(
            user(&root, false, false, "minikube delete")
                .unwrap_err()
                .code,
            57
        );
        user(&root, true, false, "minikube delete").unwrap();
        user(&host(), false, false, "minikube delete").unwrap();
    }

    #[test]
    fn default_memory_is_minikube_s_suggestion() {
        assert_eq!(suggested_memory(24105, 1), 6000);
        assert_eq!(suggested_memory(8192, 1), 3072);
        assert_eq!(suggested_memory(15900, 1), 3900);
        assert_eq!(suggested_memory(64000, 1), 6144);
        assert_eq!(suggested_memory(24105, 2), 3072);
        assert_eq!(suggested_memory(2048, 1), 2048);
    }

    #[test]
    fn ha_means_three_nodes() {
        assert_eq!(node_count(None, true).unwrap(), 3);
        assert_eq!(node_count(Some(2), true).unwrap_err().code, 14);
        assert_eq!(node_count(Some(2), false).unwrap(), 2);
        assert_eq!(node_count(None, false).unwrap(), 1);
    }

    #[test]
    fn kubernetes_versions_are_resolved_and_checked_as_minikube_does() {
        let v = |flag: Option<&str>, old: Option<&str>, force| {
            kubernetes_version(flag, old, force, false).map_err(|f| f.code)
        };
        assert_eq!(v(None, None, false).unwrap(), "v1.35.1");
        assert_eq!(v(Some("stable"), None, false).unwrap(), "v1.35.1");
        assert_eq!(v(None, Some("v1.30.2"), false).unwrap(), "v1.30.2");
        assert_eq!(v(Some("1.34"), None, false).unwrap(), "v1.34.4");
        assert_eq!(v(Some("V1.33.1"), None, false).unwrap(), "v1.33.1");
        assert_eq!(v(Some("banana"), None, true), Err(EX_PROGRAM_USAGE));
        assert_eq!(v(Some("1.99"), None, true), Err(EX_PROGRAM_USAGE));
        // Too old: only forced.
        assert_eq!(v(Some("v1.20.2"), None, false), Err(106));
        assert_eq!(v(Some("v1.20.2"), None, true).unwrap(), "v1.20.2");
        // Newer than the newest and not in the list: minikube asks GitHub.
        assert_eq!(v(Some("v1.40.0"), None, false), Err(40));
        assert_eq!(
            v(Some("v1.36.0-alpha.1"), None, false).unwrap(),
            "v1.36.0-alpha.1"
        );
        // Never a downgrade, forced or not.
        assert_eq!(v(Some("v1.30.0"), Some("v1.35.1"), true), Err(106));
        // No Kubernetes: kept by the next start, left by asking a version.
        assert_eq!(v(None, Some("v0.0.0"), false).unwrap(), "v0.0.0");
        assert_eq!(
            v(Some("v1.35.1"), Some("v0.0.0"), false).unwrap(),
            "v1.35.1"
        );
    }

    #[test]
    fn no_kubernetes_takes_no_version_and_replaces_the_profile_s() {
        let none = |flag: Option<&str>, old: Option<&str>| {
            kubernetes_version(flag, old, false, true).map_err(|f| f.code)
        };
        assert_eq!(none(None, None).unwrap(), "v0.0.0");
        assert_eq!(none(None, Some("v1.35.1")).unwrap(), "v0.0.0");
        assert_eq!(none(Some(""), None).unwrap(), "v0.0.0");
        assert_eq!(none(Some("v1.35.1"), None), Err(EX_PROGRAM_USAGE));
    }
}
