//! Links and networks, changed through libvirt rather than inside the guests: `link` (one
//! NIC's link state), `destroy-network` and `start-network`.

use serde::Deserialize;

use mkh::blocking::Env;
use mkh::NetworkRole;

use super::running::{machine, StepResult};
use super::{nic, MachineRef, StepChecker};
use crate::error::Result;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Link {
    pub machine: MachineRef,
    pub network: NetworkRole,
    /// `true`: up, `false`: down.
    pub up: bool,
}

impl Link {
    pub(super) fn check(&self, c: &StepChecker) -> Result<()> {
        c.machine(&self.machine, false)
    }

    pub(super) fn run(&self, env: &Env) -> StepResult {
        machine(env, self.machine.get_ref()).set_link(self.network, self.up)?;
        Ok(Some("libvirt link state of the NIC".into()))
    }

    pub(super) fn summary(&self) -> String {
        format!(
            "link {} {}",
            nic(&self.machine, self.network),
            if self.up { "up" } else { "down" }
        )
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct OnNetwork {
    pub network: NetworkRole,
}

impl OnNetwork {
    /// `destroy-network`.
    pub(super) fn stop(&self, env: &Env) -> StepResult {
        env.stop_network(self.network)?;
        Ok(None)
    }

    /// `start-network`.
    pub(super) fn start(&self, env: &Env) -> StepResult {
        env.start_network(self.network)?;
        Ok(None)
    }

    pub(super) fn summary(&self, verb: &str) -> String {
        format!("{verb} network {}", self.network.as_str())
    }
}
