//! One test's world. [`Env`] owns everything it created and removes it on
//! [`Env::teardown`], on Drop (also during a panic) and on SIGTERM/SIGINT.

use std::time::Duration;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::libvirt::{default_uri, Libvirt};
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
}

impl Default for EnvBuilder {
    fn default() -> Self {
        EnvBuilder {
            name: None,
            kind: OwnerKind::Process,
            pool: None,
            uri: None,
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
        let owner = Owner::for_new_object(self.kind, &name);
        let registration = Registration::new(&uri, &name);
        let networks = create_pair(&lv, &id, &owner, &pool, &mut |net| {
            registration.add_network(net)
        });
        match networks {
            Ok(networks) => Ok(Env {
                id,
                name,
                uri,
                owner,
                networks,
                registration: Some(registration),
            }),
            Err(e) => {
                let problems = registration.run();
                if !problems.is_empty() {
                    tracing::warn!(env = %name, "cleanup after failed creation: {}", problems.join("; "));
                }
                Err(e)
            }
        }
    }
}

/// A live environment. Dropping it removes everything it created.
#[derive(Debug)]
pub struct Env {
    id: EnvId,
    name: String,
    uri: String,
    owner: Owner,
    networks: NetworkPair,
    /// `None` once torn down or detached.
    registration: Option<Registration>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Registration")
    }
}

/// What `mkh up --json` and fixtures show of an environment.
#[derive(Debug, Clone, Serialize)]
pub struct EnvDescription {
    pub name: String,
    pub id: String,
    pub libvirt_uri: String,
    pub owner: OwnerKind,
    pub networks: NetworkPair,
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
        &self.networks
    }

    pub fn describe(&self) -> EnvDescription {
        EnvDescription {
            name: self.name.clone(),
            id: self.id.to_string(),
            libvirt_uri: self.uri.clone(),
            owner: self.owner.kind,
            networks: self.networks.clone(),
        }
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
    pub fn detach(mut self) -> EnvDescription {
        self.registration = None;
        self.describe()
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
