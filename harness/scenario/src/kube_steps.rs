//! The steps that talk to a cluster's Kubernetes API server (minikube backend): server-side
//! apply of a manifest, and a Service's ClusterIP. They need mkh built with the `kube` feature.

use std::net::Ipv4Addr;

use mkh::blocking::Env;

use crate::error::{Error, Result};
use crate::format::{Apply, ClusterIp};

#[cfg(feature = "kube")]
fn block_on<T>(work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("a tokio runtime for the kube steps", e))?
        .block_on(work)
}

#[cfg(feature = "kube")]
fn refused(env: &Env, action: String, e: kube::Error) -> Error {
    Error::KubeRequest {
        env: env.name().to_owned(),
        action,
        source: Box::new(e),
    }
}

/// Applies the manifest (server-side apply, field manager `mkh`); returns `kind/name`.
#[cfg(feature = "kube")]
pub(super) fn apply(env: &Env, a: &Apply) -> Result<String> {
    use kube::api::{Api, DynamicObject, Patch, PatchParams};
    use kube::core::{ApiResource, GroupVersionKind};
    let manifest = serde_json::to_value(a.manifest.get_ref())
        .map_err(|e| Error::io("the manifest", std::io::Error::other(e)))?;
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    let (api_version, kind) = (text(&manifest["apiVersion"]), text(&manifest["kind"]));
    let name = text(&manifest["metadata"]["name"]);
    let namespace = manifest["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_owned();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", &api_version));
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, &kind));
    block_on(async {
        let client = env.as_async().kube_client().await?;
        let api: Api<DynamicObject> = Api::namespaced_with(client, &namespace, &resource);
        api.patch(
            &name,
            &PatchParams::apply("mkh").force(),
            &Patch::Apply(&manifest),
        )
        .await
        .map_err(|e| refused(env, format!("apply {kind}/{name}"), e))?;
        Ok(format!("{kind}/{name} applied in {namespace}"))
    })
}

/// The ClusterIP of a Service.
#[cfg(feature = "kube")]
pub(super) fn cluster_ip(env: &Env, c: &ClusterIp) -> Result<Option<Ipv4Addr>> {
    use kube::api::{Api, DynamicObject};
    use kube::core::{ApiResource, GroupVersionKind};
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", "Service"));
    block_on(async {
        let client = env.as_async().kube_client().await?;
        let api: Api<DynamicObject> = Api::namespaced_with(client, &c.namespace, &resource);
        let service = api
            .get_opt(c.service.get_ref())
            .await
            .map_err(|e| refused(env, format!("get Service {}", c.service.get_ref()), e))?;
        Ok(service.and_then(|s| s.data["spec"]["clusterIP"].as_str()?.parse().ok()))
    })
}

#[cfg(not(feature = "kube"))]
fn unsupported() -> Error {
    Error::Mkh(mkh::Error::InvalidInput {
        what: "scenario step",
        value: "apply / expect-cluster-ip".into(),
        problem: "this mkh-scenario was built without its `kube` feature".into(),
        fix: "build mkh-scenario with its `kube` feature (the `mkh` command has it)",
    })
}

#[cfg(not(feature = "kube"))]
pub(super) fn apply(_: &Env, _: &Apply) -> Result<String> {
    Err(unsupported())
}

#[cfg(not(feature = "kube"))]
pub(super) fn cluster_ip(_: &Env, _: &ClusterIp) -> Result<Option<Ipv4Addr>> {
    Err(unsupported())
}
