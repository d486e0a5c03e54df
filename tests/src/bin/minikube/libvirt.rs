//! The stand-in's own libvirt calls (through the `virt` crate), the way kvm2 makes them:
//! networks looked up, started and autostarted; the private network defined from kvm2's
//! template; the domain defined, started, shut down (ACPI), destroyed, undefined; the IP read
//! from the network's DHCP leases by MAC and pinned with a DHCP host entry.

use std::ffi::{CStr, CString};
use std::net::Ipv4Addr;

use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::ErrorNumber;
use virt::network::Network;
use virt::sys;

/// kvm2's default `--kvm-qemu-uri`, recorded as KVMQemuURI / ConnectionURI.
pub const URI: &str = "qemu:///system";

pub struct Libvirt {
    conn: Connect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomState {
    Missing,
    Running,
    Stopped,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub mac: String,
    pub ip: Ipv4Addr,
    pub expiry: i64,
}

fn fail(action: &str, what: &str, e: virt::error::Error) -> String {
    format!("libvirt: {action} {what}: {}", e.message())
}

fn is_missing(e: &virt::error::Error) -> bool {
    e.code().is(ErrorNumber::NoDomain) || e.code().is(ErrorNumber::NoNetwork)
}

fn is_not_running(e: &virt::error::Error) -> bool {
    e.code().is(ErrorNumber::OperationInvalid)
}

impl Libvirt {
    pub fn open() -> Result<Libvirt, String> {
        // libvirt's default error handler prints every error (also the expected "not found")
        // to stderr; errors are reported through the results instead.
        virt::error::clear_error_callback();
        let conn = Connect::open(Some(URI)).map_err(|e| {
            format!(
                "cannot connect to {URI}: {} (is libvirtd running, and may this user use it?)",
                e.message()
            )
        })?;
        Ok(Libvirt { conn })
    }

    pub fn network(&self, name: &str) -> Result<Option<Network>, String> {
        match self.conn.lookup_network_by_name(name) {
            Ok(n) => Ok(Some(n)),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(fail("look up network", name, e)),
        }
    }

    pub fn network_xml(&self, net: &Network) -> Result<String, String> {
        net.xml_desc(0)
            .map_err(|e| fail("read XML of network", &net.name().unwrap_or_default(), e))
    }

    /// Starts the network if it is inactive and turns autostart on (as kvm2 does for both of its
    /// networks). Returns whether it had to be started.
    pub fn ensure_active(&self, net: &Network, name: &str) -> Result<bool, String> {
        let active = net
            .is_active()
            .map_err(|e| fail("read state of network", name, e))?;
        if !net.autostart().unwrap_or(false) {
            net.set_autostart(true)
                .map_err(|e| fail("set autostart of network", name, e))?;
        }
        if active {
            return Ok(false);
        }
        net.create().map_err(|e| fail("start network", name, e))?;
        Ok(true)
    }

    /// Defines, autostarts and starts a network; undefines it again if it does not start.
    pub fn create_network(&self, name: &str, xml: &str) -> Result<(), String> {
        let net = self
            .conn
            .define_network_xml(xml)
            .map_err(|e| fail("define network", name, e))?;
        let started = net
            .set_autostart(true)
            .and_then(|()| net.create())
            .map_err(|e| fail("start network", name, e));
        if started.is_err() {
            let _ = net.undefine();
        }
        started
    }

    /// Destroys (if active) and undefines a network; a missing one is fine.
    pub fn delete_network(&self, name: &str) -> Result<(), String> {
        let Some(net) = self.network(name)? else {
            return Ok(());
        };
        match net.destroy() {
            Ok(()) => {}
            Err(e) if is_missing(&e) || is_not_running(&e) => {}
            Err(e) => return Err(fail("stop network", name, e)),
        }
        match net.undefine() {
            Ok(()) => Ok(()),
            Err(e) if is_missing(&e) || is_not_running(&e) => Ok(()),
            Err(e) => Err(fail("undefine network", name, e)),
        }
    }

    /// Domains other than `except` with a NIC on `network` (kvm2's check before deleting it).
    pub fn other_domains_on(&self, network: &str, except: &str) -> Result<Vec<String>, String> {
        let doms = self
            .conn
            .list_all_domains(0)
            .map_err(|e| fail("list", "domains", e))?;
        let mut users = Vec::new();
        for d in doms {
            let Ok(name) = d.name() else { continue };
            if name == except {
                continue;
            }
            let Ok(xml) = d.xml_desc(0) else { continue };
            let nics = crate::xml::domain_nics(&xml).unwrap_or_default();
            if nics.iter().any(|(n, _)| n == network) {
                users.push(name);
            }
        }
        Ok(users)
    }

    pub fn domain(&self, name: &str) -> Result<Option<Domain>, String> {
        match self.conn.lookup_domain_by_name(name) {
            Ok(d) => Ok(Some(d)),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(fail("look up domain", name, e)),
        }
    }

    pub fn domain_state(&self, name: &str) -> Result<DomState, String> {
        let Some(d) = self.domain(name)? else {
            return Ok(DomState::Missing);
        };
        match d.is_active() {
            Ok(true) => Ok(DomState::Running),
            Ok(false) => Ok(DomState::Stopped),
            Err(e) if is_missing(&e) => Ok(DomState::Missing),
            Err(e) => Err(fail("read state of domain", name, e)),
        }
    }

    pub fn domain_xml(&self, name: &str) -> Result<Option<String>, String> {
        match self.domain(name)? {
            Some(d) => d
                .xml_desc(0)
                .map(Some)
                .map_err(|e| fail("read XML of domain", name, e)),
            None => Ok(None),
        }
    }

    pub fn define_domain(&self, name: &str, xml: &str) -> Result<(), String> {
        self.conn
            .define_domain_xml(xml)
            .map(drop)
            .map_err(|e| fail("define domain", name, e))
    }

    pub fn start_domain(&self, name: &str) -> Result<(), String> {
        let d = self
            .domain(name)?
            .ok_or_else(|| format!("libvirt: domain {name} does not exist"))?;
        d.create().map_err(|e| fail("start domain", name, e))
    }

    /// ACPI power button (`virDomainShutdown`). A domain that is not running is fine.
    pub fn shutdown(&self, name: &str) -> Result<(), String> {
        let Some(d) = self.domain(name)? else {
            return Ok(());
        };
        match d.shutdown() {
            Ok(()) => Ok(()),
            Err(e) if is_missing(&e) || is_not_running(&e) => Ok(()),
            Err(e) => Err(fail("shut down domain", name, e)),
        }
    }

    /// Hard power-off; a domain that is missing or not running is fine.
    pub fn destroy(&self, name: &str) -> Result<(), String> {
        let Some(d) = self.domain(name)? else {
            return Ok(());
        };
        match d.destroy() {
            Ok(()) => Ok(()),
            Err(e) if is_missing(&e) || is_not_running(&e) => Ok(()),
            Err(e) => Err(fail("destroy domain", name, e)),
        }
    }

    pub fn undefine(&self, name: &str) -> Result<(), String> {
        let Some(d) = self.domain(name)? else {
            return Ok(());
        };
        match d.undefine() {
            Ok(()) => Ok(()),
            Err(e) if is_missing(&e) => Ok(()),
            Err(e) => Err(fail("undefine domain", name, e)),
        }
    }

    /// The network's DHCP leases for `mac` (`virNetworkGetDHCPLeases` with a MAC filter; virt
    /// 0.5 has no safe wrapper).
    pub fn leases(&self, network: &str, mac: &str) -> Result<Vec<Lease>, String> {
        let net = self
            .network(network)?
            .ok_or_else(|| format!("libvirt: network {network} does not exist"))?;
        let mac_c = CString::new(mac).map_err(|_| format!("bad MAC {mac:?}"))?;
        let mut raw: *mut sys::virNetworkDHCPLeasePtr = std::ptr::null_mut();
        // SAFETY: `net` is a live handle and `mac_c` outlives the call; libvirt allocates the
        // array and each lease, freed below exactly once.
        let n = unsafe { sys::virNetworkGetDHCPLeases(net.as_ptr(), mac_c.as_ptr(), &mut raw, 0) };
        if n < 0 {
            return Err(fail(
                "read DHCP leases of network",
                network,
                virt::error::Error::last_error(),
            ));
        }
        let mut out = Vec::new();
        for i in 0..n as usize {
            // SAFETY: libvirt returned `n` valid lease pointers in `raw`.
            unsafe {
                let lease = *raw.add(i);
                let l = &*lease;
                let text = |p: *mut std::os::raw::c_char| {
                    if p.is_null() {
                        String::new()
                    } else {
                        CStr::from_ptr(p).to_string_lossy().into_owned()
                    }
                };
                if let Ok(ip) = text(l.ipaddr).parse::<Ipv4Addr>() {
                    out.push(Lease {
                        mac: text(l.mac).to_ascii_lowercase(),
                        ip,
                        expiry: l.expirytime,
                    });
                }
                sys::virNetworkDHCPLeaseFree(lease);
            }
        }
        if !raw.is_null() {
            // SAFETY: the array itself was malloc'ed by libvirt.
            unsafe { libc::free(raw.cast()) };
        }
        Ok(out)
    }

    /// The current lease of `mac` on `network`: the one that expires last (stale leases of an
    /// earlier boot may still be listed).
    pub fn lease_ip(&self, network: &str, mac: &str) -> Result<Option<Ipv4Addr>, String> {
        let mac = mac.to_ascii_lowercase();
        Ok(self
            .leases(network, &mac)?
            .into_iter()
            .filter(|l| l.mac == mac)
            .max_by_key(|l| l.expiry)
            .map(|l| l.ip))
    }

    /// Pins `mac` to `ip` with a DHCP host entry named after the machine (live and
    /// persistent); an entry that already exists is fine.
    pub fn pin_dhcp_host(
        &self,
        network: &str,
        machine: &str,
        mac: &str,
        ip: Ipv4Addr,
    ) -> Result<(), String> {
        match self.update_dhcp_host(
            network,
            machine,
            mac,
            ip,
            sys::VIR_NETWORK_UPDATE_COMMAND_ADD_LAST,
        ) {
            Err(e) if e.contains("existing dhcp host entry") => Ok(()),
            other => other,
        }
    }

    /// Removes the DHCP host entry that [`Libvirt::pin_dhcp_host`] added; a missing network is
    /// fine.
    pub fn unpin_dhcp_host(
        &self,
        network: &str,
        machine: &str,
        mac: &str,
        ip: Ipv4Addr,
    ) -> Result<(), String> {
        if self.network(network)?.is_none() {
            return Ok(());
        }
        self.update_dhcp_host(
            network,
            machine,
            mac,
            ip,
            sys::VIR_NETWORK_UPDATE_COMMAND_DELETE,
        )
    }

    fn update_dhcp_host(
        &self,
        network: &str,
        machine: &str,
        mac: &str,
        ip: Ipv4Addr,
        command: sys::virNetworkUpdateCommand,
    ) -> Result<(), String> {
        let net = self
            .network(network)?
            .ok_or_else(|| format!("libvirt: network {network} does not exist"))?;
        let xml = crate::xml::dhcp_host(machine, mac, ip);
        net.update(
            command,
            sys::VIR_NETWORK_SECTION_IP_DHCP_HOST,
            -1,
            &xml,
            sys::VIR_NETWORK_UPDATE_AFFECT_LIVE | sys::VIR_NETWORK_UPDATE_AFFECT_CONFIG,
        )
        .map_err(|e| fail("update DHCP host entries of network", network, e))
    }
}
