//! A separate mkh process for tests about processes: it creates an environment, prints its
//! description as one JSON line, then does what the mode says.
//!
//! - `hold`: keep the environment until a signal ends the process.
//! - `hold-cli`: create a CLI-owned environment, detach it and exit.
//! - `once`: tear the environment down and exit (0 when nothing was left).
//! - `hold-minikube`: like `hold`, with a minikube cluster (binary from `MKH_MINIKUBE`).

use std::io::Write;

use mkh::minikube::MinikubeOptions;
use mkh::{Env, OwnerKind};

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let kind = match mode.as_str() {
        "hold-cli" => OwnerKind::Cli,
        "hold" | "once" | "hold-minikube" => OwnerKind::Process,
        other => {
            eprintln!("usage: mkh-test-child hold|hold-cli|hold-minikube|once (got {other:?})");
            std::process::exit(2);
        }
    };
    let mut builder = Env::builder().owner_kind(kind);
    if mode == "hold-minikube" {
        builder = builder.minikube(MinikubeOptions::default());
    }
    let mut env = match builder.up_blocking() {
        Ok(env) => env,
        Err(e) => {
            eprintln!("mkh-test-child: {e}");
            std::process::exit(1);
        }
    };
    let line = serde_json::to_string(&env.describe().expect("describe")).expect("serialisable");
    println!("{line}");
    std::io::stdout().flush().expect("stdout");
    match mode.as_str() {
        "hold" | "hold-minikube" => loop {
            std::thread::park();
        },
        "hold-cli" => {
            env.detach();
        }
        _ => {
            if let Err(e) = env.teardown_blocking() {
                eprintln!("mkh-test-child: {e}");
                std::process::exit(1);
            }
        }
    }
}
