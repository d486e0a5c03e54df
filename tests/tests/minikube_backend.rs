//! The minikube path end to end, through the same public API users call, against the minikube
//! stand-in (`src/bin/minikube`: kvm2's libvirt objects and MINIKUBE_HOME files on a real VM,
//! and a real kube-apiserver). What only a real minikube proves is in the README; the last test
//! here runs the real binary where one exists.

use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{Api, ListParams, PostParams};
use mkh::{Env, Error, Ips, MinikubeOptions, NetworkRole, Settings, SshSession};
use mkh_fixtures::{
    cluster, ips, kube as kube_fixture, kubeconfig, settings, ssh, Cluster, Kubeconfig, With,
};
use mkh_tests::*;
use rstest::rstest;

const STANDIN_BIN: &str = env!("CARGO_BIN_EXE_minikube");

/// The stand-in, in its host mode (`MK_STANDIN_CONTROL_PLANE=host`, set for this test process
/// and the processes it starts). These tests check mkh's side of minikube (its refusals, command
/// lines, files, networks, IPs, SSH, kubeconfig, teardown and reaping) and need an API server
/// but no pod: the stand-in then serves kube-apiserver and etcd on the host, where a node in the
/// VM would add minutes of emulation to every start. `node.rs` runs the stand-in's node.
fn standin_bin() -> &'static str {
    std::env::set_var("MK_STANDIN_CONTROL_PLANE", "host");
    STANDIN_BIN
}

/// The test command runs as root, and minikube refuses root without `--force`: these tests
/// pass it, as the README tells root users to (`root_is_refused_unless_the_caller_forces`
/// shows what happens without it; `a_non_root_libvirt_user_runs_minikube_without_force`, the
/// other way).
fn standin() -> MinikubeOptions {
    MinikubeOptions {
        binary: Some(standin_bin().into()),
        extra_args: vec!["--force".into()],
        ..MinikubeOptions::default()
    }
}

fn standin_settings() -> Settings {
    settings()
        .minikube(Some(standin_bin().into()))
        .minikube_arg("--force")
}

fn is_root() -> bool {
    nix::unistd::getuid().is_root()
}

/// Objects this process left in libvirt (an up that was refused must leave none).
fn objects_of_this_process() -> Vec<String> {
    mkh::admin::audit(&settings(), None)
        .unwrap()
        .others
        .into_iter()
        .filter(|o| o.owner.process.pid == std::process::id())
        .map(|o| o.name)
        .collect()
}

/// Why `up` refused `options` (it must refuse).
async fn refusal(options: MinikubeOptions) -> String {
    Env::builder()
        .minikube(options)
        .up()
        .await
        .unwrap_err()
        .to_string()
}

/// `minikube start ARGS` of the stand-in in a fresh MINIKUBE_HOME: what minikube would do.
fn standin_start(args: &[&str]) -> std::process::Output {
    let home = tempfile::tempdir().unwrap();
    std::process::Command::new(standin_bin())
        .arg("start")
        .args(args)
        .env("MINIKUBE_HOME", home.path())
        .output()
        .unwrap()
}

/// `<section>/<name>` of every cluster, context and user in a kubeconfig file.
fn kubeconfig_names(path: &std::path::Path) -> Vec<String> {
    let doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    ["clusters", "contexts", "users"]
        .iter()
        .flat_map(|section| {
            doc[*section]
                .as_sequence()
                .into_iter()
                .flatten()
                .filter_map(|e| e["name"].as_str())
                .map(move |n| format!("{section}/{n}"))
        })
        .collect()
}

/// Every host key mkh recorded for `machine`, one per boot, in order.
fn recorded_host_keys(home: &std::path::Path, machine: &str) -> Vec<(String, String)> {
    std::fs::read_to_string(home.join("known_hosts"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(label, _)| label.split('@').next() == Some(machine))
        .map(|(l, k)| (l.to_owned(), k.to_owned()))
        .collect()
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
    let mut env = Env::builder().minikube(standin()).up().await.unwrap();
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
    // mkh passed no size of its own: minikube's defaults (2 CPUs, its memory suggestion)
    // passed minikube's own minimums.
    let profile = env
        .home()
        .join("minikube-home/.minikube/profiles")
        .join(&name);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(profile.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["CPUs"], 2, "{config}");
    assert!(config["Memory"].as_u64().unwrap() >= 1800, "{config}");
    assert_eq!(d.minikube_version.as_deref(), Some("v1.38.1"));

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

    let before = recorded_host_keys(env.home(), &name);
    assert_eq!(before.len(), 1, "{before:?}");
    env.stop().await.unwrap();
    let err = env
        .machine()
        .unwrap()
        .ip(NetworkRole::Private)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::MachineNotRunning { .. }), "{err}");
    assert!(err.to_string().contains("this needs it running"), "{err}");
    // `minikube stop` removed the profile's kubeconfig entries; `start` writes them again.
    let kubeconfig = d.kubeconfig.clone().unwrap();
    assert!(kubeconfig_names(&kubeconfig).is_empty(), "left after stop");
    let Err(err) = env.kube_client().await else {
        panic!("a kube client for a stopped cluster");
    };
    assert!(
        err.to_string()
            .contains("a stopped minikube cluster has none"),
        "{err}"
    );

    let again = env.start().await.unwrap();
    assert_eq!(again.private, ips.private);
    assert_eq!(
        kubeconfig_names(&kubeconfig),
        ["clusters", "contexts", "users"].map(|k| format!("{k}/{name}"))
    );
    assert_eq!(ssh_id(&env, NetworkRole::Private).await, "docker");
    // The guest made a new host key on that boot, as minikube's ISO does; mkh held the first
    // boot's key for that boot and took the new one.
    let after = recorded_host_keys(env.home(), &name);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_ne!(before[0].1, after[0].1, "the same host key after a reboot");
    assert_ne!(
        before[0].0, after[0].0,
        "the same boot label after a reboot"
    );
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
            .env("MKH_MINIKUBE", standin_bin())
            .env("MKH_MINIKUBE_ARGS", "--force")
            // Without a watchdog (which the next process's reaper would leave the work to).
            .env("MKH_WATCHDOG", "0"),
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
    let _guard = CliEnv(name.clone());
    // minikube reads every MINIKUBE_* variable as a flag: none of the caller's reach it.
    let (code, out, err) = mkh_with_env(
        &[
            "up",
            "--backend",
            "minikube",
            "--name",
            &name,
            "--json",
            "--",
            "--force",
        ],
        &[
            ("MKH_MINIKUBE", standin_bin()),
            ("MINIKUBE_DRIVER", "docker"),
            ("MINIKUBE_NODES", "3"),
            ("MINIKUBE_DELETE_ON_FAILURE", "true"),
            ("MINIKUBE_PROFILE", "someone-else"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let d: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(d["backend"], "minikube");
    assert_eq!(d["machines"].as_array().unwrap().len(), 1, "{d}");
    // These machines have no vmx/svm: kvm2 would ask for KVM, and mkh says so first.
    let kvm = std::fs::read_to_string("/proc/cpuinfo")
        .is_ok_and(|c| c.contains(" vmx") || c.contains(" svm"));
    assert_eq!(err.contains("no working KVM"), !kvm, "{err}");
    assert_eq!(d["profile"], name.as_str());
    assert_eq!(d["context"], name.as_str());
    let kubeconfig = std::fs::read_to_string(d["kubeconfig"].as_str().unwrap()).unwrap();
    assert!(kubeconfig.contains(&name));
    let minikube_home = PathBuf::from(d["minikube_home"].as_str().unwrap());
    // The MINIKUBE_HOME to give the minikube binary: `minikube ip` agrees with mkh.
    let ip = std::process::Command::new(standin_bin())
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

    // The seed article's workflow on the CLI: `minikube stop`, `ip` refusing with the hint,
    // `minikube start` (the recorded binary; as root, `--force` from MKH_MINIKUBE_ARGS, as a
    // user would give it), `ip` and SSH again on the new boot's host key.
    let (code, out, err) = mkh(&["stop", &name]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = mkh(&["ip", &name]);
    assert_eq!(code, 1);
    assert!(
        err.contains("is stopped") && err.contains(&format!("mkh start {name}")),
        "{err}"
    );
    // `--force` as at `mkh up` above (mkh does not record creation arguments).
    let (code, out, err) = mkh_with_env(&["start", &name], &[("MKH_MINIKUBE_ARGS", "--force")]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = mkh(&["ssh", &name, "--", "id", "-un"]);
    assert_eq!((code, out.trim()), (0, "docker"), "{err}");
    let (code, out, _) = mkh(&["ip", &name]);
    assert_eq!(code, 0);
    let _: std::net::Ipv4Addr = out.trim().parse().unwrap();

    // A test's Env reaches the same cluster by name and drives it through the same backend:
    // `minikube stop` (the CLI sees it stopped), `minikube start`, its kubeconfig and API server.
    let settings = standin_settings();
    let env = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut env = mkh::Env::attach(&name, settings).await.unwrap();
        assert_eq!(
            env.kubeconfig().map(|(_, c)| c.to_owned()),
            Some(name.clone())
        );
        env.stop().await.unwrap();
        let (code, _, err) = mkh(&["ip", &name]);
        assert!(code == 1 && err.contains("is stopped"), "{err}");
        let ips = env.start().await.unwrap();
        let (code, out, _) = mkh(&["ip", &name]);
        assert_eq!((code, out.trim()), (0, ips.private.to_string().as_str()));
        let client = env.kube_client().await.unwrap();
        let _ = create_service(&client, "attached").await;
        env
    });
    // Dropping the handle leaves the cluster to the CLI.
    drop(env);
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
        "-d",
        "-ddocker",
        "--delete-on-failure",
        "--ha",
        "--nodes=3",
        "-n2",
        "--memory=4g",
        "--cpus=4",
    ] {
        let mut options = standin();
        options.extra_args.push(bad.to_owned());
        let err = refusal(options).await;
        assert!(err.contains(bad) && err.contains("drop it"), "{err}");
    }
    assert!(objects_of_this_process().is_empty());
}

#[tokio::test]
async fn a_remote_libvirt_is_refused_for_minikube_before_anything_is_made() {
    let err = Env::builder()
        .libvirt_uri("qemu+ssh://root@192.0.2.1/system")
        .minikube(standin())
        .up()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("qemu+ssh://root@192.0.2.1/system") && err.contains("local files"),
        "{err}"
    );
}

#[tokio::test]
async fn root_is_refused_unless_the_caller_forces() {
    assert!(
        is_root(),
        "the test command runs as root; this test shows what root meets"
    );
    let options = MinikubeOptions {
        extra_args: Vec::new(),
        ..standin()
    };
    let err = Env::builder().minikube(options).up().await.unwrap_err();
    assert!(matches!(err, Error::MinikubeWouldRefuse { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("DRV_AS_ROOT") && text.contains("exit 57"),
        "{text}"
    );
    assert!(
        text.contains("group libvirt") && text.contains("--force"),
        "{text}"
    );
    assert!(objects_of_this_process().is_empty());
    // The stand-in itself refuses as minikube does: exit 57, nothing made.
    let out = standin_start(&["-p", "never-made", "--driver=kvm2"]);
    assert_eq!(out.status.code(), Some(57), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("DRV_AS_ROOT"));
    assert!(!network_exists("mk-never-made"));
}

#[tokio::test]
async fn sizes_under_minikube_s_minimums_are_refused_before_anything_is_made() {
    for (memory, cpus, rule) in [
        (Some(1024), None, "exit 23"),
        (None, Some(1), "exit 29"),
        (Some(1799), Some(2), "exit 23"),
    ] {
        let options = MinikubeOptions {
            memory_mib: memory,
            cpus,
            extra_args: Vec::new(),
            ..standin()
        };
        let err = refusal(options).await;
        assert!(err.contains(rule) && err.contains("--force"), "{err}");
    }
    assert!(objects_of_this_process().is_empty());
    // The stand-in refuses them too.
    let out = standin_start(&["-p", "small", "--memory=1024", "--force=false"]);
    assert_eq!(out.status.code(), Some(23), "{out:?}");
}

#[tokio::test]
async fn names_minikube_would_refuse_as_profiles_are_refused_first() {
    // ProfileNameValid: longer than one character, ending in a letter or digit, no `_`.
    for bad in ["a", "foo-", "a_b"] {
        let err = Env::builder()
            .name(bad)
            .minikube(standin())
            .up()
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(bad) && err.contains("environment name"),
            "{err}"
        );
        let out = standin_start(&["-p", bad, "--force"]);
        assert_eq!(out.status.code(), Some(14), "{bad}: {out:?}");
    }
    assert!(objects_of_this_process().is_empty());
}

#[tokio::test]
async fn a_private_network_minikube_recreated_is_adopted_and_nothing_is_left() {
    let mut env = Env::builder().minikube(standin()).up().await.unwrap();
    let name = env.name().to_owned();
    let private = env.networks().private.clone();
    env.stop().await.unwrap();
    // Make mkh's private network impossible to start: its bridge's name is taken.
    let virsh = |args: &[&str]| {
        std::process::Command::new("virsh")
            .args(args)
            .output()
            .unwrap()
    };
    assert!(virsh(&["net-destroy", &private.name]).status.success());
    let ip = |args: &[&str]| {
        std::process::Command::new("ip")
            .args(args)
            .status()
            .unwrap()
    };
    assert!(ip(&["link", "add", &private.bridge, "type", "bridge"]).success());
    // minikube deletes it and makes it again under the same name (`ensureNetwork`): mkh adopts it.
    let started = env.start().await;
    ip(&["link", "del", &private.bridge]);
    let ips = started.unwrap();
    assert_adopted(&env, &private);
    assert!(env.networks().private.subnet.contains(&ips.private));
    let home = env.home().to_owned();
    env.teardown().await.unwrap();
    assert_cluster_gone(&name, &home);
    assert!(
        !network_exists(&private.name),
        "the network minikube recreated is left"
    );
}

/// The environment's private network is the one minikube made again under mkh's name: on
/// minikube's own subnet choice (192.168.39.0/24, +11 ...), with mkh's owner record now, and
/// recorded as the environment's.
fn assert_adopted(env: &Env, before: &mkh::NetworkInfo) {
    let now = &env.networks().private;
    assert_eq!(now.name, before.name);
    assert_ne!(now.subnet, before.subnet, "the subnet was not read again");
    assert!(
        "192.168.0.0/16"
            .parse::<mkh::ipnet::Ipv4Net>()
            .unwrap()
            .contains(&now.subnet),
        "{} is not minikube's choice",
        now.subnet
    );
    assert!(
        objects_of_env(env.name()).contains(&now.name),
        "the adopted network carries no owner record of the environment"
    );
}

/// `MK_STANDIN_FAIL_FIRST_BOOT` for this test process (each nextest test is a process).
fn fail_first_boot_of(machine: &str) {
    std::env::set_var("MK_STANDIN_FAIL_FIRST_BOOT", machine);
}

#[tokio::test]
async fn a_failed_first_boot_minikube_retries_is_survived_its_new_private_network_adopted() {
    let name = format!("mkfb{}", std::process::id());
    fail_first_boot_of(&name);
    let env = Env::builder()
        .name(&name)
        .minikube(standin())
        .up()
        .await
        .unwrap();
    let log = std::fs::read_to_string(env.home().join("minikube.log")).unwrap();
    assert!(
        log.contains("StartHost failed, but will try again"),
        "the stand-in did not fail the first boot:\n{log}"
    );
    let created = mkh::NetworkInfo {
        subnet: "10.208.0.0/12".parse().unwrap(),
        ..env.networks().private.clone()
    };
    assert_adopted(&env, &created);
    assert!(!created.subnet.contains(&env.networks().private.subnet));
    let d = env.describe().await.unwrap();
    assert_eq!(d.networks.private, env.networks().private);
    let ips = d.ips.unwrap();
    assert!(env.networks().private.subnet.contains(&ips.private));
    assert_eq!(ssh_id(&env, NetworkRole::Private).await, "docker");
    let private = env.networks().private.name.clone();
    let home = env.home().to_owned();
    env.teardown().await.unwrap();
    assert_cluster_gone(&name, &home);
    assert!(!network_exists(&private), "{private} left");
}

#[tokio::test]
async fn a_vanished_domain_minikube_makes_anew_is_survived_with_its_new_network_and_macs() {
    let mut env = Env::builder().minikube(standin()).up().await.unwrap();
    let name = env.name().to_owned();
    let before = env.networks().private.clone();
    let mac = env.machine().unwrap().mac(NetworkRole::Private).to_owned();
    env.stop().await.unwrap();
    // The domain vanishes (someone undefines it): minikube's next start demolishes the machine,
    // its private network with it, and makes both anew (`recreateIfNeeded`).
    let out = std::process::Command::new("virsh")
        .args(["undefine", &name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let ips = env.start().await.unwrap();
    assert_adopted(&env, &before);
    let machine = env.machine().unwrap();
    assert_ne!(
        machine.mac(NetworkRole::Private),
        mac,
        "the MACs were not read again"
    );
    assert!(env.networks().private.subnet.contains(&ips.private));
    assert_eq!(machine.ips().await.unwrap(), ips);
    assert_eq!(ssh_id(&env, NetworkRole::Private).await, "docker");
    assert!(
        objects_of_env(&name).contains(&name),
        "the new domain is not claimed"
    );
    let home = env.home().to_owned();
    env.teardown().await.unwrap();
    assert_cluster_gone(&name, &home);
    assert!(!network_exists(&before.name));
}

#[test]
fn a_sigkill_during_a_start_whose_first_boot_failed_leaves_nothing() {
    let name = format!("mkfk{}", std::process::id());
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mkh-test-child"))
        .arg("hold-minikube")
        .env("MKH_CHILD_ENV_NAME", &name)
        .env("MKH_MINIKUBE", standin_bin())
        .env("MKH_MINIKUBE_ARGS", "--force")
        .env("MK_STANDIN_FAIL_FIRST_BOOT", &name)
        .stdout(out.reopen().unwrap())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    // Wait for the private network minikube made again: mkh's name, no owner record.
    let mut private = None;
    let remade = wait_until(std::time::Duration::from_secs(300), || {
        let Some(nat) = objects_of_env(&name)
            .into_iter()
            .find(|o| o.ends_with("-nat"))
        else {
            return false;
        };
        let priv_name = nat.replace("-nat", "-priv");
        private = Some(priv_name.clone());
        libvirt()
            .lookup_network_by_name(&priv_name)
            .and_then(|n| n.xml_desc(virt::sys::VIR_NETWORK_XML_INACTIVE))
            .is_ok_and(|xml| !xml.contains("urn:x-mkh"))
    });
    assert!(remade, "minikube never made the private network again");
    assert_eq!(
        std::fs::metadata(out.path()).unwrap().len(),
        0,
        "the start was over"
    );
    let private = private.unwrap();
    // Killed as nextest kills a timed-out test, in the middle of minikube's second boot.
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let _ = child.wait();
    // The watchdog removes it all, minikube first (it would make it all again).
    let home = mkh::Settings::current()
        .unwrap()
        .state_dir
        .join("envs")
        .join(&name);
    let gone = wait_until(std::time::Duration::from_secs(60), || {
        leftovers(&name).is_empty() && !network_exists(&private)
    });
    assert!(
        gone,
        "left: {:?}, {private} exists: {}",
        leftovers(&name),
        network_exists(&private)
    );
    // minikube, had it lived on, would have made them again.
    std::thread::sleep(std::time::Duration::from_secs(5));
    assert!(leftovers(&name).is_empty() && !network_exists(&private));
    assert_cluster_gone(&name, &home);
}

#[tokio::test]
async fn a_two_node_cluster_has_both_nodes_on_both_networks_and_leaves_nothing() {
    let env = Env::builder()
        .minikube(MinikubeOptions {
            nodes: Some(2),
            ..standin()
        })
        .up()
        .await
        .unwrap();
    let name = env.name().to_owned();
    let nets = env.networks().clone();
    let names: Vec<&str> = env.machines().iter().map(|m| m.name()).collect();
    assert_eq!(names, [name.clone(), format!("{name}-m02")]);
    let mut seen = Vec::new();
    for m in env.machines() {
        let ips = m.ips().await.unwrap();
        assert!(nets.nat.subnet.contains(&ips.nat) && nets.private.subnet.contains(&ips.private));
        seen.push(ips);
        for role in [NetworkRole::Nat, NetworkRole::Private] {
            let ssh = m.ssh(role).await.unwrap();
            assert_eq!(ssh.exec("id -un").await.unwrap().stdout.trim(), "docker");
            // Each node is named after its machine: `<p>`, `<p>-m02`.
            assert_eq!(ssh.exec("hostname").await.unwrap().stdout.trim(), m.name());
        }
        assert!(
            objects_of_env(&name).contains(&m.name().to_owned()),
            "{} not claimed",
            m.name()
        );
    }
    assert_ne!(seen[0], seen[1]);
    let d = env.describe().await.unwrap();
    assert_eq!(d.machines.len(), 2);
    assert_eq!(d.machines[1].ips, Some(seen[1]));
    let home = env.home().to_owned();
    env.teardown().await.unwrap();
    assert_cluster_gone(&name, &home);
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
    // A node's hostname is its machine name, the profile's for the first node
    // (`pkg/provision/buildroot.go`), never `minikube`.
    assert_eq!(
        ssh.exec("hostname").await.unwrap().stdout.trim(),
        d.profile.as_deref().unwrap()
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
    let mut env = Env::builder()
        .minikube(MinikubeOptions {
            binary: Some(real),
            nodes: Some(2),
            // As root, minikube needs --force; as a user in group libvirt, it does not.
            extra_args: if is_root() {
                vec!["--force".into()]
            } else {
                Vec::new()
            },
            ..MinikubeOptions::default()
        })
        .up()
        .await
        .unwrap();
    let nets = env.networks().clone();
    assert_eq!(env.machines().len(), 2);
    for m in env.machines() {
        let ips = m.ips().await.unwrap();
        assert!(nets.nat.subnet.contains(&ips.nat) && nets.private.subnet.contains(&ips.private));
        let ssh = m.ssh(NetworkRole::Private).await.unwrap();
        assert_eq!(ssh.exec("id -un").await.unwrap().stdout.trim(), "docker");
    }
    let client = env.kube_client().await.unwrap();
    let ip = create_service(&client, "real-probe").await;
    assert!(service_cidr().contains(&ip));
    // A real ISO makes a new host key on every boot: SSH must still work after stop/start.
    env.stop().await.unwrap();
    env.start().await.unwrap();
    assert_eq!(ssh_id(&env, NetworkRole::Private).await, "docker");
    let name = env.name().to_owned();
    let home = env.home().to_owned();
    env.teardown().await.unwrap();
    assert_cluster_gone(&name, &home);
}

#[test]
#[ignore = "needs a user in group libvirt named by MKH_TEST_USER: run by harness/scripts/test.sh"]
fn a_non_root_libvirt_user_runs_minikube_without_force() {
    let user = std::env::var("MKH_TEST_USER")
        .expect("MKH_TEST_USER names a user in group libvirt (see harness/scripts/test.sh)");
    // The guest image and API server come from this user's cache (readable by all); the
    // minikube cache is the other user's own.
    let (dir, bins) =
        binaries_for_another_user(&[env!("CARGO_BIN_EXE_mkh-test-child"), standin_bin()]);
    let (child, standin) = (&bins[0], &bins[1]);
    let cache = dir.path().join("minikube-cache");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let mut c = ChildEnv::start_with(
        std::process::Command::new("runuser")
            .args(["-u", &user, "--"])
            .arg(child)
            .arg("hold-minikube")
            .env("MKH_MINIKUBE", standin)
            .env_remove("MKH_MINIKUBE_ARGS")
            .env("MKH_CACHE_DIR", &settings().cache_dir)
            .env("MKH_MINIKUBE_CACHE", &cache),
    );
    let name = c.env_name();
    assert!(
        objects_of_env(&name).contains(&name),
        "the cluster of {user} has no claimed domain"
    );
    // runuser kills its child 2 s after passing SIGTERM on, too soon for `minikube delete`:
    // signal the child itself.
    let runuser = c.child.id();
    let children =
        std::fs::read_to_string(format!("/proc/{runuser}/task/{runuser}/children")).unwrap();
    let pid: i32 = children.split_whitespace().next().unwrap().parse().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let _ = c.child.wait();
    let left = objects_of_env(&name);
    assert!(left.is_empty(), "{left:?} left by {user}");
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
