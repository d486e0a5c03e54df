//! The manifests tell the truth: the declared `rust-version` is what the locked dependencies
//! need. Each check asks cargo itself (`cargo metadata`), so it follows the lock file.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The cargo running these tests (`CARGO`), else the one on PATH.
fn cargo() -> Command {
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo.current_dir(workspace_root());
    cargo
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_owned()
}

/// Runs `cargo` with `args` and returns its stdout; a failure panics with cargo's stderr.
fn run(mut cargo: Command, args: &[&str]) -> String {
    let out = cargo.args(args).output().expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo {}: {}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("cargo's output is UTF-8")
}

/// `1.89` or `1.89.0` as numbers: 1.89 is above 1.9, though not as text.
fn rust_version(text: &str) -> (u64, u64, u64) {
    let mut parts = text.split('.').map(|p| {
        p.parse()
            .unwrap_or_else(|e| panic!("rust-version {text:?}: {e}"))
    });
    let major = parts.next().expect("a major version");
    let minor = parts.next().unwrap_or(0);
    let patch = parts.next().unwrap_or(0);
    assert!(
        parts.next().is_none(),
        "rust-version {text:?}: too many parts"
    );
    (major, minor, patch)
}

#[test]
fn rust_versions_compare_as_numbers() {
    assert!(rust_version("1.89") > rust_version("1.9"));
    assert_eq!(rust_version("1.89"), rust_version("1.89.0"));
    assert!(rust_version("1.89.1") > rust_version("1.89"));
}

#[test]
fn the_declared_rust_version_is_what_the_locked_dependencies_need() {
    let metadata: Value = serde_json::from_str(&run(
        cargo(),
        &["metadata", "--locked", "--format-version", "1"],
    ))
    .expect("cargo metadata prints JSON");
    let members: Vec<&str> = metadata["workspace_members"]
        .as_array()
        .expect("workspace_members")
        .iter()
        .map(|id| id.as_str().expect("a package id"))
        .collect();
    let packages = metadata["packages"].as_array().expect("packages");
    let is_member = |p: &Value| members.contains(&p["id"].as_str().expect("a package id"));
    // The dependencies that declare one, each as (version, "name version").
    let needs: Vec<((u64, u64, u64), String)> = packages
        .iter()
        .filter(|p| !is_member(p))
        .filter_map(|p| {
            let rv = p["rust_version"].as_str()?;
            let name = p["name"].as_str().unwrap_or("?");
            let version = p["version"].as_str().unwrap_or("?");
            Some((rust_version(rv), format!("{name} {version}")))
        })
        .collect();
    let needed = needs
        .iter()
        .map(|(v, _)| *v)
        .max()
        .expect("some dependency declares one");
    let raised_by: Vec<&str> = needs
        .iter()
        .filter(|(v, _)| *v == needed)
        .map(|(_, p)| p.as_str())
        .collect();

    let manifest = workspace_root().join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).expect("the workspace manifest");
    let workspace: toml::Table = toml::from_str(&text).expect("the workspace manifest parses");
    let declared = workspace["workspace"]["package"]["rust-version"]
        .as_str()
        .expect("[workspace.package] rust-version");
    assert_eq!(
        rust_version(declared),
        needed,
        "{} declares rust-version {declared}, but {} need {}.{}.{}: set it to that",
        manifest.display(),
        raised_by.join(", "),
        needed.0,
        needed.1,
        needed.2
    );
    // A member may not declare an older one of its own.
    for p in packages.iter().filter(|p| is_member(p)) {
        if let Some(rv) = p["rust_version"].as_str() {
            let name = p["name"].as_str().unwrap_or("?");
            assert_eq!(
                rust_version(rv),
                needed,
                "{name} declares rust-version {rv}"
            );
        }
    }
}
