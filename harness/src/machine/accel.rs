//! The accelerator: KVM where the host really has hardware virtualisation, TCG otherwise.
//! `/dev/kvm` alone proves nothing (a PVM-only kernel offers it, but stock guest kernels hang
//! under it), so a local host must also show `vmx` or `svm` in its CPU flags.

use serde::Serialize;

/// How QEMU runs a guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualisation (`<domain type='kvm'>`).
    Kvm,
    /// QEMU's software emulation (`<domain type='qemu'>`): several times slower.
    Tcg,
}

impl Accel {
    /// The `<domain type=...>` value.
    pub(crate) fn domain_type(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "qemu",
        }
    }

    /// `kvm` or `tcg`.
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }

    /// How much longer than under KVM things take (boot, SSH): deadlines scale by this.
    pub(crate) fn slowness(self) -> f64 {
        match self {
            Accel::Kvm => 1.0,
            Accel::Tcg => 4.0,
        }
    }
}

/// What the decision rests on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccelFacts {
    /// `MKH_ACCEL`, when set.
    pub forced: Option<Accel>,
    /// The libvirt host offers `kvm` domains for x86_64 (its domain capabilities).
    pub libvirt_offers_kvm: bool,
    /// For a local libvirt: whether /proc/cpuinfo shows vmx or svm. `None` for a remote host.
    pub cpu_has_virt_flags: Option<bool>,
}

/// Picks the accelerator and says why.
pub(crate) fn decide(facts: &AccelFacts) -> (Accel, String) {
    if let Some(forced) = facts.forced {
        return (forced, format!("MKH_ACCEL={}", forced.as_str()));
    }
    if !facts.libvirt_offers_kvm {
        return (
            Accel::Tcg,
            "libvirt offers no kvm domains on this host".into(),
        );
    }
    match facts.cpu_has_virt_flags {
        Some(false) => (
            Accel::Tcg,
            "libvirt offers kvm, but the CPU shows no vmx/svm flag (e.g. a PVM-only /dev/kvm)"
                .into(),
        ),
        Some(true) => (
            Accel::Kvm,
            "libvirt offers kvm and the CPU has vmx/svm".into(),
        ),
        None => (Accel::Kvm, "the remote libvirt host offers kvm".into()),
    }
}

/// Whether domain capabilities (asked for virttype kvm) describe kvm domains.
pub fn domain_capabilities_offer_kvm(domcaps_xml: &str) -> bool {
    crate::xml::elements(domcaps_xml).is_ok_and(|els| {
        els.iter()
            .any(|e| e.is_at(&["domainCapabilities", "domain"]) && e.text.trim() == "kvm")
    })
}

/// Whether this host's CPU flags show hardware virtualisation.
pub fn local_cpu_has_virt_flags() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|t| cpuinfo_has_virt_flags(&t))
        .unwrap_or(false)
}

fn cpuinfo_has_virt_flags(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(kvm: bool, flags: Option<bool>) -> AccelFacts {
        AccelFacts {
            forced: None,
            libvirt_offers_kvm: kvm,
            cpu_has_virt_flags: flags,
        }
    }

    #[test]
    fn a_pvm_only_dev_kvm_means_tcg() {
        // This project's own machines: libvirt lists kvm, the CPU has no vmx/svm.
        assert_eq!(decide(&facts(true, Some(false))).0, Accel::Tcg);
        assert_eq!(decide(&facts(true, Some(true))).0, Accel::Kvm);
        assert_eq!(decide(&facts(false, Some(true))).0, Accel::Tcg);
        assert_eq!(decide(&facts(true, None)).0, Accel::Kvm);
    }

    #[test]
    fn mkh_accel_overrides_the_facts() {
        let mut f = facts(false, Some(false));
        f.forced = Some(Accel::Kvm);
        assert_eq!(decide(&f), (Accel::Kvm, "MKH_ACCEL=kvm".to_owned()));
    }

    #[test]
    fn capabilities_and_cpuinfo_are_read() {
        let caps = "<domainCapabilities><path>/usr/bin/qemu-system-x86_64</path>\
                    <domain>kvm</domain><arch>x86_64</arch></domainCapabilities>";
        assert!(domain_capabilities_offer_kvm(caps));
        assert!(!domain_capabilities_offer_kvm(
            &caps.replace(">kvm<", ">qemu<")
        ));
        assert!(!domain_capabilities_offer_kvm("not xml"));
        assert!(cpuinfo_has_virt_flags("flags\t\t: fpu vme vmx sse\n"));
        assert!(!cpuinfo_has_virt_flags(
            "flags\t\t: fpu vme sse\nvmx: none\n"
        ));
    }
}
