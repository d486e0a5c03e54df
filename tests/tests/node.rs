//! A Kubernetes node in the minikube stand-in's VM (`MK_STANDIN_CONTROL_PLANE=node`): workloads
//! run, and are reached the ways a test author reaches them on a real minikube.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use kube::api::{Api, ListParams, PostParams};
use mkh::{Env, MinikubeOptions, NetworkRole};

const STANDIN: &str = env!("CARGO_BIN_EXE_minikube");

/// Up, on the stand-in with its node in the VM, for `--kubernetes-version`.
async fn node_cluster(kubernetes_version: &str) -> Env {
    std::env::set_var("MK_STANDIN_CONTROL_PLANE", "node");
    Env::builder()
        .minikube(MinikubeOptions {
            binary: Some(STANDIN.into()),
            extra_args: vec![
                "--force".into(),
                format!("--kubernetes-version={kubernetes_version}"),
            ],
            ..MinikubeOptions::default()
        })
        .up()
        .await
        .unwrap()
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

/// The web pods once both are Ready (under TCG a first start takes minutes).
async fn ready_web_pods(client: &kube::Client) -> Vec<Pod> {
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let deadline = Instant::now() + Duration::from_secs(420);
    loop {
        let list = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .unwrap()
            .items;
        let ready = |p: &Pod| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        };
        if list.len() == 2 && list.iter().all(ready) {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "the web pods did not become Ready: {:?}",
            list.iter().map(|p| &p.status).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
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
    // kube-proxy programs a new Service's rules a moment after its endpoints exist.
    let deadline = Instant::now() + Duration::from_secs(60);
    let answer = loop {
        match http_get(private, node_port) {
            Ok(answer) => break answer,
            Err(e) if Instant::now() > deadline => panic!("NodePort {private}:{node_port}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_secs(2)).await,
        }
    };
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

#[tokio::test]
async fn from_kubernetes_1_24_pods_run_on_the_bridge_cni_and_are_reached_through_services() {
    let env = node_cluster("v1.35.1").await;
    let ips = check_node_cluster(&env, "bridge").await;
    let pod_cidr: mkh::ipnet::Ipv4Net = "10.244.0.0/16".parse().unwrap();
    assert!(ips.iter().all(|ip| pod_cidr.contains(ip)), "{ips:?}");
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
