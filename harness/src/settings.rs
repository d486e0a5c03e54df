//! mkh's settings, parsed once into one typed value from four layers, each over the next:
//! `MKH_*` variables, then `mkh.toml` (found from the current directory upwards, or at
//! `MKH_CONFIG`), then ambient variables that other tools set (`LIBVIRT_DEFAULT_URI`,
//! `NEXTEST_RUN_ID`), then mkh's built-in defaults (`Settings::from_layers` stacks them). The
//! CLI, the fixtures and the library all read [`Settings`]; nothing else in mkh reads an `MKH_*`
//! variable.
//!
//! Every key of `mkh.toml` is the variable's name without `MKH_`, in lower case
//! (`MKH_MEMORY_MIB` = `memory_mib`). The README lists them in one table.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::machine::accel::Accel;
use crate::machine::MachineOptions;
use crate::minikube::MinikubeOptions;
use crate::net::SubnetPool;
use crate::Backend;

/// Which backend brings up a cluster's machine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// mkh boots its own small guest.
    #[default]
    Builtin,
    /// The real `minikube start --driver=kvm2`.
    Minikube,
}

/// What mkh reads from `mkh.toml` and the environment, validated.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Settings {
    /// `MKH_LIBVIRT_URI`, else `libvirt_uri` in `mkh.toml`, else `LIBVIRT_DEFAULT_URI`, else
    /// `qemu:///system`.
    pub libvirt_uri: String,
    /// `MKH_SUBNET_POOL` and `MKH_SUBNET_PREFIX`.
    pub subnet_pool: SubnetPool,
    /// `MKH_LOCK_DIR`: where the subnet allocator's lock file lives (default `/tmp`).
    pub lock_dir: PathBuf,
    /// `MKH_RUN_ID`, else `run_id` in `mkh.toml`, else `NEXTEST_RUN_ID`, else this process.
    pub run_id: String,
    /// `NEXTEST_TEST_NAME`: recorded in the owner metadata.
    pub test_name: Option<String>,
    /// `MKH_CACHE_DIR`: the guest image (and the API server build) cache.
    pub cache_dir: PathBuf,
    /// `MKH_STATE_DIR`: environment homes.
    pub state_dir: PathBuf,
    /// `MKH_ACCEL`: the accelerator, when forced.
    pub accel: Option<Accel>,
    /// `MKH_TIMEOUT_SCALE`: multiplies every deadline.
    pub timeout_scale: f64,
    /// `MKH_KEEP=1`: a failed test's environment stays up, handed over to the CLI.
    pub keep_failed: bool,
    /// `MKH_WATCHDOG=0`: no watchdog process (default: one per owning process; see
    /// the README's "Ownership and cleanup").
    pub watchdog: bool,
    /// `MKH_BACKEND`: for the fixtures and scenario files.
    pub backend: BackendKind,
    /// `MKH_WARM=1`: the built-in guest starts warm, restored from a saved guest (default off).
    pub warm: bool,
    /// `MKH_MEMORY_MIB`: the machine's memory.
    pub memory_mib: Option<u32>,
    /// `MKH_CPUS`: the machine's vCPUs.
    pub cpus: Option<u32>,
    /// `MKH_NODES`: the minikube cluster's nodes (default 1).
    pub nodes: Option<u32>,
    /// `MKH_MINIKUBE`: the minikube binary (default: `minikube` on PATH).
    pub minikube: Option<PathBuf>,
    /// `MKH_MINIKUBE_ARGS`: more `minikube start` arguments, split by shell rules.
    pub minikube_args: Vec<String>,
    /// `MKH_MINIKUBE_CACHE`: minikube's shared ISO and preload cache.
    pub minikube_cache: Option<PathBuf>,
    /// `MKH_LOG`: the `mkh` command's log filter (tracing's syntax, e.g. `debug`).
    pub log: Option<String>,
}

/// The file's keys; the same values as variables (see [`Settings`]).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Layer {
    libvirt_uri: Option<String>,
    subnet_pool: Option<String>,
    subnet_prefix: Option<u8>,
    lock_dir: Option<PathBuf>,
    run_id: Option<String>,
    cache_dir: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    accel: Option<Accel>,
    timeout_scale: Option<f64>,
    keep: Option<bool>,
    watchdog: Option<bool>,
    backend: Option<BackendKind>,
    warm: Option<bool>,
    memory_mib: Option<u32>,
    cpus: Option<u32>,
    nodes: Option<u32>,
    minikube: Option<PathBuf>,
    minikube_args: Option<Vec<String>>,
    minikube_cache: Option<PathBuf>,
    log: Option<String>,
}

fn invalid(what: &'static str, value: &str, problem: String, fix: &'static str) -> Error {
    Error::InvalidInput {
        what,
        value: value.to_owned(),
        problem,
        fix,
    }
}

impl Layer {
    /// The variables other tools set that mkh takes as defaults: a shell's libvirt URI, a
    /// nextest run's id. Below `mkh.toml`: a project's file is more deliberate than whatever
    /// the caller's shell happens to export.
    fn from_ambient(var: &dyn Fn(&str) -> Option<String>) -> Layer {
        Layer {
            libvirt_uri: var("LIBVIRT_DEFAULT_URI"),
            run_id: var("NEXTEST_RUN_ID"),
            ..Layer::default()
        }
    }

    /// The `MKH_*` variables, each parsed as its type; an error names the variable.
    fn from_vars(var: &dyn Fn(&str) -> Option<String>) -> Result<Layer> {
        fn parsed<T: std::str::FromStr>(
            var: &dyn Fn(&str) -> Option<String>,
            name: &'static str,
            expected: &'static str,
        ) -> Result<Option<T>>
        where
            T::Err: std::fmt::Display,
        {
            var(name)
                .map(|v| {
                    v.trim().parse().map_err(|e| {
                        invalid(
                            name,
                            &v,
                            format!("it is not {expected} ({e})"),
                            "fix or unset it",
                        )
                    })
                })
                .transpose()
        }
        let path = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        /// A value among a serde enum's names (`kvm`, `tcg`; `builtin`, `minikube`).
        fn one_of<T: serde::de::DeserializeOwned>(
            var: &dyn Fn(&str) -> Option<String>,
            name: &'static str,
        ) -> Result<Option<T>> {
            use serde::de::IntoDeserializer;
            var(name)
                .map(|v| {
                    let de: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
                        v.trim().into_deserializer();
                    T::deserialize(de)
                        .map_err(|e| invalid(name, &v, e.to_string(), "fix or unset it"))
                })
                .transpose()
        }
        let accel = one_of(var, "MKH_ACCEL")?;
        let backend = one_of(var, "MKH_BACKEND")?;
        let minikube_args = match var("MKH_MINIKUBE_ARGS") {
            None => None,
            Some(v) => Some(shlex::split(&v).ok_or_else(|| {
                invalid(
                    "MKH_MINIKUBE_ARGS",
                    &v,
                    "its quoting is unbalanced".into(),
                    "quote arguments as a POSIX shell would, e.g. --extra-config='a=b c'",
                )
            })?),
        };
        let switch = |name: &'static str, meaning: &str| -> Result<Option<bool>> {
            match var(name) {
                None => Ok(None),
                Some(v) => match v.trim() {
                    "" | "0" => Ok(Some(false)),
                    "1" => Ok(Some(true)),
                    other => Err(invalid(
                        name,
                        other,
                        format!("it must be 1 ({meaning}) or 0"),
                        "set it to 1 or 0, or unset it",
                    )),
                },
            }
        };
        let keep = switch("MKH_KEEP", "keep a failed test's environment")?;
        let warm = switch("MKH_WARM", "start the built-in guest from a saved one")?;
        let watchdog = switch(
            "MKH_WATCHDOG",
            "a watchdog process cleans up after a killed owner",
        )?;
        Ok(Layer {
            libvirt_uri: var("MKH_LIBVIRT_URI"),
            subnet_pool: var("MKH_SUBNET_POOL"),
            subnet_prefix: parsed(var, "MKH_SUBNET_PREFIX", "a prefix length")?,
            lock_dir: path("MKH_LOCK_DIR"),
            run_id: var("MKH_RUN_ID"),
            cache_dir: path("MKH_CACHE_DIR"),
            state_dir: path("MKH_STATE_DIR"),
            accel,
            timeout_scale: parsed(var, "MKH_TIMEOUT_SCALE", "a number")?,
            keep,
            watchdog,
            backend,
            warm,
            memory_mib: parsed(var, "MKH_MEMORY_MIB", "a number of MiB")?,
            cpus: parsed(var, "MKH_CPUS", "a number of CPUs")?,
            nodes: parsed(var, "MKH_NODES", "a number of nodes")?,
            minikube: path("MKH_MINIKUBE"),
            minikube_args,
            minikube_cache: path("MKH_MINIKUBE_CACHE"),
            log: var("MKH_LOG"),
        })
    }

    /// `self`, with every value `over` sets replacing it.
    fn under(self, over: Layer) -> Layer {
        macro_rules! merge {
            ($($field:ident),*) => { Layer { $($field: over.$field.or(self.$field)),* } };
        }
        merge!(
            libvirt_uri,
            subnet_pool,
            subnet_prefix,
            lock_dir,
            run_id,
            cache_dir,
            state_dir,
            accel,
            timeout_scale,
            keep,
            watchdog,
            backend,
            warm,
            memory_mib,
            cpus,
            nodes,
            minikube,
            minikube_args,
            minikube_cache,
            log
        )
    }
}

fn uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

impl Settings {
    /// Whether the libvirt URI names this host's libvirt (`qemu:///system`, `qemu:///session`,
    /// `test:///`), not one reached over the network.
    pub fn libvirt_is_local(&self) -> bool {
        crate::libvirt::uri_is_local(&self.libvirt_uri)
    }

    /// The minikube binary these settings name (`MKH_MINIKUBE`, else `minikube` on PATH),
    /// checked to exist and be executable.
    pub fn minikube_binary(&self) -> Result<PathBuf> {
        crate::minikube::find_binary(self.minikube.as_deref())
    }

    /// The settings this process uses: loaded at first use ([`Settings::load`]), then kept.
    /// Bad settings are not kept: every call reports them, naming the file or variable.
    pub fn current() -> Result<Settings> {
        static CURRENT: OnceLock<Settings> = OnceLock::new();
        if let Some(s) = CURRENT.get() {
            return Ok(s.clone());
        }
        let loaded = Settings::load()?;
        Ok(CURRENT.get_or_init(|| loaded).clone())
    }

    /// Reads `mkh.toml` (at `MKH_CONFIG`, else the first one from the current directory
    /// upwards) and the environment now.
    pub fn load() -> Result<Settings> {
        let var = |k: &str| std::env::var(k).ok();
        let file = match config_file(&var) {
            Some(path) => Layer::from_file(&path)?,
            None => Layer::default(),
        };
        Settings::from_layers(file, &var)
    }

    /// `toml_text` as `mkh.toml` and `vars` as the environment (for tests of settings).
    #[cfg(test)]
    fn from_text(toml_text: &str, vars: &[(&str, &str)]) -> Result<Settings> {
        let var = |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        let file: Layer = toml::from_str(toml_text).map_err(|e| Error::BadFile {
            path: "mkh.toml".into(),
            what: "mkh settings".into(),
            problem: e.to_string(),
        })?;
        Settings::from_layers(file, &var)
    }

    /// The one place that orders the layers, each over the ones after it: `MKH_*` variables,
    /// the file, the ambient variables ([`Layer::from_ambient`]), then the built-in defaults
    /// ([`Settings::resolve`]).
    fn from_layers(file: Layer, var: &dyn Fn(&str) -> Option<String>) -> Result<Settings> {
        let stacked = Layer::from_ambient(var)
            .under(file)
            .under(Layer::from_vars(var)?);
        Settings::resolve(stacked)
    }

    /// `l` with the built-in default for every value no layer set.
    fn resolve(l: Layer) -> Result<Settings> {
        let subnet_pool = SubnetPool::parse(
            l.subnet_pool
                .as_deref()
                .unwrap_or(crate::net::subnet::DEFAULT_POOL),
            &l.subnet_prefix
                .unwrap_or(crate::net::subnet::DEFAULT_PREFIX)
                .to_string(),
        )?;
        let timeout_scale = l.timeout_scale.unwrap_or(1.0);
        // A deadline must stay a finite, positive Duration however it is scaled.
        if !(timeout_scale.is_finite() && timeout_scale > 0.0 && timeout_scale <= 1000.0) {
            return Err(invalid(
                "MKH_TIMEOUT_SCALE",
                &format!("{timeout_scale:e}"),
                "it must be a number above 0 and at most 1000".into(),
                "set it to e.g. 2 to double every deadline, or unset it",
            ));
        }
        for (what, value) in [
            ("MKH_MEMORY_MIB", l.memory_mib),
            ("MKH_CPUS", l.cpus),
            ("MKH_NODES", l.nodes),
        ] {
            if value == Some(0) {
                return Err(invalid(
                    what,
                    "0",
                    "it must be at least 1".into(),
                    "fix or unset it",
                ));
            }
        }
        Ok(Settings {
            libvirt_uri: l.libvirt_uri.unwrap_or_else(|| "qemu:///system".into()),
            subnet_pool,
            lock_dir: l.lock_dir.unwrap_or_else(|| "/tmp".into()),
            run_id: l
                .run_id
                .unwrap_or_else(|| format!("pid-{}", std::process::id())),
            test_name: std::env::var("NEXTEST_TEST_NAME").ok(),
            // Outside home directories: QEMU (user libvirt-qemu) must traverse every directory
            // down to the images it boots.
            cache_dir: l
                .cache_dir
                .unwrap_or_else(|| format!("/var/tmp/mkh-cache-{}", uid()).into()),
            state_dir: l
                .state_dir
                .unwrap_or_else(|| format!("/var/tmp/mkh-state-{}", uid()).into()),
            accel: l.accel,
            timeout_scale,
            keep_failed: l.keep.unwrap_or(false),
            watchdog: l.watchdog.unwrap_or(true),
            backend: l.backend.unwrap_or_default(),
            warm: l.warm.unwrap_or(false),
            memory_mib: l.memory_mib,
            cpus: l.cpus,
            nodes: l.nodes,
            minikube: l.minikube,
            minikube_args: l.minikube_args.unwrap_or_default(),
            minikube_cache: l.minikube_cache,
            log: l.log,
        })
    }

    /// These settings with the built-in backend.
    pub fn builtin(mut self) -> Settings {
        self.backend = BackendKind::Builtin;
        self
    }

    /// These settings with the minikube backend and `binary` (None: `MKH_MINIKUBE`, else PATH).
    pub fn minikube(mut self, binary: Option<PathBuf>) -> Settings {
        self.backend = BackendKind::Minikube;
        if binary.is_some() {
            self.minikube = binary;
        }
        self
    }

    /// These settings with a minikube cluster of `nodes` nodes.
    pub fn nodes(mut self, nodes: u32) -> Settings {
        self.nodes = Some(nodes);
        self
    }

    /// These settings with one more `minikube start` argument (e.g. `--force` as root).
    pub fn minikube_arg(mut self, arg: impl Into<String>) -> Settings {
        self.minikube_args.push(arg.into());
        self
    }

    /// The backend these settings ask for, with their sizes and minikube arguments.
    pub fn backend(&self) -> Backend {
        match self.backend {
            BackendKind::Builtin => {
                let d = MachineOptions::default();
                Backend::Builtin(MachineOptions {
                    memory_mib: self.memory_mib.unwrap_or(d.memory_mib),
                    vcpus: self.cpus.unwrap_or(d.vcpus),
                    warm_start: self.warm,
                    ..d
                })
            }
            BackendKind::Minikube => Backend::Minikube(MinikubeOptions {
                binary: self.minikube.clone(),
                extra_args: self.minikube_args.clone(),
                memory_mib: self.memory_mib,
                cpus: self.cpus,
                nodes: self.nodes,
                cache_dir: self.minikube_cache.clone(),
            }),
        }
    }
}

impl Layer {
    fn from_file(path: &Path) -> Result<Layer> {
        let bad = |problem: String| Error::BadFile {
            path: path.to_owned(),
            what: "mkh settings (mkh.toml)".into(),
            problem,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        toml::from_str(&text).map_err(|e| bad(e.to_string()))
    }
}

/// `MKH_CONFIG`, else the first `mkh.toml` from the current directory upwards.
fn config_file(var: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(p) = var("MKH_CONFIG") {
        return Some(p.into());
    }
    let cwd = std::env::current_dir().ok()?;
    cwd.ancestors()
        .map(|d| d.join("mkh.toml"))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_overrides_the_file() {
        let s = Settings::from_text(
            "backend = \"minikube\"\nmemory_mib = 2048\nminikube_args = [\"--wait=all\"]",
            &[("MKH_MEMORY_MIB", "4096")],
        )
        .unwrap();
        assert_eq!(s.memory_mib, Some(4096));
        match s.backend() {
            Backend::Minikube(o) => {
                assert_eq!(o.memory_mib, Some(4096));
                assert_eq!(o.extra_args, vec!["--wait=all".to_owned()]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn minikube_arguments_are_split_by_shell_rules() {
        let s = Settings::from_text(
            "",
            &[(
                "MKH_MINIKUBE_ARGS",
                "--extra-config='kubelet.a=b c' --wait=all",
            )],
        )
        .unwrap();
        assert_eq!(
            s.minikube_args,
            ["--extra-config=kubelet.a=b c", "--wait=all"]
        );
        let err = Settings::from_text("", &[("MKH_MINIKUBE_ARGS", "--x='open")]).unwrap_err();
        assert!(err.to_string().contains("MKH_MINIKUBE_ARGS"), "{err}");
    }

    #[test]
    fn bad_settings_name_their_source_and_the_fix() {
        for (var, value) in [
            ("MKH_CPUS", "two"),
            ("MKH_BACKEND", "docker"),
            ("MKH_ACCEL", "bogus"),
            ("MKH_TIMEOUT_SCALE", "inf"),
            ("MKH_TIMEOUT_SCALE", "NaN"),
            ("MKH_TIMEOUT_SCALE", "-1"),
            ("MKH_TIMEOUT_SCALE", "0"),
            ("MKH_MEMORY_MIB", "0"),
            ("MKH_SUBNET_POOL", "10.0.0.0"),
        ] {
            let err = Settings::from_text("", &[(var, value)])
                .unwrap_err()
                .to_string();
            assert!(err.contains(var), "{var}={value}: {err}");
            assert!(err.contains(value), "{var}={value}: {err}");
        }
        let err = Settings::from_text("colour = 1", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("colour") && err.contains("mkh.toml"), "{err}");
    }

    #[test]
    fn the_defaults_boot_the_small_builtin_guest() {
        let s = Settings::from_text("", &[]).unwrap();
        assert_eq!(s.backend(), Backend::Builtin(MachineOptions::default()));
        assert_eq!(s.libvirt_uri, "qemu:///system");
        assert_eq!(s.subnet_pool, SubnetPool::default());
        assert_eq!(s.timeout_scale, 1.0);
    }

    /// The layers for one setting, lowest first: the built-in default alone, an ambient
    /// variable, `mkh.toml` over that variable, an `MKH_*` variable over the file.
    fn layers_of(
        key: &str,
        ambient: &str,
        mkh_var: &str,
        field: fn(&Settings) -> &str,
        default: &str,
    ) {
        let file = format!("{key} = \"from-file\"");
        let file = file.as_str();
        let vars = [(ambient, "from-ambient"), (mkh_var, "from-mkh-var")];
        let (none, ambient_only, both) = (&vars[..0], &vars[..1], &vars[..]);
        let cases = [
            ("the built-in default", "", none, default),
            ("the ambient variable", "", ambient_only, "from-ambient"),
            (
                "the file over the ambient variable",
                file,
                ambient_only,
                "from-file",
            ),
            (
                "the MKH_ variable over the file",
                file,
                both,
                "from-mkh-var",
            ),
        ];
        for (layer, text, vars, expected) in cases {
            let s = Settings::from_text(text, vars).unwrap();
            assert_eq!(
                field(&s),
                expected,
                "{key}: {layer} (file {text:?}, variables {vars:?})"
            );
        }
    }

    #[test]
    fn libvirt_uri_layers() {
        layers_of(
            "libvirt_uri",
            "LIBVIRT_DEFAULT_URI",
            "MKH_LIBVIRT_URI",
            |s| &s.libvirt_uri,
            "qemu:///system",
        );
    }

    #[test]
    fn run_id_layers() {
        let default = format!("pid-{}", std::process::id());
        layers_of(
            "run_id",
            "NEXTEST_RUN_ID",
            "MKH_RUN_ID",
            |s| &s.run_id,
            &default,
        );
    }

    #[test]
    fn every_file_key_is_a_variable_name() {
        let s = Settings::from_text(
            "accel = \"tcg\"\ntimeout_scale = 2.5\ncache_dir = \"/c\"\nkeep = true",
            &[("MKH_STATE_DIR", "/s")],
        )
        .unwrap();
        assert_eq!(s.accel, Some(Accel::Tcg));
        assert_eq!(s.timeout_scale, 2.5);
        assert_eq!(s.cache_dir, PathBuf::from("/c"));
        assert_eq!(s.state_dir, PathBuf::from("/s"));
        assert!(s.keep_failed);
    }
}
