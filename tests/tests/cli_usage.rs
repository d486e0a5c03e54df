//! The `mkh` command as a shell user lives with it: completions that know the environments.

use mkh_tests::*;

/// Asks bash's completion for `words` (the last one being completed) with mkh's script loaded.
fn bash_completes(words: &[&str], uri: &str) -> Vec<String> {
    let (code, script, err) = mkh(&["completions", "bash"]);
    assert_eq!(code, 0, "{err}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mkh.bash");
    std::fs::write(&file, script).unwrap();
    let bin = mkh_bin();
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        "source '{}'; COMP_WORDS=({}); COMP_CWORD={}; _mkh mkh '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        file.display(),
        quoted.join(" "),
        words.len() - 1,
        words[words.len() - 1],
        words[words.len() - 2],
    );
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new("bash")
        .args(["--norc", "-c", &program])
        .env("PATH", path)
        .env("MKH_LIBVIRT_URI", uri)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_completes_subcommands_and_the_names_of_environments() {
    let dir = tempfile::tempdir().unwrap();
    let uri = test_driver_with(
        dir.path(),
        &[
            OwnedNetwork {
                name: "demo-nat",
                env: "demo",
                kind: "cli",
                pid: 1,
                subnet: "10.252.1.0/24",
            },
            OwnedNetwork {
                name: "dev-box-nat",
                env: "dev-box",
                kind: "cli",
                pid: 1,
                subnet: "10.252.2.0/24",
            },
        ],
    );
    let subcommands = bash_completes(&["mkh", "st"], &uri);
    assert_eq!(subcommands, ["stop", "start"], "{subcommands:?}");
    for sub in ["ip", "ssh", "stop", "start", "restart", "down"] {
        let names = bash_completes(&["mkh", sub, "de"], &uri);
        assert_eq!(names, ["demo", "dev-box"], "mkh {sub}: {names:?}");
    }
    // Where no environment is asked for, none is offered.
    assert!(!bash_completes(&["mkh", "ls", ""], &uri).contains(&"demo".to_owned()));
}

#[test]
fn zsh_and_fish_scripts_name_the_environment_lister() {
    for shell in ["zsh", "fish"] {
        let (code, script, err) = mkh(&["completions", shell]);
        assert_eq!(code, 0, "{err}");
        assert!(script.contains("mkh ls --names"), "{shell}: {script}");
    }
    let (_, zsh, _) = mkh(&["completions", "zsh"]);
    assert_eq!(zsh.matches(":_mkh_environments'").count(), 6, "{zsh}");
    let (code, _, err) = mkh(&["completions", "powershell"]);
    assert_eq!(code, 2);
    assert!(err.contains("possible values: bash, zsh, fish"), "{err}");
}
