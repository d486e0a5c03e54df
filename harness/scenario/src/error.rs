//! Errors of scenario files and of their steps.

use std::path::PathBuf;

/// The scenario runner's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong with a scenario file or one of its steps. New variants may be added: match
/// with a wildcard arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
#[allow(missing_docs)] // Each variant's message documents it.
pub enum Error {
    #[error("{}:{line}:{column}: {problem}", .file.display())]
    BadScenario {
        file: PathBuf,
        line: usize,
        column: usize,
        problem: String,
    },

    #[error("`{command}` failed on {machine} (exit status {status}): {stderr}")]
    GuestCommand {
        machine: String,
        command: String,
        status: i32,
        stderr: String,
    },

    #[error("the Kubernetes API server of {env} refused to {action}: {source}")]
    KubeRequest {
        env: String,
        action: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// What mkh itself reported (the environment, SSH, libvirt, ...).
    #[error(transparent)]
    Mkh(#[from] mkh::Error),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
