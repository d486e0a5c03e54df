//! Administrative verbs over what libvirt holds of mkh's, for the `mkh` command: list
//! environments, bring one up for the CLI, reach its machine, remove it, reap what dead owners
//! left, audit a run. Test code does not need this module.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;

use serde::Serialize;

pub use crate::doctor::{Check, DoctorReport, Status};
pub use crate::inventory::EnvNetwork;
pub use crate::inventory::{ClaimedObject, EnvSummary, ObjectKind};
pub use crate::owner::{Owner, OwnerKind, ProcessIdentity};
pub use crate::progress::{
    finish as finish_progress, show as show_progress, LogWriter, ProgressMode,
};
pub use crate::reaper::{ReapReport, ReapScope, Reaped};

use crate::blocking::Machine;
use crate::error::{Error, Result};
use crate::inventory::{claimed_objects, environments as group};
use crate::libvirt::Libvirt;
use crate::{EnvBuilder, EnvDescription, NetworkRole, Settings};

fn connect(settings: &Settings) -> Result<Arc<Libvirt>> {
    Libvirt::connect_to(&settings.libvirt_uri).map(Arc::new)
}

/// Brings up an environment owned by the CLI: it outlives this process, and `mkh down NAME`
/// removes it.
pub fn up_for_cli(builder: EnvBuilder) -> Result<EnvDescription> {
    // Owned by this process while it is being made: a half-made environment whose maker died
    // is the reaper's. Only a complete one is handed over.
    builder.up_now()?.hand_over_now()
}

/// The environments mkh owns in libvirt.
pub fn environments(settings: &Settings) -> Result<Vec<EnvSummary>> {
    Ok(group(&claimed_objects(&*connect(settings)?)?))
}

fn find(lv: &Libvirt, name: &str) -> Result<EnvSummary> {
    group(&claimed_objects(lv)?)
        .into_iter()
        .find(|e| e.name == name)
        .ok_or_else(|| Error::UnknownEnvironment {
            name: name.to_owned(),
        })
}

/// The first machine of a named environment, read back from libvirt.
pub fn machine(settings: &Settings, name: &str) -> Result<Machine> {
    let lv = connect(settings)?;
    find(&lv, name)?
        .machine(&lv, settings.timeout_scale)
        .map(Machine)
}

/// What `mkh stop|start|restart NAME` does to an environment's machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    /// An ACPI shutdown (forced off after the shutdown deadline).
    Stop,
    /// Start it and wait until SSH answers on both networks.
    Start,
    /// Stop, then start.
    Restart,
}

/// Stops, starts or restarts an environment's machine (a minikube cluster: `minikube stop` /
/// `minikube start` of its profile, with the binary recorded at creation and the settings'
/// `minikube_args`); after a start, the first machine's IPs.
pub fn power(settings: &Settings, name: &str, what: Power) -> Result<Option<crate::Ips>> {
    let lv = connect(settings)?;
    let env = find(&lv, name)?;
    let machine = env.machine(&lv, settings.timeout_scale)?;
    if let Some(cluster) = env.minikube_cluster(lv.uri()) {
        return power_minikube(settings, &lv, &env, &cluster, &machine, what);
    }
    crate::progress::phase(match what {
        Power::Stop => format!("stopping {}", machine.name()),
        Power::Start => format!("starting {} and waiting for SSH", machine.name()),
        Power::Restart => format!("restarting {} and waiting for SSH", machine.name()),
    });
    match what {
        Power::Stop => machine.stop_now().map(|()| None),
        Power::Start => machine.start_now().map(Some),
        Power::Restart => machine.restart_now().map(Some),
    }
}

fn power_minikube(
    settings: &Settings,
    lv: &Libvirt,
    env: &EnvSummary,
    cluster: &crate::minikube::MinikubeCluster,
    machine: &crate::Machine,
    what: Power,
) -> Result<Option<crate::Ips>> {
    use crate::minikube::contract;
    if what != Power::Stop {
        // The flags mkh keeps for itself (-p, --driver, --nodes, ...) are refused as at `mkh up`;
        // what `minikube start` would refuse, mkh refuses first (root without --force, ...).
        contract::check_extra_args(&settings.minikube_args)?;
        contract::check(
            &contract::Request {
                version: cluster.version()?,
                memory_mib: None,
                cpus: None,
                extra_args: &settings.minikube_args,
                binary: &cluster.binary,
            },
            &contract::Host::current(),
        )?;
    }
    let accel = crate::machine::choose_accel(lv, settings.accel);
    let deadline = crate::config::Timeouts::new(accel, settings.timeout_scale).minikube_start();
    let profile = cluster.profile.clone();
    let minikube = |verb: &str| -> Result<()> {
        crate::progress::phase(format!("minikube {verb} -p {profile}"));
        let mut args = vec![verb.to_owned(), "-p".to_owned(), profile.clone()];
        if verb == "start" {
            args.extend(settings.minikube_args.iter().cloned());
        }
        // SIGTERM or SIGINT on this command ends minikube's process group too.
        let guard = crate::teardown::Registration::new(lv.uri(), &profile, true);
        cluster.run(&args, deadline, &mut |group| guard.add_kill_group(group))?;
        drop(guard);
        // Each boot of a minikube machine shows a new host key.
        machine.forget_boot_host_keys()
    };
    if matches!(what, Power::Stop | Power::Restart) {
        minikube("stop")?;
    }
    if what == Power::Stop {
        return Ok(None);
    }
    minikube("start")?;
    // minikube recreates a private network it cannot start, without mkh's owner record.
    let private = env
        .network_names()
        .into_iter()
        .find(|n| n.ends_with("-priv"))
        .unwrap_or_default();
    let still_ours = lv.networks()?.iter().any(|n| {
        n.name == private
            && crate::owner::Owner::from_object_xml(&n.xml).is_some_and(|o| o.env == env.name)
    });
    if !still_ours {
        return Err(Error::NetworkReplaced {
            network: private,
            problem: "after `minikube start` it no longer carries this environment's owner record (minikube made it anew)".into(),
        });
    }
    crate::progress::phase(format!("waiting for SSH to {}", machine.name()));
    machine.wait_ready_now().map(Some)
}

/// Runs `words` (quoted for the guest's shell) on `machine` over `role`'s network, with this
/// process's standard input (then EOF) and output connected; returns its exit status.
pub fn run_over_ssh(machine: &Machine, role: NetworkRole, words: &[String]) -> Result<i32> {
    let session = machine.0.ssh_now(role)?;
    let result = session.exec_streaming_now(
        &crate::ssh::shell_join(words),
        Some(Box::new(std::io::stdin())),
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    );
    match result {
        // Whoever read the output stopped (`| head`): end as a writer killed by SIGPIPE.
        Err(Error::Ssh {
            source: Some(crate::error::SshCause::Io(e)),
            ..
        }) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(128 + libc::SIGPIPE),
        other => other,
    }
}

/// An interactive OpenSSH session on `machine`, pinned to the host key mkh checked at its own
/// connection just before.
pub fn interactive_ssh(machine: &Machine, role: NetworkRole) -> Result<ExitStatus> {
    let m = &machine.0;
    // mkh's own connection checks the host key the OpenSSH session is then pinned to.
    let target = m.ssh_now(role)?.target().clone();
    let known = m.pin_host_key_for_openssh(&target)?;
    let mut ssh = std::process::Command::new("ssh");
    if let Some(host) = &target.via {
        ssh.arg("-o")
            .arg(format!("ProxyCommand={}", host.openssh_proxy_command()));
    }
    ssh.arg("-i")
        .arg(&target.key)
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known.display()))
        .args([
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .arg(format!("{}@{}", target.user, target.ip))
        .status()
        .map_err(|e| Error::Ssh {
            target: target.ip.to_string(),
            problem: "cannot run ssh; install openssh-client".into(),
            source: Some(e.into()),
        })
}

/// Removes a CLI-owned environment, or finishes removing one whose remover died; a
/// process-owned one whose process lives is refused (its process removes it). While it works,
/// the environment is this process's: if `mkh down` is killed, its watchdog (or any reaper)
/// finishes the job.
pub fn down(settings: &Settings, name: &str) -> Result<()> {
    let lv = connect(settings)?;
    let objects = claimed_objects(&lv)?;
    let env = group(&objects)
        .into_iter()
        .find(|e| e.name == name)
        .ok_or_else(|| Error::UnknownEnvironment {
            name: name.to_owned(),
        })?;
    let record = objects
        .iter()
        .find(|o| o.owner.env == name)
        .map(|o| o.owner.clone())
        .expect("an environment has objects");
    // A process-owned environment is taken over only from an owner known to be dead (not one
    // alive, nor one on another host).
    let dead = matches!(
        record.liveness(
            &crate::owner::HostIdentity::current(),
            crate::owner::process_start_time
        ),
        crate::owner::Liveness::Dead(_)
    );
    if env.kind == OwnerKind::Process && !dead {
        return Err(Error::InvalidInput {
            what: "environment",
            value: name.to_owned(),
            problem: format!(
                "it belongs to process {} (test {}), not to the CLI",
                env.pid,
                env.test.as_deref().unwrap_or("-")
            ),
            fix: "it is removed when that process ends; `mkh reap` removes it if the process died",
        });
    }
    let remover = crate::owner::Owner {
        process: crate::owner::this_process(),
        kind: OwnerKind::Process,
        ..record
    };
    if settings.watchdog && !lv.is_test_driver() {
        crate::watchdog::watch_this_process(lv.uri(), &settings.state_dir);
    }
    crate::inventory::retag(&lv, &objects, name, &remover)?;
    crate::progress::phase(format!("removing {name}"));
    let problems = env.teardown(lv.uri()).run();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Teardown {
            env: env.name,
            count: problems.len(),
            problems,
        })
    }
}

/// Removes what dead owners left (and with [`ReapScope::IncludingCli`] CLI-owned environments
/// too), limited to one run id when given.
pub fn reap(settings: &Settings, scope: ReapScope, run: Option<&str>) -> Result<ReapReport> {
    let which = run.map_or(crate::reaper::Which::All, crate::reaper::Which::Run);
    crate::reaper::sweep(&*connect(settings)?, scope, which, &settings.state_dir)
}

/// Every object mkh's metadata claims, split into those of `run` and the others.
#[derive(Debug, Clone, Serialize)]
pub struct Audit {
    /// The run asked about.
    pub run: Option<String>,
    /// Objects that run left.
    pub left_by_run: Vec<ClaimedObject>,
    /// Everything else of mkh's.
    pub others: Vec<ClaimedObject>,
}

/// See [`Audit`].
pub fn audit(settings: &Settings, run: Option<&str>) -> Result<Audit> {
    let objects = claimed_objects(&*connect(settings)?)?;
    let (left_by_run, others) = objects
        .into_iter()
        .partition(|o| run.is_some_and(|r| o.owner.run_id == r));
    Ok(Audit {
        run: run.map(str::to_owned),
        left_by_run,
        others,
    })
}

/// The guest image's files.
#[derive(Debug, Clone, Serialize)]
pub struct GuestImageFiles {
    /// The kernel.
    pub kernel: PathBuf,
    /// The initramfs.
    pub initrd: PathBuf,
    /// The images uploaded to a remote libvirt host's pool (`mkh-images`); empty for a local
    /// libvirt, which reads the files above.
    pub uploaded: Vec<UploadedImage>,
}

pub use crate::machine::pool::CachedImage as UploadedImage;

/// Builds (once) or finds the built-in guest's image in the cache, and lists the images
/// uploaded to the libvirt host when it is remote.
pub fn guest_image(settings: &Settings) -> Result<GuestImageFiles> {
    let image = crate::machine::image::find_or_build(&settings.cache_dir)?;
    crate::progress::finish();
    Ok(GuestImageFiles {
        kernel: image.kernel,
        initrd: image.initrd,
        uploaded: uploaded_images(settings)?,
    })
}

fn uploaded_images(settings: &Settings) -> Result<Vec<UploadedImage>> {
    if crate::libvirt::uri_is_local(&settings.libvirt_uri) {
        return Ok(Vec::new());
    }
    crate::machine::pool::cached_images(&Libvirt::connect_to(&settings.libvirt_uri)?)
}

/// Removes the guest images uploaded to a remote libvirt host's pool (the next environment
/// there uploads again); returns what it removed. A local libvirt has none.
pub fn remove_uploaded_images(settings: &Settings) -> Result<Vec<UploadedImage>> {
    if crate::libvirt::uri_is_local(&settings.libvirt_uri) {
        return Ok(Vec::new());
    }
    let lv = Libvirt::connect_to(&settings.libvirt_uri)?;
    crate::machine::pool::remove_cached_images(&lv)
}

/// Checks what this host offers mkh (`mkh doctor`); see [`DoctorReport`].
pub fn doctor(settings: &Settings) -> DoctorReport {
    crate::doctor::run(settings)
}

pub use crate::bench::BenchOptions;

/// Times bringing up and tearing down an environment with the guest, phase by phase, cold and
/// warm, beside a plain virsh+ssh script doing the same steps, then several at once; prints
/// medians and ratios (or a JSON report).
pub fn bench(settings: &Settings, options: &crate::bench::BenchOptions) -> Result<()> {
    crate::bench::run(settings, options)
}
