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

/// The first machine of a named environment (see [`crate::Env::attach`]).
pub fn machine(settings: &Settings, name: &str) -> Result<Machine> {
    let env = crate::blocking::Env::attach(name, settings.clone())?;
    env.machine().ok_or_else(|| Error::InvalidInput {
        what: "environment",
        value: name.to_owned(),
        problem: "it has no machine".into(),
        fix: "bring one up with `mkh up`",
    })
}

/// What `mkh stop|start|restart NAME` does to an environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    /// Stop the cluster: an ACPI shutdown of each machine (forced off after the shutdown
    /// deadline), or `minikube stop`.
    Stop,
    /// Start it and wait until SSH answers on both networks.
    Start,
    /// Stop, then start.
    Restart,
}

/// Stops, starts or restarts an environment through the same [`crate::Env`] a test holds (a
/// minikube cluster: `minikube stop` / `minikube start` of its profile, with the binary recorded
/// at creation and the settings' `minikube_args`); after a start, the first machine's IPs.
pub fn power(settings: &Settings, name: &str, what: Power) -> Result<Option<crate::Ips>> {
    let mut env = crate::blocking::Env::attach(name, settings.clone())?;
    crate::progress::phase(match what {
        Power::Stop => format!("stopping {name}"),
        Power::Start => format!("starting {name} and waiting for SSH"),
        Power::Restart => format!("restarting {name} and waiting for SSH"),
    });
    if what != Power::Start {
        env.stop()?;
    }
    if what == Power::Stop {
        return Ok(None);
    }
    env.start().map(Some)
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
    let env = crate::blocking::Env::attach(name, settings.clone())?;
    crate::progress::phase(format!("removing {name}"));
    env.teardown()
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
