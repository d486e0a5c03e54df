//! The Kubernetes node in the VM (`MK_STANDIN_CONTROL_PLANE=node`), as minikube's ISO and
//! kubeadm make it: etcd, kube-apiserver on the VM's private IP port 8443,
//! kube-controller-manager and kube-scheduler as static pods named `<component>-<node>` in
//! kube-system, the kubelet with the docker runtime, kube-proxy as a DaemonSet, and the pod
//! network minikube picks for the Kubernetes version.
//!
//! The VM boots mkh's guest in node mode: the node bundle (`mkh_guest_image::ensure_node_bundle`,
//! read-only, shared) and the machine's own raw disk at kvm2's `DiskPath`. The guest starts
//! dockerd and preloads its images; then, as minikube's bootstrapper does over SSH, the
//! stand-in sends what kubeadm would write (certificates, kubeconfigs, static pod manifests,
//! the kubelet's configuration, the CNI configuration, the kube-proxy addon) as one archive and
//! asks the guest's node agent to start the kubelet.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::certs;
use crate::control_plane::{self, APISERVER_PORT, SERVICE_CIDR};
use crate::keys;
use crate::paths::{Env, Machine, Profile};
use crate::{Failure, EX_CONTROL_PLANE_TIMEOUT, EX_PROGRAM_CONFIG};

/// The stand-in setting that picks where the control plane runs.
pub const CONTROL_PLANE: &str = "MK_STANDIN_CONTROL_PLANE";

/// Where the control plane runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlPlane {
    /// A kube-apiserver and etcd on the host (no kubelet, no pods): fast, for tests that need
    /// an API server and no workload.
    Host,
    /// A whole node in the VM, as minikube's.
    Node,
}

impl ControlPlane {
    /// From `MK_STANDIN_CONTROL_PLANE` (`host`, the default, or `node`).
    pub fn current() -> Result<ControlPlane, Failure> {
        match std::env::var(CONTROL_PLANE).as_deref() {
            Err(_) | Ok("") | Ok("host") => Ok(ControlPlane::Host),
            Ok("node") => Ok(ControlPlane::Node),
            Ok(other) => Err(Failure::exit(
                EX_PROGRAM_CONFIG,
                "MK_STANDIN_CONTROL_PLANE",
                format!("{CONTROL_PLANE}={other:?}: expected `host` (API server on the host) or `node` (a Kubernetes node in the VM)"),
            )),
        }
    }
}

/// The pod network minikube gives a Kubernetes version with the docker runtime: the bridge CNI
/// from 1.24 on (dockershim gone), docker0 without CNI before (`pkg/minikube/cni/cni.go`,
/// `chooseDefault`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodNetwork {
    /// CNI `bridge` on bridge `bridge`, 10.244.0.0/16.
    Bridge,
    /// dockershim without CNI: docker0, 172.17.0.0/16.
    Docker0,
}

impl PodNetwork {
    /// For `--kubernetes-version` (`v1.35.1`, `1.20.2`).
    pub fn for_version(version: &str) -> PodNetwork {
        let v = version.trim_start_matches('v');
        let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        if (major, minor) >= (1, 24) {
            PodNetwork::Bridge
        } else {
            PodNetwork::Docker0
        }
    }
}

/// The pod CIDR of the bridge CNI (minikube's `DefaultPodCIDR`).
pub const POD_CIDR: &str = "10.244.0.0/16";

/// The disks of a node VM: its own raw disk, and the shared bundle.
pub struct NodeDisks {
    pub data: PathBuf,
    pub bundle: PathBuf,
}

/// Makes the machine's raw disk at kvm2's `DiskPath` (sparse, `size_mb`; the guest formats it
/// on first boot) and finds or builds the node bundle.
pub fn disks(m: &Machine, size_mb: u32) -> Result<NodeDisks, Failure> {
    let cache = mkh::Settings::current()
        .map_err(|e| Failure::error(e.to_string()))?
        .cache_dir;
    let bundle = mkh_guest_image::ensure_node_bundle(&cache, &control_plane::kubernetes_dir()?)
        .map_err(|e| Failure::error(format!("node bundle: {e}")))?;
    let data = m.disk();
    if !data.exists() {
        let file = fs::File::create(&data)
            .map_err(|e| Failure::error(format!("create {}: {e}", data.display())))?;
        file.set_len(u64::from(size_mb) << 20)
            .map_err(|e| Failure::error(format!("size {}: {e}", data.display())))?;
    }
    Ok(NodeDisks {
        data,
        bundle: bundle.disk,
    })
}

/// Everything the node needs from the host, sent to the guest; then the kubelet is (re)started
/// and this waits until the API server answers at `vm_ip:8443` and the node is Ready.
pub fn bootstrap(
    env: &Env,
    p: &Profile,
    m: &Machine,
    vm_ip: Ipv4Addr,
    network: PodNetwork,
    deadline: Instant,
) -> Result<(), Failure> {
    certs::write_apiserver(env, p, &[vm_ip, certs::SERVICE_IP, Ipv4Addr::LOCALHOST])?;
    let work = tempfile::Builder::new()
        .prefix(".node-")
        .tempdir_in(p.dir())
        .map_err(|e| {
            Failure::error(format!("temporary directory in {}: {e}", p.dir().display()))
        })?;
    let root = work.path().join("root");
    write_tree(env, p, &m.name, vm_ip, network, &root)?;
    let archive = work.path().join("node.tar");
    run(
        Command::new("tar")
            .args(["--owner=0", "--group=0", "-C"])
            .arg(&root)
            .arg("-cf")
            .arg(&archive)
            .arg("."),
        "tar",
    )?;
    let upload = fs::File::open(&archive)
        .map_err(|e| Failure::error(format!("open {}: {e}", archive.display())))?;
    run(
        keys::ssh_command(vm_ip, &m.id_rsa())
            .arg(AGENT_REQUEST)
            .stdin(upload),
        "ssh",
    )?;
    wait_ready(env, p, &m.name, vm_ip, deadline)
}

/// Over SSH as docker: store the archive, wait (up to 5 minutes: under TCG dockerd and the
/// preloaded images take a while on a first boot) for the guest's node agent, and ask it to
/// start the kubelet.
const AGENT_REQUEST: &str = "cat > /home/docker/.mkh-node.tar || exit 1
i=0
until [ -p /run/mkh/node-request ]; do
    i=$((i + 1))
    if [ \"$i\" -gt 300 ]; then
        echo 'the node agent did not start within 300 s (the console says why: mkh-guest: ERROR node: ...)' >&2
        exit 1
    fi
    sleep 1
done
echo kubelet > /run/mkh/node-request";

fn run(cmd: &mut Command, what: &str) -> Result<(), Failure> {
    let out = cmd
        .stdout(Stdio::null())
        .output()
        .map_err(|e| Failure::error(format!("run {what}: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Failure::error(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Waits until [`not_ready_because`] finds nothing missing.
fn wait_ready(
    env: &Env,
    p: &Profile,
    node: &str,
    vm_ip: Ipv4Addr,
    deadline: Instant,
) -> Result<(), Failure> {
    let base = format!("https://{vm_ip}:{APISERVER_PORT}");
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        match not_ready_because(env, p, &base, node) {
            None => return Ok(()),
            Some(why) => last = why,
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    Err(Failure::exit(
        EX_CONTROL_PLANE_TIMEOUT,
        "K8S_NODE_NOT_READY",
        format!("node {node} did not become Ready at {base}: {last} (in the VM: /var/log/kubelet.log, `docker ps -a`)"),
    ))
}

/// What the cluster still lacks, if anything: the node Ready; the `default` namespace's
/// service account, without which no pod of a test's can be made there (kubeadm's and minikube's
/// `default_sa` wait); kube-system's pods (the control plane's mirror pods and kube-proxy) all
/// Running (minikube's `system_pods` wait).
fn not_ready_because(env: &Env, p: &Profile, base: &str, node: &str) -> Option<String> {
    let get = |path: &str| control_plane::curl(env, p, &format!("{base}{path}"));
    match get(&format!("/api/v1/nodes/{node}")) {
        Err(e) => return Some(e),
        Ok(body) if !node_is_ready(&body) => return Some(format!("node {node} is not Ready")),
        Ok(_) => {}
    }
    if let Err(e) = get("/api/v1/namespaces/default/serviceaccounts/default") {
        return Some(format!("no default service account yet: {e}"));
    }
    match get("/api/v1/namespaces/kube-system/pods") {
        Err(e) => Some(e),
        Ok(pods) if !system_pods_run(&pods, node) => {
            Some("kube-system's pods are not all Running".into())
        }
        Ok(_) => None,
    }
}

/// Whether a Node object's `Ready` condition is `True`.
fn node_is_ready(body: &str) -> bool {
    let node: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// Whether a kube-system pod list has the control plane's four pods of `node` and a kube-proxy,
/// every one Running.
fn system_pods_run(body: &str, node: &str) -> bool {
    let list: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let pods: Vec<(&str, &str)> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap_or_default(),
                p["status"]["phase"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    let present = |name: &str| pods.iter().any(|(n, _)| *n == name);
    [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
    ]
    .iter()
    .all(|c| present(&format!("{c}-{node}")))
        && pods.iter().any(|(n, _)| n.starts_with("kube-proxy-"))
        && pods.iter().all(|(_, phase)| *phase == "Running")
}

const CERTS: &str = "/var/lib/minikube/certs";
const VERSION: &str = "v1.20.2";

/// The files kubeadm (and minikube's bootstrapper) would leave on the node, under `root`.
fn write_tree(
    env: &Env,
    p: &Profile,
    node: &str,
    vm_ip: Ipv4Addr,
    network: PodNetwork,
    root: &Path,
) -> Result<(), Failure> {
    let certs_dir = root.join(CERTS.trim_start_matches('/'));
    let kube = root.join("etc/kubernetes");
    for dir in [
        certs_dir.clone(),
        kube.join("manifests"),
        kube.join("addons"),
        root.join("var/lib/kubelet"),
        root.join("etc/mkh"),
        root.join("etc/cni/net.d"),
    ] {
        fs::create_dir_all(&dir)
            .map_err(|e| Failure::error(format!("create {}: {e}", dir.display())))?;
    }
    let copy = |from: PathBuf, name: &str| -> Result<(), Failure> {
        fs::copy(&from, certs_dir.join(name))
            .map(drop)
            .map_err(|e| Failure::error(format!("copy {}: {e}", from.display())))
    };
    copy(env.ca_cert(), "ca.crt")?;
    copy(env.ca_key(), "ca.key")?;
    copy(p.apiserver_cert(), "apiserver.crt")?;
    copy(p.apiserver_key(), "apiserver.key")?;
    copy(p.sa_key(), "sa.key")?;
    copy(p.sa_pub(), "sa.pub")?;
    copy(p.client_cert(), "admin.crt")?;
    copy(p.client_key(), "admin.key")?;
    // The node's own client certificates, kept in the profile across starts.
    let node_certs = p.dir().join("node-certs");
    fs::create_dir_all(&node_certs)
        .map_err(|e| Failure::error(format!("create {}: {e}", node_certs.display())))?;
    let kubelet_user = format!("system:node:{node}");
    for (name, cn, o) in [
        (
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            "system:masters",
        ),
        ("kubelet", kubelet_user.as_str(), "system:nodes"),
        ("controller-manager", "system:kube-controller-manager", ""),
        ("scheduler", "system:kube-scheduler", ""),
        ("kube-proxy", "system:kube-proxy", ""),
    ] {
        certs::write_client(env, &node_certs, name, cn, o)?;
        copy(
            node_certs.join(format!("{name}.crt")),
            &format!("{name}.crt"),
        )?;
        copy(
            node_certs.join(format!("{name}.key")),
            &format!("{name}.key"),
        )?;
    }
    let server = format!("https://{vm_ip}:{APISERVER_PORT}");
    for (file, user) in [
        ("admin.conf", "admin"),
        ("kubelet.conf", "kubelet"),
        ("controller-manager.conf", "controller-manager"),
        ("scheduler.conf", "scheduler"),
        ("kube-proxy.conf", "kube-proxy"),
    ] {
        write_json(&kube.join(file), &kubeconfig(&server, user))?;
    }
    for (name, manifest) in static_pods(node, vm_ip, network) {
        write_json(
            &kube.join("manifests").join(format!("{name}.yaml")),
            &manifest,
        )?;
    }
    write_json(&kube.join("addons/kube-proxy.yaml"), &kube_proxy(network))?;
    write_json(&root.join("var/lib/kubelet/config.yaml"), &kubelet_config())?;
    let mut flags = format!(
        "--config=/var/lib/kubelet/config.yaml --kubeconfig=/etc/kubernetes/kubelet.conf \
         --hostname-override={node} --node-ip={vm_ip} --container-runtime=docker \
         --pod-infra-container-image=k8s.gcr.io/pause:3.2"
    );
    if network == PodNetwork::Bridge {
        flags.push_str(
            " --network-plugin=cni --cni-conf-dir=/etc/cni/net.d --cni-bin-dir=/opt/cni/bin",
        );
        write_json(&root.join("etc/cni/net.d/1-k8s.conflist"), &bridge_cni())?;
    }
    fs::write(root.join("etc/mkh/kubelet.flags"), flags + "\n")
        .map_err(|e| Failure::error(format!("write the kubelet's flags: {e}")))
}

fn write_json(path: &Path, value: &Value) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value).expect("JSON of a Value");
    fs::write(path, text).map_err(|e| Failure::error(format!("write {}: {e}", path.display())))
}

/// A kubeconfig for one of the node's users (certificates under `/var/lib/minikube/certs`).
fn kubeconfig(server: &str, user: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "mk", "cluster": {
            "certificate-authority": format!("{CERTS}/ca.crt"), "server": server}}],
        "users": [{"name": user, "user": {
            "client-certificate": format!("{CERTS}/{user}.crt"),
            "client-key": format!("{CERTS}/{user}.key")}}],
        "contexts": [{"name": "mk", "context": {"cluster": "mk", "user": user}}],
        "current-context": "mk",
    })
}

/// kubeadm's four static pods. Their images are the guest's preloaded base image; the programs
/// come from the node's `/usr`, mounted read-only (a listed deviation).
fn static_pods(node: &str, vm_ip: Ipv4Addr, network: PodNetwork) -> Vec<(&'static str, Value)> {
    let etcd = vec![
        "/usr/bin/etcd".to_string(),
        format!("--name={node}"),
        "--data-dir=/var/lib/minikube/etcd".into(),
        "--listen-client-urls=http://127.0.0.1:2379".into(),
        "--advertise-client-urls=http://127.0.0.1:2379".into(),
        "--listen-peer-urls=http://127.0.0.1:2380".into(),
        "--initial-advertise-peer-urls=http://127.0.0.1:2380".into(),
        format!("--initial-cluster={node}=http://127.0.0.1:2380"),
        "--snapshot-count=10000".into(),
        "--logger=zap".into(),
        "--log-outputs=stderr".into(),
    ];
    let apiserver = vec![
        "/usr/bin/kube-apiserver".to_string(),
        format!("--advertise-address={vm_ip}"),
        "--bind-address=0.0.0.0".into(),
        format!("--secure-port={APISERVER_PORT}"),
        "--insecure-port=0".into(),
        "--etcd-servers=http://127.0.0.1:2379".into(),
        format!("--client-ca-file={CERTS}/ca.crt"),
        format!("--tls-cert-file={CERTS}/apiserver.crt"),
        format!("--tls-private-key-file={CERTS}/apiserver.key"),
        format!("--kubelet-client-certificate={CERTS}/apiserver-kubelet-client.crt"),
        format!("--kubelet-client-key={CERTS}/apiserver-kubelet-client.key"),
        "--kubelet-preferred-address-types=InternalIP,Hostname".into(),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        format!("--service-account-key-file={CERTS}/sa.pub"),
        format!("--service-account-signing-key-file={CERTS}/sa.key"),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
        "--authorization-mode=Node,RBAC".into(),
        "--enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,DefaultStorageClass,DefaultTolerationSeconds,NodeRestriction,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ResourceQuota".into(),
        "--allow-privileged=true".into(),
        "--profiling=false".into(),
    ];
    let mut controller_manager = vec![
        // No delegated authentication or authorization for its own health endpoint (kubeadm
        // sets both): they read a ConfigMap that RBAC lets it read only once the API server has
        // bootstrapped its roles, and a start before that ends the process (a crash loop with
        // back-off, a minute under TCG).
        "/usr/bin/kube-controller-manager".to_string(),
        "--kubeconfig=/etc/kubernetes/controller-manager.conf".into(),
        "--bind-address=127.0.0.1".into(),
        // One node: no election (minikube's single control plane; under TCG a renewal can
        // miss its deadline and restart the component for nothing).
        "--leader-elect=false".into(),
        format!("--service-account-private-key-file={CERTS}/sa.key"),
        format!("--root-ca-file={CERTS}/ca.crt"),
        format!("--cluster-signing-cert-file={CERTS}/ca.crt"),
        format!("--cluster-signing-key-file={CERTS}/ca.key"),
        "--use-service-account-credentials=true".into(),
        "--controllers=*,bootstrapsigner,tokencleaner".into(),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        "--cluster-name=mk".into(),
        "--profiling=false".into(),
    ];
    if network == PodNetwork::Bridge {
        controller_manager.push("--allocate-node-cidrs=true".into());
        controller_manager.push(format!("--cluster-cidr={POD_CIDR}"));
    }
    let scheduler = vec![
        "/usr/bin/kube-scheduler".to_string(),
        "--kubeconfig=/etc/kubernetes/scheduler.conf".into(),
        "--bind-address=127.0.0.1".into(),
        "--leader-elect=false".into(),
        "--profiling=false".into(),
    ];
    vec![
        ("etcd", static_pod("etcd", "k8s.gcr.io/etcd:3.4.13-0", etcd)),
        (
            "kube-apiserver",
            static_pod("kube-apiserver", &image("kube-apiserver"), apiserver),
        ),
        (
            "kube-controller-manager",
            static_pod(
                "kube-controller-manager",
                &image("kube-controller-manager"),
                controller_manager,
            ),
        ),
        (
            "kube-scheduler",
            static_pod("kube-scheduler", &image("kube-scheduler"), scheduler),
        ),
    ]
}

fn image(component: &str) -> String {
    format!("k8s.gcr.io/{component}:{VERSION}")
}

fn host_path(name: &str, path: &str, mount: &str, read_only: bool) -> (Value, Value) {
    (
        json!({"name": name, "hostPath": {"path": path, "type": "DirectoryOrCreate"}}),
        json!({"name": name, "mountPath": mount, "readOnly": read_only}),
    )
}

fn static_pod(component: &str, image: &str, command: Vec<String>) -> Value {
    let mounts = [
        host_path("usr", "/usr", "/usr", true),
        host_path("certs", CERTS, CERTS, true),
        host_path("kubeconfigs", "/etc/kubernetes", "/etc/kubernetes", true),
        host_path(
            "etcd-data",
            "/var/lib/minikube/etcd",
            "/var/lib/minikube/etcd",
            false,
        ),
    ];
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": component,
            "namespace": "kube-system",
            "labels": {"component": component, "tier": "control-plane"},
        },
        "spec": {
            "hostNetwork": true,
            "priorityClassName": "system-node-critical",
            "containers": [{
                "name": component,
                "image": image,
                "imagePullPolicy": "Never",
                "command": command,
                "volumeMounts": mounts.iter().map(|(_, m)| m.clone()).collect::<Vec<_>>(),
            }],
            "volumes": mounts.iter().map(|(v, _)| v.clone()).collect::<Vec<_>>(),
        },
    })
}

/// kube-proxy as kubeadm deploys it: a DaemonSet in kube-system (`kube-proxy-<hash>` pods),
/// iptables mode; its credentials are a client certificate of `system:kube-proxy` (kubeadm
/// uses a service account; a listed deviation).
fn kube_proxy(network: PodNetwork) -> Value {
    let mut command = vec![
        "/usr/bin/kube-proxy".to_string(),
        "--kubeconfig=/etc/kubernetes/kube-proxy.conf".into(),
        "--hostname-override=$(NODE_NAME)".into(),
        "--proxy-mode=iptables".into(),
        "--conntrack-max-per-core=0".into(),
    ];
    if network == PodNetwork::Bridge {
        command.push(format!("--cluster-cidr={POD_CIDR}"));
    }
    let mounts = [
        host_path("usr", "/usr", "/usr", true),
        host_path("certs", CERTS, CERTS, true),
        host_path("kubeconfigs", "/etc/kubernetes", "/etc/kubernetes", true),
        host_path("modules", "/lib/modules", "/lib/modules", true),
    ];
    let mut volumes: Vec<Value> = mounts.iter().map(|(v, _)| v.clone()).collect();
    volumes.push(json!({"name": "xtables-lock", "hostPath": {"path": "/run/xtables.lock", "type": "FileOrCreate"}}));
    let mut volume_mounts: Vec<Value> = mounts.iter().map(|(_, m)| m.clone()).collect();
    volume_mounts.push(json!({"name": "xtables-lock", "mountPath": "/run/xtables.lock"}));
    json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "kube-proxy", "namespace": "kube-system", "labels": {"k8s-app": "kube-proxy"}},
        "spec": {
            "selector": {"matchLabels": {"k8s-app": "kube-proxy"}},
            "template": {
                "metadata": {"labels": {"k8s-app": "kube-proxy"}},
                "spec": {
                    "hostNetwork": true,
                    "priorityClassName": "system-node-critical",
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [{
                        "name": "kube-proxy",
                        "image": image("kube-proxy"),
                        "imagePullPolicy": "Never",
                        "securityContext": {"privileged": true},
                        "command": command,
                        "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                        "volumeMounts": volume_mounts,
                    }],
                    "volumes": volumes,
                },
            },
        },
    })
}

/// The kubelet's configuration as minikube's kubeadm template sets it (cgroupfs, cluster DNS
/// 10.96.0.10, no disk-pressure evictions: a test VM's disk is small and nothing is evicted).
fn kubelet_config() -> Value {
    json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "staticPodPath": "/etc/kubernetes/manifests",
        "cgroupDriver": "cgroupfs",
        "clusterDNS": ["10.96.0.10"],
        "clusterDomain": "cluster.local",
        "failSwapOn": false,
        "authentication": {
            "anonymous": {"enabled": false},
            "webhook": {"enabled": true},
            "x509": {"clientCAFile": format!("{CERTS}/ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "evictionHard": {"nodefs.available": "0%", "nodefs.inodesFree": "0%", "imagefs.available": "0%"},
        "imageGCHighThresholdPercent": 100,
    })
}

/// minikube's bridge CNI (`pkg/minikube/cni/bridge.go`): network `bridge` on bridge `bridge`,
/// host-local IPAM on the pod CIDR, portmap.
fn bridge_cni() -> Value {
    json!({
        "cniVersion": "0.3.1",
        "name": "bridge",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "bridge",
                "addIf": "true",
                "isDefaultGateway": true,
                "forceAddress": false,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {"type": "host-local", "subnet": POD_CIDR},
            },
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pod_network_follows_minikube_s_choice_for_the_version() {
        assert_eq!(PodNetwork::for_version("v1.35.1"), PodNetwork::Bridge);
        assert_eq!(PodNetwork::for_version("v1.24.0"), PodNetwork::Bridge);
        assert_eq!(PodNetwork::for_version("v1.23.17"), PodNetwork::Docker0);
        assert_eq!(PodNetwork::for_version("v1.20.2"), PodNetwork::Docker0);
        assert_eq!(PodNetwork::for_version("1.20.2"), PodNetwork::Docker0);
    }

    #[test]
    fn node_readiness_is_read_from_the_ready_condition() {
        let ready = r#"{"status":{"conditions":[{"type":"MemoryPressure","status":"False"},{"type":"Ready","status":"True"}]}}"#;
        let not_ready = r#"{"status":{"conditions":[{"type":"Ready","status":"False"}]}}"#;
        assert!(node_is_ready(ready));
        assert!(!node_is_ready(not_ready));
        assert!(!node_is_ready("not json"));
    }

    #[test]
    fn system_pods_count_once_the_control_plane_and_kube_proxy_run() {
        let pod = |name: &str, phase: &str| json!({"metadata": {"name": name}, "status": {"phase": phase}});
        let mut items = vec![
            pod("etcd-p", "Running"),
            pod("kube-apiserver-p", "Running"),
            pod("kube-controller-manager-p", "Running"),
            pod("kube-scheduler-p", "Running"),
        ];
        let list = |items: &Vec<Value>| json!({"items": items}).to_string();
        assert!(!system_pods_run(&list(&items), "p"), "no kube-proxy yet");
        items.push(pod("kube-proxy-x7z2k", "Pending"));
        assert!(!system_pods_run(&list(&items), "p"));
        items.pop();
        items.push(pod("kube-proxy-x7z2k", "Running"));
        assert!(system_pods_run(&list(&items), "p"));
        assert!(!system_pods_run(&list(&items), "q"), "another node's pods");
    }

    #[test]
    fn the_static_pods_carry_kubeadm_s_names_and_the_node_s_address() {
        let pods = static_pods("p1", Ipv4Addr::new(192, 168, 39, 5), PodNetwork::Bridge);
        let names: Vec<_> = pods.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "etcd",
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler"
            ]
        );
        let apiserver = &pods[1].1["spec"]["containers"][0]["command"];
        assert!(apiserver
            .as_array()
            .unwrap()
            .contains(&json!("--advertise-address=192.168.39.5")));
        let docker0 = static_pods("p1", Ipv4Addr::new(192, 168, 39, 5), PodNetwork::Docker0);
        let cm = docker0[2].1["spec"]["containers"][0]["command"].to_string();
        assert!(!cm.contains("--allocate-node-cidrs"), "{cm}");
    }
}
