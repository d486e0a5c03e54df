//! The minikube backend: mkh drives the real `minikube --driver=kvm2` binary on networks it
//! created itself. Per environment: a MINIKUBE_HOME of its own whose `cache/` is shared from one
//! cache directory (the ISO and preload are fetched once per machine, not per test), a KUBECONFIG
//! of its own, a unique profile, and one TMPDIR for every minikube process (minikube keeps its
//! subnet locks there). minikube runs in its own process group with a deadline and logs to a file
//! in the environment's home.

pub(crate) mod cache;
pub mod contract;
pub mod home;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::net::NetworkPair;
use crate::teardown::TeardownCommand;
pub use contract::check_extra_args;
use contract::Version;
pub use home::MinikubeFiles;

/// What a test may choose about its minikube cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MinikubeOptions {
    /// The binary; default `MKH_MINIKUBE`, else `minikube` on PATH.
    pub binary: Option<PathBuf>,
    /// Passed to `minikube start` after mkh's own flags. Flags that mkh sets or offers itself
    /// are refused: the profile, driver and networks (`-p`, `-d`, `--driver`, `--vm-driver`,
    /// `--network`, `--kvm-network`, `--kvm-qemu-uri`), `--delete-on-failure` (it replaces
    /// mkh's private network), the nodes (`-n`, `--nodes`, `--ha`) and the sizes (`-m`,
    /// `--memory`, `--cpus`). `--force` is the caller's to give (minikube refuses root without
    /// it).
    pub extra_args: Vec<String>,
    /// `--memory`, in MiB; default: minikube's (3-6 GiB by the host's memory). Under 1800 is
    /// refused without `--force`, as minikube does.
    pub memory_mib: Option<u32>,
    /// `--cpus`; default: minikube's (2). Under 2 is refused without `--force`.
    pub cpus: Option<u32>,
    /// `--nodes`: the cluster's nodes, each a domain (`<profile>`, `<profile>-m02`, ...) that
    /// mkh claims, with its own IPs and SSH; default 1.
    pub nodes: Option<u32>,
    /// The shared minikube cache (ISO, preload); default `<MKH_CACHE_DIR>/minikube`.
    pub cache_dir: Option<PathBuf>,
}

impl MinikubeOptions {
    /// Refuses `minikube start` arguments that would break isolation or that mkh sets itself
    /// (`-p`, `--driver`, `--network`, `--memory`, ...), and a `--force` minikube could not read:
    /// the check [`crate::EnvBuilder::up`] makes of [`MinikubeOptions::extra_args`].
    pub fn check_extra_args(args: &[String]) -> Result<()> {
        check_extra_args(args)
    }
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
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
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
    /// The libvirt mkh made the networks on: minikube's `--kvm-qemu-uri` and, for its health
    /// check, `LIBVIRT_DEFAULT_URI`.
    pub libvirt_uri: String,
}

/// The variables mkh gives minikube; every other `MINIKUBE_*` variable of the caller is
/// removed, since minikube reads each as the flag of that name (viper's `AutomaticEnv` in
/// `cmd/minikube/cmd/root.go`: `MINIKUBE_DRIVER=docker` would change the driver).
const MINIKUBE_VARS_SET: [&str; 2] = ["MINIKUBE_HOME", "MINIKUBE_IN_STYLE"];

/// The caller's `MINIKUBE_*` variables that mkh does not set.
fn inherited_minikube_vars() -> Vec<OsString> {
    minikube_vars_to_remove(std::env::vars_os().map(|(k, _)| k))
}

fn minikube_vars_to_remove(names: impl Iterator<Item = OsString>) -> Vec<OsString> {
    names
        .filter(|k| {
            k.to_str()
                .is_some_and(|k| k.starts_with("MINIKUBE_") && !MINIKUBE_VARS_SET.contains(&k))
        })
        .collect()
}

impl MinikubeCluster {
    /// The cluster of environment home `home`, profile `profile`, on libvirt `libvirt_uri`.
    pub fn at(home: &Path, profile: &str, binary: PathBuf, libvirt_uri: &str) -> MinikubeCluster {
        MinikubeCluster {
            profile: profile.to_owned(),
            binary,
            minikube_home: home.join("minikube-home"),
            kubeconfig: home.join("kubeconfig"),
            tmpdir: home.join("tmp"),
            log: home.join("minikube.log"),
            libvirt_uri: libvirt_uri.to_owned(),
        }
    }

    /// The domain of node `index` (0 is the primary control plane): `<profile>`, then
    /// `<profile>-m02`, ... (`config.MachineName`, `pkg/minikube/config/profile.go`).
    pub fn node_machine(&self, index: u32) -> String {
        if index == 0 {
            self.profile.clone()
        } else {
            format!("{}-m{:02}", self.profile, index + 1)
        }
    }

    /// `minikube version --short`, read before anything is created. Every minikube command
    /// creates its MINIKUBE_HOME's directories first (`PersistentPreRun`,
    /// `cmd/minikube/cmd/root.go`), so this one runs in a throw-away home and TMPDIR.
    pub fn version(&self) -> Result<Version> {
        let scratch = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
        let out = self
            .command(["version", "--short"])
            .env("MINIKUBE_HOME", scratch.path())
            .env("TMPDIR", scratch.path())
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| Error::MinikubeMissing {
                value: self.binary.display().to_string(),
                problem: format!("`minikube version --short` cannot run: {e}"),
            })?;
        let text = String::from_utf8_lossy(&out.stdout);
        Version::parse(&text)
            .filter(|_| out.status.success())
            .ok_or_else(|| Error::MinikubeMissing {
                value: self.binary.display().to_string(),
                problem: format!(
                    "`minikube version --short` printed no version ({}; {:?})",
                    out.status,
                    text.trim()
                ),
            })
    }

    pub fn files(&self) -> MinikubeFiles {
        MinikubeFiles::new(&self.minikube_home)
    }

    /// The kubeconfig context minikube writes: named after the profile.
    pub fn context(&self) -> &str {
        &self.profile
    }

    /// Creates the home's directories and links `cache/` to the shared cache; before v1.38,
    /// whose kvm2 driver is a binary downloaded into `MINIKUBE_HOME/bin`, `bin/` too (to the
    /// shared cache's `bin/`), so that it is fetched once, not per environment.
    pub fn prepare(&self, shared_cache: &Path, version: Version) -> Result<()> {
        let files = self.files();
        let shared_bin = shared_cache.join("bin");
        let mut links = vec![(files.cache(), shared_cache.to_owned())];
        if version < Version::KVM2_BUILT_IN {
            links.push((files.root.join("bin"), shared_bin.clone()));
        }
        for dir in [&files.root, &self.tmpdir, &shared_cache.to_owned()] {
            crate::config::ensure_dir(dir)?;
        }
        for (link, target) in links {
            crate::config::ensure_dir(&target)?;
            if !link.exists() {
                std::os::unix::fs::symlink(&target, &link).map_err(|e| Error::io(&link, e))?;
            }
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
            // kvm2's health check runs virsh against this (`kvm2.go`, `status()`).
            (
                "LIBVIRT_DEFAULT_URI".into(),
                self.libvirt_uri.clone().into(),
            ),
        ]
    }

    /// `minikube ARGS` with this cluster's environment, not yet run.
    pub fn command<I, S>(&self, args: I) -> std::process::Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = std::process::Command::new(&self.binary);
        for var in inherited_minikube_vars() {
            cmd.env_remove(var);
        }
        cmd.args(args).envs(self.envs());
        cmd
    }

    /// The `minikube start` arguments: mkh's networks and profile, then the user's.
    pub fn start_args(&self, networks: &NetworkPair, options: &MinikubeOptions) -> Vec<String> {
        let libvirt_uri = &self.libvirt_uri;
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
        if let Some(n) = options.nodes.filter(|&n| n != 1) {
            args.push(format!("--nodes={n}"));
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

    /// `minikube delete -p PROFILE` of a cluster of `nodes` nodes, as a step of teardown.
    pub fn delete_command(&self, nodes: u32) -> TeardownCommand {
        let deadline = crate::config::minikube_delete_deadline(nodes);
        TeardownCommand {
            what: format!("minikube delete -p {}", self.profile),
            program: self.binary.clone(),
            args: vec!["delete".into(), "-p".into(), self.profile.clone()],
            envs: self.envs(),
            env_remove: inherited_minikube_vars(),
            log: self.log.clone(),
            deadline,
        }
    }

    /// Where machine `machine`'s key is (the recorded host keys stay in `home`). Its console
    /// is a pty without a log, and its host key is new on every boot: the ISO's root file
    /// system lives in RAM, and minikube itself ignores host keys (libmachine's
    /// `InsecureIgnoreHostKey`; minikube issue #5666).
    pub(crate) fn machine_files(&self, home: &Path, machine: &str) -> crate::machine::MachineFiles {
        crate::machine::MachineFiles {
            key: self.files().ssh_key(machine),
            known_hosts: home.join("known_hosts"),
            console_log: None,
            host_keys: crate::machine::HostKeys::PerBoot,
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
        let c = MinikubeCluster::at(
            Path::new("/h"),
            "mkh-a",
            "/bin/minikube".into(),
            "qemu:///system",
        );
        let opts = MinikubeOptions {
            extra_args: args(&["--wait=all"]),
            memory_mib: Some(2048),
            nodes: Some(2),
            ..Default::default()
        };
        assert_eq!(
            c.start_args(&pair, &opts),
            args(&[
                "start",
                "-p",
                "mkh-a",
                "--driver=kvm2",
                "--kvm-qemu-uri=qemu:///system",
                "--kvm-network=mkh-a-nat",
                "--network=mkh-a-priv",
                "--memory=2048",
                "--nodes=2",
                "--wait=all"
            ])
        );
        assert_eq!(c.context(), "mkh-a");
        assert_eq!(
            (c.node_machine(0), c.node_machine(1), c.node_machine(9)),
            ("mkh-a".into(), "mkh-a-m02".into(), "mkh-a-m10".into())
        );
        assert_eq!(
            c.files().ssh_key("mkh-a"),
            Path::new("/h/minikube-home/.minikube/machines/mkh-a/id_rsa")
        );
    }

    #[test]
    fn minikube_runs_with_mkh_s_variables_and_none_of_the_caller_s_minikube_ones() {
        let names = [
            "MINIKUBE_DRIVER",
            "MINIKUBE_HOME",
            "MINIKUBE_IN_STYLE",
            "PATH",
            "MINIKUBE",
        ];
        assert_eq!(
            minikube_vars_to_remove(names.iter().map(OsString::from)),
            [OsString::from("MINIKUBE_DRIVER")]
        );
        let c = MinikubeCluster::at(Path::new("/h"), "p", "/bin/minikube".into(), "qemu:///x");
        let cmd = c.command(["ip"]);
        let set = |name: &str| {
            cmd.get_envs()
                .find(|(k, _)| *k == name)
                .and_then(|(_, v)| v.map(|v| v.to_string_lossy().into_owned()))
        };
        assert_eq!(set("MINIKUBE_HOME").as_deref(), Some("/h/minikube-home"));
        assert_eq!(set("LIBVIRT_DEFAULT_URI").as_deref(), Some("qemu:///x"));
    }

    #[test]
    fn before_v1_38_the_driver_directory_is_shared_too() {
        let tmp = tempfile::tempdir().unwrap();
        let shared = tmp.path().join("cache");
        for (version, linked) in [
            (Version::new(1, 37, 0), true),
            (Version::new(1, 38, 1), false),
        ] {
            let home = tmp.path().join(version.to_string());
            let c = MinikubeCluster::at(&home, "p", "/bin/minikube".into(), "qemu:///system");
            c.prepare(&shared, version).unwrap();
            let bin = c.files().root.join("bin");
            assert_eq!(bin.is_symlink(), linked, "{version}");
            assert!(c.files().cache().is_symlink());
            if linked {
                assert_eq!(std::fs::read_link(&bin).unwrap(), shared.join("bin"));
            }
        }
    }

    #[test]
    fn a_missing_binary_is_named() {
        let err = find_binary(Some(Path::new("/nonexistent/minikube")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/minikube"), "{err}");
    }
}
