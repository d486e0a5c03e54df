//! The Kubernetes node in the VM (the default; `MK_STANDIN_CONTROL_PLANE=host` has none), as minikube's ISO and
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
    /// A kube-apiserver and etcd on the host (no kubelet, no pods): a listed deviation, faster,
    /// for tests that need an API server and no workload, and say so.
    Host,
    /// A whole node in the VM, as minikube's: the default.
    Node,
}

impl ControlPlane {
    /// From `MK_STANDIN_CONTROL_PLANE` (`node`, the default, or `host`).
    pub fn current() -> Result<ControlPlane, Failure> {
        match std::env::var(CONTROL_PLANE).as_deref() {
            Err(_) | Ok("") | Ok("node") => Ok(ControlPlane::Node),
            Ok("host") => Ok(ControlPlane::Host),
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
    /// Several nodes (minikube runs kindnet whatever the version): each node's pods on its own
    /// /24 of 10.244.0.0/16 (the controller manager's allocation, in the order the nodes join),
    /// and on every node a route to each other node's range via that node. The stand-in writes a
    /// bridge CNI per node and the routes itself instead of running kindnet (a listed deviation).
    Routed,
}

impl PodNetwork {
    /// For a cluster of `nodes` nodes of `--kubernetes-version` (`v1.35.1`, `1.20.2`).
    pub fn for_cluster(version: &str, nodes: usize) -> PodNetwork {
        if nodes > 1 {
            return PodNetwork::Routed;
        }
        let v = version.trim_start_matches('v');
        let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        if (major, minor) >= (1, 24) {
            PodNetwork::Bridge
        } else {
            PodNetwork::Docker0
        }
    }

    /// Whether the kubelet runs pods through CNI (else dockershim's docker0).
    fn cni(self) -> bool {
        self != PodNetwork::Docker0
    }
}

/// The pod CIDR of the bridge CNI (minikube's `DefaultPodCIDR`).
pub const POD_CIDR: &str = "10.244.0.0/16";

/// The pod range of the `index`th node of a [`PodNetwork::Routed`] cluster (the controller
/// manager's `--allocate-node-cidrs` gives /24s of [`POD_CIDR`] in the order nodes register).
pub fn pod_range(index: usize) -> String {
    format!("10.244.{index}.0/24")
}

/// One node of the cluster as the stand-in sets it up.
pub struct NodeSpec<'a> {
    pub machine: &'a Machine,
    /// Its place in the profile: 0 is the control plane, the others are workers.
    pub index: usize,
    /// Its private IP.
    pub ip: Ipv4Addr,
    /// The control plane's private IP: where the API server listens.
    pub server: Ipv4Addr,
    pub network: PodNetwork,
}

impl NodeSpec<'_> {
    fn control_plane(&self) -> bool {
        self.index == 0
    }
}

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

/// Everything a node needs from the host, sent to the guest; then the kubelet is (re)started
/// and this waits until the node is Ready. The control plane (index 0) also gets kubeadm's
/// static pods and the addons, and is waited for as minikube waits (API server, default service
/// account, kube-system's pods); a worker joins it (its kubelet and kube-proxy run). Returns when
/// the API server first answered `/readyz`.
pub fn bootstrap(
    env: &Env,
    p: &Profile,
    node: &NodeSpec,
    deadline: Instant,
) -> Result<Instant, Failure> {
    if node.control_plane() {
        certs::write_apiserver(env, p, &[node.ip, certs::SERVICE_IP, Ipv4Addr::LOCALHOST])?;
    }
    let work = tempfile::Builder::new()
        .prefix(".node-")
        .tempdir_in(p.dir())
        .map_err(|e| {
            Failure::error(format!("temporary directory in {}: {e}", p.dir().display()))
        })?;
    let root = work.path().join("root");
    write_tree(env, p, node, &root)?;
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
        keys::ssh_command(node.ip, &node.machine.id_rsa())
            .arg(AGENT_REQUEST)
            .stdin(upload),
        "ssh",
    )?;
    wait_ready(env, p, node, deadline)
}

/// How long a node start took, written to the profile's `node-timings.json` for the node
/// benchmark (`node-bench` of mkh-tests): from the start of provisioning to SSH answering in
/// the control plane's VM, from there to its API server's `/readyz`, from there to the node
/// Ready with kube-system's pods Running; then each worker's boot and join.
pub struct NodeTimings {
    pub accel: &'static str,
    pub start: Instant,
    pub ssh: Instant,
    pub api: Instant,
    pub ready: Instant,
    pub workers_s: Vec<f64>,
}

impl NodeTimings {
    pub fn write(&self, p: &Profile) -> Result<(), Failure> {
        let secs = |from: Instant, to: Instant| (to - from).as_secs_f64();
        let timings = json!({
            "accel": self.accel,
            "vm_s": secs(self.start, self.ssh),
            "control_plane_s": secs(self.ssh, self.api),
            "node_ready_s": secs(self.api, self.ready),
            "first_node_s": secs(self.start, self.ready),
            "workers_s": self.workers_s,
        });
        write_json(&p.dir().join("node-timings.json"), &timings)
    }
}

/// Routes every node's pods to the others' ([`PodNetwork::Routed`]): on each node, each other
/// node's [`pod_range`] via that node's IP, through the guest's node agent.
pub fn route_pods(nodes: &[NodeSpec]) -> Result<(), Failure> {
    for node in nodes {
        let routes: String = nodes
            .iter()
            .filter(|other| other.index != node.index)
            .map(|other| format!("{} {}\n", pod_range(other.index), other.ip))
            .collect();
        run_with_input(
            keys::ssh_command(node.ip, &node.machine.id_rsa()).arg(ROUTES_REQUEST),
            &format!("routes to the other nodes' pods on {}", node.machine.name),
            routes.as_bytes(),
        )?;
    }
    Ok(())
}

/// Waits until the container runtime answers user docker in a node booted without Kubernetes
/// (`--no-kubernetes`): what minikube's start waits for then (`configureRuntimes`).
pub fn wait_runtime(m: &Machine, ip: Ipv4Addr) -> Result<(), Failure> {
    run(
        keys::ssh_command(ip, &m.id_rsa()).arg(RUNTIME_WAIT),
        &format!("the container runtime of {}", m.name),
    )
}

/// Over SSH as docker: until `docker version` answers (5 minutes: under TCG dockerd's first
/// start takes a while).
const RUNTIME_WAIT: &str = "i=0
until docker version >/dev/null 2>&1; do
    i=$((i + 1))
    if [ \"$i\" -gt 300 ]; then
        echo 'docker did not answer within 300 s (the console says why: mkh-guest: ERROR node: ...)' >&2
        exit 1
    fi
    sleep 1
done";

/// Over SSH as docker: the routes (standard input) to the node agent, and its answer.
const ROUTES_REQUEST: &str = "cat > /home/docker/.mkh-routes || exit 1
before=$(grep -c '^routes' /run/mkh/node-status)
echo routes > /run/mkh/node-request
i=0
while [ \"$(grep -c '^routes' /run/mkh/node-status)\" = \"$before\" ]; do
    i=$((i + 1))
    [ \"$i\" -gt 30 ] && { echo 'the node agent did not answer within 30 s' >&2; exit 1; }
    sleep 1
done
tail -n 1 /run/mkh/node-status | grep -q '^routes ok' || { tail -n 1 /run/mkh/node-status >&2; exit 1; }";

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
    succeeded(&out, what)
}

/// [`run`] with `input` on the command's standard input.
fn run_with_input(cmd: &mut Command, what: &str, input: &[u8]) -> Result<(), Failure> {
    use std::io::Write;
    let out = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            // Dropped once written: the command sees the end of its input.
            let written = child.stdin.take().expect("piped stdin").write_all(input);
            let out = child.wait_with_output()?;
            written.map(|()| out)
        })
        .map_err(|e| Failure::error(format!("run {what}: {e}")))?;
    succeeded(&out, what)
}

fn succeeded(out: &std::process::Output, what: &str) -> Result<(), Failure> {
    if out.status.success() {
        Ok(())
    } else {
        Err(Failure::error(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Waits until [`not_ready_because`] finds nothing missing; returns when the API server first
/// answered `/readyz`.
fn wait_ready(
    env: &Env,
    p: &Profile,
    node: &NodeSpec,
    deadline: Instant,
) -> Result<Instant, Failure> {
    let base = format!("https://{}:{APISERVER_PORT}", node.server);
    let name = node.machine.name.as_str();
    let mut last = String::from("no answer yet");
    let mut api_ready = None;
    // One request at a time, every 3 s: under emulation each is a TLS handshake the control
    // plane pays for.
    while Instant::now() < deadline {
        match api_ready {
            None => match control_plane::curl(env, p, &format!("{base}/readyz")) {
                Ok(answer) if answer == "ok" => {
                    api_ready = Some(Instant::now());
                    continue;
                }
                Ok(answer) => last = format!("/readyz: {answer}"),
                Err(e) => last = e,
            },
            Some(api_ready) => match not_ready_because(env, p, &base, name, node.control_plane()) {
                None => return Ok(api_ready),
                Some(why) => last = why,
            },
        }
        std::thread::sleep(Duration::from_secs(3));
    }
    Err(Failure::exit(
        EX_CONTROL_PLANE_TIMEOUT,
        "K8S_NODE_NOT_READY",
        format!("node {name} did not become Ready at {base}: {last} (in its VM: /var/log/kubelet.log, `docker ps -a`)"),
    ))
}

/// What the cluster still lacks for `node`, if anything: the node Ready; for the control plane,
/// the `default` namespace's service account, without which no pod of a test's can be made there
/// (kubeadm's and minikube's `default_sa` wait); kube-system's pods (the control plane's mirror
/// pods, the node's kube-proxy) all Running (minikube's `system_pods` wait).
fn not_ready_because(
    env: &Env,
    p: &Profile,
    base: &str,
    node: &str,
    control_plane: bool,
) -> Option<String> {
    let get = |path: &str| control_plane::curl(env, p, &format!("{base}{path}"));
    match get(&format!("/api/v1/nodes/{node}")) {
        Err(e) => return Some(e),
        Ok(body) if !node_is_ready(&body) => return Some(format!("node {node} is not Ready")),
        Ok(_) => {}
    }
    if control_plane {
        if let Err(e) = get("/api/v1/namespaces/default/serviceaccounts/default") {
            return Some(format!("no default service account yet: {e}"));
        }
    }
    match get("/api/v1/namespaces/kube-system/pods") {
        Err(e) => Some(e),
        Ok(pods) if !system_pods_run(&pods, node, control_plane) => {
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

/// Whether a kube-system pod list has `node`'s kube-proxy and, for a control plane, its four
/// static pods, and every pod Running.
fn system_pods_run(body: &str, node: &str, control_plane: bool) -> bool {
    let list: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let pods: Vec<(&str, &str, &str)> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap_or_default(),
                p["spec"]["nodeName"].as_str().unwrap_or_default(),
                p["status"]["phase"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    let present = |name: &str| pods.iter().any(|(n, _, _)| *n == name);
    let static_pods = [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
    ]
    .iter()
    .all(|c| present(&format!("{c}-{node}")));
    (static_pods || !control_plane)
        && pods
            .iter()
            .any(|(n, on, _)| n.starts_with("kube-proxy-") && *on == node)
        && pods.iter().all(|(_, _, phase)| *phase == "Running")
}

const CERTS: &str = "/var/lib/minikube/certs";

/// The files kubeadm (and minikube's bootstrapper) would leave on the node, under `root`: on
/// every node the CA, the kubelet's and kube-proxy's credentials and configuration and the CNI
/// configuration; on the control plane also the control plane's certificates, kubeconfigs, static
/// pods and the addons.
fn write_tree(env: &Env, p: &Profile, node: &NodeSpec, root: &Path) -> Result<(), Failure> {
    let name = node.machine.name.as_str();
    let certs_dir = root.join(CERTS.trim_start_matches('/'));
    let kube = root.join("etc/kubernetes");
    for dir in [
        certs_dir.clone(),
        kube.clone(),
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
    // The node's own client certificates, kept in the profile across starts.
    let node_certs = p.dir().join("node-certs").join(name);
    fs::create_dir_all(&node_certs)
        .map_err(|e| Failure::error(format!("create {}: {e}", node_certs.display())))?;
    let kubelet_user = format!("system:node:{name}");
    let mut clients = vec![
        ("kubelet", kubelet_user.as_str(), "system:nodes"),
        ("kube-proxy", "system:kube-proxy", ""),
    ];
    let mut users = vec!["kubelet", "kube-proxy"];
    if node.control_plane() {
        copy(env.ca_key(), "ca.key")?;
        copy(p.apiserver_cert(), "apiserver.crt")?;
        copy(p.apiserver_key(), "apiserver.key")?;
        copy(p.sa_key(), "sa.key")?;
        copy(p.sa_pub(), "sa.pub")?;
        copy(p.client_cert(), "admin.crt")?;
        copy(p.client_key(), "admin.key")?;
        clients.extend([
            (
                "apiserver-kubelet-client",
                "kube-apiserver-kubelet-client",
                "system:masters",
            ),
            ("controller-manager", "system:kube-controller-manager", ""),
            ("scheduler", "system:kube-scheduler", ""),
        ]);
        users.extend(["admin", "controller-manager", "scheduler"]);
    }
    for (file, cn, o) in clients {
        certs::write_client(env, &node_certs, file, cn, o)?;
        copy(
            node_certs.join(format!("{file}.crt")),
            &format!("{file}.crt"),
        )?;
        copy(
            node_certs.join(format!("{file}.key")),
            &format!("{file}.key"),
        )?;
    }
    let server = format!("https://{}:{APISERVER_PORT}", node.server);
    for user in users {
        write_json(
            &kube.join(format!("{user}.conf")),
            &kubeconfig(&server, user),
        )?;
    }
    if node.control_plane() {
        for dir in ["manifests", "after-api", "addons"] {
            let dir = kube.join(dir);
            fs::create_dir_all(&dir)
                .map_err(|e| Failure::error(format!("create {}: {e}", dir.display())))?;
        }
        // etcd and the API server first; the controller manager and the scheduler once the API
        // server answers (the node agent moves them), so that they do not crash-loop through
        // the minutes an emulated API server takes to start (a listed deviation: kubeadm
        // writes all four at once).
        for (component, manifest) in static_pods(name, node.ip, node.network) {
            let dir = match component {
                "etcd" | "kube-apiserver" => "manifests",
                _ => "after-api",
            };
            write_json(&kube.join(dir).join(format!("{component}.yaml")), &manifest)?;
        }
        write_json(
            &kube.join("addons/kube-proxy.yaml"),
            &kube_proxy(node.network),
        )?;
    }
    write_json(&root.join("var/lib/kubelet/config.yaml"), &kubelet_config())?;
    let mut flags = format!(
        "--config=/var/lib/kubelet/config.yaml --kubeconfig=/etc/kubernetes/kubelet.conf \
         --hostname-override={name} --node-ip={} --container-runtime=docker \
         --pod-infra-container-image=k8s.gcr.io/pause:3.2",
        node.ip
    );
    let pods_on = match node.network {
        PodNetwork::Bridge => Some(POD_CIDR.to_owned()),
        PodNetwork::Routed => Some(pod_range(node.index)),
        PodNetwork::Docker0 => None,
    };
    if let Some(range) = pods_on {
        flags.push_str(
            " --network-plugin=cni --cni-conf-dir=/etc/cni/net.d --cni-bin-dir=/opt/cni/bin",
        );
        write_json(
            &root.join("etc/cni/net.d/1-k8s.conflist"),
            &bridge_cni(&range),
        )?;
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
        // Only the beta groups a 1.20 node's own components read (EndpointSlices for
        // kube-proxy, disruption budgets for the scheduler, RuntimeClasses for the kubelet), as
        // v1.24 and later serve no beta group by default; no priority and fairness (its
        // configuration objects are written at every start). Together about 40% less work before
        // the API server is ready (a listed deviation).
        "--runtime-config=api/beta=false,discovery.k8s.io/v1beta1=true,policy/v1beta1=true,node.k8s.io/v1beta1=true".into(),
        "--enable-priority-and-fairness=false".into(),
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
        // kubeadm's `*,bootstrapsigner,tokencleaner` less what a test cluster does without
        // (quotas, autoscaling, CSRs, volumes, cron jobs, disruption budgets; a listed
        // deviation): under emulation each controller's start costs seconds.
        "--controllers=*,-resourcequota,-horizontalpodautoscaling,-csrsigning,-csrapproving,-csrcleaner,-attachdetach,-persistentvolume-binder,-persistentvolume-expander,-pvc-protection,-pv-protection,-cronjob,-disruption".into(),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        "--cluster-name=mk".into(),
        "--profiling=false".into(),
    ];
    if network.cni() {
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
    format!(
        "k8s.gcr.io/{component}:{}",
        control_plane::KUBERNETES_VERSION
    )
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
    if network.cni() {
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
/// host-local IPAM on `range` (the pod CIDR; a node's own range when several), portmap.
fn bridge_cni(range: &str) -> Value {
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
                "ipam": {"type": "host-local", "subnet": range},
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
        let one = |v| PodNetwork::for_cluster(v, 1);
        assert_eq!(one("v1.35.1"), PodNetwork::Bridge);
        assert_eq!(one("v1.24.0"), PodNetwork::Bridge);
        assert_eq!(one("v1.23.17"), PodNetwork::Docker0);
        assert_eq!(one("v1.20.2"), PodNetwork::Docker0);
        assert_eq!(one("1.20.2"), PodNetwork::Docker0);
        // Several nodes: kindnet in minikube, whatever the version.
        assert_eq!(PodNetwork::for_cluster("v1.20.2", 2), PodNetwork::Routed);
        assert_eq!(PodNetwork::for_cluster("v1.35.1", 3), PodNetwork::Routed);
        assert_eq!(pod_range(1), "10.244.1.0/24");
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
        let pod = |name: &str, phase: &str| json!({"metadata": {"name": name}, "spec": {"nodeName": "p"}, "status": {"phase": phase}});
        let mut items = vec![
            pod("etcd-p", "Running"),
            pod("kube-apiserver-p", "Running"),
            pod("kube-controller-manager-p", "Running"),
            pod("kube-scheduler-p", "Running"),
        ];
        let list = |items: &Vec<Value>| json!({"items": items}).to_string();
        assert!(
            !system_pods_run(&list(&items), "p", true),
            "no kube-proxy yet"
        );
        items.push(pod("kube-proxy-x7z2k", "Pending"));
        assert!(!system_pods_run(&list(&items), "p", true));
        items.pop();
        items.push(pod("kube-proxy-x7z2k", "Running"));
        assert!(system_pods_run(&list(&items), "p", true));
        assert!(
            !system_pods_run(&list(&items), "q", true),
            "another node's pods"
        );
        // A worker: its own kube-proxy, no static pods of its own.
        assert!(!system_pods_run(&list(&items), "p-m02", false));
        items.push(json!({"metadata": {"name": "kube-proxy-a1b2c"}, "spec": {"nodeName": "p-m02"}, "status": {"phase": "Running"}}));
        assert!(system_pods_run(&list(&items), "p-m02", false));
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
        // The API server's own flags on the API server alone (another program exits on them).
        for (name, pod) in &pods {
            let command = pod["spec"]["containers"][0]["command"].to_string();
            assert_eq!(
                command.contains("--runtime-config="),
                *name == "kube-apiserver",
                "{name}: {command}"
            );
        }
    }
}
