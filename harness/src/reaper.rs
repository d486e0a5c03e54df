//! The reaper removes what dead owners left: objects whose owner process is gone (pid dead, or
//! alive with another start time, or the host rebooted since). It never touches an object that
//! mkh's metadata does not claim, whatever its name, and never one whose owner it cannot judge
//! (another host). It judges an environment whole: a creation, hand-over or `mkh down` cut
//! short leaves objects with different owners, and they go or stay together. Concurrent
//! reapers do not fail each other: an object already gone is fine.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Mutex;

use serde::Serialize;

use crate::error::Result;
use crate::inventory::{claimed_objects, ClaimedObject, ObjectKind};
use crate::libvirt::{Libvirt, Removal};
use crate::owner::{process_start_time, HostIdentity, Liveness, Owner, OwnerKind, ProcessIdentity};

/// What a sweep may remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "admin"), allow(dead_code))] // `mkh reap --all`.
pub enum ReapScope {
    /// Objects of dead process owners.
    DeadOwners,
    /// Also CLI-owned environments (`mkh up`), live or not.
    IncludingCli,
}

/// Which owners' objects a sweep looks at (the verdict still decides).
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "admin"), allow(dead_code))] // `mkh reap --run`.
pub enum Which<'a> {
    /// Every owner's.
    All,
    /// One run's (`mkh reap --run ID`).
    Run(&'a str),
    /// One process's (the watchdog of that process).
    Process(&'a ProcessIdentity),
}

impl Which<'_> {
    fn takes(&self, owner: &Owner) -> bool {
        match self {
            Which::All => true,
            Which::Run(run) => owner.run_id == *run,
            Which::Process(p) => owner.process == **p,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Reap(String),
    Keep(String),
}

/// What the owners of one environment's objects, taken together, say about it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum EnvState {
    /// A live process owns part of it: it is being made, handed over or taken over.
    Busy(String),
    /// A process that owned part of it is dead and no live one owns any: its creation, its
    /// hand-over to the CLI or its `mkh down` was cut short. It goes whole.
    Abandoned(String),
    /// Only CLI owners (or owners that cannot be judged from here): judged object by object.
    Settled,
}

fn env_state(
    objects: &[&ClaimedObject],
    here: &HostIdentity,
    host: &impl HostProcesses,
) -> EnvState {
    let mut dead = None;
    for obj in objects
        .iter()
        .filter(|o| o.owner.kind == OwnerKind::Process)
    {
        let pid = obj.owner.process.pid;
        match obj.owner.liveness(here, |pid| host.start_time_of(pid)) {
            Liveness::Alive => {
                return EnvState::Busy(format!(
                    "owner pid {pid} is alive and holds this environment"
                ))
            }
            // It collects the artifacts first: leave it to the watchdog.
            Liveness::Dead(_) if host.watchdog_of(pid) => {
                return EnvState::Busy(format!(
                    "owner pid {pid} is dead and its watchdog is removing this environment"
                ))
            }
            Liveness::Dead(why) => {
                dead.get_or_insert(why);
            }
            Liveness::Unknown(_) => {}
        }
    }
    let changing_hands = objects.iter().any(|o| o.owner.kind == OwnerKind::Cli);
    match dead {
        Some(why) if changing_hands => EnvState::Abandoned(format!(
            "{why} while the environment changed hands (hand-over to the CLI or `mkh down`)"
        )),
        Some(why) => EnvState::Abandoned(why),
        None => EnvState::Settled,
    }
}

/// What the reaper asks of this host's processes.
pub trait HostProcesses {
    /// The start time of process `pid`, if it runs.
    fn start_time_of(&self, pid: u32) -> Option<u64>;
    /// Whether another process is the watchdog of (dead) owner `pid`.
    fn watchdog_of(&self, pid: u32) -> bool;
}

/// This host's processes, read from `/proc`.
struct Proc;

impl HostProcesses for Proc {
    fn start_time_of(&self, pid: u32) -> Option<u64> {
        process_start_time(pid)
    }

    fn watchdog_of(&self, pid: u32) -> bool {
        crate::watchdog::running_for(pid)
    }
}

/// The reaper's decisions for `objects` (libvirt's and homes), a pure function of their owners
/// and this host. An environment is judged whole, from all its objects' owners: a live process
/// owning any part keeps all of it (even from `reap --all`); a dead one with no live one gives
/// all of it up, CLI-owned parts included (a change of hands was cut short), unless that dead
/// owner's watchdog is at work on it. `which` selects
/// environments: those with at least one object it takes.
pub fn judge<'a>(
    objects: &'a [ClaimedObject],
    scope: ReapScope,
    which: Which,
    here: &HostIdentity,
    host: &impl HostProcesses,
) -> Vec<(&'a ClaimedObject, Verdict)> {
    let mut by_env: BTreeMap<&str, Vec<&ClaimedObject>> = BTreeMap::new();
    for obj in objects {
        by_env.entry(obj.owner.env.as_str()).or_default().push(obj);
    }
    let mut judged = Vec::new();
    for env_objects in by_env.into_values() {
        if !env_objects.iter().any(|o| which.takes(&o.owner)) {
            continue;
        }
        let state = env_state(&env_objects, here, host);
        for obj in env_objects {
            judged.push((obj, verdict(obj, &state, scope, here)));
        }
    }
    judged.sort_by_key(|(o, _)| o.kind);
    judged
}

fn verdict(obj: &ClaimedObject, env: &EnvState, scope: ReapScope, here: &HostIdentity) -> Verdict {
    if obj.owner.process.host != here.host {
        return Verdict::Keep(format!(
            "owner is on host {:?}: only mkh there may remove it",
            obj.owner.process.host
        ));
    }
    match env {
        EnvState::Busy(why) => return Verdict::Keep(why.clone()),
        EnvState::Abandoned(why) => return Verdict::Reap(why.clone()),
        EnvState::Settled => {}
    }
    match (obj.owner.kind, scope) {
        (OwnerKind::Cli, ReapScope::IncludingCli) => {
            Verdict::Reap("CLI-owned environment, `reap --all`".into())
        }
        (OwnerKind::Cli, ReapScope::DeadOwners) => {
            Verdict::Keep("CLI-owned environment: `mkh down` or `mkh reap --all` removes it".into())
        }
        // A settled environment's process owners are those that cannot be judged here.
        (OwnerKind::Process, _) => Verdict::Keep(format!(
            "owner pid {} cannot be judged from this host",
            obj.owner.process.pid
        )),
    }
}

/// One object a sweep judged.
#[derive(Debug, Clone, Serialize)]
pub struct Reaped {
    /// Domain, network or home.
    pub kind: ObjectKind,
    /// Its name.
    pub name: String,
    /// Its environment (empty for a console log whose domain is gone: nothing names it).
    pub env: String,
    /// Why it was removed or kept.
    pub reason: String,
}

/// What a sweep did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ReapReport {
    /// Removed objects.
    pub removed: Vec<Reaped>,
    /// Objects kept, with why.
    pub kept: Vec<Reaped>,
    /// Removals that failed.
    pub errors: Vec<String>,
}

/// The file in every environment home that names its owner.
pub const OWNER_RECORD: &str = "owner.json";

/// The environment homes under this user's state directory, each claimed by its owner record.
pub(crate) fn home_objects(state_dir: &Path) -> Vec<ClaimedObject> {
    let Ok(entries) = std::fs::read_dir(state_dir.join("envs")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let home = entry.path();
            Some(ClaimedObject {
                kind: ObjectKind::Home,
                name: home.display().to_string(),
                active: false,
                owner: home_owner(&home)?,
                subnets: Vec::new(),
            })
        })
        .collect()
}

fn home_owner(home: &Path) -> Option<Owner> {
    let text = std::fs::read_to_string(home.join(OWNER_RECORD)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Removes a home judged from its record, if the record is unchanged: first the processes
/// started for it (any process naming a file inside it, such as a minikube stand-in's etcd
/// and API server), then the directory.
fn remove_home(home: &Path, judged: &Owner) -> std::io::Result<Removal> {
    match home_owner(home) {
        None if !home.exists() => return Ok(Removal::AlreadyGone),
        Some(owner) if owner != *judged => return Ok(Removal::Changed),
        _ => {}
    }
    for pid in processes_naming(home) {
        kill_process(pid);
    }
    match std::fs::remove_dir_all(home) {
        Ok(()) => Ok(Removal::Removed),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Removal::AlreadyGone),
        Err(e) => Err(e),
    }
}

/// Processes (other than this one) with an argument, or an environment variable's value,
/// inside `dir` (a `minikube start` names its MINIKUBE_HOME only in its environment).
fn processes_naming(dir: &Path) -> Vec<i32> {
    let prefix = format!("{}/", dir.display());
    let names_it = |raw: &[u8]| {
        raw.split(|b| *b == 0)
            .any(|field| String::from_utf8_lossy(field).contains(&prefix))
    };
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            ["cmdline", "environ"].iter().any(|file| {
                std::fs::read(format!("/proc/{pid}/{file}")).is_ok_and(|raw| names_it(&raw))
            })
        })
        .collect()
}

fn kill_process(pid: i32) {
    use nix::sys::signal::{kill, Signal};
    let pid = nix::unistd::Pid::from_raw(pid);
    if kill(pid, Signal::SIGTERM).is_err() {
        return;
    }
    for _ in 0..50 {
        if kill(pid, None).is_err() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = kill(pid, Signal::SIGKILL);
}

/// What a sweep over `objects` would remove, with why, removing nothing (`mkh doctor`).
#[cfg_attr(not(feature = "admin"), allow(dead_code))] // The `mkh` command's.
pub(crate) fn would_reap<'a>(
    objects: &'a [ClaimedObject],
    scope: ReapScope,
    which: Which,
) -> Vec<(&'a ClaimedObject, String)> {
    judge(objects, scope, which, &HostIdentity::current(), &Proc)
        .into_iter()
        .filter_map(|(o, v)| match v {
            Verdict::Reap(why) => Some((o, why)),
            Verdict::Keep(_) => None,
        })
        .collect()
}

/// One sweep over libvirt's objects (domains first, then the networks they sit on) and, for a
/// local hypervisor, this user's environment homes under `state_dir`, judged environment by
/// environment (see [`judge`]). libvirt's `test:///` driver holds no real machines: a sweep over
/// it never touches homes or processes.
pub fn sweep(lv: &Libvirt, scope: ReapScope, which: Which, state_dir: &Path) -> Result<ReapReport> {
    let here = HostIdentity::current();
    let mut objects = claimed_objects(lv)?;
    if lv.is_local() && !lv.is_test_driver() {
        objects.extend(home_objects(state_dir));
    }
    // A minikube still running for a dead owner (its home's processes) would make again the
    // domains and the private network removed below: end those processes first, then look
    // again at what libvirt holds.
    let mut killed = false;
    for (obj, verdict) in judge(&objects, scope, which, &here, &Proc) {
        if obj.kind == ObjectKind::Home && matches!(verdict, Verdict::Reap(_)) {
            let home = Path::new(&obj.name);
            if home_owner(home).as_ref() == Some(&obj.owner) {
                for pid in processes_naming(home) {
                    kill_process(pid);
                    killed = true;
                }
            }
        }
    }
    if killed {
        objects = claimed_objects(lv)?;
        objects.extend(home_objects(state_dir));
    }
    let mut report = ReapReport::default();
    for (obj, verdict) in judge(&objects, scope, which, &here, &Proc) {
        let entry = |reason: String| Reaped {
            kind: obj.kind,
            name: obj.name.clone(),
            env: obj.owner.env.clone(),
            reason,
        };
        let why = match verdict {
            Verdict::Keep(why) => {
                report.kept.push(entry(why));
                continue;
            }
            Verdict::Reap(why) => why,
        };
        // Judged from a listing: remove only if the object still has the owner it was
        // judged by (a name may have been reused, or an environment changed hands, since).
        let unchanged = |xml: &str| match Owner::from_object_xml(xml) {
            Some(owner) => owner == obj.owner,
            // A minikube domain claimed by the profile rule, and the private network minikube
            // made again under mkh's name, carry no record (see `claimed_objects`).
            None => matches!(obj.kind, ObjectKind::Domain | ObjectKind::Network),
        };
        let removal = match obj.kind {
            ObjectKind::Domain => crate::machine::pool::remove_domain(lv, &obj.name, unchanged),
            ObjectKind::Network => lv.remove_network_if(&obj.name, unchanged),
            ObjectKind::Home => remove_home(Path::new(&obj.name), &obj.owner)
                .map_err(|e| crate::error::Error::io(&obj.name, e)),
            // Volumes carry no owner record: never judged, see below.
            ObjectKind::Volume => Ok(Removal::AlreadyGone),
        };
        match removal {
            Ok(Removal::Removed) => report.removed.push(entry(why)),
            Ok(Removal::AlreadyGone | Removal::Changed) => {}
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    // On a remote host: console logs whose domain is gone, whoever's they were.
    match crate::machine::pool::sweep_orphan_consoles(lv) {
        Ok(removed) => report
            .removed
            .extend(removed.into_iter().map(|name| Reaped {
                kind: ObjectKind::Volume,
                reason: format!(
                    "the console log of domain {}, which is gone",
                    crate::machine::pool::console_domain(&name).unwrap_or("?")
                ),
                name,
                env: String::new(),
            })),
        Err(e) => report.errors.push(e.to_string()),
    }
    Ok(report)
}

/// The sweep every mkh process runs once per libvirt URI before it creates objects there.
pub fn sweep_once(lv: &Libvirt, state_dir: &Path) {
    static SWEPT: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let first = SWEPT
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(lv.uri().to_owned());
    if !first {
        return;
    }
    match sweep(lv, ReapScope::DeadOwners, Which::All, state_dir) {
        Ok(report) => {
            for r in &report.removed {
                tracing::info!(object = %r.name, env = %r.env, reason = %r.reason, "reaped a dead owner's object");
            }
            for e in &report.errors {
                tracing::warn!("reaper: {e}");
            }
        }
        Err(e) => tracing::warn!("reaper could not sweep: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::owner::{Owner, ProcessIdentity};

    fn obj(kind: ObjectKind, owner: OwnerKind, pid: u32, start: u64) -> ClaimedObject {
        ClaimedObject {
            kind,
            name: format!("mkh-abcdef-{kind:?}"),
            active: true,
            owner: Owner {
                process: ProcessIdentity {
                    host: "h".into(),
                    boot_id: "b".into(),
                    pid,
                    start_time: start,
                },
                run_id: "r".into(),
                test: None,
                created: 0,
                kind: owner,
                env: "mkh-abcdef".into(),
                home: None,
                profile: None,
                minikube: None,
            },
            subnets: Vec::new(),
        }
    }

    fn here() -> HostIdentity {
        HostIdentity {
            host: "h".into(),
            boot_id: "b".into(),
        }
    }

    /// Processes that run (pid 10 started at tick 5, any other at 7) and watchdogs.
    struct Seen<'a> {
        alive: &'a [u32],
        watchdogs: &'a [u32],
    }

    impl HostProcesses for Seen<'_> {
        fn start_time_of(&self, pid: u32) -> Option<u64> {
            self.alive
                .contains(&pid)
                .then_some(if pid == 10 { 5 } else { 7 })
        }
        fn watchdog_of(&self, pid: u32) -> bool {
            self.watchdogs.contains(&pid)
        }
    }

    const NONE: Seen = Seen {
        alive: &[],
        watchdogs: &[],
    };

    /// Whether each object would be reaped, with processes `alive` running.
    fn reaped(objects: &[ClaimedObject], scope: ReapScope, alive: &[u32]) -> Vec<bool> {
        reaped_with(
            objects,
            scope,
            &Seen {
                alive,
                watchdogs: &[],
            },
        )
    }

    fn reaped_with(objects: &[ClaimedObject], scope: ReapScope, seen: &Seen) -> Vec<bool> {
        let judged = judge(objects, scope, Which::All, &here(), seen);
        objects
            .iter()
            .map(|o| {
                let (_, v) = judged.iter().find(|(j, _)| j.name == o.name).unwrap();
                matches!(v, Verdict::Reap(_))
            })
            .collect()
    }

    #[test]
    fn dead_or_reused_pids_are_reaped_live_ones_kept() {
        let o = [obj(ObjectKind::Network, OwnerKind::Process, 10, 5)];
        assert_eq!(reaped(&o, ReapScope::DeadOwners, &[10]), [false]);
        assert_eq!(reaped(&o, ReapScope::DeadOwners, &[]), [true]);
        let reused = [obj(ObjectKind::Network, OwnerKind::Process, 10, 4)];
        assert_eq!(reaped(&reused, ReapScope::DeadOwners, &[10]), [true]);
        // --all does not touch live processes' objects either.
        assert_eq!(reaped(&o, ReapScope::IncludingCli, &[10]), [false]);
    }

    #[test]
    fn cli_environments_only_go_with_all() {
        let o = [obj(ObjectKind::Network, OwnerKind::Cli, 10, 5)];
        assert_eq!(reaped(&o, ReapScope::DeadOwners, &[]), [false]);
        assert_eq!(reaped(&o, ReapScope::IncludingCli, &[]), [true]);
    }

    #[test]
    fn a_change_of_hands_cut_short_goes_whole() {
        // A hand-over to the CLI killed half-way: some objects already the CLI's.
        let handing_over = [
            obj(ObjectKind::Domain, OwnerKind::Process, 10, 5),
            obj(ObjectKind::Network, OwnerKind::Cli, 10, 5),
            obj(ObjectKind::Home, OwnerKind::Process, 10, 5),
        ];
        assert_eq!(
            reaped(&handing_over, ReapScope::DeadOwners, &[]),
            [true, true, true]
        );
        // A `mkh down` (pid 20) killed while re-tagging the CLI's environment (pid 10).
        let taking_over = [
            obj(ObjectKind::Domain, OwnerKind::Cli, 10, 5),
            obj(ObjectKind::Network, OwnerKind::Cli, 10, 5),
            obj(ObjectKind::Home, OwnerKind::Process, 20, 7),
        ];
        assert_eq!(
            reaped(&taking_over, ReapScope::DeadOwners, &[]),
            [true, true, true]
        );
        // While the remover lives, nothing goes, not even with --all.
        assert_eq!(
            reaped(&taking_over, ReapScope::IncludingCli, &[20]),
            [false, false, false]
        );
    }

    #[test]
    fn a_dead_owner_s_environment_is_left_to_its_watchdog() {
        let o = [obj(ObjectKind::Domain, OwnerKind::Process, 10, 5)];
        let seen = Seen {
            alive: &[],
            watchdogs: &[10],
        };
        assert_eq!(reaped_with(&o, ReapScope::IncludingCli, &seen), [false]);
    }

    #[test]
    fn a_process_selects_the_environments_it_holds_part_of() {
        let mut objects = vec![
            obj(ObjectKind::Network, OwnerKind::Cli, 10, 5),
            obj(ObjectKind::Home, OwnerKind::Process, 20, 7),
        ];
        let mut other = obj(ObjectKind::Domain, OwnerKind::Process, 30, 1);
        other.owner.env = "mkh-other".into();
        objects.push(other);
        let remover = objects[1].owner.process.clone();
        let judged = judge(
            &objects,
            ReapScope::DeadOwners,
            Which::Process(&remover),
            &here(),
            &NONE,
        );
        let mut names: Vec<&str> = judged.iter().map(|(o, _)| o.name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["mkh-abcdef-Home", "mkh-abcdef-Network"]);
    }

    #[test]
    fn owners_on_other_hosts_are_never_judged() {
        let elsewhere = HostIdentity {
            host: "other".into(),
            boot_id: "x".into(),
        };
        for kind in [OwnerKind::Process, OwnerKind::Cli] {
            let o = [obj(ObjectKind::Network, kind, 10, 5)];
            let judged = judge(&o, ReapScope::IncludingCli, Which::All, &elsewhere, &NONE);
            assert!(matches!(judged[0].1, Verdict::Keep(_)));
        }
    }
}
