//! What the steps' checks share: errors that point into the file, the environment the steps
//! run in, the names earlier steps remembered, and the rules for machines, durations,
//! percentages, patterns and addresses.

use std::collections::BTreeSet;

use ipnet::Ipv4Net;
use toml::Spanned;

use super::{MachineRef, Origin};
use crate::error::Result;
use crate::format::{BackendChoice, Checker, EnvironmentSpec};

/// The longest wait, delay or sleep a step may ask for, in seconds.
const MAX_SECONDS: f64 = 3600.0;

/// Checks a scenario's steps in order, one at a time.
pub(crate) struct StepChecker<'a> {
    file: &'a Checker<'a>,
    /// The `[environment]` table.
    pub(super) environment: &'a EnvironmentSpec,
    /// What the steps checked so far remember (`remember-ip`, `run` … `remember`).
    remembered: BTreeSet<String>,
}

impl<'a> StepChecker<'a> {
    pub(crate) fn new(file: &'a Checker<'a>, environment: &'a EnvironmentSpec) -> Self {
        StepChecker {
            file,
            environment,
            remembered: BTreeSet::new(),
        }
    }

    /// An error at `span` of the file.
    pub(super) fn err<T>(
        &self,
        span: std::ops::Range<usize>,
        problem: impl Into<String>,
    ) -> Result<T> {
        self.file.err(span, problem)
    }

    pub(super) fn machine(&self, m: &MachineRef, all_allowed: bool) -> Result<()> {
        let count = self.environment.machine_count();
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

    pub(super) fn origin(&self, o: &Origin) -> Result<()> {
        if o.get_ref() == "host" {
            Ok(())
        } else {
            let count = self.environment.machine_count();
            let machines: Vec<String> = (1..=count).map(|i| format!("m{i}")).collect();
            self.machine(o, false).or_else(|_| {
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

    pub(super) fn seconds(&self, s: &Option<Spanned<f64>>, what: &str) -> Result<()> {
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

    pub(super) fn percent(&self, p: &Option<Spanned<f64>>, what: &str) -> Result<()> {
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

    /// A name an earlier step remembered.
    pub(super) fn name_known(&self, n: &Spanned<String>) -> Result<()> {
        let remembered = &self.remembered;
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

    /// A name this step remembers, known to the steps after it.
    pub(super) fn new_name(&mut self, n: &Spanned<String>) -> Result<()> {
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
        self.remembered.insert(name.clone());
        Ok(())
    }

    pub(super) fn regex(&self, r: &Spanned<String>) -> Result<()> {
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

    pub(super) fn cidr(&self, cidr: &Spanned<String>) -> Result<()> {
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

    pub(super) fn needs_api_server(&self, span: std::ops::Range<usize>) -> Result<()> {
        if self.environment.backend == BackendChoice::Minikube {
            Ok(())
        } else {
            self.err(
                span,
                "this step needs a Kubernetes API server: set `backend = \"minikube\"` in `[environment]`",
            )
        }
    }

    /// Refuses a step the built-in guest alone can do (`kind` names it) on minikube.
    pub(super) fn builtin_only(&self, span: std::ops::Range<usize>, kind: &str) -> Result<()> {
        if self.environment.backend == BackendChoice::Minikube {
            self.err(span, format!("`{kind}` is for the built-in guest"))
        } else {
            Ok(())
        }
    }
}
