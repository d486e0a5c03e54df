//! The minikube path end to end, through the same public API users call, against the minikube
//! stand-in (`src/bin/minikube`: kvm2's libvirt objects and MINIKUBE_HOME files on a real VM,
//! and a real kube-apiserver). What only a real minikube proves is in the README; the last test
//! here runs the real binary where one exists.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{Api, ListParams, PostParams};
use mkh::{Env, Error, Ips, MinikubeOptions, NetworkRole, Settings, SshSession};
use mkh_fixtures::{
    cluster, ips, kube as kube_fixture, kubeconfig, settings, ssh, Cluster, Kubeconfig, With,
};
use mkh_tests::*;
use rstest::rstest;

const STANDIN: &str = env!("CARGO_BIN_EXE_minikube");

fn standin() -> MinikubeOptions {
    MinikubeOptions {
        binary: Some(STANDIN.into()),
        ..MinikubeOptions::default()
    }
}

fn standin_settings() -> Settings {
    settings().minikube(Some(STANDIN.into()))
}

fn service_cidr() -> mkh::ipnet::Ipv4Net {
    "10.96.0.0/12".parse().unwrap()
}

async fn create_service(client: &kube::Client, name: &str) -> Ipv4Addr {
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc: Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": name },
        "spec": { "selector": { "app": name }, "ports": [{ "port": 80, "targetPort": 8080 }] }
    }))
    .unwrap();
    let created = services.create(&PostParams::default(), &svc).await.unwrap();
    created.spec.unwrap().cluster_ip.unwrap().parse().unwrap()
}

async fn ssh_id(env: &Env, role: NetworkRole) -> String {
    let ssh = env.machine().unwrap().ssh(role).await.unwrap();
    ssh.exec("id -un").await.unwrap().stdout.trim().to_owned()
}

#[tokio::test]
async fn a_stand_in_cluster_starts_serves_kubernetes_stops_starts_and_leaves_nothing() {
    let env = Env::builder().minikube(standin()).up().await.unwrap();
    let name = env.name().to_owned();
    let d = env.describe().await.unwrap();
    assert_eq!(d.backend, "minikube");
    assert_eq!(d.context.as_deref(), Some(name.as_str()));
    let ips = d.ips.unwrap();
    assert!(
        d.networks.nat.subnet.contains(&ips.nat),
        "{} not in {}",
        ips.nat,
        d.networks.nat.subnet
    );
    assert!(d.networks.private.subnet.contains(&ips.private));
    for role in [NetworkRole::Nat, NetworkRole::Private] {
        assert_eq!(ssh_id(&env, role).await, "docker");
    }
    // minikube's domain carries mkh's owner metadata.
    assert!(
        objects_of_env(&name).contains(&name),
        "the domain is not claimed"
    );

    let client = env.kube_client().await.unwrap();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let names: Vec<String> = namespaces
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert!(
        names.contains(&"default".to_owned()) && names.contains(&"kube-system".to_owned()),
        "{names:?}"
    );
    let cluster_ip = create_service(&client, "probe").await;
    assert!(
        service_cidr().contains(&cluster_ip),
        "{cluster_ip} outside 10.96.0.0/12"
    );

    env.stop().await.unwrap();
    let err = env
        .machine()
        .unwrap()
        .ip(NetworkRole::Private)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::MachineNotRunning { .. }), "{err}");
    assert!(err.to_string().contains("must be running"), "{err}");

    let again = env.start().await.unwrap();
    assert_eq!(again.private, ips.private);
    assert_eq!(ssh_id(&env, NetworkRole::Private).await, "docker");
    let client = env.kube_client().await.unwrap();
    let services: Api<Service> = Api::namespaced(client, "default");
    assert!(
        services.get("probe").await.is_ok(),
        "the Service did not survive stop/start"
    );

    let home = env.home().to_owned();
    env.teardown().await.unwrap();
    assert_cluster_gone(&name, &home);
}

#[test]
fn a_sigkilled_owner_s_cluster_processes_and_home_are_reaped_by_the_next_mkh_process() {
    let mut child = ChildEnv::start_with(
        std::process::Command::new(env!("CARGO_BIN_EXE_mkh-test-child"))
            .arg("hold-minikube")
            .env("MKH_MINIKUBE", STANDIN),
    );
    let name = child.env_name();
    let home = PathBuf::from(child.description["home"].as_str().unwrap());
    assert!(
        !processes_mentioning(&home).is_empty(),
        "the stand-in's API server should run"
    );
    child.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = child.child.wait();

    let mut next = ChildEnv::start(env!("CARGO_BIN_EXE_mkh-test-child"), "once");
    assert!(next.child.wait().unwrap().success());
    assert_cluster_gone(&name, &home);
}

#[test]
fn mkh_up_backend_minikube_json_ip_ssh_and_down() {
    let name = format!("mkrt-{}", std::process::id());
    let (code, out, err) = mkh_with_env(
        &["up", "--backend", "minikube", "--name", &name, "--json"],
        &[("MKH_MINIKUBE", STANDIN)],
    );
    assert_eq!(code, 0, "{err}");
    let d: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(d["backend"], "minikube");
    assert_eq!(d["profile"], name.as_str());
    assert_eq!(d["context"], name.as_str());
    let kubeconfig = std::fs::read_to_string(d["kubeconfig"].as_str().unwrap()).unwrap();
    assert!(kubeconfig.contains(&name));
    let minikube_home = PathBuf::from(d["minikube_home"].as_str().unwrap());
    // The MINIKUBE_HOME to give the minikube binary: `minikube ip` agrees with mkh.
    let ip = std::process::Command::new(STANDIN)
        .args(["-p", &name, "ip"])
        .env("MINIKUBE_HOME", &minikube_home)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&ip.stdout).trim(),
        d["ips"]["private"].as_str().unwrap()
    );
    let (code, out, _) = mkh(&["ip", &name, "--network", "nat"]);
    assert_eq!((code, out.trim()), (0, d["ips"]["nat"].as_str().unwrap()));
    let (code, out, err) = mkh(&["ssh", &name, "--", "id", "-un"]);
    assert_eq!((code, out.trim()), (0, "docker"), "{err}");

    // `down` needs nothing from the caller's environment: the binary is recorded.
    let home = PathBuf::from(d["home"].as_str().unwrap());
    let (code, out, err) = mkh_with_env(
        &["down", &name],
        &[("MKH_MINIKUBE", ""), ("MKH_KUBE_APISERVER", "")],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_cluster_gone(&name, &home);
}

#[tokio::test]
async fn arguments_that_break_isolation_are_refused_before_anything_is_made() {
    for bad in [
        "--network=mine",
        "-p",
        "--kvm-network=default",
        "--driver=docker",
    ] {
        let options = MinikubeOptions {
            extra_args: vec![bad.to_owned()],
            ..standin()
        };
        let err = Env::builder()
            .minikube(options)
            .up()
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(bad), "{err}");
    }
    let mine: Vec<_> = mkh::admin::audit(&settings(), None)
        .unwrap()
        .others
        .into_iter()
        .filter(|o| o.owner.process.pid == std::process::id())
        .collect();
    assert!(mine.is_empty(), "{mine:?}");
}

#[tokio::test]
async fn minikube_missing_is_an_error_never_a_switch_to_the_builtin_guest() {
    let options = MinikubeOptions {
        binary: Some(PathBuf::from("/nonexistent/minikube")),
        ..MinikubeOptions::default()
    };
    let err = Env::builder().minikube(options).up().await.unwrap_err();
    assert!(matches!(err, Error::MinikubeMissing { .. }), "{err}");
    assert!(err.to_string().contains("MKH_MINIKUBE"), "{err}");
}

#[rstest]
#[tokio::test]
async fn the_cluster_fixture_on_minikube(
    #[future(awt)]
    #[with(standin_settings())]
    cluster: Cluster,
) {
    let d = cluster.describe().await.unwrap();
    assert_eq!(d.backend, "minikube");
    let kubeconfig = cluster.kubeconfig().unwrap();
    assert!(kubeconfig.path.exists());
    let ssh = cluster.ssh(NetworkRole::Nat).await.unwrap();
    assert_eq!(
        ssh.exec("hostname").await.unwrap().stdout.trim(),
        "minikube"
    );
}

#[rstest]
#[tokio::test]
async fn the_ips_fixture_on_minikube(
    #[future(awt)]
    #[with(standin_settings())]
    ips: With<Ips>,
) {
    // minikube itself never reports the NAT address: mkh reads it from the NAT network's leases.
    let nets = ips.cluster().env().networks();
    assert!(nets.nat.subnet.contains(&ips.nat));
    assert!(nets.private.subnet.contains(&ips.private));
    // minikube's own record of the control plane agrees with the private lease.
    let d = ips.cluster().describe().await.unwrap();
    let profile = d.profile.unwrap();
    // minikube keeps its files in `$MINIKUBE_HOME/.minikube`.
    let config = d
        .minikube_home
        .unwrap()
        .join(".minikube")
        .join("profiles")
        .join(&profile)
        .join("config.json");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(config).unwrap()).unwrap();
    let control_plane = config["Nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["ControlPlane"] == true)
        .unwrap();
    assert_eq!(control_plane["IP"], ips.private.to_string().as_str());
}

#[rstest]
#[tokio::test]
async fn the_ssh_fixture_on_minikube(
    #[future(awt)]
    #[with(standin_settings())]
    ssh: With<SshSession>,
) {
    assert_eq!(ssh.exec("id -un").await.unwrap().stdout.trim(), "docker");
    let key = ssh.cluster().env().machine().unwrap().key().to_owned();
    assert!(key.ends_with("id_rsa"), "{}", key.display());
}

#[rstest]
#[tokio::test]
async fn the_kubeconfig_fixture_on_minikube(
    #[future(awt)]
    #[with(standin_settings())]
    kubeconfig: With<Kubeconfig>,
) {
    let text = std::fs::read_to_string(&kubeconfig.path).unwrap();
    assert!(text.contains(&kubeconfig.context));
    assert_eq!(kubeconfig.context, kubeconfig.cluster().env().name());
}

#[rstest]
#[tokio::test]
async fn the_kube_fixture_on_minikube(
    #[future(awt)]
    #[with(standin_settings())]
    kube_fixture: With<kube::Client>,
) {
    let ip = create_service(&kube_fixture, "from-fixture").await;
    assert!(service_cidr().contains(&ip), "{ip}");
}

#[tokio::test]
#[ignore = "needs a real minikube on PATH and working KVM (vmx/svm): run with --run-ignored where they are"]
async fn a_real_minikube_cluster() {
    let real = real_minikube().expect("a real `minikube` on PATH (the stand-in does not count)");
    let kvm = std::path::Path::new("/dev/kvm").exists()
        && std::fs::read_to_string("/proc/cpuinfo")
            .is_ok_and(|c| c.contains(" vmx") || c.contains(" svm"));
    assert!(
        kvm,
        "KVM is not usable here (no vmx/svm CPU flag): kvm2 would not boot"
    );
    let env = Env::builder()
        .minikube(MinikubeOptions {
            binary: Some(real),
            ..MinikubeOptions::default()
        })
        .up()
        .await
        .unwrap();
    assert_eq!(ssh_id(&env, NetworkRole::Private).await, "docker");
    let client = env.kube_client().await.unwrap();
    let ip = create_service(&client, "real-probe").await;
    assert!(service_cidr().contains(&ip));
    env.teardown().await.unwrap();
}

fn real_minikube() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let found = std::env::split_paths(&path)
        .map(|d| d.join("minikube"))
        .find(|p| p.is_file())?;
    let version = std::process::Command::new(&found)
        .arg("version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&version.stdout);
    (!text.contains("standin") && !text.contains("stand-in")).then_some(found)
}

/// Nothing of environment `name` is left: no libvirt object, no home, no process of its own.
fn assert_cluster_gone(name: &str, home: &std::path::Path) {
    let left = objects_of_env(name);
    assert!(left.is_empty(), "{left:?} left");
    assert!(!home.exists(), "{} left", home.display());
    let leftovers = processes_mentioning(home);
    assert!(
        leftovers.is_empty(),
        "processes of the cluster survived: {leftovers:?}"
    );
}

fn processes_mentioning(dir: &std::path::Path) -> Vec<String> {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .filter(|c| c.contains(&needle))
        .collect()
}
