//! The backends: what runs on an environment's networks. [`Backend`] is what a caller asks for;
//! [`for_options`] turns it, once, into a [`ClusterBackend`], the one interface the environment
//! talks to. No other module asks which backend an environment has.

mod builtin;
mod minikube;

use std::path::{Path, PathBuf};

use crate::description::EnvDescription;
use crate::env::{EnvCore, Timings};
use crate::error::Result;
use crate::machine::{Ips, Machine, MachineOptions};
use crate::minikube::{MinikubeCluster, MinikubeOptions};

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

    /// Stops the cluster.
    fn stop(&self, env: &EnvCore, machines: &[Machine]) -> Result<()>;

    /// Starts a stopped cluster and waits until SSH answers on both networks.
    fn start(&self, env: &EnvCore, machines: &[Machine]) -> Result<Ips>;

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
