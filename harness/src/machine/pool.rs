//! mkh's storage pool on a remote libvirt host: what a guest needs there that a local libvirt
//! reads from this machine's files.
//!
//! - The guest image, uploaded through libvirt once per image digest and reused by every later
//!   environment: `mkh-guest-<digest16>.kernel` and `.initrd`, then the manifest
//!   `mkh-guest-<digest16>.json` (mkh's metadata: digest, sizes, who uploaded it and when),
//!   written last, so that an image without a manifest is an upload under way or cut short.
//!   The cache belongs to no environment: the reaper and the audit never count it; `mkh image`
//!   lists it and removes it.
//! - Each machine's console log, `<domain>.console.log`, which virtlogd writes on that host
//!   (libvirt sees it as a volume after a pool refresh) and mkh downloads when it reads it. It
//!   goes with its domain ([`remove_domain`]); one whose domain is gone is a leftover
//!   ([`sweep_orphan_consoles`]).
//!
//! mkh touches no volume of the pool but those of these names.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::libvirt::{Libvirt, LibvirtErrorKind, Removal, VolumeInfo};

use super::image::GuestImage;

/// The pool's name on the libvirt host.
pub(crate) const POOL: &str = "mkh-images";
/// Where the pool keeps its files on the libvirt host, when mkh defines it.
const POOL_DIR: &str = "/var/lib/libvirt/mkh-images";
const CONSOLE_SUFFIX: &str = ".console.log";
/// How long a client waits for the image in all (another client's upload of it included).
const UPLOAD_WAIT: Duration = Duration::from_secs(600);
/// An upload whose volumes did not grow for this long is dead.
const STALLED: Duration = Duration::from_secs(15);

/// One guest image in the pool, as its manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedImage {
    /// The image's content digest (64 hex digits), as in the local cache.
    pub digest: String,
    /// The kernel's volume.
    pub kernel: String,
    /// The initramfs's volume.
    pub initrd: String,
    /// Bytes of both.
    pub bytes: u64,
    /// When it was uploaded (RFC 3339).
    pub uploaded_at: String,
    /// The host name of the client that uploaded it.
    pub uploaded_by: String,
}

const IMAGE_PREFIX: &str = "mkh-guest-";

fn stem(digest: &str) -> String {
    format!("{IMAGE_PREFIX}{}", &digest[..digest.len().min(16)])
}

fn manifest_name(digest: &str) -> String {
    format!("{}.json", stem(digest))
}

fn pool_xml() -> String {
    format!(
        "<pool type='dir'><name>{POOL}</name><target><path>{POOL_DIR}</path>\
         <permissions><mode>0755</mode></permissions></target></pool>"
    )
}

/// The paths on the libvirt host of the image's kernel and initrd, uploading them first when
/// the pool does not hold this digest yet, or waiting for another client's upload of it. An
/// image is used only once its manifest reads and both volumes hold the bytes it records; one
/// whose volumes (manifest included) stop growing for [`STALLED`] was cut short (its client
/// died, or its files were removed by hand): it is removed and made again.
pub(crate) fn image_on_host(lv: &Libvirt, image: &GuestImage) -> Result<(PathBuf, PathBuf)> {
    lv.ensure_dir_pool(POOL, &pool_xml())?;
    let manifest = manifest_name(&image.digest);
    let names = [".kernel", ".initrd", ".json"].map(|ext| format!("{}{ext}", stem(&image.digest)));
    let started = Instant::now();
    let mut growth: Option<(u64, Instant)> = None;
    loop {
        let volumes = lv.volumes(POOL)?;
        let find = |name: &str| volumes.iter().find(|v| v.name == name);
        let complete = find(&manifest)
            .and_then(|_| read_manifest(lv, &manifest).ok())
            .and_then(|m| {
                let (kernel, initrd) = (find(&m.kernel)?, find(&m.initrd)?);
                let whole = |v: &VolumeInfo| v.allocated >= v.bytes;
                (kernel.bytes + initrd.bytes == m.bytes && whole(kernel) && whole(initrd))
                    .then(|| (PathBuf::from(&kernel.path), PathBuf::from(&initrd.path)))
            });
        if let Some(paths) = complete {
            tracing::debug!(digest = %image.digest, "guest image found in the host's pool");
            return Ok(paths);
        }
        let present: Vec<_> = names.iter().filter_map(|n| find(n)).collect();
        if present.is_empty() {
            match upload(lv, image) {
                Ok(()) => continue,
                // Another client created a volume first: its upload is under way.
                Err(Error::Libvirt { source, .. })
                    if source.kind() == LibvirtErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        } else {
            let allocated = present.iter().map(|v| v.allocated).sum::<u64>();
            match growth {
                Some((seen, since)) if seen == allocated && since.elapsed() >= STALLED => {
                    tracing::info!(digest = %image.digest, "an upload of the guest image stalled: made again");
                    remove_image_volumes(lv, &image.digest)?;
                    growth = None;
                    continue;
                }
                Some((seen, _)) if seen == allocated => {}
                Some(_) => growth = Some((allocated, Instant::now())),
                None => {
                    crate::progress::phase(
                        "waiting for another client's upload of the guest image to the libvirt host",
                    );
                    growth = Some((allocated, Instant::now()));
                }
            }
        }
        if started.elapsed() >= UPLOAD_WAIT {
            return Err(Error::Upload {
                volume: manifest,
                problem: format!(
                    "the guest image did not appear in pool {POOL} within {}s",
                    UPLOAD_WAIT.as_secs()
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn upload(lv: &Libvirt, image: &GuestImage) -> Result<()> {
    crate::progress::phase(format!(
        "uploading the guest image to the libvirt host's pool {POOL} (once per image)"
    ));
    let stem = stem(&image.digest);
    let mut bytes = 0;
    for (path, ext) in [(&image.kernel, "kernel"), (&image.initrd, "initrd")] {
        let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        lv.upload_volume(POOL, &format!("{stem}.{ext}"), len, &mut file)?;
        bytes += len;
    }
    let manifest = CachedImage {
        digest: image.digest.clone(),
        kernel: format!("{stem}.kernel"),
        initrd: format!("{stem}.initrd"),
        bytes,
        uploaded_at: jiff::Timestamp::now().to_string(),
        uploaded_by: crate::owner::HostIdentity::current().host,
    };
    let text = serde_json::to_vec_pretty(&manifest).expect("a manifest serializes");
    lv.upload_volume(
        POOL,
        &manifest_name(&image.digest),
        text.len() as u64,
        &mut text.as_slice(),
    )?;
    tracing::info!(digest = %image.digest, bytes, "uploaded the guest image to the libvirt host");
    Ok(())
}

fn read_manifest(lv: &Libvirt, name: &str) -> Result<CachedImage> {
    let bytes = lv.download_volume(POOL, name, 64 * 1024)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::BadFile {
        path: PathBuf::from(format!("{POOL}/{name}")),
        what: "mkh's guest image manifest on the libvirt host".into(),
        problem: e.to_string(),
    })
}

fn remove_image_volumes(lv: &Libvirt, digest: &str) -> Result<()> {
    let stem = stem(digest);
    // The manifest first: without it, the rest is an upload cut short, never a cached image.
    for ext in ["json", "kernel", "initrd"] {
        lv.delete_volume(POOL, &format!("{stem}.{ext}"))?;
    }
    Ok(())
}

/// The guest images in the pool whose manifest reads (none when it does not exist); an upload
/// under way or cut short has none yet.
#[cfg_attr(not(feature = "admin"), allow(dead_code))] // The `mkh` command's.
pub(crate) fn cached_images(lv: &Libvirt) -> Result<Vec<CachedImage>> {
    let mut out = Vec::new();
    for v in lv.volumes(POOL)? {
        if v.name.starts_with(IMAGE_PREFIX) && v.name.ends_with(".json") {
            match read_manifest(lv, &v.name) {
                Ok(m) => out.push(m),
                Err(e) => tracing::debug!("{e}"),
            }
        }
    }
    Ok(out)
}

/// Removes every guest image from the pool, uploads cut short included; returns those whose
/// manifest read. Machines defined on them do not start again until an environment uploads
/// the image anew.
#[cfg_attr(not(feature = "admin"), allow(dead_code))] // The `mkh` command's.
pub(crate) fn remove_cached_images(lv: &Libvirt) -> Result<Vec<CachedImage>> {
    let images = cached_images(lv)?;
    // The manifests first: without one, the rest is never taken for a cached image.
    let mut names: Vec<String> = lv
        .volumes(POOL)?
        .into_iter()
        .map(|v| v.name)
        .filter(|n| n.starts_with(IMAGE_PREFIX))
        .collect();
    names.sort_by_key(|n| !n.ends_with(".json"));
    for name in names {
        lv.delete_volume(POOL, &name)?;
    }
    Ok(images)
}

/// Where a domain's console log goes on a remote libvirt host: a file of mkh's pool.
pub(crate) fn console_path_on_host(lv: &Libvirt, domain: &str) -> Result<PathBuf> {
    let dir = lv.ensure_dir_pool(POOL, &pool_xml())?;
    Ok(Path::new(&dir).join(format!("{domain}{CONSOLE_SUFFIX}")))
}

/// A domain's console log, as far as the remote host's virtlogd wrote it (empty before).
pub(crate) fn console_text(lv: &Libvirt, domain: &str) -> String {
    let name = format!("{domain}{CONSOLE_SUFFIX}");
    let _ = lv.volumes(POOL); // a refresh: the log grows behind libvirt's back
    lv.download_volume(POOL, &name, 16 << 20)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// The domain whose console log a volume of the pool is: `<domain>.console.log`, or one of
/// virtlogd's rotated files `<domain>.console.log.<n>`; `None` for any other volume.
pub(crate) fn console_domain(volume: &str) -> Option<&str> {
    let (log, rotation) = match volume.rsplit_once('.') {
        Some((log, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => (log, true),
        _ => (volume, false),
    };
    let domain = log.strip_suffix(CONSOLE_SUFFIX)?;
    (!domain.is_empty() && (rotation || log.len() == volume.len())).then_some(domain)
}

/// The console log volumes of `domain` in the pool.
fn console_volumes_of(lv: &Libvirt, domain: &str) -> Result<Vec<String>> {
    Ok(lv
        .volumes(POOL)?
        .into_iter()
        .map(|v| v.name)
        .filter(|n| console_domain(n) == Some(domain))
        .collect())
}

/// Removes a domain (as [`Libvirt::remove_domain_if`]) and, on a remote host, its console log.
/// The domain's removal is what counts: a log that could not be deleted is logged, and goes
/// with the next sweep.
pub(crate) fn remove_domain(
    lv: &Libvirt,
    name: &str,
    still_wanted: impl Fn(&str) -> bool,
) -> Result<Removal> {
    let removal = lv.remove_domain_if(name, still_wanted)?;
    if removal != Removal::Changed && !lv.is_local() && lv.has_pool(POOL) {
        let deleted = console_volumes_of(lv, name).and_then(|logs| {
            logs.iter()
                .try_for_each(|log| lv.delete_volume(POOL, log).map(drop))
        });
        if let Err(e) = deleted {
            tracing::warn!("the console log of domain {name} stays for now: {e}");
        }
    }
    Ok(removal)
}

/// Console logs in the pool whose domain no longer exists: left by a teardown cut short
/// between the domain and its log. A log exists only once its domain started, so one whose
/// domain is gone (looked up by name just before the deletion) is nobody's. Returns the names
/// removed.
pub(crate) fn sweep_orphan_consoles(lv: &Libvirt) -> Result<Vec<String>> {
    if lv.is_local() || !lv.has_pool(POOL) {
        return Ok(Vec::new());
    }
    let mut removed = Vec::new();
    for volume in lv.volumes(POOL)? {
        let Some(domain) = console_domain(&volume.name) else {
            continue;
        };
        if lv.domain_state(domain)? == crate::libvirt::DomainState::Missing
            && lv.delete_volume(POOL, &volume.name)? == Removal::Removed
        {
            removed.push(volume.name);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_mkh_s_own_and_the_manifest_reads_back() {
        let digest = "0123456789abcdef".repeat(4);
        assert_eq!(manifest_name(&digest), "mkh-guest-0123456789abcdef.json");
        let m = CachedImage {
            digest: digest.clone(),
            kernel: format!("{}.kernel", stem(&digest)),
            initrd: format!("{}.initrd", stem(&digest)),
            bytes: 3,
            uploaded_at: "2026-12-03T00:00:00Z".into(),
            uploaded_by: "client".into(),
        };
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<CachedImage>(&text).unwrap(), m);
        assert!(pool_xml().contains("<name>mkh-images</name>"));
    }

    #[test]
    fn console_logs_are_known_by_name_rotated_ones_too() {
        assert_eq!(console_domain("mkh-a1.console.log"), Some("mkh-a1"));
        assert_eq!(console_domain("mkh-a1.console.log.0"), Some("mkh-a1"));
        assert_eq!(console_domain("x.y.console.log.12"), Some("x.y"));
        for other in [
            "mkh-guest-0123456789abcdef.kernel",
            "mkh-guest-0123456789abcdef.json",
            ".console.log",
            "a.console.log.x",
            "a.console.log.",
            "a.console.logs",
            "user-disk.qcow2",
        ] {
            assert_eq!(console_domain(other), None, "{other}");
        }
    }
}
