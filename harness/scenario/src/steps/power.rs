//! Machine power: `start`, `stop` and `restart` (one machine, or `all`), and `recreate`.

use serde::Deserialize;

use mkh::blocking::{Env, Machine};

use super::running::{machine, machine_index, State, StepResult};
use super::{MachineRef, StepChecker};
use crate::error::Result;
use crate::run::machine_options;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Machines {
    pub machine: MachineRef,
}

/// What `start`, `stop` and `restart` do to each machine they name.
#[derive(Debug, Clone, Copy)]
pub(super) enum Power {
    Start,
    Stop,
    Restart,
}

impl Machines {
    pub(super) fn check(&self, c: &StepChecker) -> Result<()> {
        c.machine(&self.machine, true)
    }

    pub(super) fn run(&self, env: &Env, power: Power) -> StepResult {
        for m in selected(env, self.machine.get_ref()) {
            match power {
                Power::Start => m.start().map(|_| ())?,
                Power::Stop => m.stop()?,
                Power::Restart => m.restart().map(|_| ())?,
            }
        }
        Ok(None)
    }

    pub(super) fn summary(&self, power: Power) -> String {
        let verb = match power {
            Power::Start => "start",
            Power::Stop => "stop",
            Power::Restart => "restart",
        };
        format!("{verb} {}", self.machine.get_ref())
    }
}

fn selected(env: &Env, name: &str) -> Vec<Machine> {
    if name == "all" {
        env.machines()
    } else {
        vec![machine(env, name)]
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Recreate {
    pub machine: MachineRef,
    /// Wait until the new machine answers SSH on both networks (default); `false`: go on once
    /// its domain runs, while it boots.
    #[serde(default = "yes")]
    pub wait: bool,
}

fn yes() -> bool {
    true
}

impl Recreate {
    pub(super) fn check(&self, c: &StepChecker) -> Result<()> {
        c.builtin_only(self.machine.span(), "recreate")?;
        c.machine(&self.machine, false)
    }

    pub(super) fn run(&self, env: &mut Env, state: &State) -> StepResult {
        let index = machine_index(self.machine.get_ref());
        let name = env.machines()[index].name().to_owned();
        env.recreate_machine(&name, &machine_options(&state.settings, index), self.wait)?;
        Ok(Some(
            "domain removed and defined again: new MACs, same name and hostname".into(),
        ))
    }

    pub(super) fn summary(&self) -> String {
        format!("recreate {}", self.machine.get_ref())
    }
}
