//! The scenario file format (TOML), parsed and checked whole before anything is created. Every
//! error names the file, line and column and says what was expected.
//!
//! ```toml
//! description = "what it reproduces"
//! link = "https://…"                      # optional
//!
//! [environment]                           # optional
//! backend = "builtin"                     # or "minikube"
//! machines = 2                            # built-in guest only (1-8)
//!
//! [[step]]
//! expect-reachable = { from = "host", to = "m1", network = "private" }
//! ```
//!
//! Each `[[step]]` holds exactly one key, the step's kind; its table holds the step's fields.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::Deserialize;
use toml::Spanned;

use mkh::{NetworkRole, MAX_DHCP_LEASE as MAX_LEASE, MIN_DHCP_LEASE as MIN_LEASE};

use crate::error::{Error, Result};

/// Files larger than this are refused before they are parsed.
pub const MAX_FILE_BYTES: usize = 256 * 1024;
/// More steps than this are refused.
pub const MAX_STEPS: usize = 500;
const MAX_MACHINES: u32 = 8;
const MAX_NODES: u32 = 9;
/// The longest wait, delay or sleep a step may ask for, in seconds.
const MAX_SECONDS: f64 = 3600.0;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    description: Spanned<String>,
    #[serde(default)]
    link: Option<String>,
    #[serde(default)]
    environment: Option<Spanned<EnvironmentSpec>>,
    #[serde(default)]
    step: Vec<Spanned<Step>>,
}

/// Which backend a scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// mkh's own guest.
    #[default]
    Builtin,
    /// `minikube start --driver=kvm2` (or the stand-in the settings name).
    Minikube,
}

/// The `[environment]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentSpec {
    /// Which backend.
    #[serde(default)]
    pub backend: BackendChoice,
    /// How many built-in guests (`m1`, `m2`, …).
    pub machines: Option<Spanned<u32>>,
    /// How many minikube nodes.
    pub nodes: Option<Spanned<u32>>,
    /// Memory per machine, MiB.
    pub memory_mib: Option<Spanned<u32>>,
    /// vCPUs per machine.
    pub cpus: Option<Spanned<u32>>,
    /// Extra `minikube start` arguments.
    #[serde(default)]
    pub minikube_args: Option<Spanned<Vec<Spanned<String>>>>,
    /// DHCP lease time of both networks, seconds (default: dnsmasq's, one hour).
    pub dhcp_lease_s: Option<Spanned<u32>>,
}

impl EnvironmentSpec {
    /// How many machines the scenario names (`m1` … `mN`).
    pub fn machine_count(&self) -> u32 {
        match self.backend {
            BackendChoice::Builtin => self.machines.as_ref().map_or(1, |m| *m.get_ref()),
            BackendChoice::Minikube => self.nodes.as_ref().map_or(1, |m| *m.get_ref()),
        }
    }
}

/// A machine: `m1` … `mN`, in the order the environment makes them.
pub type MachineRef = Spanned<String>;

/// Where a reachability check starts: the host or a machine.
pub type Origin = Spanned<String>;

/// One step of a scenario. Steps that change something are verbs; checks start with
/// `expect-`, and those with `within_s` retry until they hold or the deadline passes.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Step {
    /// Starts a stopped machine (`machine = "all"`: every one).
    Start(Machines),
    /// Stops a machine (power off).
    Stop(Machines),
    /// Stops and starts a machine.
    Restart(Machines),
    /// Replaces a machine by a new one of the same name and hostname, with new MACs (what
    /// minikube does when it recreates a VM).
    Recreate(Recreate),
    /// Sets one NIC's link down or up.
    Link(Link),
    /// Stops one of the environment's networks (it stays defined).
    DestroyNetwork(OnNetwork),
    /// Starts a stopped network again.
    StartNetwork(OnNetwork),
    /// Cuts two machines off from each other on one network (both still reach the rest).
    Partition(Pair),
    /// Undoes a partition.
    Heal(Pair),
    /// Impairs one NIC's outgoing traffic.
    Impair(Impair),
    /// Removes a NIC's impairment.
    ClearImpairment(Nic),
    /// Asks a machine's DHCP client to renew its lease on one NIC, or to release it.
    Dhcp(Dhcp),
    /// Drops what reaches a machine's NIC on one port, or from one peer.
    Block(Block),
    /// Undoes a block.
    Unblock(Block),
    /// Runs a command over SSH, optionally checking its status and output.
    Run(Run),
    /// Remembers a machine's IP on a network under a name.
    RememberIp(RememberIp),
    /// Checks a machine's IP on a network.
    ExpectIp(ExpectIp),
    /// Checks that a machine answers ping (or a TCP connection, with `tcp_port`) over a network.
    ExpectReachable(Reach),
    /// Checks that it does not.
    ExpectUnreachable(Reach),
    /// Checks that SSH works over a network.
    ExpectSsh(Nic),
    /// Checks that asking for a machine's IP fails, with a message matching a pattern.
    ExpectIpFails(IpFails),
    /// Applies a Kubernetes object (server-side apply) to the cluster's API server.
    Apply(Apply),
    /// Checks a Service's ClusterIP.
    ExpectClusterIp(ClusterIp),
    /// Waits.
    Sleep(Sleep),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Machines {
    pub machine: MachineRef,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Recreate {
    pub machine: MachineRef,
    /// Wait until the new machine answers SSH on both networks (default); `false`: go on once
    /// its domain runs, while it boots.
    #[serde(default = "yes")]
    pub wait: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Link {
    pub machine: MachineRef,
    pub network: NetworkRole,
    /// `true`: up, `false`: down.
    pub up: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct OnNetwork {
    pub network: NetworkRole,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Pair {
    pub network: NetworkRole,
    pub machines: Spanned<Vec<MachineRef>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Nic {
    pub machine: MachineRef,
    pub network: NetworkRole,
    #[serde(default)]
    pub within_s: Option<Spanned<f64>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Impair {
    pub machine: MachineRef,
    pub network: NetworkRole,
    pub delay_ms: Option<Spanned<u32>>,
    pub jitter_ms: Option<Spanned<u32>>,
    pub loss_percent: Option<Spanned<f64>>,
    pub corrupt_percent: Option<Spanned<f64>>,
    pub rate_kbit: Option<Spanned<u32>>,
}

/// What to ask of a DHCP client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DhcpAction {
    /// Renew the lease now (or obtain one anew after a release).
    Renew,
    /// Give the lease back: the host then sees no lease at once.
    Release,
    /// Stop renewing, keep the address, and wait until the host's lease has expired
    /// (`[environment] dhcp_lease_s` sets how long that takes). `renew` resumes.
    Expire,
}

impl DhcpAction {
    /// As written in a file.
    pub fn as_str(self) -> &'static str {
        match self {
            DhcpAction::Renew => "renew",
            DhcpAction::Release => "release",
            DhcpAction::Expire => "expire",
        }
    }

    /// What the guest's DHCP service (`/run/mkh/dhcp-request`) is asked.
    pub fn guest_verb(self) -> &'static str {
        match self {
            DhcpAction::Expire => "hold",
            other => other.as_str(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Dhcp {
    pub machine: MachineRef,
    pub network: NetworkRole,
    pub action: DhcpAction,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Block {
    pub machine: MachineRef,
    pub network: NetworkRole,
    /// A TCP port of the machine.
    pub port: Option<Spanned<u16>>,
    /// `host` or a machine: everything from it.
    pub peer: Option<Origin>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Run {
    pub machine: MachineRef,
    #[serde(default = "nat")]
    pub network: NetworkRole,
    pub command: Spanned<String>,
    /// The exit status it must end with (default: not checked).
    pub status: Option<Spanned<i64>>,
    /// A regular expression its standard output must match.
    pub stdout: Option<Spanned<String>>,
    /// Remember its standard output (trimmed) under this name.
    pub remember: Option<Spanned<String>>,
    pub within_s: Option<Spanned<f64>>,
}

fn nat() -> NetworkRole {
    NetworkRole::Nat
}

/// How an IP is looked up in the network's DHCP leases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lookup {
    /// The lease of the machine's MAC (what mkh does).
    #[default]
    Mac,
    /// The first lease with the machine's hostname (what a lookup by name finds).
    Hostname,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RememberIp {
    pub machine: MachineRef,
    pub network: NetworkRole,
    #[serde(default)]
    pub by: Lookup,
    #[serde(rename = "as")]
    pub name: Spanned<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct ExpectIp {
    pub machine: MachineRef,
    pub network: NetworkRole,
    #[serde(default)]
    pub by: Lookup,
    /// A CIDR it lies in.
    #[serde(rename = "in")]
    pub within: Option<Spanned<String>>,
    /// A remembered IP it equals.
    pub equals: Option<Spanned<String>>,
    /// A remembered IP it differs from.
    pub differs: Option<Spanned<String>>,
    pub within_s: Option<Spanned<f64>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Reach {
    /// `host` or a machine.
    #[serde(default = "host")]
    pub from: Origin,
    pub to: MachineRef,
    pub network: NetworkRole,
    /// Probe with a TCP connection to this port instead of ping.
    pub tcp_port: Option<Spanned<u16>>,
    pub within_s: Option<Spanned<f64>>,
}

fn host() -> Origin {
    Spanned::new(0..0, "host".into())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct IpFails {
    pub machine: MachineRef,
    pub network: NetworkRole,
    /// A regular expression the error must match.
    pub matches: Spanned<String>,
    pub within_s: Option<Spanned<f64>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Apply {
    /// The object, as a TOML table (`apiVersion`, `kind`, `metadata.name`, …).
    pub manifest: Spanned<toml::Table>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct ClusterIp {
    pub service: Spanned<String>,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// A CIDR it lies in.
    #[serde(rename = "in")]
    pub within: Option<Spanned<String>>,
    /// The address it must be.
    pub equals: Option<Spanned<String>>,
    pub within_s: Option<Spanned<f64>>,
}

fn default_namespace() -> String {
    "default".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Sleep {
    pub seconds: Spanned<f64>,
}

/// A checked scenario: every reference resolves, every value is in range.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The file it came from.
    pub file: PathBuf,
    /// What it reproduces.
    pub description: String,
    /// Where the fact or bug is described, if anywhere.
    pub link: Option<String>,
    /// The environment it needs.
    pub environment: EnvironmentSpec,
    /// Its steps, each with its line in the file.
    pub steps: Vec<(usize, Step)>,
}

impl Scenario {
    /// Reads, parses and checks `path`.
    pub fn load(path: &Path) -> Result<Scenario> {
        use std::io::Read;
        // Judged before opening: opening a FIFO would wait for a writer.
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if !meta.is_file() {
            return Err(bad(
                path,
                b"",
                0,
                "not a regular file (a directory, device or FIFO): a scenario is a TOML file"
                    .into(),
            ));
        }
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // At most one byte over the limit: enough to refuse a file that grew meanwhile.
        let mut bytes = Vec::new();
        file.take(MAX_FILE_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(path, e))?;
        if bytes.len() > MAX_FILE_BYTES {
            return Err(bad(
                path,
                b"",
                0,
                format!(
                    "the file is {} bytes, over the {MAX_FILE_BYTES}-byte limit for a scenario; split it",
                    meta.len().max(bytes.len() as u64)
                ),
            ));
        }
        Scenario::parse(path, &bytes)
    }

    /// Parses and checks a scenario's bytes (`path` names it in errors).
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Scenario> {
        // A UTF-8 byte order mark is not part of the text (nor of its columns).
        let bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
        let at = |offset: usize, problem: String| bad(path, bytes, offset, problem);
        if bytes.len() > MAX_FILE_BYTES {
            return Err(at(
                0,
                format!(
                    "the file is {} bytes, over the {MAX_FILE_BYTES}-byte limit for a scenario; split it",
                    bytes.len()
                ),
            ));
        }
        if let Some(nul) = bytes.iter().position(|b| *b == 0) {
            return Err(at(
                nul,
                "a NUL byte: this is a binary file, not a TOML scenario".into(),
            ));
        }
        let text = std::str::from_utf8(bytes).map_err(|e| {
            at(
                e.valid_up_to(),
                "not UTF-8 text: a scenario is a TOML file".into(),
            )
        })?;
        if text.trim().is_empty() {
            return Err(at(
                0,
                "the file is empty: a scenario needs `description = \"...\"` and at least one `[[step]]`".into(),
            ));
        }
        let raw: RawScenario = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            at(offset, plain_words(e.message().trim()))
        })?;
        Checker { path, bytes }.check(raw)
    }
}

fn bad(path: &Path, bytes: &[u8], offset: usize, problem: String) -> Error {
    let (line, column) = position(bytes, offset);
    Error::BadScenario {
        file: path.to_owned(),
        line,
        column,
        problem: one_safe_line(&problem),
    }
}

/// toml's and serde's wording, in the file's terms where they speak of Rust.
fn plain_words(message: &str) -> String {
    if message.starts_with("wanted exactly 1 element") {
        return "a `[[step]]` table holds exactly one key, the step's kind (e.g. `stop = { machine = \"m1\" }`)".into();
    }
    if message.contains("expected a sequence") {
        return format!("{message}: steps are `[[step]]` tables (double brackets)");
    }
    let mut out = message.to_owned();
    for (rust, words) in [
        ("expected u32", "expected a whole number from 0"),
        ("expected u16", "expected a port number, 1 to 65535"),
        ("expected i64", "expected a whole number"),
        ("expected f64", "expected a number"),
        (
            "expected struct EnvironmentSpec",
            "expected the `[environment]` table",
        ),
    ] {
        out = out.replace(rust, words);
    }
    if let Some(i) = out.find(", expected struct ") {
        out.truncate(i);
        out += ", expected a table of the step's fields, e.g. `{ machine = \"m1\" }`";
    }
    out
}

/// Control characters (a terminal's escapes, newlines) shown escaped: a message is one line
/// and cannot rewrite the terminal.
fn one_safe_line(text: &str) -> String {
    text.chars()
        .flat_map(|c| match c {
            '\n' | '\r' | '\t' => vec![' '],
            c if c.is_control() => c.escape_default().collect(),
            c => vec![c],
        })
        .collect()
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn position(bytes: &[u8], offset: usize) -> (usize, usize) {
    let before = &bytes[..offset.min(bytes.len())];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (line, column)
}

struct Checker<'a> {
    path: &'a Path,
    bytes: &'a [u8],
}

impl Checker<'_> {
    fn err<T>(&self, span: std::ops::Range<usize>, problem: impl Into<String>) -> Result<T> {
        Err(bad(self.path, self.bytes, span.start, problem.into()))
    }

    fn check(&self, raw: RawScenario) -> Result<Scenario> {
        if raw.description.get_ref().trim().is_empty() {
            return self.err(
                raw.description.span(),
                "`description` is empty: say what the scenario reproduces",
            );
        }
        let environment = raw.environment.map(Spanned::into_inner).unwrap_or_default();
        self.check_environment(&environment)?;
        if raw.step.is_empty() {
            return self.err(
                0..0,
                "no steps: add at least one `[[step]]` table, e.g. `expect-ssh = { machine = \"m1\", network = \"nat\" }`",
            );
        }
        if raw.step.len() > MAX_STEPS {
            return self.err(
                raw.step[MAX_STEPS].span(),
                format!("more than {MAX_STEPS} steps; split the scenario"),
            );
        }
        let mut remembered = BTreeSet::new();
        let mut steps = Vec::new();
        for step in raw.step {
            let line = position(self.bytes, step.span().start).0;
            self.check_step(step.get_ref(), &environment, &mut remembered)?;
            steps.push((line, step.into_inner()));
        }
        Ok(Scenario {
            file: self.path.to_owned(),
            description: raw.description.into_inner(),
            link: raw.link,
            environment,
            steps,
        })
    }

    fn check_environment(&self, e: &EnvironmentSpec) -> Result<()> {
        let builtin = e.backend == BackendChoice::Builtin;
        if let Some(m) = &e.machines {
            if !builtin {
                return self.err(
                    m.span(),
                    "`machines` is for the built-in guest; a minikube cluster has `nodes`",
                );
            }
            self.range(m, 1, MAX_MACHINES, "machines")?;
        }
        if let Some(n) = &e.nodes {
            if builtin {
                return self.err(
                    n.span(),
                    "`nodes` is for `backend = \"minikube\"`; the built-in guest has `machines`",
                );
            }
            self.range(n, 1, MAX_NODES, "nodes")?;
        }
        if let Some(m) = &e.memory_mib {
            self.range(m, 128, 1 << 20, "memory_mib")?;
        }
        if let Some(c) = &e.cpus {
            self.range(c, 1, 256, "cpus")?;
        }
        if let Some(l) = &e.dhcp_lease_s {
            // dnsmasq's shortest lease is two minutes; see net::spec::MIN_LEASE.
            let (min, max) = (MIN_LEASE.as_secs() as u32, MAX_LEASE.as_secs() as u32);
            self.range(l, min, max, "dhcp_lease_s")?;
        }
        if let Some(args) = &e.minikube_args {
            if builtin {
                return self.err(
                    args.span(),
                    "`minikube_args` needs `backend = \"minikube\"`",
                );
            }
            for arg in args.get_ref() {
                if let Err(e) = mkh::MinikubeOptions::check_extra_args(&[arg.get_ref().clone()]) {
                    return self.err(arg.span(), e.to_string());
                }
            }
        }
        Ok(())
    }

    fn range(&self, v: &Spanned<u32>, min: u32, max: u32, what: &str) -> Result<()> {
        let n = *v.get_ref();
        if (min..=max).contains(&n) {
            Ok(())
        } else {
            self.err(v.span(), format!("`{what}` = {n}: expected {min} to {max}"))
        }
    }

    fn machine(&self, m: &MachineRef, count: u32, all_allowed: bool) -> Result<()> {
        let name = m.get_ref().as_str();
        if all_allowed && name == "all" {
            return Ok(());
        }
        let known = name
            .strip_prefix('m')
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| (1..=count).contains(&n) && name == format!("m{n}"));
        if known {
            return Ok(());
        }
        let names: Vec<String> = (1..=count).map(|i| format!("m{i}")).collect();
        self.err(
            m.span(),
            format!(
                "no machine {name:?}: this scenario has {}{}",
                names.join(", "),
                if all_allowed { ", or \"all\"" } else { "" }
            ),
        )
    }

    fn origin(&self, o: &Origin, count: u32) -> Result<()> {
        if o.get_ref() == "host" {
            Ok(())
        } else {
            let machines: Vec<String> = (1..=count).map(|i| format!("m{i}")).collect();
            self.machine(o, count, false).or_else(|_| {
                self.err(
                    o.span(),
                    format!(
                        "{:?}: expected \"host\" or a machine of this scenario ({})",
                        o.get_ref(),
                        machines.join(", ")
                    ),
                )
            })
        }
    }

    fn seconds(&self, s: &Option<Spanned<f64>>, what: &str) -> Result<()> {
        let Some(s) = s else { return Ok(()) };
        let v = *s.get_ref();
        if v.is_finite() && v > 0.0 && v <= MAX_SECONDS {
            Ok(())
        } else {
            self.err(
                s.span(),
                format!("`{what}` = {v}: expected seconds, more than 0 and at most {MAX_SECONDS}"),
            )
        }
    }

    fn percent(&self, p: &Option<Spanned<f64>>, what: &str) -> Result<()> {
        let Some(p) = p else { return Ok(()) };
        let v = *p.get_ref();
        if v.is_finite() && (0.0..=100.0).contains(&v) {
            Ok(())
        } else {
            self.err(
                p.span(),
                format!("`{what}` = {v}: expected a percentage, 0 to 100"),
            )
        }
    }

    fn name_known(&self, n: &Spanned<String>, remembered: &BTreeSet<String>) -> Result<()> {
        if remembered.contains(n.get_ref()) {
            Ok(())
        } else {
            let known = if remembered.is_empty() {
                "nothing is remembered before this step".to_owned()
            } else {
                format!(
                    "remembered so far: {}",
                    remembered.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            };
            self.err(
                n.span(),
                format!(
                    "{:?} was never remembered ({known}); remember it first with `remember-ip` or `run` … `remember`",
                    n.get_ref()
                ),
            )
        }
    }

    fn new_name(&self, n: &Spanned<String>, remembered: &mut BTreeSet<String>) -> Result<()> {
        let name = n.get_ref();
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return self.err(
                n.span(),
                format!("{name:?}: a name is 1-64 letters, digits, `_` or `-`"),
            );
        }
        remembered.insert(name.clone());
        Ok(())
    }

    fn regex(&self, r: &Spanned<String>) -> Result<()> {
        match regex::Regex::new(r.get_ref()) {
            Ok(_) => Ok(()),
            Err(e) => self.err(
                r.span(),
                format!(
                    "not a regular expression: {}",
                    e.to_string().lines().last().unwrap_or("").trim()
                ),
            ),
        }
    }

    fn check_step(
        &self,
        step: &Step,
        environment: &EnvironmentSpec,
        remembered: &mut BTreeSet<String>,
    ) -> Result<()> {
        let count = environment.machine_count();
        let backend = environment.backend;
        match step {
            Step::Start(m) | Step::Stop(m) | Step::Restart(m) => {
                self.machine(&m.machine, count, true)
            }
            Step::Recreate(m) => {
                if backend == BackendChoice::Minikube {
                    return self.err(m.machine.span(), "`recreate` is for the built-in guest");
                }
                self.machine(&m.machine, count, false)
            }
            Step::Link(l) => self.machine(&l.machine, count, false),
            Step::Dhcp(d) => {
                if backend == BackendChoice::Minikube {
                    return self.err(d.machine.span(), "`dhcp` is for the built-in guest");
                }
                if d.action == DhcpAction::Expire && environment.dhcp_lease_s.is_none() {
                    return self.err(
                        d.machine.span(),
                        "`action = \"expire\"` waits out the lease time: set `dhcp_lease_s` in `[environment]` (at least 120, dnsmasq's shortest lease)",
                    );
                }
                self.machine(&d.machine, count, false)
            }
            Step::DestroyNetwork(_) | Step::StartNetwork(_) => Ok(()),
            Step::Partition(p) | Step::Heal(p) => {
                let list = p.machines.get_ref();
                if list.len() != 2 || list[0].get_ref() == list[1].get_ref() {
                    return self.err(
                        p.machines.span(),
                        "`machines`: expected two different machines, e.g. [\"m1\", \"m2\"]",
                    );
                }
                list.iter().try_for_each(|m| self.machine(m, count, false))
            }
            Step::Impair(i) => {
                self.machine(&i.machine, count, false)?;
                let delay = i.delay_ms.as_ref().map(|d| *d.get_ref());
                for (v, what) in [(&i.delay_ms, "delay_ms"), (&i.jitter_ms, "jitter_ms")] {
                    if let Some(v) = v {
                        if *v.get_ref() > 60_000 {
                            return self.err(
                                v.span(),
                                format!("`{what}` = {}: expected at most 60000 ms", v.get_ref()),
                            );
                        }
                    }
                }
                if let (Some(j), None) = (&i.jitter_ms, delay) {
                    return self.err(j.span(), "`jitter_ms` needs a `delay_ms` to vary");
                }
                self.percent(&i.loss_percent, "loss_percent")?;
                self.percent(&i.corrupt_percent, "corrupt_percent")?;
                if let Some(r) = &i.rate_kbit {
                    if !(8..=10_000_000).contains(r.get_ref()) {
                        return self.err(
                            r.span(),
                            format!("`rate_kbit` = {}: expected 8 to 10000000", r.get_ref()),
                        );
                    }
                }
                let positive =
                    |v: &Option<Spanned<f64>>| v.as_ref().is_some_and(|v| *v.get_ref() > 0.0);
                let any = delay.is_some_and(|d| d > 0)
                    || positive(&i.loss_percent)
                    || positive(&i.corrupt_percent)
                    || i.rate_kbit.is_some();
                if any {
                    Ok(())
                } else {
                    self.err(
                        i.machine.span(),
                        "an impairment needs at least one effect: delay_ms, loss_percent or corrupt_percent above 0, or a rate_kbit",
                    )
                }
            }
            Step::ClearImpairment(n) | Step::ExpectSsh(n) => {
                self.machine(&n.machine, count, false)?;
                self.seconds(&n.within_s, "within_s")
            }
            Step::Block(b) | Step::Unblock(b) => {
                self.machine(&b.machine, count, false)?;
                match (&b.port, &b.peer) {
                    (Some(p), None) if *p.get_ref() == 0 => {
                        self.err(p.span(), "`port` = 0: expected 1 to 65535")
                    }
                    (Some(_), None) => Ok(()),
                    (None, Some(peer)) => {
                        self.origin(peer, count)?;
                        if peer.get_ref() == b.machine.get_ref() {
                            return self.err(peer.span(), "a machine cannot block itself");
                        }
                        Ok(())
                    }
                    _ => self.err(
                        b.machine.span(),
                        "expected exactly one of `port` (a TCP port) or `peer` (\"host\" or a machine)",
                    ),
                }
            }
            Step::Run(r) => {
                self.machine(&r.machine, count, false)?;
                if r.command.get_ref().trim().is_empty() {
                    return self.err(r.command.span(), "`command` is empty");
                }
                if let Some(s) = &r.status {
                    if !(0..=255).contains(s.get_ref()) {
                        return self.err(
                            s.span(),
                            format!(
                                "`status` = {}: expected an exit status, 0 to 255",
                                s.get_ref()
                            ),
                        );
                    }
                }
                if let Some(p) = &r.stdout {
                    self.regex(p)?;
                }
                self.seconds(&r.within_s, "within_s")?;
                if let Some(n) = &r.remember {
                    self.new_name(n, remembered)?;
                }
                Ok(())
            }
            Step::RememberIp(r) => {
                self.machine(&r.machine, count, false)?;
                self.new_name(&r.name, remembered)
            }
            Step::ExpectIp(e) => {
                self.machine(&e.machine, count, false)?;
                self.seconds(&e.within_s, "within_s")?;
                match (&e.within, &e.equals, &e.differs) {
                    (Some(cidr), None, None) => self.cidr(cidr),
                    (None, Some(n), None) | (None, None, Some(n)) => self.name_known(n, remembered),
                    _ => self.err(
                        e.machine.span(),
                        "expected exactly one of `in` (a CIDR), `equals` or `differs` (a remembered name)",
                    ),
                }
            }
            Step::ExpectReachable(r) | Step::ExpectUnreachable(r) => {
                self.origin(&r.from, count)?;
                self.machine(&r.to, count, false)?;
                if r.from.get_ref() == r.to.get_ref() {
                    return self.err(r.to.span(), "`from` and `to` are the same machine");
                }
                if let Some(p) = &r.tcp_port {
                    if *p.get_ref() == 0 {
                        return self.err(p.span(), "`tcp_port` = 0: expected 1 to 65535");
                    }
                }
                self.seconds(&r.within_s, "within_s")
            }
            Step::ExpectIpFails(f) => {
                self.machine(&f.machine, count, false)?;
                self.seconds(&f.within_s, "within_s")?;
                self.regex(&f.matches)
            }
            Step::Apply(a) => {
                self.needs_api_server(a.manifest.span(), backend)?;
                let m = a.manifest.get_ref();
                for key in ["apiVersion", "kind"] {
                    if !m.get(key).is_some_and(toml::Value::is_str) {
                        return self.err(
                            a.manifest.span(),
                            format!("the manifest has no `{key}` string"),
                        );
                    }
                }
                let named = m
                    .get("metadata")
                    .and_then(|md| md.get("name"))
                    .is_some_and(toml::Value::is_str);
                if named {
                    Ok(())
                } else {
                    self.err(
                        a.manifest.span(),
                        "the manifest has no `metadata.name` string",
                    )
                }
            }
            Step::ExpectClusterIp(c) => {
                self.needs_api_server(c.service.span(), backend)?;
                self.seconds(&c.within_s, "within_s")?;
                match (&c.within, &c.equals) {
                    (Some(cidr), None) => self.cidr(cidr),
                    (None, Some(ip)) => match ip.get_ref().parse::<std::net::Ipv4Addr>() {
                        Ok(_) => Ok(()),
                        Err(_) => self.err(
                            ip.span(),
                            format!("`equals` = {:?}: expected an IPv4 address", ip.get_ref()),
                        ),
                    },
                    _ => self.err(
                        c.service.span(),
                        "expected exactly one of `in` (a CIDR) or `equals` (an address)",
                    ),
                }
            }
            Step::Sleep(s) => self.seconds(&Some(s.seconds.clone()), "seconds"),
        }
    }

    fn needs_api_server(&self, span: std::ops::Range<usize>, backend: BackendChoice) -> Result<()> {
        if backend == BackendChoice::Minikube {
            Ok(())
        } else {
            self.err(
                span,
                "this step needs a Kubernetes API server: set `backend = \"minikube\"` in `[environment]`",
            )
        }
    }

    fn cidr(&self, cidr: &Spanned<String>) -> Result<()> {
        match cidr.get_ref().parse::<Ipv4Net>() {
            Ok(_) => Ok(()),
            Err(_) => self.err(
                cidr.span(),
                format!(
                    "`in` = {:?}: expected an IPv4 CIDR such as \"10.96.0.0/12\"",
                    cidr.get_ref()
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Scenario> {
        Scenario::parse(Path::new("s.toml"), text.as_bytes())
    }

    /// The error's position and message, for a file that must be refused.
    fn refused(text: &str) -> (usize, usize, String) {
        match parse(text) {
            Err(Error::BadScenario {
                file,
                line,
                column,
                problem,
            }) => {
                assert_eq!(file, Path::new("s.toml"));
                (line, column, problem)
            }
            other => panic!("{text:?} was not refused as a scenario: {other:?}"),
        }
    }

    const HEAD: &str = "description = \"d\"\n";

    #[test]
    fn a_good_file_parses_with_each_step_s_line() {
        let s = parse(&format!(
            "{HEAD}[environment]\nmachines = 2\n\n[[step]]\nremember-ip = {{ machine = \"m2\", network = \"nat\", as = \"a\" }}\n\n[[step]]\nexpect-ip = {{ machine = \"m1\", network = \"nat\", differs = \"a\" }}\n"
        ))
        .unwrap();
        assert_eq!(s.environment.machine_count(), 2);
        let lines: Vec<usize> = s.steps.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, [5, 8]);
    }

    #[test]
    fn malformed_files_are_refused_each_with_its_own_position_and_reason() {
        let step = |body: &str| format!("{HEAD}[[step]]\n{body}\n");
        // (file, the text the error must point at, what it must say)
        let cases: Vec<(String, &str, &str)> = vec![
            ("description = \n".into(), "", "string values must be quoted"),
            (step("fly = { machine = \"m1\" }"), "fly", "unknown variant `fly`"),
            (step("stop = { }"), "{ }", "missing field `machine`"),
            (step("stop = { machine = 1 }"), "1 }", "invalid type: integer `1`, expected a string"),
            (step("stop = { machine = \"m1\", speed = 3 }"), "speed", "unknown field `speed`"),
            (step("expect-ip = { machine = \"m1\", network = \"nat\", in = \"10.0.0.0/33\" }"), "\"10.0.0.0/33\"", "expected an IPv4 CIDR"),
            (step("impair = { machine = \"m1\", network = \"nat\", delay_ms = -5 }"), "-5", "expected a whole number from 0"),
            (step("impair = { machine = \"m1\", network = \"nat\", delay_ms = 99999999 }"), "99999999", "at most 60000"),
            (step("impair = { machine = \"m1\", network = \"nat\", loss_percent = nan }"), "nan", "a percentage"),
            (step("link = { machine = \"m1\", network = \"dmz\", up = true }"), "\"dmz\"", "unknown variant `dmz`, expected `nat` or `private`"),
            (step("expect-ip = { machine = \"m1\", network = \"nat\", equals = \"ghost\" }"), "\"ghost\"", "\"ghost\" was never remembered"),
            (step("stop = { machine = \"m3\" }"), "\"m3\"", "no machine \"m3\": this scenario has m1, or \"all\""),
            (step("sleep = { seconds = inf }"), "inf", "expected seconds"),
            (step("run = { machine = \"m1\", command = \"true\", stdout = \"(\" }"), "\"(\"", "not a regular expression"),
            (step("block = { machine = \"m1\", network = \"nat\" }"), "\"m1\", network", "exactly one of `port`"),
            (step("partition = { network = \"private\", machines = [\"m1\", \"m1\"] }"), "[\"m1\", \"m1\"]", "two different machines"),
            (format!("{HEAD}[environment]\nmachines = 0\n[[step]]\nstop = {{ machine = \"m1\" }}\n"), "0", "expected 1 to 8"),
            (format!("{HEAD}[environment]\nnodes = 2\n[[step]]\nstop = {{ machine = \"m1\" }}\n"), "2", "`nodes` is for `backend = \"minikube\"`"),
            (format!("{HEAD}[environment]\nbackend = \"minikube\"\nminikube_args = [\"--driver=docker\"]\n[[step]]\nstop = {{ machine = \"m1\" }}\n"), "\"--driver=docker\"", "--driver=kvm2"),
            (step("expect-cluster-ip = { service = \"kubernetes\", equals = \"10.96.0.1\" }"), "\"kubernetes\"", "needs a Kubernetes API server"),
            (HEAD.into(), "description", "no steps"),
            (step("dhcp = { machine = \"m1\", network = \"private\", action = \"expire\" }"), "\"m1\"", "set `dhcp_lease_s`"),
            (format!("{HEAD}[environment]\ndhcp_lease_s = 60\n[[step]]\nstop = {{ machine = \"m1\" }}\n"), "60", "expected 120 to 86400"),
            (step("impair = { machine = \"m1\", network = \"nat\", delay_ms = 0, loss_percent = 0 }"), "\"m1\"", "at least one effect"),
            ("\u{feff}description = 1\n".into(), "1", "expected a string"),
            (format!("{HEAD}[[step]]\nstop = {{ machine = \"m1\" }}\nstart = {{ machine = \"m1\" }}\n"), "[[step]]", "holds exactly one key"),
            (step("stop = \"m1\""), "\"m1\"", "expected a table of the step's fields"),
            (step("stop = { machine = \"m1\\u001b[2J\" }"), "\"m1", "\\u{1b}[2J"),
            ("   \n\n".into(), "   ", "the file is empty"),
            ("[[step]]\nstop = { machine = \"m1\" }\n".into(), "[[step]]", "missing field `description`"),
            ("description = \"x\"\nextra = 1\n[[step]]\nstop = { machine = \"m1\" }\n".into(), "extra", "unknown field `extra`"),
        ];
        for (text, token, needle) in &cases {
            let (line, column, problem) = refused(text);
            assert!(
                problem.contains(needle),
                "{text:?}: {problem:?} lacks {needle:?}"
            );
            // Columns as an editor shows them: a byte order mark is not one.
            let at: String = text
                .trim_start_matches('\u{feff}')
                .lines()
                .nth(line - 1)
                .unwrap_or("")
                .chars()
                .skip(column - 1)
                .collect();
            assert!(
                at.starts_with(token),
                "{text:?}: {line}:{column} points at {at:?}, not {token:?}"
            );
        }
        assert!(cases.len() >= 12);
    }

    #[test]
    fn binary_and_huge_files_are_refused_before_parsing() {
        let binary = b"description = \"x\"\n\x00\x01\x02";
        match Scenario::parse(Path::new("b.toml"), binary) {
            Err(Error::BadScenario {
                line,
                column,
                problem,
                ..
            }) => {
                assert_eq!((line, column), (2, 1));
                assert!(problem.contains("binary file"), "{problem}");
            }
            other => panic!("{other:?}"),
        }
        let latin1 = b"description = \"caf\xe9\"\n";
        let e = Scenario::parse(Path::new("l.toml"), latin1).unwrap_err();
        assert!(e.to_string().contains("l.toml:1:19: not UTF-8"), "{e}");
        let huge = format!("{HEAD}# {}\n", "x".repeat(MAX_FILE_BYTES));
        let e = parse(&huge).unwrap_err();
        assert!(e.to_string().contains("over the 262144-byte limit"), "{e}");
    }

    #[test]
    fn positions_count_characters_not_bytes() {
        assert_eq!(position("é = 1\nab".as_bytes(), 9), (2, 3));
        assert_eq!(position(b"", 0), (1, 1));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

        #[test]
        fn no_input_makes_the_parser_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let _ = Scenario::parse(Path::new("p.toml"), &bytes);
        }

        #[test]
        fn no_step_shaped_input_makes_the_parser_panic(
            kind in "(stop|start|impair|block|expect-ip|run|partition|sleep|link|fly)",
            key in "(machine|network|delay_ms|loss_percent|port|peer|in|equals|seconds|machines|up|x)",
            value in "(\"m1\"|\"m9\"|\"nat\"|-1|0|1e400|nan|inf|\\[\\]|\\[\"m1\", \"m2\"\\]|true|\"10.0.0.0/8\"|\"\\(\")",
        ) {
            let text = format!("description = \"d\"\n[[step]]\n{kind} = {{ {key} = {value} }}\n");
            let _ = Scenario::parse(Path::new("p.toml"), text.as_bytes());
        }
    }
}
