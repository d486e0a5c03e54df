//! SSH into machines with `ssh2`, as user `docker` with the environment's own key. The host key
//! is recorded at the first connection (per machine, not per address: both networks reach the
//! same sshd) and checked on every later one.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;

use crate::error::{Error, Result, SshCause};
use crate::wait::{off_thread, until};

fn ssh_error(
    target: impl Into<String>,
    problem: impl Into<String>,
    source: Option<SshCause>,
) -> Error {
    Error::Ssh {
        target: target.into(),
        problem: problem.into(),
        source,
    }
}

/// A key pair made for one environment; the private key file is mode 0600.
#[derive(Debug, Clone)]
pub(crate) struct KeyPair {
    pub private: PathBuf,
    pub public: PathBuf,
}

impl KeyPair {
    /// Generates an ed25519 key pair at `path` and `path.pub` (with `ssh-keygen`).
    pub fn generate(path: &Path, comment: &str) -> Result<KeyPair> {
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
            .arg(path)
            .output()
            .map_err(|e| {
                ssh_error(
                    path.display().to_string(),
                    "cannot run ssh-keygen; install openssh-client",
                    Some(e.into()),
                )
            })?;
        if !out.status.success() {
            return Err(ssh_error(
                path.display().to_string(),
                format!(
                    "ssh-keygen failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                None,
            ));
        }
        Ok(KeyPair::at(path))
    }

    pub fn at(path: &Path) -> KeyPair {
        let mut public = path.as_os_str().to_owned();
        public.push(".pub");
        KeyPair {
            private: path.to_owned(),
            public: public.into(),
        }
    }

    pub fn public_line(&self) -> Result<String> {
        std::fs::read_to_string(&self.public)
            .map(|s| s.trim().to_owned())
            .map_err(|e| Error::io(&self.public, e))
    }

    pub fn private_text(&self) -> Result<String> {
        std::fs::read_to_string(&self.private).map_err(|e| Error::io(&self.private, e))
    }
}

/// Where and how to log in.
#[derive(Debug, Clone)]
pub(crate) struct SshTarget {
    /// The machine's name.
    pub machine: String,
    /// What its host key is recorded under (see [`crate::machine`]'s host-key policies).
    pub host_key_label: String,
    pub ip: Ipv4Addr,
    pub port: u16,
    pub user: String,
    pub key: PathBuf,
    /// mkh's own known-hosts record for the environment (`<machine> <type> <base64>` lines).
    pub known_hosts: PathBuf,
    /// The libvirt host to go through, when it is reached over SSH (its guests' addresses
    /// are routable only there).
    pub via: Option<crate::remote::SshHost>,
}

/// What one command did: its exit status and everything it wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// The exit status (the shell's: 127 for an unknown command).
    pub status: i32,
    /// Standard output, decoded lossily as UTF-8.
    pub stdout: String,
    /// Standard error, decoded lossily as UTF-8.
    pub stderr: String,
}

/// A logged-in SSH session as `docker` on one machine over one network. Clones share the
/// connection; commands on one session run one after the other.
#[derive(Clone)]
pub struct SshSession {
    session: Arc<Mutex<ssh2::Session>>,
    target: SshTarget,
}

impl std::fmt::Debug for SshSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SshSession({}@{})", self.target.user, self.target.ip)
    }
}

/// Connects, retrying until sshd answers or `deadline` passes. A changed host key is final: no
/// retry.
pub(crate) fn connect(target: &SshTarget, deadline: Duration) -> Result<SshSession> {
    let mut last = String::from("no attempt made");
    let session = until(deadline, Duration::from_millis(300), || {
        let attempt = std::time::Instant::now();
        let result = try_connect(target, Duration::from_secs(10));
        tracing::debug!(ip = %target.ip, took = ?attempt.elapsed(), ok = result.is_ok(), "SSH attempt");
        match result {
            Ok(s) => Ok(Some(s)),
            Err(e @ Error::HostKeyChanged { .. }) => Err(e),
            Err(e) => {
                last = e.to_string();
                Ok(None)
            }
        }
    })?;
    session.ok_or_else(|| Error::Timeout {
        what: format!("SSH to {}@{} ({})", target.user, target.ip, target.machine),
        after: deadline,
        last,
    })
}

/// One attempt, with `timeout` on every blocking step.
fn try_connect(target: &SshTarget, timeout: Duration) -> Result<SshSession> {
    let where_ = format!("{}@{}:{}", target.user, target.ip, target.port);
    let fail = |problem: &str, source: SshCause| ssh_error(&where_, problem, Some(source));
    let mut session = ssh2::Session::new().map_err(|e| fail("new session", e.into()))?;
    session.set_timeout(timeout.as_millis() as u32);
    match &target.via {
        None => {
            let addr = SocketAddr::from((target.ip, target.port));
            let tcp = TcpStream::connect_timeout(&addr, timeout)
                .map_err(|e| fail("connect", e.into()))?;
            session.set_tcp_stream(tcp);
        }
        Some(host) => session.set_tcp_stream(host.tunnel(target.ip, target.port, timeout)?),
    }
    session
        .handshake()
        .map_err(|e| fail("handshake", e.into()))?;
    let (key, _) = session
        .host_key()
        .ok_or_else(|| ssh_error(&where_, "no host key offered", None))?;
    check_host_key(&target.known_hosts, &target.host_key_label, key)?;
    session
        .userauth_pubkey_file(&target.user, None, &target.key, None)
        .map_err(|e| {
            fail(
                &format!("key login with {}", target.key.display()),
                e.into(),
            )
        })?;
    // The timeout guards the connection; commands may run as long as they need.
    session.set_timeout(0);
    Ok(SshSession {
        session: Arc::new(Mutex::new(session)),
        target: target.clone(),
    })
}

/// Records the key on first sight; afterwards a different key is [`Error::HostKeyChanged`].
fn check_host_key(known_hosts: &Path, machine: &str, key: &[u8]) -> Result<()> {
    check_encoded_host_key(
        known_hosts,
        machine,
        &base64::engine::general_purpose::STANDARD.encode(key),
    )
}

/// Records the host key mkh gave a machine (an OpenSSH public key line) before it boots, so
/// that the first connections only check it and may run at once.
pub(crate) fn pin_host_key(known_hosts: &Path, machine: &str, public_line: &str) -> Result<()> {
    let encoded = public_line.split_whitespace().nth(1).ok_or_else(|| {
        ssh_error(
            machine,
            format!("the host key {public_line:?} is no OpenSSH public key line"),
            None,
        )
    })?;
    check_encoded_host_key(known_hosts, machine, encoded)
}

fn check_encoded_host_key(known_hosts: &Path, machine: &str, encoded: &str) -> Result<()> {
    let text = match std::fs::read_to_string(known_hosts) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io(known_hosts, e)),
    };
    match recorded_key(&text, machine) {
        Some(known) if known == encoded => Ok(()),
        Some(known) => Err(Error::HostKeyChanged {
            machine: machine.to_owned(),
            known: fingerprint(&known),
            offered: fingerprint(encoded),
            record: known_hosts.to_owned(),
        }),
        None => {
            let line = format!("{machine} {encoded}\n");
            use std::io::Write;
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(known_hosts)
                .and_then(|mut f| f.write_all(line.as_bytes()))
                .map_err(|e| Error::io(known_hosts, e))
        }
    }
}

/// Forgets every key recorded for `machine`, in any boot (labels `<machine>` and
/// `<machine>@...`).
pub(crate) fn forget_host_keys(known_hosts: &Path, machine: &str) -> Result<()> {
    let text = match std::fs::read_to_string(known_hosts) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(known_hosts, e)),
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            let label = l.split(' ').next().unwrap_or("");
            label != machine && !label.starts_with(&format!("{machine}@"))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(known_hosts, kept).map_err(|e| Error::io(known_hosts, e))
}

fn recorded_key(text: &str, machine: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (m, k) = l.split_once(' ')?;
        (m == machine).then(|| k.trim().to_owned())
    })
}

/// The recorded host key of `machine` as an OpenSSH known_hosts line for `ip`, so that OpenSSH
/// can be pinned to the key mkh checked.
#[cfg_attr(not(feature = "admin"), allow(dead_code))] // The `mkh` command's.
pub(crate) fn openssh_known_hosts_line(
    known_hosts: &Path,
    machine: &str,
    ip: Ipv4Addr,
) -> Result<String> {
    let text = std::fs::read_to_string(known_hosts).map_err(|e| Error::io(known_hosts, e))?;
    let encoded = recorded_key(&text, machine).ok_or_else(|| {
        ssh_error(
            machine,
            format!("no host key recorded in {}", known_hosts.display()),
            None,
        )
    })?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&encoded)
        .unwrap_or_default();
    // A key blob starts with its type name as an SSH string (u32 length, bytes).
    let kind = raw
        .get(..4)
        .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize)
        .and_then(|n| raw.get(4..4 + n))
        .map(|t| String::from_utf8_lossy(t).into_owned())
        .unwrap_or_else(|| "ssh-ed25519".into());
    Ok(format!("{ip} {kind} {encoded}\n"))
}

/// Quotes words for a POSIX shell, so `mkh ssh NAME -- sh -c 'a b'` runs what was typed.
pub(crate) fn shell_join(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            if !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
            {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// OpenSSH-style `SHA256:...` fingerprint of a base64 key blob.
pub(crate) fn fingerprint(encoded_key: &str) -> String {
    use sha2::{Digest, Sha256};
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded_key)
        .unwrap_or_default();
    let digest = Sha256::digest(raw);
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    )
}

impl SshSession {
    /// Runs a command through the user's shell and collects its exit status, stdout and
    /// stderr. The runtime thread stays free while it runs (however long); both streams are
    /// read as they come, so a command writing megabytes to either never stalls.
    pub async fn exec(&self, command: &str) -> Result<ExecOutput> {
        let session = self.clone();
        let command = command.to_owned();
        off_thread(move || session.exec_now(&command)).await
    }

    /// Runs a command with its standard streams connected: `stdin` (if any) is sent to it,
    /// then EOF (without one, EOF at once); its stdout and stderr are written to `stdout` and
    /// `stderr` as they come, with no size limit. Returns its exit status. A failed write
    /// (e.g. a closed pipe) closes the channel, which ends the remote command, and is returned
    /// as an error.
    pub async fn exec_streaming(
        &self,
        command: &str,
        stdin: Option<Box<dyn Read + Send>>,
        mut stdout: Box<dyn Write + Send>,
        mut stderr: Box<dyn Write + Send>,
    ) -> Result<i32> {
        let session = self.clone();
        let command = command.to_owned();
        off_thread(move || session.exec_streaming_now(&command, stdin, &mut stdout, &mut stderr))
            .await
    }

    /// [`SshSession::exec`], but the command is ended once `deadline` passes (killed in the
    /// guest with `timeout -s KILL`): then [`Error::Timeout`], with the end of what it wrote.
    pub async fn exec_within(&self, command: &str, deadline: Duration) -> Result<ExecOutput> {
        let session = self.clone();
        let command = command.to_owned();
        off_thread(move || session.exec_within_now(&command, deadline)).await
    }

    pub(crate) fn exec_within_now(&self, command: &str, deadline: Duration) -> Result<ExecOutput> {
        let secs = deadline.as_secs_f64().max(0.001);
        // The command runs in a session of its own (`setsid`), killed whole at the deadline.
        // Its shell is the login shell's `sh`, by path: busybox's `setsid` or `timeout` would
        // otherwise run their `sh` applet (ash), which prefers busybox's applets (`tc`, `ip`,
        // `ping`) to PATH's tools.
        let deadline_script = format!(
            "setsid \"$0\" -c \"$1\" & p=$!; \
             (sleep {secs:.3}; kill -KILL -$p) >/dev/null 2>&1 </dev/null & w=$!; \
             wait $p; s=$?; kill -KILL $w 2>/dev/null; exit $s"
        );
        let wrapped = format!(
            "sh -c {} \"$(command -v sh)\" {}",
            shell_join(&[deadline_script]),
            shell_join(&[command.to_owned()])
        );
        let started = std::time::Instant::now();
        let out = self.exec_now(&wrapped)?;
        if started.elapsed() >= deadline && out.status == 128 + 9 {
            let tail: String = out
                .stdout
                .chars()
                .rev()
                .take(400)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            return Err(Error::Timeout {
                what: format!("{command:?} on {}@{}", self.target.user, self.target.ip),
                after: deadline,
                last: format!("it was killed; its output ended with {tail:?}"),
            });
        }
        Ok(out)
    }

    /// [`SshSession::exec`] on this thread.
    pub(crate) fn exec_now(&self, command: &str) -> Result<ExecOutput> {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let status = self.exec_streaming_now(command, None, &mut stdout, &mut stderr)?;
        Ok(ExecOutput {
            status,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        })
    }

    /// Runs a command and streams: `stdin` (if any) to its standard input, then EOF (without
    /// one, EOF at once); its stdout and stderr to `stdout` and `stderr` as they come, with no
    /// size limit. Returns its exit status once it ended. When a write to `stdout` or `stderr`
    /// fails (a closed pipe: `mkh ssh NAME -- yes | head`), the channel is closed, which ends
    /// the remote command, and the write's error is returned. `stdin` is read on a thread of
    /// its own, which stays blocked in a read that never returns (a terminal) after the
    /// command ended.
    pub(crate) fn exec_streaming_now(
        &self,
        command: &str,
        stdin: Option<Box<dyn Read + Send>>,
        stdout: &mut dyn std::io::Write,
        stderr: &mut dyn std::io::Write,
    ) -> Result<i32> {
        let where_ = format!("{}@{}", self.target.user, self.target.ip);
        let fail = |problem: &str, source: SshCause| {
            ssh_error(&where_, format!("{command:?}: {problem}"), Some(source))
        };
        let session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let mut channel = session
            .channel_session()
            .map_err(|e| fail("open channel", e.into()))?;
        channel.exec(command).map_err(|e| fail("exec", e.into()))?;
        let input = stdin.map(spawn_reader);
        // Non-blocking: a blocking read of one stream while the command fills the other's
        // window (2 MiB) would wait for ever, and so would a blocking write of stdin.
        session.set_blocking(false);
        let pumped = pump(&mut channel, input, stdout, stderr);
        session.set_blocking(true);
        if let Err(e) = pumped {
            let _ = channel.close();
            return Err(fail("stream", e.into()));
        }
        channel.wait_close().map_err(|e| fail("close", e.into()))?;
        // A command killed by a signal has no exit status: the shell's 128 + N instead.
        if let Some(name) = channel.exit_signal().ok().and_then(|s| s.exit_signal) {
            return Ok(128 + signal_number(&name));
        }
        channel
            .exit_status()
            .map_err(|e| fail("exit status", e.into()))
    }

    /// The machine's address this session is connected to.
    pub fn ip(&self) -> Ipv4Addr {
        self.target.ip
    }

    #[cfg_attr(not(feature = "admin"), allow(dead_code))] // The `mkh` command's.
    pub(crate) fn target(&self) -> &SshTarget {
        &self.target
    }
}

/// The number of a signal as SSH names it (`KILL`, `TERM`, ...; RFC 4254), 0 if unknown.
fn signal_number(name: &str) -> i32 {
    match name {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "ILL" => 4,
        "ABRT" => 6,
        "FPE" => 8,
        "KILL" => 9,
        "USR1" => 10,
        "SEGV" => 11,
        "USR2" => 12,
        "PIPE" => 13,
        "ALRM" => 14,
        "TERM" => 15,
        _ => 0,
    }
}

/// Reads `input` on a thread of its own, in chunks, into a small queue (`None`: EOF).
fn spawn_reader(mut input: Box<dyn Read + Send>) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::sync_channel(4);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match input.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

/// Moves data on a non-blocking channel until the remote side ends its output: `input` in
/// (EOF sent once it ends, or at once without it), stdout and stderr out.
fn pump(
    channel: &mut ssh2::Channel,
    input: Option<std::sync::mpsc::Receiver<Vec<u8>>>,
    stdout: &mut dyn std::io::Write,
    stderr: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    use std::io::ErrorKind::WouldBlock;
    use std::sync::mpsc::TryRecvError;
    let mut buf = vec![0u8; 64 * 1024];
    let mut input = input;
    let mut pending: Vec<u8> = Vec::new();
    let mut eof_sent = false;
    loop {
        let mut progressed = false;
        // Standard input: what is queued, then EOF.
        if !eof_sent {
            if pending.is_empty() {
                match input.as_ref().map(|rx| rx.try_recv()) {
                    Some(Ok(chunk)) => pending = chunk,
                    Some(Err(TryRecvError::Empty)) => {}
                    Some(Err(TryRecvError::Disconnected)) | None => input = None,
                }
            }
            if !pending.is_empty() {
                match Write::write(channel, &pending) {
                    Ok(n) => {
                        pending.drain(..n);
                        progressed |= n > 0;
                    }
                    Err(e) if e.kind() == WouldBlock => {}
                    // The command stopped reading (it exited): drop the rest.
                    Err(_) => {
                        pending.clear();
                        input = None;
                    }
                }
            }
            if input.is_none() && pending.is_empty() {
                match channel.send_eof() {
                    Ok(()) => eof_sent = true,
                    Err(e) if e.code() == ssh2::ErrorCode::Session(-37) => {} // EAGAIN
                    Err(_) => eof_sent = true,
                }
            }
        }
        for to_stderr in [false, true] {
            let read = if to_stderr {
                channel.stderr().read(&mut buf)
            } else {
                channel.read(&mut buf)
            };
            match read {
                Ok(0) => {}
                Ok(n) => {
                    progressed = true;
                    let out: &mut dyn std::io::Write = if to_stderr { stderr } else { stdout };
                    out.write_all(&buf[..n])?;
                    out.flush()?;
                }
                Err(e) if e.kind() == WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        // The remote side ended its output; it is done once it closed the channel (a
        // command may end its output and still read its input).
        if channel.eof() && !progressed {
            match channel.wait_close() {
                Ok(()) => return Ok(()),
                Err(e) if e.code() == ssh2::ErrorCode::Session(-37) => {} // EAGAIN
                Err(e) => return Err(std::io::Error::other(e)),
            }
        }
        if !progressed {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_keys_are_recorded_once_then_enforced() {
        let dir = tempfile_dir();
        let kh = dir.join("known_hosts");
        check_host_key(&kh, "m1", b"key-one").unwrap();
        check_host_key(&kh, "m1", b"key-one").unwrap();
        check_host_key(&kh, "m2", b"key-two").unwrap();
        let err = check_host_key(&kh, "m1", b"key-two").unwrap_err();
        assert!(matches!(err, Error::HostKeyChanged { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("m1") && text.contains("SHA256:"), "{text}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_machine_s_keys_of_every_boot_are_forgotten_and_no_other_s() {
        let dir = tempfile_dir();
        let kh = dir.join("known_hosts");
        check_host_key(&kh, "m@boot-1", b"one").unwrap();
        check_host_key(&kh, "m-m02@boot-2", b"two").unwrap();
        check_host_key(&kh, "m", b"three").unwrap();
        forget_host_keys(&kh, "m").unwrap();
        // The same labels take new keys now; the other machine's record stays.
        check_host_key(&kh, "m@boot-1", b"four").unwrap();
        check_host_key(&kh, "m", b"five").unwrap();
        assert!(check_host_key(&kh, "m-m02@boot-2", b"six").is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        let words: Vec<String> = ["sh", "-c", "echo 'a b'; exit 3", ""]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(shell_join(&words), r#"sh -c 'echo '\''a b'\''; exit 3' ''"#);
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf '%s|' {}", shell_join(&words)))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "sh|-c|echo 'a b'; exit 3||"
        );
    }

    #[test]
    fn generated_keys_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile_dir();
        let pair = KeyPair::generate(&dir.join("id_ed25519"), "mkh-test").unwrap();
        let mode = std::fs::metadata(&pair.private)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(pair.public_line().unwrap().starts_with("ssh-ed25519 "));
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "mkh-ssh-test-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
