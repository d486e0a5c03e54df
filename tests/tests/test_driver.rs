//! The public API against libvirt's built-in `test:///default` driver: no daemon needed.

use mkh::{admin, Env, NetworkKind, Settings};
use virt::connect::Connect;

const TEST_URI: &str = "test:///default";

fn network_names(conn: &Connect) -> Vec<String> {
    conn.list_all_networks(0)
        .unwrap()
        .into_iter()
        .filter_map(|n| n.name().ok())
        .collect()
}

fn test_driver_settings() -> Settings {
    let mut s = Settings::current().unwrap();
    s.libvirt_uri = TEST_URI.into();
    s
}

#[test]
fn environment_lifecycle_with_explicit_teardown() {
    // The test driver's state lives as long as one connection to it is open.
    let conn = Connect::open(Some(TEST_URI)).unwrap();
    let env = Env::builder().libvirt_uri(TEST_URI).up_blocking().unwrap();
    let nets = env.networks().clone();
    assert_ne!(nets.nat.subnet, nets.private.subnet);
    assert_eq!(nets.nat.kind, NetworkKind::Nat);
    assert_eq!(nets.private.kind, NetworkKind::Isolated);

    let envs = admin::environments(&test_driver_settings()).unwrap();
    let summary = envs.iter().find(|e| e.name == env.name()).expect("listed");
    assert_eq!(summary.pid, std::process::id());
    let mut listed: Vec<_> = summary
        .networks
        .iter()
        .map(|n| (n.name.clone(), n.subnets.clone()))
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        vec![
            (nets.nat.name.clone(), vec![nets.nat.subnet]),
            (nets.private.name.clone(), vec![nets.private.subnet])
        ]
    );

    env.teardown().unwrap();
    let names = network_names(&conn);
    assert!(
        !names.contains(&nets.nat.name) && !names.contains(&nets.private.name),
        "{names:?}"
    );
}

#[tokio::test]
async fn async_teardown_reports_and_drop_cleans_up() {
    let conn = Connect::open(Some(TEST_URI)).unwrap();
    let env = Env::builder().libvirt_uri(TEST_URI).up().await.unwrap();
    let nat = env.networks().nat.name.clone();
    env.teardown().await.unwrap();
    assert!(!network_names(&conn).contains(&nat));

    let env = Env::builder().libvirt_uri(TEST_URI).up().await.unwrap();
    let private = env.networks().private.name.clone();
    drop(env); // Drop inside a runtime: must neither panic nor block forever.
    assert!(!network_names(&conn).contains(&private));
}

#[tokio::test(flavor = "current_thread")]
async fn creation_leaves_a_current_thread_runtime_free() {
    let _conn = Connect::open(Some(TEST_URI)).unwrap();
    let ticks = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = ticks.clone();
    let ticker = tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    // Bringing up and tearing down take libvirt calls, subnet choice and a lock: all of it
    // on blocking threads, so the ticker on this one thread keeps ticking meanwhile.
    for _ in 0..3 {
        let env = Env::builder().libvirt_uri(TEST_URI).up().await.unwrap();
        env.teardown().await.unwrap();
    }
    ticker.abort();
    assert!(ticks.load(std::sync::atomic::Ordering::SeqCst) > 0);
}
