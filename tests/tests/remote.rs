//! mkh against a libvirt host reached over SSH: this machine's own libvirt, through the sshd of
//! its own that `harness/scripts/setup-host.sh` starts on 127.0.0.1:2222 with
//! `MKH_SETUP_REMOTE=1` (the test command does). Every libvirt call then goes through libvirt's
//! ssh transport, and every connection to a guest through that sshd. What this cannot show: a
//! host that really is another machine (its guests' subnets are routable here too, so the
//! tests check that mkh's connections come from that sshd, not from mkh).
//!
//! The tests need that sshd, so they are ignored in a plain `cargo nextest run`; the test
//! command runs them.

use std::process::{Command, Stdio};
use std::time::Duration;

use mkh_tests::*;
use serde_json::Value;

const KEY: &str = "/var/lib/mkh-remote-ssh/id_ed25519";
const POOL_DIR: &str = "/var/lib/libvirt/mkh-images/";

fn remote_uri() -> String {
    format!("qemu+ssh://root@127.0.0.1:2222/system?keyfile={KEY}")
}

/// The environment of a client of the remote host: its URI, and no `MKH_ACCEL`, so that mkh
/// chooses the accelerator itself.
fn client(cmd: &mut Command) -> &mut Command {
    assert!(
        std::path::Path::new(KEY).exists(),
        "no key for the loopback libvirt host at {KEY}: run `MKH_SETUP_REMOTE=1 harness/scripts/setup-host.sh` (the test command does)"
    );
    cmd.env("MKH_LIBVIRT_URI", remote_uri())
        .env_remove("MKH_ACCEL")
}

fn remote_mkh(args: &[&str]) -> (i32, String, String) {
    let out = client(Command::new(mkh_bin()).args(args))
        .output()
        .expect("mkh runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An environment brought up with `mkh up` over the remote URI, taken down by `mkh down` over
/// it when the guard goes.
struct RemoteCliEnv(String);

impl Drop for RemoteCliEnv {
    fn drop(&mut self) {
        let _ = client(Command::new(mkh_bin()).args(["down", &self.0]))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn virsh(args: &[&str]) -> String {
    let out = Command::new("virsh")
        .args(["-c", &remote_uri()])
        .args(args)
        .output()
        .expect("virsh runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What the remote host holds of environment `env`: networks, domains and volumes named after it.
fn remote_objects_of(env: &str) -> Vec<String> {
    // virtlogd writes console logs behind libvirt's back: a refresh lists them.
    virsh(&["pool-refresh", "mkh-images"]);
    let mut left = Vec::new();
    for (what, args) in [
        ("network", vec!["net-list", "--all", "--name"]),
        ("domain", vec!["list", "--all", "--name"]),
        ("volume", vec!["vol-list", "mkh-images"]),
    ] {
        for line in virsh(&args).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if name.starts_with(env) {
                left.push(format!("{what} {name}"));
            }
        }
    }
    left
}

/// The accelerator `mkh doctor` says mkh picks over the local URI: `kvm` or `tcg`.
fn local_accelerator() -> String {
    let (_, out, err) = mkh_with_env(&["doctor", "--json"], &[("MKH_ACCEL", "")]);
    let doc: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    let check = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "accelerator")
        .expect("an accelerator check");
    let seen = check["seen"].as_str().unwrap();
    seen.split(':').next().unwrap().to_owned()
}

fn uploaded_images() -> Vec<Value> {
    let (code, out, err) = remote_mkh(&["image", "--json"]);
    assert_eq!(code, 0, "mkh image failed: {err}");
    let doc: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    doc["uploaded"].as_array().expect("uploaded").clone()
}

/// The processes holding a TCP connection to `ip:22`, as `ss` names them.
fn ssh_connection_owners(ip: &str) -> String {
    let out = Command::new("ss")
        .args(["-Htnp", "state", "established", "dst", &format!("{ip}:22")])
        .output()
        .expect("ss runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[ignore = "needs the loopback sshd of `MKH_SETUP_REMOTE=1 harness/scripts/setup-host.sh` (the test command starts it)"]
fn over_ssh_an_environment_boots_from_an_uploaded_image_is_reached_through_the_host_and_leaves_nothing(
) {
    // From an empty image cache on the host: this environment uploads it.
    let (code, _, err) = remote_mkh(&["image", "--remove-uploaded"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(uploaded_images(), Vec::<Value>::new());

    let (code, out, err) = remote_mkh(&["up", "--json"]);
    assert_eq!(code, 0, "mkh up over qemu+ssh failed:\n{err}");
    let desc: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let name = desc["name"].as_str().unwrap().to_owned();
    let _guard = RemoteCliEnv(name.clone());

    // The accelerator: chosen by mkh from what libvirt says of the host, and why; the same
    // as over the local URI (`mkh doctor`), which here is TCG: this machine's /dev/kvm is
    // PVM-only, with no vmx/svm.
    let expected = local_accelerator();
    assert_eq!(desc["accel"], expected.as_str(), "{err}");
    let why = if expected == "tcg" {
        "vmx/svm"
    } else {
        "has vmx/svm"
    };
    assert!(
        err.contains("accelerator:") && err.contains(why),
        "mkh did not say why it chose {expected}:\n{err}"
    );
    assert!(
        err.contains("uploading the guest image"),
        "the first environment did not upload the image:\n{err}"
    );

    // QEMU reads the uploaded volumes and writes the console into the pool: no client path.
    let xml = virsh(&["dumpxml", &name]);
    let cache = mkh::Settings::current().unwrap().cache_dir;
    for tag in ["kernel", "initrd"] {
        let path = xml
            .split(&format!("<{tag}>"))
            .nth(1)
            .and_then(|s| s.split(&format!("</{tag}>")).next())
            .unwrap_or_else(|| panic!("no <{tag}> in:\n{xml}"));
        assert!(
            path.starts_with(POOL_DIR),
            "<{tag}> is {path}, not a volume of mkh's pool"
        );
    }
    // Outside the owner record (which names the client's home for the reaper), no path of
    // the client's.
    let devices = xml.split("</metadata>").nth(1).unwrap_or(&xml);
    let home = mkh::Settings::current().unwrap().state_dir;
    assert!(
        !devices.contains(&cache.display().to_string())
            && !devices.contains(&home.display().to_string()),
        "the domain gives QEMU a path of the client's:\n{xml}"
    );
    let images = uploaded_images();
    assert_eq!(images.len(), 1, "{images:?}");
    let uploaded_at = images[0]["uploaded_at"].clone();

    // Its IPs, on both networks.
    for role in ["nat", "private"] {
        let ip = desc["ips"][role].as_str().unwrap_or("");
        assert!(ip.parse::<std::net::Ipv4Addr>().is_ok(), "{role}: {desc}");
    }

    // SSH through the host: while a command runs, the connection to the guest is the sshd's.
    let ip = desc["ips"]["private"].as_str().unwrap().to_owned();
    let mut held = client(Command::new(mkh_bin()).args(["ssh", &name, "--", "sleep", "6"]))
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut owners = String::new();
    let seen = wait_until(Duration::from_secs(30), || {
        owners = ssh_connection_owners(&ip);
        !owners.is_empty()
    });
    assert!(seen, "no SSH connection to {ip} seen");
    // (`sshd`, or `sshd-session` from OpenSSH 9.8 on.)
    assert!(
        owners.contains("((\"sshd") && !owners.contains("\"mkh\""),
        "the connection to the guest is not the host's sshd's:\n{owners}"
    );
    assert!(held.wait().unwrap().success());
    // Every run ends cleanly, also when the process exits while its tunnel's thread is still
    // closing the channel: libssh2's exit handler frees its state, and a thread still inside
    // libssh2 then would crash the process.
    for _ in 0..10 {
        let (code, out, err) =
            remote_mkh(&["ssh", &name, "--", "cat", "/proc/sys/kernel/hostname"]);
        assert_eq!((code, out.trim()), (0, name.as_str()), "{err}");
    }

    // A second environment, owned by a process that is SIGKILLed: the image is not uploaded
    // again, and the dead owner's objects are removed (by its watchdog, over the same URI),
    // after it fetched the machine's console log from the host into the artifacts.
    let artifacts = tempfile::tempdir().unwrap();
    let killed = ChildEnv::start_with(
        client(&mut Command::new(env!("CARGO_BIN_EXE_mkh-test-child")))
            .arg("hold-guest")
            .env("MKH_CHILD_ARTIFACTS", artifacts.path()),
    );
    let killed_name = killed.env_name();
    assert!(
        !remote_objects_of(&killed_name).is_empty(),
        "the second environment is not on the host"
    );
    let images = uploaded_images();
    assert_eq!(images.len(), 1, "{images:?}");
    assert_eq!(
        images[0]["uploaded_at"], uploaded_at,
        "the image was uploaded again"
    );
    killed.signal(nix::sys::signal::Signal::SIGKILL);
    let mut left = Vec::new();
    let gone = wait_until(Duration::from_secs(90), || {
        left = remote_objects_of(&killed_name);
        left.is_empty()
    });
    assert!(gone, "a SIGKILLed owner's objects stayed: {left:?}");
    drop(killed);
    let console = artifacts.path().join(format!("{killed_name}.console.log"));
    let console = std::fs::read_to_string(&console).unwrap_or_default();
    assert!(
        console.contains("mkh-guest: sshd ready"),
        "the artifacts lack the console log written on the host: {console:?}"
    );

    // Teardown: nothing of the environment stays; the image cache does.
    let (code, _, err) = remote_mkh(&["down", &name]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(remote_objects_of(&name), Vec::<String>::new());
    assert_eq!(leftovers(&name), Vec::<String>::new());
    assert_eq!(uploaded_images().len(), 1);
}

#[test]
#[ignore = "needs the loopback sshd of `MKH_SETUP_REMOTE=1 harness/scripts/setup-host.sh` (the test command starts it)"]
fn over_ssh_two_clients_with_their_own_lock_dirs_get_disjoint_subnets() {
    // Clients on two machines share no lock file: here, two lock dirs. A pool of 16 subnets,
    // which no other test uses, for 8 networks made at once: they must not overlap, and
    // libvirt's refusal of a subnet another client just took must make mkh take another.
    let locks = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let bin = env!("CARGO_BIN_EXE_mkh-test-child");
    let children: Vec<_> = (0..4)
        .map(|i| {
            let mut cmd = Command::new(bin);
            client(&mut cmd)
                .arg("hold")
                .env("MKH_LOCK_DIR", locks[i % 2].path())
                .env("MKH_SUBNET_POOL", "172.30.240.0/20")
                .env("MKH_SUBNET_PREFIX", "24");
            std::thread::spawn(move || ChildEnv::start_with(&mut cmd))
        })
        .collect();
    let children: Vec<ChildEnv> = children.into_iter().map(|t| t.join().unwrap()).collect();
    let mut subnets: Vec<String> = children.iter().flat_map(|c| c.subnets()).collect();
    let all = subnets.len();
    subnets.sort();
    subnets.dedup();
    assert_eq!(
        subnets.len(),
        all,
        "two networks share a subnet: {subnets:?}"
    );
    for s in &subnets {
        // Inside the pool 172.30.240.0/20, as /24s.
        let (addr, prefix) = s.split_once('/').unwrap();
        let octets = addr.parse::<std::net::Ipv4Addr>().unwrap().octets();
        assert!(
            octets[..2] == [172, 30] && octets[2] >= 240 && prefix == "24",
            "{s} is not a /24 of the pool"
        );
    }
    let names: Vec<String> = children.iter().map(|c| c.env_name()).collect();
    drop(children);
    for name in names {
        assert_eq!(remote_objects_of(&name), Vec::<String>::new());
    }
}
