//! The test-guest image: one kernel + initramfs that every test VM boots.
//!
//! # Why one image, built by the harness itself
//!
//! Test VMs are throw-away and must boot fast under software emulation (TCG), so
//! the guest is as small as it gets: Debian's cloud kernel booted directly
//! (`<kernel>`/`<initrd>`/`<cmdline>` in the domain XML, no disk, no bootloader)
//! and an initramfs holding busybox, dropbear and a few kernel modules. It is
//! built from Debian packages on first use (`apt-get download`, `dpkg-deb -x`,
//! busybox's `cpio -o -H newc` | `gzip`) so that no binary blob has to live in
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
//! ```
//!
//! `<digest>` is the SHA-256 of a manifest naming the exact `.deb` versions,
//! the kernel modules and every guest asset (the `/init` script, ...). An image
//! is built in `.build-*` beside its final place and renamed into place at
//! once, so a concurrent process either sees a complete image or none; a lock
//! file makes concurrent first uses wait for one build instead of all building.
//!
//! The *recipe* digest covers the same manifest without package versions; it
//! depends only on this source file and its assets. [`ensure_guest_image`]
//! first follows `recipe-<recipe digest>` and, when that image exists, returns
//! it without running apt at all (a cached call costs a few file lookups).
//! Only when no image is known for this recipe does it ask apt for the current
//! candidate versions (local `apt-cache`, no network), reuse a matching image
//! or build one. Newer Debian packages are thus picked up only by
//! [`refresh_guest_image`] (or after deleting `<cache_dir>/guest`): tests keep
//! booting the very image they booted yesterday until someone asks.
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
//! See `harness/assets/guest/init` for the boot sequence. The user `docker`
//! (uid/gid 1000, home `/home/docker`, shell `/bin/sh`) logs in with the key
//! from the command line; password logins and root logins are off. `/bin/sh`
//! is dash, busybox provides the other tools, iputils' `ping` works for
//! `docker` (unprivileged ICMP sockets), and iproute2's `ip` and `tc` are
//! installed setuid root so that `docker` can shape its own links
//! (`tc qdisc add dev eth0 root netem delay 100ms`); there is no sudo. The
//! qdisc modules (`sch_netem`, ...) are shipped unloaded and autoloaded by the
//! kernel through busybox `modprobe`. Console progress lines start with
//! `mkh-guest: `: `mkh-guest: sshd ready`,
//! `mkh-guest: lease eth0 10.1.2.3 52:54:00:12:34:56` (interface, address,
//! MAC), `mkh-guest: boot done in 5.2s`, `mkh-guest: ERROR ...`.
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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{symlink, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

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
    #[error(
        "guest image cache {path}: QEMU's user (libvirt-qemu) cannot traverse {blocker} \
         (mode {mode:04o}, needs o+x); pick a cache dir every parent of which is world-searchable, \
         e.g. /var/tmp/mkh or /var/cache/mkh (not under /root, not a mode-0700 temp dir)"
    )]
    CacheNotReachable {
        path: PathBuf,
        blocker: PathBuf,
        mode: u32,
    },

    #[error("guest image: could not {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "guest image: could not run `{command}`: {source}; install the Debian package {package}"
    )]
    Spawn {
        command: String,
        package: &'static str,
        #[source]
        source: io::Error,
    },

    #[error("guest image: `{command}` failed ({status}): {stderr}; {hint}")]
    CommandFailed {
        command: String,
        status: String,
        stderr: String,
        hint: &'static str,
    },

    #[error(
        "guest image: apt has no installable version of {package} (saw {seen:?}); \
         run `apt-get update` and check that Debian's main component is in the apt sources"
    )]
    PackageUnavailable { package: String, seen: String },

    #[error(
        "guest image: found no versioned kernel package among the dependencies of {meta} \
         (`apt-cache depends {meta}` printed {seen:?}); run `apt-get update`"
    )]
    KernelPackage { meta: &'static str, seen: String },

    #[error(
        "guest image: kernel module {module} is neither a .ko in {package} nor built in \
         (modules.builtin); without it the guest has no network: the kernel flavour changed, \
         update the module list in image.rs"
    )]
    MissingModule { module: String, package: String },

    #[error("guest image: cannot read the module info of {path}: {problem}")]
    BadModule { path: PathBuf, problem: String },

    #[error(
        "guest image: {binary} needs {library}, found neither in the downloaded packages nor \
         on this host (ldd: not found); install the Debian package that ships {library}"
    )]
    MissingLibrary { binary: String, library: String },

    #[error(
        "guest image: expected {what} at {path} in the unpacked packages, found nothing; \
         the Debian package layout changed: update image.rs"
    )]
    MissingFile { what: &'static str, path: PathBuf },

    #[error(
        "guest image: waited {waited:?} for another process (pid {pid}) building the image \
         (lock {lock}); if no such build runs, delete the lock file"
    )]
    LockTimeout {
        lock: PathBuf,
        pid: String,
        waited: Duration,
    },

    #[error("guest boot parameter {name}: {problem} (got {seen:?})")]
    BootParam {
        name: &'static str,
        seen: String,
        problem: &'static str,
    },
}

type Result<T, E = ImageError> = std::result::Result<T, E>;

// ---------------------------------------------------------------------------
// What goes into the image
// ---------------------------------------------------------------------------

/// Bump when the build code changes what ends up in the image: it is part of
/// the digest, so old cached images are then simply no longer used.
const FORMAT: &str = "mkh-guest-image/1";

/// Metapackage whose dependency names the versioned kernel package.
const KERNEL_META_PACKAGE: &str = "linux-image-cloud-amd64";

/// Packages downloaded besides the kernel: the tools and the libraries they
/// need beyond Debian's base system. libc, libm, libz and libcrypt (all
/// `Priority: required`) are copied from the host with `ldd` instead: the
/// host runs the same Debian release, so they are ABI-compatible by
/// construction.
const PACKAGES: &[&str] = &[
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
const MULTIARCH: &str = "x86_64-linux-gnu";

/// How a kernel module is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ModuleUse {
    /// insmod'ed at boot, in this order; the build fails if it is neither a .ko nor built in.
    BootRequired,
    /// insmod'ed at boot when the kernel has it (ACPI power button).
    BootOptional,
    /// Shipped (with its dependencies) for `modprobe`/autoload when the kernel has it.
    ShipOptional,
}

/// Kernel modules, in boot order. virtio is modular in Debian's kernels and
/// probes NICs asynchronously; `/init` waits for the interfaces afterwards.
const MODULES: &[(&str, ModuleUse)] = &[
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
];

/// A file written verbatim into the initramfs.
struct Asset {
    path: &'static str,
    mode: u32,
    content: &'static str,
}

/// Guest files. The scripts live in `harness/assets/guest/`; the small
/// configuration files are inline.
const ASSETS: &[Asset] = &[
    Asset {
        path: "init",
        mode: 0o755,
        content: include_str!("../../assets/guest/init"),
    },
    Asset {
        path: "etc/mkh/dhcp-event",
        mode: 0o755,
        content: include_str!("../../assets/guest/dhcp-event"),
    },
    Asset {
        path: "etc/acpi/PWRF/00000080",
        mode: 0o755,
        content: include_str!("../../assets/guest/power-button"),
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
const BINARIES: &[(&[&str], &str, u32)] = &[
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
const LINKS: &[(&str, &str)] = &[("usr/bin/sh", "dash")];

/// Where busybox lives in busybox-static, and where tc finds netem's tables.
const BUSYBOX: &[&str] = &["bin/busybox", "usr/bin/busybox"];
const TC_DIST_DIR: &str = "usr/lib/x86_64-linux-gnu/tc";

/// File names inside an image directory.
pub const KERNEL_FILE: &str = "vmlinuz";
pub const INITRD_FILE: &str = "initrd.img";
const MANIFEST_FILE: &str = "manifest.txt";

/// How long a process waits for another one's build before giving up, and
/// after which age a lock counts as stale even if its pid looks alive.
const LOCK_WAIT: Duration = Duration::from_secs(15 * 60);
const LOCK_STALE: Duration = Duration::from_secs(30 * 60);

// ---------------------------------------------------------------------------
// Public entry points
// ---------------------------------------------------------------------------

/// Builds (once) or reuses the cached guest image under `cache_dir`.
///
/// `cache_dir` must be reachable by QEMU's user: every existing component of
/// its path must be world-searchable; missing components are created 0755.
/// A cached image of this recipe is returned without running apt; otherwise
/// see [`refresh_guest_image`].
pub fn ensure_guest_image(cache_dir: &Path) -> Result<GuestImage> {
    let guest_dir = prepare_cache_dir(cache_dir)?;
    let recipe = sha256_hex(recipe_manifest().as_bytes());
    if let Some(image) = lookup_recipe(&guest_dir, &recipe) {
        return Ok(image);
    }
    refresh_in(&guest_dir, &recipe)
}

/// Asks apt (locally, `apt-cache`) for the current package versions and builds
/// an image for them unless one exists; makes it the image that
/// [`ensure_guest_image`] returns from now on. Use after `apt-get update` to
/// pick up a new Debian kernel.
pub fn refresh_guest_image(cache_dir: &Path) -> Result<GuestImage> {
    let guest_dir = prepare_cache_dir(cache_dir)?;
    let recipe = sha256_hex(recipe_manifest().as_bytes());
    refresh_in(&guest_dir, &recipe)
}

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

/// The kernel's limit for the whole command line on x86 (COMMAND_LINE_SIZE,
/// including the terminating NUL).
const CMDLINE_MAX: usize = 2048;

/// Builds the kernel command line for one boot:
/// `console=ttyS0 mkh.hostname=<name> mkh.authorized_key=<base64> [mkh.host_key=<base64>]`.
///
/// The keys are base64 (standard alphabet, padded) so that they hold no
/// spaces; the `mkh.` prefix makes the kernel ignore them (module-parameter
/// syntax for a module that does not exist) while `/init` reads `/proc/cmdline`.
pub fn kernel_cmdline(params: &BootParams<'_>) -> Result<String> {
    validate_hostname(params.hostname)?;
    let key = params.authorized_key.trim_end_matches(['\n', '\r']);
    let key_ok = !key.is_empty()
        && !key.contains(['\n', '\r'])
        && ["ssh-", "ecdsa-", "sk-"].iter().any(|p| key.starts_with(p));
    if !key_ok {
        return Err(ImageError::BootParam {
            name: "authorized_key",
            seen: shorten(key, 60),
            problem: "expected one OpenSSH public key line, e.g. `ssh-ed25519 AAAA... comment`",
        });
    }
    let mut line = format!(
        "console=ttyS0 mkh.hostname={} mkh.authorized_key={}",
        params.hostname,
        base64_encode(format!("{key}\n").as_bytes())
    );
    if let Some(host_key) = params.host_key {
        if !host_key.contains("-----BEGIN OPENSSH PRIVATE KEY-----") {
            return Err(ImageError::BootParam {
                name: "host_key",
                seen: shorten(host_key, 40),
                problem: "expected an OpenSSH-format private key (`ssh-keygen -t ed25519`)",
            });
        }
        line.push_str(" mkh.host_key=");
        line.push_str(&base64_encode(host_key.as_bytes()));
    }
    if line.len() >= CMDLINE_MAX {
        return Err(ImageError::BootParam {
            name: "host_key",
            seen: format!("{} bytes of command line", line.len()),
            problem: "the kernel command line is limited to 2047 bytes: use ed25519 keys",
        });
    }
    Ok(line)
}

fn validate_hostname(name: &str) -> Result<()> {
    let ok = (1..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ImageError::BootParam {
            name: "hostname",
            seen: shorten(name, 80),
            problem: "expected 1-63 letters, digits and '-', not starting or ending with '-'",
        })
    }
}

fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

// ---------------------------------------------------------------------------
// Cache directory, recipe marker and locking
// ---------------------------------------------------------------------------

/// Checks that QEMU's user can reach `cache_dir`, creates it and its `guest`
/// subdirectory (0755) and returns the absolute `guest` path.
fn prepare_cache_dir(cache_dir: &Path) -> Result<PathBuf> {
    let abs = if cache_dir.is_absolute() {
        cache_dir.to_path_buf()
    } else {
        let cwd = std::env::current_dir()
            .map_err(|e| io_err("determine the current directory", ".", e))?;
        cwd.join(cache_dir)
    };
    // Check the part that exists (through its real path: a symlink's target
    // directories are what QEMU traverses), then create the rest 0755.
    let mut existing = abs.as_path();
    let mut missing = Vec::new();
    while !existing.exists() {
        missing.push(existing.to_path_buf());
        existing = existing.parent().unwrap_or(Path::new("/"));
    }
    let real = fs::canonicalize(existing).map_err(|e| io_err("resolve", existing, e))?;
    for dir in real.ancestors() {
        let meta = fs::metadata(dir).map_err(|e| io_err("stat", dir, e))?;
        if !qemu_can_traverse(meta.mode()) {
            return Err(ImageError::CacheNotReachable {
                path: abs.clone(),
                blocker: dir.to_path_buf(),
                mode: meta.mode() & 0o7777,
            });
        }
    }
    missing.reverse();
    let guest_dir = abs.join("guest");
    missing.push(guest_dir.clone());
    for dir in &missing {
        make_dir_0755(dir)?;
    }
    // `guest` may predate us (made by someone else, with another umask).
    let mode = fs::metadata(&guest_dir)
        .map_err(|e| io_err("stat", &guest_dir, e))?
        .mode();
    if !qemu_can_traverse(mode) {
        return Err(ImageError::CacheNotReachable {
            path: abs,
            blocker: guest_dir,
            mode: mode & 0o7777,
        });
    }
    Ok(guest_dir)
}

/// QEMU runs as an unrelated user: only the "others" search bit counts. (A
/// directory owned by libvirt-qemu's group would also do; refusing it is
/// the simple, explainable rule.)
fn qemu_can_traverse(mode: u32) -> bool {
    mode & 0o001 != 0
}

fn make_dir_0755(dir: &Path) -> Result<()> {
    match fs::create_dir(dir) {
        Ok(()) => set_mode(dir, 0o755),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(io_err("create directory", dir, e)),
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| io_err("chmod", path, e))
}

fn io_err(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> ImageError {
    ImageError::Io {
        action,
        path: path.into(),
        source,
    }
}

fn recipe_marker(guest_dir: &Path, recipe: &str) -> PathBuf {
    guest_dir.join(format!("recipe-{recipe}"))
}

/// The image last built for this recipe, if its marker and files exist.
fn lookup_recipe(guest_dir: &Path, recipe: &str) -> Option<GuestImage> {
    let digest = fs::read_to_string(recipe_marker(guest_dir, recipe)).ok()?;
    let digest = digest.trim();
    let valid = digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit());
    if !valid {
        return None;
    }
    complete_image(guest_dir, digest)
}

fn complete_image(guest_dir: &Path, digest: &str) -> Option<GuestImage> {
    let dir = guest_dir.join(digest);
    let image = GuestImage {
        kernel: dir.join(KERNEL_FILE),
        initrd: dir.join(INITRD_FILE),
        digest: digest.to_string(),
    };
    (image.kernel.is_file() && image.initrd.is_file()).then_some(image)
}

/// Writes the marker atomically (temp file + rename).
fn write_recipe_marker(guest_dir: &Path, recipe: &str, digest: &str) -> Result<()> {
    let marker = recipe_marker(guest_dir, recipe);
    let tmp = guest_dir.join(format!(".recipe-{}.{}", &recipe[..16], std::process::id()));
    fs::write(&tmp, format!("{digest}\n")).map_err(|e| io_err("write", &tmp, e))?;
    set_mode(&tmp, 0o644)?;
    fs::rename(&tmp, &marker).map_err(|e| io_err("rename into place", &marker, e))
}

fn refresh_in(guest_dir: &Path, recipe: &str) -> Result<GuestImage> {
    let packages = resolve_packages()?;
    let manifest = image_manifest(&packages);
    let digest = sha256_hex(manifest.as_bytes());
    let image = match complete_image(guest_dir, &digest) {
        Some(image) => image,
        None => {
            if let Some(_lock) = BuildLock::acquire(guest_dir, &digest)? {
                // Re-check under the lock: another process may have finished.
                if complete_image(guest_dir, &digest).is_none() {
                    build_image(guest_dir, &digest, &packages, &manifest)?;
                }
            }
            complete_image(guest_dir, &digest).ok_or_else(|| ImageError::MissingFile {
                what: "the image just built",
                path: guest_dir.join(&digest),
            })?
        }
    };
    write_recipe_marker(guest_dir, recipe, &digest)?;
    Ok(image)
}

/// A lock file `<guest>/.lock-<digest>` holding the builder's pid, removed on
/// drop. Only a courtesy against duplicate work: correctness comes from the
/// atomic rename of the finished image.
struct BuildLock {
    path: PathBuf,
}

impl BuildLock {
    /// Takes the lock, or returns `None` once the image exists (another
    /// process built it while we waited).
    fn acquire(guest_dir: &Path, digest: &str) -> Result<Option<BuildLock>> {
        let path = guest_dir.join(format!(".lock-{digest}"));
        let started = Instant::now();
        loop {
            if complete_image(guest_dir, digest).is_some() {
                return Ok(None);
            }
            let created = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&path);
            match created {
                Ok(mut file) => {
                    let _ = writeln!(file, "{}", std::process::id());
                    return Ok(Some(BuildLock { path }));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let pid = fs::read_to_string(&path)
                        .unwrap_or_default()
                        .trim()
                        .to_string();
                    if lock_is_stale(&path, &pid) {
                        // Two waiters may both remove it; worst case two builds
                        // run, and the rename keeps that harmless.
                        let _ = fs::remove_file(&path);
                        continue;
                    }
                    if started.elapsed() > LOCK_WAIT {
                        return Err(ImageError::LockTimeout {
                            lock: path,
                            pid,
                            waited: started.elapsed(),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
                Err(e) => return Err(io_err("create lock file", &path, e)),
            }
        }
    }
}

impl Drop for BuildLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

fn lock_is_stale(path: &Path, pid: &str) -> bool {
    if pid.is_empty() {
        // Being written right now, or written by a crashed process: judge by age.
        return file_age(path) > Duration::from_secs(10);
    }
    let alive = pid.bytes().all(|b| b.is_ascii_digit()) && Path::new("/proc").join(pid).exists();
    !alive || file_age(path) > LOCK_STALE
}

fn file_age(path: &Path) -> Duration {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or_default()
}

/// Removes a directory tree when dropped (the build's work dir, on every path).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------
// Manifests (digest input)
// ---------------------------------------------------------------------------

/// Exact package versions chosen for a build.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Packages {
    /// Versioned kernel package, e.g. `linux-image-6.1.0-56-cloud-amd64`.
    kernel: String,
    /// Package name -> version, the kernel included.
    versions: BTreeMap<String, String>,
}

impl Packages {
    /// `uname -r` of the kernel: its package name without `linux-image-`.
    fn kernel_release(&self) -> &str {
        self.kernel
            .strip_prefix("linux-image-")
            .unwrap_or(&self.kernel)
    }
}

/// The recipe: everything this source file decides, without package versions.
fn recipe_manifest() -> String {
    manifest_text(None)
}

/// The full digest input: the recipe plus the exact package versions.
fn image_manifest(packages: &Packages) -> String {
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

// ---------------------------------------------------------------------------
// apt
// ---------------------------------------------------------------------------

/// Resolves the kernel package and the candidate versions of all packages
/// (local apt metadata only, no download).
fn resolve_packages() -> Result<Packages> {
    let depends = run_stdout(
        Command::new("apt-cache").args(["depends", KERNEL_META_PACKAGE]),
        "apt",
        "run `apt-get update`",
    )?;
    let kernel = parse_kernel_dependency(&depends, KERNEL_META_PACKAGE).ok_or_else(|| {
        ImageError::KernelPackage {
            meta: KERNEL_META_PACKAGE,
            seen: shorten(depends.trim(), 400),
        }
    })?;
    let mut names: Vec<&str> = PACKAGES.to_vec();
    names.push(&kernel);
    let policy = run_stdout(
        Command::new("apt-cache").arg("policy").args(&names),
        "apt",
        "run `apt-get update`",
    )?;
    let candidates = parse_policy_candidates(&policy);
    let mut versions = BTreeMap::new();
    for name in names {
        match candidates.get(name) {
            Some(Some(version)) => {
                versions.insert(name.to_string(), version.clone());
            }
            Some(None) => {
                return Err(ImageError::PackageUnavailable {
                    package: name.into(),
                    seen: "Candidate: (none)".into(),
                })
            }
            None => {
                return Err(ImageError::PackageUnavailable {
                    package: name.into(),
                    seen: "not in `apt-cache policy` output".into(),
                })
            }
        }
    }
    Ok(Packages { kernel, versions })
}

/// From `apt-cache depends <meta>`, the first dependency that is a versioned
/// kernel image package (`Depends:` or an alternative `|Depends:`).
fn parse_kernel_dependency(output: &str, meta: &str) -> Option<String> {
    output.lines().find_map(|line| {
        let dep = line
            .trim()
            .trim_start_matches('|')
            .strip_prefix("Depends:")?
            .trim();
        let is_kernel = dep.starts_with("linux-image-") && dep != meta && !dep.starts_with('<');
        is_kernel.then(|| dep.to_string())
    })
}

/// From `apt-cache policy a b ...`: package -> candidate version (`None` for
/// "(none)").
fn parse_policy_candidates(output: &str) -> HashMap<String, Option<String>> {
    let mut result = HashMap::new();
    let mut current: Option<String> = None;
    for line in output.lines() {
        if !line.starts_with(char::is_whitespace) && line.ends_with(':') {
            // "name:" or, with several architectures, "name:amd64:".
            let name = line.trim_end_matches(':');
            let name = name.split(':').next().unwrap_or(name);
            current = Some(name.to_string());
        } else if let (Some(name), Some(candidate)) =
            (&current, line.trim().strip_prefix("Candidate:"))
        {
            let candidate = candidate.trim();
            let version =
                (candidate != "(none)" && !candidate.is_empty()).then(|| candidate.to_string());
            result.insert(name.clone(), version);
        }
    }
    result
}

// ---------------------------------------------------------------------------
// Running tools
// ---------------------------------------------------------------------------

/// Runs a command with the C locale (parsable output), returns its stdout;
/// a failure reports its stderr and what to do.
fn run_stdout(cmd: &mut Command, package: &'static str, hint: &'static str) -> Result<String> {
    cmd.env("LC_ALL", "C").env("LANG", "C").stdin(Stdio::null());
    let command = describe(cmd);
    let out = cmd.output().map_err(|source| ImageError::Spawn {
        command: command.clone(),
        package,
        source,
    })?;
    if !out.status.success() {
        return Err(ImageError::CommandFailed {
            command,
            status: out.status.to_string(),
            stderr: tail(&String::from_utf8_lossy(&out.stderr), 1500),
            hint,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    shorten(&s, 300)
}

fn tail(s: &str, max: usize) -> String {
    let s = s.trim();
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &s[start..])
}

// ---------------------------------------------------------------------------
// Building
// ---------------------------------------------------------------------------

/// Removes `.build-<digest16>-<pid>` work dirs whose process is gone (a build
/// killed half-way leaves one behind; a live builder's pid is still there).
fn remove_dead_work_dirs(guest_dir: &Path) {
    let Ok(entries) = fs::read_dir(guest_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(".build-")
            .and_then(|r| r.rsplit('-').next())
        else {
            continue;
        };
        let dead =
            pid.bytes().all(|b| b.is_ascii_digit()) && !Path::new("/proc").join(pid).exists();
        if dead {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn build_image(guest_dir: &Path, digest: &str, packages: &Packages, manifest: &str) -> Result<()> {
    remove_dead_work_dirs(guest_dir);
    let work = guest_dir.join(format!(".build-{}-{}", &digest[..16], std::process::id()));
    if work.exists() {
        fs::remove_dir_all(&work).map_err(|e| io_err("remove old work dir", &work, e))?;
    }
    make_dir_0755(&work)?;
    let _cleanup = RemoveOnDrop(work.clone());
    let debs = work.join("debs");
    let unpacked = work.join("unpacked");
    let root = work.join("root");
    let out = work.join("out");
    for dir in [&debs, &unpacked, &root, &out] {
        make_dir_0755(dir)?;
    }

    // Download exactly the versions the digest names.
    let pinned: Vec<String> = packages
        .versions
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    run_stdout(
        Command::new("apt-get").arg("download").args(&pinned).current_dir(&debs),
        "apt",
        "check the apt sources and run `apt-get update` (the exact version may have left the mirror)",
    )?;
    let mut deb_files: Vec<PathBuf> = read_dir_sorted(&debs)?
        .into_iter()
        .filter(|p| has_ext(p, "deb"))
        .collect();
    deb_files.sort();
    for deb in &deb_files {
        run_stdout(
            Command::new("dpkg-deb").arg("-x").arg(deb).arg(&unpacked),
            "dpkg",
            "the downloaded package may be damaged: retry",
        )?;
    }

    let host_libs = stage_root(&unpacked, &root, packages)?;

    let kernel_src = unpacked
        .join("boot")
        .join(format!("vmlinuz-{}", packages.kernel_release()));
    if !kernel_src.is_file() {
        return Err(ImageError::MissingFile {
            what: "the kernel",
            path: kernel_src,
        });
    }
    let kernel = out.join(KERNEL_FILE);
    fs::copy(&kernel_src, &kernel).map_err(|e| io_err("copy the kernel to", &kernel, e))?;
    set_mode(&kernel, 0o644)?;

    let initrd = out.join(INITRD_FILE);
    pack_initramfs(
        &find_unpacked(&unpacked, BUSYBOX, "busybox")?,
        &root,
        &initrd,
        &work,
    )?;
    set_mode(&initrd, 0o644)?;

    let mut manifest = manifest.to_string();
    for lib in &host_libs {
        let _ = writeln!(manifest, "host-library {lib}");
    }
    let manifest_path = out.join(MANIFEST_FILE);
    fs::write(&manifest_path, manifest).map_err(|e| io_err("write", &manifest_path, e))?;
    set_mode(&manifest_path, 0o644)?;

    // The moment of publication: atomic, so nobody sees half an image. If
    // another process won the race the target exists and ours is dropped.
    let target = guest_dir.join(digest);
    if let Err(e) = fs::rename(&out, &target) {
        if complete_image(guest_dir, digest).is_none() {
            return Err(io_err("move the built image to", &target, e));
        }
    }
    Ok(())
}

/// The first of `candidates` (paths relative to `unpacked`) that is a file.
fn find_unpacked(unpacked: &Path, candidates: &[&str], what: &'static str) -> Result<PathBuf> {
    candidates
        .iter()
        .map(|c| unpacked.join(c))
        .find(|p| p.is_file())
        .ok_or_else(|| ImageError::MissingFile {
            what,
            path: unpacked.join(candidates[0]),
        })
}

fn has_ext(path: &Path, ext: &str) -> bool {
    path.extension().is_some_and(|e| e == ext)
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io_err("list", dir, e))? {
        entries.push(entry.map_err(|e| io_err("list", dir, e))?.path());
    }
    entries.sort();
    Ok(entries)
}

/// Lays out the guest's root file system in `root`; returns the host
/// libraries copied in (for the manifest).
///
/// Layout: everything executable in `/usr/bin` with `/bin`, `/sbin` and
/// `/usr/sbin` pointing there (so any PATH, including dropbear's compiled-in
/// `/usr/bin:/bin`, finds every tool), libraries in `/usr/lib/<multiarch>`
/// with `/lib` and `/lib64` pointing into `/usr`.
fn stage_root(unpacked: &Path, root: &Path, packages: &Packages) -> Result<Vec<String>> {
    for dir in [
        "usr",
        "usr/bin",
        "usr/lib",
        "usr/lib64",
        "etc",
        "etc/mkh",
        "etc/acpi",
        "etc/acpi/PWRF",
    ] {
        make_dir_0755(&root.join(dir))?;
    }
    for dir in ["dev", "proc", "sys", "run", "home", "var", "var/log", "mnt"] {
        make_dir_0755(&root.join(dir))?;
    }
    make_dir_0755(&root.join(format!("usr/lib/{MULTIARCH}")))?;
    fs::create_dir(root.join("tmp")).map_err(|e| io_err("create", root.join("tmp"), e))?;
    set_mode(&root.join("tmp"), 0o1777)?;
    fs::create_dir(root.join("root")).map_err(|e| io_err("create", root.join("root"), e))?;
    set_mode(&root.join("root"), 0o700)?;
    for (link, target) in [
        ("bin", "usr/bin"),
        ("sbin", "usr/bin"),
        ("usr/sbin", "bin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
        ("var/run", "../run"),
    ] {
        symlink(target, root.join(link))
            .map_err(|e| io_err("create symlink", root.join(link), e))?;
    }

    // Binaries first, so that busybox's applet links do not shadow them.
    let mut dynamic = Vec::new();
    for (from, to, mode) in BINARIES {
        let src = find_unpacked(unpacked, from, "a binary")?;
        let dst = root.join(to);
        fs::copy(&src, &dst).map_err(|e| io_err("copy binary to", &dst, e))?;
        set_mode(&dst, *mode)?;
        dynamic.push(src);
    }
    let tc_dist = unpacked.join(TC_DIST_DIR);
    if tc_dist.is_dir() {
        let dst_dir = root.join(TC_DIST_DIR);
        make_dir_0755(&dst_dir)?;
        for file in read_dir_sorted(&tc_dist)? {
            let dst = dst_dir.join(file.file_name().unwrap_or_default());
            fs::copy(&file, &dst).map_err(|e| io_err("copy to", &dst, e))?;
            set_mode(&dst, 0o644)?;
        }
    }

    for (link, target) in LINKS {
        symlink(target, root.join(link))
            .map_err(|e| io_err("create symlink", root.join(link), e))?;
    }

    // busybox and one symlink per applet.
    let busybox = find_unpacked(unpacked, BUSYBOX, "busybox")?;
    let bb_dst = root.join("usr/bin/busybox");
    fs::copy(&busybox, &bb_dst).map_err(|e| io_err("copy busybox to", &bb_dst, e))?;
    set_mode(&bb_dst, 0o755)?;
    let applets = run_stdout(
        Command::new(&busybox).arg("--list"),
        "busybox-static",
        "busybox --list failed",
    )?;
    for applet in applets
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && !a.contains('/'))
    {
        let link = root.join("usr/bin").join(applet);
        if link.symlink_metadata().is_err() {
            symlink("busybox", &link).map_err(|e| io_err("create symlink", &link, e))?;
        }
    }

    let host_libs = copy_libraries(unpacked, root, &dynamic)?;
    stage_modules(unpacked, root, packages)?;

    for asset in ASSETS {
        let dst = root.join(asset.path);
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent).map_err(|e| io_err("create", parent, e))?;
        }
        fs::write(&dst, asset.content).map_err(|e| io_err("write", &dst, e))?;
        set_mode(&dst, asset.mode)?;
    }
    Ok(host_libs)
}

/// One line of `ldd` output.
#[derive(Debug, PartialEq, Eq)]
enum LddEntry {
    /// `name => /path (0x...)`
    Found { name: String, path: PathBuf },
    /// `name => not found`
    NotFound { name: String },
    /// `/lib64/ld-linux-x86-64.so.2 (0x...)`: the program interpreter.
    Interpreter { path: PathBuf },
}

/// Parses `ldd` output; the vDSO and "statically linked" yield nothing.
fn parse_ldd(output: &str) -> Vec<LddEntry> {
    let mut entries = Vec::new();
    for line in output.lines().map(str::trim) {
        if let Some((name, rest)) = line.split_once("=>") {
            let name = name.trim().to_string();
            let rest = rest.trim();
            if rest.starts_with("not found") {
                entries.push(LddEntry::NotFound { name });
            } else if let Some(path) = rest
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/'))
            {
                entries.push(LddEntry::Found {
                    name,
                    path: PathBuf::from(path),
                });
            }
        } else if line.starts_with('/') {
            if let Some(path) = line.split_whitespace().next() {
                entries.push(LddEntry::Interpreter {
                    path: PathBuf::from(path),
                });
            }
        }
    }
    entries
}

/// Copies the shared libraries of `binaries` (as `ldd` resolves them, first
/// in the unpacked packages, then on the host) into the guest. Returns the
/// host libraries used.
fn copy_libraries(unpacked: &Path, root: &Path, binaries: &[PathBuf]) -> Result<Vec<String>> {
    let lib_path = [format!("usr/lib/{MULTIARCH}"), format!("lib/{MULTIARCH}")]
        .iter()
        .map(|d| unpacked.join(d).to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(":");
    let mut copied = BTreeSet::new();
    let mut host = BTreeSet::new();
    for binary in binaries {
        let output = run_stdout(
            Command::new("ldd")
                .arg(binary)
                .env("LD_LIBRARY_PATH", &lib_path),
            "libc-bin",
            "ldd could not inspect a binary from the packages",
        )?;
        for entry in parse_ldd(&output) {
            let (src, dst) = match entry {
                LddEntry::NotFound { name } => {
                    let binary = binary
                        .strip_prefix(unpacked)
                        .unwrap_or(binary)
                        .display()
                        .to_string();
                    return Err(ImageError::MissingLibrary {
                        binary,
                        library: name,
                    });
                }
                LddEntry::Found { name, path } => {
                    (path, root.join(format!("usr/lib/{MULTIARCH}")).join(name))
                }
                // Keep the interpreter's path (e.g. /lib64/...) valid through
                // the /lib64 -> usr/lib64 link.
                LddEntry::Interpreter { path } => {
                    let relative = path.strip_prefix("/").unwrap_or(&path);
                    let relative = relative.strip_prefix("usr").unwrap_or(relative);
                    let dst = root.join("usr").join(relative);
                    (path, dst)
                }
            };
            if !copied.insert(dst.clone()) {
                continue;
            }
            if !src.starts_with(unpacked) {
                host.insert(src.display().to_string());
            }
            if let Some(parent) = dst.parent() {
                fs::create_dir_all(parent).map_err(|e| io_err("create", parent, e))?;
            }
            // fs::copy follows symlinks: the guest gets the file under its soname.
            fs::copy(&src, &dst).map_err(|e| io_err("copy library to", &dst, e))?;
            set_mode(&dst, 0o755)?;
        }
    }
    Ok(host.into_iter().collect())
}

// ---------------------------------------------------------------------------
// Kernel modules
// ---------------------------------------------------------------------------

/// Kernel module names use '_' and '-' interchangeably (`virtio-rng.ko` is
/// module `virtio_rng`).
fn module_key(name: &str) -> String {
    name.trim_end_matches(".ko").replace('-', "_")
}

/// Modules in load order: each module after its dependencies, otherwise in
/// the order asked for. `deps` returns a module's direct dependencies.
fn load_order<F>(wanted: &[String], mut deps: F) -> Result<Vec<String>>
where
    F: FnMut(&str) -> Result<Vec<String>>,
{
    fn visit<F>(
        name: &str,
        deps: &mut F,
        done: &mut BTreeSet<String>,
        busy: &mut BTreeSet<String>,
        order: &mut Vec<String>,
    ) -> Result<()>
    where
        F: FnMut(&str) -> Result<Vec<String>>,
    {
        if done.contains(name) || !busy.insert(name.to_string()) {
            return Ok(()); // done, or a cycle (impossible for modules): ignore
        }
        for dep in deps(name)? {
            visit(&dep, deps, done, busy, order)?;
        }
        done.insert(name.to_string());
        order.push(name.to_string());
        Ok(())
    }
    let (mut done, mut busy, mut order) = (BTreeSet::new(), BTreeSet::new(), Vec::new());
    for name in wanted {
        visit(name, &mut deps, &mut done, &mut busy, &mut order)?;
    }
    Ok(order)
}

/// The `.modinfo` strings of an ELF64 little-endian kernel module
/// (`depends=a,b`, `name=x`, ...), without needing modinfo on the host.
fn modinfo(elf: &[u8]) -> Option<Vec<String>> {
    let u16_at = |o: usize| {
        elf.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize)
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize)
    };
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None; // not ELF64 little-endian
    }
    let (shoff, shentsize, shnum, shstrndx) =
        (u64_at(0x28)?, u16_at(0x3a)?, u16_at(0x3c)?, u16_at(0x3e)?);
    let section = |i: usize| {
        let h = shoff.checked_add(i.checked_mul(shentsize)?)?;
        Some((u32_at(h)?, u64_at(h + 0x18)?, u64_at(h + 0x20)?))
    };
    let (_, strtab_off, strtab_size) = section(shstrndx)?;
    let strtab = elf.get(strtab_off..strtab_off.checked_add(strtab_size)?)?;
    for i in 0..shnum {
        let (name_off, off, size) = section(i)?;
        let name = strtab.get(name_off..)?.split(|&b| b == 0).next()?;
        if name == b".modinfo" {
            let data = elf.get(off..off.checked_add(size)?)?;
            return Some(
                data.split(|&b| b == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect(),
            );
        }
    }
    None
}

/// Direct dependencies from `.modinfo` strings.
fn modinfo_depends(info: &[String]) -> Vec<String> {
    info.iter()
        .find_map(|s| s.strip_prefix("depends="))
        .map(|d| {
            d.split(',')
                .filter(|s| !s.is_empty())
                .map(module_key)
                .collect()
        })
        .unwrap_or_default()
}

/// The `modules.dep` line of a module: its path, then its dependencies in
/// the order kmod writes them (reverse load order: modprobe loads from the
/// end of the list).
fn modules_dep_line(path: &str, load_order_of_deps: &[&str]) -> String {
    let mut line = format!("{path}:");
    for dep in load_order_of_deps.iter().rev() {
        line.push(' ');
        line.push_str(dep);
    }
    line
}

/// Copies the wanted modules and their dependencies into the guest, writes
/// `modules.dep` (for busybox modprobe and kernel autoload), copies
/// `modules.builtin` and writes `/etc/mkh/modules.boot` (insmod order).
fn stage_modules(unpacked: &Path, root: &Path, packages: &Packages) -> Result<()> {
    let release = packages.kernel_release();
    let src_dir = unpacked.join("lib/modules").join(release);
    if !src_dir.is_dir() {
        return Err(ImageError::MissingFile {
            what: "the kernel modules",
            path: src_dir,
        });
    }
    // Index every .ko of the package by module name.
    let mut index: HashMap<String, String> = HashMap::new();
    let mut stack = vec![src_dir.join("kernel")];
    while let Some(dir) = stack.pop() {
        for path in read_dir_sorted(&dir)? {
            if path.is_dir() {
                stack.push(path);
            } else if has_ext(&path, "ko") {
                let rel = path
                    .strip_prefix(&src_dir)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .into_owned();
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                index.insert(module_key(&name), rel);
            }
        }
    }
    let builtin_path = src_dir.join("modules.builtin");
    let builtin_text =
        fs::read_to_string(&builtin_path).map_err(|e| io_err("read", &builtin_path, e))?;
    let builtin: BTreeSet<String> = builtin_text
        .lines()
        .filter_map(|l| l.rsplit('/').next())
        .map(module_key)
        .collect();

    let mut boot = Vec::new();
    let mut ship = Vec::new();
    for (name, usage) in MODULES {
        let key = module_key(name);
        if builtin.contains(&key) {
            continue; // nothing to load
        }
        if !index.contains_key(&key) {
            if *usage == ModuleUse::BootRequired {
                return Err(ImageError::MissingModule {
                    module: name.to_string(),
                    package: packages.kernel.clone(),
                });
            }
            continue;
        }
        match usage {
            ModuleUse::BootRequired | ModuleUse::BootOptional => boot.push(key),
            ModuleUse::ShipOptional => ship.push(key),
        }
    }

    let mut deps_of: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut direct_deps = |name: &str| -> Result<Vec<String>> {
        if let Some(d) = deps_of.get(name) {
            return Ok(d.clone());
        }
        let deps = match index.get(name) {
            None if builtin.contains(name) => Vec::new(),
            None => {
                return Err(ImageError::MissingModule {
                    module: name.to_string(),
                    package: packages.kernel.clone(),
                })
            }
            Some(rel) => {
                let path = src_dir.join(rel);
                let elf = fs::read(&path).map_err(|e| io_err("read", &path, e))?;
                let info = modinfo(&elf).ok_or_else(|| ImageError::BadModule {
                    path: path.clone(),
                    problem: "no .modinfo section (not an uncompressed ELF64 module?)".into(),
                })?;
                modinfo_depends(&info)
                    .into_iter()
                    .filter(|d| !builtin.contains(d))
                    .collect()
            }
        };
        deps_of.insert(name.to_string(), deps.clone());
        Ok(deps)
    };
    let boot_order = load_order(&boot, &mut direct_deps)?;
    let mut all = boot.clone();
    all.extend(ship.iter().cloned());
    let all_order = load_order(&all, &mut direct_deps)?;

    let dst_dir = root.join("usr/lib/modules").join(release);
    let mut dep_lines = Vec::new();
    for name in &all_order {
        let rel = &index[name];
        let dst = dst_dir.join(rel);
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent).map_err(|e| io_err("create", parent, e))?;
        }
        fs::copy(src_dir.join(rel), &dst).map_err(|e| io_err("copy module to", &dst, e))?;
        set_mode(&dst, 0o644)?;
        // Its dependencies' load order is the global order restricted to them.
        let closure = load_order(std::slice::from_ref(name), &mut direct_deps)?;
        let deps: Vec<&str> = closure
            .iter()
            .filter(|d| *d != name)
            .map(|d| index[d].as_str())
            .collect();
        dep_lines.push(modules_dep_line(rel, &deps));
    }
    let modules_dep = dst_dir.join("modules.dep");
    fs::write(&modules_dep, dep_lines.join("\n") + "\n")
        .map_err(|e| io_err("write", &modules_dep, e))?;
    let dst_builtin = dst_dir.join("modules.builtin");
    fs::write(&dst_builtin, builtin_text).map_err(|e| io_err("write", &dst_builtin, e))?;

    let boot_list: String = boot_order
        .iter()
        .map(|n| format!("{}\n", index[n]))
        .collect();
    let boot_file = root.join("etc/mkh/modules.boot");
    fs::write(&boot_file, boot_list).map_err(|e| io_err("write", &boot_file, e))?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Packing
// ---------------------------------------------------------------------------

/// All paths under `root`, relative, parents before children, sorted (a
/// stable archive order; the kernel needs a directory before its entries).
fn archive_list(root: &Path) -> Result<Vec<String>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
        for path in read_dir_sorted(dir)? {
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            out.push(rel);
            let meta = path
                .symlink_metadata()
                .map_err(|e| io_err("stat", &path, e))?;
            if meta.is_dir() {
                walk(root, &path, out)?;
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(root, root, &mut out)?;
    Ok(out)
}

/// `busybox cpio -o -H newc -R 0:0 | busybox gzip` of `root` into `initrd`.
/// `-R 0:0` makes every file root's whoever builds (the setuid bits of ip/tc
/// then mean root, and a non-root builder works too).
fn pack_initramfs(busybox: &Path, root: &Path, initrd: &Path, work: &Path) -> Result<()> {
    let list = archive_list(root)?.join("\n") + "\n";
    let output = fs::File::create(initrd).map_err(|e| io_err("create", initrd, e))?;
    let errors_path = work.join("cpio.stderr");
    let errors = fs::File::create(&errors_path).map_err(|e| io_err("create", &errors_path, e))?;
    let errors2 = errors
        .try_clone()
        .map_err(|e| io_err("open", &errors_path, e))?;

    let mut cpio_cmd = Command::new(busybox);
    cpio_cmd
        .args(["cpio", "-o", "-H", "newc", "-R", "0:0"])
        .current_dir(root);
    let mut cpio = cpio_cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(errors)
        .spawn()
        .map_err(|source| ImageError::Spawn {
            command: describe(&cpio_cmd),
            package: "busybox-static",
            source,
        })?;
    let cpio_out = cpio.stdout.take().expect("piped stdout");
    let mut gzip_cmd = Command::new(busybox);
    gzip_cmd.args(["gzip", "-c"]);
    let mut gzip = gzip_cmd
        .stdin(Stdio::from(cpio_out))
        .stdout(output)
        .stderr(errors2)
        .spawn()
        .map_err(|source| ImageError::Spawn {
            command: describe(&gzip_cmd),
            package: "busybox-static",
            source,
        })?;
    // gzip drains cpio into the file, so writing the whole list cannot block for long.
    let write_result = cpio
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(list.as_bytes());
    let cpio_status = cpio
        .wait()
        .map_err(|e| io_err("wait for cpio packing", root, e))?;
    let gzip_status = gzip
        .wait()
        .map_err(|e| io_err("wait for gzip writing", initrd, e))?;
    let failure = if !cpio_status.success() {
        Some(("busybox cpio -o -H newc -R 0:0", cpio_status.to_string()))
    } else if !gzip_status.success() {
        Some(("busybox gzip -c", gzip_status.to_string()))
    } else {
        None
    };
    if let Some((command, status)) = failure {
        return Err(ImageError::CommandFailed {
            command: command.into(),
            status,
            stderr: tail(&fs::read_to_string(&errors_path).unwrap_or_default(), 1500),
            hint: "check free space in the cache dir",
        });
    }
    write_result.map_err(|e| io_err("feed the file list to cpio for", initrd, e))
}

/// Standard base64 (RFC 4648, with padding), as busybox `base64 -d` reads it.
fn base64_encode(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// SHA-256 as lowercase hex.
fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUBKEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJNTVhp+zP1xgreBa2SiKa3mrz9PyTjJcKnwaxs0G0SX test";
    const HOSTKEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n";

    #[test]
    fn cmdline_carries_base64_keys_without_spaces() {
        let line = kernel_cmdline(&BootParams {
            hostname: "vm-1",
            authorized_key: PUBKEY,
            host_key: Some(HOSTKEY),
        })
        .unwrap();
        let words: Vec<&str> = line.split(' ').collect();
        assert_eq!(words[0], "console=ttyS0");
        assert_eq!(words[1], "mkh.hostname=vm-1");
        assert_eq!(
            words[2],
            format!(
                "mkh.authorized_key={}",
                base64_encode(format!("{PUBKEY}\n").as_bytes())
            )
        );
        assert_eq!(
            words[3],
            format!("mkh.host_key={}", base64_encode(HOSTKEY.as_bytes()))
        );
        assert_eq!(words.len(), 4);
    }

    #[test]
    fn cmdline_without_host_key_and_trailing_newline_key() {
        let with_newline = format!("{PUBKEY}\n");
        let line = kernel_cmdline(&BootParams {
            hostname: "a",
            authorized_key: &with_newline,
            host_key: None,
        })
        .unwrap();
        assert!(!line.contains("mkh.host_key"));
        assert!(line.ends_with(&base64_encode(with_newline.as_bytes())));
    }

    #[test]
    fn cmdline_rejects_bad_input() {
        let bad = |hostname: &str, key: &str, host_key: Option<&str>| {
            kernel_cmdline(&BootParams {
                hostname,
                authorized_key: key,
                host_key,
            })
            .unwrap_err()
        };
        for name in ["", "-a", "a-", "a b", "a.b", "ä", &"x".repeat(64)] {
            assert!(
                matches!(
                    bad(name, PUBKEY, None),
                    ImageError::BootParam {
                        name: "hostname",
                        ..
                    }
                ),
                "{name:?}"
            );
        }
        assert!(matches!(
            bad("h", "AAAA", None),
            ImageError::BootParam {
                name: "authorized_key",
                ..
            }
        ));
        assert!(matches!(
            bad("h", &format!("{PUBKEY}\n{PUBKEY}"), None),
            ImageError::BootParam {
                name: "authorized_key",
                ..
            }
        ));
        assert!(matches!(
            bad("h", PUBKEY, Some("-----BEGIN RSA PRIVATE KEY-----")),
            ImageError::BootParam {
                name: "host_key",
                ..
            }
        ));
        let huge = format!(
            "-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n",
            "A".repeat(2000)
        );
        assert!(matches!(
            bad("h", PUBKEY, Some(&huge)),
            ImageError::BootParam {
                name: "host_key",
                ..
            }
        ));
        assert!(bad("h", "AAAA", None).to_string().contains("ssh-ed25519"));
    }

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

    #[test]
    fn kernel_dependency_is_parsed_from_apt_cache_depends() {
        let out = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n";
        assert_eq!(
            parse_kernel_dependency(out, "linux-image-cloud-amd64").as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
        let alt = "linux-image-cloud-amd64\n |Depends: linux-image-6.1.0-57-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n";
        assert_eq!(
            parse_kernel_dependency(alt, "linux-image-cloud-amd64").as_deref(),
            Some("linux-image-6.1.0-57-cloud-amd64")
        );
        assert_eq!(
            parse_kernel_dependency(
                "linux-image-cloud-amd64\n  Depends: <foo>\n",
                "linux-image-cloud-amd64"
            ),
            None
        );
        assert_eq!(parse_kernel_dependency("", "linux-image-cloud-amd64"), None);
    }

    #[test]
    fn policy_candidates_are_parsed() {
        let out = "busybox-static:\n  Installed: (none)\n  Candidate: 1:1.35.0-4+deb12u1+b1\n  Version table:\n     1:1.35.0-4+deb12u1+b1 500\n        500 http://deb.debian.org/debian bookworm/main amd64 Packages\n\
                   libgmp10:amd64:\n  Installed: 2:6.2.1+dfsg1-1.1\n  Candidate: 2:6.2.1+dfsg1-1.1\n\
                   gone:\n  Installed: (none)\n  Candidate: (none)\n";
        let c = parse_policy_candidates(out);
        assert_eq!(
            c["busybox-static"].as_deref(),
            Some("1:1.35.0-4+deb12u1+b1")
        );
        assert_eq!(c["libgmp10"].as_deref(), Some("2:6.2.1+dfsg1-1.1"));
        assert_eq!(c["gone"], None);
        assert!(!c.contains_key("missing"));
    }

    #[test]
    fn ldd_output_is_parsed() {
        let out = "\tlinux-vdso.so.1 (0x00007ffc)\n\
                   \tlibtomcrypt.so.1 => /w/unpacked/usr/lib/x86_64-linux-gnu/libtomcrypt.so.1 (0x00007f)\n\
                   \tlibz.so.1 => not found\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(out),
            vec![
                LddEntry::Found {
                    name: "libtomcrypt.so.1".into(),
                    path: "/w/unpacked/usr/lib/x86_64-linux-gnu/libtomcrypt.so.1".into()
                },
                LddEntry::NotFound {
                    name: "libz.so.1".into()
                },
                LddEntry::Interpreter {
                    path: "/lib64/ld-linux-x86-64.so.2".into()
                },
            ]
        );
        assert!(parse_ldd("\tstatically linked\n").is_empty());
    }

    #[test]
    fn modules_load_after_their_dependencies_in_asked_order() {
        let graph: HashMap<&str, Vec<&str>> = [
            ("virtio_net", vec!["virtio_ring", "virtio", "net_failover"]),
            ("net_failover", vec!["failover"]),
            ("virtio", vec!["virtio_ring"]),
            (
                "virtio_pci",
                vec!["virtio_ring", "virtio_pci_modern_dev", "virtio"],
            ),
        ]
        .into_iter()
        .collect();
        let deps = |n: &str| {
            Ok(graph
                .get(n)
                .map(|d| d.iter().map(|s| s.to_string()).collect())
                .unwrap_or_default())
        };
        let wanted: Vec<String> = ["virtio_pci", "virtio_net", "sch_netem"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let order = load_order(&wanted, deps).unwrap();
        assert_eq!(
            order,
            [
                "virtio_ring",
                "virtio_pci_modern_dev",
                "virtio",
                "virtio_pci",
                "failover",
                "net_failover",
                "virtio_net",
                "sch_netem"
            ]
        );
    }

    #[test]
    fn modules_dep_lists_dependencies_last_loaded_first() {
        assert_eq!(
            modules_dep_line("a.ko", &["x.ko", "y.ko"]),
            "a.ko: y.ko x.ko"
        );
        assert_eq!(modules_dep_line("a.ko", &[]), "a.ko:");
        assert_eq!(module_key("virtio-rng.ko"), "virtio_rng");
    }

    /// A minimal ELF64 with section-name table and a .modinfo section.
    fn fake_module(modinfo_data: &[u8]) -> Vec<u8> {
        let shstrtab = b"\0.shstrtab\0.modinfo\0";
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let strtab_off = elf.len();
        elf.extend_from_slice(shstrtab);
        let modinfo_off = elf.len();
        elf.extend_from_slice(modinfo_data);
        let shoff = elf.len();
        let mut section = |name: u32, off: usize, size: usize| {
            let mut h = [0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&(off as u64).to_le_bytes());
            h[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            elf.extend_from_slice(&h);
        };
        section(0, 0, 0);
        section(1, strtab_off, shstrtab.len());
        section(11, modinfo_off, modinfo_data.len());
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        elf
    }

    #[test]
    fn modinfo_depends_are_read_from_the_elf_section() {
        let elf =
            fake_module(b"license=GPL\0depends=virtio_ring,virtio,net-failover\0name=virtio_net\0");
        let info = modinfo(&elf).unwrap();
        assert_eq!(
            modinfo_depends(&info),
            ["virtio_ring", "virtio", "net_failover"]
        );
        let none = modinfo(&fake_module(b"depends=\0name=failover\0")).unwrap();
        assert!(modinfo_depends(&none).is_empty());
        assert_eq!(modinfo(b"not an elf"), None);
        assert_eq!(modinfo(&fake_module(b"x")[..70]), None); // truncated
    }

    #[test]
    fn cache_dir_must_be_world_searchable() {
        assert!(qemu_can_traverse(0o755));
        assert!(qemu_can_traverse(0o1777));
        assert!(qemu_can_traverse(0o711));
        assert!(!qemu_can_traverse(0o700));
        assert!(!qemu_can_traverse(0o750));
    }

    #[test]
    fn unreachable_cache_dir_is_refused_with_the_blocking_dir() {
        let base = std::env::temp_dir().join(format!("mkh-image-test-{}", std::process::id()));
        let private = base.join("private");
        fs::create_dir_all(&private).unwrap();
        fs::set_permissions(&base, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
        let err = prepare_cache_dir(&private.join("cache")).unwrap_err();
        match &err {
            ImageError::CacheNotReachable { blocker, mode, .. } => {
                assert_eq!(blocker, &private);
                assert_eq!(*mode, 0o700);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("/var/tmp/mkh"));
        assert!(
            !private.join("cache").exists(),
            "nothing created on refusal"
        );

        // A reachable one is created 0755 with its guest subdirectory
        // (unless the temp dir itself is private: then there is nothing to see).
        let ok = base.join("open/cache");
        let guest = match prepare_cache_dir(&ok) {
            Ok(guest) => guest,
            Err(ImageError::CacheNotReachable { blocker, .. }) if !blocker.starts_with(&base) => {
                fs::remove_dir_all(&base).unwrap();
                return;
            }
            Err(e) => panic!("{e}"),
        };
        assert_eq!(guest, ok.join("guest"));
        for dir in [base.join("open"), ok.clone(), guest.clone()] {
            assert_eq!(
                fs::metadata(&dir).unwrap().mode() & 0o7777,
                0o755,
                "{}",
                dir.display()
            );
        }
        // An existing private `guest` subdirectory is refused too.
        let other = base.join("other");
        fs::create_dir_all(other.join("guest")).unwrap();
        fs::set_permissions(&other, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(other.join("guest"), fs::Permissions::from_mode(0o700)).unwrap();
        assert!(matches!(
            prepare_cache_dir(&other),
            Err(ImageError::CacheNotReachable { mode: 0o700, .. })
        ));
        // The fast path needs no apt: a marker pointing at a complete image.
        let digest = "a".repeat(64);
        fs::create_dir(guest.join(&digest)).unwrap();
        fs::write(guest.join(&digest).join(KERNEL_FILE), b"k").unwrap();
        assert_eq!(lookup_recipe(&guest, "r1"), None);
        write_recipe_marker(&guest, &"r".repeat(64), &digest).unwrap();
        assert_eq!(
            lookup_recipe(&guest, &"r".repeat(64)),
            None,
            "initrd still missing"
        );
        fs::write(guest.join(&digest).join(INITRD_FILE), b"i").unwrap();
        let image = lookup_recipe(&guest, &"r".repeat(64)).unwrap();
        assert_eq!(image.digest, digest);
        assert_eq!(image.kernel, guest.join(&digest).join(KERNEL_FILE));
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn locks_and_work_dirs_of_dead_builders_are_stale() {
        let dir = std::env::temp_dir().join(format!("mkh-lock-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let lock = dir.join("l");
        fs::write(&lock, "999999999\n").unwrap();
        assert!(lock_is_stale(&lock, "999999999"));
        assert!(!lock_is_stale(&lock, &std::process::id().to_string()));
        assert!(!lock_is_stale(&lock, ""), "fresh empty lock: being written");
        // Work dirs: a dead builder's goes, a live one's stays.
        let dead = dir.join(".build-0123456789abcdef-999999999");
        let live = dir.join(format!(".build-0123456789abcdef-{}", std::process::id()));
        fs::create_dir_all(dead.join("x")).unwrap();
        fs::create_dir_all(&live).unwrap();
        remove_dead_work_dirs(&dir);
        assert!(!dead.exists() && live.exists() && lock.exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
