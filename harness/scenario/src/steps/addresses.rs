//! Addresses and the DHCP leases behind them: `dhcp` (renew, release or let a lease expire),
//! `remember-ip`, `expect-ip` and `expect-ip-fails`.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use serde::Deserialize;
use toml::Spanned;

use mkh::blocking::{Env, Machine};
use mkh::{NetworkRole, MAX_DHCP_LEASE as MAX_LEASE};

use super::running::{
    check, clip, control, guest, machine, network, nic_name, retrying, State, StepResult,
};
use super::{nic, MachineRef, StepChecker};
use crate::error::{Error, Result};
use crate::run::running;

/// How long past its lease time a held lease may take to leave the host's list: dnsmasq
/// removes it on its next timer, libvirt filters it by its expiry stamp at once.
const LEASE_EXPIRY_MARGIN: Duration = Duration::from_secs(30);

/// What to ask of a DHCP client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DhcpAction {
    /// Renew the lease now (or obtain one anew after a release).
    Renew,
    /// Give the lease back: the host then sees no lease at once.
    Release,
    /// Stop renewing, keep the address, and wait until the host's lease has expired
    /// (`[environment] dhcp_lease_s` sets how long that takes). `renew` resumes.
    Expire,
}

impl DhcpAction {
    /// As written in a file.
    pub fn as_str(self) -> &'static str {
        match self {
            DhcpAction::Renew => "renew",
            DhcpAction::Release => "release",
            DhcpAction::Expire => "expire",
        }
    }

    /// What the guest's DHCP service (`/run/mkh/dhcp-request`) is asked.
    pub fn guest_verb(self) -> &'static str {
        match self {
            DhcpAction::Expire => "hold",
            other => other.as_str(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Dhcp {
    pub machine: MachineRef,
    pub network: NetworkRole,
    pub action: DhcpAction,
}

impl Dhcp {
    pub(super) fn check(&self, c: &StepChecker) -> Result<()> {
        c.builtin_only(self.machine.span(), "dhcp")?;
        if self.action == DhcpAction::Expire && c.environment.dhcp_lease_s.is_none() {
            return c.err(
                self.machine.span(),
                "`action = \"expire\"` waits out the lease time: set `dhcp_lease_s` in `[environment]` (at least 120, dnsmasq's shortest lease)",
            );
        }
        c.machine(&self.machine, false)
    }

    pub(super) fn run(&self, env: &Env) -> StepResult {
        let m = &machine(env, self.machine.get_ref());
        let nic = nic_name(m, self.network)?;
        let verb = self.action.guest_verb();
        // The built-in guest's root service (see its /init); elsewhere, no way is known.
        guest(
            m,
            control(self.network),
            &format!(
                "[ -p /run/mkh/dhcp-request ] || {{ echo 'no /run/mkh/dhcp-request: only the built-in guest takes DHCP requests' >&2; exit 1; }}; echo '{verb} {nic}' >/run/mkh/dhcp-request"
            ),
        )?;
        if self.action != DhcpAction::Expire {
            return Ok(Some(format!("udhcpc on the guest's {nic} asked to {verb}")));
        }
        // The host stops listing a lease once its expiry time has passed (libvirt's
        // networkGetDHCPLeases skips expired ones); dnsmasq's clock, not the guest's speed,
        // sets when: no timeout scale.
        let lease = env.dhcp_lease_time().unwrap_or(MAX_LEASE);
        running(format!(
            "waiting for the lease of {} on {} to expire (lease time {} s)",
            m.name(),
            self.network.as_str(),
            lease.as_secs()
        ));
        let held = Instant::now();
        let deadline = held + lease + LEASE_EXPIRY_MARGIN;
        loop {
            match m.ip_within(self.network, Duration::from_secs(1)) {
                Ok(ip) if Instant::now() >= deadline => {
                    return check(
                        false,
                        "the lease gone from the host",
                        format!("a lease for {ip}"),
                    )
                }
                Ok(_) => std::thread::sleep(Duration::from_millis(500)),
                Err(mkh::Error::NoLease(_)) => {
                    return Ok(Some(format!(
                        "udhcpc on the guest's {nic} held (SIGSTOP); the host's lease expired after {:.0} s (lease time {} s)",
                        held.elapsed().as_secs_f64(),
                        lease.as_secs()
                    )))
                }
                // Only a lease still listed is worth waiting for.
                Err(e) => return Err(e.into()),
            }
        }
    }

    pub(super) fn summary(&self) -> String {
        format!(
            "DHCP {} on {}",
            self.action.as_str(),
            nic(&self.machine, self.network)
        )
    }
}

/// How an IP is looked up in the network's DHCP leases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lookup {
    /// The lease of the machine's MAC (what mkh does).
    #[default]
    Mac,
    /// The first lease with the machine's hostname (what a lookup by name finds).
    Hostname,
}

/// A machine's IP on `role`'s network, by its MAC (as mkh finds it) or by its hostname (the
/// first lease with that name, as a lookup by name finds it).
fn looked_up(env: &Env, m: &Machine, role: NetworkRole, by: Lookup) -> Result<Ipv4Addr> {
    match by {
        Lookup::Mac => Ok(m.ip(role)?),
        Lookup::Hostname => {
            let net = &network(env, role).name;
            let leases = env.leases(role)?;
            leases
                .iter()
                .find(|l| l.hostname.as_deref() == Some(m.name()))
                .map(|l| l.ip)
                .ok_or_else(|| Error::GuestCommand {
                    machine: m.name().to_owned(),
                    command: format!("look up the lease of hostname {} on {net}", m.name()),
                    status: 1,
                    stderr: "no lease has that hostname".into(),
                })
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RememberIp {
    pub machine: MachineRef,
    pub network: NetworkRole,
    #[serde(default)]
    pub by: Lookup,
    #[serde(rename = "as")]
    pub name: Spanned<String>,
}

impl RememberIp {
    pub(super) fn check(&self, c: &mut StepChecker) -> Result<()> {
        c.machine(&self.machine, false)?;
        c.new_name(&self.name)
    }

    pub(super) fn run(&self, env: &Env, state: &mut State) -> StepResult {
        let m = &machine(env, self.machine.get_ref());
        let ip = looked_up(env, m, self.network, self.by)?;
        state
            .remembered
            .insert(self.name.get_ref().clone(), ip.to_string());
        Ok(Some(format!("{} = {ip}", self.name.get_ref())))
    }

    pub(super) fn summary(&self) -> String {
        format!(
            "remember IP of {} as {}",
            nic(&self.machine, self.network),
            self.name.get_ref()
        )
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct ExpectIp {
    pub machine: MachineRef,
    pub network: NetworkRole,
    #[serde(default)]
    pub by: Lookup,
    /// A CIDR it lies in.
    #[serde(rename = "in")]
    pub within: Option<Spanned<String>>,
    /// A remembered IP it equals.
    pub equals: Option<Spanned<String>>,
    /// A remembered IP it differs from.
    pub differs: Option<Spanned<String>>,
    pub within_s: Option<Spanned<f64>>,
}

impl ExpectIp {
    pub(super) fn check(&self, c: &StepChecker) -> Result<()> {
        c.machine(&self.machine, false)?;
        c.seconds(&self.within_s, "within_s")?;
        match (&self.within, &self.equals, &self.differs) {
            (Some(cidr), None, None) => c.cidr(cidr),
            (None, Some(n), None) | (None, None, Some(n)) => c.name_known(n),
            _ => c.err(
                self.machine.span(),
                "expected exactly one of `in` (a CIDR), `equals` or `differs` (a remembered name)",
            ),
        }
    }

    pub(super) fn run(&self, env: &Env, state: &State) -> StepResult {
        let m = &machine(env, self.machine.get_ref());
        retrying(&self.within_s, || {
            let ip = looked_up(env, m, self.network, self.by)?;
            if let Some(cidr) = &self.within {
                let net: Ipv4Net = cidr.get_ref().parse().expect("checked when parsed");
                return check(net.contains(&ip), format!("an IP in {net}"), ip.to_string());
            }
            let (name, same) = match (&self.equals, &self.differs) {
                (Some(n), _) => (n, true),
                (_, Some(n)) => (n, false),
                _ => unreachable!("checked when parsed"),
            };
            let remembered = &state.remembered[name.get_ref()];
            check(
                (ip.to_string() == *remembered) == same,
                format!(
                    "{} {} ({remembered})",
                    if same {
                        "the same IP as"
                    } else {
                        "an IP other than"
                    },
                    name.get_ref()
                ),
                ip.to_string(),
            )
        })
    }

    pub(super) fn summary(&self) -> String {
        format!(
            "expect IP of {}{}",
            nic(&self.machine, self.network),
            if self.by == Lookup::Hostname {
                " by hostname"
            } else {
                ""
            }
        )
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct IpFails {
    pub machine: MachineRef,
    pub network: NetworkRole,
    /// A regular expression the error must match.
    pub matches: Spanned<String>,
    pub within_s: Option<Spanned<f64>>,
}

impl IpFails {
    pub(super) fn check(&self, c: &StepChecker) -> Result<()> {
        c.machine(&self.machine, false)?;
        c.seconds(&self.within_s, "within_s")?;
        c.regex(&self.matches)
    }

    pub(super) fn run(&self, env: &Env) -> StepResult {
        let re = regex::Regex::new(self.matches.get_ref()).expect("checked when parsed");
        let expected = format!("an error matching /{}/", self.matches.get_ref());
        let m = &machine(env, self.machine.get_ref());
        // A lease that is there answers at once: wait no longer than that.
        retrying(&self.within_s, || {
            match m.ip_within(self.network, Duration::from_secs(1)) {
                Ok(ip) => check(false, expected.clone(), format!("an answer: {ip}")),
                Err(e) => {
                    let message = e.to_string();
                    check(re.is_match(&message), expected.clone(), message.clone())
                        .map(|_| Some(clip(&message)))
                }
            }
        })
    }

    pub(super) fn summary(&self) -> String {
        format!(
            "expect `ip` of {} to fail",
            nic(&self.machine, self.network)
        )
    }
}
