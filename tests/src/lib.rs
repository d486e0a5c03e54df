//! Helpers for mkh's own integration tests: the `mkh` binary, child mkh processes, and questions
//! to libvirt and the host that a user would ask to check a test's world.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use serde_json::Value;
use virt::connect::Connect;

/// The `mkh` binary of this workspace, built if it is missing or stale.
pub fn mkh_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| built_bin("mkh-cli", "mkh")).clone()
}

/// The minikube stand-in (`src/bin/minikube`), built if it is missing or stale.
pub fn standin_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| built_bin("mkh-tests", "minikube"))
        .clone()
}

/// `cargo build -p PACKAGE --bin NAME` beside the running executable's target directory.
fn built_bin(package: &str, name: &str) -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", package, "--bin", name])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo runs");
    assert!(
        status.success(),
        "cargo build -p {package} --bin {name} failed"
    );
    // <target>/debug/deps/<test-exe> or <target>/debug/<bin> -> <target>/debug/<name>
    let exe = std::env::current_exe().expect("executable path");
    let dir = exe.parent().expect("target layout");
    let profile_dir = if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("target layout")
    } else {
        dir
    };
    let bin = profile_dir.join(name);
    assert!(
        bin.exists(),
        "{} not found after cargo build",
        bin.display()
    );
    bin
}

/// The workspace's root directory.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lies in the workspace")
        .to_owned()
}

/// A crate of a user's, outside the workspace: `dependencies` is its manifest's
/// `[dependencies]` table (`{root}` stands for the workspace's path), `tests` its files under
/// `tests/`. `cargo test ARGS` runs in it, offline, with the workspace's lock file (the same
/// versions) and target directory (what is built already is reused); returns whether it
/// passed, and its output.
pub fn test_outside_crate(
    dependencies: &str,
    tests: &[(String, String)],
    args: &[&str],
) -> (bool, String) {
    let root = workspace();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let krate = dir.path().join("user-crate");
    std::fs::create_dir_all(krate.join("src")).unwrap();
    std::fs::create_dir_all(krate.join("tests")).unwrap();
    let manifest = format!(
        "[package]\nname = \"user-crate\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n[dependencies]\n{}",
        dependencies.replace("{root}", &root.display().to_string())
    );
    std::fs::write(krate.join("Cargo.toml"), manifest).unwrap();
    std::fs::write(krate.join("src/lib.rs"), "").unwrap();
    std::fs::copy(root.join("Cargo.lock"), krate.join("Cargo.lock")).unwrap();
    for (name, text) in tests {
        std::fs::write(krate.join("tests").join(name), text).unwrap();
    }
    // <target>/debug/deps/<test-exe>
    let target = std::env::current_exe()
        .unwrap()
        .ancestors()
        .nth(3)
        .unwrap()
        .to_owned();
    let mut test = vec!["test", "--offline", "--quiet"];
    test.extend_from_slice(args);
    cargo(&test, &krate, &[("CARGO_TARGET_DIR", target.as_os_str())])
}

/// Runs `cargo ARGS` in `dir` with `envs` set; returns whether it succeeded, and its stdout and
/// stderr.
pub fn cargo(args: &[&str], dir: &Path, envs: &[(&str, &std::ffi::OsStr)]) -> (bool, String) {
    let out = Command::new(env!("CARGO"))
        .args(args)
        .current_dir(dir)
        .envs(envs.iter().copied())
        .output()
        .expect("cargo runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Runs `mkh ARGS`, returning (exit code, stdout, stderr).
pub fn mkh(args: &[&str]) -> (i32, String, String) {
    mkh_with_env(args, &[])
}

/// `mkh ARGS` with extra environment variables (an empty value removes the variable).
pub fn mkh_with_env(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(mkh_bin());
    cmd.args(args);
    for (k, v) in envs {
        if v.is_empty() {
            cmd.env_remove(k);
        } else {
            cmd.env(k, v);
        }
    }
    let out = cmd.output().expect("mkh runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A child mkh process (the `mkh-test-child` binary) that printed its environment.
pub struct ChildEnv {
    pub child: Child,
    pub description: Value,
}

impl ChildEnv {
    /// Starts `mkh-test-child MODE` (path given by the test, from `CARGO_BIN_EXE_*`) and waits
    /// for its JSON line.
    pub fn start(bin: &str, mode: &str) -> ChildEnv {
        ChildEnv::start_with(Command::new(bin).arg(mode))
    }

    pub fn start_with(cmd: &mut Command) -> ChildEnv {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("child starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("child prints");
        let description: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
            let status = child.wait();
            panic!("child printed {line:?} ({e}), exit {status:?}")
        });
        ChildEnv { child, description }
    }

    pub fn network_names(&self) -> Vec<String> {
        ["nat", "private"]
            .iter()
            .map(|k| {
                self.description["networks"][k]["name"]
                    .as_str()
                    .expect("network name")
                    .to_owned()
            })
            .collect()
    }

    pub fn subnets(&self) -> Vec<String> {
        ["nat", "private"]
            .iter()
            .map(|k| {
                self.description["networks"][k]["subnet"]
                    .as_str()
                    .expect("subnet")
                    .to_owned()
            })
            .collect()
    }

    pub fn env_name(&self) -> String {
        self.description["name"].as_str().expect("name").to_owned()
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, sig).expect("signal delivered");
    }
}

impl Drop for ChildEnv {
    fn drop(&mut self) {
        // A failed assertion must not leave a holding child behind: SIGTERM makes it tear down.
        if let Ok(None) = self.child.try_wait() {
            self.signal(nix::sys::signal::Signal::SIGTERM);
            let _ = self.child.wait();
        }
    }
}

/// A connection to the libvirt the tests use, as a user's own code would open it.
pub fn libvirt() -> Connect {
    let uri = mkh::Settings::current().expect("mkh settings").libvirt_uri;
    Connect::open(Some(&uri)).unwrap_or_else(|e| {
        panic!("these tests need a running libvirtd at {uri}: {e}\nrun `harness/scripts/setup-host.sh`, which installs and starts it")
    })
}

/// Names of every network libvirt has, active or not.
pub fn network_names() -> Vec<String> {
    libvirt()
        .list_all_networks(0)
        .expect("list networks")
        .into_iter()
        .filter_map(|n| n.name().ok())
        .collect()
}

pub fn network_exists(name: &str) -> bool {
    network_names().iter().any(|n| n == name)
}

/// Names of the objects mkh's metadata claims for environment `env`.
pub fn objects_of_env(env: &str) -> Vec<String> {
    mkh::admin::audit(&mkh::Settings::current().expect("mkh settings"), None)
        .expect("inventory")
        .others
        .into_iter()
        .filter(|o| o.owner.env == env)
        .map(|o| o.name)
        .collect()
}

/// Whether a host interface of that name exists.
pub fn interface_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

/// IPv4 addresses (CIDR form) on a host interface, from `ip -j addr`.
pub fn interface_addresses(name: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["-j", "-4", "addr", "show", "dev", name])
        .output()
        .expect("ip runs");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v.as_array()
        .into_iter()
        .flatten()
        .flat_map(|i| i["addr_info"].as_array().cloned().unwrap_or_default())
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or(""), a["prefixlen"]))
        .collect()
}

/// Copies `binaries` into a fresh directory every user may enter (a test binary may sit
/// under one another user cannot read): for running them as another user. Returns the
/// directory and the copies' paths, in order.
pub fn binaries_for_another_user(binaries: &[&str]) -> (tempfile::TempDir, Vec<PathBuf>) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let copies = binaries
        .iter()
        .map(|b| {
            let to = dir.path().join(Path::new(b).file_name().unwrap());
            std::fs::copy(b, &to).unwrap();
            to
        })
        .collect();
    (dir, copies)
}

/// Polls `ready` every 20 ms, at most `limit`; returns whether it held.
pub fn wait_until(limit: std::time::Duration, mut ready: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if ready() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
}

/// What environment `name` left: the objects mkh's metadata claims for it, a domain of its
/// name (claimed or not), its home.
pub fn leftovers(name: &str) -> Vec<String> {
    let mut left = objects_of_env(name);
    if libvirt().lookup_domain_by_name(name).is_ok() && !left.iter().any(|o| o == name) {
        left.push(format!("domain {name}"));
    }
    let home = mkh::Settings::current()
        .expect("mkh settings")
        .state_dir
        .join("envs")
        .join(name);
    if home.exists() {
        left.push(home.display().to_string());
    }
    left
}

/// A network that libvirt's test driver will list, owned by mkh's record.
pub struct OwnedNetwork<'a> {
    pub name: &'a str,
    pub env: &'a str,
    /// `process` or `cli`.
    pub kind: &'a str,
    pub pid: u32,
    pub subnet: &'a str,
}

/// A `test://` URI whose driver lists `networks`, each claimed by an owner on this host. The
/// test driver reads the file into each connection, so only the `mkh` processes given this URI
/// see these networks (and what one removes, the next sees again).
pub fn test_driver_with(dir: &std::path::Path, networks: &[OwnedNetwork<'_>]) -> String {
    let host = nix::unistd::gethostname().unwrap();
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let mut xml = String::from("<node>");
    for n in networks {
        let net: mkh::ipnet::Ipv4Net = n.subnet.parse().unwrap();
        let gateway = net.hosts().next().unwrap();
        xml += &format!(
            "<network><name>{name}</name><metadata><mkh:owner xmlns:mkh='urn:x-mkh:owner:1' host='{host}' boot-id='{boot}' pid='{pid}' start-time='1' run='test-driver' created='1' kind='{kind}' env='{env}'/></metadata><bridge name='{name}'/><ip address='{gateway}' prefix='{prefix}'/></network>",
            name = n.name,
            host = host.to_string_lossy(),
            boot = boot.trim(),
            pid = n.pid,
            kind = n.kind,
            env = n.env,
            prefix = net.prefix_len(),
        );
    }
    xml += "</node>";
    let node = dir.join("node.xml");
    std::fs::write(&node, xml).unwrap();
    format!("test://{}", node.display())
}

/// A pid no process can have: one above the kernel's `pid_max`.
pub fn beyond_pid_max() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(4_194_304)
        + 1
}

/// A CLI-owned environment that `mkh down` removes when the guard goes, so that a failed
/// assertion between `mkh up` and `mkh down` leaves nothing (no reaper removes a CLI's).
pub struct CliEnv(pub String);

impl Drop for CliEnv {
    fn drop(&mut self) {
        // Never a panic here (it would abort a test already failing): an unknown name is
        // only an error exit of `mkh down`.
        let _ = Command::new(mkh_bin())
            .args(["down", &self.0])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}
