//! The CI example under `examples/` cannot run here (it is a GitHub Actions workflow): its
//! YAML must parse and hold what a runner needs, consistent with this repository's settings.

use serde_yaml_ng::Value;

fn workflow() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/github-actions.yml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn steps(job: &Value) -> Vec<&Value> {
    job["steps"].as_sequence().expect("steps").iter().collect()
}

fn run_text(step: &Value) -> String {
    step["run"].as_str().unwrap_or("").to_owned()
}

#[test]
fn the_github_actions_example_has_what_a_runner_needs() {
    let wf = workflow();
    let jobs = wf["jobs"].as_mapping().expect("jobs");
    let job = jobs.values().next().expect("a job");
    assert!(job["runs-on"].as_str().unwrap().contains("ubuntu"));
    let partitions = job["strategy"]["matrix"]["partition"]
        .as_sequence()
        .expect("a partition matrix");
    let steps = steps(job);
    let all_runs: String = steps.iter().map(|s| run_text(s)).collect();

    // /dev/kvm opened to the runner, libvirt installed and started.
    assert!(all_runs.contains("KERNEL==\"kvm\"") && all_runs.contains("udevadm trigger"));
    for package in [
        "libvirt-daemon-system",
        "qemu-system-x86",
        "dnsmasq-base",
        "busybox-static",
    ] {
        assert!(all_runs.contains(package), "{package} not installed");
    }
    assert!(all_runs.contains("systemctl enable --now libvirtd virtlogd"));

    // mkh's cache (guest image, minikube's ISO under it) restored between runs.
    let cache_dir = job["env"]["MKH_CACHE_DIR"].as_str().expect("MKH_CACHE_DIR");
    let cache = steps
        .iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("actions/cache@"))
        })
        .expect("a cache step");
    assert!(cache["with"]["path"].as_str().unwrap().contains(cache_dir));
    assert!(cache["with"]["key"].is_string());

    // nextest with the ci profile, partitioned as the matrix says.
    let test = steps
        .iter()
        .map(|s| run_text(s))
        .find(|r| r.contains("cargo nextest run"))
        .expect("a nextest step");
    assert!(test.contains("--profile ci"), "{test}");
    assert!(
        test.contains(&format!(
            "--partition hash:${{{{ matrix.partition }}}}/{}",
            partitions.len()
        )),
        "{test}"
    );

    // On failure: the artifact directory and the JUnit file the ci profile writes.
    let upload = steps
        .iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("actions/upload-artifact@"))
        })
        .expect("an upload step");
    assert_eq!(upload["if"].as_str(), Some("failure()"));
    let paths = upload["with"]["path"].as_str().unwrap();
    assert!(paths.contains("target/mkh-artifacts/"), "{paths}");
    let nextest: toml::Value = toml::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../.config/nextest.toml"
        ))
        .unwrap(),
    )
    .unwrap();
    let junit = nextest["profile"]["ci"]["junit"]["path"].as_str().unwrap();
    assert!(
        paths.contains(&format!("target/nextest/ci/{junit}")),
        "{paths} lacks the ci profile's {junit}"
    );
}
