//! The commands: what each one does, in kvm2's order, with minikube's messages and exit codes.

use std::collections::BTreeMap;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::cli::{self, Command, Invocation, Output, StartOptions};
use crate::config::{self, AuthOptions, ClusterConfig, HostOptions, Kvm2Driver, MachineConfig};
use crate::control_plane::{self, APISERVER, APISERVER_PORT, ETCD, SERVICE_CIDR};
use crate::kubeconfig::{self, Material, ProfileEntry};
use crate::libvirt::{DomState, Libvirt, URI};
use crate::node::{self, ControlPlane, NodeSpec, PodNetwork};
use crate::paths::{Env, Machine, Profile};
use crate::preflight::{self, Host, NO_KUBERNETES_VERSION};
use crate::subnet;
use crate::xml::{self, Accel, DomainSpec};
use crate::{
    certs, keys, step, warn, Failure, EX_DRIVER_UNSUPPORTED, EX_GUEST_ERROR, EX_GUEST_NOT_FOUND,
    EX_GUEST_NOT_RUNNING, EX_GUEST_TIMEOUT, EX_PROGRAM_CONFIG, EX_PROGRAM_USAGE, VERSION,
    VERSION_BASE,
};

const SSH_USER: &str = "docker";
/// kvm2's deadlines (x4 under TCG).
const RUNNING_WAIT: Duration = Duration::from_secs(30);
const IP_WAIT: Duration = Duration::from_secs(90);
const IP_POLL: Duration = Duration::from_secs(2);
const SSH_WAIT: Duration = Duration::from_secs(60);
const STOP_WAIT: Duration = Duration::from_secs(90);
/// The host-side API server does not run under TCG: not scaled.
const APISERVER_WAIT: Duration = Duration::from_secs(120);
/// How long a node in the VM may take to be Ready once its files are sent (x the TCG scale; within
/// the 300 s x scale mkh gives a one-node start).
const NODE_WAIT: Duration = Duration::from_secs(270);

pub fn run(inv: &Invocation) -> Result<u8, Failure> {
    if let Command::Help = inv.command {
        print!("{}", cli::USAGE);
        return Ok(0);
    }
    let env = Env::from_process().map_err(|e| Failure::exit(EX_GUEST_ERROR, "HOST_HOME", e))?;
    // Every command, `version` too, first makes MINIKUBE_HOME's directories
    // (`PersistentPreRun`, `cmd/minikube/cmd/root.go`).
    for dir in [
        "certs", "machines", "cache", "config", "addons", "files", "logs",
    ] {
        let dir = env.home.join(dir);
        fs::create_dir_all(&dir)
            .map_err(|e| Failure::error(format!("create {}: {e}", dir.display())))?;
    }
    if let Command::Version { short, output } = inv.command {
        return Ok(version(short, output));
    }
    let name = inv.profile.as_str();
    match &inv.command {
        Command::Start(opts) => {
            start(&env, name, opts).map_err(|f| f.in_command("GUEST_PROVISION"))
        }
        Command::Stop => stop(&env, name).map_err(|f| f.in_command("GUEST_STOP")),
        Command::Delete => delete(&env, name).map_err(|f| f.in_command("GUEST_DELETION")),
        Command::Ip { node } => {
            ip(&env, name, node.as_deref()).map_err(|f| f.in_command("GUEST_STATUS"))
        }
        Command::Status { output } => {
            status(&env, name, *output).map_err(|f| f.in_command("GUEST_STATUS"))
        }
        Command::SshKey { node } => {
            ssh_key(&env, name, node.as_deref()).map_err(|f| f.in_command("GUEST_STATUS"))
        }
        Command::Logs { file, length } => {
            logs(&env, name, file.as_ref(), *length).map_err(|f| f.in_command("GUEST_STATUS"))
        }
        Command::ProfileList { output } => {
            profile_list(&env, *output).map_err(|f| f.in_command("GUEST_STATUS"))
        }
        Command::ImageLoad { images } => {
            image_load(&env, name, images).map_err(|f| f.in_command("GUEST_IMAGE_LOAD"))
        }
        Command::Help | Command::Version { .. } => unreachable!("handled above"),
    }
}

fn version(short: bool, output: Output) -> u8 {
    match (output, short) {
        (Output::Json, _) => println!(
            "{}",
            json!({"commit": "stand-in", "minikubeVersion": VERSION})
        ),
        (Output::Text, true) => println!("{VERSION}"),
        (Output::Text, false) => println!("minikube version: {VERSION}\ncommit: stand-in"),
    }
    0
}

fn start_command(name: &str) -> String {
    if name == cli::DEFAULT_PROFILE {
        "minikube start".into()
    } else {
        format!("minikube start -p {name}")
    }
}

/// `mustload.Partial` (`pkg/minikube/mustload/mustload.go`): on stdout, exit 85.
fn profile_not_found(name: &str) -> Failure {
    println!(
        "🤷  Profile \"{name}\" not found. Run \"minikube profile list\" to view all profiles."
    );
    println!("👉  To start a cluster, run: \"{}\"", start_command(name));
    Failure::styled(EX_GUEST_NOT_FOUND, Vec::new())
}

/// `ProfileNameValid` (`pkg/minikube/config/profile.go`): DNS labels of letters, digits and
/// `-`, each starting and ending with a letter or digit, joined by dots; longer than one
/// character. Checked first in `runStart` (`cmd/minikube/cmd/start.go`), exit 14.
fn profile_name_valid(name: &str) -> bool {
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
    };
    name.len() > 1 && name.split('.').all(label_ok)
}

fn validate_profile_name(name: &str) -> Result<(), Failure> {
    if profile_name_valid(name) {
        return Ok(());
    }
    warn(format!("Profile name '{name}' is not valid"));
    Err(Failure::exit(
        EX_PROGRAM_USAGE,
        "MK_USAGE",
        "Only alphanumeric and dashes '-' are permitted. Minimum 2 characters, starting with alphanumeric.",
    ))
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn os_name() -> String {
    fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".into())
}

/// `--wait` as minikube maps it to VerifyComponents.
fn verify_components(wait: &[String]) -> BTreeMap<String, bool> {
    const ALL: &[&str] = &[
        "apiserver",
        "apps_running",
        "default_sa",
        "extra",
        "kubelet",
        "node_ready",
        "system_pods",
    ];
    let names: Vec<&str> = if wait.is_empty() {
        vec!["apiserver", "system_pods"]
    } else if wait.iter().any(|w| w == "all" || w == "true") {
        ALL.to_vec()
    } else if wait.iter().any(|w| w == "none" || w == "false") {
        Vec::new()
    } else {
        wait.iter().map(String::as_str).collect()
    };
    names.into_iter().map(|n| (n.to_string(), true)).collect()
}

/// The settings of this start: the flags for a new profile, the saved config for an existing
/// one (as minikube, changed flags are ignored with a warning).
#[derive(Debug, Clone)]
struct Settings {
    memory: u32,
    cpus: u32,
    disk: u32,
    k8s_version: String,
    runtime: String,
    nat: String,
    private: String,
    network_flag: String,
    /// Nodes, and how many of them (the first ones) are control planes.
    nodes: usize,
    control_planes: usize,
}

/// A resolved `--memory`/`--cpus` (see `start`, which resolves `max` before this).
fn amount(a: &Option<cli::Amount>) -> Option<u32> {
    match a {
        Some(cli::Amount::Value(v)) => Some(*v),
        _ => None,
    }
}

/// `default_memory`: minikube's suggestion for this host, used when `--memory` is not given.
fn settings(
    name: &str,
    opts: &StartOptions,
    old: Option<&ClusterConfig>,
    machine: Option<&MachineConfig>,
    default_memory: u32,
    nodes: u32,
) -> Settings {
    let fresh = Settings {
        memory: amount(&opts.memory_mib).unwrap_or(default_memory),
        cpus: amount(&opts.cpus).unwrap_or(cli::DEFAULT_CPUS),
        disk: opts.disk_size_mb.unwrap_or(cli::DEFAULT_DISK_MB),
        k8s_version: opts
            .kubernetes_version
            .clone()
            .unwrap_or_else(|| preflight::DEFAULT_K8S_VERSION.into()),
        runtime: opts
            .container_runtime
            .clone()
            .unwrap_or_else(|| "docker".into()),
        nat: opts.kvm_network.clone().unwrap_or_else(|| "default".into()),
        private: opts.network.clone().unwrap_or_else(|| format!("mk-{name}")),
        network_flag: opts.network.clone().unwrap_or_default(),
        nodes: nodes as usize,
        control_planes: if opts.ha { 3 } else { 1 },
    };
    let Some(old) = old else {
        return fresh;
    };
    let kept = Settings {
        memory: old.memory,
        cpus: old.cpus,
        disk: old.disk_size,
        // A start may upgrade the version (checked by `preflight::kubernetes_version`).
        k8s_version: opts
            .kubernetes_version
            .clone()
            .unwrap_or_else(|| old.kubernetes_config.kubernetes_version.clone()),
        runtime: old.kubernetes_config.container_runtime.clone(),
        nat: machine
            .map(|m| m.driver.network.clone())
            .unwrap_or_else(|| old.kvm_network.clone()),
        private: machine
            .map(|m| m.driver.private_network.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| {
                if old.network.is_empty() {
                    format!("mk-{name}")
                } else {
                    old.network.clone()
                }
            }),
        network_flag: old.network.clone(),
        nodes: old.nodes.len().max(1),
        control_planes: old.nodes.iter().filter(|n| n.control_plane).count().max(1),
    };
    let mut ignored = Vec::new();
    if amount(&opts.memory_mib).is_some_and(|m| m != kept.memory) {
        ignored.push("--memory");
    }
    if amount(&opts.cpus).is_some_and(|c| c != kept.cpus) {
        ignored.push("--cpus");
    }
    if opts.kvm_network.as_ref().is_some_and(|n| *n != kept.nat) {
        ignored.push("--kvm-network");
    }
    if opts.network.as_ref().is_some_and(|n| *n != kept.private) {
        ignored.push("--network");
    }
    if opts.nodes.is_some_and(|n| n as usize != kept.nodes) {
        ignored.push("--nodes");
    }
    if !ignored.is_empty() {
        warn(format!(
            "You cannot change {} of an existing minikube cluster: ignored. Run \"minikube delete -p {name}\" first.",
            ignored.join(", ")
        ));
    }
    kept
}

/// `Nodes[]`: the primary named "", then "m02", ...; the first `control_planes` are control
/// planes, every node is a worker (`startWithDriver`, `cmd/minikube/cmd/start.go`).
fn node_entries(s: &Settings, ips: &[Option<Ipv4Addr>]) -> Vec<config::Node> {
    (0..s.nodes)
        .map(|i| config::Node {
            name: if i == 0 {
                String::new()
            } else {
                format!("m{:02}", i + 1)
            },
            ip: ips
                .get(i)
                .copied()
                .flatten()
                .map(|ip| ip.to_string())
                .unwrap_or_default(),
            port: APISERVER_PORT,
            kubernetes_version: s.k8s_version.clone(),
            container_runtime: s.runtime.clone(),
            control_plane: i < s.control_planes,
            worker: true,
        })
        .collect()
}

fn cluster_config(
    name: &str,
    s: &Settings,
    opts: &StartOptions,
    old: Option<&ClusterConfig>,
    ips: &[Option<Ipv4Addr>],
) -> ClusterConfig {
    ClusterConfig {
        name: name.into(),
        keep_context: opts.keep_context,
        embed_certs: opts.embed_certs,
        minikube_iso: format!(
            "https://storage.googleapis.com/minikube/iso/minikube-{VERSION_BASE}-amd64.iso"
        ),
        memory: s.memory,
        cpus: s.cpus,
        disk_size: s.disk,
        driver: cli::DRIVER.into(),
        kvm_network: s.nat.clone(),
        kvm_qemu_uri: URI.into(),
        kvm_gpu: false,
        kvm_hidden: false,
        kvm_numa_count: 1,
        api_server_port: APISERVER_PORT,
        kubernetes_config: config::KubernetesConfig {
            kubernetes_version: s.k8s_version.clone(),
            cluster_name: name.into(),
            namespace: "default".into(),
            api_server_ha_vip: String::new(),
            api_server_name: "minikubeCA".into(),
            api_server_names: None,
            api_server_ips: None,
            dns_domain: "cluster.local".into(),
            container_runtime: s.runtime.clone(),
            cri_socket: String::new(),
            network_plugin: "cni".into(),
            feature_gates: String::new(),
            service_cidr: SERVICE_CIDR.into(),
            image_repository: String::new(),
            extra_options: None,
            should_load_cached_images: true,
            enable_default_cni: false,
            cni: String::new(),
        },
        nodes: node_entries(s, ips),
        addons: old.map(|o| o.addons.clone()).unwrap_or_default(),
        verify_components: if opts.wait.is_empty() {
            old.map(|o| o.verify_components.clone())
                .unwrap_or_else(|| verify_components(&[]))
        } else {
            verify_components(&opts.wait)
        },
        start_host_timeout: 360_000_000_000,
        network: s.network_flag.clone(),
        subnet: String::new(),
        multi_node_requested: s.nodes > 1,
    }
}

struct Macs {
    private: String,
    nat: String,
}

fn machine_config(
    env: &Env,
    p: &Machine,
    s: &Settings,
    macs: &Macs,
    ip: Option<Ipv4Addr>,
) -> MachineConfig {
    let path = |x: PathBuf| x.to_string_lossy().into_owned();
    let home = path(env.home.clone());
    MachineConfig {
        config_version: 3,
        driver: Kvm2Driver {
            ip_address: ip.map(|i| i.to_string()).unwrap_or_default(),
            machine_name: p.name.clone(),
            ssh_user: SSH_USER.into(),
            ssh_port: 22,
            ssh_key_path: path(p.id_rsa()),
            store_path: home.clone(),
            swarm_master: false,
            swarm_host: String::new(),
            swarm_discovery: String::new(),
            memory: s.memory,
            cpu: s.cpus,
            network: s.nat.clone(),
            private_network: s.private.clone(),
            disk_size: s.disk,
            disk_path: path(p.disk()),
            boot2docker_url: format!(
                "file://{}",
                env.home
                    .join("cache/iso/amd64")
                    .join(format!("minikube-{VERSION_BASE}-amd64.iso"))
                    .display()
            ),
            iso: path(p.iso()),
            mac: macs.nat.clone(),
            private_mac: macs.private.clone(),
            gpu: false,
            hidden: false,
            devices_xml: String::new(),
            connection_uri: URI.into(),
            numa_node_count: 1,
            extra_disks: 0,
        },
        driver_name: cli::DRIVER.into(),
        host_options: HostOptions {
            driver: String::new(),
            memory: 0,
            disk: 0,
            engine_options: config::engine_options(SERVICE_CIDR),
            swarm_options: config::swarm_options(),
            auth_options: AuthOptions::for_home(&env.home),
        },
        name: p.name.clone(),
    }
}

fn save<T: serde::Serialize>(path: &std::path::Path, v: &T) -> Result<(), Failure> {
    config::save(path, v).map_err(Failure::error)
}

fn ensure_home_dirs(env: &Env, p: &Profile, nodes: usize) -> Result<(), Failure> {
    let dirs = [
        "config", "logs", "cache", "certs", "files", "addons", "profiles", "machines",
    ]
    .iter()
    .map(|d| env.home.join(d))
    .chain([p.dir()])
    .chain((0..nodes).map(|i| p.machine(i).dir));
    dirs.into_iter().try_for_each(|d| make_dir(&d))
}

/// A directory of MINIKUBE_HOME, mode 0755 (QEMU must reach a machine's files).
fn make_dir(d: &std::path::Path) -> Result<(), Failure> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(d)
        .map_err(|e| Failure::error(format!("create {}: {e}", d.display())))
}

/// Klog-style info line on stderr, like minikube's `--alsologtostderr` output.
fn info(file_line: &str, msg: impl std::fmt::Display) {
    eprintln!("I {file_line}] {msg}");
}

/// Creates the private network from kvm2's template on minikube's subnet choice (up to 5
/// tries, `createNetwork`, `pkg/drivers/kvm/network.go`). Returns its host-side address.
fn create_private_network(
    env: &Env,
    lv: &Libvirt,
    name: &str,
    reservations: &mut Vec<subnet::Reservation>,
) -> Result<Ipv4Addr, Failure> {
    let host = subnet::host_ipv4_addrs();
    let mut tried: Vec<Ipv4Addr> = Vec::new();
    let mut last_error = String::new();
    for _ in 0..5 {
        let Some((sub, reservation)) = subnet::choose(&host, |net| {
            if tried.contains(&net) {
                None
            } else {
                subnet::reserve(&env.lock_dir, net)
            }
        }) else {
            break;
        };
        tried.push(sub.network);
        reservations.push(reservation);
        info(
            "network.go:210",
            format!(
                "using free private subnet {}/24 for network {name}",
                sub.network
            ),
        );
        match lv.create_network(name, &xml::private_network(name, &sub)) {
            Ok(()) => return Ok(sub.gateway),
            Err(e) => last_error = e,
        }
    }
    Err(Failure::exit(
        EX_GUEST_ERROR,
        "GUEST_PROVISION",
        if last_error.is_empty() {
            "no free private network subnets found".to_string()
        } else {
            format!("failed creating private network {name}: {last_error}")
        },
    ))
}

fn host_addr(lv: &Libvirt, name: &str) -> Result<Ipv4Addr, Failure> {
    host_addr_of(lv, name)?
        .ok_or_else(|| Failure::error(format!("network {name} has no IPv4 address")))
}

/// kvm2's networks for one machine: `createNetwork` for a new machine (an existing private
/// network is used as it is), then `ensureNetwork` on every start: both networks autostarted
/// and active; a private network that cannot be started is deleted (unless another domain
/// uses it) and created anew under the same name, on minikube's own subnet and without
/// anyone's metadata. Returns the private network's host-side address.
fn ensure_networks(
    env: &Env,
    lv: &Libvirt,
    s: &Settings,
    machine: &str,
    reservations: &mut Vec<subnet::Reservation>,
) -> Result<Ipv4Addr, Failure> {
    let private = s.private.as_str();
    let Some(nat) = lv.network(&s.nat)? else {
        return Err(missing_nat(&s.nat));
    };
    if lv.network(private)?.is_some() {
        info(
            "network.go:107",
            format!("found existing {private} private network, skipping creation"),
        );
    } else {
        create_private_network(env, lv, private, reservations)?;
    }
    info(
        "network.go:130",
        format!("Ensuring network {} is active", s.nat),
    );
    lv.ensure_active(&nat, &s.nat).map_err(|e| {
        Failure::exit(
            EX_GUEST_ERROR,
            "GUEST_PROVISION",
            format!("ensuring active networks: {e}"),
        )
    })?;
    info(
        "network.go:130",
        format!("Ensuring network {private} is active"),
    );
    let net = lv
        .network(private)?
        .ok_or_else(|| Failure::error(format!("network {private} vanished")))?;
    let Err(e) = lv.ensure_active(&net, private) else {
        return host_addr(lv, private);
    };
    info(
        "network.go:141",
        format!("Network {private} is inoperable, will try to recreate it: {e}"),
    );
    let users = lv.other_domains_on(private, machine)?;
    if !users.is_empty() {
        return Err(Failure::exit(
            EX_GUEST_ERROR,
            "GUEST_PROVISION",
            format!(
                "ensuring active networks: deleting inoperable network {private}: network still in use at least by domain '{}',",
                users[0]
            ),
        ));
    }
    lv.delete_network(private)?;
    info(
        "network.go:148",
        format!("Successfully deleted {private} network"),
    );
    create_private_network(env, lv, private, reservations)?;
    info(
        "network.go:153",
        format!("Successfully recreated {private} network"),
    );
    host_addr(lv, private)
}

fn missing_nat(name: &str) -> Failure {
    Failure::exit(
        60,
        "PR_KVM_MISSING_NETWORK",
        format!(
            "error provisioning guest: failed looking up network {name}, cannot continue: Network not found: no network with matching name '{name}' (--kvm-network: minikube never creates it)"
        ),
    )
}

/// The stand-in serves a profile's API server on its private network's host-side address, port
/// 8443: two profiles on one private network cannot both run (with real minikube they can, each
/// VM has its own address). Refuses before anything is created.
fn check_apiserver_address(
    env: &Env,
    lv: &Libvirt,
    p: &Profile,
    private: &str,
) -> Result<(), Failure> {
    let Some(net) = lv.network(private)? else {
        return Ok(());
    };
    if !net.is_active().unwrap_or(false) {
        return Ok(());
    }
    let Some(addr) = xml::network_facts(&lv.network_xml(&net)?)
        .map_err(Failure::error)?
        .host_addr
    else {
        return Ok(());
    };
    if control_plane::running(p, APISERVER) || !control_plane::port_in_use(addr) {
        return Ok(());
    }
    let users = control_plane::apiservers_on(env, addr);
    let who = if users.is_empty() {
        "another process (another MINIKUBE_HOME's profile?)".to_string()
    } else {
        format!("the API server of profile {}", users.join(", "))
    };
    Err(Failure::exit(
        EX_GUEST_ERROR,
        "GUEST_PROVISION",
        format!(
            "{addr}:{APISERVER_PORT} (the host side of private network {private}) is already used by {who}: \
             the minikube stand-in runs each profile's API server there, so profiles sharing a private \
             network cannot run at the same time (real minikube can): give each profile its own --network"
        ),
    ))
}

fn wait_until(
    deadline: Instant,
    poll: Duration,
    mut f: impl FnMut() -> Result<bool, Failure>,
) -> Result<bool, Failure> {
    loop {
        if f()? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(poll);
    }
}

/// Waits for the domain to run, then for its private IP (leases by PrivateMAC, every 2 s), and
/// pins that IP with a DHCP host entry.
fn wait_for_guest(
    lv: &Libvirt,
    m: &Machine,
    s: &Settings,
    macs: &Macs,
    scale: u32,
) -> Result<Ipv4Addr, Failure> {
    let name = m.name.as_str();
    let running = wait_until(
        Instant::now() + RUNNING_WAIT * scale,
        Duration::from_millis(200),
        || Ok(lv.domain_state(name)? == DomState::Running),
    )?;
    if !running {
        return Err(Failure::exit(
            EX_GUEST_TIMEOUT,
            "GUEST_PROVISION",
            format!("domain {name} did not reach the running state in time"),
        ));
    }
    let mut vm_ip = None;
    let found = wait_until(Instant::now() + IP_WAIT * scale, IP_POLL, || {
        vm_ip = lv.lease_ip(&s.private, &macs.private)?;
        Ok(vm_ip.is_some())
    })?;
    let Some(vm_ip) = vm_ip.filter(|_| found) else {
        return Err(Failure::exit(
            EX_GUEST_TIMEOUT,
            "GUEST_PROVISION",
            format!(
                "machine {name} didn't return an IP: no DHCP lease for MAC {} on network {}",
                macs.private, s.private
            ),
        ));
    };
    if let Err(e) = lv.pin_dhcp_host(&s.private, &m.name, &macs.private, vm_ip) {
        info(
            "kvm.go:302",
            format!("failed reserving static IP address {vm_ip} for domain {name}, will continue anyway: {e}"),
        );
    }
    Ok(vm_ip)
}

fn start(env: &Env, name: &str, opts: &StartOptions) -> Result<u8, Failure> {
    // minikube's order: the name, the driver and its health, the CPUs, the requested memory,
    // the user; the default memory after them (runStart, provisionWithDriver).
    validate_profile_name(name)?;
    let p = env.profile(name);
    let old_cluster: Option<ClusterConfig> = config::load(&p.config_json())?;
    let old_machine: Option<MachineConfig> = config::load(&p.primary().config_json())?;
    let existing = old_cluster.is_some() || old_machine.is_some();
    if let Some(driver) = opts.driver.as_deref() {
        if driver != cli::DRIVER {
            return Err(Failure::exit(
                EX_DRIVER_UNSUPPORTED,
                "DRV_UNSUPPORTED",
                format!("the minikube stand-in has only the kvm2 driver, not {driver:?} (from --driver, -d or MINIKUBE_DRIVER)"),
            ));
        }
    }
    if let Some(uri) = opts.kvm_qemu_uri.as_deref() {
        if uri != URI {
            return Err(Failure::exit(
                EX_DRIVER_UNSUPPORTED,
                "DRV_UNSUPPORTED",
                format!("the minikube stand-in supports only --kvm-qemu-uri={URI}, not {uri}"),
            ));
        }
    }
    let kept = old_cluster.as_ref();
    let k8s_version = preflight::kubernetes_version(
        opts.kubernetes_version.as_deref(),
        kept.map(|c| c.kubernetes_config.kubernetes_version.as_str()),
        opts.force,
        opts.no_kubernetes,
    )?;
    let host = Host::current();
    preflight::driver_health(URI, &host, opts.force)?;
    // validateFlags: the CPUs always, the memory when given.
    let cpus = match &opts.cpus {
        Some(amount) => preflight::resolve_cpus(amount, &host)?,
        None => kept.map_or(cli::DEFAULT_CPUS, |c| c.cpus),
    };
    preflight::cpus(cpus, &host, opts.force)?;
    let memory = match &opts.memory_mib {
        Some(amount) => {
            let memory = preflight::resolve_memory(amount, &host)?;
            preflight::memory(memory, &host, opts.force)?;
            Some(memory)
        }
        None => None,
    };
    preflight::user(
        &host,
        opts.force,
        existing,
        &start_command(name).replacen("start", "delete", 1),
    )?;
    // Then the cluster config: a new one checks the HA node count and the default memory
    // (generateNewConfigFromFlags); an existing one keeps its nodes (--nodes and --ha only
    // warn) and has its memory checked again (start_flags.go).
    let nodes = match kept {
        None => preflight::node_count(opts.nodes, opts.ha)?,
        Some(c) => c.nodes.len().max(1) as u32,
    };
    let default_memory = preflight::suggested_memory(host.memory_mib, nodes);
    match (memory, kept) {
        (None, None) => preflight::memory(default_memory, &host, opts.force)?,
        (_, Some(c)) => preflight::memory(c.memory, &host, opts.force)?,
        (Some(_), None) => {}
    }
    let opts = &StartOptions {
        memory_mib: memory.map(cli::Amount::Value),
        cpus: Some(cli::Amount::Value(cpus)),
        kubernetes_version: Some(k8s_version),
        ..opts.clone()
    };
    // Fail before creating anything if the control plane cannot run.
    match ControlPlane::current()? {
        ControlPlane::Host => {
            control_plane::apiserver_binary()?;
            control_plane::etcd_binary()?;
        }
        ControlPlane::Node => {
            if opts.ha
                || kept.is_some_and(|c| c.nodes.iter().filter(|n| n.control_plane).count() > 1)
            {
                return Err(Failure::exit(
                    EX_PROGRAM_CONFIG,
                    "MK_STANDIN_CONTROL_PLANE",
                    format!("the stand-in's node runs one control plane; --ha asks for three (set {}=host for them, with the API server on the host)", node::CONTROL_PLANE),
                ));
            }
            control_plane::kubernetes_dir()?;
        }
    }

    step(
        "😄",
        format!(
            "[{name}] minikube {VERSION_BASE} (stand-in) on {}",
            os_name()
        ),
    );
    step(
        "✨",
        if existing {
            "Using the kvm2 driver based on existing profile"
        } else {
            "Using the kvm2 driver based on user configuration"
        },
    );
    let s = settings(
        name,
        opts,
        old_cluster.as_ref(),
        old_machine.as_ref(),
        default_memory,
        nodes,
    );
    if s.k8s_version != control_plane::KUBERNETES_VERSION && s.k8s_version != NO_KUBERNETES_VERSION
    {
        warn(format!(
            "Kubernetes {}: recorded, but the stand-in's programs are Kubernetes {}",
            s.k8s_version,
            control_plane::KUBERNETES_VERSION
        ));
    }
    let lv = Libvirt::open()?;
    let states = check_before_provision(env, &lv, &p, &s)?;
    let had_kubernetes =
        kept.is_some_and(|c| c.kubernetes_config.kubernetes_version != NO_KUBERNETES_VERSION);
    if opts.no_kubernetes && had_kubernetes && states.contains(&DomState::Running) {
        // minikube stops the running node's kubelet and containers (kubeadm.StopKubernetes).
        return Err(Failure::exit(
            EX_PROGRAM_CONFIG,
            "MK_STANDIN_NO_KUBERNETES",
            format!("the stand-in cannot stop the Kubernetes of a running node; run `{}` first, or `minikube delete`", start_command(name).replacen("start", "stop", 1)),
        ));
    }
    match provision(env, &lv, &p, opts, &s, old_cluster.as_ref(), &states) {
        Err(failure) if opts.delete_on_failure => {
            // maybeDeleteAndRetry (cmd/minikube/cmd/start.go): the whole profile goes, its
            // private network with it, then one more try.
            for line in &failure.lines {
                eprintln!("{line}");
            }
            warn("Node  failed to start, deleting and trying again.");
            delete(env, name)?;
            let states = check_before_provision(env, &lv, &p, &s)?;
            provision(env, &lv, &p, opts, &s, None, &states)
        }
        result => result,
    }
}

/// The machine's MACs: from its domain if it exists (its XML is the truth, as released kvm2
/// reads it back), else new random ones (a missing host is made anew).
fn macs_of(lv: &Libvirt, m: &Machine, s: &Settings, state: DomState) -> Result<Macs, Failure> {
    if state != DomState::Missing {
        let dom_xml = lv.domain_xml(&m.name)?.unwrap_or_default();
        let nics = xml::domain_nics(&dom_xml).map_err(Failure::error)?;
        let mac_on = |net: &str| nics.iter().find(|(n, _)| n == net).map(|(_, m)| m.clone());
        return Ok(Macs {
            private: mac_on(&s.private).ok_or_else(|| {
                Failure::error(format!(
                    "domain {} has no NIC on network {}",
                    m.name, s.private
                ))
            })?,
            nat: mac_on(&s.nat).unwrap_or_default(),
        });
    }
    Ok(Macs {
        private: xml::random_mac(),
        nat: xml::random_mac(),
    })
}

/// Brings one machine's domain up: created from scratch, restarted, or left running.
fn boot_machine(
    env: &Env,
    lv: &Libvirt,
    m: &Machine,
    s: &Settings,
    macs: &Macs,
    state: DomState,
    accel: Accel,
) -> Result<(), Failure> {
    let pubkey = keys::ensure_machine_key(&m.id_rsa())?;
    save(&m.config_json(), &machine_config(env, m, s, macs, None))?;
    match state {
        DomState::Missing => {
            let image = mkh_guest_image::ensure_guest_image(
                &mkh::Settings::current()
                    .map_err(|e| Failure::error(e.to_string()))?
                    .cache_dir,
            )
            .map_err(|e| Failure::error(format!("guest image: {e}")))?;
            // No host key: the guest makes a new one on every boot, as the ISO does. The
            // hostname is the machine's name (`<p>`, `<p>-m02`), as the provisioner sets it
            // (`pkg/provision/buildroot.go`, `Provision`: `SetHostname(GetMachineName())`);
            // given at boot here, where minikube sets it over SSH once the VM is up.
            let mut cmdline = mkh_guest_image::kernel_cmdline(&mkh_guest_image::BootParams {
                hostname: &m.name,
                authorized_key: &pubkey,
                host_key: None,
            })
            .map_err(|e| Failure::error(format!("kernel command line: {e}")))?;
            let disks = match ControlPlane::current()? {
                ControlPlane::Node => {
                    cmdline.push(' ');
                    cmdline.push_str(mkh_guest_image::NODE_CMDLINE);
                    if accel == Accel::Tcg {
                        // Programs at the same addresses in every process (a listed
                        // deviation): QEMU reuses what it translated for the last run of a
                        // program instead of translating it again at new addresses.
                        cmdline.push_str(" norandmaps");
                    }
                    Some(node::disks(m, s.disk)?)
                }
                ControlPlane::Host => None,
            };
            step(
                "🔥",
                format!(
                    "Creating kvm2 VM (CPUs={}, Memory={}MB, Disk={}MB) ...",
                    s.cpus, s.memory, s.disk
                ),
            );
            let dom = xml::domain(&DomainSpec {
                name: &m.name,
                memory_mib: s.memory,
                cpus: s.cpus,
                accel,
                kernel: &image.kernel,
                initrd: &image.initrd,
                cmdline: &cmdline,
                private_network: &s.private,
                private_mac: &macs.private,
                nat_network: &s.nat,
                nat_mac: &macs.nat,
                disks: disks
                    .as_ref()
                    .map(|d| (d.data.as_path(), d.bundle.as_path())),
            });
            lv.define_domain(&m.name, &dom)?;
            lv.start_domain(&m.name)
        }
        DomState::Stopped => {
            step(
                "🔄",
                format!("Restarting existing kvm2 VM for \"{}\" ...", m.name),
            );
            lv.start_domain(&m.name)
        }
        DomState::Running => {
            step(
                "🏃",
                format!("Updating the running kvm2 \"{}\" VM ...", m.name),
            );
            Ok(())
        }
    }
    .map_err(Failure::error)
}

/// What libvirt must (not) hold before this start makes anything: the NAT network, no
/// foreign domain of a node's name, no other API server on the private network's address.
/// Returns each node's domain state.
fn check_before_provision(
    env: &Env,
    lv: &Libvirt,
    p: &Profile,
    s: &Settings,
) -> Result<Vec<DomState>, Failure> {
    if lv.network(&s.nat)?.is_none() {
        return Err(missing_nat(&s.nat));
    }
    let mut states = Vec::new();
    for m in (0..s.nodes).map(|i| p.machine(i)) {
        let state = lv.domain_state(&m.name)?;
        if state != DomState::Missing && !m.config_json().exists() {
            return Err(Failure::exit(
                EX_GUEST_ERROR,
                "GUEST_PROVISION",
                format!("a libvirt domain named \"{}\" already exists but is no machine of {}: not touching it", m.name, env.home.display()),
            ));
        }
        states.push(state);
    }
    check_apiserver_address(env, lv, p, &s.private)?;
    Ok(states)
}

/// What `start_host_internal` brought up: the private network's host-side address, the
/// machine's MACs and its private IP.
struct StartedHost {
    host_addr: Ipv4Addr,
    macs: Macs,
    vm_ip: Ipv4Addr,
}

/// What every host of one start shares.
struct Boot<'a> {
    env: &'a Env,
    lv: &'a Libvirt,
    p: &'a Profile,
    s: &'a Settings,
    accel: Accel,
    scale: u32,
}

/// `MK_STANDIN_FAIL_FIRST_BOOT=<machine>[,<machine>...]` (`*`: every machine): the first
/// creation of each named machine in this `minikube start` fails once its domain runs, as a VM
/// that never gets an IP does; the retry (`start_host_internal`) boots normally. For tests of
/// what a flaky first boot does around minikube.
pub const FAIL_FIRST_BOOT: &str = "MK_STANDIN_FAIL_FIRST_BOOT";

/// Whether this creation of `machine` is to fail (once per machine and process).
fn first_boot_fails(machine: &str) -> bool {
    static FAILED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let named = std::env::var(FAIL_FIRST_BOOT).is_ok_and(|v| {
        v.split(',')
            .map(str::trim)
            .any(|n| n == "*" || n == machine)
    });
    let mut failed = FAILED.lock().unwrap_or_else(|e| e.into_inner());
    if !named || failed.iter().any(|m| m == machine) {
        return false;
    }
    failed.push(machine.to_owned());
    true
}

impl Boot<'_> {
    /// `startHostInternal` (`pkg/minikube/node/start.go`): `StartHost`, and when it fails, a
    /// host that did not exist before is deleted (`DeleteHost`: kvm2's `Remove`, its private
    /// network with it unless another domain uses it), then, 5 s later, `StartHost` once more,
    /// with or without `--delete-on-failure`. A new host's private network is therefore made
    /// again under the same name, on minikube's own subnet, without anyone's metadata, and
    /// `minikube start` still succeeds. (An existing host is tried again without the delete.)
    fn start_host_internal(
        &self,
        m: &Machine,
        state: DomState,
        reservations: &mut Vec<subnet::Reservation>,
    ) -> Result<StartedHost, Failure> {
        // `exists` is libmachine's: the machine's config.json (`api.Exists`).
        let existed = m.config_json().exists();
        let err = match self.start_host(m, state, reservations) {
            Ok(host) => return Ok(host),
            Err(err) => err,
        };
        let reason = err
            .lines
            .iter()
            .find(|l| !l.is_empty())
            .cloned()
            .unwrap_or_default();
        info("start.go:730", format!("error starting host: {reason}"));
        if !existed {
            self.delete_host(m)?;
        }
        eprintln!("🤦  StartHost failed, but will try again: {reason}");
        info("start.go:744", "Will try again in 5 seconds ...");
        std::thread::sleep(Duration::from_secs(5));
        let state = self.lv.domain_state(&m.name)?;
        self.start_host(m, state, reservations).inspect_err(|err| {
            let reason = err
                .lines
                .iter()
                .find(|l| !l.is_empty())
                .cloned()
                .unwrap_or_default();
            eprintln!(
                "😿  Failed to start kvm2 VM. Running \"{}\" may fix it: {reason}",
                start_command(&self.p.name).replacen("start", "delete", 1)
            );
        })
    }

    /// `StartHost` (`pkg/minikube/machine/start.go`): a new host is created (`createHost`); an
    /// existing one whose domain is gone is demolished and created anew (`fixHost`,
    /// `recreateIfNeeded`, `pkg/minikube/machine/fix.go`), else restarted or left running.
    /// Creation makes the private network if it does not exist (`createNetwork`), every
    /// start makes sure both networks run (`ensureNetwork`).
    fn start_host(
        &self,
        m: &Machine,
        state: DomState,
        reservations: &mut Vec<subnet::Reservation>,
    ) -> Result<StartedHost, Failure> {
        let Boot { env, lv, s, .. } = *self;
        if state == DomState::Missing && m.config_json().exists() {
            // recreateIfNeeded: state None, so the machine is missing: `demolish` (its
            // DeleteHost finds no domain and does nothing; its deleteHost runs kvm2's Remove,
            // which deletes the private network unless another domain uses it, and removes the
            // machine's directory, key and all), then createHost: a new network where the old
            // one went, new MACs, a new key.
            step(
                "🤷",
                format!("kvm2 \"{}\" VM is missing, will recreate.", m.name),
            );
            info("fix.go:159", format!("DEMOLISHING {} ...", m.name));
            remove_machine(lv, m, &s.private)?;
            remove_machine_dir(m)?;
            std::thread::sleep(Duration::from_secs(1));
        }
        // Made again after a delete.
        make_dir(&m.dir)?;
        let host_addr = ensure_networks(env, lv, s, &m.name, reservations)?;
        let macs = macs_of(lv, m, s, state)?;
        boot_machine(env, lv, m, s, &macs, state, self.accel)?;
        if state == DomState::Missing && first_boot_fails(&m.name) {
            return Err(Failure::exit(
                EX_GUEST_TIMEOUT,
                "GUEST_PROVISION",
                format!(
                    "creating host: create: Error creating machine: Error in driver during machine creation: IP not available after waiting: machine {} didn't return IP after 1 minute (stand-in: {FAIL_FIRST_BOOT})",
                    m.name
                ),
            ));
        }
        let vm_ip = wait_for_guest(lv, m, s, &macs, self.scale)?;
        Ok(StartedHost {
            host_addr,
            macs,
            vm_ip,
        })
    }

    /// `DeleteHost` (`pkg/minikube/machine/delete.go`): a machine without a domain is assumed
    /// deleted (nothing is removed); else kvm2's `Remove`, then its directory (`api.Remove`).
    fn delete_host(&self, m: &Machine) -> Result<(), Failure> {
        if self.lv.domain_state(&m.name)? == DomState::Missing {
            info(
                "delete.go:73",
                format!(
                    "Unable to get host status for {}, assuming it has already been deleted",
                    m.name
                ),
            );
            return Ok(());
        }
        step("🔥", format!("Deleting \"{}\" in kvm2 ...", m.name));
        remove_machine(self.lv, m, &self.s.private)?;
        remove_machine_dir(m)
    }
}

/// kvm2's `Remove()` (`pkg/drivers/kvm/kvm.go`): the private network first (unless it is
/// `default` or another domain uses it, `deleteNetwork` in `network.go`), then the domain if it
/// exists, then its DHCP host entry (`delStaticIP`).
fn remove_machine(lv: &Libvirt, m: &Machine, private: &str) -> Result<(), Failure> {
    if private == "default" {
        info(
            "kvm.go:450",
            "private network is \"default\": not deleting it",
        );
    } else {
        let users = lv.other_domains_on(private, &m.name)?;
        if users.is_empty() {
            lv.delete_network(private)?;
        } else {
            info(
                "kvm.go:500",
                format!(
                    "deleting networks failed, will continue anyway: network still in use at least by domain '{}',",
                    users[0]
                ),
            );
        }
    }
    if lv.domain_state(&m.name)? == DomState::Missing {
        info(
            "kvm.go:510",
            format!("domain {} does not exist, nothing to clean up...", m.name),
        );
        return Ok(());
    }
    lv.destroy(&m.name)?;
    lv.undefine(&m.name)?;
    let saved: Option<MachineConfig> = config::load(&m.config_json())?;
    if let Some(c) = saved.filter(|c| !c.driver.ip_address.is_empty()) {
        if let Ok(ip) = c.driver.ip_address.parse() {
            if let Err(e) = lv.unpin_dhcp_host(private, &m.name, &c.driver.private_mac, ip) {
                info(
                    "kvm.go:530",
                    format!("failed removing static IP address {ip}: {e}"),
                );
            }
        }
    }
    Ok(())
}

/// libmachine's `api.Remove`: the machine's directory (config, key, disk).
fn remove_machine_dir(m: &Machine) -> Result<(), Failure> {
    match fs::remove_dir_all(&m.dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Failure::error(format!("remove {}: {e}", m.dir.display()))),
    }
}

/// Everything after the checks: networks, each node's machine in turn (the primary control
/// plane first, with the host-side API server), the kubeconfig.
fn provision(
    env: &Env,
    lv: &Libvirt,
    p: &Profile,
    opts: &StartOptions,
    s: &Settings,
    old_cluster: Option<&ClusterConfig>,
    states: &[DomState],
) -> Result<u8, Failure> {
    let name = p.name.as_str();
    let accel = Accel::detect();
    let scale = accel.scale();
    let machines: Vec<Machine> = (0..s.nodes).map(|i| p.machine(i)).collect();

    ensure_home_dirs(env, p, s.nodes)?;
    let mut ips: Vec<Option<Ipv4Addr>> = vec![None; s.nodes];
    save(
        &p.config_json(),
        &cluster_config(name, s, opts, old_cluster, &ips),
    )?;
    let mut reservations = Vec::new();
    let primary = &machines[0];
    let boot = Boot {
        env,
        lv,
        p,
        s,
        accel,
        scale,
    };
    // Machine `i` started (made if new), its IP recorded, until SSH answers.
    let start_until_ssh = |i: usize,
                           ips: &mut Vec<Option<Ipv4Addr>>,
                           reservations: &mut Vec<subnet::Reservation>|
     -> Result<Ipv4Addr, Failure> {
        let m = &machines[i];
        let StartedHost { macs, vm_ip, .. } =
            boot.start_host_internal(m, states[i], reservations)?;
        ips[i] = Some(vm_ip);
        record_ips(env, p, s, opts, old_cluster, m, &macs, vm_ip, ips)?;
        keys::wait_for_ssh(vm_ip, &m.id_rsa(), Instant::now() + SSH_WAIT * scale)
            .map_err(|e| Failure::exit(EX_GUEST_TIMEOUT, "GUEST_PROVISION", e))?;
        Ok(vm_ip)
    };
    if s.k8s_version == NO_KUBERNETES_VERSION {
        // handleNoKubernetes (pkg/minikube/node/start.go): each node's VM and its runtime; no
        // bootstrap, no kubeconfig entry.
        step(
            "👍",
            format!("Starting minikube without Kubernetes in cluster {name}"),
        );
        for (i, m) in machines.iter().enumerate() {
            let vm_ip = start_until_ssh(i, &mut ips, &mut reservations)?;
            if ControlPlane::current()? == ControlPlane::Node {
                node::wait_runtime(m, vm_ip)?;
            }
        }
        step("🏄", "Done! minikube is ready without Kubernetes!");
        return Ok(0);
    }
    step(
        "👍",
        format!("Starting \"{name}\" primary control-plane node in \"{name}\" cluster"),
    );

    let plane = ControlPlane::current()?;
    let pod_network = PodNetwork::for_cluster(&s.k8s_version, s.nodes);
    let started = Instant::now();
    let mut timings = None;
    let server_addr = if plane == ControlPlane::Node {
        certs::ensure_ca(env)?;
        certs::ensure_client(env, p)?;
        certs::ensure_service_account(p)?;
        certs::ensure_apiserver_key(p)?;
        let StartedHost { macs, vm_ip, .. } =
            boot.start_host_internal(primary, states[0], &mut reservations)?;
        ips[0] = Some(vm_ip);
        record_ips(env, p, s, opts, old_cluster, primary, &macs, vm_ip, &ips)?;
        step(
            "🐳",
            format!(
                "Preparing Kubernetes {} (stand-in: a node of Kubernetes {} in the VM) ...",
                s.k8s_version,
                control_plane::KUBERNETES_VERSION
            ),
        );
        keys::wait_for_ssh(vm_ip, &primary.id_rsa(), Instant::now() + SSH_WAIT * scale)
            .map_err(|e| Failure::exit(EX_GUEST_TIMEOUT, "GUEST_PROVISION", e))?;
        let ssh_ready = Instant::now();
        step("    ▪", "Booting up control plane ...");
        let spec = NodeSpec {
            machine: primary,
            index: 0,
            ip: vm_ip,
            server: vm_ip,
            network: pod_network,
        };
        let api = node::bootstrap(env, p, &spec, Instant::now() + NODE_WAIT * scale)?;
        timings = Some(node::NodeTimings {
            accel: accel.name(),
            start: started,
            ssh: ssh_ready,
            api,
            ready: Instant::now(),
            workers_s: Vec::new(),
        });
        vm_ip
    } else {
        let etcd_deadline = Instant::now() + APISERVER_WAIT;
        std::thread::scope(|scope| -> Result<Ipv4Addr, Failure> {
            // While the guest boots: the certificates that do not name its address, and etcd.
            let prep = scope.spawn(|| -> Result<control_plane::Etcd, Failure> {
                certs::ensure_ca(env)?;
                certs::ensure_client(env, p)?;
                certs::ensure_service_account(p)?;
                certs::ensure_apiserver_key(p)?;
                control_plane::start_etcd(p, etcd_deadline)
            });
            let host = boot.start_host_internal(primary, states[0], &mut reservations);
            let etcd = prep.join().expect("control-plane preparation thread");
            let StartedHost {
                host_addr,
                macs,
                vm_ip,
            } = host?;
            let etcd = etcd?;
            ips[0] = Some(vm_ip);
            record_ips(env, p, s, opts, old_cluster, primary, &macs, vm_ip, &ips)?;

            // SSH (in the VM) and the API server (on the host) come up in parallel.
            step(
                "🐳",
                format!(
                    "Preparing Kubernetes {} (stand-in: kube-apiserver {} + etcd on the host) ...",
                    s.k8s_version,
                    control_plane::KUBERNETES_VERSION
                ),
            );
            let ssh_deadline = Instant::now() + SSH_WAIT * scale;
            let id_rsa = primary.id_rsa();
            let ssh = scope.spawn(move || keys::wait_for_ssh(vm_ip, &id_rsa, ssh_deadline));
            step("    ▪", "Generating certificates and keys ...");
            certs::write_apiserver(
                env,
                p,
                &[host_addr, vm_ip, Ipv4Addr::LOCALHOST, certs::SERVICE_IP],
            )?;
            step("    ▪", "Booting up control plane ...");
            let mut starting = control_plane::start_apiserver(env, p, etcd, host_addr)?;
            starting.wait_ready(env, p, host_addr, Instant::now() + APISERVER_WAIT)?;
            ssh.join()
                .expect("ssh wait thread")
                .map_err(|e| Failure::exit(EX_GUEST_TIMEOUT, "GUEST_PROVISION", e))?;
            Ok(host_addr)
        })?
    };

    // The other nodes, one after the other (startWithDriver's loop over node.Add).
    for (i, m) in machines.iter().enumerate().skip(1) {
        let worker_started = Instant::now();
        let role = if i < s.control_planes {
            "secondary control-plane"
        } else {
            "worker"
        };
        step(
            "👍",
            format!(
                "Starting \"m{:02}\" {role} node in \"{name}\" cluster",
                i + 1
            ),
        );
        let vm_ip = start_until_ssh(i, &mut ips, &mut reservations)?;
        if plane == ControlPlane::Node {
            let spec = NodeSpec {
                machine: m,
                index: i,
                ip: vm_ip,
                server: server_addr,
                network: pod_network,
            };
            node::bootstrap(env, p, &spec, Instant::now() + NODE_WAIT * scale)?;
            if let Some(t) = timings.as_mut() {
                t.workers_s.push(worker_started.elapsed().as_secs_f64());
            }
        }
    }
    if let Some(t) = &timings {
        t.write(p)?;
    }
    if plane == ControlPlane::Node && pod_network == PodNetwork::Routed {
        let nodes: Vec<NodeSpec> = machines
            .iter()
            .zip(&ips)
            .enumerate()
            .map(|(index, (machine, ip))| NodeSpec {
                machine,
                index,
                ip: ip.expect("every node started"),
                server: server_addr,
                network: pod_network,
            })
            .collect();
        node::route_pods(&nodes)?;
    }

    // Kubeconfig.
    step("    ▪", "Configuring RBAC rules ...");
    let entry = ProfileEntry {
        name: name.into(),
        server: format!("https://{server_addr}:{APISERVER_PORT}"),
        certificate_authority: Material::read(&env.ca_cert(), opts.embed_certs)?,
        client_certificate: Material::read(&p.client_cert(), opts.embed_certs)?,
        client_key: Material::read(&p.client_key(), opts.embed_certs)?,
        last_update: kubeconfig::rfc1123(now_unix()),
        version: VERSION_BASE.into(),
    };
    kubeconfig::update(&env.kubeconfig, &env.lock_dir, |doc| {
        kubeconfig::upsert(doc, &entry, !opts.keep_context);
        true
    })?;
    step("🔎", "Verifying Kubernetes components...");
    drop(reservations);
    if opts.keep_context {
        step(
            "💗",
            format!("To connect to this cluster, use:  --context={name}"),
        );
    } else {
        step(
            "🏄",
            format!("Done! kubectl is now configured to use \"{name}\" cluster and \"default\" namespace by default"),
        );
    }
    Ok(0)
}

/// Records a started machine's IP in its config.json and every node's in the profile's.
#[allow(clippy::too_many_arguments)]
fn record_ips(
    env: &Env,
    p: &Profile,
    s: &Settings,
    opts: &StartOptions,
    old_cluster: Option<&ClusterConfig>,
    m: &Machine,
    macs: &Macs,
    vm_ip: Ipv4Addr,
    ips: &[Option<Ipv4Addr>],
) -> Result<(), Failure> {
    save(
        &m.config_json(),
        &machine_config(env, m, s, macs, Some(vm_ip)),
    )?;
    save(
        &p.config_json(),
        &cluster_config(&p.name, s, opts, old_cluster, ips),
    )
}

fn load_existing(p: &Profile) -> Result<(Option<ClusterConfig>, Option<MachineConfig>), Failure> {
    Ok((
        config::load(&p.config_json())?,
        config::load(&p.primary().config_json())?,
    ))
}

/// The profile's machines, as its config lists its nodes (one when it lists none).
fn machines_of(p: &Profile, cluster: Option<&ClusterConfig>) -> Vec<Machine> {
    let n = cluster.map_or(1, |c| c.nodes.len().max(1));
    (0..n).map(|i| p.machine(i)).collect()
}

fn stop(env: &Env, name: &str) -> Result<u8, Failure> {
    let p = env.profile(name);
    if !p.exists() {
        return Err(profile_not_found(name));
    }
    let (cluster, _) = load_existing(&p)?;
    let lv = Libvirt::open()?;
    let machines = machines_of(&p, cluster.as_ref());
    // In reverse order, the primary control plane last (`stopProfile`, cmd/minikube/cmd/stop.go).
    for m in machines.iter().rev() {
        step("✋", format!("Stopping node \"{}\"  ...", m.name));
        let was_running = lv.domain_state(&m.name)? == DomState::Running;
        if was_running {
            lv.shutdown(&m.name)?;
        }
        if m.name == name {
            // The host-side control plane goes down while the guest powers off.
            control_plane::stop(&p);
        }
        if was_running {
            let off = wait_until(
                Instant::now() + STOP_WAIT,
                Duration::from_millis(250),
                || Ok(lv.domain_state(&m.name)? != DomState::Running),
            )?;
            if !off {
                warn(format!(
                    "{} did not power off after ACPI shutdown in {STOP_WAIT:?}: destroying it",
                    m.name
                ));
                lv.destroy(&m.name)?;
            }
        }
    }
    // `stopProfile` then removes the profile's cluster, user and context from the kubeconfig,
    // and empties current-context if it named the profile (`kubeconfig.DeleteContext`,
    // pkg/minikube/kubeconfig/context.go); `start` writes them again. (`--keep-context-active`,
    // which keeps them, is not imitated.)
    kubeconfig::update(&env.kubeconfig, &env.lock_dir, |doc| {
        kubeconfig::remove(doc, name)
    })?;
    step("🛑", format!("{} node(s) stopped.", machines.len()));
    Ok(0)
}

fn delete(env: &Env, name: &str) -> Result<u8, Failure> {
    let p = env.profile(name);
    let remove_kubeconfig = || {
        kubeconfig::update(&env.kubeconfig, &env.lock_dir, |doc| {
            kubeconfig::remove(doc, name)
        })
    };
    if !p.exists() {
        step(
            "🤷",
            format!(
                "Profile \"{name}\" not found. Run \"minikube profile list\" to view all profiles."
            ),
        );
        remove_kubeconfig()?;
        step(
            "💀",
            format!("Removed all traces of the \"{name}\" cluster."),
        );
        return Ok(0);
    }
    let (cluster, machine) = load_existing(&p)?;
    let lv = Libvirt::open()?;
    control_plane::stop(&p);
    let private = machine
        .as_ref()
        .map(|m| m.driver.private_network.clone())
        .filter(|n| !n.is_empty())
        .or_else(|| {
            cluster
                .as_ref()
                .map(|c| c.network.clone())
                .filter(|n| !n.is_empty())
        })
        .unwrap_or_else(|| format!("mk-{name}"));
    // deleteHosts: node by node, in Nodes order (cmd/minikube/cmd/delete.go).
    for m in machines_of(&p, cluster.as_ref()) {
        if lv.domain_state(&m.name)? == DomState::Missing {
            // DeleteHost: no host status, so Remove() never runs and the private network
            // stays (pkg/minikube/machine/delete.go).
            info(
                "delete.go:73",
                format!(
                    "Unable to get host status for {}, assuming it has already been deleted",
                    m.name
                ),
            );
            continue;
        }
        step("🔥", format!("Deleting \"{}\" in kvm2 ...", m.name));
        remove_machine(&lv, &m, &private)?;
    }

    let dirs = [p.dir()]
        .into_iter()
        .chain(machines_of(&p, cluster.as_ref()).into_iter().map(|m| m.dir));
    for dir in dirs {
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Failure::error(format!("remove {}: {e}", dir.display()))),
        }
    }
    remove_kubeconfig()?;
    step(
        "💀",
        format!("Removed all traces of the \"{name}\" cluster."),
    );
    Ok(0)
}

/// `mustload.Running` (`pkg/minikube/mustload/mustload.go`): on stdout, exit 83.
fn not_running(name: &str, machine: &str, state: &str) -> Failure {
    println!("🤷  The control-plane node {machine} host is not running: state={state}");
    println!("👉  To start a cluster, run: \"{}\"", start_command(name));
    Failure::styled(EX_GUEST_NOT_RUNNING, Vec::new())
}

/// A node by its name (`m02`) or its machine's (`<p>-m02`), as `node.Retrieve` finds it.
fn find_node<'a>(
    p: &Profile,
    cluster: &'a ClusterConfig,
    node: Option<&str>,
) -> Result<(Machine, &'a config::Node), Failure> {
    let found = cluster.nodes.iter().enumerate().find(|(i, n)| match node {
        None => n.control_plane && n.name.is_empty(),
        Some(want) => n.name == want || p.machine(*i).name == want,
    });
    match found {
        Some((i, n)) => Ok((p.machine(i), n)),
        None => Err(Failure::exit(
            EX_GUEST_NOT_FOUND,
            "GUEST_NODE_RETRIEVE",
            format!(
                "retrieving node: Could not find node {}",
                node.unwrap_or("")
            ),
        )),
    }
}

/// `minikube ip`: the IP the profile records for the node, once the control plane's host is
/// seen running (`cmd/minikube/cmd/ip.go`).
fn ip(env: &Env, name: &str, node: Option<&str>) -> Result<u8, Failure> {
    let p = env.profile(name);
    let (cluster, _) = load_existing(&p)?;
    let Some(cluster) = cluster else {
        return Err(profile_not_found(name));
    };
    let primary = p.primary();
    if !primary.config_json().exists() {
        println!(
            "🤷  The control-plane node {} host does not exist",
            primary.name
        );
        println!("👉  To start a cluster, run: \"{}\"", start_command(name));
        return Err(Failure::styled(EX_GUEST_NOT_FOUND, Vec::new()));
    }
    let lv = Libvirt::open()?;
    match lv.domain_state(&primary.name)? {
        DomState::Running => {}
        DomState::Stopped => return Err(not_running(name, &primary.name, "Stopped")),
        DomState::Missing => {
            return Err(Failure::exit(
                EX_GUEST_ERROR,
                "GUEST_STATUS",
                format!(
                    "Unable to get control-plane node {} host status: state: getting domain: failed looking up domain: no domain with matching name '{}'",
                    primary.name, primary.name
                ),
            ))
        }
    }
    let (_, n) = find_node(&p, &cluster, node)?;
    println!("{}", n.ip);
    Ok(0)
}

/// Where `image load` puts an archive in a node (`loadRoot`, `pkg/minikube/machine/cache_images.go`).
const IMAGE_LOAD_ROOT: &str = "/var/lib/minikube/images";

/// `minikube image load ARG...` for archives (`cmd/minikube/cmd/image.go`, `DoLoadImages`): `-`
/// is standard input saved to a file; each archive is copied to every running node and given to
/// `docker load`. A node that fails, or a file that is missing, is only logged: the command
/// exits 0 whatever happened, as v1.38.1 does. An argument that is not a path would come from the
/// host's docker daemon or a registry: the stand-in refuses it.
fn image_load(env: &Env, name: &str, images: &[String]) -> Result<u8, Failure> {
    if images.is_empty() {
        return Err(Failure::exit(
            EX_PROGRAM_USAGE,
            "MK_USAGE",
            "Please provide an image in your local daemon to load into minikube via <minikube image load IMAGE_NAME>",
        ));
    }
    let p = env.profile(name);
    let Some(cluster) = config::load::<ClusterConfig>(&p.config_json())? else {
        return Err(Failure::exit(
            EX_PROGRAM_USAGE,
            "MK_USAGE",
            format!("loading profile: cluster {name:?} does not exist"),
        ));
    };
    let is_path = |arg: &str| {
        arg == "-" || arg.starts_with('/') || arg.starts_with('.') || Path::new(arg).exists()
    };
    if let Some(named) = images.iter().find(|a| !is_path(a)) {
        return Err(Failure::exit(
            EX_GUEST_ERROR,
            "GUEST_IMAGE_LOAD",
            format!("Failed to load image: {named:?} is not a file: the minikube stand-in loads image archives only, not images from the host's docker daemon or a registry"),
        ));
    }
    // Standard input is saved first (`saveFile`), and only the first argument may be `-`.
    let stdin_copy;
    let mut files: Vec<PathBuf> = images.iter().map(PathBuf::from).collect();
    if images[0] == "-" {
        stdin_copy = tempfile::NamedTempFile::new()
            .map_err(|e| Failure::error(format!("Failed to save stdin: {e}")))?;
        std::io::copy(&mut std::io::stdin().lock(), &mut stdin_copy.as_file())
            .map_err(|e| Failure::error(format!("Failed to save stdin: {e}")))?;
        files = vec![stdin_copy.path().to_owned()];
    }
    let lv = Libvirt::open()?;
    let (mut succeeded, mut failed) = (Vec::new(), Vec::new());
    for (i, node) in cluster.nodes.iter().enumerate() {
        let m = p.machine(i);
        // A host that is not running is skipped ("will load on next start"; nothing does).
        if lv.domain_state(&m.name)? != DomState::Running {
            continue;
        }
        let loaded = node
            .ip
            .parse::<Ipv4Addr>()
            .map_err(|_| format!("no IP recorded for {}", m.name))
            .and_then(|ip| files.iter().try_for_each(|f| load_into(ip, &m, f)));
        match loaded {
            Ok(()) => succeeded.push(m.name),
            Err(e) => {
                info(
                    "cache_images.go:361",
                    format_args!("Failed to load cached images for {name:?}: {e}"),
                );
                failed.push(m.name);
            }
        }
    }
    // minikube's klog lines (its log file; the terminal with --alsologtostderr).
    if !succeeded.is_empty() {
        info(
            "cache_images.go:378",
            format_args!("succeeded pushing to: {}", succeeded.join(" ")),
        );
    }
    if !failed.is_empty() {
        info(
            "cache_images.go:381",
            format_args!("failed pushing to: {}", failed.join(" ")),
        );
    }
    Ok(0)
}

/// One archive into one node: copied to [`IMAGE_LOAD_ROOT`], then `docker load`.
fn load_into(ip: Ipv4Addr, m: &Machine, file: &Path) -> Result<(), String> {
    let archive = fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let base = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image.tar".into());
    let dst = format!("{IMAGE_LOAD_ROOT}/{}", shell_quote(&base));
    let out = keys::ssh_command(ip, &m.id_rsa())
        .arg(format!("cat > {dst} && docker load -i {dst}"))
        .stdin(archive)
        .output()
        .map_err(|e| format!("ssh: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// A word for the guest's shell, whatever it contains.
fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// What `status` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    host: &'static str,
    kubelet: &'static str,
    apiserver: &'static str,
    kubeconfig: &'static str,
}

impl State {
    /// minikube's bits: 1 host, 2 kubelet, 4 apiserver. No kubelet ever runs in the stand-in's
    /// guest, so its bit follows the host.
    fn exit_code(&self) -> u8 {
        let host_down = self.host != "Running";
        u8::from(host_down)
            | (u8::from(host_down) << 1)
            | (u8::from(self.apiserver != "Running") << 2)
    }
}

fn host_addr_of(lv: &Libvirt, network: &str) -> Result<Option<Ipv4Addr>, Failure> {
    let Some(net) = lv.network(network)? else {
        return Ok(None);
    };
    Ok(xml::network_facts(&lv.network_xml(&net)?)
        .map_err(Failure::error)?
        .host_addr)
}

fn state_of(
    env: &Env,
    lv: &Libvirt,
    p: &Profile,
    machine: &MachineConfig,
) -> Result<State, Failure> {
    let host = match lv.domain_state(&p.name)? {
        DomState::Running => "Running",
        DomState::Stopped => "Stopped",
        DomState::Missing => "Nonexistent",
    };
    if host != "Running" {
        let down = if host == "Nonexistent" {
            "Nonexistent"
        } else {
            "Stopped"
        };
        let apiserver = if control_plane::running(p, APISERVER) {
            "Running"
        } else {
            down
        };
        return Ok(State {
            host,
            kubelet: down,
            apiserver,
            kubeconfig: down,
        });
    }
    let addr = host_addr_of(lv, &machine.driver.private_network)?;
    let apiserver = match addr {
        Some(a)
            if control_plane::running(p, APISERVER)
                && control_plane::curl(env, p, &control_plane::readyz_url(a))
                    .is_ok_and(|b| b.trim() == "ok") =>
        {
            "Running"
        }
        _ => "Stopped",
    };
    let expected = addr.map(|a| format!("https://{a}:{APISERVER_PORT}"));
    let kc = kubeconfig::read(&env.kubeconfig)?;
    let kubeconfig = if expected.is_some() && kubeconfig::server_of(&kc, &p.name) == expected {
        "Configured"
    } else {
        "Misconfigured"
    };
    Ok(State {
        host,
        kubelet: "Stopped",
        apiserver,
        kubeconfig,
    })
}

fn status(env: &Env, name: &str, output: Output) -> Result<u8, Failure> {
    let p = env.profile(name);
    let (cluster, machine) = load_existing(&p)?;
    let Some(machine) = machine else {
        if output == Output::Json {
            println!(
                "{}",
                json!({"Name": name, "Host": "Nonexistent", "Kubelet": "Nonexistent",
                       "APIServer": "Nonexistent", "Kubeconfig": "Nonexistent", "Worker": false})
            );
            return Ok(EX_GUEST_NOT_FOUND);
        }
        return Err(profile_not_found(name));
    };
    let lv = Libvirt::open()?;
    let st = state_of(env, &lv, &p, &machine)?;
    let mut objects = vec![json!({"Name": name, "Host": st.host, "Kubelet": st.kubelet,
                   "APIServer": st.apiserver, "Kubeconfig": st.kubeconfig, "Worker": false})];
    let mut text = format!(
        "{name}\ntype: Control Plane\nhost: {}\nkubelet: {}\napiserver: {}\nkubeconfig: {}\n\n",
        st.host, st.kubelet, st.apiserver, st.kubeconfig
    );
    // Nodes after the first: their host state only (no kubelet runs in the stand-in's guest).
    for m in machines_of(&p, cluster.as_ref()).iter().skip(1) {
        let host = match lv.domain_state(&m.name)? {
            DomState::Running => "Running",
            DomState::Stopped => "Stopped",
            DomState::Missing => "Nonexistent",
        };
        let index = objects.len();
        let control_plane = cluster
            .as_ref()
            .and_then(|c| c.nodes.get(index))
            .is_some_and(|n| n.control_plane);
        // A secondary control plane runs no API server of its own here (one on the host).
        let (kind, irrelevant) = if control_plane {
            ("Control Plane", "Stopped")
        } else {
            ("Worker", "Irrelevant")
        };
        objects.push(json!({"Name": m.name, "Host": host, "Kubelet": "Stopped",
                   "APIServer": irrelevant, "Kubeconfig": irrelevant, "Worker": !control_plane}));
        text.push_str(&format!(
            "{}\ntype: {kind}\nhost: {host}\nkubelet: Stopped\n\n",
            m.name
        ));
    }
    match output {
        // One object for one node, a list for several (cmd/minikube/cmd/status.go).
        Output::Json if objects.len() == 1 => println!("{}", objects[0]),
        Output::Json => println!("{}", serde_json::Value::Array(objects)),
        Output::Text => print!("{text}"),
    }
    Ok(st.exit_code())
}

fn ssh_key(env: &Env, name: &str, node: Option<&str>) -> Result<u8, Failure> {
    let p = env.profile(name);
    let (cluster, _) = load_existing(&p)?;
    let Some(cluster) = cluster.filter(|_| p.exists()) else {
        return Err(profile_not_found(name));
    };
    let (machine, _) = find_node(&p, &cluster, node)?;
    println!("{}", machine.id_rsa().display());
    Ok(0)
}

fn logs(env: &Env, name: &str, file: Option<&PathBuf>, length: usize) -> Result<u8, Failure> {
    let p = env.profile(name);
    if !p.exists() {
        return Err(profile_not_found(name));
    }
    let mut text = String::new();
    for (title, path) in [("kube-apiserver", p.log(APISERVER)), ("etcd", p.log(ETCD))] {
        text.push_str(&format!(
            "==> {title} <==\n{}\n\n",
            control_plane::tail(&path, length)
        ));
    }
    match file {
        Some(path) => fs::write(path, text)
            .map_err(|e| Failure::error(format!("write {}: {e}", path.display())))?,
        None => print!("{text}"),
    }
    Ok(0)
}

fn profile_list(env: &Env, output: Output) -> Result<u8, Failure> {
    let mut names: Vec<String> = fs::read_dir(env.profiles_dir())
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().is_dir())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let lv = if names.is_empty() {
        None
    } else {
        Some(Libvirt::open()?)
    };
    let kc = kubeconfig::read(&env.kubeconfig).unwrap_or_else(|_| kubeconfig::empty());
    let current = kubeconfig::current_context(&kc);
    let mut valid = Vec::new();
    let mut invalid = Vec::new();
    for name in names {
        let p = env.profile(&name);
        let cluster: Option<ClusterConfig> = config::load(&p.config_json()).ok().flatten();
        let machine: Option<MachineConfig> =
            config::load(&p.primary().config_json()).ok().flatten();
        let (Some(cluster), Some(lv)) = (cluster, lv.as_ref()) else {
            invalid.push(json!({"Name": name, "Status": "", "Config": null}));
            continue;
        };
        let status = match &machine {
            Some(m) => match state_of(env, lv, &p, m)? {
                st if st.host == "Running" && st.apiserver == "Running" => "Running",
                st if st.host == "Running" => "Degraded",
                st if st.host == "Nonexistent" => "Unknown",
                _ => "Stopped",
            },
            None => "Unknown",
        };
        valid.push((
            name.clone(),
            status,
            cluster,
            current.as_deref() == Some(name.as_str()),
        ));
    }
    match output {
        Output::Json => {
            let valid: Vec<_> = valid
                .into_iter()
                .map(|(name, status, cluster, active_ctx)| {
                    json!({"Name": name, "Status": status, "Config": cluster,
                           "Active": name == cli::DEFAULT_PROFILE, "ActiveKubeContext": active_ctx})
                })
                .collect();
            println!("{}", json!({"invalid": invalid, "valid": valid}));
        }
        Output::Text => {
            if valid.is_empty() {
                return Err(Failure::exit(
                    EX_PROGRAM_USAGE,
                    "MK_USAGE_NO_PROFILE",
                    "No minikube profile was found.",
                ));
            }
            println!("| Profile | Driver | IP | Port | Version | Status | Nodes |");
            for (name, status, c, _) in &valid {
                let ip = c.nodes.first().map(|n| n.ip.as_str()).unwrap_or("");
                let version = match c.kubernetes_config.kubernetes_version.as_str() {
                    NO_KUBERNETES_VERSION => "N/A",
                    v => v,
                };
                println!(
                    "| {name} | {} | {ip} | {} | {} | {status} | {} |",
                    c.driver,
                    c.api_server_port,
                    version,
                    c.nodes.len()
                );
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_exit_codes() {
        let running = State {
            host: "Running",
            kubelet: "Stopped",
            apiserver: "Running",
            kubeconfig: "Configured",
        };
        assert_eq!(running.exit_code(), 0);
        let stopped = State {
            host: "Stopped",
            kubelet: "Stopped",
            apiserver: "Stopped",
            kubeconfig: "Stopped",
        };
        assert_eq!(stopped.exit_code(), 7);
        let degraded = State {
            apiserver: "Stopped",
            ..running
        };
        assert_eq!(degraded.exit_code(), 4);
    }

    #[test]
    fn wait_maps_to_verify_components() {
        let v = verify_components(&[]);
        assert_eq!(v.keys().collect::<Vec<_>>(), ["apiserver", "system_pods"]);
        assert_eq!(verify_components(&["all".into()]).len(), 7);
        assert!(verify_components(&["none".into()]).is_empty());
        assert_eq!(
            verify_components(&["apiserver".into(), "node_ready".into()]).len(),
            2
        );
    }

    #[test]
    fn profile_names() {
        for ok in ["minikube", "sitest", "a-b.c-d", "p1", "Ab", "mkh-abc123"] {
            assert!(validate_profile_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "a", "-x", "foo-", "a_b", "a..b", "a.-b", "a/b", "a b", "é",
        ] {
            assert!(validate_profile_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn existing_profiles_keep_their_settings() {
        let opts = StartOptions::default();
        let fresh = settings("p", &opts, None, None, 6000, 1);
        assert_eq!(fresh.private, "mk-p");
        assert_eq!(fresh.nat, "default");
        assert_eq!((fresh.memory, fresh.cpus, fresh.nodes), (6000, 2, 1));
        let given = StartOptions {
            network: Some("priv".into()),
            kvm_network: Some("nat".into()),
            memory_mib: Some(cli::Amount::Value(512)),
            ..StartOptions::default()
        };
        let s = settings("p", &given, None, None, 6000, 2);
        assert_eq!(
            (s.private.as_str(), s.nat.as_str(), s.memory),
            ("priv", "nat", 512)
        );
        let cc = cluster_config("p", &s, &given, None, &[Some(Ipv4Addr::new(10, 1, 2, 3))]);
        assert_eq!(cc.network, "priv");
        assert_eq!(cc.nodes[0].ip, "10.1.2.3");
        assert_eq!(
            (cc.nodes[0].name.as_str(), cc.nodes[1].name.as_str()),
            ("", "m02")
        );
        assert!(cc.nodes[0].control_plane && !cc.nodes[1].control_plane && cc.nodes[1].worker);
        assert_eq!(cc.nodes[1].ip, "");
        // A later start without flags keeps them.
        let again = settings("p", &opts, Some(&cc), None, 3000, 1);
        assert_eq!(
            (
                again.private.as_str(),
                again.nat.as_str(),
                again.memory,
                again.nodes
            ),
            ("priv", "nat", 512, 2)
        );
    }

    #[test]
    fn start_hint_names_the_profile_unless_default() {
        assert_eq!(start_command("minikube"), "minikube start");
        assert_eq!(start_command("x"), "minikube start -p x");
    }
}
