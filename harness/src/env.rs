//! One test's world. [`Env`] owns everything it created and removes it on
//! [`Env::teardown`], on Drop (also during a panic) and on SIGTERM/SIGINT.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;

use std::path::{Path, PathBuf};

use crate::config;
use crate::error::{Error, Result};
use crate::inventory;
use crate::libvirt::{default_uri, Libvirt};
use crate::machine::accel::Accel;
use crate::machine::{choose_accel, Ips, Machine, MachineOptions, SSH_USER};
use crate::minikube::{check_extra_args, find_binary, MinikubeCluster, MinikubeOptions};
use crate::names::{validate_env_name, EnvId};
use crate::net::{create_pair, NetworkPair, SubnetPool};
use crate::owner::{Owner, OwnerKind};
use crate::reaper;
use crate::teardown::Registration;

/// Where a failed environment keeps what explains the failure.
pub const POSTMORTEM_DIR: &str = "postmortem";

/// How long Drop waits for teardown before leaving the rest to the reaper. A network pair goes
/// in well under a second, a machine in two, a minikube cluster (with `minikube delete`) in a
/// few more.
pub const DROP_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct EnvBuilder {
    name: Option<String>,
    kind: OwnerKind,
    pool: Option<SubnetPool>,
    uri: Option<String>,
    backend: Backend,
}

/// What runs on the networks. Which backend is asked in this one place: the backends differ in
/// who starts the machine and where its key, MACs and kubeconfig come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// The two networks alone.
    NetworksOnly,
    /// mkh boots its own test guest.
    Builtin(MachineOptions),
    /// `minikube start --driver=kvm2` on mkh's networks.
    Minikube(MinikubeOptions),
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::NetworksOnly | Backend::Builtin(_) => "builtin",
            Backend::Minikube(_) => "minikube",
        }
    }
}

impl Default for EnvBuilder {
    fn default() -> Self {
        EnvBuilder {
            name: None,
            kind: OwnerKind::Process,
            pool: None,
            uri: None,
            backend: Backend::NetworksOnly,
        }
    }
}

impl EnvBuilder {
    /// The environment's name (`mkh ls`, `mkh down NAME`); default `mkh-<id>`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Owner kind recorded in metadata; [`OwnerKind::Cli`] environments outlive the process.
    pub fn owner_kind(mut self, kind: OwnerKind) -> Self {
        self.kind = kind;
        self
    }

    /// Subnet pool; default from `MKH_SUBNET_POOL` / `MKH_SUBNET_PREFIX`.
    pub fn subnet_pool(mut self, pool: SubnetPool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// libvirt URI; default `MKH_LIBVIRT_URI`, `LIBVIRT_DEFAULT_URI`, `qemu:///system`.
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

    /// Sets the backend directly (for configuration-driven callers).
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Creates the environment on a blocking thread.
    pub async fn up(self) -> Result<Env> {
        tokio::task::spawn_blocking(move || self.up_blocking())
            .await
            .expect("environment creation panicked")
    }

    /// Creates the environment on this thread: sweeps dead owners' leftovers, then creates the
    /// networks. On error, whatever was created is removed before returning.
    pub fn up_blocking(self) -> Result<Env> {
        if let Some(name) = &self.name {
            validate_env_name(name)?;
        }
        let pool = match self.pool {
            Some(p) => p,
            None => SubnetPool::from_env()?,
        };
        // Bad minikube input fails here, before anything exists.
        let minikube_binary = match &self.backend {
            Backend::Minikube(o) => {
                check_extra_args(&o.extra_args)?;
                Some(find_binary(o.binary.as_deref())?)
            }
            _ => None,
        };
        let uri = self.uri.unwrap_or_else(default_uri);
        let lv = Libvirt::connect_to(&uri)?;
        reaper::sweep_once(&lv);

        let id = EnvId::random();
        let name = self.name.unwrap_or_else(|| id.env_name());
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
        let home = config::state_dir().join("envs").join(&name);
        let mut owner = Owner::for_new_object(self.kind, &name);
        owner.home = Some(home.to_string_lossy().into_owned());
        let minikube = minikube_binary.map(|binary| {
            owner.profile = Some(name.clone());
            owner.minikube = Some(binary.to_string_lossy().into_owned());
            MinikubeCluster::at(&home, &name, binary)
        });
        // A minikube profile names a libvirt domain: refuse one that exists already (the user's
        // own cluster), so mkh never claims, let alone deletes, a domain it did not create.
        if minikube.is_some() && lv.domain_state(&name)? != crate::libvirt::DomainState::Missing {
            return Err(Error::InvalidInput {
                what: "environment name",
                value: name,
                problem: "libvirt already has a domain of that name (a minikube profile?)".into(),
                fix: "choose another name",
            });
        }
        let registration = Registration::new(&uri, &name);
        let mut env = Env {
            id,
            name,
            uri,
            owner,
            home,
            networks: None,
            accel: None,
            machines: Vec::new(),
            timings: Timings::default(),
            backend: self.backend,
            minikube,
            registration: Some(registration),
        };
        match env.create(&lv, &pool) {
            Ok(()) => Ok(env),
            Err(e) => {
                let registration = env.registration.take().expect("registered");
                // Logs tell why a guest did not come up: keep them for a post-mortem.
                let e = env.keep_post_mortem(e);
                let problems = registration.run();
                if !problems.is_empty() {
                    tracing::warn!(env = %env.name, "cleanup after failed creation: {}", problems.join("; "));
                }
                Err(e)
            }
        }
    }
}

impl Env {
    fn create(&mut self, lv: &Libvirt, pool: &SubnetPool) -> Result<()> {
        self.make_home()?;
        let registration = self.registration.as_ref().expect("registered");
        let started = Instant::now();
        let networks = create_pair(lv, &self.id, &self.owner, pool, &mut |net| {
            registration.add_network(net)
        })?;
        self.timings.networks = Some(started.elapsed());
        self.networks = Some(networks);
        match self.backend.clone() {
            Backend::NetworksOnly => {}
            Backend::Builtin(options) => {
                self.add_machine(&options)?;
            }
            Backend::Minikube(options) => self.start_minikube(lv, &options)?,
        }
        Ok(())
    }

    /// Creates the home (it must not exist: two environments never share one), registers it
    /// for removal and writes the owner record the reaper reads.
    fn make_home(&mut self) -> Result<()> {
        config::ensure_dir(self.home.parent().expect("envs/<name>"))?;
        std::fs::create_dir(&self.home).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::InvalidInput {
                    what: "environment name",
                    value: self.name.clone(),
                    problem: format!("its home {} exists already", self.home.display()),
                    fix: "choose another name, or remove the directory if nothing uses it (`mkh reap --all`)",
                }
            } else {
                Error::io(&self.home, e)
            }
        })?;
        self.registration
            .as_ref()
            .expect("registered")
            .add_dir(&self.home);
        self.write_owner_record()
    }

    /// The local record of who owns this home, for the reaper (see `reaper::sweep_homes`).
    fn write_owner_record(&self) -> Result<()> {
        let record = self.home.join(crate::reaper::OWNER_RECORD);
        let json = serde_json::to_string_pretty(&self.owner).expect("serialisable");
        std::fs::write(&record, json).map_err(|e| Error::io(&record, e))
    }

    /// Waits for both leases, then SSH on both networks, timing each phase.
    fn wait_ready_timed(&mut self, machine: &Machine) -> Result<()> {
        let started = Instant::now();
        machine.ips()?;
        self.timings.leases = Some(started.elapsed());
        let started = Instant::now();
        machine.wait_ready()?;
        self.timings.ssh = Some(started.elapsed());
        Ok(())
    }

    /// After a failed creation: keeps the console logs and minikube's post-mortem in
    /// `<home>/postmortem/` (the rest of the home goes), and says where.
    fn keep_post_mortem(&self, error: Error) -> Error {
        if let Error::PostMortem { .. } = error {
            if let Some(r) = &self.registration {
                r.keep_dirs();
            }
            return error;
        }
        let consoles: Vec<PathBuf> = std::fs::read_dir(&self.home)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with(".console.log"))
            .collect();
        if consoles.is_empty() {
            return error;
        }
        let dir = self.home.join(POSTMORTEM_DIR);
        if config::ensure_dir(&dir).is_err() {
            return error;
        }
        for c in consoles {
            let _ = std::fs::copy(&c, dir.join(c.file_name().expect("a file")));
        }
        let _ = std::fs::write(dir.join("error.txt"), error.to_string());
        if let Some(r) = &self.registration {
            r.keep_dirs();
        }
        Error::PostMortem {
            source: Box::new(error),
            bundle: dir,
        }
    }

    fn start_minikube(&mut self, lv: &Libvirt, options: &MinikubeOptions) -> Result<()> {
        let cluster = self
            .minikube
            .clone()
            .expect("minikube backend has a cluster");
        let shared_cache = options
            .cache_dir
            .clone()
            .unwrap_or_else(|| config::cache_dir().join("minikube"));
        cluster.prepare(&shared_cache)?;
        let accel = choose_accel(lv)?;
        self.accel = Some(accel);
        let timeouts = config::Timeouts::new(accel)?;
        let registration = self
            .registration
            .as_ref()
            .ok_or_else(|| torn_down(&self.name))?;
        // From here on, whatever happens, teardown starts with `minikube delete`.
        registration.add_command(cluster.delete_command(timeouts.minikube_delete()));

        let started = Instant::now();
        let args = cluster.start_args(&self.uri, self.networks(), options);
        let result = self.run_minikube_start(lv, &cluster, &args, timeouts.minikube_start());
        self.timings.define_start = Some(started.elapsed());
        if let Err(e) = result {
            return Err(self.post_mortem(lv, &cluster, e));
        }
        let files = cluster.machine_files(&self.home);
        let ready = Machine::attach(lv, &cluster.profile, files)
            .and_then(|machine| self.wait_ready_timed(&machine).map(|()| machine));
        match ready {
            Ok(machine) => {
                self.machines.push(machine);
                Ok(())
            }
            Err(e) => Err(self.post_mortem(lv, &cluster, e)),
        }
    }

    /// `minikube start`, tagging minikube's domain with mkh's owner metadata as soon as it
    /// exists (a test killed mid-start must leave a domain the reaper recognises).
    fn run_minikube_start(
        &self,
        lv: &Libvirt,
        cluster: &MinikubeCluster,
        args: &[String],
        deadline: Duration,
    ) -> Result<()> {
        let registration = self
            .registration
            .as_ref()
            .ok_or_else(|| torn_down(&self.name))?;
        let owner_xml = self.owner.to_bare_element_xml();
        let tagged = std::sync::atomic::AtomicBool::new(false);
        let done = std::sync::atomic::AtomicBool::new(false);
        let uri = self.uri.clone();
        let profile = cluster.profile.clone();
        let tag = |lv: &Libvirt| -> Result<()> {
            if !tagged.load(Ordering::SeqCst) && lv.tag_domain(&profile, &owner_xml)? {
                tagged.store(true, Ordering::SeqCst);
                registration.add_domain(&profile);
            }
            Ok(())
        };
        let mut group = None;
        let result = std::thread::scope(|scope| {
            scope.spawn(|| {
                let Ok(lv) = Libvirt::connect_to(&uri) else {
                    return;
                };
                while !done.load(Ordering::SeqCst) && !tagged.load(Ordering::SeqCst) {
                    if let Err(e) = tag(&lv) {
                        tracing::debug!("tagging {profile}: {e}");
                    }
                    std::thread::sleep(Duration::from_millis(300));
                }
            });
            let result = cluster.run(args, deadline, &mut |g| {
                group = Some(g);
                registration.add_kill_group(g);
            });
            done.store(true, Ordering::SeqCst);
            result
        });
        if let Some(g) = group {
            registration.forget_kill_group(g);
        }
        result?;
        // The domain exists once start succeeded: make sure it carries the tag.
        tag(lv)?;
        if !tagged.load(Ordering::SeqCst) {
            return Err(Error::InvalidInput {
                what: "minikube profile",
                value: profile,
                problem: "minikube start succeeded but libvirt has no domain of that name".into(),
                fix:
                    "check that minikube uses the kvm2 driver on the same libvirt (MKH_LIBVIRT_URI)",
            });
        }
        Ok(())
    }

    /// Gathers what tells why a minikube cluster did not come up, into `<home>/postmortem/`.
    fn post_mortem(&self, lv: &Libvirt, cluster: &MinikubeCluster, error: Error) -> Error {
        let dir = self.home.join(POSTMORTEM_DIR);
        if config::ensure_dir(&dir).is_err() {
            return error;
        }
        let write = |name: &str, text: &str| {
            let _ = std::fs::write(dir.join(name), text);
        };
        write("error.txt", &error.to_string());
        let _ = std::fs::copy(&cluster.log, dir.join("minikube.log"));
        let _ = cluster.write_logs(&dir.join("minikube-logs.txt"), Duration::from_secs(60));
        if let Ok(xml) = lv.domain_xml(&cluster.profile) {
            write("domain.xml", &xml);
        }
        for net in [&self.networks().nat, &self.networks().private] {
            if let Ok(leases) = lv.network_leases(&net.name) {
                write(
                    &format!("leases-{}.json", net.name),
                    &serde_json::to_string_pretty(&leases).unwrap_or_default(),
                );
            }
        }
        let console = cluster.machine_files(&self.home).console_log;
        let _ = std::fs::copy(console, dir.join("console.log"));
        Error::PostMortem {
            source: Box::new(error),
            bundle: dir,
        }
    }

    /// Boots a machine of the built-in guest on this environment's networks and waits until
    /// SSH answers on both. Its name defaults to the environment's.
    pub fn add_machine(&mut self, options: &MachineOptions) -> Result<&Machine> {
        let lv = Libvirt::connect_to(&self.uri)?;
        let accel = match self.accel {
            Some(a) => a,
            None => choose_accel(&lv)?,
        };
        self.accel = Some(accel);
        let name = match &options.suffix {
            Some(suffix) => format!("{}-{suffix}", self.name),
            None => self.name.clone(),
        };
        if self.machines.iter().any(|m| m.name() == name) {
            return Err(Error::InvalidInput {
                what: "machine name",
                value: name,
                problem: "this environment already has a machine of that name".into(),
                fix: "give each added machine its own suffix",
            });
        }
        let registration = self
            .registration
            .as_ref()
            .ok_or_else(|| torn_down(&self.name))?;
        let networks = self.networks.as_ref().expect("networks exist");
        let started = Instant::now();
        let machine = Machine::boot_builtin(
            &lv,
            accel,
            options,
            &name,
            networks,
            &self.home,
            &self.owner,
            &mut |dom| registration.add_domain(dom),
        )?;
        self.timings.define_start = Some(started.elapsed());
        self.wait_ready_timed(&machine)?;
        self.machines.push(machine);
        Ok(self.machines.last().expect("just pushed"))
    }

    /// Removes one of this environment's machines (its domain) now; the networks stay.
    pub fn remove_machine(&mut self, name: &str) -> Result<()> {
        if !self.machines.iter().any(|m| m.name() == name) {
            return Err(Error::InvalidInput {
                what: "machine name",
                value: name.to_owned(),
                problem: format!("environment {} has no such machine", self.name),
                fix: "pass the name of one of `Env::machines()`",
            });
        }
        Libvirt::connect_to(&self.uri)?.remove_domain(name)?;
        self.machines.retain(|m| m.name() != name);
        Ok(())
    }
}

fn torn_down(name: &str) -> Error {
    Error::InvalidInput {
        what: "environment",
        value: name.to_owned(),
        problem: "it was torn down or detached".into(),
        fix: "create a new environment",
    }
}

/// A live environment. Dropping it removes everything it created.
#[derive(Debug)]
pub struct Env {
    id: EnvId,
    name: String,
    uri: String,
    owner: Owner,
    home: PathBuf,
    /// Set once created (an `Env` is only handed out then).
    networks: Option<NetworkPair>,
    accel: Option<Accel>,
    machines: Vec<Machine>,
    timings: Timings,
    backend: Backend,
    minikube: Option<MinikubeCluster>,
    /// `None` once torn down or detached.
    registration: Option<Registration>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Registration")
    }
}

/// How long each phase of bringing the environment up took (the last machine added).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Timings {
    /// Both networks defined and started (subnet choice included).
    pub networks: Option<Duration>,
    /// Guest image found, keys made, domain defined and started.
    pub define_start: Option<Duration>,
    /// From the domain's start to a DHCP lease on both networks.
    pub leases: Option<Duration>,
    /// From the leases to SSH answering on both networks.
    pub ssh: Option<Duration>,
}

/// Version of the [`EnvDescription`] JSON schema (`mkh up --json`): bumped on any change that
/// could break a reader.
pub const DESCRIPTION_VERSION: u32 = 1;

/// What `mkh up --json` and fixtures show of an environment.
#[derive(Debug, Clone, Serialize)]
pub struct EnvDescription {
    pub version: u32,
    pub name: String,
    pub id: String,
    /// `builtin`: mkh boots its own guest (or none: networks only).
    pub backend: &'static str,
    pub accel: Option<Accel>,
    pub libvirt_uri: String,
    pub owner: OwnerKind,
    pub networks: NetworkPair,
    /// The first machine's addresses when it was last seen ready.
    pub ips: Option<Ips>,
    pub ssh: Option<SshDescription>,
    pub home: PathBuf,
    /// minikube backend only: the profile, the MINIKUBE_HOME to give the minikube binary, the
    /// kubeconfig file and its context.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minikube_home: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SshDescription {
    pub user: &'static str,
    pub key: PathBuf,
    pub port: u16,
}

impl Env {
    pub fn builder() -> EnvBuilder {
        EnvBuilder::default()
    }

    pub fn id(&self) -> &EnvId {
        &self.id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    pub fn networks(&self) -> &NetworkPair {
        self.networks.as_ref().expect("an Env has its networks")
    }

    pub fn libvirt_uri(&self) -> &str {
        &self.uri
    }

    /// The environment's directory: SSH keys, known hosts, console logs.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The accelerator machines boot with (once a machine was booted).
    pub fn accel(&self) -> Option<Accel> {
        self.accel
    }

    pub fn timings(&self) -> Timings {
        self.timings
    }

    /// The first machine (the built-in guest), if the environment has one.
    pub fn machine(&self) -> Option<&Machine> {
        self.machines.first()
    }

    pub fn machines(&self) -> &[Machine] {
        &self.machines
    }

    /// The minikube cluster of a minikube-backed environment.
    pub fn minikube(&self) -> Option<&MinikubeCluster> {
        self.minikube.as_ref()
    }

    /// The kubeconfig file of a minikube-backed environment, and its context.
    pub fn kubeconfig(&self) -> Option<(&Path, &str)> {
        self.minikube
            .as_ref()
            .map(|c| (c.kubeconfig.as_path(), c.context()))
    }

    /// Stops the cluster: `minikube stop` for minikube, an ACPI shutdown for the built-in guest.
    pub fn stop(&self) -> Result<()> {
        match (&self.minikube, self.machine()) {
            (Some(cluster), _) => {
                let timeouts = self.machine_timeouts()?;
                let args = ["stop".to_owned(), "-p".to_owned(), cluster.profile.clone()];
                cluster.run(&args, timeouts.minikube_start(), &mut |_| {})
            }
            (None, Some(machine)) => machine.stop(),
            (None, None) => Ok(()),
        }
    }

    /// Starts a stopped cluster again and waits until SSH answers on both networks.
    pub fn start(&self) -> Result<Ips> {
        let Some(machine) = self.machine() else {
            return Err(Error::InvalidInput {
                what: "environment",
                value: self.name.clone(),
                problem: "it has no machine to start".into(),
                fix: "bring one up with `.guest(..)` or `.minikube(..)`",
            });
        };
        if let (Some(cluster), Backend::Minikube(options)) = (&self.minikube, &self.backend) {
            let lv = Libvirt::connect_to(&self.uri)?;
            let args = cluster.start_args(&self.uri, self.networks(), options);
            self.run_minikube_start(
                &lv,
                cluster,
                &args,
                self.machine_timeouts()?.minikube_start(),
            )?;
            return machine.wait_ready();
        }
        machine.start()
    }

    fn machine_timeouts(&self) -> Result<config::Timeouts> {
        config::Timeouts::new(self.accel.unwrap_or(Accel::Tcg))
    }

    /// Describes the environment; with a machine, reads its current IPs from the leases.
    /// A stopped machine has no IPs to show (`ips` is then `None`).
    pub fn describe(&self) -> Result<EnvDescription> {
        let (ips, ssh) = match self.machine() {
            Some(m) => (
                match m.ips() {
                    Ok(ips) => Some(ips),
                    Err(Error::MachineNotRunning { .. }) => None,
                    Err(e) => return Err(e),
                },
                Some(SshDescription {
                    user: SSH_USER,
                    key: m.key().to_owned(),
                    port: 22,
                }),
            ),
            None => (None, None),
        };
        Ok(EnvDescription {
            version: DESCRIPTION_VERSION,
            name: self.name.clone(),
            id: self.id.to_string(),
            backend: self.backend.name(),
            accel: self.accel,
            libvirt_uri: self.uri.clone(),
            owner: self.owner.kind,
            networks: self.networks().clone(),
            ips,
            ssh,
            home: self.home.clone(),
            profile: self.minikube.as_ref().map(|c| c.profile.clone()),
            minikube_home: self.minikube.as_ref().map(|c| c.minikube_home.clone()),
            kubeconfig: self.minikube.as_ref().map(|c| c.kubeconfig.clone()),
            context: self.minikube.as_ref().map(|c| c.context().to_owned()),
        })
    }

    /// Removes everything, reporting every problem instead of swallowing it. Idempotent.
    pub async fn teardown(mut self) -> Result<()> {
        let registration = self.registration.take();
        let name = self.name.clone();
        tokio::task::spawn_blocking(move || finish(&name, registration))
            .await
            .expect("teardown panicked")
    }

    /// [`Env::teardown`] on this thread.
    pub fn teardown_blocking(&mut self) -> Result<()> {
        finish(&self.name, self.registration.take())
    }

    /// Hands the environment over to the CLI: its objects' owner records say `cli` from now on,
    /// so no reaper removes them when this process ends, and `mkh down NAME` removes it later.
    /// For keeping a failed test's world to look at (`MKH_KEEP=1`).
    pub fn hand_over_to_cli(mut self) -> Result<EnvDescription> {
        let lv = Libvirt::connect_to(&self.uri)?;
        self.owner.kind = OwnerKind::Cli;
        let owner_xml = self.owner.to_bare_element_xml();
        for net in [&self.networks().nat.name, &self.networks().private.name] {
            let current = lv
                .networks()?
                .into_iter()
                .find(|n| &n.name == net)
                .ok_or_else(|| torn_down(&self.name))?;
            let xml = self
                .owner
                .replace_in_object_xml(&current.xml)
                .ok_or_else(|| Error::BadXml {
                    object: format!("network {net}"),
                    problem: "no <metadata> element".into(),
                })?;
            lv.redefine_network(net, &xml)?;
        }
        for machine in &self.machines {
            lv.tag_domain(machine.name(), &owner_xml)?;
        }
        self.write_owner_record()?;
        self.registration = None;
        self.describe()
    }

    /// Leaves the environment in place when this value goes (for CLI-owned environments, which
    /// `mkh down` removes later).
    pub fn detach(mut self) {
        self.registration = None;
    }
}

fn finish(name: &str, registration: Option<Registration>) -> Result<()> {
    let Some(registration) = registration else {
        return Ok(());
    };
    let problems = registration.run();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Teardown {
            env: name.to_owned(),
            count: problems.len(),
            problems,
        })
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let Some(registration) = self.registration.take() else {
            return;
        };
        // Never panic in Drop (it may run during a panic) and never hang past the deadline.
        let problems = registration.run_with_deadline(DROP_DEADLINE);
        for p in problems {
            eprintln!("mkh: teardown of {}: {p}", self.name);
        }
    }
}
