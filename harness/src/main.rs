//! The `mkh` command: environments that outlive a command, and the reaper.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use mkh::env::Backend;
use mkh::inventory::{claimed_objects, environments, EnvSummary};
use mkh::libvirt::Libvirt;
use mkh::machine::{Machine, MachineOptions, NetworkRole};
use mkh::minikube::MinikubeOptions;
use mkh::owner::OwnerKind;
use mkh::reaper::{self, ReapScope};
use mkh::{Error, Result};

#[derive(Parser)]
#[command(
    name = "mkh",
    version,
    about = "Throw-away minikube-like environments on libvirt for integration tests"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Bring up an environment that outlives this command: both networks and the built-in
    /// guest. Returns once SSH answers on both networks.
    Up {
        /// Environment name (also the machine's); default `mkh-<id>`.
        #[arg(long)]
        name: Option<String>,
        /// Guest memory in MiB.
        #[arg(long, default_value_t = 256)]
        memory: u32,
        /// Guest vCPUs.
        #[arg(long, default_value_t = 1)]
        cpus: u32,
        /// `builtin` (mkh boots its own guest) or `minikube` (`minikube start --driver=kvm2`,
        /// binary from MKH_MINIKUBE or PATH).
        #[arg(long, default_value = "builtin", value_parser = ["builtin", "minikube"])]
        backend: String,
        /// With `--backend minikube`: more `minikube start` arguments (after `--`).
        #[arg(last = true)]
        minikube_args: Vec<String>,
        /// Print the environment as JSON (schema version in "version").
        #[arg(long)]
        json: bool,
    },
    /// Print a machine's IP on one network (leases matched by MAC).
    Ip {
        name: String,
        #[arg(long, default_value = "private", value_parser = ["nat", "private"])]
        network: String,
    },
    /// SSH into an environment's machine as `docker`; with a command, run it and exit with its
    /// status.
    Ssh {
        name: String,
        /// Connect over this network.
        #[arg(long, default_value = "private", value_parser = ["nat", "private"])]
        network: String,
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Build (once) or find the cached guest image; print its files.
    Image,
    /// List environments mkh owns in libvirt.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Remove a CLI-owned environment and everything it created.
    Down { name: String },
    /// Remove what dead owners left behind (never objects mkh did not create).
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
    /// List every libvirt object mkh's metadata claims; with --run, fail if any of that run is left.
    Audit {
        /// A run id (MKH_RUN_ID or NEXTEST_RUN_ID of the run to check).
        #[arg(long)]
        run: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MKH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mkh: error: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Up {
            name,
            memory,
            cpus,
            backend,
            minikube_args,
            json,
        } => {
            let backend = match backend.as_str() {
                "minikube" => Backend::Minikube(MinikubeOptions {
                    extra_args: minikube_args,
                    memory_mib: Some(memory),
                    cpus: Some(cpus),
                    ..MinikubeOptions::default()
                }),
                _ => Backend::Builtin(MachineOptions {
                    memory_mib: memory,
                    vcpus: cpus,
                    ..MachineOptions::default()
                }),
            };
            up(name, backend, json)
        }
        Command::Ip { name, network } => ip(&name, &network),
        Command::Ssh {
            name,
            network,
            command,
        } => ssh(&name, &network, &command),
        Command::Image => image(),
        Command::Ls { json } => ls(json),
        Command::Down { name } => down(&name),
        Command::Reap { all, run, json } => reap(all, run.as_deref(), json),
        Command::Audit { run, json } => audit(run.as_deref(), json),
    }
}

fn up(name: Option<String>, backend: Backend, json: bool) -> Result<ExitCode> {
    let mut builder = mkh::Env::builder()
        .owner_kind(OwnerKind::Cli)
        .backend(backend);
    if let Some(name) = name {
        builder = builder.name(name);
    }
    let env = builder.up_blocking()?;
    let desc = env.describe()?;
    env.detach();
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
    println!(
        "  ssh -i {} {}@{}",
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

/// The first machine of a named environment, read back from libvirt.
fn machine_of(name: &str) -> Result<Machine> {
    let lv = Libvirt::connect()?;
    find_env(&lv, name)?.machine(&lv)
}

fn find_env(lv: &Libvirt, name: &str) -> Result<EnvSummary> {
    environments(&claimed_objects(lv)?)
        .into_iter()
        .find(|e| e.name == name)
        .ok_or_else(|| Error::UnknownEnvironment {
            name: name.to_owned(),
        })
}

fn role(network: &str) -> NetworkRole {
    NetworkRole::parse(network).expect("clap checked the value")
}

fn ip(name: &str, network: &str) -> Result<ExitCode> {
    println!("{}", machine_of(name)?.ip(role(network))?);
    Ok(ExitCode::SUCCESS)
}

fn ssh(name: &str, network: &str, command: &[String]) -> Result<ExitCode> {
    let machine = machine_of(name)?;
    let session = machine.ssh(role(network))?;
    if !command.is_empty() {
        let out = session.exec(&mkh::ssh::shell_join(command))?;
        print!("{}", out.stdout);
        eprint!("{}", out.stderr);
        return Ok(ExitCode::from(out.status.clamp(0, 255) as u8));
    }
    // Interactive: hand over to OpenSSH, pinned to the host key mkh has just checked.
    let target = session.target().clone();
    let known = machine.pin_host_key_for_openssh(&target)?;
    let status = std::process::Command::new("ssh")
        .arg("-i")
        .arg(&target.key)
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known.display()))
        .args([
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .arg(format!("{}@{}", target.user, target.ip))
        .status()
        .map_err(|e| Error::Ssh {
            target: target.ip.to_string(),
            problem: format!("cannot run ssh ({e}); install openssh-client"),
        })?;
    Ok(ExitCode::from(
        status.code().unwrap_or(255).clamp(0, 255) as u8
    ))
}

fn image() -> Result<ExitCode> {
    let image = mkh::machine::image::ensure_guest_image(&mkh::config::cache_dir())?;
    println!("kernel {}", image.kernel.display());
    println!("initrd {}", image.initrd.display());
    Ok(ExitCode::SUCCESS)
}

fn ls(json: bool) -> Result<ExitCode> {
    let lv = Libvirt::connect()?;
    let envs = environments(&claimed_objects(&lv)?);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&envs).expect("serialisable")
        );
    } else if envs.is_empty() {
        println!("no mkh environments on {}", lv.uri());
    } else {
        println!("{:<24} {:<8} {:>8}  OBJECTS", "NAME", "OWNER", "PID");
        for e in envs {
            let kind = match e.kind {
                OwnerKind::Cli => "cli",
                OwnerKind::Process => "process",
            };
            let objects: Vec<String> = e.domains.iter().chain(&e.networks).cloned().collect();
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

fn down(name: &str) -> Result<ExitCode> {
    let lv = Libvirt::connect()?;
    let env = find_env(&lv, name)?;
    if env.kind == OwnerKind::Process {
        return Err(Error::InvalidInput {
            what: "environment",
            value: name.to_owned(),
            problem: format!(
                "it belongs to process {} (test {}), not to the CLI",
                env.pid,
                env.test.as_deref().unwrap_or("-")
            ),
            fix: "it is removed when that process ends; `mkh reap` removes it if the process died",
        });
    }
    let problems = env.teardown(lv.uri()).run();
    if !problems.is_empty() {
        return Err(Error::Teardown {
            env: env.name,
            count: problems.len(),
            problems,
        });
    }
    println!("removed environment {name}");
    Ok(ExitCode::SUCCESS)
}

fn reap(all: bool, run: Option<&str>, json: bool) -> Result<ExitCode> {
    let lv = Libvirt::connect()?;
    let scope = if all {
        ReapScope::IncludingCli
    } else {
        ReapScope::DeadOwners
    };
    let report = reaper::sweep_run(&lv, scope, run)?;
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

fn audit(run: Option<&str>, json: bool) -> Result<ExitCode> {
    let lv = Libvirt::connect()?;
    let objects = claimed_objects(&lv)?;
    let (of_run, others): (Vec<_>, Vec<_>) = objects
        .iter()
        .partition(|o| run.is_some_and(|r| o.owner.run_id == r));
    if json {
        let doc = serde_json::json!({ "run": run, "left_by_run": of_run, "others": others });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("serialisable")
        );
    } else {
        for o in &of_run {
            println!(
                "LEFT   {:?} {} env={} test={} pid={}",
                o.kind,
                o.name,
                o.owner.env,
                o.owner.test.as_deref().unwrap_or("-"),
                o.owner.process.pid
            );
        }
        for o in &others {
            println!(
                "other  {:?} {} env={} kind={:?} run={} (reported, not removed)",
                o.kind, o.name, o.owner.env, o.owner.kind, o.owner.run_id
            );
        }
        match run {
            Some(r) if of_run.is_empty() => println!("run {r} left nothing in libvirt"),
            Some(r) => println!("run {r} left {} object(s) in libvirt", of_run.len()),
            None => println!("{} object(s) claimed by mkh", objects.len()),
        }
    }
    Ok(if of_run.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
