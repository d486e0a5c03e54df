//! One test's world. [`Env`] owns everything it created and removes it on
//! [`Env::teardown`], on Drop (also during a panic) and on SIGTERM/SIGINT.
//!
//! The environment's shared state ([`EnvCore`]: names, settings, its one libvirt connection,
//! networks, the teardown registration) sits behind an `Arc`, so that every async call can hand
//! it to a blocking thread; machines are handles that share the same connection.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::artifacts::{ArtifactPlan, MINIKUBE_LOGS_DEADLINE};
use crate::backend::{for_options, Backend, ClusterBackend};
use crate::config::{self, Timeouts};
use crate::description::{EnvDescription, MachineDescription, SshDescription, DESCRIPTION_VERSION};
use crate::error::{Error, Result};
use crate::inventory;
use crate::libvirt::Libvirt;
use crate::machine::{choose_accel, Accel, Ips, Machine, MachineOptions, NetworkRole, SSH_USER};
use crate::minikube::MinikubeOptions;
use crate::names::{validate_env_name, EnvId};
use crate::net::{create_pair, DhcpLease, NetworkPair, SubnetPool};
use crate::owner::{Owner, OwnerKind};
use crate::reaper;
use crate::settings::Settings;
use crate::teardown::Registration;
use crate::wait::off_thread;

/// How long Drop waits for teardown before leaving the rest to the reaper. A network pair goes
/// in well under a second, a machine in two, a minikube cluster (with `minikube delete`) in a
/// few more.
pub(crate) const DROP_DEADLINE: Duration = Duration::from_secs(30);

/// How many failed creations' post-mortems `<state>/postmortem/` keeps (the oldest go first).
const POST_MORTEMS_KEPT: usize = 20;

/// How to make an [`Env`]: [`Env::builder`], then `.guest(..)` or `.minikube(..)`, then
/// [`EnvBuilder::up`].
#[derive(Debug, Clone)]
#[must_use = "an EnvBuilder does nothing until `up`"]
pub struct EnvBuilder {
    name: Option<String>,
    pool: Option<SubnetPool>,
    uri: Option<String>,
    backend: Backend,
    settings: Option<Settings>,
    artifacts: Option<PathBuf>,
    signals: bool,
    lease: Option<Duration>,
}

impl Default for EnvBuilder {
    fn default() -> Self {
        EnvBuilder {
            name: None,
            pool: None,
            uri: None,
            backend: Backend::NetworksOnly,
            settings: None,
            artifacts: None,
            signals: true,
            lease: None,
        }
    }
}

impl EnvBuilder {
    /// The environment's name (`mkh ls`, `mkh down NAME`); default `mkh-<id>`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Subnet pool; default from the settings (`MKH_SUBNET_POOL` / `MKH_SUBNET_PREFIX`).
    pub fn subnet_pool(mut self, pool: SubnetPool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// libvirt URI; default from the settings ([`crate::Settings::libvirt_uri`]:
    /// `MKH_LIBVIRT_URI`, `mkh.toml`, `LIBVIRT_DEFAULT_URI`, `qemu:///system`).
    pub fn libvirt_uri(mut self, uri: impl Into<String>) -> Self {
        self.uri = Some(uri.into());
        self
    }

    /// Boots the built-in guest on both networks; `up` returns once SSH answers on both.
    pub fn guest(mut self, options: MachineOptions) -> Self {
        self.backend = Backend::Builtin(options);
        self
    }

    /// Runs `minikube start --driver=kvm2` on the environment's networks; `up` returns once SSH
    /// answers on both networks. A missing minikube binary is an error, never a silent switch to
    /// the built-in guest.
    pub fn minikube(mut self, options: MinikubeOptions) -> Self {
        self.backend = Backend::Minikube(options);
        self
    }

    /// The DHCP lease time on both networks (120 s to a day; default dnsmasq's, one hour): a
    /// short one lets a test see a lease expire.
    pub fn dhcp_lease_time(mut self, lease: Duration) -> Self {
        self.lease = Some(lease);
        self
    }

    /// Sets the backend directly (for callers driven by [`Settings`]).
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// The settings to use instead of [`Settings::current`].
    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = Some(settings);
        self
    }

    /// Where to keep what explains a failure (console logs, leases, domain XML, minikube's
    /// logs): a failed creation writes there, and so does the environment's Drop during a
    /// panic or a SIGTERM/SIGINT. Default: a directory under the state directory, named in the
    /// error.
    pub fn artifacts_on_failure(mut self, dir: impl Into<PathBuf>) -> Self {
        self.artifacts = Some(dir.into());
        self
    }

    /// Whether SIGTERM and SIGINT tear this environment down and end the process (default:
    /// yes). A program that handles those signals itself turns this off and calls
    /// [`Env::teardown`] from its own handler; mkh then installs no handler for this
    /// environment.
    pub fn teardown_on_signal(mut self, on: bool) -> Self {
        self.signals = on;
        self
    }

    /// Creates the environment: sweeps what dead owners left on this libvirt (once per process
    /// and URI), creates the networks, then the backend's machine. On error, whatever was
    /// created is removed before returning. The calling task's thread is never blocked.
    pub async fn up(self) -> Result<Env> {
        off_thread(move || self.up_now()).await
    }

    /// [`EnvBuilder::up`] for code without an async runtime.
    pub fn up_blocking(self) -> Result<crate::blocking::Env> {
        self.up_now().map(crate::blocking::Env::from)
    }

    pub(crate) fn up_now(self) -> Result<Env> {
        let mut settings = match self.settings {
            Some(s) => s,
            None => Settings::current()?,
        };
        if let Some(pool) = self.pool {
            settings.subnet_pool = pool;
        }
        if let Some(uri) = self.uri {
            settings.libvirt_uri = uri;
        }
        // Every input is checked before anything exists.
        if let Some(name) = &self.name {
            validate_env_name(name)?;
        }
        if let Some(lease) = self.lease {
            crate::net::spec::check_lease_time(lease)?;
        }
        config::check_writable_dir("MKH_LOCK_DIR", &settings.lock_dir)?;
        let uri = settings.libvirt_uri.clone();
        let id = EnvId::random();
        let name = self.name.unwrap_or_else(|| id.env_name());
        let _span = tracing::info_span!("up", env = %name).entered();
        let home = settings.state_dir.join("envs").join(&name);
        let backend = for_options(&self.backend, &settings, &home, &name)?;

        let lv = Arc::new(Libvirt::connect_to(&uri)?);
        reaper::sweep_once(&lv, &settings.state_dir);
        // libvirt's test driver keeps its objects in this process: nothing to watch over.
        if settings.watchdog && !lv.is_test_driver() {
            crate::watchdog::watch_this_process(&uri, &settings.state_dir);
        }
        if inventory::environments(&inventory::claimed_objects(&lv)?)
            .iter()
            .any(|e| e.name == name)
        {
            return Err(Error::InvalidInput {
                what: "environment name",
                value: name,
                problem: "an environment of that name exists".into(),
                fix: "choose another name, or remove it first with `mkh down NAME`",
            });
        }
        backend.check_libvirt(&lv)?;
        let mut owner = Owner::for_new_object(OwnerKind::Process, &name, &settings);
        owner.home = Some(home.to_string_lossy().into_owned());
        backend.record(&mut owner);
        let registration = Registration::new(&uri, &name, self.signals);
        let core = EnvCore {
            id,
            name,
            settings,
            lv,
            owner: Mutex::new(owner),
            home,
            lease: self.lease,
            networks: RwLock::new(None),
            accel: OnceLock::new(),
            generations: Mutex::new(BTreeMap::new()),
            backend,
            registration: Mutex::new(Some(registration)),
            attached: false,
        };
        let mut env = Env {
            core: Arc::new(core),
            networks: NetworkPair::named("", ""),
            machines: Vec::new(),
            timings: Timings::default(),
            artifacts: self.artifacts,
        };
        match env.create() {
            Ok(()) => {
                env.arm_signal_artifacts();
                Ok(env)
            }
            Err(e) => {
                let e = env.keep_post_mortem(e);
                if let Some(registration) = env.core.take_registration() {
                    let problems = registration.run();
                    if !problems.is_empty() {
                        tracing::warn!(env = %env.core.name, "cleanup after failed creation: {}", problems.join("; "));
                    }
                }
                Err(e)
            }
        }
    }
}

/// How long each phase of bringing the environment up took (the last machine added).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Timings {
    /// Both networks defined and started (subnet choice included).
    pub networks: Option<Duration>,
    /// Guest image found, keys made, domain defined and started (or `minikube start`).
    pub define_start: Option<Duration>,
    /// From the domain's start to the first DHCP lease on either network.
    pub first_lease: Option<Duration>,
    /// From the domain's start to a DHCP lease on both networks.
    pub leases: Option<Duration>,
    /// From the leases to SSH answering on both networks.
    pub ssh: Option<Duration>,
}

/// What an environment's parts share: set once at creation, read from any thread.
#[derive(Debug)]
pub(crate) struct EnvCore {
    pub id: EnvId,
    pub name: String,
    pub settings: Settings,
    /// The environment's one libvirt connection, shared by its machines.
    pub lv: Arc<Libvirt>,
    pub owner: Mutex<Owner>,
    pub home: PathBuf,
    /// DHCP lease time of both networks (`None`: dnsmasq's default).
    pub lease: Option<Duration>,
    /// Set once created; the private network's subnet, bridge and gateway change when mkh
    /// adopts the network minikube made again under its name (`backend/minikube.rs`).
    networks: RwLock<Option<NetworkPair>>,
    accel: OnceLock<Accel>,
    /// Machines made again (`recreate_machine_now`): name → times.
    generations: Mutex<BTreeMap<String, u32>>,
    pub backend: Box<dyn ClusterBackend>,
    /// `None` once torn down or handed over.
    registration: Mutex<Option<Registration>>,
    /// Reached by [`Env::attach`]: this process did not make it, and dropping the handle leaves
    /// it as it is.
    pub attached: bool,
}

impl EnvCore {
    pub fn networks(&self) -> NetworkPair {
        self.networks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .expect("an environment has its networks once created")
    }

    /// The environment's networks as they are now (see `networks`).
    pub fn set_networks(&self, networks: NetworkPair) {
        *self.networks.write().unwrap_or_else(|e| e.into_inner()) = Some(networks);
    }

    pub fn owner(&self) -> Owner {
        lock(&self.owner).clone()
    }

    /// The accelerator of this libvirt host, chosen at the first machine and kept.
    pub fn accel(&self) -> Accel {
        *self
            .accel
            .get_or_init(|| choose_accel(&self.lv, self.settings.accel))
    }

    pub fn timeouts(&self) -> Timeouts {
        Timeouts::new(self.accel(), self.settings.timeout_scale)
    }

    /// Runs `f` with the teardown registration, or fails if the environment is gone.
    pub fn registered<T>(&self, f: impl FnOnce(&Registration) -> T) -> Result<T> {
        match lock(&self.registration).as_ref() {
            Some(r) => Ok(f(r)),
            None => Err(torn_down(&self.name)),
        }
    }

    fn take_registration(&self) -> Option<Registration> {
        lock(&self.registration).take()
    }

    /// How many times machine `name` was made again (`Env::recreate_machine`).
    pub fn generation(&self, name: &str) -> u32 {
        lock(&self.generations).get(name).copied().unwrap_or(0)
    }

    /// Makes SIGTERM and SIGINT end process group `pgid` (a minikube run) until the guard
    /// drops. An environment of this process lists the group for its teardown; an attached one,
    /// which a signal does not tear down, gets a registration of its own for it.
    pub fn kill_on_signal(&self, pgid: i32) -> KillOnSignal<'_> {
        let own = if self.attached {
            let own = Registration::new(self.lv.uri(), &self.name, true);
            own.add_kill_group(pgid);
            Some(own)
        } else {
            let _ = self.registered(|r| r.add_kill_group(pgid));
            None
        };
        KillOnSignal {
            core: self,
            pgid,
            _own: own,
        }
    }

    /// The plan for collecting this environment's artifacts, over every domain it registered.
    fn artifact_plan(&self) -> ArtifactPlan {
        let mut domains = self.registered(|r| r.domains()).unwrap_or_default();
        // minikube's domain is registered once tagged: a failed start may come before.
        if let Some(c) = self.backend.minikube() {
            if !domains.contains(&c.profile) {
                domains.push(c.profile.clone());
            }
        }
        ArtifactPlan {
            uri: self.lv.uri().to_owned(),
            machines: domains
                .into_iter()
                .map(|d| {
                    let console = self.backend.console_log(self, &d);
                    (d, console)
                })
                .collect(),
            networks: self
                .networks
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map(|n| vec![n.nat.name.clone(), n.private.name.clone()])
                .unwrap_or_default(),
            minikube: self.backend.minikube().cloned(),
        }
    }

    /// The local record of who owns this home, for the reaper (see `reaper::sweep`).
    fn write_owner_record(&self) -> Result<()> {
        let record = self.home.join(crate::reaper::OWNER_RECORD);
        crate::owner::write_record(&record, &self.owner())
    }
}

/// See [`EnvCore::kill_on_signal`]: once the group has ended, a signal must not kill a group
/// that reuses its id.
pub(crate) struct KillOnSignal<'a> {
    core: &'a EnvCore,
    pgid: i32,
    _own: Option<Registration>,
}

impl Drop for KillOnSignal<'_> {
    fn drop(&mut self) {
        let _ = self.core.registered(|r| r.forget_kill_group(self.pgid));
    }
}

/// Waits for both leases, then SSH on both networks, timing each phase.
pub(crate) fn wait_ready_timed(machine: &Machine, timings: &mut Timings) -> Result<Ips> {
    let started = Instant::now();
    let span = tracing::info_span!("leases", machine = %machine.name()).entered();
    crate::progress::phase(format!("waiting for {}'s DHCP leases", machine.name()));
    let (ips, first) = machine.ips_timed()?;
    drop(span);
    let _span = tracing::info_span!("ssh", machine = %machine.name()).entered();
    timings.first_lease = Some(first);
    timings.leases = Some(started.elapsed());
    let started = Instant::now();
    crate::progress::phase(format!(
        "waiting for SSH to {} on both networks",
        machine.name()
    ));
    machine.wait_ssh_on(ips)?;
    timings.ssh = Some(started.elapsed());
    Ok(ips)
}

fn torn_down(name: &str) -> Error {
    Error::InvalidInput {
        what: "environment",
        value: name.to_owned(),
        problem: "it was torn down or handed over".into(),
        fix: "create a new environment",
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A live environment: its two networks and the backend's machines. Dropping it removes
/// everything it created; so do [`Env::teardown`] and SIGTERM/SIGINT.
#[derive(Debug)]
pub struct Env {
    core: Arc<EnvCore>,
    /// The core's networks when this handle last changed (creation, attach, start).
    networks: NetworkPair,
    machines: Vec<Machine>,
    timings: Timings,
    artifacts: Option<PathBuf>,
}

impl Env {
    /// Starts describing a new environment.
    pub fn builder() -> EnvBuilder {
        EnvBuilder::default()
    }

    /// Reaches an environment that exists already, by its name: one the CLI owns (`mkh up`, a
    /// failed test's kept by `MKH_KEEP=1`, a cluster a whole test run shares) or one whose owner
    /// died. The handle does what a handle from [`EnvBuilder::up`] does, on the same backend;
    /// dropping it leaves the environment as it is, and [`Env::teardown`] removes it (refused
    /// while a live process owns it). `settings` says which libvirt to look on.
    pub async fn attach(name: &str, settings: Settings) -> Result<Env> {
        let name = name.to_owned();
        off_thread(move || Env::attach_now(&name, settings)).await
    }

    pub(crate) fn attach_now(name: &str, settings: Settings) -> Result<Env> {
        let _span = tracing::info_span!("attach", env = name).entered();
        let lv = Arc::new(Libvirt::connect_to(&settings.libvirt_uri)?);
        let objects = inventory::claimed_objects(&lv)?;
        let mine: Vec<&inventory::ClaimedObject> =
            objects.iter().filter(|o| o.owner.env == name).collect();
        let unknown = || Error::UnknownEnvironment {
            name: name.to_owned(),
        };
        // A network's record is written at creation, with everything the environment is.
        let owner = mine
            .iter()
            .find(|o| o.kind == inventory::ObjectKind::Network)
            .or(mine.first())
            .ok_or_else(unknown)?
            .owner
            .clone();
        let of_kind = |kind| -> Vec<String> {
            let mut names: Vec<String> = mine
                .iter()
                .filter(|o| o.kind == kind)
                .map(|o| o.name.clone())
                .collect();
            // The primary machine (named after the environment, or minikube's profile) first.
            names.sort_by_key(|n| (n != name, n.clone()));
            names
        };
        let (domains, network_names) = (
            of_kind(inventory::ObjectKind::Domain),
            of_kind(inventory::ObjectKind::Network),
        );
        let named = |suffix: &str| {
            network_names
                .iter()
                .find(|n| n.ends_with(suffix))
                .cloned()
                .unwrap_or_default()
        };
        let (nat, private) = (named("-nat"), named("-priv"));
        let home = owner
            .home
            .as_ref()
            .map_or_else(|| settings.state_dir.join("envs").join(name), PathBuf::from);
        let nodes = u32::try_from(domains.len()).unwrap_or(u32::MAX).max(1);
        let backend = crate::backend::for_record(&owner, &settings, &home, nodes);
        let registration = Registration::new(lv.uri(), name, false);
        backend
            .removal_commands()
            .into_iter()
            .for_each(|c| registration.add_command(c));
        domains.iter().for_each(|d| registration.add_domain(d));
        network_names
            .iter()
            .for_each(|n| registration.add_network(n));
        if owner.home.is_some() {
            registration.add_dir(&home);
        }
        let core = EnvCore {
            id: EnvId::of_network(&nat).unwrap_or_else(EnvId::random),
            name: name.to_owned(),
            settings,
            lv,
            owner: Mutex::new(owner),
            home,
            lease: None,
            networks: RwLock::new(None),
            accel: OnceLock::new(),
            generations: Mutex::new(BTreeMap::new()),
            backend,
            registration: Mutex::new(Some(registration)),
            attached: true,
        };
        let mut env = Env {
            core: Arc::new(core),
            networks: NetworkPair::named("", ""),
            machines: Vec::new(),
            timings: Timings::default(),
            artifacts: None,
        };
        match NetworkPair::read(&env.core.lv, &nat, &private) {
            Ok(networks) => {
                env.core.set_networks(networks);
                let core = &env.core;
                env.machines = domains
                    .iter()
                    .map(|d| {
                        let files = core.backend.machine_files(core, d);
                        Machine::attach(
                            &core.lv,
                            d,
                            &core.networks(),
                            files,
                            core.settings.timeout_scale,
                        )
                    })
                    .collect::<Result<_>>()?;
            }
            Err(e) => {
                // What a remover that died left: only its removal makes sense.
                tracing::warn!(
                    env = name,
                    "{name} is incomplete ({e}): only its removal can help"
                );
                env.core.set_networks(NetworkPair::named(&nat, &private));
            }
        }
        env.networks = env.core.networks();
        Ok(env)
    }

    fn create(&mut self) -> Result<()> {
        self.make_home()?;
        let started = Instant::now();
        let core = &self.core;
        crate::progress::phase(format!("creating the networks of {}", core.name));
        let networks = create_pair(
            &core.lv,
            &core.id,
            &core.owner(),
            &core.settings.subnet_pool,
            core.lease,
            &core.settings.lock_dir,
            &mut |net| {
                let _ = core.registered(|r| r.add_network(net));
            },
        )?;
        self.timings.networks = Some(started.elapsed());
        core.set_networks(networks);
        self.networks = core.networks();
        self.machines = core.backend.bring_up(core, &mut self.timings)?;
        // minikube may have made the private network again, and mkh adopted it.
        self.networks = core.networks();
        Ok(())
    }

    /// Creates the home (it must not exist: two environments never share one), registers it
    /// for removal and writes the owner record the reaper reads.
    fn make_home(&mut self) -> Result<()> {
        let home = &self.core.home;
        config::ensure_dir(home.parent().expect("envs/<name>"))?;
        std::fs::create_dir(home).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::InvalidInput {
                    what: "environment name",
                    value: self.core.name.clone(),
                    problem: format!("its home {} exists already", home.display()),
                    fix: "choose another name, or remove the directory if nothing uses it (`mkh reap --all`)",
                }
            } else {
                Error::io(home, e)
            }
        })?;
        self.core.registered(|r| r.add_dir(home))?;
        self.core.write_owner_record()
    }

    /// After a failed creation: collects what explains it into the artifact directory (the
    /// home goes with the rest), and says where. Without one, into `<state>/postmortem/`, which
    /// keeps the newest [`POST_MORTEMS_KEPT`].
    fn keep_post_mortem(&self, error: Error) -> Error {
        let kept = self.core.settings.state_dir.join("postmortem");
        let dir = self
            .artifacts
            .clone()
            .unwrap_or_else(|| kept.join(format!("{}-{}", self.core.name, self.core.id)));
        let plan = self.core.artifact_plan();
        if plan.machines.is_empty() && plan.minikube.is_none() {
            return error;
        }
        if self.artifacts.is_none() {
            config::prune_oldest(&kept, POST_MORTEMS_KEPT, |e| e.path().is_dir());
        }
        plan.collect(&dir, Some(&error.to_string()), Some(MINIKUBE_LOGS_DEADLINE));
        Error::PostMortem {
            source: Box::new(error),
            bundle: dir,
        }
    }

    /// Lets a signal that ends the process keep the artifacts first, when a directory was
    /// given (without `minikube logs`, which may take longer than the grace period), and the
    /// watchdog keep them after a SIGKILL.
    fn arm_signal_artifacts(&self) {
        if let Some(dir) = &self.artifacts {
            let plan = self.core.artifact_plan();
            crate::watchdog::keep_artifacts_of(&self.core.name, dir, &plan);
            let dir = dir.clone();
            let _ = self.core.registered(|r| {
                r.on_signal(Box::new(move || {
                    plan.collect(&dir, None, None);
                    tracing::error!(
                        "ended by a signal; what explains it is in {}",
                        dir.display()
                    );
                }))
            });
        }
    }

    /// The environment's name.
    pub fn name(&self) -> &str {
        &self.core.name
    }

    /// The DHCP lease time of the environment's networks, if it was set
    /// ([`EnvBuilder::dhcp_lease_time`]; `None`: dnsmasq's default, an hour).
    pub fn dhcp_lease_time(&self) -> Option<Duration> {
        self.core.lease
    }

    /// Stops one of the environment's networks, as libvirt's `net-destroy` does: its bridge,
    /// its dnsmasq and the leases it handed out go, and the machines' NICs on it lose their
    /// link until [`Env::start_network`]. Stopped already is fine.
    pub async fn stop_network(&self, role: NetworkRole) -> Result<()> {
        let core = self.core.clone();
        off_thread(move || core.lv.stop_network(&core.networks().get(role).name)).await
    }

    /// Starts one of the environment's networks again (a new bridge and dnsmasq; the machines'
    /// NICs join it again and ask for leases on their own time). Running already is fine.
    pub async fn start_network(&self, role: NetworkRole) -> Result<()> {
        let core = self.core.clone();
        off_thread(move || core.lv.start_network(&core.networks().get(role).name)).await
    }

    /// The DHCP leases that one of the environment's networks holds now, as libvirt lists them
    /// (`virsh net-dhcp-leases`), of every machine on it.
    pub async fn leases(&self, role: NetworkRole) -> Result<Vec<DhcpLease>> {
        let core = self.core.clone();
        off_thread(move || leases(&core, role)).await
    }

    /// Collects what explains a failure (console logs, leases, domain XML, minikube's logs,
    /// `problem`) into the directory given to [`EnvBuilder::artifacts_on_failure`], now, and
    /// returns it; `None` without one.
    pub async fn collect_artifacts(&self, problem: &str) -> Option<PathBuf> {
        let (plan, dir) = self.failure_artifacts()?;
        let problem = problem.to_owned();
        off_thread(move || {
            plan.collect(&dir, Some(&problem), Some(MINIKUBE_LOGS_DEADLINE));
            Ok::<_, Error>(dir)
        })
        .await
        .ok()
    }

    pub(crate) fn collect_artifacts_now(&self, problem: &str) -> Option<PathBuf> {
        let (plan, dir) = self.failure_artifacts()?;
        plan.collect(&dir, Some(problem), Some(MINIKUBE_LOGS_DEADLINE));
        Some(dir)
    }

    pub(crate) fn stop_network_now(&self, role: NetworkRole) -> Result<()> {
        self.core
            .lv
            .stop_network(&self.core.networks().get(role).name)
    }

    pub(crate) fn start_network_now(&self, role: NetworkRole) -> Result<()> {
        self.core
            .lv
            .start_network(&self.core.networks().get(role).name)
    }

    pub(crate) fn leases_now(&self, role: NetworkRole) -> Result<Vec<DhcpLease>> {
        leases(&self.core, role)
    }

    /// Its two networks.
    pub fn networks(&self) -> &NetworkPair {
        &self.networks
    }

    /// The libvirt it lives on.
    pub fn libvirt_uri(&self) -> &str {
        self.core.lv.uri()
    }

    /// The environment's directory: SSH keys, known hosts, console logs.
    pub fn home(&self) -> &Path {
        &self.core.home
    }

    /// The accelerator machines boot with (once a machine was booted).
    pub fn accel(&self) -> Option<Accel> {
        self.core.accel.get().copied()
    }

    /// How long each phase of bringing it up took.
    pub fn timings(&self) -> Timings {
        self.timings
    }

    /// The first machine, if the environment has one.
    pub fn machine(&self) -> Option<&Machine> {
        self.machines.first()
    }

    /// Every machine, the first one first.
    pub fn machines(&self) -> &[Machine] {
        &self.machines
    }

    /// The kubeconfig file and context of the cluster's API server (minikube backend).
    pub fn kubeconfig(&self) -> Option<(&Path, &str)> {
        self.core.backend.kubeconfig()
    }

    /// Boots one more machine of the built-in guest on this environment's networks (give it a
    /// suffix) and waits until SSH answers on both.
    pub async fn add_machine(&mut self, options: MachineOptions) -> Result<&Machine> {
        let core = self.core.clone();
        let existing = self.machine_names();
        let (machine, timings) = off_thread(move || {
            let mut timings = Timings::default();
            core.backend
                .add_machine(&core, &options, &existing, &mut timings)
                .map(|m| (m, timings))
        })
        .await?;
        Ok(self.push_machine(machine, timings))
    }

    pub(crate) fn add_machine_now(&mut self, options: &MachineOptions) -> Result<&Machine> {
        let mut timings = Timings::default();
        let machine = self.core.backend.add_machine(
            &self.core,
            options,
            &self.machine_names(),
            &mut timings,
        )?;
        Ok(self.push_machine(machine, timings))
    }

    fn machine_names(&self) -> Vec<String> {
        self.machines.iter().map(|m| m.name().to_owned()).collect()
    }

    fn push_machine(&mut self, machine: Machine, timings: Timings) -> &Machine {
        self.timings = Timings {
            networks: self.timings.networks,
            ..timings
        };
        self.machines.push(machine);
        self.arm_signal_artifacts();
        self.machines.last().expect("just pushed")
    }

    /// Removes one of this environment's machines (its domain) now; the networks stay.
    pub async fn remove_machine(&mut self, name: &str) -> Result<()> {
        self.check_machine(name)?;
        let lv = self.core.lv.clone();
        let owned = name.to_owned();
        off_thread(move || crate::machine::pool::remove_domain(&lv, &owned, |_| true)).await?;
        self.machines.retain(|m| m.name() != name);
        Ok(())
    }

    pub(crate) fn remove_machine_now(&mut self, name: &str) -> Result<()> {
        self.check_machine(name)?;
        crate::machine::pool::remove_domain(&self.core.lv, name, |_| true)?;
        self.machines.retain(|m| m.name() != name);
        Ok(())
    }

    /// Replaces machine `name` (of the built-in guest) by a new one booted with `options` under
    /// the same name: its domain is removed and defined anew, with new MACs and the same
    /// hostname, as minikube recreates a VM whose domain went missing. Returns once the new
    /// domain runs, or with `wait_ready` once it answers SSH on both networks.
    pub async fn recreate_machine(
        &mut self,
        name: &str,
        options: MachineOptions,
        wait_ready: bool,
    ) -> Result<&Machine> {
        self.check_machine(name)?;
        let (core, others, owned) = (self.core.clone(), self.others(name), name.to_owned());
        let machine =
            off_thread(move || recreate(&core, &owned, &options, &others, wait_ready)).await?;
        Ok(self.replace_machine(machine))
    }

    pub(crate) fn recreate_machine_now(
        &mut self,
        name: &str,
        options: &MachineOptions,
        wait_ready: bool,
    ) -> Result<&Machine> {
        self.check_machine(name)?;
        let machine = recreate(&self.core, name, options, &self.others(name), wait_ready)?;
        Ok(self.replace_machine(machine))
    }

    fn others(&self, name: &str) -> Vec<String> {
        self.machine_names()
            .into_iter()
            .filter(|n| n != name)
            .collect()
    }

    fn replace_machine(&mut self, machine: Machine) -> &Machine {
        let index = self
            .machines
            .iter()
            .position(|m| m.name() == machine.name())
            .expect("checked to exist");
        self.machines[index] = machine;
        self.arm_signal_artifacts();
        &self.machines[index]
    }

    fn check_machine(&self, name: &str) -> Result<()> {
        if self.machines.iter().any(|m| m.name() == name) {
            return Ok(());
        }
        Err(Error::InvalidInput {
            what: "machine name",
            value: name.to_owned(),
            problem: format!("environment {} has no such machine", self.core.name),
            fix: "pass the name of one of the environment's machines",
        })
    }

    /// Stops the cluster: `minikube stop` for minikube, an ACPI shutdown for the built-in guest.
    pub async fn stop(&self) -> Result<()> {
        let (core, machines) = (self.core.clone(), self.machines.clone());
        off_thread(move || core.backend.stop(&core, &machines)).await
    }

    pub(crate) fn stop_now(&self) -> Result<()> {
        self.core.backend.stop(&self.core, &self.machines)
    }

    /// Starts a stopped cluster again and waits until SSH answers on both networks. The
    /// machines and networks are read again: minikube makes a machine whose domain vanished
    /// anew (new MACs), and may make the private network again on another subnet (mkh adopts
    /// it and says so).
    pub async fn start(&mut self) -> Result<Ips> {
        let (core, machines) = (self.core.clone(), self.machines.clone());
        let started = off_thread(move || core.backend.start(&core, &machines)).await;
        self.after_start(started)
    }

    pub(crate) fn start_now(&mut self) -> Result<Ips> {
        let started = self.core.backend.start(&self.core, &self.machines);
        self.after_start(started)
    }

    fn after_start(&mut self, started: Result<crate::backend::Started>) -> Result<Ips> {
        self.networks = self.core.networks();
        let started = started?;
        self.machines = started.machines;
        Ok(started.ips)
    }

    /// Describes the environment; with a machine, reads its current IPs from the leases. A
    /// stopped machine has no IPs to show (`ips` is then `None`).
    pub async fn describe(&self) -> Result<EnvDescription> {
        let (core, machines) = (self.core.clone(), self.machines.clone());
        off_thread(move || describe(&core, &machines)).await
    }

    pub(crate) fn describe_now(&self) -> Result<EnvDescription> {
        describe(&self.core, &self.machines)
    }

    /// A kube client for the cluster's API server (minikube backend).
    #[cfg(feature = "kube")]
    pub async fn kube_client(&self) -> Result<::kube::Client> {
        let Some((path, context)) = self.kubeconfig() else {
            return Err(Error::InvalidInput {
                what: "environment",
                value: self.name().to_owned(),
                problem: "it has no Kubernetes API server (built-in guest or networks only)".into(),
                fix: "bring the environment up with `.minikube(..)`",
            });
        };
        crate::kube::client(path, context).await
    }

    /// Removes everything, reporting every problem instead of swallowing it. Idempotent. An
    /// attached environment ([`Env::attach`]) is taken over first: refused while a live process
    /// owns it.
    pub async fn teardown(self) -> Result<()> {
        let core = self.core.clone();
        off_thread(move || finish(&core)).await
    }

    pub(crate) fn teardown_now(&mut self) -> Result<()> {
        finish(&self.core)
    }

    /// Hands the environment over to the CLI: its objects' owner records say `cli` from now on,
    /// so no reaper removes it when this process ends, and `mkh down NAME` removes it later.
    pub async fn hand_over_to_cli(self) -> Result<EnvDescription> {
        let (core, machines) = (self.core.clone(), self.machines.clone());
        off_thread(move || hand_over(&core, &machines)).await
    }

    pub(crate) fn hand_over_now(&self) -> Result<EnvDescription> {
        hand_over(&self.core, &self.machines)
    }

    /// What to collect into the failure directory, when one was given.
    fn failure_artifacts(&self) -> Option<(ArtifactPlan, PathBuf)> {
        let dir = self.artifacts.clone()?;
        Some((self.core.artifact_plan(), dir))
    }
}

fn leases(core: &EnvCore, role: NetworkRole) -> Result<Vec<DhcpLease>> {
    let leases = core.lv.network_leases(&core.networks().get(role).name)?;
    Ok(leases
        .into_iter()
        .filter_map(DhcpLease::from_libvirt)
        .collect())
}

fn recreate(
    core: &EnvCore,
    name: &str,
    options: &MachineOptions,
    others: &[String],
    wait_ready: bool,
) -> Result<Machine> {
    crate::machine::pool::remove_domain(&core.lv, name, |_| true)?;
    *lock(&core.generations).entry(name.to_owned()).or_insert(0) += 1;
    core.backend
        .recreate_machine(core, options, others, wait_ready)
}

fn describe(core: &EnvCore, machines: &[Machine]) -> Result<EnvDescription> {
    let (ips, ssh) = match machines.first() {
        Some(m) => (
            match m.ips_now() {
                Ok(ips) => Some(ips),
                Err(Error::MachineNotRunning { .. }) => None,
                Err(e) => return Err(e),
            },
            Some(SshDescription {
                user: SSH_USER,
                key: m.key().to_owned(),
                port: 22,
                proxy_command: crate::remote::SshHost::from_uri(core.lv.uri())
                    .map(|h| h.openssh_proxy_command()),
            }),
        ),
        None => (None, None),
    };
    let mut description = EnvDescription {
        version: DESCRIPTION_VERSION,
        name: core.name.clone(),
        id: core.id.to_string(),
        backend: core.backend.name(),
        accel: core.accel.get().copied(),
        libvirt_uri: core.lv.uri().to_owned(),
        owner: core.owner().kind,
        networks: core.networks().clone(),
        ips,
        ssh,
        home: core.home.clone(),
        profile: None,
        minikube_home: None,
        kubeconfig: None,
        context: None,
        minikube_version: None,
        machines: Vec::new(),
    };
    for (i, m) in machines.iter().enumerate() {
        let ips = match (i, ips) {
            (0, ips) => ips,
            _ => match m.ips_now() {
                Ok(ips) => Some(ips),
                Err(Error::MachineNotRunning { .. }) => None,
                Err(e) => return Err(e),
            },
        };
        description.machines.push(MachineDescription {
            name: m.name().to_owned(),
            ips,
        });
    }
    core.backend.describe(&mut description);
    Ok(description)
}

fn hand_over(core: &EnvCore, machines: &[Machine]) -> Result<EnvDescription> {
    lock(&core.owner).kind = OwnerKind::Cli;
    let owner = core.owner();
    let objects = inventory::claimed_objects(&core.lv)?;
    let networks = [&core.networks().nat.name, &core.networks().private.name];
    let whole = networks.iter().all(|net| {
        objects.iter().any(|o| {
            o.kind == inventory::ObjectKind::Network && &&o.name == net && o.owner.env == core.name
        })
    });
    if !whole {
        return Err(torn_down(&core.name));
    }
    // Killed half-way, the environment has two owners; the reaper judges it whole.
    inventory::retag(&core.lv, &objects, &core.name, &owner)?;
    core.write_owner_record()?;
    // From now on nothing of this process removes it.
    drop(core.take_registration());
    describe(core, machines)
}

/// Makes an attached environment this process's before removing it: refused while a live
/// process owns it (that process removes it); while the removal runs, this process's watchdog
/// (or any reaper) finishes it if this process dies.
fn take_over(core: &EnvCore) -> Result<()> {
    let record = core.owner();
    let dead = matches!(
        record.liveness(
            &crate::owner::HostIdentity::current(),
            crate::owner::process_start_time
        ),
        crate::owner::Liveness::Dead(_)
    );
    if record.kind == OwnerKind::Process && !dead {
        return Err(Error::InvalidInput {
            what: "environment",
            value: core.name.clone(),
            problem: format!(
                "it belongs to process {} (test {}), not to the CLI",
                record.process.pid,
                record.test.as_deref().unwrap_or("-")
            ),
            fix: "it is removed when that process ends; `mkh reap` removes it if the process died",
        });
    }
    let remover = Owner {
        process: crate::owner::this_process(),
        kind: OwnerKind::Process,
        ..record
    };
    if core.settings.watchdog && !core.lv.is_test_driver() {
        crate::watchdog::watch_this_process(core.lv.uri(), &core.settings.state_dir);
    }
    let objects = inventory::claimed_objects(&core.lv)?;
    inventory::retag(&core.lv, &objects, &core.name, &remover)?;
    *lock(&core.owner) = remover;
    Ok(())
}

fn finish(core: &EnvCore) -> Result<()> {
    let _span = tracing::info_span!("teardown", env = %core.name).entered();
    if core.attached && lock(&core.registration).is_some() {
        take_over(core)?;
    }
    let Some(registration) = core.take_registration() else {
        return Ok(());
    };
    crate::progress::phase(format!("tearing down {}", core.name));
    let problems = registration.run();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Teardown {
            env: core.name.clone(),
            count: problems.len(),
            problems,
        })
    }
}

/// Runs `work` on a thread of its own and waits at most `deadline` for its result (`None` past
/// it: the work goes on in the background). Drop must neither hang nor need an async runtime.
/// Where no thread can be started, the work runs here.
fn with_deadline<T: Send + 'static>(
    what: &str,
    deadline: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let work = Arc::new(Mutex::new(Some(work)));
    let shared = work.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name(format!("mkh-{what}"))
        .spawn(move || {
            if let Some(work) = lock(&shared).take() {
                let _ = tx.send(work());
            }
        });
    if spawned.is_err() {
        return lock(&work).take().map(|work| work());
    }
    rx.recv_timeout(deadline).ok()
}

impl Drop for Env {
    fn drop(&mut self) {
        // An attached environment outlives its handle.
        if self.core.attached || lock(&self.core.registration).is_none() {
            return;
        }
        if std::thread::panicking() {
            if let Some((plan, dir)) = self.failure_artifacts() {
                let shown = dir.clone();
                let deadline = MINIKUBE_LOGS_DEADLINE + Duration::from_secs(5);
                let collect = move || plan.collect(&dir, None, Some(MINIKUBE_LOGS_DEADLINE));
                if with_deadline("artifacts", deadline, collect).is_none() {
                    tracing::warn!("collecting artifacts took over {deadline:?}; going on");
                }
                tracing::error!(env = %self.core.name, "failed; what explains it is in {}", shown.display());
            }
            if self.core.settings.keep_failed {
                match hand_over(&self.core, &self.machines) {
                    Ok(d) => tracing::warn!(env = %d.name, "{}", kept_message(&d)),
                    Err(e) => tracing::error!(
                        env = %self.core.name,
                        "MKH_KEEP=1 but {} could not be handed over: {e}",
                        self.core.name
                    ),
                }
                return;
            }
        }
        // Never panic in Drop (it may run during a panic) and never hang past the deadline.
        let core = self.core.clone();
        let outcome = with_deadline("teardown", DROP_DEADLINE, move || finish(&core))
            .unwrap_or_else(|| {
                Err(Error::Timeout {
                    what: format!("teardown of {}", self.core.name),
                    after: DROP_DEADLINE,
                    last: "`mkh reap` removes what is left once this process is gone".into(),
                })
            });
        if let Err(e) = outcome {
            tracing::error!(env = %self.core.name, "{e}");
        }
    }
}

/// How to reach and remove an environment that `MKH_KEEP=1` kept.
fn kept_message(d: &EnvDescription) -> String {
    let mut lines = vec![format!(
        "MKH_KEEP=1: environment {} is kept (now CLI-owned)",
        d.name
    )];
    if let (Some(ips), Some(ssh)) = (&d.ips, &d.ssh) {
        lines.push(format!("  nat {}  private {}", ips.nat, ips.private));
        lines.push(format!(
            "  ssh -i {} {}@{}",
            ssh.key.display(),
            ssh.user,
            ips.private
        ));
    }
    if let (Some(k), Some(c)) = (&d.kubeconfig, &d.context) {
        lines.push(format!(
            "  KUBECONFIG={} kubectl --context {c} get ns",
            k.display()
        ));
    }
    lines.push(format!("  remove it with: mkh down {}", d.name));
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn teardown_is_idempotent() {
        // The test driver's state lives as long as one connection to it is open.
        let lv = Libvirt::connect_to("test:///default").unwrap();
        let mut env = Env::builder()
            .libvirt_uri("test:///default")
            .up_now()
            .unwrap();
        let nat = env.networks().nat.name.clone();
        env.teardown_now().unwrap();
        env.teardown_now().unwrap();
        assert!(lv.networks().unwrap().iter().all(|n| n.name != nat));
    }

    #[test]
    fn an_attached_environment_is_the_same_one_and_outlives_its_handle() {
        let uri = "test:///default";
        let lv = Libvirt::connect_to(uri).unwrap();
        let mut mine = Env::builder().libvirt_uri(uri).up_now().unwrap();
        let settings = mine.core.settings.clone();
        let attached = Env::attach_now(mine.name(), settings.clone()).unwrap();
        assert_eq!(attached.networks(), mine.networks());
        assert_eq!(attached.name(), mine.name());
        // This process owns it and lives: only its own handle removes it.
        let err = attached.core.clone();
        let refused = finish(&err).unwrap_err().to_string();
        assert!(refused.contains("belongs to process"), "{refused}");
        drop(attached);
        let nat = mine.networks().nat.name.clone();
        assert!(lv.networks().unwrap().iter().any(|n| n.name == nat));

        // (Removal through a handle attached to a CLI-owned environment is tested on a real
        // libvirt, `the_cli_and_a_test_s_env_drive_one_environment`: on the test driver a
        // hand-over's rewritten owner record does not read back.)
        mine.teardown_now().unwrap();
        assert!(lv.networks().unwrap().iter().all(|n| n.name != nat));
        let err = Env::attach_now(mine.name(), settings).unwrap_err();
        assert!(matches!(err, Error::UnknownEnvironment { .. }), "{err}");
    }
}
