//! Errors of the mkh library. Each variant names the resource, what was seen and what to do next;
//! pretty reporting belongs to the binary.

use std::path::PathBuf;

/// mkh's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, with the resource it concerns and what to do about it. New variants may be
/// added: match with a wildcard arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
#[allow(missing_docs)] // Each variant's message documents it.
pub enum Error {
    #[error("invalid {what} {value:?}: {problem}; {fix}")]
    InvalidInput {
        what: &'static str,
        value: String,
        problem: String,
        fix: &'static str,
    },

    #[error("cannot connect to libvirt at {uri}: {source}; {}", connect_fix(.uri))]
    Connect {
        uri: String,
        #[source]
        source: crate::libvirt::LibvirtError,
    },

    #[error("libvirt refused to {action} {object}: {source}")]
    Libvirt {
        action: &'static str,
        object: String,
        #[source]
        source: crate::libvirt::LibvirtError,
    },

    #[error("subnet pool {pool} is exhausted: all {total} /{prefix} subnets are taken ({in_use} by networks, addresses or routes on this host); remove unused networks (`mkh reap`) or set MKH_SUBNET_POOL to a larger range")]
    PoolExhausted {
        pool: String,
        prefix: u8,
        total: usize,
        in_use: usize,
    },

    #[error("uploading volume {volume} to the libvirt host failed: {problem}; check the host's free space in mkh's storage pool (`virsh pool-info mkh-images`) and try again")]
    Upload { volume: String, problem: String },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{} ({what}) cannot be read: {problem}", .path.display())]
    BadFile {
        path: PathBuf,
        what: String,
        problem: String,
    },

    #[error("libvirt returned XML that mkh cannot read ({object}): {problem}")]
    BadXml { object: String, problem: String },

    #[error("no mkh environment named {name:?}; `mkh ls` lists the environments that exist")]
    UnknownEnvironment { name: String },

    #[error("{what} failed: {problem}; its log is {}; last lines:\n{tail}", .log.display())]
    Process {
        what: String,
        problem: String,
        log: PathBuf,
        tail: String,
    },

    #[error("minikube was asked for but {value:?} cannot be used: {problem}; install minikube, put it on PATH or set MKH_MINIKUBE to its path (mkh never falls back to its built-in guest on its own)")]
    MinikubeMissing { value: String, problem: String },

    #[error("minikube {version} ({}) would refuse this start: {rule}; {fix}", .binary.display())]
    MinikubeWouldRefuse {
        binary: PathBuf,
        version: String,
        rule: String,
        fix: String,
    },

    #[error("the environment's private network {network} is no longer one mkh can use: {problem}; mkh adopts a network minikube made again under that name without anyone's metadata, but not a missing one or another owner's: bring up a new environment")]
    NetworkReplaced { network: String, problem: String },

    #[error("{source}\n  what explains it is kept in {}", .bundle.display())]
    PostMortem { source: Box<Error>, bundle: PathBuf },

    #[error("no Kubernetes client for context {context:?} of {}: {source}", .kubeconfig.display())]
    Kube {
        kubeconfig: PathBuf,
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    #[error("SSH to {target}: {problem}")]
    Ssh {
        target: String,
        problem: String,
        #[source]
        source: Option<SshCause>,
    },

    #[error("the SSH host key of machine {machine} changed: {known} was recorded in {record}, the guest offered {offered}; a different machine may answer at that address (stale lease?). If the machine was rebuilt on purpose, remove its line from that file")]
    HostKeyChanged {
        machine: String,
        known: String,
        offered: String,
        record: PathBuf,
    },

    /// A warm start could not restore the saved guest.
    #[error("the saved guest {saved} could not be restored; remove it (the next warm start boots and saves a new one) or start cold (MKH_WARM=0)")]
    WarmStart {
        saved: PathBuf,
        #[source]
        source: Box<Error>,
    },

    #[error("{what} did not succeed within {after:?}; last problem: {last}")]
    Timeout {
        what: String,
        after: std::time::Duration,
        last: String,
    },

    #[error("{0}")]
    NoLease(Box<NoLease>),

    #[error("machine {machine} is {state}, and this needs it running: start it first")]
    MachineNotRunning {
        machine: String,
        state: &'static str,
    },

    #[error("the guest image could not be prepared: {0}")]
    Image(#[source] Box<crate::machine::image::ImageError>),

    #[error("teardown of {env} left {count} problem(s): {}", .problems.join("; "))]
    Teardown {
        env: String,
        count: usize,
        problems: Vec<String>,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<crate::machine::image::ImageError> for Error {
    fn from(e: crate::machine::image::ImageError) -> Self {
        Error::Image(Box::new(e))
    }
}

/// The underlying failure of an SSH step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SshCause {
    /// The network or a local file.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The SSH protocol (libssh2).
    #[error(transparent)]
    Protocol(#[from] ssh2::Error),
}

/// What to do when libvirt at `uri` does not answer.
fn connect_fix(uri: &str) -> &'static str {
    if crate::libvirt::uri_is_local(uri) {
        "start libvirtd (and virtlogd), check that your user may use its socket, or set MKH_LIBVIRT_URI"
    } else {
        "check that `virsh -c URI version` works from this shell (the host answers, the SSH key in ?keyfile= or your agent logs in, its host key is in ~/.ssh/known_hosts, libvirtd runs there), or set MKH_LIBVIRT_URI"
    }
}

/// A machine got no DHCP lease in time: what was asked and what was seen.
#[derive(Debug, thiserror::Error)]
#[error("no DHCP lease for machine {machine} on network {network} (MAC {mac}) within {after:?}; leases seen there: {seen}. {}", console_hint(.console.as_deref()))]
#[allow(missing_docs)] // The message documents the fields.
pub struct NoLease {
    pub machine: String,
    pub network: String,
    pub mac: String,
    pub after: std::time::Duration,
    pub seen: String,
    /// The machine's console log, where its backend keeps one.
    pub console: Option<PathBuf>,
}

fn console_hint(console: Option<&std::path::Path>) -> String {
    match console {
        Some(path) => format!("Check the machine's console log: {}", path.display()),
        None => "Its console is not logged (minikube's kvm2 leaves it a pty): `virsh console` shows it while it runs".into(),
    }
}
