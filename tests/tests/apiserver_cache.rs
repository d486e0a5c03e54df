//! The Kubernetes binaries behind the minikube stand-in are built once and cached: running the
//! build script again finds them and builds nothing.

use std::path::Path;
use std::process::Command;

fn build() -> String {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../harness/scripts/build-kubernetes.sh");
    let out = Command::new(script)
        .output()
        .expect("build-kubernetes.sh runs");
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
fn a_second_build_reuses_the_cached_kubernetes_binaries() {
    let first = build();
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).unwrap();
    let kubelet = Path::new(&first).join("kubelet");
    let before = modified(&kubelet);
    let second = build();
    assert_eq!(first, second);
    assert_eq!(modified(&kubelet), before, "the binaries were rebuilt");
    for binary in [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kubelet",
        "kube-proxy",
    ] {
        let version = Command::new(Path::new(&second).join(binary))
            .arg("--version")
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&version.stdout).contains("v1.20.2"),
            "{binary}: {version:?}"
        );
    }
    let pause = Command::new(Path::new(&second).join("pause"))
        .arg("-v")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&pause.stdout).contains("pause.c"),
        "{pause:?}"
    );
}
