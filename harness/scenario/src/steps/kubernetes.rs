//! The steps that talk to a cluster's Kubernetes API server (minikube backend): `apply`, a
//! server-side apply of a manifest, and `expect-cluster-ip`, a Service's ClusterIP. Running
//! them needs mkh-scenario built with its `kube` feature.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::Deserialize;
use toml::Spanned;

use mkh::blocking::Env;

use super::running::{check, retrying, StepResult};
use super::StepChecker;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Apply {
    /// The object, as a TOML table (`apiVersion`, `kind`, `metadata.name`, …).
    pub manifest: Spanned<toml::Table>,
}

impl Apply {
    pub(super) fn check(&self, c: &StepChecker) -> Result<()> {
        c.needs_api_server(self.manifest.span())?;
        let m = self.manifest.get_ref();
        for key in ["apiVersion", "kind"] {
            if !m.get(key).is_some_and(toml::Value::is_str) {
                return c.err(
                    self.manifest.span(),
                    format!("the manifest has no `{key}` string"),
                );
            }
        }
        let named = m
            .get("metadata")
            .and_then(|md| md.get("name"))
            .is_some_and(toml::Value::is_str);
        if named {
            Ok(())
        } else {
            c.err(
                self.manifest.span(),
                "the manifest has no `metadata.name` string",
            )
        }
    }

    pub(super) fn run(&self, env: &Env) -> StepResult {
        Ok(Some(apply(env, self)?))
    }

    pub(super) fn summary(&self) -> String {
        format!(
            "apply {}/{}",
            self.manifest
                .get_ref()
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or("?"),
            self.manifest
                .get_ref()
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(|n| n.as_str())
                .unwrap_or("?")
        )
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct ClusterIp {
    pub service: Spanned<String>,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// A CIDR it lies in.
    #[serde(rename = "in")]
    pub within: Option<Spanned<String>>,
    /// The address it must be.
    pub equals: Option<Spanned<String>>,
    pub within_s: Option<Spanned<f64>>,
}

fn default_namespace() -> String {
    "default".into()
}

impl ClusterIp {
    pub(super) fn check(&self, c: &StepChecker) -> Result<()> {
        c.needs_api_server(self.service.span())?;
        c.seconds(&self.within_s, "within_s")?;
        match (&self.within, &self.equals) {
            (Some(cidr), None) => c.cidr(cidr),
            (None, Some(ip)) => match ip.get_ref().parse::<Ipv4Addr>() {
                Ok(_) => Ok(()),
                Err(_) => c.err(
                    ip.span(),
                    format!("`equals` = {:?}: expected an IPv4 address", ip.get_ref()),
                ),
            },
            _ => c.err(
                self.service.span(),
                "expected exactly one of `in` (a CIDR) or `equals` (an address)",
            ),
        }
    }

    pub(super) fn run(&self, env: &Env) -> StepResult {
        retrying(&self.within_s, || {
            let seen = cluster_ip(env, self)?;
            let shown = seen.map_or_else(
                || "no such Service (or no ClusterIP)".into(),
                |ip| ip.to_string(),
            );
            let service = format!("{}/{}", self.namespace, self.service.get_ref());
            match (&self.within, &self.equals) {
                (Some(cidr), _) => {
                    let net: Ipv4Net = cidr.get_ref().parse().expect("checked when parsed");
                    check(
                        seen.is_some_and(|ip| net.contains(&ip)),
                        format!("the ClusterIP of {service} in {net}"),
                        shown,
                    )
                }
                (_, Some(ip)) => check(
                    seen.is_some_and(|s| s.to_string() == *ip.get_ref()),
                    format!("the ClusterIP of {service} to be {}", ip.get_ref()),
                    shown,
                ),
                _ => unreachable!("checked when parsed"),
            }
        })
    }

    pub(super) fn summary(&self) -> String {
        format!(
            "expect the ClusterIP of {}/{}",
            self.namespace,
            self.service.get_ref()
        )
    }
}

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
fn apply(env: &Env, a: &Apply) -> Result<String> {
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
fn cluster_ip(env: &Env, c: &ClusterIp) -> Result<Option<Ipv4Addr>> {
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
fn apply(_: &Env, _: &Apply) -> Result<String> {
    Err(unsupported())
}

#[cfg(not(feature = "kube"))]
fn cluster_ip(_: &Env, _: &ClusterIp) -> Result<Option<Ipv4Addr>> {
    Err(unsupported())
}
