//! Scenario files: TOML files that bring up an environment, break its network in a precise way
//! and check what happens (`scenarios/README.md` teaches the format). [`Scenario::load`] parses
//! and checks a file whole before anything is created; [`run`] runs it; [`report`] writes the
//! summary table, JSON and JUnit. Each family of steps is parsed, checked, run and summarised in
//! a file of its own under `steps/`.
#![warn(missing_docs)]

mod error;
mod format;
pub mod report;
mod run;
mod steps;

pub use error::{Error, Result};

pub use format::{BackendChoice, EnvironmentSpec, Scenario, MAX_FILE_BYTES};
pub use run::{outcome_word, run, Outcome, RunOptions, ScenarioReport, StepReport};
pub use steps::{summary, Step};
