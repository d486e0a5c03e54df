//! Debian packages: which versions apt would install (local `apt-cache`, no
//! network), and fetching and unpacking exactly those (`apt-get download`,
//! `dpkg-deb -x`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;

use crate::command::{run_stdout, shorten};
use crate::files::{has_ext, read_dir_sorted};
use crate::recipe::{KERNEL_META_PACKAGE, PACKAGES};
use crate::{ImageError, Result};

/// Exact package versions chosen for a build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Packages {
    /// Versioned kernel package, e.g. `linux-image-6.1.0-56-cloud-amd64`.
    pub(crate) kernel: String,
    /// Package name -> version, the kernel included.
    pub(crate) versions: BTreeMap<String, String>,
}

impl Packages {
    /// `uname -r` of the kernel: its package name without `linux-image-`.
    pub(crate) fn kernel_release(&self) -> &str {
        self.kernel
            .strip_prefix("linux-image-")
            .unwrap_or(&self.kernel)
    }
}

/// Resolves the kernel package and the candidate versions of all packages
/// (local apt metadata only, no download).
pub(crate) fn resolve_packages() -> Result<Packages> {
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
    let versions = resolve_versions(&names)?;
    Ok(Packages { kernel, versions })
}

/// The candidate version of each of `names` (local apt metadata only, no download).
pub(crate) fn resolve_versions(names: &[&str]) -> Result<BTreeMap<String, String>> {
    let policy = run_stdout(
        Command::new("apt-cache").arg("policy").args(names),
        "apt",
        "run `apt-get update`",
    )?;
    let candidates = parse_policy_candidates(&policy);
    let mut versions = BTreeMap::new();
    for &name in names {
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
    Ok(versions)
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

/// Downloads exactly the `versions` (package -> version) into `debs` and unpacks
/// them all into `unpacked` (in file name order).
pub(crate) fn download_and_unpack(
    versions: &BTreeMap<String, String>,
    debs: &Path,
    unpacked: &Path,
) -> Result<()> {
    let pinned: Vec<String> = versions.iter().map(|(n, v)| format!("{n}={v}")).collect();
    run_stdout(
        Command::new("apt-get").arg("download").args(&pinned).current_dir(debs),
        "apt",
        "check the apt sources and run `apt-get update` (the exact version may have left the mirror)",
    )?;
    let deb_files: Vec<_> = read_dir_sorted(debs)?
        .into_iter()
        .filter(|p| has_ext(p, "deb"))
        .collect();
    for deb in &deb_files {
        run_stdout(
            Command::new("dpkg-deb").arg("-x").arg(deb).arg(unpacked),
            "dpkg",
            "the downloaded package may be damaged: retry",
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
