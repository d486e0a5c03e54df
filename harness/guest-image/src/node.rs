//! The node bundle: what a Kubernetes node needs beyond the test guest, as one read-only ext4
//! disk image shared by every node VM (see [`crate::ensure_node_bundle`]).
//!
//! It holds Debian's container runtime (docker.io, containerd, runc), the CNI plugins, etcd,
//! iptables, conntrack, socat, e2fsprogs (the data disk's mkfs) and kubectl with their
//! libraries, and the Kubernetes binaries built by `harness/scripts/build-kubernetes.sh`. Every
//! package is laid out as the guest is (usr-merged: `bin`, `sbin` and `usr/sbin` into
//! `usr/bin`, `lib` into `usr/lib`), since the guest's root becomes an overlay of this disk under
//! the initramfs. The image is made without root (`mkfs.ext4 -d`).
//!
//! Cache layout, beside the guest image's:
//!
//! ```text
//! <cache_dir>/node/<digest>/node.img        the bundle (ext4, label mkh-node)
//! <cache_dir>/node/<digest>/manifest.txt    what went in
//! <cache_dir>/node/recipe-<recipe digest>   names the <digest> last built for this recipe
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cache::{
    prepare_cache_subdir, recipe_marker, write_recipe_marker, BuildLock, LOCK_WAIT,
};
use crate::command::run_stdout;
use crate::files::{io_err, make_dir_0755, make_symlink, set_mode, write_with_mode};
use crate::packages::{download_and_unpack, resolve_versions};
use crate::recipe::sha256_hex;
use crate::{ImageError, Result};

/// Bump when the build changes what ends up in the bundle.
const FORMAT: &str = "mkh-node-bundle/1";

/// The file system label the guest's `/etc/mkh/node-root` looks for.
pub(crate) const LABEL: &str = "mkh-node";

/// The bundle's file name in its cache directory.
const DISK_FILE: &str = "node.img";
const MANIFEST_FILE: &str = "manifest.txt";

/// Debian packages unpacked into the bundle: the tools and the libraries they need beyond
/// what the guest's initramfs has (libc, libz, libcrypt, libm, libcap and the others there).
const PACKAGES: &[&str] = &[
    "docker.io",
    "containerd",
    "runc",
    "tini",
    "containernetworking-plugins",
    "etcd-server",
    "iptables",
    "conntrack",
    "socat",
    "ethtool",
    "e2fsprogs",
    "kubernetes-client",
    // dockerd
    "libsystemd0",
    "libdevmapper1.02.1",
    "libselinux1",
    "libudev1",
    "libpcre2-8-0",
    "libgcrypt20",
    "libgpg-error0",
    "liblzma5",
    "libzstd1",
    "liblz4-1",
    // runc
    "libseccomp2",
    // iptables, conntrack
    "libip4tc2",
    "libip6tc2",
    "libnetfilter-conntrack3",
    "libnfnetlink0",
    "libnftnl11",
    "libnetfilter-cthelper0",
    "libnetfilter-queue1",
    // e2fsprogs
    "libext2fs2",
    "libcom-err2",
    "libblkid1",
    "libuuid1",
    "libss2",
    // socat
    "libssl3",
    "libwrap0",
    "libreadline8",
];

/// The Kubernetes programs taken from the build directory (all statically linked), and the
/// pause container's program.
pub(crate) const KUBERNETES_BINARIES: &[&str] = &[
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "pause",
];

/// Top-level directories of the unpacked packages that the bundle keeps, and where: the
/// guest is usr-merged with `sbin` pointing at `bin`.
const LAYOUT: &[(&str, &str)] = &[
    ("bin", "usr/bin"),
    ("sbin", "usr/bin"),
    ("usr/sbin", "usr/bin"),
    ("usr/bin", "usr/bin"),
    ("lib", "usr/lib"),
    ("usr/lib", "usr/lib"),
    ("usr/libexec", "usr/libexec"),
];

/// Symlinks made in the bundle: one iptables backend everywhere (legacy: docker, kube-proxy
/// and the kubelet all run `iptables`), and the CNI plugins where the kubelet looks.
const LINKS: &[(&str, &str)] = &[
    ("usr/bin/iptables", "xtables-legacy-multi"),
    ("usr/bin/iptables-save", "xtables-legacy-multi"),
    ("usr/bin/iptables-restore", "xtables-legacy-multi"),
    ("usr/bin/ip6tables", "xtables-legacy-multi"),
    ("usr/bin/ip6tables-save", "xtables-legacy-multi"),
    ("usr/bin/ip6tables-restore", "xtables-legacy-multi"),
    ("opt/cni/bin", "../../usr/lib/cni"),
];

/// A built node bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeBundle {
    /// The read-only ext4 disk image (absolute, readable by QEMU).
    pub disk: PathBuf,
    /// Content digest (64 hex digits): the name of its directory.
    pub digest: String,
}

/// See [`crate::ensure_node_bundle`].
pub(crate) fn ensure(cache_dir: &Path, kubernetes: &Path) -> Result<NodeBundle> {
    let node_dir = prepare_cache_subdir(cache_dir, "node")?;
    let kubernetes = fs::canonicalize(kubernetes).map_err(|e| io_err("resolve", kubernetes, e))?;
    let binaries = kubernetes_binaries(&kubernetes)?;
    let recipe = sha256_hex(manifest(None, &binaries).as_bytes());
    if let Some(bundle) = lookup(&node_dir, &recipe) {
        return Ok(bundle);
    }
    let versions = resolve_versions(PACKAGES)?;
    let manifest = manifest(Some(&versions), &binaries);
    let digest = sha256_hex(manifest.as_bytes());
    if complete(&node_dir, &digest).is_none() {
        let built = || complete(&node_dir, &digest).is_some();
        if let Some(lock) = BuildLock::acquire(&node_dir, LOCK_WAIT, built)? {
            if complete(&node_dir, &digest).is_none() {
                build(&lock, &node_dir, &digest, &versions, &binaries, &manifest)?;
            }
        }
    }
    let bundle = complete(&node_dir, &digest).ok_or_else(|| ImageError::MissingFile {
        what: "the node bundle just built",
        path: node_dir.join(&digest),
    })?;
    write_recipe_marker(&node_dir, &recipe, &digest)?;
    Ok(bundle)
}

/// The Kubernetes binaries in `dir`, each with what identifies its build (size and
/// modification time: the build script replaces a version's directory whole).
fn kubernetes_binaries(dir: &Path) -> Result<Vec<(PathBuf, String)>> {
    KUBERNETES_BINARIES
        .iter()
        .map(|name| {
            let path = dir.join(name);
            let meta = fs::metadata(&path).map_err(|_| ImageError::MissingFile {
                what: "a Kubernetes binary (harness/scripts/build-kubernetes.sh builds them)",
                path: path.clone(),
            })?;
            Ok((path, format!("{} {}", meta.len(), meta.mtime())))
        })
        .collect()
}

/// The digest input: the recipe (no `versions`) or the whole bundle's.
fn manifest(versions: Option<&BTreeMap<String, String>>, binaries: &[(PathBuf, String)]) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "format {FORMAT}");
    match versions {
        Some(versions) => {
            for (name, version) in versions {
                let _ = writeln!(m, "package {name} {version}");
            }
        }
        None => {
            for name in PACKAGES {
                let _ = writeln!(m, "package {name}");
            }
        }
    }
    for (path, identity) in binaries {
        let _ = writeln!(m, "kubernetes {} {identity}", path.display());
    }
    for (from, to) in LAYOUT {
        let _ = writeln!(m, "layout {from} {to}");
    }
    for (link, target) in LINKS {
        let _ = writeln!(m, "link {link} {target}");
    }
    m
}

fn lookup(node_dir: &Path, recipe: &str) -> Option<NodeBundle> {
    let digest = fs::read_to_string(recipe_marker(node_dir, recipe)).ok()?;
    let digest = digest.trim();
    (digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| complete(node_dir, digest))
        .flatten()
}

fn complete(node_dir: &Path, digest: &str) -> Option<NodeBundle> {
    let disk = node_dir.join(digest).join(DISK_FILE);
    disk.is_file().then(|| NodeBundle {
        disk,
        digest: digest.to_string(),
    })
}

fn build(
    lock: &BuildLock,
    node_dir: &Path,
    digest: &str,
    versions: &BTreeMap<String, String>,
    binaries: &[(PathBuf, String)],
    manifest: &str,
) -> Result<()> {
    let (work, _cleanup) = lock.fresh_work_dir(digest)?;
    let (debs, unpacked, root, out) = (
        work.join("debs"),
        work.join("unpacked"),
        work.join("root"),
        work.join("out"),
    );
    for dir in [&debs, &unpacked, &root, &out] {
        make_dir_0755(dir)?;
    }
    download_and_unpack(versions, &debs, &unpacked)?;
    for (from, to) in LAYOUT {
        merge_into(&unpacked.join(from), &root.join(to))?;
    }
    for (path, _) in binaries {
        let name = path.file_name().expect("a binary's file name");
        crate::files::copy_with_mode(path, &root.join("usr/bin").join(name), 0o755, "copy to")?;
    }
    for (link, target) in LINKS {
        let link = root.join(link);
        crate::files::create_parents(&link)?;
        let _ = fs::remove_file(&link);
        make_symlink(target, &link)?;
    }
    let disk = out.join(DISK_FILE);
    make_ext4(&root, &disk)?;
    set_mode(&disk, 0o644)?;
    write_with_mode(&out.join(MANIFEST_FILE), manifest, 0o644)?;
    let target = node_dir.join(digest);
    if let Err(e) = fs::rename(&out, &target) {
        if complete(node_dir, digest).is_none() {
            return Err(io_err("move the built bundle to", &target, e));
        }
    }
    Ok(())
}

/// Moves the tree `from` (if it exists) into `to`, merging directories. A symlink whose target
/// names another directory of the merge (`../sbin/runc`) is pointed at its file's new place.
fn merge_into(from: &Path, to: &Path) -> Result<()> {
    let Ok(meta) = fs::symlink_metadata(from) else {
        return Ok(());
    };
    if meta.file_type().is_symlink() || !meta.is_dir() {
        return Ok(()); // usr-merged packages' own links (`lib -> usr/lib`) are made anew
    }
    crate::files::create_parents(to)?;
    make_dir_0755(to)?;
    for entry in crate::files::read_dir_sorted(from)? {
        let name = entry.file_name().expect("a directory entry's name");
        let dest = to.join(name);
        let kind = fs::symlink_metadata(&entry).map_err(|e| io_err("stat", &entry, e))?;
        if kind.is_dir() {
            merge_into(&entry, &dest)?;
            continue;
        }
        if kind.file_type().is_symlink() {
            let target = fs::read_link(&entry).map_err(|e| io_err("read link", &entry, e))?;
            let target = target.to_string_lossy();
            let retarget = ["../sbin/", "/usr/sbin/", "/sbin/", "/bin/", "../bin/"]
                .iter()
                .find_map(|prefix| target.strip_prefix(prefix))
                .filter(|rest| !rest.contains('/'));
            if let Some(file) = retarget {
                // A link to the same name (usr/bin/runc -> ../sbin/runc) is the file itself
                // once merged: the file is or will be there.
                if file != name.to_string_lossy() {
                    let _ = fs::remove_file(&dest);
                    make_symlink(file, &dest)?;
                }
                continue;
            }
        }
        // A file replaces whatever came before it under its name.
        let _ = fs::remove_file(&dest);
        fs::rename(&entry, &dest).map_err(|e| io_err("move into the bundle", &dest, e))?;
    }
    Ok(())
}

/// `mkfs.ext4 -d`: an ext4 image of `root`, sized to fit, with no journal (it is only read).
fn make_ext4(root: &Path, disk: &Path) -> Result<()> {
    let du = run_stdout(
        Command::new("du").args(["-s", "-k"]).arg(root),
        "coreutils",
        "check the work directory",
    )?;
    let kib: u64 = du
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    // Room for the file system's own metadata and small files' blocks.
    let size_kib = kib + kib / 5 + 64 * 1024;
    run_stdout(
        Command::new("mkfs.ext4")
            .args([
                "-q",
                "-F",
                "-L",
                LABEL,
                "-O",
                "^has_journal",
                "-E",
                "root_owner=0:0",
                "-d",
            ])
            .arg(root)
            .arg(disk)
            .arg(format!("{size_kib}k")),
        "e2fsprogs",
        "mkfs.ext4 (e2fsprogs >= 1.43) makes the bundle; install e2fsprogs",
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recipe_names_packages_binaries_and_links_without_versions() {
        let binaries = vec![(PathBuf::from("/k/kubelet"), "1 2".to_string())];
        let recipe = manifest(None, &binaries);
        assert!(recipe.starts_with(&format!("format {FORMAT}\n")));
        assert!(recipe.contains("package docker.io\n"));
        assert!(recipe.contains("kubernetes /k/kubelet 1 2\n"));
        assert!(recipe.contains("link usr/bin/iptables xtables-legacy-multi\n"));
        let versions = BTreeMap::from([("docker.io".to_string(), "20.10".to_string())]);
        let full = manifest(Some(&versions), &binaries);
        assert!(full.contains("package docker.io 20.10\n"));
        assert_ne!(sha256_hex(full.as_bytes()), sha256_hex(recipe.as_bytes()));
        let rebuilt = vec![(PathBuf::from("/k/kubelet"), "1 3".to_string())];
        assert_ne!(
            manifest(None, &rebuilt),
            recipe,
            "a rebuilt binary is another bundle"
        );
    }

    #[test]
    fn merging_moves_sbin_into_bin_and_repoints_links_between_them() {
        let dir = tempfile::tempdir().unwrap();
        let unpacked = dir.path().join("unpacked");
        fs::create_dir_all(unpacked.join("usr/sbin")).unwrap();
        fs::create_dir_all(unpacked.join("usr/bin")).unwrap();
        fs::write(unpacked.join("usr/sbin/runc"), "runc").unwrap();
        std::os::unix::fs::symlink("../sbin/runc", unpacked.join("usr/bin/runc")).unwrap();
        std::os::unix::fs::symlink("xtables-legacy-multi", unpacked.join("usr/sbin/iptables"))
            .unwrap();
        std::os::unix::fs::symlink("../sbin/xtables", unpacked.join("usr/bin/iptables-xml"))
            .unwrap();
        let bin = dir.path().join("root/usr/bin");
        for from in ["usr/bin", "usr/sbin"] {
            merge_into(&unpacked.join(from), &bin).unwrap();
        }
        assert_eq!(fs::read_to_string(bin.join("runc")).unwrap(), "runc");
        assert_eq!(
            fs::read_link(bin.join("iptables")).unwrap(),
            PathBuf::from("xtables-legacy-multi")
        );
        assert_eq!(
            fs::read_link(bin.join("iptables-xml")).unwrap(),
            PathBuf::from("xtables")
        );
        // The other order: the link comes after the file it names.
        let again = dir.path().join("again/usr/bin");
        fs::create_dir_all(unpacked.join("x/usr/sbin")).unwrap();
        fs::create_dir_all(unpacked.join("x/usr/bin")).unwrap();
        fs::write(unpacked.join("x/usr/sbin/runc"), "runc").unwrap();
        std::os::unix::fs::symlink("../sbin/runc", unpacked.join("x/usr/bin/runc")).unwrap();
        for from in ["x/usr/sbin", "x/usr/bin"] {
            merge_into(&unpacked.join(from), &again).unwrap();
        }
        assert_eq!(fs::read_to_string(again.join("runc")).unwrap(), "runc");
    }
}
