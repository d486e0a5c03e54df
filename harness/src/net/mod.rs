//! Per-environment networks: specs and XML ([`spec`]), subnet choice ([`subnet`]), what the host
//! already uses ([`host`]), and the allocator that creates an environment's pair of networks
//! without racing other processes.

pub mod host;
pub mod spec;
pub mod subnet;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use nix::fcntl::{Flock, FlockArg};
use rand::Rng;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::libvirt::{is_address_conflict, Libvirt};
use crate::names::EnvId;
use crate::owner::Owner;
pub use spec::{NetworkFacts, NetworkKind, NetworkSpec};
pub use subnet::SubnetPool;

/// A network mkh created, as fixtures and `mkh up --json` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkInfo {
    /// The libvirt network's name.
    pub name: String,
    /// NAT or isolated.
    pub kind: NetworkKind,
    /// Its subnet, on which no other network of this host lies.
    pub subnet: Ipv4Net,
    /// The host bridge.
    pub bridge: String,
    /// The host's address on the network.
    pub gateway: std::net::Ipv4Addr,
}

/// A DHCP lease a network's dnsmasq handed out, as libvirt lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DhcpLease {
    /// The client's MAC address, lower case.
    pub mac: String,
    /// The address leased.
    pub ip: std::net::Ipv4Addr,
    /// The host name the client sent, if any.
    pub hostname: Option<String>,
    /// When the lease expires, in seconds since the Unix epoch.
    pub expiry: i64,
}

impl DhcpLease {
    /// An IPv4 lease; `None` for another kind.
    pub(crate) fn from_libvirt(lease: crate::libvirt::Lease) -> Option<DhcpLease> {
        Some(DhcpLease {
            mac: lease.mac.to_ascii_lowercase(),
            ip: lease.ip.parse().ok()?,
            hostname: lease.hostname,
            expiry: lease.expiry,
        })
    }
}

/// An environment's two networks, like minikube's `default` and `mk-<profile>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkPair {
    /// The NAT network.
    pub nat: NetworkInfo,
    /// The isolated network.
    pub private: NetworkInfo,
}

impl NetworkPair {
    /// A pair known only by name (an incomplete environment read back from libvirt).
    pub(crate) fn named(nat: &str, private: &str) -> NetworkPair {
        let info = |name: &str, kind| NetworkInfo {
            name: name.into(),
            kind,
            subnet: Ipv4Net::default(),
            bridge: String::new(),
            gateway: std::net::Ipv4Addr::UNSPECIFIED,
        };
        NetworkPair {
            nat: info(nat, NetworkKind::Nat),
            private: info(private, NetworkKind::Isolated),
        }
    }

    /// The pair of an environment read back from libvirt, from its networks' XML (`nat` and
    /// `private`: their names).
    pub(crate) fn read(
        lv: &crate::libvirt::Libvirt,
        nat: &str,
        private: &str,
    ) -> crate::Result<NetworkPair> {
        let all = lv.networks()?;
        let info = |name: &str, kind| -> crate::Result<NetworkInfo> {
            let found =
                all.iter()
                    .find(|n| n.name == name)
                    .ok_or_else(|| crate::Error::InvalidInput {
                        what: "network",
                        value: name.to_owned(),
                        problem: "libvirt no longer has it".into(),
                        fix: "remove the rest of the environment with `mkh down NAME`",
                    })?;
            let facts =
                NetworkFacts::from_xml(&found.xml).map_err(|problem| crate::Error::BadXml {
                    object: format!("network {name}"),
                    problem,
                })?;
            Ok(NetworkInfo {
                name: name.to_owned(),
                kind,
                subnet: facts.subnets.first().copied().unwrap_or_default(),
                bridge: facts.bridge.unwrap_or_default(),
                gateway: facts.gateway.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
            })
        };
        Ok(NetworkPair {
            nat: info(nat, NetworkKind::Nat)?,
            private: info(private, NetworkKind::Isolated)?,
        })
    }

    /// The network of `role`.
    pub fn get(&self, role: crate::NetworkRole) -> &NetworkInfo {
        match role {
            crate::NetworkRole::Nat => &self.nat,
            crate::NetworkRole::Private => &self.private,
        }
    }
}

/// Where the allocator's lock lives in `lock_dir` (`MKH_LOCK_DIR`). The lock serialises subnet
/// choice between mkh processes of every user on this host; processes on other hosts sharing a
/// remote libvirt are kept apart by libvirt's own refusal of a subnet in use (and a retry).
pub(crate) fn lock_path(lock_dir: &Path) -> PathBuf {
    lock_dir.join("mkh-subnets.lock")
}

fn lock(lock_dir: &Path) -> Result<Flock<File>> {
    let path = lock_path(lock_dir);
    // Open without O_CREAT first: with fs.protected_regular, creating-opening another user's file
    // in sticky /tmp fails even though the file exists and is readable.
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            // Every user of mkh on this host must be able to take the same lock.
            let _ = f.set_permissions(std::fs::Permissions::from_mode(0o666));
            f
        }
        Err(e) => return Err(Error::io(&path, e)),
    };
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| Error::io(&path, std::io::Error::from(errno)))
}

/// Subnets that are not free: every libvirt network's (defined or active), and on a local
/// libvirt every host interface address and route.
pub fn taken_subnets(lv: &Libvirt) -> Result<Vec<Ipv4Net>> {
    let mut taken = Vec::new();
    for net in lv.networks()? {
        match NetworkFacts::from_xml(&net.xml) {
            Ok(facts) => taken.extend(facts.subnets),
            Err(problem) => {
                return Err(Error::BadXml {
                    object: format!("network {}", net.name),
                    problem,
                })
            }
        }
    }
    if lv.is_local() {
        taken.extend(host::interface_subnets());
        taken.extend(host::route_subnets());
    }
    Ok(taken)
}

/// Creates the NAT and the isolated network of environment `id` (DHCP leases of `lease`, or
/// dnsmasq's default). `on_created` hears of each network's name just before libvirt is asked
/// to make it, so that a signal at any instant still removes it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn create_pair(
    lv: &Libvirt,
    id: &EnvId,
    owner: &Owner,
    pool: &SubnetPool,
    lease: Option<std::time::Duration>,
    lock_dir: &Path,
    on_created: &mut dyn FnMut(&str),
) -> Result<NetworkPair> {
    let _guard = lock(lock_dir)?;
    // A subnet libvirt refused for the first network is not tried for the second.
    let mut refused: Vec<Ipv4Net> = Vec::new();
    let mut created: Vec<NetworkInfo> = Vec::new();
    let wanted = [
        (id.nat_network(), NetworkKind::Nat),
        (id.private_network(), NetworkKind::Isolated),
    ];
    for (name, kind) in wanted {
        on_created(&name);
        created.push(create_network(
            lv,
            &name,
            kind,
            owner,
            pool,
            lease,
            &mut refused,
        )?);
    }
    let private = created.pop().expect("two networks created");
    let nat = created.pop().expect("two networks created");
    Ok(NetworkPair { nat, private })
}

/// Creates one network under the allocator lock, as an environment's are made (`mkh doctor`
/// makes one this way to show that it can).
#[cfg_attr(not(feature = "admin"), allow(dead_code))] // The `mkh` command's.
pub(crate) fn create_one(
    lv: &Libvirt,
    name: &str,
    kind: NetworkKind,
    owner: &Owner,
    pool: &SubnetPool,
    lock_dir: &Path,
) -> Result<NetworkInfo> {
    let _guard = lock(lock_dir)?;
    create_network(lv, name, kind, owner, pool, None, &mut Vec::new())
}

/// Defines and starts network `name` in a free subnet of `pool` chosen from a random start;
/// a subnet libvirt refuses as in use joins `refused` and another is tried, up to 8 times.
/// The caller holds the allocator lock.
fn create_network(
    lv: &Libvirt,
    name: &str,
    kind: NetworkKind,
    owner: &Owner,
    pool: &SubnetPool,
    lease: Option<std::time::Duration>,
    refused: &mut Vec<Ipv4Net>,
) -> Result<NetworkInfo> {
    const ATTEMPTS: usize = 8;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut taken = taken_subnets(lv)?;
        taken.extend(refused.iter().copied());
        let total = pool.candidates().count().max(1);
        let start = rand::rng().random_range(0..total);
        let subnet = pool.choose(&taken, 1, start)?[0];
        let spec = NetworkSpec::new(name, kind, name, subnet, owner.clone())?.with_lease(lease)?;
        match crate::teardown::while_creating(|| lv.define_and_start_network(name, &spec.to_xml()))
        {
            Ok(()) => {
                return Ok(NetworkInfo {
                    name: name.to_owned(),
                    kind,
                    subnet,
                    bridge: spec.bridge.clone(),
                    gateway: spec.gateway(),
                })
            }
            Err(e) if is_address_conflict(&e) && attempt < ATTEMPTS => {
                tracing::info!(%subnet, network = %name, "subnet in use on the libvirt host, choosing another");
                refused.push(subnet);
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A pair of networks named `nat` and `private`, for tests of code that reads names.
    pub(crate) fn pair(nat: &str, private: &str) -> NetworkPair {
        let info = |name: &str, kind, subnet: &str| NetworkInfo {
            name: name.into(),
            kind,
            subnet: subnet.parse().unwrap(),
            bridge: name.into(),
            gateway: "10.0.0.1".parse().unwrap(),
        };
        NetworkPair {
            nat: info(nat, NetworkKind::Nat, "10.0.0.0/24"),
            private: info(private, NetworkKind::Isolated, "10.0.1.0/24"),
        }
    }
}
