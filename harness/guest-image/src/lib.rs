//! The test-guest image: one kernel + initramfs that every test VM boots.
//!
//! # Why one image, built by the harness itself
//!
//! Test VMs are throw-away and must boot fast under software emulation (TCG), so
//! the guest is as small as it gets: Debian's cloud kernel booted directly
//! (`<kernel>`/`<initrd>`/`<cmdline>` in the domain XML, no disk, no bootloader)
//! and an initramfs holding busybox, dropbear and a few kernel modules. It is
//! built from Debian packages on first use (`apt-get download`, `dpkg-deb -x`,
//! busybox's `cpio -o -H newc`, uncompressed) so that no binary blob has to live in
//! the repository and every machine with Debian's mirrors can rebuild it.
//!
//! Everything that differs between machines rides on the kernel command line
//! instead of in the image (see [`kernel_cmdline`]): the hostname, the test's own
//! SSH public key and the machine's SSH host key. Hence a single cached image
//! serves every test and every run; the host key stays the same across
//! restarts of one machine simply because the host passes the same key again.
//! The command line is visible to anyone on the host (`ps`) and in the guest
//! (`/proc/cmdline`): fine for throw-away test keys, never pass real secrets.
//!
//! # Cache layout
//!
//! ```text
//! <cache_dir>/guest/<digest>/vmlinuz          the kernel
//! <cache_dir>/guest/<digest>/initrd.img       the gzip'ed newc initramfs
//! <cache_dir>/guest/<digest>/manifest.txt     what went in (digest input + host libraries)
//! <cache_dir>/guest/recipe-<recipe digest>    names the <digest> last built for this recipe
//! <cache_dir>/guest/.build.lock               flock(2)ed by the one process building
//! ```
//!
//! `<digest>` is the SHA-256 of a manifest naming the exact `.deb` versions,
//! the kernel modules and every guest asset (the `/init` script, ...). An image
//! is built in `.build-*` beside its final place and renamed into place at
//! once, so a concurrent process either sees a complete image or none. Builds
//! take an advisory lock (`flock`) on `.build.lock`, so concurrent first uses
//! wait for one build instead of all building; the kernel releases the lock
//! when its holder exits or dies, so a crashed build never blocks the next
//! one, and any `.build-*` directory found while holding the lock is a
//! crashed build's leftover.
//!
//! The *recipe* digest covers the same manifest without package versions; it
//! depends only on this crate's recipe (`src/recipe.rs`) and its assets.
//! [`ensure_guest_image`] first follows `recipe-<recipe digest>` and, when
//! that image exists, returns it without running apt at all (a cached call
//! costs a few file lookups). Only when no image is known for this recipe does
//! it ask apt for the current candidate versions (local `apt-cache`, no
//! network), reuse a matching image or build one. Newer Debian packages are
//! thus picked up only by [`refresh_guest_image`] (or after deleting
//! `<cache_dir>/guest`): tests keep booting the very image they booted
//! yesterday until someone asks.
//!
//! # Where the cache may live
//!
//! Under `qemu:///system` QEMU runs as user `libvirt-qemu` and opens the kernel
//! and initrd itself, so every directory from `/` down to the image must be
//! searchable by others (`o+x`). `/root/...` (mode 0700) or a `tempfile` dir
//! (0700) fails at boot with "could not open kernel file ... Permission
//! denied"; [`ensure_guest_image`] refuses such a cache dir up front
//! ([`ImageError::CacheNotReachable`]) and creates its own directories 0755.
//!
//! # The guest
//!
//! See this crate's `assets/init` for the boot sequence. The user `docker`
//! (uid/gid 1000, home `/home/docker`, shell `/bin/sh`) logs in with the key
//! from the command line; password logins and root logins are off. `/bin/sh`
//! is dash, busybox provides the other tools, iputils' `ping` works for
//! `docker` (unprivileged ICMP sockets), and iproute2's `ip` and `tc` are
//! installed setuid root so that `docker` can shape its own links
//! (`tc qdisc add dev eth0 root netem delay 100ms`); there is no sudo. The
//! qdisc modules (`sch_netem`, ...) are shipped unloaded and autoloaded by the
//! kernel through busybox `modprobe`. Console progress lines start with
//! `mkh-guest: `: `mkh-guest: sshd ready at 2.1s`,
//! `mkh-guest: lease eth0 10.1.2.3 52:54:00:12:34:56 at 2.3s` (interface,
//! address, MAC, the guest's uptime), `mkh-guest: boot done in 5.2s`,
//! `mkh-guest: warm: waiting`, `mkh-guest: ERROR ...`.
//!
//! # Booting it (what the domain XML needs)
//!
//! `<os>` with `<kernel>`, `<initrd>` and `<cmdline>` from [`kernel_cmdline`];
//! virtio NICs (only virtio PCI NICs are waited for and get DHCP; the
//! default route goes via the first NIC whose lease offers a router);
//! a serial port (`console=ttyS0`): with libvirt's default virtlogd both
//! `<serial type='file'>` and `<serial type='pty'><log file=.../>` are
//! written by virtlogd as root (0600), so only the kernel and initrd need to
//! be QEMU-readable; `<rng model='virtio'>` (entropy for dropbear at once);
//! `<features><acpi/></features>` so that `virsh shutdown` (ACPI power
//! button) powers the guest off cleanly in a few seconds; without it the
//! button does nothing. Leases come fastest when the network's dnsmasq has
//! `no-ping` (otherwise it pings each address ~3 s before offering it).
//!
//! # Inside this crate
//!
//! `recipe` says what goes into the image and computes the digests'
//! manifests; `packages` asks apt for versions and downloads them; `stage`
//! lays out the guest's root (binaries, `ldd`'s libraries, assets);
//! `modules` picks the kernel modules and their load order; `pack` writes the
//! initramfs; `cache` owns the cache directory, the recipe markers and the
//! build lock; `build` runs a build from start to publication.

#![warn(missing_docs)]

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod build;
mod cache;
mod cmdline;
mod command;
mod files;
mod modules;
mod node;
mod pack;
mod packages;
mod recipe;
mod stage;

/// A built guest image. Both paths are absolute and readable by QEMU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestImage {
    /// The kernel, for `<kernel>` in the domain XML.
    pub kernel: PathBuf,
    /// The initramfs, for `<initrd>`.
    pub initrd: PathBuf,
    /// Content digest (64 hex digits): the name of the image's directory.
    pub digest: String,
}

/// Why the guest image could not be built, found or described.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// QEMU's user could not open an image in this cache dir.
    #[error(
        "guest image cache {path}: QEMU's user (libvirt-qemu) cannot traverse {blocker} \
         (mode {mode:04o}, needs o+x); pick a cache dir every parent of which is world-searchable, \
         e.g. /var/tmp/mkh or /var/cache/mkh (not under /root, not a mode-0700 temp dir)"
    )]
    CacheNotReachable {
        /// The cache dir asked for (absolute).
        path: PathBuf,
        /// The first directory on the way that others cannot search.
        blocker: PathBuf,
        /// Its permission bits.
        mode: u32,
    },

    /// A file system operation failed.
    #[error("guest image: could not {action} {path}: {source}")]
    Io {
        /// What was being done, e.g. "create directory".
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// A tool could not be started at all.
    #[error(
        "guest image: could not run `{command}`: {source}; install the Debian package {package}"
    )]
    Spawn {
        /// The command line, shortened.
        command: String,
        /// The Debian package that ships the tool.
        package: &'static str,
        /// Why it did not start.
        #[source]
        source: io::Error,
    },

    /// A tool ran and failed.
    #[error("guest image: `{command}` failed ({status}): {stderr}; {hint}")]
    CommandFailed {
        /// The command line, shortened.
        command: String,
        /// Its exit status.
        status: String,
        /// The end of its standard error.
        stderr: String,
        /// What to do about it.
        hint: &'static str,
    },

    /// apt knows no installable version of a package.
    #[error(
        "guest image: apt has no installable version of {package} (saw {seen:?}); \
         run `apt-get update` and check that Debian's main component is in the apt sources"
    )]
    PackageUnavailable {
        /// The package.
        package: String,
        /// What apt said about it.
        seen: String,
    },

    /// The kernel metapackage names no versioned kernel package.
    #[error(
        "guest image: found no versioned kernel package among the dependencies of {meta} \
         (`apt-cache depends {meta}` printed {seen:?}); run `apt-get update`"
    )]
    KernelPackage {
        /// The metapackage.
        meta: &'static str,
        /// apt's output, shortened.
        seen: String,
    },

    /// A kernel module the guest needs is missing from the kernel package.
    #[error(
        "guest image: kernel module {module} is neither a .ko in {package} nor built in \
         (modules.builtin); without it the guest has no network: the kernel flavour changed, \
         update the module list in harness/guest-image/src/recipe.rs"
    )]
    MissingModule {
        /// The module.
        module: String,
        /// The kernel package searched.
        package: String,
    },

    /// A kernel module file could not be read as an ELF module.
    #[error("guest image: cannot read the module info of {path}: {problem}")]
    BadModule {
        /// The `.ko` file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },

    /// A binary needs a shared library that nothing provides.
    #[error(
        "guest image: {binary} needs {library}, found neither in the downloaded packages nor \
         on this host (ldd: not found); install the Debian package that ships {library}"
    )]
    MissingLibrary {
        /// The binary, relative to the unpacked packages.
        binary: String,
        /// The library's soname.
        library: String,
    },

    /// An expected file is not in the unpacked packages.
    #[error(
        "guest image: expected {what} at {path} in the unpacked packages, found nothing; \
         the Debian package layout changed: update harness/guest-image/src/recipe.rs"
    )]
    MissingFile {
        /// What was looked for.
        what: &'static str,
        /// Where (the first candidate path).
        path: PathBuf,
    },

    /// Another process held the build lock for too long.
    #[error(
        "guest image: waited {waited:?} for another process building the image, which holds \
         the lock {lock} (`fuser -v {lock}` or `lslocks` names it); the lock is released when \
         that build ends or dies, so retry later or stop that process"
    )]
    LockTimeout {
        /// The lock file.
        lock: PathBuf,
        /// How long this process waited.
        waited: Duration,
    },

    /// A boot parameter for [`kernel_cmdline`] is unusable.
    #[error("guest boot parameter {name}: {problem} (got {seen:?})")]
    BootParam {
        /// Which [`BootParams`] field.
        name: &'static str,
        /// The value, shortened.
        seen: String,
        /// What is wrong with it.
        problem: &'static str,
    },
}

type Result<T, E = ImageError> = std::result::Result<T, E>;

/// Name of the kernel file inside an image directory.
pub const KERNEL_FILE: &str = "vmlinuz";
/// Name of the initramfs file inside an image directory.
pub const INITRD_FILE: &str = "initrd.img";

/// Builds (once) or reuses the cached guest image under `cache_dir`.
///
/// `cache_dir` must be reachable by QEMU's user: every existing component of
/// its path must be world-searchable; missing components are created 0755.
/// A cached image of this recipe is returned without running apt; otherwise
/// see [`refresh_guest_image`].
pub fn ensure_guest_image(cache_dir: &Path) -> Result<GuestImage, ImageError> {
    let guest_dir = cache::prepare_cache_dir(cache_dir)?;
    let recipe = recipe::recipe_digest();
    if let Some(image) = cache::lookup_recipe(&guest_dir, &recipe) {
        return Ok(image);
    }
    build::refresh_in(&guest_dir, &recipe)
}

/// Checks, creating nothing, that QEMU's user could reach images under `cache_dir` (the
/// directories that exist must be world-searchable; the missing ones would be made 0755).
pub fn cache_dir_reachable(cache_dir: &Path) -> Result<(), ImageError> {
    cache::reachable_without_creating(cache_dir)
}

/// The Debian packages a build would fetch, name and version, as apt's local index offers
/// them (no network, nothing built): whether the image can be built here.
pub fn buildable_packages() -> Result<Vec<(String, String)>, ImageError> {
    packages::resolve_packages().map(|p| p.versions.into_iter().collect())
}

/// The image of the current recipe, if one is cached under `cache_dir` (nothing is created).
pub fn cached_guest_image(cache_dir: &Path) -> Option<GuestImage> {
    cache::lookup_recipe(&cache_dir.join("guest"), &recipe::recipe_digest())
}

/// Asks apt (locally, `apt-cache`) for the current package versions and builds
/// an image for them unless one exists; makes it the image that
/// [`ensure_guest_image`] returns from now on. Use after `apt-get update` to
/// pick up a new Debian kernel.
pub fn refresh_guest_image(cache_dir: &Path) -> Result<GuestImage, ImageError> {
    let guest_dir = cache::prepare_cache_dir(cache_dir)?;
    build::refresh_in(&guest_dir, &recipe::recipe_digest())
}

pub use node::NodeBundle;

/// Builds (once) or reuses the node bundle for the Kubernetes binaries in `kubernetes` (the
/// directory `harness/scripts/build-kubernetes.sh` prints): a read-only ext4 disk image with
/// the container runtime, etcd, the CNI plugins, iptables and Kubernetes, which every node VM
/// attaches (read-only, shared) and boots with [`NODE_CMDLINE`] added to its command line.
/// Cached under `<cache_dir>/node/` as the guest image is under `guest/`; a cached bundle is
/// returned without running apt. Building one takes about a minute and ~700 MB.
pub fn ensure_node_bundle(cache_dir: &Path, kubernetes: &Path) -> Result<NodeBundle, ImageError> {
    node::ensure(cache_dir, kubernetes)
}

/// Kernel command line words of a node VM, after [`kernel_cmdline`]'s: the guest moves its
/// root onto the node bundle (the disk labelled `mkh-node`) and starts the node's services
/// (the data disk, cgroups, dockerd); AppArmor is off, as nothing in the guest loads profiles.
pub const NODE_CMDLINE: &str = "mkh.node=1 apparmor=0";

/// Per-boot parameters of one machine, see [`kernel_cmdline`].
#[derive(Debug, Clone, Copy)]
pub struct BootParams<'a> {
    /// Hostname: 1-63 letters, digits and '-', not starting or ending with '-'.
    pub hostname: &'a str,
    /// One OpenSSH public key line (`ssh-ed25519 AAAA... comment`) for user docker.
    pub authorized_key: &'a str,
    /// The machine's SSH host key: an OpenSSH-format private key file's text
    /// (`-----BEGIN OPENSSH PRIVATE KEY-----`...), ed25519 so that it fits on
    /// the command line. `None`: the guest generates a new key each boot.
    pub host_key: Option<&'a str>,
}

/// Builds the kernel command line for one boot:
/// `console=ttyS0 quiet mkh.hostname=<name> mkh.authorized_key=<base64> [mkh.host_key=<base64>]`.
///
/// The keys are base64 (standard alphabet, padded) so that they hold no
/// spaces; the `mkh.` prefix makes the kernel ignore them (module-parameter
/// syntax for a module that does not exist) while `/init` reads `/proc/cmdline`.
pub fn kernel_cmdline(params: &BootParams<'_>) -> Result<String, ImageError> {
    cmdline::kernel_cmdline(params)
}

/// The command line of a guest to be saved and restored (a warm start): it sets up what every
/// machine shares, prints `mkh-guest: warm: waiting` and then reads its identity from its second
/// serial port (ttyS1); see [`warm_identity_line`].
pub fn warm_cmdline() -> String {
    cmdline::warm_cmdline()
}

/// The line the host writes to a restored warm guest's second serial port: the same `mkh.*`
/// words as [`kernel_cmdline`], `mkh.macs=<mac>,<mac>` (the NICs' addresses in PCI order: the
/// saved guest's were another machine's) and `mkh.time=<unix seconds>` for its clock, ending in
/// a newline.
pub fn warm_identity_line(
    params: &BootParams<'_>,
    macs: &[&str],
    unix_time: u64,
) -> Result<String, ImageError> {
    cmdline::warm_identity_line(params, macs, unix_time)
}
