//! What of libvirt's contents is mkh's: every network and domain whose `<metadata>` carries mkh's
//! owner record, grouped into environments. Asking libvirt (not local state files) keeps this
//! true for remote libvirt hosts and after crashes.

use std::collections::BTreeMap;

use serde::Serialize;

use std::path::Path;

use crate::error::{Error, Result};
use crate::libvirt::Libvirt;
use crate::names::EnvId;
use crate::net::NetworkFacts;
use crate::owner::{Owner, OwnerKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
/// What kind of object mkh claims.
pub enum ObjectKind {
    /// A libvirt domain (a machine).
    Domain,
    /// A libvirt network.
    Network,
    /// An environment's home directory on this host (reaper only).
    Home,
    /// A machine's console log in mkh's storage pool on a remote libvirt host (reaper only:
    /// it goes with its domain).
    Volume,
}

impl ObjectKind {
    /// `domain`, `network`, `home` or `volume`, as the JSON reports say it.
    #[cfg_attr(not(feature = "admin"), allow(dead_code))] // The `mkh` command's.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Domain => "domain",
            ObjectKind::Network => "network",
            ObjectKind::Home => "home",
            ObjectKind::Volume => "volume",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
/// An object whose owner record says it is mkh's.
pub struct ClaimedObject {
    /// Domain, network or home.
    pub kind: ObjectKind,
    /// Its name (a path for a home).
    pub name: String,
    /// Whether it runs.
    pub active: bool,
    /// Its owner record.
    pub owner: Owner,
    /// A network's IPv4 subnets (empty for other objects).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<ipnet::Ipv4Net>,
}

/// One network of an environment, as `mkh ls --json` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvNetwork {
    /// Its name in libvirt.
    pub name: String,
    /// Its IPv4 subnets (one for mkh's networks).
    pub subnets: Vec<ipnet::Ipv4Net>,
    /// Whether it is started.
    pub active: bool,
}

/// Every libvirt object mkh claims: those whose metadata says so; the private network minikube
/// made again under the name mkh gave it before mkh could adopt it (`mkh-<id>-priv` without a
/// record, beside its claimed `mkh-<id>-nat` whose record names a minikube profile); and a
/// domain that minikube made for an mkh environment before mkh could tag it — named after a
/// profile recorded in an mkh network, with every NIC on mkh's networks. Other objects are not
/// listed at all.
pub fn claimed_objects(lv: &Libvirt) -> Result<Vec<ClaimedObject>> {
    let mut networks = Vec::new();
    let mut untagged = Vec::new();
    for net in lv.networks()? {
        let Ok(facts) = NetworkFacts::from_xml(&net.xml) else {
            continue;
        };
        match facts.owner {
            Some(owner) => networks.push(ClaimedObject {
                kind: ObjectKind::Network,
                name: net.name,
                active: net.active,
                owner,
                subnets: facts.subnets,
            }),
            None => untagged.push((net, facts.subnets)),
        }
    }
    let remade: Vec<ClaimedObject> = untagged
        .into_iter()
        .filter_map(|(net, subnets)| {
            Some(ClaimedObject {
                kind: ObjectKind::Network,
                owner: owner_by_network_name(&net.name, &networks)?,
                name: net.name,
                active: net.active,
                subnets,
            })
        })
        .collect();
    networks.extend(remade);
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
                subnets: Vec::new(),
            });
        }
    }
    out.extend(networks);
    Ok(out)
}

/// The owner of the private network minikube made again under the name mkh gave it: an
/// untagged `mkh-<id>-priv` is claimed only when the claimed `mkh-<id>-nat` of the same id
/// records a minikube profile (minikube deletes and makes only the network named by
/// `--network`, never the NAT one). Any other name is never claimed.
fn owner_by_network_name(name: &str, claimed: &[ClaimedObject]) -> Option<Owner> {
    let id = EnvId::of_network(name)?;
    if name != id.private_network() {
        return None;
    }
    let nat = id.nat_network();
    claimed
        .iter()
        .find(|c| c.kind == ObjectKind::Network && c.name == nat && c.owner.profile.is_some())
        .map(|c| c.owner.clone())
}

/// The profile whose node a domain of this name would be: `<profile>` or `<profile>-mNN`.
fn is_node_of(domain: &str, profile: &str) -> bool {
    match domain.strip_prefix(profile) {
        Some("") => true,
        Some(rest) => rest
            .strip_prefix("-m")
            .is_some_and(|n| n.len() == 2 && n.bytes().all(|b| b.is_ascii_digit())),
        None => false,
    }
}

fn owner_by_profile(name: &str, xml: &str, networks: &[ClaimedObject]) -> Option<Owner> {
    let recorded = networks.iter().find(|n| {
        n.owner
            .profile
            .as_deref()
            .is_some_and(|p| is_node_of(name, p))
    })?;
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

/// Writes `owner` into every object of environment `env` (networks redefined with it,
/// domains tagged) and into its home's owner record: the environment changes hands.
pub fn retag(lv: &Libvirt, objects: &[ClaimedObject], env: &str, owner: &Owner) -> Result<()> {
    let owner_xml = owner.to_bare_element_xml();
    let mine = objects.iter().filter(|o| o.owner.env == env);
    // The home's record first, then domains, then networks. A change of hands cut short leaves
    // objects of two owners: the reaper judges the environment whole (see `reaper::judge`).
    if let Some(home) = &owner.home {
        let record = Path::new(home).join(crate::reaper::OWNER_RECORD);
        if record.exists() {
            crate::owner::write_record(&record, owner)?;
        }
    }
    let mut ordered: Vec<&ClaimedObject> = mine.collect();
    ordered.sort_by_key(|o| o.kind);
    for obj in ordered {
        match obj.kind {
            ObjectKind::Domain => {
                lv.tag_domain(&obj.name, &owner_xml)?;
            }
            ObjectKind::Network => {
                let Some(current) = lv.networks()?.into_iter().find(|n| n.name == obj.name) else {
                    continue;
                };
                let xml =
                    owner
                        .replace_in_object_xml(&current.xml)
                        .ok_or_else(|| Error::BadXml {
                            object: format!("network {}", obj.name),
                            problem: "no <metadata> element".into(),
                        })?;
                lv.redefine_network(&obj.name, &xml)?;
            }
            ObjectKind::Home | ObjectKind::Volume => {}
        }
    }
    Ok(())
}

/// One environment as `mkh ls` shows it.
#[derive(Debug, Clone, Serialize)]
#[allow(missing_docs)] // The fields are the owner record's (see [`Owner`]).
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
    /// Its domains in libvirt.
    pub domains: Vec<String>,
    /// Its networks in libvirt, with their subnets.
    pub networks: Vec<EnvNetwork>,
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
            ObjectKind::Network => env.networks.push(EnvNetwork {
                name: obj.name.clone(),
                subnets: obj.subnets.clone(),
                active: obj.active,
            }),
            ObjectKind::Home | ObjectKind::Volume => {}
        }
    }
    by_env.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(name: &str, env: &str, profile: Option<&str>) -> ClaimedObject {
        let mut owner = {
            let mut o = crate::owner::tests::sample_owner();
            o.env = env.to_owned();
            o
        };
        owner.profile = profile.map(str::to_owned);
        ClaimedObject {
            kind: ObjectKind::Network,
            name: name.into(),
            active: true,
            owner,
            subnets: vec!["10.0.0.0/24".parse().unwrap()],
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
    fn a_private_network_minikube_made_again_is_claimed_only_under_its_profile_s_name() {
        let nets = vec![
            net("mkh-abc123-nat", "a", Some("p1")),
            net("mkh-zzz999-nat", "b", None),
        ];
        let claimed = owner_by_network_name("mkh-abc123-priv", &nets).unwrap();
        assert_eq!(claimed.env, "a");
        // Not the private name of an environment with a profile: never claimed.
        assert!(owner_by_network_name("mkh-zzz999-priv", &nets).is_none());
        assert!(owner_by_network_name("mk-p1", &nets).is_none());
        assert!(owner_by_network_name("mkh-abc123-nat", &nets).is_none());
        assert!(owner_by_network_name("mkh-abc124-priv", &nets).is_none());
        assert!(owner_by_network_name("default", &nets).is_none());
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
        // A later node of the profile, untagged (a start killed before mkh tagged it).
        let node = owner_by_profile("p1-m02", &domain_on(&["mkh-a-priv", "mkh-a-nat"]), &nets);
        assert_eq!(node.map(|o| o.env), Some("e1".to_owned()));
        for not_a_node in ["p1-m2", "p1-mxx", "p1-x02", "p1-m021", "p1m02"] {
            assert!(!is_node_of(not_a_node, "p1"), "{not_a_node}");
        }
    }

    use crate::libvirt::Removal;
    use crate::net::{NetworkKind, NetworkSpec};
    const TEST_URI: &str = "test:///default";

    #[test]
    fn objects_are_found_by_their_metadata_on_the_test_driver() {
        let lv = Libvirt::connect_to(TEST_URI).unwrap();
        let owner = {
            let mut o = crate::owner::tests::sample_owner();
            o.env = "mkh-tdrv01".into();
            o
        };
        let spec = NetworkSpec::new(
            "mkh-tdrv01-nat",
            NetworkKind::Nat,
            "mkh-tdrv01-nat",
            "10.209.1.0/24".parse().unwrap(),
            owner.clone(),
        )
        .unwrap();
        lv.define_and_start_network(&spec.name, &spec.to_xml())
            .unwrap();

        let claimed = claimed_objects(&lv).unwrap();
        let mine: Vec<_> = claimed
            .iter()
            .filter(|o| o.owner.env == "mkh-tdrv01")
            .collect();
        assert_eq!(mine.len(), 1, "{claimed:?}");
        assert_eq!(mine[0].name, "mkh-tdrv01-nat");
        assert_eq!(mine[0].kind, ObjectKind::Network);
        assert!(mine[0].active);
        assert_eq!(mine[0].owner, owner);
        // The driver's own `default` network carries no mkh metadata and is not claimed.
        assert!(claimed.iter().all(|o| o.name != "default"));

        assert_eq!(
            lv.remove_network("mkh-tdrv01-nat").unwrap(),
            Removal::Removed
        );
        assert_eq!(
            lv.remove_network("mkh-tdrv01-nat").unwrap(),
            Removal::AlreadyGone
        );
        assert!(lv
            .networks()
            .unwrap()
            .iter()
            .all(|n| n.name != "mkh-tdrv01-nat"));
    }
}
