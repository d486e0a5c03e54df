//! A `kube::Client` for a cluster, built from its own kubeconfig file and context (never from
//! the user's `~/.kube/config`).

use std::path::Path;

use crate::error::{Error, Result};

/// A client for `context` in the kubeconfig file `path`.
pub(crate) async fn client(path: &Path, context: &str) -> Result<kube::Client> {
    let fail = move |path: &Path, source: Box<dyn std::error::Error + Send + Sync>| Error::Kube {
        kubeconfig: path.to_owned(),
        context: context.to_owned(),
        source,
    };
    // A file read: off the runtime thread, as every blocking call.
    let (file, owned_context) = (path.to_owned(), context.to_owned());
    let kubeconfig = crate::wait::off_thread(move || {
        let source: Box<dyn std::error::Error + Send + Sync> = if !file.exists() {
            // minikube writes it when Kubernetes starts: never with `--no-kubernetes`.
            "the file does not exist: minikube writes it once the cluster's Kubernetes runs, and a cluster started with --no-kubernetes has none".into()
        } else {
            match kube::config::Kubeconfig::read_from(&file) {
                Ok(kubeconfig) => return Ok(kubeconfig),
                Err(e) => Box::new(e),
            }
        };
        Err(Error::Kube {
            kubeconfig: file.clone(),
            context: owned_context,
            source,
        })
    })
    .await?;
    if !kubeconfig.contexts.iter().any(|c| c.name == context) {
        // minikube removes a profile's entries on `stop` and writes them on `start`
        // (`kubeconfig.DeleteContext`, cmd/minikube/cmd/stop.go).
        return Err(fail(
            path,
            format!("the file has no context {context:?}: a stopped minikube cluster has none (`minikube stop` removes it, `start` writes it again)").into(),
        ));
    }
    let options = kube::config::KubeConfigOptions {
        context: Some(context.to_owned()),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| fail(path, Box::new(e)))?;
    kube::Client::try_from(config).map_err(|e| fail(path, Box::new(e)))
}
