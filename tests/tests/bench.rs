//! `mkh bench` runs end to end and reports what it promises. Its figures are measurements, not
//! assertions: this checks that they exist and hang together, never how fast anything was.

use mkh_tests::*;

#[test]
fn bench_json_reports_every_figure_and_leaves_nothing() {
    let run_id = format!("bench-test-{}", std::process::id());
    let (code, stdout, stderr) = mkh_with_env(
        &["bench", "--runs", "1", "--parallel", "1,2", "--json"],
        &[("MKH_RUN_ID", &run_id)],
    );
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let secs = |key: &str| {
        report[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} missing or not a number: {report}"))
    };
    for key in [
        "mkh_ready_s",
        "script_ready_s",
        "floor_s",
        "teardown_s",
        "warm_ready_s",
    ] {
        assert!(secs(key) > 0.0, "{key} = {}", secs(key));
    }
    assert!((secs("ratio") - secs("mkh_ready_s") / secs("script_ready_s")).abs() < 1e-9);
    // The guest cannot be ready before its kernel even started: the floor lies inside mkh's time.
    assert!(secs("floor_s") < secs("mkh_ready_s"), "{report}");
    let widths: Vec<u64> = report["parallel"]
        .as_array()
        .expect("a parallel list")
        .iter()
        .map(|w| {
            assert_eq!(w["environments"], w["width"], "{w}");
            assert!(w["wall_s"].as_f64().unwrap() >= w["median_ready_s"].as_f64().unwrap());
            w["width"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(widths, [1, 2]);
    for phase in [
        "networks",
        "define_start",
        "first_lease",
        "leases",
        "ssh",
        "teardown",
    ] {
        for who in ["mkh", "script", "warm"] {
            assert!(
                report["phases"][phase][who]
                    .as_f64()
                    .is_some_and(|s| s >= 0.0),
                "{phase}/{who}: {report}"
            );
        }
    }
    assert!(
        stderr.contains("run 1:"),
        "progress goes to stderr: {stderr}"
    );
    let (_, audit, _) = mkh(&["audit", "--run", &run_id, "--json"]);
    let audit: serde_json::Value = serde_json::from_str(&audit).unwrap();
    assert_eq!(audit["left_by_run"], serde_json::json!([]), "{audit}");
}
