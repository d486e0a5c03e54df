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
//! Each `[[step]]` holds exactly one key, the step's kind; its table holds the step's fields. The
//! kinds, their fields and their checks are in `steps/`, by family.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use mkh::{MAX_DHCP_LEASE as MAX_LEASE, MIN_DHCP_LEASE as MIN_LEASE};

use crate::error::{Error, Result};
use crate::steps::{Step, StepChecker};

/// Files larger than this are refused before they are parsed.
pub const MAX_FILE_BYTES: usize = 256 * 1024;
/// More steps than this are refused.
pub const MAX_STEPS: usize = 500;
const MAX_MACHINES: u32 = 8;
const MAX_NODES: u32 = 9;

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

/// Checks a parsed file: its environment here, each step by its family.
pub(crate) struct Checker<'a> {
    path: &'a Path,
    bytes: &'a [u8],
}

impl Checker<'_> {
    /// An error at `span` of the file.
    pub(crate) fn err<T>(
        &self,
        span: std::ops::Range<usize>,
        problem: impl Into<String>,
    ) -> Result<T> {
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
        let mut step_checker = StepChecker::new(self, &environment);
        let mut steps = Vec::new();
        for step in raw.step {
            let line = position(self.bytes, step.span().start).0;
            step.get_ref().check(&mut step_checker)?;
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
