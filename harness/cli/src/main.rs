//! The `mkh` command: environments that outlive a command, and the reaper.

use std::process::ExitCode;

mod progress;

use clap::{Parser, Subcommand, ValueEnum};

use mkh::admin::{self, OwnerKind, ReapScope};
use mkh::{Backend, Error, MachineOptions, MinikubeOptions, NetworkRole, Result, Settings};

/// `--backend`.
#[derive(Clone, Copy, ValueEnum)]
enum BackendArg {
    /// mkh boots its own guest.
    Builtin,
    /// `minikube start --driver=kvm2`.
    Minikube,
}

/// `mkh completions SHELL`.
#[derive(Clone, Copy, ValueEnum)]
enum ShellArg {
    Bash,
    Zsh,
    Fish,
}

/// `--network`.
#[derive(Clone, Copy, ValueEnum)]
enum NetworkArg {
    Nat,
    Private,
}

impl From<NetworkArg> for NetworkRole {
    fn from(n: NetworkArg) -> NetworkRole {
        match n {
            NetworkArg::Nat => NetworkRole::Nat,
            NetworkArg::Private => NetworkRole::Private,
        }
    }
}

#[derive(Parser)]
#[command(
    name = "mkh",
    version,
    about = "Throw-away minikube-like environments on libvirt for integration tests"
)]
struct Cli {
    /// More log lines on stderr: -v for debug, -vv for trace (RUST_LOG, when set, decides).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// No progress and no log lines but warnings and errors (stdout keeps the output).
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Bring up an environment that outlives this command: both networks and the built-in
    /// guest. Returns once SSH answers on both networks.
    #[command(
        after_help = "Examples:\n  mkh up --name demo\n  mkh up --warm\n  mkh up --backend minikube --nodes 2 -- --kubernetes-version=v1.33.0\n  mkh up --json | jq -r .ips.private"
    )]
    Up {
        /// Environment name (also the machine's); default `mkh-<id>`.
        #[arg(long)]
        name: Option<String>,
        /// Guest memory in MiB (built-in guest: 256; minikube: minikube's default, at least
        /// 1800 without `-- --force`).
        #[arg(long)]
        memory: Option<u32>,
        /// Guest vCPUs (built-in guest: 1; minikube: minikube's default of 2, at least 2
        /// without `-- --force`).
        #[arg(long)]
        cpus: Option<u32>,
        /// With `--backend minikube`: the cluster's nodes, each a VM on both networks.
        #[arg(long)]
        nodes: Option<u32>,
        /// `builtin` (mkh boots its own guest) or `minikube` (`minikube start --driver=kvm2`,
        /// binary from MKH_MINIKUBE or PATH).
        #[arg(long, value_enum, default_value_t = BackendArg::Builtin)]
        backend: BackendArg,
        /// With `--backend minikube`: more `minikube start` arguments (after `--`).
        #[arg(last = true)]
        minikube_args: Vec<String>,
        /// Built-in guest: restore it from a guest saved after boot instead of booting it
        /// (the first warm start of an image and size boots and saves one). Default: MKH_WARM.
        #[arg(long)]
        warm: bool,
        /// Print the environment as JSON (schema version in "version").
        #[arg(long)]
        json: bool,
    },
    /// Print a machine's IP on one network (leases matched by MAC).
    #[command(after_help = "Examples:\n  mkh ip demo\n  mkh ip demo --network nat")]
    Ip {
        /// The environment (`mkh ls`).
        name: String,
        #[arg(long, value_enum, default_value_t = NetworkArg::Private)]
        network: NetworkArg,
    },
    /// SSH into an environment's machine as `docker`; with a command, run it and exit with its
    /// status.
    #[command(
        after_help = "Examples:\n  mkh ssh demo\n  mkh ssh demo --network nat -- ip -4 addr\n  tar c dir | mkh ssh demo -- tar x"
    )]
    Ssh {
        /// The environment (`mkh ls`).
        name: String,
        /// Connect over this network.
        #[arg(long, value_enum, default_value_t = NetworkArg::Private)]
        network: NetworkArg,
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Build (once) or find the cached guest image; print its files, and the images uploaded
    /// to a remote libvirt host.
    #[command(
        after_help = "Examples:\n  mkh image\n  MKH_LIBVIRT_URI=qemu+ssh://root@kvm-1/system mkh image --remove-uploaded"
    )]
    Image {
        /// Remove the images uploaded to the (remote) libvirt host's pool mkh-images; the
        /// next environment there uploads again.
        #[arg(long)]
        remove_uploaded: bool,
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Time environments with the guest, phase by phase, cold and warm, beside a plain
    /// virsh+ssh script; then several at once.
    #[command(
        after_help = "Examples:\n  cargo run --release -p mkh-cli -- bench --runs 5\n  mkh bench --runs 3 --parallel 1,2 --json | jq '{mkh_ready_s, warm_ready_s, ratio}'"
    )]
    Bench {
        /// Runs of each of mkh cold, mkh warm and the script.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=100))]
        runs: u64,
        /// Environments to bring up at once, one measurement per width (e.g. 1,2,4).
        #[arg(long, value_delimiter = ',', default_value = "1,2,4",
              value_parser = clap::value_parser!(u64).range(1..=16))]
        parallel: Vec<u64>,
        /// Print the report as JSON on stdout (progress on stderr).
        #[arg(long)]
        json: bool,
    },
    /// List environments mkh owns in libvirt.
    #[command(after_help = "Examples:\n  mkh ls\n  mkh ls --json | jq '.[] | {name, networks}'")]
    Ls {
        /// Print them as JSON: each with its owner, domains and networks (with subnets).
        #[arg(long, conflicts_with = "names")]
        json: bool,
        /// Print only their names, one per line.
        #[arg(long)]
        names: bool,
    },
    /// Stop an environment's machine (an ACPI shutdown); `mkh ip` refuses until `mkh start`.
    #[command(
        after_help = "Example:\n  mkh stop demo && mkh ip demo   # refuses: the machine is stopped"
    )]
    Stop {
        /// The environment (`mkh ls`).
        name: String,
    },
    /// Start an environment's stopped machine; returns once SSH answers on both networks.
    #[command(after_help = "Example:\n  mkh start demo && mkh ip demo")]
    Start {
        /// The environment (`mkh ls`).
        name: String,
    },
    /// Stop, then start an environment's machine.
    #[command(after_help = "Example:\n  mkh restart demo")]
    Restart {
        /// The environment (`mkh ls`).
        name: String,
    },
    /// Remove a CLI-owned environment and everything it created.
    #[command(after_help = "Example:\n  mkh down demo")]
    Down {
        /// The environment (`mkh ls`).
        name: String,
    },
    /// Check this host for mkh: the accelerator, libvirt, virtlogd, dnsmasq, making a network,
    /// free subnets, the guest image, minikube and leftovers; each with what was seen and the
    /// fix. Exits non-zero only for what blocks every backend.
    #[command(
        after_help = "Examples:\n  mkh doctor\n  MKH_LIBVIRT_URI=qemu+ssh://root@host/system mkh doctor --json"
    )]
    Doctor {
        /// Print the checks as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (environment names complete too).
    #[command(
        after_help = "Examples:\n  source <(mkh completions bash)\n  mkh completions zsh > ~/.zfunc/_mkh\n  mkh completions fish > ~/.config/fish/completions/mkh.fish"
    )]
    Completions {
        /// The shell.
        shell: ShellArg,
    },
    /// Remove what dead owners left behind (never objects mkh did not create).
    #[command(after_help = "Examples:\n  mkh reap\n  mkh reap --all   # CLI environments too")]
    Reap {
        /// Also remove CLI-owned environments, live or not.
        #[arg(long)]
        all: bool,
        /// Only objects of this run id (MKH_RUN_ID or NEXTEST_RUN_ID of a run).
        #[arg(long)]
        run: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Scenario files: bring up an environment, break its network, check what happens.
    #[command(
        subcommand,
        after_help = "Examples:\n  mkh scenario check scenarios/*.toml\n  mkh scenario run scenarios/partition-two-machines.toml"
    )]
    Scenario(ScenarioCommand),
    /// List every libvirt object mkh's metadata claims; with --run, fail if any of that run is left.
    #[command(after_help = "Example:\n  mkh audit --run \"$NEXTEST_RUN_ID\"")]
    Audit {
        /// A run id (MKH_RUN_ID or NEXTEST_RUN_ID of the run to check).
        #[arg(long)]
        run: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ScenarioCommand {
    /// Run scenario files one after the other; exit 0 only if none failed (skipped ones are listed with why).
    #[command(after_help = "Example:\n  mkh scenario run scenarios/*.toml --junit scenarios.xml")]
    Run {
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
        /// Leave a failed scenario's environment up (handed to the CLI: `mkh down NAME`).
        #[arg(long)]
        keep: bool,
        /// Print the report as JSON on stdout (progress stays on stderr).
        #[arg(long)]
        json: bool,
        /// Also write a JUnit XML report to this file.
        #[arg(long, value_name = "FILE")]
        junit: Option<std::path::PathBuf>,
    },
    /// Parse and check scenario files without creating anything.
    #[command(after_help = "Example:\n  mkh scenario check scenarios/*.toml")]
    Check {
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet);
    // The benchmark prints its own lines and must not be slowed by a view.
    progress::show(
        if cli.quiet || matches!(cli.command, Command::Bench { .. }) {
            progress::ProgressMode::Quiet
        } else {
            progress::ProgressMode::Auto
        },
    );
    let env_name = cli.command.env_name().map(str::to_owned);
    let result = run(cli);
    progress::finish();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprint!("{}", error_report(&e));
            if let (Error::MachineNotRunning { .. }, Some(name)) = (&e, env_name) {
                eprintln!("  hint: `{} start {name}` starts it", invoked_as());
            }
            ExitCode::FAILURE
        }
    }
}

impl Command {
    /// The environment a command names, if it names one.
    fn env_name(&self) -> Option<&str> {
        match self {
            Command::Ip { name, .. }
            | Command::Ssh { name, .. }
            | Command::Stop { name }
            | Command::Start { name }
            | Command::Restart { name }
            | Command::Down { name } => Some(name),
            _ => None,
        }
    }
}

/// Log lines on stderr: RUST_LOG when set, else `-v`/`-vv`, else `MKH_LOG`, else `info`. Colour
/// only on a terminal, and never with `NO_COLOR` set.
fn init_logging(verbose: u8, quiet: bool) {
    use std::io::IsTerminal;
    // Bad settings are reported by `run`, which reads them again.
    // --quiet wins; then RUST_LOG, -v/-vv (mkh's own lines; RUST_LOG reaches the libraries'),
    // MKH_LOG.
    let rust_log = std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty());
    let chosen = match (quiet, verbose) {
        (true, _) => Some("warn".to_owned()),
        (false, 0) => rust_log.or_else(|| Settings::current().ok().and_then(|s| s.log)),
        (false, 1) => rust_log.or(Some("info,mkh=debug".into())),
        (false, _) => rust_log.or(Some("info,mkh=trace".into())),
    };
    let filter = chosen
        .and_then(|f| tracing_subscriber::EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    // Progress events are the view's, whatever the log filter says.
    let log = tracing_subscriber::fmt::layer()
        .with_writer(|| progress::LogWriter)
        .with_ansi(colour)
        .without_time()
        .with_target(false)
        .with_filter(filter)
        .with_filter(tracing_subscriber::filter::filter_fn(|m| {
            m.target() != mkh::PROGRESS_TARGET
        }));
    tracing_subscriber::registry()
        .with(log)
        .with(progress::ProgressLayer)
        .init();
}

/// The error and its causes, each said once: a cause whose text the message above it already
/// holds is not repeated.
fn error_report(e: &Error) -> String {
    let mut out = format!("mkh: error: {e}\n");
    let mut said = vec![e.to_string()];
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !said.iter().any(|t| t.contains(&text)) {
            out += &format!("  caused by: {text}\n");
            said.push(text);
        }
        source = s.source();
    }
    out
}

fn run(cli: Cli) -> Result<ExitCode> {
    // A completion script needs no settings: a bad MKH_* must not break a shell's start-up.
    if let Command::Completions { shell } = cli.command {
        print!("{}", completions(shell));
        return Ok(ExitCode::SUCCESS);
    }
    let settings = Settings::current()?;
    match cli.command {
        Command::Up {
            name,
            memory,
            cpus,
            nodes,
            backend,
            minikube_args,
            warm,
            json,
        } => {
            let backend = match backend {
                BackendArg::Minikube if warm => {
                    return Err(Error::InvalidInput {
                        what: "mkh up option",
                        value: "--warm".into(),
                        problem:
                            "warm starts are for the built-in guest; minikube boots its own VM"
                                .into(),
                        fix: "drop --warm, or use the built-in backend",
                    });
                }
                BackendArg::Minikube => Backend::Minikube(MinikubeOptions {
                    extra_args: minikube_args,
                    memory_mib: memory,
                    cpus,
                    nodes,
                    ..MinikubeOptions::default()
                }),
                BackendArg::Builtin => {
                    if nodes.is_some() || !minikube_args.is_empty() {
                        return Err(Error::InvalidInput {
                            what: "mkh up option",
                            value: if nodes.is_some() {
                                "--nodes".into()
                            } else {
                                minikube_args.join(" ")
                            },
                            problem:
                                "--nodes and arguments after `--` are for the minikube backend"
                                    .into(),
                            fix: "add --backend minikube, or drop them",
                        });
                    }
                    let d = MachineOptions::default();
                    Backend::Builtin(
                        d.clone()
                            .with_memory_mib(memory.unwrap_or(d.memory_mib))
                            .with_vcpus(cpus.unwrap_or(d.vcpus))
                            .with_warm_start(warm || settings.warm),
                    )
                }
            };
            up(settings, name, backend, json)
        }
        Command::Ip { name, network } => {
            println!("{}", admin::machine(&settings, &name)?.ip(network.into())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Ssh {
            name,
            network,
            command,
        } => ssh(&settings, &name, network.into(), &command),
        Command::Image {
            remove_uploaded,
            json,
        } => image(&settings, remove_uploaded, json),
        Command::Bench {
            runs,
            parallel,
            json,
        } => {
            let options = admin::BenchOptions {
                runs: runs as usize,
                parallel: parallel.into_iter().map(|w| w as usize).collect(),
                json,
            };
            admin::bench(&settings, &options)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Ls { json, names } => ls(&settings, json, names),
        Command::Stop { name } => power(&settings, &name, admin::Power::Stop),
        Command::Start { name } => power(&settings, &name, admin::Power::Start),
        Command::Restart { name } => power(&settings, &name, admin::Power::Restart),
        Command::Doctor { json } => doctor(&settings, json),
        Command::Completions { .. } => unreachable!("answered before the settings"),
        Command::Down { name } => {
            admin::down(&settings, &name)?;
            progress::finish();
            println!("removed environment {name}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Reap { all, run, json } => reap(&settings, all, run.as_deref(), json),
        Command::Audit { run, json } => audit(&settings, run.as_deref(), json),
        Command::Scenario(command) => scenario(settings, command),
    }
}

fn scenario(settings: Settings, command: ScenarioCommand) -> Result<ExitCode> {
    use mkh_scenario::{self as scenario, report, RunOptions, Scenario};
    let (files, run) = match command {
        ScenarioCommand::Check { files } => (files, None),
        ScenarioCommand::Run {
            files,
            keep,
            json,
            junit,
        } => (files, Some((keep, json, junit))),
    };
    // Every file is checked before any runs.
    let mut scenarios = Vec::new();
    let mut bad = 0;
    for file in &files {
        match Scenario::load(file) {
            Ok(s) => scenarios.push(s),
            Err(e) => {
                eprintln!("mkh: {e}");
                bad += 1;
            }
        }
    }
    if bad > 0 {
        eprintln!(
            "mkh: {bad} of {} scenario file(s) are invalid; nothing was run",
            files.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    let Some((keep, json, junit)) = run else {
        for s in &scenarios {
            println!("{}: ok ({} steps)", s.file.display(), s.steps.len());
        }
        return Ok(ExitCode::SUCCESS);
    };
    let options = RunOptions {
        settings,
        keep_failed: keep,
    };
    let reports: Vec<_> = scenarios
        .iter()
        .map(|s| scenario::run(s, &options))
        .collect();
    progress::finish();
    if json {
        println!("{}", report::json(&reports));
    } else {
        print!("{}", report::table(&reports));
    }
    if let Some(path) = junit {
        std::fs::write(&path, report::junit(&reports)).map_err(|e| Error::Io {
            path: path.clone(),
            source: e,
        })?;
    }
    Ok(if report::all_passed(&reports) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn up(settings: Settings, name: Option<String>, backend: Backend, json: bool) -> Result<ExitCode> {
    let mut builder = mkh::Env::builder().settings(settings).backend(backend);
    if let Some(name) = name {
        builder = builder.name(name);
    }
    let desc = admin::up_for_cli(builder)?;
    progress::finish();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&desc).expect("serialisable")
        );
        return Ok(ExitCode::SUCCESS);
    }
    let ips = desc.ips.expect("a guest was booted");
    let ssh = desc.ssh.expect("a guest was booted");
    let accel = desc.accel.map(|a| a.as_str()).unwrap_or("-");
    println!("environment {} is up ({accel})", desc.name);
    for (label, net, ip) in [
        ("nat", &desc.networks.nat, ips.nat),
        ("private", &desc.networks.private, ips.private),
    ] {
        println!(
            "  {label:<8} {ip:<16} network {} ({}, bridge {})",
            net.name, net.subnet, net.bridge
        );
    }
    if let (Some(kubeconfig), Some(context)) = (&desc.kubeconfig, &desc.context) {
        println!("  kubeconfig {} (context {context})", kubeconfig.display());
    }
    println!("reach it:");
    let mkh = invoked_as();
    println!("  {mkh} ssh {} -- id -un", desc.name);
    let proxy = ssh
        .proxy_command
        .as_ref()
        .and_then(|c| {
            shlex::try_quote(&format!("ProxyCommand={c}"))
                .ok()
                .map(|q| format!("-o {q} "))
        })
        .unwrap_or_default();
    println!(
        "  ssh {proxy}-i {} {}@{}",
        ssh.key.display(),
        ssh.user,
        ips.private
    );
    println!("remove it:");
    println!("  {mkh} down {}", desc.name);
    Ok(ExitCode::SUCCESS)
}

/// How to call this binary again in printed hints: `mkh` when that is what PATH finds, else the
/// path it was started by (e.g. `target/debug/mkh` under `cargo run`).
fn invoked_as() -> String {
    let argv0 = std::env::args().next().unwrap_or_else(|| "mkh".into());
    if !argv0.contains('/') {
        return argv0;
    }
    let on_path = std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| {
            std::fs::canonicalize(d.join("mkh")).ok() == std::fs::canonicalize(&argv0).ok()
        })
    });
    if on_path {
        "mkh".into()
    } else {
        argv0
    }
}

fn image(settings: &Settings, remove_uploaded: bool, json: bool) -> Result<ExitCode> {
    if remove_uploaded {
        let removed = admin::remove_uploaded_images(settings)?;
        if json {
            println!("{}", serde_json::json!({ "removed": removed }));
        } else if removed.is_empty() {
            println!("no guest image uploaded to {}", settings.libvirt_uri);
        }
        for image in removed.iter().filter(|_| !json) {
            println!("removed uploaded image {} ({})", image.digest, image.kernel);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let image = admin::guest_image(settings)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&image).expect("serializes")
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("kernel {}", image.kernel.display());
    println!("initrd {}", image.initrd.display());
    for up in &image.uploaded {
        println!(
            "uploaded {} to pool mkh-images: {} and {}, {} bytes, by {} at {}",
            up.digest, up.kernel, up.initrd, up.bytes, up.uploaded_by, up.uploaded_at
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn ssh(settings: &Settings, name: &str, role: NetworkRole, command: &[String]) -> Result<ExitCode> {
    let machine = admin::machine(settings, name)?;
    if command.is_empty() {
        // Interactive: OpenSSH, pinned to the host key mkh has just checked.
        let status = admin::interactive_ssh(&machine, role)?;
        return Ok(exit_code(status.code().unwrap_or(255)));
    }
    // Standard input goes to the command (then EOF), its output comes back as it is made.
    let status = admin::run_over_ssh(&machine, role, command)?;
    Ok(exit_code(status))
}

fn exit_code(status: i32) -> ExitCode {
    ExitCode::from(status.clamp(0, 255) as u8)
}

fn power(settings: &Settings, name: &str, what: admin::Power) -> Result<ExitCode> {
    let result = admin::power(settings, name, what)?;
    progress::finish();
    match result {
        None => println!("stopped {name}"),
        Some(ips) => println!("started {name}: nat {} private {}", ips.nat, ips.private),
    }
    Ok(ExitCode::SUCCESS)
}

fn doctor(settings: &Settings, json: bool) -> Result<ExitCode> {
    let report = admin::doctor(settings);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("serialisable")
        );
    } else {
        for c in &report.checks {
            let status = match c.status {
                admin::Status::Pass => "pass",
                admin::Status::Warn => "WARN",
                admin::Status::Fail => "FAIL",
            };
            println!("{status:<4}  {:<20} {}", c.name, c.seen);
            if let Some(fix) = &c.fix {
                println!("      {:<20} fix: {fix}", "");
            }
        }
    }
    Ok(if report.failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The subcommands whose argument is an environment's name: their completion offers
/// `mkh ls --names`.
const TAKES_ENV_NAME: &[&str] = &["ip", "ssh", "stop", "start", "restart", "down"];

/// clap's completion script for `shell`, with environment names for [`TAKES_ENV_NAME`].
fn completions(shell: ShellArg) -> String {
    use clap::CommandFactory;
    let generator = match shell {
        ShellArg::Bash => clap_complete::Shell::Bash,
        ShellArg::Zsh => clap_complete::Shell::Zsh,
        ShellArg::Fish => clap_complete::Shell::Fish,
    };
    let mut out = Vec::new();
    clap_complete::generate(generator, &mut Cli::command(), "mkh", &mut out);
    let script = String::from_utf8(out).expect("clap writes UTF-8");
    let names = "$(mkh ls --names 2>/dev/null)";
    match shell {
        // Each subcommand's case sets `opts="..."`: the names join its words.
        ShellArg::Bash => {
            let mut script = script;
            for sub in TAKES_ENV_NAME {
                let case = format!("mkh__subcmd__{sub})\n            opts=\"");
                script = script.replacen(&case, &format!("{case}{names} "), 1);
            }
            script
        }
        // Every `name` argument is an environment's (see TAKES_ENV_NAME). The helper goes
        // before the script's last lines, which call `_mkh` at once when autoloaded.
        ShellArg::Zsh => {
            let helper = "(( $+functions[_mkh_environments] )) ||\n_mkh_environments() {\n    local -a names\n    names=(${(f)\"$(mkh ls --names 2>/dev/null)\"})\n    names=(${names:#})\n    compadd -a names\n}\n\n";
            let script = script.replace(
                "':name -- The environment (`mkh ls`):_default' \\",
                "':name -- The environment (`mkh ls`):_mkh_environments' \\",
            );
            match script.rfind("if [ \"$funcstack[1]\" = \"_mkh\" ]") {
                Some(at) => format!("{}{helper}{}", &script[..at], &script[at..]),
                None => script + "\n" + helper,
            }
        }
        // clap's script defines __fish_mkh_using_subcommand: true only when that word is the
        // subcommand (not `mkh help ip`).
        ShellArg::Fish => {
            let mut script = script;
            for sub in TAKES_ENV_NAME {
                script += &format!(
                    "complete -c mkh -n \"__fish_mkh_using_subcommand {sub}\" -f -a \"(mkh ls --names 2>/dev/null)\"\n"
                );
            }
            script
        }
    }
}

fn ls(settings: &Settings, json: bool, names: bool) -> Result<ExitCode> {
    let envs = admin::environments(settings)?;
    if names {
        for e in &envs {
            println!("{}", e.name);
        }
    } else if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&envs).expect("serialisable")
        );
    } else if envs.is_empty() {
        println!("no mkh environments on {}", settings.libvirt_uri);
    } else {
        println!("{:<24} {:<8} {:>8}  OBJECTS", "NAME", "OWNER", "PID");
        for e in envs {
            let kind = match e.kind {
                OwnerKind::Cli => "cli",
                OwnerKind::Process => "process",
            };
            let objects: Vec<String> = e
                .domains
                .iter()
                .cloned()
                .chain(e.networks.iter().map(|n| n.name.clone()))
                .collect();
            println!(
                "{:<24} {:<8} {:>8}  {}",
                e.name,
                kind,
                e.pid,
                objects.join(" ")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn reap(settings: &Settings, all: bool, run: Option<&str>, json: bool) -> Result<ExitCode> {
    let scope = if all {
        ReapScope::IncludingCli
    } else {
        ReapScope::DeadOwners
    };
    let report = admin::reap(settings, scope, run)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("serialisable")
        );
    } else {
        for r in &report.removed {
            println!("removed {:?} {} ({}): {}", r.kind, r.name, r.env, r.reason);
        }
        for r in &report.kept {
            println!("kept    {:?} {} ({}): {}", r.kind, r.name, r.env, r.reason);
        }
        for e in &report.errors {
            eprintln!("mkh: reap: {e}");
        }
        if report.removed.is_empty() && report.errors.is_empty() {
            println!("nothing to reap");
        }
    }
    Ok(if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn audit(settings: &Settings, run: Option<&str>, json: bool) -> Result<ExitCode> {
    let audit = admin::audit(settings, run)?;
    let (of_run, others) = (&audit.left_by_run, &audit.others);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&audit).expect("serialisable")
        );
    } else {
        for o in of_run {
            println!(
                "LEFT   {:?} {} env={} test={} pid={}",
                o.kind,
                o.name,
                o.owner.env,
                o.owner.test.as_deref().unwrap_or("-"),
                o.owner.process.pid
            );
        }
        for o in others {
            println!(
                "other  {:?} {} env={} kind={:?} run={} (reported, not removed)",
                o.kind, o.name, o.owner.env, o.owner.kind, o.owner.run_id
            );
        }
        match run {
            Some(r) if of_run.is_empty() => println!("run {r} left nothing in libvirt"),
            Some(r) => println!("run {r} left {} object(s) in libvirt", of_run.len()),
            None => println!("{} object(s) claimed by mkh", others.len()),
        }
    }
    Ok(if of_run.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_completion_script_offers_environment_names_where_a_name_is_asked() {
        let bash = completions(ShellArg::Bash);
        for sub in TAKES_ENV_NAME {
            assert!(
                bash.contains(&format!(
                    "mkh__subcmd__{sub})\n            opts=\"$(mkh ls --names 2>/dev/null) "
                )),
                "bash: {sub} not patched"
            );
        }
        let zsh = completions(ShellArg::Zsh);
        assert_eq!(
            zsh.matches(":_mkh_environments' \\").count(),
            TAKES_ENV_NAME.len()
        );
        let helper = zsh.find("_mkh_environments() {").expect("the helper");
        let autoload = zsh
            .find("if [ \"$funcstack[1]\" = \"_mkh\" ]")
            .expect("clap's tail");
        assert!(
            helper < autoload,
            "the helper must exist before _mkh first runs"
        );
        let fish = completions(ShellArg::Fish);
        for sub in TAKES_ENV_NAME {
            assert!(
                fish.contains(&format!(
                    "-n \"__fish_mkh_using_subcommand {sub}\" -f -a \"(mkh ls --names 2>/dev/null)\""
                )),
                "fish: {sub}"
            );
        }
        assert!(fish.contains("function __fish_mkh_using_subcommand"));
    }

    #[test]
    fn a_cause_already_said_is_not_said_again() {
        let e = Error::Io {
            path: "/x".into(),
            source: std::io::Error::other("disk on fire"),
        };
        let report = error_report(&e);
        assert_eq!(report.matches("disk on fire").count(), 1, "{report}");
    }
}
