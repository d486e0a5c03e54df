//! The XML the stand-in gives libvirt (kvm2's private-network template, and a domain like
//! kvm2's but booting mkh's guest kernel directly) and the few facts it reads back from
//! libvirt's XML. Every value is escaped by [`esc`].

use std::net::Ipv4Addr;
use std::path::Path;

use quick_xml::events::Event;
use quick_xml::Reader;

use crate::subnet::Subnet;

pub fn esc(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// kvm2's private network (`pkg/drivers/kvm/network.go`): isolated (no `<forward>`), DNS off,
/// DHCP over the client range minus its last address. No bridge name: libvirt picks `virbrN`.
pub fn private_network(name: &str, subnet: &Subnet) -> String {
    format!(
        "<network>\n  <name>{}</name>\n  <dns enable='no'/>\n  <ip address='{}' netmask='{}'>\n    <dhcp>\n      <range start='{}' end='{}'/>\n    </dhcp>\n  </ip>\n</network>\n",
        esc(name),
        subnet.gateway,
        subnet.netmask,
        subnet.client_min,
        subnet.client_max
    )
}

/// The DHCP host entry that pins a machine's MAC to an address (`virNetworkUpdate`,
/// ip-dhcp-host; kvm2's `addStaticIP` names it after the machine).
pub fn dhcp_host(machine: &str, mac: &str, ip: Ipv4Addr) -> String {
    format!(
        "<host mac='{}' name='{}' ip='{}'/>",
        esc(mac),
        esc(machine),
        ip
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation: `<domain type='kvm'>` and the host CPU passed through, as kvm2.
    Kvm,
    /// Software emulation: `<domain type='qemu'>`, QEMU's default CPU model.
    Tcg,
}

impl Accel {
    /// KVM only when /dev/kvm exists AND the CPU shows vmx or svm (a PVM-only host kernel
    /// offers /dev/kvm, and guests hang under it).
    pub fn detect() -> Accel {
        let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        if Path::new("/dev/kvm").exists() && cpu_has_virt(&flags) {
            Accel::Kvm
        } else {
            Accel::Tcg
        }
    }

    /// Deadlines are multiplied by this (TCG guests boot several times slower).
    /// `kvm` or `tcg`.
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }

    pub fn scale(self) -> u32 {
        match self {
            Accel::Kvm => 1,
            Accel::Tcg => 4,
        }
    }
}

pub fn cpu_has_virt(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|w| w == "vmx" || w == "svm"))
}

/// What differs between machines in the domain XML.
#[derive(Debug, Clone)]
pub struct DomainSpec<'a> {
    pub name: &'a str,
    pub memory_mib: u32,
    pub cpus: u32,
    pub accel: Accel,
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub cmdline: &'a str,
    pub private_network: &'a str,
    pub private_mac: &'a str,
    pub nat_network: &'a str,
    pub nat_mac: &'a str,
    /// A node VM's disks: its raw disk (kvm2's `DiskPath`) and the shared node bundle.
    pub disks: Option<(&'a Path, &'a Path)>,
}

/// kvm2's domain (`domain_definition_x86.go`) with two differences: direct kernel boot of mkh's
/// guest instead of the ISO + raw disk, and no host-passthrough CPU under TCG. The private NIC
/// comes first, then the NAT NIC; serial console on a pty (no log file, as kvm2's); virtio-rng.
pub fn domain(spec: &DomainSpec<'_>) -> String {
    let path = |p: &Path| esc(&p.to_string_lossy());
    let (domain_type, cpu) = match spec.accel {
        Accel::Kvm => ("kvm", "  <cpu mode='host-passthrough'/>\n"),
        Accel::Tcg => ("qemu", ""),
    };
    format!(
        "<domain type='{domain_type}'>
  <name>{name}</name>
  <memory unit='MiB'>{memory}</memory>
  <vcpu>{cpus}</vcpu>
  <features>
    <acpi/>
    <apic/>
    <pae/>
  </features>
{cpu}  <os>
    <type>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
{disks}    <interface type='network'>
      <source network='{private_network}'/>
      <mac address='{private_mac}'/>
      <model type='virtio'/>
    </interface>
    <interface type='network'>
      <source network='{nat_network}'/>
      <mac address='{nat_mac}'/>
      <model type='virtio'/>
    </interface>
    <serial type='pty'>
      <target port='0'/>
    </serial>
    <console type='pty'>
      <target type='serial' port='0'/>
    </console>
    <rng model='virtio'>
      <backend model='random'>/dev/random</backend>
    </rng>
  </devices>
</domain>
",
        name = esc(spec.name),
        memory = spec.memory_mib,
        cpus = spec.cpus,
        kernel = path(spec.kernel),
        initrd = path(spec.initrd),
        cmdline = esc(spec.cmdline),
        private_network = esc(spec.private_network),
        private_mac = esc(spec.private_mac),
        nat_network = esc(spec.nat_network),
        nat_mac = esc(spec.nat_mac),
        disks = spec.disks.map_or(String::new(), |(data, bundle)| format!(
            "    <disk type='file' device='disk'>
      <driver name='qemu' type='raw' cache='{}' io='threads'/>
      <source file='{}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{}'/>
      <target dev='vdb' bus='virtio'/>
      <readonly/>
      <shareable/>
    </disk>
",
            // kvm2's `cache='default'`; under TCG `unsafe` (a listed deviation): the guest's
            // flushes return at once, and etcd's fsync per write is not paid under emulation.
            match spec.accel {
                Accel::Kvm => "default",
                Accel::Tcg => "unsafe",
            },
            path(data),
            path(bundle)
        )),
    )
}

/// A random MAC, unicast and locally administered (as released minikube versions use random
/// MACs; master derives them from the machine name).
pub fn random_mac() -> String {
    let mut b: [u8; 6] = rand::random();
    b[0] = (b[0] & 0xfc) | 0x02;
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// One element: its path of names from the root and its attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub path: Vec<String>,
    pub attrs: Vec<(String, String)>,
}

impl Element {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn is(&self, path: &[&str]) -> bool {
        self.path
            .iter()
            .map(String::as_str)
            .eq(path.iter().copied())
    }
}

/// Every element of a document, in order (text is not kept).
pub fn elements(xml: &str) -> Result<Vec<Element>, String> {
    let mut reader = Reader::from_str(xml);
    let mut path: Vec<String> = Vec::new();
    let mut out = Vec::new();
    loop {
        match reader.read_event().map_err(|e| e.to_string())? {
            ev @ (Event::Start(_) | Event::Empty(_)) => {
                let (start, empty) = match &ev {
                    Event::Start(s) => (s, false),
                    Event::Empty(s) => (s, true),
                    _ => unreachable!(),
                };
                let name = String::from_utf8_lossy(start.name().as_ref()).into_owned();
                let mut attrs = Vec::new();
                for a in start.attributes() {
                    let a = a.map_err(|e| e.to_string())?;
                    let key = String::from_utf8_lossy(a.key.as_ref()).into_owned();
                    let value = a.unescape_value().map_err(|e| e.to_string())?.into_owned();
                    attrs.push((key, value));
                }
                path.push(name);
                out.push(Element {
                    path: path.clone(),
                    attrs,
                });
                if empty {
                    path.pop();
                }
            }
            Event::End(_) => {
                path.pop();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(out)
}

/// Facts about a network from its XML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkFacts {
    /// The host side's address (`<ip address=...>`, IPv4).
    pub host_addr: Option<Ipv4Addr>,
}

pub fn network_facts(xml: &str) -> Result<NetworkFacts, String> {
    let host_addr = elements(xml)?
        .iter()
        .filter(|e| e.is(&["network", "ip"]))
        .filter(|e| !matches!(e.attr("family"), Some(f) if f != "ipv4"))
        .find_map(|e| e.attr("address").and_then(|a| a.parse().ok()));
    Ok(NetworkFacts { host_addr })
}

/// The networks a domain's `<interface type='network'>`s are on, with their MACs, in order.
pub fn domain_nics(xml: &str) -> Result<Vec<(String, String)>, String> {
    let els = elements(xml)?;
    let mut nics = Vec::new();
    let mut current: Option<(String, String)> = None;
    for e in &els {
        if e.is(&["domain", "devices", "interface"]) {
            if let Some(n) = current.take() {
                nics.push(n);
            }
            current = Some((String::new(), String::new()));
        } else if let Some((net, mac)) = current.as_mut() {
            if e.is(&["domain", "devices", "interface", "source"]) {
                *net = e.attr("network").unwrap_or_default().to_string();
            } else if e.is(&["domain", "devices", "interface", "mac"]) {
                *mac = e.attr("address").unwrap_or_default().to_ascii_lowercase();
            } else if e.path.len() <= 3 {
                nics.push(current.take().expect("some"));
            }
        }
    }
    nics.extend(current);
    Ok(nics.into_iter().filter(|(n, _)| !n.is_empty()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn spec(accel: Accel) -> String {
        domain(&DomainSpec {
            name: "p",
            memory_mib: 256,
            cpus: 1,
            accel,
            kernel: Path::new("/c/vmlinuz"),
            initrd: Path::new("/c/initrd.img"),
            cmdline: "console=ttyS0 mkh.hostname=minikube",
            private_network: "mk-p",
            private_mac: "52:00:00:00:00:01",
            nat_network: "default",
            nat_mac: "52:00:00:00:00:02",
            disks: None,
        })
    }

    #[test]
    fn a_node_gets_its_raw_disk_writable_and_the_bundle_read_only() {
        let xml = domain(&DomainSpec {
            name: "p",
            memory_mib: 2048,
            cpus: 2,
            accel: Accel::Tcg,
            kernel: Path::new("/c/vmlinuz"),
            initrd: Path::new("/c/initrd.img"),
            cmdline: "console=ttyS0",
            private_network: "mk-p",
            private_mac: "52:00:00:00:00:01",
            nat_network: "default",
            nat_mac: "52:00:00:00:00:02",
            disks: Some((
                Path::new("/h/machines/p/p.rawdisk"),
                Path::new("/c/node.img"),
            )),
        });
        let data = xml
            .find("<source file='/h/machines/p/p.rawdisk'/>")
            .unwrap();
        let bundle = xml.find("<source file='/c/node.img'/>").unwrap();
        assert!(data < bundle, "the raw disk comes first: {xml}");
        assert_eq!(xml.matches("<readonly/>").count(), 1);
        assert!(xml[bundle..].contains("<readonly/>"));
        assert!(xml[..data].contains("cache='unsafe'"), "under TCG: {xml}");
        assert!(!spec(Accel::Tcg).contains("<disk"));
    }

    #[test]
    fn private_nic_first_then_nat() {
        let nics = domain_nics(&spec(Accel::Tcg)).unwrap();
        assert_eq!(
            nics,
            [
                ("mk-p".to_string(), "52:00:00:00:00:01".to_string()),
                ("default".to_string(), "52:00:00:00:00:02".to_string())
            ]
        );
    }

    #[test]
    fn tcg_has_no_host_passthrough_kvm_has_it() {
        let tcg = spec(Accel::Tcg);
        assert!(tcg.starts_with("<domain type='qemu'>"));
        assert!(!tcg.contains("host-passthrough"));
        assert!(tcg.contains("<acpi/>"), "virsh shutdown needs ACPI");
        assert!(tcg.contains("<rng model='virtio'>"));
        let kvm = spec(Accel::Kvm);
        assert!(kvm.starts_with("<domain type='kvm'>"));
        assert!(kvm.contains("<cpu mode='host-passthrough'/>"));
        elements(&kvm).unwrap();
    }

    #[test]
    fn private_network_is_isolated_without_dns() {
        let xml = private_network("mk-p", &Subnet::of(Ipv4Addr::new(192, 168, 50, 0)));
        assert!(!xml.contains("<forward"));
        assert!(xml.contains("<dns enable='no'/>"));
        assert!(xml.contains("<range start='192.168.50.2' end='192.168.50.253'/>"));
        assert_eq!(
            network_facts(&xml).unwrap().host_addr,
            Some(Ipv4Addr::new(192, 168, 50, 1))
        );
    }

    #[test]
    fn values_are_escaped() {
        let xml = private_network("a'<b>&", &Subnet::of(Ipv4Addr::new(192, 168, 39, 0)));
        assert!(xml.contains("<name>a&apos;&lt;b&gt;&amp;</name>"));
        elements(&xml).unwrap();
    }

    #[test]
    fn cpu_flags() {
        assert!(cpu_has_virt("flags\t\t: fpu vme vmx sse\n"));
        assert!(cpu_has_virt("flags\t\t: fpu svm\n"));
        assert!(!cpu_has_virt("flags\t\t: fpu vme sse hypervisor\n"));
    }

    #[test]
    fn random_macs_are_local_unicast() {
        for _ in 0..50 {
            let m = random_mac();
            let first = u8::from_str_radix(&m[..2], 16).unwrap();
            assert_eq!(first & 0b11, 0b10, "{m}");
            assert_eq!(m.len(), 17);
        }
        assert_ne!(random_mac(), random_mac());
    }
}
