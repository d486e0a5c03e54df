//! Per-test networks on the real `qemu:///system`: bridges, dnsmasq, subnets, ownership, and
//! teardown whatever happens to the owning process.

use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use mkh::{Env, NetworkKind, SubnetPool};
use mkh_tests::*;
use nix::sys::signal::Signal;

const CHILD: &str = env!("CARGO_BIN_EXE_mkh-test-child");

/// A network namespace with a veth pair whose host end sits on `bridge`: a DHCP client that is
/// not a VM, to see dnsmasq answer on the network.
struct DhcpProbe {
    ns: String,
}

impl DhcpProbe {
    fn attach(tag: &str, bridge: &str) -> DhcpProbe {
        let ns = format!("mkhprobe-{tag}");
        let host_end = format!("mkp{tag}h");
        let ns_end = format!("mkp{tag}g");
        let probe = DhcpProbe { ns: ns.clone() };
        for args in [
            vec!["netns", "add", &ns],
            vec![
                "link", "add", &host_end, "type", "veth", "peer", "name", &ns_end,
            ],
            vec!["link", "set", &host_end, "master", bridge, "up"],
            vec!["link", "set", &ns_end, "netns", &ns],
            vec!["-n", &ns, "link", "set", &ns_end, "up"],
        ] {
            run("ip", &args);
        }
        probe
    }

    /// Asks for a lease with busybox's udhcpc; returns the address offered.
    fn lease(&self, tag: &str) -> Ipv4Addr {
        let ns_end = format!("mkp{tag}g");
        let out = Command::new("ip")
            .args([
                "netns", "exec", &self.ns, "busybox", "udhcpc", "-i", &ns_end,
            ])
            .args(["-n", "-q", "-f", "-t", "10", "-T", "1", "-s", "/bin/true"])
            .output()
            .expect("busybox udhcpc runs (package busybox-static)");
        let text = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        let ip = text
            .split("lease of ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no lease offered: {text}"));
        ip.parse().expect("an IPv4 address")
    }
}

impl Drop for DhcpProbe {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair with it.
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().expect("command runs");
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn wait_for_exit(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(
            start.elapsed() < limit,
            "child still running after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn both_networks_come_up_with_bridges_and_dhcp() {
    let env = Env::builder().up_blocking().unwrap();
    let nets = env.networks().clone();
    for net in [&nets.nat, &nets.private] {
        assert!(
            interface_exists(&net.bridge),
            "bridge {} missing",
            net.bridge
        );
        let gw = format!("{}/{}", net.gateway, net.subnet.prefix_len());
        assert_eq!(interface_addresses(&net.bridge), vec![gw]);
        let tag = format!(
            "{}{}",
            net.name.split('-').nth(1).expect("mkh-<id>-<kind>"),
            if net.kind == NetworkKind::Nat {
                "n"
            } else {
                "p"
            }
        );
        let probe = DhcpProbe::attach(&tag, &net.bridge);
        let leased = probe.lease(&tag);
        assert!(
            net.subnet.contains(&leased),
            "{leased} outside {}",
            net.subnet
        );
        assert_ne!(leased, net.gateway);
    }
    let xml = |name: &str| {
        let out = Command::new("virsh")
            .args(["-c", "qemu:///system", "net-dumpxml", name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(xml(&nets.nat.name).contains("<forward mode='nat'"));
    let private = xml(&nets.private.name);
    assert!(!private.contains("<forward"), "{private}");
    assert!(private.contains("<dns enable='no'"), "{private}");

    env.teardown().unwrap();
    for net in [&nets.nat, &nets.private] {
        assert!(!network_exists(&net.name), "{} left behind", net.name);
        assert!(
            !interface_exists(&net.bridge),
            "bridge {} left behind",
            net.bridge
        );
    }
}

#[test]
fn two_processes_started_at_once_get_different_subnets() {
    // A pool of exactly four subnets for four networks: any overlap would show.
    let start = || {
        ChildEnv::start_with(
            Command::new(CHILD)
                .arg("hold")
                .env("MKH_SUBNET_POOL", "10.207.240.0/22")
                .env("MKH_SUBNET_PREFIX", "24"),
        )
    };
    let a = std::thread::spawn(start);
    let b = std::thread::spawn(start);
    let (mut a, mut b) = (a.join().unwrap(), b.join().unwrap());
    let mut all = a.subnets();
    all.extend(b.subnets());
    let distinct: std::collections::HashSet<_> = all.iter().collect();
    assert_eq!(distinct.len(), 4, "subnets collide: {all:?}");
    for c in [&mut a, &mut b] {
        c.signal(Signal::SIGTERM);
        wait_for_exit(&mut c.child, Duration::from_secs(20));
        for n in c.network_names() {
            assert!(!network_exists(&n), "{n} left behind");
        }
    }
}

/// Starts `mkh-test-child MODE`, sends SIGTERM, and checks the exit status and that the
/// child's networks are gone.
fn sigterm_removes_everything(mode: &str, expected_code: i32) {
    let mut c = ChildEnv::start(CHILD, mode);
    let names = c.network_names();
    assert!(names.iter().all(|n| network_exists(n)));
    c.signal(Signal::SIGTERM);
    // nextest's default grace period between SIGTERM and SIGKILL is 10 s.
    let status = wait_for_exit(&mut c.child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(expected_code), "{status:?}");
    for n in &names {
        assert!(!network_exists(n), "{n} left behind after SIGTERM");
    }
}

#[test]
fn sigterm_makes_the_owner_remove_its_objects_before_exiting() {
    sigterm_removes_everything("hold", 128 + 15);
}

#[test]
fn a_program_that_handles_signals_itself_can_turn_mkh_s_handler_off() {
    // The program's own handler runs (exit 0), not mkh's (128 + 15), and its teardown removes
    // everything.
    sigterm_removes_everything("own-signals", 0);
}

#[test]
fn a_sigkilled_owner_s_watchdog_removes_its_objects_within_seconds() {
    // The owner in a process group of its own, killed as nextest kills a test's group.
    let mut killed = ChildEnv::start_with(Command::new(CHILD).arg("hold").process_group(0));
    let env = killed.env_name();
    let pid = killed.child.id() as i32;
    let home = PathBuf::from(killed.description["home"].as_str().unwrap());
    assert!(!objects_of_env(&env).is_empty());
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let killed_at = Instant::now();
    wait_for_exit(&mut killed.child, Duration::from_secs(5));
    // No other mkh process runs meanwhile: only the watchdog can remove them.
    while !objects_of_env(&env).is_empty() || home.exists() {
        assert!(
            killed_at.elapsed() < Duration::from_secs(5),
            "left 5 s after SIGKILL: {:?}, home {}",
            objects_of_env(&env),
            home.exists()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The watchdog noticed its owner's end and swept (another test's mkh process, starting
    // meanwhile, may have swept first: the removals are then in its log, not the watchdog's).
    let log = mkh::Settings::current()
        .unwrap()
        .state_dir
        .join("watchdog")
        .join(format!("{pid}.log"));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains(&format!("owner pid {pid} ended; sweeping 1 place(s)")),
        "{}: {text}",
        log.display()
    );
    // Its work done, the watchdog is gone too.
    let argv0 = format!("mkh-watchdog-of-{pid}");
    while processes_named(&argv0) > 0 {
        assert!(
            killed_at.elapsed() < Duration::from_secs(10),
            "{argv0} still runs"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_hand_over_cut_short_by_sigkill_is_removed_whole() {
    // A kill in the middle of the hand-over to the CLI leaves some objects the CLI's and the
    // rest the dead process's: made here by re-tagging one network as the hand-over does.
    let mut killed = ChildEnv::start_with(Command::new(CHILD).arg("hold").process_group(0));
    let env = killed.env_name();
    let home = PathBuf::from(killed.description["home"].as_str().unwrap());
    let handed = &killed.network_names()[0];
    let lv = libvirt();
    let xml = lv
        .lookup_network_by_name(handed)
        .unwrap()
        .xml_desc(0)
        .unwrap();
    assert!(xml.contains(r#"kind="process""#), "{xml}");
    lv.define_network_xml(&xml.replace(r#"kind="process""#, r#"kind="cli""#))
        .unwrap();
    let pid = killed.child.id() as i32;
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    wait_for_exit(&mut killed.child, Duration::from_secs(5));
    let gone = wait_until(Duration::from_secs(5), || {
        objects_of_env(&env).is_empty() && !home.exists()
    });
    assert!(
        gone,
        "left 5 s after SIGKILL: {:?}, home {}",
        objects_of_env(&env),
        home.exists()
    );
}

/// Processes whose `argv[0]` is `name`.
fn processes_named(name: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|raw| raw.split(|b| *b == 0).next() == Some(name.as_bytes()))
        .count()
}

#[test]
fn objects_of_a_sigkilled_process_are_removed_by_the_next_mkh_process() {
    // Without the watchdog, the reaper of the next mkh process is the line that remains.
    let mut killed = ChildEnv::start_with(Command::new(CHILD).arg("hold").env("MKH_WATCHDOG", "0"));
    let names = killed.network_names();
    let env = killed.env_name();
    killed.signal(Signal::SIGKILL);
    wait_for_exit(&mut killed.child, Duration::from_secs(5));

    // Any new mkh process that creates objects sweeps first.
    let mut next = ChildEnv::start(CHILD, "once");
    let status = wait_for_exit(&mut next.child, Duration::from_secs(20));
    assert!(status.success());
    for n in &names {
        assert!(
            !network_exists(n),
            "{n} of the killed process is still there"
        );
    }
    assert!(objects_of_env(&env).is_empty());
}

/// Reapers of several processes meet on the same dead owner's objects (every mkh process
/// sweeps before it creates): each finds them removed or removes them, none reports an error.
#[test]
fn reapers_racing_on_a_dead_owner_s_objects_all_succeed() {
    for _round in 0..3 {
        let mut killed =
            ChildEnv::start_with(Command::new(CHILD).arg("hold").env("MKH_WATCHDOG", "0"));
        let env = killed.env_name();
        killed.signal(Signal::SIGKILL);
        wait_for_exit(&mut killed.child, Duration::from_secs(5));
        let reapers: Vec<_> = (0..4)
            .map(|_| {
                Command::new(mkh_bin())
                    .args(["reap", "--json"])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for reaper in reapers {
            let out = reaper.wait_with_output().unwrap();
            let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert!(
                out.status.success() && report["errors"].as_array().unwrap().is_empty(),
                "{report}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            objects_of_env(&env).is_empty(),
            "{:?}",
            objects_of_env(&env)
        );
    }
}

#[test]
fn a_panicking_test_still_removes_its_networks() {
    let names = std::sync::Mutex::new(Vec::new());
    let result = std::panic::catch_unwind(|| {
        let env = Env::builder().up_blocking().unwrap();
        let nets = env.networks();
        names
            .lock()
            .unwrap()
            .extend([nets.nat.name.clone(), nets.private.name.clone()]);
        panic!("the test body fails");
    });
    assert!(result.is_err());
    let names = names.into_inner().unwrap();
    assert_eq!(names.len(), 2);
    for n in &names {
        assert!(!network_exists(n), "{n} left behind after a panic");
    }
}

#[test]
fn a_decoy_named_like_mkh_survives_reap_all() {
    // The decoy is not mkh's, whatever run is asked for: only metadata makes an object mkh's.
    // A CLI-owned environment, which `reap --all` must remove, under a run id of its own: the
    // reap is limited to it, so the developers' and other runs' environments on this host stay.
    let run = format!("decoy-test-{}", std::process::id());
    let cli = ChildEnv::start_with(Command::new(CHILD).arg("hold-cli").env("MKH_RUN_ID", &run));
    let cli_names = cli.network_names();
    // ...and a network that only looks like mkh's: no metadata.
    let lv = libvirt();
    // Out of mkh's pool: a user's network that happens to use an mkh-like name.
    let subnet: mkh::ipnet::Ipv4Net = format!("10.199.{}.0/24", std::process::id() % 250)
        .parse()
        .unwrap();
    let decoy = format!("mkh-decoy{}-nat", std::process::id() % 10000);
    let gw = subnet.hosts().next().unwrap();
    let xml = format!(
        "<network><name>{decoy}</name><bridge name='mkhdecoy{}'/><ip address='{gw}' prefix='{}'/></network>",
        std::process::id() % 10000,
        subnet.prefix_len()
    );
    let net = lv.define_network_xml(&xml).unwrap();
    net.create().unwrap();

    let (code, out, err) = mkh(&["reap", "--all", "--run", &run]);
    let decoy_survived = network_exists(&decoy);
    // The test's own object: the test removes it.
    let _ = net.destroy();
    let _ = net.undefine();
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        decoy_survived,
        "mkh reap --all removed a network it did not create:\n{out}"
    );
    for n in &cli_names {
        assert!(
            !network_exists(n),
            "CLI-owned {n} survived reap --all:\n{out}"
        );
    }
}

#[test]
fn cli_lists_and_removes_cli_owned_environments() {
    let cli = ChildEnv::start(CHILD, "hold-cli");
    let name = cli.env_name();
    let (code, out, _) = mkh(&["ls", "--json"]);
    assert_eq!(code, 0);
    let envs: serde_json::Value = serde_json::from_str(&out).unwrap();
    let listed = envs
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name.as_str());
    let listed = listed.expect("listed");
    assert_eq!(listed["kind"], "cli");
    // Each network with its subnet, as the child made them.
    let mut seen: Vec<(String, String)> = listed["networks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap().to_owned(),
                n["subnets"][0].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    seen.sort();
    let mut made: Vec<(String, String)> =
        cli.network_names().into_iter().zip(cli.subnets()).collect();
    made.sort();
    assert_eq!(seen, made);

    let (code, out, err) = mkh(&["down", &name]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(objects_of_env(&name).is_empty());

    let (code, _, err) = mkh(&["down", &name]);
    assert_ne!(code, 0);
    assert!(err.contains(&name) && err.contains("mkh ls"), "{err}");
}

#[test]
fn an_exhausted_pool_is_a_clear_error_and_leaves_nothing() {
    // One /24 cannot hold two networks: the NAT network is made, the private one fails.
    let pool = SubnetPool::parse("10.207.250.0/24", "24").unwrap();
    let err = Env::builder()
        .subnet_pool(pool)
        .up_blocking()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("10.207.250.0/24") && err.contains("exhausted"),
        "{err}"
    );
    // nextest runs each test in a process of its own: whatever this pid owns, this test made.
    let left: Vec<_> = mkh::admin::audit(&mkh::Settings::current().unwrap(), None)
        .unwrap()
        .others
        .into_iter()
        .filter(|o| o.owner.process.pid == std::process::id())
        .map(|o| o.name)
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn a_bad_pool_setting_names_the_variable() {
    let out = Command::new(CHILD)
        .arg("once")
        .env("MKH_SUBNET_POOL", "10.1.0.0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("MKH_SUBNET_POOL") && err.contains("10.1.0.0"),
        "{err}"
    );
}

#[test]
#[ignore = "needs a user in group libvirt named by MKH_TEST_USER (harness/scripts/test.sh creates one and runs this)"]
fn a_non_root_libvirt_user_can_run_the_network_lifecycle() {
    let user = std::env::var("MKH_TEST_USER")
        .expect("MKH_TEST_USER names a user in group libvirt (see harness/scripts/test.sh)");
    let (_dir, bins) = binaries_for_another_user(&[CHILD]);
    let bin = &bins[0];
    let mut c = ChildEnv::start_with(
        Command::new("runuser")
            .args(["-u", &user, "--"])
            .arg(bin)
            .arg("hold"),
    );
    let names = c.network_names();
    for n in &names {
        assert!(network_exists(n), "{n} not created by {user}");
    }
    // runuser forwards SIGTERM to the child it started.
    c.signal(Signal::SIGTERM);
    wait_for_exit(&mut c.child, Duration::from_secs(10));
    for n in &names {
        assert!(!network_exists(n), "{n} left behind by {user}");
    }
}

#[test]
fn bad_settings_and_names_are_refused_before_anything_is_made() {
    let run = format!("hostile-{}", std::process::id());
    let name = format!("hostile-{}", std::process::id());
    // (variables, `--name`, what the error must name)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a [&'a str]);
    let cases: &[Case] = &[
        (
            &[("MKH_TIMEOUT_SCALE", "inf")],
            &name,
            &["MKH_TIMEOUT_SCALE", "inf"],
        ),
        (
            &[("MKH_TIMEOUT_SCALE", "-1")],
            &name,
            &["MKH_TIMEOUT_SCALE", "-1"],
        ),
        (
            &[("MKH_TIMEOUT_SCALE", "NaN")],
            &name,
            &["MKH_TIMEOUT_SCALE", "NaN"],
        ),
        (
            &[("MKH_TIMEOUT_SCALE", "1e308")],
            &name,
            &["MKH_TIMEOUT_SCALE", "1e308"],
        ),
        (&[("MKH_KEEP", "maybe")], &name, &["MKH_KEEP", "maybe"]),
        (
            &[("MKH_MEMORY_MIB", "99999999999")],
            &name,
            &["MKH_MEMORY_MIB", "99999999999"],
        ),
        (&[("MKH_NODES", "0")], &name, &["MKH_NODES"]),
        (&[("MKH_ACCEL", "bogus")], &name, &["MKH_ACCEL", "bogus"]),
        (&[("MKH_CPUS", "two")], &name, &["MKH_CPUS", "two"]),
        (
            &[("MKH_MINIKUBE_ARGS", "--x='open")],
            &name,
            &["MKH_MINIKUBE_ARGS"],
        ),
        (
            &[("MKH_SUBNET_PREFIX", "40")],
            &name,
            &["MKH_SUBNET_PREFIX", "40"],
        ),
        (&[], "a-", &["environment name", "a-"]),
        (&[], "x", &["environment name"]),
    ];
    let state = mkh::Settings::current().unwrap().state_dir;
    for (vars, up_name, expected) in cases {
        let mut envs = vars.to_vec();
        envs.push(("MKH_RUN_ID", &run));
        let (code, out, err) = mkh_with_env(&["up", "--name", up_name], &envs);
        assert_ne!(code, 0, "{vars:?} {up_name}: {out}");
        for e in *expected {
            assert!(err.contains(e), "{vars:?} {up_name}: {err}");
        }
        assert!(!err.contains("panicked"), "{err}");
        assert!(
            !state.join("envs").join(up_name).exists(),
            "{up_name}: a home was made"
        );
    }
    let (code, out, err) = mkh(&["audit", "--run", &run]);
    assert_eq!(code, 0, "objects were made: {out}{err}");
}
