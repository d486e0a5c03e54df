//! Errors of the mkh library. Each variant names the resource, what was seen and what to do next;
//! pretty reporting belongs to the binary.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid {what} {value:?}: {problem}; {fix}")]
    InvalidInput {
        what: &'static str,
        value: String,
        problem: String,
        fix: &'static str,
    },

    #[error("cannot connect to libvirt at {uri}: {source}; start libvirtd (and virtlogd), check that your user may use its socket, or set MKH_LIBVIRT_URI")]
    Connect {
        uri: String,
        #[source]
        source: virt::error::Error,
    },

    #[error("libvirt refused to {action} {object}: {source}")]
    Libvirt {
        action: &'static str,
        object: String,
        #[source]
        source: virt::error::Error,
    },

    #[error("subnet pool {pool} is exhausted: all {total} /{prefix} subnets are taken ({in_use} by networks, addresses or routes on this host); remove unused networks (`mkh reap`) or set MKH_SUBNET_POOL to a larger range")]
    PoolExhausted {
        pool: String,
        prefix: u8,
        total: usize,
        in_use: usize,
    },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("libvirt returned XML that mkh cannot read ({object}): {problem}")]
    BadXml { object: String, problem: String },

    #[error("no mkh environment named {name:?}; `mkh ls` lists the environments that exist")]
    UnknownEnvironment { name: String },

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
