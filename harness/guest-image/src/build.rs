//! One build, from apt's versions to the published image directory.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use crate::cache::{complete_image, write_recipe_marker, BuildLock, LOCK_WAIT};
use crate::files::{copy_with_mode, io_err, make_dir_0755, set_mode, write_with_mode};
use crate::pack::pack_initramfs;
use crate::packages::{download_and_unpack, resolve_packages, Packages};
use crate::recipe::{image_manifest, sha256_hex, BUSYBOX};
use crate::stage::{find_unpacked, stage_root};
use crate::{GuestImage, ImageError, Result, INITRD_FILE, KERNEL_FILE};

/// What went in: the digest input plus the host libraries copied.
const MANIFEST_FILE: &str = "manifest.txt";

/// Resolves the current package versions, builds their image unless it
/// exists, and points the marker of `recipe` at it.
pub(crate) fn refresh_in(guest_dir: &Path, recipe: &str) -> Result<GuestImage> {
    let packages = resolve_packages()?;
    let manifest = image_manifest(&packages);
    let digest = sha256_hex(manifest.as_bytes());
    let image = match complete_image(guest_dir, &digest) {
        Some(image) => image,
        None => {
            let built = || complete_image(guest_dir, &digest).is_some();
            if let Some(lock) = BuildLock::acquire(guest_dir, LOCK_WAIT, built)? {
                // Re-check under the lock: another process may have finished.
                if complete_image(guest_dir, &digest).is_none() {
                    build_image(&lock, guest_dir, &digest, &packages, &manifest)?;
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

/// Builds the image `digest` in a work dir and renames it into place.
fn build_image(
    lock: &BuildLock,
    guest_dir: &Path,
    digest: &str,
    packages: &Packages,
    manifest: &str,
) -> Result<()> {
    let (work, _cleanup) = lock.fresh_work_dir(digest)?;
    let debs = work.join("debs");
    let unpacked = work.join("unpacked");
    let root = work.join("root");
    let out = work.join("out");
    for dir in [&debs, &unpacked, &root, &out] {
        make_dir_0755(dir)?;
    }

    // Download exactly the versions the digest names.
    download_and_unpack(&packages.versions, &debs, &unpacked)?;
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
    copy_with_mode(
        &kernel_src,
        &out.join(KERNEL_FILE),
        0o644,
        "copy the kernel to",
    )?;

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
    write_with_mode(&out.join(MANIFEST_FILE), manifest, 0o644)?;

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
