//! Tests that fail on purpose, run only by `suite.rs` through a nested `cargo nextest run`
//! (hence `#[ignore]`): they show what a user's failing, timed-out or parallel tests leave
//! behind. Each writes what it got to `$MKH_SELFTEST_OUT/<test>.json` once its cluster is up.

use std::time::{Duration, Instant};

use mkh_fixtures::{cluster, Cluster};
use rstest::rstest;

async fn report(name: &str, cluster: &Cluster) {
    let dir = std::env::var("MKH_SELFTEST_OUT").expect("run by suite.rs");
    let d = cluster.describe().await.unwrap();
    let doc = serde_json::json!({
        "env": d.name,
        "subnets": [d.networks.nat.subnet.to_string(), d.networks.private.subnet.to_string()],
        "networks": [d.networks.nat.name, d.networks.private.name],
        "artifacts": cluster.artifacts(),
    });
    std::fs::write(format!("{dir}/{name}.json"), doc.to_string()).unwrap();
}

/// Waits (bounded) until the other test has reported: both clusters then exist at once.
fn meet(other: &str) {
    let dir = std::env::var("MKH_SELFTEST_OUT").expect("run by suite.rs");
    let path = format!("{dir}/{other}.json");
    let start = Instant::now();
    while !std::path::Path::new(&path).exists() {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "{other} never came up"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[rstest]
#[tokio::test]
#[ignore = "fails on purpose; run by suite.rs"]
async fn deliberately_panics(#[future(awt)] cluster: Cluster) {
    report("deliberately_panics", &cluster).await;
    panic!("this test fails on purpose, mid-way, with its cluster up");
}

#[rstest]
#[tokio::test]
#[ignore = "times out on purpose; run by suite.rs"]
async fn deliberately_slow(#[future(awt)] cluster: Cluster) {
    report("deliberately_slow", &cluster).await;
    tokio::time::sleep(Duration::from_secs(3600)).await;
}

#[rstest]
#[tokio::test]
#[ignore = "run by suite.rs, in parallel with parallel_b"]
async fn parallel_a(#[future(awt)] cluster: Cluster) {
    report("parallel_a", &cluster).await;
    meet("parallel_b");
}

#[rstest]
#[tokio::test]
#[ignore = "run by suite.rs, in parallel with parallel_a"]
async fn parallel_b(#[future(awt)] cluster: Cluster) {
    report("parallel_b", &cluster).await;
    meet("parallel_a");
}

/// Four tests for two `--partition hash:K/2` runs at once (suite.rs): each reports its world,
/// checks its machine answers on both networks, and waits until all four exist at once.
async fn partitioned(name: &str, cluster: Cluster) {
    report(name, &cluster).await;
    for role in [mkh::NetworkRole::Nat, mkh::NetworkRole::Private] {
        let out = cluster.ssh(role).await.unwrap().exec("true").await.unwrap();
        assert_eq!(out.status, 0, "{name} on {role}: {out:?}");
    }
    for k in 1..=4 {
        meet(&format!("partitioned_{k}"));
    }
}

#[rstest]
#[tokio::test]
#[ignore = "run by suite.rs, in one of two partitions"]
async fn partitioned_1(#[future(awt)] cluster: Cluster) {
    partitioned("partitioned_1", cluster).await;
}

#[rstest]
#[tokio::test]
#[ignore = "run by suite.rs, in one of two partitions"]
async fn partitioned_2(#[future(awt)] cluster: Cluster) {
    partitioned("partitioned_2", cluster).await;
}

#[rstest]
#[tokio::test]
#[ignore = "run by suite.rs, in one of two partitions"]
async fn partitioned_3(#[future(awt)] cluster: Cluster) {
    partitioned("partitioned_3", cluster).await;
}

#[rstest]
#[tokio::test]
#[ignore = "run by suite.rs, in one of two partitions"]
async fn partitioned_4(#[future(awt)] cluster: Cluster) {
    partitioned("partitioned_4", cluster).await;
}
