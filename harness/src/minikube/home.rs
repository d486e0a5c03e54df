//! minikube's files as the kvm2 driver leaves them: where they live under MINIKUBE_HOME, and
//! typed readers for the two config files mkh needs. The readers keep the field names minikube
//! writes (PascalCase), default every field they do not find and ignore the ones they do not
//! know, so that files of other minikube versions still read. Only their tests read the config
//! files yet.
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// The directory minikube really uses for a MINIKUBE_HOME value: `.minikube` is appended unless
/// the value's last component already is `.minikube`.
pub fn resolve_home(minikube_home: &Path) -> PathBuf {
    if minikube_home.file_name().is_some_and(|n| n == ".minikube") {
        minikube_home.to_owned()
    } else {
        minikube_home.join(".minikube")
    }
}

/// Paths inside a resolved minikube home (see [`resolve_home`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinikubeFiles {
    pub root: PathBuf,
}

impl MinikubeFiles {
    pub fn new(minikube_home: &Path) -> MinikubeFiles {
        MinikubeFiles {
            root: resolve_home(minikube_home),
        }
    }

    pub fn cache(&self) -> PathBuf {
        self.root.join("cache")
    }

    pub fn profile_config(&self, profile: &str) -> PathBuf {
        self.root.join("profiles").join(profile).join("config.json")
    }

    pub fn machine_config(&self, machine: &str) -> PathBuf {
        self.root.join("machines").join(machine).join("config.json")
    }

    pub fn ssh_key(&self, machine: &str) -> PathBuf {
        self.root.join("machines").join(machine).join("id_rsa")
    }
}

/// `profiles/<p>/config.json`: minikube's ClusterConfig, the parts mkh reads.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ProfileConfig {
    pub name: String,
    pub driver: String,
    pub memory: u64,
    #[serde(rename = "CPUs")]
    pub cpus: u64,
    pub disk_size: u64,
    #[serde(rename = "MinikubeISO")]
    pub minikube_iso: String,
    #[serde(rename = "KVMNetwork")]
    pub kvm_network: String,
    #[serde(rename = "KVMQemuURI")]
    pub kvm_qemu_uri: String,
    pub network: String,
    pub subnet: String,
    #[serde(rename = "APIServerPort")]
    pub api_server_port: u16,
    pub embed_certs: bool,
    pub keep_context: bool,
    pub kubernetes_config: KubernetesConfig,
    pub nodes: Vec<Node>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct KubernetesConfig {
    pub kubernetes_version: String,
    pub cluster_name: String,
    pub container_runtime: String,
    #[serde(rename = "ServiceCIDR")]
    pub service_cidr: String,
    #[serde(rename = "CNI")]
    pub cni: String,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Node {
    pub name: String,
    #[serde(rename = "IP")]
    pub ip: String,
    pub port: u16,
    pub kubernetes_version: String,
    pub control_plane: bool,
    pub worker: bool,
}

/// `machines/<m>/config.json`: libmachine's Host with the kvm2 driver's fields.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct MachineConfig {
    pub config_version: u32,
    pub driver_name: String,
    pub name: String,
    pub driver: Kvm2Driver,
    pub host_options: HostOptions,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
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
    pub network: String,
    pub private_network: String,
    #[serde(rename = "MAC")]
    pub mac: String,
    #[serde(rename = "PrivateMAC")]
    pub private_mac: String,
    pub disk_path: String,
    #[serde(rename = "ISO")]
    pub iso: String,
    #[serde(rename = "ConnectionURI")]
    pub connection_uri: String,
    pub memory: u64,
    #[serde(rename = "CPU")]
    pub cpu: u64,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct HostOptions {
    pub auth_options: AuthOptions,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct AuthOptions {
    pub cert_dir: String,
    pub ca_cert_path: String,
    pub store_path: String,
}

impl ProfileConfig {
    pub fn read(path: &Path) -> Result<ProfileConfig> {
        read_json(path, "minikube profile config")
    }

    /// The control-plane node's IP, as minikube recorded it.
    pub fn control_plane_ip(&self) -> Option<Ipv4Addr> {
        self.nodes
            .iter()
            .find(|n| n.control_plane)
            .and_then(|n| n.ip.parse().ok())
    }
}

impl MachineConfig {
    pub fn read(path: &Path) -> Result<MachineConfig> {
        read_json(path, "minikube machine config")
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path, what: &str) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::BadFile {
        path: path.to_owned(),
        what: what.to_owned(),
        problem: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The seed article's samples, with its `. . .` elisions (and the braces and commas they left
    // dangling) removed.
    const PROFILE: &str = include_str!("testdata/profile-config.json");
    const MACHINE: &str = include_str!("testdata/machine-config.json");

    #[test]
    fn the_articles_profile_config_reads() {
        let p: ProfileConfig = serde_json::from_str(PROFILE).unwrap();
        assert_eq!(p.name, "minikube");
        assert_eq!(p.driver, "kvm2");
        assert_eq!((p.memory, p.cpus, p.disk_size), (3900, 2, 20000));
        assert_eq!(p.control_plane_ip(), Some(Ipv4Addr::new(192, 168, 39, 174)));
        assert_eq!(p.nodes[0].port, 8443);
        assert_eq!(p.nodes[0].kubernetes_version, "v1.18.0");
    }

    #[test]
    fn the_articles_machine_config_reads() {
        let m: MachineConfig = serde_json::from_str(MACHINE).unwrap();
        assert_eq!(m.driver_name, "kvm2");
        assert_eq!(m.config_version, 3);
        let d = &m.driver;
        assert_eq!(d.ip_address, "192.168.39.174");
        assert_eq!(d.ssh_user, "docker");
        assert_eq!(d.ssh_port, 22);
        assert_eq!(d.network, "default");
        assert_eq!(d.private_network, "minikube-net");
        assert_eq!(d.mac, "e8:94:3e:a6:a5:a7");
        assert_eq!(d.private_mac, "30:e0:ec:bf:64:8e");
        assert_eq!(
            d.ssh_key_path,
            "/home/kamran/.minikube/machines/minikube/id_rsa"
        );
        assert_eq!(
            m.host_options.auth_options.cert_dir,
            "/home/kamran/.minikube"
        );
    }

    #[test]
    fn unknown_and_missing_fields_are_fine_but_bad_json_is_not() {
        let p: ProfileConfig = serde_json::from_str(r#"{"Name":"x","Future":{"a":1}}"#).unwrap();
        assert_eq!(p.name, "x");
        assert_eq!(p.control_plane_ip(), None);
        let dir = std::env::temp_dir().join(format!("mkh-home-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("config.json");
        std::fs::write(&f, "{ not json").unwrap();
        let err = MachineConfig::read(&f).unwrap_err().to_string();
        assert!(
            err.contains("config.json") && err.contains("machine config"),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn minikube_home_gets_dot_minikube_appended_unless_it_ends_so() {
        assert_eq!(resolve_home(Path::new("/t/h")), Path::new("/t/h/.minikube"));
        assert_eq!(
            resolve_home(Path::new("/t/.minikube")),
            Path::new("/t/.minikube")
        );
        let f = MinikubeFiles::new(Path::new("/t/h"));
        assert_eq!(
            f.machine_config("p"),
            Path::new("/t/h/.minikube/machines/p/config.json")
        );
        assert_eq!(
            f.ssh_key("p"),
            Path::new("/t/h/.minikube/machines/p/id_rsa")
        );
        assert_eq!(
            f.profile_config("p"),
            Path::new("/t/h/.minikube/profiles/p/config.json")
        );
    }
}
