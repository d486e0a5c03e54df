//! The built-in guest on real libvirt (TCG here): boot on both networks, IPs from leases matched
//! by MAC, SSH as `docker`, lifecycle, link state, host keys, and the CLI round trip.

use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use mkh::blocking::Env;
use mkh::{Error, MachineOptions, NetworkRole};
use mkh_tests::*;

fn env_with_guest() -> Env {
    mkh::Env::builder()
        .guest(MachineOptions::default())
        .up_blocking()
        .unwrap()
}

/// Whether sshd accepts a TCP connection at `ip` within 5 s.
fn sshd_answers(ip: Ipv4Addr) -> bool {
    std::net::TcpStream::connect_timeout(&(ip, 22).into(), Duration::from_secs(5)).is_ok()
}

/// The IP a network's DHCP lease gives `mac`, as `virsh net-dhcp-leases` shows it.
fn leased_ip(network: &str, mac: &str) -> Option<Ipv4Addr> {
    let out = Command::new("virsh")
        .args(["-c", &mkh::Settings::current().unwrap().libvirt_uri])
        .args(["net-dhcp-leases", network])
        .output()
        .expect("virsh runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains(mac))
        .and_then(|l| l.split_whitespace().find(|w| w.contains('/')))
        .and_then(|w| w.split('/').next()?.parse().ok())
}

fn ping(ip: Ipv4Addr) -> bool {
    Command::new("ping")
        .args(["-c", "1", "-W", "3", &ip.to_string()])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn ssh_run(env: &Env, role: NetworkRole, cmd: &str) -> String {
    let m = env.machine().unwrap();
    let out = m.ssh(role).unwrap().exec(cmd).unwrap();
    assert_eq!(out.status, 0, "{cmd}: {out:?}");
    out.stdout.trim().to_owned()
}

#[test]
fn a_machine_boots_on_both_networks_and_answers_ping_and_ssh() {
    let env = env_with_guest();
    let m = env.machine().unwrap();
    let ips = m.ips().unwrap();
    let nets = env.networks();
    assert!(
        nets.nat.subnet.contains(&ips.nat),
        "{} not in {}",
        ips.nat,
        nets.nat.subnet
    );
    assert!(
        nets.private.subnet.contains(&ips.private),
        "{} not in {}",
        ips.private,
        nets.private.subnet
    );
    for role in [NetworkRole::Nat, NetworkRole::Private] {
        let ip = m.ips().unwrap().get(role);
        assert!(ping(ip), "no ping reply from {ip} ({role})");
        assert_eq!(ssh_run(&env, role, "id -un"), "docker");
        assert_eq!(ssh_run(&env, role, "hostname"), m.name());
    }
    let console = std::fs::read_to_string(
        m.as_async()
            .console_log()
            .expect("the built-in guest logs its console"),
    )
    .unwrap();
    // The kernel boots `quiet`; the guest's own lines name its kernel and say when sshd was up.
    for line in [
        "mkh-guest: init started, kernel ",
        "mkh-guest: sshd ready at ",
    ] {
        assert!(
            console.contains(line),
            "console log lacks {line:?}: {console}"
        );
    }
    env.teardown().unwrap();
}

#[test]
fn a_stopped_machine_has_no_ip_and_comes_back_after_start() {
    let env = env_with_guest();
    let m = env.machine().unwrap();
    let before = m.ips().unwrap();
    m.stop().unwrap();
    let started = Instant::now();
    let err = m.ip(NetworkRole::Private).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the error must come at once"
    );
    assert!(matches!(err, Error::MachineNotRunning { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("is stopped, and this needs it running") && text.contains("start"),
        "{text}"
    );

    let after = m.start().unwrap();
    // The same MACs keep their addresses (dnsmasq remembers them).
    assert_eq!(after, before);
    // The host key survived the restart: the recorded key still matches.
    assert_eq!(ssh_run(&env, NetworkRole::Private, "id -un"), "docker");
    assert_eq!(ssh_run(&env, NetworkRole::Nat, "id -un"), "docker");
}

#[test]
fn link_down_cuts_one_network_and_link_up_restores_it() {
    let env = env_with_guest();
    let m = env.machine().unwrap();
    let ips = m.ips().unwrap();
    m.set_link(NetworkRole::Private, false).unwrap();
    assert!(
        !sshd_answers(ips.private),
        "SSH over the private IP {} still works with its link down",
        ips.private
    );
    assert_eq!(ssh_run(&env, NetworkRole::Nat, "id -un"), "docker");
    // Commands may outlast the connection timeout (10 s).
    assert_eq!(
        ssh_run(&env, NetworkRole::Nat, "sleep 12; echo done"),
        "done"
    );

    m.set_link(NetworkRole::Private, true).unwrap();
    assert_eq!(ssh_run(&env, NetworkRole::Private, "id -un"), "docker");
    assert_eq!(ssh_run(&env, NetworkRole::Nat, "id -un"), "docker");
}

/// Boots machine `<env>-<suffix>` (hostname "twin") in `env` and returns its private IP.
fn boot_twin(env: &mut Env, suffix: &str) -> Ipv4Addr {
    let options = MachineOptions::default()
        .with_suffix(suffix)
        .with_hostname("twin");
    env.add_machine(&options)
        .unwrap()
        .ip(NetworkRole::Private)
        .unwrap()
}

#[test]
fn a_stale_lease_with_the_same_hostname_is_not_taken_for_the_new_machine() {
    let mut env = mkh::Env::builder().up_blocking().unwrap();
    let first_ip = boot_twin(&mut env, "twin-a");
    let first_mac = env.machines()[0]
        .as_async()
        .mac(NetworkRole::Private)
        .to_owned();
    let first = env.machines()[0].name().to_owned();
    env.remove_machine(&first).unwrap();
    assert_eq!(
        leased_ip(&env.networks().private.name, &first_mac),
        Some(first_ip),
        "the stale lease should linger"
    );

    let second_ip = boot_twin(&mut env, "twin-b");
    assert_ne!(
        second_ip, first_ip,
        "the new machine was given the old machine's address"
    );
    // The guest answering at the new address is the new machine: it has the new MAC.
    let m = &env.machines()[0];
    let new_mac = m.as_async().mac(NetworkRole::Private).to_owned();
    assert_ne!(new_mac, first_mac);
    let ssh = m.ssh(NetworkRole::Private).unwrap();
    let out = ssh.exec("cat /sys/class/net/*/address").unwrap();
    assert!(
        out.stdout.contains(&new_mac),
        "{new_mac} not in {}",
        out.stdout
    );
    assert!(!out.stdout.contains(&first_mac));
    assert_eq!(ssh.exec("hostname").unwrap().stdout.trim(), "twin");
    env.teardown().unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn a_long_exec_leaves_a_current_thread_runtime_free() {
    let env = mkh::Env::builder()
        .guest(MachineOptions::default())
        .up()
        .await
        .unwrap();
    let m = env.machine().unwrap();
    let ssh = m.ssh(NetworkRole::Private).await.unwrap();
    let ticks = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = ticks.clone();
    let ticker = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    // Three seconds in the guest; the ticker shares this runtime's only thread meanwhile, and
    // so does a libvirt call.
    let (out, ips) = tokio::join!(ssh.exec("sleep 3; echo done"), m.ips());
    let during = ticks.load(std::sync::atomic::Ordering::SeqCst);
    ticker.abort();
    assert_eq!(out.unwrap().stdout.trim(), "done");
    assert!(env
        .networks()
        .private
        .subnet
        .contains(&ips.unwrap().private));
    assert!(during >= 20, "the timer ticked only {during} times in 3 s");
    env.teardown().await.unwrap();
}

#[test]
fn exec_never_stalls_gives_eof_streams_and_keeps_its_deadline() {
    let env = env_with_guest();
    let ssh = env.machine().unwrap().ssh(NetworkRole::Private).unwrap();
    let out = ssh
        .exec("head -c 3000000 /dev/zero | tr '\\0' e >&2; echo end")
        .unwrap();
    assert_eq!(out.stdout.trim(), "end");
    assert_eq!(out.stderr.len(), 3_000_000);
    // A deadline ends the remote command: nothing of it runs on afterwards.
    let started = Instant::now();
    let err = ssh
        .exec_within("echo begun; sleep 300", Duration::from_secs(2))
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(err, Error::Timeout { .. }) && err.to_string().contains("begun"),
        "{err}"
    );
    let left = ssh.exec("ps | grep -c '[s]leep 300'").unwrap();
    assert_eq!(left.stdout.trim(), "0", "the command outlived its deadline");
    assert_eq!(
        ssh.exec_within("echo quick", Duration::from_secs(30))
            .unwrap()
            .stdout
            .trim(),
        "quick"
    );
    // A command that reads its standard input gets EOF at once.
    assert_eq!(ssh.exec("cat; echo eof").unwrap().stdout.trim(), "eof");
    // The streaming form: input in, both streams out as they come, the exit status back.
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let status = ssh
        .exec_streaming(
            "tr a-z A-Z; echo oops >&2; exit 3",
            Some(Box::new(std::io::Cursor::new(b"stream me".to_vec()))),
            &mut out,
            &mut err,
        )
        .unwrap();
    assert_eq!(status, 3);
    assert_eq!(String::from_utf8_lossy(&out), "STREAM ME");
    assert_eq!(String::from_utf8_lossy(&err), "oops\n");
}

#[test]
fn mkh_up_json_ssh_ip_and_down_round_trip() {
    let name = format!("rt-{}", std::process::id());
    let (code, out, err) = mkh(&["up", "--name", &name, "--json"]);
    assert_eq!(code, 0, "{err}");
    let d: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(d["version"], 1);
    assert_eq!(d["name"], name.as_str());
    assert_eq!(d["backend"], "builtin");
    assert!(["tcg", "kvm"].contains(&d["accel"].as_str().unwrap()));
    for net in ["nat", "private"] {
        for field in ["name", "subnet", "bridge"] {
            assert!(
                d["networks"][net][field].is_string(),
                "networks.{net}.{field}: {d}"
            );
        }
        let ip: Ipv4Addr = d["ips"][net].as_str().unwrap().parse().unwrap();
        let subnet: mkh::ipnet::Ipv4Net = d["networks"][net]["subnet"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(subnet.contains(&ip));
    }
    assert_eq!(d["ssh"]["user"], "docker");
    assert_eq!(d["ssh"]["port"], 22);
    assert!(std::path::Path::new(d["ssh"]["key"].as_str().unwrap()).exists());
    let home = d["home"].as_str().unwrap().to_owned();

    let (code, out, err) = mkh(&["ssh", &name, "--", "id", "-un"]);
    assert_eq!((code, out.trim()), (0, "docker"), "{err}");
    let (code, out, _) = mkh(&["ssh", &name, "--network", "nat", "--", "exit", "7"]);
    assert_eq!(code, 7, "{out}");
    // Standard input reaches the command, then EOF; output streams, however large, on either
    // stream; a reader that stops early ends the command. `timeout` exits 124 on a hang.
    let mkh_ssh = format!("timeout 120 {} ssh {name} --", mkh_bin().display());
    for (pipeline, expected) in [
        (format!("echo hi | {mkh_ssh} cat"), "hi"),
        (format!("{mkh_ssh} cat </dev/null; echo rc=$?"), "rc=0"),
        (
            format!("head -c 10000000 /dev/zero | {mkh_ssh} wc -c"),
            "10000000",
        ),
        (
            format!("{mkh_ssh} head -c 10000000 /dev/zero </dev/null | wc -c"),
            "10000000",
        ),
        (
            format!("{mkh_ssh} sh -c 'head -c 10000000 /dev/zero >&2' </dev/null 2>&1 >/dev/null | wc -c"),
            "10000000",
        ),
        (
            format!("{mkh_ssh} yes </dev/null | head -2; echo status=${{PIPESTATUS[0]}}"),
            "y\ny\nstatus=141",
        ),
    ] {
        let out = std::process::Command::new("bash")
            .args(["-c", &pipeline])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(stdout.trim(), expected, "{pipeline}: {out:?}");
    }
    let (code, out, _) = mkh(&["ip", &name, "--network", "nat"]);
    assert_eq!((code, out.trim()), (0, d["ips"]["nat"].as_str().unwrap()));

    // The seed article's workflow: `ip` refuses while the machine is stopped, in a shell
    // user's terms, and answers again after start.
    let (code, out, err) = mkh(&["stop", &name]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = mkh(&["ip", &name]);
    assert_eq!(code, 1);
    assert!(err.contains("is stopped"), "{err}");
    assert!(err.contains(&format!("mkh start {name}")), "{err}");
    assert!(
        !err.contains("Machine::"),
        "a Rust function named to a shell user: {err}"
    );
    let (code, out, err) = mkh(&["start", &name]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = mkh(&["ip", &name]);
    let ip: Ipv4Addr = out.trim().parse().unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(code, 0);
    assert!(out.contains(&ip.to_string()));
    let (code, out, _) = mkh(&["ssh", &name, "--", "id", "-un"]);
    assert_eq!((code, out.trim()), (0, "docker"));

    let (code, out, err) = mkh(&["down", &name]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(objects_of_env(&name).is_empty());
    assert!(!std::path::Path::new(&home).exists(), "{home} left behind");
    let (code, _, err) = mkh(&["down", &name]);
    assert_ne!(code, 0);
    assert!(err.contains(&name), "{err}");
}

/// How many of environment `name`'s objects the CLI owns.
fn cli_owned(name: &str) -> usize {
    mkh::admin::audit(&mkh::Settings::current().unwrap(), None)
        .unwrap()
        .others
        .into_iter()
        .filter(|o| o.owner.env == name && o.owner.kind == mkh::admin::OwnerKind::Cli)
        .count()
}

#[test]
fn a_sigkilled_mkh_down_is_finished_whenever_it_was_killed() {
    // `mkh down` killed at once, and once its removal has begun (its machine gone, its
    // networks not yet): within 5 s either nothing is left (its watchdog finished it, however
    // far its change of hands got), or it was killed before it began and the environment is
    // whole and still the CLI's, and a second `mkh down` removes it.
    for phase in ["at once", "mid-removal"] {
        let name = format!("kdown-{}-{}", phase.len(), std::process::id());
        let (code, _, err) = mkh(&["up", "--name", &name]);
        assert_eq!(code, 0, "{err}");
        let whole = objects_of_env(&name).len();
        let lv = libvirt();
        let mut down = std::process::Command::new(mkh_bin())
            .args(["down", &name])
            .process_group(0)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        if phase == "mid-removal" {
            let began = wait_until(Duration::from_secs(30), || {
                lv.lookup_domain_by_name(&name).is_err()
            });
            assert!(began, "mkh down never removed the machine");
        }
        let pid = nix::unistd::Pid::from_raw(down.id() as i32);
        let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = down.wait();
        let settled = wait_until(Duration::from_secs(5), || {
            let left = objects_of_env(&name).len();
            left == 0 || (phase == "at once" && left == whole && cli_owned(&name) == whole)
        });
        assert!(settled, "{phase}: half removed: {:?}", leftovers(&name));
        if !objects_of_env(&name).is_empty() {
            let (code, out, err) = mkh(&["down", &name]);
            assert_eq!(code, 0, "{phase}: second down: {out}{err}");
        }
        let clean = wait_until(Duration::from_secs(5), || leftovers(&name).is_empty());
        assert!(clean, "{phase}: left {:?}", leftovers(&name));
    }
}

#[test]
fn sigterm_or_sigint_at_any_instant_of_mkh_up_leaves_nothing() {
    // Without the watchdog: the signal handler alone must remove whatever exists, however
    // early the signal comes (every object is registered before it is made).
    for round in 0..12u64 {
        let name = format!("ksig-{round}-{}", std::process::id());
        let mut up = std::process::Command::new(mkh_bin())
            .args(["up", "--name", &name])
            .env("MKH_WATCHDOG", "0")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(round * 25));
        let signal = if round % 2 == 0 {
            nix::sys::signal::Signal::SIGTERM
        } else {
            nix::sys::signal::Signal::SIGINT
        };
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(up.id() as i32), signal);
        let status = up.wait().unwrap();
        // Once it exited, nothing of it may remain (the home included).
        assert!(
            leftovers(&name).is_empty(),
            "round {round} ({signal:?}, {status:?}): left {:?}",
            leftovers(&name)
        );
    }
}

#[test]
fn a_stopped_network_cuts_its_machine_off_until_the_machine_restarts() {
    // What a scenario's `destroy-network` and `start-network` steps do, through the public API
    // (the shipped scenario `private-network-restarted.toml` tells the story).
    let env = env_with_guest();
    let m = env.machine().unwrap();
    let private = m.ip(NetworkRole::Private).unwrap();
    let mac = m.mac(NetworkRole::Private).to_ascii_lowercase();
    let leased = |env: &Env| {
        env.leases(NetworkRole::Private)
            .unwrap()
            .into_iter()
            .find(|l| l.mac == mac)
            .map(|l| l.ip)
    };
    assert_eq!(leased(&env), Some(private));

    env.stop_network(NetworkRole::Private).unwrap();
    assert!(!ping(private), "{private} answers with its network stopped");
    // Stopped already is fine; the NAT network was never touched.
    env.stop_network(NetworkRole::Private).unwrap();
    assert_eq!(ssh_run(&env, NetworkRole::Nat, "id -un"), "docker");

    // libvirt does not plug a running guest's NIC back into the new bridge.
    env.start_network(NetworkRole::Private).unwrap();
    env.start_network(NetworkRole::Private).unwrap();
    assert!(
        !ping(private),
        "{private} answers before the machine restarted"
    );
    // A restart does, and the guest's lease on the new network is listed.
    m.restart().unwrap();
    let again = m.ip(NetworkRole::Private).unwrap();
    assert!(env.networks().private.subnet.contains(&again));
    assert_eq!(leased(&env), Some(again));
    assert!(ping(again));
}

#[test]
fn the_cli_and_a_test_s_env_drive_one_environment() {
    let name = format!("attach-{}", std::process::id());
    let (code, out, err) = mkh(&["up", "--name", &name, "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let home = serde_json::from_str::<serde_json::Value>(&out).unwrap()["home"]
        .as_str()
        .unwrap()
        .to_owned();
    let whole = objects_of_env(&name).len();
    let settings = mkh::Settings::current().unwrap();

    // A test reaches the CLI's environment by name and stops it; the CLI sees it stopped.
    let env = Env::attach(&name, settings.clone()).unwrap();
    assert_eq!(env.name(), name);
    let m = env.machine().unwrap();
    let (code, out, _) = mkh(&["ip", &name, "--network", "private"]);
    assert_eq!(
        (code, out.trim()),
        (0, m.ip(NetworkRole::Private).unwrap().to_string().as_str())
    );
    env.stop().unwrap();
    let (code, _, err) = mkh(&["ip", &name]);
    assert_eq!(code, 1);
    assert!(err.contains("is stopped"), "{err}");
    // The CLI starts it; the test's handle reaches it again.
    let (code, out, err) = mkh(&["start", &name]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(ssh_run(&env, NetworkRole::Nat, "id -un"), "docker");

    // Dropping the handle leaves the environment whole, and still the CLI's.
    drop(env);
    assert_eq!(objects_of_env(&name).len(), whole);
    assert_eq!(cli_owned(&name), whole);

    // A test's teardown of it does what `mkh down` does.
    Env::attach(&name, settings).unwrap().teardown().unwrap();
    assert!(objects_of_env(&name).is_empty());
    assert!(!std::path::Path::new(&home).exists(), "{home} left behind");
    let (code, _, err) = mkh(&["down", &name]);
    assert_ne!(code, 0);
    assert!(err.contains("no mkh environment named"), "{err}");
}
