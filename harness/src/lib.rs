//! mkh gives integration tests real, throw-away minikube-like environments on libvirt: per-test
//! NAT and isolated networks on subnets nobody else uses, owned and removed by the test, whatever
//! happens to the test process.
//!
//! Start with [`Env::builder`]. `ARCHITECTURE.md` at the repository root maps the modules.

pub mod config;
pub mod env;
pub mod error;
pub mod inventory;
#[cfg(feature = "kube")]
pub mod kube;
pub mod libvirt;
pub mod machine;
pub mod minikube;
pub mod names;
pub mod net;
pub mod owner;
pub mod process;
pub mod reaper;
pub mod ssh;
pub mod teardown;
pub mod xml;

pub use env::{Env, EnvBuilder, EnvDescription};
pub use error::{Error, Result};
pub use ipnet;
pub use owner::OwnerKind;
