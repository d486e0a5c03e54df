//! `mkh bench [--runs N]`: time from request to SSH-ready on both networks, by phase, and teardown,
//! for mkh (`Env::builder().guest(..).up()`) and, in the same run, for `scripts/bench-baseline.sh`, which
//! does the same steps by hand with virsh and ssh on the same guest. Prints medians and the ratio
//! mkh / baseline. Runs alternate between the two so that load drifts hit both alike.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::libvirt::Libvirt;
use crate::machine::image::{self, GuestImage};
use crate::machine::spec::{derive_mac, Boot, MachineSpec, NetworkRole, Nic};
use crate::machine::{choose_accel, Accel, MachineOptions};
use crate::names::EnvId;
use crate::net::{taken_subnets, NetworkKind, NetworkSpec};
use crate::owner::{Owner, OwnerKind};
use crate::ssh::KeyPair;
use crate::{Env, Settings};

/// The script doing by hand what mkh does, for the comparison.
const BASELINE: &str = include_str!("../scripts/bench-baseline.sh");

const PHASES: [&str; 5] = ["networks", "define_start", "leases", "ssh", "teardown"];

type Sample = BTreeMap<&'static str, f64>;

/// Runs the benchmark `runs` times each and prints the table.
pub(crate) fn run(settings: &Settings, runs: usize) -> Result<()> {
    let lv = Libvirt::connect_to(&settings.libvirt_uri)?;
    let accel = choose_accel(&lv, settings.accel);
    let image = image::ensure_guest_image(&settings.cache_dir)?;
    println!(
        "mkh-bench: {runs} runs each, accelerator {}, libvirt {}",
        accel.as_str(),
        lv.uri()
    );

    let mut mkh_samples = Vec::new();
    let mut base_samples = Vec::new();
    for run in 1..=runs {
        mkh_samples.push(run_mkh(settings)?);
        base_samples.push(run_baseline(settings, &lv, accel, &image)?);
        println!(
            "run {run}: mkh {:.2}s to SSH, baseline {:.2}s",
            ready(mkh_samples.last().unwrap()),
            ready(base_samples.last().unwrap())
        );
    }

    println!("\nmedian seconds over {runs} runs");
    println!(
        "{:<14} {:>9} {:>9} {:>8}",
        "phase", "mkh", "baseline", "ratio"
    );
    let mut rows: Vec<(&str, f64, f64)> = PHASES
        .iter()
        .map(|p| (*p, median(&mkh_samples, p), median(&base_samples, p)))
        .collect();
    let total = |s: &[Sample]| {
        let readies: Vec<Sample> = s
            .iter()
            .map(|x| Sample::from([("ready", ready(x))]))
            .collect();
        median(&readies, "ready")
    };
    rows.insert(
        4,
        ("to SSH-ready", total(&mkh_samples), total(&base_samples)),
    );
    for (phase, m, b) in rows {
        println!("{phase:<14} {m:>9.3} {b:>9.3} {:>8.2}", m / b);
    }
    Ok(())
}

fn ready(s: &Sample) -> f64 {
    ["networks", "define_start", "leases", "ssh"]
        .iter()
        .map(|p| s[p])
        .sum()
}

fn median(samples: &[Sample], phase: &str) -> f64 {
    let mut v: Vec<f64> = samples.iter().map(|s| s[phase]).collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn run_mkh(settings: &Settings) -> Result<Sample> {
    let mut env = Env::builder()
        .settings(settings.clone())
        .guest(MachineOptions::default())
        .up_now()?;
    let t = env.timings();
    let secs = |d: Option<Duration>| d.expect("phase timed").as_secs_f64();
    let mut s = Sample::from([
        ("networks", secs(t.networks)),
        ("define_start", secs(t.define_start)),
        ("leases", secs(t.leases)),
        ("ssh", secs(t.ssh)),
    ]);
    let started = Instant::now();
    env.teardown_now()?;
    s.insert("teardown", started.elapsed().as_secs_f64());
    Ok(s)
}

/// Prepares the same objects mkh would make (same XML renderers, same image, same command line)
/// and lets the shell script create, wait for and remove them.
fn run_baseline(
    settings: &Settings,
    lv: &Libvirt,
    accel: Accel,
    img: &GuestImage,
) -> Result<Sample> {
    let id = EnvId::random();
    let env = format!("mkhb-{id}");
    let owner = Owner::for_new_object(OwnerKind::Process, &env, settings);
    let dir = std::env::temp_dir().join(format!("mkh-bench-{id}"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let key = KeyPair::generate(&dir.join("id_ed25519"), "bench")?;
    let host_key = KeyPair::generate(&dir.join("host"), "bench")?;

    let taken = taken_subnets(lv)?;
    let subnets = settings.subnet_pool.choose(&taken, 2, rand_start())?;
    let (nat, private) = (format!("mkhb-{id}-nat"), format!("mkhb-{id}-prv"));
    let nat_spec = NetworkSpec::new(&nat, NetworkKind::Nat, &nat, subnets[0], owner.clone())?;
    let priv_spec = NetworkSpec::new(
        &private,
        NetworkKind::Isolated,
        &private,
        subnets[1],
        owner.clone(),
    )?;
    let cmdline = image::kernel_cmdline(&image::BootParams {
        hostname: &env,
        authorized_key: &key.public_line()?,
        host_key: Some(&host_key.private_text()?),
    })?;
    let nics = vec![
        Nic {
            role: NetworkRole::Private,
            network: private.clone(),
            mac: derive_mac(&env, NetworkRole::Private),
        },
        Nic {
            role: NetworkRole::Nat,
            network: nat.clone(),
            mac: derive_mac(&env, NetworkRole::Nat),
        },
    ];
    let domain = MachineSpec {
        name: env.clone(),
        memory_mib: MachineOptions::default().memory_mib,
        vcpus: MachineOptions::default().vcpus,
        accel,
        boot: Boot::Kernel {
            kernel: img.kernel.clone(),
            initrd: img.initrd.clone(),
            cmdline,
        },
        nics: nics.clone(),
        console_log: dir.join("console.log"),
        owner,
    };
    write(&dir, "nat.xml", &nat_spec.to_xml())?;
    write(&dir, "priv.xml", &priv_spec.to_xml())?;
    write(&dir, "domain.xml", &domain.to_xml())?;
    write(
        &dir,
        "names.env",
        &format!(
            "NAT={nat}\nPRIV={private}\nDOMAIN={env}\nMAC_NAT={}\nMAC_PRIV={}\n",
            nics[1].mac, nics[0].mac
        ),
    )?;
    let out = Command::new("bash")
        .arg("-c")
        .arg(BASELINE)
        .arg("bench-baseline.sh")
        .arg(&dir)
        .output()
        .map_err(|e| Error::io("bash", e))?;
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // Leave nothing behind even when the script failed half-way.
        let _ = lv.remove_domain(&env);
        let _ = lv.remove_network(&nat);
        let _ = lv.remove_network(&private);
        return Err(Error::BadFile {
            path: "scripts/bench-baseline.sh".into(),
            what: "the benchmark's baseline".into(),
            problem: format!("it failed: {text}{}", String::from_utf8_lossy(&out.stderr)),
        });
    }
    let line = text.lines().last().unwrap_or_default();
    let mut s = Sample::new();
    for field in line.split_whitespace() {
        let (k, v) = field.split_once('=').expect("key=value");
        let k = PHASES.iter().find(|p| **p == k).expect("known phase");
        s.insert(k, v.parse().expect("seconds"));
    }
    Ok(s)
}

fn rand_start() -> usize {
    (std::process::id() as usize).wrapping_mul(2654435761) % 4000
}

fn write(dir: &Path, name: &str, text: &str) -> Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|e| Error::io(&path, e))
}
