//! A `kube::Client` for a cluster, built from its own kubeconfig file and context (never from
//! the user's `~/.kube/config`).

use std::path::Path;

use crate::error::{Error, Result};

/// A client for `context` in the kubeconfig file `path`.
pub(crate) async fn client(path: &Path, context: &str) -> Result<kube::Client> {
    let fail = |source: Box<dyn std::error::Error + Send + Sync>| Error::Kube {
        kubeconfig: path.to_owned(),
        context: context.to_owned(),
        source,
    };
    let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|e| fail(Box::new(e)))?;
    let options = kube::config::KubeConfigOptions {
        context: Some(context.to_owned()),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| fail(Box::new(e)))?;
    kube::Client::try_from(config).map_err(|e| fail(Box::new(e)))
}
