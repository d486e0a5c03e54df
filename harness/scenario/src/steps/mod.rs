//! The step kinds, by family. Each family's file holds its steps' fields (as a file writes
//! them), their check when the file is parsed, how they run and their one-line summary. This
//! module names every kind once, in [`Step`], and hands each to its family; `checking.rs` and
//! `running.rs` hold what the families share.

mod addresses;
mod checking;
mod commands;
mod faults;
mod kubernetes;
mod networks;
mod power;
mod reachability;
mod running;

use serde::Deserialize;
use toml::Spanned;

use mkh::blocking::Env;
use mkh::NetworkRole;

use crate::error::Result;

pub(crate) use checking::StepChecker;
pub(crate) use running::{State, StepError, StepResult};

use addresses::{Dhcp, ExpectIp, IpFails, RememberIp};
use commands::{Run, Sleep};
use faults::{Block, Impair, Pair};
use kubernetes::{Apply, ClusterIp};
use networks::{Link, OnNetwork};
use power::{Machines, Power, Recreate};
use reachability::Reach;

/// A machine: `m1` … `mN`, in the order the environment makes them.
pub type MachineRef = Spanned<String>;

/// Where a reachability check starts: the host or a machine.
pub type Origin = Spanned<String>;

/// One step of a scenario. Steps that change something are verbs; checks start with
/// `expect-`, and those with `within_s` retry until they hold or the deadline passes.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Step {
    /// Starts a stopped machine (`machine = "all"`: every one).
    Start(Machines),
    /// Stops a machine (power off).
    Stop(Machines),
    /// Stops and starts a machine.
    Restart(Machines),
    /// Replaces a machine by a new one of the same name and hostname, with new MACs (what
    /// minikube does when it recreates a VM).
    Recreate(Recreate),
    /// Sets one NIC's link down or up.
    Link(Link),
    /// Stops one of the environment's networks (it stays defined).
    DestroyNetwork(OnNetwork),
    /// Starts a stopped network again.
    StartNetwork(OnNetwork),
    /// Cuts two machines off from each other on one network (both still reach the rest).
    Partition(Pair),
    /// Undoes a partition.
    Heal(Pair),
    /// Impairs one NIC's outgoing traffic.
    Impair(Impair),
    /// Removes a NIC's impairment.
    ClearImpairment(Nic),
    /// Asks a machine's DHCP client to renew its lease on one NIC, or to release it.
    Dhcp(Dhcp),
    /// Drops what reaches a machine's NIC on one port, or from one peer.
    Block(Block),
    /// Undoes a block.
    Unblock(Block),
    /// Runs a command over SSH, optionally checking its status and output.
    Run(Run),
    /// Remembers a machine's IP on a network under a name.
    RememberIp(RememberIp),
    /// Checks a machine's IP on a network.
    ExpectIp(ExpectIp),
    /// Checks that a machine answers ping (or a TCP connection, with `tcp_port`) over a network.
    ExpectReachable(Reach),
    /// Checks that it does not.
    ExpectUnreachable(Reach),
    /// Checks that SSH works over a network.
    ExpectSsh(Nic),
    /// Checks that asking for a machine's IP fails, with a message matching a pattern.
    ExpectIpFails(IpFails),
    /// Applies a Kubernetes object (server-side apply) to the cluster's API server.
    Apply(Apply),
    /// Checks a Service's ClusterIP.
    ExpectClusterIp(ClusterIp),
    /// Waits.
    Sleep(Sleep),
}

impl Step {
    /// Checks the step's references and values against the environment and the names the
    /// steps before it remembered.
    pub(crate) fn check(&self, c: &mut StepChecker) -> Result<()> {
        match self {
            Step::Start(m) | Step::Stop(m) | Step::Restart(m) => m.check(c),
            Step::Recreate(r) => r.check(c),
            Step::Link(l) => l.check(c),
            // Nothing to check beyond what parsing did: the network is `nat` or `private`.
            Step::DestroyNetwork(_) | Step::StartNetwork(_) => Ok(()),
            Step::Partition(p) | Step::Heal(p) => p.check(c),
            Step::Impair(i) => i.check(c),
            Step::ClearImpairment(n) | Step::ExpectSsh(n) => n.check(c),
            Step::Dhcp(d) => d.check(c),
            Step::Block(b) | Step::Unblock(b) => b.check(c),
            Step::Run(r) => r.check(c),
            Step::RememberIp(r) => r.check(c),
            Step::ExpectIp(e) => e.check(c),
            Step::ExpectReachable(r) | Step::ExpectUnreachable(r) => r.check(c),
            Step::ExpectIpFails(f) => f.check(c),
            Step::Apply(a) => a.check(c),
            Step::ExpectClusterIp(e) => e.check(c),
            Step::Sleep(s) => s.check(c),
        }
    }

    /// Runs the step: `Ok` with how it was done (for faults) when it passed.
    pub(crate) fn run(&self, env: &mut Env, state: &mut State) -> StepResult {
        match self {
            Step::Start(m) => m.run(env, Power::Start),
            Step::Stop(m) => m.run(env, Power::Stop),
            Step::Restart(m) => m.run(env, Power::Restart),
            Step::Recreate(r) => r.run(env, state),
            Step::Link(l) => l.run(env),
            Step::DestroyNetwork(n) => n.stop(env),
            Step::StartNetwork(n) => n.start(env),
            Step::Partition(p) => p.run(env, true),
            Step::Heal(p) => p.run(env, false),
            Step::Impair(i) => i.run(env),
            Step::ClearImpairment(n) => n.clear_impairment(env),
            Step::Dhcp(d) => d.run(env),
            Step::Block(b) => b.run(env, state, true),
            Step::Unblock(b) => b.run(env, state, false),
            Step::Run(r) => r.run(env, state),
            Step::RememberIp(r) => r.run(env, state),
            Step::ExpectIp(e) => e.run(env, state),
            Step::ExpectReachable(r) => r.run(env, true),
            Step::ExpectUnreachable(r) => r.run(env, false),
            Step::ExpectSsh(n) => n.expect_ssh(env),
            Step::ExpectIpFails(f) => f.run(env),
            Step::Apply(a) => a.run(env),
            Step::ExpectClusterIp(e) => e.run(env),
            Step::Sleep(s) => s.run(),
        }
    }

    /// Whether the step talks to the cluster's Kubernetes API server.
    pub(crate) fn talks_to_kube(&self) -> bool {
        matches!(self, Step::Apply(_) | Step::ExpectClusterIp(_))
    }

    /// Whether the step probes a guest from the host (which needs a route to its networks).
    pub(crate) fn probes_from_host(&self) -> bool {
        matches!(self, Step::ExpectReachable(r) | Step::ExpectUnreachable(r)
            if r.from.get_ref().as_str() == "host")
    }
}

/// A step in one line, for progress and reports.
pub fn summary(step: &Step) -> String {
    match step {
        Step::Start(m) => m.summary(Power::Start),
        Step::Stop(m) => m.summary(Power::Stop),
        Step::Restart(m) => m.summary(Power::Restart),
        Step::Recreate(r) => r.summary(),
        Step::Link(l) => l.summary(),
        Step::DestroyNetwork(n) => n.summary("destroy"),
        Step::StartNetwork(n) => n.summary("start"),
        Step::Partition(p) => p.summary("partition"),
        Step::Heal(p) => p.summary("heal"),
        Step::Impair(i) => i.summary(),
        Step::ClearImpairment(n) => n.summary("clear impairment"),
        Step::Dhcp(d) => d.summary(),
        Step::Block(b) => b.summary("block"),
        Step::Unblock(b) => b.summary("unblock"),
        Step::Run(r) => r.summary(),
        Step::RememberIp(r) => r.summary(),
        Step::ExpectIp(e) => e.summary(),
        Step::ExpectReachable(r) => r.summary("reachable"),
        Step::ExpectUnreachable(r) => r.summary("unreachable"),
        Step::ExpectSsh(n) => n.summary("expect SSH to"),
        Step::ExpectIpFails(f) => f.summary(),
        Step::Apply(a) => a.summary(),
        Step::ExpectClusterIp(e) => e.summary(),
        Step::Sleep(s) => s.summary(),
    }
}

/// One machine's NIC: `clear-impairment` (a fault) and `expect-ssh` (a check) name one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Nic {
    pub machine: MachineRef,
    pub network: NetworkRole,
    #[serde(default)]
    pub within_s: Option<Spanned<f64>>,
}

impl Nic {
    fn check(&self, c: &StepChecker) -> Result<()> {
        c.machine(&self.machine, false)?;
        c.seconds(&self.within_s, "within_s")
    }

    fn summary(&self, what: &str) -> String {
        format!("{what} {}", nic(&self.machine, self.network))
    }
}

/// A machine's NIC as summaries name it: `m1 private`.
fn nic(machine: &MachineRef, network: NetworkRole) -> String {
    format!("{} {}", machine.get_ref(), network.as_str())
}
