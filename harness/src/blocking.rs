//! The same environments for code without an async runtime: sync tests, the CLI. Each call
//! blocks the calling thread; they share the core of the async API.
//!
//! ```no_run
//! use mkh::{Env, MachineOptions, NetworkRole};
//!
//! let env = Env::builder().guest(MachineOptions::default()).up_blocking()?;
//! let machine = env.machine().expect("a guest was booted");
//! let out = machine.ssh(NetworkRole::Nat)?.exec("id -un")?;
//! assert_eq!(out.stdout.trim(), "docker");
//! # Ok::<(), mkh::Error>(())
//! ```

use std::net::Ipv4Addr;
use std::path::Path;

use crate::{
    DhcpLease, EnvDescription, ExecOutput, Ips, MachineOptions, NetworkPair, NetworkRole, Result,
    Settings,
};

/// A live environment (see [`crate::Env`]); dropping it removes everything it created (an
/// attached one stays).
#[derive(Debug)]
pub struct Env {
    inner: crate::Env,
}

impl From<crate::Env> for Env {
    fn from(inner: crate::Env) -> Self {
        Env { inner }
    }
}

impl Env {
    /// See [`crate::Env::attach`].
    pub fn attach(name: &str, settings: Settings) -> Result<Env> {
        crate::Env::attach_now(name, settings).map(Env::from)
    }

    /// The async handle on the same environment.
    pub fn as_async(&self) -> &crate::Env {
        &self.inner
    }

    /// The environment's name.
    pub fn name(&self) -> &str {
        self.inner.name()
    }

    /// Its two networks.
    pub fn networks(&self) -> &NetworkPair {
        self.inner.networks()
    }

    /// The environment's directory.
    pub fn home(&self) -> &Path {
        self.inner.home()
    }

    /// The first machine, if the environment has one.
    pub fn machine(&self) -> Option<Machine> {
        self.inner.machine().cloned().map(Machine)
    }

    /// Every machine.
    pub fn machines(&self) -> Vec<Machine> {
        self.inner.machines().iter().cloned().map(Machine).collect()
    }

    /// See [`crate::Env::add_machine`].
    pub fn add_machine(&mut self, options: &MachineOptions) -> Result<Machine> {
        self.inner.add_machine_now(options).cloned().map(Machine)
    }

    /// See [`crate::Env::remove_machine`].
    pub fn remove_machine(&mut self, name: &str) -> Result<()> {
        self.inner.remove_machine_now(name)
    }

    /// See [`crate::Env::recreate_machine`].
    pub fn recreate_machine(
        &mut self,
        name: &str,
        options: &MachineOptions,
        wait_ready: bool,
    ) -> Result<Machine> {
        self.inner
            .recreate_machine_now(name, options, wait_ready)
            .cloned()
            .map(Machine)
    }

    /// See [`crate::Env::dhcp_lease_time`].
    pub fn dhcp_lease_time(&self) -> Option<std::time::Duration> {
        self.inner.dhcp_lease_time()
    }

    /// See [`crate::Env::stop_network`].
    pub fn stop_network(&self, role: NetworkRole) -> Result<()> {
        self.inner.stop_network_now(role)
    }

    /// See [`crate::Env::start_network`].
    pub fn start_network(&self, role: NetworkRole) -> Result<()> {
        self.inner.start_network_now(role)
    }

    /// See [`crate::Env::leases`].
    pub fn leases(&self, role: NetworkRole) -> Result<Vec<DhcpLease>> {
        self.inner.leases_now(role)
    }

    /// See [`crate::Env::collect_artifacts`].
    pub fn collect_artifacts(&self, problem: &str) -> Option<std::path::PathBuf> {
        self.inner.collect_artifacts_now(problem)
    }

    /// See [`crate::Env::stop`].
    pub fn stop(&self) -> Result<()> {
        self.inner.stop_now()
    }

    /// See [`crate::Env::start`].
    pub fn start(&mut self) -> Result<Ips> {
        self.inner.start_now()
    }

    /// See [`crate::Env::describe`].
    pub fn describe(&self) -> Result<EnvDescription> {
        self.inner.describe_now()
    }

    /// See [`crate::Env::hand_over_to_cli`].
    pub fn hand_over_to_cli(self) -> Result<EnvDescription> {
        self.inner.hand_over_now()
    }

    /// See [`crate::Env::teardown`].
    pub fn teardown(mut self) -> Result<()> {
        self.inner.teardown_now()
    }
}

/// A machine (see [`crate::Machine`]).
#[derive(Debug, Clone)]
pub struct Machine(pub(crate) crate::Machine);

impl Machine {
    /// The async handle on the same machine.
    pub fn as_async(&self) -> &crate::Machine {
        &self.0
    }

    /// The domain's name.
    pub fn name(&self) -> &str {
        self.0.name()
    }

    /// See [`crate::Machine::ip`].
    pub fn ip(&self, role: NetworkRole) -> Result<Ipv4Addr> {
        self.0.ip_now(role)
    }

    /// See [`crate::Machine::ip_within`].
    pub fn ip_within(&self, role: NetworkRole, deadline: std::time::Duration) -> Result<Ipv4Addr> {
        self.0.ip_within_now(role, deadline)
    }

    /// See [`crate::Machine::mac`].
    pub fn mac(&self, role: NetworkRole) -> &str {
        self.0.mac(role)
    }

    /// See [`crate::Machine::ips`].
    pub fn ips(&self) -> Result<Ips> {
        self.0.ips_now()
    }

    /// See [`crate::Machine::ssh`].
    pub fn ssh(&self, role: NetworkRole) -> Result<SshSession> {
        self.0.ssh_now(role).map(SshSession)
    }

    /// See [`crate::Machine::stop`].
    pub fn stop(&self) -> Result<()> {
        self.0.stop_now()
    }

    /// See [`crate::Machine::start`].
    pub fn start(&self) -> Result<Ips> {
        self.0.start_now()
    }

    /// See [`crate::Machine::restart`].
    pub fn restart(&self) -> Result<Ips> {
        self.0.restart_now()
    }

    /// See [`crate::Machine::set_link`].
    pub fn set_link(&self, role: NetworkRole, up: bool) -> Result<()> {
        self.0.set_link_now(role, up)
    }
}

/// An SSH session (see [`crate::SshSession`]).
#[derive(Debug, Clone)]
pub struct SshSession(pub(crate) crate::SshSession);

impl SshSession {
    /// See [`crate::SshSession::exec`].
    pub fn exec(&self, command: &str) -> Result<ExecOutput> {
        self.0.exec_now(command)
    }

    /// See [`crate::SshSession::exec_within`].
    pub fn exec_within(&self, command: &str, deadline: std::time::Duration) -> Result<ExecOutput> {
        self.0.exec_within_now(command, deadline)
    }

    /// See [`crate::SshSession::exec_streaming`].
    pub fn exec_streaming(
        &self,
        command: &str,
        stdin: Option<Box<dyn std::io::Read + Send>>,
        stdout: &mut dyn std::io::Write,
        stderr: &mut dyn std::io::Write,
    ) -> Result<i32> {
        self.0.exec_streaming_now(command, stdin, stdout, stderr)
    }
}
