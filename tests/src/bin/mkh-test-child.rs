//! A separate mkh process for tests about processes: it creates an environment, prints its
//! description as one JSON line, then does what the mode says.
//!
//! - `hold`: keep the environment until a signal ends the process.
//! - `hold-cli`: create an environment, hand it over to the CLI and exit.
//! - `once`: tear the environment down and exit (0 when nothing was left).
//! - `hold-minikube`: like `hold`, with a minikube cluster (binary from `MKH_MINIKUBE`, more
//!   arguments from `MKH_MINIKUBE_ARGS`).
//! - `own-signals`: like `hold`, but mkh's signal handling is off: the program's own SIGTERM
//!   handler tears the environment down and exits 0.
//! - `hold-guest`, `once-guest`: like `hold` and `once`, with the built-in guest booted.
//!
//! `MKH_CHILD_ENV_NAME` names the environment (so a test can watch it being made);
//! `MKH_CHILD_ARTIFACTS` gives it an artifact directory, as the fixtures do.

use std::io::Write;

use mkh::{Backend, Env, Settings};

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    const MODES: [&str; 7] = [
        "hold",
        "hold-cli",
        "hold-minikube",
        "once",
        "own-signals",
        "hold-guest",
        "once-guest",
    ];
    if !MODES.contains(&mode.as_str()) {
        eprintln!("usage: mkh-test-child {} (got {mode:?})", MODES.join("|"));
        std::process::exit(2);
    }
    let mut builder = Env::builder();
    if let Ok(name) = std::env::var("MKH_CHILD_ENV_NAME") {
        builder = builder.name(name);
    }
    if let Some(dir) = std::env::var_os("MKH_CHILD_ARTIFACTS") {
        builder = builder.artifacts_on_failure(dir);
    }
    if mode.ends_with("-guest") {
        builder = builder.guest(mkh::MachineOptions::default());
    }
    if mode == "hold-minikube" {
        // The binary, sizes and arguments (`--force` as root) from the settings.
        let settings = Settings::current().expect("settings").minikube(None);
        let Backend::Minikube(options) = settings.backend() else {
            unreachable!("minikube settings give the minikube backend")
        };
        builder = builder.minikube(options);
    }
    // Installed before the environment: mkh must not install its own handler beside it.
    let mut own = (mode == "own-signals").then(|| {
        builder = builder.clone().teardown_on_signal(false);
        signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM]).expect("signals")
    });
    let env = match builder.up_blocking() {
        Ok(env) => env,
        Err(e) => {
            eprintln!("mkh-test-child: {e}");
            std::process::exit(1);
        }
    };
    let print = |d: &mkh::EnvDescription| {
        println!("{}", serde_json::to_string(d).expect("serialisable"));
        std::io::stdout().flush().expect("stdout");
    };
    match mode.as_str() {
        "hold" | "hold-minikube" | "hold-guest" => {
            print(&env.describe().expect("describe"));
            loop {
                std::thread::park();
            }
        }
        "hold-cli" => print(&env.hand_over_to_cli().expect("hand over")),
        "own-signals" => {
            print(&env.describe().expect("describe"));
            let signals = own.as_mut().expect("own handler");
            if signals.forever().next().is_some() {
                eprintln!("mkh-test-child: own SIGTERM handler tears down");
                env.teardown().expect("teardown");
                std::process::exit(0);
            }
        }
        _ => {
            print(&env.describe().expect("describe"));
            if let Err(e) = env.teardown() {
                eprintln!("mkh-test-child: {e}");
                std::process::exit(1);
            }
        }
    }
}
