use mkh::{Ips, NetworkRole, SshSession};
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
    assert_eq!(ssh.exec("id -un").await.unwrap().stdout.trim(), "docker");
}

#[rstest]
#[tokio::test]
async fn the_guest_is_reachable_over_both_networks(#[future(awt)] cluster: Cluster) {
    for network in [NetworkRole::Nat, NetworkRole::Private] {
        let ssh = cluster.ssh(network).await.unwrap();
        let out = ssh.exec("ip -4 -o addr show").await.unwrap();
        assert!(out.stdout.contains(&cluster.ips().get(network).to_string()));
    }
}
