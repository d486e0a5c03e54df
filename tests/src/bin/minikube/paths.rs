//! Where minikube keeps things: MINIKUBE_HOME (with `.minikube` appended unless its basename
//! already is `.minikube`), the per-profile and per-machine directories, KUBECONFIG (first
//! non-empty entry) and the lock directory `$TMPDIR/minikube-locks-<uid>/`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// `$MINIKUBE_HOME`, resolved like minikube's `localpath.MiniPath()`: the variable's value gets
/// `.minikube` appended unless its last component already is `.minikube`; unset (or empty):
/// `$HOME/.minikube`. Relative values are made absolute against `cwd` because the paths end up
/// in config files and in the command lines of long-lived processes.
pub fn resolve_minikube_home(
    minikube_home: Option<&OsStr>,
    home: Option<&OsStr>,
    cwd: &Path,
) -> Option<PathBuf> {
    let base = match minikube_home.filter(|v| !v.is_empty()) {
        Some(v) => {
            let p = PathBuf::from(v);
            if p.file_name() == Some(OsStr::new(".minikube")) {
                p
            } else {
                p.join(".minikube")
            }
        }
        None => PathBuf::from(home.filter(|v| !v.is_empty())?).join(".minikube"),
    };
    Some(if base.is_absolute() {
        base
    } else {
        cwd.join(base)
    })
}

/// The kubeconfig minikube writes: the first non-empty entry of `$KUBECONFIG` (a `:` list),
/// else `$HOME/.kube/config`.
pub fn resolve_kubeconfig(kubeconfig: Option<&OsStr>, home: &Path, cwd: &Path) -> PathBuf {
    let first = kubeconfig
        .and_then(|v| v.to_str())
        .and_then(|v| v.split(':').find(|e| !e.is_empty()).map(PathBuf::from));
    let path = first.unwrap_or_else(|| home.join(".kube").join("config"));
    if path.is_absolute() {
        path
    } else {
        cwd.join(path)
    }
}

/// `$TMPDIR/minikube-locks-<uid>` (TMPDIR defaults to /tmp): where subnet reservations and the
/// kubeconfig lock live. Processes with different TMPDIRs do not see each other's locks, as with
/// minikube.
pub fn lock_dir(tmpdir: Option<&OsStr>, uid: u32) -> PathBuf {
    let base = tmpdir
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join(format!("minikube-locks-{uid}"))
}

/// Everything the stand-in needs to know about where things are, read from the environment once.
#[derive(Debug, Clone)]
pub struct Env {
    /// MINIKUBE_HOME, resolved (ends in `.minikube`).
    pub home: PathBuf,
    pub kubeconfig: PathBuf,
    pub lock_dir: PathBuf,
}

impl Env {
    pub fn from_process() -> Result<Env, String> {
        let cwd = std::env::current_dir().map_err(|e| format!("current directory: {e}"))?;
        let user_home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .ok_or("HOME is not set (needed for ~/.minikube and ~/.kube/config)")?;
        let home = resolve_minikube_home(
            std::env::var_os("MINIKUBE_HOME").as_deref(),
            Some(user_home.as_os_str()),
            &cwd,
        )
        .ok_or("cannot determine MINIKUBE_HOME")?;
        let kubeconfig =
            resolve_kubeconfig(std::env::var_os("KUBECONFIG").as_deref(), &user_home, &cwd);
        let lock_dir = lock_dir(
            std::env::var_os("TMPDIR").as_deref(),
            nix::unistd::getuid().as_raw(),
        );
        Ok(Env {
            home,
            kubeconfig,
            lock_dir,
        })
    }

    pub fn profile(&self, name: &str) -> Profile {
        Profile {
            name: name.to_string(),
            home: self.home.clone(),
        }
    }

    pub fn profiles_dir(&self) -> PathBuf {
        self.home.join("profiles")
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.home.join("ca.crt")
    }

    pub fn ca_key(&self) -> PathBuf {
        self.home.join("ca.key")
    }
}

/// The files of one profile (cluster) and its machines: `<p>` for the primary control plane,
/// `<p>-m02`, ... for the other nodes (`config.MachineName`, `pkg/minikube/config/profile.go`).
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub home: PathBuf,
}

impl Profile {
    pub fn dir(&self) -> PathBuf {
        self.home.join("profiles").join(&self.name)
    }
    /// `profiles/<p>/config.json`: the ClusterConfig.
    pub fn config_json(&self) -> PathBuf {
        self.dir().join("config.json")
    }
    /// The machine (libvirt domain) of node `index`, 0 being the primary control plane.
    pub fn machine(&self, index: usize) -> Machine {
        let name = if index == 0 {
            self.name.clone()
        } else {
            format!("{}-m{:02}", self.name, index + 1)
        };
        Machine {
            dir: self.home.join("machines").join(&name),
            name,
        }
    }
    /// The primary control plane's machine.
    pub fn primary(&self) -> Machine {
        self.machine(0)
    }
    pub fn apiserver_cert(&self) -> PathBuf {
        self.dir().join("apiserver.crt")
    }
    pub fn apiserver_key(&self) -> PathBuf {
        self.dir().join("apiserver.key")
    }
    /// The serving key's public half: clients pin it, so that they know they reached this
    /// profile's API server and not another one on the same address.
    pub fn apiserver_pub(&self) -> PathBuf {
        self.dir().join("apiserver.pub")
    }
    pub fn client_cert(&self) -> PathBuf {
        self.dir().join("client.crt")
    }
    pub fn client_key(&self) -> PathBuf {
        self.dir().join("client.key")
    }
    pub fn sa_key(&self) -> PathBuf {
        self.dir().join("sa.key")
    }
    pub fn sa_pub(&self) -> PathBuf {
        self.dir().join("sa.pub")
    }
    pub fn etcd_data(&self) -> PathBuf {
        self.dir().join("etcd")
    }
    pub fn log(&self, component: &str) -> PathBuf {
        self.dir().join(format!("{component}.log"))
    }
    pub fn pid_file(&self, component: &str) -> PathBuf {
        self.dir().join(format!("{component}.pid"))
    }
    /// pid, start time and command line of the host-side control-plane processes.
    pub fn processes_json(&self) -> PathBuf {
        self.dir().join("processes.json")
    }
    pub fn exists(&self) -> bool {
        self.config_json().exists() || self.primary().config_json().exists()
    }
}

/// One machine's directory, `machines/<m>/`.
#[derive(Debug, Clone)]
pub struct Machine {
    pub name: String,
    pub dir: PathBuf,
}

impl Machine {
    /// `machines/<m>/config.json`: libmachine's Host.
    pub fn config_json(&self) -> PathBuf {
        self.dir.join("config.json")
    }
    pub fn id_rsa(&self) -> PathBuf {
        self.dir.join("id_rsa")
    }
    /// What kvm2 would create (the ISO copy and the raw disk); recorded, not created.
    pub fn iso(&self) -> PathBuf {
        self.dir.join("boot2docker.iso")
    }
    pub fn disk(&self) -> PathBuf {
        self.dir.join(format!("{}.rawdisk", self.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> Option<&OsStr> {
        Some(OsStr::new(s))
    }

    #[test]
    fn minikube_home_gets_dot_minikube_unless_it_is_already_there() {
        let cwd = Path::new("/work");
        assert_eq!(
            resolve_minikube_home(os("/var/tmp/mh"), os("/root"), cwd).unwrap(),
            PathBuf::from("/var/tmp/mh/.minikube")
        );
        assert_eq!(
            resolve_minikube_home(os("/var/tmp/mh/.minikube"), os("/root"), cwd).unwrap(),
            PathBuf::from("/var/tmp/mh/.minikube")
        );
        assert_eq!(
            resolve_minikube_home(os("/var/tmp/mh/.minikube/"), os("/root"), cwd).unwrap(),
            PathBuf::from("/var/tmp/mh/.minikube/")
        );
        // Only the basename counts.
        assert_eq!(
            resolve_minikube_home(os("/x/.minikube/y"), os("/root"), cwd).unwrap(),
            PathBuf::from("/x/.minikube/y/.minikube")
        );
        assert_eq!(
            resolve_minikube_home(None, os("/home/u"), cwd).unwrap(),
            PathBuf::from("/home/u/.minikube")
        );
        assert_eq!(
            resolve_minikube_home(os(""), os("/home/u"), cwd).unwrap(),
            PathBuf::from("/home/u/.minikube")
        );
        assert_eq!(
            resolve_minikube_home(os("rel"), None, cwd).unwrap(),
            PathBuf::from("/work/rel/.minikube")
        );
        assert_eq!(resolve_minikube_home(None, None, cwd), None);
    }

    #[test]
    fn kubeconfig_is_the_first_nonempty_entry() {
        let home = Path::new("/home/u");
        let cwd = Path::new("/w");
        assert_eq!(
            resolve_kubeconfig(os("/a/k1:/b/k2"), home, cwd),
            PathBuf::from("/a/k1")
        );
        assert_eq!(
            resolve_kubeconfig(os(":/b/k2"), home, cwd),
            PathBuf::from("/b/k2")
        );
        assert_eq!(
            resolve_kubeconfig(None, home, cwd),
            PathBuf::from("/home/u/.kube/config")
        );
        assert_eq!(
            resolve_kubeconfig(os(""), home, cwd),
            PathBuf::from("/home/u/.kube/config")
        );
        assert_eq!(
            resolve_kubeconfig(os("k"), home, cwd),
            PathBuf::from("/w/k")
        );
    }

    #[test]
    fn lock_dir_follows_tmpdir_and_uid() {
        assert_eq!(
            lock_dir(os("/var/tmp/t"), 1000),
            PathBuf::from("/var/tmp/t/minikube-locks-1000")
        );
        assert_eq!(lock_dir(None, 0), PathBuf::from("/tmp/minikube-locks-0"));
    }
}
