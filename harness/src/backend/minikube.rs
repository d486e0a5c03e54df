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
use crate::machine::{Accel, Machine, MachineFiles};
use crate::minikube::cache;
use crate::minikube::contract::{self, Host, Request, Version};
use crate::minikube::{check_extra_args, find_binary, MinikubeCluster, MinikubeOptions};
use crate::net::spec::NetworkFacts;
use crate::net::{NetworkInfo, NetworkPair};
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
        check_subnet_prefix(&settings.subnet_pool)?;
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
        let args = cluster.start_args(&env.networks(), &self.options);
        let deadline = env.timeouts().minikube_start(self.nodes);
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
            // Even a failed start may have made the private network again: adopt it, so that
            // teardown removes it; a network mkh cannot adopt is reported first.
            return Err(match adopt_private_network(env) {
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
        adopt_private_network(env)
    }

    fn attach_nodes(&self, env: &EnvCore) -> Result<Vec<Machine>> {
        self.node_machines()
            .iter()
            .map(|name| {
                Machine::attach(
                    &env.lv,
                    name,
                    &env.networks(),
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

/// minikube's VM reaches its host as `host.minikube.internal`, which minikube takes to be
/// `a.b.c.1` of the VM's private IP (`HostIP`, case KVM2, `pkg/minikube/cluster/ip.go`): right
/// only on a /24 whose first address is the host's, as mkh's gateway is. Refused before
/// anything is made rather than changed silently: the prefix is the user's setting, it decides
/// how many environments the pool holds (`mkh doctor` counts them), and a pool narrower than a
/// /24 could not serve one anyway.
fn check_subnet_prefix(pool: &crate::net::SubnetPool) -> Result<()> {
    if pool.prefix == 24 {
        return Ok(());
    }
    Err(Error::InvalidInput {
        what: "MKH_SUBNET_PREFIX (subnet_prefix) for the minikube backend",
        value: pool.prefix.to_string(),
        problem: "minikube makes host.minikube.internal a.b.c.1 of the VM's private IP, which is the host only on a /24 network".into(),
        fix: "set MKH_SUBNET_PREFIX=24 (or subnet_prefix = 24 in mkh.toml, or unset it) for minikube environments, with a MKH_SUBNET_POOL of at least a /24",
    })
}

/// What became of the private network mkh gave minikube (`--network`), judged after a start.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PrivateNetwork {
    /// Still the one mkh made (or adopted earlier).
    Unchanged,
    /// minikube deleted it and made one of the same name, with nobody's record: adopt it.
    Remade,
    /// Gone, or someone else's: mkh cannot go on with it.
    Lost(String),
}

/// minikube deletes the private network with a machine and makes it again with the next one:
/// a new host whose first start failed (`startHostInternal`, `pkg/minikube/node/start.go`),
/// a machine whose domain vanished (`recreateIfNeeded`, `pkg/minikube/machine/fix.go`), a
/// network that cannot start (`ensureNetwork`, `pkg/drivers/kvm/network.go`). The new one has
/// the name mkh gave, minikube's subnet and no metadata. `found`: the network of that name now.
fn judge_private_network(
    found: Option<&NetworkFacts>,
    expected: &NetworkInfo,
    owner: &Owner,
) -> PrivateNetwork {
    let Some(found) = found else {
        return PrivateNetwork::Lost("libvirt no longer has it".into());
    };
    match &found.owner {
        None => PrivateNetwork::Remade,
        Some(o) if o.env != owner.env || o.process != owner.process => {
            PrivateNetwork::Lost(format!(
                "it carries the owner record of environment {} (pid {}), not this one's",
                o.env, o.process.pid
            ))
        }
        Some(_) if found.subnets != [expected.subnet] => PrivateNetwork::Lost(format!(
            "its subnet is {:?}, mkh recorded {}",
            found.subnets, expected.subnet
        )),
        Some(_) => PrivateNetwork::Unchanged,
    }
}

/// After every start (and a failed one): a private network minikube made again under mkh's
/// name is adopted: mkh's owner record written into it (so teardown, the watchdog and the
/// reaper remove it), its new subnet, bridge and gateway recorded, and a warning says so. One
/// gone or someone else's is `NetworkReplaced`.
fn adopt_private_network(env: &EnvCore) -> Result<()> {
    let networks = env.networks();
    let expected = &networks.private;
    let lost = |problem: String| Error::NetworkReplaced {
        network: expected.name.clone(),
        problem,
    };
    let found = env
        .lv
        .networks()?
        .into_iter()
        .find(|n| n.name == expected.name);
    let facts = match &found {
        Some(n) => Some(
            NetworkFacts::from_xml(&n.xml).map_err(|problem| Error::BadXml {
                object: format!("network {}", expected.name),
                problem,
            })?,
        ),
        None => None,
    };
    let owner = env.owner();
    match judge_private_network(facts.as_ref(), expected, &owner) {
        PrivateNetwork::Unchanged => Ok(()),
        PrivateNetwork::Lost(problem) => Err(lost(problem)),
        PrivateNetwork::Remade => {
            let found = found.expect("judged present");
            let xml = owner
                .put_into_object_xml(&found.xml)
                .ok_or_else(|| Error::BadXml {
                    object: format!("network {}", expected.name),
                    problem: "no </name> to put mkh's owner record after".into(),
                })?;
            env.lv.redefine_network(&expected.name, &xml)?;
            let now = NetworkPair::read(&env.lv, &networks.nat.name, &expected.name)?;
            tracing::warn!(
                env = %env.name,
                "minikube deleted the private network {} and made it again (a machine it made anew: a failed first boot, or a vanished domain) on {} instead of {}; mkh adopted it: it carries mkh's owner record, the environment's private subnet is now {}",
                expected.name,
                now.private.subnet,
                expected.subnet,
                now.private.subnet
            );
            env.set_networks(now);
            Ok(())
        }
    }
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
        env.registered(|r| r.add_command(cluster.delete_command(self.nodes)))?;
        let started = Instant::now();
        let result = {
            let key = cache::download_key(version, &self.options.extra_args);
            let deadline = env.timeouts().minikube_start(self.nodes);
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
            .run(&args, env.timeouts().minikube_start(self.nodes), &mut |g| {
                signal_guard = Some(env.kill_on_signal(g));
            })?;
        drop(signal_guard);
        forget_boot_host_keys(machines)
    }

    fn start(&self, env: &EnvCore, machines: &[Machine]) -> Result<super::Started> {
        self.check_start()?;
        forget_boot_host_keys(machines)?;
        self.run_start(env)?;
        // Read every node again: minikube made a node whose domain vanished anew (new MACs),
        // perhaps on a private network made again.
        let machines = self.attach_nodes(env)?;
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
        let ips = primary.wait_ready_now()?;
        Ok(super::Started { ips, machines })
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
        vec![self.cluster.delete_command(self.nodes)]
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::NetworkKind;

    fn facts(owner: Option<Owner>, subnet: &str) -> NetworkFacts {
        NetworkFacts {
            name: "mkh-abc123-priv".into(),
            bridge: Some("virbr3".into()),
            subnets: vec![subnet.parse().unwrap()],
            gateway: None,
            owner,
        }
    }

    #[test]
    fn a_private_network_minikube_made_again_is_adopted_one_of_another_owner_is_not() {
        let owner = crate::owner::tests::sample_owner();
        let expected = NetworkInfo {
            name: "mkh-abc123-priv".into(),
            kind: NetworkKind::Isolated,
            subnet: "10.208.3.0/24".parse().unwrap(),
            bridge: "mkh-abc123-priv".into(),
            gateway: "10.208.3.1".parse().unwrap(),
        };
        let judge = |found: Option<&NetworkFacts>| judge_private_network(found, &expected, &owner);
        let mine = facts(Some(owner.clone()), "10.208.3.0/24");
        assert_eq!(judge(Some(&mine)), PrivateNetwork::Unchanged);
        // minikube's own: its subnet, nobody's record.
        let remade = facts(None, "192.168.39.0/24");
        assert_eq!(judge(Some(&remade)), PrivateNetwork::Remade);
        assert!(matches!(judge(None), PrivateNetwork::Lost(_)));
        let mut other = owner.clone();
        other.env = "someone-else".into();
        let theirs = facts(Some(other), "10.208.3.0/24");
        assert!(
            matches!(judge(Some(&theirs)), PrivateNetwork::Lost(p) if p.contains("someone-else"))
        );
        let moved = facts(Some(owner.clone()), "10.208.4.0/24");
        assert!(matches!(judge(Some(&moved)), PrivateNetwork::Lost(_)));
    }

    #[test]
    fn minikube_environments_need_24_bit_subnets() {
        let pool = |prefix| crate::net::SubnetPool {
            range: "10.208.0.0/12".parse().unwrap(),
            prefix,
        };
        assert!(check_subnet_prefix(&pool(24)).is_ok());
        for prefix in [16, 23, 25, 28] {
            let err = check_subnet_prefix(&pool(prefix)).unwrap_err().to_string();
            assert!(
                err.contains("MKH_SUBNET_PREFIX") && err.contains("=24"),
                "{err}"
            );
        }
    }
}
