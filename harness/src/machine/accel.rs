//! The accelerator: KVM where the libvirt host really has hardware virtualisation, TCG
//! otherwise. One rule for every host, local or remote, read through libvirt: its domain
//! capabilities must offer kvm, and its host CPU (libvirt's host capabilities, features
//! expanded from the CPU model) must have `vmx` or `svm`. An offer of kvm alone proves nothing:
//! a PVM-only `/dev/kvm` makes it too, and QEMU then aborts (or the guest hangs) under it.

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
    /// The libvirt host's CPU has vmx or svm (its host capabilities); `None` when libvirt
    /// could not say.
    pub cpu_has_virt_flags: Option<bool>,
}

/// Picks the accelerator and says why.
pub(crate) fn decide(facts: &AccelFacts) -> (Accel, String) {
    if let Some(forced) = facts.forced {
        return (forced, format!("MKH_ACCEL={}", forced.as_str()));
    }
    match (facts.libvirt_offers_kvm, facts.cpu_has_virt_flags) {
        (false, _) => (
            Accel::Tcg,
            "libvirt offers no kvm domains on this host".into(),
        ),
        (true, Some(true)) => (
            Accel::Kvm,
            "libvirt offers kvm and the host CPU has vmx/svm".into(),
        ),
        (true, Some(false)) => (
            Accel::Tcg,
            "libvirt offers kvm, but the host CPU shows no vmx/svm (e.g. a PVM-only /dev/kvm)"
                .into(),
        ),
        (true, None) => (
            Accel::Tcg,
            "libvirt offers kvm, but did not describe the host CPU, so vmx/svm is not shown".into(),
        ),
    }
}

/// Whether domain capabilities (asked for virttype kvm) describe kvm domains.
pub fn domain_capabilities_offer_kvm(domcaps_xml: &str) -> bool {
    crate::xml::elements(domcaps_xml).is_ok_and(|els| {
        els.iter()
            .any(|e| e.is_at(&["domainCapabilities", "domain"]) && e.text.trim() == "kvm")
    })
}

/// What libvirt says of its host, for [`decide`]: the same reading for a local or remote host.
pub(crate) fn facts(lv: &crate::libvirt::Libvirt, forced: Option<Accel>) -> AccelFacts {
    AccelFacts {
        forced,
        libvirt_offers_kvm: lv
            .domain_capabilities("kvm")
            .is_some_and(|xml| domain_capabilities_offer_kvm(&xml)),
        cpu_has_virt_flags: lv
            .host_cpu_features()
            .map(|features| features_have_virt(&features)),
    }
}

/// Whether a CPU's feature names (libvirt's, expanded) include hardware virtualisation.
pub(crate) fn features_have_virt(features: &[String]) -> bool {
    features.iter().any(|f| f == "vmx" || f == "svm")
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
        // A host CPU libvirt could not describe: no proof of vmx/svm.
        assert_eq!(decide(&facts(true, None)).0, Accel::Tcg);
    }

    #[test]
    fn mkh_accel_overrides_the_facts() {
        let mut f = facts(false, Some(false));
        f.forced = Some(Accel::Kvm);
        assert_eq!(decide(&f), (Accel::Kvm, "MKH_ACCEL=kvm".to_owned()));
    }

    #[test]
    fn capabilities_and_cpu_features_are_read() {
        let caps = "<domainCapabilities><path>/usr/bin/qemu-system-x86_64</path>\
                    <domain>kvm</domain><arch>x86_64</arch></domainCapabilities>";
        assert!(domain_capabilities_offer_kvm(caps));
        assert!(!domain_capabilities_offer_kvm(
            &caps.replace(">kvm<", ">qemu<")
        ));
        assert!(!domain_capabilities_offer_kvm("not xml"));
        let names = |s: &str| s.split(' ').map(str::to_owned).collect::<Vec<_>>();
        assert!(features_have_virt(&names("sse svm avx")));
        assert!(features_have_virt(&names("vmx")));
        assert!(!features_have_virt(&names("sse hypervisor vmx-ept")));
    }
}
