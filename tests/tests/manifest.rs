//! The manifests tell the truth: the declared `rust-version` is what the locked dependencies
//! need, and every published crate carries its licence and metadata, packages, and builds from
//! its package alone. Each check asks cargo itself (`cargo metadata`, `cargo package`).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The cargo running these tests (`CARGO`), else the one that built them.
fn cargo() -> Command {
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into()));
    cargo.current_dir(workspace_root());
    cargo
}

fn workspace_root() -> PathBuf {
    mkh_tests::workspace()
}

/// Runs `cargo` and returns its stdout; a failure panics with cargo's stderr.
fn run(cargo: &mut Command) -> String {
    let out = cargo.output().expect("cargo runs");
    assert!(
        out.status.success(),
        "{cargo:?}: {}\n{}",
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

/// `cargo metadata` of the workspace, with every package of the lock file.
struct Metadata {
    packages: Vec<Value>,
    members: Vec<String>,
}

impl Metadata {
    fn load() -> Metadata {
        let json: Value = serde_json::from_str(&run(cargo().args([
            "metadata",
            "--locked",
            "--format-version",
            "1",
        ])))
        .expect("cargo metadata prints JSON");
        let members = json["workspace_members"]
            .as_array()
            .expect("workspace_members")
            .iter()
            .map(|id| id.as_str().expect("a package id").to_owned())
            .collect();
        let packages = json["packages"].as_array().expect("packages").clone();
        Metadata { packages, members }
    }

    fn is_member(&self, p: &Value) -> bool {
        let id = p["id"].as_str().expect("a package id");
        self.members.iter().any(|m| m == id)
    }

    fn members(&self) -> impl Iterator<Item = &Value> {
        self.packages.iter().filter(|p| self.is_member(p))
    }

    /// The members that may be published (`publish = false` is an empty list of registries).
    fn published(&self) -> impl Iterator<Item = &Value> {
        self.members().filter(|p| is_published(p))
    }
}

fn is_published(p: &Value) -> bool {
    p["publish"]
        .as_array()
        .is_none_or(|registries| !registries.is_empty())
}

fn name(p: &Value) -> &str {
    p["name"].as_str().expect("a package name")
}

fn version(p: &Value) -> &str {
    p["version"].as_str().expect("a package version")
}

#[test]
fn the_declared_rust_version_is_what_the_locked_dependencies_need() {
    let metadata = Metadata::load();
    // The dependencies that declare one, each as (version, "name version").
    let needs: Vec<((u64, u64, u64), String)> = metadata
        .packages
        .iter()
        .filter(|p| !metadata.is_member(p))
        .filter_map(|p| {
            let rv = p["rust_version"].as_str()?;
            Some((rust_version(rv), format!("{} {}", name(p), version(p))))
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
    // A member may not declare another one of its own.
    for p in metadata.members() {
        if let Some(rv) = p["rust_version"].as_str() {
            let name = name(p);
            assert_eq!(
                rust_version(rv),
                needed,
                "{name} declares rust-version {rv}"
            );
        }
    }
}

/// What crates.io and docs.rs show: the licence texts beside the manifest (cargo packages only
/// files inside the crate's directory), a readme, keywords and categories, and for a crate with
/// features, which of them docs.rs builds with.
#[test]
fn every_published_crate_carries_its_licence_and_metadata() {
    let metadata = Metadata::load();
    let mut problems = Vec::new();
    for p in metadata.published() {
        let name = name(p);
        let dir = Path::new(p["manifest_path"].as_str().expect("a manifest path"))
            .parent()
            .expect("a crate directory");
        for file in ["LICENSE-MIT", "LICENSE-APACHE"] {
            if !dir.join(file).is_file() {
                problems.push(format!("{name}: no {file} in {}", dir.display()));
            }
        }
        for key in ["license", "readme"] {
            if p[key].as_str().is_none() {
                problems.push(format!("{name}: no {key}"));
            }
        }
        for key in ["keywords", "categories"] {
            if p[key].as_array().is_none_or(|a| a.is_empty()) {
                problems.push(format!("{name}: no {key}"));
            }
        }
        let features = p["features"].as_object().expect("features");
        if features.keys().any(|f| f != "default") && p["metadata"]["docs"]["rs"].is_null() {
            problems.push(format!(
                "{name}: features, but no [package.metadata.docs.rs] choosing them"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every published crate packages, and each package builds from its own files alone: cargo
/// verifies a package by building it unpacked, with its siblings taken from the packages of the
/// same run rather than from their directories. A file included from outside a crate's
/// directory, or a dependency on a sibling without a version, fails here and not at
/// publication. Into the workspace's own target directory, where the dependencies are built
/// already.
#[test]
fn every_published_crate_packages_and_builds_alone() {
    let metadata = Metadata::load();
    // <target>/debug/deps/<test-exe>
    let target = std::env::current_exe()
        .expect("the test's path")
        .ancestors()
        .nth(3)
        .expect("target layout")
        .to_owned();
    let mut package = cargo();
    // Offline: the dependencies are the workspace's, fetched when it was built.
    package
        .args(["package", "--workspace", "--allow-dirty", "--offline"])
        .arg("--target-dir")
        .arg(&target);
    for p in metadata.members().filter(|p| !is_published(p)) {
        package.args(["--exclude", name(p)]);
    }
    run(&mut package);

    let packaged = target.join("package");
    let mut crates: Vec<String> = std::fs::read_dir(&packaged)
        .expect("cargo package's directory")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter_map(|f| f.strip_suffix(".crate").map(str::to_owned))
        .collect();
    crates.sort();
    println!("packaged and built: {}", crates.join(", "));
    for p in metadata.published() {
        let unpacked = format!("{}-{}", name(p), version(p));
        assert!(
            crates.contains(&unpacked),
            "{unpacked} was not packaged: {crates:?}"
        );
        for file in ["LICENSE-MIT", "LICENSE-APACHE"] {
            assert!(
                packaged.join(&unpacked).join(file).is_file(),
                "{unpacked}'s package has no {file}"
            );
        }
    }
}
