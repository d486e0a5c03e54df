//! Scenario files: TOML files that bring up an environment, break its network in a precise way
//! and check what happens (`scenarios/README.md` teaches the format). [`Scenario::load`] parses
//! and checks a file whole before anything is created; [`run`] runs it; [`report`] writes the
//! summary table, JSON and JUnit.
#![warn(missing_docs)]

mod error;
mod format;
mod kube_steps;
pub mod report;
mod run;

pub use error::{Error, Result};

pub use format::{BackendChoice, EnvironmentSpec, Scenario, Step, MAX_FILE_BYTES};
pub use run::{outcome_word, run, summary, Outcome, RunOptions, ScenarioReport, StepReport};
