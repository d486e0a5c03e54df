//! The two JSON files minikube keeps per profile, with minikube's own field names (PascalCase,
//! acronyms as in Go: `CPUs`, `KVMNetwork`, `APIServerPort`, `IP`, `MAC`, ...):
//!
//! - `profiles/<p>/config.json`: `ClusterConfig` (minikube's `pkg/minikube/config/types.go`);
//! - `machines/<p>/config.json`: libmachine's `Host` with the kvm2 `Driver` inside.
//!
//! Only a subset of minikube's many fields is written, in minikube's order; readers that follow
//! Go's encoding/json (unknown and missing fields are fine) read them as minikube's own files.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// `profiles/<p>/config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ClusterConfig {
    pub name: String,
    pub keep_context: bool,
    pub embed_certs: bool,
    #[serde(rename = "MinikubeISO")]
    pub minikube_iso: String,
    pub memory: u32,
    #[serde(rename = "CPUs")]
    pub cpus: u32,
    pub disk_size: u32,
    pub driver: String,
    #[serde(rename = "KVMNetwork")]
    pub kvm_network: String,
    #[serde(rename = "KVMQemuURI")]
    pub kvm_qemu_uri: String,
    #[serde(rename = "KVMGPU")]
    pub kvm_gpu: bool,
    #[serde(rename = "KVMHidden")]
    pub kvm_hidden: bool,
    #[serde(rename = "KVMNUMACount")]
    pub kvm_numa_count: u32,
    #[serde(rename = "APIServerPort")]
    pub api_server_port: u16,
    pub kubernetes_config: KubernetesConfig,
    pub nodes: Vec<Node>,
    pub addons: BTreeMap<String, bool>,
    pub verify_components: BTreeMap<String, bool>,
    /// Nanoseconds, as Go's time.Duration.
    pub start_host_timeout: u64,
    /// The `--network` flag as given (empty: kvm2 uses `mk-<profile>`).
    pub network: String,
    /// The `--subnet` flag as given: empty, the stand-in has no such flag and, like kvm2, does not
    /// record the subnet it chose for `mk-<profile>` here.
    pub subnet: String,
    pub multi_node_requested: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KubernetesConfig {
    pub kubernetes_version: String,
    pub cluster_name: String,
    pub namespace: String,
    #[serde(rename = "APIServerHAVIP")]
    pub api_server_ha_vip: String,
    #[serde(rename = "APIServerName")]
    pub api_server_name: String,
    #[serde(rename = "APIServerNames")]
    pub api_server_names: Option<Vec<String>>,
    #[serde(rename = "APIServerIPs")]
    pub api_server_ips: Option<Vec<String>>,
    #[serde(rename = "DNSDomain")]
    pub dns_domain: String,
    pub container_runtime: String,
    #[serde(rename = "CRISocket")]
    pub cri_socket: String,
    pub network_plugin: String,
    pub feature_gates: String,
    #[serde(rename = "ServiceCIDR")]
    pub service_cidr: String,
    pub image_repository: String,
    pub extra_options: Option<Vec<Value>>,
    pub should_load_cached_images: bool,
    #[serde(rename = "EnableDefaultCNI")]
    pub enable_default_cni: bool,
    #[serde(rename = "CNI")]
    pub cni: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Node {
    /// "" for the primary control-plane node.
    pub name: String,
    #[serde(rename = "IP")]
    pub ip: String,
    pub port: u16,
    pub kubernetes_version: String,
    pub container_runtime: String,
    pub control_plane: bool,
    pub worker: bool,
}

/// `machines/<p>/config.json`: libmachine's Host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MachineConfig {
    pub config_version: u32,
    pub driver: Kvm2Driver,
    pub driver_name: String,
    pub host_options: HostOptions,
    pub name: String,
}

/// The kvm2 driver's saved state (`pkg/drivers/kvm/kvm.go`'s `Driver` with libmachine's
/// `BaseDriver` inlined).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Kvm2Driver {
    #[serde(rename = "IPAddress")]
    pub ip_address: String,
    pub machine_name: String,
    #[serde(rename = "SSHUser")]
    pub ssh_user: String,
    #[serde(rename = "SSHPort")]
    pub ssh_port: u16,
    #[serde(rename = "SSHKeyPath")]
    pub ssh_key_path: String,
    pub store_path: String,
    pub swarm_master: bool,
    pub swarm_host: String,
    pub swarm_discovery: String,
    pub memory: u32,
    #[serde(rename = "CPU")]
    pub cpu: u32,
    /// The NAT network (`--kvm-network`).
    pub network: String,
    pub private_network: String,
    pub disk_size: u32,
    pub disk_path: String,
    #[serde(rename = "Boot2DockerURL")]
    pub boot2docker_url: String,
    #[serde(rename = "ISO")]
    pub iso: String,
    /// The NAT NIC's MAC.
    #[serde(rename = "MAC")]
    pub mac: String,
    /// The private NIC's MAC.
    #[serde(rename = "PrivateMAC")]
    pub private_mac: String,
    #[serde(rename = "GPU")]
    pub gpu: bool,
    pub hidden: bool,
    #[serde(rename = "DevicesXML")]
    pub devices_xml: String,
    #[serde(rename = "ConnectionURI")]
    pub connection_uri: String,
    #[serde(rename = "NUMANodeCount")]
    pub numa_node_count: u32,
    pub extra_disks: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HostOptions {
    pub driver: String,
    pub memory: u32,
    pub disk: u32,
    pub engine_options: Value,
    pub swarm_options: Value,
    pub auth_options: AuthOptions,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AuthOptions {
    pub cert_dir: String,
    pub ca_cert_path: String,
    pub ca_private_key_path: String,
    pub ca_cert_remote_path: String,
    pub server_cert_path: String,
    pub server_key_path: String,
    pub client_key_path: String,
    pub server_cert_remote_path: String,
    pub server_key_remote_path: String,
    pub client_cert_path: String,
    #[serde(rename = "ServerCertSANs")]
    pub server_cert_sans: Option<Vec<String>>,
    pub store_path: String,
}

impl AuthOptions {
    /// libmachine's paths under MINIKUBE_HOME (as in the seed article's sample). The stand-in
    /// provisions no Docker daemon, so these files are named but not created.
    pub fn for_home(home: &Path) -> AuthOptions {
        let s = |p: &Path| p.to_string_lossy().into_owned();
        let certs = home.join("certs");
        AuthOptions {
            cert_dir: s(home),
            ca_cert_path: s(&certs.join("ca.pem")),
            ca_private_key_path: s(&certs.join("ca-key.pem")),
            ca_cert_remote_path: String::new(),
            server_cert_path: s(&home.join("machines").join("server.pem")),
            server_key_path: s(&home.join("machines").join("server-key.pem")),
            client_key_path: s(&certs.join("key.pem")),
            server_cert_remote_path: String::new(),
            server_key_remote_path: String::new(),
            client_cert_path: s(&certs.join("cert.pem")),
            server_cert_sans: None,
            store_path: s(home),
        }
    }
}

/// libmachine's EngineOptions as minikube writes them for a kvm2 machine.
pub fn engine_options(service_cidr: &str) -> Value {
    json!({
        "ArbitraryFlags": null,
        "Dns": null,
        "GraphDir": "",
        "Env": null,
        "Ipv6": false,
        "InsecureRegistry": [service_cidr],
        "Labels": null,
        "LogLevel": "",
        "StorageDriver": "",
        "SelinuxEnabled": false,
        "TlsVerify": false,
        "RegistryMirror": [],
        "InstallURL": "https://get.docker.com"
    })
}

pub fn swarm_options() -> Value {
    json!({
        "IsSwarm": false,
        "Address": "",
        "Discovery": "",
        "Agent": false,
        "Master": false,
        "Host": "",
        "Image": "",
        "Strategy": "",
        "Heartbeat": 0,
        "Overcommit": 0,
        "ArbitraryFlags": null,
        "ArbitraryJoinFlags": null,
        "Env": null,
        "IsExperimental": false
    })
}

/// Reads a JSON file; `Ok(None)` when it does not exist.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, String> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Writes `value` as indented JSON (minikube indents with tabs), atomically (temp file +
/// rename), mode 0644.
pub fn save<T: Serialize>(path: &Path, value: &T) -> Result<(), String> {
    let mut text = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut text, formatter);
    value
        .serialize(&mut ser)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    write_atomic(path, &text, 0o644)
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so
/// that readers see the old or the new content, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path
        .parent()
        .ok_or_else(|| format!("{}: no parent", path.display()))?;
    fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!("write {}: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> ClusterConfig {
        ClusterConfig {
            name: "p".into(),
            keep_context: false,
            embed_certs: false,
            minikube_iso: "iso".into(),
            memory: 256,
            cpus: 1,
            disk_size: 20000,
            driver: "kvm2".into(),
            kvm_network: "default".into(),
            kvm_qemu_uri: "qemu:///system".into(),
            kvm_gpu: false,
            kvm_hidden: false,
            kvm_numa_count: 1,
            api_server_port: 8443,
            kubernetes_config: KubernetesConfig {
                kubernetes_version: "v1.20.2".into(),
                cluster_name: "p".into(),
                namespace: "default".into(),
                api_server_ha_vip: String::new(),
                api_server_name: "minikubeCA".into(),
                api_server_names: None,
                api_server_ips: None,
                dns_domain: "cluster.local".into(),
                container_runtime: "docker".into(),
                cri_socket: String::new(),
                network_plugin: "cni".into(),
                feature_gates: String::new(),
                service_cidr: "10.96.0.0/12".into(),
                image_repository: String::new(),
                extra_options: None,
                should_load_cached_images: true,
                enable_default_cni: false,
                cni: String::new(),
            },
            nodes: vec![Node {
                name: String::new(),
                ip: "192.168.39.2".into(),
                port: 8443,
                kubernetes_version: "v1.20.2".into(),
                container_runtime: "docker".into(),
                control_plane: true,
                worker: true,
            }],
            addons: BTreeMap::new(),
            verify_components: BTreeMap::new(),
            start_host_timeout: 360_000_000_000,
            network: String::new(),
            subnet: String::new(),
            multi_node_requested: false,
        }
    }

    #[test]
    fn cluster_config_uses_minikubes_field_names() {
        let v = serde_json::to_value(cluster()).unwrap();
        for key in [
            "Name",
            "KeepContext",
            "EmbedCerts",
            "MinikubeISO",
            "Memory",
            "CPUs",
            "DiskSize",
            "Driver",
            "KVMNetwork",
            "KVMQemuURI",
            "APIServerPort",
            "KubernetesConfig",
            "Nodes",
            "Addons",
            "Network",
            "Subnet",
        ] {
            assert!(v.get(key).is_some(), "missing {key} in {v}");
        }
        let k = &v["KubernetesConfig"];
        for key in [
            "KubernetesVersion",
            "ClusterName",
            "ContainerRuntime",
            "ServiceCIDR",
            "CNI",
            "APIServerName",
        ] {
            assert!(k.get(key).is_some(), "missing KubernetesConfig.{key}");
        }
        let n = &v["Nodes"][0];
        for key in [
            "Name",
            "IP",
            "Port",
            "KubernetesVersion",
            "ControlPlane",
            "Worker",
        ] {
            assert!(n.get(key).is_some(), "missing Nodes[0].{key}");
        }
        assert_eq!(v["CPUs"], 1);
        assert_eq!(n["IP"], "192.168.39.2");
    }

    #[test]
    fn machine_config_reads_the_seed_articles_sample() {
        // Fields from the seed article's machines/minikube/config.json (trimmed where it was).
        let sample = r#"{
            "ConfigVersion": 3,
            "Driver": {
                "IPAddress": "192.168.39.174", "MachineName": "minikube", "SSHUser": "docker",
                "SSHPort": 22, "SSHKeyPath": "/home/kamran/.minikube/machines/minikube/id_rsa",
                "StorePath": "/home/kamran/.minikube", "SwarmMaster": false, "SwarmHost": "",
                "SwarmDiscovery": "", "Memory": 3900, "CPU": 2, "Network": "default",
                "PrivateNetwork": "minikube-net", "DiskSize": 20000,
                "DiskPath": "/home/kamran/.minikube/machines/minikube/minikube.rawdisk",
                "Boot2DockerURL": "file:///home/kamran/.minikube/cache/iso/minikube-v1.9.0.iso",
                "ISO": "/home/kamran/.minikube/machines/minikube/boot2docker.iso",
                "MAC": "e8:94:3e:a6:a5:a7", "PrivateMAC": "30:e0:ec:bf:64:8e", "GPU": false,
                "Hidden": false, "DevicesXML": "", "ConnectionURI": "qemu:///system",
                "NUMANodeCount": 1, "ExtraDisks": 0
            },
            "DriverName": "kvm2",
            "HostOptions": {
                "Driver": "", "Memory": 0, "Disk": 0,
                "EngineOptions": {"InsecureRegistry": ["10.96.0.0/12"]},
                "SwarmOptions": {},
                "AuthOptions": {
                    "CertDir": "/home/kamran/.minikube",
                    "CaCertPath": "/home/kamran/.minikube/certs/ca.pem",
                    "CaPrivateKeyPath": "/home/kamran/.minikube/certs/ca-key.pem",
                    "CaCertRemotePath": "",
                    "ServerCertPath": "/home/kamran/.minikube/machines/server.pem",
                    "ServerKeyPath": "/home/kamran/.minikube/machines/server-key.pem",
                    "ClientKeyPath": "/home/kamran/.minikube/certs/key.pem",
                    "ServerCertRemotePath": "", "ServerKeyRemotePath": "",
                    "ClientCertPath": "/home/kamran/.minikube/certs/cert.pem",
                    "ServerCertSANs": null, "StorePath": "/home/kamran/.minikube"
                }
            },
            "Name": "minikube"
        }"#;
        let m: MachineConfig = serde_json::from_str(sample).unwrap();
        assert_eq!(m.driver.private_mac, "30:e0:ec:bf:64:8e");
        assert_eq!(m.driver.mac, "e8:94:3e:a6:a5:a7");
        assert_eq!(m.driver.private_network, "minikube-net");
        // And what we write reads back identically, with the same keys.
        let back = serde_json::to_value(&m).unwrap();
        let orig: Value = serde_json::from_str(sample).unwrap();
        assert_eq!(back["Driver"], orig["Driver"]);
        assert_eq!(
            back["HostOptions"]["AuthOptions"],
            orig["HostOptions"]["AuthOptions"]
        );
        assert_eq!(
            AuthOptions::for_home(Path::new("/home/kamran/.minikube")),
            m.host_options.auth_options
        );
    }

    #[test]
    fn saved_files_are_tab_indented_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("config.json");
        save(&path, &cluster()).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("{\n\t\"Name\": \"p\""), "{text}");
        let back: ClusterConfig = load(&path).unwrap().unwrap();
        assert_eq!(back, cluster());
        assert_eq!(
            load::<ClusterConfig>(&dir.path().join("nope")).unwrap(),
            None
        );
    }
}
