//! What explains a failure, collected into one directory with one layout, by whoever meets the
//! failure: a failed creation, a test that panicked or was ended by a signal.
//!
//! ```text
//! <dir>/error.txt               the error, when there is one
//! <dir>/<machine>.console.log   each machine's serial console
//! <dir>/<machine>.domain.xml    each machine's libvirt definition
//! <dir>/<network>.leases.json   each network's DHCP leases
//! <dir>/minikube.log            everything minikube printed (minikube backend)
//! <dir>/minikube-logs.txt       `minikube logs` (minikube backend, when time allows)
//! <dir>/errors.txt              SSH and kube errors a test met (written by mkh-fixtures)
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::libvirt::Libvirt;
use crate::minikube::MinikubeCluster;

/// How long `minikube logs` may take when a test failed (not in a signal handler, which has
/// nextest's grace period only).
pub(crate) const MINIKUBE_LOGS_DEADLINE: Duration = Duration::from_secs(20);

/// What to collect: plain data, so that a signal handler and the watchdog can collect it too.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct ArtifactPlan {
    pub uri: String,
    /// (domain name, console log where its backend keeps one)
    pub machines: Vec<(String, Option<PathBuf>)>,
    pub networks: Vec<String>,
    pub minikube: Option<MinikubeCluster>,
}

impl ArtifactPlan {
    /// Writes what it can into `dir` (created); every step is best effort: a failure already
    /// happened, and the rest of what explains it still matters. `minikube_logs`: also run
    /// `minikube logs` for at most that long.
    pub(crate) fn collect(&self, dir: &Path, error: Option<&str>, minikube_logs: Option<Duration>) {
        if crate::config::ensure_dir(dir).is_err() {
            return;
        }
        if let Some(error) = error {
            let _ = std::fs::write(dir.join("error.txt"), error);
        }
        for (name, console) in &self.machines {
            if let Some(console) = console {
                let _ = std::fs::copy(console, dir.join(format!("{name}.console.log")));
            }
        }
        if let Some(c) = &self.minikube {
            let _ = std::fs::copy(&c.log, dir.join("minikube.log"));
            if let Some(deadline) = minikube_logs {
                let _ = c.write_logs(&dir.join("minikube-logs.txt"), deadline);
            }
        }
        let Ok(lv) = Libvirt::connect_to(&self.uri) else {
            return;
        };
        if !lv.is_local() {
            // virtlogd wrote these on the libvirt host.
            for (name, _) in &self.machines {
                let text = crate::machine::pool::console_text(&lv, name);
                if !text.is_empty() {
                    let _ = std::fs::write(dir.join(format!("{name}.console.log")), text);
                }
            }
        }
        for (name, _) in &self.machines {
            if let Ok(xml) = lv.domain_xml(name) {
                let _ = std::fs::write(dir.join(format!("{name}.domain.xml")), xml);
            }
        }
        for net in &self.networks {
            if let Ok(leases) = lv.network_leases(net) {
                let _ = std::fs::write(
                    dir.join(format!("{net}.leases.json")),
                    serde_json::to_string_pretty(&leases).unwrap_or_default(),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_holds_what_was_there_and_skips_what_was_not() {
        let tmp = tempfile::tempdir().unwrap();
        let console = tmp.path().join("m.console.log");
        std::fs::write(&console, "boot\n").unwrap();
        let plan = ArtifactPlan {
            uri: "test:///default".into(),
            machines: vec![
                ("m".into(), Some(console)),
                ("gone".into(), Some(tmp.path().join("none"))),
                ("pty".into(), None),
            ],
            networks: vec!["default".into()],
            minikube: None,
        };
        let dir = tmp.path().join("artifacts");
        plan.collect(&dir, Some("it broke"), None);
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        assert_eq!(read("error.txt"), "it broke");
        assert_eq!(read("m.console.log"), "boot\n");
        assert!(!dir.join("gone.console.log").exists());
    }
}
