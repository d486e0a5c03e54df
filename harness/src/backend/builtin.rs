//! The built-in guest: mkh boots its own small VM on the environment's networks.

use std::path::PathBuf;

use crate::env::{EnvCore, Timings};
use crate::error::{Error, Result};
use crate::machine::{console_log_path, Ips, Machine, MachineOptions};

/// The built-in guest, or no machine at all (`options` is `None`: the networks alone).
#[derive(Debug)]
pub(super) struct BuiltinGuest {
    pub options: Option<MachineOptions>,
}

impl super::ClusterBackend for BuiltinGuest {
    fn name(&self) -> &'static str {
        "builtin"
    }

    fn bring_up(&self, env: &EnvCore, timings: &mut Timings) -> Result<Vec<Machine>> {
        match &self.options {
            None => Ok(Vec::new()),
            Some(options) => Ok(vec![env.boot_machine(options, &[], timings)?]),
        }
    }

    fn stop(&self, _env: &EnvCore, machines: &[Machine]) -> Result<()> {
        machines.iter().try_for_each(Machine::stop_now)
    }

    fn start(&self, env: &EnvCore, machines: &[Machine]) -> Result<Ips> {
        let Some((first, rest)) = machines.split_first() else {
            return Err(Error::InvalidInput {
                what: "environment",
                value: env.name.clone(),
                problem: "it has no machine to start".into(),
                fix: "bring one up with `.guest(..)` or `.minikube(..)`",
            });
        };
        let ips = first.start_now()?;
        for m in rest {
            m.start_now()?;
        }
        Ok(ips)
    }

    fn console_log(&self, env: &EnvCore, domain: &str) -> Option<PathBuf> {
        Some(console_log_path(&env.home, domain))
    }
}
