//! The minikube backend: `minikube start --driver=kvm2` on mkh's networks, its domain tagged
//! with mkh's owner record as soon as it exists, `minikube delete` as the first step of
//! teardown.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::description::EnvDescription;
use crate::env::{wait_ready_timed, EnvCore, Timings};
use crate::error::{Error, Result};
use crate::libvirt::{DomainState, Libvirt};
use crate::machine::{Accel, Ips, Machine, MachineFiles};
use crate::minikube::cache;
use crate::minikube::contract::{self, Host, Request, Version};
use crate::minikube::{check_extra_args, find_binary, MinikubeCluster, MinikubeOptions};
use crate::net::spec::NetworkFacts;
use crate::owner::Owner;
use crate::settings::Settings;
use crate::teardown::TeardownCommand;

#[derive(Debug)]
pub(super) struct MinikubeBackend {
    cluster: MinikubeCluster,
    options: MinikubeOptions,
    /// `None` for an attached cluster whose binary no longer answers `minikube version`.
    version: Option<Version>,
    nodes: u32,
    /// Whether what `minikube start` would refuse was checked (at creation); an attached
    /// cluster is checked before it is started.
    checked: bool,
}

impl MinikubeBackend {
    /// Checks, before anything exists, everything a real minikube would refuse this start on
    /// (see [`contract`]), the binary, its version, and that the libvirt is local.
    pub fn new(
        options: &MinikubeOptions,
        settings: &Settings,
        home: &Path,
        profile: &str,
    ) -> Result<MinikubeBackend> {
        if !crate::libvirt::uri_is_local(&settings.libvirt_uri) {
            return Err(Error::InvalidInput {
                what: "libvirt URI for the minikube backend",
                value: settings.libvirt_uri.clone(),
                problem: "minikube's kvm2 driver keeps the ISO and the disk as local files and runs its health check with virsh on this host, so it cannot drive a remote libvirt".into(),
                fix: "run the minikube backend on the libvirt host itself, or use the built-in guest for a remote one",
            });
        }
        check_extra_args(&options.extra_args)?;
        let nodes = options.nodes.unwrap_or(1);
        if !(1..=MAX_NODES).contains(&nodes) {
            return Err(Error::InvalidInput {
                what: "number of minikube nodes",
                value: nodes.to_string(),
                problem: format!("mkh brings up 1 to {MAX_NODES} nodes"),
                fix: "ask for 1 or more nodes, each is a VM",
            });
        }
        let binary = find_binary(options.binary.as_deref().or(settings.minikube.as_deref()))?;
        let cluster = MinikubeCluster::at(home, profile, binary, &settings.libvirt_uri);
        let version = cluster.version()?;
        contract::check(
            &Request {
                version,
                memory_mib: options.memory_mib,
                cpus: options.cpus,
                extra_args: &options.extra_args,
                binary: &cluster.binary,
            },
            &Host::current(),
        )?;
        Ok(MinikubeBackend {
            cluster,
            options: options.clone(),
            version: Some(version),
            nodes,
            checked: true,
        })
    }

    /// The cluster of an existing environment (see `backend::for_record`): its later starts
    /// pass the settings' `minikube_args`, as `mkh up` did.
    pub fn attached(cluster: MinikubeCluster, nodes: u32, settings: &Settings) -> MinikubeBackend {
        let version = cluster.version().ok();
        MinikubeBackend {
            cluster,
            options: MinikubeOptions {
                nodes: Some(nodes),
                extra_args: settings.minikube_args.clone(),
                ..MinikubeOptions::default()
            },
            version,
            nodes,
            checked: false,
        }
    }

    /// What `minikube start` would refuse, refused first: the flags mkh keeps for itself and
    /// the rules of the binary's version (root without `--force`, ...).
    fn check_start(&self) -> Result<()> {
        if self.checked {
            return Ok(());
        }
        check_extra_args(&self.options.extra_args)?;
        contract::check(
            &Request {
                version: self.cluster.version()?,
                memory_mib: None,
                cpus: None,
                extra_args: &self.options.extra_args,
                binary: &self.cluster.binary,
            },
            &Host::current(),
        )
    }

    fn node_machines(&self) -> Vec<String> {
        (0..self.nodes)
            .map(|i| self.cluster.node_machine(i))
            .collect()
    }

    /// `minikube start`, tagging each node's domain with mkh's owner metadata as soon as it
    /// exists (a test killed mid-start must leave domains the reaper recognises).
    fn run_start(&self, env: &EnvCore) -> Result<()> {
        let cluster = &self.cluster;
        crate::progress::phase(format!(
            "minikube start -p {} (its log: {})",
            cluster.profile,
            cluster.log.display()
        ));
        let args = cluster.start_args(env.networks(), &self.options);
        let deadline = env.timeouts().minikube_start();
        let owner_xml = env.owner().to_bare_element_xml();
        let untagged = Mutex::new(self.node_machines());
        let tag = |lv: &Libvirt| -> Result<()> {
            let mut left = untagged.lock().unwrap_or_else(|e| e.into_inner());
            let mut result = Ok(());
            left.retain(|machine| match lv.tag_domain(machine, &owner_xml) {
                Ok(true) => {
                    if let Err(e) = env.registered(|r| r.add_domain(machine)) {
                        result = Err(e);
                    }
                    false
                }
                Ok(false) => true,
                Err(e) => {
                    result = Err(e);
                    true
                }
            });
            result
        };
        let all_tagged = || untagged.lock().map_or(true, |l| l.is_empty());
        let done = std::sync::atomic::AtomicBool::new(false);
        let mut signal_guard = None;
        let result = std::thread::scope(|scope| {
            scope.spawn(|| {
                while !done.load(std::sync::atomic::Ordering::SeqCst) && !all_tagged() {
                    if let Err(e) = tag(&env.lv) {
                        tracing::debug!("tagging {}'s nodes: {e}", cluster.profile);
                    }
                    std::thread::sleep(Duration::from_millis(300));
                }
            });
            let result = cluster.run(&args, deadline, &mut |g| {
                signal_guard = Some(env.kill_on_signal(g));
            });
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            result
        });
        drop(signal_guard);
        if let Err(e) = result {
            // A failed new host is deleted and made again by minikube (`startHostInternal`,
            // `pkg/minikube/node/start.go`), its private network with it: say so first.
            return Err(match check_private_network(env) {
                Err(Error::NetworkReplaced { network, problem }) => Error::NetworkReplaced {
                    network,
                    problem: format!("{problem} (after minikube start failed: {e})"),
                },
                _ => e,
            });
        }
        // Every node's domain exists once start succeeded: make sure each carries the tag.
        tag(&env.lv)?;
        let missing = untagged.into_inner().unwrap_or_else(|e| e.into_inner());
        if !missing.is_empty() {
            return Err(Error::InvalidInput {
                what: "minikube profile",
                value: cluster.profile.clone(),
                problem: format!(
                    "minikube start succeeded but libvirt has no domain {}",
                    missing.join(", ")
                ),
                fix:
                    "check that minikube uses the kvm2 driver on the same libvirt (MKH_LIBVIRT_URI)",
            });
        }
        check_private_network(env)
    }

    fn attach_nodes(&self, env: &EnvCore) -> Result<Vec<Machine>> {
        self.node_machines()
            .iter()
            .map(|name| {
                Machine::attach(
                    &env.lv,
                    name,
                    env.networks(),
                    self.cluster.machine_files(&env.home, name),
                    env.settings.timeout_scale,
                )
            })
            .collect()
    }
}

/// Each boot of a minikube machine shows a new host key: a stop or start by mkh forgets the
/// earlier boots' keys (libvirt's domain ids, which tell boots apart otherwise, start again
/// from 1 when libvirtd restarts).
fn forget_boot_host_keys(machines: &[Machine]) -> Result<()> {
    machines.iter().try_for_each(Machine::forget_boot_host_keys)
}

/// The most nodes mkh brings up in one environment (each is a VM).
const MAX_NODES: u32 = 9;

/// minikube recreates a private network it cannot start (`ensureNetwork`,
/// `pkg/drivers/kvm/network.go`), on its own subnet and without mkh's metadata: after every
/// start, the network must still be the one mkh made.
fn check_private_network(env: &EnvCore) -> Result<()> {
    let expected = &env.networks().private;
    let replaced = |problem: String| Error::NetworkReplaced {
        network: expected.name.clone(),
        problem,
    };
    let found = env
        .lv
        .networks()?
        .into_iter()
        .find(|n| n.name == expected.name)
        .ok_or_else(|| replaced("libvirt no longer has it".into()))?;
    let facts = NetworkFacts::from_xml(&found.xml).map_err(|problem| Error::BadXml {
        object: format!("network {}", expected.name),
        problem,
    })?;
    let ours = facts
        .owner
        .as_ref()
        .is_some_and(|o| o.env == env.name && o.process == env.owner().process);
    if !ours {
        return Err(replaced("it no longer carries mkh's owner metadata".into()));
    }
    if facts.subnets != [expected.subnet] {
        return Err(replaced(format!(
            "its subnet is {:?}, mkh made it on {}",
            facts.subnets, expected.subnet
        )));
    }
    Ok(())
}

impl super::ClusterBackend for MinikubeBackend {
    fn name(&self) -> &'static str {
        "minikube"
    }

    /// A minikube profile names libvirt domains: refuse one that exists already (the user's
    /// own cluster), so mkh never claims, let alone deletes, a domain it did not create.
    fn check_libvirt(&self, lv: &Libvirt) -> Result<()> {
        for machine in self.node_machines() {
            if lv.domain_state(&machine)? != DomainState::Missing {
                return Err(Error::InvalidInput {
                    what: "environment name",
                    value: self.cluster.profile.clone(),
                    problem: format!(
                        "libvirt already has a domain {machine} (a node of a minikube profile?)"
                    ),
                    fix: "choose another name",
                });
            }
        }
        Ok(())
    }

    fn bring_up(&self, env: &EnvCore, timings: &mut Timings) -> Result<Vec<Machine>> {
        let cluster = &self.cluster;
        if env.accel() != Accel::Kvm {
            tracing::warn!(
                "this host has no working KVM: minikube's kvm2 driver always defines `type='kvm'` domains, so a real minikube cannot boot here"
            );
        }
        let shared_cache = self
            .options
            .cache_dir
            .clone()
            .unwrap_or_else(|| env.settings.cache_dir.join("minikube"));
        let version = match self.version {
            Some(v) => v,
            None => cluster.version()?,
        };
        cluster.prepare(&shared_cache, version)?;
        // From here on, whatever happens, teardown starts with `minikube delete`.
        env.registered(|r| r.add_command(cluster.delete_command()))?;
        let started = Instant::now();
        let result = {
            let key = cache::download_key(version, &self.options.extra_args);
            let deadline = env.timeouts().minikube_start();
            let _first_download = cache::first_start_lock(&shared_cache, &key, deadline)?;
            let result = self.run_start(env);
            if result.is_ok() {
                cache::mark_warm(&shared_cache, &key);
            }
            result
        };
        timings.define_start = Some(started.elapsed());
        result?;
        let machines = self.attach_nodes(env)?;
        let (primary, others) = machines.split_first().expect("at least one node");
        wait_ready_timed(primary, timings)?;
        for node in others {
            node.wait_ready_now()?;
        }
        Ok(machines)
    }

    fn stop(&self, env: &EnvCore, machines: &[Machine]) -> Result<()> {
        let args = [
            "stop".to_owned(),
            "-p".to_owned(),
            self.cluster.profile.clone(),
        ];
        // SIGTERM or SIGINT ends minikube's process group too.
        let mut signal_guard = None;
        self.cluster
            .run(&args, env.timeouts().minikube_start(), &mut |g| {
                signal_guard = Some(env.kill_on_signal(g));
            })?;
        drop(signal_guard);
        forget_boot_host_keys(machines)
    }

    fn start(&self, env: &EnvCore, machines: &[Machine]) -> Result<Ips> {
        self.check_start()?;
        forget_boot_host_keys(machines)?;
        self.run_start(env)?;
        let Some((primary, others)) = machines.split_first() else {
            return Err(Error::InvalidInput {
                what: "environment",
                value: env.name.clone(),
                problem: "minikube started, but mkh holds no machine of it".into(),
                fix: "create a new environment",
            });
        };
        for node in others {
            node.wait_ready_now()?;
        }
        primary.wait_ready_now()
    }

    fn machine_files(&self, env: &EnvCore, domain: &str) -> MachineFiles {
        self.cluster.machine_files(&env.home, domain)
    }

    /// kvm2's serial console is a pty without a log file.
    fn console_log(&self, _env: &EnvCore, _domain: &str) -> Option<PathBuf> {
        None
    }

    fn minikube(&self) -> Option<&MinikubeCluster> {
        Some(&self.cluster)
    }

    fn record(&self, owner: &mut Owner) {
        owner.profile = Some(self.cluster.profile.clone());
        owner.minikube = Some(self.cluster.binary.to_string_lossy().into_owned());
    }

    fn removal_commands(&self) -> Vec<TeardownCommand> {
        vec![self.cluster.delete_command()]
    }

    fn describe(&self, d: &mut EnvDescription) {
        let c = &self.cluster;
        d.profile = Some(c.profile.clone());
        d.minikube_home = Some(c.minikube_home.clone());
        d.kubeconfig = Some(c.kubeconfig.clone());
        d.context = Some(c.context().to_owned());
        d.minikube_version = self.version.map(|v| v.to_string());
    }
}
