//! Rules behind the private surface that only a real VM shows (real libvirt, TCG here). The
//! public behaviour is tested from `tests/`; these need mkh's own types.

use std::time::Duration;

use crate::error::Error;
use crate::machine::{MachineOptions, NetworkRole};
use crate::ssh::{self, SshTarget};
use crate::Env;

/// Boots machine `<env>-<suffix>` with hostname "twin".
fn boot_twin(env: &mut Env, suffix: &str) {
    let options = MachineOptions::default()
        .with_suffix(suffix)
        .with_hostname("twin");
    env.add_machine_now(&options).unwrap();
}

#[test]
fn a_guest_with_a_changed_host_key_is_refused() {
    let mut env = Env::builder().up_now().unwrap();
    boot_twin(&mut env, "twin-a");
    let first = env.machines()[0].name().to_owned();
    env.remove_machine_now(&first).unwrap();
    boot_twin(&mut env, "twin-b");
    // Address twin-b as if it were twin-a, whose key is recorded: another guest, another key.
    let b = env.machines()[0].ssh_target(NetworkRole::Private).unwrap();
    let ip_b = b.ip;
    let posing = SshTarget {
        machine: first.clone(),
        host_key_label: first.clone(),
        ..b
    };
    let err = ssh::connect(&posing, Duration::from_secs(30)).unwrap_err();
    assert!(matches!(err, Error::HostKeyChanged { .. }), "{err}");
    assert!(err.to_string().contains(&first), "{err}");
    assert_eq!(posing.ip, ip_b);
    env.teardown_now().unwrap();
}
