//! Packing the staged root into the initramfs: busybox's `cpio -o -H newc`,
//! uncompressed. Under TCG the kernel's decompression of a gzipped initramfs
//! takes longer than QEMU takes to load the larger file; the kernel unpacks an
//! uncompressed one by copying.

use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::command::{spawn, tail};
use crate::files::{io_err, read_dir_sorted};
use crate::{ImageError, Result};

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

/// `busybox cpio -o -H newc -R 0:0` of `root` into `initrd`.
/// `-R 0:0` makes every file root's whoever builds (the setuid bits of ip/tc
/// then mean root, and a non-root builder works too). The tool's stderr goes
/// to a file in `work`.
pub(crate) fn pack_initramfs(
    busybox: &Path,
    root: &Path,
    initrd: &Path,
    work: &Path,
) -> Result<()> {
    let list = archive_list(root)?.join("\n") + "\n";
    let output = fs::File::create(initrd).map_err(|e| io_err("create", initrd, e))?;
    let errors_path = work.join("cpio.stderr");
    let errors = fs::File::create(&errors_path).map_err(|e| io_err("create", &errors_path, e))?;
    let mut cpio = spawn(
        Command::new(busybox)
            .args(["cpio", "-o", "-H", "newc", "-R", "0:0"])
            .current_dir(root)
            .stdin(Stdio::piped())
            .stdout(output)
            .stderr(errors),
        "busybox-static",
    )?;
    // cpio writes into a file, so writing the whole list cannot block for long.
    let write_result = cpio
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(list.as_bytes());
    let cpio_status = cpio
        .wait()
        .map_err(|e| io_err("wait for cpio packing", root, e))?;
    if !cpio_status.success() {
        return Err(ImageError::CommandFailed {
            command: "busybox cpio -o -H newc -R 0:0".into(),
            status: cpio_status.to_string(),
            stderr: tail(&fs::read_to_string(&errors_path).unwrap_or_default(), 1500),
            hint: "check free space in the cache dir",
        });
    }
    write_result.map_err(|e| io_err("feed the file list to cpio for", initrd, e))
}
