//! `node-bench`: how long the minikube stand-in's Kubernetes node takes to be Ready, cold, as a
//! test's `Env` starts it (`MK_STANDIN_CONTROL_PLANE=node`): the VM until SSH answers, the
//! control plane until its API server's `/readyz`, the node until Ready with kube-system's pods
//! Running, each worker's boot and join, and what the test sees (`Env::up`, teardown).
//!
//! ```text
//! cargo run -p mkh-tests --bin node-bench -- [--runs N] [--nodes N] [-- MINIKUBE START FLAGS]
//! ```
//!
//! Prints one JSON document: every run's figures and their medians. A benchmark, not a test:
//! run it alone on the machine whose figures you want.

use std::path::{Path, PathBuf};
use std::time::Instant;

use mkh::{Env, MinikubeOptions};
use serde_json::{json, Value};

const USAGE: &str = "usage: node-bench [--runs N] [--nodes N] [-- MINIKUBE START FLAGS]";

#[derive(Debug)]
struct Options {
    runs: usize,
    nodes: usize,
    start_flags: Vec<String>,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        runs: 1,
        nodes: 1,
        start_flags: Vec::new(),
    };
    let mut words = args.iter();
    while let Some(word) = words.next() {
        let mut count = |name: &str| -> Result<usize, String> {
            let value = words
                .next()
                .ok_or_else(|| format!("{name} needs a number"))?;
            value
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=100).contains(n))
                .ok_or_else(|| format!("{name} {value:?}: expected a whole number from 1 to 100"))
        };
        match word.as_str() {
            "--runs" => options.runs = count("--runs")?,
            "--nodes" => options.nodes = count("--nodes")?,
            "--" => {
                options.start_flags = words.cloned().collect();
                break;
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(options)
}

/// The stand-in's `node-timings.json` in the profile's directory under MINIKUBE_HOME
/// (`.minikube` appended unless it is the last component, as minikube resolves it).
fn node_timings(minikube_home: &Path, profile: &str) -> Result<Value, String> {
    let root = if minikube_home.ends_with(".minikube") {
        minikube_home.to_owned()
    } else {
        minikube_home.join(".minikube")
    };
    let path: PathBuf = root
        .join("profiles")
        .join(profile)
        .join("node-timings.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

async fn one_run(options: &Options, standin: &Path) -> Result<Value, String> {
    let mut extra_args = vec!["--force".to_owned()];
    extra_args.extend(options.start_flags.iter().cloned());
    let started = Instant::now();
    let env = Env::builder()
        .minikube(MinikubeOptions {
            binary: Some(standin.to_owned()),
            extra_args,
            nodes: Some(options.nodes as u32),
            ..MinikubeOptions::default()
        })
        .up()
        .await
        .map_err(|e| format!("up: {e}"))?;
    let up_s = started.elapsed().as_secs_f64();
    let timings = match env.describe().await {
        Ok(d) => node_timings(
            d.minikube_home.as_deref().unwrap_or(Path::new("")),
            d.profile.as_deref().unwrap_or_default(),
        ),
        Err(e) => Err(format!("describe: {e}")),
    };
    let torn = Instant::now();
    env.teardown().await.map_err(|e| format!("teardown: {e}"))?;
    let mut run = timings?;
    run["up_s"] = json!(up_s);
    run["teardown_s"] = json!(torn.elapsed().as_secs_f64());
    Ok(run)
}

fn median(runs: &[Value], key: &str) -> Option<f64> {
    let mut values: Vec<f64> = runs.iter().filter_map(|r| r[key].as_f64()).collect();
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(values[values.len() / 2])
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("node-bench: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    std::env::set_var("MK_STANDIN_CONTROL_PLANE", "node");
    let standin = mkh_tests::standin_bin();
    let mut runs = Vec::new();
    for i in 1..=options.runs {
        eprintln!("node-bench: run {i} of {} ...", options.runs);
        match one_run(&options, &standin).await {
            Ok(run) => {
                eprintln!("node-bench: {run}");
                runs.push(run);
            }
            Err(e) => {
                eprintln!("node-bench: run {i}: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    let keys = [
        "vm_s",
        "control_plane_s",
        "node_ready_s",
        "first_node_s",
        "up_s",
        "teardown_s",
    ];
    let medians: serde_json::Map<String, Value> = keys
        .iter()
        .map(|k| (k.to_string(), json!(median(&runs, k))))
        .collect();
    let report = json!({
        "nodes": options.nodes,
        "start_flags": options.start_flags,
        "runs": runs,
        "median": medians,
    });
    println!("{report:#}");
    std::process::ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn arguments_are_checked() {
        let o = parse(&words("--runs 3 --nodes 2 -- --kubernetes-version=v1.20.2")).unwrap();
        assert_eq!((o.runs, o.nodes), (3, 2));
        assert_eq!(o.start_flags, ["--kubernetes-version=v1.20.2"]);
        assert!(parse(&words("--runs 0"))
            .unwrap_err()
            .contains("--runs \"0\""));
        assert!(parse(&words("--runs"))
            .unwrap_err()
            .contains("needs a number"));
        assert!(parse(&words("--fast"))
            .unwrap_err()
            .contains("unknown argument"));
    }

    #[test]
    fn the_median_is_the_middle_run() {
        let runs = [
            json!({"vm_s": 3.0}),
            json!({"vm_s": 1.0}),
            json!({"vm_s": 2.0}),
        ];
        assert_eq!(median(&runs, "vm_s"), Some(2.0));
        assert_eq!(median(&runs, "up_s"), None);
    }
}
