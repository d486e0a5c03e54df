//! Warm starts of the built-in guest on real libvirt: restored from a saved guest, on the
//! environment's own networks, with its own identity, leases and clock.

use std::time::{SystemTime, UNIX_EPOCH};

use mkh::blocking::Env;
use mkh::{MachineOptions, NetworkRole};

fn warm_env() -> Env {
    mkh::Env::builder()
        .guest(MachineOptions::default().with_warm_start(true))
        .up_blocking()
        .unwrap()
}

fn run(env: &Env, role: NetworkRole, cmd: &str) -> String {
    let out = env.machine().unwrap().ssh(role).unwrap().exec(cmd).unwrap();
    assert_eq!(out.status, 0, "{cmd}: {out:?}");
    out.stdout.trim().to_owned()
}

/// What a warm machine must be: its own, on its own networks, as if it had booted.
fn assert_is_its_own(env: &Env) {
    let m = env.machine().unwrap();
    let ips = m.ips().unwrap();
    let nets = env.networks();
    assert!(nets.nat.subnet.contains(&ips.nat), "{ips:?} {nets:?}");
    assert!(
        nets.private.subnet.contains(&ips.private),
        "{ips:?} {nets:?}"
    );
    for role in NetworkRole::ALL {
        assert_eq!(run(env, role, "id -un"), "docker");
        assert_eq!(run(env, role, "hostname"), m.name());
        // The NIC carries the machine's own MAC, the one its lease was matched by.
        let macs = run(env, role, "cat /sys/class/net/*/address");
        assert!(
            macs.contains(m.as_async().mac(role)),
            "{macs} lacks {}",
            m.as_async().mac(role)
        );
    }
    let guest_time: u64 = run(env, NetworkRole::Private, "date +%s").parse().unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        guest_time.abs_diff(now) <= 5,
        "guest clock {guest_time}, host {now}"
    );
}

/// The saved guests in the cache, with their modification times.
fn saved_guests() -> Vec<(std::path::PathBuf, SystemTime)> {
    let dir = mkh::Settings::current().unwrap().cache_dir.join("warm");
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| (e.path(), e.metadata().unwrap().modified().unwrap()))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[test]
fn warm_machines_are_their_own_at_once_and_start_cold_after_a_stop() {
    // The first warm start of this image may boot and save the guest; these restore it.
    let first = warm_env();
    let saved = saved_guests();
    let second = warm_env();
    // The second restored the saved guest: no file of the cache was written again, and no
    // half-written save of this process stayed.
    let now = saved_guests();
    for (path, modified) in &saved {
        assert!(
            now.contains(&(path.clone(), *modified)),
            "{} was rewritten",
            path.display()
        );
    }
    let partial = format!(".save.partial-{}", std::process::id());
    assert!(
        !now.iter()
            .any(|(p, _)| p.to_string_lossy().ends_with(&partial)),
        "{now:?}"
    );
    // The template each saved guest booted as is gone.
    let lv = mkh_tests::libvirt();
    for env in [&first, &second] {
        let template = format!("{}~warm", env.machine().unwrap().name());
        assert!(
            lv.lookup_domain_by_name(&template).is_err(),
            "{template} stayed"
        );
    }
    assert_is_its_own(&first);
    assert_is_its_own(&second);
    let (a, b) = (first.machine().unwrap(), second.machine().unwrap());
    assert_ne!(a.name(), b.name());
    assert_ne!(
        a.as_async().mac(NetworkRole::Private),
        b.as_async().mac(NetworkRole::Private)
    );
    // Each took its identity from the host: its own console says so.
    for m in [&a, &b] {
        let console = std::fs::read_to_string(m.as_async().console_log().unwrap()).unwrap();
        assert!(
            console.contains(&format!("mkh-guest: warm: restored as {}", m.name())),
            "{console}"
        );
    }
    // The host key mkh pinned is the one the restored guest offers (a changed one fails SSH).
    let before = a.ips().unwrap();
    a.stop().unwrap();
    let after = a.start().unwrap();
    assert_eq!(after, before, "the same MACs keep their addresses");
    assert_is_its_own(&first);
    let console = std::fs::read_to_string(a.as_async().console_log().unwrap()).unwrap();
    assert!(
        console.contains("mkh-guest: init started"),
        "a start after a stop boots cold: {console}"
    );
}

#[test]
fn a_warm_machine_offers_what_the_scenario_steps_need() {
    let env = warm_env();
    for tool in ["ip -V", "tc -V", "ping -V", "test -p /run/mkh/dhcp-request"] {
        let out = env
            .machine()
            .unwrap()
            .ssh(NetworkRole::Private)
            .unwrap()
            .exec(&format!("{tool} >/dev/null 2>&1; echo $?"))
            .unwrap();
        assert_eq!(out.stdout.trim(), "0", "{tool}: {out:?}");
    }
    // netem loads on demand, as on a cold guest.
    let eth = run(
        &env,
        NetworkRole::Private,
        "ip -o -4 addr | awk '/eth/ {print $2; exit}'",
    );
    run(
        &env,
        NetworkRole::Nat,
        &format!("tc qdisc add dev {eth} root netem delay 1ms && tc qdisc del dev {eth} root"),
    );
}
