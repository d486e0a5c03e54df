//! Runs a checked scenario: brings its environment up, runs its steps in order with live
//! progress, tears the environment down (or hands a failed one to the CLI with `keep`), and
//! reports each step. How each step runs is its family's, in `steps/`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use mkh::blocking::Env;
use mkh::{BackendKind, MachineOptions, Settings, PROGRESS_TARGET};

use crate::error::Result;
use crate::format::{BackendChoice, Scenario};
use crate::steps::{summary, State, StepError};

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
    let mut state = State::new(settings.clone());
    let mut env = env;
    let total = scenario.steps.len();
    for (i, (line, step)) in scenario.steps.iter().enumerate() {
        let step_started = Instant::now();
        let text = summary(step);
        running(format!("[{:>2}/{total}] {text}", i + 1));
        let result = step.run(&mut env, &mut state);
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
pub(crate) fn running(text: String) {
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
    let talks_to_kube = scenario.steps.iter().any(|(_, s)| s.talks_to_kube());
    if talks_to_kube && !cfg!(feature = "kube") {
        return Some(
            "its Kubernetes steps need mkh-scenario built with its `kube` feature (the `mkh` command has it)"
                .into(),
        );
    }
    let from_host = scenario.steps.iter().any(|(_, s)| s.probes_from_host());
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
pub(crate) fn machine_options(settings: &Settings, index: usize) -> MachineOptions {
    let base = match settings.backend() {
        mkh::Backend::Builtin(o) => o,
        _ => MachineOptions::default(),
    };
    match index {
        0 => base,
        i => base.with_suffix(format!("m{}", i + 1)),
    }
}
