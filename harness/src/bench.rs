//! `mkh bench [--runs N] [--parallel 1,2,4] [--json]`: time from request to SSH-ready on both
//! networks, phase by phase, and teardown, for mkh (`Env::builder().guest(..)`, cold and warm)
//! and, in the same run, for `scripts/bench-baseline.sh`, which does the same steps by hand with
//! virsh and ssh on the same guest. Runs alternate between them so that load drifts hit all
//! alike. The floor is the guest's own time from kernel start to sshd and both leases, read from
//! its console. Then environments are brought up 1, 2, 4... at once.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Serialize;

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

/// Phases in order; the first five add up to "ready".
const PHASES: [&str; 6] = [
    "networks",
    "define_start",
    "first_lease",
    "leases",
    "ssh",
    "teardown",
];
/// `first_lease` lies within `leases`: not part of the sum.
const READY_PHASES: [&str; 4] = ["networks", "define_start", "leases", "ssh"];

type Sample = BTreeMap<&'static str, f64>;

/// What `mkh bench` runs.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Runs of each of mkh cold, mkh warm and the script.
    pub runs: usize,
    /// Widths of the parallel part: environments brought up at once.
    pub parallel: Vec<usize>,
    /// The report as JSON on stdout, progress on stderr.
    pub json: bool,
}

/// Medians in seconds, and the runs they come from.
#[derive(Debug, Serialize)]
struct Report {
    date: String,
    host: HostFacts,
    accelerator: &'static str,
    libvirt_uri: String,
    runs: usize,
    /// mkh, cold boot: request to SSH-ready on both networks.
    mkh_ready_s: f64,
    script_ready_s: f64,
    /// mkh_ready_s / script_ready_s.
    ratio: f64,
    /// The guest's kernel start to sshd listening and both leases bound, from its console.
    floor_s: f64,
    /// mkh_ready_s / floor_s.
    floor_ratio: f64,
    teardown_s: f64,
    script_teardown_s: f64,
    /// mkh, restored from the saved guest: request to SSH-ready on both networks.
    warm_ready_s: f64,
    warm_teardown_s: f64,
    /// Per phase, the medians of each.
    phases: BTreeMap<&'static str, PhaseMedians>,
    parallel: Vec<Width>,
    samples: Samples,
}

#[derive(Debug, Serialize)]
struct PhaseMedians {
    mkh: f64,
    script: f64,
    warm: f64,
}

#[derive(Debug, Serialize)]
struct Samples {
    mkh: Vec<Sample>,
    script: Vec<Sample>,
    warm: Vec<Sample>,
    floor: Vec<f64>,
}

/// Environments brought up at once.
#[derive(Debug, Serialize)]
struct Width {
    width: usize,
    environments: usize,
    warm: bool,
    /// Median over the environments of request to SSH-ready.
    median_ready_s: f64,
    /// First request to the last environment SSH-ready.
    wall_s: f64,
    /// All torn down at once.
    teardown_s: f64,
}

#[derive(Debug, Serialize)]
struct HostFacts {
    cpus: usize,
    cpu_model: String,
    kernel: String,
}

/// Runs the benchmark and prints the table, or with `json` the report alone on stdout.
pub(crate) fn run(settings: &Settings, options: &BenchOptions) -> Result<()> {
    if !crate::libvirt::uri_is_local(&settings.libvirt_uri) {
        return Err(crate::error::Error::InvalidInput {
            what: "libvirt URI for mkh bench",
            value: settings.libvirt_uri.clone(),
            problem: "the benchmark's script reaches the guests and the saved warm guest \
                      directly, which only a local libvirt allows"
                .into(),
            fix: "run mkh bench on the libvirt host itself (MKH_LIBVIRT_URI=qemu:///system)",
        });
    }
    let lv = Libvirt::connect_to(&settings.libvirt_uri)?;
    let accel = choose_accel(&lv, settings.accel);
    let image = image::find_or_build(&settings.cache_dir)?;
    let say = |line: String| {
        if options.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    say(format!(
        "mkh bench: {} runs each, accelerator {}, libvirt {}",
        options.runs,
        accel.as_str(),
        lv.uri()
    ));
    // The first warm environment saves the guest; it is not a warm start and is not timed.
    run_mkh(settings, true)?;

    let (mut cold, mut script, mut warm, mut floor) = (vec![], vec![], vec![], vec![]);
    for run in 1..=options.runs {
        let (sample, guest_floor) = run_mkh(settings, false)?;
        cold.push(sample);
        floor.push(guest_floor);
        script.push(run_baseline(settings, &lv, accel, &image)?);
        warm.push(run_mkh(settings, true)?.0);
        say(format!(
            "run {run}: mkh {:.2}s, script {:.2}s, warm {:.2}s to SSH-ready; guest floor {:.2}s",
            ready(cold.last().unwrap()),
            ready(script.last().unwrap()),
            ready(warm.last().unwrap()),
            guest_floor
        ));
    }
    let mut widths = Vec::new();
    for &width in &options.parallel {
        let w = run_parallel(settings, width, settings.warm)?;
        say(format!(
            "{width} at once: median {:.2}s to SSH-ready, all ready after {:.2}s",
            w.median_ready_s, w.wall_s
        ));
        widths.push(w);
    }

    let readies = |s: &[Sample]| median(&s.iter().map(ready).collect::<Vec<_>>());
    let phase = |s: &[Sample], p: &str| median(&s.iter().map(|x| x[p]).collect::<Vec<_>>());
    let (mkh_ready, script_ready, floor_s) = (readies(&cold), readies(&script), median(&floor));
    let report = Report {
        date: jiff::Timestamp::now().to_string(),
        host: host_facts(),
        accelerator: accel.as_str(),
        libvirt_uri: lv.uri().to_owned(),
        runs: options.runs,
        mkh_ready_s: mkh_ready,
        script_ready_s: script_ready,
        ratio: mkh_ready / script_ready,
        floor_s,
        floor_ratio: mkh_ready / floor_s,
        teardown_s: phase(&cold, "teardown"),
        script_teardown_s: phase(&script, "teardown"),
        warm_ready_s: readies(&warm),
        warm_teardown_s: phase(&warm, "teardown"),
        phases: PHASES
            .iter()
            .map(|p| {
                let m = PhaseMedians {
                    mkh: phase(&cold, p),
                    script: phase(&script, p),
                    warm: phase(&warm, p),
                };
                (*p, m)
            })
            .collect(),
        parallel: widths,
        samples: Samples {
            mkh: cold,
            script,
            warm,
            floor,
        },
    };
    if options.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("a report serializes")
        );
    } else {
        print_table(&report);
    }
    Ok(())
}

fn print_table(r: &Report) {
    println!(
        "\nmedian seconds over {} runs ({}, {} CPUs, {})",
        r.runs, r.accelerator, r.host.cpus, r.host.cpu_model
    );
    println!(
        "{:<14} {:>8} {:>8} {:>8} {:>10}",
        "phase", "mkh", "script", "warm", "mkh/script"
    );
    for (name, m) in &r.phases {
        println!(
            "{name:<14} {:>8.3} {:>8.3} {:>8.3} {:>10.2}",
            m.mkh,
            m.script,
            m.warm,
            m.mkh / m.script
        );
    }
    println!(
        "{:<14} {:>8.3} {:>8.3} {:>8.3} {:>10.2}",
        "to SSH-ready", r.mkh_ready_s, r.script_ready_s, r.warm_ready_s, r.ratio
    );
    println!(
        "guest floor {:.3}s (kernel start to sshd and both leases): mkh/floor {:.2}",
        r.floor_s, r.floor_ratio
    );
    if !r.parallel.is_empty() {
        println!(
            "\n{:<6} {:>13} {:>9} {:>10}",
            "at once", "median ready", "all ready", "teardown"
        );
        for w in &r.parallel {
            println!(
                "{:<7} {:>13.3} {:>9.3} {:>10.3}",
                w.width, w.median_ready_s, w.wall_s, w.teardown_s
            );
        }
    }
}

fn ready(s: &Sample) -> f64 {
    READY_PHASES.iter().map(|p| s[p]).sum()
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn machine_options(warm: bool) -> MachineOptions {
    MachineOptions::default().with_warm_start(warm)
}

/// One environment up and down; its phases and the guest's floor from its console.
fn run_mkh(settings: &Settings, warm: bool) -> Result<(Sample, f64)> {
    let mut env = Env::builder()
        .settings(settings.clone())
        .guest(machine_options(warm))
        .up_now()?;
    let mut s = sample_of(&env);
    let console = env
        .machine()
        .and_then(|m| m.console_log())
        .map(std::fs::read_to_string)
        .transpose()
        .map_err(|e| Error::io("the guest's console log", e))?
        .unwrap_or_default();
    let started = Instant::now();
    env.teardown_now()?;
    s.insert("teardown", started.elapsed().as_secs_f64());
    Ok((s, guest_floor(&console).unwrap_or(f64::NAN)))
}

fn sample_of(env: &Env) -> Sample {
    let t = env.timings();
    let secs = |d: Option<Duration>| d.expect("phase timed").as_secs_f64();
    Sample::from([
        ("networks", secs(t.networks)),
        ("define_start", secs(t.define_start)),
        ("first_lease", secs(t.first_lease)),
        ("leases", secs(t.leases)),
        ("ssh", secs(t.ssh)),
    ])
}

/// The guest's uptime when sshd listened and both leases were bound: the latest of the
/// `mkh-guest: sshd ready at S` and `mkh-guest: lease ... at S` lines (a warm guest's are
/// counted from its restore).
pub(crate) fn guest_floor(console: &str) -> Option<f64> {
    let at = |line: &str| -> Option<f64> {
        line.rsplit_once(" at ")?
            .1
            .trim_end()
            .strip_suffix('s')?
            .parse()
            .ok()
    };
    let last_boot = console
        .rfind("mkh-guest: init started")
        .map_or(console, |i| &console[i..]);
    let sshd = last_boot
        .lines()
        .filter(|l| l.starts_with("mkh-guest: sshd ready"))
        .find_map(at)?;
    let leases: Vec<f64> = last_boot
        .lines()
        .filter(|l| l.starts_with("mkh-guest: lease "))
        .filter_map(at)
        .collect();
    (leases.len() >= 2).then(|| leases.iter().copied().fold(sshd, f64::max))
}

/// `width` environments requested at once, each timed from the common start.
fn run_parallel(settings: &Settings, width: usize, warm: bool) -> Result<Width> {
    let start = Instant::now();
    let results: Vec<Result<(Env, f64)>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..width)
            .map(|_| {
                s.spawn(|| {
                    let env = Env::builder()
                        .settings(settings.clone())
                        .guest(machine_options(warm))
                        .up_now()?;
                    Ok((env, start.elapsed().as_secs_f64()))
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("bench thread panicked"))
            .collect()
    });
    let mut envs = Vec::new();
    let mut readies = Vec::new();
    let mut first_error = None;
    for r in results {
        match r {
            Ok((env, ready)) => {
                envs.push(env);
                readies.push(ready);
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let torn = Instant::now();
    let problems: Vec<Error> = std::thread::scope(|s| {
        let workers: Vec<_> = envs
            .iter_mut()
            .map(|env| s.spawn(move || env.teardown_now()))
            .collect();
        workers
            .into_iter()
            .filter_map(|w| w.join().expect("teardown thread panicked").err())
            .collect()
    });
    let teardown_s = torn.elapsed().as_secs_f64();
    if let Some(e) = first_error.or(problems.into_iter().next()) {
        return Err(e);
    }
    Ok(Width {
        width,
        environments: readies.len(),
        warm,
        median_ready_s: median(&readies),
        wall_s: readies.iter().copied().fold(0.0, f64::max),
        teardown_s,
    })
}

fn host_facts() -> HostFacts {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    HostFacts {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model,
        kernel: nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default(),
    }
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
    let dir = tempfile::Builder::new()
        .prefix("mkh-bench-")
        .tempdir()
        .map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let dir = dir.path();
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
        identity_port: None,
        owner,
    };
    write(dir, "nat.xml", &nat_spec.to_xml())?;
    write(dir, "priv.xml", &priv_spec.to_xml())?;
    write(dir, "domain.xml", &domain.to_xml())?;
    write(
        dir,
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
        .arg(dir)
        .output()
        .map_err(|e| Error::io("bash", e))?;
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
    parse_baseline(text.lines().last().unwrap_or_default()).ok_or_else(|| Error::BadFile {
        path: "scripts/bench-baseline.sh".into(),
        what: "the benchmark's baseline".into(),
        problem: format!("expected one line of phase=seconds, got {text:?}"),
    })
}

/// `networks=0.1 define_start=0.2 ...`: every phase once.
fn parse_baseline(line: &str) -> Option<Sample> {
    let mut s = Sample::new();
    for field in line.split_whitespace() {
        let (k, v) = field.split_once('=')?;
        let k = PHASES.iter().find(|p| **p == k)?;
        s.insert(k, v.parse().ok()?);
    }
    (s.len() == PHASES.len()).then_some(s)
}

fn rand_start() -> usize {
    (std::process::id() as usize).wrapping_mul(2654435761) % 4000
}

fn write(dir: &Path, name: &str, text: &str) -> Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|e| Error::io(&path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_is_the_latest_of_sshd_and_both_leases_in_the_last_boot() {
        let console = "mkh-guest: init started\n\
            mkh-guest: sshd ready at 9.00s\n\
            mkh-guest: init started, kernel 6.1\n\
            mkh-guest: sshd ready at 2.10s\n\
            mkh-guest: lease eth0 10.0.0.2 52:54:00:00:00:01 at 2.40s\n\
            [    2.5] some kernel line\n\
            mkh-guest: lease eth1 10.0.1.2 52:54:00:00:00:02 at 2.30s\n";
        assert_eq!(guest_floor(console), Some(2.40));
        let one_lease = "mkh-guest: init started\nmkh-guest: sshd ready at 2.10s\n\
            mkh-guest: lease eth0 10.0.0.2 52:54:00:00:00:01 at 2.40s\n";
        assert_eq!(guest_floor(one_lease), None);
        assert_eq!(guest_floor(""), None);
    }

    #[test]
    fn the_baseline_line_must_name_every_phase_once() {
        let line = "networks=0.1 define_start=0.2 first_lease=0.3 leases=0.4 ssh=0.5 teardown=0.6";
        let s = parse_baseline(line).unwrap();
        assert_eq!(ready(&s), 0.1 + 0.2 + 0.4 + 0.5);
        assert!(parse_baseline("networks=0.1").is_none());
        assert!(parse_baseline(&format!("{line} bogus=1")).is_none());
        assert!(parse_baseline("networks=x").is_none());
    }

    #[test]
    fn medians_of_odd_even_and_empty_lists() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
