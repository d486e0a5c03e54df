//! SSH into machines with `ssh2`, as user `docker` with the environment's own key. The host key
//! is recorded at the first connection (per machine, not per address: both networks reach the
//! same sshd) and checked on every later one.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use serde::Serialize;

use crate::error::{Error, Result};

/// A key pair made for one environment; the private key file is mode 0600.
#[derive(Debug, Clone, Serialize)]
pub struct KeyPair {
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
            .map_err(|e| Error::Ssh {
                target: path.display().to_string(),
                problem: format!("cannot run ssh-keygen ({e}); install openssh-client"),
            })?;
        if !out.status.success() {
            return Err(Error::Ssh {
                target: path.display().to_string(),
                problem: format!(
                    "ssh-keygen failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
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
pub struct SshTarget {
    /// The machine's name: host keys are recorded under it.
    pub machine: String,
    pub ip: Ipv4Addr,
    pub port: u16,
    pub user: String,
    pub key: PathBuf,
    /// mkh's own known-hosts record for the environment (`<machine> <type> <base64>` lines).
    pub known_hosts: PathBuf,
}

/// Output of one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

pub struct SshSession {
    session: ssh2::Session,
    target: SshTarget,
}

impl std::fmt::Debug for SshSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SshSession({}@{})", self.target.user, self.target.ip)
    }
}

/// Connects, retrying until sshd answers or `deadline` passes. A changed host key is final: no
/// retry.
pub fn connect(target: &SshTarget, deadline: Duration) -> Result<SshSession> {
    let start = Instant::now();
    let mut last = String::from("no attempt made");
    while start.elapsed() < deadline {
        match try_connect(target, Duration::from_secs(10)) {
            Ok(s) => return Ok(s),
            Err(e @ Error::HostKeyChanged { .. }) => return Err(e),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    Err(Error::Timeout {
        what: format!("SSH to {}@{} ({})", target.user, target.ip, target.machine),
        after: deadline,
        last,
    })
}

/// One attempt, with `timeout` on every blocking step.
pub fn try_connect(target: &SshTarget, timeout: Duration) -> Result<SshSession> {
    let fail = |problem: String| Error::Ssh {
        target: format!("{}@{}:{}", target.user, target.ip, target.port),
        problem,
    };
    let addr = SocketAddr::from((target.ip, target.port));
    let tcp = TcpStream::connect_timeout(&addr, timeout).map_err(|e| fail(e.to_string()))?;
    let mut session = ssh2::Session::new().map_err(|e| fail(e.to_string()))?;
    session.set_timeout(timeout.as_millis() as u32);
    session.set_tcp_stream(tcp);
    session
        .handshake()
        .map_err(|e| fail(format!("handshake: {e}")))?;
    let (key, _) = session
        .host_key()
        .ok_or_else(|| fail("no host key offered".into()))?;
    check_host_key(&target.known_hosts, &target.machine, key)?;
    session
        .userauth_pubkey_file(&target.user, None, &target.key, None)
        .map_err(|e| fail(format!("key login with {}: {e}", target.key.display())))?;
    // The timeout guards the connection; commands may run as long as they need.
    session.set_timeout(0);
    Ok(SshSession {
        session,
        target: target.clone(),
    })
}

/// Records the key on first sight; afterwards a different key is [`Error::HostKeyChanged`].
fn check_host_key(known_hosts: &Path, machine: &str, key: &[u8]) -> Result<()> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(key);
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
            offered: fingerprint(&encoded),
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

fn recorded_key(text: &str, machine: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (m, k) = l.split_once(' ')?;
        (m == machine).then(|| k.trim().to_owned())
    })
}

/// The recorded host key of `machine` as an OpenSSH known_hosts line for `ip`, so that OpenSSH
/// can be pinned to the key mkh checked.
pub fn openssh_known_hosts_line(known_hosts: &Path, machine: &str, ip: Ipv4Addr) -> Result<String> {
    let text = std::fs::read_to_string(known_hosts).map_err(|e| Error::io(known_hosts, e))?;
    let encoded = recorded_key(&text, machine).ok_or_else(|| Error::Ssh {
        target: machine.to_owned(),
        problem: format!("no host key recorded in {}", known_hosts.display()),
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
pub fn shell_join(words: &[String]) -> String {
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
pub fn fingerprint(encoded_key: &str) -> String {
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
    /// Runs a command through the user's shell; collects exit status, stdout and stderr. Reads
    /// stdout to its end before stderr: a command writing megabytes to stderr alone can stall
    /// (the channel window is 2 MiB).
    pub fn exec(&self, command: &str) -> Result<ExecOutput> {
        let fail = |problem: String| Error::Ssh {
            target: format!("{}@{}", self.target.user, self.target.ip),
            problem: format!("{command:?}: {problem}"),
        };
        let mut channel = self
            .session
            .channel_session()
            .map_err(|e| fail(e.to_string()))?;
        channel.exec(command).map_err(|e| fail(e.to_string()))?;
        let mut stdout = String::new();
        channel
            .read_to_string(&mut stdout)
            .map_err(|e| fail(e.to_string()))?;
        let mut stderr = String::new();
        channel
            .stderr()
            .read_to_string(&mut stderr)
            .map_err(|e| fail(e.to_string()))?;
        channel.wait_close().map_err(|e| fail(e.to_string()))?;
        let status = channel.exit_status().map_err(|e| fail(e.to_string()))?;
        Ok(ExecOutput {
            status,
            stdout,
            stderr,
        })
    }

    pub fn target(&self) -> &SshTarget {
        &self.target
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
