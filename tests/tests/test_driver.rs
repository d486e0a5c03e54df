//! API-level checks against libvirt's built-in `test:///default` driver: no daemon needed.

use mkh::inventory::{claimed_objects, environments, ObjectKind};
use mkh::libvirt::{Libvirt, Removal};
use mkh::net::{NetworkKind, NetworkSpec};
use mkh::owner::{Owner, OwnerKind};
use mkh::Env;

const TEST_URI: &str = "test:///default";

#[test]
fn define_start_find_by_metadata_destroy_undefine() {
    let lv = Libvirt::connect_to(TEST_URI).unwrap();
    let owner = Owner::for_new_object(OwnerKind::Process, "mkh-tdrv01");
    let spec = NetworkSpec::new(
        "mkh-tdrv01-nat",
        NetworkKind::Nat,
        "mkh-tdrv01-nat",
        "10.209.1.0/24".parse().unwrap(),
        owner.clone(),
    )
    .unwrap();
    lv.define_and_start_network(&spec.name, &spec.to_xml())
        .unwrap();

    let claimed = claimed_objects(&lv).unwrap();
    let mine: Vec<_> = claimed
        .iter()
        .filter(|o| o.owner.env == "mkh-tdrv01")
        .collect();
    assert_eq!(mine.len(), 1, "{claimed:?}");
    assert_eq!(mine[0].name, "mkh-tdrv01-nat");
    assert_eq!(mine[0].kind, ObjectKind::Network);
    assert!(mine[0].active);
    assert_eq!(mine[0].owner, owner);
    // The driver's own `default` network carries no mkh metadata and is not claimed.
    assert!(claimed.iter().all(|o| o.name != "default"));

    assert_eq!(
        lv.remove_network("mkh-tdrv01-nat").unwrap(),
        Removal::Removed
    );
    assert_eq!(
        lv.remove_network("mkh-tdrv01-nat").unwrap(),
        Removal::AlreadyGone
    );
    assert!(lv
        .networks()
        .unwrap()
        .iter()
        .all(|n| n.name != "mkh-tdrv01-nat"));
}

#[test]
fn environment_lifecycle_with_explicit_teardown() {
    // The test driver's state lives as long as one connection to it is open.
    let lv = Libvirt::connect_to(TEST_URI).unwrap();
    let mut env = Env::builder().libvirt_uri(TEST_URI).up_blocking().unwrap();
    let nets = env.networks().clone();
    assert_ne!(nets.nat.subnet, nets.private.subnet);
    assert_eq!(nets.nat.kind, NetworkKind::Nat);
    assert_eq!(nets.private.kind, NetworkKind::Isolated);

    let envs = environments(&claimed_objects(&lv).unwrap());
    let summary = envs.iter().find(|e| e.name == env.name()).expect("listed");
    assert_eq!(summary.pid, std::process::id());
    let mut listed = summary.networks.clone();
    listed.sort();
    assert_eq!(
        listed,
        vec![nets.nat.name.clone(), nets.private.name.clone()]
    );

    env.teardown_blocking().unwrap();
    env.teardown_blocking().unwrap(); // idempotent
    let names: Vec<_> = lv.networks().unwrap().into_iter().map(|n| n.name).collect();
    assert!(
        !names.contains(&nets.nat.name) && !names.contains(&nets.private.name),
        "{names:?}"
    );
}

#[tokio::test]
async fn async_teardown_reports_and_drop_cleans_up() {
    let lv = Libvirt::connect_to(TEST_URI).unwrap();
    let env = Env::builder().libvirt_uri(TEST_URI).up().await.unwrap();
    let nat = env.networks().nat.name.clone();
    env.teardown().await.unwrap();
    assert!(lv.networks().unwrap().iter().all(|n| n.name != nat));

    let env = Env::builder().libvirt_uri(TEST_URI).up().await.unwrap();
    let private = env.networks().private.name.clone();
    drop(env); // Drop inside a runtime: must neither panic nor block forever.
    assert!(lv.networks().unwrap().iter().all(|n| n.name != private));
}
