//! A Kubernetes node in the minikube stand-in's VM (its default, `MK_STANDIN_CONTROL_PLANE=node`): workloads
//! run, and are reached the ways a test author reaches them on a real minikube.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use kube::api::{Api, ListParams, LogParams, PostParams};
use mkh::{Env, MinikubeOptions, NetworkRole};
use sha2::{Digest, Sha256};

const STANDIN: &str = env!("CARGO_BIN_EXE_minikube");

/// Up, on the stand-in with its node in the VM, with these `minikube start` flags (as root,
/// `--force` too).
async fn node_cluster_with(flags: &[&str]) -> Env {
    nodes_cluster_with(1, flags).await
}

/// [`node_cluster_with`] of `nodes` nodes (mkh's own setting: it refuses `--nodes` in the flags).
async fn nodes_cluster_with(nodes: u32, flags: &[&str]) -> Env {
    std::env::set_var("MK_STANDIN_CONTROL_PLANE", "node");
    let mut extra_args = vec!["--force".to_owned()];
    extra_args.extend(flags.iter().map(|f| f.to_string()));
    Env::builder()
        .minikube(MinikubeOptions {
            binary: Some(STANDIN.into()),
            extra_args,
            nodes: Some(nodes),
            ..MinikubeOptions::default()
        })
        .up()
        .await
        .unwrap()
}

/// Up, on the stand-in with its node in the VM, for `--kubernetes-version`.
async fn node_cluster(kubernetes_version: &str) -> Env {
    node_cluster_with(&[&format!("--kubernetes-version={kubernetes_version}")]).await
}

/// A Deployment of the guest's preloaded busybox image serving its pod's name on port 8080, two
/// replicas, behind a NodePort Service.
async fn deploy_web(client: &kube::Client) -> Service {
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let deployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{
                    "name": "web",
                    "image": "mkh.local/busybox:test",
                    "imagePullPolicy": "Never",
                    "command": ["sh", "-c",
                        "echo hello from $(hostname) > /tmp/index.html; exec httpd -f -p 8080 -h /tmp"],
                    "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 2},
                }]},
            },
        },
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let services: Api<Service> = Api::default_namespaced(client.clone());
    let service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"type": "NodePort", "selector": {"app": "web"},
                 "ports": [{"port": 80, "targetPort": 8080}]},
    }))
    .unwrap();
    services
        .create(&PostParams::default(), &service)
        .await
        .unwrap()
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The pods of `selector` once `count` of them exist and `done` holds for each (under TCG a
/// first start takes minutes).
async fn wait_pods(
    client: &kube::Client,
    selector: &str,
    count: usize,
    done: impl Fn(&Pod) -> bool,
) -> Vec<Pod> {
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let deadline = Instant::now() + Duration::from_secs(420);
    loop {
        let list = pods
            .list(&ListParams::default().labels(selector))
            .await
            .unwrap()
            .items;
        if list.len() == count && list.iter().all(&done) {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "pods {selector}: {:?}",
            list.iter().map(|p| &p.status).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}

/// Waits until the Service's endpoints are exactly these pods' IPs: after a restart the
/// endpoints controller names the pods' new addresses only a while after they are Ready (under
/// TCG, minutes), and until then a NodePort leads to addresses that are gone.
async fn wait_endpoints(client: &kube::Client, service: &str, pods: &[Pod]) {
    let want: std::collections::BTreeSet<String> =
        pods.iter().map(|p| pod_ip(p).to_string()).collect();
    let endpoints: Api<Endpoints> = Api::default_namespaced(client.clone());
    let deadline = Instant::now() + Duration::from_secs(420);
    loop {
        let have: std::collections::BTreeSet<String> = endpoints
            .get_opt(service)
            .await
            .unwrap()
            .and_then(|e| e.subsets)
            .unwrap_or_default()
            .iter()
            .flat_map(|s| s.addresses.iter().flatten().map(|a| a.ip.clone()))
            .collect();
        if have == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "endpoints of {service}: {have:?}, its pods: {want:?}"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}

/// The web pods once both are Ready.
async fn ready_web_pods(client: &kube::Client) -> Vec<Pod> {
    wait_pods(client, "app=web", 2, is_ready).await
}

/// `GET /` of a NodePort, retried for a minute: kube-proxy programs a Service's rules a moment
/// after its endpoints exist.
async fn node_port_answer(ip: Ipv4Addr, port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match http_get(ip, port) {
            Ok(answer) => return answer,
            Err(e) if Instant::now() > deadline => panic!("NodePort {ip}:{port}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_secs(2)).await,
        }
    }
}

/// `GET /` over plain TCP (the answer's last line).
fn http_get(ip: Ipv4Addr, port: u16) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&(ip, port).into(), Duration::from_secs(10))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer.trim().lines().last().unwrap_or_default().to_owned())
}

fn pod_ip(pod: &Pod) -> Ipv4Addr {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .expect("a running pod's IP")
        .parse()
        .unwrap()
}

/// What every node cluster shows, whatever its pod network: the workload runs, its NodePort
/// answers from the host at the node's private IP and its ClusterIP from the VM, the
/// `kubernetes` Service points at the node, kube-system has minikube's pod names, the
/// kubeconfig names the VM. Returns the pods' IPs and the VM's view of its links.
async fn check_node_cluster(env: &Env, pod_bridge: &str) -> Vec<Ipv4Addr> {
    let machine = env.machine().unwrap();
    let node = machine.name().to_owned();
    let private = machine.ips().await.unwrap().private;
    let (kubeconfig, context) = env.kubeconfig().unwrap();
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    assert!(
        text.contains(&format!("server: https://{private}:8443")),
        "context {context}: {text}"
    );
    let client = env.kube_client().await.unwrap();
    let service = deploy_web(&client).await;
    let pods = ready_web_pods(&client).await;
    let ssh = machine.ssh(NetworkRole::Private).await.unwrap();
    let veths = ssh
        .exec(&format!(
            "ip -o link show master {pod_bridge} type veth | wc -l"
        ))
        .await
        .unwrap();
    assert_eq!(veths.stdout.trim(), "2", "one veth per pod on {pod_bridge}");

    let spec = service.spec.unwrap();
    let node_port = spec.ports.unwrap()[0].node_port.unwrap() as u16;
    let answer = node_port_answer(private, node_port).await;
    assert!(answer.starts_with("hello from web-"), "{answer}");
    let cluster_ip: Ipv4Addr = spec.cluster_ip.unwrap().parse().unwrap();
    assert!(
        "10.96.0.0/12"
            .parse::<mkh::ipnet::Ipv4Net>()
            .unwrap()
            .contains(&cluster_ip),
        "{cluster_ip}"
    );
    let from_vm = ssh
        .exec(&format!(
            "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 10 {cluster_ip} 80 | tail -n 1"
        ))
        .await
        .unwrap();
    assert!(from_vm.stdout.starts_with("hello from web-"), "{from_vm:?}");

    let services: Api<Service> = Api::default_namespaced(client.clone());
    let kubernetes = services.get("kubernetes").await.unwrap();
    assert_eq!(
        kubernetes.spec.unwrap().cluster_ip.as_deref(),
        Some("10.96.0.1")
    );
    let endpoints: Api<Endpoints> = Api::default_namespaced(client.clone());
    let subsets = endpoints.get("kubernetes").await.unwrap().subsets.unwrap();
    let address = &subsets[0].addresses.as_ref().unwrap()[0].ip;
    assert_eq!(address, &private.to_string());
    assert_eq!(subsets[0].ports.as_ref().unwrap()[0].port, 8443);

    let system: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
    let names: Vec<String> = system
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    for component in [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
    ] {
        let expected = format!("{component}-{node}");
        assert!(names.contains(&expected), "{expected} in {names:?}");
    }
    assert!(
        names.iter().any(|n| n.starts_with("kube-proxy-")),
        "{names:?}"
    );
    pods.iter().map(pod_ip).collect()
}

/// And an image archive made by the test, loaded with `minikube image load`, runs.
#[tokio::test]
async fn from_kubernetes_1_24_pods_run_on_the_bridge_cni_and_are_reached_through_services() {
    let env = node_cluster("v1.35.1").await;
    let ips = check_node_cluster(&env, "bridge").await;
    let pod_cidr: mkh::ipnet::Ipv4Net = "10.244.0.0/16".parse().unwrap();
    assert!(ips.iter().all(|ip| pod_cidr.contains(ip)), "{ips:?}");
    check_image_load(&env, &env.kube_client().await.unwrap()).await;
    env.teardown().await.unwrap();
}

#[tokio::test]
async fn before_kubernetes_1_24_pods_run_on_docker0_and_are_reached_through_services() {
    let env = node_cluster("v1.20.2").await;
    let ips = check_node_cluster(&env, "docker0").await;
    let docker0: mkh::ipnet::Ipv4Net = "172.17.0.0/16".parse().unwrap();
    assert!(ips.iter().all(|ip| docker0.contains(ip)), "{ips:?}");
    env.teardown().await.unwrap();
}

/// Runs `tar ARGS` (GNU tar, as root-owned entries).
fn tar(args: &[&std::ffi::OsStr]) {
    let status = Command::new("tar")
        .args(["--owner=0", "--group=0", "--numeric-owner"])
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "tar {args:?}");
}

fn sha256_of(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// An image archive as `docker save` writes one, made here: one layer with the host's static
/// busybox as `/bin/sh` and a file `/token` holding `token`, tagged `tag`. Returns the archive and
/// the image's ID (the digest of its configuration, as docker reports it).
fn image_archive(dir: &Path, tag: &str, token: &str) -> (PathBuf, String) {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "cat", "sleep"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    std::fs::write(rootfs.join("token"), format!("{token}\n")).unwrap();
    let layer = dir.join("layer.tar");
    tar(&[
        "-C".as_ref(),
        rootfs.as_os_str(),
        "-cf".as_ref(),
        layer.as_os_str(),
        ".".as_ref(),
    ]);
    let diff_id = sha256_of(&std::fs::read(&layer).unwrap());
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh", "-c", "cat /token && exec sleep 100000"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
    }))
    .unwrap();
    let image_id = sha256_of(&config);
    let archive_dir = dir.join("archive");
    std::fs::create_dir_all(archive_dir.join(&diff_id)).unwrap();
    std::fs::rename(&layer, archive_dir.join(&diff_id).join("layer.tar")).unwrap();
    std::fs::write(archive_dir.join(format!("{image_id}.json")), &config).unwrap();
    let manifest = serde_json::json!([{
        "Config": format!("{image_id}.json"),
        "RepoTags": [tag],
        "Layers": [format!("{diff_id}/layer.tar")],
    }]);
    std::fs::write(archive_dir.join("manifest.json"), manifest.to_string()).unwrap();
    let archive = dir.join("image.tar");
    tar(&[
        "-C".as_ref(),
        archive_dir.as_os_str(),
        "-cf".as_ref(),
        archive.as_os_str(),
        ".".as_ref(),
    ]);
    (archive, image_id)
}

/// `minikube -p <profile> image load ARGS` with the environment's MINIKUBE_HOME.
async fn minikube_image_load(env: &Env, args: &[&std::ffi::OsStr]) -> std::process::Output {
    let description = env.describe().await.unwrap();
    Command::new(STANDIN)
        .arg("-p")
        .arg(description.profile.unwrap())
        .args(["image", "load"])
        .args(args)
        .env("MINIKUBE_HOME", description.minikube_home.unwrap())
        .output()
        .unwrap()
}

fn running_since(pod: &Pod) -> Option<String> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    let running = statuses.first()?.state.as_ref()?.running.as_ref()?;
    Some(running.started_at.as_ref()?.0.to_string())
}

/// Loads an image archive made here with `minikube image load` and runs it in a pod with
/// `imagePullPolicy: Never`: the pod runs, and its container is that image.
async fn check_image_load(env: &Env, client: &kube::Client) {
    let dir = tempfile::tempdir().unwrap();
    let token = format!("token-{}", std::process::id());
    let tag = "mkh.local/loaded:test";
    let (archive, image_id) = image_archive(dir.path(), tag, &token);
    // minikube exits 0 whatever happened: for a missing file too.
    let missing = minikube_image_load(env, &[dir.path().join("absent.tar").as_os_str()]).await;
    assert!(missing.status.success(), "{missing:?}");
    let loaded = minikube_image_load(env, &[archive.as_os_str()]).await;
    assert!(loaded.status.success(), "{loaded:?}");

    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "loaded", "labels": {"app": "loaded"}},
        "spec": {"containers": [{"name": "loaded", "image": tag, "imagePullPolicy": "Never"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let loaded_pod = wait_pods(client, "app=loaded", 1, is_ready).await.remove(0);
    let status = &loaded_pod.status.unwrap().container_statuses.unwrap()[0];
    assert!(
        status.image_id.ends_with(&image_id),
        "the pod runs image {}, the archive holds {image_id}",
        status.image_id
    );
}

/// `--no-kubernetes`: the VM and its container runtime, no kubelet, no kubeconfig; an image
/// loads all the same.
#[tokio::test]
async fn without_kubernetes_the_vm_runs_docker_and_no_kubelet_and_has_no_kubeconfig() {
    let env = node_cluster_with(&["--no-kubernetes"]).await;
    let ssh = env
        .machine()
        .unwrap()
        .ssh(NetworkRole::Private)
        .await
        .unwrap();
    let docker = ssh
        .exec("docker version --format '{{.Server.Version}}'")
        .await
        .unwrap();
    assert!(!docker.stdout.trim().is_empty(), "{docker:?}");
    let kubelet = ssh
        .exec("pidof kubelet; docker ps -q | wc -l")
        .await
        .unwrap();
    assert_eq!(
        kubelet.stdout.trim(),
        "0",
        "no kubelet, no container: {kubelet:?}"
    );

    let Err(error) = env.kube_client().await else {
        panic!("a kube client for a cluster without Kubernetes");
    };
    let error = error.to_string();
    assert!(error.contains("--no-kubernetes"), "{error}");
    let description = env.describe().await.unwrap();
    let list = Command::new(STANDIN)
        .args(["profile", "list"])
        .env("MINIKUBE_HOME", description.minikube_home.unwrap())
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&list.stdout);
    assert!(table.contains("| N/A |"), "{table}");

    let dir = tempfile::tempdir().unwrap();
    let (archive, _) = image_archive(dir.path(), "mkh.local/loaded:test", "no-kubernetes");
    let loaded = minikube_image_load(&env, &[archive.as_os_str()]).await;
    assert!(loaded.status.success(), "{loaded:?}");
    let images = ssh
        .exec("docker image inspect --format '{{.Id}}' mkh.local/loaded:test")
        .await
        .unwrap();
    assert!(images.stdout.starts_with("sha256:"), "{images:?}");
    env.teardown().await.unwrap();
}

#[tokio::test]
#[ignore = "needs KVM: under TCG on two cores a node takes about 10 minutes to be Ready, and this test starts it twice"]
async fn after_stop_and_start_the_node_is_ready_and_runs_its_pods_again() {
    // The default Kubernetes version: the bridge CNI.
    let mut env = node_cluster_with(&[]).await;
    let client = env.kube_client().await.unwrap();
    let service = deploy_web(&client).await;
    let node_port = service.spec.unwrap().ports.unwrap()[0].node_port.unwrap() as u16;
    let before: Vec<_> = ready_web_pods(&client)
        .await
        .iter()
        .map(running_since)
        .collect();

    env.stop().await.unwrap();
    env.start().await.unwrap();
    // The kubeconfig works again (`stop` removed the profile's entries, `start` wrote them).
    let client = env.kube_client().await.unwrap();
    let node_name = env.machine().unwrap().name().to_owned();
    let nodes: Api<Node> = Api::all(client.clone());
    let conditions = nodes
        .get(&node_name)
        .await
        .unwrap()
        .status
        .unwrap()
        .conditions
        .unwrap();
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
        "{conditions:?}"
    );
    // The pods run again: new containers, started after the restart, Ready and serving.
    let pods = wait_pods(&client, "app=web", 2, |p| {
        is_ready(p) && running_since(p).is_some_and(|t| !before.contains(&Some(t)))
    })
    .await;
    wait_endpoints(&client, "web", &pods).await;
    let private = env.machine().unwrap().ips().await.unwrap().private;
    let answer = node_port_answer(private, node_port).await;
    assert!(answer.starts_with("hello from web-"), "{answer}");
    env.teardown().await.unwrap();
}

#[tokio::test]
#[ignore = "needs KVM: under TCG on two cores two node VMs starve each other's control plane"]
async fn two_nodes_run_a_pod_each_and_the_pods_reach_each_other() {
    let env = nodes_cluster_with(2, &[]).await;
    let machines: Vec<String> = env.machines().iter().map(|m| m.name().to_owned()).collect();
    assert_eq!(machines.len(), 2, "{machines:?}");
    let client = env.kube_client().await.unwrap();
    let nodes: Api<Node> = Api::all(client.clone());
    let mut ranges = Vec::new();
    for name in &machines {
        let node = nodes.get(name).await.unwrap();
        let range: mkh::ipnet::Ipv4Net = node
            .spec
            .unwrap()
            .pod_cidr
            .expect("a pod range for each node")
            .parse()
            .unwrap();
        ranges.push(range);
    }
    assert_ne!(ranges[0], ranges[1]);

    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let pod = |name: &str, node: &str, role: &str, command: String| {
        serde_json::from_value::<Pod>(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {"role": role}},
            "spec": {
                "nodeName": node,
                "restartPolicy": "Never",
                "containers": [{
                    "name": name,
                    "image": "mkh.local/busybox:test",
                    "imagePullPolicy": "Never",
                    "command": ["sh", "-c", command],
                }],
            },
        }))
        .unwrap()
    };
    for (i, node) in machines.iter().enumerate() {
        let serve = "echo hello from $(hostname) > /tmp/index.html; exec httpd -f -p 8080 -h /tmp";
        pods.create(
            &PostParams::default(),
            &pod(&format!("server-{i}"), node, "server", serve.into()),
        )
        .await
        .unwrap();
    }
    let servers = wait_pods(&client, "role=server", 2, is_ready).await;
    let ip_of = |name: &str| {
        pod_ip(
            servers
                .iter()
                .find(|p| p.metadata.name.as_deref() == Some(name))
                .unwrap(),
        )
    };
    for (i, range) in ranges.iter().enumerate() {
        let ip = ip_of(&format!("server-{i}"));
        assert!(
            range.contains(&ip),
            "server-{i} at {ip}, outside its node's {range}"
        );
    }
    // From each node's pod to the other node's.
    for (i, node) in machines.iter().enumerate() {
        let peer = ip_of(&format!("server-{}", 1 - i));
        let fetch = format!(
            "i=0; while [ $i -lt 30 ]; do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {peer} 8080 \
             && exit 0; i=$((i + 1)); sleep 2; done; exit 1"
        );
        pods.create(
            &PostParams::default(),
            &pod(&format!("client-{i}"), node, "client", fetch),
        )
        .await
        .unwrap();
    }
    let phase = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default()
    };
    let clients = wait_pods(&client, "role=client", 2, |p| {
        matches!(phase(p).as_str(), "Succeeded" | "Failed")
    })
    .await;
    for (i, node) in machines.iter().enumerate() {
        let name = format!("client-{i}");
        let logs = pods.logs(&name, &LogParams::default()).await.unwrap();
        let peer = format!("hello from server-{}", 1 - i);
        assert!(logs.contains(&peer), "{name} on {node}: {logs:?}");
    }
    assert!(clients.iter().all(|p| phase(p) == "Succeeded"));
    env.teardown().await.unwrap();
}
