//! The minikube backend: `minikube start --driver=kvm2` on mkh's networks, its domain tagged
//! with mkh's owner record as soon as it exists, `minikube delete` as the first step of
//! teardown.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::description::EnvDescription;
use crate::env::{wait_ready_timed, EnvCore, Timings};
use crate::error::{Error, Result};
use crate::libvirt::{DomainState, Libvirt};
use crate::machine::{Ips, Machine};
use crate::minikube::{check_extra_args, find_binary, MinikubeCluster, MinikubeOptions};
use crate::settings::Settings;

#[derive(Debug)]
pub(super) struct MinikubeBackend {
    cluster: MinikubeCluster,
    options: MinikubeOptions,
}

impl MinikubeBackend {
    /// Checks the options (refused arguments, the binary) before anything exists.
    pub fn new(
        options: &MinikubeOptions,
        settings: &Settings,
        home: &Path,
        profile: &str,
    ) -> Result<MinikubeBackend> {
        check_extra_args(&options.extra_args)?;
        let binary = find_binary(options.binary.as_deref().or(settings.minikube.as_deref()))?;
        Ok(MinikubeBackend {
            cluster: MinikubeCluster::at(home, profile, binary),
            options: options.clone(),
        })
    }

    /// `minikube start`, tagging minikube's domain with mkh's owner metadata as soon as it
    /// exists (a test killed mid-start must leave a domain the reaper recognises).
    fn run_start(&self, env: &EnvCore) -> Result<()> {
        let cluster = &self.cluster;
        let args = cluster.start_args(env.lv.uri(), env.networks(), &self.options);
        let deadline = env.timeouts().minikube_start();
        let owner_xml = env.owner().to_bare_element_xml();
        let tagged = AtomicBool::new(false);
        let done = AtomicBool::new(false);
        let profile = &cluster.profile;
        let tag = |lv: &Libvirt| -> Result<()> {
            if !tagged.load(Ordering::SeqCst) && lv.tag_domain(profile, &owner_xml)? {
                tagged.store(true, Ordering::SeqCst);
                env.registered(|r| r.add_domain(profile))?;
            }
            Ok(())
        };
        let mut group = None;
        let result = std::thread::scope(|scope| {
            scope.spawn(|| {
                while !done.load(Ordering::SeqCst) && !tagged.load(Ordering::SeqCst) {
                    if let Err(e) = tag(&env.lv) {
                        tracing::debug!("tagging {profile}: {e}");
                    }
                    std::thread::sleep(Duration::from_millis(300));
                }
            });
            let result = cluster.run(&args, deadline, &mut |g| {
                group = Some(g);
                let _ = env.registered(|r| r.add_kill_group(g));
            });
            done.store(true, Ordering::SeqCst);
            result
        });
        if let Some(g) = group {
            let _ = env.registered(|r| r.forget_kill_group(g));
        }
        result?;
        // The domain exists once start succeeded: make sure it carries the tag.
        tag(&env.lv)?;
        if !tagged.load(Ordering::SeqCst) {
            return Err(Error::InvalidInput {
                what: "minikube profile",
                value: profile.clone(),
                problem: "minikube start succeeded but libvirt has no domain of that name".into(),
                fix:
                    "check that minikube uses the kvm2 driver on the same libvirt (MKH_LIBVIRT_URI)",
            });
        }
        Ok(())
    }
}

impl super::ClusterBackend for MinikubeBackend {
    fn name(&self) -> &'static str {
        "minikube"
    }

    fn bring_up(&self, env: &EnvCore, timings: &mut Timings) -> Result<Vec<Machine>> {
        let cluster = &self.cluster;
        // A minikube profile names a libvirt domain: refuse one that exists already (the
        // user's own cluster), so mkh never claims, let alone deletes, a domain it did not
        // create.
        if env.lv.domain_state(&cluster.profile)? != DomainState::Missing {
            return Err(Error::InvalidInput {
                what: "environment name",
                value: cluster.profile.clone(),
                problem: "libvirt already has a domain of that name (a minikube profile?)".into(),
                fix: "choose another name",
            });
        }
        let shared_cache = self
            .options
            .cache_dir
            .clone()
            .unwrap_or_else(|| env.settings.cache_dir.join("minikube"));
        cluster.prepare(&shared_cache)?;
        // From here on, whatever happens, teardown starts with `minikube delete`.
        env.registered(|r| r.add_command(cluster.delete_command()))?;
        let started = Instant::now();
        let result = self.run_start(env);
        timings.define_start = Some(started.elapsed());
        result?;
        let machine = Machine::attach(
            &env.lv,
            &cluster.profile,
            env.networks(),
            cluster.machine_files(&env.home),
            env.settings.timeout_scale,
        )?;
        wait_ready_timed(&machine, timings)?;
        Ok(vec![machine])
    }

    fn stop(&self, env: &EnvCore, _machines: &[Machine]) -> Result<()> {
        let args = [
            "stop".to_owned(),
            "-p".to_owned(),
            self.cluster.profile.clone(),
        ];
        self.cluster
            .run(&args, env.timeouts().minikube_start(), &mut |_| {})
    }

    fn start(&self, env: &EnvCore, machines: &[Machine]) -> Result<Ips> {
        self.run_start(env)?;
        match machines.first() {
            Some(m) => m.wait_ready_now(),
            None => Err(Error::InvalidInput {
                what: "environment",
                value: env.name.clone(),
                problem: "minikube started, but mkh holds no machine of it".into(),
                fix: "create a new environment",
            }),
        }
    }

    fn console_log(&self, env: &EnvCore, _domain: &str) -> PathBuf {
        self.cluster.machine_files(&env.home).console_log
    }

    fn minikube(&self) -> Option<&MinikubeCluster> {
        Some(&self.cluster)
    }

    fn describe(&self, d: &mut EnvDescription) {
        let c = &self.cluster;
        d.profile = Some(c.profile.clone());
        d.minikube_home = Some(c.minikube_home.clone());
        d.kubeconfig = Some(c.kubeconfig.clone());
        d.context = Some(c.context().to_owned());
    }
}
