//! How mkh behaves inside a user's nextest suite: tests of `deliberate.rs`, run here through a
//! nested `cargo nextest run` with a run id of their own, and what they leave behind checked
//! from outside.

use std::path::Path;
use std::process::{Command, Output};

use mkh_tests::*;
use serde_json::Value;

/// Runs `deliberate.rs` tests matching `filter` under nextest profile `profile`; returns the
/// output, the run id, and the directory the tests reported into.
fn nested_run(profile: &str, filter: &str, threads: &str) -> (Output, String, tempfile::TempDir) {
    let (mut cmd, run_id, out_dir) = nested_command(profile, filter, threads, &[]);
    let output = cmd.output().expect("cargo nextest runs");
    (output, run_id, out_dir)
}

/// The `cargo nextest run` of [`nested_run`], with `extra` arguments, not yet started.
fn nested_command(
    profile: &str,
    filter: &str,
    threads: &str,
    extra: &[&str],
) -> (Command, String, tempfile::TempDir) {
    let out_dir = tempfile::tempdir().unwrap();
    let run_id = format!(
        "selftest-{}-{}-{}",
        std::process::id(),
        filter.len(),
        extra.join("").replace(['/', ':'], "_")
    );
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args([
        "nextest",
        "run",
        "-p",
        "mkh-tests",
        "--test",
        "deliberate",
        "--run-ignored",
        "only",
    ])
    .args([
        "--profile",
        profile,
        "--test-threads",
        threads,
        "--no-fail-fast",
        "-E",
        filter,
    ])
    .args(extra)
    .current_dir(env!("CARGO_MANIFEST_DIR"))
    .env("MKH_SELFTEST_OUT", out_dir.path())
    .env("MKH_RUN_ID", &run_id);
    for (k, _) in std::env::vars() {
        if k.starts_with("NEXTEST_") {
            cmd.env_remove(k);
        }
    }
    (cmd, run_id, out_dir)
}

fn reported(dir: &Path, test: &str) -> Value {
    let path = dir.join(format!("{test}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{test} did not report (its cluster never came up?): {e}"));
    serde_json::from_str(&text).unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Nothing of the nested run is left in libvirt.
fn assert_run_left_nothing(run_id: &str, log: &str) {
    let (code, out, err) = mkh(&["audit", "--run", run_id]);
    assert_eq!(
        code, 0,
        "the nested run left objects:\n{out}{err}\n--- nested run:\n{log}"
    );
}

#[test]
fn a_test_that_panics_leaves_its_console_log_and_nothing_in_libvirt() {
    let (output, run_id, dir) = nested_run("default", "test(=deliberately_panics)", "1");
    let log = text(&output);
    assert!(
        !output.status.success(),
        "the deliberate failure passed:\n{log}"
    );
    let got = reported(dir.path(), "deliberately_panics");
    assert_networks_gone(&got, &log);
    assert_run_left_nothing(&run_id, &log);
    assert_console_log_kept(&got, &log);
}

/// The networks the nested test reported are gone.
fn assert_networks_gone(got: &Value, log: &str) {
    for net in got["networks"].as_array().unwrap() {
        assert!(
            !network_exists(net.as_str().unwrap()),
            "{net} left behind:\n{log}"
        );
    }
}

/// The failed test's artifact directory holds its machine's console log (then it is removed).
fn assert_console_log_kept(got: &Value, log: &str) {
    let artifacts = Path::new(got["artifacts"].as_str().unwrap());
    let console = std::fs::read_dir(artifacts)
        .unwrap_or_else(|e| panic!("no artifact directory {}: {e}\n{log}", artifacts.display()))
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".console.log"))
        .unwrap_or_else(|| panic!("no console log in {}\n{log}", artifacts.display()));
    let console = std::fs::read_to_string(console.path()).unwrap();
    assert!(
        console.contains("mkh-guest: init started, kernel "),
        "the console log lacks the guest's boot: {console}"
    );
    let _ = std::fs::remove_dir_all(artifacts);
}

#[test]
fn a_test_that_nextest_times_out_is_torn_down_within_the_grace_period_and_keeps_its_console_log() {
    let (output, run_id, dir) = nested_run("mkh-selftest-timeout", "test(=deliberately_slow)", "1");
    let log = text(&output);
    assert!(
        !output.status.success(),
        "the deliberately slow test passed:\n{log}"
    );
    assert!(
        log.contains("TIMEOUT"),
        "nextest did not time the test out:\n{log}"
    );
    // A SIGKILL after the grace period would show as such; teardown must finish before it.
    assert!(!log.contains("SIGKILL"), "the test needed SIGKILL:\n{log}");
    let got = reported(dir.path(), "deliberately_slow");
    assert_networks_gone(&got, &log);
    assert_run_left_nothing(&run_id, &log);
    assert_console_log_kept(&got, &log);
}

#[test]
fn two_tests_in_parallel_get_disjoint_networks_and_both_pass() {
    let (output, run_id, dir) = nested_run("default", "test(/^parallel_/)", "2");
    let log = text(&output);
    assert!(output.status.success(), "parallel tests failed:\n{log}");
    let a = reported(dir.path(), "parallel_a");
    let b = reported(dir.path(), "parallel_b");
    let mut subnets: Vec<&str> = a["subnets"]
        .as_array()
        .unwrap()
        .iter()
        .chain(b["subnets"].as_array().unwrap())
        .map(|s| s.as_str().unwrap())
        .collect();
    subnets.sort();
    subnets.dedup();
    assert_eq!(subnets.len(), 4, "the two tests shared a subnet: {a} {b}");
    assert_ne!(a["env"], b["env"]);
    assert_run_left_nothing(&run_id, &log);
}

/// A suite split across runners (`--partition hash:K/N`, one runner per K), here two runners on
/// one host at once: each partition runs its share (nextest's hash puts two of the four tests
/// in each), both pass, their environments (all four up at once: each test waits for the
/// others) never share a subnet, and neither leaves anything.
#[test]
fn two_nextest_partitions_at_once_pass_and_leave_nothing() {
    let filter = "test(/^partitioned_/)";
    // The tests report into one directory: each waits there for the reports of all four.
    let shared = tempfile::tempdir().unwrap();
    let runs: Vec<_> = ["hash:1/2", "hash:2/2"]
        .iter()
        .map(|p| {
            let (mut cmd, run_id, _own) =
                nested_command("default", filter, "2", &["--partition", p]);
            cmd.env("MKH_SELFTEST_OUT", shared.path());
            // Read on a thread each: one chatty run must not stall the other on a full pipe.
            let output = std::thread::spawn(move || cmd.output().expect("cargo nextest runs"));
            (output, run_id)
        })
        .collect();
    for (output, run_id) in runs {
        let output = output.join().unwrap();
        let log = text(&output);
        assert!(output.status.success(), "a partition failed:\n{log}");
        assert!(log.contains("2 tests run: 2 passed"), "{log}");
        assert_run_left_nothing(&run_id, &log);
    }
    let mut subnets = Vec::new();
    for k in 1..=4 {
        let got = reported(shared.path(), &format!("partitioned_{k}"));
        subnets.extend(got["subnets"].as_array().unwrap().iter().cloned());
    }
    let all = subnets.len();
    subnets.sort_by_key(|s| s.to_string());
    subnets.dedup();
    assert_eq!(
        subnets.len(),
        all,
        "environments of the two partitions share a subnet"
    );
}
