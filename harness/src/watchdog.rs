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
//! watchdog instead. It logs to `<state>/watchdog/<pid>.log`.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use crate::libvirt::Libvirt;
use crate::owner::ProcessIdentity;
use crate::reaper::{self, ReapScope, Which};

const OWNER_VAR: &str = "MKH_WATCHDOG_OWNER";

/// This process's watchdog: the pipe's write end (close-on-exec: no child of this process
/// holds it) and what it has been told to watch.
struct Companion {
    pipe: File,
    told: BTreeSet<String>,
}

static COMPANION: Mutex<Option<Companion>> = Mutex::new(None);

/// Makes sure a watchdog watches this process's objects on `uri` (state under `state_dir`).
/// Best effort: without one, the reaper of the next mkh process is the only line.
pub(crate) fn watch_this_process(uri: &str, state_dir: &Path) {
    let line = format!("{uri}\t{}\n", state_dir.display());
    let mut slot = COMPANION.lock().unwrap_or_else(|p| p.into_inner());
    if slot.is_none() {
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
    cmd.arg0(format!("mkh-watchdog-of-{}", std::process::id()))
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
        eprintln!("mkh: {OWNER_VAR} is set, but this process is no watchdog: ignored");
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
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if let Some((uri, state)) = line.split_once('\t') {
            places.insert((uri.to_owned(), PathBuf::from(state)));
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
        match reaper::sweep(
            &lv,
            ReapScope::DeadOwners,
            Which::Process(&owner),
            state_dir,
        ) {
            Ok(report) => {
                for r in &report.removed {
                    log(&format!(
                        "removed {:?} {} ({}): {}",
                        r.kind, r.name, r.env, r.reason
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

fn log(line: &str) {
    eprintln!("{} mkh watchdog: {line}", crate::owner::now_unix());
}
