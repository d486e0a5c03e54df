//! The shipped scenarios, one test per file under `scenarios/` (adding a file adds a test), and
//! a scenario whose check is false.

use std::path::PathBuf;

use mkh_scenario::Scenario;
use mkh_tests::*;
use rstest::rstest;

/// Runs the file through the `mkh` command, as a user would. Scenarios on the minikube backend
/// run on the stand-in here, which, like minikube, refuses root without `--force` (the test
/// command runs as root), in its host mode: the shipped scenarios check networks, IPs and SSH
/// and run no pod, and a node in the VM would add minutes of emulation to each.
#[rstest]
fn the_shipped_scenario_passes_and_leaves_nothing(#[files("../scenarios/*.toml")] file: PathBuf) {
    let scenario = Scenario::load(&file).unwrap_or_else(|e| panic!("{e}"));
    let force = if nix::unistd::getuid().is_root() {
        "--force"
    } else {
        ""
    };
    let (code, out, err) = mkh_with_env(
        &["scenario", "run", "--json", file.to_str().unwrap()],
        &[
            ("MKH_MINIKUBE", env!("CARGO_BIN_EXE_minikube")),
            ("MKH_MINIKUBE_ARGS", force),
            ("MK_STANDIN_CONTROL_PLANE", "host"),
        ],
    );
    let report: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    let s = &report["scenarios"][0];
    assert_eq!(s["outcome"], "passed", "{s}\n{err}");
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        s["steps"].as_array().map(Vec::len),
        Some(scenario.steps.len()),
        "{s}"
    );
    let env = s["environment"].as_str().expect("it ran in an environment");
    assert!(leftovers(env).is_empty(), "{:?}", leftovers(env));
}

#[test]
fn a_false_check_fails_naming_its_step_the_expected_and_the_seen_value_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wrong.toml");
    std::fs::write(
        &file,
        "description = \"the NAT IP is not where this file says\"\n\n[[step]]\nexpect-ssh = { machine = \"m1\", network = \"nat\" }\n\n[[step]]\nexpect-ip = { machine = \"m1\", network = \"nat\", in = \"192.0.2.0/24\" }\n\n[[step]]\nexpect-ssh = { machine = \"m1\", network = \"private\" }\n",
    )
    .unwrap();
    let junit = dir.path().join("junit.xml");
    let (code, out, err) = mkh(&[
        "scenario",
        "run",
        "--json",
        "--junit",
        junit.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["passed"], false);
    let s = &report["scenarios"][0];
    assert_eq!(s["outcome"], "failed");
    let problem = s["problem"].as_str().unwrap();
    assert!(
        problem.starts_with(&format!(
            "{}:6: step 2 (expect IP of m1 nat)",
            file.display()
        )),
        "{problem}"
    );
    assert!(
        problem.contains("expected an IP in 192.0.2.0/24, seen 10."),
        "{problem}"
    );
    // The step after the failure did not run; the progress said which failed.
    assert_eq!(s["steps"].as_array().unwrap().len(), 2);
    assert!(err.contains("[ 2/3] expect IP of m1 nat … FAILED"), "{err}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("<failure message=\""), "{xml}");
    // Its artifacts are kept, like a failed test's.
    let artifacts = PathBuf::from(s["artifacts"].as_str().unwrap());
    assert!(artifacts.join("error.txt").exists());
    let env = s["environment"].as_str().unwrap();
    assert!(leftovers(env).is_empty(), "{:?}", leftovers(env));
}

#[test]
fn keep_leaves_a_failed_scenario_s_environment_up_for_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kept.toml");
    std::fs::write(
        &file,
        "description = \"fails at once\"\n[[step]]\nrun = { machine = \"m1\", command = \"exit 3\", status = 0 }\n",
    )
    .unwrap();
    let (code, out, err) = mkh(&[
        "scenario",
        "run",
        "--keep",
        "--json",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let s = &report["scenarios"][0];
    assert!(
        s["problem"]
            .as_str()
            .unwrap()
            .contains("expected exit status 0, seen 3"),
        "{s}"
    );
    let kept = s["kept"].as_str().expect("kept").to_owned();
    assert_eq!(s["environment"].as_str(), Some(kept.as_str()));
    assert!(
        err.contains(&format!("`mkh down {kept}` removes it")),
        "{err}"
    );
    // Still up, the CLI's, and SSH answers; `mkh down` removes it.
    let (code, out, _) = mkh(&["ssh", &kept, "--", "echo", "still-here"]);
    assert_eq!((code, out.trim()), (0, "still-here"));
    let (code, _, err) = mkh(&["down", &kept]);
    assert_eq!(code, 0, "{err}");
    assert!(leftovers(&kept).is_empty(), "{:?}", leftovers(&kept));
}
