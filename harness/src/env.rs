//! One test's world. [`Env`] owns everything it created and removes it on
//! [`Env::teardown`], on Drop (also during a panic) and on SIGTERM/SIGINT.

use std::time::{Duration, Instant};

use serde::Serialize;

use std::path::{Path, PathBuf};

use crate::config;
use crate::error::{Error, Result};
use crate::inventory;
use crate::libvirt::{default_uri, Libvirt};
use crate::machine::accel::Accel;
use crate::machine::{choose_accel, Ips, Machine, MachineOptions, SSH_USER};
use crate::names::{validate_env_name, EnvId};
use crate::net::{create_pair, NetworkPair, SubnetPool};
use crate::owner::{Owner, OwnerKind};
use crate::reaper;
use crate::teardown::Registration;

/// How long Drop waits for teardown before leaving the rest to the reaper. nextest's default
/// grace period after SIGTERM is 10 s; a network pair goes in well under one.
pub const DROP_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct EnvBuilder {
    name: Option<String>,
    kind: OwnerKind,
    pool: Option<SubnetPool>,
    uri: Option<String>,
    guest: Option<MachineOptions>,
}

impl Default for EnvBuilder {
    fn default() -> Self {
        EnvBuilder {
            name: None,
            kind: OwnerKind::Process,
            pool: None,
            uri: None,
            guest: None,
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
        self.guest = Some(options);
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
        let registration = Registration::new(&uri, &name);
        registration.add_dir(&home);
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
            registration: Some(registration),
        };
        match env.create(&lv, &pool, self.guest.as_ref()) {
            Ok(()) => Ok(env),
            Err(e) => {
                let registration = env.registration.take().expect("registered");
                // The console log tells why a guest did not come up: keep the home.
                if env.home.join(format!("{}.console.log", env.name)).exists() {
                    registration.keep_dirs();
                    tracing::warn!(home = %env.home.display(), "creation failed; kept the environment's files");
                }
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
    fn create(
        &mut self,
        lv: &Libvirt,
        pool: &SubnetPool,
        guest: Option<&MachineOptions>,
    ) -> Result<()> {
        config::ensure_dir(&self.home)?;
        let registration = self.registration.as_ref().expect("registered");
        let started = Instant::now();
        let networks = create_pair(lv, &self.id, &self.owner, pool, &mut |net| {
            registration.add_network(net)
        })?;
        self.timings.networks = Some(started.elapsed());
        self.networks = Some(networks);
        if let Some(options) = guest {
            self.add_machine(options)?;
        }
        Ok(())
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
        let started = Instant::now();
        machine.ips()?;
        self.timings.leases = Some(started.elapsed());
        let started = Instant::now();
        machine.wait_ready()?;
        self.timings.ssh = Some(started.elapsed());
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

    /// Describes the environment; with a machine, reads its current IPs from the leases.
    pub fn describe(&self) -> Result<EnvDescription> {
        let (ips, ssh) = match self.machine() {
            Some(m) => (
                Some(m.ips()?),
                Some(SshDescription {
                    user: SSH_USER,
                    key: m.key().private.clone(),
                    port: 22,
                }),
            ),
            None => (None, None),
        };
        Ok(EnvDescription {
            version: DESCRIPTION_VERSION,
            name: self.name.clone(),
            id: self.id.to_string(),
            backend: "builtin",
            accel: self.accel,
            libvirt_uri: self.uri.clone(),
            owner: self.owner.kind,
            networks: self.networks().clone(),
            ips,
            ssh,
            home: self.home.clone(),
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
