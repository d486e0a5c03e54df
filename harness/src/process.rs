//! Child processes (minikube and its kin): each in a process group of its own, so that a signal
//! meant for the test (nextest signals the test's whole group) does not cut a `minikube delete`
//! short; with a deadline, after which the whole group is killed; output appended to a log file
//! whose tail goes into the error.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::error::{Error, Result};

/// How many lines of a log an error quotes.
pub const TAIL_LINES: usize = 25;

/// Runs `cmd` to completion in its own process group with stdout and stderr appended to `log`.
/// `on_spawn` hears the group id (to kill it from a signal handler). Fails on a non-zero exit or
/// when `deadline` passes (then the group gets SIGTERM, and SIGKILL 5 s later).
pub fn run_logged(
    what: &str,
    mut cmd: Command,
    log: &Path,
    deadline: Duration,
    on_spawn: &mut dyn FnMut(i32),
) -> Result<()> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| Error::io(log, e))?;
    let err_file = file.try_clone().map_err(|e| Error::io(log, e))?;
    cmd.stdin(Stdio::null())
        .stdout(file)
        .stderr(err_file)
        .process_group(0);
    let mut child = cmd.spawn().map_err(|e| Error::Process {
        what: what.to_owned(),
        problem: format!("cannot start it: {e}"),
        log: log.to_owned(),
        tail: String::new(),
    })?;
    let pgid = child.id() as i32;
    on_spawn(pgid);
    let status = wait_until(&mut child, deadline);
    match status {
        Some(s) if s.success() => Ok(()),
        Some(s) => Err(Error::Process {
            what: what.to_owned(),
            problem: describe(s),
            log: log.to_owned(),
            tail: tail(log, TAIL_LINES),
        }),
        None => {
            kill_group_of(pgid, Some(&mut child));
            let _ = child.wait();
            Err(Error::Process {
                what: what.to_owned(),
                problem: format!("still running after {deadline:?}: killed"),
                log: log.to_owned(),
                tail: tail(log, TAIL_LINES),
            })
        }
    }
}

fn wait_until(child: &mut std::process::Child, deadline: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if start.elapsed() < deadline => {
                std::thread::sleep(Duration::from_millis(100))
            }
            _ => return None,
        }
    }
}

/// SIGTERM to a process group, then SIGKILL if it is still there 5 s later.
pub fn kill_group(pgid: i32) {
    kill_group_of(pgid, None);
}

/// [`kill_group`], reaping `leader` (our child, the group's leader) as it exits: an unreaped
/// zombie still counts as a member and would make the wait last the full 5 s.
fn kill_group_of(pgid: i32, mut leader: Option<&mut std::process::Child>) {
    let group = Pid::from_raw(pgid);
    if killpg(group, Signal::SIGTERM).is_err() {
        return;
    }
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if let Some(child) = leader.as_mut() {
            let _ = child.try_wait();
        }
        // Signal 0 probes whether any member is left.
        if killpg(group, None).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = killpg(group, Signal::SIGKILL);
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "ended oddly".to_owned(),
    }
}

/// The last `n` lines of a text file ("" if unreadable).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log() -> std::path::PathBuf {
        std::env::temp_dir().join(format!(
            "mkh-proc-{}-{}.log",
            std::process::id(),
            rand::random::<u32>()
        ))
    }

    #[test]
    fn failures_quote_the_tail_of_the_log() {
        let log = log();
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "for i in $(seq 1 40); do echo line $i; done; echo oops >&2; exit 3",
        ]);
        let err = run_logged("demo", cmd, &log, Duration::from_secs(10), &mut |_| {}).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("status 3") && text.contains("oops") && text.contains("line 40"),
            "{text}"
        );
        assert!(!text.contains("line 10\n"), "only the tail: {text}");
        std::fs::remove_file(log).unwrap();
    }

    #[test]
    fn a_deadline_kills_the_whole_group() {
        let log = log();
        let mut cmd = Command::new("sh");
        // The grandchild would outlive a kill of the shell alone.
        cmd.args(["-c", "sleep 30 & echo started; wait"]);
        let mut group = 0;
        let start = Instant::now();
        let err = run_logged("sleeper", cmd, &log, Duration::from_millis(500), &mut |g| {
            group = g
        })
        .unwrap_err();
        // The shell and its sleep go at SIGTERM: no wait for the SIGKILL 5 s later.
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "{:?}",
            start.elapsed()
        );
        assert!(err.to_string().contains("killed"), "{err}");
        assert!(
            killpg(Pid::from_raw(group), None).is_err(),
            "group {group} survived"
        );
        std::fs::remove_file(log).unwrap();
    }
}
