//! The guest's root file system: directories, binaries from the unpacked
//! packages, busybox's applet links, the shared libraries `ldd` names, the
//! kernel modules and the assets.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::command::run_stdout;
use crate::files::{
    copy_with_mode, create_parents, make_dir_0755, make_dir_with_mode, make_symlink,
    read_dir_sorted, write_with_mode,
};
use crate::modules::stage_modules;
use crate::packages::Packages;
use crate::recipe::{ASSETS, BINARIES, BUSYBOX, LINKS, MULTIARCH, TC_DIST_DIR};
use crate::{ImageError, Result};

/// The first of `candidates` (paths relative to `unpacked`) that is a file.
pub(crate) fn find_unpacked(
    unpacked: &Path,
    candidates: &[&str],
    what: &'static str,
) -> Result<PathBuf> {
    candidates
        .iter()
        .map(|c| unpacked.join(c))
        .find(|p| p.is_file())
        .ok_or_else(|| ImageError::MissingFile {
            what,
            path: unpacked.join(candidates[0]),
        })
}

/// Lays out the guest's root file system in `root`; returns the host
/// libraries copied in (for the manifest).
///
/// Layout: everything executable in `/usr/bin` with `/bin`, `/sbin` and
/// `/usr/sbin` pointing there (so any PATH, including dropbear's compiled-in
/// `/usr/bin:/bin`, finds every tool), libraries in `/usr/lib/<multiarch>`
/// with `/lib` and `/lib64` pointing into `/usr`.
pub(crate) fn stage_root(unpacked: &Path, root: &Path, packages: &Packages) -> Result<Vec<String>> {
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
    make_dir_with_mode(&root.join("tmp"), 0o1777)?;
    make_dir_with_mode(&root.join("root"), 0o700)?;
    for (link, target) in [
        ("bin", "usr/bin"),
        ("sbin", "usr/bin"),
        ("usr/sbin", "bin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
        ("var/run", "../run"),
    ] {
        make_symlink(target, &root.join(link))?;
    }

    // Binaries first, so that busybox's applet links do not shadow them.
    let mut dynamic = Vec::new();
    for (from, to, mode) in BINARIES {
        let src = find_unpacked(unpacked, from, "a binary")?;
        copy_with_mode(&src, &root.join(to), *mode, "copy binary to")?;
        dynamic.push(src);
    }
    let tc_dist = unpacked.join(TC_DIST_DIR);
    if tc_dist.is_dir() {
        let dst_dir = root.join(TC_DIST_DIR);
        make_dir_0755(&dst_dir)?;
        for file in read_dir_sorted(&tc_dist)? {
            let dst = dst_dir.join(file.file_name().unwrap_or_default());
            copy_with_mode(&file, &dst, 0o644, "copy to")?;
        }
    }

    for (link, target) in LINKS {
        make_symlink(target, &root.join(link))?;
    }

    // busybox and one symlink per applet.
    let busybox = find_unpacked(unpacked, BUSYBOX, "busybox")?;
    copy_with_mode(
        &busybox,
        &root.join("usr/bin/busybox"),
        0o755,
        "copy busybox to",
    )?;
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
            make_symlink("busybox", &link)?;
        }
    }

    let host_libs = copy_libraries(unpacked, root, &dynamic)?;
    stage_modules(unpacked, root, packages)?;

    for asset in ASSETS {
        let dst = root.join(asset.path);
        create_parents(&dst)?;
        write_with_mode(&dst, asset.content, asset.mode)?;
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
            create_parents(&dst)?;
            // fs::copy follows symlinks: the guest gets the file under its soname.
            copy_with_mode(&src, &dst, 0o755, "copy library to")?;
        }
    }
    Ok(host.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
