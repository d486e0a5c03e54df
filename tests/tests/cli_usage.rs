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

/// Runs `mkh args` with stdout and stderr each on a terminal of its own (a pty, as in an
/// interactive shell): progress may draw a spinner on stderr; returns what stdout's terminal
/// showed, without the terminal's carriage returns.
fn on_terminals(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    use std::io::Read;
    use std::os::fd::OwnedFd;
    let out = nix::pty::openpty(None, None).unwrap();
    let err = nix::pty::openpty(None, None).unwrap();
    let mut child = std::process::Command::new(mkh_bin())
        .args(args)
        .envs(envs.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::from(out.slave))
        .stderr(std::process::Stdio::from(err.slave))
        .spawn()
        .unwrap();
    // Both terminals are read while the command runs (a spinner fills a terminal's buffer).
    let drain = |master: OwnedFd| {
        std::thread::spawn(move || {
            let mut file = std::fs::File::from(master);
            let mut text = Vec::new();
            let mut buf = [0u8; 4096];
            // Linux ends a pty whose other side closed with EIO.
            while let Ok(n) = file.read(&mut buf) {
                if n == 0 {
                    break;
                }
                text.extend_from_slice(&buf[..n]);
            }
            String::from_utf8_lossy(&text).replace('\r', "")
        })
    };
    let (stdout, stderr) = (drain(out.master), drain(err.master));
    let status = child.wait().unwrap();
    (
        status.code().unwrap_or(-1),
        stdout.join().unwrap(),
        stderr.join().unwrap(),
    )
}

#[test]
fn json_on_a_terminal_is_json_alone_while_progress_draws_on_stderr() {
    let name = format!("json-tty-{}", std::process::id());
    let _guard = CliEnv(name.clone());
    let (code, out, err) = on_terminals(&["up", "--name", &name, "--json"], &[]);
    assert_eq!(code, 0, "{err}");
    let d: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: stdout was {out:?}"));
    assert_eq!(d["name"], name.as_str());
    // The spinner's phases were on stderr, each finished one left as a line.
    assert!(err.contains("waiting for SSH to"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("one-step.toml");
    std::fs::write(
        &scenario,
        "description = \"SSH answers\"\n[[step]]\nexpect-ssh = { machine = \"m1\", network = \"nat\" }\n",
    )
    .unwrap();
    for args in [
        vec!["ls", "--json"],
        vec!["audit", "--json"],
        vec!["doctor", "--json"],
        vec!["reap", "--json"],
        vec!["scenario", "run", "--json", scenario.to_str().unwrap()],
    ] {
        let (code, out, err) = on_terminals(&args, &[]);
        assert_eq!(code, 0, "mkh {args:?}: {err}");
        let v: serde_json::Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("mkh {args:?}: {e}: stdout was {out:?}"));
        assert!(v.is_array() || v.is_object());
    }
    let (code, out, err) = on_terminals(&["down", &name], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(objects_of_env(&name).is_empty());
    // Quiet: nothing on stderr at all, the output alone on stdout (RUST_LOG cannot undo it).
    let (code, out, err) = on_terminals(&["--quiet", "ls", "--json"], &[("RUST_LOG", "debug")]);
    assert_eq!(code, 0);
    assert!(err.is_empty(), "{err:?}");
    serde_json::from_str::<serde_json::Value>(&out).unwrap();
}

#[test]
fn off_a_terminal_progress_is_plain_timestamped_lines() {
    let name = format!("lines-{}", std::process::id());
    let _guard = CliEnv(name.clone());
    let (code, out, err) = mkh(&["up", "--name", &name, "--json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str::<serde_json::Value>(&out).unwrap();
    let phase = err
        .lines()
        .find(|l| l.contains("waiting for SSH to"))
        .unwrap_or_else(|| panic!("{err}"));
    // `HH:MM:SS +SECONDSs  phase`, no escape sequences.
    let (clock, _) = phase.split_once(' ').unwrap();
    assert_eq!(clock.len(), 8, "{phase}");
    assert!(!err.contains('\u{1b}'), "{err:?}");
    let (code, _, err) = mkh(&["down", &name]);
    assert_eq!(code, 0, "{err}");
    assert!(objects_of_env(&name).is_empty());
}
