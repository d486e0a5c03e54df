//! The backends: what runs on an environment's networks. [`Backend`] is what a caller asks for;
//! [`for_options`] turns it, once, into a [`ClusterBackend`], the one interface the environment
//! talks to. No other module asks which backend an environment has.

mod builtin;
mod minikube;

use std::path::{Path, PathBuf};

use crate::description::EnvDescription;
use crate::env::{EnvCore, Timings};
use crate::error::{Error, Result};
use crate::machine::{Ips, Machine, MachineFiles, MachineOptions};
use crate::minikube::{MinikubeCluster, MinikubeOptions};
use crate::owner::Owner;

/// What runs on an environment's networks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Backend {
    /// The two networks alone.
    #[default]
    NetworksOnly,
    /// mkh boots its own test guest.
    Builtin(MachineOptions),
    /// `minikube start --driver=kvm2` on mkh's networks.
    Minikube(MinikubeOptions),
}

/// One backend's answers to what an environment needs of it.
pub(crate) trait ClusterBackend: Send + Sync + std::fmt::Debug {
    /// `builtin` or `minikube`, as `mkh up --json` shows it.
    fn name(&self) -> &'static str;

    /// Checks what libvirt already holds, before anything of the environment is made (a
    /// minikube profile's domains must not exist yet).
    fn check_libvirt(&self, _lv: &crate::libvirt::Libvirt) -> Result<()> {
        Ok(())
    }

    /// Brings up the environment's first machine(s) once its networks exist, and waits until
    /// SSH answers on both networks.
    fn bring_up(&self, env: &EnvCore, timings: &mut Timings) -> Result<Vec<Machine>>;

    /// Boots one more machine on the environment's networks (not named in `existing`) and waits
    /// until SSH answers on both.
    fn add_machine(
        &self,
        env: &EnvCore,
        _options: &MachineOptions,
        _existing: &[String],
        _timings: &mut Timings,
    ) -> Result<Machine> {
        Err(self.only_builtin(env, "add a machine"))
    }

    /// Boots a machine anew under its old name (its domain is gone): new MACs, the same name
    /// and hostname, as minikube recreates a VM whose domain went missing.
    fn recreate_machine(
        &self,
        env: &EnvCore,
        _options: &MachineOptions,
        _others: &[String],
        _wait_ready: bool,
    ) -> Result<Machine> {
        Err(self.only_builtin(env, "recreate a machine"))
    }

    /// What the built-in guest alone can do.
    fn only_builtin(&self, env: &EnvCore, what: &str) -> Error {
        Error::InvalidInput {
            what: "environment",
            value: env.name.clone(),
            problem: format!(
                "mkh can {what} only with the built-in guest, and it runs {}",
                self.name()
            ),
            fix: "use an environment of the built-in guest for this",
        }
    }

    /// Stops the cluster.
    fn stop(&self, env: &EnvCore, machines: &[Machine]) -> Result<()>;

    /// Starts a stopped cluster and waits until SSH answers on both networks.
    fn start(&self, env: &EnvCore, machines: &[Machine]) -> Result<Started>;

    /// The keys, known hosts and console log of one of its machines.
    fn machine_files(&self, env: &EnvCore, domain: &str) -> MachineFiles;

    /// Where a domain of this backend logs its console, if it does.
    fn console_log(&self, env: &EnvCore, domain: &str) -> Option<PathBuf>;

    /// The minikube cluster, for the backend that has one.
    fn minikube(&self) -> Option<&MinikubeCluster> {
        None
    }

    /// The kubeconfig file and context of the cluster's API server, if it has one.
    fn kubeconfig(&self) -> Option<(&Path, &str)> {
        self.minikube()
            .map(|c| (c.kubeconfig.as_path(), c.context()))
    }

    /// Writes what only this backend knows into the environment's owner record (minikube's
    /// profile and binary, which `mkh down` and a later attach need).
    fn record(&self, _owner: &mut Owner) {}

    /// What removes this backend's part of an environment before its domains go (`minikube
    /// delete`).
    fn removal_commands(&self) -> Vec<crate::teardown::TeardownCommand> {
        Vec::new()
    }

    /// Adds what only this backend knows to the environment's description.
    fn describe(&self, _description: &mut EnvDescription) {}
}

/// The backend for `options`, checked before anything is created (a minikube binary that is
/// missing, refused arguments).
pub(crate) fn for_options(
    options: &Backend,
    settings: &crate::Settings,
    home: &Path,
    profile: &str,
) -> Result<Box<dyn ClusterBackend>> {
    Ok(match options {
        Backend::NetworksOnly => Box::new(builtin::BuiltinGuest { options: None }),
        Backend::Builtin(o) => {
            // QEMU opens the guest image from the cache directory (checked without creating
            // anything); a remote libvirt host has it in its pool.
            if crate::libvirt::uri_is_local(&settings.libvirt_uri) {
                crate::config::check_cache_dir(&settings.cache_dir)?;
            }
            if o.warm_start {
                crate::machine::warm::check_possible(&settings.libvirt_uri, home)?;
            }
            // Its guests are reached through an SSH host: a login that fails there would fail
            // only once the machine runs.
            if let Some(host) = crate::remote::SshHost::from_uri(&settings.libvirt_uri) {
                host.check_login()?;
            }
            Box::new(builtin::BuiltinGuest {
                options: Some(o.clone()),
            })
        }
        Backend::Minikube(o) => {
            Box::new(minikube::MinikubeBackend::new(o, settings, home, profile)?)
        }
    })
}

/// The backend of an existing environment, from its owner record: minikube's where the record
/// names a profile and the binary that made it, else the built-in guest. Nothing is checked
/// here: removing an environment must work when its minikube is gone; starting it checks what
/// `minikube start` would refuse.
pub(crate) fn for_record(
    owner: &Owner,
    settings: &crate::Settings,
    home: &Path,
    nodes: u32,
) -> Box<dyn ClusterBackend> {
    match (&owner.profile, &owner.minikube) {
        (Some(profile), Some(binary)) => Box::new(minikube::MinikubeBackend::attached(
            MinikubeCluster::at(home, profile, PathBuf::from(binary), &settings.libvirt_uri),
            nodes,
            settings,
        )),
        _ => Box::new(builtin::BuiltinGuest { options: None }),
    }
}

/// What a start brought up: the first machine's IPs, and every machine as it is now (minikube
/// makes a machine whose domain vanished anew, with new MACs).
pub(crate) struct Started {
    pub ips: Ips,
    pub machines: Vec<Machine>,
}
