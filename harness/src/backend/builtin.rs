//! The built-in guest: mkh boots its own small VM on the environment's networks.

use std::path::PathBuf;
use std::time::Instant;

use crate::env::{wait_ready_timed, EnvCore, Timings};
use crate::error::{Error, Result};
use crate::machine::{console_log_path, BootContext, Machine, MachineFiles, MachineOptions};

/// The built-in guest, or no machine at all (`options` is `None`: the networks alone, or an
/// attached environment whose machines exist already).
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
            Some(options) => Ok(vec![self.add_machine(env, options, &[], timings)?]),
        }
    }

    fn add_machine(
        &self,
        env: &EnvCore,
        options: &MachineOptions,
        existing: &[String],
        timings: &mut Timings,
    ) -> Result<Machine> {
        let machine = start_machine(env, options, existing, timings)?;
        wait_ready_timed(&machine, timings)?;
        Ok(machine)
    }

    fn recreate_machine(
        &self,
        env: &EnvCore,
        options: &MachineOptions,
        others: &[String],
        wait_ready: bool,
    ) -> Result<Machine> {
        let mut timings = Timings::default();
        let machine = start_machine(env, options, others, &mut timings)?;
        if wait_ready {
            wait_ready_timed(&machine, &mut timings)?;
        }
        Ok(machine)
    }

    fn stop(&self, _env: &EnvCore, machines: &[Machine]) -> Result<()> {
        machines.iter().try_for_each(Machine::stop_now)
    }

    fn start(&self, env: &EnvCore, machines: &[Machine]) -> Result<super::Started> {
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
        Ok(super::Started {
            ips,
            machines: machines.to_vec(),
        })
    }

    fn machine_files(&self, env: &EnvCore, domain: &str) -> MachineFiles {
        MachineFiles::builtin(&env.lv, &env.home, domain)
    }

    fn console_log(&self, env: &EnvCore, domain: &str) -> Option<PathBuf> {
        Some(console_log_path(&env.home, domain))
    }
}

/// Defines and starts a machine of the built-in guest on the environment's networks, without
/// waiting for its leases and SSH. Its name is the environment's, with `-<suffix>` if given.
fn start_machine(
    env: &EnvCore,
    options: &MachineOptions,
    existing: &[String],
    timings: &mut Timings,
) -> Result<Machine> {
    let name = match &options.suffix {
        Some(suffix) => format!("{}-{suffix}", env.name),
        None => env.name.clone(),
    };
    if existing.contains(&name) {
        return Err(Error::InvalidInput {
            what: "machine name",
            value: name,
            problem: "this environment already has a machine of that name".into(),
            fix: "give each added machine its own suffix",
        });
    }
    let owner = env.owner();
    let ctx = BootContext {
        lv: &env.lv,
        accel: env.accel(),
        networks: &env.networks(),
        home: &env.home,
        owner: &owner,
        cache_dir: &env.settings.cache_dir,
        timeouts: env.timeouts(),
        generation: env.generation(&name),
    };
    let started = Instant::now();
    let machine = Machine::boot_builtin(&ctx, options, &name, &mut |dom| {
        let _ = env.registered(|r| r.add_domain(dom));
    })?;
    timings.define_start = Some(started.elapsed());
    Ok(machine)
}
