//! What a real `minikube start --driver=kvm2` refuses, checked by mkh before anything is
//! created, so that a test fails with the rule and its fix instead of a half-made environment.
//! Each rule names the minikube source it comes from (release v1.38.1 unless said otherwise).

use std::path::Path;

use crate::error::{Error, Result};

/// `minUsableMem` (`cmd/minikube/cmd/start_flags.go`): less exits 23 without `--force`.
pub const MIN_MEMORY_MIB: u32 = 1800;
/// `minimumCPUS` (`cmd/minikube/cmd/start_flags.go`): fewer exits 29 without `--force`.
pub const MIN_CPUS: u32 = 2;

/// `minikube start` flags that would take the cluster out of mkh's hands, or that mkh offers
/// as options of its own. Each is refused in every spelling (`--f`, `--f=v`; shorthands also
/// `-xV`, `-x=V`).
const RESERVED: &[(&str, Option<char>, &str)] = &[
    ("profile", Some('p'), "mkh names the profile after the environment"),
    ("driver", Some('d'), "mkh runs minikube with --driver=kvm2"),
    ("vm-driver", None, "mkh runs minikube with --driver=kvm2"),
    ("network", None, "mkh creates the private network and passes it"),
    ("kvm-network", None, "mkh creates the NAT network and passes it"),
    ("kvm-qemu-uri", None, "mkh passes the libvirt URI it uses (MKH_LIBVIRT_URI)"),
    (
        "delete-on-failure",
        None,
        "it deletes mkh's private network and recreates it without mkh's metadata",
    ),
    (
        "nodes",
        Some('n'),
        "nodes are mkh's own setting (`mkh up --nodes`, MKH_NODES, `nodes` in a scenario), so that mkh claims every node's domain",
    ),
    (
        "ha",
        None,
        "it adds node domains mkh would not claim; ask mkh for nodes (`mkh up --nodes`, MKH_NODES)",
    ),
    ("memory", Some('m'), "memory is mkh's own setting (`mkh up --memory`, MKH_MEMORY_MIB, `memory_mib` in a scenario)"),
    ("cpus", None, "CPUs are mkh's own setting (`mkh up --cpus`, MKH_CPUS, `cpus` in a scenario)"),
];

/// Refuses extra arguments that would break isolation or that mkh sets itself, and a
/// `--force` minikube could not read.
pub fn check_extra_args(args: &[String]) -> Result<()> {
    for arg in args {
        if let Some(why) = reserved_flag(arg) {
            return Err(Error::InvalidInput {
                what: "minikube start argument",
                value: arg.clone(),
                problem: why.into(),
                fix: "drop it; ask mkh for memory, CPUs and nodes with its own settings, and pass minikube only other flags",
            });
        }
        if let Some(value) = arg.strip_prefix("--force=") {
            if parse_bool(value).is_none() {
                return Err(Error::InvalidInput {
                    what: "minikube start argument",
                    value: arg.clone(),
                    problem: "minikube reads --force as a boolean and exits 14 on anything else"
                        .into(),
                    fix: "write --force, --force=true or --force=false",
                });
            }
        }
    }
    Ok(())
}

/// A boolean as pflag reads one (`strconv.ParseBool`).
fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

fn reserved_flag(arg: &str) -> Option<&'static str> {
    if let Some(body) = arg.strip_prefix("--") {
        let name = body.split('=').next().unwrap_or(body);
        return RESERVED.iter().find(|(l, _, _)| *l == name).map(|r| r.2);
    }
    let short = arg.strip_prefix('-')?.chars().next()?;
    RESERVED
        .iter()
        .find(|(_, s, _)| *s == Some(short))
        .map(|r| r.2)
}

/// Whether the extra arguments carry `--force` (a plain bool flag of `start`; the last one
/// counts).
pub fn forced(args: &[String]) -> bool {
    bool_flag(args, "force")
}

/// A boolean flag of `start` among the extra arguments (`--NAME`, `--NAME=BOOL`; the last one
/// counts).
fn bool_flag(args: &[String], name: &str) -> bool {
    let with_value = format!("--{name}=");
    args.iter().fold(false, |on, a| {
        if a.strip_prefix("--") == Some(name) {
            true
        } else {
            a.strip_prefix(&with_value)
                .and_then(parse_bool)
                .unwrap_or(on)
        }
    })
}

/// The last value of a string flag of `start` among the extra arguments (`--NAME=V`,
/// `--NAME V`).
fn value_flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let with_value = format!("--{name}=");
    let mut value = None;
    let mut words = args.iter();
    while let Some(a) = words.next() {
        if a.strip_prefix("--") == Some(name) {
            value = words.next().map(String::as_str);
        } else if let Some(v) = a.strip_prefix(&with_value) {
            value = Some(v);
        }
    }
    value
}

/// A minikube version, as `minikube version --short` prints it (`v1.38.1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    /// kvm2 is built in from v1.38.0 (commit 7bc97d7ce1, "kvm: Convert to internal driver");
    /// before, it was `docker-machine-driver-kvm2` in `MINIKUBE_HOME/bin`.
    pub const KVM2_BUILT_IN: Version = Version::new(1, 38, 0);
    /// From the release after v1.38.1, kvm2's health check needs a `libvirt*` group
    /// (`pkg/minikube/registry/drvs/kvm2/kvm2.go` on master, PR #23369), even with `--force`.
    pub const GROUP_CHECKED: Version = Version::new(1, 39, 0);

    pub const fn new(major: u32, minor: u32, patch: u32) -> Version {
        Version {
            major,
            minor,
            patch,
        }
    }

    /// Reads the first `vX.Y.Z` (or `X.Y.Z`) of the text; a suffix (`-beta.0`) is ignored.
    pub fn parse(text: &str) -> Option<Version> {
        let word = text.split_whitespace().find(|w| {
            w.trim_start_matches('v')
                .starts_with(|c: char| c.is_ascii_digit())
        })?;
        let core = word.trim_start_matches('v');
        let core = core.split(['-', '+']).next()?;
        let mut parts = core.split('.').map(|p| p.parse::<u32>().ok());
        Some(Version::new(parts.next()??, parts.next()??, parts.next()??))
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Who runs minikube and what the host offers it: the facts the rules below look at.
#[derive(Debug, Clone)]
pub struct Host {
    pub uid: u32,
    /// Names of the process's groups (primary and supplementary).
    pub groups: Vec<String>,
    pub virsh_on_path: bool,
    pub memory_mib: u64,
    pub cpus: u32,
}

impl Host {
    pub fn current() -> Host {
        let path = std::env::var_os("PATH").unwrap_or_default();
        Host {
            uid: nix::unistd::getuid().as_raw(),
            groups: user_groups(),
            virsh_on_path: std::env::split_paths(&path).any(|d| d.join("virsh").is_file()),
            memory_mib: host_memory_mib(),
            cpus: logical_cpus(),
        }
    }
}

/// The user's groups as minikube reads them (`user.GroupIds()`: the user database, not the
/// process's groups, which differ after `newgrp` or before a new login).
fn user_groups() -> Vec<String> {
    let uid = nix::unistd::getuid();
    let Some(user) = nix::unistd::User::from_uid(uid).ok().flatten() else {
        return Vec::new();
    };
    let Ok(name) = std::ffi::CString::new(user.name.as_str()) else {
        return Vec::new();
    };
    nix::unistd::getgrouplist(&name, user.gid)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|g| nix::unistd::Group::from_gid(g).ok().flatten())
        .map(|g| g.name)
        .collect()
}

/// Logical CPUs, as minikube counts them (`cpu.Counts(true)`: every processor of the host,
/// whatever this process's affinity).
fn logical_cpus() -> u32 {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|t| t.lines().filter(|l| l.starts_with("processor")).count() as u32)
        .ok()
        .filter(|&n| n > 0)
        .unwrap_or(1)
}

fn host_memory_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}

/// What this start asks of minikube.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub version: Version,
    pub memory_mib: Option<u32>,
    pub cpus: Option<u32>,
    pub extra_args: &'a [String],
    pub binary: &'a Path,
}

/// Every rule a real minikube would break this start on, checked in minikube's order. The
/// error names the rule, where minikube has it, and the fixes.
pub fn check(request: &Request<'_>, host: &Host) -> Result<()> {
    let force = forced(request.extra_args);
    let refuse = |rule: String, fix: &str| {
        Err(Error::MinikubeWouldRefuse {
            binary: request.binary.to_owned(),
            version: request.version.to_string(),
            rule,
            fix: fix.to_owned(),
        })
    };
    let in_libvirt_group = host.groups.iter().any(|g| g.starts_with("libvirt"));
    if request.version >= Version::GROUP_CHECKED && !in_libvirt_group {
        return refuse(
            "its kvm2 health check needs the user in a group whose name starts with `libvirt` (PROVIDER_KVM2_NOT_FOUND, exit 65, even with --force; pkg/minikube/registry/drvs/kvm2/kvm2.go)".into(),
            "run as a user in group libvirt (usermod -aG libvirt USER, then log in again)",
        );
    }
    if !host.virsh_on_path {
        return refuse(
            "its kvm2 health check needs `virsh` on PATH (PROVIDER_KVM2_NOT_FOUND, exit 65, even with --force; pkg/minikube/registry/drvs/kvm2/kvm2.go)".into(),
            "install libvirt-clients (Debian) or libvirt-client, or put virsh on PATH",
        );
    }
    if !force {
        if host.memory_mib > 0 && host.memory_mib < u64::from(MIN_MEMORY_MIB) {
            return refuse(
                format!("this host has {} MB of memory, under its minimum of {MIN_MEMORY_MIB} MB (RSRC_INSUFFICIENT_SYS_MEMORY, exit 23; validateRequestedMemorySize in cmd/minikube/cmd/start.go)", host.memory_mib),
                "use a host with more memory; or pass --force to minikube yourself",
            );
        }
        if let Some(cpus) = request.cpus {
            if cpus < MIN_CPUS {
                return refuse(
                    format!("{cpus} CPU(s) is under its minimum of {MIN_CPUS} (RSRC_INSUFFICIENT_CORES, exit 29; minimumCPUS in cmd/minikube/cmd/start_flags.go)"),
                    "ask for 2 or more CPUs, or leave them to minikube's default (2); or pass --force to minikube yourself",
                );
            }
        }
        if request.cpus.unwrap_or(MIN_CPUS) > host.cpus {
            return refuse(
                format!(
                    "{} CPUs are more than this host's {} (RSRC_INSUFFICIENT_CORES, exit 29; validateCPUCount in cmd/minikube/cmd/start.go)",
                    request.cpus.unwrap_or(MIN_CPUS),
                    host.cpus
                ),
                "ask for fewer CPUs; or pass --force to minikube yourself",
            );
        }
        if let Some(memory) = request.memory_mib {
            if memory < MIN_MEMORY_MIB {
                return refuse(
                    format!("{memory} MB of memory is under its usable minimum of {MIN_MEMORY_MIB} MB (RSRC_INSUFFICIENT_REQ_MEMORY, exit 23; minUsableMem in cmd/minikube/cmd/start_flags.go)"),
                    "ask for 1800 MiB or more, or leave memory to minikube's default; or pass --force to minikube yourself",
                );
            }
            if host.memory_mib > 0 && u64::from(memory) > host.memory_mib {
                return refuse(
                    format!("{memory} MB of memory is more than this host's {} MB (RSRC_OVER_ALLOC_MEM, exit 10; validateRequestedMemorySize in cmd/minikube/cmd/start.go)", host.memory_mib),
                    "ask for less memory; or pass --force to minikube yourself",
                );
            }
        }
        if host.uid == 0 {
            return refuse(
                "the kvm2 driver should not be used with root privileges (DRV_AS_ROOT, exit 57; validateUser in cmd/minikube/cmd/start.go)".into(),
                "run as a user in group libvirt; or pass --force to minikube yourself (MKH_MINIKUBE_ARGS=--force, or `mkh up --backend minikube -- --force`)",
            );
        }
    }
    if bool_flag(request.extra_args, "no-kubernetes")
        && value_flag(request.extra_args, "kubernetes-version").is_some_and(|v| !v.is_empty())
    {
        return refuse(
            "--kubernetes-version cannot go with --no-kubernetes (MK_USAGE, exit 14, even with --force; getKubernetesVersion in cmd/minikube/cmd/start.go)".into(),
            "drop one of them: --no-kubernetes starts the VMs and their container runtime only",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn user() -> Host {
        Host {
            uid: 1000,
            groups: vec!["users".into(), "libvirt".into()],
            virsh_on_path: true,
            memory_mib: 8000,
            cpus: 4,
        }
    }

    fn request(extra: &[String]) -> Request<'_> {
        Request {
            version: Version::new(1, 38, 1),
            memory_mib: None,
            cpus: None,
            extra_args: extra,
            binary: Path::new("/usr/bin/minikube"),
        }
    }

    #[test]
    fn reserved_flags_are_refused_in_every_spelling() {
        for bad in [
            "-p",
            "-pother",
            "--profile=x",
            "-d",
            "-ddocker",
            "-d=docker",
            "--driver=docker",
            "--vm-driver=kvm2",
            "--network",
            "--kvm-network=default",
            "--kvm-qemu-uri=qemu:///session",
            "--delete-on-failure",
            "--delete-on-failure=true",
            "--ha",
            "--nodes=3",
            "-n3",
            "-n",
            "--memory=4g",
            "-m4g",
            "--cpus=4",
        ] {
            let err = check_extra_args(&args(&["--wait=all", bad]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(bad) && err.contains("drop it"), "{err}");
        }
        check_extra_args(&args(&[
            "--kubernetes-version=v1.30.0",
            "--container-runtime",
            "containerd",
            "-c",
            "docker",
            "--force",
        ]))
        .unwrap();
    }

    #[test]
    fn no_kubernetes_with_a_version_is_refused_even_forced() {
        let refused = |extra: &[&str]| check(&request(&args(extra)), &user()).is_err();
        assert!(refused(&[
            "--force",
            "--no-kubernetes",
            "--kubernetes-version=v1.35.1"
        ]));
        assert!(refused(&[
            "--no-kubernetes=true",
            "--kubernetes-version",
            "1.30"
        ]));
        assert!(!refused(&["--no-kubernetes"]));
        assert!(!refused(&[
            "--no-kubernetes=false",
            "--kubernetes-version=v1.35.1"
        ]));
        assert!(!refused(&["--no-kubernetes", "--kubernetes-version="]));
    }

    #[test]
    fn force_is_read_as_pflag_reads_a_bool() {
        assert!(forced(&args(&["--force"])));
        assert!(forced(&args(&["--force=false", "--force"])));
        assert!(forced(&args(&["--force=TRUE"])));
        assert!(!forced(&args(&["--force", "--force=F"])));
        assert!(!forced(&args(&["--forced", "force"])));
        let err = check_extra_args(&args(&["--force=yes"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--force=yes") && err.contains("exits 14"),
            "{err}"
        );
    }

    #[test]
    fn a_host_under_the_memory_minimum_is_refused_whatever_is_asked() {
        let small = Host {
            memory_mib: 1024,
            ..user()
        };
        let err = check(&request(&[]), &small).unwrap_err().to_string();
        assert!(err.contains("RSRC_INSUFFICIENT_SYS_MEMORY"), "{err}");
        check(&request(&args(&["--force"])), &small).unwrap();
    }

    #[test]
    fn versions() {
        assert_eq!(Version::parse("v1.38.1"), Some(Version::new(1, 38, 1)));
        assert_eq!(
            Version::parse("minikube version: v1.39.0-beta.0\ncommit: x"),
            Some(Version::new(1, 39, 0))
        );
        assert_eq!(Version::parse("1.37.0"), Some(Version::new(1, 37, 0)));
        assert_eq!(Version::parse("nonsense"), None);
        assert!(Version::new(1, 37, 9) < Version::KVM2_BUILT_IN);
        assert_eq!(Version::new(1, 38, 1).to_string(), "v1.38.1");
    }

    #[test]
    fn root_is_refused_without_force_with_the_fixes() {
        let root = Host {
            uid: 0,
            groups: vec!["root".into()],
            ..user()
        };
        let err = check(&request(&[]), &root).unwrap_err().to_string();
        assert!(
            err.contains("DRV_AS_ROOT") && err.contains("exit 57"),
            "{err}"
        );
        assert!(
            err.contains("group libvirt") && err.contains("--force"),
            "{err}"
        );
        check(&request(&args(&["--force"])), &root).unwrap();
        check(&request(&[]), &user()).unwrap();
    }

    #[test]
    fn the_group_rule_applies_from_the_release_that_has_it() {
        let outsider = Host {
            groups: vec!["users".into()],
            ..user()
        };
        check(&request(&[]), &outsider).unwrap();
        let force = args(&["--force"]);
        let newer = Request {
            version: Version::GROUP_CHECKED,
            ..request(&force)
        };
        let err = check(&newer, &outsider).unwrap_err().to_string();
        assert!(err.contains("libvirt") && err.contains("exit 65"), "{err}");
        check(&newer, &user()).unwrap();
    }

    #[test]
    fn virsh_must_be_on_path_even_with_force() {
        let host = Host {
            virsh_on_path: false,
            ..user()
        };
        let force = args(&["--force"]);
        let err = check(&request(&force), &host).unwrap_err().to_string();
        assert!(
            err.contains("virsh") && err.contains("libvirt-clients"),
            "{err}"
        );
    }

    #[test]
    fn sizes_under_the_minimums_are_refused_unless_forced() {
        let small = Request {
            memory_mib: Some(1799),
            ..request(&[])
        };
        let err = check(&small, &user()).unwrap_err().to_string();
        assert!(err.contains("1799") && err.contains("exit 23"), "{err}");
        let one = Request {
            cpus: Some(1),
            ..request(&[])
        };
        let err = check(&one, &user()).unwrap_err().to_string();
        assert!(err.contains("exit 29"), "{err}");
        let huge = Request {
            memory_mib: Some(9000),
            ..request(&[])
        };
        assert!(check(&huge, &user())
            .unwrap_err()
            .to_string()
            .contains("exit 10"));
        let many = Request {
            cpus: Some(8),
            ..request(&[])
        };
        assert!(check(&many, &user()).is_err());
        check(
            &Request {
                memory_mib: Some(1800),
                cpus: Some(2),
                ..request(&[])
            },
            &user(),
        )
        .unwrap();
        let force = args(&["--force"]);
        check(
            &Request {
                memory_mib: Some(256),
                cpus: Some(1),
                ..request(&force)
            },
            &user(),
        )
        .unwrap();
        // minikube's default of 2 CPUs needs 2 on the host.
        let single = Host { cpus: 1, ..user() };
        assert!(check(&request(&[]), &single).is_err());
    }
}
