//! The watchdog: a small companion process for each process that owns environments. It runs
//! in a session of its own (nextest's signals to the test's process group do not reach it)
//! and reads a pipe whose only writer is its owner; the pipe closes when the owner ends, however
//! it ends (SIGKILL included). Then it removes what that owner left, with the reaper's own
//! rules (only a dead owner's objects, only process-owned ones, nothing of another owner), and
//! exits. An owner that tore everything down leaves it nothing to do.
//!
//! The watchdog is the owner's own executable, started again (`/proc/self/exe`) with
//! `MKH_WATCHDOG_OWNER` set: a constructor that runs before `main` in every program linking
//! mkh (a test binary, the `mkh` CLI, a user's program) sees the variable and becomes the
//! watchdog instead. It logs to `<state>/watchdog/<pid>.log`, and, for an environment given an
//! artifact directory (every fixture's), collects the artifacts a failure keeps (console logs,
//! definitions, leases) into that directory before it removes anything, and logs there what it
//! removed (`watchdog.log`): a test killed by its timeout leaves what explains it.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use crate::artifacts::ArtifactPlan;
use crate::libvirt::Libvirt;
use crate::owner::{Owner, OwnerKind, ProcessIdentity};
use crate::reaper::{self, ReapScope, Which};

const OWNER_VAR: &str = "MKH_WATCHDOG_OWNER";

/// This process's watchdog: the pipe's write end (close-on-exec: no child of this process
/// holds it) and what it has been told to watch.
struct Companion {
    pipe: File,
    told: BTreeSet<String>,
}

static COMPANION: Mutex<Option<Companion>> = Mutex::new(None);

/// One line of the pipe: tab-separated, the kind first. Paths and URIs hold no tab or newline
/// that mkh accepts; the plan is JSON, which escapes both.
enum Told {
    /// Sweep this libvirt URI with this state directory.
    Place { uri: String, state_dir: PathBuf },
    /// Environment `env` keeps its failure artifacts in `dir`, collected by `plan`.
    Artifacts {
        env: String,
        dir: PathBuf,
        plan: Box<ArtifactPlan>,
    },
}

impl Told {
    fn line(&self) -> Option<String> {
        Some(match self {
            Told::Place { uri, state_dir } => format!("place\t{uri}\t{}\n", state_dir.display()),
            Told::Artifacts { env, dir, plan } => format!(
                "artifacts\t{env}\t{}\t{}\n",
                dir.display(),
                serde_json::to_string(plan).ok()?
            ),
        })
    }

    fn parse(line: &str) -> Option<Told> {
        let mut fields = line.splitn(4, '\t');
        Some(match (fields.next()?, fields.next()?, fields.next()?) {
            ("place", uri, state_dir) => Told::Place {
                uri: uri.to_owned(),
                state_dir: state_dir.into(),
            },
            ("artifacts", env, dir) => Told::Artifacts {
                env: env.to_owned(),
                dir: dir.into(),
                plan: Box::new(serde_json::from_str(fields.next()?).ok()?),
            },
            _ => return None,
        })
    }
}

/// Makes sure a watchdog watches this process's objects on `uri` (state under `state_dir`).
/// Best effort: without one, the reaper of the next mkh process is the only line.
pub(crate) fn watch_this_process(uri: &str, state_dir: &Path) {
    let told = Told::Place {
        uri: uri.to_owned(),
        state_dir: state_dir.to_owned(),
    };
    tell(&told, Some(state_dir));
}

/// Tells this process's watchdog, if it has one, where environment `env` keeps its failure
/// artifacts and how to collect them.
pub(crate) fn keep_artifacts_of(env: &str, dir: &Path, plan: &ArtifactPlan) {
    let told = Told::Artifacts {
        env: env.to_owned(),
        dir: dir.to_owned(),
        plan: Box::new(plan.clone()),
    };
    tell(&told, None);
}

/// Sends `told` to the watchdog, starting one first when `start_in` (a state directory) is
/// given and there is none yet.
fn tell(told: &Told, start_in: Option<&Path>) {
    let Some(line) = told.line() else { return };
    let mut slot = COMPANION.lock().unwrap_or_else(|p| p.into_inner());
    if let (None, Some(state_dir)) = (slot.as_ref(), start_in) {
        match spawn(state_dir) {
            Ok(c) => *slot = Some(c),
            Err(e) => {
                tracing::warn!("no watchdog for this process ({e}): a SIGKILL leaves its objects to the next mkh process's reaper");
                return;
            }
        }
    }
    let Some(c) = slot.as_mut() else { return };
    if c.told.insert(line.clone()) {
        if let Err(e) = c.pipe.write_all(line.as_bytes()) {
            tracing::warn!("watchdog: {e}");
        }
    }
}

/// How many watchdog logs `<state>/watchdog/` keeps (the oldest go first).
const LOGS_KEPT: usize = 50;

fn spawn(state_dir: &Path) -> std::io::Result<Companion> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let dir = state_dir.join("watchdog");
    crate::config::ensure_dir(&dir).map_err(std::io::Error::other)?;
    crate::config::prune_oldest(&dir, LOGS_KEPT, |e| {
        e.path().extension().is_some_and(|x| x == "log")
    });
    let log_path = dir.join(format!("{}.log", std::process::id()));
    let log = File::create(&log_path)?;
    let owner =
        serde_json::to_string(&crate::owner::this_process()).map_err(std::io::Error::other)?;
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0(watchdog_name(std::process::id()))
        .env(OWNER_VAR, owner)
        .stdin(Stdio::from(read))
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid and close_range are async-signal-safe system calls; nothing else runs
    // between fork and exec. Every descriptor above stderr is closed, so the watchdog holds
    // none of its owner's pipes or files (std's own exec-error pipe included: a failed exec
    // then goes unreported, and the owner runs without a watchdog).
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    // Not waited for: it outlives this process by design, and is reaped by init.
    drop(child);
    Ok(Companion {
        pipe: File::from(write),
        told: BTreeSet::new(),
    })
}

/// The name a watchdog runs under (its `argv[0]`).
fn watchdog_name(owner_pid: u32) -> String {
    format!("mkh-watchdog-of-{owner_pid}")
}

/// Whether a process other than this one is the watchdog of owner `pid`.
pub(crate) fn running_for(owner_pid: u32) -> bool {
    let name = watchdog_name(owner_pid);
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    // Numbered entries only: `/proc/self` is this process.
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|pid| pid != me)
        })
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .any(|raw| raw.split(|b| *b == 0).next() == Some(name.as_bytes()))
}

/// Runs before `main`: in a watchdog, watch and exit; in any other process, nothing. A
/// process is a watchdog only if the variable is set, its standard input is a pipe and its
/// parent is the owner the variable names; the variable is removed either way, so nothing
/// the watchdog (or a stray process) starts inherits it.
#[ctor::ctor]
fn become_the_watchdog_if_asked() {
    let Some(owner) = std::env::var_os(OWNER_VAR) else {
        return;
    };
    // SAFETY: before `main`, no other thread exists to read the environment meanwhile.
    unsafe { std::env::remove_var(OWNER_VAR) };
    let owner = owner.to_string_lossy().into_owned();
    let stdin_is_pipe = nix::sys::stat::fstat(std::io::stdin())
        .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFIFO);
    let parent_is_owner = serde_json::from_str::<ProcessIdentity>(&owner)
        .is_ok_and(|o| o.pid == nix::unistd::getppid().as_raw() as u32);
    if !(stdin_is_pipe && parent_is_owner) {
        tracing::warn!("{OWNER_VAR} is set, but this process is no watchdog: ignored");
        return;
    }
    let code = match watch(&owner) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("mkh watchdog: {e}");
            1
        }
    };
    std::process::exit(code);
}

/// Reads what to watch until the owner's end closes the pipe, then sweeps the owner's objects.
fn watch(owner: &str) -> Result<(), String> {
    let owner: ProcessIdentity =
        serde_json::from_str(owner).map_err(|e| format!("bad {OWNER_VAR}: {e}"))?;
    let mut places: BTreeSet<(String, PathBuf)> = BTreeSet::new();
    let mut artifacts: Vec<(String, PathBuf, ArtifactPlan)> = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        match Told::parse(&line) {
            Some(Told::Place { uri, state_dir }) => {
                places.insert((uri, state_dir));
            }
            Some(Told::Artifacts { env, dir, plan }) => artifacts.push((env, dir, *plan)),
            None => log(&format!("ignored a line it cannot read: {line:?}")),
        }
    }
    // The pipe closes while the owner exits, a moment before the kernel counts it dead (a
    // zombie, then gone): wait for that, or the reaper would still see a live owner.
    let dead = crate::wait::until(Duration::from_secs(30), Duration::from_millis(10), || {
        Ok((crate::owner::process_start_time(owner.pid) != Some(owner.start_time)).then_some(()))
    });
    if !matches!(dead, Ok(Some(()))) {
        return Err(format!(
            "owner pid {} closed its pipe but did not end",
            owner.pid
        ));
    }
    log(&format!(
        "owner pid {} ended; sweeping {} place(s)",
        owner.pid,
        places.len()
    ));
    for (uri, state_dir) in &places {
        // libvirtd may be restarting: try for a while.
        let mut last = String::new();
        let lv = crate::wait::until(Duration::from_secs(60), Duration::from_secs(1), || {
            match Libvirt::connect_to(uri) {
                Ok(lv) => Ok(Some(lv)),
                Err(e) => {
                    last = e.to_string();
                    Ok(None)
                }
            }
        });
        let Ok(Some(lv)) = lv else {
            log(&format!("{uri}: {last}"));
            continue;
        };
        let mine: Vec<_> = artifacts.iter().filter(|(_, _, p)| p.uri == *uri).collect();
        for (env, dir, plan) in &mine {
            if left_by(&lv, plan, &owner) {
                plan.collect(dir, Some(&format!("the owner, pid {}, ended without tearing environment {env} down: mkh's watchdog collected this, then removed it (see watchdog.log)", owner.pid)), None);
            }
        }
        match reaper::sweep(
            &lv,
            ReapScope::DeadOwners,
            Which::Process(&owner),
            state_dir,
        ) {
            Ok(report) => {
                for r in &report.removed {
                    let line = format!("removed {:?} {} ({}): {}", r.kind, r.name, r.env, r.reason);
                    log(&line);
                    if let Some((_, dir, _)) = mine.iter().find(|(env, _, _)| *env == r.env) {
                        log_in(dir, &line);
                    }
                }
                for k in &report.kept {
                    log(&format!(
                        "kept {:?} {} ({}): {}",
                        k.kind, k.name, k.env, k.reason
                    ));
                }
                for e in &report.errors {
                    log(&format!("error: {e}"));
                }
            }
            Err(e) => log(&format!("{uri}: {e}")),
        }
    }
    Ok(())
}

/// Whether a machine of `plan` is still there with `owner`'s process record: the owner did not
/// tear it down (and did not hand it to the CLI).
fn left_by(lv: &Libvirt, plan: &ArtifactPlan, owner: &ProcessIdentity) -> bool {
    plan.machines.iter().any(|(name, _)| {
        lv.domain_xml(name)
            .ok()
            .and_then(|xml| Owner::from_object_xml(&xml))
            .is_some_and(|o| o.kind == OwnerKind::Process && o.process == *owner)
    })
}

/// A line of the watchdog's own log: its stderr is a file (see `watch_this_process`).
fn log(line: &str) {
    eprintln!("{} mkh watchdog: {line}", crate::owner::now_unix());
}

/// Appends a line to `watchdog.log` in an artifact directory.
fn log_in(dir: &Path, line: &str) {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("watchdog.log"));
    if let Ok(mut file) = file {
        let _ = writeln!(file, "{} {line}", crate::owner::now_unix());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_owner_tells_reads_back() {
        let plan = ArtifactPlan {
            uri: "qemu:///system".into(),
            machines: vec![("m".into(), Some("/h/m.console.log".into()))],
            networks: vec!["mkh-x-nat".into()],
            minikube: None,
        };
        let told = [
            Told::Place {
                uri: "qemu:///system".into(),
                state_dir: "/var/state".into(),
            },
            Told::Artifacts {
                env: "e".into(),
                dir: "/a/b c".into(),
                plan: Box::new(plan),
            },
        ];
        for t in told {
            let line = t.line().unwrap();
            let back = Told::parse(line.trim_end_matches('\n')).unwrap();
            assert_eq!(back.line().unwrap(), line);
        }
        assert!(Told::parse("artifacts\te\t/a\tnot json").is_none());
        assert!(Told::parse("qemu:///system\t/var/state").is_none());
    }
}
