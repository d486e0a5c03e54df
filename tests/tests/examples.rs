//! Examples written the way a user of mkh writes tests: take a fixture, use it, trust that it is
//! gone afterwards. They run on the backend the settings choose (`mkh.toml`, `MKH_BACKEND`):
//! the built-in guest unless asked otherwise. This file is the README's example.

use mkh::machine::{Ips, NetworkRole};
use mkh::ssh::SshSession;
use mkh_fixtures::{cluster, ips, ssh, Cluster, With};
use rstest::rstest;

#[rstest]
#[tokio::test]
async fn the_machine_has_an_address_in_each_network(#[future(awt)] ips: With<Ips>) {
    let networks = ips.cluster().env().networks();
    assert!(networks.nat.subnet.contains(&ips.nat));
    assert!(networks.private.subnet.contains(&ips.private));
}

#[rstest]
#[tokio::test]
async fn commands_run_as_docker(#[future(awt)] ssh: With<SshSession>) {
    let out = ssh.exec("id -un").unwrap();
    assert_eq!(out.status, 0);
    assert_eq!(out.stdout.trim(), "docker");
}

#[rstest]
#[tokio::test]
async fn the_guest_is_reachable_over_both_networks(#[future(awt)] cluster: Cluster) {
    for network in [NetworkRole::Nat, NetworkRole::Private] {
        let ssh = cluster.ssh(network).await.unwrap();
        let out = ssh.exec("ip -4 -o addr show").unwrap();
        let ip = cluster.ips().get(network).to_string();
        assert!(
            out.stdout.contains(&ip),
            "{ip} not among the guest's addresses:\n{}",
            out.stdout
        );
    }
}
