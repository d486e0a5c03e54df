//! The real API server: etcd (Debian's etcd-server 3.4, from PATH) on loopback ports chosen
//! free, and kube-apiserver (`$MKH_KUBE_APISERVER`, else mkh's cache) bound to the private network's host-side
//! address on port 8443, so that parallel profiles never collide and nothing listens on
//! 0.0.0.0:8443. Both run on the host, detached in their own session (setsid), logging to
//! `profiles/<p>/{etcd,kube-apiserver}.log`, with pid files `profiles/<p>/{etcd,kube-apiserver}.pid`
//! and `profiles/<p>/processes.json` (pid, start time, command line). Their command lines name
//! files inside MINIKUBE_HOME (data dir, certificates), which is how a reaper can tell whose
//! they are.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::paths::{Env, Profile};
use crate::Failure;

pub const APISERVER_PORT: u16 = 8443;
pub const SERVICE_CIDR: &str = "10.96.0.0/12";
pub const ETCD: &str = "etcd";
pub const APISERVER: &str = "kube-apiserver";
/// The version of the Kubernetes programs the stand-in runs, whatever `--kubernetes-version`
/// says (Debian's kubernetes 1.20.2, built by `harness/scripts/build-kubernetes.sh`).
pub const KUBERNETES_VERSION: &str = "v1.20.2";

/// One started process, as recorded in `processes.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    pub pid: i32,
    /// Field 22 of /proc/<pid>/stat (clock ticks after boot): with the pid, identifies the
    /// process even after pid reuse.
    pub start_ticks: u64,
    /// Wall-clock start, seconds since the epoch.
    pub started_unix: u64,
    pub cmdline: Vec<String>,
    pub log: PathBuf,
}

pub type Records = BTreeMap<String, ProcessRecord>;

/// The kube-apiserver binary: `$MKH_KUBE_APISERVER`, else the one of [`kubernetes_dir`].
pub fn apiserver_binary() -> Result<PathBuf, Failure> {
    let config =
        |problem: String| Failure::exit(crate::EX_PROGRAM_CONFIG, "MK_STANDIN_APISERVER", problem);
    if let Some(path) = std::env::var_os("MKH_KUBE_APISERVER").filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            return Err(config(format!(
                "MKH_KUBE_APISERVER={} is not a file",
                path.display()
            )));
        }
        return Ok(path);
    }
    Ok(kubernetes_dir()?.join("kube-apiserver"))
}

/// The Kubernetes binaries built by `harness/scripts/build-kubernetes.sh` (kube-apiserver,
/// kubelet, ..., pause) in mkh's cache, built now if the cache has none.
pub fn kubernetes_dir() -> Result<PathBuf, Failure> {
    let config =
        |problem: String| Failure::exit(crate::EX_PROGRAM_CONFIG, "MK_STANDIN_KUBERNETES", problem);
    let cache = mkh::Settings::current()
        .map_err(|e| config(e.to_string()))?
        .cache_dir;
    let cached = cache.join("kubernetes").join("current");
    if cached.join("kubelet").is_file() && cached.join("kube-apiserver").is_file() {
        return Ok(cached);
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../harness/scripts/build-kubernetes.sh"
    );
    eprintln!(
        "minikube stand-in: no Kubernetes binaries in {}; building them once with {script} (10-15 minutes on 2 cores)",
        cache.display()
    );
    let out = std::process::Command::new(script)
        .arg(&cache)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| config(format!("cannot run {script}: {e}")))?;
    let built = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    if !out.status.success() || !std::path::Path::new(&built).join("kubelet").is_file() {
        return Err(config(format!(
            "{script} failed; run it by hand to see why"
        )));
    }
    Ok(PathBuf::from(built))
}

/// etcd from PATH (Debian's etcd-server).
pub fn etcd_binary() -> Result<PathBuf, Failure> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(ETCD))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Failure::exit(
                crate::EX_PROGRAM_CONFIG,
                "MK_STANDIN_ETCD",
                "etcd is not on PATH (apt-get install etcd-server)",
            )
        })
}

/// Two distinct free loopback ports (bound to port 0, then released).
fn free_ports() -> Result<(u16, u16), Failure> {
    let bind = || {
        TcpListener::bind(("127.0.0.1", 0))
            .map_err(|e| Failure::error(format!("find a free port on 127.0.0.1: {e}")))
    };
    let (a, b) = (bind()?, bind()?);
    let port = |l: &TcpListener| l.local_addr().map(|a| a.port()).unwrap_or_default();
    Ok((port(&a), port(&b)))
}

fn start_ticks(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(19)?.parse().ok()
}

fn cmdline(pid: i32) -> Option<Vec<String>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect(),
    )
}

fn is_zombie(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
        .unwrap_or(true)
}

/// Whether the recorded process still runs (same pid AND same start time, not a zombie).
pub fn is_alive(rec: &ProcessRecord) -> bool {
    start_ticks(rec.pid) == Some(rec.start_ticks) && !is_zombie(rec.pid)
}

fn spawn_detached(
    profile: &Profile,
    component: &str,
    program: &Path,
    args: &[String],
) -> Result<(Child, ProcessRecord), Failure> {
    let log = profile.log(component);
    let open_log = || {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| Failure::error(format!("open {}: {e}", log.display())))
    };
    let (out, err) = (open_log()?, open_log()?);
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(profile.dir())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: setsid is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| Failure::error(format!("start {component} ({}): {e}", program.display())))?;
    let pid = child.id() as i32;
    let rec = ProcessRecord {
        pid,
        start_ticks: start_ticks(pid).unwrap_or_default(),
        started_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default(),
        cmdline: std::iter::once(program.to_string_lossy().into_owned())
            .chain(args.iter().cloned())
            .collect(),
        log,
    };
    fs::write(profile.pid_file(component), format!("{pid}\n"))
        .map_err(|e| Failure::error(format!("write pid file of {component}: {e}")))?;
    Ok((child, rec))
}

pub fn load_records(profile: &Profile) -> Records {
    crate::config::load(&profile.processes_json())
        .ok()
        .flatten()
        .unwrap_or_default()
}

fn save_records(profile: &Profile, recs: &Records) -> Result<(), Failure> {
    crate::config::save(&profile.processes_json(), recs).map_err(Failure::error)
}

/// The last `n` lines of a log file (or a note why there are none).
pub fn tail(path: &Path, n: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// etcd, started and answering on its client port.
pub struct Etcd {
    child: Child,
    client_url: String,
    records: Records,
}

/// The control plane while `start` waits for it.
pub struct Starting {
    etcd: Child,
    apiserver: Child,
}

/// Starts etcd (reusing the profile's data dir) and waits for its client port. Processes of an
/// earlier start of this profile are stopped first.
pub fn start_etcd(profile: &Profile, deadline: Instant) -> Result<Etcd, Failure> {
    let etcd_bin = etcd_binary()?;
    stop(profile);

    let (client_port, peer_port) = free_ports()?;
    let data = profile.etcd_data();
    let peer = format!("http://127.0.0.1:{peer_port}");
    let client = format!("http://127.0.0.1:{client_port}");
    let etcd_args = vec![
        format!("--name={}", profile.name),
        format!("--data-dir={}", data.display()),
        format!("--listen-client-urls={client}"),
        format!("--advertise-client-urls={client}"),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster={}={peer}", profile.name),
        "--snapshot-count=10000".into(),
        "--logger=zap".into(),
        "--log-outputs=stderr".into(),
    ];
    let (mut child, rec) = spawn_detached(profile, ETCD, &etcd_bin, &etcd_args)?;
    let mut records = Records::new();
    records.insert(ETCD.into(), rec);
    save_records(profile, &records)?;

    // etcd answers on its client port within a second or so.
    let addr = SocketAddr::from(([127, 0, 0, 1], client_port));
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Failure::exit(
                crate::EX_CONTROL_PLANE_ERROR,
                "K8S_ETCD",
                format!(
                    "etcd exited ({status}); its log {}:\n{}",
                    profile.log(ETCD).display(),
                    tail(&profile.log(ETCD), 15)
                ),
            ));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(Etcd {
                child,
                client_url: client,
                records,
            });
        }
        if Instant::now() > deadline {
            return Err(Failure::exit(
                crate::EX_CONTROL_PLANE_TIMEOUT,
                "K8S_ETCD",
                "etcd did not open its client port in time",
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts kube-apiserver on `host_addr:8443` against `etcd`.
pub fn start_apiserver(
    env: &Env,
    profile: &Profile,
    etcd: Etcd,
    host_addr: Ipv4Addr,
) -> Result<Starting, Failure> {
    let apiserver_bin = apiserver_binary()?;
    let Etcd {
        child: etcd_child,
        client_url,
        mut records,
    } = etcd;
    let path = |p: PathBuf| p.to_string_lossy().into_owned();
    let apiserver_args = vec![
        format!("--advertise-address={host_addr}"),
        format!("--bind-address={host_addr}"),
        format!("--secure-port={APISERVER_PORT}"),
        // 1.20 still opens an insecure port on 127.0.0.1:8080 by default: profiles would clash.
        "--insecure-port=0".into(),
        format!("--etcd-servers={client_url}"),
        format!("--client-ca-file={}", path(env.ca_cert())),
        format!("--tls-cert-file={}", path(profile.apiserver_cert())),
        format!("--tls-private-key-file={}", path(profile.apiserver_key())),
        format!("--cert-dir={}", path(profile.dir().join("apiserver-certs"))),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        format!("--service-account-key-file={}", path(profile.sa_pub())),
        format!(
            "--service-account-signing-key-file={}",
            path(profile.sa_key())
        ),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
        "--authorization-mode=Node,RBAC".into(),
        "--allow-privileged=true".into(),
        "--profiling=false".into(),
    ];
    let (apiserver, rec) = spawn_detached(profile, APISERVER, &apiserver_bin, &apiserver_args)?;
    records.insert(APISERVER.into(), rec);
    save_records(profile, &records)?;
    Ok(Starting {
        etcd: etcd_child,
        apiserver,
    })
}

/// `curl` with the profile's admin client certificate, pinning the profile's serving key (all
/// profiles of a home share the CA: only the pin tells this profile's API server from another
/// one on the same address); returns the body on HTTP 2xx.
pub fn curl(env: &Env, profile: &Profile, url: &str) -> Result<String, String> {
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "5", "--pinnedpubkey"])
        .arg(profile.apiserver_pub())
        .arg("--cacert")
        .arg(env.ca_cert())
        .arg("--cert")
        .arg(profile.client_cert())
        .arg("--key")
        .arg(profile.client_key())
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run curl: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

pub fn readyz_url(host_addr: Ipv4Addr) -> String {
    format!("https://{host_addr}:{APISERVER_PORT}/readyz")
}

impl Starting {
    /// Waits until `/readyz` answers `ok` (with the client certificate).
    pub fn wait_ready(
        &mut self,
        env: &Env,
        profile: &Profile,
        host_addr: Ipv4Addr,
        deadline: Instant,
    ) -> Result<(), Failure> {
        let url = readyz_url(host_addr);
        loop {
            for (name, child) in [(APISERVER, &mut self.apiserver), (ETCD, &mut self.etcd)] {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(Failure::exit(
                        crate::EX_CONTROL_PLANE_ERROR,
                        "K8S_APISERVER_MISSING",
                        format!(
                            "{name} exited ({status}); its log {}:\n{}",
                            profile.log(name).display(),
                            tail(&profile.log(name), 15)
                        ),
                    ));
                }
            }
            let last = match curl(env, profile, &url) {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                Ok(body) => body,
                Err(e) => e,
            };
            if Instant::now() > deadline {
                return Err(Failure::exit(
                    crate::EX_CONTROL_PLANE_TIMEOUT,
                    "K8S_APISERVER_TIMEOUT",
                    format!("{url} did not answer ok in time: {last}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// Processes whose command line names this profile's directory (also ones a killed `start`
/// never recorded): `(pid, start ticks)`.
fn processes_naming(dir: &Path) -> Vec<(i32, u64)> {
    let needle = format!("{}/", dir.display());
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != std::process::id() as i32)
        .filter_map(|pid| {
            let cmd = cmdline(pid)?;
            let exe = Path::new(cmd.first()?).file_name()?.to_str()?.to_string();
            let ours = (exe == ETCD || exe == APISERVER) && cmd.iter().any(|a| a.contains(&needle));
            ours.then(|| Some((pid, start_ticks(pid)?))).flatten()
        })
        .collect()
}

fn terminate(pid: i32, ticks: u64, grace: Duration) {
    let same = || start_ticks(pid) == Some(ticks) && !is_zombie(pid);
    if !same() {
        return;
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !same() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if same() {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(5);
        while same() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Stops the profile's kube-apiserver, then etcd: SIGTERM, SIGKILL after a grace period. Only
/// processes that are really this profile's (recorded pid with its start time, or a command line
/// naming the profile's directory) are signalled.
pub fn stop(profile: &Profile) {
    let recs = load_records(profile);
    for name in [APISERVER, ETCD] {
        if let Some(rec) = recs.get(name) {
            terminate(rec.pid, rec.start_ticks, Duration::from_secs(10));
        }
    }
    let dir = profile.dir();
    let mut stray = processes_naming(&dir);
    // kube-apiserver first.
    stray.sort_by_key(|&(pid, _)| {
        let exe = cmdline(pid).and_then(|c| c.first().cloned());
        !matches!(exe, Some(c) if c.ends_with(APISERVER))
    });
    for (pid, ticks) in stray {
        terminate(pid, ticks, Duration::from_secs(10));
    }
    for name in [APISERVER, ETCD] {
        let _ = fs::remove_file(profile.pid_file(name));
    }
    let _ = fs::remove_file(profile.processes_json());
}

/// Whether something accepts connections on `addr:8443`.
pub fn port_in_use(addr: Ipv4Addr) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from((addr, APISERVER_PORT)),
        Duration::from_millis(500),
    )
    .is_ok()
}

/// The profiles of this home whose running kube-apiserver binds `addr`.
pub fn apiservers_on(env: &Env, addr: Ipv4Addr) -> Vec<String> {
    let flag = format!("--bind-address={addr}");
    let Ok(dirs) = fs::read_dir(env.profiles_dir()) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dirs
        .flatten()
        .filter_map(|d| d.file_name().into_string().ok())
        .filter(|name| {
            load_records(&env.profile(name))
                .get(APISERVER)
                .is_some_and(|r| is_alive(r) && r.cmdline.contains(&flag))
        })
        .collect();
    names.sort();
    names
}

/// Whether the profile's recorded process `name` runs.
pub fn running(profile: &Profile, name: &str) -> bool {
    load_records(profile).get(name).is_some_and(is_alive)
}
