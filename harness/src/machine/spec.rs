//! Typed machine specs rendered to libvirt domain XML, with the same escaping discipline as
//! networks. Like kvm2's template: two virtio NICs, the private network's first; a serial console
//! logged to a file; virtio-rng.

use std::path::PathBuf;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::names::validate_object_name;
use crate::owner::Owner;
use crate::xml::escape;

use super::accel::Accel;

/// Which of an environment's networks a NIC sits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkRole {
    /// The NAT network, like minikube's `default`: the way out.
    Nat,
    /// The isolated network, like minikube's `mk-<profile>`: between machines only.
    Private,
}

impl NetworkRole {
    /// `nat` or `private`.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkRole::Nat => "nat",
            NetworkRole::Private => "private",
        }
    }

    /// Both roles, the private network first (as kvm2 orders a domain's NICs).
    pub const ALL: [NetworkRole; 2] = [NetworkRole::Private, NetworkRole::Nat];
}

impl std::str::FromStr for NetworkRole {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<NetworkRole, String> {
        match s {
            "nat" => Ok(NetworkRole::Nat),
            "private" => Ok(NetworkRole::Private),
            _ => Err(format!("{s:?} is not a network role: use nat or private")),
        }
    }
}

impl std::fmt::Display for NetworkRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Nic {
    pub role: NetworkRole,
    pub network: String,
    pub mac: String,
}

/// What the guest boots: a kernel with an initrd (the built-in guest) or a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(dead_code)] // A disk boots minikube's ISO; only tests render it so far.
pub enum Boot {
    Kernel {
        kernel: PathBuf,
        initrd: PathBuf,
        cmdline: String,
    },
    Disk {
        path: PathBuf,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineSpec {
    pub name: String,
    pub memory_mib: u32,
    pub vcpus: u32,
    pub accel: Accel,
    pub boot: Boot,
    pub nics: Vec<Nic>,
    /// Where the serial console is logged (written by virtlogd).
    pub console_log: PathBuf,
    /// A warm-startable machine's second serial port (ttyS1): a UNIX socket libvirt listens on,
    /// through which the host hands a restored guest its identity (`machine::warm`).
    pub identity_port: Option<PathBuf>,
    pub owner: Owner,
}

/// The longest UNIX socket path the kernel takes (`sun_path` holds 108 bytes with the NUL); see
/// `warm::check_possible`.
pub(crate) const SOCKET_PATH_MAX: usize = 107;

/// A MAC derived from the machine's name and the NIC's role: stable across restarts and runs,
/// different between machines. `52:` is a locally administered unicast prefix (as QEMU's
/// `52:54:00`), and the other five bytes come from SHA-256, so two machines collide with odds of
/// one in 2^40.
pub fn derive_mac(machine: &str, role: NetworkRole) -> String {
    let digest = Sha256::digest(format!("mkh-mac:{machine}:{}", role.as_str()));
    format!(
        "52:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        digest[0], digest[1], digest[2], digest[3], digest[4]
    )
}

impl MachineSpec {
    pub fn validate(&self) -> Result<()> {
        validate_object_name("machine name", &self.name)?;
        if self.memory_mib < 64 {
            return Err(Error::InvalidInput {
                what: "machine memory (MiB)",
                value: self.memory_mib.to_string(),
                problem: "the guest kernel does not boot in less than 64 MiB".into(),
                fix: "ask for 128 MiB or more",
            });
        }
        if self.vcpus == 0 {
            return Err(Error::InvalidInput {
                what: "machine vCPUs",
                value: "0".into(),
                problem: "a machine needs at least one vCPU".into(),
                fix: "ask for 1 or more",
            });
        }
        for nic in &self.nics {
            validate_object_name("network name", &nic.network)?;
        }
        Ok(())
    }

    pub fn to_xml(&self) -> String {
        let mut x = String::new();
        x.push_str(&format!("<domain type='{}'>\n", self.accel.domain_type()));
        x.push_str(&format!("  <name>{}</name>\n", escape(&self.name)));
        x.push_str(&format!(
            "  <metadata>\n    {}\n  </metadata>\n",
            self.owner.to_metadata_xml()
        ));
        x.push_str(&format!(
            "  <memory unit='MiB'>{}</memory>\n",
            self.memory_mib
        ));
        x.push_str(&format!("  <vcpu>{}</vcpu>\n", self.vcpus));
        x.push_str("  <os>\n    <type arch='x86_64' machine='pc'>hvm</type>\n");
        match &self.boot {
            Boot::Kernel {
                kernel,
                initrd,
                cmdline,
            } => {
                x.push_str(&format!(
                    "    <kernel>{}</kernel>\n    <initrd>{}</initrd>\n    <cmdline>{}</cmdline>\n",
                    escape(&kernel.to_string_lossy()),
                    escape(&initrd.to_string_lossy()),
                    escape(cmdline)
                ));
            }
            Boot::Disk { .. } => x.push_str("    <boot dev='hd'/>\n"),
        }
        x.push_str("  </os>\n");
        // ACPI lets `shutdown` reach the guest's power button handler.
        x.push_str("  <features>\n    <acpi/>\n  </features>\n");
        // kvm2 passes the host CPU through; under TCG that makes QEMU abort.
        if self.accel == Accel::Kvm {
            x.push_str("  <cpu mode='host-passthrough'/>\n");
        }
        x.push_str("  <on_poweroff>destroy</on_poweroff>\n  <on_reboot>restart</on_reboot>\n  <on_crash>destroy</on_crash>\n");
        x.push_str("  <devices>\n");
        if let Boot::Disk { path } = &self.boot {
            x.push_str(&format!(
                "    <disk type='file' device='disk'>\n      <driver name='qemu' type='raw'/>\n      <source file='{}'/>\n      <target dev='vda' bus='virtio'/>\n    </disk>\n",
                escape(&path.to_string_lossy())
            ));
        }
        for nic in &self.nics {
            x.push_str(&format!(
                "    <interface type='network'>\n      <source network='{}'/>\n      <mac address='{}'/>\n      <model type='virtio'/>\n    </interface>\n",
                escape(&nic.network),
                escape(&nic.mac)
            ));
        }
        x.push_str(&format!(
            "    <serial type='pty'>\n      <log file='{}' append='on'/>\n      <target port='0'/>\n    </serial>\n",
            escape(&self.console_log.to_string_lossy())
        ));
        if let Some(port) = &self.identity_port {
            x.push_str(&format!(
                "    <serial type='unix'>\n      <source mode='bind' path='{}'/>\n      <target port='1'/>\n    </serial>\n",
                escape(&port.to_string_lossy())
            ));
        }
        x.push_str(
            "    <console type='pty'>\n      <target type='serial' port='0'/>\n    </console>\n",
        );
        x.push_str("    <rng model='virtio'>\n      <backend model='random'>/dev/urandom</backend>\n    </rng>\n");
        x.push_str("    <memballoon model='none'/>\n");
        x.push_str("  </devices>\n</domain>\n");
        x
    }
}

/// The `<interface>` XML to change one NIC's link state on a running domain.
pub fn link_state_xml(nic: &Nic, up: bool) -> String {
    format!(
        "<interface type='network'>\n  <source network='{}'/>\n  <mac address='{}'/>\n  <model type='virtio'/>\n  <link state='{}'/>\n</interface>\n",
        escape(&nic.network),
        escape(&nic.mac),
        if up { "up" } else { "down" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::elements;

    fn spec(accel: Accel) -> MachineSpec {
        MachineSpec {
            name: "mkh-abc123".into(),
            memory_mib: 256,
            vcpus: 1,
            accel,
            boot: Boot::Kernel {
                kernel: "/var/tmp/k".into(),
                initrd: "/var/tmp/i".into(),
                cmdline: "console=ttyS0 mkh.hostname=x".into(),
            },
            nics: vec![
                Nic {
                    role: NetworkRole::Private,
                    network: "mkh-abc123-priv".into(),
                    mac: derive_mac("mkh-abc123", NetworkRole::Private),
                },
                Nic {
                    role: NetworkRole::Nat,
                    network: "mkh-abc123-nat".into(),
                    mac: derive_mac("mkh-abc123", NetworkRole::Nat),
                },
            ],
            console_log: "/var/tmp/console.log".into(),
            identity_port: None,
            owner: crate::owner::tests::sample_owner(),
        }
    }

    #[test]
    fn macs_are_stable_distinct_and_locally_administered() {
        let a = derive_mac("m1", NetworkRole::Nat);
        assert_eq!(a, derive_mac("m1", NetworkRole::Nat));
        assert_ne!(a, derive_mac("m1", NetworkRole::Private));
        assert_ne!(a, derive_mac("m2", NetworkRole::Nat));
        let first = u8::from_str_radix(&a[..2], 16).unwrap();
        assert_eq!(first & 0b11, 0b10, "unicast, locally administered: {a}");
        assert_eq!(a.len(), 17);
    }

    #[test]
    fn tcg_domains_never_pass_the_host_cpu_through() {
        let tcg = spec(Accel::Tcg).to_xml();
        assert!(tcg.starts_with("<domain type='qemu'>"));
        assert!(!tcg.contains("host-passthrough"));
        let kvm = spec(Accel::Kvm).to_xml();
        assert!(kvm.starts_with("<domain type='kvm'>"));
        assert!(kvm.contains("<cpu mode='host-passthrough'/>"));
    }

    #[test]
    fn private_nic_comes_first_like_kvm2() {
        let els = elements(&spec(Accel::Tcg).to_xml()).unwrap();
        let sources: Vec<_> = els
            .iter()
            .filter(|e| e.is_at(&["domain", "devices", "interface", "source"]))
            .map(|e| e.attr("network").unwrap().to_owned())
            .collect();
        assert_eq!(sources, vec!["mkh-abc123-priv", "mkh-abc123-nat"]);
    }

    #[test]
    fn hostile_values_are_escaped() {
        let mut s = spec(Accel::Tcg);
        s.name = "a<b>&'c".into();
        s.boot = Boot::Kernel {
            kernel: "/x/'k&".into(),
            initrd: "/x/i".into(),
            cmdline: "a='b' <c>".into(),
        };
        let els = elements(&s.to_xml()).unwrap();
        let text = |p: &[&str]| els.iter().find(|e| e.is_at(p)).unwrap().text.clone();
        assert_eq!(text(&["domain", "name"]), "a<b>&'c");
        assert_eq!(text(&["domain", "os", "kernel"]), "/x/'k&");
        assert_eq!(text(&["domain", "os", "cmdline"]), "a='b' <c>");
        s.validate().unwrap();
        s.name = "bad\nname".into();
        assert!(s.validate().is_err());
    }

    #[test]
    fn link_state_xml_names_the_nic_by_mac() {
        let nic = &spec(Accel::Tcg).nics[0];
        let down = link_state_xml(nic, false);
        assert!(down.contains(&format!("<mac address='{}'/>", nic.mac)));
        assert!(down.contains("<link state='down'/>"));
        assert!(link_state_xml(nic, true).contains("<link state='up'/>"));
    }
}
