//! What the steps share as they run: what they leave for later steps, how a step fails, the
//! machines and networks they name, commands in a guest, and retrying a check until its
//! deadline.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use mkh::blocking::{Env, Machine};
use mkh::{NetworkRole, Settings};

use crate::error::{Error, Result};

/// What the steps leave for later steps.
pub(crate) struct State {
    /// The environment's settings (for machines made again).
    pub(super) settings: Settings,
    pub(super) remembered: BTreeMap<String, String>,
    /// Active blocks: (machine, network, what) → the ingress filter's preference.
    pub(super) blocks: HashMap<(usize, NetworkRole, String), u32>,
    pub(super) next_pref: u32,
}

impl State {
    pub(crate) fn new(settings: Settings) -> Self {
        State {
            settings,
            remembered: BTreeMap::new(),
            blocks: HashMap::new(),
            next_pref: 0,
        }
    }
}

/// A step that did not pass.
pub(crate) enum StepError {
    /// A check did not hold.
    Check { expected: String, seen: String },
    /// Something could not be done.
    Mkh(Error),
}

impl From<Error> for StepError {
    fn from(e: Error) -> Self {
        StepError::Mkh(e)
    }
}

impl From<mkh::Error> for StepError {
    fn from(e: mkh::Error) -> Self {
        StepError::Mkh(e.into())
    }
}

/// How a step went: `Ok` with how it was done (for faults), if that is worth saying.
pub(crate) type StepResult = std::result::Result<Option<String>, StepError>;

pub(super) fn machine_index(name: &str) -> usize {
    name.trim_start_matches('m').parse::<usize>().unwrap_or(1) - 1
}

pub(super) fn machine(env: &Env, name: &str) -> Machine {
    env.machines().swap_remove(machine_index(name))
}

pub(super) fn network(env: &Env, role: NetworkRole) -> &mkh::NetworkInfo {
    let pair = env.networks();
    match role {
        NetworkRole::Nat => &pair.nat,
        NetworkRole::Private => &pair.private,
    }
}

/// The network a fault on `role` is set up over: the other one.
pub(super) fn control(role: NetworkRole) -> NetworkRole {
    match role {
        NetworkRole::Nat => NetworkRole::Private,
        NetworkRole::Private => NetworkRole::Nat,
    }
}

/// Runs a shell command in a guest as `docker`; fails unless it exits 0.
pub(super) fn guest(m: &Machine, over: NetworkRole, command: &str) -> Result<String> {
    let out = m.ssh(over)?.exec_within(command, Duration::from_secs(60))?;
    if out.status == 0 {
        Ok(out.stdout)
    } else {
        Err(Error::GuestCommand {
            machine: m.name().to_owned(),
            command: command.to_owned(),
            status: out.status,
            stderr: out.stderr.trim().to_owned(),
        })
    }
}

/// The guest's name for the NIC on `role` (found by its MAC).
pub(super) fn nic_name(m: &Machine, role: NetworkRole) -> Result<String> {
    let mac = m.mac(role).to_ascii_lowercase();
    let found = guest(
        m,
        control(role),
        &format!(
            "for d in /sys/class/net/*; do [ \"$(cat $d/address)\" = {mac} ] && echo \"${{d##*/}}\"; done; true"
        ),
    )?;
    found
        .lines()
        .next()
        .map(str::to_owned)
        .ok_or_else(|| Error::GuestCommand {
            machine: m.name().to_owned(),
            command: format!("find the NIC with MAC {mac}"),
            status: 1,
            stderr: "no interface has that MAC".into(),
        })
}

/// Tries until an attempt passes or `within` seconds have passed (once, without `within`).
pub(super) fn retrying(
    within: &Option<toml::Spanned<f64>>,
    mut attempt: impl FnMut() -> StepResult,
) -> StepResult {
    let deadline = within
        .as_ref()
        .map(|s| Instant::now() + Duration::from_secs_f64(*s.get_ref()));
    loop {
        let result = attempt();
        match (&result, deadline) {
            (Ok(_), _) | (_, None) => return result,
            (Err(_), Some(d)) if Instant::now() >= d => return result,
            _ => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// Passes when `holds`; otherwise fails with what was expected and what was seen.
pub(super) fn check(
    holds: bool,
    expected: impl Into<String>,
    seen: impl Into<String>,
) -> StepResult {
    if holds {
        Ok(None)
    } else {
        Err(StepError::Check {
            expected: expected.into(),
            seen: seen.into(),
        })
    }
}

/// At most 300 characters of `s`, trimmed, for a message.
pub(super) fn clip(s: &str) -> String {
    const MAX: usize = 300;
    let s = s.trim();
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}
