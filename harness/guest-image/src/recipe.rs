//! What goes into the image, and the manifests whose digests name it.
//!
//! Everything here is digest input: changing a list changes the recipe
//! digest, so cached images of the old recipe are simply no longer used.

use std::fmt::Write as _;

use crate::packages::Packages;

/// Bump when the build code changes what ends up in the image: it is part of
/// the digest, so old cached images are then simply no longer used.
pub(crate) const FORMAT: &str = "mkh-guest-image/2";

/// Metapackage whose dependency names the versioned kernel package.
pub(crate) const KERNEL_META_PACKAGE: &str = "linux-image-cloud-amd64";

/// Packages downloaded besides the kernel: the tools and the libraries they
/// need beyond Debian's base system. libc, libm, libz and libcrypt (all
/// `Priority: required`) are copied from the host with `ldd` instead: the
/// host runs the same Debian release, so they are ABI-compatible by
/// construction.
pub(crate) const PACKAGES: &[&str] = &[
    "busybox-static",
    // /bin/sh. Debian builds busybox's ash "standalone": it runs its own
    // applets before searching PATH, so under ash `tc`, `ip` and `ping` would
    // be busybox's (no netem, no unprivileged ping) whatever PATH says.
    "dash",
    "dropbear-bin",
    "libtomcrypt1",
    "libtommath1",
    "libgmp10",
    "iproute2",
    "libbpf1",
    "libelf1",
    "libmnl0",
    "libbsd0",
    "libmd0",
    "libcap2",
    "libxtables12",
    // ping for unprivileged users (ICMP datagram sockets); busybox's needs root.
    "iputils-ping",
    "libidn2-0",
    "libunistring2",
];

/// Debian multiarch triplet: the image is for x86_64 guests only.
pub(crate) const MULTIARCH: &str = "x86_64-linux-gnu";

/// How a kernel module is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ModuleUse {
    /// insmod'ed at boot, in this order; the build fails if it is neither a .ko nor built in.
    BootRequired,
    /// insmod'ed at boot when the kernel has it (ACPI power button).
    BootOptional,
    /// Shipped (with its dependencies) for `modprobe`/autoload when the kernel has it.
    ShipOptional,
    /// Shipped as `ShipOptional`, and loaded by name (`/etc/mkh/modules.node`) when the guest
    /// is a Kubernetes node: the kernel asks for netfilter matches by alias (`ipt_addrtype`),
    /// which the guest's modprobe does not resolve.
    Node,
}

/// Kernel modules, in boot order. virtio is modular in Debian's kernels and
/// probes NICs asynchronously; `/init` waits for the interfaces afterwards.
pub(crate) const MODULES: &[(&str, ModuleUse)] = &[
    ("virtio_ring", ModuleUse::BootRequired),
    ("virtio", ModuleUse::BootRequired),
    ("virtio_pci_modern_dev", ModuleUse::BootRequired),
    ("virtio_pci_legacy_dev", ModuleUse::BootRequired),
    ("virtio_pci", ModuleUse::BootRequired),
    ("failover", ModuleUse::BootRequired),
    ("net_failover", ModuleUse::BootRequired),
    ("virtio_net", ModuleUse::BootRequired),
    ("virtio-rng", ModuleUse::BootRequired),
    // ACPI power button -> input event -> busybox acpid.
    ("button", ModuleUse::BootOptional),
    ("evdev", ModuleUse::BootOptional),
    // Network emulation inside the guest (tc autoloads them via modprobe).
    ("sch_netem", ModuleUse::ShipOptional),
    ("sch_tbf", ModuleUse::ShipOptional),
    ("sch_htb", ModuleUse::ShipOptional),
    ("sch_prio", ModuleUse::ShipOptional),
    ("sch_ingress", ModuleUse::ShipOptional),
    ("ifb", ModuleUse::ShipOptional),
    ("cls_u32", ModuleUse::ShipOptional),
    ("cls_matchall", ModuleUse::ShipOptional),
    ("act_mirred", ModuleUse::ShipOptional),
    // `action drop` of tc filters (scenario blocks).
    ("act_gact", ModuleUse::ShipOptional),
    // A Kubernetes node (mkh.node=1): its disks, the overlay root and docker's storage, pod
    // networking (bridges, veths), and the netfilter that docker and kube-proxy program.
    ("virtio_blk", ModuleUse::ShipOptional),
    ("overlay", ModuleUse::ShipOptional),
    ("br_netfilter", ModuleUse::Node),
    ("veth", ModuleUse::Node),
    ("nf_conntrack_netlink", ModuleUse::Node),
    ("iptable_filter", ModuleUse::Node),
    ("iptable_nat", ModuleUse::Node),
    ("iptable_mangle", ModuleUse::Node),
    ("iptable_raw", ModuleUse::Node),
    ("ipt_REJECT", ModuleUse::Node),
    ("ip6table_filter", ModuleUse::Node),
    ("ip6table_nat", ModuleUse::Node),
    ("ip6table_mangle", ModuleUse::Node),
    ("ip6table_raw", ModuleUse::Node),
    ("ip6t_REJECT", ModuleUse::Node),
    ("xt_conntrack", ModuleUse::Node),
    ("xt_MASQUERADE", ModuleUse::Node),
    ("xt_addrtype", ModuleUse::Node),
    ("xt_comment", ModuleUse::Node),
    ("xt_mark", ModuleUse::Node),
    ("xt_multiport", ModuleUse::Node),
    ("xt_nat", ModuleUse::Node),
    ("xt_statistic", ModuleUse::Node),
    ("xt_recent", ModuleUse::Node),
    ("xt_tcpudp", ModuleUse::Node),
    ("xt_limit", ModuleUse::Node),
    ("xt_physdev", ModuleUse::Node),
];

/// A file written verbatim into the initramfs.
pub(crate) struct Asset {
    pub(crate) path: &'static str,
    pub(crate) mode: u32,
    pub(crate) content: &'static str,
}

/// Guest files. The scripts live in this crate's `assets/`; the small
/// configuration files are inline.
pub(crate) const ASSETS: &[Asset] = &[
    Asset {
        path: "init",
        mode: 0o755,
        content: include_str!("../assets/init"),
    },
    Asset {
        path: "etc/mkh/dhcp-event",
        mode: 0o755,
        content: include_str!("../assets/dhcp-event"),
    },
    Asset {
        path: "etc/mkh/node-root",
        mode: 0o644,
        content: include_str!("../assets/node-root"),
    },
    Asset {
        path: "etc/mkh/node-start",
        mode: 0o755,
        content: include_str!("../assets/node-start"),
    },
    Asset {
        path: "etc/acpi/PWRF/00000080",
        mode: 0o755,
        content: include_str!("../assets/power-button"),
    },
    Asset {
        path: "etc/passwd",
        mode: 0o644,
        content: "root:x:0:0:root:/root:/bin/sh\n\
                  docker:x:1000:1000:docker:/home/docker:/bin/sh\n",
    },
    // "*": no password can ever match; dropbear only needs a non-empty field.
    Asset {
        path: "etc/shadow",
        mode: 0o600,
        content: "root:*:19000:0:99999:7:::\ndocker:*:19000:0:99999:7:::\n",
    },
    Asset {
        path: "etc/group",
        mode: 0o644,
        content: "root:x:0:\ntty:x:5:\ndocker:x:1000:\n",
    },
    // dropbear only lets in users whose shell is listed here.
    Asset {
        path: "etc/shells",
        mode: 0o644,
        content: "/bin/sh\n/usr/bin/sh\n/bin/dash\n/usr/bin/dash\n",
    },
    Asset {
        path: "etc/profile",
        mode: 0o644,
        content: "export PATH=/usr/bin:/bin:/usr/sbin:/sbin\n",
    },
    // Read by busybox init after /init execs it: nothing to start, only a clean
    // shutdown on `poweroff` (SIGUSR2) and Ctrl-Alt-Del.
    Asset {
        path: "etc/inittab",
        mode: 0o644,
        content: "::ctrlaltdel:/bin/poweroff\n::shutdown:/bin/echo mkh-guest: powering off\n",
    },
];

/// Binaries taken from the unpacked packages: (candidate paths in the
/// packages, first existing wins (Debian is moving files to /usr), path in the
/// guest, mode). Their shared libraries are added with `ldd`.
pub(crate) const BINARIES: &[(&[&str], &str, u32)] = &[
    (&["bin/dash", "usr/bin/dash"], "usr/bin/dash", 0o755),
    (
        &["usr/sbin/dropbear", "sbin/dropbear"],
        "usr/bin/dropbear",
        0o755,
    ),
    (&["usr/bin/dropbearkey"], "usr/bin/dropbearkey", 0o755),
    (
        &["usr/bin/dropbearconvert"],
        "usr/bin/dropbearconvert",
        0o755,
    ),
    (&["usr/bin/dbclient"], "usr/bin/dbclient", 0o755),
    // setuid root: user docker may change links and qdiscs (test VM, no sudo).
    (
        &["bin/ip", "usr/bin/ip", "sbin/ip", "usr/sbin/ip"],
        "usr/bin/ip",
        0o4755,
    ),
    (&["sbin/tc", "usr/sbin/tc"], "usr/bin/tc", 0o4755),
    (&["bin/ping", "usr/bin/ping"], "usr/bin/ping", 0o755),
];

/// Symlinks created in the guest before busybox's applet links (which never
/// replace an existing name).
pub(crate) const LINKS: &[(&str, &str)] = &[("usr/bin/sh", "dash")];

/// Where busybox lives in busybox-static, and where tc finds netem's tables.
pub(crate) const BUSYBOX: &[&str] = &["bin/busybox", "usr/bin/busybox"];
pub(crate) const TC_DIST_DIR: &str = "usr/lib/x86_64-linux-gnu/tc";

/// The recipe digest: SHA-256 of [`recipe_manifest`].
pub(crate) fn recipe_digest() -> String {
    sha256_hex(recipe_manifest().as_bytes())
}

/// The recipe: everything this crate decides, without package versions.
pub(crate) fn recipe_manifest() -> String {
    manifest_text(None)
}

/// The full digest input: the recipe plus the exact package versions.
pub(crate) fn image_manifest(packages: &Packages) -> String {
    manifest_text(Some(packages))
}

fn manifest_text(packages: Option<&Packages>) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "format {FORMAT}");
    let _ = writeln!(m, "kernel-meta {KERNEL_META_PACKAGE}");
    match packages {
        Some(p) => {
            let _ = writeln!(m, "kernel {}", p.kernel);
            for (name, version) in &p.versions {
                let _ = writeln!(m, "package {name} {version}");
            }
        }
        None => {
            for name in PACKAGES {
                let _ = writeln!(m, "package {name}");
            }
        }
    }
    for (name, usage) in MODULES {
        let _ = writeln!(m, "module {name} {usage:?}");
    }
    for (from, to, mode) in BINARIES {
        let _ = writeln!(m, "binary {} {to} {mode:o}", from.join("|"));
    }
    for (link, target) in LINKS {
        let _ = writeln!(m, "link {link} {target}");
    }
    for asset in ASSETS {
        let _ = writeln!(
            m,
            "asset {} {:o} {}",
            asset.path,
            asset.mode,
            sha256_hex(asset.content.as_bytes())
        );
    }
    m
}

/// SHA-256 as lowercase hex.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn sample_packages(kernel_version: &str) -> Packages {
        let kernel = "linux-image-6.1.0-56-cloud-amd64".to_string();
        let mut versions: BTreeMap<String, String> = PACKAGES
            .iter()
            .map(|p| (p.to_string(), "1.0".to_string()))
            .collect();
        versions.insert(kernel.clone(), kernel_version.to_string());
        Packages { kernel, versions }
    }

    #[test]
    fn manifest_names_versions_modules_and_assets() {
        let m = image_manifest(&sample_packages("6.1.192-2"));
        assert!(m.starts_with(&format!("format {FORMAT}\n")));
        assert!(m.contains("kernel linux-image-6.1.0-56-cloud-amd64\n"));
        assert!(m.contains("package linux-image-6.1.0-56-cloud-amd64 6.1.192-2\n"));
        assert!(m.contains("package dropbear-bin 1.0\n"));
        assert!(m.contains("module virtio_net BootRequired\n"));
        assert!(m.contains("module sch_netem ShipOptional\n"));
        let init = format!(
            "asset init 755 {}\n",
            sha256_hex(ASSETS[0].content.as_bytes())
        );
        assert!(m.contains(&init));
        // The recipe has the same lines without versions.
        let r = recipe_manifest();
        assert!(r.contains("package dropbear-bin\n") && !r.contains("1.0") && r.contains(&init));
    }

    #[test]
    fn digest_changes_with_package_versions_only_in_the_image_manifest() {
        let a = sha256_hex(image_manifest(&sample_packages("6.1.192-2")).as_bytes());
        let b = sha256_hex(image_manifest(&sample_packages("6.1.193-1")).as_bytes());
        assert_ne!(a, b);
        assert_eq!(
            a,
            sha256_hex(image_manifest(&sample_packages("6.1.192-2")).as_bytes())
        );
        assert_eq!(recipe_manifest(), recipe_manifest());
    }

    #[test]
    fn init_script_reads_the_documented_parameters() {
        let init = ASSETS.iter().find(|a| a.path == "init").unwrap().content;
        assert!(init.starts_with("#!/bin/sh\n"));
        for needle in [
            "mkh.hostname=*",
            "mkh.authorized_key=*",
            "mkh.host_key=*",
            "/etc/mkh/modules.boot",
            "/etc/mkh/dhcp-event",
            "sshd ready",
        ] {
            assert!(init.contains(needle), "{needle}");
        }
        let dhcp = ASSETS
            .iter()
            .find(|a| a.path == "etc/mkh/dhcp-event")
            .unwrap()
            .content;
        assert!(dhcp.contains("log \"lease $interface $ip"));
    }
}
