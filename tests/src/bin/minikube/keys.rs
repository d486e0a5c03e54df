//! SSH: each machine's key pair (`machines/<m>/id_rsa`, RSA 2048 as minikube makes it) and
//! waiting until the guest lets user `docker` in. The guest makes a new host key on every boot,
//! as minikube's ISO does (its root file system lives in RAM), and, as libmachine, nothing here
//! checks host keys.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::Failure;

fn keygen(path: &Path, kind: &[&str]) -> Result<(), Failure> {
    let out = Command::new("ssh-keygen")
        .args(kind)
        .args(["-N", "", "-q", "-C", ""])
        .arg("-f")
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Failure::error(format!("run ssh-keygen (install openssh-client): {e}")))?;
    if !out.status.success() {
        return Err(Failure::error(format!(
            "ssh-keygen for {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Creates `id_rsa` (+ `.pub`, mode 0600 by ssh-keygen) unless it exists; returns the public
/// key line.
pub fn ensure_machine_key(id_rsa: &Path) -> Result<String, Failure> {
    if !id_rsa.exists() {
        keygen(id_rsa, &["-t", "rsa", "-b", "2048"])?;
    }
    let pub_path = id_rsa.with_extension("pub");
    std::fs::read_to_string(&pub_path)
        .map(|s| s.trim().to_string())
        .map_err(|e| Failure::error(format!("read {}: {e}", pub_path.display())))
}

/// Waits for TCP port 22, then for `ssh -i id_rsa docker@ip true` to succeed.
pub fn wait_for_ssh(ip: Ipv4Addr, id_rsa: &Path, deadline: Instant) -> Result<(), String> {
    let addr = SocketAddr::from((ip, 22));
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok() {
            break;
        }
        if Instant::now() >= deadline {
            return Err(format!("SSH port of {ip} did not open in time"));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let mut last = String::new();
    while Instant::now() < deadline {
        let out = ssh_command(ip, id_rsa)
            .arg("true")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run ssh: {e}"))?;
        if out.status.success() {
            return Ok(());
        }
        last = String::from_utf8_lossy(&out.stderr).trim().to_string();
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(format!("ssh docker@{ip} did not succeed in time: {last}"))
}

/// `ssh` as minikube's native client behaves: no host key checking, only this key.
pub fn ssh_command(ip: Ipv4Addr, id_rsa: &Path) -> Command {
    let mut cmd = Command::new("ssh");
    cmd.args([
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "ConnectTimeout=10",
        "-o",
        "LogLevel=ERROR",
        "-i",
    ])
    .arg(id_rsa)
    .arg(format!("docker@{ip}"));
    cmd
}
