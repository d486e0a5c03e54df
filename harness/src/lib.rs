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
//! same calls for code without a runtime.
//!
//! mkh reports what it does through `tracing`: the phases of long work as INFO events of target
//! [`PROGRESS_TARGET`], problems as warnings. It prints nothing itself.
//!
//! Features: `kube` (`Env::kube_client`; k8s-openapi's Kubernetes version is the final crate's
//! choice) and `admin` (the `mkh` command's verbs over every environment of a host; test code
//! does not need it).
//! `ARCHITECTURE.md` at the repository root maps the modules.
#![warn(missing_docs)]

#[cfg(feature = "admin")]
pub mod admin;
mod artifacts;
mod backend;
#[cfg(feature = "admin")]
mod bench;
pub mod blocking;
mod config;
mod description;
#[cfg(feature = "admin")]
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
pub use net::spec::{MAX_LEASE as MAX_DHCP_LEASE, MIN_LEASE as MIN_DHCP_LEASE};
pub use net::{DhcpLease, NetworkInfo, NetworkKind, NetworkPair, SubnetPool};
pub use progress::PROGRESS_TARGET;
pub use settings::{BackendKind, Settings};
pub use ssh::{ExecOutput, SshSession};
