//! `mkh doctor` as a user runs it: on this host, against an unreachable libvirt, with a pool
//! too small, and with what a dead owner left.

use mkh_tests::*;
use serde_json::Value;

fn doctor(envs: &[(&str, &str)]) -> (i32, Value, String) {
    // The accelerator is mkh's choice here, not the caller's.
    let mut envs = envs.to_vec();
    envs.push(("MKH_ACCEL", ""));
    let (code, out, err) = mkh_with_env(&["doctor", "--json"], &envs);
    let report = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    (code, report, err)
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {report}"))
}

#[test]
fn on_this_host_the_accelerator_is_named_as_the_cpu_shows_it_and_nothing_fails() {
    let (code, report, err) = doctor(&[]);
    assert_eq!(code, 0, "{report:#}\n{err}");
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let virt_flags = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    let accel = check(&report, "accelerator");
    if virt_flags {
        assert_eq!(accel["status"], "pass", "{accel}");
    } else {
        assert_eq!(accel["status"], "warn", "{accel}");
        let seen = accel["seen"].as_str().unwrap();
        assert!(seen.starts_with("tcg: "), "{seen}");
        if std::path::Path::new("/dev/kvm").exists() {
            assert!(seen.contains("PVM-only /dev/kvm"), "{seen}");
        }
        assert!(accel["fix"].as_str().unwrap().contains("vmx or svm"));
    }
    for name in ["libvirt", "virtlogd", "dnsmasq", "networks"] {
        assert_eq!(check(&report, name)["status"], "pass", "{report:#}");
    }
}

#[test]
fn an_unreachable_libvirt_fails_with_the_fix_and_makes_nothing() {
    let uri = "qemu+tcp://127.0.0.1:1/system";
    let (code, report, _) = doctor(&[("MKH_LIBVIRT_URI", uri)]);
    assert_eq!(code, 1, "{report:#}");
    let libvirt = check(&report, "libvirt");
    assert_eq!(libvirt["status"], "fail");
    assert!(libvirt["seen"].as_str().unwrap().contains(uri), "{libvirt}");
    assert!(
        libvirt["fix"].as_str().unwrap().contains("MKH_LIBVIRT_URI"),
        "{libvirt}"
    );
    // Nothing that needs libvirt was tried.
    assert!(report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["name"] != "networks"));
}

#[test]
fn a_pool_with_room_for_one_environment_warns_and_does_not_fail() {
    let (code, report, _) = doctor(&[
        ("MKH_SUBNET_POOL", "10.251.6.0/23"),
        ("MKH_SUBNET_PREFIX", "24"),
    ]);
    assert_eq!(code, 0, "{report:#}");
    let subnets = check(&report, "subnets");
    assert_eq!(subnets["status"], "warn", "{subnets}");
    let seen = subnets["seen"].as_str().unwrap();
    assert!(seen.contains("room for 1 environment"), "{seen}");
    assert!(subnets["fix"].as_str().unwrap().contains("MKH_SUBNET_POOL"));
}

/// libvirt's test driver reads its objects from a file into each connection: a network left by
/// a dead owner on this host, seen by the `mkh` processes of this test and no other test.
#[test]
fn leftovers_of_a_dead_owner_are_named_and_mkh_reap_is_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let uri = test_driver_with(
        dir.path(),
        &[OwnedNetwork {
            name: "mkh-dead01-nat",
            env: "mkh-dead01",
            kind: "process",
            pid: beyond_pid_max(),
            subnet: "10.252.0.0/24",
        }],
    );
    let (code, report, _) = doctor(&[("MKH_LIBVIRT_URI", &uri)]);
    assert_eq!(code, 0, "{report:#}");
    let leftovers = check(&report, "leftovers");
    assert_eq!(leftovers["status"], "warn", "{leftovers}");
    let seen = leftovers["seen"].as_str().unwrap();
    assert!(
        seen.contains(&format!(
            "network mkh-dead01-nat (environment mkh-dead01: owner pid {} is gone",
            beyond_pid_max()
        )),
        "{seen}"
    );
    assert!(leftovers["fix"].as_str().unwrap().contains("mkh reap"));
    // `mkh reap` removes exactly that (in its own connection's copy of the file).
    let (code, out, err) = mkh_with_env(&["reap", "--json"], &[("MKH_LIBVIRT_URI", &uri)]);
    assert_eq!(code, 0, "{err}");
    let reaped: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(reaped["removed"][0]["name"], "mkh-dead01-nat", "{reaped}");
}
