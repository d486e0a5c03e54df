//! A run's reports: the summary table for people, JSON for programs, JUnit XML for CI.

use std::io::Write;

use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::Writer;

use crate::run::{outcome_word, Outcome, ScenarioReport};

/// One line per scenario: outcome, seconds, steps passed, file, and what failed.
pub fn table(reports: &[ScenarioReport]) -> String {
    let mut out = String::from("RESULT   SECONDS  STEPS  SCENARIO\n");
    for r in reports {
        let passed = r.steps.iter().filter(|s| s.passed).count();
        out += &format!(
            "{:<8} {:>7.1} {:>6}  {}\n",
            outcome_word(&r.outcome),
            r.seconds,
            format!("{passed}/{}", r.steps.len()),
            r.file.display()
        );
        match (&r.outcome, &r.problem) {
            (Outcome::Skipped(why), _) => out += &format!("         {why}\n"),
            (_, Some(problem)) => out += &format!("         {problem}\n"),
            _ => {}
        }
        if let Some(kept) = &r.kept {
            out += &format!("         kept up: `mkh down {kept}` removes it\n");
        }
    }
    let count = |o: fn(&Outcome) -> bool| reports.iter().filter(|r| o(&r.outcome)).count();
    out += &format!(
        "{} passed, {} failed, {} errors, {} skipped\n",
        count(|o| *o == Outcome::Passed),
        count(|o| *o == Outcome::Failed),
        count(|o| *o == Outcome::Error),
        count(|o| matches!(o, Outcome::Skipped(_))),
    );
    out
}

/// The reports as one JSON object: `{"scenarios": [...], "passed": bool}`.
pub fn json(reports: &[ScenarioReport]) -> serde_json::Value {
    serde_json::json!({
        "passed": all_passed(reports),
        "scenarios": reports,
    })
}

/// Whether every scenario passed (skipped ones count as not failed).
pub fn all_passed(reports: &[ScenarioReport]) -> bool {
    reports
        .iter()
        .all(|r| matches!(r.outcome, Outcome::Passed | Outcome::Skipped(_)))
}

/// JUnit XML: one test suite, one test case per scenario.
pub fn junit(reports: &[ScenarioReport]) -> String {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    let count = |o: fn(&Outcome) -> bool| reports.iter().filter(|r| o(&r.outcome)).count();
    let total: f64 = reports.iter().map(|r| r.seconds).sum();
    let _ = w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)));
    let mut suite = BytesStart::new("testsuite");
    suite.push_attribute(("name", "mkh scenarios"));
    suite.push_attribute(("tests", reports.len().to_string().as_str()));
    suite.push_attribute((
        "failures",
        count(|o| *o == Outcome::Failed).to_string().as_str(),
    ));
    suite.push_attribute((
        "errors",
        count(|o| *o == Outcome::Error).to_string().as_str(),
    ));
    suite.push_attribute((
        "skipped",
        count(|o| matches!(o, Outcome::Skipped(_)))
            .to_string()
            .as_str(),
    ));
    suite.push_attribute(("time", format!("{total:.3}").as_str()));
    let _ = w.write_event(Event::Start(suite));
    for r in reports {
        let mut case = BytesStart::new("testcase");
        let name = r.file.display().to_string();
        case.push_attribute(("name", name.as_str()));
        case.push_attribute(("classname", "mkh.scenario"));
        case.push_attribute(("time", format!("{:.3}", r.seconds).as_str()));
        let _ = w.write_event(Event::Start(case));
        let problem = r.problem.clone().unwrap_or_default();
        let element = match &r.outcome {
            Outcome::Passed => None,
            Outcome::Failed => Some(("failure", problem)),
            Outcome::Error => Some(("error", problem)),
            Outcome::Skipped(why) => Some(("skipped", why.clone())),
        };
        if let Some((tag, message)) = element {
            let mut e = BytesStart::new(tag);
            e.push_attribute(("message", message.as_str()));
            let _ = w.write_event(Event::Empty(e));
        }
        let steps: String = r
            .steps
            .iter()
            .map(|s| {
                format!(
                    "[{}] line {}: {} … {} ({:.2} s){}\n",
                    s.index,
                    s.line,
                    s.step,
                    if s.passed { "ok" } else { "FAILED" },
                    s.seconds,
                    s.detail
                        .as_ref()
                        .map(|d| format!(": {d}"))
                        .unwrap_or_default()
                )
            })
            .collect();
        let _ = w.write_event(Event::Start(BytesStart::new("system-out")));
        let _ = w.write_event(Event::Text(BytesText::new(&steps)));
        let _ = w.write_event(Event::End(BytesEnd::new("system-out")));
        let _ = w.write_event(Event::End(BytesEnd::new("testcase")));
    }
    let _ = w.write_event(Event::End(BytesEnd::new("testsuite")));
    let mut bytes = w.into_inner();
    let _ = writeln!(bytes);
    String::from_utf8(bytes).unwrap_or_default()
}
