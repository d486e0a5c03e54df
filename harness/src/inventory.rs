//! What of libvirt's contents is mkh's: every network and domain whose `<metadata>` carries mkh's
//! owner record, grouped into environments. Asking libvirt (not local state files) keeps this
//! true for remote libvirt hosts and after crashes.

use std::collections::BTreeMap;

use serde::Serialize;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::libvirt::Libvirt;
use crate::machine::{Machine, MachineFiles};
use crate::minikube::MinikubeCluster;
use crate::net::NetworkFacts;
use crate::owner::{Owner, OwnerKind};
use crate::teardown::Teardown;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectKind {
    Domain,
    Network,
    /// An environment's home directory on this host (reaper only).
    Home,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClaimedObject {
    pub kind: ObjectKind,
    pub name: String,
    pub active: bool,
    pub owner: Owner,
}

/// Every libvirt object mkh claims: those whose metadata says so, and a domain that minikube
/// made for an mkh environment before mkh could tag it — named after a profile recorded in an mkh
/// network, with every NIC on mkh's networks. Other objects are not listed at all.
pub fn claimed_objects(lv: &Libvirt) -> Result<Vec<ClaimedObject>> {
    let mut networks = Vec::new();
    for net in lv.networks()? {
        if let Some(owner) = NetworkFacts::from_xml(&net.xml).ok().and_then(|f| f.owner) {
            networks.push(ClaimedObject {
                kind: ObjectKind::Network,
                name: net.name,
                active: net.active,
                owner,
            });
        }
    }
    let mut out = Vec::new();
    for dom in lv.domains()? {
        let owner = Owner::from_object_xml(&dom.xml)
            .or_else(|| owner_by_profile(&dom.name, &dom.xml, &networks));
        if let Some(owner) = owner {
            out.push(ClaimedObject {
                kind: ObjectKind::Domain,
                name: dom.name,
                active: dom.active,
                owner,
            });
        }
    }
    out.extend(networks);
    Ok(out)
}

fn owner_by_profile(name: &str, xml: &str, networks: &[ClaimedObject]) -> Option<Owner> {
    let recorded = networks
        .iter()
        .find(|n| n.owner.profile.as_deref() == Some(name))?;
    let nic_networks: Vec<String> = crate::xml::elements(xml)
        .ok()?
        .into_iter()
        .filter(|e| e.is_at(&["domain", "devices", "interface", "source"]))
        .filter_map(|e| e.attr("network").map(str::to_owned))
        .collect();
    let all_ours = !nic_networks.is_empty()
        && nic_networks.iter().all(|n| {
            networks
                .iter()
                .any(|c| &c.name == n && c.owner.env == recorded.owner.env)
        });
    all_ours.then(|| recorded.owner.clone())
}

/// One environment as `mkh ls` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct EnvSummary {
    pub name: String,
    pub kind: OwnerKind,
    pub run_id: String,
    pub test: Option<String>,
    pub pid: u32,
    pub created: u64,
    pub home: Option<String>,
    pub profile: Option<String>,
    pub minikube: Option<String>,
    pub domains: Vec<String>,
    pub networks: Vec<String>,
}

impl EnvSummary {
    /// The minikube cluster of a minikube-backed environment, from its owner record.
    pub fn minikube_cluster(&self) -> Option<MinikubeCluster> {
        let (home, profile, binary) = (
            self.home.as_ref()?,
            self.profile.as_ref()?,
            self.minikube.as_ref()?,
        );
        Some(MinikubeCluster::at(Path::new(home), profile, binary.into()))
    }

    /// Everything that removes this environment: `minikube delete` first where minikube made
    /// it (with the binary that made it), then its domains, networks and home.
    pub fn teardown(&self, uri: &str) -> Teardown {
        Teardown {
            uri: uri.to_owned(),
            env: self.name.clone(),
            commands: self
                .minikube_cluster()
                .map(|c| c.delete_command(Duration::from_secs(60)))
                .into_iter()
                .collect(),
            domains: self.domains.clone(),
            networks: self.networks.clone(),
            dirs: self.home.iter().map(PathBuf::from).collect(),
            ..Teardown::default()
        }
    }

    /// A handle on the environment's first machine.
    pub fn machine(&self, lv: &Libvirt) -> Result<Machine> {
        let (Some(domain), Some(home)) = (self.domains.first(), self.home.as_ref()) else {
            return Err(Error::InvalidInput {
                what: "environment",
                value: self.name.clone(),
                problem: "it has no machine".into(),
                fix: "bring one up with `mkh up`",
            });
        };
        let home = Path::new(home);
        let files = match self.minikube_cluster() {
            Some(c) => c.machine_files(home),
            None => MachineFiles::builtin(home, domain),
        };
        Machine::attach(lv, domain, files)
    }
}

pub fn environments(objects: &[ClaimedObject]) -> Vec<EnvSummary> {
    let mut by_env: BTreeMap<&str, EnvSummary> = BTreeMap::new();
    for obj in objects {
        let env = by_env
            .entry(obj.owner.env.as_str())
            .or_insert_with(|| EnvSummary {
                name: obj.owner.env.clone(),
                kind: obj.owner.kind,
                run_id: obj.owner.run_id.clone(),
                test: obj.owner.test.clone(),
                pid: obj.owner.process.pid,
                created: obj.owner.created,
                home: obj.owner.home.clone(),
                profile: obj.owner.profile.clone(),
                minikube: obj.owner.minikube.clone(),
                domains: Vec::new(),
                networks: Vec::new(),
            });
        match obj.kind {
            ObjectKind::Domain => env.domains.push(obj.name.clone()),
            ObjectKind::Network => env.networks.push(obj.name.clone()),
            ObjectKind::Home => {}
        }
    }
    by_env.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::owner::OwnerKind;

    fn net(name: &str, env: &str, profile: Option<&str>) -> ClaimedObject {
        let mut owner = Owner::for_new_object(OwnerKind::Process, env);
        owner.profile = profile.map(str::to_owned);
        ClaimedObject {
            kind: ObjectKind::Network,
            name: name.into(),
            active: true,
            owner,
        }
    }

    fn domain_on(nets: &[&str]) -> String {
        let nics: String = nets
            .iter()
            .map(|n| format!("<interface type='network'><source network='{n}'/></interface>"))
            .collect();
        format!("<domain><name>p1</name><devices>{nics}</devices></domain>")
    }

    #[test]
    fn an_untagged_minikube_domain_is_claimed_only_on_its_envs_networks() {
        let nets = [
            net("mkh-a-nat", "e1", Some("p1")),
            net("mkh-a-priv", "e1", Some("p1")),
            net("mkh-b-nat", "e2", None),
        ];
        let claimed = owner_by_profile("p1", &domain_on(&["mkh-a-priv", "mkh-a-nat"]), &nets);
        assert_eq!(claimed.map(|o| o.env), Some("e1".to_owned()));
        // Same name, but a NIC on a network mkh did not make (e.g. the user's `default`).
        assert!(owner_by_profile("p1", &domain_on(&["mkh-a-priv", "default"]), &nets).is_none());
        // On mkh networks of another environment.
        assert!(owner_by_profile("p1", &domain_on(&["mkh-b-nat"]), &nets).is_none());
        // A name no mkh network records.
        assert!(owner_by_profile("other", &domain_on(&["mkh-a-nat"]), &nets).is_none());
    }
}
