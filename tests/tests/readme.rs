//! The README's Rust examples are what users copy: each is compiled and run here in a crate of
//! its own outside the workspace, with the dependencies the README lists.

use std::path::{Path, PathBuf};
use std::process::Command;

const README: &str = include_str!("../../README.md");

/// The README's ```rust blocks, in order.
fn rust_blocks() -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in README.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```rust") => current = Some(String::new()),
            (Some(_), "```") => blocks.push(current.take().expect("in a block")),
            (Some(text), l) => {
                text.push_str(l);
                text.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn the_readme_fixture_example_is_the_suite_s_examples_file() {
    let blocks = rust_blocks();
    assert_eq!(blocks.len(), 2, "the README has two Rust examples");
    assert_eq!(blocks[0], include_str!("examples.rs"));
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

#[test]
fn the_readme_examples_compile_and_pass_in_a_crate_of_their_own() {
    let root = workspace();
    let dir = tempfile::tempdir().unwrap();
    let krate = dir.path().join("readme-user");
    std::fs::create_dir_all(krate.join("src")).unwrap();
    std::fs::create_dir_all(krate.join("tests")).unwrap();
    // The dependencies the README names, nothing else.
    let manifest = format!(
        r#"[package]
name = "readme-user"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
mkh = {{ path = "{root}/harness", default-features = false }}
mkh-fixtures = {{ path = "{root}/fixtures" }}
rstest = "0.26"
tokio = {{ version = "1", features = ["macros", "rt"] }}
"#,
        root = root.display()
    );
    std::fs::write(krate.join("Cargo.toml"), manifest).unwrap();
    std::fs::write(krate.join("src/lib.rs"), "").unwrap();
    // The workspace's lock file: the same versions, resolved offline.
    std::fs::copy(root.join("Cargo.lock"), krate.join("Cargo.lock")).unwrap();
    for (i, block) in rust_blocks().iter().enumerate() {
        std::fs::write(krate.join(format!("tests/readme_{i}.rs")), block).unwrap();
    }
    // The workspace's target directory: dependencies built already are reused (different
    // features of mkh build apart, under their own hashes).
    let target = std::env::current_exe()
        .unwrap()
        .ancestors()
        .nth(3)
        .unwrap()
        .to_owned();
    let out = Command::new(env!("CARGO"))
        .args(["test", "--offline", "--quiet", "--", "--test-threads=1"])
        .current_dir(&krate)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("cargo runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    // Three fixture tests and one plain one ran and passed.
    assert!(text.contains("3 passed"), "{text}");
    assert!(text.contains("1 passed"), "{text}");
}
