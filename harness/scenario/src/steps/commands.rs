//! Commands and waiting: `run` (a command over SSH, its status and output checked, its output
//! remembered) and `sleep`.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use mkh::blocking::Env;
use mkh::NetworkRole;

use super::running::{check, clip, machine, retrying, State, StepResult};
use super::{nic, MachineRef, StepChecker};
use crate::error::Result;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Run {
    pub machine: MachineRef,
    #[serde(default = "nat")]
    pub network: NetworkRole,
    pub command: Spanned<String>,
    /// The exit status it must end with (default: not checked).
    pub status: Option<Spanned<i64>>,
    /// A regular expression its standard output must match.
    pub stdout: Option<Spanned<String>>,
    /// Remember its standard output (trimmed) under this name.
    pub remember: Option<Spanned<String>>,
    pub within_s: Option<Spanned<f64>>,
}

fn nat() -> NetworkRole {
    NetworkRole::Nat
}

impl Run {
    pub(super) fn check(&self, c: &mut StepChecker) -> Result<()> {
        c.machine(&self.machine, false)?;
        if self.command.get_ref().trim().is_empty() {
            return c.err(self.command.span(), "`command` is empty");
        }
        if let Some(s) = &self.status {
            if !(0..=255).contains(s.get_ref()) {
                return c.err(
                    s.span(),
                    format!(
                        "`status` = {}: expected an exit status, 0 to 255",
                        s.get_ref()
                    ),
                );
            }
        }
        if let Some(p) = &self.stdout {
            c.regex(p)?;
        }
        c.seconds(&self.within_s, "within_s")?;
        if let Some(n) = &self.remember {
            c.new_name(n)?;
        }
        Ok(())
    }

    pub(super) fn run(&self, env: &Env, state: &mut State) -> StepResult {
        let m = &machine(env, self.machine.get_ref());
        let mut output = String::new();
        let result = retrying(&self.within_s, || {
            let out = m
                .ssh(self.network)?
                .exec_within(self.command.get_ref(), Duration::from_secs(120))?;
            if let Some(status) = &self.status {
                check(
                    i64::from(out.status) == *status.get_ref(),
                    format!("exit status {}", status.get_ref()),
                    format!("{} (stderr: {:?})", out.status, clip(&out.stderr)),
                )?;
            }
            if let Some(pattern) = &self.stdout {
                let re = regex::Regex::new(pattern.get_ref()).expect("checked when parsed");
                check(
                    re.is_match(&out.stdout),
                    format!("stdout matching /{}/", pattern.get_ref()),
                    format!("{:?}", clip(&out.stdout)),
                )?;
            }
            output = out.stdout.trim().to_owned();
            Ok(None)
        });
        if result.is_ok() {
            if let Some(name) = &self.remember {
                state.remembered.insert(name.get_ref().clone(), output);
            }
        }
        result
    }

    pub(super) fn summary(&self) -> String {
        format!(
            "run on {}: {}",
            nic(&self.machine, self.network),
            clip(self.command.get_ref())
        )
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Sleep {
    pub seconds: Spanned<f64>,
}

impl Sleep {
    pub(super) fn check(&self, c: &StepChecker) -> Result<()> {
        c.seconds(&Some(self.seconds.clone()), "seconds")
    }

    pub(super) fn run(&self) -> StepResult {
        std::thread::sleep(Duration::from_secs_f64(*self.seconds.get_ref()));
        Ok(None)
    }

    pub(super) fn summary(&self) -> String {
        format!("sleep {} s", self.seconds.get_ref())
    }
}
