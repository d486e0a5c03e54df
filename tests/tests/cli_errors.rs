//! Every subcommand's error paths as a shell user meets them: a missing environment, an
//! unreachable libvirt, a bad setting and a bad flag each give one short error with its cause
//! and a hint, exit non-zero, and leave nothing in libvirt.

use mkh_tests::*;

/// Subcommands and arguments that name an environment.
const NAMED: &[&[&str]] = &[
    &["ip", "NAME"],
    &["ssh", "NAME", "--", "true"],
    &["stop", "NAME"],
    &["start", "NAME"],
    &["restart", "NAME"],
    &["down", "NAME"],
];

/// Subcommands that talk to libvirt without a name.
const UNNAMED: &[&[&str]] = &[&["up"], &["ls"], &["ls", "--json"], &["reap"], &["audit"]];

/// Subcommands that read the settings but need no libvirt to fail on them.
const LOCAL: &[&[&str]] = &[
    &["image"],
    &["doctor"],
    &["bench", "--runs", "1"],
    &[
        "scenario",
        "check",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../scenarios/seed-two-networks.toml"
        ),
    ],
];

/// Every subcommand that talks to libvirt.
fn all() -> Vec<Vec<String>> {
    NAMED
        .iter()
        .chain(UNNAMED)
        .map(|args| {
            args.iter()
                .map(|a| a.replace("NAME", "no-such-env"))
                .collect()
        })
        .collect()
}

/// Runs `mkh args` with `envs` under a run id of its own; checks the error's shape and that
/// the run left nothing in libvirt.
fn refused(args: &[String], envs: &[(&str, &str)]) -> String {
    let run = format!("cli-errors-{}-{}", std::process::id(), rand_suffix());
    let mut all_envs = vec![("MKH_RUN_ID", run.as_str())];
    all_envs.extend_from_slice(envs);
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = mkh_with_env(&words, &all_envs);
    assert_ne!(code, 0, "mkh {args:?} {envs:?} succeeded: {out}{err}");
    let errors = err.lines().filter(|l| l.starts_with("mkh: error:")).count();
    assert_eq!(
        errors, 1,
        "mkh {args:?} {envs:?}: one error expected:\n{err}"
    );
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() <= 3, "mkh {args:?} {envs:?}: not short:\n{err}");
    let unique: std::collections::BTreeSet<&&str> = lines.iter().collect();
    assert_eq!(unique.len(), lines.len(), "a line said twice:\n{err}");
    assert!(
        !err.contains("Machine::") && !err.contains("Env::"),
        "{err}"
    );
    // Nothing was made.
    let (code, audit, _) = mkh(&["audit", "--run", &run]);
    assert_eq!(code, 0, "mkh {args:?} {envs:?} left objects: {audit}");
    err
}

fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[test]
fn a_missing_environment_is_named_with_where_to_look() {
    for args in NAMED {
        let args: Vec<String> = args
            .iter()
            .map(|a| a.replace("NAME", "no-such-env"))
            .collect();
        let err = refused(&args, &[]);
        assert!(
            err.contains("no mkh environment named \"no-such-env\"") && err.contains("`mkh ls`"),
            "mkh {args:?}: {err}"
        );
    }
}

#[test]
fn an_unreachable_libvirt_is_named_with_the_setting_that_chooses_it() {
    let uri = "qemu+tcp://127.0.0.1:1/system";
    for args in all() {
        let err = refused(&args, &[("MKH_LIBVIRT_URI", uri)]);
        assert!(
            err.contains(uri)
                && err.contains("Connection refused")
                && err.contains("MKH_LIBVIRT_URI"),
            "mkh {args:?}: {err}"
        );
    }
}

#[test]
fn mkh_toml_beats_a_shell_s_libvirt_default_uri_and_mkh_variables_beat_both() {
    // A shell's LIBVIRT_DEFAULT_URI (here one nothing answers) is an ambient default: the file's
    // `libvirt_uri` (libvirt's test driver, where `mkh ls` lists nothing) wins over it.
    let dead = "qemu+tcp://127.0.0.1:1/system";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mkh.toml");
    std::fs::write(&file, "libvirt_uri = \"test:///default\"\n").unwrap();
    let config = file.to_str().unwrap();
    let (code, out, err) = mkh_with_env(
        &["ls", "--json"],
        &[
            ("MKH_CONFIG", config),
            ("LIBVIRT_DEFAULT_URI", dead),
            ("MKH_LIBVIRT_URI", ""),
        ],
    );
    assert_eq!((code, out.trim()), (0, "[]"), "{err}");
    // Alone, the ambient variable applies.
    let (code, _, err) = mkh_with_env(
        &["ls", "--json"],
        &[
            ("MKH_CONFIG", ""),
            ("LIBVIRT_DEFAULT_URI", dead),
            ("MKH_LIBVIRT_URI", ""),
        ],
    );
    assert!(code != 0 && err.contains(dead), "{err}");
    // MKH_LIBVIRT_URI beats the file.
    let (code, _, err) = mkh_with_env(
        &["ls", "--json"],
        &[("MKH_CONFIG", config), ("MKH_LIBVIRT_URI", dead)],
    );
    assert!(code != 0 && err.contains(dead), "{err}");
}

#[test]
fn a_bad_setting_is_named_before_anything_is_made() {
    for (var, value) in [
        ("MKH_TIMEOUT_SCALE", "0"),
        ("MKH_TIMEOUT_SCALE", "NaN"),
        ("MKH_ACCEL", "bogus"),
        ("MKH_SUBNET_PREFIX", "33"),
        ("MKH_KEEP", "yes"),
    ] {
        let local = LOCAL
            .iter()
            .map(|a| a.iter().map(|w| w.to_string()).collect::<Vec<_>>());
        for args in all().into_iter().chain(local) {
            let err = refused(&args, &[(var, value)]);
            assert!(err.contains(var), "mkh {args:?} with {var}={value}: {err}");
        }
    }
}

#[test]
fn paths_and_names_mkh_up_cannot_use_are_refused_before_any_network() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let not_a_dir = file.path().to_str().unwrap();
    for (envs, args, needle) in [
        (
            vec![("MKH_LOCK_DIR", "/nonexistent")],
            vec!["up"],
            "MKH_LOCK_DIR",
        ),
        (
            vec![("MKH_LOCK_DIR", not_a_dir)],
            vec!["up"],
            "not a directory",
        ),
        (
            vec![("MKH_CACHE_DIR", "/root/mkh-cache")],
            vec!["up"],
            "MKH_CACHE_DIR",
        ),
        (
            vec![],
            vec!["up", "--name=a-"],
            "invalid environment name \"a-\"",
        ),
        (vec![], vec!["up", "--nodes", "2"], "--backend minikube"),
    ] {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let err = refused(&args, &envs);
        assert!(err.contains(needle), "mkh {args:?} {envs:?}: {err}");
    }
}

#[test]
fn a_bad_flag_is_a_usage_error_naming_it() {
    let local = LOCAL
        .iter()
        .map(|a| a.iter().map(|w| w.to_string()).collect::<Vec<_>>());
    for args in all().into_iter().chain(local) {
        let mut args = args.clone();
        let at = args.iter().position(|a| a == "--").unwrap_or(args.len());
        args.insert(at, "--bogus-flag".into());
        let words: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, _, err) = mkh(&words);
        assert_eq!(code, 2, "mkh {args:?}: {err}");
        assert!(
            err.contains("unexpected argument '--bogus-flag'") && err.contains("--help"),
            "mkh {args:?}: {err}"
        );
    }
}

#[test]
fn every_subcommand_s_help_has_an_example() {
    let (_, out, _) = mkh(&["--help"]);
    let subcommands: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|s| *s != "help")
        .collect();
    assert!(subcommands.len() >= 14, "{out}");
    for sub in subcommands {
        let (code, help, _) = mkh(&[sub, "--help"]);
        assert_eq!(code, 0);
        assert!(
            help.contains("Example:") || help.contains("Examples:"),
            "mkh {sub} --help has no example:\n{help}"
        );
    }
}
