//! Removing what an environment created, from wherever the end comes: an explicit teardown, Drop
//! (also during a panic), or SIGTERM/SIGINT (nextest's timeout, Ctrl-C).
//!
//! Each live environment registers a [`Teardown`] list here. The process-wide registry is the one
//! piece of global state besides the allocator lock: a signal handler has no other way to find
//! what the process owns. The handler runs on its own thread (signal-hook), tears every
//! registered environment down, and exits with 128 + the signal number.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::time::Duration;

use crate::libvirt::{Libvirt, Removal};

/// A command that must run before mkh removes objects (`minikube delete`), in its own process
/// group with a deadline.
#[derive(Debug, Clone)]
pub struct TeardownCommand {
    pub what: String,
    pub program: std::path::PathBuf,
    pub args: Vec<String>,
    pub envs: Vec<(String, std::ffi::OsString)>,
    /// Variables of this process the command must not inherit.
    pub env_remove: Vec<std::ffi::OsString>,
    pub log: std::path::PathBuf,
    pub deadline: Duration,
}

/// Objects of one environment, in creation order; removal runs in reverse kind order: domains
/// before the networks they sit on.
#[derive(Default)]
pub struct Teardown {
    pub uri: String,
    pub env: String,
    /// Process groups still at work for the environment (a `minikube start`): killed first.
    pub kill_groups: Vec<i32>,
    /// Run next, in order; a failure is reported and removal goes on.
    pub commands: Vec<TeardownCommand>,
    pub domains: Vec<String>,
    pub networks: Vec<String>,
    /// Local directories (environment homes) removed last.
    pub dirs: Vec<std::path::PathBuf>,
    /// Set once everything is removed: later calls do nothing.
    pub done: bool,
    /// Runs before removal when a signal ends the process (keeping a test's artifacts).
    pub on_signal: Option<Hook>,
    /// Whether SIGTERM/SIGINT tear this environment down (its owner may handle them itself).
    pub on_signal_teardown: bool,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Registration")
    }
}

impl Teardown {
    /// Removes every object; returns the problems met (empty: all gone). Idempotent.
    pub fn run(&mut self) -> Vec<String> {
        if self.done {
            return Vec::new();
        }
        for pgid in std::mem::take(&mut self.kill_groups) {
            crate::process::kill_group(pgid);
        }
        let mut problems = Vec::new();
        for c in std::mem::take(&mut self.commands) {
            let mut cmd = std::process::Command::new(&c.program);
            for var in &c.env_remove {
                cmd.env_remove(var);
            }
            cmd.args(&c.args).envs(c.envs.iter().map(|(k, v)| (k, v)));
            if let Err(e) =
                crate::process::run_logged(&c.what, cmd, &c.log, c.deadline, &mut |_| {})
            {
                problems.push(e.to_string());
            }
        }
        let command_problems = problems.len();
        let lv = match Libvirt::connect_to(&self.uri) {
            Ok(lv) => lv,
            Err(e) => {
                problems.push(e.to_string());
                return problems;
            }
        };
        // Objects are registered before they are made (a signal may come in between), so
        // one of a registered name is removed only if it is this environment's: a name that
        // was taken by someone else when mkh tried it is theirs.
        let me = crate::owner::this_process();
        let ours = |xml: &str| {
            crate::owner::Owner::from_object_xml(xml)
                .is_some_and(|o| o.env == self.env && o.process == me)
        };
        let mut removed = |what: &str, name: &str, r: crate::error::Result<Removal>| {
            match r {
            Ok(Removal::Removed | Removal::AlreadyGone) => {}
            // Not this environment's (any more): left in place, and said so.
            Ok(Removal::Changed) => problems.push(format!(
                "{what} {name} does not carry this environment's owner record (someone else's, or remade by minikube): left in place"
            )),
            Err(e) => problems.push(e.to_string()),
        }
        };
        // Each kind at once: libvirt removes objects in parallel, and domains go before the
        // networks they sit on.
        for (dom, r) in in_parallel(&self.domains, |dom| {
            crate::machine::pool::remove_domain(&lv, dom, ours)
        }) {
            removed("domain", dom, r);
        }
        for (net, r) in in_parallel(&self.networks, |net| lv.remove_network_if(net, ours)) {
            removed("network", net, r);
        }
        for dir in &self.dirs {
            match std::fs::remove_dir_all(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => problems.push(format!("{}: {e}", dir.display())),
            }
        }
        // A failed command (minikube delete) is reported, but once every object is removed the
        // teardown is complete: running the command again would not help.
        self.done = problems.len() == command_problems;
        problems
    }
}

/// `remove` applied to every name at once (newest first in the results, as registered last).
fn in_parallel<R: Send>(names: &[String], remove: impl Fn(&str) -> R + Sync) -> Vec<(&str, R)> {
    std::thread::scope(|s| {
        let remove = &remove;
        let workers: Vec<_> = names
            .iter()
            .rev()
            .map(|name| (name.as_str(), s.spawn(move || remove(name))))
            .collect();
        workers
            .into_iter()
            .map(|(name, w)| (name, w.join().expect("removal thread panicked")))
            .collect()
    })
}

pub type Shared = Arc<Mutex<Teardown>>;

fn registry() -> &'static Mutex<HashMap<u64, Shared>> {
    static REGISTRY: OnceLock<Mutex<HashMap<u64, Shared>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// Keeps an environment's teardown list in the registry while it lives.
pub struct Registration {
    key: u64,
    pub list: Shared,
}

impl Registration {
    /// Registers an environment; `signals`: SIGTERM/SIGINT tear it down (the handler is
    /// installed on first need, once per process).
    pub fn new(uri: &str, env: &str, signals: bool) -> Registration {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        if signals {
            install_signal_handler();
        }
        let key = NEXT.fetch_add(1, Ordering::Relaxed);
        let list = Arc::new(Mutex::new(Teardown {
            on_signal_teardown: signals,
            uri: uri.to_owned(),
            env: env.to_owned(),
            ..Teardown::default()
        }));
        lock(registry()).insert(key, list.clone());
        Registration { key, list }
    }

    pub fn add_network(&self, name: &str) {
        lock(&self.list).networks.push(name.to_owned());
    }

    pub fn add_domain(&self, name: &str) {
        lock(&self.list).domains.push(name.to_owned());
    }

    /// The domains registered so far.
    pub fn domains(&self) -> Vec<String> {
        lock(&self.list).domains.clone()
    }

    /// Replaces what runs first when a signal ends the process.
    pub fn on_signal(&self, hook: Hook) {
        lock(&self.list).on_signal = Some(hook);
    }

    pub fn add_kill_group(&self, pgid: i32) {
        lock(&self.list).kill_groups.push(pgid);
    }

    pub fn forget_kill_group(&self, pgid: i32) {
        lock(&self.list).kill_groups.retain(|g| *g != pgid);
    }

    pub fn add_command(&self, command: TeardownCommand) {
        lock(&self.list).commands.push(command);
    }

    pub fn add_dir(&self, dir: &std::path::Path) {
        lock(&self.list).dirs.push(dir.to_owned());
    }

    /// Tears down now, on this thread.
    pub fn run(&self) -> Vec<String> {
        lock(&self.list).run()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(registry()).remove(&self.key);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere must not stop teardown: the data is a plain list, still usable.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Work for the signal handler to do before removal.
pub type Hook = Box<dyn Fn() + Send + Sync>;

/// Tears down every registered environment of this process that lets signals tear it down.
fn run_all_after_signal() -> Vec<String> {
    let lists: Vec<Shared> = lock(registry())
        .values()
        .filter(|l| lock(l).on_signal_teardown)
        .cloned()
        .collect();
    for list in &lists {
        if let Some(hook) = lock(list).on_signal.take() {
            hook();
        }
    }
    lists.iter().flat_map(|l| lock(l).run()).collect()
}

/// Held (shared) while libvirt is asked to make an object, taken (exclusive) by the signal
/// handler before it tears down: an object whose creation was already sent to libvirt when the
/// signal came exists by the time the handler looks for it.
static CREATING: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Runs `make` (one libvirt call that creates an object) so that a signal's teardown waits
/// for it.
pub(crate) fn while_creating<T>(make: impl FnOnce() -> T) -> T {
    let _creating = CREATING.read().unwrap_or_else(|p| p.into_inner());
    make()
}

fn install_signal_handler() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = match signal_hook::iterator::Signals::new([SIGTERM, SIGINT]) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot handle SIGTERM/SIGINT ({e}): a signal will leave objects for the reaper");
                return;
            }
        };
        let _ = std::thread::Builder::new()
            .name("mkh-signals".into())
            .spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    tracing::warn!("signal {sig} received, tearing down this process's environments");
                    // Creations under way finish first; none starts after (the process ends).
                    let _no_more = CREATING.write().unwrap_or_else(|p| p.into_inner());
                    for problem in run_all_after_signal() {
                        tracing::error!("teardown: {problem}");
                    }
                    std::process::exit(128 + sig);
                }
            });
    });
}
