//! `mkh scenario check` and `run` on files that are not valid scenarios: each refused with its
//! position and reason, and nothing made in libvirt. (The parser's own cases are unit tests in
//! `harness/scenario/src/format.rs`.)

use mkh_tests::*;

#[test]
fn the_shipped_scenarios_check() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios");
    let files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| p.display().to_string())
        .collect();
    assert!(files.len() >= 6, "{files:?}");
    let mut args = vec!["scenario", "check"];
    args.extend(files.iter().map(String::as_str));
    let (code, out, err) = mkh(&args);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out.lines().filter(|l| l.contains(": ok (")).count(),
        files.len(),
        "{out}"
    );
}

#[test]
fn invalid_files_are_refused_with_their_positions_before_anything_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path.display().to_string()
    };
    let good = write(
        "good.toml",
        b"description = \"fine\"\n[[step]]\nexpect-ssh = { machine = \"m1\", network = \"nat\" }\n",
    );
    let cases = [
        (write("typo.toml", b"description = \"x\"\n[[step]]\nstp = { machine = \"m1\" }\n"), ":3:1: unknown variant `stp`"),
        (write("binary.toml", b"\x7fELF\x02\x01\x01\x00\x00"), ":1:8: a NUL byte"),
        (write("empty.toml", b""), ":1:1: the file is empty"),
        (write("huge.toml", &vec![b'#'; 300 * 1024]), ":1:1: the file is 307200 bytes"),
        (write("cidr.toml", b"description = \"x\"\n[[step]]\nexpect-ip = { machine = \"m1\", network = \"nat\", in = \"10.1.2.3\" }\n"), ":3:53: `in` = \"10.1.2.3\": expected an IPv4 CIDR"),
    ];
    let fifo = dir.path().join("fifo.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let zero = dir.path().join("zero.toml");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let endless = [fifo, zero].map(|p| p.display().to_string());
    let cases: Vec<(String, &str)> = cases
        .into_iter()
        .chain(endless.into_iter().map(|f| (f, ":1:1: not a regular file")))
        .collect();
    // A run id of their own: whatever they made would carry it.
    let run = format!("refused-scenarios-{}", std::process::id());
    let envs = [("MKH_RUN_ID", run.as_str())];
    for (file, expected) in &cases {
        for verb in ["check", "run"] {
            // With a valid file beside it: nothing runs unless all are valid.
            let (code, out, err) = mkh_with_env(&["scenario", verb, &good, file], &envs);
            assert_eq!(code, 1, "{verb} {file}: {out}{err}");
            assert!(
                err.contains(&format!("{file}{expected}")),
                "{verb} {file}: {err}"
            );
            assert!(err.contains("nothing was run"), "{err}");
            assert!(!err.contains("panicked"), "{err}");
        }
    }
    let (code, out, err) = mkh(&["audit", "--run", &run]);
    assert_eq!(code, 0, "a refused scenario left objects: {out}{err}");
    let (code, _, err) = mkh(&[
        "scenario",
        "run",
        &dir.path().join("absent.toml").display().to_string(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("absent.toml"), "{err}");
}

/// The scenarios the READMEs show as files check as they are written.
#[test]
fn the_readmes_scenario_examples_check() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for readme in ["README.md", "scenarios/README.md"] {
        let text = std::fs::read_to_string(format!("{root}/{readme}")).unwrap();
        for (i, block) in text.split("```toml\n").skip(1).enumerate() {
            let block = block.split("```").next().unwrap();
            if block.contains("[[step]]") && block.contains("description") {
                let file = dir
                    .path()
                    .join(format!("{}-{i}.toml", readme.replace('/', "-")));
                std::fs::write(&file, block).unwrap();
                files.push(file.display().to_string());
            }
        }
    }
    assert!(files.len() >= 2, "{files:?}");
    let mut args = vec!["scenario", "check"];
    args.extend(files.iter().map(String::as_str));
    let (code, out, err) = mkh(&args);
    assert_eq!(code, 0, "{out}{err}");
}
