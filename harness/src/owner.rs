//! Who owns a libvirt object. mkh writes an [`Owner`] into the `<metadata>` of every network and
//! domain it creates, and counts an object as its own only when that metadata says so. The
//! process identity is pid + start time + boot id, so a reused pid or a reboot is never mistaken
//! for the owner.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::xml::{elements, escape};

/// The XML namespace of mkh's owner metadata; its presence is what makes an object mkh's.
pub const OWNER_NS: &str = "urn:x-mkh:owner:1";
/// The prefix used when writing; readers resolve the namespace and accept any prefix.
pub const OWNER_PREFIX: &str = "mkh";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
/// Who removes an environment.
pub enum OwnerKind {
    /// Lives as long as the process that made it; the reaper removes it once that process is gone.
    Process,
    /// Outlives the command that made it (`mkh up`); removed by `mkh down` or `mkh reap --all`.
    Cli,
}

impl OwnerKind {
    /// `process` or `cli`.
    pub fn as_str(self) -> &'static str {
        match self {
            OwnerKind::Process => "process",
            OwnerKind::Cli => "cli",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "process" => Some(OwnerKind::Process),
            "cli" => Some(OwnerKind::Cli),
            _ => None,
        }
    }
}

/// Identity of a process on a host, as far as liveness goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessIdentity {
    /// The host name.
    pub host: String,
    /// The host's boot id: a reboot ends every process.
    pub boot_id: String,
    /// The process id.
    pub pid: u32,
    /// Start time of the process in clock ticks since boot (field 22 of `/proc/<pid>/stat`).
    pub start_time: u64,
}

/// The owner record every object of mkh's carries in its `<metadata>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// The process that owns it.
    #[serde(flatten)]
    pub process: ProcessIdentity,
    /// `MKH_RUN_ID`, else `run_id` in `mkh.toml`, else `NEXTEST_RUN_ID`, else an id of this
    /// process ([`crate::Settings::run_id`]).
    pub run_id: String,
    /// `NEXTEST_TEST_NAME` when present.
    pub test: Option<String>,
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// Process- or CLI-owned.
    pub kind: OwnerKind,
    /// The environment the object belongs to (its name, as `mkh ls` shows it).
    pub env: String,
    /// The environment's directory on the owner's host (keys, console logs), if it has one.
    pub home: Option<String>,
    /// The minikube profile of a minikube-backed environment: its domain is named after it.
    pub profile: Option<String>,
    /// The minikube binary that made the environment, so `mkh down` can run `minikube delete`
    /// with the same one.
    pub minikube: Option<String>,
}

impl Owner {
    /// The `<metadata>` child that marks an object as mkh's.
    pub fn to_metadata_xml(&self) -> String {
        format!(
            "<{p}:owner xmlns:{p}='{ns}' {}/>",
            self.attributes(),
            p = OWNER_PREFIX,
            ns = OWNER_NS
        )
    }

    /// The same element without a namespace, for `virDomainSetMetadata`, which puts it in the
    /// namespace itself (and refuses an element that declares it already).
    pub fn to_bare_element_xml(&self) -> String {
        format!("<owner {}/>", self.attributes())
    }

    fn attributes(&self) -> String {
        let mut attrs = format!(
            "host='{}' boot-id='{}' pid='{}' start-time='{}' run='{}' created='{}' kind='{}' env='{}'",
            escape(&self.process.host),
            escape(&self.process.boot_id),
            self.process.pid,
            self.process.start_time,
            escape(&self.run_id),
            self.created,
            self.kind.as_str(),
            escape(&self.env),
        );
        for (attr, value) in [
            ("test", &self.test),
            ("home", &self.home),
            ("profile", &self.profile),
            ("minikube", &self.minikube),
        ] {
            if let Some(v) = value {
                attrs.push_str(&format!(" {attr}='{}'", escape(v)));
            }
        }
        attrs
    }

    /// Finds mkh's owner metadata in the XML of a network or domain. `None` means the object is
    /// not mkh's (or its metadata is unreadable, which mkh treats the same: hands off).
    pub fn from_object_xml(xml: &str) -> Option<Owner> {
        let els = elements(xml).ok()?;
        let el = els.iter().find(|e| {
            e.namespace.as_deref() == Some(OWNER_NS)
                && e.path.len() == 3
                && e.path[1] == "metadata"
                && e.path[2] == "owner"
        })?;
        Some(Owner {
            process: ProcessIdentity {
                host: el.attr("host")?.to_owned(),
                boot_id: el.attr("boot-id")?.to_owned(),
                pid: el.attr("pid")?.parse().ok()?,
                start_time: el.attr("start-time")?.parse().ok()?,
            },
            run_id: el.attr("run")?.to_owned(),
            test: el.attr("test").map(str::to_owned),
            created: el.attr("created")?.parse().ok()?,
            kind: OwnerKind::parse(el.attr("kind")?)?,
            env: el.attr("env")?.to_owned(),
            home: el.attr("home").map(str::to_owned),
            profile: el.attr("profile").map(str::to_owned),
            minikube: el.attr("minikube").map(str::to_owned),
        })
    }

    /// `object_xml` with its `<metadata>` replaced by this owner's record (mkh's objects carry
    /// nothing else there). `None` if the document has no metadata element.
    pub fn replace_in_object_xml(&self, object_xml: &str) -> Option<String> {
        let start = object_xml.find("<metadata>")?;
        let end = object_xml.find("</metadata>")? + "</metadata>".len();
        Some(format!(
            "{}<metadata>\n    {}\n  </metadata>{}",
            &object_xml[..start],
            self.to_metadata_xml(),
            &object_xml[end..]
        ))
    }

    /// `object_xml` with this owner's record: replacing the one in its `<metadata>`, or in a
    /// `<metadata>` put after its `</name>` (an object made without one, such as the private
    /// network minikube makes again). `None` when it has neither.
    pub fn put_into_object_xml(&self, object_xml: &str) -> Option<String> {
        if let Some(replaced) = self.replace_in_object_xml(object_xml) {
            return Some(replaced);
        }
        let end = object_xml.find("</name>")? + "</name>".len();
        Some(format!(
            "{}\n  <metadata>\n    {}\n  </metadata>{}",
            &object_xml[..end],
            self.to_metadata_xml(),
            &object_xml[end..]
        ))
    }

    /// Whether the owner is still around, judged from this host.
    pub fn liveness(
        &self,
        here: &HostIdentity,
        start_time_of: impl Fn(u32) -> Option<u64>,
    ) -> Liveness {
        let p = &self.process;
        if p.host != here.host {
            return Liveness::Unknown(format!(
                "owner runs on host {:?}, not this one ({:?})",
                p.host, here.host
            ));
        }
        if p.boot_id != here.boot_id {
            return Liveness::Dead(format!(
                "created before this host last booted (boot id {})",
                p.boot_id
            ));
        }
        match start_time_of(p.pid) {
            None => Liveness::Dead(format!("owner pid {} is gone", p.pid)),
            Some(t) if t != p.start_time => Liveness::Dead(format!(
                "pid {} now belongs to another process (started at tick {t}, owner at {})",
                p.pid, p.start_time
            )),
            Some(_) => Liveness::Alive,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    Dead(String),
    /// Cannot be judged from here (another host): never reaped.
    Unknown(String),
}

/// This host as owner metadata names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostIdentity {
    pub host: String,
    pub boot_id: String,
}

impl HostIdentity {
    pub fn current() -> HostIdentity {
        HostIdentity {
            host: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "unknown".into()),
            boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "unknown".into()),
        }
    }
}

/// Start time (clock ticks since boot) of a live process, from `/proc/<pid>/stat`. A zombie
/// (killed, not yet waited for by its parent) is not alive: `None`.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

fn parse_start_time(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // Field 3 (state) is the first after ')', so field 22 (starttime) is the 20th.
    if matches!(fields.next(), Some("Z" | "X" | "x")) {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// Identity of the calling process.
pub fn this_process() -> ProcessIdentity {
    let here = HostIdentity::current();
    let pid = std::process::id();
    ProcessIdentity {
        host: here.host,
        boot_id: here.boot_id,
        pid,
        start_time: process_start_time(pid).unwrap_or(0),
    }
}

/// Writes an owner record file whole or not at all (a temporary file renamed over it): a
/// reader never sees half a record.
pub fn write_record(path: &std::path::Path, owner: &Owner) -> crate::error::Result<()> {
    let text = serde_json::to_string(owner).expect("an owner serialises");
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| crate::error::Error::io(path, e))
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Owner {
    /// An owner record for an object the calling process is about to create.
    pub fn for_new_object(kind: OwnerKind, env: &str, settings: &crate::Settings) -> Owner {
        Owner {
            process: this_process(),
            run_id: settings.run_id.clone(),
            test: settings.test_name.clone(),
            created: now_unix(),
            kind,
            env: env.to_owned(),
            home: None,
            profile: None,
            minikube: None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An owner record of this process, for tests.
    pub(crate) fn sample_owner() -> Owner {
        let mut owner = sample();
        owner.process = this_process();
        owner.test = None;
        owner
    }

    fn sample() -> Owner {
        Owner {
            process: ProcessIdentity {
                host: "runner-1".into(),
                boot_id: "b00t".into(),
                pid: 4242,
                start_time: 777,
            },
            run_id: "run-<1>&'x'".into(),
            test: Some("suite::case_1::<\"quoted\">".into()),
            created: 1_700_000_000,
            kind: OwnerKind::Process,
            env: "mkh-abc123".into(),
            home: Some("/var/tmp/mkh state/<x>".into()),
            profile: Some("mkh-abc123".into()),
            minikube: Some("/opt/mini kube/minikube".into()),
        }
    }

    #[test]
    fn metadata_round_trips_through_an_object_document() {
        let owner = sample();
        let doc = format!(
            "<network><name>x</name><metadata>{}</metadata></network>",
            owner.to_metadata_xml()
        );
        assert_eq!(Owner::from_object_xml(&doc), Some(owner));
    }

    #[test]
    fn metadata_can_be_replaced_in_place() {
        let mut owner = sample();
        let doc = format!(
            "<network><name>x</name><metadata>{}</metadata><bridge name='b'/></network>",
            owner.to_metadata_xml()
        );
        owner.kind = OwnerKind::Cli;
        let new = owner.replace_in_object_xml(&doc).unwrap();
        assert_eq!(Owner::from_object_xml(&new), Some(owner));
        assert!(new.ends_with("<bridge name='b'/></network>"));
    }

    #[test]
    fn metadata_is_found_under_any_prefix_libvirt_chooses() {
        let doc = format!(
            "<domain><metadata><other:owner xmlns:other='{OWNER_NS}' host='h' boot-id='b' pid='1' start-time='2' run='r' created='3' kind='cli' env='e'/></metadata></domain>"
        );
        let owner = Owner::from_object_xml(&doc).unwrap();
        assert_eq!(owner.kind, OwnerKind::Cli);
        assert_eq!(owner.test, None);
    }

    #[test]
    fn objects_without_mkh_metadata_are_not_claimed() {
        // Same element name, other namespace: somebody else's.
        let doc = "<network><metadata><mkh:owner xmlns:mkh='urn:someone-else' host='h' boot-id='b' pid='1' start-time='2' run='r' created='3' kind='cli' env='e'/></metadata></network>";
        assert_eq!(Owner::from_object_xml(doc), None);
        assert_eq!(
            Owner::from_object_xml("<network><name>mkh-x-nat</name></network>"),
            None
        );
        assert_eq!(Owner::from_object_xml("not xml <"), None);
    }

    #[test]
    fn liveness_uses_pid_start_time_and_boot() {
        let owner = sample();
        let here = HostIdentity {
            host: "runner-1".into(),
            boot_id: "b00t".into(),
        };
        assert_eq!(owner.liveness(&here, |_| Some(777)), Liveness::Alive);
        assert!(matches!(owner.liveness(&here, |_| None), Liveness::Dead(_)));
        assert!(matches!(
            owner.liveness(&here, |_| Some(778)),
            Liveness::Dead(_)
        ));
        let rebooted = HostIdentity {
            boot_id: "other".into(),
            ..here.clone()
        };
        assert!(matches!(
            owner.liveness(&rebooted, |_| Some(777)),
            Liveness::Dead(_)
        ));
        let elsewhere = HostIdentity {
            host: "runner-2".into(),
            ..here
        };
        assert!(matches!(
            owner.liveness(&elsewhere, |_| None),
            Liveness::Unknown(_)
        ));
    }

    #[test]
    fn start_time_parses_despite_odd_command_names() {
        let stat =
            "123 (a b) c)) S 1 123 123 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(parse_start_time(stat), Some(98765));
        // A zombie is dead, whatever its start time.
        assert_eq!(parse_start_time(&stat.replace(")) S ", ")) Z ")), None);
        let mine = process_start_time(std::process::id());
        assert!(mine.is_some_and(|t| t > 0));
    }
}
