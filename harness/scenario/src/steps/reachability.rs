//! Reachability checks: `expect-reachable` and `expect-unreachable` (ping, or a TCP
//! connection, from the host or a machine) and `expect-ssh`.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use mkh::blocking::{Env, Machine};
use mkh::NetworkRole;

use super::running::{check, clip, control, machine, retrying, StepResult};
use super::{MachineRef, Nic, Origin, StepChecker};
use crate::error::Result;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Reach {
    /// `host` or a machine.
    #[serde(default = "host")]
    pub from: Origin,
    pub to: MachineRef,
    pub network: NetworkRole,
    /// Probe with a TCP connection to this port instead of ping.
    pub tcp_port: Option<Spanned<u16>>,
    pub within_s: Option<Spanned<f64>>,
}

fn host() -> Origin {
    Spanned::new(0..0, "host".into())
}

impl Reach {
    pub(super) fn check(&self, c: &StepChecker) -> Result<()> {
        c.origin(&self.from)?;
        c.machine(&self.to, false)?;
        if self.from.get_ref() == self.to.get_ref() {
            return c.err(self.to.span(), "`from` and `to` are the same machine");
        }
        if let Some(p) = &self.tcp_port {
            if *p.get_ref() == 0 {
                return c.err(p.span(), "`tcp_port` = 0: expected 1 to 65535");
            }
        }
        c.seconds(&self.within_s, "within_s")
    }

    /// Reachability by ping, or by a TCP connection when `tcp_port` is given; `expect`: that
    /// it answers.
    pub(super) fn run(&self, env: &Env, expect: bool) -> StepResult {
        let to = &machine(env, self.to.get_ref());
        let from = self.from.get_ref().as_str();
        retrying(&self.within_s, || {
            let ip = to.ip(self.network)?;
            let (how, answered) = match &self.tcp_port {
                None => {
                    let answered = if from == "host" {
                        host_ping(ip)
                    } else {
                        from_guest(
                            &machine(env, from),
                            self.network,
                            &format!("ping -c 1 -W 1 {ip}"),
                        )?
                    };
                    ("ping".to_owned(), answered)
                }
                Some(port) => {
                    let port = *port.get_ref();
                    let open = if from == "host" {
                        let addr = SocketAddr::from((ip, port));
                        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
                    } else {
                        from_guest(
                            &machine(env, from),
                            self.network,
                            &format!("nc -w 2 {ip} {port} </dev/null >/dev/null"),
                        )?
                    };
                    (format!("TCP port {port}"), open)
                }
            };
            check(
                answered == expect,
                format!(
                    "{} {} from {from} ({ip} over {})",
                    how,
                    if expect { "answering" } else { "silent" },
                    self.network.as_str()
                ),
                format!(
                    "{how} {}",
                    if answered {
                        "answered"
                    } else {
                        "got no answer"
                    }
                ),
            )
        })
    }

    /// `reachable` or `unreachable`.
    pub(super) fn summary(&self, expected: &str) -> String {
        format!(
            "expect {} {expected} from {} over {}",
            self.to.get_ref(),
            self.from.get_ref(),
            self.network.as_str()
        )
    }
}

/// Whether a probe run in `source` (over the other network than the one probed) exits 0.
fn from_guest(source: &Machine, probed: NetworkRole, command: &str) -> Result<bool> {
    let out = source
        .ssh(control(probed))?
        .exec_within(command, Duration::from_secs(10))?;
    Ok(out.status == 0)
}

fn host_ping(ip: Ipv4Addr) -> bool {
    std::process::Command::new("ping")
        .args(["-c", "1", "-W", "1", "-n", "-q", &ip.to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Nic {
    /// `expect-ssh`.
    pub(super) fn expect_ssh(&self, env: &Env) -> StepResult {
        let m = &machine(env, self.machine.get_ref());
        retrying(&self.within_s, || {
            let seen = match m.ssh(self.network).and_then(|s| s.exec("echo ok")) {
                Ok(out) if out.stdout.trim() == "ok" => return Ok(None),
                Ok(out) => format!("`echo ok` printed {:?}", clip(&out.stdout)),
                Err(e) => e.to_string(),
            };
            check(false, format!("SSH over {}", self.network.as_str()), seen)
        })
    }
}
