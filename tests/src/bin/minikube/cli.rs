//! Command-line parsing with pflag/cobra's rules, as far as minikube's users see them:
//! `--flag=value` and `--flag value` for flags with values, `--flag` / `--flag=false` for booleans
//! (a boolean never takes the next word), shorthands `-p NAME`, `-pNAME`, `-p=NAME`, global flags
//! anywhere on the line, `--` ends the flags. Unknown flags are errors (`unknown flag: --x`), as
//! are unknown commands and extra arguments.

use std::fmt;
use std::path::PathBuf;

/// The profile when `-p` is not given.
pub const DEFAULT_PROFILE: &str = "minikube";
/// The only driver the stand-in has.
pub const DRIVER: &str = "kvm2";

/// `--cpus` when not given (the flag's default, "2"). Memory, when not given, is minikube's
/// suggestion for the host (see `preflight::suggested_memory`).
pub const DEFAULT_CPUS: u32 = 2;
/// minikube's default `--disk-size` (20000mb); recorded only: the stand-in's guest has no disk.
pub const DEFAULT_DISK_MB: u32 = 20000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub profile: String,
    pub command: Command,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Start(Box<StartOptions>),
    Stop,
    Delete,
    Ip {
        node: Option<String>,
    },
    Status {
        output: Output,
    },
    SshKey {
        node: Option<String>,
    },
    Logs {
        file: Option<PathBuf>,
        length: usize,
    },
    ProfileList {
        output: Output,
    },
    /// `image load ARG...`: image archives (a path, or `-` for standard input) into every
    /// running node.
    ImageLoad {
        images: Vec<String>,
    },
    Version {
        short: bool,
        output: Output,
    },
    Help,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
}

/// `minikube start` flags. `None` means "not given" (an existing profile keeps its values).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StartOptions {
    pub driver: Option<String>,
    pub kvm_network: Option<String>,
    pub kvm_qemu_uri: Option<String>,
    pub network: Option<String>,
    pub memory_mib: Option<Amount>,
    pub cpus: Option<Amount>,
    pub disk_size_mb: Option<u32>,
    pub kubernetes_version: Option<String>,
    pub container_runtime: Option<String>,
    pub embed_certs: bool,
    pub keep_context: bool,
    pub wait: Vec<String>,
    /// `--force`: run as root, and with less memory or fewer CPUs than minikube's minimums.
    pub force: bool,
    /// `--nodes/-n`: how many nodes (domains `<p>`, `<p>-m02`, ...).
    pub nodes: Option<u32>,
    /// `--ha`: three control-plane nodes.
    pub ha: bool,
    /// `--delete-on-failure`: on a failed start, delete the profile and start once more.
    pub delete_on_failure: bool,
    /// `--no-kubernetes`: the VM and its container runtime only.
    pub no_kubernetes: bool,
}

/// `--memory` and `--cpus` as written: a number (MiB, CPUs), `max`, `no-limit`, or what
/// does not parse (minikube refuses that later, in its order of checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Amount {
    Value(u32),
    Max,
    NoLimit,
    Unparsable(String),
}

impl Amount {
    fn memory(text: &str) -> Amount {
        match text {
            "max" => Amount::Max,
            "no-limit" => Amount::NoLimit,
            t => parse_size_mib(t).map_or_else(|| Amount::Unparsable(t.into()), Amount::Value),
        }
    }

    /// `viper.GetInt` reads what is not a number as 0 (`getCPUCount`, start_flags.go).
    fn cpus(text: &str) -> Amount {
        match text {
            "max" => Amount::Max,
            "no-limit" => Amount::NoLimit,
            t => Amount::Value(t.trim().parse().unwrap_or(0)),
        }
    }
}

/// A command-line mistake: printed as cobra prints it, exit status 14 (`root.go`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arity {
    Bool,
    Value,
}

#[derive(Debug, Clone, Copy)]
struct FlagSpec {
    long: &'static str,
    short: Option<char>,
    arity: Arity,
}

const fn flag(long: &'static str, short: Option<char>, arity: Arity) -> FlagSpec {
    FlagSpec { long, short, arity }
}

/// Flags every command accepts. `--alsologtostderr`, `--logtostderr` and `-v` are accepted and
/// ignored (the stand-in has no klog output).
const GLOBAL_FLAGS: &[FlagSpec] = &[
    flag("profile", Some('p'), Arity::Value),
    flag("alsologtostderr", None, Arity::Bool),
    flag("logtostderr", None, Arity::Bool),
    flag("v", Some('v'), Arity::Value),
    flag("help", Some('h'), Arity::Bool),
];

const START_FLAGS: &[FlagSpec] = &[
    flag("driver", Some('d'), Arity::Value),
    flag("kvm-network", None, Arity::Value),
    flag("kvm-qemu-uri", None, Arity::Value),
    flag("network", None, Arity::Value),
    flag("memory", Some('m'), Arity::Value),
    flag("cpus", None, Arity::Value),
    flag("disk-size", None, Arity::Value),
    flag("kubernetes-version", None, Arity::Value),
    flag("container-runtime", Some('c'), Arity::Value),
    flag("embed-certs", None, Arity::Bool),
    flag("keep-context", None, Arity::Bool),
    flag("wait", None, Arity::Value),
    flag("force", None, Arity::Bool),
    flag("nodes", Some('n'), Arity::Value),
    flag("ha", None, Arity::Bool),
    flag("delete-on-failure", None, Arity::Bool),
    flag("no-kubernetes", None, Arity::Bool),
];
const OUTPUT_FLAGS: &[FlagSpec] = &[flag("output", Some('o'), Arity::Value)];
/// `ip` and `ssh-key` pick a node (`--node/-n`, not bound to viper: no variable sets it).
const NODE_FLAGS: &[FlagSpec] = &[flag("node", Some('n'), Arity::Value)];
const LOGS_FLAGS: &[FlagSpec] = &[
    flag("file", None, Arity::Value),
    flag("length", Some('n'), Arity::Value),
];
const VERSION_FLAGS: &[FlagSpec] = &[
    flag("short", None, Arity::Bool),
    flag("output", Some('o'), Arity::Value),
];

/// Every flag of every command: used to know which flags take a value before the command is
/// known (flags may precede it: `minikube -p x ip`).
fn all_flags() -> impl Iterator<Item = &'static FlagSpec> {
    GLOBAL_FLAGS
        .iter()
        .chain(START_FLAGS)
        .chain(OUTPUT_FLAGS)
        .chain(NODE_FLAGS)
        .chain(LOGS_FLAGS)
        .chain(VERSION_FLAGS)
}

fn find_long(specs: &[FlagSpec], name: &str) -> Option<FlagSpec> {
    specs.iter().copied().find(|s| s.long == name)
}

fn find_short(specs: &[FlagSpec], c: char) -> Option<FlagSpec> {
    specs.iter().copied().find(|s| s.short == Some(c))
}

/// One flag as written, normalised to its long name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FlagUse {
    /// How it was written, for messages (`--x` or `-x`).
    written: String,
    /// Long name if known, else what was written without dashes.
    name: String,
    /// The shorthand letter it was written with: its long name depends on the command
    /// (`-n` is `--nodes` for start, `--length` for logs).
    short: Option<char>,
    known: bool,
    value: Option<String>,
}

/// Splits the arguments into positional words and flags (pflag's rules).
fn tokenize(args: &[String]) -> Result<(Vec<String>, Vec<FlagUse>), UsageError> {
    let specs: Vec<FlagSpec> = all_flags().copied().collect();
    let mut positional = Vec::new();
    let mut flags = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" {
            positional.extend(args[i..].iter().cloned());
            break;
        }
        if let Some(body) = arg.strip_prefix("--") {
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            let written = format!("--{name}");
            match find_long(&specs, name) {
                Some(spec) => {
                    let value = match (spec.arity, inline) {
                        (_, Some(v)) => Some(v),
                        (Arity::Bool, None) => None,
                        (Arity::Value, None) => {
                            let v = args.get(i).cloned().ok_or_else(|| {
                                UsageError(format!("flag needs an argument: {written}"))
                            })?;
                            i += 1;
                            Some(v)
                        }
                    };
                    flags.push(FlagUse {
                        written,
                        name: spec.long.to_string(),
                        short: None,
                        known: true,
                        value,
                    });
                }
                None => flags.push(FlagUse {
                    written,
                    name: name.to_string(),
                    short: None,
                    known: false,
                    value: inline,
                }),
            }
        } else if arg.len() > 1 && arg.starts_with('-') {
            let body = &arg[1..];
            let c = body.chars().next().expect("non-empty");
            let rest = &body[c.len_utf8()..];
            let Some(spec) = find_short(&specs, c) else {
                return Err(UsageError(format!(
                    "unknown shorthand flag: '{c}' in {arg}"
                )));
            };
            let value = match spec.arity {
                Arity::Bool => match rest.strip_prefix('=') {
                    Some(v) => Some(v.to_string()),
                    None if rest.is_empty() => None,
                    // Combined shorthands (`-hx`) are not used by minikube's users.
                    None => {
                        return Err(UsageError(format!(
                            "unknown shorthand flag: '{}' in {arg}",
                            rest.chars().next().unwrap_or('?')
                        )))
                    }
                },
                Arity::Value => {
                    if let Some(v) = rest.strip_prefix('=') {
                        Some(v.to_string())
                    } else if !rest.is_empty() {
                        Some(rest.to_string())
                    } else {
                        let v = args.get(i).cloned().ok_or_else(|| {
                            UsageError(format!("flag needs an argument: '{c}' in -{c}"))
                        })?;
                        i += 1;
                        Some(v)
                    }
                }
            };
            flags.push(FlagUse {
                written: format!("-{c}"),
                name: spec.long.to_string(),
                short: Some(c),
                known: true,
                value,
            });
        } else {
            positional.push(arg.clone());
        }
    }
    Ok((positional, flags))
}

fn parse_bool(flag: &FlagUse) -> Result<bool, UsageError> {
    match flag.value.as_deref() {
        None => Ok(true),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
        Some(other) => Err(UsageError(format!(
            "invalid argument \"{other}\" for \"{}\" flag: strconv.ParseBool: parsing \"{other}\": invalid syntax",
            flag.written
        ))),
    }
}

/// A size as minikube reads `--memory` and `--disk-size`: a plain number is MB; suffixes
/// b, k/kb, m/mb, g/gb, t/tb (case-insensitive, binary multiples). Returns MiB.
pub fn parse_size_mib(text: &str) -> Option<u32> {
    let t = text.trim().to_ascii_lowercase();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits_end);
    let n: u64 = num.parse().ok()?;
    let mib = match unit.trim() {
        "" | "m" | "mb" | "mib" => n,
        "b" => n / (1024 * 1024),
        "k" | "kb" | "kib" => n / 1024,
        "g" | "gb" | "gib" => n.checked_mul(1024)?,
        "t" | "tb" | "tib" => n.checked_mul(1024 * 1024)?,
        _ => return None,
    };
    u32::try_from(mib).ok().filter(|&m| m > 0)
}

fn value_of(flag: &FlagUse) -> String {
    flag.value.clone().unwrap_or_default()
}

/// The environment variable that stands for flag `long` when the command line does not give
/// it: viper's `AutomaticEnv` with prefix `minikube` and `-` replaced by `_`.
pub fn env_var_of(long: &str) -> String {
    format!("MINIKUBE_{}", long.to_ascii_uppercase().replace('-', "_"))
}

/// Parses the arguments after the program name; `env` reads the environment (every flag not
/// on the command line may come from its `MINIKUBE_*` variable, as with minikube's viper).
pub fn parse(
    args: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Invocation, UsageError> {
    let (positional, mut flags) = tokenize(args)?;
    let mut profile = DEFAULT_PROFILE.to_string();
    let mut help = false;

    let (command_name, command_specs, rest): (&str, &[FlagSpec], &[String]) =
        match positional.first().map(String::as_str) {
            None => ("", &[], &[]),
            Some("start") => ("start", START_FLAGS, &positional[1..]),
            Some("stop") => ("stop", &[], &positional[1..]),
            Some("delete") => ("delete", &[], &positional[1..]),
            Some("ip") => ("ip", NODE_FLAGS, &positional[1..]),
            Some("status") => ("status", OUTPUT_FLAGS, &positional[1..]),
            Some("ssh-key") => ("ssh-key", NODE_FLAGS, &positional[1..]),
            Some("logs") => ("logs", LOGS_FLAGS, &positional[1..]),
            Some("version") => ("version", VERSION_FLAGS, &positional[1..]),
            Some("profile") => match positional.get(1).map(String::as_str) {
                Some("list") => ("profile list", OUTPUT_FLAGS, &positional[2..]),
                Some(other) => {
                    return Err(UsageError(format!(
                        "the minikube stand-in supports only \"minikube profile list\", not \"minikube profile {other}\""
                    )))
                }
                None => {
                    return Err(UsageError(
                        "the minikube stand-in supports only \"minikube profile list\"".into(),
                    ))
                }
            },
            Some("image") => match positional.get(1).map(String::as_str) {
                Some("load") => ("image load", &[], &positional[2..]),
                Some(other) => {
                    return Err(UsageError(format!(
                        "the minikube stand-in supports only \"minikube image load\", not \"minikube image {other}\""
                    )))
                }
                None => {
                    return Err(UsageError(
                        "the minikube stand-in supports only \"minikube image load\"".into(),
                    ))
                }
            },
            Some("help") => ("help", &[], &[]),
            Some(other) => {
                return Err(UsageError(format!(
                    "unknown command \"{other}\" for \"minikube\""
                )))
            }
        };

    // A shorthand means what the command's own flags say (`-n`: `--nodes` or `--length`).
    for f in flags.iter_mut() {
        if let Some(c) = f.short {
            match find_short(GLOBAL_FLAGS, c).or_else(|| find_short(command_specs, c)) {
                Some(spec) => f.name = spec.long.to_string(),
                None => {
                    return Err(UsageError(format!(
                        "unknown shorthand flag: '{c}' in {}",
                        f.written
                    )))
                }
            }
        }
    }
    // Then the environment, for every bound flag the command line left out: the global ones
    // and start's (`--help` and other commands' own flags are not bound).
    let bound: &[FlagSpec] = if command_name == "start" {
        command_specs
    } else {
        &[]
    };
    for spec in GLOBAL_FLAGS.iter().chain(bound) {
        if spec.long == "help" || flags.iter().any(|f| f.name == spec.long) {
            continue;
        }
        let var = env_var_of(spec.long);
        if let Some(value) = env(&var).filter(|v| !v.is_empty()) {
            flags.push(FlagUse {
                written: format!("${var}"),
                name: spec.long.to_string(),
                short: None,
                known: true,
                value: Some(value),
            });
        }
    }

    let mut start = StartOptions::default();
    let mut output = Output::Text;
    let mut file = None;
    let mut length = 60usize;
    let mut short = false;
    let mut node = None;

    for f in &flags {
        let global = find_long(GLOBAL_FLAGS, &f.name).is_some();
        if !f.known || (!global && find_long(command_specs, &f.name).is_none()) {
            return Err(UsageError(format!("unknown flag: {}", f.written)));
        }
        match f.name.as_str() {
            "profile" => {
                profile = value_of(f);
                if profile.is_empty() {
                    return Err(UsageError("profile name cannot be empty".into()));
                }
            }
            "alsologtostderr" | "logtostderr" => {
                parse_bool(f)?;
            }
            "v" => {}
            "help" => help = parse_bool(f)?,
            "driver" => start.driver = Some(value_of(f)),
            "kvm-network" => start.kvm_network = Some(value_of(f)),
            "kvm-qemu-uri" => start.kvm_qemu_uri = Some(value_of(f)),
            "network" => start.network = Some(value_of(f)),
            "memory" => start.memory_mib = Some(Amount::memory(&value_of(f))),
            "cpus" => start.cpus = Some(Amount::cpus(&value_of(f))),
            "disk-size" => {
                let v = value_of(f);
                start.disk_size_mb = Some(parse_size_mib(&v).ok_or_else(|| {
                    UsageError(format!("invalid disk size {v:?} for --disk-size"))
                })?);
            }
            "kubernetes-version" => start.kubernetes_version = Some(value_of(f)),
            "container-runtime" => start.container_runtime = Some(value_of(f)),
            "force" => start.force = parse_bool(f)?,
            "ha" => start.ha = parse_bool(f)?,
            "delete-on-failure" => start.delete_on_failure = parse_bool(f)?,
            "no-kubernetes" => start.no_kubernetes = parse_bool(f)?,
            "nodes" => {
                let v = value_of(f);
                start.nodes = Some(v.parse::<u32>().ok().filter(|&n| n > 0).ok_or_else(|| {
                    UsageError(format!("invalid argument {v:?} for \"{}\" flag", f.written))
                })?);
            }
            "embed-certs" => start.embed_certs = parse_bool(f)?,
            "keep-context" => start.keep_context = parse_bool(f)?,
            "wait" => start.wait.extend(
                value_of(f)
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from),
            ),
            "output" => {
                output = match value_of(f).as_str() {
                    "json" => Output::Json,
                    "text" | "" => Output::Text,
                    other => {
                        return Err(UsageError(format!(
                            "invalid output format {other:?}: use text or json"
                        )))
                    }
                }
            }
            "file" => file = Some(PathBuf::from(value_of(f))),
            "length" => {
                let v = value_of(f);
                length = v.parse().map_err(|_| {
                    UsageError(format!("invalid argument {v:?} for \"{}\" flag", f.written))
                })?;
            }
            "short" => short = parse_bool(f)?,
            "node" => node = Some(value_of(f)),
            other => unreachable!("flag {other} is in a table but not handled"),
        }
    }

    if help || command_name.is_empty() || command_name == "help" {
        return Ok(Invocation {
            profile,
            command: Command::Help,
        });
    }
    if command_name == "image load" {
        return Ok(Invocation {
            profile,
            command: Command::ImageLoad {
                images: rest.to_vec(),
            },
        });
    }
    if !rest.is_empty() {
        return Err(UsageError(format!(
            "\"minikube {command_name}\" accepts no arguments, received {}: {}",
            rest.len(),
            rest.join(" ")
        )));
    }
    let command = match command_name {
        "start" => Command::Start(Box::new(start)),
        "stop" => Command::Stop,
        "delete" => Command::Delete,
        "ip" => Command::Ip { node },
        "status" => Command::Status { output },
        "ssh-key" => Command::SshKey { node },
        "logs" => Command::Logs { file, length },
        "profile list" => Command::ProfileList { output },
        "version" => Command::Version { short, output },
        other => unreachable!("command {other} parsed but not mapped"),
    };
    Ok(Invocation { profile, command })
}

pub const USAGE: &str = "\
minikube (stand-in for tests of mkh: kvm2 driver only)

Usage: minikube [-p PROFILE] COMMAND [flags]

Commands:
  start     --driver=kvm2 [--kvm-network=NAME] [--network=NAME] [-m, --memory=SIZE] [--cpus=N]
            [-n, --nodes=N] [--ha] [--force] [--delete-on-failure] [--disk-size=SIZE]
            [--kubernetes-version=V | --no-kubernetes] [--container-runtime=R] [--embed-certs]
            [--keep-context] [--wait=LIST]; every flag also as MINIKUBE_<FLAG>
  stop      ACPI shutdown of every node, stops the profile's API server
  delete    removes each node's VM, the private network (unless `default` or in use), the profile
  ip        [-n NODE]  the node's recorded IP (exit 83 when the control plane is stopped)
  status    [-o json]   exit 0 running, 7 stopped, 85 no such profile
  ssh-key   [-n NODE]  path of the node's SSH private key
  logs      [--file=PATH] [-n LINES]
  profile list [-o json]
  image load ARCHIVE...|-   docker load of each archive in every running node (exit 0 even when
            a node fails, as minikube); image names from a daemon or registry are refused
  version   [--short] [-o json]

Global flags: -p, --profile NAME (default \"minikube\"), --alsologtostderr, -v N
";

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: &str) -> Result<Invocation, UsageError> {
        p_env(line, &[])
    }

    fn p_env(line: &str, vars: &[(&str, &str)]) -> Result<Invocation, UsageError> {
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(&args, &|name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn profile_is_accepted_anywhere_and_in_every_form() {
        for line in [
            "-p NAME ip",
            "ip -p NAME",
            "--profile=NAME ip",
            "ip --profile NAME",
            "-pNAME ip",
            "ip -p=NAME",
        ] {
            let inv = p(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(inv.profile, "NAME", "{line}");
            assert_eq!(inv.command, Command::Ip { node: None }, "{line}");
        }
        assert_eq!(p("ip").unwrap().profile, "minikube");
    }

    #[test]
    fn start_flags_in_both_forms() {
        let inv = p(
            "start -p x --driver=kvm2 --kvm-network nat1 --network=priv1 --memory 512 \
                     --cpus=2 --embed-certs --keep-context=false --wait=apiserver,system_pods \
                     --wait all --disk-size=20g --kubernetes-version v1.20.2 \
                     --container-runtime=docker",
        )
        .unwrap();
        let Command::Start(o) = inv.command else {
            panic!("not start")
        };
        assert_eq!(o.driver.as_deref(), Some("kvm2"));
        assert_eq!(o.kvm_network.as_deref(), Some("nat1"));
        assert_eq!(o.network.as_deref(), Some("priv1"));
        assert_eq!(o.memory_mib, Some(Amount::Value(512)));
        assert_eq!(o.cpus, Some(Amount::Value(2)));
        assert!(o.embed_certs);
        assert!(!o.keep_context);
        assert_eq!(o.wait, ["apiserver", "system_pods", "all"]);
        assert_eq!(o.disk_size_mb, Some(20480));
        assert_eq!(o.kubernetes_version.as_deref(), Some("v1.20.2"));
        assert_eq!(o.container_runtime.as_deref(), Some("docker"));
    }

    #[test]
    fn a_boolean_never_swallows_the_next_word() {
        // `--embed-certs start` : `start` is the command, not the flag's value.
        let inv = p("--embed-certs start").unwrap();
        assert!(matches!(inv.command, Command::Start(o) if o.embed_certs));
    }

    #[test]
    fn unknown_flags_and_commands_are_errors() {
        assert_eq!(
            p("start --driver=kvm2 --bogus=1").unwrap_err().0,
            "unknown flag: --bogus"
        );
        assert_eq!(p("start --x").unwrap_err().0, "unknown flag: --x");
        // A start flag on another command is unknown there.
        assert_eq!(p("ip --memory=1").unwrap_err().0, "unknown flag: --memory");
        assert_eq!(
            p("frobnicate").unwrap_err().0,
            "unknown command \"frobnicate\" for \"minikube\""
        );
        assert!(p("-z ip")
            .unwrap_err()
            .0
            .contains("unknown shorthand flag: 'z'"));
        assert!(p("start --memory")
            .unwrap_err()
            .0
            .contains("needs an argument"));
        let start = |line: &str| match p(line).unwrap().command {
            Command::Start(o) => o,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            start("start --memory=lots").memory_mib,
            Some(Amount::Unparsable("lots".into()))
        );
        assert_eq!(start("start --memory=max").memory_mib, Some(Amount::Max));
        assert_eq!(start("start --cpus=abc").cpus, Some(Amount::Value(0)));
        assert_eq!(start("start --cpus=no-limit").cpus, Some(Amount::NoLimit));
        assert!(p("ip extra")
            .unwrap_err()
            .0
            .contains("accepts no arguments"));
        assert!(p("start --embed-certs=maybe").is_err());
    }

    #[test]
    fn other_commands() {
        assert_eq!(
            p("status -o json").unwrap().command,
            Command::Status {
                output: Output::Json
            }
        );
        assert_eq!(
            p("profile list --output=json").unwrap().command,
            Command::ProfileList {
                output: Output::Json
            }
        );
        assert_eq!(
            p("logs --file=/tmp/x -n 5").unwrap().command,
            Command::Logs {
                file: Some("/tmp/x".into()),
                length: 5
            }
        );
        assert_eq!(p("-p a delete").unwrap().command, Command::Delete);
        let inv = p("-p a image load /tmp/x.tar ./y.tar").unwrap();
        assert_eq!(
            (inv.profile.as_str(), inv.command),
            (
                "a",
                Command::ImageLoad {
                    images: vec!["/tmp/x.tar".into(), "./y.tar".into()]
                }
            )
        );
        assert!(p("image save x").unwrap_err().0.contains("image save"));
        assert_eq!(p("stop").unwrap().command, Command::Stop);
        assert_eq!(
            p("ssh-key").unwrap().command,
            Command::SshKey { node: None }
        );
        assert_eq!(
            p("ssh-key -n m02").unwrap().command,
            Command::SshKey {
                node: Some("m02".into())
            }
        );
        assert_eq!(p("").unwrap().command, Command::Help);
        assert_eq!(p("start --help").unwrap().command, Command::Help);
        assert_eq!(
            p("ip --alsologtostderr -v=3").unwrap().command,
            Command::Ip { node: None }
        );
        assert_eq!(
            p("version --short").unwrap().command,
            Command::Version {
                short: true,
                output: Output::Text
            }
        );
    }

    #[test]
    fn minikube_variables_act_as_the_flags_the_command_line_left_out() {
        let start = |line: &str, vars: &[(&str, &str)]| match p_env(line, vars).unwrap().command {
            Command::Start(o) => o,
            other => panic!("{other:?}"),
        };
        let o = start(
            "start",
            &[("MINIKUBE_DRIVER", "docker"), ("MINIKUBE_NODES", "3")],
        );
        assert_eq!((o.driver.as_deref(), o.nodes), (Some("docker"), Some(3)));
        let o = start("start --driver=kvm2", &[("MINIKUBE_DRIVER", "docker")]);
        assert_eq!(o.driver.as_deref(), Some("kvm2"));
        let o = start(
            "start",
            &[
                ("MINIKUBE_DELETE_ON_FAILURE", "true"),
                ("MINIKUBE_FORCE", "1"),
            ],
        );
        assert!(o.delete_on_failure && o.force);
        // Empty counts as unset (viper without AllowEmptyEnv).
        assert_eq!(start("start", &[("MINIKUBE_DRIVER", "")]).driver, None);
        let inv = p_env("ip", &[("MINIKUBE_PROFILE", "other")]).unwrap();
        assert_eq!(inv.profile, "other");
        assert!(p_env("start", &[("MINIKUBE_NODES", "lots")]).is_err());
    }

    #[test]
    fn shorthands_mean_what_the_command_says() {
        let Command::Start(o) = p("start -n 2 -d kvm2 -m 2g").unwrap().command else {
            panic!("not start")
        };
        assert_eq!((o.nodes, o.driver.as_deref()), (Some(2), Some("kvm2")));
        assert_eq!(o.memory_mib, Some(Amount::Value(2048)));
        assert_eq!(
            p("logs -n 5").unwrap().command,
            Command::Logs {
                file: None,
                length: 5
            }
        );
        assert_eq!(
            p("ip -n m02").unwrap().command,
            Command::Ip {
                node: Some("m02".into())
            }
        );
        assert!(p("status -n 2").is_err());
        let Command::Start(o) = p("start --ha --force --delete-on-failure").unwrap().command else {
            panic!("not start")
        };
        assert!(o.ha && o.force && o.delete_on_failure);
    }

    #[test]
    fn sizes_read_like_minikube() {
        assert_eq!(parse_size_mib("2048"), Some(2048));
        assert_eq!(parse_size_mib("2048mb"), Some(2048));
        assert_eq!(parse_size_mib("2g"), Some(2048));
        assert_eq!(parse_size_mib("2GB"), Some(2048));
        assert_eq!(parse_size_mib("1048576k"), Some(1024));
        assert_eq!(parse_size_mib("0"), None);
        assert_eq!(parse_size_mib("lots"), None);
        assert_eq!(parse_size_mib("2x"), None);
    }
}
