//! Faults made inside the guests: `partition` and `heal`, `impair` and `clear-impairment`,
//! `block` and `unblock`.
//!
//! They use tools every machine has (the built-in guest ships them; so does minikube's ISO):
//! `tc` netem for impairments and `tc` ingress filters for blocks, blackhole routes for
//! partitions. This host's kernel has no netem qdisc, so the guest's is the one mkh can rely
//! on; each step's report names the mechanism it used. A fault on one network is set up over
//! the other, which it leaves alone.

use serde::Deserialize;
use toml::Spanned;

use mkh::blocking::{Env, Machine};
use mkh::NetworkRole;

use super::running::{
    control, guest, machine, machine_index, network, nic_name, State, StepResult,
};
use super::{nic, MachineRef, Nic, Origin, StepChecker};
use crate::error::Result;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Pair {
    pub network: NetworkRole,
    pub machines: Spanned<Vec<MachineRef>>,
}

impl Pair {
    pub(super) fn check(&self, c: &StepChecker) -> Result<()> {
        let list = self.machines.get_ref();
        if list.len() != 2 || list[0].get_ref() == list[1].get_ref() {
            return c.err(
                self.machines.span(),
                "`machines`: expected two different machines, e.g. [\"m1\", \"m2\"]",
            );
        }
        list.iter().try_for_each(|m| c.machine(m, false))
    }

    /// `cut`: a partition; otherwise heals one.
    pub(super) fn run(&self, env: &Env, cut: bool) -> StepResult {
        let pair: Vec<Machine> = self
            .machines
            .get_ref()
            .iter()
            .map(|m| machine(env, m.get_ref()))
            .collect();
        for (a, b) in [(&pair[0], &pair[1]), (&pair[1], &pair[0])] {
            let peer = b.ip(self.network)?;
            let command = if cut {
                format!("ip route replace blackhole {peer}/32")
            } else {
                format!("ip route del blackhole {peer}/32 2>/dev/null; true")
            };
            guest(a, control(self.network), &command)?;
        }
        Ok(Some("blackhole routes in both guests".into()))
    }

    pub(super) fn summary(&self, verb: &str) -> String {
        format!(
            "{verb} {} on {}",
            self.machines
                .get_ref()
                .iter()
                .map(|m| m.get_ref().as_str())
                .collect::<Vec<_>>()
                .join(" | "),
            self.network.as_str()
        )
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Impair {
    pub machine: MachineRef,
    pub network: NetworkRole,
    pub delay_ms: Option<Spanned<u32>>,
    pub jitter_ms: Option<Spanned<u32>>,
    pub loss_percent: Option<Spanned<f64>>,
    pub corrupt_percent: Option<Spanned<f64>>,
    pub rate_kbit: Option<Spanned<u32>>,
}

impl Impair {
    pub(super) fn check(&self, c: &StepChecker) -> Result<()> {
        c.machine(&self.machine, false)?;
        let delay = self.delay_ms.as_ref().map(|d| *d.get_ref());
        for (v, what) in [(&self.delay_ms, "delay_ms"), (&self.jitter_ms, "jitter_ms")] {
            if let Some(v) = v {
                if *v.get_ref() > 60_000 {
                    return c.err(
                        v.span(),
                        format!("`{what}` = {}: expected at most 60000 ms", v.get_ref()),
                    );
                }
            }
        }
        if let (Some(j), None) = (&self.jitter_ms, delay) {
            return c.err(j.span(), "`jitter_ms` needs a `delay_ms` to vary");
        }
        c.percent(&self.loss_percent, "loss_percent")?;
        c.percent(&self.corrupt_percent, "corrupt_percent")?;
        if let Some(r) = &self.rate_kbit {
            if !(8..=10_000_000).contains(r.get_ref()) {
                return c.err(
                    r.span(),
                    format!("`rate_kbit` = {}: expected 8 to 10000000", r.get_ref()),
                );
            }
        }
        let positive = |v: &Option<Spanned<f64>>| v.as_ref().is_some_and(|v| *v.get_ref() > 0.0);
        let any = delay.is_some_and(|d| d > 0)
            || positive(&self.loss_percent)
            || positive(&self.corrupt_percent)
            || self.rate_kbit.is_some();
        if any {
            Ok(())
        } else {
            c.err(
                self.machine.span(),
                "an impairment needs at least one effect: delay_ms, loss_percent or corrupt_percent above 0, or a rate_kbit",
            )
        }
    }

    pub(super) fn run(&self, env: &Env) -> StepResult {
        let m = &machine(env, self.machine.get_ref());
        let nic = nic_name(m, self.network)?;
        let mut netem = String::new();
        if let Some(d) = &self.delay_ms {
            netem += &format!(" delay {}ms", d.get_ref());
            if let Some(j) = &self.jitter_ms {
                netem += &format!(" {}ms", j.get_ref());
            }
        }
        if let Some(l) = &self.loss_percent {
            netem += &format!(" loss {}%", l.get_ref());
        }
        if let Some(c) = &self.corrupt_percent {
            netem += &format!(" corrupt {}%", c.get_ref());
        }
        if let Some(r) = &self.rate_kbit {
            netem += &format!(" rate {}kbit", r.get_ref());
        }
        guest(
            m,
            control(self.network),
            &format!("tc qdisc replace dev {nic} root netem{netem}"),
        )?;
        Ok(Some(format!(
            "netem on the guest's {nic} (outgoing):{netem}"
        )))
    }

    pub(super) fn summary(&self) -> String {
        format!("impair {}", nic(&self.machine, self.network))
    }
}

impl Nic {
    /// `clear-impairment`.
    pub(super) fn clear_impairment(&self, env: &Env) -> StepResult {
        let m = &machine(env, self.machine.get_ref());
        let nic = nic_name(m, self.network)?;
        guest(
            m,
            control(self.network),
            &format!("tc qdisc del dev {nic} root 2>/dev/null; true"),
        )?;
        Ok(Some(format!("netem removed from the guest's {nic}")))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Block {
    pub machine: MachineRef,
    pub network: NetworkRole,
    /// A TCP port of the machine.
    pub port: Option<Spanned<u16>>,
    /// `host` or a machine: everything from it.
    pub peer: Option<Origin>,
}

impl Block {
    pub(super) fn check(&self, c: &StepChecker) -> Result<()> {
        c.machine(&self.machine, false)?;
        match (&self.port, &self.peer) {
            (Some(p), None) if *p.get_ref() == 0 => {
                c.err(p.span(), "`port` = 0: expected 1 to 65535")
            }
            (Some(_), None) => Ok(()),
            (None, Some(peer)) => {
                c.origin(peer)?;
                if peer.get_ref() == self.machine.get_ref() {
                    return c.err(peer.span(), "a machine cannot block itself");
                }
                Ok(())
            }
            _ => c.err(
                self.machine.span(),
                "expected exactly one of `port` (a TCP port) or `peer` (\"host\" or a machine)",
            ),
        }
    }

    /// `on`: blocks; otherwise undoes the block.
    pub(super) fn run(&self, env: &Env, state: &mut State, on: bool) -> StepResult {
        let index = machine_index(self.machine.get_ref());
        let m = &env.machines()[index];
        let nic = nic_name(m, self.network)?;
        let (what, matcher) = match (&self.port, &self.peer) {
            (Some(port), _) => (
                format!("port {}", port.get_ref()),
                format!(
                    "match ip protocol 6 0xff match ip dport {} 0xffff",
                    port.get_ref()
                ),
            ),
            (None, Some(peer)) => {
                let ip = if peer.get_ref() == "host" {
                    network(env, self.network).gateway
                } else {
                    machine(env, peer.get_ref()).ip(self.network)?
                };
                (
                    format!("peer {} ({ip})", peer.get_ref()),
                    format!("match ip src {ip}/32"),
                )
            }
            _ => unreachable!("checked when parsed"),
        };
        let key = (index, self.network, what.clone());
        if on {
            if state.blocks.contains_key(&key) {
                return Ok(Some(format!("{what} was blocked already")));
            }
            state.next_pref += 1;
            let pref = 100 + state.next_pref;
            guest(
                m,
                control(self.network),
                &format!(
                    "tc qdisc add dev {nic} ingress 2>/dev/null; tc filter add dev {nic} parent ffff: pref {pref} protocol ip u32 {matcher} action drop"
                ),
            )?;
            state.blocks.insert(key, pref);
            Ok(Some(format!(
                "tc ingress filter on the guest's {nic} drops {what}"
            )))
        } else {
            let Some(pref) = state.blocks.remove(&key) else {
                return Ok(Some(format!("{what} was not blocked")));
            };
            guest(
                m,
                control(self.network),
                &format!("tc filter del dev {nic} parent ffff: pref {pref}"),
            )?;
            Ok(Some(format!("{what} unblocked on the guest's {nic}")))
        }
    }

    pub(super) fn summary(&self, verb: &str) -> String {
        format!(
            "{verb} {} on {}",
            self.port
                .as_ref()
                .map(|p| format!("port {}", p.get_ref()))
                .or_else(|| self.peer.as_ref().map(|p| format!("peer {}", p.get_ref())))
                .unwrap_or_default(),
            nic(&self.machine, self.network)
        )
    }
}
