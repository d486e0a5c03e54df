//! The reaper removes what dead owners left: objects whose owner process is gone (pid dead, or
//! alive with another start time, or the host rebooted since). It never touches an object that
//! mkh's metadata does not claim, whatever its name, and never one whose owner it cannot judge
//! (another host). Concurrent reapers do not fail each other: an object already gone is fine.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Mutex;

use serde::Serialize;

use crate::error::Result;
use crate::inventory::{claimed_objects, ClaimedObject, ObjectKind};
use crate::libvirt::{Libvirt, Removal};
use crate::owner::{process_start_time, HostIdentity, Liveness, Owner, OwnerKind, ProcessIdentity};

/// What a sweep may remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReapScope {
    /// Objects of dead process owners.
    DeadOwners,
    /// Also CLI-owned environments (`mkh up`), live or not.
    IncludingCli,
}

/// Which owners' objects a sweep looks at (the verdict still decides).
#[derive(Debug, Clone, Copy)]
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

/// The reaper's decision for one claimed object: a pure function of its owner and this host.
pub fn verdict(
    obj: &ClaimedObject,
    scope: ReapScope,
    here: &HostIdentity,
    start_time_of: impl Fn(u32) -> Option<u64>,
) -> Verdict {
    if obj.owner.process.host != here.host {
        return Verdict::Keep(format!(
            "owner is on host {:?}: only mkh there may remove it",
            obj.owner.process.host
        ));
    }
    match (obj.owner.kind, scope) {
        (OwnerKind::Cli, ReapScope::IncludingCli) => {
            return Verdict::Reap("CLI-owned environment, `reap --all`".into())
        }
        (OwnerKind::Cli, ReapScope::DeadOwners) => {
            return Verdict::Keep(
                "CLI-owned environment: `mkh down` or `mkh reap --all` removes it".into(),
            )
        }
        (OwnerKind::Process, _) => {}
    }
    match obj.owner.liveness(here, start_time_of) {
        Liveness::Alive => Verdict::Keep(format!("owner pid {} is alive", obj.owner.process.pid)),
        Liveness::Dead(why) => Verdict::Reap(why),
        Liveness::Unknown(why) => Verdict::Keep(why),
    }
}

/// One object a sweep judged.
#[derive(Debug, Clone, Serialize)]
pub struct Reaped {
    /// Domain, network or home.
    pub kind: ObjectKind,
    /// Its name.
    pub name: String,
    /// Its environment.
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

/// Sweeps environment homes under this user's state directory: a home whose owner is gone
/// (by the same rule as libvirt objects) loses the processes started for it — any process
/// whose command line names a file inside it, such as a minikube stand-in's etcd and API
/// server — and then the home itself.
pub fn sweep_homes(state_dir: &Path, scope: ReapScope, which: Which, report: &mut ReapReport) {
    let here = HostIdentity::current();
    let envs = state_dir.join("envs");
    let Ok(entries) = std::fs::read_dir(&envs) else {
        return;
    };
    for entry in entries.flatten() {
        let home = entry.path();
        let Ok(text) = std::fs::read_to_string(home.join(OWNER_RECORD)) else {
            continue;
        };
        let Ok(owner) = serde_json::from_str::<Owner>(&text) else {
            continue;
        };
        if !which.takes(&owner) {
            continue;
        }
        let obj = ClaimedObject {
            kind: ObjectKind::Home,
            name: home.display().to_string(),
            active: false,
            owner,
        };
        let Verdict::Reap(why) = verdict(&obj, scope, &here, process_start_time) else {
            continue;
        };
        for pid in processes_naming(&home) {
            kill_process(pid);
        }
        match std::fs::remove_dir_all(&home) {
            Ok(()) => report.removed.push(Reaped {
                kind: ObjectKind::Home,
                name: obj.name,
                env: obj.owner.env,
                reason: why,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => report.errors.push(format!("{}: {e}", home.display())),
        }
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

/// One sweep over libvirt's objects (domains first, then the networks they sit on), limited to
/// one run id (`mkh reap --run ID`) when given, and, for a local hypervisor, over this user's
/// environment homes under `state_dir`. libvirt's `test:///` driver holds no real machines: a
/// sweep over it never touches homes or processes.
pub fn sweep(lv: &Libvirt, scope: ReapScope, which: Which, state_dir: &Path) -> Result<ReapReport> {
    let here = HostIdentity::current();
    let mut objects = claimed_objects(lv)?;
    objects.retain(|o| which.takes(&o.owner));
    objects.sort_by_key(|o| o.kind);
    let mut report = ReapReport::default();
    for obj in objects {
        let entry = |reason: String| Reaped {
            kind: obj.kind,
            name: obj.name.clone(),
            env: obj.owner.env.clone(),
            reason,
        };
        match verdict(&obj, scope, &here, process_start_time) {
            Verdict::Keep(why) => report.kept.push(entry(why)),
            Verdict::Reap(why) => {
                // Judged from a listing: remove only if the object still has the owner it
                // was judged by (a name may have been reused since).
                let unchanged = |xml: &str| match Owner::from_object_xml(xml) {
                    Some(owner) => owner == obj.owner,
                    // A minikube domain claimed by the profile rule carries no record.
                    None => obj.kind == ObjectKind::Domain,
                };
                let removal = match obj.kind {
                    ObjectKind::Domain => lv.remove_domain_if(&obj.name, unchanged),
                    ObjectKind::Network => lv.remove_network_if(&obj.name, unchanged),
                    ObjectKind::Home => continue,
                };
                match removal {
                    Ok(Removal::Removed) => report.removed.push(entry(why)),
                    Ok(Removal::AlreadyGone | Removal::Changed) => {}
                    Err(e) => report.errors.push(e.to_string()),
                }
            }
        }
    }
    if lv.is_local() && !lv.is_test_driver() {
        sweep_homes(state_dir, scope, which, &mut report);
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

    fn obj(kind: OwnerKind, pid: u32, start: u64) -> ClaimedObject {
        ClaimedObject {
            kind: ObjectKind::Network,
            name: "mkh-abcdef-nat".into(),
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
                kind,
                env: "mkh-abcdef".into(),
                home: None,
                profile: None,
                minikube: None,
            },
        }
    }

    fn here() -> HostIdentity {
        HostIdentity {
            host: "h".into(),
            boot_id: "b".into(),
        }
    }

    #[test]
    fn dead_or_reused_pids_are_reaped_live_ones_kept() {
        let o = obj(OwnerKind::Process, 10, 5);
        let d = ReapScope::DeadOwners;
        assert!(matches!(
            verdict(&o, d, &here(), |_| Some(5)),
            Verdict::Keep(_)
        ));
        assert!(matches!(
            verdict(&o, d, &here(), |_| None),
            Verdict::Reap(_)
        ));
        assert!(matches!(
            verdict(&o, d, &here(), |_| Some(6)),
            Verdict::Reap(_)
        ));
        // --all does not touch live processes' objects either.
        let all = ReapScope::IncludingCli;
        assert!(matches!(
            verdict(&o, all, &here(), |_| Some(5)),
            Verdict::Keep(_)
        ));
    }

    #[test]
    fn cli_environments_only_go_with_all() {
        let o = obj(OwnerKind::Cli, 10, 5);
        assert!(matches!(
            verdict(&o, ReapScope::DeadOwners, &here(), |_| None),
            Verdict::Keep(_)
        ));
        assert!(matches!(
            verdict(&o, ReapScope::IncludingCli, &here(), |_| None),
            Verdict::Reap(_)
        ));
    }

    #[test]
    fn owners_on_other_hosts_are_never_judged() {
        let elsewhere = HostIdentity {
            host: "other".into(),
            boot_id: "x".into(),
        };
        for kind in [OwnerKind::Process, OwnerKind::Cli] {
            let o = obj(kind, 10, 5);
            assert!(matches!(
                verdict(&o, ReapScope::IncludingCli, &elsewhere, |_| None),
                Verdict::Keep(_)
            ));
        }
    }
}
