//! A `kube::Client` for a cluster, built from its own kubeconfig file and context (never from
//! the user's `~/.kube/config`).

use std::path::Path;

use crate::error::{Error, Result};

/// A client for `context` in the kubeconfig file `path`.
pub async fn client(path: &Path, context: &str) -> Result<kube::Client> {
    let fail = |problem: String| Error::Kube {
        kubeconfig: path.to_owned(),
        context: context.to_owned(),
        problem,
    };
    let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|e| fail(e.to_string()))?;
    let options = kube::config::KubeConfigOptions {
        context: Some(context.to_owned()),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| fail(e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| fail(e.to_string()))
}

impl crate::Env {
    /// A kube client for a minikube-backed environment's cluster.
    pub async fn kube_client(&self) -> Result<kube::Client> {
        let Some((path, context)) = self.kubeconfig() else {
            return Err(Error::InvalidInput {
                what: "environment",
                value: self.name().to_owned(),
                problem: "it has no Kubernetes API server (built-in guest or networks only)".into(),
                fix: "bring the environment up with `.minikube(..)`",
            });
        };
        client(path, context).await
    }
}
