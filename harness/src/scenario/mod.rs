//! Scenario files: TOML files that bring up an environment, break its network in a precise way
//! and check what happens (`scenarios/README.md` teaches the format). [`Scenario::load`] parses
//! and checks a file whole before anything is created; [`run`] runs it; [`report`] writes the
//! summary table, JSON and JUnit.

mod format;
mod kube_steps;
pub mod report;
mod run;

pub use format::{BackendChoice, EnvironmentSpec, Scenario, Step, MAX_FILE_BYTES};
pub use run::{
    outcome_word, run, summary, Outcome, Progress, RunOptions, ScenarioReport, StepReport,
};
