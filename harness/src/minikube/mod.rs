//! The minikube backend: mkh drives the real `minikube --driver=kvm2` binary on networks it
//! created itself. Per environment: a MINIKUBE_HOME of its own whose `cache/` is shared from one
//! cache directory (the ISO and preload are fetched once per machine, not per test), a KUBECONFIG
//! of its own, a unique profile, and one TMPDIR for every minikube process (minikube keeps its
//! subnet locks there). minikube runs in its own process group with a deadline and logs to a file
//! in the environment's home.

pub mod home;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::net::NetworkPair;
use crate::teardown::TeardownCommand;
pub use home::{MachineConfig, MinikubeFiles, ProfileConfig};

/// Flags that would take the cluster out of mkh's hands: its profile, driver and networks are
/// mkh's to choose.
pub const RESERVED_FLAGS: [&str; 7] = [
    "-p",
    "--profile",
    "--driver",
    "--vm-driver",
    "--network",
    "--kvm-network",
    "--kvm-qemu-uri",
];

/// How long `minikube delete` may take in a teardown: it must fit nextest's grace period (30 s)
/// with room for mkh's own removals after it.
pub(crate) const DELETE_DEADLINE: Duration = Duration::from_secs(20);

/// What a test may choose about its minikube cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MinikubeOptions {
    /// The binary; default `MKH_MINIKUBE`, else `minikube` on PATH.
    pub binary: Option<PathBuf>,
    /// Passed to `minikube start` after mkh's own flags. `-p`, `--profile`, `--driver`,
    /// `--vm-driver`, `--network`, `--kvm-network` and `--kvm-qemu-uri` are refused: mkh sets
    /// them.
    pub extra_args: Vec<String>,
    /// `--memory`, in MiB; default: minikube's.
    pub memory_mib: Option<u32>,
    /// `--cpus`; default: minikube's.
    pub cpus: Option<u32>,
    /// The shared minikube cache (ISO, preload); default `<MKH_CACHE_DIR>/minikube`.
    pub cache_dir: Option<PathBuf>,
}

/// Refuses extra arguments that would break isolation; the others pass through.
pub fn check_extra_args(args: &[String]) -> Result<()> {
    for arg in args {
        let flag = arg.split('=').next().unwrap_or(arg);
        // `-pNAME` is the short profile flag with its value attached.
        let short_profile = arg.starts_with("-p") && !arg.starts_with("--");
        if RESERVED_FLAGS.contains(&flag) || short_profile {
            return Err(Error::InvalidInput {
                what: "minikube start argument",
                value: arg.clone(),
                problem: "mkh sets the profile, driver and networks itself, to keep tests apart"
                    .into(),
                fix: "drop it; use MinikubeOptions (memory, CPUs) or other minikube flags",
            });
        }
    }
    Ok(())
}

/// Finds the minikube binary: the explicit path (the options', else `MKH_MINIKUBE` from the
/// settings), else PATH.
pub fn find_binary(explicit: Option<&Path>) -> Result<PathBuf> {
    let missing = |value: String, problem: String| Error::MinikubeMissing { value, problem };
    if let Some(path) = explicit.map(Path::to_owned) {
        return if is_executable(&path) {
            Ok(std::fs::canonicalize(&path).unwrap_or(path))
        } else {
            Err(missing(
                path.display().to_string(),
                "it is not an executable file".into(),
            ))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("minikube"))
        .find(|p| is_executable(p))
        .ok_or_else(|| {
            missing(
                "minikube".into(),
                "no `minikube` on PATH and MKH_MINIKUBE is not set".into(),
            )
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// One environment's minikube cluster: where its files are and how to run minikube for it.
#[derive(Debug, Clone, Serialize)]
pub struct MinikubeCluster {
    pub profile: String,
    pub binary: PathBuf,
    /// The value given to minikube as MINIKUBE_HOME.
    pub minikube_home: PathBuf,
    pub kubeconfig: PathBuf,
    /// minikube's TMPDIR: its subnet locks live there.
    pub tmpdir: PathBuf,
    /// Everything minikube printed, in order.
    pub log: PathBuf,
}

impl MinikubeCluster {
    /// The cluster of environment home `home`, profile `profile`.
    pub fn at(home: &Path, profile: &str, binary: PathBuf) -> MinikubeCluster {
        MinikubeCluster {
            profile: profile.to_owned(),
            binary,
            minikube_home: home.join("minikube-home"),
            kubeconfig: home.join("kubeconfig"),
            tmpdir: home.join("tmp"),
            log: home.join("minikube.log"),
        }
    }

    pub fn files(&self) -> MinikubeFiles {
        MinikubeFiles::new(&self.minikube_home)
    }

    /// The kubeconfig context minikube writes: named after the profile.
    pub fn context(&self) -> &str {
        &self.profile
    }

    /// Creates the home's directories and links `cache/` to the shared cache.
    pub fn prepare(&self, shared_cache: &Path) -> Result<()> {
        let files = self.files();
        for dir in [&files.root, &self.tmpdir, &shared_cache.to_owned()] {
            crate::config::ensure_dir(dir)?;
        }
        let link = files.cache();
        if !link.exists() {
            std::os::unix::fs::symlink(shared_cache, &link).map_err(|e| Error::io(&link, e))?;
        }
        Ok(())
    }

    fn envs(&self) -> Vec<(String, OsString)> {
        vec![
            ("MINIKUBE_HOME".into(), self.minikube_home.clone().into()),
            ("KUBECONFIG".into(), self.kubeconfig.clone().into()),
            ("TMPDIR".into(), self.tmpdir.clone().into()),
            // Plain output in logs: no emoji, no colour.
            ("MINIKUBE_IN_STYLE".into(), "false".into()),
        ]
    }

    /// `minikube ARGS` with this cluster's environment, not yet run.
    pub fn command<I, S>(&self, args: I) -> std::process::Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = std::process::Command::new(&self.binary);
        cmd.args(args).envs(self.envs());
        cmd
    }

    /// The `minikube start` arguments: mkh's networks and profile, then the user's.
    pub fn start_args(
        &self,
        libvirt_uri: &str,
        networks: &NetworkPair,
        options: &MinikubeOptions,
    ) -> Vec<String> {
        let mut args = vec![
            "start".to_owned(),
            "-p".to_owned(),
            self.profile.clone(),
            "--driver=kvm2".to_owned(),
            // The libvirt mkh made the networks on, not minikube's default.
            format!("--kvm-qemu-uri={libvirt_uri}"),
            format!("--kvm-network={}", networks.nat.name),
            format!("--network={}", networks.private.name),
        ];
        if let Some(m) = options.memory_mib {
            args.push(format!("--memory={m}"));
        }
        if let Some(c) = options.cpus {
            args.push(format!("--cpus={c}"));
        }
        args.extend(options.extra_args.iter().cloned());
        args
    }

    /// Runs a minikube subcommand to completion (logged, own process group, deadline).
    pub fn run(
        &self,
        args: &[String],
        deadline: Duration,
        on_spawn: &mut dyn FnMut(i32),
    ) -> Result<()> {
        let what = format!(
            "minikube {}",
            args.first().map(String::as_str).unwrap_or("")
        );
        crate::process::run_logged(&what, self.command(args), &self.log, deadline, on_spawn)
    }

    /// `minikube delete -p PROFILE`, as a step of teardown.
    pub fn delete_command(&self) -> TeardownCommand {
        let deadline = DELETE_DEADLINE;
        TeardownCommand {
            what: format!("minikube delete -p {}", self.profile),
            program: self.binary.clone(),
            args: vec!["delete".into(), "-p".into(), self.profile.clone()],
            envs: self.envs(),
            log: self.log.clone(),
            deadline,
        }
    }

    pub fn machine_config(&self) -> Result<MachineConfig> {
        MachineConfig::read(&self.files().machine_config(&self.profile))
    }

    pub fn profile_config(&self) -> Result<ProfileConfig> {
        ProfileConfig::read(&self.files().profile_config(&self.profile))
    }

    /// Where the machine's key and console log are (the recorded host keys stay in `home`).
    pub(crate) fn machine_files(&self, home: &Path) -> crate::machine::MachineFiles {
        let machine_dir = self.files().root.join("machines").join(&self.profile);
        crate::machine::MachineFiles {
            key: self.files().ssh_key(&self.profile),
            known_hosts: home.join("known_hosts"),
            console_log: machine_dir.join("console.log"),
        }
    }

    /// `minikube logs` into `out`, in its own process group, cut at `deadline`.
    pub fn write_logs(&self, out: &Path, deadline: Duration) -> Result<()> {
        let cmd = self.command(["logs", "-p", &self.profile]);
        crate::process::run_logged("minikube logs", cmd, out, deadline, &mut |_| {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{NetworkInfo, NetworkKind};

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn isolation_breaking_flags_are_refused_in_every_form() {
        for bad in [
            "-p",
            "-pother",
            "--profile=x",
            "--driver=docker",
            "--network",
            "--kvm-network=default",
            "--vm-driver=kvm2",
            "--kvm-qemu-uri=qemu:///session",
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
        ]))
        .unwrap();
    }

    #[test]
    fn start_passes_mkh_networks_then_user_arguments() {
        let net = |name: &str, kind| NetworkInfo {
            name: name.into(),
            kind,
            subnet: "10.208.1.0/24".parse().unwrap(),
            bridge: name.into(),
            gateway: "10.208.1.1".parse().unwrap(),
        };
        let pair = NetworkPair {
            nat: net("mkh-a-nat", NetworkKind::Nat),
            private: net("mkh-a-priv", NetworkKind::Isolated),
        };
        let c = MinikubeCluster::at(Path::new("/h"), "mkh-a", "/bin/minikube".into());
        let opts = MinikubeOptions {
            extra_args: args(&["--wait=all"]),
            memory_mib: Some(2048),
            ..Default::default()
        };
        assert_eq!(
            c.start_args("qemu:///system", &pair, &opts),
            args(&[
                "start",
                "-p",
                "mkh-a",
                "--driver=kvm2",
                "--kvm-qemu-uri=qemu:///system",
                "--kvm-network=mkh-a-nat",
                "--network=mkh-a-priv",
                "--memory=2048",
                "--wait=all"
            ])
        );
        assert_eq!(c.context(), "mkh-a");
        assert_eq!(
            c.files().ssh_key("mkh-a"),
            Path::new("/h/minikube-home/.minikube/machines/mkh-a/id_rsa")
        );
    }

    #[test]
    fn a_missing_binary_is_named() {
        let err = find_binary(Some(Path::new("/nonexistent/minikube")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/minikube"), "{err}");
    }
}
