//! What of libvirt's contents is mkh's: every network and domain whose `<metadata>` carries mkh's
//! owner record, grouped into environments. Asking libvirt (not local state files) keeps this
//! true for remote libvirt hosts and after crashes.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::Result;
use crate::libvirt::Libvirt;
use crate::net::NetworkFacts;
use crate::owner::{Owner, OwnerKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectKind {
    Domain,
    Network,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClaimedObject {
    pub kind: ObjectKind,
    pub name: String,
    pub active: bool,
    pub owner: Owner,
}

/// Every libvirt object mkh's metadata claims. Objects without it are not listed at all.
pub fn claimed_objects(lv: &Libvirt) -> Result<Vec<ClaimedObject>> {
    let mut out = Vec::new();
    for dom in lv.domains()? {
        if let Some(owner) = Owner::from_object_xml(&dom.xml) {
            out.push(ClaimedObject {
                kind: ObjectKind::Domain,
                name: dom.name,
                active: dom.active,
                owner,
            });
        }
    }
    for net in lv.networks()? {
        if let Some(owner) = NetworkFacts::from_xml(&net.xml).ok().and_then(|f| f.owner) {
            out.push(ClaimedObject {
                kind: ObjectKind::Network,
                name: net.name,
                active: net.active,
                owner,
            });
        }
    }
    Ok(out)
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
    pub domains: Vec<String>,
    pub networks: Vec<String>,
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
                domains: Vec::new(),
                networks: Vec::new(),
            });
        match obj.kind {
            ObjectKind::Domain => env.domains.push(obj.name.clone()),
            ObjectKind::Network => env.networks.push(obj.name.clone()),
        }
    }
    by_env.into_values().collect()
}
