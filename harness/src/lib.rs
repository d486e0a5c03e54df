//! mkh gives integration tests real, throw-away minikube-like environments on libvirt: per-test
//! NAT and isolated networks on subnets nobody else uses, a machine on both (mkh's own small
//! guest, or `minikube start --driver=kvm2`), owned and removed by the test, whatever happens to
//! the test process.
//!
//! ```no_run
//! use mkh::{Env, MachineOptions, NetworkRole};
//!
//! # async fn example() -> mkh::Result<()> {
//! let env = Env::builder().guest(MachineOptions::default()).up().await?;
//! let machine = env.machine().expect("a guest was booted");
//! let ips = machine.ips().await?; // from the leases, matched by MAC
//! let out = machine.ssh(NetworkRole::Nat).await?.exec("id -un").await?;
//! assert_eq!(out.stdout.trim(), "docker");
//! env.teardown().await?; // or just drop it
//! # Ok(()) }
//! ```
//!
//! Every call that waits is `async` and never blocks the runtime thread; [`blocking`] has the
//! same calls for code without a runtime. [`admin`] holds the `mkh` command's verbs.
//! `ARCHITECTURE.md` at the repository root maps the modules.
#![warn(missing_docs)]

pub mod admin;
mod artifacts;
mod backend;
mod bench;
pub mod blocking;
mod config;
mod description;
mod doctor;
mod env;
mod error;
mod inventory;
#[cfg(feature = "kube")]
mod kube;
mod libvirt;
mod machine;
mod minikube;
mod names;
mod net;
mod owner;
mod process;
mod progress;
#[cfg(test)]
mod real_vm_tests;
mod reaper;
mod remote;
pub mod scenario;
mod settings;
mod ssh;
mod teardown;
mod wait;
mod watchdog;
mod xml;

pub use backend::Backend;
pub use description::{EnvDescription, MachineDescription, SshDescription, DESCRIPTION_VERSION};
pub use env::{Env, EnvBuilder, Timings};
pub use error::{Error, NoLease, Result, SshCause};
pub use ipnet;
pub use libvirt::{LibvirtError, LibvirtErrorKind};
pub use machine::{Accel, Ips, Machine, MachineOptions, NetworkRole};
pub use minikube::MinikubeOptions;
pub use net::{NetworkInfo, NetworkKind, NetworkPair, SubnetPool};
pub use settings::{BackendKind, Settings};
pub use ssh::{ExecOutput, SshSession};
