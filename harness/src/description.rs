//! What `mkh up --json` prints and fixtures show of an environment: a small schema of its own,
//! versioned, kept apart from the types that make the environment.

use std::path::PathBuf;

use serde::Serialize;

use crate::machine::{Accel, Ips};
use crate::net::NetworkPair;
use crate::owner::OwnerKind;

/// Version of the [`EnvDescription`] JSON schema (`mkh up --json`): bumped on any change that
/// could break a reader.
pub const DESCRIPTION_VERSION: u32 = 1;

/// An environment as `mkh up --json` prints it.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct EnvDescription {
    /// [`DESCRIPTION_VERSION`].
    pub version: u32,
    /// The environment's name (`mkh down NAME`).
    pub name: String,
    /// Its id, part of its networks' names.
    pub id: String,
    /// `builtin`: mkh boots its own guest (or none: networks only); `minikube`.
    pub backend: &'static str,
    /// The accelerator its machines run under, once one was booted.
    pub accel: Option<Accel>,
    /// The libvirt it lives on.
    pub libvirt_uri: String,
    /// Who owns it: a process (removed when that process ends) or the CLI.
    pub owner: OwnerKind,
    /// Its two networks.
    pub networks: NetworkPair,
    /// The first machine's addresses when it was last seen ready.
    pub ips: Option<Ips>,
    /// How to log in to the first machine.
    pub ssh: Option<SshDescription>,
    /// The environment's directory: keys, known hosts, console logs.
    pub home: PathBuf,
    /// minikube backend: the profile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// minikube backend: the MINIKUBE_HOME to give the minikube binary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minikube_home: Option<PathBuf>,
    /// minikube backend: the kubeconfig file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
    /// minikube backend: the kubeconfig context.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// minikube backend: the version of the minikube binary, read when the environment was
    /// made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minikube_version: Option<String>,
    /// Every machine (for minikube, every node: `<profile>`, `<profile>-m02`, ...), the
    /// first one first.
    pub machines: Vec<MachineDescription>,
}

/// One machine of an environment.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct MachineDescription {
    /// Its libvirt domain.
    pub name: String,
    /// Its addresses, when it runs.
    pub ips: Option<Ips>,
}

/// How to log in to a machine.
#[derive(Debug, Clone, Serialize)]
pub struct SshDescription {
    /// Always `docker`.
    pub user: &'static str,
    /// The private key.
    pub key: PathBuf,
    /// The SSH port.
    pub port: u16,
    /// For a libvirt host reached over SSH, whose guests' addresses are routable only there:
    /// the OpenSSH `ProxyCommand` that goes through it (`ssh -p PORT [-i KEY] -W %h:%p
    /// user@host`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_command: Option<String>,
}
