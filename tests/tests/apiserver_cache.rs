//! The real kube-apiserver behind the minikube stand-in is built once and cached: running the
//! build script again finds it and builds nothing.

use std::path::Path;
use std::process::Command;

fn build() -> String {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../harness/scripts/build-apiserver.sh");
    let out = Command::new(script)
        .output()
        .expect("build-apiserver.sh runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn a_second_build_reuses_the_cached_api_server() {
    let first = build();
    let modified = |p: &str| std::fs::metadata(p).and_then(|m| m.modified()).unwrap();
    let before = modified(&first);
    let second = build();
    assert_eq!(first, second);
    assert_eq!(modified(&second), before, "the binary was rebuilt");
    let version = Command::new(&second).arg("--version").output().unwrap();
    assert!(
        String::from_utf8_lossy(&version.stdout).contains("v1.20"),
        "{version:?}"
    );
}
