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

fn spawn(state_dir: &Path) -> std::io::Result<Companion> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let dir = state_dir.join("watchdog");
    crate::config::ensure_dir(&dir).map_err(std::io::Error::other)?;
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
    // SAFETY: setsid is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
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

/// Runs before `main`: in a watchdog, watch and exit; in any other process, nothing.
#[ctor::ctor]
fn become_the_watchdog_if_asked() {
    let Some(owner) = std::env::var_os(OWNER_VAR) else {
        return;
    };
    let code = match watch(&owner.to_string_lossy()) {
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
    log(&format!(
        "owner pid {} ended; sweeping {} place(s)",
        owner.pid,
        places.len()
    ));
    // The pipe closes as the owner exits; its pid may linger a moment as a zombie, which the
    // reaper counts as dead.
    for (uri, state_dir) in &places {
        let lv = match Libvirt::connect_to(uri) {
            Ok(lv) => lv,
            Err(e) => {
                log(&format!("{uri}: {e}"));
                continue;
            }
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
