//! Typed libvirt network specs and their XML. Like minikube's kvm2 driver, an environment has a
//! NAT network (its `default`) and an isolated one (its `mk-<profile>`: no `<forward>`, DNS off).

use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::names::{validate_bridge_name, validate_object_name};
use crate::owner::Owner;
use crate::xml::escape;

/// How a network reaches the outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkKind {
    /// Forwarded to the outside through NAT, like libvirt's `default`.
    Nat,
    /// No forwarding at all, like minikube's `mk-<profile>`.
    Isolated,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    pub name: String,
    pub kind: NetworkKind,
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub dns: bool,
    pub owner: Owner,
    /// DHCP lease time; `None`: dnsmasq's default (one hour).
    pub lease: Option<Duration>,
}

/// The shortest DHCP lease dnsmasq gives ("The minimum lease time is two minutes", dnsmasq(8),
/// `--dhcp-range`); libvirt passes a shorter one on and dnsmasq raises it.
pub const MIN_LEASE: Duration = Duration::from_secs(120);
/// The longest lease mkh asks for: an environment lives for a test, not a day.
pub const MAX_LEASE: Duration = Duration::from_secs(24 * 3600);

/// Checks a DHCP lease time before anything is made.
pub fn check_lease_time(lease: Duration) -> Result<()> {
    if (MIN_LEASE..=MAX_LEASE).contains(&lease) {
        return Ok(());
    }
    Err(Error::InvalidInput {
        what: "DHCP lease time",
        value: format!("{} s", lease.as_secs_f64()),
        problem:
            "dnsmasq gives no lease shorter than 120 s, and mkh asks for none longer than a day"
                .into(),
        fix: "use 120 s to 86400 s",
    })
}

impl NetworkSpec {
    /// Checks names and subnet; every spec that reaches libvirt went through here.
    pub fn new(
        name: &str,
        kind: NetworkKind,
        bridge: &str,
        subnet: Ipv4Net,
        owner: Owner,
    ) -> Result<NetworkSpec> {
        validate_object_name("network name", name)?;
        validate_bridge_name(bridge)?;
        if subnet.prefix_len() > 29 {
            return Err(Error::InvalidInput {
                what: "network subnet",
                value: subnet.to_string(),
                problem: "it leaves too few addresses for a gateway and DHCP clients".into(),
                fix: "use a prefix of /29 or shorter, e.g. /24",
            });
        }
        Ok(NetworkSpec {
            name: name.to_owned(),
            kind,
            bridge: bridge.to_owned(),
            subnet: subnet.trunc(),
            // The isolated network mirrors kvm2's `<dns enable='no'/>`.
            dns: kind == NetworkKind::Nat,
            owner,
            lease: None,
        })
    }

    /// The same network with a DHCP lease time (checked with [`check_lease_time`]).
    pub fn with_lease(mut self, lease: Option<Duration>) -> Result<NetworkSpec> {
        if let Some(l) = lease {
            check_lease_time(l)?;
        }
        self.lease = lease;
        Ok(self)
    }

    /// The host's address on the bridge: the subnet's first host.
    pub fn gateway(&self) -> Ipv4Addr {
        self.subnet.hosts().next().expect("prefix <= 29 has hosts")
    }

    /// DHCP range: after the gateway up to the last host; the isolated network keeps the last
    /// host out of the range, as kvm2 does (reserved there for an HA virtual IP).
    pub fn dhcp_range(&self) -> (Ipv4Addr, Ipv4Addr) {
        let first = u32::from(self.gateway()) + 1;
        let last_host = u32::from(self.subnet.broadcast()) - 1;
        let last = match self.kind {
            NetworkKind::Nat => last_host,
            NetworkKind::Isolated => last_host - 1,
        };
        (Ipv4Addr::from(first), Ipv4Addr::from(last))
    }

    pub fn to_xml(&self) -> String {
        let (start, end) = self.dhcp_range();
        let forward = match self.kind {
            NetworkKind::Nat => "  <forward mode='nat'/>\n",
            NetworkKind::Isolated => "",
        };
        let lease = match self.lease {
            // libvirt >= 6.3: `<lease expiry=.. unit=..>` becomes dnsmasq's dhcp-range lease time.
            Some(l) => format!(
                ">\n        <lease expiry='{}' unit='seconds'/>\n      </range>",
                l.as_secs()
            ),
            None => "/>".into(),
        };
        let dns = if self.dns {
            ""
        } else {
            "  <dns enable='no'/>\n"
        };
        // STP off: a network is one bridge with taps, which cannot loop, and with STP on the
        // kernel holds every new port out of forwarding for twice its minimum forward delay of
        // 2 s (libvirt's delay='0' cannot go below it), losing a fast guest's first DHCP packets.
        format!(
            "<network xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'>\n\
             \x20 <name>{name}</name>\n\
             \x20 <metadata>\n    {metadata}\n  </metadata>\n\
             {forward}\
             \x20 <bridge name='{bridge}' stp='off' delay='0'/>\n\
             {dns}\
             \x20 <ip address='{gateway}' prefix='{prefix}'>\n\
             \x20   <dhcp>\n      <range start='{start}' end='{end}'{lease}\n    </dhcp>\n\
             \x20 </ip>\n\
             \x20 <dnsmasq:options>\n\
             \x20   <!-- offer addresses at once: dnsmasq otherwise pings each one first -->\n\
             \x20   <dnsmasq:option value='no-ping'/>\n\
             \x20 </dnsmasq:options>\n\
             </network>\n",
            name = escape(&self.name),
            metadata = self.owner.to_metadata_xml(),
            bridge = escape(&self.bridge),
            gateway = self.gateway(),
            prefix = self.subnet.prefix_len(),
        )
    }
}

/// What mkh reads back from any libvirt network's XML (its own or not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkFacts {
    pub name: String,
    pub bridge: Option<String>,
    /// Every IPv4 subnet the network claims (`<ip address=... prefix|netmask=...>`).
    pub subnets: Vec<Ipv4Net>,
    /// The host's address on its first IPv4 subnet.
    pub gateway: Option<Ipv4Addr>,
    pub owner: Option<Owner>,
}

impl NetworkFacts {
    pub fn from_xml(xml: &str) -> Result<NetworkFacts, String> {
        let els = crate::xml::elements(xml)?;
        let name = els
            .iter()
            .find(|e| e.is_at(&["network", "name"]))
            .map(|e| e.text.trim().to_owned())
            .ok_or("no <name>")?;
        let bridge = els
            .iter()
            .find(|e| e.is_at(&["network", "bridge"]))
            .and_then(|e| e.attr("name").map(str::to_owned));
        let mut subnets = Vec::new();
        let mut gateway = None;
        for ip in els.iter().filter(|e| e.is_at(&["network", "ip"])) {
            let family = ip.attr("family").unwrap_or("ipv4");
            let Some(address) = ip.attr("address") else {
                continue;
            };
            if family != "ipv4" {
                continue;
            }
            let address: Ipv4Addr = address
                .parse()
                .map_err(|e| format!("<ip address='{address}'>: {e}"))?;
            let prefix = match (ip.attr("prefix"), ip.attr("netmask")) {
                (Some(p), _) => p.parse::<u8>().map_err(|e| format!("prefix {p}: {e}"))?,
                (None, Some(mask)) => {
                    let mask: Ipv4Addr =
                        mask.parse().map_err(|e| format!("netmask {mask}: {e}"))?;
                    u32::from(mask).count_ones() as u8
                }
                // libvirt derives a classful prefix when none is given.
                (None, None) => match address.octets()[0] {
                    0..=127 => 8,
                    128..=191 => 16,
                    _ => 24,
                },
            };
            let net = Ipv4Net::new(address, prefix).map_err(|e| e.to_string())?;
            gateway.get_or_insert(address);
            subnets.push(net.trunc());
        }
        Ok(NetworkFacts {
            name,
            bridge,
            subnets,
            gateway,
            owner: Owner::from_object_xml(xml),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Owner {
        crate::owner::tests::sample_owner()
    }

    fn spec(name: &str, kind: NetworkKind) -> NetworkSpec {
        NetworkSpec::new(
            name,
            kind,
            "mkh-abc123-nat",
            "10.208.7.0/24".parse().unwrap(),
            owner(),
        )
        .unwrap()
    }

    #[test]
    fn nat_network_forwards_and_serves_dns() {
        let xml = spec("mkh-abc123-nat", NetworkKind::Nat).to_xml();
        assert!(xml.contains("<forward mode='nat'/>"));
        assert!(!xml.contains("<dns enable='no'/>"));
        assert!(xml.contains("<ip address='10.208.7.1' prefix='24'>"));
        assert!(xml.contains("<range start='10.208.7.2' end='10.208.7.254'/>"));
    }

    #[test]
    fn isolated_network_has_no_forward_and_no_dns_like_kvm2() {
        let xml = spec("mkh-abc123-priv", NetworkKind::Isolated).to_xml();
        assert!(!xml.contains("<forward"));
        assert!(xml.contains("<dns enable='no'/>"));
        assert!(xml.contains("<range start='10.208.7.2' end='10.208.7.253'/>"));
    }

    #[test]
    fn a_lease_time_is_given_to_libvirt_in_seconds_and_checked() {
        let with = |s| spec("n", NetworkKind::Nat).with_lease(Some(Duration::from_secs(s)));
        let xml = with(150).unwrap().to_xml();
        assert!(
            xml.contains("<range start='10.208.7.2' end='10.208.7.254'>\n        <lease expiry='150' unit='seconds'/>\n      </range>"),
            "{xml}"
        );
        for bad in [0, 119, 86401] {
            let e = with(bad).unwrap_err().to_string();
            assert!(e.contains("DHCP lease time") && e.contains("120 s"), "{e}");
        }
        assert!(with(120).is_ok() && with(86400).is_ok());
    }

    #[test]
    fn hostile_names_are_escaped_and_read_back_intact() {
        let name = "evil<name>&'x\"";
        let xml = spec(name, NetworkKind::Nat).to_xml();
        assert!(!xml.contains(name));
        let facts = NetworkFacts::from_xml(&xml).unwrap();
        assert_eq!(facts.name, name);
        assert_eq!(facts.bridge.as_deref(), Some("mkh-abc123-nat"));
        assert_eq!(
            facts.subnets,
            vec!["10.208.7.0/24".parse::<Ipv4Net>().unwrap()]
        );
        assert_eq!(facts.owner, Some(spec(name, NetworkKind::Nat).owner));
    }

    #[test]
    fn bad_specs_are_refused() {
        let subnet: Ipv4Net = "10.208.7.0/24".parse().unwrap();
        let err = NetworkSpec::new("a\nb", NetworkKind::Nat, "br0", subnet, owner()).unwrap_err();
        assert!(err.to_string().contains("network name"), "{err}");
        let err = NetworkSpec::new("n", NetworkKind::Nat, "a-very-long-bridge", subnet, owner())
            .unwrap_err();
        assert!(err.to_string().contains("bridge name"), "{err}");
        let tiny: Ipv4Net = "10.0.0.0/30".parse().unwrap();
        assert!(NetworkSpec::new("n", NetworkKind::Nat, "br0", tiny, owner()).is_err());
    }

    #[test]
    fn foreign_network_xml_is_read_with_netmask_and_no_owner() {
        let xml = "<network><name>default</name><bridge name='virbr0'/>\
                   <ip address='192.168.122.1' netmask='255.255.255.0'/>\
                   <ip family='ipv6' address='fd00::1' prefix='64'/></network>";
        let facts = NetworkFacts::from_xml(xml).unwrap();
        assert_eq!(
            facts.subnets,
            vec!["192.168.122.0/24".parse::<Ipv4Net>().unwrap()]
        );
        assert_eq!(facts.owner, None);
    }
}
