//! The only module that talks to libvirt (crate `virt`). Everything above it deals in mkh's own
//! types and XML strings. All calls block: async callers run them on blocking threads.

use std::sync::Once;
use std::time::{Duration, Instant};

use virt::connect::Connect;
use virt::error::ErrorNumber;
use virt::sys;

use crate::error::{Error, Result};

/// Whether a URI reaches the libvirt of this host, so that host-side facts (interfaces, routes,
/// processes) describe the same machine as libvirt's objects.
pub fn uri_is_local(uri: &str) -> bool {
    match uri.split_once("://") {
        Some((scheme, rest)) => !scheme.contains('+') && rest.starts_with('/'),
        None => true,
    }
}

/// A failure libvirt reported, in mkh's terms: libvirt's own words, and the kind of failure
/// where mkh tells kinds apart. It displays as libvirt's error came: level, message, code and
/// libvirt's reporting module, e.g. `error: Network not found: no network with matching name 'x'
/// [code=nonetwork (43), domain=test (12)]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text}")]
pub struct LibvirtError {
    kind: LibvirtErrorKind,
    message: String,
    text: String,
}

impl LibvirtError {
    /// What kind of failure this is.
    pub fn kind(&self) -> LibvirtErrorKind {
        self.kind
    }

    /// libvirt's message alone, without the level, code and domain that `Display` adds.
    pub fn message(&self) -> &str {
        &self.message
    }

    fn from_virt(e: virt::error::Error) -> Self {
        LibvirtError {
            kind: kind_of(&e),
            message: e.message().to_owned(),
            text: e.to_string(),
        }
    }
}

/// The kinds of libvirt failure mkh tells apart; every other failure is [`Other`]. New kinds
/// may be added: match with a wildcard arm.
///
/// [`Other`]: LibvirtErrorKind::Other
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LibvirtErrorKind {
    /// The object to create exists already (a domain, network or volume of that name).
    AlreadyExists,
    /// No domain, network, storage pool or volume of that name (any more).
    NoSuchObject,
    /// The object is not in a state that allows the operation, such as starting a network that
    /// runs already or stopping a domain that does not run.
    OperationInvalid,
    /// Any other failure.
    Other,
}

/// A libvirt error's kind, from its code (and, where libvirt has no code for the failure, from
/// its words).
fn kind_of(e: &virt::error::Error) -> LibvirtErrorKind {
    use ErrorNumber as N;
    let code = e.code();
    if code.is_any(vec![
        N::NoDomain,
        N::NoNetwork,
        N::NoStoragePool,
        N::NoStorageVolume,
    ]) {
        LibvirtErrorKind::NoSuchObject
    } else if code.is(N::OperationInvalid) {
        LibvirtErrorKind::OperationInvalid
    } else if code.is_any(vec![N::DomExist, N::NetworkExist, N::StorageVolExist])
        // libvirt reports some clashes as a failed operation ("network 'x' already exists with
        // uuid ..."; a storage volume, depending on the version and backend).
        || e.message().contains("already exists")
        || e.message().contains("exists already")
    {
        LibvirtErrorKind::AlreadyExists
    } else {
        LibvirtErrorKind::Other
    }
}

/// What happened to an object mkh asked to remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    Removed,
    /// Someone else (another reaper, a concurrent teardown) removed it first: fine.
    AlreadyGone,
    /// It no longer is what the caller judged (another owner now): left alone.
    Changed,
}

pub struct Libvirt {
    conn: Connect,
    uri: String,
}

impl std::fmt::Debug for Libvirt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Libvirt({})", self.uri)
    }
}

/// A libvirt object seen in a listing: its name and its full XML.
#[derive(Debug, Clone)]
pub struct ObjectXml {
    pub name: String,
    pub active: bool,
    pub xml: String,
}

impl Libvirt {
    pub fn connect_to(uri: &str) -> Result<Libvirt> {
        static QUIET: Once = Once::new();
        // libvirt's default handler prints every error to stderr, including the expected ones
        // (an object already gone); mkh reports errors itself.
        QUIET.call_once(virt::error::clear_error_callback);
        let conn = Connect::open(Some(uri)).map_err(|source| Error::Connect {
            uri: uri.to_owned(),
            source: LibvirtError::from_virt(source),
        })?;
        Ok(Libvirt {
            conn,
            uri: uri.to_owned(),
        })
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    pub fn is_local(&self) -> bool {
        uri_is_local(&self.uri)
    }

    /// libvirt's built-in `test:///` driver: objects in memory, no real networks or machines.
    pub fn is_test_driver(&self) -> bool {
        self.uri.starts_with("test:")
    }

    /// Every network, defined or transient, active or not, with its XML.
    pub fn networks(&self) -> Result<Vec<ObjectXml>> {
        let list = self
            .conn
            .list_all_networks(0)
            .map_err(|source| failed("list", "networks", source))?;
        let mut out = Vec::with_capacity(list.len());
        for net in list {
            // The persistent definition: it carries metadata rewritten since the start (see
            // `redefine_network`). A network removed meanwhile is simply not there.
            let xml = net
                .xml_desc(sys::VIR_NETWORK_XML_INACTIVE)
                .or_else(|_| net.xml_desc(0));
            let (Ok(name), Ok(xml)) = (net.name(), xml) else {
                continue;
            };
            out.push(ObjectXml {
                name,
                active: net.is_active().unwrap_or(false),
                xml,
            });
        }
        Ok(out)
    }

    /// Defines a persistent network from XML and starts it.
    pub fn define_and_start_network(&self, name: &str, xml: &str) -> Result<()> {
        let net = self
            .conn
            .define_network_xml(xml)
            .map_err(|source| failed("define network", name, source))?;
        if let Err(source) = net.create() {
            // Leave nothing half-made behind.
            let _ = net.undefine();
            return Err(failed("start network", name, source));
        }
        Ok(())
    }

    /// Stops a network (it stays defined); stopped already is fine.
    pub fn stop_network(&self, name: &str) -> Result<()> {
        let net = self.network(name)?;
        if net.is_active().unwrap_or(true) {
            net.destroy()
                .map_err(|source| failed("stop network", name, source))?;
        }
        Ok(())
    }

    /// Starts a defined network; running already is fine.
    pub fn start_network(&self, name: &str) -> Result<()> {
        let net = self.network(name)?;
        if !net.is_active().unwrap_or(false) {
            net.create()
                .map_err(|source| failed("start network", name, source))?;
        }
        Ok(())
    }

    /// Replaces a network's persistent definition (same name and UUID) without restarting it:
    /// the way to change its metadata on a libvirt without network metadata calls.
    pub fn redefine_network(&self, name: &str, xml: &str) -> Result<()> {
        self.conn
            .define_network_xml(xml)
            .map(|_| ())
            .map_err(|source| failed("redefine network", name, source))
    }

    /// Destroys (if active) and undefines a network. Gone already is not an error.
    #[cfg_attr(not(feature = "admin"), allow(dead_code))] // The `mkh` command's.
    pub fn remove_network(&self, name: &str) -> Result<Removal> {
        self.remove_network_if(name, |_| true)
    }

    /// [`Libvirt::remove_network`] if `still_wanted` approves the network's current
    /// (persistent) XML, read on the same handle that removes it.
    pub fn remove_network_if(
        &self,
        name: &str,
        still_wanted: impl Fn(&str) -> bool,
    ) -> Result<Removal> {
        let net = match self.conn.lookup_network_by_name(name) {
            Ok(net) => net,
            Err(e) if is_gone(&e) => return Ok(Removal::AlreadyGone),
            Err(source) => return Err(failed("look up network", name, source)),
        };
        let xml = net
            .xml_desc(sys::VIR_NETWORK_XML_INACTIVE)
            .or_else(|_| net.xml_desc(0));
        match xml {
            Ok(xml) if !still_wanted(&xml) => return Ok(Removal::Changed),
            Err(e) if is_gone(&e) => return Ok(Removal::AlreadyGone),
            _ => {}
        }
        match net.destroy() {
            Ok(()) => {}
            Err(e) if is_gone(&e) || is_not_running(&e) => {}
            Err(source) => return Err(failed("stop network", name, source)),
        }
        match net.undefine() {
            Ok(()) => Ok(Removal::Removed),
            Err(e) if is_gone(&e) => Ok(Removal::AlreadyGone),
            // A transient network vanishes on destroy.
            Err(e) if is_not_running(&e) => Ok(Removal::Removed),
            // Another remover (a parallel reaper) undefined it between our lookup and ours:
            // libvirt then fails on the config file it already removed, and may still list
            // the network for a moment while the other undefine finishes.
            Err(_) if removed_by_another(|| self.conn.lookup_network_by_name(name).map(drop)) => {
                Ok(Removal::AlreadyGone)
            }
            Err(source) => Err(failed("undefine network", name, source)),
        }
    }

    /// Every domain, running or not, with its XML.
    pub fn domains(&self) -> Result<Vec<ObjectXml>> {
        let list = self
            .conn
            .list_all_domains(0)
            .map_err(|source| failed("list", "domains", source))?;
        let mut out = Vec::with_capacity(list.len());
        for dom in list {
            let (Ok(name), Ok(xml)) = (dom.name(), dom.xml_desc(0)) else {
                continue;
            };
            out.push(ObjectXml {
                name,
                active: dom.is_active().unwrap_or(false),
                xml,
            });
        }
        Ok(out)
    }

    /// Destroys (if running) and undefines a domain. Gone already is not an error.
    #[cfg_attr(not(feature = "admin"), allow(dead_code))] // The `mkh` command's.
    pub fn remove_domain(&self, name: &str) -> Result<Removal> {
        self.remove_domain_if(name, |_| true)
    }

    /// [`Libvirt::remove_domain`] if `still_wanted` approves the domain's current XML, read on
    /// the same handle that removes it.
    pub fn remove_domain_if(
        &self,
        name: &str,
        still_wanted: impl Fn(&str) -> bool,
    ) -> Result<Removal> {
        let dom = match self.conn.lookup_domain_by_name(name) {
            Ok(dom) => dom,
            Err(e) if is_gone(&e) => return Ok(Removal::AlreadyGone),
            Err(source) => return Err(failed("look up domain", name, source)),
        };
        match dom.xml_desc(0) {
            Ok(xml) if !still_wanted(&xml) => return Ok(Removal::Changed),
            Err(e) if is_gone(&e) => return Ok(Removal::AlreadyGone),
            _ => {}
        }
        match dom.destroy() {
            Ok(()) => {}
            Err(e) if is_gone(&e) || is_not_running(&e) => {}
            Err(source) => return Err(failed("stop domain", name, source)),
        }
        let flags = sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
            | sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
            | sys::VIR_DOMAIN_UNDEFINE_NVRAM;
        match dom.undefine_flags(flags) {
            Ok(()) => Ok(Removal::Removed),
            Err(e) if is_gone(&e) => Ok(Removal::AlreadyGone),
            // A transient domain vanishes on destroy.
            Err(e) if is_not_running(&e) => Ok(Removal::Removed),
            // Another remover undefined it between our lookup and ours.
            Err(_) if removed_by_another(|| self.conn.lookup_domain_by_name(name).map(drop)) => {
                Ok(Removal::AlreadyGone)
            }
            Err(source) => Err(failed("undefine domain", name, source)),
        }
    }
}

/// One DHCP lease as libvirt's dnsmasq reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Lease {
    pub mac: String,
    pub ip: String,
    pub prefix: u32,
    pub hostname: Option<String>,
    /// Seconds since the Unix epoch.
    pub expiry: i64,
}

/// State of a domain as mkh cares about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainState {
    Running,
    /// Defined but not running (shut off, crashed, paused counts as running for IPs).
    Stopped,
    Missing,
}

impl Libvirt {
    /// Every DHCP lease of a network, of every domain (also of domains long gone: dnsmasq keeps
    /// leases until they expire).
    pub fn network_leases(&self, network: &str) -> Result<Vec<Lease>> {
        let net = self
            .conn
            .lookup_network_by_name(network)
            .map_err(|source| failed("look up network", network, source))?;
        // virt has no safe call for this (none up to 0.5.0).
        let mut raw: *mut sys::virNetworkDHCPLeasePtr = std::ptr::null_mut();
        // SAFETY: `net` is a valid network handle; libvirt allocates the array and each lease,
        // which are freed below exactly once.
        let n =
            unsafe { sys::virNetworkGetDHCPLeases(net.as_ptr(), std::ptr::null(), &mut raw, 0) };
        if n < 0 {
            return Err(failed(
                "read DHCP leases of",
                network,
                virt::error::Error::last_error(),
            ));
        }
        let mut out = Vec::with_capacity(n as usize);
        for i in 0..n as usize {
            // SAFETY: libvirt returned `n` valid lease pointers.
            unsafe {
                let lease = *raw.add(i);
                let l = &*lease;
                let text = |p: *mut std::os::raw::c_char| {
                    (!p.is_null())
                        .then(|| std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned())
                };
                out.push(Lease {
                    mac: text(l.mac).unwrap_or_default().to_ascii_lowercase(),
                    ip: text(l.ipaddr).unwrap_or_default(),
                    prefix: l.prefix,
                    hostname: text(l.hostname),
                    expiry: l.expirytime,
                });
                sys::virNetworkDHCPLeaseFree(lease);
            }
        }
        if !raw.is_null() {
            // SAFETY: the array itself is malloc'ed by libvirt.
            unsafe { libc::free(raw as *mut std::os::raw::c_void) };
        }
        Ok(out)
    }

    /// Defines a persistent domain (not started).
    pub fn define_domain(&self, name: &str, xml: &str) -> Result<()> {
        self.conn
            .define_domain_xml(xml)
            .map(|_| ())
            .map_err(|source| failed("define domain", name, source))
    }

    pub fn start_domain(&self, name: &str) -> Result<()> {
        let dom = self.domain(name)?;
        dom.create()
            .map_err(|source| failed("start domain", name, source))
    }

    pub fn domain_state(&self, name: &str) -> Result<DomainState> {
        let dom = match self.conn.lookup_domain_by_name(name) {
            Ok(d) => d,
            Err(e) if is_gone(&e) => return Ok(DomainState::Missing),
            Err(source) => return Err(failed("look up domain", name, source)),
        };
        let active = dom
            .is_active()
            .map_err(|source| failed("read state of domain", name, source))?;
        Ok(if active {
            DomainState::Running
        } else {
            DomainState::Stopped
        })
    }

    /// The running domain's id: libvirt gives a domain a new one every time it starts, so it
    /// names one boot. `None` when the domain does not run.
    pub fn domain_boot_id(&self, name: &str) -> Result<Option<u32>> {
        match self.conn.lookup_domain_by_name(name) {
            Ok(d) => Ok(d.id()),
            Err(e) if is_gone(&e) => Ok(None),
            Err(source) => Err(failed("look up domain", name, source)),
        }
    }

    /// Asks the guest to power off (ACPI power button).
    pub fn shutdown_domain(&self, name: &str) -> Result<()> {
        match self.domain(name)?.shutdown() {
            Ok(()) => Ok(()),
            Err(e) if is_not_running(&e) => Ok(()),
            Err(source) => Err(failed("shut down domain", name, source)),
        }
    }

    /// Powers a domain off at once (it stays defined).
    pub fn destroy_domain(&self, name: &str) -> Result<()> {
        match self.domain(name)?.destroy() {
            Ok(()) => Ok(()),
            Err(e) if is_not_running(&e) => Ok(()),
            Err(source) => Err(failed("power off domain", name, source)),
        }
    }

    /// Changes a device of a running domain (e.g. a NIC's link state).
    pub fn update_live_device(&self, name: &str, device_xml: &str) -> Result<()> {
        self.domain(name)?
            .update_device_flags(device_xml, sys::VIR_DOMAIN_AFFECT_LIVE)
            .map_err(|source| failed("update a device of domain", name, source))
    }

    pub fn domain_xml(&self, name: &str) -> Result<String> {
        self.domain(name)?
            .xml_desc(0)
            .map_err(|source| failed("read XML of domain", name, source))
    }

    /// The domain's persistent definition, as libvirt completed it (UUID, device addresses).
    pub fn domain_xml_inactive(&self, name: &str) -> Result<String> {
        self.domain(name)?
            .xml_desc(sys::VIR_DOMAIN_XML_INACTIVE)
            .map_err(|source| failed("read XML of domain", name, source))
    }

    /// Saves a running domain's memory and device state to `path` (written by libvirt's side)
    /// and stops it; a transient domain is gone afterwards.
    pub fn save_domain(&self, name: &str, path: &std::path::Path) -> Result<()> {
        let dom = self.domain(name)?;
        let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| Error::io(path, std::io::ErrorKind::InvalidInput.into()))?;
        // SAFETY: `dom` is a live domain handle and `c_path` a NUL-terminated string, both
        // outliving the call; a null dxml keeps the domain's own XML.
        let rc = unsafe {
            sys::virDomainSaveFlags(
                dom.as_ptr(),
                c_path.as_ptr(),
                std::ptr::null(),
                sys::VIR_DOMAIN_SAVE_RUNNING,
            )
        };
        if rc < 0 {
            return Err(failed(
                "save domain",
                name,
                virt::error::Error::last_error(),
            ));
        }
        Ok(())
    }

    /// Restores a saved domain, running; when a domain of the saved name and UUID is defined, it
    /// becomes that domain's running state.
    pub fn restore_domain(&self, path: &std::path::Path) -> Result<()> {
        self.conn
            .restore_domain_flags(&path.to_string_lossy(), None, sys::VIR_DOMAIN_SAVE_RUNNING)
            .map_err(|source| failed("restore domain from", &path.to_string_lossy(), source))
    }

    /// Creates and starts a transient domain: gone once it stops (or is saved).
    pub fn create_transient_domain(&self, name: &str, xml: &str) -> Result<()> {
        self.conn
            .create_domain_xml(xml, 0)
            .map(|_| ())
            .map_err(|source| failed("create domain", name, source))
    }

    /// Writes mkh's owner element into a domain someone else defined (minikube's), in its
    /// persistent config and, when it runs, its live state. `Ok(false)`: no such domain (yet).
    pub fn tag_domain(&self, name: &str, owner_xml: &str) -> Result<bool> {
        let dom = match self.conn.lookup_domain_by_name(name) {
            Ok(d) => d,
            Err(e) if is_gone(&e) => return Ok(false),
            Err(source) => return Err(failed("look up domain", name, source)),
        };
        let mut flags = sys::VIR_DOMAIN_AFFECT_CONFIG;
        if dom.is_active().unwrap_or(false) {
            flags |= sys::VIR_DOMAIN_AFFECT_LIVE;
        }
        dom.set_metadata(
            sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
            Some(owner_xml),
            Some(crate::owner::OWNER_PREFIX),
            Some(crate::owner::OWNER_NS),
            flags,
        )
        .map_err(|source| failed("tag domain", name, source))?;
        Ok(true)
    }

    /// libvirt's version on the host, and the hypervisor's (QEMU's) where the driver has one.
    pub fn versions(&self) -> (String, Option<String>) {
        let dotted = |v: u32| format!("{}.{}.{}", v / 1_000_000, v / 1000 % 1000, v % 1000);
        let libvirt = self
            .conn
            .lib_version()
            .map_or_else(|e| format!("(version unknown: {e})"), dotted);
        let hypervisor = self.conn.hyp_version().ok().filter(|v| *v > 0).map(dotted);
        (libvirt, hypervisor)
    }

    /// The domain capabilities XML for x86_64 guests of `virttype` (`kvm`, `qemu`), or `None`
    /// when the host offers no such domains.
    pub fn domain_capabilities(&self, virttype: &str) -> Option<String> {
        self.conn
            .domain_capabilities(None, Some("x86_64"), None, Some(virttype), 0)
            .ok()
    }

    /// The host CPU's feature names, as libvirt describes the CPU it runs on (its host
    /// capabilities), with the features its CPU model implies expanded (`EPYC` implies `svm`);
    /// `None` when libvirt does not say (no host CPU, or one without a single feature).
    pub fn host_cpu_features(&self) -> Option<Vec<String>> {
        let caps = self.conn.capabilities().ok()?;
        let start = caps.find("<host>")?;
        let cpu_start = start + caps[start..].find("<cpu>")?;
        let cpu_end = cpu_start + caps[cpu_start..].find("</cpu>")? + "</cpu>".len();
        let cpu = &caps[cpu_start..cpu_end];
        let expanded = self
            .conn
            .baseline_cpu(&[cpu], sys::VIR_CONNECT_BASELINE_CPU_EXPAND_FEATURES)
            .unwrap_or_default();
        let mut names = Vec::new();
        for xml in [cpu, expanded.as_str()] {
            let Ok(elements) = crate::xml::elements(xml) else {
                continue;
            };
            names.extend(
                elements
                    .iter()
                    .filter(|e| e.is_at(&["cpu", "feature"]))
                    .filter(|e| e.attr("policy").is_none_or(|p| p != "disable"))
                    .filter_map(|e| e.attr("name").map(str::to_owned)),
            );
        }
        // A CPU libvirt describes by no feature at all is one it does not know.
        (!names.is_empty()).then_some(names)
    }

    fn network(&self, name: &str) -> Result<virt::network::Network> {
        self.conn
            .lookup_network_by_name(name)
            .map_err(|source| failed("look up network", name, source))
    }

    fn domain(&self, name: &str) -> Result<virt::domain::Domain> {
        self.conn
            .lookup_domain_by_name(name)
            .map_err(|source| failed("look up domain", name, source))
    }
}

/// A volume of a storage pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    pub name: String,
    /// Its path on the libvirt host.
    pub path: String,
    pub bytes: u64,
    /// Bytes written so far (grows during an upload).
    pub allocated: u64,
}

impl Libvirt {
    /// Makes sure a `dir` pool of this name runs, defining, building and starting it (with
    /// autostart) when missing. Two clients defining it at once is fine: the loser finds the
    /// winner's. Returns its target path on the libvirt host.
    pub fn ensure_dir_pool(&self, name: &str, xml: &str) -> Result<String> {
        let pool = match self.conn_pool(name) {
            Ok(pool) => pool,
            Err(_) => match self.conn.define_storage_pool_xml(xml, 0) {
                Ok(pool) => {
                    let _ = pool.build(0);
                    let _ = pool.set_autostart(true);
                    pool
                }
                Err(define) => self
                    .conn_pool(name)
                    .map_err(|_| failed("define storage pool", name, define))?,
            },
        };
        if !pool.is_active().unwrap_or(false) {
            if let Err(source) = pool.create(0) {
                if !pool.is_active().unwrap_or(false) {
                    return Err(failed("start storage pool", name, source));
                }
            }
        }
        let xml = pool
            .xml_desc(0)
            .map_err(|source| failed("read XML of storage pool", name, source))?;
        crate::xml::elements(&xml)
            .ok()
            .and_then(|els| {
                els.into_iter()
                    .find(|e| e.is_at(&["pool", "target", "path"]))
                    .map(|e| e.text.trim().to_owned())
            })
            .ok_or_else(|| Error::Libvirt {
                action: "read the target path of storage pool",
                object: name.to_owned(),
                source: LibvirtError::from_virt(virt::error::Error::last_error()),
            })
    }

    /// Whether a storage pool of this name exists.
    pub fn has_pool(&self, name: &str) -> bool {
        self.conn_pool(name).is_ok()
    }

    /// The volumes of a pool, after a refresh (files written on the host by others, such as
    /// virtlogd's console logs, appear only then). A missing pool has none.
    pub fn volumes(&self, pool: &str) -> Result<Vec<VolumeInfo>> {
        let Ok(p) = self.conn_pool(pool) else {
            return Ok(Vec::new());
        };
        let _ = p.refresh(0);
        let list = p
            .list_all_volumes(0)
            .map_err(|source| failed("list volumes of", pool, source))?;
        Ok(list
            .into_iter()
            .filter_map(|v| {
                let info = v.info().ok()?;
                Some(VolumeInfo {
                    name: v.name().ok()?,
                    path: v.path().ok()?,
                    bytes: info.capacity,
                    allocated: info.allocation,
                })
            })
            .collect())
    }

    /// Creates a raw volume of `bytes` and uploads `data` (exactly `bytes` long) into it; a
    /// failed upload deletes the volume. Fails if a volume of that name exists.
    pub fn upload_volume(
        &self,
        pool: &str,
        name: &str,
        bytes: u64,
        data: &mut dyn std::io::Read,
    ) -> Result<VolumeInfo> {
        let p = self
            .conn_pool(pool)
            .map_err(|source| failed("look up storage pool", pool, source))?;
        let xml = format!(
            "<volume><name>{}</name><capacity unit='bytes'>{bytes}</capacity>             <allocation unit='bytes'>0</allocation><target><format type='raw'/>             <permissions><mode>0644</mode></permissions></target></volume>",
            crate::xml::escape(name)
        );
        let vol = virt::storage_vol::StorageVol::create_xml(&p, &xml, 0)
            .map_err(|source| failed("create volume", name, source))?;
        let sent = (|| -> std::result::Result<(), String> {
            let stream = virt::stream::Stream::new(&self.conn, 0).map_err(|e| e.to_string())?;
            vol.upload(&stream, 0, bytes, 0)
                .map_err(|e| e.to_string())?;
            // A stream is finished or aborted before it goes, whatever failed.
            let send_all = |data: &mut dyn std::io::Read| -> std::result::Result<(), String> {
                let mut buf = vec![0u8; 1 << 20];
                let mut left = bytes;
                while left > 0 {
                    let n = data.read(&mut buf).map_err(|e| e.to_string())?;
                    if n == 0 {
                        return Err(format!("the source ended {left} bytes short"));
                    }
                    let mut chunk = &buf[..n.min(left as usize)];
                    while !chunk.is_empty() {
                        match stream.send(chunk).map_err(|e| e.to_string())? {
                            sent if sent > 0 => chunk = &chunk[sent as usize..],
                            other => return Err(format!("the stream took {other} bytes")),
                        }
                    }
                    left -= n.min(left as usize) as u64;
                }
                Ok(())
            };
            match send_all(data) {
                Ok(()) => stream.finish().map_err(|e| e.to_string()),
                Err(problem) => {
                    let _ = stream.abort();
                    Err(problem)
                }
            }
        })();
        if let Err(problem) = sent {
            let _ = vol.delete(0);
            return Err(Error::Upload {
                volume: name.to_owned(),
                problem,
            });
        }
        Ok(VolumeInfo {
            name: name.to_owned(),
            path: vol
                .path()
                .map_err(|source| failed("read path of volume", name, source))?,
            bytes,
            allocated: bytes,
        })
    }

    /// Up to `max` bytes of a volume, from its start.
    pub fn download_volume(&self, pool: &str, name: &str, max: u64) -> Result<Vec<u8>> {
        let p = self
            .conn_pool(pool)
            .map_err(|source| failed("look up storage pool", pool, source))?;
        let vol = p
            .lookup_storage_vol_by_name(name)
            .map_err(|source| failed("look up volume", name, source))?;
        let size = vol.info().map(|i| i.capacity).unwrap_or(max).min(max);
        let mut out = Vec::with_capacity(size as usize);
        if size == 0 {
            return Ok(out);
        }
        let stream = virt::stream::Stream::new(&self.conn, 0)
            .map_err(|source| failed("open a stream for volume", name, source))?;
        if let Err(source) = vol.download(&stream, 0, size, 0) {
            let _ = stream.abort();
            return Err(failed("download volume", name, source));
        }
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match stream.recv(&mut buf) {
                Ok(n) if n > 0 => out.extend_from_slice(&buf[..n as usize]),
                Ok(_) => break,
                Err(source) => {
                    let _ = stream.abort();
                    return Err(failed("download volume", name, source));
                }
            }
        }
        let _ = stream.finish();
        Ok(out)
    }

    /// Deletes a volume; gone already is not an error.
    pub fn delete_volume(&self, pool: &str, name: &str) -> Result<Removal> {
        let Ok(p) = self.conn_pool(pool) else {
            return Ok(Removal::AlreadyGone);
        };
        let vol = match p.lookup_storage_vol_by_name(name) {
            Ok(v) => v,
            Err(e) if is_gone(&e) => return Ok(Removal::AlreadyGone),
            Err(source) => return Err(failed("look up volume", name, source)),
        };
        match vol.delete(0) {
            Ok(()) => Ok(Removal::Removed),
            Err(e) if is_gone(&e) => Ok(Removal::AlreadyGone),
            Err(_) if p.lookup_storage_vol_by_name(name).is_err() => Ok(Removal::AlreadyGone),
            Err(source) => Err(failed("delete volume", name, source)),
        }
    }

    fn conn_pool(
        &self,
        name: &str,
    ) -> std::result::Result<virt::storage_pool::StoragePool, virt::error::Error> {
        self.conn.lookup_storage_pool_by_name(name)
    }
}

fn failed(action: &'static str, object: &str, source: virt::error::Error) -> Error {
    Error::Libvirt {
        action,
        object: object.to_owned(),
        source: LibvirtError::from_virt(source),
    }
}

/// Whether an object whose undefine just failed is gone, or goes within a second: another
/// remover's undefine that got there first deletes the config file before it drops the object.
fn removed_by_another(lookup: impl Fn() -> std::result::Result<(), virt::error::Error>) -> bool {
    const WAIT: Duration = Duration::from_secs(1);
    let start = Instant::now();
    loop {
        if lookup().is_err_and(|e| is_gone(&e)) {
            return true;
        }
        if start.elapsed() >= WAIT {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn is_gone(e: &virt::error::Error) -> bool {
    kind_of(e) == LibvirtErrorKind::NoSuchObject
}

fn is_not_running(e: &virt::error::Error) -> bool {
    kind_of(e) == LibvirtErrorKind::OperationInvalid
}

/// Whether an error says the subnet or bridge is already used on the host, so the allocator
/// should pick another subnet and try again.
pub fn is_address_conflict(err: &Error) -> bool {
    match err {
        Error::Libvirt { source, .. } => {
            let m = source.message();
            m.contains("already in use") || m.contains("File exists")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST_URI: &str = "test:///default";

    /// The error the `virt` crate gives for a lookup of a network that does not exist.
    fn missing_network_error() -> virt::error::Error {
        let conn = Connect::open(Some(TEST_URI)).unwrap();
        conn.lookup_network_by_name("mkh-no-such-network")
            .map(drop)
            .unwrap_err()
    }

    #[test]
    fn a_missing_network_is_no_such_object_with_libvirts_words() {
        let raw = missing_network_error();
        let e = LibvirtError::from_virt(raw.clone());
        assert_eq!(e.kind(), LibvirtErrorKind::NoSuchObject);
        assert_eq!(e.to_string(), raw.to_string());
        assert_eq!(e.message(), raw.message());
        assert!(e.message().contains("mkh-no-such-network"), "{e}");
    }

    #[test]
    fn mkh_errors_carry_the_libvirt_error_as_their_source() {
        let lv = Libvirt::connect_to(TEST_URI).unwrap();
        let err = lv.network_leases("mkh-no-such-network").unwrap_err();
        let Error::Libvirt { source, .. } = &err else {
            panic!("not a libvirt error: {err:?}");
        };
        assert_eq!(source.kind(), LibvirtErrorKind::NoSuchObject);
        let raw = missing_network_error().to_string();
        assert_eq!(
            err.to_string(),
            format!("libvirt refused to look up network mkh-no-such-network: {raw}")
        );
        let cause = std::error::Error::source(&err).expect("a source");
        assert_eq!(cause.to_string(), raw);
    }

    #[test]
    fn a_name_taken_already_and_a_network_running_already_are_told_apart() {
        let lv = Libvirt::connect_to(TEST_URI).unwrap();
        let name = "mkh-kind-test";
        let xml = |uuid: &str| {
            format!("<network><name>{name}</name><uuid>{uuid}</uuid><bridge name='mkhkind0'/></network>")
        };
        let conn = Connect::open(Some(TEST_URI)).unwrap();
        let net = conn
            .define_network_xml(&xml("5f0bd5ad-3f4c-4c1a-9a0e-2d1a9c1e0001"))
            .unwrap();

        // libvirt has no code of its own for this clash: its words tell it.
        let clash = conn
            .define_network_xml(&xml("5f0bd5ad-3f4c-4c1a-9a0e-2d1a9c1e0002"))
            .map(drop)
            .unwrap_err();
        net.create().unwrap();
        let running = net.create().unwrap_err();
        lv.remove_network(name).unwrap();

        assert_eq!(
            LibvirtError::from_virt(clash).kind(),
            LibvirtErrorKind::AlreadyExists
        );
        assert_eq!(
            LibvirtError::from_virt(running).kind(),
            LibvirtErrorKind::OperationInvalid
        );
    }
}
