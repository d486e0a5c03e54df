//! Runs a checked scenario: brings its environment up, runs its steps in order with live
//! progress, tears the environment down (or hands a failed one to the CLI with `keep`), and
//! reports each step.
//!
//! Faults are made inside the guests, with tools every machine has (the built-in guest ships
//! them; so does minikube's ISO): `tc` netem for impairments and `tc` ingress filters for
//! blocks, blackhole routes for partitions. This host's kernel has no netem qdisc, so the
//! guest's is the one mkh can rely on; each step's report names the mechanism it used.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use serde::Serialize;

use mkh::blocking::{Env, Machine};
use mkh::{
    BackendKind, MachineOptions, NetworkRole, Settings, MAX_DHCP_LEASE as MAX_LEASE,
    PROGRESS_TARGET,
};

use crate::error::{Error, Result};
use crate::format::{BackendChoice, Block, DhcpAction, Impair, Lookup, Reach, Scenario, Step};

/// How to run scenarios.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// mkh's settings (libvirt, caches, minikube binary, timeouts).
    pub settings: Settings,
    /// Leave a failed scenario's environment up, handed to the CLI.
    pub keep_failed: bool,
}

/// What became of a scenario.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "outcome", content = "reason")]
pub enum Outcome {
    /// Every step passed.
    Passed,
    /// A step's check did not hold.
    Failed,
    /// A step, or the environment, could not be done.
    Error,
    /// Not run: what it needs is missing here.
    Skipped(String),
}

/// One step as it ran.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// 1-based.
    pub index: usize,
    /// Its line in the file.
    pub line: usize,
    /// What it does, in one line.
    pub step: String,
    /// Whether it passed.
    pub passed: bool,
    /// Seconds it took.
    pub seconds: f64,
    /// How it was done (for faults), or why it failed (expected and seen).
    pub detail: Option<String>,
}

/// One scenario's run.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    /// The file.
    pub file: PathBuf,
    /// What it reproduces.
    pub description: String,
    /// The environment it ran in (removed afterwards unless `kept`).
    pub environment: Option<String>,
    /// Passed, failed, error or skipped.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// What went wrong, when something did: `file:line: step: expected …, seen …`.
    pub problem: Option<String>,
    /// The steps that ran.
    pub steps: Vec<StepReport>,
    /// Seconds, environment included.
    pub seconds: f64,
    /// The environment left up for inspection (`keep`), to remove with `mkh down NAME`.
    pub kept: Option<String>,
    /// Where a failed scenario's artifacts are.
    pub artifacts: Option<PathBuf>,
}

/// A step that did not pass.
enum StepError {
    /// A check did not hold.
    Check { expected: String, seen: String },
    /// Something could not be done.
    Mkh(Error),
}

impl From<Error> for StepError {
    fn from(e: Error) -> Self {
        StepError::Mkh(e)
    }
}

impl From<mkh::Error> for StepError {
    fn from(e: mkh::Error) -> Self {
        StepError::Mkh(e.into())
    }
}

type StepResult = std::result::Result<Option<String>, StepError>;

/// Runs one scenario.
pub fn run(scenario: &Scenario, options: &RunOptions) -> ScenarioReport {
    let started = Instant::now();
    let mut report = ScenarioReport {
        file: scenario.file.clone(),
        description: scenario.description.clone(),
        environment: None,
        outcome: Outcome::Passed,
        problem: None,
        steps: Vec::new(),
        seconds: 0.0,
        kept: None,
        artifacts: None,
    };
    // For the program's progress view (the `mkh` command's), or its log.
    let say = |line: String| tracing::info!(target: PROGRESS_TARGET, step = "done", "{line}");
    say(format!(
        "{}: {}",
        scenario.file.display(),
        first_line(&scenario.description)
    ));
    if let Some(reason) = missing_need(scenario, &options.settings) {
        say(format!("skipped: {reason}"));
        report.outcome = Outcome::Skipped(reason);
        return report;
    }
    let settings = environment_settings(scenario, &options.settings);
    let artifacts = artifact_dir(&settings, scenario);
    say(format!(
        "bringing up the environment ({} backend, {} machine(s))",
        match scenario.environment.backend {
            BackendChoice::Builtin => "built-in",
            BackendChoice::Minikube => "minikube",
        },
        scenario.environment.machine_count()
    ));
    let env = match bring_up(scenario, &settings, &artifacts) {
        Ok(env) => env,
        Err(e) => {
            report.outcome = Outcome::Error;
            report.problem = Some(format!("{}: the environment: {e}", scenario.file.display()));
            say(format!("error: {e}"));
            report.seconds = started.elapsed().as_secs_f64();
            return report;
        }
    };
    say(format!("environment {} is up", env.name()));
    report.environment = Some(env.name().to_owned());
    let mut state = State {
        settings: settings.clone(),
        remembered: BTreeMap::new(),
        blocks: Default::default(),
        next_pref: 0,
    };
    let mut env = env;
    let total = scenario.steps.len();
    for (i, (line, step)) in scenario.steps.iter().enumerate() {
        let step_started = Instant::now();
        let text = summary(step);
        running(format!("[{:>2}/{total}] {text}", i + 1));
        let result = run_step(&mut env, step, &mut state);
        let seconds = step_started.elapsed().as_secs_f64();
        let (passed, detail) = match &result {
            Ok(detail) => (true, detail.clone()),
            Err(StepError::Check { expected, seen }) => {
                (false, Some(format!("expected {expected}, seen {seen}")))
            }
            Err(StepError::Mkh(e)) => (false, Some(e.to_string())),
        };
        say(format!(
            "[{:>2}/{total}] {text} … {} ({seconds:.2} s){}",
            i + 1,
            if passed { "ok" } else { "FAILED" },
            detail
                .as_ref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        ));
        report.steps.push(StepReport {
            index: i + 1,
            line: *line,
            step: text.clone(),
            passed,
            seconds,
            detail: detail.clone(),
        });
        if !passed {
            report.outcome = match result {
                Err(StepError::Check { .. }) => Outcome::Failed,
                _ => Outcome::Error,
            };
            report.problem = Some(format!(
                "{}:{line}: step {} ({text}): {}",
                scenario.file.display(),
                i + 1,
                detail.unwrap_or_default()
            ));
            break;
        }
    }
    if report.outcome != Outcome::Passed {
        report.artifacts = env.collect_artifacts(report.problem.as_deref().unwrap_or(""));
        if let Some(dir) = &report.artifacts {
            say(format!("what explains it is in {}", dir.display()));
        }
        if options.keep_failed {
            // Handed over or not, the environment is gone from this process's hands: one that
            // could not be handed over is torn down as its handle drops.
            match env.hand_over_to_cli() {
                Ok(d) => {
                    say(format!(
                        "kept {} up: `mkh down {}` removes it",
                        d.name, d.name
                    ));
                    report.kept = Some(d.name);
                }
                Err(e) => say(format!("could not keep the environment: {e}")),
            }
            report.seconds = started.elapsed().as_secs_f64();
            say_outcome(&report);
            return report;
        }
    }
    if let Err(e) = env.teardown() {
        say(format!("teardown: {e}"));
        if report.outcome == Outcome::Passed {
            report.outcome = Outcome::Error;
            report.problem = Some(format!("teardown: {e}"));
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    say_outcome(&report);
    report
}

fn say_outcome(report: &ScenarioReport) {
    tracing::info!(
        target: PROGRESS_TARGET,
        step = "done",
        "{}: {} in {:.1} s",
        report.file.display(),
        outcome_word(&report.outcome),
        report.seconds
    );
}

/// Work whose outcome a "done" line will say (a step): a spinner in the `mkh` command's view.
fn running(text: String) {
    tracing::info!(target: PROGRESS_TARGET, step = "running", "{text}");
}

/// `passed`, `FAILED`, `error` or `skipped`.
pub fn outcome_word(o: &Outcome) -> &'static str {
    match o {
        Outcome::Passed => "passed",
        Outcome::Failed => "FAILED",
        Outcome::Error => "error",
        Outcome::Skipped(_) => "skipped",
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim()
}

/// What the scenario needs that this host lacks, if anything.
fn missing_need(scenario: &Scenario, settings: &Settings) -> Option<String> {
    let talks_to_kube = scenario
        .steps
        .iter()
        .any(|(_, s)| matches!(s, Step::Apply(_) | Step::ExpectClusterIp(_)));
    if talks_to_kube && !cfg!(feature = "kube") {
        return Some(
            "its Kubernetes steps need mkh-scenario built with its `kube` feature (the `mkh` command has it)"
                .into(),
        );
    }
    let from_host = scenario.steps.iter().any(|(_, s)| {
        matches!(s, Step::ExpectReachable(r) | Step::ExpectUnreachable(r)
            if r.from.get_ref().as_str() == "host")
    });
    if from_host && !settings.libvirt_is_local() {
        return Some(format!(
            "its steps from the host probe the guests from this machine, which has no route to the networks of the remote libvirt at {}: run it on the libvirt host",
            settings.libvirt_uri
        ));
    }
    if scenario.environment.backend == BackendChoice::Minikube {
        if let Err(e) = settings.minikube_binary() {
            return Some(format!("needs minikube ({e})"));
        }
    }
    None
}

fn environment_settings(scenario: &Scenario, settings: &Settings) -> Settings {
    let e = &scenario.environment;
    let mut s = settings.clone();
    s.backend = match e.backend {
        BackendChoice::Builtin => BackendKind::Builtin,
        BackendChoice::Minikube => BackendKind::Minikube,
    };
    if let Some(m) = &e.memory_mib {
        s.memory_mib = Some(*m.get_ref());
    }
    if let Some(c) = &e.cpus {
        s.cpus = Some(*c.get_ref());
    }
    if let Some(n) = &e.nodes {
        s.nodes = Some(*n.get_ref());
    }
    // After the settings' own (MKH_MINIKUBE_ARGS, e.g. `--force` for root).
    if let Some(args) = &e.minikube_args {
        s.minikube_args
            .extend(args.get_ref().iter().map(|a| a.get_ref().clone()));
    }
    s
}

/// How many failed scenarios' artifact directories are kept (the oldest go first).
const ARTIFACTS_KEPT: usize = 20;
/// How long past its lease time a held lease may take to leave the host's list: dnsmasq
/// removes it on its next timer, libvirt filters it by its expiry stamp at once.
const LEASE_EXPIRY_MARGIN: Duration = Duration::from_secs(30);

fn artifact_dir(settings: &Settings, scenario: &Scenario) -> PathBuf {
    let root = settings.state_dir.join("scenario-artifacts");
    prune_oldest(&root, ARTIFACTS_KEPT);
    let stem = scenario
        .file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "scenario".into());
    root.join(format!(
        "{stem}-{}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        std::process::id()
    ))
}

/// Removes the oldest directories in `dir` so that `keep` remain once one more is made.
fn prune_oldest(dir: &std::path::Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    found.sort();
    let excess = (found.len() + 1).saturating_sub(keep);
    for (_, path) in found.into_iter().take(excess) {
        let _ = std::fs::remove_dir_all(path);
    }
}

fn bring_up(scenario: &Scenario, settings: &Settings, artifacts: &std::path::Path) -> Result<Env> {
    let mut builder = mkh::Env::builder();
    if let Some(lease) = &scenario.environment.dhcp_lease_s {
        builder = builder.dhcp_lease_time(Duration::from_secs(u64::from(*lease.get_ref())));
    }
    let mut env = builder
        .settings(settings.clone())
        .backend(settings.backend())
        .artifacts_on_failure(artifacts)
        .up_blocking()?;
    if scenario.environment.backend == BackendChoice::Builtin {
        for i in 1..scenario.environment.machine_count() as usize {
            env.add_machine(&machine_options(settings, i))?;
        }
    }
    Ok(env)
}

/// The built-in guest's options for machine `index` (0: the environment's first machine).
fn machine_options(settings: &Settings, index: usize) -> MachineOptions {
    let base = match settings.backend() {
        mkh::Backend::Builtin(o) => o,
        _ => MachineOptions::default(),
    };
    match index {
        0 => base,
        i => base.with_suffix(format!("m{}", i + 1)),
    }
}

/// What the steps leave for later steps.
struct State {
    /// The environment's settings (for machines made again).
    settings: Settings,
    remembered: BTreeMap<String, String>,
    /// Active blocks: (machine, network, what) → the ingress filter's preference.
    blocks: std::collections::HashMap<(usize, NetworkRole, String), u32>,
    next_pref: u32,
}

fn machine_index(name: &str) -> usize {
    name.trim_start_matches('m').parse::<usize>().unwrap_or(1) - 1
}

fn machine(env: &Env, name: &str) -> Machine {
    env.machines().swap_remove(machine_index(name))
}

fn selected(env: &Env, name: &str) -> Vec<Machine> {
    if name == "all" {
        env.machines()
    } else {
        vec![machine(env, name)]
    }
}

/// The network a fault on `role` is set up over: the other one.
fn control(role: NetworkRole) -> NetworkRole {
    match role {
        NetworkRole::Nat => NetworkRole::Private,
        NetworkRole::Private => NetworkRole::Nat,
    }
}

/// Runs a shell command in a guest as `docker`; fails unless it exits 0.
fn guest(m: &Machine, over: NetworkRole, command: &str) -> Result<String> {
    let out = m.ssh(over)?.exec_within(command, Duration::from_secs(60))?;
    if out.status == 0 {
        Ok(out.stdout)
    } else {
        Err(Error::GuestCommand {
            machine: m.name().to_owned(),
            command: command.to_owned(),
            status: out.status,
            stderr: out.stderr.trim().to_owned(),
        })
    }
}

/// The guest's name for the NIC on `role` (found by its MAC).
fn nic_name(m: &Machine, role: NetworkRole) -> Result<String> {
    let mac = m.mac(role).to_ascii_lowercase();
    let found = guest(
        m,
        control(role),
        &format!(
            "for d in /sys/class/net/*; do [ \"$(cat $d/address)\" = {mac} ] && echo \"${{d##*/}}\"; done; true"
        ),
    )?;
    found
        .lines()
        .next()
        .map(str::to_owned)
        .ok_or_else(|| Error::GuestCommand {
            machine: m.name().to_owned(),
            command: format!("find the NIC with MAC {mac}"),
            status: 1,
            stderr: "no interface has that MAC".into(),
        })
}

fn retrying(within: Option<f64>, mut attempt: impl FnMut() -> StepResult) -> StepResult {
    let deadline = within.map(|s| Instant::now() + Duration::from_secs_f64(s));
    loop {
        let result = attempt();
        match (&result, deadline) {
            (Ok(_), _) | (_, None) => return result,
            (Err(_), Some(d)) if Instant::now() >= d => return result,
            _ => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

fn check(holds: bool, expected: impl Into<String>, seen: impl Into<String>) -> StepResult {
    if holds {
        Ok(None)
    } else {
        Err(StepError::Check {
            expected: expected.into(),
            seen: seen.into(),
        })
    }
}

fn run_step(env: &mut Env, step: &Step, state: &mut State) -> StepResult {
    if let Step::Recreate(r) = step {
        let index = machine_index(r.machine.get_ref());
        let name = env.machines()[index].name().to_owned();
        env.recreate_machine(&name, &machine_options(&state.settings, index), r.wait)?;
        return Ok(Some(
            "domain removed and defined again: new MACs, same name and hostname".into(),
        ));
    }
    let env = &*env;
    match step {
        Step::Recreate(_) => unreachable!("handled above"),
        Step::Start(s) => {
            for m in selected(env, s.machine.get_ref()) {
                m.start()?;
            }
            Ok(None)
        }
        Step::Stop(s) => {
            for m in selected(env, s.machine.get_ref()) {
                m.stop()?;
            }
            Ok(None)
        }
        Step::Restart(s) => {
            for m in selected(env, s.machine.get_ref()) {
                m.restart()?;
            }
            Ok(None)
        }
        Step::Link(l) => {
            machine(env, l.machine.get_ref()).set_link(l.network, l.up)?;
            Ok(Some("libvirt link state of the NIC".into()))
        }
        Step::DestroyNetwork(n) => {
            env.stop_network(n.network)?;
            Ok(None)
        }
        Step::StartNetwork(n) => {
            env.start_network(n.network)?;
            Ok(None)
        }
        Step::Partition(p) | Step::Heal(p) => {
            let cut = matches!(step, Step::Partition(_));
            let pair: Vec<Machine> = p
                .machines
                .get_ref()
                .iter()
                .map(|m| machine(env, m.get_ref()))
                .collect();
            for (a, b) in [(&pair[0], &pair[1]), (&pair[1], &pair[0])] {
                let peer = b.ip(p.network)?;
                let command = if cut {
                    format!("ip route replace blackhole {peer}/32")
                } else {
                    format!("ip route del blackhole {peer}/32 2>/dev/null; true")
                };
                guest(a, control(p.network), &command)?;
            }
            Ok(Some("blackhole routes in both guests".into()))
        }
        Step::Impair(i) => impair(env, i),
        Step::ClearImpairment(n) => {
            let m = &machine(env, n.machine.get_ref());
            let nic = nic_name(m, n.network)?;
            guest(
                m,
                control(n.network),
                &format!("tc qdisc del dev {nic} root 2>/dev/null; true"),
            )?;
            Ok(Some(format!("netem removed from the guest's {nic}")))
        }
        Step::Dhcp(d) => {
            let m = &machine(env, d.machine.get_ref());
            let nic = nic_name(m, d.network)?;
            let verb = d.action.guest_verb();
            // The built-in guest's root service (see its /init); elsewhere, no way is known.
            guest(
                m,
                control(d.network),
                &format!(
                    "[ -p /run/mkh/dhcp-request ] || {{ echo 'no /run/mkh/dhcp-request: only the built-in guest takes DHCP requests' >&2; exit 1; }}; echo '{verb} {nic}' >/run/mkh/dhcp-request"
                ),
            )?;
            if d.action != DhcpAction::Expire {
                return Ok(Some(format!("udhcpc on the guest's {nic} asked to {verb}")));
            }
            // The host stops listing a lease once its expiry time has passed (libvirt's
            // networkGetDHCPLeases skips expired ones); dnsmasq's clock, not the guest's speed,
            // sets when: no timeout scale.
            let lease = env.dhcp_lease_time().unwrap_or(MAX_LEASE);
            running(format!(
                "waiting for the lease of {} on {} to expire (lease time {} s)",
                m.name(),
                d.network.as_str(),
                lease.as_secs()
            ));
            let held = Instant::now();
            let deadline = held + lease + LEASE_EXPIRY_MARGIN;
            loop {
                match m.ip_within(d.network, Duration::from_secs(1)) {
                    Ok(ip) if Instant::now() >= deadline => {
                        return check(
                            false,
                            "the lease gone from the host",
                            format!("a lease for {ip}"),
                        )
                    }
                    Ok(_) => std::thread::sleep(Duration::from_millis(500)),
                    Err(mkh::Error::NoLease(_)) => {
                        return Ok(Some(format!(
                            "udhcpc on the guest's {nic} held (SIGSTOP); the host's lease expired after {:.0} s (lease time {} s)",
                            held.elapsed().as_secs_f64(),
                            lease.as_secs()
                        )))
                    }
                    // Only a lease still listed is worth waiting for.
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Step::Block(b) => block(env, b, state, true),
        Step::Unblock(b) => block(env, b, state, false),
        Step::Run(r) => {
            let m = &machine(env, r.machine.get_ref());
            let within = r.within_s.as_ref().map(|s| *s.get_ref());
            let mut output = String::new();
            let result = retrying(within, || {
                let out = m
                    .ssh(r.network)?
                    .exec_within(r.command.get_ref(), Duration::from_secs(120))?;
                if let Some(status) = &r.status {
                    check(
                        i64::from(out.status) == *status.get_ref(),
                        format!("exit status {}", status.get_ref()),
                        format!("{} (stderr: {:?})", out.status, clip(&out.stderr)),
                    )?;
                }
                if let Some(pattern) = &r.stdout {
                    let re = regex::Regex::new(pattern.get_ref()).expect("checked when parsed");
                    check(
                        re.is_match(&out.stdout),
                        format!("stdout matching /{}/", pattern.get_ref()),
                        format!("{:?}", clip(&out.stdout)),
                    )?;
                }
                output = out.stdout.trim().to_owned();
                Ok(None)
            });
            if result.is_ok() {
                if let Some(name) = &r.remember {
                    state.remembered.insert(name.get_ref().clone(), output);
                }
            }
            result
        }
        Step::RememberIp(r) => {
            let ip = looked_up(env, &machine(env, r.machine.get_ref()), r.network, r.by)?;
            state
                .remembered
                .insert(r.name.get_ref().clone(), ip.to_string());
            Ok(Some(format!("{} = {ip}", r.name.get_ref())))
        }
        Step::ExpectIp(e) => {
            let m = &machine(env, e.machine.get_ref());
            retrying(e.within_s.as_ref().map(|s| *s.get_ref()), || {
                let ip = looked_up(env, m, e.network, e.by)?;
                if let Some(cidr) = &e.within {
                    let net: Ipv4Net = cidr.get_ref().parse().expect("checked when parsed");
                    return check(net.contains(&ip), format!("an IP in {net}"), ip.to_string());
                }
                let (name, same) = match (&e.equals, &e.differs) {
                    (Some(n), _) => (n, true),
                    (_, Some(n)) => (n, false),
                    _ => unreachable!("checked when parsed"),
                };
                let remembered = &state.remembered[name.get_ref()];
                check(
                    (ip.to_string() == *remembered) == same,
                    format!(
                        "{} {} ({remembered})",
                        if same {
                            "the same IP as"
                        } else {
                            "an IP other than"
                        },
                        name.get_ref()
                    ),
                    ip.to_string(),
                )
            })
        }
        Step::ExpectReachable(r) => reach(env, r, true),
        Step::ExpectUnreachable(r) => reach(env, r, false),
        Step::ExpectSsh(n) => {
            let m = &machine(env, n.machine.get_ref());
            retrying(n.within_s.as_ref().map(|s| *s.get_ref()), || {
                let seen = match m.ssh(n.network).and_then(|s| s.exec("echo ok")) {
                    Ok(out) if out.stdout.trim() == "ok" => return Ok(None),
                    Ok(out) => format!("`echo ok` printed {:?}", clip(&out.stdout)),
                    Err(e) => e.to_string(),
                };
                check(false, format!("SSH over {}", n.network.as_str()), seen)
            })
        }
        Step::ExpectIpFails(f) => {
            let re = regex::Regex::new(f.matches.get_ref()).expect("checked when parsed");
            let expected = format!("an error matching /{}/", f.matches.get_ref());
            let m = &machine(env, f.machine.get_ref());
            // A lease that is there answers at once: wait no longer than that.
            retrying(f.within_s.as_ref().map(|s| *s.get_ref()), || {
                match m.ip_within(f.network, Duration::from_secs(1)) {
                    Ok(ip) => check(false, expected.clone(), format!("an answer: {ip}")),
                    Err(e) => {
                        let message = e.to_string();
                        check(re.is_match(&message), expected.clone(), message.clone())
                            .map(|_| Some(clip(&message)))
                    }
                }
            })
        }
        Step::Apply(a) => Ok(Some(crate::kube_steps::apply(env, a)?)),
        Step::ExpectClusterIp(c) => retrying(c.within_s.as_ref().map(|s| *s.get_ref()), || {
            let seen = crate::kube_steps::cluster_ip(env, c)?;
            let shown = seen.map_or_else(
                || "no such Service (or no ClusterIP)".into(),
                |ip| ip.to_string(),
            );
            let service = format!("{}/{}", c.namespace, c.service.get_ref());
            match (&c.within, &c.equals) {
                (Some(cidr), _) => {
                    let net: Ipv4Net = cidr.get_ref().parse().expect("checked when parsed");
                    check(
                        seen.is_some_and(|ip| net.contains(&ip)),
                        format!("the ClusterIP of {service} in {net}"),
                        shown,
                    )
                }
                (_, Some(ip)) => check(
                    seen.is_some_and(|s| s.to_string() == *ip.get_ref()),
                    format!("the ClusterIP of {service} to be {}", ip.get_ref()),
                    shown,
                ),
                _ => unreachable!("checked when parsed"),
            }
        }),
        Step::Sleep(s) => {
            std::thread::sleep(Duration::from_secs_f64(*s.seconds.get_ref()));
            Ok(None)
        }
    }
}

/// A machine's IP on `role`'s network, by its MAC (as mkh finds it) or by its hostname (the
/// first lease with that name, as a lookup by name finds it).
fn looked_up(env: &Env, m: &Machine, role: NetworkRole, by: Lookup) -> Result<Ipv4Addr> {
    match by {
        Lookup::Mac => Ok(m.ip(role)?),
        Lookup::Hostname => {
            let net = &network(env, role).name;
            let leases = env.leases(role)?;
            leases
                .iter()
                .find(|l| l.hostname.as_deref() == Some(m.name()))
                .map(|l| l.ip)
                .ok_or_else(|| Error::GuestCommand {
                    machine: m.name().to_owned(),
                    command: format!("look up the lease of hostname {} on {net}", m.name()),
                    status: 1,
                    stderr: "no lease has that hostname".into(),
                })
        }
    }
}

fn network(env: &Env, role: NetworkRole) -> &mkh::NetworkInfo {
    let pair = env.networks();
    match role {
        NetworkRole::Nat => &pair.nat,
        NetworkRole::Private => &pair.private,
    }
}

fn impair(env: &Env, i: &Impair) -> StepResult {
    let m = &machine(env, i.machine.get_ref());
    let nic = nic_name(m, i.network)?;
    let mut netem = String::new();
    if let Some(d) = &i.delay_ms {
        netem += &format!(" delay {}ms", d.get_ref());
        if let Some(j) = &i.jitter_ms {
            netem += &format!(" {}ms", j.get_ref());
        }
    }
    if let Some(l) = &i.loss_percent {
        netem += &format!(" loss {}%", l.get_ref());
    }
    if let Some(c) = &i.corrupt_percent {
        netem += &format!(" corrupt {}%", c.get_ref());
    }
    if let Some(r) = &i.rate_kbit {
        netem += &format!(" rate {}kbit", r.get_ref());
    }
    guest(
        m,
        control(i.network),
        &format!("tc qdisc replace dev {nic} root netem{netem}"),
    )?;
    Ok(Some(format!(
        "netem on the guest's {nic} (outgoing):{netem}"
    )))
}

fn block(env: &Env, b: &Block, state: &mut State, on: bool) -> StepResult {
    let index = machine_index(b.machine.get_ref());
    let m = &env.machines()[index];
    let nic = nic_name(m, b.network)?;
    let (what, matcher) = match (&b.port, &b.peer) {
        (Some(port), _) => (
            format!("port {}", port.get_ref()),
            format!(
                "match ip protocol 6 0xff match ip dport {} 0xffff",
                port.get_ref()
            ),
        ),
        (None, Some(peer)) => {
            let ip = if peer.get_ref() == "host" {
                network(env, b.network).gateway
            } else {
                machine(env, peer.get_ref()).ip(b.network)?
            };
            (
                format!("peer {} ({ip})", peer.get_ref()),
                format!("match ip src {ip}/32"),
            )
        }
        _ => unreachable!("checked when parsed"),
    };
    let key = (index, b.network, what.clone());
    if on {
        if state.blocks.contains_key(&key) {
            return Ok(Some(format!("{what} was blocked already")));
        }
        state.next_pref += 1;
        let pref = 100 + state.next_pref;
        guest(
            m,
            control(b.network),
            &format!(
                "tc qdisc add dev {nic} ingress 2>/dev/null; tc filter add dev {nic} parent ffff: pref {pref} protocol ip u32 {matcher} action drop"
            ),
        )?;
        state.blocks.insert(key, pref);
        Ok(Some(format!(
            "tc ingress filter on the guest's {nic} drops {what}"
        )))
    } else {
        let Some(pref) = state.blocks.remove(&key) else {
            return Ok(Some(format!("{what} was not blocked")));
        };
        guest(
            m,
            control(b.network),
            &format!("tc filter del dev {nic} parent ffff: pref {pref}"),
        )?;
        Ok(Some(format!("{what} unblocked on the guest's {nic}")))
    }
}

/// Reachability by ping, or by a TCP connection when `tcp_port` is given.
fn reach(env: &Env, r: &Reach, expect: bool) -> StepResult {
    let to = &machine(env, r.to.get_ref());
    let from = r.from.get_ref().as_str();
    retrying(r.within_s.as_ref().map(|s| *s.get_ref()), || {
        let ip = to.ip(r.network)?;
        let (how, answered) = match &r.tcp_port {
            None => {
                let answered = if from == "host" {
                    host_ping(ip)
                } else {
                    from_guest(
                        &machine(env, from),
                        r.network,
                        &format!("ping -c 1 -W 1 {ip}"),
                    )?
                };
                ("ping".to_owned(), answered)
            }
            Some(port) => {
                let port = *port.get_ref();
                let open = if from == "host" {
                    let addr = SocketAddr::from((ip, port));
                    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
                } else {
                    from_guest(
                        &machine(env, from),
                        r.network,
                        &format!("nc -w 2 {ip} {port} </dev/null >/dev/null"),
                    )?
                };
                (format!("TCP port {port}"), open)
            }
        };
        check(
            answered == expect,
            format!(
                "{} {} from {from} ({ip} over {})",
                how,
                if expect { "answering" } else { "silent" },
                r.network.as_str()
            ),
            format!(
                "{how} {}",
                if answered {
                    "answered"
                } else {
                    "got no answer"
                }
            ),
        )
    })
}

/// Whether a probe run in `source` (over the other network than the one probed) exits 0.
fn from_guest(source: &Machine, probed: NetworkRole, command: &str) -> Result<bool> {
    let out = source
        .ssh(control(probed))?
        .exec_within(command, Duration::from_secs(10))?;
    Ok(out.status == 0)
}

fn host_ping(ip: Ipv4Addr) -> bool {
    std::process::Command::new("ping")
        .args(["-c", "1", "-W", "1", "-n", "-q", &ip.to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn clip(s: &str) -> String {
    const MAX: usize = 300;
    let s = s.trim();
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// A step in one line, for progress and reports.
pub fn summary(step: &Step) -> String {
    let nic = |m: &str, n: NetworkRole| format!("{m} {}", n.as_str());
    match step {
        Step::Start(m) => format!("start {}", m.machine.get_ref()),
        Step::Stop(m) => format!("stop {}", m.machine.get_ref()),
        Step::Restart(m) => format!("restart {}", m.machine.get_ref()),
        Step::Recreate(m) => format!("recreate {}", m.machine.get_ref()),
        Step::Link(l) => format!(
            "link {} {}",
            nic(l.machine.get_ref(), l.network),
            if l.up { "up" } else { "down" }
        ),
        Step::DestroyNetwork(n) => format!("destroy network {}", n.network.as_str()),
        Step::StartNetwork(n) => format!("start network {}", n.network.as_str()),
        Step::Partition(p) | Step::Heal(p) => format!(
            "{} {} on {}",
            if matches!(step, Step::Partition(_)) {
                "partition"
            } else {
                "heal"
            },
            p.machines
                .get_ref()
                .iter()
                .map(|m| m.get_ref().as_str())
                .collect::<Vec<_>>()
                .join(" | "),
            p.network.as_str()
        ),
        Step::Impair(i) => format!("impair {}", nic(i.machine.get_ref(), i.network)),
        Step::ClearImpairment(n) => {
            format!("clear impairment {}", nic(n.machine.get_ref(), n.network))
        }
        Step::Dhcp(d) => format!(
            "DHCP {} on {}",
            d.action.as_str(),
            nic(d.machine.get_ref(), d.network)
        ),
        Step::Block(b) | Step::Unblock(b) => format!(
            "{} {} on {}",
            if matches!(step, Step::Block(_)) {
                "block"
            } else {
                "unblock"
            },
            b.port
                .as_ref()
                .map(|p| format!("port {}", p.get_ref()))
                .or_else(|| b.peer.as_ref().map(|p| format!("peer {}", p.get_ref())))
                .unwrap_or_default(),
            nic(b.machine.get_ref(), b.network)
        ),
        Step::Run(r) => format!(
            "run on {}: {}",
            nic(r.machine.get_ref(), r.network),
            clip(r.command.get_ref())
        ),
        Step::RememberIp(r) => format!(
            "remember IP of {} as {}",
            nic(r.machine.get_ref(), r.network),
            r.name.get_ref()
        ),
        Step::ExpectIp(e) => format!(
            "expect IP of {}{}",
            nic(e.machine.get_ref(), e.network),
            if e.by == Lookup::Hostname {
                " by hostname"
            } else {
                ""
            }
        ),
        Step::ExpectReachable(r) => format!(
            "expect {} reachable from {} over {}",
            r.to.get_ref(),
            r.from.get_ref(),
            r.network.as_str()
        ),
        Step::ExpectUnreachable(r) => format!(
            "expect {} unreachable from {} over {}",
            r.to.get_ref(),
            r.from.get_ref(),
            r.network.as_str()
        ),
        Step::ExpectSsh(n) => format!("expect SSH to {}", nic(n.machine.get_ref(), n.network)),
        Step::ExpectIpFails(f) => format!(
            "expect `ip` of {} to fail",
            nic(f.machine.get_ref(), f.network)
        ),
        Step::Apply(a) => format!(
            "apply {}/{}",
            a.manifest
                .get_ref()
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or("?"),
            a.manifest
                .get_ref()
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(|n| n.as_str())
                .unwrap_or("?")
        ),
        Step::ExpectClusterIp(c) => format!(
            "expect the ClusterIP of {}/{}",
            c.namespace,
            c.service.get_ref()
        ),
        Step::Sleep(s) => format!("sleep {} s", s.seconds.get_ref()),
    }
}
